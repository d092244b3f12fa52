//! The superuser's tools: an account's sessions (listed, ended one or all), its lockouts
//! cleared, a reset mail sent; each refused to anyone else. (Their events are checked in
//! `audit.rs`.)

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::audit::{id_of, mailed_token, sid};
use crate::helpers::*;
use crate::mfa::*;
use crate::smtp::{RESET, SmtpSink, app_with_mail};

/// The session ids of a list of `SessionResponse`s.
fn ids(list: &Value) -> BTreeSet<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("a list: {list}"))
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

async fn user_sessions(app: &TestApp, admin: &str, user: &str) -> Value {
    let response = bare(app, Method::GET, &format!("/users/{user}/sessions"), admin).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

#[tokio::test]
async fn a_superuser_lists_and_ends_a_users_sessions() {
    let app = spawn_app().await;
    let (_, admin) = app.superuser().await;
    let email = unique_email();
    let (me, first) = app.signed_up(&email).await;
    let user = id_of(&me);
    let second = app.login_ok(&email).await;
    let (_, stranger) = app.signed_up(&unique_email()).await;

    // The same sessions, and the same view, as the user's own; none is the superuser's.
    let listed = user_sessions(&app, &admin.access, &user).await;
    let own = app.live_sessions(&first.access).await;
    assert_eq!(ids(&listed), ids(&own));
    assert_eq!(ids(&listed), [sid(&first), sid(&second)].into());
    for session in listed.as_array().unwrap() {
        assert_eq!(session["current"], false);
        let keys: BTreeSet<&str> = session
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "created_at",
                "current",
                "expires_at",
                "id",
                "ip",
                "last_used_at",
                "user_agent"
            ]
            .into()
        );
    }

    // One ends: its tokens stop working at once; the other goes on.
    let one = |session: &str| format!("/users/{user}/sessions/{session}");
    let response = bare(&app, Method::DELETE, &one(&sid(&second)), &admin.access).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_problem(app.me(&second.access).await, 401, "UNAUTHORIZED").await;
    assert_problem(app.refresh(&second.refresh).await, 401, "INVALID_TOKEN").await;
    assert_eq!(app.me(&first.access).await.status(), StatusCode::OK);
    assert_eq!(
        ids(&user_sessions(&app, &admin.access, &user).await),
        [sid(&first)].into()
    );
    // Ended already, someone else's, unknown, not an id: 404, and nothing else ends.
    for session in [
        sid(&second),
        sid(&stranger),
        uuid::Uuid::new_v4().to_string(),
        "not-an-id".to_string(),
    ] {
        let response = bare(&app, Method::DELETE, &one(&session), &admin.access).await;
        assert_problem(response, 404, "NOT_FOUND").await;
    }
    assert_eq!(app.me(&stranger.access).await.status(), StatusCode::OK);

    // All of them.
    app.login_ok(&email).await;
    let all = format!("/users/{user}/sessions");
    let response = bare(&app, Method::DELETE, &all, &admin.access).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_problem(app.me(&first.access).await, 401, "UNAUTHORIZED").await;
    assert_eq!(user_sessions(&app, &admin.access, &user).await, json!([]));
    // Again: there are none, which is no error.
    let response = bare(&app, Method::DELETE, &all, &admin.access).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.me(&stranger.access).await.status(), StatusCode::OK);
    // The account itself is untouched: it signs in again.
    app.login_ok(&email).await;

    // No such user.
    for missing in [uuid::Uuid::new_v4().to_string(), "not-an-id".to_string()] {
        for (method, path) in [
            (Method::GET, format!("/users/{missing}/sessions")),
            (Method::DELETE, format!("/users/{missing}/sessions")),
            (
                Method::DELETE,
                format!("/users/{missing}/sessions/{}", sid(&stranger)),
            ),
        ] {
            let response = bare(&app, method.clone(), &path, &admin.access).await;
            assert_problem(response, 404, "NOT_FOUND").await;
        }
    }
    assert_eq!(app.me(&stranger.access).await.status(), StatusCode::OK);
}

/// DELETE /users/{id}/lockout lifts the address's lock and the second factor's.
#[tokio::test]
async fn a_superuser_clears_both_lockouts() {
    let app = spawn_app_with(&[
        ("LOGIN_FREE_ATTEMPTS", "2"),
        ("LOGIN_LOCKOUT_FIRST_SECONDS", "3600"),
        ("LOGIN_LOCKOUT_MAX_SECONDS", "3600"),
    ])
    .await;
    freeze_clock(&app);
    let (_, admin) = app.superuser().await;
    let user = enrolled(&app).await;

    // The second factor's lock: two wrong codes, then the right one is turned away.
    let token = challenge(&app, &user.email).await;
    for _ in 0..2 {
        let wrong = wrong_code(&app, &user.secret);
        assert_problem(
            with_code(&app, &token, &wrong).await,
            401,
            "INVALID_MFA_CODE",
        )
        .await;
    }
    let code = next_code(&app, &user.secret);
    assert_problem(
        with_code(&app, &token, &code).await,
        429,
        "TOO_MANY_REQUESTS",
    )
    .await;
    // The address's lock: two wrong passwords, then the right one is turned away.
    for _ in 0..2 {
        app.login(&user.email, WRONG_PASSWORD).await;
    }
    assert_problem(
        app.login(&user.email, PASSWORD).await,
        429,
        "TOO_MANY_REQUESTS",
    )
    .await;

    let path = format!("/users/{}/lockout", user.id);
    let response = bare(&app, Method::DELETE, &path, &admin.access).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    // Both are lifted: the password is checked again, and the code too.
    assert_problem(app.login(&user.email, PASSWORD).await, 403, "MFA_REQUIRED").await;
    pair(with_code(&app, &token, &code).await).await;
    // With nothing to clear, it is no error.
    let response = bare(&app, Method::DELETE, &path, &admin.access).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    // No such user.
    for missing in [uuid::Uuid::new_v4().to_string(), "not-an-id".to_string()] {
        let path = format!("/users/{missing}/lockout");
        let response = bare(&app, Method::DELETE, &path, &admin.access).await;
        assert_problem(response, 404, "NOT_FOUND").await;
    }
}

const RESET_MAILS: &str =
    "SELECT COUNT(*) FROM mail_outbox WHERE recipient = $1 AND subject = 'Reset your password'";

/// POST /users/{id}/password-reset queues the self-service reset mail, under the same limit per
/// address, said as 429 rather than dropped.
#[tokio::test]
async fn a_superuser_sends_a_reset_mail() {
    let sink = SmtpSink::start().await;
    let app = app_with_mail(&sink, &[]).await;
    freeze_clock(&app);
    let (_, admin) = app.superuser().await;
    let email = unique_email();
    let (me, session) = app.signed_up(&email).await;
    let user = id_of(&me);
    let path = format!("/users/{user}/password-reset");

    let response = bare(&app, Method::POST, &path, &admin.access).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let body: Value = response.json().await.unwrap();
    assert!(body["message"].is_string(), "{body}");
    assert_eq!(app.count(RESET_MAILS, &email).await, 1);
    // Nothing changed yet: the password and the sessions are as they were.
    assert_eq!(app.me(&session.access).await.status(), StatusCode::OK);
    app.login_ok(&email).await;

    // Again at once: the address had one moments ago.
    let response = bare(&app, Method::POST, &path, &admin.access).await;
    let wait: u64 = retry_after(&response).parse().unwrap();
    assert!((1..=60).contains(&wait), "Retry-After {wait}");
    assert_problem(response, 429, "TOO_MANY_REQUESTS").await;
    assert_eq!(app.count(RESET_MAILS, &email).await, 1);
    // Once the limit has passed, it goes.
    app.clock.advance_ms(i64::try_from(wait).unwrap() * 1000);
    let response = bare(&app, Method::POST, &path, &admin.access).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(app.count(RESET_MAILS, &email).await, 2);

    // The link is the user's: it sets the password (the older link is dead, replaced).
    let token = mailed_token(&sink, &email, RESET, 2).await;
    let new_password = "set by the link the superuser sent";
    assert_eq!(
        app.confirm_reset(&token, new_password).await.status(),
        StatusCode::NO_CONTENT
    );
    app.login_ok_with(&email, new_password).await;
    assert_problem(app.me(&session.access).await, 401, "UNAUTHORIZED").await;

    // A deactivated account gets none; no such user is 404.
    let patch = json!({"is_active": false});
    let response = call(
        &app,
        Method::PATCH,
        &format!("/users/{user}"),
        &admin.access,
        &patch,
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    app.clock.advance_ms(3_600_000);
    let admin_email = app
        .sql
        .text(
            "SELECT email FROM users WHERE id <> $1 AND is_superuser",
            &user,
        )
        .await;
    let admin = app.login_ok(&admin_email).await;
    let response = bare(&app, Method::POST, &path, &admin.access).await;
    assert_problem(response, 403, "ACCOUNT_DISABLED").await;
    assert_eq!(app.count(RESET_MAILS, &email).await, 2);
    for missing in [uuid::Uuid::new_v4().to_string(), "not-an-id".to_string()] {
        let path = format!("/users/{missing}/password-reset");
        let response = bare(&app, Method::POST, &path, &admin.access).await;
        assert_problem(response, 404, "NOT_FOUND").await;
    }
}

/// The tools' routes, for the account `user` (with the session `session`).
fn tool_routes(user: &str, session: &str) -> Vec<(Method, String)> {
    vec![
        (Method::GET, format!("/users/{user}/sessions")),
        (Method::DELETE, format!("/users/{user}/sessions/{session}")),
        (Method::DELETE, format!("/users/{user}/sessions")),
        (Method::DELETE, format!("/users/{user}/lockout")),
        (Method::POST, format!("/users/{user}/password-reset")),
        (Method::GET, format!("/users/{user}/events")),
        (Method::GET, "/events".to_string()),
    ]
}

/// Anyone but a superuser is refused every tool (and it does nothing); so is a superuser that
/// MFA_REQUIRED_FOR keeps to enrolment.
#[tokio::test]
async fn every_tool_is_refused_to_anyone_but_a_superuser() {
    let app = spawn_app_with(&[("MFA_REQUIRED_FOR", "superusers")]).await;
    let email = unique_email();
    let (me, victim) = app.signed_up(&email).await;
    let user = id_of(&me);
    let (_, other) = app.signed_up(&unique_email()).await;
    let (_, confined) = app.superuser().await;
    for (method, path) in tool_routes(&user, &sid(&victim)) {
        let response = bare(&app, method.clone(), &path, &other.access).await;
        assert_problem(response, 403, "FORBIDDEN").await;
        let response = bare(&app, method.clone(), &path, &victim.access).await;
        assert_problem(response, 403, "FORBIDDEN").await;
        let response = bare(&app, method.clone(), &path, &confined.access).await;
        assert_problem(response, 403, "MFA_ENROLMENT_REQUIRED").await;
        let response = app
            .client
            .request(method.clone(), app.url(&path))
            .send()
            .await
            .unwrap();
        assert_problem(response, 401, "UNAUTHORIZED").await;
    }
    // Nothing happened.
    assert_eq!(app.me(&victim.access).await.status(), StatusCode::OK);
    assert_eq!(app.count(RESET_MAILS, &email).await, 0);
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM security_events WHERE user_id = $1 AND actor_id <> user_id",
            &user
        )
        .await,
        0
    );
}

/// A superuser whose session passed its second factor long ago still uses the tools: none of
/// them asks for a step-up (as PATCH /users/{id} does not; only removing a second factor,
/// DELETE /users/{id}/mfa, does): they end sessions, lift locks and mail the account's own
/// address, and hand the superuser nothing of the account.
#[tokio::test]
async fn the_tools_need_no_step_up() {
    let app = spawn_app_with(&[("MAIL_RATE_LIMIT_SECONDS", "0")]).await;
    freeze_clock(&app);
    let (admin_user, _) = app.superuser().await;
    let admin_email = admin_user["email"].as_str().unwrap().to_string();
    let first = app.login_ok(&admin_email).await;
    let (secret, _) = enrol(&app, &first.access).await;
    let admin = mfa_login_ok(&app, &admin_email, &secret).await;
    app.clock.advance_ms(STEP_UP_MS + 1_000);
    let (me, victim) = app.signed_up(&unique_email()).await;
    let user = id_of(&me);
    for (method, path) in tool_routes(&user, &sid(&victim)) {
        let response = bare(&app, method.clone(), &path, &admin.access).await;
        assert!(
            response.status().is_success(),
            "{method} {path}: {}",
            response.text().await.unwrap()
        );
    }
}
