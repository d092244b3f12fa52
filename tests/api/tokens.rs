//! Forged, altered and misused tokens are all refused.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn sign(alg: Algorithm, typ: Option<&str>, claims: &Value, key: &[u8]) -> String {
    let mut header = Header::new(alg);
    header.typ = typ.map(str::to_string);
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(key)).unwrap()
}

async fn assert_unauthorized(app: &TestApp, token: &str, what: &str) {
    let response = app.me(token).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{what}");
    assert!(
        response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer"),
        "{what}"
    );
    assert_problem(response, 401, "UNAUTHORIZED").await;
}

#[tokio::test]
async fn a_token_made_the_way_the_server_makes_them_is_accepted() {
    // Guards the attacks below: each differs from this one in one respect only.
    let app = spawn_app().await;
    let (_, tokens) = app.signed_up(&unique_email()).await;
    let claims = claims_of(&tokens.access);
    let token = sign(Algorithm::HS256, Some("at+jwt"), &claims, SECRET.as_bytes());
    assert_eq!(app.me(&token).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn forged_and_altered_access_tokens_are_refused() {
    let app = spawn_app().await;
    let (_, tokens) = app.signed_up(&unique_email()).await;
    let claims = claims_of(&tokens.access);
    let key = SECRET.as_bytes();

    // alg: none, no signature.
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"at+jwt"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    assert_unauthorized(&app, &format!("{header}.{payload}."), "alg none").await;

    // Re-signed with another key.
    let other = sign(
        Algorithm::HS256,
        Some("at+jwt"),
        &claims,
        b"another-key-another-key-another-key!",
    );
    assert_unauthorized(&app, &other, "another key").await;

    // Another algorithm than the configured one, with the right key.
    let hs512 = sign(Algorithm::HS512, Some("at+jwt"), &claims, key);
    assert_unauthorized(&app, &hs512, "wrong algorithm").await;

    // Wrong or missing typ.
    assert_unauthorized(
        &app,
        &sign(Algorithm::HS256, Some("JWT"), &claims, key),
        "typ JWT",
    )
    .await;
    assert_unauthorized(&app, &sign(Algorithm::HS256, None, &claims, key), "no typ").await;
    assert_unauthorized(
        &app,
        &sign(Algorithm::HS256, Some("refresh+jwt"), &claims, key),
        "typ refresh",
    )
    .await;

    // The refresh token as an access token.
    assert_unauthorized(&app, &tokens.refresh, "refresh token as access token").await;

    // Wrong issuer, wrong audience, expired, strings where numbers belong, missing claims.
    for (field, value) in [
        ("iss", json!("someone-else")),
        ("aud", json!("another-service")),
        ("exp", json!(now() - 3600)),
        ("exp", json!((now() + 600).to_string())),
        ("iat", json!("yesterday")),
        ("sub", json!(uuid::Uuid::new_v4().to_string())),
        ("sid", json!(uuid::Uuid::new_v4().to_string())),
    ] {
        let mut c = claims.clone();
        c[field] = value.clone();
        let token = sign(Algorithm::HS256, Some("at+jwt"), &c, key);
        assert_unauthorized(&app, &token, &format!("{field} = {value}")).await;
    }
    for field in ["exp", "iat", "iss", "aud", "sub", "sid"] {
        let mut c = claims.clone();
        c.as_object_mut().unwrap().remove(field);
        let token = sign(Algorithm::HS256, Some("at+jwt"), &c, key);
        assert_unauthorized(&app, &token, &format!("without {field}")).await;
    }

    // Claims altered after signing.
    let mut altered = claims.clone();
    altered["sub"] = json!(uuid::Uuid::new_v4().to_string());
    let parts: Vec<&str> = tokens.access.split('.').collect();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(altered.to_string()),
        parts[2]
    );
    assert_unauthorized(&app, &tampered, "tampered claims").await;

    // Garbage.
    for garbage in ["", "a.b.c", "not-a-token", "....", &"x".repeat(5000)] {
        let response = app
            .client
            .get(app.url("/me"))
            .header("authorization", format!("Bearer {garbage}"))
            .send()
            .await
            .unwrap();
        assert_problem(response, 401, "UNAUTHORIZED").await;
    }
    // The untouched token still works.
    assert_eq!(app.me(&tokens.access).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_authorization_header_must_be_a_bearer_token() {
    let app = spawn_app().await;
    let (_, tokens) = app.signed_up(&unique_email()).await;
    for value in [
        format!("Basic {}", tokens.access),
        tokens.access.clone(),
        "Bearer".to_string(),
    ] {
        let response = app
            .client
            .get(app.url("/me"))
            .header("authorization", value)
            .send()
            .await
            .unwrap();
        assert_problem(response, 401, "UNAUTHORIZED").await;
    }
    let response = app.client.get(app.url("/me")).send().await.unwrap();
    assert_eq!(
        response.headers()["www-authenticate"].to_str().unwrap(),
        "Bearer realm=\"auth-server\""
    );
    assert_problem(response, 401, "UNAUTHORIZED").await;
    // The scheme is case-insensitive.
    let response = app
        .client
        .get(app.url("/me"))
        .header("authorization", format!("bearer {}", tokens.access))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // A token in the query string is never read.
    let response = app
        .client
        .get(app.url(&format!("/me?access_token={}", tokens.access)))
        .send()
        .await
        .unwrap();
    assert_problem(response, 401, "UNAUTHORIZED").await;
}

#[tokio::test]
async fn forged_and_misused_refresh_tokens_are_refused() {
    let app = spawn_app().await;
    let (_, tokens) = app.signed_up(&unique_email()).await;
    // An access token is not a refresh token.
    assert_problem(app.refresh(&tokens.access).await, 401, "INVALID_TOKEN").await;
    // A refresh token re-signed with SECRET_KEY itself (refresh tokens use a derived key).
    let claims = claims_of(&tokens.refresh);
    let forged = sign(
        Algorithm::HS256,
        Some("refresh+jwt"),
        &claims,
        SECRET.as_bytes(),
    );
    assert_problem(app.refresh(&forged).await, 401, "INVALID_TOKEN").await;
    assert_problem(app.refresh("garbage").await, 401, "INVALID_TOKEN").await;
    // The real one still works: none of the above counted as reuse.
    assert_eq!(app.refresh(&tokens.refresh).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn hs384_and_hs512_sign_and_verify() {
    for alg in ["HS384", "HS512"] {
        let app = spawn_app_with(&[("ALGORITHM", alg)]).await;
        let (_, tokens) = app.signed_up(&unique_email()).await;
        let header: Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(tokens.access.split('.').next().unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(header["alg"], alg);
        assert_eq!(header["typ"], "at+jwt");
        assert_eq!(app.me(&tokens.access).await.status(), StatusCode::OK);
        let refreshed = app.refresh(&tokens.refresh).await;
        assert_eq!(refreshed.status(), StatusCode::OK);
    }
}

#[tokio::test]
async fn access_token_claims_are_the_contracts() {
    let app = spawn_app_with(&[
        ("JWT_ISSUER", "https://auth.example.com"),
        ("JWT_AUDIENCE", "my-app"),
        ("ACCESS_TOKEN_EXPIRE_MINUTES", "5"),
    ])
    .await;
    let (user, tokens) = app.signed_up(&unique_email()).await;
    let claims = claims_of(&tokens.access);
    assert_eq!(claims["sub"], user["id"]);
    assert_eq!(claims["iss"], "https://auth.example.com");
    assert_eq!(claims["aud"], "my-app");
    assert!(claims["sid"].is_string() && claims["jti"].is_string());
    let (iat, exp) = (
        claims["iat"].as_i64().unwrap(),
        claims["exp"].as_i64().unwrap(),
    );
    assert_eq!(exp - iat, 300);
    assert_eq!(tokens.body["expires_in"], 300);
    let refresh = claims_of(&tokens.refresh);
    assert_eq!(
        refresh["exp"].as_i64().unwrap() - refresh["iat"].as_i64().unwrap(),
        7 * 86_400
    );
    assert_eq!(refresh["sid"], claims["sid"]);
}
