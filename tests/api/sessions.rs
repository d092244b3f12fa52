//! GET /me/sessions, DELETE /me/sessions/{id}, PUT /me/password.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

async fn list(app: &TestApp, token: &str) -> Vec<Value> {
    let response = app
        .client
        .get(app.url("/me/sessions"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "no-store");
    response.json().await.unwrap()
}

async fn login_as(
    app: &TestApp,
    email: &str,
    user_agent: &str,
    forwarded_for: Option<&str>,
) -> Tokens {
    let mut request = app
        .client
        .post(app.url("/login"))
        .header("user-agent", user_agent)
        .json(&json!({"email": email, "password": PASSWORD}));
    if let Some(ip) = forwarded_for {
        request = request.header("x-forwarded-for", ip);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    Tokens::from(response.json::<Value>().await.unwrap())
}

#[tokio::test]
async fn sessions_are_listed_newest_first_with_the_current_one_marked() {
    let app = spawn_app().await;
    let email = unique_email();
    app.register(&email, PASSWORD, "Many").await;
    let phone = login_as(&app, &email, "Phone/1.0", None).await;
    app.clock.advance(std::time::Duration::from_secs(1));
    let laptop = login_as(&app, &email, "Laptop/2.0", None).await;
    let sessions = list(&app, &phone.access).await;
    assert_eq!(sessions.len(), 2);
    assert_eq!(sessions[0]["user_agent"], "Laptop/2.0");
    assert_eq!(sessions[1]["user_agent"], "Phone/1.0");
    assert_eq!(sessions[0]["current"], false);
    assert_eq!(sessions[1]["current"], true);
    for s in &sessions {
        assert_eq!(s["ip"], "127.0.0.1");
        for field in ["created_at", "last_used_at", "expires_at"] {
            assert!(
                chrono::DateTime::parse_from_rfc3339(s[field].as_str().unwrap()).is_ok(),
                "{s}"
            );
        }
        assert_eq!(s.as_object().unwrap().len(), 7, "{s}");
    }
    // A refresh moves last_used_at and records the client again.
    let before = sessions[0]["last_used_at"].as_str().unwrap().to_string();
    app.clock.advance(std::time::Duration::from_secs(1));
    let refreshed = app
        .client
        .post(app.url("/refresh"))
        .header("user-agent", "Laptop/2.1")
        .json(&json!({"refresh_token": laptop.refresh}))
        .send()
        .await
        .unwrap();
    assert_eq!(refreshed.status(), StatusCode::OK);
    let sessions = list(&app, &phone.access).await;
    assert_eq!(sessions[0]["user_agent"], "Laptop/2.1");
    assert!(sessions[0]["last_used_at"].as_str().unwrap() > before.as_str());
    // Ended sessions are not listed.
    app.logout(&laptop.access, None).await;
    assert_eq!(list(&app, &phone.access).await.len(), 1);
}

#[tokio::test]
async fn revoking_a_session_kills_its_tokens_at_once() {
    let app = spawn_app().await;
    let email = unique_email();
    let (_, mine) = app.signed_up(&email).await;
    let other = app.login_ok(&email).await;
    let sessions = list(&app, &mine.access).await;
    let other_id = sessions.iter().find(|s| s["current"] == false).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();

    let response = app
        .client
        .delete(app.url(&format!("/me/sessions/{other_id}")))
        .bearer_auth(&mine.access)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_problem(app.me(&other.access).await, 401, "UNAUTHORIZED").await;
    assert_problem(app.refresh(&other.refresh).await, 401, "INVALID_TOKEN").await;
    assert_eq!(app.me(&mine.access).await.status(), StatusCode::OK);

    // Already ended, unknown, or someone else's: 404.
    let (_, stranger) = app.signed_up(&unique_email()).await;
    let stranger_id = list(&app, &stranger.access).await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    for id in [
        other_id.as_str(),
        "00000000-0000-0000-0000-000000000000",
        "not-a-uuid",
        stranger_id.as_str(),
    ] {
        let response = app
            .client
            .delete(app.url(&format!("/me/sessions/{id}")))
            .bearer_auth(&mine.access)
            .send()
            .await
            .unwrap();
        assert_problem(response, 404, "NOT_FOUND").await;
    }
    assert_eq!(app.me(&stranger.access).await.status(), StatusCode::OK);
    let response = app
        .client
        .delete(app.url(&format!("/me/sessions/{other_id}")))
        .send()
        .await
        .unwrap();
    assert_problem(response, 401, "UNAUTHORIZED").await;
    let response = app
        .client
        .get(app.url("/me/sessions"))
        .send()
        .await
        .unwrap();
    assert_problem(response, 401, "UNAUTHORIZED").await;
}

#[tokio::test]
async fn forwarded_for_is_recorded_only_from_trusted_proxies() {
    let app = spawn_app_with(&[("TRUSTED_PROXIES", "127.0.0.1/32, ::1")]).await;
    let email = unique_email();
    app.register(&email, PASSWORD, "Proxied").await;
    let t = login_as(&app, &email, "Browser", Some("198.51.100.7, 203.0.113.9")).await;
    assert_eq!(list(&app, &t.access).await[0]["ip"], "203.0.113.9");

    let untrusting = spawn_app().await;
    untrusting.register(&email, PASSWORD, "Direct").await;
    let t = login_as(&untrusting, &email, "Browser", Some("203.0.113.9")).await;
    assert_eq!(list(&untrusting, &t.access).await[0]["ip"], "127.0.0.1");
}

async fn change_password(app: &TestApp, token: &str, body: &Value) -> reqwest::Response {
    app.client
        .put(app.url("/me/password"))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn changing_the_password_ends_the_other_sessions_and_keeps_this_one() {
    let app = spawn_app().await;
    let email = unique_email();
    let (_, mine) = app.signed_up(&email).await;
    let other = app.login_ok(&email).await;
    let new = "another fine passphrase";
    let response = change_password(
        &app,
        &mine.access,
        &json!({"current_password": PASSWORD, "new_password": new}),
    )
    .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.me(&mine.access).await.status(), StatusCode::OK);
    assert_eq!(app.refresh(&mine.refresh).await.status(), StatusCode::OK);
    assert_problem(app.me(&other.access).await, 401, "UNAUTHORIZED").await;
    assert_problem(app.refresh(&other.refresh).await, 401, "INVALID_TOKEN").await;
    assert_problem(
        app.login(&email, PASSWORD).await,
        401,
        "INVALID_CREDENTIALS",
    )
    .await;
    assert_eq!(app.login(&email, new).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn password_change_errors() {
    let app = spawn_app().await;
    let email = unique_email();
    let (_, mine) = app.signed_up(&email).await;
    let other = app.login_ok(&email).await;
    let wrong = change_password(
        &app,
        &mine.access,
        &json!({"current_password": "not it at all", "new_password": "another fine passphrase"}),
    )
    .await;
    assert_problem(wrong, 403, "INVALID_CREDENTIALS").await;
    let weak = change_password(
        &app,
        &mine.access,
        &json!({"current_password": PASSWORD, "new_password": "short"}),
    )
    .await;
    let body = assert_problem(weak, 422, "VALIDATION_FAILED").await;
    assert_eq!(error_fields(&body), ["new_password"]);
    let body = assert_problem(
        change_password(&app, &mine.access, &json!({})).await,
        422,
        "VALIDATION_FAILED",
    )
    .await;
    let mut fields = error_fields(&body);
    fields.sort();
    assert_eq!(fields, ["current_password", "new_password"]);
    let response = app
        .client
        .put(app.url("/me/password"))
        .json(&json!({"current_password": PASSWORD, "new_password": "x"}))
        .send()
        .await
        .unwrap();
    assert_problem(response, 401, "UNAUTHORIZED").await;
    // Nothing changed.
    assert_eq!(app.me(&other.access).await.status(), StatusCode::OK);
    assert_eq!(app.login(&email, PASSWORD).await.status(), StatusCode::OK);
}
