//! An independent attacker's review of issue 17 (the audit trail, the superuser's tools,
//! registration modes and invitations, GET /metrics): each test is an attack, and says what
//! must hold.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::audit::{id_of, sid};
use crate::helpers::*;
use crate::mfa::bare;
use crate::smtp::{PUBLIC_URL, SmtpSink, WAIT, app_with_mail};

/// A user agent no one else sends: it must never reach another account's view.
const ADMIN_UA: &str = "superuser-secret-agent/9.9";

/// The statuses a hostile but well-formed request may get: never a 500.
fn client_error_or_ok(status: StatusCode) -> bool {
    status == StatusCode::OK || status == StatusCode::BAD_REQUEST || status == StatusCode::NOT_FOUND
}

#[tokio::test]
async fn every_audit_and_admin_tool_is_refused_to_users_and_to_superusers_kept_to_enrolment() {
    let app = spawn_app_with(&[("MFA_REQUIRED_FOR", "superusers")]).await;
    // A superuser who has not enrolled yet: kept to enrolment.
    let (_, confined) = app.superuser().await;
    let (victim, victim_tokens) = app.signed_up(&unique_email()).await;
    let victim_id = id_of(&victim);
    let victim_sid = sid(&victim_tokens);
    let (_, user) = app.signed_up(&unique_email()).await;

    let tools: Vec<(Method, String)> = vec![
        (Method::GET, "/events".into()),
        (Method::GET, format!("/events?user={victim_id}")),
        (Method::GET, format!("/users/{victim_id}/events")),
        (Method::GET, format!("/users/{victim_id}/sessions")),
        (Method::DELETE, format!("/users/{victim_id}/sessions")),
        (
            Method::DELETE,
            format!("/users/{victim_id}/sessions/{victim_sid}"),
        ),
        (Method::DELETE, format!("/users/{victim_id}/lockout")),
        (Method::POST, format!("/users/{victim_id}/password-reset")),
        (Method::GET, "/invitations".into()),
    ];
    for (method, path) in &tools {
        let response = bare(&app, method.clone(), path, &user.access).await;
        assert_problem(response, 403, "FORBIDDEN").await;
        let response = bare(&app, method.clone(), path, &confined.access).await;
        assert_problem(response, 403, "MFA_ENROLMENT_REQUIRED").await;
    }
    // Nothing happened to the victim: its session lives, no event names it but its own.
    assert_eq!(app.me(&victim_tokens.access).await.status(), StatusCode::OK);
    let n = app
        .count(
            "SELECT COUNT(*) FROM security_events WHERE user_id = $1 \
             AND type IN ('session.revoked', 'lockout.cleared', 'user.password_reset_sent')",
            &victim_id,
        )
        .await;
    assert_eq!(n, 0);
}

#[tokio::test]
async fn a_user_cannot_widen_its_own_listing_to_another_account() {
    let app = spawn_app().await;
    let (victim, victim_tokens) = app.signed_up(&unique_email()).await;
    let victim_id = id_of(&victim);
    let (_, attacker) = app.signed_up(&unique_email()).await;
    // The victim has events (user.created, user.signed_in, a sign-out).
    assert_eq!(
        app.logout(&victim_tokens.access, None).await.status(),
        StatusCode::NO_CONTENT
    );

    for query in [
        format!("user={victim_id}"),
        format!("user_id={victim_id}"),
        "type=user.signed_in".to_string(),
        "since=2000-01-01T00:00:00Z".to_string(),
    ] {
        let response = bare(
            &app,
            Method::GET,
            &format!("/me/events?{query}"),
            &attacker.access,
        )
        .await;
        assert_problem(response, 400, "INVALID_PARAMETER").await;
    }
    // Every page of the attacker's own listing: nothing about the victim.
    let page: Value = bare(&app, Method::GET, "/me/events?limit=200", &attacker.access)
        .await
        .json()
        .await
        .unwrap();
    let text = page.to_string();
    assert!(!text.contains(&victim_id), "the victim's id leaked: {text}");
    for event in page["events"].as_array().unwrap() {
        assert_ne!(event["user_id"], json!(victim_id));
    }
    // A cursor is a position, not a key to other rows: a huge one still lists only the caller's.
    let page: Value = bare(
        &app,
        Method::GET,
        "/me/events?cursor=999999999999999999",
        &attacker.access,
    )
    .await
    .json()
    .await
    .unwrap();
    assert!(!page.to_string().contains(&victim_id));
    assert!(!page["events"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn a_superusers_identity_address_and_user_agent_never_reach_the_user() {
    let app = spawn_app().await;
    let (admin_user, admin) = app.superuser().await;
    let admin_id = id_of(&admin_user);
    let email = unique_email();
    let (victim, first) = app.signed_up(&email).await;
    let victim_id = id_of(&victim);
    let second = app.login_ok(&email).await;

    let as_admin = reqwest::Client::builder()
        .user_agent(ADMIN_UA)
        .build()
        .unwrap();
    let call = |method: Method, path: String| {
        as_admin
            .request(method, app.url(&path))
            .bearer_auth(&admin.access)
            .send()
    };
    let r = call(
        Method::DELETE,
        format!("/users/{victim_id}/sessions/{}", sid(&second)),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = call(Method::DELETE, format!("/users/{victim_id}/lockout"))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = as_admin
        .patch(app.url(&format!("/users/{victim_id}")))
        .bearer_auth(&admin.access)
        .json(&json!({"name": "Renamed by admin"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    let response = bare(&app, Method::GET, "/me/events?limit=200", &first.access).await;
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    let page: Value = serde_json::from_str(&text).unwrap();
    assert!(
        !text.contains(&admin_id),
        "the superuser's id leaked: {text}"
    );
    assert!(
        !text.contains(ADMIN_UA),
        "the superuser's user agent leaked: {text}"
    );
    assert!(
        !text.contains(&sid(&admin)),
        "the superuser's session leaked: {text}"
    );
    let by_admin: Vec<&Value> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["actor"] == "administrator")
        .collect();
    assert!(
        by_admin.len() >= 3,
        "the superuser's actions are listed: {text}"
    );
    for event in by_admin {
        for field in ["actor_id", "session_id", "ip", "user_agent"] {
            assert!(
                event.get(field).is_none_or(Value::is_null),
                "{field} of a superuser's action is shown: {event}"
            );
        }
    }
    // The superuser does see it whole.
    let whole: Value = bare(
        &app,
        Method::GET,
        &format!("/users/{victim_id}/events?limit=200"),
        &admin.access,
    )
    .await
    .json()
    .await
    .unwrap();
    assert!(whole.to_string().contains(ADMIN_UA));
}

#[tokio::test]
async fn a_session_id_of_another_account_revokes_nothing() {
    let app = spawn_app().await;
    let (_, admin) = app.superuser().await;
    let (alice, _) = app.signed_up(&unique_email()).await;
    let (_, bob_tokens) = app.signed_up(&unique_email()).await;
    let alice_id = id_of(&alice);
    let bob_sid = sid(&bob_tokens);

    // Bob's session under Alice's id; a NUL, an upper-case and a non-UUID id.
    for path in [
        format!("/users/{alice_id}/sessions/{bob_sid}"),
        format!("/users/{alice_id}/sessions/{}", bob_sid.to_uppercase()),
        format!("/users/{alice_id}/sessions/%00{bob_sid}"),
        format!("/users/%00/sessions/{bob_sid}"),
        format!("/users/{}/sessions/{bob_sid}", "9".repeat(5000)),
    ] {
        let response = bare(&app, Method::DELETE, &path, &admin.access).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
    }
    for path in [
        "/users/%00/lockout".to_string(),
        "/users/%00/sessions".to_string(),
        format!("/users/{}/lockout", "x".repeat(5000)),
    ] {
        let response = bare(&app, Method::DELETE, &path, &admin.access).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        let response = bare(&app, Method::GET, &path, &admin.access).await;
        assert!(
            response.status().is_client_error(),
            "GET {path}: {}",
            response.status()
        );
    }
    assert_eq!(app.me(&bob_tokens.access).await.status(), StatusCode::OK);
    let n = app
        .count(
            "SELECT COUNT(*) FROM security_events WHERE type = $1",
            "session.revoked",
        )
        .await;
    assert_eq!(n, 0, "an event for a revocation that did not happen");
}

#[tokio::test]
async fn hostile_listing_parameters_are_4xx_never_500() {
    let app = spawn_app().await;
    let (admin_user, admin) = app.superuser().await;
    let admin_id = id_of(&admin_user);
    let huge = "9".repeat(10_000);
    let queries = [
        "cursor=999999999999999999".to_string(),
        "cursor=9223372036854775807".to_string(),
        "cursor=-1".to_string(),
        "cursor=%00".to_string(),
        format!("cursor={huge}"),
        "limit=0".to_string(),
        "limit=201".to_string(),
        "limit=18446744073709551616".to_string(),
        "limit=%2B5".to_string(),
        "limit=%00".to_string(),
        "limit=1&limit=2".to_string(),
        "type=%00".to_string(),
        "type=user.signed_in%00".to_string(),
        "type=,,,".to_string(),
        format!("type={huge}"),
        "type=user.signed_in&type=user.signed_in,user.created".to_string(),
        "since=0000-01-01T00:00:00Z".to_string(),
        "since=9999-12-31T23:59:59.999999999%2B23:59".to_string(),
        "until=0000-01-01T00:00:00-23:59".to_string(),
        "since=2026-06-30T23:59:60Z".to_string(),
        "since=%2B275760-09-13T00:00:00Z".to_string(),
        "since=2026-11-24T09:30:00Z&until=2000-01-01T00:00:00Z".to_string(),
        "since=%00".to_string(),
        format!("since={huge}"),
        "user=%00".to_string(),
        format!("user={}", admin_id.to_uppercase()),
        format!("user={{{admin_id}}}"),
        format!("user={}", admin_id.replace('-', "")),
        "%00=1".to_string(),
        "user".to_string(),
        "&&&".to_string(),
        "%ff%fe=%ff".to_string(),
    ];
    for query in &queries {
        for path in [
            format!("/events?{query}"),
            format!("/users/{admin_id}/events?{query}"),
            format!("/me/events?{query}"),
        ] {
            let response = bare(&app, Method::GET, &path, &admin.access).await;
            let status = response.status();
            let body = response.text().await.unwrap();
            assert!(client_error_or_ok(status), "GET {path}: {status} {body}");
        }
    }
    // The upper-case form of an id names the same account (what the server writes is lower case).
    let page: Value = bare(
        &app,
        Method::GET,
        &format!("/events?user={}&limit=200", admin_id.to_uppercase()),
        &admin.access,
    )
    .await
    .json()
    .await
    .unwrap();
    assert!(!page["events"].as_array().unwrap().is_empty());
}

/// A superuser made as the command line makes one (registration may be closed to others).
async fn cli_superuser(app: &TestApp) -> Tokens {
    let email = unique_email();
    auth_server::service::admin::create_superuser(
        &app.state,
        &auth_server::domain::Email::parse("email", &email).unwrap(),
        &auth_server::domain::Name::parse("name", "Admin").unwrap(),
        false,
        || Ok(PASSWORD.to_string()),
    )
    .await
    .unwrap();
    app.login_ok(&email).await
}

/// The token of the `n`th invitation mail to `email`.
async fn invitation_token(sink: &SmtpSink, email: &str, n: usize) -> String {
    let mails = sink
        .wait_for(email, "You are invited to create an account", n, WAIT)
        .await;
    let body = mails[n - 1].body();
    let marker = format!("{PUBLIC_URL}/register?invitation=");
    let start = body.find(&marker).expect("the invitation link") + marker.len();
    body[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}

async fn register_with(app: &TestApp, email: &str, invitation: &Value) -> reqwest::Response {
    app.post_json(
        "/register",
        &json!({"email": email, "password": PASSWORD, "name": "Invitee", "invitation": invitation}),
    )
    .await
}

#[tokio::test]
async fn an_invitation_is_one_address_once_whatever_its_spelling_and_the_token_is_kept_secret() {
    let sink = SmtpSink::start().await;
    let app = app_with_mail(&sink, &[("REGISTRATION", "invite")]).await;
    let admin = cli_superuser(&app).await;
    let local = format!("kate{}", uuid::Uuid::new_v4().simple());
    let invited = format!("{local}@example.com");
    let other = format!("{}@example.com", uuid::Uuid::new_v4().simple());
    let response = app
        .client
        .post(app.url("/invitations"))
        .bearer_auth(&admin.access)
        .json(&json!({"email": invited}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let created = response.text().await.unwrap();
    let token = invitation_token(&sink, &invited, 1).await;
    assert!(!created.contains(&token), "the 201 holds the token");

    // Mode bypasses: no token, an empty one, null, a number, the token with a NUL or padding.
    for invitation in [json!(null), json!(""), json!(" ")] {
        let response = register_with(&app, &other, &invitation).await;
        assert!(
            response.status().is_client_error(),
            "{invitation}: {}",
            response.status()
        );
    }
    for invitation in [
        json!(format!("{token}\u{0}")),
        json!(format!(" {token} ")),
        json!(token.to_uppercase()),
        json!([token.clone()]),
    ] {
        let response = register_with(&app, &invited, &invitation).await;
        assert!(
            response.status().is_client_error(),
            "{invitation}: {}",
            response.status()
        );
    }
    // Another address with the right token.
    assert_problem(
        register_with(&app, &other, &json!(token)).await,
        400,
        "INVITATION_INVALID",
    )
    .await;
    assert_eq!(
        app.count("SELECT COUNT(*) FROM users WHERE email = $1", &other)
            .await,
        0
    );
    // The invited address spelt otherwise (upper case, the Kelvin sign for k): the same address,
    // one account, stored normalised.
    let kelvin = invited.replacen('k', "\u{212A}", 1).to_uppercase();
    let response = register_with(&app, &kelvin, &json!(token)).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let account: Value = response.json().await.unwrap();
    assert_eq!(account["email"], json!(invited));
    // Used once: any spelling again is refused, and no second account exists.
    for again in [invited.clone(), invited.to_uppercase()] {
        assert_problem(
            register_with(&app, &again, &json!(token)).await,
            400,
            "INVITATION_INVALID",
        )
        .await;
    }
    assert_eq!(
        app.count("SELECT COUNT(*) FROM users WHERE email = $1", &invited)
            .await,
        1
    );
    // The token is nowhere in the audit trail.
    let n = app
        .count(
            "SELECT COUNT(*) FROM security_events WHERE detail LIKE '%' || $1 || '%'",
            &token,
        )
        .await;
    assert_eq!(n, 0);
}

#[tokio::test]
async fn metrics_need_their_token_and_name_no_account() {
    const TOKEN: &str = "review-metrics-token-0123456789";
    let app = spawn_app_with(&[("METRICS_TOKEN", TOKEN)]).await;
    let email = unique_email();
    let (user, tokens) = app.signed_up(&email).await;
    let user_id = id_of(&user);
    // Failed sign-ins, unknown routes with ids in them: the labels must stay templates.
    let _ = app.login(&email, "a wrong password entirely").await;
    let _ = app
        .login(&unique_email(), "a wrong password entirely")
        .await;
    for _ in 0..5 {
        let path = format!("/users/{}/events", uuid::Uuid::new_v4());
        let _ = bare(&app, Method::GET, &path, &tokens.access).await;
        let path = format!("/no-such-route/{}", uuid::Uuid::new_v4());
        let _ = bare(&app, Method::GET, &path, &tokens.access).await;
    }

    let metrics = |auth: Option<String>| {
        let mut request = app.client.get(app.url("/metrics"));
        if let Some(auth) = auth {
            request = request.header("Authorization", auth);
        }
        request.send()
    };
    for auth in [
        None,
        Some(String::new()),
        Some("Bearer".into()),
        Some("Bearer ".into()),
        Some(format!("Basic {TOKEN}")),
        Some(format!("Bearer {}", &TOKEN[..TOKEN.len() - 1])),
        Some(format!("Bearer {TOKEN}x")),
        Some(format!("Bearer {}", TOKEN.to_uppercase())),
        Some(format!("Bearer {}", tokens.access)),
    ] {
        let response = metrics(auth.clone()).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{auth:?}");
        let text = response.text().await.unwrap();
        assert!(!text.contains("http_requests_total"), "{auth:?}");
    }
    let response = metrics(Some(format!("bearer {TOKEN}"))).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    assert!(text.contains("http_requests_total"));
    assert!(!text.contains(&user_id), "a user id in the metrics");
    assert!(!text.contains(&email), "an address in the metrics");
    assert!(
        !text.contains("no-such-route"),
        "a client's path as a label"
    );
    assert!(text.contains("/users/{id}/events"), "{text}");
}

#[tokio::test]
async fn recording_failed_sign_ins_does_not_tell_a_known_address_from_an_unknown_one() {
    let app = spawn_app().await;
    let known = unique_email();
    let (user, _) = app.signed_up(&known).await;
    let unknown = unique_email();

    let answer = async |email: &str| {
        let response = app.login(email, "not the password at all").await;
        let status = response.status();
        let mut body: Value = response.json().await.unwrap();
        // What may differ per request.
        for volatile in ["instance", "request_id", "trace_id"] {
            body.as_object_mut().unwrap().remove(volatile);
        }
        (status, body)
    };
    let (known_status, known_body) = answer(&known).await;
    let (unknown_status, unknown_body) = answer(&unknown).await;
    assert_eq!(known_status, StatusCode::UNAUTHORIZED);
    assert_eq!(known_status, unknown_status);
    assert_eq!(known_body, unknown_body);
    // Each recorded once; the unknown one names no account, and neither holds the password.
    let failed = async |bind: &str| {
        app.count(
            "SELECT COUNT(*) FROM security_events WHERE type = 'user.sign_in_failed' \
             AND COALESCE(user_id, '-') = $1",
            bind,
        )
        .await
    };
    assert_eq!(failed(&id_of(&user)).await, 1);
    assert_eq!(failed("-").await, 1);
    let n = app
        .count(
            "SELECT COUNT(*) FROM security_events WHERE detail LIKE '%' || $1 || '%'",
            "not the password",
        )
        .await;
    assert_eq!(n, 0, "a password in an event");
}

#[tokio::test]
async fn a_posted_invitation_is_never_reflected_unescaped_into_the_page() {
    let app = spawn_app().await;
    let mut browser = crate::pages::Browser::new(&app);
    let page = browser.get("/register").await;
    let csrf = page.value("register", "csrf");
    let evil = r#""><script>alert(1)</script><input x=""#;
    let email = unique_email();
    // Passwords that differ: the form comes back, with what was posted kept.
    let page = browser
        .post(
            "/register",
            &[
                ("csrf", &csrf),
                ("email", &email),
                ("name", "Mallory"),
                ("password", PASSWORD),
                ("password2", "not the same passphrase"),
                ("invitation", evil),
            ],
        )
        .await;
    assert!(page.status.is_client_error(), "{}", page.status);
    assert!(
        !page.body.contains("<script>alert(1)</script>"),
        "the posted invitation is reflected as markup"
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM users WHERE email = $1", &email)
            .await,
        0
    );
}
