//! Exact time. The server runs on a clock the test controls (`app.clock`): each test freezes it
//! and moves it by the millisecond to both sides of one rule's boundary — at the limit, and just
//! past it — so that moving the comparison by one unit fails the test. No sleeps.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;
use crate::smtp::{RESET, SmtpSink, VERIFY, WAIT, app_with_mail};

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

async fn tokens(response: reqwest::Response) -> Tokens {
    assert_eq!(response.status(), StatusCode::OK);
    Tokens::from(response.json::<Value>().await.unwrap())
}

fn retry_after(response: &reqwest::Response) -> String {
    response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .to_string()
}

/// The reuse window (README, Rotation): the token spent most recently gets the current pair up to
/// and including REFRESH_REUSE_INTERVAL_SECONDS after its spending; 1 ms later it is reuse, and
/// the session is revoked.
#[tokio::test]
async fn the_reuse_window_holds_at_its_limit_and_revokes_1_ms_past_it() {
    let app = spawn_app_with(&[("REFRESH_REUSE_INTERVAL_SECONDS", "10")]).await;
    let t = freeze_clock(&app);
    let (_, first) = app.signed_up(&unique_email()).await;
    app.clock.set_ms(t + 7);
    let second = tokens(app.refresh(&first.refresh).await).await;

    // Spent at t + 7: the window runs to t + 7 + 10 s inclusive.
    app.clock.set_ms(t + 7 + 10_000);
    let again = tokens(app.refresh(&first.refresh).await).await;
    assert_eq!(again.refresh, second.refresh, "the current refresh token");
    assert_eq!(app.me(&again.access).await.status(), StatusCode::OK);

    app.clock.set_ms(t + 7 + 10_001);
    assert_problem(app.refresh(&first.refresh).await, 401, "INVALID_TOKEN").await;
    // Reuse revoked the session: every token of it fails.
    for access in [&first.access, &second.access, &again.access] {
        assert_eq!(app.me(access).await.status(), StatusCode::UNAUTHORIZED);
    }
    assert_problem(app.refresh(&second.refresh).await, 401, "INVALID_TOKEN").await;
}

/// The session's absolute lifetime (SESSION_MAX_AGE_DAYS) caps the tokens a refresh hands out
/// near its end, and the session works up to its last millisecond and not at it.
#[tokio::test]
async fn the_session_lifetime_caps_the_tokens_of_a_late_refresh_and_ends_it_exactly() {
    let app = spawn_app_with(&[
        ("SESSION_MAX_AGE_DAYS", "1"),
        ("REFRESH_TOKEN_EXPIRE_DAYS", "7"),
        ("ACCESS_TOKEN_EXPIRE_MINUTES", "30"),
    ])
    .await;
    let t = freeze_clock(&app);
    let end = t + DAY;
    let (_, login) = app.signed_up(&unique_email()).await;
    let claims = claims_of(&login.refresh);
    assert_eq!(claims["iat"], t / 1000, "iat from the server's clock");
    assert_eq!(
        claims["exp"],
        end / 1000,
        "the refresh token ends with the session"
    );
    assert_eq!(claims_of(&login.access)["exp"], (t + 30 * MINUTE) / 1000);

    // Ten minutes before the end: the new pair ends with the session, not 30 min / 7 days on.
    app.clock.set_ms(end - 10 * MINUTE);
    let late = tokens(app.refresh(&login.refresh).await).await;
    assert_eq!(claims_of(&late.access)["exp"], end / 1000);
    assert_eq!(claims_of(&late.refresh)["exp"], end / 1000);
    assert_eq!(late.body["expires_in"], 600);

    app.clock.set_ms(end - 1);
    assert_eq!(app.me(&late.access).await.status(), StatusCode::OK);
    let last = tokens(app.refresh(&late.refresh).await).await;
    assert_eq!(last.body["expires_in"], 1);

    app.clock.set_ms(end);
    assert_eq!(
        app.me(&last.access).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let body = assert_problem(app.refresh(&last.refresh).await, 401, "INVALID_TOKEN").await;
    assert_eq!(body["detail"], "the session has expired", "{body}");
}

/// An access token is accepted while now <= exp + 30 s (whole seconds), then refused as expired,
/// with its session still live.
#[tokio::test]
async fn the_exp_leeway_is_30_seconds_to_the_second() {
    let app = spawn_app_with(&[("ACCESS_TOKEN_EXPIRE_MINUTES", "1")]).await;
    let t = freeze_clock(&app);
    let (_, login) = app.signed_up(&unique_email()).await;
    let exp = claims_of(&login.access)["exp"].as_i64().unwrap();
    assert_eq!(claims_of(&login.access)["iat"], t / 1000);
    assert_eq!(exp, t / 1000 + 60);

    app.clock.set_ms((exp + 30) * 1000 + 999);
    assert_eq!(app.me(&login.access).await.status(), StatusCode::OK);

    app.clock.set_ms((exp + 31) * 1000);
    let body = assert_problem(app.me(&login.access).await, 401, "UNAUTHORIZED").await;
    assert_eq!(body["detail"], "the access token has expired", "{body}");
    // Only the access token is over: the session refreshes.
    let fresh = tokens(app.refresh(&login.refresh).await).await;
    assert_eq!(app.me(&fresh.access).await.status(), StatusCode::OK);
}

/// The lockout (README, Security): LOGIN_FREE_ATTEMPTS failures lock the address for
/// LOGIN_LOCKOUT_FIRST_SECONDS; each further failure, once the lock has passed, locks it twice as
/// long, up to LOGIN_LOCKOUT_MAX_SECONDS. A lock holds to its last millisecond, the right
/// password included, and is over at its end.
#[tokio::test]
async fn lockouts_double_up_to_their_cap_and_end_to_the_millisecond() {
    let app = spawn_app_with(&[
        ("LOGIN_FREE_ATTEMPTS", "2"),
        ("LOGIN_LOCKOUT_FIRST_SECONDS", "1"),
        ("LOGIN_LOCKOUT_MAX_SECONDS", "4"),
    ])
    .await;
    let email = unique_email();
    app.register(&email, PASSWORD, "Locked").await;
    let t = freeze_clock(&app);
    let wrong = || app.login(&email, "wrong password, wrong");
    let locked_until = || {
        app.sql.text(
            "SELECT CAST(locked_until AS TEXT) FROM login_attempts WHERE email = $1",
            &email,
        )
    };

    assert_problem(wrong().await, 401, "INVALID_CREDENTIALS").await;
    // The attempt that reaches the limit locks as it is counted: 1 s.
    assert_problem(wrong().await, 401, "INVALID_CREDENTIALS").await;
    assert_eq!(locked_until().await, (t + 1_000).to_string());

    // Each lock, as (when it was set, how long it is); the right password is refused through
    // its last millisecond, and the next failure at its end sets the next one.
    let mut at = t;
    for length in [1_000, 2_000, 4_000, 4_000] {
        app.clock.set_ms(at + length - 1);
        let refused = app.login(&email, PASSWORD).await;
        assert_eq!(retry_after(&refused), "1", "1 ms left rounds up to 1 s");
        assert_problem(refused, 429, "TOO_MANY_REQUESTS").await;
        at += length;
        app.clock.set_ms(at);
        assert_problem(wrong().await, 401, "INVALID_CREDENTIALS").await;
        let next = (2 * length).min(4_000);
        assert_eq!(
            locked_until().await,
            (at + next).to_string(),
            "after a {length} ms lock"
        );
        let refused = app.login(&email, PASSWORD).await;
        assert_eq!(retry_after(&refused), (next / 1000).to_string());
        assert_problem(refused, 429, "TOO_MANY_REQUESTS").await;
    }
    // At the last lock's end the right password logs in and clears the count.
    app.clock.set_ms(at + 4_000);
    app.login_ok(&email).await;
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM login_attempts WHERE email = $1",
            &email
        )
        .await,
        0
    );
}

/// A reset token works until PASSWORD_RESET_EXPIRE_MINUTES after it was made, to the
/// millisecond, and not at that instant.
#[tokio::test]
async fn a_reset_token_expires_exactly_at_its_lifetime() {
    let sink = SmtpSink::start().await;
    let app = app_with_mail(&sink, &[("PASSWORD_RESET_EXPIRE_MINUTES", "30")]).await;
    let email = unique_email();
    app.register(&email, PASSWORD, "Reset").await;
    let t = freeze_clock(&app);
    let body = json!({ "email": email });
    let request = || app.post_json("/password-reset/request", &body);
    assert_eq!(request().await.status(), StatusCode::ACCEPTED);
    let mails = sink.wait_for(&email, RESET, 1, WAIT).await;
    let expired = mails[0].link_token("/reset-password").unwrap();

    app.clock.set_ms(t + 30 * MINUTE);
    assert_problem(
        app.confirm_reset(&expired, "a new passphrase here").await,
        400,
        "INVALID_TOKEN",
    )
    .await;

    // A new one, made now, works through its last millisecond.
    assert_eq!(request().await.status(), StatusCode::ACCEPTED);
    let mails = sink.wait_for(&email, RESET, 2, WAIT).await;
    let fresh = mails[1].link_token("/reset-password").unwrap();
    app.clock.set_ms(t + 60 * MINUTE - 1);
    let confirmed = app.confirm_reset(&fresh, "a new passphrase here").await;
    assert!(confirmed.status().is_success(), "{}", confirmed.status());
    app.login_ok_with(&email, "a new passphrase here").await;
}

/// A verification token works until VERIFY_EMAIL_EXPIRE_HOURS after it was made, to the
/// millisecond, and not at that instant.
#[tokio::test]
async fn a_verification_token_expires_exactly_at_its_lifetime() {
    let sink = SmtpSink::start().await;
    let app = app_with_mail(&sink, &[("VERIFY_EMAIL_EXPIRE_HOURS", "24")]).await;
    let t = freeze_clock(&app);
    let email = unique_email();
    app.register(&email, PASSWORD, "Verify").await;
    let mails = sink.wait_for(&email, VERIFY, 1, WAIT).await;
    let expired = mails[0].link_token("/verify-email").unwrap();
    let confirm = async |token: String| {
        app.post_json("/verify/confirm", &json!({ "token": token }))
            .await
    };

    app.clock.set_ms(t + DAY);
    assert_problem(confirm(expired).await, 400, "INVALID_TOKEN").await;

    let login = app.login_ok(&email).await;
    let asked = app
        .client
        .post(app.url("/verify/request"))
        .bearer_auth(&login.access)
        .send()
        .await
        .unwrap();
    assert!(asked.status().is_success(), "{}", asked.status());
    let mails = sink.wait_for(&email, VERIFY, 2, WAIT).await;
    let fresh = mails[1].link_token("/verify-email").unwrap();
    app.clock.set_ms(t + 2 * DAY - 1);
    let confirmed = confirm(fresh).await;
    assert!(confirmed.status().is_success(), "{}", confirmed.status());
    let me: Value = app
        .me(&app.login_ok(&email).await.access)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["is_verified"], true, "{me}");
}

const SENT_RESET: &str = "UPDATE mail_outbox SET sent_at = CAST($1 AS BIGINT) \
    WHERE recipient = $2 AND subject LIKE '%Reset your password%'";
const SENT_VERIFY: &str = "UPDATE mail_outbox SET sent_at = CAST($1 AS BIGINT) \
    WHERE recipient = $2 AND subject LIKE '%Confirm your email address%'";
const FAILED_RESET: &str = "UPDATE mail_outbox SET sent_at = NULL, failed_at = CAST($1 AS BIGINT) \
    WHERE recipient = $2 AND subject LIKE '%Reset your password%'";
const FAILED_VERIFY: &str = "UPDATE mail_outbox SET sent_at = NULL, failed_at = CAST($1 AS BIGINT) \
    WHERE recipient = $2 AND subject LIKE '%Confirm your email address%'";
const COUNT_RESET: &str = "SELECT COUNT(*) FROM mail_outbox WHERE recipient = $1 AND subject LIKE '%Reset your password%'";
const COUNT_VERIFY: &str = "SELECT COUNT(*) FROM mail_outbox \
    WHERE recipient = $1 AND subject LIKE '%Confirm your email address%'";

/// One row to age for the purge: `sql` sets its timestamps from `$1` (a Unix ms time) for the
/// row named by `$2`; `kept` says whether the purge must leave it.
struct Aged {
    what: &'static str,
    set: &'static str,
    count: &'static str,
    key: String,
    at: i64,
    kept: bool,
}

/// The purge (README, Housekeeping) deletes, for every table it touches, exactly the rows that
/// ended more than their retention before now: a row that ended at the retention's edge stays,
/// 1 ms earlier it goes. Login attempts stay while their lock is in force, however old.
#[tokio::test]
async fn the_purge_keeps_each_table_to_the_millisecond_of_its_retention() {
    let app = spawn_app_with(&[("PURGE_INTERVAL_SECONDS", "1")]).await;
    let t0 = freeze_clock(&app);
    // The purge will run at `now`; nothing set up below is old enough before it.
    let now = t0 + 3 * DAY;
    let cut = now - DAY;
    let mail_cut = now - 7 * DAY;
    let far = (now + 30 * DAY).to_string();

    // Real rows of every kind, made by the server: two accounts (sessions, verification and
    // reset tokens, mail and its throttles and quota), and failed logins at four addresses.
    let users: Vec<String> = (0..2).map(|_| unique_email()).collect();
    let mut sessions = Vec::new();
    for email in &users {
        app.register(email, PASSWORD, "Purge").await;
        app.post_json("/password-reset/request", &json!({"email": email}))
            .await;
        for _ in 0..3 {
            sessions.push(
                claims_of(&app.login_ok(email).await.access)["sid"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            );
        }
    }
    let live = app.login_ok(&users[0]).await;
    let attempts: Vec<String> = (0..4).map(|_| unique_email()).collect();
    for email in &attempts {
        app.login(email, "no such account here").await;
    }
    for email in &users {
        app.wait_count(
            "SELECT COUNT(*) FROM mail_outbox WHERE recipient = $1 AND sent_at IS NOT NULL",
            email,
            |n| n >= 2,
        )
        .await;
    }
    let u0 = app
        .sql
        .text("SELECT id FROM users WHERE email = $1", &users[0])
        .await;
    let u1 = app
        .sql
        .text("SELECT id FROM users WHERE email = $1", &users[1])
        .await;

    let edge = |kept: bool, base: i64| if kept { base } else { base - 1 };
    let mut rows = Vec::new();
    for (i, (column, set)) in [
        (
            "sessions.revoked_at",
            "UPDATE sessions SET revoked_at = CAST($1 AS BIGINT) WHERE id = $2",
        ),
        (
            "sessions.refresh_expires_at",
            "UPDATE sessions SET refresh_expires_at = CAST($1 AS BIGINT) WHERE id = $2",
        ),
        (
            "sessions.expires_at",
            "UPDATE sessions SET expires_at = CAST($1 AS BIGINT) WHERE id = $2",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        for kept in [true, false] {
            rows.push(Aged {
                what: column,
                set,
                count: "SELECT COUNT(*) FROM sessions WHERE id = $1",
                key: sessions[2 * i + usize::from(!kept)].clone(),
                at: edge(kept, cut),
                kept,
            });
        }
    }
    // Tokens: the used_at pair on account 0 (reset, verification), the expires_at pair on 1.
    for (user, purpose, kept) in [(&u0, "password_reset", true), (&u0, "verify_email", false)] {
        rows.push(Aged {
            what: "one_time_tokens.used_at",
            set: "UPDATE one_time_tokens SET used_at = CAST($1 AS BIGINT) WHERE user_id || ':' || purpose = $2",
            count: "SELECT COUNT(*) FROM one_time_tokens WHERE user_id || ':' || purpose = $1",
            key: format!("{user}:{purpose}"),
            at: edge(kept, cut),
            kept,
        });
    }
    for (user, purpose, kept) in [(&u1, "password_reset", true), (&u1, "verify_email", false)] {
        rows.push(Aged {
            what: "one_time_tokens.expires_at",
            set: "UPDATE one_time_tokens SET expires_at = CAST($1 AS BIGINT) WHERE user_id || ':' || purpose = $2",
            count: "SELECT COUNT(*) FROM one_time_tokens WHERE user_id || ':' || purpose = $1",
            key: format!("{user}:{purpose}"),
            at: edge(kept, cut),
            kept,
        });
    }
    // Mail: a week. The sent pair is account 0's two mails, the failed pair account 1's.
    for (email, set, count, kept) in [
        (&users[0], SENT_RESET, COUNT_RESET, true),
        (&users[0], SENT_VERIFY, COUNT_VERIFY, false),
        (&users[1], FAILED_RESET, COUNT_RESET, true),
        (&users[1], FAILED_VERIFY, COUNT_VERIFY, false),
    ] {
        rows.push(Aged {
            what: if set.contains("failed_at") {
                "mail_outbox.failed_at"
            } else {
                "mail_outbox.sent_at"
            },
            set,
            count,
            key: email.to_string(),
            at: edge(kept, mail_cut),
            kept,
        });
    }
    // Per-address mail throttles (the registration mails) and per-account quotas.
    for (email, kept) in [(&users[0], true), (&users[1], false)] {
        rows.push(Aged {
            what: "mail_throttle.last_sent_at",
            set: "UPDATE mail_throttle SET last_sent_at = CAST($1 AS BIGINT) WHERE throttle_key = $2",
            count: "SELECT COUNT(*) FROM mail_throttle WHERE throttle_key = $1",
            key: format!("register:{email}"),
            at: edge(kept, cut),
            kept,
        });
    }
    for (user, kept) in [(&u0, true), (&u1, false)] {
        rows.push(Aged {
            what: "mail_quota.window_start",
            set: "UPDATE mail_quota SET window_start = CAST($1 AS BIGINT) WHERE user_id = $2",
            count: "SELECT COUNT(*) FROM mail_quota WHERE user_id = $1",
            key: user.to_string(),
            at: edge(kept, cut),
            kept,
        });
    }
    // Failed logins: by their last attempt, unless a lock is still in force at `now`.
    for (i, kept) in [(0, true), (1, false)] {
        rows.push(Aged {
            what: "login_attempts.updated_at",
            set: "UPDATE login_attempts SET locked_until = NULL, updated_at = CAST($1 AS BIGINT) WHERE email = $2",
            count: "SELECT COUNT(*) FROM login_attempts WHERE email = $1",
            key: attempts[i].clone(),
            at: edge(kept, cut),
            kept,
        });
    }
    for (i, kept, until) in [(2, true, now + 1), (3, false, now)] {
        rows.push(Aged {
            what: "login_attempts.locked_until (a day-old attempt)",
            set: "UPDATE login_attempts SET updated_at = 0, locked_until = CAST($1 AS BIGINT) WHERE email = $2",
            count: "SELECT COUNT(*) FROM login_attempts WHERE email = $1",
            key: attempts[i].clone(),
            at: until,
            kept,
        });
    }
    // Logins waiting for their second factor: by their expiry (the rows are written here: the
    // purge reads only `expires_at`).
    for (i, kept) in [(0, true), (1, false)] {
        let token_hash = format!("purge-challenge-{i}-{}", unique_email());
        app.execute2(
            "INSERT INTO mfa_challenges (token_hash, user_id, user_stamp, created_at, expires_at) \
             VALUES ($1, $2, 0, 0, 0)",
            &token_hash,
            &u0,
        )
        .await;
        rows.push(Aged {
            what: "mfa_challenges.expires_at",
            set: "UPDATE mfa_challenges SET expires_at = CAST($1 AS BIGINT) WHERE token_hash = $2",
            count: "SELECT COUNT(*) FROM mfa_challenges WHERE token_hash = $1",
            key: token_hash,
            at: edge(kept, cut),
            kept,
        });
    }
    // The rows' other end-times are set far ahead, so that each row is judged by one column.
    for (i, sid) in sessions.iter().enumerate() {
        let keep = match i / 2 {
            0 => {
                "UPDATE sessions SET refresh_expires_at = CAST($1 AS BIGINT), expires_at = CAST($1 AS BIGINT) WHERE id = $2"
            }
            1 => "UPDATE sessions SET expires_at = CAST($1 AS BIGINT) WHERE id = $2",
            _ => "UPDATE sessions SET refresh_expires_at = CAST($1 AS BIGINT) WHERE id = $2",
        };
        app.execute2(keep, &far, sid).await;
    }
    app.execute2(
        "UPDATE one_time_tokens SET expires_at = CAST($1 AS BIGINT) WHERE user_id = $2",
        &far,
        &u0,
    )
    .await;
    for row in &rows {
        app.sql
            .execute2(row.set, &row.at.to_string(), &row.key)
            .await;
        assert_eq!(
            app.sql.count(row.count, &row.key).await,
            1,
            "{} set up",
            row.what
        );
    }

    // The purge runs every second; move the clock, and wait for it to have taken what it must.
    app.clock.set_ms(now);
    let (app, rows) = (&app, &rows);
    eventually(
        "the purge of every row past its edge",
        WAIT,
        || async move {
            let mut left = Vec::new();
            for row in rows.iter().filter(|r| !r.kept) {
                if app.sql.count(row.count, &row.key).await > 0 {
                    left.push(row.what);
                }
            }
            left
        },
        Vec::is_empty,
    )
    .await;
    for row in rows.iter().filter(|r| r.kept) {
        assert_eq!(
            app.sql.count(row.count, &row.key).await,
            1,
            "{} at its edge was purged",
            row.what
        );
    }
    // The session nobody touched is live: it refreshes (its access token is long expired).
    assert_eq!(app.refresh(&live.refresh).await.status(), StatusCode::OK);
}
