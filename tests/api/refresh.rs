use std::collections::HashSet;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

#[tokio::test]
async fn refresh_rotates_the_pair() {
    let app = spawn_app().await;
    let (_, first) = app.signed_up(&unique_email()).await;
    let response = app.refresh(&first.refresh).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let second = Tokens::from(response.json::<Value>().await.unwrap());
    assert_ne!(second.refresh, first.refresh);
    assert_ne!(second.access, first.access);
    assert_eq!(app.me(&second.access).await.status(), StatusCode::OK);
    // The next one rotates again.
    let third = Tokens::from(
        app.refresh(&second.refresh)
            .await
            .json::<Value>()
            .await
            .unwrap(),
    );
    assert_ne!(third.refresh, second.refresh);
    assert_eq!(app.me(&third.access).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_just_spent_token_within_the_window_returns_the_current_refresh_token() {
    let app = spawn_app().await;
    let (_, first) = app.signed_up(&unique_email()).await;
    let second = Tokens::from(
        app.refresh(&first.refresh)
            .await
            .json::<Value>()
            .await
            .unwrap(),
    );
    // Another tab presents the token that was just spent.
    let response = app.refresh(&first.refresh).await;
    assert_eq!(response.status(), StatusCode::OK);
    let again = Tokens::from(response.json::<Value>().await.unwrap());
    assert_eq!(
        again.refresh, second.refresh,
        "the very token the spending returned"
    );
    assert_eq!(app.me(&again.access).await.status(), StatusCode::OK);
    // The chain goes on from there, once.
    assert_eq!(app.refresh(&second.refresh).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn reuse_outside_the_window_revokes_the_session() {
    let app = spawn_app_with(&[("REFRESH_REUSE_INTERVAL_SECONDS", "1")]).await;
    let (_, first) = app.signed_up(&unique_email()).await;
    let other_session = app.login_ok(&first_email(&app, &first.access).await).await;
    let second = Tokens::from(
        app.refresh(&first.refresh)
            .await
            .json::<Value>()
            .await
            .unwrap(),
    );
    // Past the window, by the server's clock.
    app.clock.advance(std::time::Duration::from_millis(1001));

    let body = assert_problem(app.refresh(&first.refresh).await, 401, "INVALID_TOKEN").await;
    assert!(
        body["detail"].as_str().unwrap().contains("revoked"),
        "{body}"
    );
    // Everything of that session is dead: its access tokens and its current refresh token.
    assert_problem(app.me(&second.access).await, 401, "UNAUTHORIZED").await;
    assert_problem(app.me(&first.access).await, 401, "UNAUTHORIZED").await;
    assert_problem(app.refresh(&second.refresh).await, 401, "INVALID_TOKEN").await;
    // Other sessions of the user live on.
    assert_eq!(app.me(&other_session.access).await.status(), StatusCode::OK);
}

async fn first_email(app: &TestApp, access: &str) -> String {
    let me: Value = app.me(access).await.json().await.unwrap();
    me["email"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn with_no_window_every_second_use_is_reuse() {
    let app = spawn_app_with(&[("REFRESH_REUSE_INTERVAL_SECONDS", "0")]).await;
    let (_, first) = app.signed_up(&unique_email()).await;
    let second = Tokens::from(
        app.refresh(&first.refresh)
            .await
            .json::<Value>()
            .await
            .unwrap(),
    );
    assert_problem(app.refresh(&first.refresh).await, 401, "INVALID_TOKEN").await;
    assert_problem(app.me(&second.access).await, 401, "UNAUTHORIZED").await;
}

#[tokio::test]
async fn an_older_token_is_reuse_even_inside_the_window() {
    let app = spawn_app().await;
    let (_, first) = app.signed_up(&unique_email()).await;
    let second = Tokens::from(
        app.refresh(&first.refresh)
            .await
            .json::<Value>()
            .await
            .unwrap(),
    );
    let third = Tokens::from(
        app.refresh(&second.refresh)
            .await
            .json::<Value>()
            .await
            .unwrap(),
    );
    // `first` was not the token spent most recently.
    assert_problem(app.refresh(&first.refresh).await, 401, "INVALID_TOKEN").await;
    assert_problem(app.me(&third.access).await, 401, "UNAUTHORIZED").await;
}

#[tokio::test]
async fn twenty_concurrent_refreshes_never_fork_the_session() {
    let app = spawn_app().await;
    let (_, first) = app.signed_up(&unique_email()).await;
    let requests = (0..20)
        .map(|_| {
            let client = app.client.clone();
            let url = app.url("/refresh");
            let token = first.refresh.clone();
            async move {
                let response = client
                    .post(url)
                    .json(&json!({"refresh_token": token}))
                    .send()
                    .await
                    .unwrap();
                let status = response.status();
                (status, response.json::<Value>().await.unwrap())
            }
        })
        .collect();
    let results = concurrently(requests).await;
    let mut refresh_tokens = HashSet::new();
    for (status, body) in &results {
        assert_eq!(*status, StatusCode::OK, "{body}");
        refresh_tokens.insert(body["refresh_token"].as_str().unwrap().to_string());
    }
    assert_eq!(
        refresh_tokens.len(),
        1,
        "two live refresh tokens: {refresh_tokens:?}"
    );
    let live = refresh_tokens.into_iter().next().unwrap();
    // Every access token handed out works, and the one refresh token goes on.
    for (_, body) in &results {
        assert_eq!(
            app.me(body["access_token"].as_str().unwrap())
                .await
                .status(),
            StatusCode::OK
        );
    }
    assert_eq!(app.refresh(&live).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn refresh_body_errors() {
    let app = spawn_app().await;
    let body = assert_problem(
        app.post_json("/refresh", &json!({})).await,
        422,
        "VALIDATION_FAILED",
    )
    .await;
    assert_eq!(error_fields(&body), ["refresh_token"]);
    let body = assert_problem(
        app.post_json("/refresh", &json!({"refresh_token": 7}))
            .await,
        422,
        "VALIDATION_FAILED",
    )
    .await;
    assert_eq!(error_fields(&body), ["refresh_token"]);
    // An empty token is no token (the document's minLength 1).
    let body = assert_problem(app.refresh("").await, 422, "VALIDATION_FAILED").await;
    assert_eq!(error_fields(&body), ["refresh_token"]);
}

#[tokio::test]
async fn a_deleted_or_deactivated_users_refresh_tokens_are_dead() {
    let app = spawn_app().await;
    let email = unique_email();
    let (_, tokens) = app.signed_up(&email).await;
    app.execute(
        "UPDATE users SET is_active = FALSE WHERE email = $1",
        &email,
    )
    .await;
    assert_problem(app.refresh(&tokens.refresh).await, 401, "INVALID_TOKEN").await;
    assert_problem(app.me(&tokens.access).await, 401, "UNAUTHORIZED").await;
}

#[tokio::test]
async fn the_session_lifetime_caps_the_refresh_token() {
    let app = spawn_app_with(&[
        ("SESSION_MAX_AGE_DAYS", "1"),
        ("REFRESH_TOKEN_EXPIRE_DAYS", "7"),
    ])
    .await;
    let (_, tokens) = app.signed_up(&unique_email()).await;
    let payload = tokens.refresh.split('.').nth(1).unwrap();
    use base64::Engine as _;
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        86_400
    );
    // A session past its absolute end cannot be refreshed, however recently it was used.
    let sid = claims["sid"].as_str().unwrap().to_string();
    app.execute("UPDATE sessions SET expires_at = 0 WHERE id = $1", &sid)
        .await;
    assert_problem(app.refresh(&tokens.refresh).await, 401, "INVALID_TOKEN").await;
}
