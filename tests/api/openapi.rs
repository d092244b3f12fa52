//! The OpenAPI document states the rules the server checks, so that a client generated from it
//! validates as the server does (and schemathesis, in CI, finds nothing between them). Each
//! constraint is read from the served document; removing one from the code fails here. The
//! second half sends the boundary values and checks that the server answers as the document says.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

/// A server with a raised PASSWORD_MIN_LENGTH, and its document.
async fn app_and_document() -> (TestApp, Value) {
    let app = spawn_app_with(&[("PASSWORD_MIN_LENGTH", "12")]).await;
    let document = app.get_json("/openapi.json").await;
    (app, document)
}

fn schema<'a>(document: &'a Value, name: &str) -> &'a Value {
    let schema = &document["components"]["schemas"][name];
    assert!(schema.is_object(), "no schema {name}");
    schema
}

/// A schema's own fields: the schema, or, where rules were added to it, the first of its `allOf`.
fn fields<'a>(document: &'a Value, name: &str) -> &'a Value {
    let schema = schema(document, name);
    match schema["allOf"].as_array() {
        Some(all) => &all[0],
        None => schema,
    }
}

fn property<'a>(document: &'a Value, name: &str, field: &str) -> &'a Value {
    let property = &fields(document, name)["properties"][field];
    assert!(property.is_object(), "no property {name}.{field}");
    property
}

/// A required field: listed as required, and a string (null is "is required" too).
fn assert_required_string(document: &Value, name: &str, field: &str) {
    let required = fields(document, name)["required"].as_array().unwrap();
    assert!(
        required.contains(&json!(field)),
        "{name}.{field} is not required"
    );
    assert_eq!(
        property(document, name, field)["type"],
        "string",
        "{name}.{field} must be a string, not nullable"
    );
}

fn assert_email(property: &Value, what: &str) {
    assert_eq!(property["format"], "email", "{what}");
    assert_eq!(
        property["maxLength"],
        auth_server::domain::Email::MAX_LENGTH,
        "{what}"
    );
}

fn assert_name(property: &Value, what: &str) {
    assert_eq!(property["minLength"], 1, "{what}");
    assert_eq!(
        property["maxLength"],
        auth_server::domain::Name::MAX_LENGTH,
        "{what}"
    );
    assert_eq!(
        property["pattern"],
        auth_server::domain::Name::PATTERN,
        "{what}"
    );
}

fn assert_new_password(property: &Value, what: &str) {
    // The configured minimum, not the default.
    assert_eq!(property["minLength"], 12, "{what}");
    assert_eq!(
        property["maxLength"],
        auth_server::config::PASSWORD_MAX_LENGTH,
        "{what}"
    );
}

fn parameter<'a>(document: &'a Value, path: &str, method: &str, name: &str) -> &'a Value {
    document["paths"][path][method]["parameters"]
        .as_array()
        .unwrap_or_else(|| panic!("{method} {path} has no parameters"))
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("{method} {path} has no parameter {name}"))
}

/// The referenced schema, or the schema itself.
fn resolve<'a>(document: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(reference) => {
            let name = reference.rsplit('/').next().unwrap();
            &document["components"]["schemas"][name]
        }
        None => schema,
    }
}

#[tokio::test]
async fn the_document_states_every_input_rule_the_server_checks() {
    let (_app, doc) = app_and_document().await;

    // Registration: every field required, the email an address, the name and password bounded.
    for field in ["email", "password", "name"] {
        assert_required_string(&doc, "RegisterRequest", field);
    }
    assert_email(
        property(&doc, "RegisterRequest", "email"),
        "RegisterRequest.email",
    );
    assert_name(
        property(&doc, "RegisterRequest", "name"),
        "RegisterRequest.name",
    );
    assert_new_password(
        property(&doc, "RegisterRequest", "password"),
        "RegisterRequest.password",
    );

    // Every new password, wherever it is set.
    for (name, field) in [
        ("ChangePasswordRequest", "new_password"),
        ("PasswordResetConfirm", "new_password"),
    ] {
        assert_required_string(&doc, name, field);
        assert_new_password(property(&doc, name, field), &format!("{name}.{field}"));
    }

    // Tokens: required and not empty (the logout body's token is optional: a bearer token may
    // stand in for it).
    assert_eq!(
        property(&doc, "LogoutRequest", "refresh_token")["minLength"],
        1
    );
    for (name, field) in [
        ("RefreshRequest", "refresh_token"),
        ("PasswordResetConfirm", "token"),
        ("VerifyConfirm", "token"),
    ] {
        assert_required_string(&doc, name, field);
        assert_eq!(
            property(&doc, name, field)["minLength"],
            1,
            "{name}.{field}"
        );
    }

    // Passwords that are only checked against the account: required strings, no shape.
    for (name, field) in [
        ("LoginRequest", "email"),
        ("LoginRequest", "password"),
        ("LoginForm", "username"),
        ("LoginForm", "password"),
        ("DeleteMeRequest", "password"),
        ("ChangePasswordRequest", "current_password"),
    ] {
        assert_required_string(&doc, name, field);
    }
    assert_required_string(&doc, "PasswordResetRequest", "email");
    assert_email(
        property(&doc, "PasswordResetRequest", "email"),
        "PasswordResetRequest.email",
    );
    let grant = resolve(&doc, property(&doc, "LoginForm", "grant_type"));
    assert_eq!(grant["enum"], json!(["password"]));

    // Profile changes: optional fields (null leaves them), the same rules when given.
    let admin = "AdminUpdateRequest";
    assert_email(property(&doc, admin, "email"), "AdminUpdateRequest.email");
    assert_name(property(&doc, admin, "name"), "AdminUpdateRequest.name");
    // UpdateMeRequest: its fields, and the rule that a new email needs the current password.
    let update_me = schema(&doc, "UpdateMeRequest")["allOf"]
        .as_array()
        .expect("UpdateMeRequest is the fields and the email rule");
    let own = &update_me[0]["properties"];
    assert_email(&own["email"], "UpdateMeRequest.email");
    assert_name(&own["name"], "UpdateMeRequest.name");
    let rule = &update_me[1]["anyOf"];
    assert_eq!(rule[0]["properties"]["email"]["type"], "null", "{rule}");
    assert_eq!(rule[1]["required"], json!(["current_password"]), "{rule}");

    // A second factor: `code` or `recovery_code`, never both; exactly one at POST /login/mfa.
    for name in [
        "UpdateMeRequest",
        "DeleteMeRequest",
        "ChangePasswordRequest",
        "SecondFactorRequest",
        "LoginMfaRequest",
    ] {
        let all = schema(&doc, name)["allOf"].as_array().unwrap();
        let rule = &all.last().unwrap()["anyOf"];
        assert_eq!(
            rule[0]["properties"]["recovery_code"]["type"], "null",
            "{name}: {rule}"
        );
        assert_eq!(
            rule[1]["properties"]["code"]["type"], "null",
            "{name}: {rule}"
        );
        let exactly_one = name == "LoginMfaRequest";
        assert_eq!(
            rule[0]["required"] == json!(["code"]),
            exactly_one,
            "{name}: {rule}"
        );
        for field in ["code", "recovery_code"] {
            assert!(
                property(&doc, name, field)["pattern"].is_string(),
                "{name}.{field} states its shape"
            );
        }
    }
    assert_eq!(
        property(&doc, "ConfirmTotpRequest", "code")["pattern"],
        property(&doc, "LoginMfaRequest", "code")["pattern"]
    );
    assert_required_string(&doc, "LoginMfaRequest", "mfa_token");

    // Every JSON body refuses unknown fields.
    for name in [
        "RegisterRequest",
        "LoginRequest",
        "RefreshRequest",
        "LogoutRequest",
        "DeleteMeRequest",
        "ChangePasswordRequest",
        "PasswordResetRequest",
        "PasswordResetConfirm",
        "VerifyConfirm",
        "AdminUpdateRequest",
        "PasswordConfirmRequest",
        "ConfirmTotpRequest",
        "SecondFactorRequest",
        "LoginMfaRequest",
    ] {
        assert_eq!(
            fields(&doc, name)["additionalProperties"],
            false,
            "{name} must refuse unknown fields"
        );
    }
    assert_eq!(update_me[0]["additionalProperties"], false);

    // Query and path parameters.
    let limit = &parameter(&doc, "/users", "get", "limit")["schema"];
    assert_eq!(
        (&limit["minimum"], &limit["maximum"]),
        (&json!(1), &json!(100))
    );
    let offset = &parameter(&doc, "/users", "get", "offset")["schema"];
    assert_eq!(
        (&offset["minimum"], &offset["maximum"]),
        (&json!(0), &json!(i32::MAX))
    );
    assert_eq!(
        parameter(&doc, "/users", "get", "q")["schema"]["maxLength"],
        254
    );
    let scope = resolve(&doc, &parameter(&doc, "/logout", "post", "scope")["schema"]);
    assert_eq!(scope["enum"], json!(["local", "global", "others"]));
    for (path, method) in [
        ("/users/{id}", "get"),
        ("/users/{id}", "patch"),
        ("/users/{id}", "delete"),
        ("/me/sessions/{id}", "delete"),
        ("/users/{id}/sessions", "get"),
        ("/users/{id}/sessions", "delete"),
        ("/users/{id}/sessions/{session_id}", "delete"),
        ("/users/{id}/lockout", "delete"),
        ("/users/{id}/password-reset", "post"),
        ("/users/{id}/events", "get"),
    ] {
        let id = parameter(&doc, path, method, "id");
        assert_eq!(id["required"], true);
        assert_eq!(id["schema"]["format"], "uuid", "{method} {path}");
    }
    let session = parameter(
        &doc,
        "/users/{id}/sessions/{session_id}",
        "delete",
        "session_id",
    );
    assert_eq!(session["schema"]["format"], "uuid");

    // The audit trail's listings: the cursor's pattern is the server's, `limit` 1 to 200, and
    // `type` takes exactly the event types.
    for path in ["/me/events", "/events", "/users/{id}/events"] {
        let limit = &parameter(&doc, path, "get", "limit")["schema"];
        assert_eq!(
            (&limit["minimum"], &limit["maximum"]),
            (&json!(1), &json!(200)),
            "{path}"
        );
        let cursor = &parameter(&doc, path, "get", "cursor")["schema"];
        assert_eq!(cursor["pattern"], "^[1-9][0-9]{0,17}$", "{path}");
    }
    let types = &parameter(&doc, "/events", "get", "type")["schema"]["items"]["enum"];
    let types: Vec<&str> = types
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    let all: Vec<&str> = auth_server::service::audit::EventType::ALL
        .iter()
        .map(|t| t.as_str())
        .collect();
    assert_eq!(types, all);
    assert_eq!(
        parameter(&doc, "/events", "get", "user")["schema"]["format"],
        "uuid"
    );
    assert_eq!(
        parameter(&doc, "/events", "get", "since")["schema"]["format"],
        "date-time"
    );
    let event_types = &property(&doc, "EventResponse", "type")["enum"];
    assert_eq!(event_types.as_array().unwrap().len(), all.len());
}

/// The values just inside and just outside each documented bound, as the server answers them.
#[tokio::test]
async fn the_server_answers_the_documented_bounds_as_documented() {
    let (app, _doc) = app_and_document().await;
    let passphrase = "a passphrase long enough";
    let register = |email: String, password: String, name: String| {
        let app = &app;
        async move {
            app.post_json(
                "/register",
                &json!({"email": email, "password": password, "name": name}),
            )
            .await
        }
    };
    let refused = async |response: reqwest::Response, field: &str| {
        let body = assert_problem(response, 422, "VALIDATION_FAILED").await;
        assert_eq!(error_fields(&body), [field], "{body}");
    };

    // minLength of the password is the configured 12, maxLength 128.
    refused(
        register(unique_email(), "elevenchars".into(), "Ann".into()).await,
        "password",
    )
    .await;
    refused(
        register(unique_email(), "x".repeat(129), "Ann".into()).await,
        "password",
    )
    .await;
    let response = register(unique_email(), "twelve chars".into(), "Ann".into()).await;
    assert_eq!(response.status(), StatusCode::CREATED);

    // The name: 100 characters as sent, the pattern's whitespace and control characters.
    let response = register(unique_email(), passphrase.into(), "é".repeat(100)).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    for name in [
        "é".repeat(101),
        format!(" {} ", "a".repeat(99)),
        String::new(),
        " \u{3000}\u{a0}".into(),
        "\tAnn".into(),
        "Ann\u{85}".into(),
    ] {
        refused(
            register(unique_email(), passphrase.into(), name).await,
            "name",
        )
        .await;
    }
    let response = register(unique_email(), passphrase.into(), "\u{3000}Ann ".into()).await;
    assert_eq!(response.status(), StatusCode::CREATED);

    // The email: 254 characters as sent, no control characters, and null is not a value.
    let local = "a".repeat(64);
    let domain = format!(
        "{}.{}.{}.example",
        "b".repeat(60),
        "b".repeat(60),
        "b".repeat(59)
    );
    let longest = format!("{local}@{domain}");
    assert_eq!(longest.chars().count(), 254);
    let response = register(longest.clone(), passphrase.into(), "Ann".into()).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    for email in [
        format!("a{longest}"),
        format!(" {longest}"),
        "ann\u{0}@example.com".into(),
        "ann@example.com\n".into(),
    ] {
        refused(
            register(email, passphrase.into(), "Ann".into()).await,
            "email",
        )
        .await;
    }
    refused(
        app.post_json(
            "/register",
            &json!({"email": null, "password": passphrase, "name": "Ann"}),
        )
        .await,
        "email",
    )
    .await;

    // Tokens: empty is "is required", like null and missing.
    for (path, field) in [
        ("/refresh", "refresh_token"),
        ("/verify/confirm", "token"),
        ("/logout", "refresh_token"),
    ] {
        for value in [json!(""), json!(null)] {
            let body = assert_problem(
                app.post_json(path, &json!({ field: value })).await,
                422,
                "VALIDATION_FAILED",
            )
            .await;
            assert_eq!(body["errors"][0]["field"], field, "{path}: {body}");
            assert_eq!(
                body["errors"][0]["message"], "is required",
                "{path}: {body}"
            );
        }
    }
    let body = assert_problem(
        app.post_json(
            "/password-reset/confirm",
            &json!({"token": "", "new_password": passphrase}),
        )
        .await,
        422,
        "VALIDATION_FAILED",
    )
    .await;
    assert_eq!(error_fields(&body), ["token"]);

    // /logout with a bearer token: no body, null or `{}` (what many HTTP clients send) log out;
    // a refresh token, when sent, is not empty.
    let logout = async |body: Value| {
        let (_, tokens) = app.signed_up(&unique_email()).await;
        app.client
            .post(app.url("/logout"))
            .bearer_auth(&tokens.access)
            .json(&body)
            .send()
            .await
            .unwrap()
    };
    refused(logout(json!({"refresh_token": ""})).await, "refresh_token").await;
    for body in [json!({}), json!({"refresh_token": null}), Value::Null] {
        assert_eq!(logout(body).await.status(), StatusCode::NO_CONTENT);
    }

    // A new email on PUT /me needs the current password; null leaves the email.
    let (_, tokens) = app.signed_up(&unique_email()).await;
    let update = |body: Value| {
        app.client
            .put(app.url("/me"))
            .bearer_auth(&tokens.access)
            .json(&body)
            .send()
    };
    refused(
        update(json!({"email": unique_email()})).await.unwrap(),
        "current_password",
    )
    .await;
    let response = update(json!({"email": null, "name": "Ann"})).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    // The list's query: offset up to i32::MAX, q up to 254 characters as sent.
    let (_, admin) = app.superuser().await;
    let list = |query: String| {
        app.client
            .get(app.url(&format!("/users?{query}")))
            .bearer_auth(&admin.access)
            .send()
    };
    assert_eq!(
        list(format!("offset={}", i32::MAX)).await.unwrap().status(),
        StatusCode::OK
    );
    refused(
        list(format!("offset={}", i64::from(i32::MAX) + 1))
            .await
            .unwrap(),
        "offset",
    )
    .await;
    assert_eq!(
        list(format!("q={}", "a".repeat(254)))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    refused(
        list(format!("q=%20{}", "a".repeat(254))).await.unwrap(),
        "q",
    )
    .await;
}

/// The document's patterns for a TOTP code and a recovery code accept exactly what the server
/// reads (`auth::totp::parse_code`, `normalise_recovery_code`): every character a user might
/// type, in and around valid codes.
#[tokio::test]
async fn the_second_factor_patterns_are_the_servers_parsers() {
    use auth_server::auth::totp::{normalise_recovery_code, parse_code};
    let (_app, doc) = app_and_document().await;
    let pattern = |field: &str| {
        let text = property(&doc, "LoginMfaRequest", field)["pattern"]
            .as_str()
            .unwrap()
            .to_string();
        regex::Regex::new(&text).unwrap()
    };
    let (code, recovery) = (pattern("code"), pattern("recovery_code"));
    let mut chars: Vec<char> = (' '..='~').collect();
    chars.extend(['\t', '\u{a0}', '٣', '３', 'K', 'ı', 'İ', 'ſ']);
    let mut inputs: Vec<String> = vec![
        String::new(),
        "123456".into(),
        " 123 456 ".into(),
        "1234567".into(),
        "k7m2p-x9q4r".into(),
        "K7M2P X9Q4R".into(),
        "--k7m2px9q4r--".into(),
        "k7m2p-x9q4".into(),
    ];
    for base in ["123456", "k7m2p-x9q4r"] {
        for (i, _) in base.char_indices() {
            for c in &chars {
                let mut replaced = base.to_string();
                replaced.replace_range(i..=i, &c.to_string());
                inputs.push(replaced.clone());
                replaced.insert(i, *c);
                inputs.push(replaced);
            }
        }
    }
    for input in &inputs {
        assert_eq!(
            code.is_match(input),
            parse_code(input).is_some(),
            "code {input:?}"
        );
        assert_eq!(
            recovery.is_match(input),
            normalise_recovery_code(input).is_some(),
            "recovery_code {input:?}"
        );
    }
}
