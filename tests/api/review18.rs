//! An independent attacker's review of issue 18's caches: the session check kept per session
//! (`db::session_cache`, SESSION_CACHE_MS) and the verified access tokens kept by their text
//! (`TokenKeys::verify_access`). Each test is an attack, and says what must hold: a change of
//! anything the check reads, made through an instance, is seen by that instance's very next
//! request, however warm its cache; other instances see it within the bound; the token cache
//! vouches only for the exact bytes that verified, and never past their `exp`.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};

use crate::audit::sid;
use crate::helpers::*;
use crate::mfa::{bare, call, enrol, enrolled, mfa_login_ok, ms_of, next_code, pair};
use crate::session_cache::{cache_in_use, hits, race_checks_with};
use crate::smtp::{SmtpSink, WAIT, app_with_mail};

/// Entries kept a minute: within a test, only a mark of the change can explain a refusal.
const KEEP: (&str, &str) = ("SESSION_CACHE_MS", "60000");

/// GET /me until two answers came from the cache: the check of `access` is warm (a
/// notification arriving meanwhile may drop it once). Returns the user it answers.
async fn warm(app: &TestApp, access: &str) -> Value {
    let before = hits(app);
    let mut me = Value::Null;
    for _ in 0..20 {
        let response = app.me(access).await;
        assert_eq!(response.status(), StatusCode::OK, "GET /me while warming");
        me = response.json().await.unwrap();
        if hits(app) >= before + 2 {
            return me;
        }
    }
    panic!("the check of this token was not cached: {me}");
}

/// GET /me, asserting 200: the user.
async fn me(app: &TestApp, access: &str) -> Value {
    let response = app.me(access).await;
    assert_eq!(response.status(), StatusCode::OK, "GET /me");
    response.json().await.unwrap()
}

async fn refused(app: &TestApp, access: &str, what: &str) {
    let response = app.me(access).await;
    assert_eq!(
        response.status(),
        StatusCode::UNAUTHORIZED,
        "{what}: the very next request must be refused"
    );
    assert_problem(response, 401, "UNAUTHORIZED").await;
}

fn id(user: &Value) -> String {
    user["id"].as_str().unwrap().to_string()
}

/// PATCH /users/{id} as a superuser.
async fn admin_patch(app: &TestApp, admin: &str, user_id: &str, body: Value) -> Response {
    call(
        app,
        Method::PATCH,
        &format!("/users/{user_id}"),
        admin,
        &body,
    )
    .await
}

// ---------------------------------------------------------------------------------------------
// Every write path, with a warm cache, on the instance that makes it.

#[tokio::test]
async fn profile_and_administrator_changes_show_in_the_very_next_answer() {
    let app = spawn_app_with(&[KEEP]).await;
    cache_in_use(&app).await;
    let (_, admin) = app.superuser().await;
    let email = unique_email();
    let (user, tokens) = app.signed_up(&email).await;
    let user_id = id(&user);

    // The user's own new address: shown, and no longer verified.
    warm(&app, &tokens.access).await;
    let new_email = unique_email();
    let response = call(
        &app,
        Method::PATCH,
        "/me",
        &tokens.access,
        &json!({"email": new_email, "current_password": PASSWORD}),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let now = me(&app, &tokens.access).await;
    assert_eq!(now["email"], new_email.as_str());
    assert_eq!(now["is_verified"], false);

    // Each administrator's change, one at a time, after warming again.
    for (body, field, value) in [
        (
            json!({"name": "Admin Renamed"}),
            "name",
            json!("Admin Renamed"),
        ),
        (json!({"is_verified": true}), "is_verified", json!(true)),
        (json!({"is_superuser": true}), "is_superuser", json!(true)),
        (json!({"is_superuser": false}), "is_superuser", json!(false)),
        (json!({"email": unique_email()}), "email", Value::Null),
    ] {
        warm(&app, &tokens.access).await;
        let response = admin_patch(&app, &admin.access, &user_id, body.clone()).await;
        assert_eq!(response.status(), StatusCode::OK, "PATCH {body}");
        let patched: Value = response.json().await.unwrap();
        let now = me(&app, &tokens.access).await;
        let expected = if value.is_null() {
            patched[field].clone()
        } else {
            value
        };
        assert_eq!(now[field], expected, "after PATCH {body}: {now}");
        assert_eq!(now["updated_at"], patched["updated_at"], "{body}");
    }

    // Deactivation ends the session at once.
    warm(&app, &tokens.access).await;
    let response = admin_patch(&app, &admin.access, &user_id, json!({"is_active": false})).await;
    assert_eq!(response.status(), StatusCode::OK);
    refused(&app, &tokens.access, "deactivation").await;
}

#[tokio::test]
async fn every_way_a_session_ends_is_seen_by_the_very_next_request() {
    let app = spawn_app_with(&[KEEP]).await;
    cache_in_use(&app).await;
    let (_, admin) = app.superuser().await;

    // DELETE /me/sessions/{id} from another session of the same user.
    let email = unique_email();
    let (user, first) = app.signed_up(&email).await;
    let second = app.login_ok(&email).await;
    warm(&app, &first.access).await;
    let response = bare(
        &app,
        Method::DELETE,
        &format!("/me/sessions/{}", sid(&first)),
        &second.access,
    )
    .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    refused(&app, &first.access, "DELETE /me/sessions/{id}").await;

    // Logout of the others.
    let third = app.login_ok(&email).await;
    warm(&app, &third.access).await;
    warm(&app, &second.access).await;
    assert_eq!(
        app.logout(&second.access, Some("others")).await.status(),
        StatusCode::NO_CONTENT
    );
    refused(&app, &third.access, "logout ?scope=others").await;
    me(&app, &second.access).await;

    // A superuser ends one session, then all of them.
    let fourth = app.login_ok(&email).await;
    warm(&app, &fourth.access).await;
    let user_id = id(&user);
    let response = bare(
        &app,
        Method::DELETE,
        &format!("/users/{user_id}/sessions/{}", sid(&fourth)),
        &admin.access,
    )
    .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    refused(
        &app,
        &fourth.access,
        "an administrator's end of one session",
    )
    .await;
    warm(&app, &second.access).await;
    let response = bare(
        &app,
        Method::DELETE,
        &format!("/users/{user_id}/sessions"),
        &admin.access,
    )
    .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    refused(
        &app,
        &second.access,
        "an administrator's end of every session",
    )
    .await;

    // Deletion, by the user and by a superuser.
    let (_, own) = app.signed_up(&unique_email()).await;
    warm(&app, &own.access).await;
    let response = call(
        &app,
        Method::DELETE,
        "/me",
        &own.access,
        &json!({"password": PASSWORD}),
    )
    .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    refused(&app, &own.access, "DELETE /me").await;
    let (deleted, by_admin) = app.signed_up(&unique_email()).await;
    warm(&app, &by_admin.access).await;
    let response = bare(
        &app,
        Method::DELETE,
        &format!("/users/{}", id(&deleted)),
        &admin.access,
    )
    .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    refused(&app, &by_admin.access, "DELETE /users/{id}").await;
}

/// A spent refresh token presented again outside the reuse window revokes its session: the
/// access tokens of that session, however warm, stop at once.
#[tokio::test]
async fn refresh_token_reuse_ends_the_warm_session_at_once() {
    let app = spawn_app_with(&[KEEP]).await;
    cache_in_use(&app).await;
    freeze_clock(&app);
    let (_, tokens) = app.signed_up(&unique_email()).await;
    let next = Tokens::from(
        app.refresh(&tokens.refresh)
            .await
            .json::<Value>()
            .await
            .unwrap(),
    );
    app.clock.advance_ms(60_000);
    warm(&app, &tokens.access).await;
    warm(&app, &next.access).await;
    assert_problem(app.refresh(&tokens.refresh).await, 401, "INVALID_TOKEN").await;
    refused(&app, &next.access, "reuse detection (the new token)").await;
    refused(&app, &tokens.access, "reuse detection (the old token)").await;
}

#[tokio::test]
async fn mail_links_change_the_warm_check_at_once() {
    let sink = SmtpSink::start().await;
    let app = app_with_mail(&sink, &[KEEP, ("MAIL_RATE_LIMIT_SECONDS", "0")]).await;
    cache_in_use(&app).await;
    let email = unique_email();
    let (_, tokens) = app.signed_up(&email).await;

    // Verification (registration mails the link): `is_verified` true in the next answer.
    let link = sink.wait_for(&email, "Confirm", 1, WAIT).await[0]
        .link_token("/verify-email")
        .unwrap();
    assert_eq!(warm(&app, &tokens.access).await["is_verified"], false);
    let response = app
        .post_json("/verify/confirm", &json!({"token": link}))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(me(&app, &tokens.access).await["is_verified"], true);

    // A password reset ends every session.
    let other = app.login_ok(&email).await;
    let response = app
        .post_json("/password-reset/request", &json!({"email": email}))
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let link = sink.wait_for(&email, "Reset", 1, WAIT).await[0]
        .link_token("/reset-password")
        .unwrap();
    warm(&app, &tokens.access).await;
    warm(&app, &other.access).await;
    assert_eq!(
        app.confirm_reset(&link, "a brand new passphrase for review")
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    refused(&app, &tokens.access, "a password reset").await;
    refused(&app, &other.access, "a password reset").await;
}

#[tokio::test]
async fn second_factor_changes_and_a_superusers_reset_are_seen_at_once() {
    let sink = SmtpSink::start().await;
    let app = app_with_mail(&sink, &[KEEP, ("MAIL_RATE_LIMIT_SECONDS", "0")]).await;
    cache_in_use(&app).await;
    freeze_clock(&app);
    // Enrolment in one session ends the others, warm as they are.
    let email = unique_email();
    let (user, first) = app.signed_up(&email).await;
    let other = app.login_ok(&email).await;
    warm(&app, &other.access).await;
    warm(&app, &first.access).await;
    let (secret, _) = enrol(&app, &first.access).await;
    refused(&app, &other.access, "TOTP enrolment").await;
    me(&app, &first.access).await;

    // A step-up recorded on the session (mfa_at) is what the next sensitive request reads: a
    // new set of recovery codes right after it needs no code again.
    let second = mfa_login_ok(&app, &email, &secret).await;
    warm(&app, &second.access).await;
    app.clock.advance_ms(crate::mfa::STEP_UP_MS + 1_000);
    warm(&app, &second.access).await;
    let stale = call(
        &app,
        Method::POST,
        "/me/mfa/recovery-codes",
        &second.access,
        &json!({"password": PASSWORD}),
    )
    .await;
    assert_problem(stale, 403, "STEP_UP_REQUIRED").await;
    let code = next_code(&app, &secret);
    let stepped = call(
        &app,
        Method::POST,
        "/me/mfa/recovery-codes",
        &second.access,
        &json!({"password": PASSWORD, "code": code}),
    )
    .await;
    assert_eq!(stepped.status(), StatusCode::OK, "with the code");
    let again = call(
        &app,
        Method::POST,
        "/me/mfa/recovery-codes",
        &second.access,
        &json!({"password": PASSWORD}),
    )
    .await;
    assert_eq!(
        again.status(),
        StatusCode::OK,
        "within the step-up window just opened, read from the session at once"
    );

    // A superuser's reset, at once: every session ends.
    let (_, admin) = app.superuser().await;
    enrol(&app, &admin.access).await;
    warm(&app, &second.access).await;
    warm(&app, &first.access).await;
    let response = bare(
        &app,
        Method::DELETE,
        &format!("/users/{}/mfa", id(&user)),
        &admin.access,
    )
    .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    refused(&app, &second.access, "a superuser's MFA reset").await;
    refused(&app, &first.access, "a superuser's MFA reset").await;
}

/// A delayed reset is applied by the periodic job (`service::maintenance`), not by a request:
/// its end of the sessions must reach the cache too.
#[tokio::test]
async fn a_delayed_reset_applied_by_the_job_ends_the_warm_session() {
    let sink = SmtpSink::start().await;
    let app = app_with_mail(
        &sink,
        &[
            KEEP,
            ("MAIL_RATE_LIMIT_SECONDS", "0"),
            ("MFA_RESET_DELAY_HOURS", "24"),
            ("PURGE_INTERVAL_SECONDS", "1"),
        ],
    )
    .await;
    cache_in_use(&app).await;
    freeze_clock(&app);
    let user = enrolled(&app).await;
    let (_, admin) = app.superuser().await;
    enrol(&app, &admin.access).await;
    let response = bare(
        &app,
        Method::DELETE,
        &format!("/users/{}/mfa", user.id),
        &admin.access,
    )
    .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let due = ms_of(&response.json::<Value>().await.unwrap()["effective_at"]);
    // Just before it is due, a fresh access token of the session, its check warm.
    app.clock.set_ms(due - 60_000);
    let fresh = pair(app.refresh(&user.session.refresh).await).await;
    warm(&app, &fresh.access).await;
    app.clock.set_ms(due + 1_000);
    eventually(
        "the delayed reset applied",
        Duration::from_secs(20),
        || async { app.login(&user.email, PASSWORD).await.status() },
        |status| *status == StatusCode::OK,
    )
    .await;
    refused(&app, &fresh.access, "a delayed reset applied by the job").await;
}

#[tokio::test]
async fn removing_the_password_ends_the_other_warm_sessions() {
    let app = spawn_app_with(&[KEEP]).await;
    cache_in_use(&app).await;
    let mut holder = crate::passkeys::holder(&app).await;
    // With a passkey, the password alone asks for it: the other session signs in with it.
    let other = crate::passkeys::sign_in(&app, &mut holder.passkey).await;
    warm(&app, &other.access).await;
    warm(&app, &holder.session.access).await;
    let response = crate::passkeys::remove_password(&app, &holder.session.access).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    refused(&app, &other.access, "DELETE /me/password").await;
    me(&app, &holder.session.access).await;
    // The account has no password now, and the same session's next request reads so: setting
    // one goes by the passkey this session just proved (the password sent is not looked at).
    // A stale "has a password" would check it against the empty hash instead: 403.
    let response = app
        .client
        .put(app.url("/me/password"))
        .bearer_auth(&holder.session.access)
        .json(&json!({"current_password": PASSWORD, "new_password": "whatever passphrase 99"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
}

// ---------------------------------------------------------------------------------------------
// Races and time.

/// Requests racing a password change made from another session (an account-wide change, marked
/// by account): none sent after the change's answer is served from a check made before it.
#[tokio::test]
async fn no_request_after_a_password_change_is_served_from_before_it() {
    let app = Arc::new(spawn_app_with(&[KEEP]).await);
    cache_in_use(&app).await;
    for round in 0..4 {
        let email = unique_email();
        let (_, victim) = app.signed_up(&email).await;
        let changer = app.login_ok(&email).await;
        let (checks, late) = race_checks_with(&app, &victim.access, async {
            assert_eq!(
                app.change_password(
                    &changer.access,
                    PASSWORD,
                    &format!("a new passphrase, round {round}")
                )
                .await
                .status(),
                StatusCode::NO_CONTENT
            );
        })
        .await;
        assert!(checks > 6, "round {round}: raced");
        assert_eq!(
            late, 0,
            "round {round}: a request sent after the password change was served"
        );
    }
}

/// An account deleted and registered again with the same address: the old tokens stay dead,
/// however warm their check was, and the new account is a new one.
#[tokio::test]
async fn a_deleted_and_recreated_account_does_not_revive_old_tokens() {
    let app = spawn_app_with(&[KEEP]).await;
    cache_in_use(&app).await;
    let email = unique_email();
    let (old, tokens) = app.signed_up(&email).await;
    warm(&app, &tokens.access).await;
    let response = call(
        &app,
        Method::DELETE,
        "/me",
        &tokens.access,
        &json!({"password": PASSWORD}),
    )
    .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let (new, fresh) = app.signed_up(&email).await;
    assert_ne!(id(&old), id(&new));
    assert_eq!(warm(&app, &fresh.access).await["id"], new["id"]);
    for _ in 0..3 {
        refused(&app, &tokens.access, "the deleted account's token").await;
    }
}

/// The session's sliding end (`refresh_expires_at`) on the server's clock, with a warm check and
/// an access token that is still valid: refused the moment it passes.
#[tokio::test]
async fn a_warm_check_ends_with_its_session() {
    let app = spawn_app_with(&[KEEP]).await;
    cache_in_use(&app).await;
    let t = freeze_clock(&app);
    let email = unique_email();
    let (_, tokens) = app.signed_up(&email).await;
    // The session ends 5 s from now (set before the check is read; the token lives 30 min).
    app.execute2(
        "UPDATE sessions SET refresh_expires_at = CAST($1 AS BIGINT) \
         WHERE user_id = (SELECT id FROM users WHERE email = $2)",
        &(t + 5_000).to_string(),
        &email,
    )
    .await;
    warm(&app, &tokens.access).await;
    app.clock.set_ms(t + 4_999);
    me(&app, &tokens.access).await;
    app.clock.set_ms(t + 5_000);
    refused(&app, &tokens.access, "the session's end").await;
}

/// A kept verified token is checked against its `exp` (with the 30 s leeway) every time.
#[tokio::test]
async fn a_kept_token_still_expires_to_the_second() {
    let app = spawn_app_with(&[KEEP]).await;
    cache_in_use(&app).await;
    freeze_clock(&app);
    let (_, tokens) = app.signed_up(&unique_email()).await;
    warm(&app, &tokens.access).await;
    let exp = claims_of(&tokens.access)["exp"].as_i64().unwrap();
    app.clock.set_ms((exp + 30) * 1000);
    me(&app, &tokens.access).await;
    app.clock.set_ms((exp + 31) * 1000);
    let body = assert_problem(app.me(&tokens.access).await, 401, "UNAUTHORIZED").await;
    assert!(body.to_string().contains("expired"), "{body}");
    // Back in time (a clock corrected backwards), it is valid again: a pure function of time.
    app.clock.set_ms(exp * 1000);
    me(&app, &tokens.access).await;
}

// ---------------------------------------------------------------------------------------------
// The verified-token cache.

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

/// After a good token is kept, every other text is verified anew: tampered payloads, headers
/// and signatures, `alg` tricks, another key's token, a refresh token. The good one still
/// works after each.
#[tokio::test]
async fn the_token_cache_vouches_only_for_the_exact_bytes_that_verified() {
    let app = spawn_app_with(&[KEEP]).await;
    cache_in_use(&app).await;
    let (_, victim) = app.signed_up(&unique_email()).await;
    let (_, attacker) = app.signed_up(&unique_email()).await;
    warm(&app, &victim.access).await;
    warm(&app, &attacker.access).await;
    let parts: Vec<&str> = attacker.access.split('.').collect();
    let (header, payload, signature) = (parts[0], parts[1], parts[2]);
    let victim_claims = claims_of(&victim.access);
    let mut claims = claims_of(&attacker.access);
    claims["sub"] = victim_claims["sub"].clone();
    claims["sid"] = victim_claims["sid"].clone();
    let swapped = b64(&claims);

    // A token signed under another SECRET_KEY (same issuer, audience and claims).
    let mut vars = test_vars("sqlite::memory:");
    vars.retain(|(k, _)| k != "SECRET_KEY");
    vars.push((
        "SECRET_KEY".into(),
        "another-secret-key-of-at-least-32-bytes!!".into(),
    ));
    let config = auth_server::Config::from_vars(vars).unwrap();
    let other_keys = auth_server::auth::tokens::TokenKeys::new(&config.tokens).unwrap();
    let now_s = app.clock.now_ms() / 1000;
    let foreign = other_keys.issue_access(
        victim_claims["sub"].as_str().unwrap(),
        victim_claims["sid"].as_str().unwrap(),
        now_s,
        now_s + 600,
        auth_server::auth::tokens::Authentication {
            amr: "pwd",
            auth_time: now_s,
        },
    );

    let none = b64(&json!({"alg": "none", "typ": "at+jwt"}));
    let hs512 = b64(&json!({"alg": "HS512", "typ": "at+jwt"}));
    let no_typ = b64(&json!({"alg": "HS256"}));
    let flipped = {
        let mut s = signature.to_string();
        let last = s.pop().unwrap();
        s.push(if last == 'A' { 'Q' } else { 'A' });
        s
    };
    let attempts = [
        (
            "another account's claims under my signature",
            format!("{header}.{swapped}.{signature}"),
        ),
        ("alg none", format!("{none}.{swapped}.")),
        (
            "alg none with my signature",
            format!("{none}.{payload}.{signature}"),
        ),
        (
            "alg HS512 with my signature",
            format!("{hs512}.{payload}.{signature}"),
        ),
        ("no typ", format!("{no_typ}.{payload}.{signature}")),
        (
            "a flipped signature",
            format!("{header}.{payload}.{flipped}"),
        ),
        ("padding", format!("{header}.{payload}.{signature}=")),
        ("a trailing dot", format!("{}.", attacker.access)),
        ("four parts", format!("{}.{signature}", attacker.access)),
        ("another key's token", foreign),
        ("a refresh token", victim.refresh.clone()),
    ];
    for (what, token) in attempts {
        for _ in 0..2 {
            assert_problem(app.me(&token).await, 401, "UNAUTHORIZED").await;
        }
        let me_victim = me(&app, &victim.access).await;
        assert_eq!(me_victim["id"], victim_claims["sub"], "{what}");
        let me_attacker = me(&app, &attacker.access).await;
        assert_ne!(me_attacker["id"], victim_claims["sub"], "{what}");
    }
}

/// Many distinct valid tokens (as many refreshes would mint) with a small SESSION_CACHE_ENTRIES:
/// each verifies, the first ones again after they were pushed out (verified anew), and the
/// ones of a revoked session are refused whether kept or not.
#[tokio::test]
async fn many_distinct_tokens_are_bounded_and_each_still_checked() {
    let app = spawn_app_with(&[KEEP, ("SESSION_CACHE_ENTRIES", "8")]).await;
    cache_in_use(&app).await;
    freeze_clock(&app);
    let (_, tokens) = app.signed_up(&unique_email()).await;
    let claims = claims_of(&tokens.access);
    let now_s = app.clock.now_ms() / 1000;
    let minted: Vec<String> = (0..200)
        .map(|i| {
            app.state.tokens.issue_access(
                claims["sub"].as_str().unwrap(),
                claims["sid"].as_str().unwrap(),
                now_s,
                now_s + 600 + i,
                auth_server::auth::tokens::Authentication {
                    amr: "pwd",
                    auth_time: now_s,
                },
            )
        })
        .collect();
    for token in &minted {
        me(&app, token).await;
    }
    for token in minted.iter().take(10) {
        me(&app, token).await;
    }
    assert_eq!(
        app.logout(&tokens.access, None).await.status(),
        StatusCode::NO_CONTENT
    );
    for token in minted.iter().rev().take(5).chain(minted.iter().take(5)) {
        refused(&app, token, "a token of the revoked session").await;
    }
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL's channel.

/// Forged notifications on the channel (any role that can connect may NOTIFY): a flush, junk,
/// fake pings, an oversized payload, another account's id. Nothing breaks, nothing is served
/// that should not be, and the cache is still in use afterwards.
#[tokio::test]
async fn forged_notifications_break_nothing() {
    if !on_postgres() {
        println!("PostgreSQL only (LISTEN/NOTIFY)");
        return;
    }
    let a = spawn_app_with(&[KEEP]).await;
    let b = a.another_instance().await;
    cache_in_use(&a).await;
    cache_in_use(&b).await;
    let (_, tokens) = a.signed_up(&unique_email()).await;
    let (other, _) = a.signed_up(&unique_email()).await;
    warm(&b, &tokens.access).await;
    let long = "x".repeat(7_900);
    let other_id = id(&other);
    for payload in [
        "*",
        "",
        "garbage",
        "ping:",
        "ping:nonce:1",
        "ping:::::18446744073709551615",
        "'; DROP TABLE users; --",
        "\u{1F600}",
        long.as_str(),
        other_id.as_str(),
    ] {
        a.execute("SELECT pg_notify('auth_session_check', $1)", payload)
            .await;
        me(&b, &tokens.access).await;
        me(&a, &tokens.access).await;
    }
    cache_in_use(&b).await;
    warm(&b, &tokens.access).await;
    // The channel still works: a revocation on a is seen by b within the bound.
    assert_eq!(
        a.logout(&tokens.access, None).await.status(),
        StatusCode::NO_CONTENT
    );
    refused(&a, &tokens.access, "logout on a").await;
    eventually(
        "b refusing the revoked session",
        Duration::from_secs(2),
        || async { b.me(&tokens.access).await.status() },
        |s| *s == StatusCode::UNAUTHORIZED,
    )
    .await;
}

/// Changes made by SQL outside any instance (an operator's): the triggers tell every instance,
/// whose warm checks then show the change within the bound.
#[tokio::test]
async fn an_operators_sql_is_seen_by_every_instance_within_the_bound() {
    if !on_postgres() {
        println!("PostgreSQL only (the triggers); on SQLite the bound is SESSION_CACHE_MS");
        return;
    }
    let a = spawn_app_with(&[KEEP]).await;
    let b = a.another_instance().await;
    cache_in_use(&a).await;
    cache_in_use(&b).await;
    let email = unique_email();
    let (_, tokens) = a.signed_up(&email).await;
    warm(&a, &tokens.access).await;
    warm(&b, &tokens.access).await;
    a.execute(
        "UPDATE users SET name = 'Renamed By SQL' WHERE email = $1",
        &email,
    )
    .await;
    for app in [&a, &b] {
        eventually(
            "the new name shown",
            Duration::from_secs(2),
            || async { me(app, &tokens.access).await["name"].clone() },
            |name| name == "Renamed By SQL",
        )
        .await;
    }
    // A live session deleted outright (not revoked first).
    warm(&a, &tokens.access).await;
    warm(&b, &tokens.access).await;
    a.execute(
        "DELETE FROM sessions WHERE user_id = (SELECT id FROM users WHERE email = $1)",
        &email,
    )
    .await;
    for app in [&a, &b] {
        eventually(
            "the deleted session refused",
            Duration::from_secs(2),
            || async { app.me(&tokens.access).await.status() },
            |s| *s == StatusCode::UNAUTHORIZED,
        )
        .await;
    }
}

/// The listening connection cut again and again while a session is checked over and over on
/// the other instance, and a revocation made during a cut: refused within the bound, and the
/// cache is used again once the channel is back.
#[tokio::test]
async fn a_listener_cut_during_a_revocation_does_not_keep_the_session_alive() {
    if !on_postgres() {
        println!("PostgreSQL only (LISTEN/NOTIFY)");
        return;
    }
    let a = spawn_app_with(&[KEEP]).await;
    let b = a.another_instance().await;
    for round in 0..3 {
        cache_in_use(&b).await;
        let (_, tokens) = a.signed_up(&unique_email()).await;
        warm(&b, &tokens.access).await;
        let cut = a
            .count(
                "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE datname = current_database() AND query LIKE $1",
                "LISTEN%",
            )
            .await;
        assert!(cut >= 1, "round {round}: a listener was cut");
        // Revoked by SQL with a's channel cut too: the notification may reach no one.
        a.execute(
            "UPDATE sessions SET revoked_at = 1 WHERE id = $1",
            &sid(&tokens),
        )
        .await;
        eventually(
            "b refusing the session revoked during the cut",
            Duration::from_secs(4),
            || async { b.me(&tokens.access).await.status() },
            |s| *s == StatusCode::UNAUTHORIZED,
        )
        .await;
        refused(&a, &tokens.access, "a, after its channel was cut").await;
    }
}

/// An operator's emergency "log everyone out": `TRUNCATE sessions` fires no row trigger. Every
/// instance must still stop serving the warm checks within the bound (the statement notifies
/// everything: a flush).
#[tokio::test]
async fn truncating_the_sessions_is_seen_by_every_instance_within_the_bound() {
    if !on_postgres() {
        println!("PostgreSQL only (the triggers); on SQLite the bound is SESSION_CACHE_MS");
        return;
    }
    let a = spawn_app_with(&[KEEP]).await;
    let b = a.another_instance().await;
    cache_in_use(&a).await;
    cache_in_use(&b).await;
    let (_, tokens) = a.signed_up(&unique_email()).await;
    let (_, other) = a.signed_up(&unique_email()).await;
    for app in [&a, &b] {
        warm(app, &tokens.access).await;
        warm(app, &other.access).await;
    }
    let TestPool::Postgres(pool) = &a.sql else {
        unreachable!("on PostgreSQL")
    };
    sqlx::query("TRUNCATE sessions CASCADE")
        .execute(pool)
        .await
        .unwrap();
    for app in [&a, &b] {
        for access in [&tokens.access, &other.access] {
            eventually(
                "a session truncated away refused",
                Duration::from_secs(2),
                || async { app.me(access).await.status() },
                |s| *s == StatusCode::UNAUTHORIZED,
            )
            .await;
        }
    }
}

/// An operator ends sessions by moving their end (`refresh_expires_at`) into the past, by SQL:
/// the column the cache itself checks against, as it was read. Every instance must stop
/// serving the warm checks within the bound (a refresh only moves it later, and need not
/// notify).
#[tokio::test]
async fn ending_a_session_by_moving_its_end_is_seen_within_the_bound() {
    if !on_postgres() {
        println!("PostgreSQL only (the triggers); on SQLite the bound is SESSION_CACHE_MS");
        return;
    }
    let a = spawn_app_with(&[KEEP]).await;
    let b = a.another_instance().await;
    cache_in_use(&a).await;
    cache_in_use(&b).await;
    let (_, tokens) = a.signed_up(&unique_email()).await;
    // A refresh moves the end later: nothing to drop, and the check stays warm.
    let next = pair(a.refresh(&tokens.refresh).await).await;
    for app in [&a, &b] {
        warm(app, &next.access).await;
    }
    a.execute(
        "UPDATE sessions SET refresh_expires_at = 1 WHERE id = $1",
        &sid(&next),
    )
    .await;
    for app in [&a, &b] {
        eventually(
            "a session whose end was moved into the past refused",
            Duration::from_secs(2),
            || async { app.me(&next.access).await.status() },
            |s| *s == StatusCode::UNAUTHORIZED,
        )
        .await;
    }
}
