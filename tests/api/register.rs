use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn register_creates_an_account() {
    let app = spawn_app().await;
    let response = app
        .register("  Alice@Example.COM ", PASSWORD, "  Alice ")
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let user: serde_json::Value = response.json().await.unwrap();
    assert_eq!(user["email"], "alice@example.com");
    assert_eq!(user["name"], "Alice");
    assert_eq!(user["is_active"], true);
    assert_eq!(user["is_verified"], false);
    assert_eq!(user["is_superuser"], false);
    assert!(uuid::Uuid::parse_str(user["id"].as_str().unwrap()).is_ok());
    let created = user["created_at"].as_str().unwrap();
    assert!(chrono::DateTime::parse_from_rfc3339(created).is_ok() && created.ends_with('Z'));
    assert!(user.get("password").is_none() && user.get("password_hash").is_none());
    let keys: Vec<_> = user.as_object().unwrap().keys().cloned().collect();
    assert_eq!(keys.len(), 8, "{keys:?}");
}

#[tokio::test]
async fn an_email_is_one_account_whatever_its_case() {
    let app = spawn_app().await;
    assert_eq!(
        app.register("bob@example.com", PASSWORD, "Bob")
            .await
            .status(),
        201
    );
    let again = app.register("BOB@example.com", PASSWORD, "Bob").await;
    assert_problem(again, 409, "EMAIL_TAKEN").await;
}

#[tokio::test]
async fn invalid_fields_are_each_named() {
    let app = spawn_app().await;
    let response = app.register("not-an-email", "short", "").await;
    let body = assert_problem(response, 422, "VALIDATION_FAILED").await;
    let mut fields = error_fields(&body);
    fields.sort();
    assert_eq!(fields, ["email", "name", "password"]);

    for (email, password, name, field) in [
        (
            format!("{}@example.com", "a".repeat(250)),
            PASSWORD.to_string(),
            "N".to_string(),
            "email",
        ),
        (unique_email(), "x".repeat(129), "N".to_string(), "password"),
        (
            unique_email(),
            "1234567".to_string(),
            "N".to_string(),
            "password",
        ),
        (
            unique_email(),
            PASSWORD.to_string(),
            "N".repeat(101),
            "name",
        ),
        (
            unique_email(),
            PASSWORD.to_string(),
            "bad\u{0001}name".to_string(),
            "name",
        ),
    ] {
        let body = assert_problem(
            app.register(&email, &password, &name).await,
            422,
            "VALIDATION_FAILED",
        )
        .await;
        assert_eq!(error_fields(&body), [field], "{body}");
    }
}

#[tokio::test]
async fn password_length_counts_characters() {
    let app = spawn_app().await;
    // Eight characters of two or three bytes each: long enough.
    let response = app.register(&unique_email(), "ñ7ü€ß9Ωж", "Unicode").await;
    assert_eq!(response.status(), 201);
    // Seven are not, whatever their bytes.
    let body = assert_problem(
        app.register(&unique_email(), "ñ7ü€ß9Ω", "Unicode").await,
        422,
        "VALIDATION_FAILED",
    )
    .await;
    assert_eq!(error_fields(&body), ["password"]);
    // 128 characters (256 bytes) are the most.
    let long: String = (0..128u32)
        .map(|i| char::from_u32(0xE0 + (i * 7) % 31).unwrap())
        .collect();
    assert_eq!(long.chars().count(), 128);
    assert_eq!(
        app.register(&unique_email(), &long, "Unicode")
            .await
            .status(),
        201
    );
    let longer = format!("{long}x");
    let body = assert_problem(
        app.register(&unique_email(), &longer, "Unicode").await,
        422,
        "VALIDATION_FAILED",
    )
    .await;
    assert_eq!(error_fields(&body), ["password"]);
}

#[tokio::test]
async fn missing_and_unknown_fields_are_refused() {
    let app = spawn_app().await;
    let body = assert_problem(
        app.post_json("/register", &json!({})).await,
        422,
        "VALIDATION_FAILED",
    )
    .await;
    let mut fields = error_fields(&body);
    fields.sort();
    assert_eq!(fields, ["email", "name", "password"]);

    let sneaky =
        json!({"email": unique_email(), "password": PASSWORD, "name": "Eve", "is_superuser": true});
    let body = assert_problem(
        app.post_json("/register", &sneaky).await,
        422,
        "VALIDATION_FAILED",
    )
    .await;
    assert_eq!(error_fields(&body), ["is_superuser"]);

    let wrong_type = json!({"email": 42, "password": PASSWORD, "name": "Eve"});
    let body = assert_problem(
        app.post_json("/register", &wrong_type).await,
        422,
        "VALIDATION_FAILED",
    )
    .await;
    assert_eq!(error_fields(&body), ["email"]);
}

#[tokio::test]
async fn fifty_concurrent_registrations_of_one_email_give_one_account() {
    let app = spawn_app().await;
    let email = unique_email();
    let requests = (0..50)
        .map(|i| {
            let client = app.client.clone();
            let url = app.url("/register");
            let body = json!({"email": email.to_uppercase(), "password": PASSWORD, "name": format!("Racer {i}")});
            async move { client.post(url).json(&body).send().await.unwrap().status() }
        })
        .collect();
    let statuses = concurrently(requests).await;
    let created = statuses
        .iter()
        .filter(|s| **s == StatusCode::CREATED)
        .count();
    let conflicts = statuses
        .iter()
        .filter(|s| **s == StatusCode::CONFLICT)
        .count();
    assert_eq!(created, 1, "{statuses:?}");
    assert_eq!(conflicts, 49, "{statuses:?}");
    assert_eq!(
        app.count("SELECT COUNT(*) FROM users WHERE email = $1", &email)
            .await,
        1
    );
}
