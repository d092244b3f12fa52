use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn local_logout_ends_this_session_only() {
    let app = spawn_app().await;
    let email = unique_email();
    let (_, a) = app.signed_up(&email).await;
    let b = app.login_ok(&email).await;
    let response = app.logout(&a.access, None).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_problem(app.me(&a.access).await, 401, "UNAUTHORIZED").await;
    assert_problem(app.refresh(&a.refresh).await, 401, "INVALID_TOKEN").await;
    assert_eq!(app.me(&b.access).await.status(), StatusCode::OK);
    // `local` spelled out does the same.
    assert_eq!(
        app.logout(&b.access, Some("local")).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_problem(app.me(&b.access).await, 401, "UNAUTHORIZED").await;
}

#[tokio::test]
async fn global_logout_ends_every_session() {
    let app = spawn_app().await;
    let email = unique_email();
    let (_, a) = app.signed_up(&email).await;
    let b = app.login_ok(&email).await;
    let (_, stranger) = app.signed_up(&unique_email()).await;
    assert_eq!(
        app.logout(&a.access, Some("global")).await.status(),
        StatusCode::NO_CONTENT
    );
    for t in [&a, &b] {
        assert_problem(app.me(&t.access).await, 401, "UNAUTHORIZED").await;
        assert_problem(app.refresh(&t.refresh).await, 401, "INVALID_TOKEN").await;
    }
    assert_eq!(app.me(&stranger.access).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn logout_of_others_keeps_this_session() {
    let app = spawn_app().await;
    let email = unique_email();
    let (_, a) = app.signed_up(&email).await;
    let b = app.login_ok(&email).await;
    let c = app.login_ok(&email).await;
    assert_eq!(
        app.logout(&a.access, Some("others")).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(app.me(&a.access).await.status(), StatusCode::OK);
    assert_eq!(app.refresh(&a.refresh).await.status(), StatusCode::OK);
    for t in [&b, &c] {
        assert_problem(app.me(&t.access).await, 401, "UNAUTHORIZED").await;
    }
}

#[tokio::test]
async fn logout_with_the_refresh_token_alone() {
    let app = spawn_app().await;
    let email = unique_email();
    let (_, a) = app.signed_up(&email).await;
    let b = app.login_ok(&email).await;
    let response = app
        .post_json("/logout", &json!({"refresh_token": a.refresh}))
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_problem(app.me(&a.access).await, 401, "UNAUTHORIZED").await;
    assert_problem(app.refresh(&a.refresh).await, 401, "INVALID_TOKEN").await;
    assert_eq!(app.me(&b.access).await.status(), StatusCode::OK);
    // Logging out an ended session again is fine.
    let again = app
        .post_json("/logout", &json!({"refresh_token": a.refresh}))
        .await;
    assert_eq!(again.status(), StatusCode::NO_CONTENT);
    // With a scope.
    let response = app
        .post_json("/logout?scope=global", &json!({"refresh_token": b.refresh}))
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_problem(app.me(&b.access).await, 401, "UNAUTHORIZED").await;
}

#[tokio::test]
async fn logout_errors() {
    let app = spawn_app().await;
    let (_, a) = app.signed_up(&unique_email()).await;
    // Neither token.
    let response = app.client.post(app.url("/logout")).send().await.unwrap();
    assert!(response.headers().contains_key("www-authenticate"));
    assert_problem(response, 401, "UNAUTHORIZED").await;
    // A bad bearer token is refused, not treated as anonymous.
    let response = app
        .client
        .post(app.url("/logout"))
        .bearer_auth("nonsense")
        .json(&json!({"refresh_token": a.refresh}))
        .send()
        .await
        .unwrap();
    assert_problem(response, 401, "UNAUTHORIZED").await;
    // A bad refresh token.
    assert_problem(
        app.post_json("/logout", &json!({"refresh_token": "nonsense"}))
            .await,
        401,
        "INVALID_TOKEN",
    )
    .await;
    // An access token where the refresh token belongs.
    assert_problem(
        app.post_json("/logout", &json!({"refresh_token": a.access}))
            .await,
        401,
        "INVALID_TOKEN",
    )
    .await;
    // A body without the field, a body of another type, an unknown scope.
    let body = assert_problem(
        app.post_json("/logout", &json!({})).await,
        422,
        "VALIDATION_FAILED",
    )
    .await;
    assert_eq!(error_fields(&body), ["refresh_token"]);
    let response = app
        .client
        .post(app.url("/logout"))
        .header("content-type", "text/plain")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_problem(response, 415, "UNSUPPORTED_MEDIA_TYPE").await;
    let body = assert_problem(
        app.logout(&a.access, Some("everywhere")).await,
        422,
        "VALIDATION_FAILED",
    )
    .await;
    assert_eq!(error_fields(&body), ["scope"]);
    // None of that ended the session.
    assert_eq!(app.me(&a.access).await.status(), StatusCode::OK);
}
