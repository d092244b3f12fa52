//! Attacks on credential changes and on the abuse limits: each test tries to break one rule.
//!
//! "The credentials changed" (email, password, active flag, superuser flag; by the user, a
//! reset or an administrator) kills every outstanding reset and verification link, and every
//! login or refresh still in flight; a link never resets or verifies an address it was not
//! mailed to. Password checks are counted before they are made. Mail an account can cause is
//! limited per account as well as per address.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;
use crate::smtp::{RESET, SmtpSink, VERIFY, WAIT, app_with_mail};

const NEW_PASSWORD: &str = "a brand new passphrase";

/// Asks for a reset of `email` and returns the token of the link that arrives.
async fn reset_link(app: &TestApp, sink: &SmtpSink, email: &str) -> String {
    let before = sink.mails_to(email, RESET).len();
    let response = app
        .post_json("/password-reset/request", &json!({"email": email}))
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    sink.wait_for(email, RESET, before + 1, WAIT).await[before]
        .link_token("/reset-password")
        .unwrap()
}

async fn put_me(app: &TestApp, access: &str, body: &Value) -> reqwest::Response {
    app.client
        .put(app.url("/me"))
        .bearer_auth(access)
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn change_email(app: &TestApp, access: &str, email: &str) -> reqwest::Response {
    put_me(
        app,
        access,
        &json!({"email": email, "current_password": PASSWORD}),
    )
    .await
}

async fn change_password(app: &TestApp, access: &str, current: &str) -> reqwest::Response {
    app.change_password(access, current, NEW_PASSWORD).await
}

async fn admin_patch(app: &TestApp, admin: &str, id: &str, body: &Value) -> reqwest::Response {
    app.client
        .patch(app.url(&format!("/users/{id}")))
        .bearer_auth(admin)
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn me(app: &TestApp, access: &str) -> Value {
    let response = app.me(access).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

/// The takeover the issue opens with: a reset asked for at the attacker's own address, the
/// email changed to the victim's, then the reset confirmed. The link is dead; the victim's
/// address is not verified.
#[tokio::test]
async fn a_reset_link_dies_when_the_email_changes() {
    let sink = SmtpSink::start().await;
    let app = app_with_mail(&sink, &[]).await;
    let attacker = unique_email();
    let victim = unique_email();
    let (_, tokens) = app.signed_up(&attacker).await;
    let link = reset_link(&app, &sink, &attacker).await;
    assert_eq!(
        change_email(&app, &tokens.access, &victim).await.status(),
        StatusCode::OK
    );
    assert_problem(
        app.confirm_reset(&link, NEW_PASSWORD).await,
        400,
        "INVALID_TOKEN",
    )
    .await;
    let user = me(&app, &tokens.access).await;
    assert_eq!(user["email"], victim);
    assert_eq!(user["is_verified"], false);
    // The password is unchanged.
    app.login_ok(&victim).await;

    // A second change, back to the attacker's own address, does not revive the link.
    assert_eq!(
        change_email(&app, &tokens.access, &attacker).await.status(),
        StatusCode::OK
    );
    assert_problem(
        app.confirm_reset(&link, NEW_PASSWORD).await,
        400,
        "INVALID_TOKEN",
    )
    .await;
    assert_eq!(me(&app, &tokens.access).await["is_verified"], false);
}

/// A verification link mailed to the attacker's own address cannot verify the victim's.
#[tokio::test]
async fn a_verification_link_dies_when_the_email_changes_and_back() {
    let sink = SmtpSink::start().await;
    let app = app_with_mail(&sink, &[]).await;
    let attacker = unique_email();
    let victim = unique_email();
    let (_, tokens) = app.signed_up(&attacker).await;
    let link = sink.wait_for(&attacker, VERIFY, 1, WAIT).await[0]
        .link_token("/verify-email")
        .unwrap();
    assert_eq!(
        change_email(&app, &tokens.access, &victim).await.status(),
        StatusCode::OK
    );
    assert_problem(
        app.post_json("/verify/confirm", &json!({"token": link}))
            .await,
        400,
        "INVALID_TOKEN",
    )
    .await;
    // Back to the address the link went to: still dead (the stamp moved twice).
    assert_eq!(
        change_email(&app, &tokens.access, &attacker).await.status(),
        StatusCode::OK
    );
    assert_problem(
        app.post_json("/verify/confirm", &json!({"token": link}))
            .await,
        400,
        "INVALID_TOKEN",
    )
    .await;
    assert_eq!(me(&app, &tokens.access).await["is_verified"], false);
}

/// A password change kills outstanding reset and verification links.
#[tokio::test]
async fn links_die_when_the_password_changes() {
    let sink = SmtpSink::start().await;
    let app = app_with_mail(&sink, &[]).await;
    let email = unique_email();
    let (_, tokens) = app.signed_up(&email).await;
    let verify = sink.wait_for(&email, VERIFY, 1, WAIT).await[0]
        .link_token("/verify-email")
        .unwrap();
    let reset = reset_link(&app, &sink, &email).await;
    assert_eq!(
        change_password(&app, &tokens.access, PASSWORD)
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    assert_problem(
        app.confirm_reset(&reset, "yet another passphrase").await,
        400,
        "INVALID_TOKEN",
    )
    .await;
    assert_problem(
        app.post_json("/verify/confirm", &json!({"token": verify}))
            .await,
        400,
        "INVALID_TOKEN",
    )
    .await;
    // The session that changed the password goes on; the new password is the one.
    assert_eq!(me(&app, &tokens.access).await["is_verified"], false);
    app.login_ok_with(&email, NEW_PASSWORD).await;
    // A notice went to the address, with no link or token in it.
    let notice = sink
        .wait_for(&email, "password was changed", 1, WAIT)
        .await
        .remove(0);
    assert!(!notice.body().contains("token"), "{}", notice.body());
}

/// A completed reset kills the other outstanding links (and a reset is single-use).
#[tokio::test]
async fn a_reset_kills_the_other_links() {
    let sink = SmtpSink::start().await;
    let app = app_with_mail(&sink, &[("MAIL_RATE_LIMIT_SECONDS", "0")]).await;
    let email = unique_email();
    app.signed_up(&email).await;
    let verify = sink.wait_for(&email, VERIFY, 1, WAIT).await[0]
        .link_token("/verify-email")
        .unwrap();
    let reset = reset_link(&app, &sink, &email).await;
    assert_eq!(
        app.confirm_reset(&reset, NEW_PASSWORD).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_problem(
        app.post_json("/verify/confirm", &json!({"token": verify}))
            .await,
        400,
        "INVALID_TOKEN",
    )
    .await;
    sink.wait_for(&email, "password was changed", 1, WAIT).await;
}

/// An administrator's change of email, active flag or superuser flag kills outstanding links;
/// a change of name does not.
#[tokio::test]
async fn links_die_when_an_administrator_changes_the_credentials() {
    let sink = SmtpSink::start().await;
    let app = app_with_mail(&sink, &[("MAIL_RATE_LIMIT_SECONDS", "0")]).await;
    let (_, admin) = app.superuser().await;
    for change in [
        json!({"email": unique_email()}),
        json!({"is_superuser": true}),
        json!({"is_active": false}),
    ] {
        let email = unique_email();
        let (user, tokens) = app.signed_up(&email).await;
        let id = user["id"].as_str().unwrap();
        let link = reset_link(&app, &sink, &email).await;
        // A harmless change first: the link survives it.
        let renamed = admin_patch(&app, &admin.access, id, &json!({"name": "Renamed"})).await;
        assert_eq!(renamed.status(), StatusCode::OK);
        let patched = admin_patch(&app, &admin.access, id, &change).await;
        assert_eq!(patched.status(), StatusCode::OK, "{change}");
        assert_problem(
            app.confirm_reset(&link, NEW_PASSWORD).await,
            400,
            "INVALID_TOKEN",
        )
        .await;
        if change.get("is_active").is_none() {
            // The account's sessions go on (only its links and logins in flight die).
            assert_eq!(
                app.me(&tokens.access).await.status(),
                StatusCode::OK,
                "{change}"
            );
            assert_eq!(app.refresh(&tokens.refresh).await.status(), StatusCode::OK);
        }
    }
    // The control: without a credential change the link works.
    let email = unique_email();
    let (user, _) = app.signed_up(&email).await;
    let link = reset_link(&app, &sink, &email).await;
    let id = user["id"].as_str().unwrap();
    admin_patch(&app, &admin.access, id, &json!({"name": "Only a name"})).await;
    assert_eq!(
        app.confirm_reset(&link, NEW_PASSWORD).await.status(),
        StatusCode::NO_CONTENT
    );
}

/// Logins that are checking the old password while it changes never yield a live session, and
/// refreshes racing the change neither: after it, every token they returned is dead.
#[tokio::test]
async fn logins_and_refreshes_racing_a_password_change_yield_nothing_live() {
    // Hashes slow enough that the change (a check and a hash) overlaps the logins' checks.
    let app = spawn_app_with(&[
        ("ARGON2_MEMORY_KIB", "16384"),
        ("ARGON2_ITERATIONS", "2"),
        ("LOGIN_FREE_ATTEMPTS", "1000"),
    ])
    .await;
    let email = unique_email();
    let (_, changer) = app.signed_up(&email).await;
    let others: Vec<Tokens> = {
        let mut v = Vec::new();
        for _ in 0..6 {
            v.push(app.login_ok(&email).await);
        }
        v
    };
    let change = {
        let (client, url, access) = (
            app.client.clone(),
            app.url("/me/password"),
            changer.access.clone(),
        );
        tokio::spawn(async move {
            client
                .put(url)
                .bearer_auth(access)
                .json(&json!({"current_password": PASSWORD, "new_password": NEW_PASSWORD}))
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    let mut racers = Vec::new();
    for _ in 0..12 {
        let (client, url) = (app.client.clone(), app.url("/login"));
        let email = email.clone();
        racers.push(tokio::spawn(async move {
            let r = client
                .post(url)
                .json(&json!({"email": email, "password": PASSWORD}))
                .send()
                .await
                .unwrap();
            (r.status(), r.json::<Value>().await.unwrap())
        }));
    }
    let mut refreshes = Vec::new();
    for t in &others {
        let (client, url, refresh) = (app.client.clone(), app.url("/refresh"), t.refresh.clone());
        refreshes.push(tokio::spawn(async move {
            let r = client
                .post(url)
                .json(&json!({"refresh_token": refresh}))
                .send()
                .await
                .unwrap();
            (r.status(), r.json::<Value>().await.unwrap())
        }));
    }
    assert_eq!(change.await.unwrap(), StatusCode::NO_CONTENT);
    let mut issued: Vec<Tokens> = others.clone();
    for task in racers.into_iter().chain(refreshes) {
        let (status, body) = task.await.unwrap();
        if status == StatusCode::OK {
            issued.push(Tokens::from(body));
        } else {
            assert!(
                status == StatusCode::UNAUTHORIZED,
                "a racing request ended {status}: {body}"
            );
        }
    }
    for t in &issued {
        assert_problem(app.me(&t.access).await, 401, "UNAUTHORIZED").await;
        assert_problem(app.refresh(&t.refresh).await, 401, "INVALID_TOKEN").await;
    }
    // The session that made the change goes on; the old password opens nothing.
    assert_eq!(app.me(&changer.access).await.status(), StatusCode::OK);
    assert_problem(
        app.login(&email, PASSWORD).await,
        401,
        "INVALID_CREDENTIALS",
    )
    .await;
    let live = app.live_sessions(&changer.access).await;
    assert_eq!(live.as_array().unwrap().len(), 1, "{live}");
}

/// A login whose password was checked before an administrator changed the account opens no
/// session: the check is made against the credentials as read, and the session row is written
/// only if they are still the account's (here the change lands while the hash runs).
#[tokio::test]
async fn a_login_in_flight_across_an_admin_change_opens_nothing() {
    let app = spawn_app_with(&[
        ("ARGON2_MEMORY_KIB", "65536"),
        ("ARGON2_ITERATIONS", "3"),
        ("HASH_CONCURRENCY", "1"),
    ])
    .await;
    let (_, admin) = app.superuser().await;
    let email = unique_email();
    let (user, _) = app.signed_up(&email).await;
    let id = user["id"].as_str().unwrap().to_string();
    let mut opened = 0;
    let mut refused = 0;
    for superuser in [true, false, true, false] {
        let login = {
            let (client, url, email) = (app.client.clone(), app.url("/login"), email.clone());
            tokio::spawn(async move {
                let r = client
                    .post(url)
                    .json(&json!({"email": email, "password": PASSWORD}))
                    .send()
                    .await
                    .unwrap();
                (r.status(), r.json::<Value>().await.unwrap())
            })
        };
        // The attempt is counted before the account is read and the hash starts.
        until_attempt_counted(&app, &email).await;
        let patched = admin_patch(
            &app,
            &admin.access,
            &id,
            &json!({"is_superuser": superuser}),
        )
        .await;
        assert_eq!(patched.status(), StatusCode::OK);
        let (status, body) = login.await.unwrap();
        match status {
            StatusCode::OK => {
                // Read after the change: then it must be live, and under the new flag.
                opened += 1;
                let t = Tokens::from(body);
                assert_eq!(me(&app, &t.access).await["is_superuser"], superuser);
            }
            StatusCode::UNAUTHORIZED => {
                refused += 1;
                assert_eq!(body["code"], "INVALID_CREDENTIALS");
            }
            other => panic!("login ended {other}: {body}"),
        }
    }
    // The change lands inside a 100+ ms hash nearly every time.
    assert!(refused >= 1, "opened {opened}, refused {refused}");
    // The refused logins wrote no session row at all.
    let stale = app
        .count(
            "SELECT COUNT(*) FROM sessions s JOIN users u ON u.id = s.user_id \
             WHERE u.email = $1 AND s.user_stamp <> u.security_stamp",
            &email,
        )
        .await;
    assert_eq!(stale, 0);
}

/// Waits until a password check at `email` has been counted (the lockout counts each attempt
/// before the account is read and the hash starts).
async fn until_attempt_counted(app: &TestApp, email: &str) {
    app.wait_count(
        "SELECT COUNT(*) FROM login_attempts WHERE email = $1",
        email,
        |n| n == 1,
    )
    .await;
}

/// 40 wrong passwords sent at once to one address: at most LOGIN_FREE_ATTEMPTS are checked
/// (401), the rest are 429 with Retry-After; then even the right password waits out the lock.
#[tokio::test]
async fn concurrent_wrong_passwords_get_at_most_the_free_attempts() {
    // A first lock longer than the burst takes, however loaded the machine.
    let app = spawn_app_with(&[
        ("LOGIN_FREE_ATTEMPTS", "5"),
        ("LOGIN_LOCKOUT_FIRST_SECONDS", "30"),
    ])
    .await;
    let second = app.another_instance().await;
    let email = unique_email();
    app.signed_up(&email).await;
    let mut attempts = Vec::new();
    for i in 0..40 {
        // Half through each of two instances on one database.
        let target = if i % 2 == 0 { &app } else { &second };
        let (client, url, email) = (target.client.clone(), target.url("/login"), email.clone());
        attempts.push(async move {
            let r = client
                .post(url)
                .json(&json!({"email": email, "password": "wrong password guess"}))
                .send()
                .await
                .unwrap();
            let retry_after = r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
            (r.status(), retry_after)
        });
    }
    let outcomes = concurrently(attempts).await;
    let checked = outcomes
        .iter()
        .filter(|(s, _)| *s == StatusCode::UNAUTHORIZED)
        .count();
    let refused: Vec<_> = outcomes
        .iter()
        .filter(|(s, _)| *s == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    assert!(
        checked <= 5,
        "{checked} passwords were checked: {outcomes:?}"
    );
    assert_eq!(checked + refused.len(), 40, "{outcomes:?}");
    for (_, retry_after) in &refused {
        let seconds: u64 = retry_after
            .as_deref()
            .expect("Retry-After")
            .parse()
            .unwrap();
        assert!((1..=30).contains(&seconds), "{seconds}");
    }
    assert_problem(app.login(&email, PASSWORD).await, 429, "TOO_MANY_REQUESTS").await;
}

/// The current password that PUT /me, PUT /me/password and DELETE /me ask for is checked under
/// the same lockout as logins: guessing it through them locks the address for logins too.
#[tokio::test]
async fn wrong_current_passwords_count_in_the_lockout() {
    let app = spawn_app_with(&[
        ("LOGIN_FREE_ATTEMPTS", "3"),
        ("LOGIN_LOCKOUT_FIRST_SECONDS", "60"),
    ])
    .await;
    let email = unique_email();
    let (_, tokens) = app.signed_up(&email).await;
    let wrong = "not my password at all";
    assert_problem(
        put_me(
            &app,
            &tokens.access,
            &json!({"email": unique_email(), "current_password": wrong}),
        )
        .await,
        403,
        "INVALID_CREDENTIALS",
    )
    .await;
    assert_problem(
        change_password(&app, &tokens.access, wrong).await,
        403,
        "INVALID_CREDENTIALS",
    )
    .await;
    let delete = |password: &'static str| {
        app.client
            .delete(app.url("/me"))
            .bearer_auth(&tokens.access)
            .json(&json!({"password": password}))
            .send()
    };
    assert_problem(delete(wrong).await.unwrap(), 403, "INVALID_CREDENTIALS").await;
    // Three wrong checks: the address is locked, for every way in, the right password too.
    let locked = assert_problem(delete(PASSWORD).await.unwrap(), 429, "TOO_MANY_REQUESTS").await;
    assert!(locked["detail"].is_string());
    assert_problem(
        change_password(&app, &tokens.access, PASSWORD).await,
        429,
        "TOO_MANY_REQUESTS",
    )
    .await;
    assert_problem(app.login(&email, PASSWORD).await, 429, "TOO_MANY_REQUESTS").await;
    // Nothing was deleted or changed.
    assert_eq!(me(&app, &tokens.access).await["email"], email);
}

/// A right password resets the count, so that a user's own typos do not add up across days.
#[tokio::test]
async fn a_right_password_starts_the_count_afresh() {
    let app = spawn_app_with(&[("LOGIN_FREE_ATTEMPTS", "3")]).await;
    let email = unique_email();
    app.signed_up(&email).await;
    for _ in 0..3 {
        for _ in 0..2 {
            assert_problem(
                app.login(&email, "wrong password guess").await,
                401,
                "INVALID_CREDENTIALS",
            )
            .await;
        }
        app.login_ok(&email).await;
    }
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM login_attempts WHERE email = $1",
            &email
        )
        .await,
        0
    );
}

/// One account cannot spray verification mail at arbitrary addresses by changing its email:
/// past MAIL_ACCOUNT_LIMIT_PER_HOUR the change is refused with 429 and nothing changes.
#[tokio::test]
async fn email_changes_beyond_the_account_mail_limit_are_refused() {
    let sink = SmtpSink::start().await;
    let app = app_with_mail(&sink, &[("MAIL_ACCOUNT_LIMIT_PER_HOUR", "3")]).await;
    // The allowance is per clock hour: the test runs 10 minutes into one, by the server's clock.
    const HOUR_MS: i64 = 3_600_000;
    let hour = (app.clock.now_ms() / HOUR_MS + 1) * HOUR_MS;
    app.clock.set_ms(hour + 600_000);
    let email = unique_email();
    // Registration's mail counts: two changes remain.
    let (_, tokens) = app.signed_up(&email).await;
    let mut current = email.clone();
    let mut targets = Vec::new();
    for _ in 0..2 {
        let target = unique_email();
        assert_eq!(
            change_email(&app, &tokens.access, &target).await.status(),
            StatusCode::OK
        );
        sink.wait_for(&target, VERIFY, 1, WAIT).await;
        // The old address hears of it, with no token in the notice.
        let notice = sink
            .wait_for(&current, "email address was changed", 1, WAIT)
            .await
            .remove(0);
        assert!(!notice.body().contains("token="), "{}", notice.body());
        current = target.clone();
        targets.push(target);
    }
    let victim = unique_email();
    let refused = change_email(&app, &tokens.access, &victim).await;
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(retry_after, 3000, "until the end of the hour");
    assert_problem(refused, 429, "TOO_MANY_REQUESTS").await;
    assert_eq!(me(&app, &tokens.access).await["email"], current);
    // Verification requests are quietly dropped too (same 202, no mail); a reset request is not
    // the account's to spend, and goes out (limited per address only).
    let r = app
        .client
        .post(app.url("/verify/request"))
        .bearer_auth(&tokens.access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = app
        .post_json("/password-reset/request", &json!({"email": current}))
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    // A name change needs no mail and still works.
    assert_eq!(
        put_me(&app, &tokens.access, &json!({"name": "Still Me"}))
            .await
            .status(),
        StatusCode::OK
    );
    // Once the outbox has drained: nothing went to the victim, and the current address got its
    // change's link and the reset, no second verification.
    sink.wait_for(&current, RESET, 1, WAIT).await;
    app.wait_count(
        "SELECT COUNT(*) FROM mail_outbox WHERE sent_at IS NULL AND recipient <> $1",
        "",
        |n| n == 0,
    )
    .await;
    assert!(sink.mails_to(&victim, "").is_empty());
    assert_eq!(sink.mails_to(&current, VERIFY).len(), 1);
}

/// Registering, deleting and registering again cannot spray one address with verification mail.
#[tokio::test]
async fn re_registering_one_address_mails_it_once_per_interval() {
    let sink = SmtpSink::start().await;
    let app = app_with_mail(&sink, &[]).await;
    let email = unique_email();
    for _ in 0..3 {
        let (_, tokens) = app.signed_up(&email).await;
        let deleted = app
            .client
            .delete(app.url("/me"))
            .bearer_auth(&tokens.access)
            .json(&json!({"password": PASSWORD}))
            .send()
            .await
            .unwrap();
        assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    }
    sink.wait_for(&email, VERIFY, 1, WAIT).await;
    // The outbox holds every mail there will be: one.
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM mail_outbox WHERE recipient = $1",
            &email
        )
        .await,
        1
    );
}

/// Visually identical addresses are one account: NFC and NFD, Unicode and IDNA ASCII domains.
#[tokio::test]
async fn visually_identical_addresses_are_one_account() {
    let app = spawn_app().await;
    let local = format!("u{}", uuid::Uuid::new_v4().simple());
    let composed = format!("{local}@b\u{fc}cher.example");
    let decomposed = format!("{local}@bu\u{308}cher.example");
    let ascii = format!("{local}@XN--BCHER-KVA.example");
    let created = app.register(&composed, PASSWORD, "Ana").await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let user: Value = created.json().await.unwrap();
    assert_eq!(user["email"], format!("{local}@xn--bcher-kva.example"));
    for variant in [&decomposed, &ascii] {
        assert_problem(
            app.register(variant, PASSWORD, "Mallory").await,
            409,
            "EMAIL_TAKEN",
        )
        .await;
        app.login_ok(variant).await;
    }
    // An email change to a variant of another account's address is taken too.
    let (_, other) = app.signed_up(&unique_email()).await;
    assert_problem(
        change_email(&app, &other.access, &decomposed).await,
        409,
        "EMAIL_TAKEN",
    )
    .await;
}

/// Admin search ignores case the same way on SQLite and PostgreSQL, beyond ASCII.
#[tokio::test]
async fn admin_search_folds_case_beyond_ascii() {
    let app = spawn_app().await;
    let (_, admin) = app.superuser().await;
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let name = format!("Émile Ça Ödön {tag}");
    assert_eq!(
        app.register(&unique_email(), PASSWORD, &name)
            .await
            .status(),
        StatusCode::CREATED
    );
    for q in [
        format!("ÉMILE ÇA ÖDÖN {tag}"),
        format!("émile ça ödön {}", tag.to_uppercase()),
        "e\u{301}mile".to_string(),
    ] {
        let page: Value = app
            .client
            .get(app.url(&format!(
                "/users?q={}",
                url::form_urlencoded::byte_serialize(q.as_bytes()).collect::<String>()
            )))
            .bearer_auth(&admin.access)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(page["total"], 1, "{q}: {page}");
        assert_eq!(page["items"][0]["name"], name);
    }
}

/// Reset requests, which anyone can make for any address, do not spend the account's mail
/// allowance: a stranger cannot use it up to block the owner's email change.
#[tokio::test]
async fn strangers_cannot_spend_an_accounts_mail_allowance() {
    let sink = SmtpSink::start().await;
    let app = app_with_mail(
        &sink,
        &[
            ("MAIL_ACCOUNT_LIMIT_PER_HOUR", "2"),
            ("MAIL_RATE_LIMIT_SECONDS", "0"),
        ],
    )
    .await;
    let email = unique_email();
    let (_, tokens) = app.signed_up(&email).await;
    for i in 1..=4 {
        reset_link(&app, &sink, &email).await;
        assert_eq!(sink.mails_to(&email, RESET).len(), i);
    }
    // Registration spent one of two: the owner's change still fits.
    let target = unique_email();
    assert_eq!(
        change_email(&app, &tokens.access, &target).await.status(),
        StatusCode::OK
    );
    sink.wait_for(&target, VERIFY, 1, WAIT).await;
}

/// A session revoked while its DELETE /me is checking the password deletes nothing.
#[tokio::test]
async fn a_session_revoked_mid_request_cannot_delete_the_account() {
    let app = spawn_app_with(&[
        ("ARGON2_MEMORY_KIB", "65536"),
        ("ARGON2_ITERATIONS", "3"),
        ("HASH_CONCURRENCY", "1"),
    ])
    .await;
    let email = unique_email();
    let (_, owner) = app.signed_up(&email).await;
    let thief = app.login_ok(&email).await;
    let thief_session = app
        .live_sessions(&thief.access)
        .await
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["current"] == true)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let delete = {
        let (client, url, access) = (app.client.clone(), app.url("/me"), thief.access.clone());
        tokio::spawn(async move {
            let r = client
                .delete(url)
                .bearer_auth(access)
                .json(&json!({"password": PASSWORD}))
                .send()
                .await
                .unwrap();
            (r.status(), r.json::<Value>().await.unwrap_or_default())
        })
    };
    // The password check has begun (its attempt is counted first); the owner revokes the thief.
    until_attempt_counted(&app, &email).await;
    let revoked = app
        .client
        .delete(app.url(&format!("/me/sessions/{thief_session}")))
        .bearer_auth(&owner.access)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), StatusCode::NO_CONTENT);
    let (status, body) = delete.await.unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(me(&app, &owner.access).await["email"], email);
}

/// Control characters in what a client sends (NUL, which PostgreSQL text cannot hold) are a
/// client mistake, never a 500.
#[tokio::test]
async fn nul_bytes_in_logins_and_searches_are_not_server_errors() {
    let app = spawn_app().await;
    assert_problem(
        app.login("a\u{0}b@example.com", PASSWORD).await,
        401,
        "INVALID_CREDENTIALS",
    )
    .await;
    let (_, admin) = app.superuser().await;
    let page = app
        .client
        .get(app.url("/users?q=%00x"))
        .bearer_auth(&admin.access)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
}

/// Admin search finds an internationalised domain by its Unicode form too.
#[tokio::test]
async fn admin_search_finds_internationalised_domains() {
    let app = spawn_app().await;
    let (_, admin) = app.superuser().await;
    let domain = format!("b\u{fc}cher-{}.example", uuid::Uuid::new_v4().simple());
    let created = app
        .register(&format!("ana@{domain}"), PASSWORD, "Ana")
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let page: Value = app
        .client
        .get(app.url(&format!(
                "/users?q={}",
                url::form_urlencoded::byte_serialize(domain.to_uppercase().as_bytes())
                    .collect::<String>()
            )))
        .bearer_auth(&admin.access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["total"], 1, "{page}");
}
