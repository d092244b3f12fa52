//! Attacks on the second factor, from an independent review: each test tries to break one rule
//! (the findings it led to are fixed; the probes of what held are kept as guards).

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::*;
use crate::mfa::*;
use crate::smtp::{SmtpSink, app_with_mail};

/// Concurrent code checks, more than the pool has connections, all succeed: a code check never
/// holds one pooled connection while waiting for another.
#[tokio::test]
async fn concurrent_mfa_logins_do_not_starve_the_pool() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let mut users = Vec::new();
    for _ in 0..16 {
        users.push(enrolled(&app).await);
    }
    let mut tokens = Vec::new();
    for user in &users {
        tokens.push(challenge(&app, &user.email).await);
    }
    app.clock.advance_ms(STEP_MS);
    let requests = users
        .iter()
        .zip(&tokens)
        .map(|(user, token)| {
            let client = app.client.clone();
            let url = app.url("/login/mfa");
            let body = json!({ "mfa_token": token, "code": code_now(&app, &user.secret) });
            async move {
                let response = client.post(url).json(&body).send().await.unwrap();
                (response.status(), response.text().await.unwrap())
            }
        })
        .collect();
    for (status, text) in concurrently(requests).await {
        assert_eq!(
            status,
            StatusCode::OK,
            "a right code answered {status}: {text}"
        );
    }
}

/// A superuser's reset asked again right after the user cancelled one is mailed again: a
/// superuser's action on an account is never held back by the per-address mail limit.
#[tokio::test]
async fn a_reset_asked_again_after_a_cancel_is_mailed_again() {
    let sink = SmtpSink::start().await;
    let app = app_with_mail(
        &sink,
        &[
            ("MFA_RESET_DELAY_HOURS", "24"),
            ("PURGE_INTERVAL_SECONDS", "1"),
        ],
    )
    .await;
    freeze_clock(&app);
    let user = enrolled(&app).await;
    let (seen, _) = notice(&sink, &user.email, 0, "second factor").await;
    let (_, admin) = app.superuser().await;
    let path = format!("/users/{}/mfa", user.id);
    let reset = bare(&app, Method::DELETE, &path, &admin.access).await;
    assert_eq!(reset.status(), StatusCode::ACCEPTED);
    let (seen, _) = notice(&sink, &user.email, seen, "administrator").await;
    let cancel = bare(&app, Method::DELETE, "/me/mfa/reset", &user.session.access).await;
    assert_eq!(cancel.status(), StatusCode::NO_CONTENT);
    app.clock.advance_ms(30_000);
    let reset = bare(&app, Method::DELETE, &path, &admin.access).await;
    assert_eq!(reset.status(), StatusCode::ACCEPTED);
    notice(&sink, &user.email, seen, "administrator").await;
}

/// PATCH /users/{own id} does not change a superuser's own email around PUT /me's password and
/// step-up.
#[tokio::test]
async fn a_superuser_cannot_change_its_own_email_around_step_up() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let (admin_user, admin) = app.superuser().await;
    let admin_id = admin_user["id"].as_str().unwrap().to_string();
    let new_email = unique_email();
    let response = call(
        &app,
        Method::PATCH,
        &format!("/users/{admin_id}"),
        &admin.access,
        &json!({ "email": new_email }),
    )
    .await;
    assert_problem(response, 403, "FORBIDDEN").await;
    // Another account's address, and one's own name, still change there.
    let response = call(
        &app,
        Method::PATCH,
        &format!("/users/{admin_id}"),
        &admin.access,
        &json!({ "name": "Renamed Admin" }),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
}

/// A superuser with a second factor steps up to remove someone else's: an access token alone
/// (a session that passed the factor long ago) is not enough.
#[tokio::test]
async fn removing_a_users_factor_needs_the_superusers_own_step_up() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let user = enrolled(&app).await;
    let (admin_user, admin) = app.superuser().await;
    let admin_email = admin_user["email"].as_str().unwrap().to_string();
    let (secret, _) = enrol(&app, &admin.access).await;
    let session = mfa_login_ok(&app, &admin_email, &secret).await;
    app.clock.advance_ms(STEP_UP_MS + 1_000);
    let path = format!("/users/{}/mfa", user.id);
    let body = assert_problem(
        bare(&app, Method::DELETE, &path, &session.access).await,
        403,
        "STEP_UP_REQUIRED",
    )
    .await;
    assert_eq!(body["methods"], json!(BOTH_METHODS));
    let wrong = json!({ "code": wrong_code(&app, &secret) });
    assert_problem(
        call(&app, Method::DELETE, &path, &session.access, &wrong).await,
        403,
        "INVALID_MFA_CODE",
    )
    .await;
    assert!(mfa_status(&app, &user.session.access).await["totp"] == true);
    let right = json!({ "code": next_code(&app, &secret) });
    let response = call(&app, Method::DELETE, &path, &session.access, &right).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
}

/// MFA_REQUIRED_FOR asks for an account that has a second factor, not only a session that once
/// passed one: a covered account whose factor is gone is confined, even on an old MFA session.
#[tokio::test]
async fn a_covered_account_without_a_factor_is_confined_even_on_an_old_mfa_session() {
    let app = spawn_app_with(&[("MFA_REQUIRED_FOR", "superusers")]).await;
    freeze_clock(&app);
    let user = enrolled(&app).await;
    let code = next_code(&app, &user.secret);
    let disable = call(
        &app,
        Method::DELETE,
        "/me/mfa/totp",
        &user.session.access,
        &json!({ "password": PASSWORD, "code": code }),
    )
    .await;
    assert_eq!(disable.status(), StatusCode::NO_CONTENT);
    app.execute(
        "UPDATE users SET is_superuser = TRUE WHERE id = $1",
        &user.id,
    )
    .await;
    let status = mfa_status(&app, &user.session.access).await;
    assert_eq!(
        (&status["required"], &status["totp"]),
        (&json!(true), &json!(false))
    );
    assert_problem(
        bare(&app, Method::GET, "/users", &user.session.access).await,
        403,
        "MFA_ENROLMENT_REQUIRED",
    )
    .await;
}

/// A new set of recovery codes (ten new second factors, the old set void) is mailed to the
/// account.
#[tokio::test]
async fn new_recovery_codes_are_notified() {
    let sink = SmtpSink::start().await;
    let app = app_with_mail(&sink, NOTICES).await;
    freeze_clock(&app);
    let user = enrolled(&app).await;
    let (seen, _) = notice(&sink, &user.email, 0, "second factor").await;
    let codes = recovery_codes(
        call(
            &app,
            Method::POST,
            "/me/mfa/recovery-codes",
            &user.session.access,
            &json!({ "password": PASSWORD }),
        )
        .await,
    )
    .await;
    assert_eq!(codes.len(), 10);
    notice(&sink, &user.email, seen, "recovery codes").await;
}

/// One mfa_token opens one session, whatever mix of right codes races for it on two instances.
#[tokio::test]
async fn one_mfa_token_opens_one_session_under_concurrency() {
    let a = spawn_app_with(&[("LOGIN_FREE_ATTEMPTS", "100")]).await;
    let b = a.another_instance().await;
    freeze_clock(&a);
    let user = enrolled(&a).await;
    a.clock.advance_ms(STEP_MS);
    let token = challenge(&a, &user.email).await;
    let now = step_of(a.clock.now_ms());
    let bodies = [
        json!({ "mfa_token": token, "code": code_for_step(&user.secret, now) }),
        json!({ "mfa_token": token, "code": code_for_step(&user.secret, now + 1) }),
        json!({ "mfa_token": token, "recovery_code": user.recovery[0] }),
        json!({ "mfa_token": token, "recovery_code": user.recovery[1] }),
        json!({ "mfa_token": token, "code": code_for_step(&user.secret, now) }),
    ];
    let requests = bodies
        .iter()
        .enumerate()
        .map(|(i, body)| {
            let client = a.client.clone();
            let url = if i % 2 == 0 {
                a.url("/login/mfa")
            } else {
                b.url("/login/mfa")
            };
            let body = body.clone();
            async move { client.post(url).json(&body).send().await.unwrap().status() }
        })
        .collect();
    let statuses = concurrently(requests).await;
    let ok = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    assert_eq!(ok, 1, "{statuses:?}");
    let live = a
        .count(
            "SELECT COUNT(*) FROM sessions WHERE user_id = $1 AND revoked_at IS NULL",
            &user.id,
        )
        .await;
    assert_eq!(live, 2, "the enrolling session and the one login");
}

/// One code, sent on six logins at once over two instances, opens one session.
#[tokio::test]
async fn a_code_is_accepted_once_across_instances() {
    let a = spawn_app_with(&[("LOGIN_FREE_ATTEMPTS", "100")]).await;
    let b = a.another_instance().await;
    freeze_clock(&a);
    let user = enrolled(&a).await;
    a.clock.advance_ms(STEP_MS);
    let code = code_now(&a, &user.secret);
    let mut tokens = Vec::new();
    for _ in 0..6 {
        tokens.push(challenge(&a, &user.email).await);
    }
    let requests = tokens
        .iter()
        .enumerate()
        .map(|(i, token)| {
            let client = a.client.clone();
            let url = if i % 2 == 0 {
                a.url("/login/mfa")
            } else {
                b.url("/login/mfa")
            };
            let body = json!({ "mfa_token": token, "code": code });
            async move { client.post(url).json(&body).send().await.unwrap().status() }
        })
        .collect();
    let statuses = concurrently(requests).await;
    let ok = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    assert_eq!(ok, 1, "{statuses:?}");
}

/// No login address, however written, names the second factor's lockout.
#[tokio::test]
async fn a_login_key_cannot_lock_someone_elses_second_factor() {
    let app = spawn_app_with(&[("LOGIN_FREE_ATTEMPTS", "2")]).await;
    freeze_clock(&app);
    let user = enrolled(&app).await;
    for variant in [
        format!("MFA:{}", user.id),
        format!("mfa:{}", user.id),
        format!(" MFA:{} ", user.id),
        format!("MFA:{}", user.id.to_uppercase()),
    ] {
        for _ in 0..5 {
            let status = app.login(&variant, "whatever").await.status();
            assert!([401, 422, 429].contains(&status.as_u16()), "{status}");
        }
    }
    let key = format!("MFA:{}", user.id);
    let n = app
        .count("SELECT COUNT(*) FROM login_attempts WHERE email = $1", &key)
        .await;
    assert_eq!(n, 0);
    mfa_login_ok(&app, &user.email, &user.secret).await;
}

/// A sealed secret copied onto another account does not open there (the user id is the
/// associated data).
#[tokio::test]
async fn a_sealed_secret_moved_to_another_account_does_not_open() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let victim = enrolled(&app).await;
    let attacker = enrolled(&app).await;
    app.execute2(
        "UPDATE mfa_totp SET secret_sealed = \
         (SELECT secret_sealed FROM mfa_totp WHERE user_id = $2) WHERE user_id = $1",
        &victim.id,
        &attacker.id,
    )
    .await;
    let token = challenge(&app, &victim.email).await;
    let response = with_code(&app, &token, &next_code(&app, &attacker.secret)).await;
    assert_ne!(response.status(), StatusCode::OK);
}

/// Odd codes and tokens are client errors, never a 500.
#[tokio::test]
async fn odd_codes_are_client_errors() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let user = enrolled(&app).await;
    let token = challenge(&app, &user.email).await;
    let long_spaces = format!("1{}23456", " ".repeat(100_000));
    for body in [
        json!({ "mfa_token": token, "code": "١٢٣٤٥٦" }),
        json!({ "mfa_token": token, "code": "１２３４５６" }),
        json!({ "mfa_token": token, "code": "12345\u{0}6" }),
        json!({ "mfa_token": token, "code": 123456 }),
        json!({ "mfa_token": token, "code": "123456", "recovery_code": "abcde-fghjk" }),
        json!({ "mfa_token": token, "recovery_code": "ABCDE-FGHJK-" }),
        json!({ "mfa_token": token, "recovery_code": "ǅǅǅǅǅ-ǅǅǅǅǅ" }),
        json!({ "mfa_token": "x".repeat(100_000), "code": "123456" }),
        json!({ "mfa_token": token, "code": long_spaces }),
    ] {
        let status = login_mfa(&app, &body).await.status();
        assert!(status.is_client_error(), "{status} for {body:.80}");
    }
}
