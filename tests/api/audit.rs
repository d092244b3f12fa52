//! The security audit trail: each event written by the action that causes it (and nothing else),
//! in the change's transaction, with the request's origin and never a secret; read by the right
//! people only (GET /me/events, GET /events, GET /users/{id}/events), filtered and paged; its log
//! line; its retention.
//!
//! The events are read the way a superuser reads them (GET /events, every field): [`Trail`]
//! remembers what it has seen, so that each action is checked to add exactly its own events.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::*;
use crate::mfa::*;
use crate::passkeys::{delete_passkey, holder, passwordless, sign_in};
use crate::smtp::{RESET, SmtpSink, VERIFY, WAIT, app_with_mail};

/// The user agent of every request of these tests (checked on the events).
pub const UA: &str = "audit-test/1.0";
pub const NEW_PASS: &str = "a fresh passphrase for the audit trail";
const DAY_MS: i64 = 86_400_000;

/// The server with `extra` settings, and a client that says [`UA`].
pub async fn audited_app(extra: &[(&str, &str)]) -> TestApp {
    let mut app = spawn_app_with(extra).await;
    app.client = reqwest::Client::builder()
        .user_agent(UA)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    app
}

/// GET `path` with a bearer token.
pub async fn get(app: &TestApp, access: &str, path: &str) -> reqwest::Response {
    bare(app, Method::GET, path, access).await
}

/// The 200 JSON of GET `path`.
pub async fn get_ok(app: &TestApp, access: &str, path: &str) -> Value {
    let response = get(app, access, path).await;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
    body
}

/// Every event of a listing at `path` (a query string of its own or none), newest first, read
/// page by page (`limit` 200) through the cursors.
pub async fn read_all(app: &TestApp, access: &str, path: &str) -> Vec<Value> {
    let separator = if path.contains('?') { '&' } else { '?' };
    let mut events = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page_path = match &cursor {
            Some(c) => format!("{path}{separator}limit=200&cursor={c}"),
            None => format!("{path}{separator}limit=200"),
        };
        let page = get_ok(app, access, &page_path).await;
        events.extend(page["events"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return events,
        }
    }
}

/// The id of a user of a `UserResponse` (or of `/me`).
pub fn id_of(user: &Value) -> String {
    user["id"].as_str().unwrap().to_string()
}

/// The session id of a token pair.
pub fn sid(tokens: &Tokens) -> String {
    claims_of(&tokens.access)["sid"]
        .as_str()
        .unwrap()
        .to_string()
}

/// What an event must be. `detail` holds every key the event's detail has, exactly; a value
/// `"*"` takes any value.
#[derive(Clone, Debug)]
pub struct Expect {
    pub kind: &'static str,
    pub user: Option<String>,
    /// `self`, `administrator`, `system` or `anonymous`.
    pub actor: &'static str,
    pub actor_id: Option<String>,
    /// `Some("*")`: any session.
    pub session: Option<String>,
    /// Made by a request of these tests: its address and user agent are on it.
    pub origin: bool,
    pub detail: Value,
}

impl Expect {
    /// Done by the account `user` itself, from its session `session`.
    pub fn own(kind: &'static str, user: &str, session: Option<&str>, detail: Value) -> Self {
        Self {
            kind,
            user: Some(user.to_string()),
            actor: "self",
            actor_id: Some(user.to_string()),
            session: session.map(str::to_string),
            origin: true,
            detail,
        }
    }

    /// Done to `user` by the superuser `admin` from its session `session`.
    pub fn admin(
        kind: &'static str,
        user: &str,
        admin: &str,
        session: &str,
        detail: Value,
    ) -> Self {
        Self {
            kind,
            user: Some(user.to_string()),
            actor: "administrator",
            actor_id: Some(admin.to_string()),
            session: Some(session.to_string()),
            origin: true,
            detail,
        }
    }

    /// About `user` (if known), by nobody signed in, from a request.
    pub fn anonymous(kind: &'static str, user: Option<&str>, detail: Value) -> Self {
        Self {
            kind,
            user: user.map(str::to_string),
            actor: "anonymous",
            actor_id: None,
            session: None,
            origin: true,
            detail,
        }
    }

    pub fn session(mut self, session: &str) -> Self {
        self.session = Some(session.to_string());
        self
    }

    /// Asserts that `event` is this (`what` names it in the failure).
    pub fn check(&self, event: &Value) {
        let what = format!("{} in {event:#}", self.kind);
        assert_eq!(event["type"], self.kind, "{what}");
        assert_eq!(
            event["user_id"].as_str(),
            self.user.as_deref(),
            "user of {what}"
        );
        assert_eq!(event["actor"], self.actor, "actor of {what}");
        assert_eq!(
            event["actor_id"].as_str(),
            self.actor_id.as_deref(),
            "actor_id of {what}"
        );
        match self.session.as_deref() {
            Some("*") => assert!(event["session_id"].is_string(), "session of {what}"),
            session => assert_eq!(event["session_id"].as_str(), session, "session of {what}"),
        }
        if self.origin {
            assert_eq!(event["ip"], "127.0.0.1", "ip of {what}");
            assert_eq!(event["user_agent"], UA, "user agent of {what}");
        } else {
            assert!(event["ip"].is_null(), "no ip on {what}");
            assert!(event["user_agent"].is_null(), "no user agent on {what}");
        }
        let detail = event["detail"].as_object().expect("detail is an object");
        let expected = self.detail.as_object().expect("an expected detail object");
        let keys: BTreeSet<&String> = detail.keys().collect();
        let expected_keys: BTreeSet<&String> = expected.keys().collect();
        assert_eq!(keys, expected_keys, "detail keys of {what}");
        for (key, value) in expected {
            if value != "*" {
                assert_eq!(&detail[key], value, "detail.{key} of {what}");
            }
        }
        assert!(event["id"].is_string() && event["at"].is_string(), "{what}");
        ms_of(&event["at"]);
    }
}

/// The events of the whole server as a superuser reads them, and what has been seen of them.
pub struct Trail<'a> {
    app: &'a TestApp,
    admin: String,
    seen: HashSet<String>,
}

impl<'a> Trail<'a> {
    /// Reading with the superuser's access token `admin`; everything so far counts as seen.
    pub async fn new(app: &'a TestApp, admin: &str) -> Self {
        let mut trail = Self {
            app,
            admin: admin.to_string(),
            seen: HashSet::new(),
        };
        trail.fresh().await;
        trail
    }

    /// Every event, newest first.
    pub async fn all(&self) -> Vec<Value> {
        read_all(self.app, &self.admin, "/events").await
    }

    /// The events not seen before, oldest first; they are seen now.
    pub async fn fresh(&mut self) -> Vec<Value> {
        let mut fresh: Vec<Value> = self
            .all()
            .await
            .into_iter()
            .filter(|e| !self.seen.contains(e["id"].as_str().unwrap()))
            .collect();
        fresh.reverse();
        for event in &fresh {
            self.seen.insert(event["id"].as_str().unwrap().to_string());
        }
        fresh
    }

    /// Asserts that the events since the last look are exactly `expected`, in order.
    pub async fn expect(&mut self, action: &str, expected: &[Expect]) -> Vec<Value> {
        let fresh = self.fresh().await;
        let kinds: Vec<&str> = fresh.iter().map(|e| e["type"].as_str().unwrap()).collect();
        let wanted: Vec<&str> = expected.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, wanted, "the events of {action}: {fresh:#?}");
        for (event, expected) in fresh.iter().zip(expected) {
            expected.check(event);
        }
        fresh
    }

    /// As [`Trail::expect`], for an action whose work goes on after its answer: waits (up to
    /// 10 s) for as many events as expected.
    pub async fn expect_soon(&mut self, action: &str, expected: &[Expect]) -> Vec<Value> {
        let mut fresh = Vec::new();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while fresh.len() < expected.len() {
            fresh.extend(self.fresh().await);
            assert!(
                tokio::time::Instant::now() < deadline,
                "the events of {action} did not come: {fresh:#?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let kinds: Vec<&str> = fresh.iter().map(|e| e["type"].as_str().unwrap()).collect();
        let wanted: Vec<&str> = expected.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, wanted, "the events of {action}: {fresh:#?}");
        for (event, expected) in fresh.iter().zip(expected) {
            expected.check(event);
        }
        fresh
    }
}

/// Asserts that no event's detail holds any of `secrets`.
pub fn assert_no_secret(events: &[Value], secrets: &[String]) {
    for event in events {
        let text = event["detail"].to_string();
        for secret in secrets.iter().filter(|s| !s.is_empty()) {
            assert!(
                !text.contains(secret.as_str()),
                "a secret ({secret}) in the detail of {event:#}"
            );
        }
    }
}

/// The server with `extra` settings, mailing to `sink`, and a client that says [`UA`].
pub async fn audited_mail_app(sink: &SmtpSink, extra: &[(&str, &str)]) -> TestApp {
    let mut app = app_with_mail(sink, extra).await;
    app.client = reqwest::Client::builder()
        .user_agent(UA)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    app
}

/// The link token of the `count`th mail to `to` whose subject is `subject` ([`RESET`] or
/// [`VERIFY`]), once it has arrived.
pub async fn mailed_token(sink: &SmtpSink, to: &str, subject: &str, count: usize) -> String {
    let path = if subject == RESET {
        "/reset-password"
    } else {
        "/verify-email"
    };
    let mails = sink.wait_for(to, subject, count, WAIT).await;
    mails[count - 1]
        .link_token(path)
        .expect("a link with a token")
}

/// PUT /me with `body`.
async fn put_me(app: &TestApp, access: &str, body: &Value) -> reqwest::Response {
    call(app, Method::PUT, "/me", access, body).await
}

// ---------------------------------------------------------------------------------------------
// Each event, by the action that causes it.

#[tokio::test]
async fn registration_records_user_created_with_the_clients_address() {
    let app = audited_app(&[]).await;
    let (_, admin) = app.superuser().await;
    let mut trail = Trail::new(&app, &admin.access).await;
    let email = unique_email();
    let response = app.register(&email, "correct horse battery", "Ada").await;
    assert_eq!(response.status(), 201);
    let user = id_of(&response.json().await.unwrap());
    trail
        .expect(
            "a registration",
            &[Expect::own(
                "user.created",
                &user,
                None,
                json!({"via": "registration"}),
            )],
        )
        .await;
}

/// Signing in and out, and the failures, with the account only when it is known.
#[tokio::test]
async fn sign_ins_sign_outs_and_session_events() {
    let app = audited_app(&[("LOGIN_FREE_ATTEMPTS", "2")]).await;
    freeze_clock(&app);
    let (_, admin) = app.superuser().await;
    let email = unique_email();
    let user = id_of(
        &app.register(&email, PASSWORD, "Sign In")
            .await
            .json()
            .await
            .unwrap(),
    );
    let mut trail = Trail::new(&app, &admin.access).await;
    let mut secrets = vec![PASSWORD.to_string(), WRONG_PASSWORD.to_string()];

    // A wrong password at a known address, then at an unknown one: the same event but for
    // `user`.
    assert_problem(
        app.login(&email, WRONG_PASSWORD).await,
        401,
        "INVALID_CREDENTIALS",
    )
    .await;
    let failed = json!({"method": "password", "reason": "invalid_credentials"});
    trail
        .expect(
            "a wrong password",
            &[Expect::anonymous(
                "user.sign_in_failed",
                Some(&user),
                failed.clone(),
            )],
        )
        .await;
    let nobody = unique_email();
    assert_problem(
        app.login(&nobody, WRONG_PASSWORD).await,
        401,
        "INVALID_CREDENTIALS",
    )
    .await;
    trail
        .expect(
            "an unknown address",
            &[Expect::anonymous(
                "user.sign_in_failed",
                None,
                failed.clone(),
            )],
        )
        .await;

    // A success.
    let first = app.login_ok(&email).await;
    secrets.extend([first.access.clone(), first.refresh.clone()]);
    let signed_in = json!({"method": "password", "amr": ["pwd"]});
    trail
        .expect(
            "a sign-in",
            &[Expect::own(
                "user.signed_in",
                &user,
                Some(&sid(&first)),
                signed_in.clone(),
            )],
        )
        .await;

    // The user revokes another of its sessions.
    let second = app.login_ok(&email).await;
    trail.fresh().await;
    let response = bare(
        &app,
        Method::DELETE,
        &format!("/me/sessions/{}", sid(&second)),
        &first.access,
    )
    .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    trail
        .expect(
            "a session revoked by its user",
            &[Expect::own(
                "session.revoked",
                &user,
                Some(&sid(&first)),
                json!({"revoked_session_id": sid(&second)}),
            )],
        )
        .await;

    // A spent refresh token presented again: the session is revoked, by nobody signed in.
    let third = app.login_ok(&email).await;
    trail.fresh().await;
    let rotated: Value = app.refresh(&third.refresh).await.json().await.unwrap();
    let rotated = Tokens::from(rotated);
    assert_eq!(app.refresh(&rotated.refresh).await.status(), StatusCode::OK);
    trail.expect("two refreshes", &[]).await;
    assert_problem(app.refresh(&third.refresh).await, 401, "INVALID_TOKEN").await;
    trail
        .expect(
            "a refresh token reused",
            &[Expect::anonymous(
                "session.refresh_reuse_detected",
                Some(&user),
                json!({"via": "refresh"}),
            )
            .session(&sid(&third))],
        )
        .await;
    // The session is gone: its next reuse revokes nothing, and records nothing.
    assert_problem(app.refresh(&third.refresh).await, 401, "INVALID_TOKEN").await;
    trail.expect("a refresh of a revoked session", &[]).await;

    // Signing out: this session, then every other.
    let fourth = app.login_ok(&email).await;
    trail.fresh().await;
    assert_eq!(
        app.logout(&fourth.access, None).await.status(),
        StatusCode::NO_CONTENT
    );
    trail
        .expect(
            "a sign-out",
            &[Expect::own(
                "user.signed_out",
                &user,
                Some(&sid(&fourth)),
                json!({"scope": "local", "sessions_ended": 1}),
            )],
        )
        .await;
    app.login_ok(&email).await;
    trail.fresh().await;
    assert_eq!(
        app.logout(&first.access, Some("others")).await.status(),
        StatusCode::NO_CONTENT
    );
    trail
        .expect(
            "a sign-out of the others",
            &[Expect::own(
                "user.signed_out",
                &user,
                Some(&sid(&first)),
                json!({"scope": "others", "sessions_ended": 1}),
            )],
        )
        .await;

    // A locked address: the attempt that reaches the limit, then one while it is locked.
    assert_problem(
        app.login(&email, WRONG_PASSWORD).await,
        401,
        "INVALID_CREDENTIALS",
    )
    .await;
    assert_problem(
        app.login(&email, WRONG_PASSWORD).await,
        401,
        "INVALID_CREDENTIALS",
    )
    .await;
    trail.fresh().await;
    assert_problem(app.login(&email, PASSWORD).await, 429, "TOO_MANY_REQUESTS").await;
    let locked = json!({"method": "password", "reason": "locked"});
    trail
        .expect(
            "a locked address",
            &[Expect::anonymous(
                "user.sign_in_failed",
                Some(&user),
                locked.clone(),
            )],
        )
        .await;
    // Locked unknown addresses are recorded the same, with no account.
    for _ in 0..2 {
        app.login(&nobody, WRONG_PASSWORD).await;
    }
    trail.fresh().await;
    assert_problem(app.login(&nobody, PASSWORD).await, 429, "TOO_MANY_REQUESTS").await;
    trail
        .expect(
            "a locked unknown address",
            &[Expect::anonymous("user.sign_in_failed", None, locked)],
        )
        .await;

    // A deactivated account, with the right password.
    let other = unique_email();
    let other_id = id_of(
        &app.register(&other, PASSWORD, "Other")
            .await
            .json()
            .await
            .unwrap(),
    );
    app.execute(
        "UPDATE users SET is_active = FALSE WHERE email = $1",
        &other,
    )
    .await;
    trail.fresh().await;
    assert_problem(app.login(&other, PASSWORD).await, 403, "ACCOUNT_DISABLED").await;
    trail
        .expect(
            "a deactivated account",
            &[Expect::anonymous(
                "user.sign_in_failed",
                Some(&other_id),
                json!({"method": "password", "reason": "disabled"}),
            )],
        )
        .await;

    // A passkey the server does not know (any more: its account is gone).
    let mut stranger = holder(&app).await;
    let path = format!("/users/{}", stranger.id);
    let response = bare(&app, Method::DELETE, &path, &admin.access).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    trail.fresh().await;
    let options = crate::passkeys::usernameless_options(&app).await;
    let credential = stranger.passkey.get(&options).await;
    assert_problem(
        crate::passkeys::passkey_login(&app, &credential).await,
        401,
        "INVALID_PASSKEY",
    )
    .await;
    trail
        .expect(
            "an unknown passkey",
            &[Expect::anonymous(
                "user.sign_in_failed",
                None,
                json!({"method": "passkey", "reason": "invalid_passkey"}),
            )],
        )
        .await;

    assert_no_secret(&trail.all().await, &secrets);
}

/// The second factor: enrolment, a sign-in with each factor, a wrong code, recovery codes,
/// disabling.
#[tokio::test]
async fn second_factor_events() {
    let app = audited_app(&[]).await;
    freeze_clock(&app);
    let (_, admin) = app.superuser().await;
    let email = unique_email();
    let (me, session) = app.signed_up(&email).await;
    let user = id_of(&me);
    let mut trail = Trail::new(&app, &admin.access).await;

    let (secret, recovery) = enrol(&app, &session.access).await;
    let mut secrets = vec![PASSWORD.to_string(), secret.clone()];
    secrets.extend(recovery.iter().cloned());
    secrets.extend(recovery.iter().map(|c| c.replace('-', "")));
    trail
        .expect(
            "an enrolment",
            &[Expect::own(
                "mfa.enabled",
                &user,
                Some(&sid(&session)),
                json!({"method": "totp", "other_sessions_ended": 0}),
            )],
        )
        .await;

    // The password alone opens nothing and records nothing; a wrong code fails the sign-in.
    let token = challenge(&app, &email).await;
    secrets.push(token.clone());
    trail.expect("a password with a second factor", &[]).await;
    let wrong = wrong_code(&app, &secret);
    secrets.push(wrong.clone());
    assert_problem(
        with_code(&app, &token, &wrong).await,
        401,
        "INVALID_MFA_CODE",
    )
    .await;
    trail
        .expect(
            "a wrong code",
            &[Expect::anonymous(
                "user.sign_in_failed",
                Some(&user),
                json!({"method": "password", "second_factor": "totp", "reason": "invalid_code"}),
            )],
        )
        .await;
    let code = next_code(&app, &secret);
    secrets.push(code.clone());
    let totp = pair(with_code(&app, &token, &code).await).await;
    trail
        .expect(
            "a sign-in with a code",
            &[Expect::own(
                "user.signed_in",
                &user,
                Some(&sid(&totp)),
                json!({"method": "password", "second_factor": "totp", "amr": ["pwd", "otp", "mfa"]}),
            )],
        )
        .await;
    // A token that is no token: no account.
    assert_problem(
        with_code(&app, "no-such-token", &code).await,
        401,
        "INVALID_TOKEN",
    )
    .await;
    trail
        .expect(
            "an unknown mfa_token",
            &[Expect::anonymous(
                "user.sign_in_failed",
                None,
                json!({"method": "password", "second_factor": "totp", "reason": "invalid_mfa_token"}),
            )],
        )
        .await;

    // A recovery code: spent, then the session.
    let token = challenge(&app, &email).await;
    secrets.push(token.clone());
    let by_recovery = pair(with_recovery(&app, &token, &recovery[0]).await).await;
    trail
        .expect(
            "a sign-in with a recovery code",
            &[
                Expect::own("mfa.recovery_code_used", &user, None, json!({"recovery_codes_left": 9})),
                Expect::own(
                    "user.signed_in",
                    &user,
                    Some(&sid(&by_recovery)),
                    json!({"method": "password", "second_factor": "recovery_code", "amr": ["pwd", "mfa"]}),
                ),
            ],
        )
        .await;

    // New recovery codes (the session passed the factor just now).
    let response = call(
        &app,
        Method::POST,
        "/me/mfa/recovery-codes",
        &by_recovery.access,
        &json!({"password": PASSWORD}),
    )
    .await;
    secrets.extend(recovery_codes(response).await);
    trail
        .expect(
            "new recovery codes",
            &[Expect::own(
                "mfa.recovery_codes_regenerated",
                &user,
                Some(&sid(&by_recovery)),
                json!({"recovery_codes": 10}),
            )],
        )
        .await;

    // Disabling: a wrong password changes and records nothing; then it is done.
    let code = next_code(&app, &secret);
    let body = json!({"password": WRONG_PASSWORD, "code": code});
    let response = call(&app, Method::DELETE, "/me/mfa/totp", &totp.access, &body).await;
    assert_problem(response, 403, "INVALID_CREDENTIALS").await;
    trail.expect("a refused removal of the factor", &[]).await;
    let code = next_code(&app, &secret);
    secrets.push(code.clone());
    let body = json!({"password": PASSWORD, "code": code});
    let response = call(&app, Method::DELETE, "/me/mfa/totp", &totp.access, &body).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    trail
        .expect(
            "removing the factor",
            &[Expect::own(
                "mfa.disabled",
                &user,
                Some(&sid(&totp)),
                json!({"method": "totp"}),
            )],
        )
        .await;

    assert_no_secret(&trail.all().await, &secrets);
}

/// Passkeys: added, signed in with, removed; the password removed.
#[tokio::test]
async fn passkey_events() {
    let app = audited_app(&[]).await;
    freeze_clock(&app);
    let (_, admin) = app.superuser().await;
    let mut trail = Trail::new(&app, &admin.access).await;

    let mut holder = holder(&app).await;
    let fresh = trail.fresh().await;
    let added = fresh
        .iter()
        .find(|e| e["type"] == "passkey.added")
        .expect("passkey.added");
    Expect::own(
        "passkey.added",
        &holder.id,
        Some(&sid(&holder.session)),
        json!({
            "passkey_id": holder.passkey_id,
            "name": "*",
            "user_verified": true,
            "synced": true,
            "other_sessions_ended": 0,
        }),
    )
    .check(added);

    let signed = sign_in(&app, &mut holder.passkey).await;
    trail
        .expect(
            "a passkey sign-in",
            &[Expect::own(
                "user.signed_in",
                &holder.id,
                Some(&sid(&signed)),
                json!({"method": "passkey", "amr": ["swk", "user", "mfa"]}),
            )],
        )
        .await;

    let response = delete_passkey(
        &app,
        &holder.session.access,
        &holder.passkey_id,
        &json!({"password": PASSWORD}),
    )
    .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    trail
        .expect(
            "a passkey removed",
            &[Expect::own(
                "passkey.removed",
                &holder.id,
                Some(&sid(&holder.session)),
                json!({"passkey_id": holder.passkey_id, "name": "*"}),
            )],
        )
        .await;

    let passwordless = passwordless(&app).await;
    let fresh = trail.fresh().await;
    let removed = fresh
        .iter()
        .find(|e| e["type"] == "user.password_removed")
        .expect("user.password_removed");
    Expect::own(
        "user.password_removed",
        &passwordless.id,
        Some(&sid(&passwordless.session)),
        json!({"other_sessions_ended": 0}),
    )
    .check(removed);
}

/// What an account does to itself: its name, address, password (changed, reset), verification,
/// deletion.
#[tokio::test]
async fn account_events_by_its_user() {
    let sink = SmtpSink::start().await;
    let app = audited_mail_app(&sink, &[]).await;
    freeze_clock(&app);
    let (_, admin) = app.superuser().await;
    let email = unique_email();
    let (me, session) = app.signed_up(&email).await;
    let user = id_of(&me);
    let mut trail = Trail::new(&app, &admin.access).await;
    let mut secrets = vec![PASSWORD.to_string(), NEW_PASS.to_string()];

    // A new name; the same name again is no change.
    let response = put_me(&app, &session.access, &json!({"name": "Renamed"})).await;
    assert_eq!(response.status(), StatusCode::OK);
    trail
        .expect(
            "a new name",
            &[Expect::own(
                "user.updated",
                &user,
                Some(&sid(&session)),
                json!({"fields": ["name"]}),
            )],
        )
        .await;
    let response = put_me(&app, &session.access, &json!({"name": "Renamed"})).await;
    assert_eq!(response.status(), StatusCode::OK);
    trail.expect("the same name again", &[]).await;

    // A new address, then its verification.
    let new_email = unique_email();
    let body = json!({"email": new_email, "current_password": PASSWORD});
    let response = put_me(&app, &session.access, &body).await;
    assert_eq!(response.status(), StatusCode::OK);
    trail
        .expect(
            "a new address",
            &[Expect::own(
                "user.email_changed",
                &user,
                Some(&sid(&session)),
                json!({"from": email, "to": new_email}),
            )],
        )
        .await;
    let token = mailed_token(&sink, &new_email, VERIFY, 1).await;
    secrets.push(token.clone());
    let response = app
        .post_json("/verify/confirm", &json!({"token": token}))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    trail
        .expect(
            "a verification",
            &[Expect {
                session: None,
                ..Expect::own(
                    "user.email_verified",
                    &user,
                    None,
                    json!({"email": new_email}),
                )
            }],
        )
        .await;

    // The password: a wrong current one records nothing; the change does.
    let response = app
        .change_password(&session.access, WRONG_PASSWORD, NEW_PASS)
        .await;
    assert_problem(response, 403, "INVALID_CREDENTIALS").await;
    trail.expect("a refused password change", &[]).await;
    let other = app.login_ok(&new_email).await;
    trail.fresh().await;
    let response = app
        .change_password(&session.access, PASSWORD, NEW_PASS)
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    trail
        .expect(
            "a password change",
            &[Expect::own(
                "user.password_changed",
                &user,
                Some(&sid(&session)),
                json!({"had_password": true, "other_sessions_ended": 1}),
            )],
        )
        .await;
    secrets.extend([other.access, other.refresh, session.refresh.clone()]);

    // A reset: asked for (the work beside the request carries its origin), then confirmed.
    let response = app
        .post_json("/password-reset/request", &json!({"email": new_email}))
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    trail
        .expect_soon(
            "a reset request",
            &[Expect::anonymous(
                "user.password_reset_requested",
                Some(&user),
                json!({}),
            )],
        )
        .await;
    // An address with no account records nothing.
    let response = app
        .post_json("/password-reset/request", &json!({"email": unique_email()}))
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let token = mailed_token(&sink, &new_email, RESET, 1).await;
    secrets.push(token.clone());
    let reset_password = "the reset passphrase, quite long";
    secrets.push(reset_password.to_string());
    let response = app.confirm_reset(&token, reset_password).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    trail
        .expect(
            "a reset",
            &[Expect::own(
                "user.password_reset",
                &user,
                None,
                json!({"sessions_ended": 1}),
            )],
        )
        .await;

    // Deleting the account.
    let last = app.login_ok_with(&new_email, reset_password).await;
    trail.fresh().await;
    let body = json!({"password": reset_password});
    let response = call(&app, Method::DELETE, "/me", &last.access, &body).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    trail
        .expect(
            "a deletion",
            &[Expect::own(
                "user.deleted",
                &user,
                Some(&sid(&last)),
                json!({"email": new_email}),
            )],
        )
        .await;

    assert_no_secret(&trail.all().await, &secrets);
}

/// A superuser's actions on an account: each with the superuser as actor.
#[tokio::test]
async fn a_superusers_actions_name_the_superuser() {
    let sink = SmtpSink::start().await;
    let app = audited_mail_app(&sink, &[("MAIL_RATE_LIMIT_SECONDS", "0")]).await;
    freeze_clock(&app);
    let (admin_user, admin) = app.superuser().await;
    let admin_id = id_of(&admin_user);
    let admin_sid = sid(&admin);
    let email = unique_email();
    let enrolled_user = enrolled_with(&app, &email).await;
    let user = enrolled_user.id.clone();
    let mut trail = Trail::new(&app, &admin.access).await;
    let by_admin = |kind, detail| Expect::admin(kind, &user, &admin_id, &admin_sid, detail);
    let patch = async |body: Value| {
        let path = format!("/users/{user}");
        let response = call(&app, Method::PATCH, &path, &admin.access, &body).await;
        assert_eq!(response.status(), StatusCode::OK, "PATCH {body}");
    };

    patch(json!({"is_active": false})).await;
    trail
        .expect("a deactivation", &[by_admin("user.deactivated", json!({}))])
        .await;
    patch(json!({"is_active": true})).await;
    trail
        .expect("a reactivation", &[by_admin("user.reactivated", json!({}))])
        .await;
    patch(json!({"name": "By Admin", "is_verified": true})).await;
    trail
        .expect(
            "a change of name and verification",
            &[by_admin(
                "user.updated",
                json!({"fields": ["name", "is_verified"], "is_verified": true}),
            )],
        )
        .await;
    patch(json!({"is_active": true, "name": "By Admin"})).await;
    trail.expect("a change that changes nothing", &[]).await;
    let new_email = unique_email();
    patch(json!({"email": new_email})).await;
    trail
        .expect(
            "a new address",
            &[
                by_admin(
                    "user.email_changed",
                    json!({"from": email, "to": new_email}),
                ),
                by_admin(
                    "user.updated",
                    json!({"fields": ["is_verified"], "is_verified": false}),
                ),
            ],
        )
        .await;
    patch(json!({"is_superuser": true})).await;
    trail
        .expect(
            "a promotion",
            &[by_admin(
                "user.updated",
                json!({"fields": ["is_superuser"], "is_superuser": true}),
            )],
        )
        .await;
    patch(json!({"is_superuser": false})).await;
    trail.fresh().await;

    // The second factor, removed at once.
    let session = app.login(&new_email, PASSWORD).await;
    assert_eq!(session.status(), StatusCode::FORBIDDEN, "MFA_REQUIRED");
    let response = bare(
        &app,
        Method::DELETE,
        &format!("/users/{user}/mfa"),
        &admin.access,
    )
    .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    trail
        .expect(
            "a reset of the second factor",
            &[by_admin(
                "mfa.reset",
                json!({
                    "stage": "applied", "delayed": false, "totp_removed": true,
                    "passkeys_removed": 0, "sessions_ended": "*",
                }),
            )],
        )
        .await;

    // The admin tools.
    let tokens = app.login_ok(&new_email).await;
    trail.fresh().await;
    let path = format!("/users/{user}/sessions/{}", sid(&tokens));
    let response = bare(&app, Method::DELETE, &path, &admin.access).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    trail
        .expect(
            "a session revoked by a superuser",
            &[by_admin(
                "session.revoked",
                json!({"revoked_session_id": sid(&tokens)}),
            )],
        )
        .await;
    app.login_ok(&new_email).await;
    app.login_ok(&new_email).await;
    trail.fresh().await;
    let path = format!("/users/{user}/sessions");
    let response = bare(&app, Method::DELETE, &path, &admin.access).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    trail
        .expect(
            "every session revoked by a superuser",
            &[by_admin(
                "session.revoked",
                json!({"scope": "all", "sessions_ended": 2}),
            )],
        )
        .await;
    app.login(&new_email, WRONG_PASSWORD).await;
    trail.fresh().await;
    let path = format!("/users/{user}/lockout");
    let response = bare(&app, Method::DELETE, &path, &admin.access).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    trail
        .expect(
            "a lockout cleared",
            &[by_admin(
                "lockout.cleared",
                json!({
                    "address": new_email, "address_was_counted": true,
                    "second_factor_was_counted": false,
                }),
            )],
        )
        .await;
    let path = format!("/users/{user}/password-reset");
    let response = bare(&app, Method::POST, &path, &admin.access).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    trail
        .expect(
            "a reset mail sent by a superuser",
            &[by_admin("user.password_reset_sent", json!({}))],
        )
        .await;
    let token = mailed_token(&sink, &new_email, RESET, 1).await;

    let response = bare(
        &app,
        Method::DELETE,
        &format!("/users/{user}"),
        &admin.access,
    )
    .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    trail
        .expect(
            "a deletion by a superuser",
            &[by_admin("user.deleted", json!({"email": new_email}))],
        )
        .await;
    // The trail outlives the account: its events are still there, by its id.
    let events = read_all(&app, &admin.access, &format!("/users/{user}/events")).await;
    assert!(events.len() >= 10, "{events:#?}");
    assert_no_secret(
        &trail.all().await,
        &[
            PASSWORD.to_string(),
            token,
            enrolled_user.secret,
            admin.access.clone(),
        ],
    );
}

/// An account with TOTP, registered with `email`.
async fn enrolled_with(app: &TestApp, email: &str) -> Enrolled {
    let (user, session) = app.signed_up(email).await;
    let (secret, recovery) = enrol(app, &session.access).await;
    Enrolled {
        id: id_of(&user),
        email: email.to_string(),
        secret,
        recovery,
        session,
    }
}

/// A delayed reset: scheduled by the superuser, cancelled by the user, scheduled again, then
/// applied by the server's job (no actor, no request).
#[tokio::test]
async fn a_delayed_reset_is_recorded_when_scheduled_cancelled_and_applied() {
    // The superuser's access token outlives the delay.
    let app = audited_app(&[
        ("MFA_RESET_DELAY_HOURS", "1"),
        ("PURGE_INTERVAL_SECONDS", "1"),
        ("ACCESS_TOKEN_EXPIRE_MINUTES", "120"),
    ])
    .await;
    freeze_clock(&app);
    let (admin_user, admin) = app.superuser().await;
    let (admin_id, admin_sid) = (id_of(&admin_user), sid(&admin));
    let enrolled = enrolled(&app).await;
    let user = enrolled.id.clone();
    let mut trail = Trail::new(&app, &admin.access).await;
    let path = format!("/users/{user}/mfa");
    let scheduled = || {
        Expect::admin(
            "mfa.reset",
            &user,
            &admin_id,
            &admin_sid,
            json!({"stage": "scheduled", "delayed": true, "effective_at": "*"}),
        )
    };

    let response = bare(&app, Method::DELETE, &path, &admin.access).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let events = trail.expect("a scheduled reset", &[scheduled()]).await;
    let effective: Value = response.json().await.unwrap();
    assert_eq!(
        events[0]["detail"]["effective_at"],
        effective["effective_at"]
    );

    let response = bare(
        &app,
        Method::DELETE,
        "/me/mfa/reset",
        &enrolled.session.access,
    )
    .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    trail
        .expect(
            "a cancelled reset",
            &[Expect::own(
                "mfa.reset_cancelled",
                &user,
                Some(&sid(&enrolled.session)),
                json!({}),
            )],
        )
        .await;

    let response = bare(&app, Method::DELETE, &path, &admin.access).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    trail
        .expect("a reset scheduled again", &[scheduled()])
        .await;
    app.clock.advance_ms(3_600_000);
    let applied = trail
        .expect_soon(
            "the reset applied by the job",
            &[Expect {
                kind: "mfa.reset",
                user: Some(user.clone()),
                actor: "system",
                actor_id: None,
                session: None,
                origin: false,
                detail: json!({
                    "stage": "applied", "delayed": true, "totp_removed": true,
                    "passkeys_removed": 0, "sessions_ended": 1,
                }),
            }],
        )
        .await;
    assert_eq!(applied.len(), 1);
}

/// The command line's superuser: created, or an existing account promoted; no actor, no origin.
#[tokio::test]
async fn create_superuser_records_the_account_it_creates_or_promotes() {
    let app = audited_app(&[]).await;
    let (_, admin) = app.superuser().await;
    let mut trail = Trail::new(&app, &admin.access).await;
    let system = |kind, user: &str, detail| Expect {
        kind,
        user: Some(user.to_string()),
        actor: "system",
        actor_id: None,
        session: None,
        origin: false,
        detail,
    };

    let email = unique_email();
    let outcome = auth_server::service::admin::create_superuser(
        &app.state,
        &auth_server::domain::Email::parse("email", &email).unwrap(),
        &auth_server::domain::Name::parse("name", "Operator").unwrap(),
        false,
        || Ok(PASSWORD.to_string()),
    )
    .await
    .unwrap();
    let auth_server::service::admin::SuperuserOutcome::Created(id) = outcome else {
        panic!("{outcome:?}")
    };
    trail
        .expect(
            "create-superuser",
            &[system(
                "user.created",
                &id,
                json!({"via": "cli", "is_superuser": true}),
            )],
        )
        .await;

    let existing = unique_email();
    let id = id_of(
        &app.register(&existing, PASSWORD, "Existing")
            .await
            .json()
            .await
            .unwrap(),
    );
    app.execute(
        "UPDATE users SET is_verified = TRUE WHERE email = $1",
        &existing,
    )
    .await;
    trail.fresh().await;
    let promote = async || {
        auth_server::service::admin::create_superuser(
            &app.state,
            &auth_server::domain::Email::parse("email", &existing).unwrap(),
            &auth_server::domain::Name::parse("name", "Existing").unwrap(),
            true,
            || Err("no password is asked for".to_string()),
        )
        .await
        .unwrap()
    };
    promote().await;
    trail
        .expect(
            "create-superuser --promote-existing",
            &[system(
                "user.updated",
                &id,
                json!({"fields": ["is_superuser"], "is_superuser": true, "via": "cli"}),
            )],
        )
        .await;
    // Already one: nothing changes, nothing is recorded.
    promote().await;
    trail.expect("promoting a superuser again", &[]).await;
}

// ---------------------------------------------------------------------------------------------
// In the change's transaction.

/// Runs `sql` (DDL) on the test's database.
async fn ddl(app: &TestApp, sql: &'static str) {
    match &app.sql {
        TestPool::Sqlite(pool) => sqlx::raw_sql(sql).execute(pool).await.map(|_| ()),
        TestPool::Postgres(pool) => sqlx::raw_sql(sql).execute(pool).await.map(|_| ()),
    }
    .unwrap();
}

/// A change whose transaction fails after its event was written (here: its notice mail, the
/// last write, is refused by a trigger) keeps neither the change nor the event, nor its log line.
#[tokio::test]
async fn a_change_rolled_back_leaves_no_event_and_no_log_line() {
    let log = AuditLog::capture();
    let app = audited_app(&[]).await;
    let (_, admin) = app.superuser().await;
    let email = format!("refused-{}@example.com", uuid::Uuid::new_v4().simple());
    let (me, session) = app.signed_up(&email).await;
    let user = id_of(&me);
    assert_eq!(
        log.lines_of("user.signed_in", &user).len(),
        1,
        "the sign-in's line"
    );
    let mut trail = Trail::new(&app, &admin.access).await;
    if app.sql.backend() == "sqlite" {
        ddl(
            &app,
            "CREATE TRIGGER refuse_notice BEFORE INSERT ON mail_outbox \
             WHEN NEW.recipient LIKE 'refused-%' BEGIN SELECT RAISE(ABORT, 'refused'); END",
        )
        .await;
    } else {
        ddl(
            &app,
            "CREATE FUNCTION refuse_notice() RETURNS trigger AS $$ BEGIN \
             IF NEW.recipient LIKE 'refused-%' THEN RAISE EXCEPTION 'refused'; END IF; \
             RETURN NEW; END $$ LANGUAGE plpgsql; \
             CREATE TRIGGER refuse_notice BEFORE INSERT ON mail_outbox \
             FOR EACH ROW EXECUTE FUNCTION refuse_notice()",
        )
        .await;
    }
    let response = app
        .change_password(&session.access, PASSWORD, NEW_PASS)
        .await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    trail.expect("a password change rolled back", &[]).await;
    assert!(log.lines_of("user.password_changed", &user).is_empty());
    // Nothing changed: the old password still signs in.
    app.login_ok(&email).await;
    // Once the notice can go, the change and its event are kept together.
    if app.sql.backend() == "sqlite" {
        ddl(&app, "DROP TRIGGER refuse_notice").await;
    } else {
        ddl(&app, "DROP TRIGGER refuse_notice ON mail_outbox").await;
    }
    let response = app
        .change_password(&session.access, PASSWORD, NEW_PASS)
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let events = trail.fresh().await;
    assert_eq!(
        events
            .iter()
            .filter(|e| e["type"] == "user.password_changed")
            .count(),
        1
    );
    assert_eq!(log.lines_of("user.password_changed", &user).len(), 1);
}

// ---------------------------------------------------------------------------------------------
// The log line.

/// The `audit` log lines while a test runs, each as its fields (see `Logs` in `smtp.rs` for why
/// a subscriber on the test's thread sees the server's events).
pub struct AuditLog {
    lines: Arc<Mutex<Vec<HashMap<String, String>>>>,
    _guard: tracing::subscriber::DefaultGuard,
    /// A second dispatcher, alive as long as this one: with a single live dispatcher,
    /// tracing-core registers a new callsite with the interest of the thread that first reaches
    /// it (a test without a subscriber: never), and the server's first `audit` line may be
    /// reached on another test's thread. With two, it asks every live dispatcher.
    _pin: tracing::Dispatch,
}

struct AuditLines(Arc<Mutex<Vec<HashMap<String, String>>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for AuditLines {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Fields(HashMap<String, String>);
        impl tracing::field::Visit for Fields {
            fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
                self.0.insert(field.name().to_string(), value.to_string());
            }
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                self.0
                    .insert(field.name().to_string(), format!("{value:?}"));
            }
        }
        if event.metadata().target() == "audit" {
            let mut fields = Fields(HashMap::new());
            event.record(&mut fields);
            self.0.lock().unwrap().push(fields.0);
        }
    }
}

impl AuditLog {
    pub fn capture() -> Self {
        use tracing_subscriber::layer::SubscriberExt;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let subscriber = tracing_subscriber::registry().with(AuditLines(lines.clone()));
        let pin = tracing::Dispatch::new(tracing_subscriber::registry());
        Self {
            lines,
            _guard: tracing::subscriber::set_default(subscriber),
            _pin: pin,
        }
    }

    /// The lines of events of type `kind` about `user`.
    pub fn lines_of(&self, kind: &str, user: &str) -> Vec<HashMap<String, String>> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| {
                l.get("event_type").map(String::as_str) == Some(kind)
                    && l.get("user_id").map(String::as_str) == Some(user)
            })
            .cloned()
            .collect()
    }

    pub fn all(&self) -> Vec<HashMap<String, String>> {
        self.lines.lock().unwrap().clone()
    }
}

/// Each committed event is one log line (target `audit`) with the row's fields; a failed
/// sign-in too; never a secret.
#[tokio::test]
async fn each_event_is_one_log_line_with_its_fields() {
    let log = AuditLog::capture();
    let app = audited_app(&[]).await;
    let (_, admin) = app.superuser().await;
    let email = unique_email();
    let (me, session) = app.signed_up(&email).await;
    let user = id_of(&me);
    app.login(&email, WRONG_PASSWORD).await;
    let events = read_all(&app, &admin.access, &format!("/users/{user}/events")).await;
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["user.sign_in_failed", "user.signed_in", "user.created"]
    );
    for event in &events {
        let lines = log.lines_of(event["type"].as_str().unwrap(), &user);
        assert_eq!(lines.len(), 1, "one line for {event}: {lines:?}");
        let line = &lines[0];
        assert_eq!(line["message"], "security event");
        assert_eq!(line["event_id"], event["id"].as_str().unwrap());
        assert_eq!(line["ip"], "127.0.0.1");
        assert_eq!(line["user_agent"], UA);
        let detail: Value = serde_json::from_str(&line["detail"]).unwrap();
        assert_eq!(detail, event["detail"]);
    }
    let signed_in = &log.lines_of("user.signed_in", &user)[0];
    assert_eq!(signed_in["session_id"], sid(&session));
    assert_eq!(signed_in["actor_id"], user);
    let failed = &log.lines_of("user.sign_in_failed", &user)[0];
    assert_eq!(failed["actor_id"], "-");
    for line in log.all() {
        let text = format!("{line:?}");
        for secret in [PASSWORD, WRONG_PASSWORD, &session.access, &session.refresh] {
            assert!(!text.contains(secret), "a secret in {text}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Reading: the right people only.

/// A user reads the events about its own account, and no other's, by any route or parameter;
/// a superuser's action on it names nobody.
#[tokio::test]
async fn a_user_reads_only_its_own_events() {
    let app = audited_app(&[]).await;
    let (admin_user, admin) = app.superuser().await;
    let admin_id = id_of(&admin_user);
    let (alice_user, alice) = app.signed_up(&unique_email()).await;
    let (bob_user, bob) = app.signed_up(&unique_email()).await;
    let (alice_id, bob_id) = (id_of(&alice_user), id_of(&bob_user));
    // The superuser acts on Alice: ends her other sessions.
    let extra = app.login_ok(alice_user["email"].as_str().unwrap()).await;
    let path = format!("/users/{alice_id}/sessions/{}", sid(&extra));
    assert_eq!(
        bare(&app, Method::DELETE, &path, &admin.access)
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    // Bob acts on his own.
    app.logout(&bob.access, Some("others")).await;

    let own = read_all(&app, &alice.access, "/me/events").await;
    let kinds: Vec<&str> = own.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "session.revoked",
            "user.signed_in",
            "user.signed_in",
            "user.created"
        ]
    );
    for event in &own {
        assert_eq!(event["user_id"], alice_id.as_str(), "{event}");
    }
    // The superuser's action: `administrator`, and nothing of the superuser's request.
    let revoked = &own[0];
    assert_eq!(revoked["actor"], "administrator");
    for field in ["actor_id", "session_id", "ip", "user_agent"] {
        assert!(revoked[field].is_null(), "{field} in {revoked}");
    }
    assert_eq!(
        revoked["detail"],
        json!({"revoked_session_id": sid(&extra)})
    );
    assert!(!revoked.to_string().contains(&admin_id));
    // Her own: `self`, with her id and her request.
    let signed_in = &own[1];
    assert_eq!(signed_in["actor"], "self");
    assert_eq!(signed_in["actor_id"], alice_id.as_str());
    assert_eq!(signed_in["ip"], "127.0.0.1");
    assert_eq!(signed_in["session_id"], sid(&extra).as_str());
    // The superuser's own listing holds what the superuser did to others only under their ids.
    let admins_own = read_all(&app, &admin.access, "/me/events").await;
    assert!(admins_own.iter().all(|e| e["user_id"] == admin_id.as_str()));
    assert!(!admins_own.iter().any(|e| e["type"] == "session.revoked"));
    // The superuser sees every field.
    let full = read_all(&app, &admin.access, &format!("/users/{alice_id}/events")).await;
    assert_eq!(full[0]["actor_id"], admin_id.as_str());
    assert_eq!(full[0]["session_id"], sid(&admin).as_str());
    assert_eq!(full[0]["ip"], "127.0.0.1");

    // Bob's listing has nothing of Alice's, whatever he asks.
    let bobs = read_all(&app, &bob.access, "/me/events").await;
    assert!(bobs.iter().all(|e| e["user_id"] == bob_id.as_str()));
    for path in [
        format!("/me/events?user={alice_id}"),
        format!("/me/events?user_id={alice_id}"),
        "/me/events?type=user.created".to_string(),
    ] {
        let body = assert_problem(
            get(&app, &bob.access, &path).await,
            400,
            "INVALID_PARAMETER",
        )
        .await;
        assert!(!error_fields(&body).is_empty(), "{body}");
    }
    for path in [
        "/events".to_string(),
        format!("/events?user={alice_id}"),
        format!("/users/{alice_id}/events"),
        format!("/users/{bob_id}/events"),
    ] {
        assert_problem(get(&app, &bob.access, &path).await, 403, "FORBIDDEN").await;
    }
    // A cursor from another listing is only a position: it shows nothing else.
    let page = get_ok(&app, &admin.access, "/events?limit=1").await;
    let cursor = page["next_cursor"].as_str().unwrap();
    let paged = get_ok(&app, &bob.access, &format!("/me/events?cursor={cursor}")).await;
    for event in paged["events"].as_array().unwrap() {
        assert_eq!(event["user_id"], bob_id.as_str());
    }
    // Without a token: 401.
    let response = app.client.get(app.url("/me/events")).send().await.unwrap();
    assert_problem(response, 401, "UNAUTHORIZED").await;
}

/// A caller kept to enrolment by MFA_REQUIRED_FOR is kept from its events too, as from the other
/// /me routes that take `Authenticated`.
#[tokio::test]
async fn a_caller_kept_to_enrolment_cannot_read_its_events() {
    let app = audited_app(&[("MFA_REQUIRED_FOR", "all")]).await;
    let (_, tokens) = app.signed_up(&unique_email()).await;
    assert_problem(
        get(&app, &tokens.access, "/me/events").await,
        403,
        "MFA_ENROLMENT_REQUIRED",
    )
    .await;
}

/// The filters (account, types repeated or comma-separated, since inclusive, until exclusive)
/// and the cursor, which pages through exactly the whole listing, newest first.
#[tokio::test]
async fn listings_filter_and_page() {
    let app = audited_app(&[]).await;
    let t0 = freeze_clock(&app);
    let (_, admin) = app.superuser().await;
    let email = unique_email();
    let (me, _) = app.signed_up(&email).await;
    let user = id_of(&me);
    for i in 1..=5 {
        app.clock.set_ms(t0 + i * 1_000);
        app.login(&email, WRONG_PASSWORD).await;
        app.login_ok(&email).await;
    }
    let all = read_all(&app, &admin.access, &format!("/users/{user}/events")).await;
    assert_eq!(
        all.len(),
        12,
        "created, signed in, then 5 × (failed, signed in)"
    );
    let times: Vec<i64> = all.iter().map(|e| ms_of(&e["at"])).collect();
    assert!(
        times.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {times:?}"
    );

    // Paging by 5 (and by 1 through /events?user=): the same events, once each, in order.
    for (path, limit) in [
        (format!("/users/{user}/events"), 5),
        (format!("/events?user={user}"), 1),
    ] {
        let mut paged = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let separator = if path.contains('?') { '&' } else { '?' };
            let page_path = match &cursor {
                Some(c) => format!("{path}{separator}limit={limit}&cursor={c}"),
                None => format!("{path}{separator}limit={limit}"),
            };
            let page = get_ok(&app, &admin.access, &page_path).await;
            let events = page["events"].as_array().unwrap();
            assert!(events.len() <= limit);
            paged.extend(events.iter().cloned());
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_string()),
                None => break,
            }
        }
        assert_eq!(paged, all, "{path} by {limit}");
    }
    // The owner pages its own the same way.
    let own_tokens = app.login_ok(&email).await;
    let own = read_all(&app, &own_tokens.access, "/me/events").await;
    assert_eq!(own.len(), 13);

    // Types.
    let count = async |query: &str| {
        let page = get_ok(&app, &admin.access, &format!("/events?user={user}&{query}")).await;
        page["events"].as_array().unwrap().len()
    };
    assert_eq!(count("type=user.sign_in_failed").await, 5);
    assert_eq!(count("type=user.sign_in_failed&type=user.created").await, 6);
    assert_eq!(count("type=user.sign_in_failed,user.created").await, 6);
    assert_eq!(count("type=user.sign_in_failed,%20user.created").await, 6);
    assert_eq!(count("type=user.deleted").await, 0);
    // Time: `since` is inclusive, `until` exclusive (the failures at t0 + 1 s .. t0 + 5 s).
    let at = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .unwrap()
            .to_rfc3339()
    };
    let failures = |since: i64, until: i64| {
        format!(
            "type=user.sign_in_failed&since={}&until={}",
            urlencoding(&at(since)),
            urlencoding(&at(until))
        )
    };
    assert_eq!(count(&failures(t0 + 2_000, t0 + 4_000)).await, 2);
    assert_eq!(count(&failures(t0 + 2_001, t0 + 4_001)).await, 2);
    assert_eq!(count(&failures(t0 + 1_000, t0 + 5_001)).await, 5);
    assert_eq!(count(&failures(t0 + 5_001, t0 + 9_000)).await, 0);
    // Other time zones are the same instants.
    let plus_two = chrono::DateTime::from_timestamp_millis(t0 + 2_000)
        .unwrap()
        .with_timezone(&chrono::FixedOffset::east_opt(7_200).unwrap())
        .to_rfc3339();
    assert_eq!(
        count(&format!(
            "type=user.sign_in_failed&since={}",
            urlencoding(&plus_two)
        ))
        .await,
        4
    );
    // Another account's id: none of these.
    assert_eq!(
        get_ok(
            &app,
            &admin.access,
            &format!("/events?user={}", uuid::Uuid::new_v4())
        )
        .await["events"],
        json!([])
    );
}

fn urlencoding(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// Every bad parameter of every listing is 400 INVALID_PARAMETER naming it, never a 500.
#[tokio::test]
async fn bad_parameters_are_400_naming_them() {
    let app = audited_app(&[]).await;
    let (_, admin) = app.superuser().await;
    let (me, user) = app.signed_up(&unique_email()).await;
    let id = id_of(&me);
    let cases: Vec<(String, &str)> = vec![
        ("/events?type=user.nope".into(), "type"),
        ("/events?type=user.created,nope".into(), "type"),
        ("/events?type=".into(), "type"),
        ("/events?type=USER.CREATED".into(), "type"),
        ("/events?since=yesterday".into(), "since"),
        ("/events?since=2026-11-24".into(), "since"),
        ("/events?until=2026-11-24T09:30:00".into(), "until"),
        ("/events?until=%00".into(), "until"),
        ("/events?user=not-a-uuid".into(), "user"),
        ("/events?user=%00".into(), "user"),
        ("/events?limit=0".into(), "limit"),
        ("/events?limit=201".into(), "limit"),
        ("/events?limit=ten".into(), "limit"),
        ("/events?limit=99999999999999999999".into(), "limit"),
        ("/events?limit=1&limit=2".into(), "limit"),
        ("/events?cursor=abc".into(), "cursor"),
        ("/events?cursor=-1".into(), "cursor"),
        ("/events?cursor=0".into(), "cursor"),
        ("/events?cursor=99999999999999999999".into(), "cursor"),
        ("/events?cursor=".into(), "cursor"),
        ("/events?cursor=1%002".into(), "cursor"),
        ("/events?cursor=01".into(), "cursor"),
        ("/events?cursor=1000000000000000000".into(), "cursor"),
        ("/events?limit=%2B5".into(), "limit"),
        ("/events?limit=%205".into(), "limit"),
        (format!("/events?user={}", id.replace('-', "")), "user"),
        (format!("/events?user=%7B{id}%7D"), "user"),
        (format!("/events?user=urn:uuid:{id}"), "user"),
        ("/events?since=%202026-11-24T09:30:00Z".into(), "since"),
        ("/events?page=2".into(), "page"),
        (format!("/users/{id}/events?type=user.created"), "type"),
        (format!("/users/{id}/events?cursor=x"), "cursor"),
        (format!("/users/{id}/events?limit=-5"), "limit"),
    ];
    for (path, field) in &cases {
        let response = get(&app, &admin.access, path).await;
        let body = assert_problem(response, 400, "INVALID_PARAMETER").await;
        assert!(
            error_fields(&body).contains(&field.to_string()),
            "{path}: {body}"
        );
    }
    for (path, field) in [
        ("/me/events?limit=0", "limit"),
        ("/me/events?cursor=%FF", "cursor"),
        ("/me/events?since=2026-11-24T09:30:00Z", "since"),
    ] {
        let response = get(&app, &user.access, path).await;
        let body = assert_problem(response, 400, "INVALID_PARAMETER").await;
        assert!(
            error_fields(&body).contains(&field.to_string()),
            "{path}: {body}"
        );
    }
    // Several at once: each named.
    let body = assert_problem(
        get(&app, &admin.access, "/events?type=nope&since=x&limit=0").await,
        400,
        "INVALID_PARAMETER",
    )
    .await;
    let fields: BTreeSet<String> = error_fields(&body).into_iter().collect();
    assert_eq!(fields, ["limit", "since", "type"].map(String::from).into());
    // A path id that is not a user id.
    assert_problem(
        get(&app, &admin.access, "/users/not-a-uuid/events").await,
        404,
        "NOT_FOUND",
    )
    .await;
    // A user id in upper case is the same id; the longest cursor is taken.
    get_ok(
        &app,
        &admin.access,
        &format!("/events?user={}", id.to_uppercase()),
    )
    .await;
    get_ok(&app, &admin.access, "/events?cursor=999999999999999999").await;
    // A cursor past the end: an empty page.
    let page = get_ok(&app, &admin.access, "/events?cursor=1").await;
    assert_eq!(page, json!({"events": [], "next_cursor": null}));
}

// ---------------------------------------------------------------------------------------------
// Retention.

/// The purge deletes the events older than AUDIT_RETENTION_DAYS, to the millisecond.
#[tokio::test]
async fn events_are_kept_for_their_retention_and_then_purged() {
    let app = audited_app(&[
        ("AUDIT_RETENTION_DAYS", "2"),
        ("PURGE_INTERVAL_SECONDS", "1"),
    ])
    .await;
    let t0 = freeze_clock(&app);
    let old = unique_email();
    app.clock.set_ms(t0 + 1_000);
    let old_id = id_of(
        &app.register(&old, PASSWORD, "Old")
            .await
            .json()
            .await
            .unwrap(),
    );
    let edge = unique_email();
    app.clock.set_ms(t0 + 1_001);
    let edge_id = id_of(
        &app.register(&edge, PASSWORD, "Edge")
            .await
            .json()
            .await
            .unwrap(),
    );
    let created = "SELECT COUNT(*) FROM security_events WHERE user_id = $1";
    assert_eq!(app.count(created, &old_id).await, 1);
    assert_eq!(app.count(created, &edge_id).await, 1);

    // Two days after the edge event: it is exactly at the retention's edge and stays; the
    // event 1 ms older goes.
    app.clock.set_ms(t0 + 1_001 + 2 * DAY_MS);
    app.wait_count(created, &old_id, |n| n == 0).await;
    assert_eq!(app.count(created, &edge_id).await, 1);
    // The listing agrees with the table.
    let (_, admin) = app.superuser().await;
    let left = read_all(&app, &admin.access, &format!("/events?user={old_id}")).await;
    assert!(left.is_empty());
}
