use argon2::{Algorithm, Argon2, Params, PasswordHasher, Version};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

#[tokio::test]
async fn login_with_json_returns_a_token_pair() {
    let app = spawn_app().await;
    let email = unique_email();
    app.register(&email, PASSWORD, "Ann").await;
    let response = app.login(&email.to_uppercase(), PASSWORD).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["expires_in"], 1800);
    assert_eq!(body.as_object().unwrap().len(), 4);
    let tokens = Tokens::from(body);
    assert_eq!(app.me(&tokens.access).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn login_with_the_oauth2_password_form() {
    let app = spawn_app().await;
    let email = unique_email();
    app.register(&email, PASSWORD, "Ann").await;
    // What Swagger UI's Authorize button sends.
    let response = app
        .client
        .post(app.url("/login"))
        .form(&[
            ("grant_type", "password"),
            ("username", email.as_str()),
            ("password", PASSWORD),
            ("scope", ""),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let tokens = Tokens::from(response.json::<Value>().await.unwrap());
    assert_eq!(app.me(&tokens.access).await.status(), StatusCode::OK);

    let response = app
        .client
        .post(app.url("/login"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("username", email.as_str()),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    let body = assert_problem(response, 422, "VALIDATION_FAILED").await;
    assert_eq!(error_fields(&body), ["grant_type"]);

    let response = app
        .client
        .post(app.url("/login"))
        .form(&[("username", email.as_str())])
        .send()
        .await
        .unwrap();
    let body = assert_problem(response, 422, "VALIDATION_FAILED").await;
    assert_eq!(error_fields(&body), ["password"]);
}

#[tokio::test]
async fn a_wrong_password_and_an_unknown_email_get_the_same_answer() {
    let app = spawn_app().await;
    let email = unique_email();
    app.register(&email, PASSWORD, "Ann").await;
    let wrong = assert_problem(
        app.login(&email, "wrong password!").await,
        401,
        "INVALID_CREDENTIALS",
    )
    .await;
    let unknown = assert_problem(
        app.login(&unique_email(), PASSWORD).await,
        401,
        "INVALID_CREDENTIALS",
    )
    .await;
    let garbage = assert_problem(
        app.login("not an email", PASSWORD).await,
        401,
        "INVALID_CREDENTIALS",
    )
    .await;
    assert_eq!(wrong, unknown);
    assert_eq!(wrong, garbage);
}

#[tokio::test]
async fn login_body_errors() {
    let app = spawn_app().await;
    let body = assert_problem(
        app.post_json("/login", &json!({"email": "a@b.co"})).await,
        422,
        "VALIDATION_FAILED",
    )
    .await;
    assert_eq!(error_fields(&body), ["password"]);
    let empty = app.client.post(app.url("/login")).send().await.unwrap();
    let body = assert_problem(empty, 422, "VALIDATION_FAILED").await;
    assert_eq!(error_fields(&body), ["email", "password"]);
    let text = app
        .client
        .post(app.url("/login"))
        .header("content-type", "text/plain")
        .body("email=a")
        .send()
        .await
        .unwrap();
    assert_problem(text, 415, "UNSUPPORTED_MEDIA_TYPE").await;
}

#[tokio::test]
async fn a_deactivated_account_cannot_log_in() {
    let app = spawn_app().await;
    let email = unique_email();
    app.register(&email, PASSWORD, "Ann").await;
    app.execute(
        "UPDATE users SET is_active = FALSE WHERE email = $1",
        &email,
    )
    .await;
    assert_problem(app.login(&email, PASSWORD).await, 403, "ACCOUNT_DISABLED").await;
    // The wrong password still says nothing about the account's state.
    assert_problem(
        app.login(&email, "wrong password!").await,
        401,
        "INVALID_CREDENTIALS",
    )
    .await;
}

#[tokio::test]
async fn require_verified_email_refuses_unverified_accounts() {
    let app = spawn_app_with(&[("REQUIRE_VERIFIED_EMAIL", "true")]).await;
    let email = unique_email();
    app.register(&email, PASSWORD, "Ann").await;
    assert_problem(app.login(&email, PASSWORD).await, 403, "EMAIL_NOT_VERIFIED").await;
    app.execute(
        "UPDATE users SET is_verified = TRUE WHERE email = $1",
        &email,
    )
    .await;
    assert_eq!(app.login(&email, PASSWORD).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_hash_with_weaker_parameters_is_upgraded_at_login() {
    let app = spawn_app().await;
    let email = unique_email();
    app.register(&email, PASSWORD, "Ann").await;
    let weak = Argon2::new(
        Algorithm::Argon2id,
        Version::V0x13,
        Params::new(64, 1, 1, None).unwrap(),
    )
    .hash_password(PASSWORD.as_bytes())
    .unwrap()
    .to_string();
    assert!(weak.contains("m=64,"));
    app.execute2(
        "UPDATE users SET password_hash = $1 WHERE email = $2",
        &weak,
        &email,
    )
    .await;
    assert_eq!(app.login(&email, PASSWORD).await.status(), StatusCode::OK);
    // The upgrade runs beside the login: the stored hash changes soon after.
    app.wait_count(
        "SELECT COUNT(*) FROM users WHERE email = $1 \
         AND password_hash LIKE '$argon2id$v=19$m=256,t=1,p=1$%'",
        &email,
        |n| n == 1,
    )
    .await;
    assert_eq!(app.login(&email, PASSWORD).await.status(), StatusCode::OK);
}
