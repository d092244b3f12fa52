use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

async fn put_me(app: &TestApp, token: &str, body: &Value) -> reqwest::Response {
    app.client
        .put(app.url("/me"))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn get_me_returns_the_callers_account() {
    let app = spawn_app().await;
    let (user, tokens) = app.signed_up(&unique_email()).await;
    let response = app.me(&tokens.access).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let me: Value = response.json().await.unwrap();
    assert_eq!(me, user);
}

#[tokio::test]
async fn put_and_patch_change_the_name() {
    let app = spawn_app().await;
    let (user, tokens) = app.signed_up(&unique_email()).await;
    let response = put_me(&app, &tokens.access, &json!({"name": "  New Name "})).await;
    assert_eq!(response.status(), StatusCode::OK);
    let updated: Value = response.json().await.unwrap();
    assert_eq!(updated["name"], "New Name");
    assert_eq!(updated["email"], user["email"]);
    assert!(updated["updated_at"].as_str().unwrap() >= user["created_at"].as_str().unwrap());

    let response = app
        .client
        .patch(app.url("/me"))
        .bearer_auth(&tokens.access)
        .json(&json!({"name": "Patched"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let me: Value = app.me(&tokens.access).await.json().await.unwrap();
    assert_eq!(me["name"], "Patched");
    // An empty update changes nothing.
    let response = put_me(&app, &tokens.access, &json!({})).await;
    assert_eq!(response.json::<Value>().await.unwrap()["name"], "Patched");
}

#[tokio::test]
async fn changing_the_email_needs_the_password_and_unverifies() {
    let app = spawn_app().await;
    let email = unique_email();
    let (_, tokens) = app.signed_up(&email).await;
    app.execute(
        "UPDATE users SET is_verified = TRUE WHERE email = $1",
        &email,
    )
    .await;
    let new_email = unique_email();

    let body = assert_problem(
        put_me(&app, &tokens.access, &json!({"email": new_email})).await,
        422,
        "VALIDATION_FAILED",
    )
    .await;
    assert_eq!(error_fields(&body), ["current_password"]);
    let wrong = put_me(
        &app,
        &tokens.access,
        &json!({"email": new_email, "current_password": "not my password"}),
    )
    .await;
    assert_problem(wrong, 403, "INVALID_CREDENTIALS").await;

    let response = put_me(
        &app,
        &tokens.access,
        &json!({"email": new_email.to_uppercase(), "current_password": PASSWORD}),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let updated: Value = response.json().await.unwrap();
    assert_eq!(updated["email"], new_email);
    assert_eq!(updated["is_verified"], false);
    assert_eq!(
        app.login(&new_email, PASSWORD).await.status(),
        StatusCode::OK
    );
    assert_problem(
        app.login(&email, PASSWORD).await,
        401,
        "INVALID_CREDENTIALS",
    )
    .await;

    // The same address in another case is no change and needs no password.
    let response = put_me(
        &app,
        &tokens.access,
        &json!({"email": new_email.to_uppercase()}),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn changing_to_a_taken_email_conflicts() {
    let app = spawn_app().await;
    let taken = unique_email();
    app.register(&taken, PASSWORD, "First").await;
    let (_, tokens) = app.signed_up(&unique_email()).await;
    let response = put_me(
        &app,
        &tokens.access,
        &json!({"email": taken, "current_password": PASSWORD}),
    )
    .await;
    assert_problem(response, 409, "EMAIL_TAKEN").await;
}

#[tokio::test]
async fn profile_update_errors() {
    let app = spawn_app().await;
    let (_, tokens) = app.signed_up(&unique_email()).await;
    let body = assert_problem(
        put_me(&app, &tokens.access, &json!({"name": ""})).await,
        422,
        "VALIDATION_FAILED",
    )
    .await;
    assert_eq!(error_fields(&body), ["name"]);
    let body = assert_problem(
        put_me(&app, &tokens.access, &json!({"name": "x", "email": "nope"})).await,
        422,
        "VALIDATION_FAILED",
    )
    .await;
    assert_eq!(error_fields(&body), ["email"]);
    // Mass assignment: unknown fields are refused, never applied.
    let body = assert_problem(
        put_me(
            &app,
            &tokens.access,
            &json!({"name": "x", "is_superuser": true}),
        )
        .await,
        422,
        "VALIDATION_FAILED",
    )
    .await;
    assert_eq!(error_fields(&body), ["is_superuser"]);
    let me: Value = app.me(&tokens.access).await.json().await.unwrap();
    assert_eq!(me["is_superuser"], false);
    assert_eq!(me["name"], "Test User");
    // No token.
    let response = app
        .client
        .put(app.url("/me"))
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    assert_problem(response, 401, "UNAUTHORIZED").await;
}

#[tokio::test]
async fn delete_me_removes_the_account_and_all_its_sessions() {
    let app = spawn_app().await;
    let email = unique_email();
    let (user, a) = app.signed_up(&email).await;
    let b = app.login_ok(&email).await;
    let id = user["id"].as_str().unwrap();
    assert_eq!(
        app.count("SELECT COUNT(*) FROM sessions WHERE user_id = $1", id)
            .await,
        2
    );

    let delete = |token: String, body: Value| {
        let request = app
            .client
            .delete(app.url("/me"))
            .bearer_auth(token)
            .json(&body);
        async move { request.send().await.unwrap() }
    };
    assert_problem(
        delete(a.access.clone(), json!({"password": "wrong password"})).await,
        403,
        "INVALID_CREDENTIALS",
    )
    .await;
    let body = assert_problem(
        delete(a.access.clone(), json!({})).await,
        422,
        "VALIDATION_FAILED",
    )
    .await;
    assert_eq!(error_fields(&body), ["password"]);
    let response = app
        .client
        .delete(app.url("/me"))
        .bearer_auth(&a.access)
        .send()
        .await
        .unwrap();
    assert_problem(response, 422, "VALIDATION_FAILED").await;

    let response = delete(a.access.clone(), json!({"password": PASSWORD})).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM users WHERE id = $1", id)
            .await,
        0
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM sessions WHERE user_id = $1", id)
            .await,
        0
    );
    for t in [&a, &b] {
        assert_problem(app.me(&t.access).await, 401, "UNAUTHORIZED").await;
        assert_problem(app.refresh(&t.refresh).await, 401, "INVALID_TOKEN").await;
    }
    assert_problem(
        app.login(&email, PASSWORD).await,
        401,
        "INVALID_CREDENTIALS",
    )
    .await;
    // The address is free again.
    assert_eq!(
        app.register(&email, PASSWORD, "Again").await.status(),
        StatusCode::CREATED
    );
}

/// Reads from `stream` until `received` holds a whole message: a head, and as many body bytes as
/// its Content-Length says. Returns the head and the body.
async fn read_message(stream: &mut TcpStream, received: &mut Vec<u8>) -> (String, String) {
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&received[..end]).to_string();
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            if received.len() >= end + 4 + length {
                let body = String::from_utf8_lossy(&received[end + 4..end + 4 + length]);
                let body = body.to_string();
                received.drain(..end + 4 + length);
                return (head, body);
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("an answer within 10 s")
            .unwrap();
        assert!(n > 0, "the connection closed before the answer");
        received.extend_from_slice(&buf[..n]);
    }
}

/// A request whose session was checked under credentials that have changed by the time it
/// confirms the password (here another session changed the email meanwhile, which this session
/// survives) is refused with 401, the password unchecked: right or wrong, nothing happens and no
/// attempt stays counted.
#[tokio::test]
async fn a_password_confirmed_after_the_credentials_changed_is_refused() {
    let app = spawn_app().await;
    let (user, changer) = app.signed_up(&unique_email()).await;
    let stale = app.login_ok(user["email"].as_str().unwrap()).await;
    let address = app.address.trim_start_matches("http://").to_string();
    for password in ["wrong password", PASSWORD] {
        let email = app.me(&changer.access).await.json::<Value>().await.unwrap()["email"]
            .as_str()
            .unwrap()
            .to_string();
        let body = json!({ "password": password }).to_string();
        let mut stream = TcpStream::connect(&address).await.unwrap();
        let head = format!(
            "DELETE /me HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\
             Expect: 100-continue\r\n\r\n",
            stale.access,
            body.len()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        // 100 Continue: the token has been checked and the handler is reading the body.
        let mut received = Vec::new();
        let (continued, _) = read_message(&mut stream, &mut received).await;
        assert!(continued.starts_with("HTTP/1.1 100"), "{continued}");
        let changed = put_me(
            &app,
            &changer.access,
            &json!({"email": unique_email(), "current_password": PASSWORD}),
        )
        .await;
        assert_eq!(changed.status(), StatusCode::OK);
        stream.write_all(body.as_bytes()).await.unwrap();
        let (head, body) = read_message(&mut stream, &mut received).await;
        assert!(head.starts_with("HTTP/1.1 401"), "{head}\n{body}");
        let problem: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(problem["code"], "UNAUTHORIZED", "{problem}");
        assert_eq!(
            problem["detail"],
            "the account's credentials changed meanwhile; sign in again"
        );
        assert_eq!(
            app.count(
                "SELECT COUNT(*) FROM login_attempts WHERE email = $1",
                &email
            )
            .await,
            0,
            "no attempt stays counted"
        );
    }
    // The account is there, and the session, carried forward, goes on.
    assert_eq!(app.me(&stale.access).await.status(), StatusCode::OK);
}
