//! Password reset, email verification and mail delivery, against a real SMTP server.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;
use crate::smtp::{Logs, PUBLIC_URL, RESET, SmtpSink, VERIFY, WAIT, app_with_mail};

async fn request_reset(app: &TestApp, email: &str) -> reqwest::Response {
    app.post_json("/password-reset/request", &json!({"email": email}))
        .await
}

/// What the work beside a reset request logs as its last word, whatever it decided.
const RESET_WORK_DONE: &[&str] = &[
    "password reset requested for an address with no account; no mail",
    "password reset requested for a deactivated account; no mail",
    "password reset mail limit reached; no mail",
    "password reset mail queued",
    "password reset request could not be queued",
];

/// Waits until the work of `requests` reset requests is over (it runs beside the request,
/// after the answer): whatever mail they queued is in the outbox by then.
async fn reset_work_done(logs: &Logs, requests: usize) {
    logs.wait_for(RESET_WORK_DONE, requests).await;
}

/// The reset mails queued to `$1`, sent or not.
const RESET_MAILS: &str =
    "SELECT COUNT(*) FROM mail_outbox WHERE recipient = $1 AND subject = 'Reset your password'";

const NEW_PASSWORD: &str = "a brand new passphrase";

#[tokio::test]
async fn password_reset_end_to_end() {
    let sink = SmtpSink::start().await;
    let app = app_with_mail(&sink, &[]).await;
    let email = unique_email();
    let (_, session) = app.signed_up(&email).await;
    let other = app.login_ok(&email).await;

    let response = request_reset(&app, &email.to_uppercase()).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let mail = sink.wait_for(&email, RESET, 1, WAIT).await.remove(0);
    assert_eq!(mail.from, "no-reply@example.com");
    assert!(mail.header("From").unwrap().contains("Example App"));
    assert!(
        mail.body()
            .contains(&format!("{PUBLIC_URL}/reset-password?token=")),
        "{}",
        mail.body()
    );
    let token = mail.link_token("/reset-password").unwrap();
    assert_eq!(token.len(), 43, "256 bits, base64url");

    assert_eq!(
        app.confirm_reset(&token, NEW_PASSWORD).await.status(),
        StatusCode::NO_CONTENT
    );
    // Every session of the account has ended.
    for t in [&session, &other] {
        assert_problem(app.me(&t.access).await, 401, "UNAUTHORIZED").await;
        assert_problem(app.refresh(&t.refresh).await, 401, "INVALID_TOKEN").await;
    }
    assert_problem(
        app.login(&email, PASSWORD).await,
        401,
        "INVALID_CREDENTIALS",
    )
    .await;
    assert_eq!(
        app.login(&email, NEW_PASSWORD).await.status(),
        StatusCode::OK
    );
    // The link proved the address.
    let me: Value = app
        .me(&app.login_ok_with(&email, NEW_PASSWORD).await.access)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["is_verified"], true);
    // Single use.
    assert_problem(
        app.confirm_reset(&token, "yet another passphrase").await,
        400,
        "INVALID_TOKEN",
    )
    .await;
}

#[tokio::test]
async fn unknown_and_known_addresses_get_the_same_answer_and_only_accounts_get_mail() {
    let logs = Logs::capture();
    let sink = SmtpSink::start().await;
    let app = app_with_mail(&sink, &[]).await;
    let email = unique_email();
    app.register(&email, PASSWORD, "Known").await;
    let disabled = unique_email();
    app.register(&disabled, PASSWORD, "Disabled").await;
    app.execute(
        "UPDATE users SET is_active = FALSE WHERE email = $1",
        &disabled,
    )
    .await;
    let unknown = unique_email();

    let mut answers = Vec::new();
    for address in [&email, &unknown, &disabled] {
        let response = request_reset(&app, address).await;
        answers.push((response.status(), response.text().await.unwrap()));
    }
    assert_eq!(answers[0].0, StatusCode::ACCEPTED);
    assert_eq!(answers[0], answers[1]);
    assert_eq!(answers[0], answers[2]);
    // The work of the three requests is over: what it queued is in the outbox.
    reset_work_done(&logs, 3).await;
    assert_eq!(app.count(RESET_MAILS, &email).await, 1);
    assert_eq!(app.count(RESET_MAILS, &unknown).await, 0);
    assert_eq!(app.count(RESET_MAILS, &disabled).await, 0);
    sink.wait_for(&email, RESET, 1, WAIT).await;
    assert!(sink.mails_to(&unknown, "").is_empty());
    assert!(sink.mails_to(&disabled, RESET).is_empty());
}

#[tokio::test]
async fn reset_tokens_expire() {
    let sink = SmtpSink::start().await;
    let app = app_with_mail(&sink, &[]).await;
    let email = unique_email();
    app.register(&email, PASSWORD, "Late").await;
    request_reset(&app, &email).await;
    let token = sink.wait_for(&email, RESET, 1, WAIT).await[0]
        .link_token("/reset-password")
        .unwrap();
    app.execute(
        "UPDATE one_time_tokens SET expires_at = 1 WHERE purpose = $1",
        "password_reset",
    )
    .await;
    assert_problem(
        app.confirm_reset(&token, NEW_PASSWORD).await,
        400,
        "INVALID_TOKEN",
    )
    .await;
    assert_eq!(app.login(&email, PASSWORD).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_newer_request_invalidates_the_older_token() {
    let sink = SmtpSink::start().await;
    let app = app_with_mail(&sink, &[("MAIL_RATE_LIMIT_SECONDS", "0")]).await;
    let email = unique_email();
    app.register(&email, PASSWORD, "Twice").await;
    request_reset(&app, &email).await;
    let first = sink.wait_for(&email, RESET, 1, WAIT).await[0]
        .link_token("/reset-password")
        .unwrap();
    request_reset(&app, &email).await;
    let second = sink.wait_for(&email, RESET, 2, WAIT).await[1]
        .link_token("/reset-password")
        .unwrap();
    assert_ne!(first, second);
    assert_problem(
        app.confirm_reset(&first, NEW_PASSWORD).await,
        400,
        "INVALID_TOKEN",
    )
    .await;
    assert_eq!(
        app.confirm_reset(&second, NEW_PASSWORD).await.status(),
        StatusCode::NO_CONTENT
    );
}

#[tokio::test]
async fn reset_mail_is_limited_per_address() {
    let logs = Logs::capture();
    let sink = SmtpSink::start().await;
    let app = app_with_mail(&sink, &[]).await;
    let email = unique_email();
    app.register(&email, PASSWORD, "Flooded").await;
    for _ in 0..5 {
        assert_eq!(
            request_reset(&app, &email).await.status(),
            StatusCode::ACCEPTED
        );
    }
    reset_work_done(&logs, 5).await;
    assert_eq!(app.count(RESET_MAILS, &email).await, 1);
    sink.wait_for(&email, RESET, 1, WAIT).await;
    assert_eq!(sink.mails_to(&email, RESET).len(), 1);
}

#[tokio::test]
async fn reset_confirm_errors() {
    let sink = SmtpSink::start().await;
    let app = app_with_mail(&sink, &[]).await;
    assert_problem(
        app.confirm_reset("garbage", NEW_PASSWORD).await,
        400,
        "INVALID_TOKEN",
    )
    .await;
    // An empty token is no token (the document's minLength 1).
    let body = assert_problem(
        app.confirm_reset("", NEW_PASSWORD).await,
        422,
        "VALIDATION_FAILED",
    )
    .await;
    assert_eq!(error_fields(&body), ["token"]);
    let body = assert_problem(
        app.confirm_reset("garbage", "short").await,
        422,
        "VALIDATION_FAILED",
    )
    .await;
    assert_eq!(error_fields(&body), ["new_password"]);
    let body = assert_problem(
        app.post_json("/password-reset/confirm", &json!({})).await,
        422,
        "VALIDATION_FAILED",
    )
    .await;
    let mut fields = error_fields(&body);
    fields.sort();
    assert_eq!(fields, ["new_password", "token"]);
    let body = assert_problem(
        request_reset(&app, "not-an-email").await,
        422,
        "VALIDATION_FAILED",
    )
    .await;
    assert_eq!(error_fields(&body), ["email"]);
}

#[tokio::test]
async fn the_host_header_does_not_change_the_link() {
    let sink = SmtpSink::start().await;
    let app = app_with_mail(&sink, &[]).await;
    let email = unique_email();
    app.register(&email, PASSWORD, "Phished").await;
    let response = app
        .client
        .post(app.url("/password-reset/request"))
        .header("host", "evil.example")
        .header("x-forwarded-host", "evil.example")
        .json(&json!({"email": email}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let body = sink.wait_for(&email, RESET, 1, WAIT).await[0].body();
    assert!(!body.contains("evil.example"), "{body}");
    assert!(
        body.contains(&format!("{PUBLIC_URL}/reset-password?token=")),
        "{body}"
    );
}

#[tokio::test]
async fn registration_mails_a_verification_link_that_verifies() {
    let sink = SmtpSink::start().await;
    let app = app_with_mail(&sink, &[("REQUIRE_VERIFIED_EMAIL", "true")]).await;
    let email = unique_email();
    assert_eq!(
        app.register(&email, PASSWORD, "New").await.status(),
        StatusCode::CREATED
    );
    let mail = sink.wait_for(&email, VERIFY, 1, WAIT).await.remove(0);
    assert!(
        mail.body()
            .contains(&format!("{PUBLIC_URL}/verify-email?token="))
    );
    let token = mail.link_token("/verify-email").unwrap();

    assert_problem(app.login(&email, PASSWORD).await, 403, "EMAIL_NOT_VERIFIED").await;
    let response = app
        .post_json("/verify/confirm", &json!({"token": token}))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let user: Value = response.json().await.unwrap();
    assert_eq!(user["is_verified"], true);
    assert_eq!(user["email"], email);
    assert_eq!(app.login(&email, PASSWORD).await.status(), StatusCode::OK);
    assert_problem(
        app.post_json("/verify/confirm", &json!({"token": token}))
            .await,
        400,
        "INVALID_TOKEN",
    )
    .await;
    assert_problem(
        app.post_json("/verify/confirm", &json!({"token": "garbage"}))
            .await,
        400,
        "INVALID_TOKEN",
    )
    .await;
    let body = assert_problem(
        app.post_json("/verify/confirm", &json!({})).await,
        422,
        "VALIDATION_FAILED",
    )
    .await;
    assert_eq!(error_fields(&body), ["token"]);
}

#[tokio::test]
async fn verification_can_be_asked_for_again() {
    let sink = SmtpSink::start().await;
    let app = app_with_mail(&sink, &[("MAIL_RATE_LIMIT_SECONDS", "0")]).await;
    let email = unique_email();
    let (_, tokens) = app.signed_up(&email).await;
    sink.wait_for(&email, VERIFY, 1, WAIT).await;
    let request = |token: Option<String>| {
        let mut r = app.client.post(app.url("/verify/request"));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    assert_problem(request(None).await.unwrap(), 401, "UNAUTHORIZED").await;
    assert_eq!(
        request(Some(tokens.access.clone())).await.unwrap().status(),
        StatusCode::ACCEPTED
    );
    let mails = sink.wait_for(&email, VERIFY, 2, WAIT).await;
    // The newer link replaces the older.
    let (old, new) = (
        mails[0].link_token("/verify-email").unwrap(),
        mails[1].link_token("/verify-email").unwrap(),
    );
    assert_problem(
        app.post_json("/verify/confirm", &json!({"token": old}))
            .await,
        400,
        "INVALID_TOKEN",
    )
    .await;
    assert_eq!(
        app.post_json("/verify/confirm", &json!({"token": new}))
            .await
            .status(),
        StatusCode::OK
    );
    // Once verified, asking again sends nothing: the request decides before it answers, and
    // queues nothing.
    assert_eq!(
        request(Some(tokens.access.clone())).await.unwrap().status(),
        StatusCode::ACCEPTED
    );
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM mail_outbox WHERE recipient = $1",
            &email
        )
        .await,
        2
    );
    assert_eq!(sink.mails_to(&email, VERIFY).len(), 2);
}

#[tokio::test]
async fn changing_the_email_mails_both_addresses() {
    let sink = SmtpSink::start().await;
    let app = app_with_mail(&sink, &[]).await;
    let old = unique_email();
    let (_, tokens) = app.signed_up(&old).await;
    let first_link = sink.wait_for(&old, VERIFY, 1, WAIT).await[0]
        .link_token("/verify-email")
        .unwrap();
    let new = unique_email();
    let response = app
        .client
        .put(app.url("/me"))
        .bearer_auth(&tokens.access)
        .json(&json!({"email": new, "current_password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let notice = sink.wait_for(&old, "changed", 1, WAIT).await.remove(0);
    assert!(notice.body().contains(&new));
    let link = sink.wait_for(&new, VERIFY, 1, WAIT).await[0]
        .link_token("/verify-email")
        .unwrap();
    // The link sent to the old address no longer verifies anything.
    assert_problem(
        app.post_json("/verify/confirm", &json!({"token": first_link}))
            .await,
        400,
        "INVALID_TOKEN",
    )
    .await;
    let user: Value = app
        .post_json("/verify/confirm", &json!({"token": link}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(user["email"], new);
    assert_eq!(user["is_verified"], true);
}

#[tokio::test]
async fn mail_queued_while_smtp_is_down_is_delivered_when_it_is_back() {
    let port = free_port();
    let dead = format!("smtp://127.0.0.1:{port}");
    let app = spawn_app_with(&[
        ("SMTP_URL", dead.as_str()),
        ("MAIL_FROM", "no-reply@example.com"),
        ("MAIL_RETRY_BASE_SECONDS", "1"),
    ])
    .await;
    let email = unique_email();
    app.register(&email, PASSWORD, "Patient").await;
    let started = std::time::Instant::now();
    assert_eq!(
        request_reset(&app, &email).await.status(),
        StatusCode::ACCEPTED
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "the request waited for SMTP"
    );
    // The worker has tried, and failed: the reset mail waits in the outbox.
    app.wait_count(
        "SELECT COUNT(*) FROM mail_outbox WHERE recipient = $1 AND subject = 'Reset your password' \
         AND sent_at IS NULL AND failed_at IS NULL AND attempts > 0",
        &email,
        |n| n == 1,
    )
    .await;

    let sink = SmtpSink::start_on(port).await;
    let token = sink
        .wait_for(&email, RESET, 1, Duration::from_secs(20))
        .await[0]
        .link_token("/reset-password")
        .unwrap();
    assert_eq!(
        app.confirm_reset(&token, NEW_PASSWORD).await.status(),
        StatusCode::NO_CONTENT
    );
    sink.wait_for(&email, VERIFY, 1, Duration::from_secs(20))
        .await;
    // Sent mail keeps no body: it held a token. (The two with links, and the notice of the new
    // password if it has gone already: it is sent at once, while the verification mail may still
    // be waiting for its next attempt.)
    assert!(app.count("SELECT COUNT(*) FROM mail_outbox WHERE recipient = $1 AND sent_at IS NOT NULL AND body_text = ''", &email).await >= 2);
    assert_eq!(app.count("SELECT COUNT(*) FROM mail_outbox WHERE recipient = $1 AND sent_at IS NOT NULL AND body_text <> ''", &email).await, 0);
}

#[tokio::test]
async fn mail_still_queued_at_a_restart_is_delivered_after_it() {
    let port = free_port();
    let dead = format!("smtp://127.0.0.1:{port}");
    let app = spawn_app_with(&[
        ("SMTP_URL", dead.as_str()),
        ("MAIL_FROM", "no-reply@example.com"),
        ("MAIL_RETRY_BASE_SECONDS", "1"),
    ])
    .await;
    let email = unique_email();
    app.register(&email, PASSWORD, "Restarted").await;
    request_reset(&app, &email).await;
    // The reset mail is queued, and still unsent after an attempt on the dead server.
    app.wait_count(
        "SELECT COUNT(*) FROM mail_outbox WHERE recipient = $1 AND subject = 'Reset your password' \
         AND sent_at IS NULL AND failed_at IS NULL AND attempts > 0",
        &email,
        |n| n == 1,
    )
    .await;
    let sink = SmtpSink::start().await;
    let url = sink.url();
    let app = app.restart(&[("SMTP_URL", url.as_str())]).await;
    sink.wait_for(&email, RESET, 1, Duration::from_secs(20))
        .await;
    sink.wait_for(&email, VERIFY, 1, Duration::from_secs(20))
        .await;
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM mail_outbox WHERE recipient = $1 AND sent_at IS NULL",
            &email
        )
        .await,
        0
    );
}

#[tokio::test]
async fn without_smtp_mail_is_written_to_the_log() {
    let server =
        ChildServer::on_test_database(&[("ARGON2_MEMORY_KIB", "256"), ("ARGON2_ITERATIONS", "1")])
            .await;
    let email = unique_email();
    let response = reqwest::Client::new()
        .post(server.url("/register"))
        .json(&json!({"email": email, "password": PASSWORD, "name": "Dev"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let line = server.wait_for_line("verify-email?token=").await;
    let logged: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(logged["to"], email);
    assert!(
        logged["body"]
            .as_str()
            .unwrap()
            .contains("http://localhost:8000/verify-email?token=")
    );
}
