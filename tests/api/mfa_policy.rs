//! The second factor seen from above: a superuser's reset of a user's factor (at once, or after
//! MFA_RESET_DELAY_HOURS, applied by the periodic job) and the MFA_REQUIRED_FOR policy.
//! The TOTP generator and the request helpers are in `mfa.rs`.

use std::time::Duration;

use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};

use crate::helpers::*;
use crate::mfa::*;
use crate::smtp::{SmtpSink, app_with_mail};

const HOUR: i64 = 3_600_000;

/// DELETE /users/{id}/mfa.
async fn reset(app: &TestApp, access: &str, id: &str) -> Response {
    bare(app, Method::DELETE, &format!("/users/{id}/mfa"), access).await
}

/// DELETE /me/mfa/reset.
async fn cancel_reset(app: &TestApp, access: &str) -> Response {
    bare(app, Method::DELETE, "/me/mfa/reset", access).await
}

/// Waits (real time: the job runs every PURGE_INTERVAL_SECONDS) until the password alone logs
/// `email` in, that is until the account's factor is gone.
async fn until_password_alone_logs_in(app: &TestApp, email: &str) {
    eventually(
        &format!("the delayed reset of {email} being applied"),
        Duration::from_secs(20),
        || async { app.login(email, PASSWORD).await.status() },
        |status| *status == StatusCode::OK,
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// 9. The admin reset.

#[tokio::test]
async fn a_superuser_resets_a_users_factor_at_once_and_ends_their_sessions() {
    let sink = SmtpSink::start().await;
    let app = app_with_mail(&sink, NOTICES).await;
    freeze_clock(&app);
    let user = enrolled(&app).await;
    let (seen, _) = notice(&sink, &user.email, 0, "second factor").await;
    let other_session = mfa_login_ok(&app, &user.email, &user.secret).await;
    let (admin_user, admin) = app.superuser().await;
    let admin_id = admin_user["id"].as_str().unwrap();
    // The superuser has a factor too: its own account is refused as its own, not for having none.
    enrol(&app, &admin.access).await;
    let (plain_user, plain) = app.signed_up(&unique_email()).await;
    let plain_id = plain_user["id"].as_str().unwrap();

    assert_problem(reset(&app, &plain.access, &user.id).await, 403, "FORBIDDEN").await;
    assert_problem(
        reset(&app, &admin.access, &uuid::Uuid::new_v4().to_string()).await,
        404,
        "NOT_FOUND",
    )
    .await;
    assert_problem(
        reset(&app, &admin.access, plain_id).await,
        409,
        "MFA_NOT_ENABLED",
    )
    .await;
    assert_problem(reset(&app, &admin.access, admin_id).await, 403, "FORBIDDEN").await;
    // None of that touched the user's factor.
    challenge(&app, &user.email).await;

    let response = reset(&app, &admin.access, &user.id).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);

    // Every session of the user has ended.
    for session in [&user.session, &other_session] {
        assert_problem(app.me(&session.access).await, 401, "UNAUTHORIZED").await;
        assert_problem(app.refresh(&session.refresh).await, 401, "INVALID_TOKEN").await;
    }
    // The password alone logs in; nothing of the factor is left.
    let login = pair(app.login(&user.email, PASSWORD).await).await;
    assert_eq!(claims_of(&login.access)["amr"], json!(["pwd"]));
    let status = mfa_status(&app, &login.access).await;
    assert_eq!(status["totp"], false, "{status}");
    assert_eq!(status["methods"], json!([]), "{status}");
    assert_eq!(status["recovery_codes_remaining"], 0, "{status}");
    assert_eq!(status["reset_pending_until"], Value::Null, "{status}");
    // "The second factor was removed from your account".
    notice(&sink, &user.email, seen, "removed").await;
    // The superuser's own factor and session are untouched.
    assert_eq!(app.me(&admin.access).await.status(), StatusCode::OK);
    challenge(&app, admin_user["email"].as_str().unwrap()).await;
}

#[tokio::test]
async fn a_delayed_reset_waits_its_delay_and_is_applied_by_the_periodic_job() {
    let sink = SmtpSink::start().await;
    let app = app_with_mail(
        &sink,
        &[
            ("MAIL_RATE_LIMIT_SECONDS", "0"),
            ("MFA_RESET_DELAY_HOURS", "24"),
            ("PURGE_INTERVAL_SECONDS", "1"),
        ],
    )
    .await;
    freeze_clock(&app);
    let user = enrolled(&app).await;
    let (seen, _) = notice(&sink, &user.email, 0, "second factor").await;
    let (_, admin) = app.superuser().await;

    let asked_at = app.clock.now_ms();
    let response = reset(&app, &admin.access, &user.id).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(ms_of(&body["effective_at"]), asked_at + 24 * HOUR, "{body}");

    // Pending: the user sees it, and still needs the factor to log in.
    // spec-silent: the user's sessions live on until the reset is applied (the user needs one to
    // cancel it).
    let status = mfa_status(&app, &user.session.access).await;
    assert_eq!(status["totp"], true, "{status}");
    assert_eq!(
        ms_of(&status["reset_pending_until"]),
        asked_at + 24 * HOUR,
        "{status}"
    );
    challenge(&app, &user.email).await;
    // "An administrator asked to remove your second factor".
    let (seen, _) = notice(&sink, &user.email, seen, "administrator").await;

    app.clock.advance_ms(24 * HOUR);
    until_password_alone_logs_in(&app, &user.email).await;

    // Applied: the sessions have ended (the refresh token would still have days to run).
    assert_problem(
        app.refresh(&user.session.refresh).await,
        401,
        "INVALID_TOKEN",
    )
    .await;
    let login = pair(app.login(&user.email, PASSWORD).await).await;
    let status = mfa_status(&app, &login.access).await;
    assert_eq!(status["totp"], false, "{status}");
    assert_eq!(status["reset_pending_until"], Value::Null, "{status}");
    // "The second factor was removed from your account", a mail of its own.
    notice(&sink, &user.email, seen, "removed").await;
}

#[tokio::test]
async fn a_delayed_reset_the_user_cancels_is_not_applied() {
    let app = spawn_app_with(&[
        ("MFA_RESET_DELAY_HOURS", "24"),
        ("PURGE_INTERVAL_SECONDS", "1"),
    ])
    .await;
    freeze_clock(&app);
    let user = enrolled(&app).await;
    // A second user whose reset goes ahead: when it is applied, the job has run past the time
    // the cancelled one would have been due.
    let control = enrolled(&app).await;
    let (_, admin) = app.superuser().await;

    assert_problem(
        cancel_reset(&app, &user.session.access).await,
        404,
        "NOT_FOUND",
    )
    .await;
    for id in [&user.id, &control.id] {
        assert_eq!(
            reset(&app, &admin.access, id).await.status(),
            StatusCode::ACCEPTED
        );
    }
    assert_eq!(
        cancel_reset(&app, &user.session.access).await.status(),
        StatusCode::NO_CONTENT
    );
    let status = mfa_status(&app, &user.session.access).await;
    assert_eq!(status["reset_pending_until"], Value::Null, "{status}");
    assert_problem(
        cancel_reset(&app, &user.session.access).await,
        404,
        "NOT_FOUND",
    )
    .await;

    app.clock.advance_ms(24 * HOUR);
    until_password_alone_logs_in(&app, &control.email).await;

    // The cancelled one is still there, whole.
    challenge(&app, &user.email).await;
    let login = mfa_login_ok(&app, &user.email, &user.secret).await;
    let status = mfa_status(&app, &login.access).await;
    assert_eq!(status["totp"], true, "{status}");
    assert_eq!(status["recovery_codes_remaining"], 10, "{status}");
    assert_eq!(status["reset_pending_until"], Value::Null, "{status}");
    // spec-silent: a cancelled reset ends no session.
    assert_eq!(
        app.refresh(&user.session.refresh).await.status(),
        StatusCode::OK
    );
}

// ---------------------------------------------------------------------------------------------
// 10. MFA_REQUIRED_FOR.

#[tokio::test]
async fn mfa_required_for_superusers_confines_one_without_a_factor_until_it_enrols() {
    let app = spawn_app_with(&[("MFA_REQUIRED_FOR", "superusers")]).await;
    freeze_clock(&app);
    // Logs in normally (the helper asserts 200).
    let (admin_user, admin) = app.superuser().await;

    assert_problem(app.me(&admin.access).await, 403, "MFA_ENROLMENT_REQUIRED").await;
    assert_problem(
        bare(&app, Method::GET, "/users", &admin.access).await,
        403,
        "MFA_ENROLMENT_REQUIRED",
    )
    .await;
    let status = mfa_status(&app, &admin.access).await;
    assert_eq!(status["required"], true, "{status}");
    assert_eq!(status["totp"], false, "{status}");
    // POST /refresh is allowed; the session stays confined.
    app.clock.advance_ms(1_000);
    let refreshed = pair(app.refresh(&admin.refresh).await).await;
    assert_problem(
        app.me(&refreshed.access).await,
        403,
        "MFA_ENROLMENT_REQUIRED",
    )
    .await;

    // Enrolling is allowed, and then the same session works fully.
    // spec-silent: "the same session" includes the access token it already holds (issued before
    // the confirmation, with amr ["pwd"]): the check is on the session, not on the token's amr.
    let (secret, _) = enrol(&app, &refreshed.access).await;
    assert_eq!(app.me(&refreshed.access).await.status(), StatusCode::OK);
    assert_eq!(
        bare(&app, Method::GET, "/users", &refreshed.access)
            .await
            .status(),
        StatusCode::OK
    );
    let status = mfa_status(&app, &refreshed.access).await;
    assert_eq!(status["required"], true, "{status}");
    assert_eq!(status["totp"], true, "{status}");

    // A covered account cannot disable its factor, password and code notwithstanding.
    assert_problem(
        call(
            &app,
            Method::DELETE,
            "/me/mfa/totp",
            &refreshed.access,
            &json!({ "password": PASSWORD, "code": next_code(&app, &secret) }),
        )
        .await,
        403,
        "FORBIDDEN",
    )
    .await;
    assert_eq!(mfa_status(&app, &refreshed.access).await["totp"], true);
    // Its next login asks for the factor as any other.
    challenge(&app, admin_user["email"].as_str().unwrap()).await;

    // A normal user is not covered.
    let (_, plain) = app.signed_up(&unique_email()).await;
    assert_eq!(app.me(&plain.access).await.status(), StatusCode::OK);
    let status = mfa_status(&app, &plain.access).await;
    assert_eq!(status["required"], false, "{status}");
}

#[tokio::test]
async fn mfa_required_for_everyone_covers_normal_users() {
    let app = spawn_app_with(&[("MFA_REQUIRED_FOR", "everyone")]).await;
    freeze_clock(&app);
    let (_, session) = app.signed_up(&unique_email()).await;

    assert_problem(app.me(&session.access).await, 403, "MFA_ENROLMENT_REQUIRED").await;
    assert_problem(
        call(
            &app,
            Method::PUT,
            "/me",
            &session.access,
            &json!({ "name": "Not yet" }),
        )
        .await,
        403,
        "MFA_ENROLMENT_REQUIRED",
    )
    .await;
    assert_eq!(mfa_status(&app, &session.access).await["required"], true);

    let (secret, _) = enrol(&app, &session.access).await;
    assert_eq!(app.me(&session.access).await.status(), StatusCode::OK);
    assert_problem(
        call(
            &app,
            Method::DELETE,
            "/me/mfa/totp",
            &session.access,
            &json!({ "password": PASSWORD, "code": next_code(&app, &secret) }),
        )
        .await,
        403,
        "FORBIDDEN",
    )
    .await;

    // POST /logout is allowed before enrolling.
    let (_, other) = app.signed_up(&unique_email()).await;
    assert_eq!(
        app.logout(&other.access, None).await.status(),
        StatusCode::NO_CONTENT
    );
}
