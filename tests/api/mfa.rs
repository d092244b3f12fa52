//! The second factor (the MFA contract): TOTP enrolment, the two-step login, the code rules
//! (skew, replay, tries, lockout), recovery codes, step-up, the claims, and what is stored.
//!
//! TOTP codes are computed here, from the secret the server hands out, by a small RFC 6238
//! generator of the test's own (checked against the RFC's vectors), on the server's clock: every
//! test freezes it first. A code is accepted only for a step later than the last one accepted
//! for the account, so a test that needs another accepted code moves the clock a step on first
//! ([`next_code`]).
//!
//! Where the contract says nothing, a test says `// spec-silent:` and what it assumes.

use std::collections::HashSet;

use hmac::{Hmac, Mac};
use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};
use sha1::Sha1;

use crate::helpers::*;
use crate::smtp::{Received, SmtpSink, WAIT, app_with_mail};

/// One TOTP step.
pub const STEP_MS: i64 = 30_000;
/// MFA_STEP_UP_SECONDS' default, in ms.
pub const STEP_UP_MS: i64 = 300_000;
/// MFA_TOKEN_EXPIRE_SECONDS' default, in ms.
const MFA_TOKEN_MS: i64 = 300_000;
pub const WRONG_PASSWORD: &str = "not the password at all";
pub const NEW_PASSWORD: &str = "an entirely new passphrase, 42 times over";
/// For the tests that read notices: several of one kind may go to an address within a minute
/// here (the frozen clock), which MAIL_RATE_LIMIT_SECONDS would otherwise hold back.
pub const NOTICES: &[(&str, &str)] = &[("MAIL_RATE_LIMIT_SECONDS", "0")];
pub const BOTH_METHODS: [&str; 2] = ["totp", "recovery_code"];

// ---------------------------------------------------------------------------------------------
// RFC 4226 / RFC 6238, independent of the server's code.

/// HOTP (RFC 4226) with HMAC-SHA1: `digits` decimal digits for `counter`.
pub fn hotp(key: &[u8], counter: u64, digits: u32) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(&counter.to_be_bytes());
    let hash = mac.finalize().into_bytes();
    let offset = usize::from(hash[19] & 0x0f);
    let binary = u32::from_be_bytes([
        hash[offset] & 0x7f,
        hash[offset + 1],
        hash[offset + 2],
        hash[offset + 3],
    ]);
    format!(
        "{:0width$}",
        binary % 10u32.pow(digits),
        width = digits as usize
    )
}

/// The raw bytes of a base32 secret (RFC 4648, no padding).
pub fn secret_bytes(secret: &str) -> Vec<u8> {
    data_encoding::BASE32_NOPAD
        .decode(secret.as_bytes())
        .expect("the secret is base32 without padding")
}

/// The TOTP step of a Unix time in ms (T0 = 0, 30 s).
pub fn step_of(ms: i64) -> i64 {
    ms.div_euclid(STEP_MS)
}

/// The 6-digit code of `step`.
pub fn code_for_step(secret: &str, step: i64) -> String {
    hotp(&secret_bytes(secret), u64::try_from(step).unwrap(), 6)
}

/// The 6-digit code at Unix time `unix_s`.
pub fn totp_at(secret: &str, unix_s: i64) -> String {
    code_for_step(secret, step_of(unix_s * 1000))
}

/// The code of the server's current step.
pub fn code_now(app: &TestApp, secret: &str) -> String {
    code_for_step(secret, step_of(app.clock.now_ms()))
}

/// Moves the server's clock one step on and returns the code of that step: a code later than
/// any accepted so far (as long as every accepted one was of a step at or before the clock's).
pub fn next_code(app: &TestApp, secret: &str) -> String {
    app.clock.advance_ms(STEP_MS);
    code_now(app, secret)
}

/// Six digits that are the code of no step within three of the current one.
pub fn wrong_code(app: &TestApp, secret: &str) -> String {
    let step = step_of(app.clock.now_ms());
    let near: Vec<String> = (step - 3..=step + 3)
        .map(|s| code_for_step(secret, s))
        .collect();
    (0u32..)
        .map(|n| format!("{n:06}"))
        .find(|c| !near.contains(c))
        .unwrap()
}

#[test]
fn the_test_generator_matches_the_rfc_6238_sha1_vectors() {
    // RFC 6238, appendix B: the SHA-1 rows (8 digits; the 6-digit codes are their last six).
    let key = b"12345678901234567890";
    for (t, code) in [
        (59u64, "94287082"),
        (1_111_111_109, "07081804"),
        (1_111_111_111, "14050471"),
        (1_234_567_890, "89005924"),
        (2_000_000_000, "69279037"),
        (20_000_000_000, "65353130"),
    ] {
        assert_eq!(hotp(key, t / 30, 8), code, "T = {t}");
        assert_eq!(hotp(key, t / 30, 6), code[2..], "T = {t}, 6 digits");
    }
    // The same through the base32 form the server hands out.
    let secret = data_encoding::BASE32_NOPAD.encode(key);
    assert_eq!(secret, "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
    assert_eq!(totp_at(&secret, 59), "287082");
    assert_eq!(totp_at(&secret, 1_111_111_109), "081804");
}

// ---------------------------------------------------------------------------------------------
// Requests.

/// `method path` with a bearer token and a JSON body.
pub async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    access: &str,
    body: &Value,
) -> Response {
    app.client
        .request(method, app.url(path))
        .bearer_auth(access)
        .json(body)
        .send()
        .await
        .unwrap()
}

/// `method path` with a bearer token and no body.
pub async fn bare(app: &TestApp, method: Method, path: &str, access: &str) -> Response {
    app.client
        .request(method, app.url(path))
        .bearer_auth(access)
        .send()
        .await
        .unwrap()
}

/// GET /me/mfa, asserting 200.
pub async fn mfa_status(app: &TestApp, access: &str) -> Value {
    let response = bare(app, Method::GET, "/me/mfa", access).await;
    assert_eq!(response.status(), StatusCode::OK, "GET /me/mfa");
    response.json().await.unwrap()
}

/// POST /me/mfa/totp.
pub async fn start_enrolment(app: &TestApp, access: &str, password: &str) -> Response {
    call(
        app,
        Method::POST,
        "/me/mfa/totp",
        access,
        &json!({ "password": password }),
    )
    .await
}

/// POST /me/mfa/totp/confirm.
pub async fn confirm(app: &TestApp, access: &str, code: &str) -> Response {
    call(
        app,
        Method::POST,
        "/me/mfa/totp/confirm",
        access,
        &json!({ "code": code }),
    )
    .await
}

/// The recovery codes of a 200 answer, checked: 10 distinct `xxxxx-xxxxx`.
pub async fn recovery_codes(response: Response) -> Vec<String> {
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    let codes: Vec<String> = body["recovery_codes"]
        .as_array()
        .unwrap_or_else(|| panic!("recovery_codes in {body}"))
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    assert_eq!(codes.len(), 10, "{body}");
    assert_eq!(codes.iter().collect::<HashSet<_>>().len(), 10, "distinct");
    for code in &codes {
        let (a, b) = code.split_once('-').unwrap_or_else(|| panic!("{code}"));
        assert!(
            a.len() == 5
                && b.len() == 5
                && (a.chars().chain(b.chars()))
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()),
            "a recovery code is xxxxx-xxxxx in lower-case letters and digits: {code}"
        );
    }
    codes
}

/// Enrols and confirms TOTP for the session's account (its password being [`PASSWORD`]), with
/// the code of the current step: the secret and the recovery codes.
pub async fn enrol(app: &TestApp, access: &str) -> (String, Vec<String>) {
    let response = start_enrolment(app, access, PASSWORD).await;
    assert_eq!(response.status(), StatusCode::OK, "POST /me/mfa/totp");
    let body: Value = response.json().await.unwrap();
    let secret = body["secret"].as_str().expect("secret").to_string();
    let codes = recovery_codes(confirm(app, access, &code_now(app, &secret)).await).await;
    (secret, codes)
}

/// An account with TOTP enabled, and the session that enrolled it.
pub struct Enrolled {
    pub id: String,
    pub email: String,
    pub secret: String,
    pub recovery: Vec<String>,
    /// The session that confirmed the enrolment (it has passed the second factor then).
    pub session: Tokens,
}

/// A new account (password [`PASSWORD`]) with TOTP confirmed at the current step.
pub async fn enrolled(app: &TestApp) -> Enrolled {
    let email = unique_email();
    let (user, session) = app.signed_up(&email).await;
    let (secret, recovery) = enrol(app, &session.access).await;
    Enrolled {
        id: user["id"].as_str().unwrap().to_string(),
        email,
        secret,
        recovery,
        session,
    }
}

/// POST /login with the right password for an account with TOTP: asserts 403 MFA_REQUIRED and
/// returns the `mfa_token`.
pub async fn challenge(app: &TestApp, email: &str) -> String {
    let body = assert_problem(app.login(email, PASSWORD).await, 403, "MFA_REQUIRED").await;
    body["mfa_token"]
        .as_str()
        .unwrap_or_else(|| panic!("mfa_token in {body}"))
        .to_string()
}

/// POST /login/mfa.
pub async fn login_mfa(app: &TestApp, body: &Value) -> Response {
    app.post_json("/login/mfa", body).await
}

/// POST /login/mfa with a TOTP code.
pub async fn with_code(app: &TestApp, mfa_token: &str, code: &str) -> Response {
    login_mfa(app, &json!({ "mfa_token": mfa_token, "code": code })).await
}

/// POST /login/mfa with a recovery code.
pub async fn with_recovery(app: &TestApp, mfa_token: &str, code: &str) -> Response {
    login_mfa(
        app,
        &json!({ "mfa_token": mfa_token, "recovery_code": code }),
    )
    .await
}

/// The token pair of a 200 answer.
pub async fn pair(response: Response) -> Tokens {
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    Tokens::from(body)
}

/// A full login with the password and the code of the next step.
pub async fn mfa_login_ok(app: &TestApp, email: &str, secret: &str) -> Tokens {
    let token = challenge(app, email).await;
    let code = next_code(app, secret);
    pair(with_code(app, &token, &code).await).await
}

pub fn retry_after(response: &Response) -> String {
    response
        .headers()
        .get("retry-after")
        .expect("a Retry-After header")
        .to_str()
        .unwrap()
        .to_string()
}

/// An RFC 3339 time, in Unix ms.
pub fn ms_of(time: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(time.as_str().unwrap_or_else(|| panic!("{time}")))
        .unwrap_or_else(|e| panic!("{time}: {e}"))
        .timestamp_millis()
}

// ---------------------------------------------------------------------------------------------
// Mail.

/// A mail's subject (unfolded) and body (decoded), in lower case, its white space collapsed.
pub fn mail_text(mail: &Received) -> String {
    let head = mail.data.split("\r\n\r\n").next().unwrap_or_default();
    let head = head.replace("\r\n ", " ").replace("\r\n\t", " ");
    let subject = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("subject")
                .then(|| value.trim().to_string())
        })
        .unwrap_or_default();
    let base64 = mail
        .header("Content-Transfer-Encoding")
        .is_some_and(|e| e.eq_ignore_ascii_case("base64"));
    let body = if base64 {
        use base64::Engine as _;
        let raw = mail.data.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        let compact: String = raw.split_whitespace().collect();
        String::from_utf8_lossy(
            &base64::engine::general_purpose::STANDARD
                .decode(compact)
                .unwrap_or_default(),
        )
        .into_owned()
    } else {
        mail.body()
    };
    format!("{subject}\n{body}")
        .to_lowercase()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Waits for a mail to `to`, after the first `after` of them, whose subject or body has
/// `needle` (any case). Returns how many mails to `to` there were up to it, and its text.
pub async fn notice(sink: &SmtpSink, to: &str, after: usize, needle: &str) -> (usize, String) {
    let needle = needle.to_lowercase();
    let mails = eventually(
        &format!("a mail to {to} about {needle:?}"),
        WAIT,
        || async { sink.mails_to(to, "") },
        |mails: &Vec<Received>| {
            mails
                .iter()
                .skip(after)
                .any(|m| mail_text(m).contains(&needle))
        },
    )
    .await;
    let (i, mail) = mails
        .iter()
        .enumerate()
        .skip(after)
        .find(|(_, m)| mail_text(m).contains(&needle))
        .unwrap();
    (i + 1, mail_text(mail))
}

// ---------------------------------------------------------------------------------------------
// 1. Enrolment.

fn percent_decoded(s: &str) -> String {
    crate::smtp::decode_hex_escapes(s, b'%')
}

/// Checks a POST /me/mfa/totp answer for `email`; returns the secret.
fn check_enrolment(body: &Value, email: &str) -> String {
    let secret = body["secret"].as_str().expect("secret").to_string();
    assert_eq!(
        secret.len(),
        32,
        "20 bytes in base32 without padding: {secret}"
    );
    assert!(
        secret
            .chars()
            .all(|c| c.is_ascii_uppercase() || ('2'..='7').contains(&c)),
        "upper-case base32: {secret}"
    );
    assert_eq!(secret_bytes(&secret).len(), 20);
    assert_eq!(body["algorithm"], "SHA1");
    assert_eq!(body["digits"], 6);
    assert_eq!(body["period"], 30);

    let uri = body["otpauth_uri"].as_str().expect("otpauth_uri");
    let url = url::Url::parse(uri).unwrap_or_else(|e| panic!("{uri}: {e}"));
    assert_eq!(url.scheme(), "otpauth", "{uri}");
    assert_eq!(url.host_str(), Some("totp"), "{uri}");
    // Issuer prefix and account name (the label's colon may be encoded, as Key Uri Format allows).
    // spec-silent: the account name in the label is the account's email, as in the example.
    assert_eq!(
        percent_decoded(url.path().trim_start_matches('/')),
        format!("auth-server:{email}"),
        "{uri}"
    );
    let query: std::collections::HashMap<String, String> = url.query_pairs().into_owned().collect();
    assert_eq!(query.get("secret"), Some(&secret), "{uri}");
    assert_eq!(query.get("issuer").map(String::as_str), Some("auth-server"));
    assert_eq!(query.get("algorithm").map(String::as_str), Some("SHA1"));
    assert_eq!(query.get("digits").map(String::as_str), Some("6"));
    assert_eq!(query.get("period").map(String::as_str), Some("30"));

    let svg = body["qr_svg"].as_str().expect("qr_svg");
    assert!(svg.contains("<svg"), "{svg}");
    secret
}

#[tokio::test]
async fn enrolment_takes_effect_only_once_confirmed() {
    let sink = SmtpSink::start().await;
    let app = app_with_mail(&sink, NOTICES).await;
    let t = freeze_clock(&app);
    let email = unique_email();
    let (_, session) = app.signed_up(&email).await;

    let status = mfa_status(&app, &session.access).await;
    assert_eq!(status["totp"], false, "{status}");
    assert_eq!(status["methods"], json!([]), "{status}");
    assert_eq!(status["required"], false, "{status}");
    assert_eq!(status["reset_pending_until"], Value::Null, "{status}");
    // spec-silent: without TOTP, `totp_enabled_at` is null and no recovery codes remain.
    assert_eq!(status["totp_enabled_at"], Value::Null, "{status}");
    assert_eq!(status["recovery_codes_remaining"], 0, "{status}");

    assert_problem(
        start_enrolment(&app, &session.access, WRONG_PASSWORD).await,
        403,
        "INVALID_CREDENTIALS",
    )
    .await;
    let body = assert_problem(
        call(
            &app,
            Method::POST,
            "/me/mfa/totp",
            &session.access,
            &json!({}),
        )
        .await,
        422,
        "VALIDATION_FAILED",
    )
    .await;
    assert_eq!(error_fields(&body), ["password"]);

    let first = start_enrolment(&app, &session.access, PASSWORD).await;
    assert_eq!(first.status(), StatusCode::OK);
    let first = check_enrolment(&first.json().await.unwrap(), &email);
    // Calling again replaces the pending secret.
    let second = start_enrolment(&app, &session.access, PASSWORD).await;
    assert_eq!(second.status(), StatusCode::OK);
    let secret = check_enrolment(&second.json().await.unwrap(), &email);
    assert_ne!(first, secret, "a new secret each time");

    // Nothing is enabled yet: the status says so and the password alone logs in.
    let status = mfa_status(&app, &session.access).await;
    assert_eq!(status["totp"], false, "{status}");
    assert_eq!(status["methods"], json!([]), "{status}");
    let login = pair(app.login(&email, PASSWORD).await).await;
    assert_eq!(app.me(&login.access).await.status(), StatusCode::OK);

    // The replaced secret's code does not confirm; nor does a wrong one.
    assert_problem(
        confirm(&app, &session.access, &code_now(&app, &first)).await,
        403,
        "INVALID_MFA_CODE",
    )
    .await;
    assert_problem(
        confirm(&app, &session.access, &wrong_code(&app, &secret)).await,
        403,
        "INVALID_MFA_CODE",
    )
    .await;
    assert_eq!(mfa_status(&app, &session.access).await["totp"], false);

    let codes =
        recovery_codes(confirm(&app, &session.access, &code_now(&app, &secret)).await).await;
    assert_eq!(codes.len(), 10);

    let status = mfa_status(&app, &session.access).await;
    assert_eq!(status["totp"], true, "{status}");
    // spec-silent: `totp_enabled_at` is the instant of the confirmation (the frozen clock's).
    assert_eq!(ms_of(&status["totp_enabled_at"]), t, "{status}");
    assert_eq!(status["recovery_codes_remaining"], 10, "{status}");
    assert_eq!(status["methods"], json!(BOTH_METHODS), "{status}");
    assert_eq!(status["required"], false, "{status}");
    assert_eq!(status["reset_pending_until"], Value::Null, "{status}");

    // Once confirmed: no second enrolment, no second confirmation (with a valid code, so that
    // only the state can be what refuses it).
    assert_problem(
        start_enrolment(&app, &session.access, PASSWORD).await,
        409,
        "MFA_ALREADY_ENABLED",
    )
    .await;
    assert_problem(
        confirm(&app, &session.access, &next_code(&app, &secret)).await,
        409,
        "MFA_ALREADY_ENABLED",
    )
    .await;
    // The password alone no longer logs in.
    challenge(&app, &email).await;

    // Another account, with no enrolment under way.
    let (_, other) = app.signed_up(&unique_email()).await;
    assert_problem(
        confirm(&app, &other.access, "123456").await,
        404,
        "NOT_FOUND",
    )
    .await;

    // "A second factor was added to your account".
    notice(&sink, &email, 0, "second factor").await;
}

// ---------------------------------------------------------------------------------------------
// 2. Confirmation ends the other sessions.

#[tokio::test]
async fn confirming_ends_the_other_sessions_and_keeps_this_one() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let email = unique_email();
    let (_, this) = app.signed_up(&email).await;
    let other = app.login_ok(&email).await;
    assert_eq!(app.me(&other.access).await.status(), StatusCode::OK);

    enrol(&app, &this.access).await;

    assert_problem(app.me(&other.access).await, 401, "UNAUTHORIZED").await;
    assert_problem(app.refresh(&other.refresh).await, 401, "INVALID_TOKEN").await;
    assert_eq!(app.me(&this.access).await.status(), StatusCode::OK);
    // This session has passed the second factor: its next tokens say so.
    app.clock.advance_ms(1_000);
    let next = pair(app.refresh(&this.refresh).await).await;
    assert_eq!(claims_of(&next.access)["amr"], json!(["pwd", "otp", "mfa"]));
    assert_eq!(app.me(&next.access).await.status(), StatusCode::OK);
}

// ---------------------------------------------------------------------------------------------
// 3. The two-step login.

#[tokio::test]
async fn login_with_totp_takes_a_second_step_whose_token_is_single_use() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let user = enrolled(&app).await;

    let body = assert_problem(app.login(&user.email, PASSWORD).await, 403, "MFA_REQUIRED").await;
    let token = body["mfa_token"].as_str().expect("mfa_token").to_string();
    assert_eq!(token.len(), 43, "{body}");
    assert_eq!(body["methods"], json!(BOTH_METHODS), "{body}");
    assert_eq!(body["expires_in"], 300, "{body}");
    assert!(body.get("access_token").is_none(), "{body}");
    assert!(body.get("refresh_token").is_none(), "{body}");

    // The OAuth2 form login answers the same.
    let form = app
        .client
        .post(app.url("/login"))
        .form(&[
            ("grant_type", "password"),
            ("username", user.email.as_str()),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    let form = assert_problem(form, 403, "MFA_REQUIRED").await;
    let form_token = form["mfa_token"].as_str().expect("mfa_token").to_string();
    assert_eq!(form["methods"], json!(BOTH_METHODS), "{form}");
    assert!(form.get("access_token").is_none(), "{form}");
    assert_ne!(form_token, token);

    let response = with_code(&app, &token, &next_code(&app, &user.secret)).await;
    // spec-silent: a token answer is not cached, as POST /login's (RFC 6749 §5.1).
    assert_eq!(response.headers()["cache-control"], "no-store");
    let tokens = pair(response).await;
    assert_eq!(tokens.body["token_type"], "bearer");
    assert_eq!(tokens.body["expires_in"], 1800);
    let me = app.me(&tokens.access).await;
    assert_eq!(me.status(), StatusCode::OK);
    assert_eq!(me.json::<Value>().await.unwrap()["email"], user.email);
    assert_eq!(
        app.me(&pair(app.refresh(&tokens.refresh).await).await.access)
            .await
            .status(),
        StatusCode::OK
    );

    // Spent: not even a fresh, valid code of the next step gets through it again.
    assert_problem(
        with_code(&app, &token, &next_code(&app, &user.secret)).await,
        401,
        "INVALID_TOKEN",
    )
    .await;
    // The form login's token completes the same way.
    let form_pair = pair(with_code(&app, &form_token, &next_code(&app, &user.secret)).await).await;
    assert_eq!(app.me(&form_pair.access).await.status(), StatusCode::OK);
}

// ---------------------------------------------------------------------------------------------
// 4. The code rules.

/// Moves the clock on by whole steps until the codes of the steps around the current one are
/// all different (so that a code of one step cannot pass for another's).
fn distinct_codes_around_now(app: &TestApp, secret: &str) {
    loop {
        let step = step_of(app.clock.now_ms());
        let codes: HashSet<String> = (step - 3..=step + 5)
            .map(|s| code_for_step(secret, s))
            .collect();
        if codes.len() == 9 {
            return;
        }
        app.clock.advance_ms(STEP_MS);
    }
}

#[tokio::test]
async fn codes_have_one_step_of_skew_and_are_never_accepted_twice_or_out_of_order() {
    // Many wrong codes below: the lockout is tested on its own.
    let app = spawn_app_with(&[("LOGIN_FREE_ATTEMPTS", "50")]).await;
    freeze_clock(&app);
    let user = enrolled(&app).await;
    // Well past the enrolment's step.
    app.clock.advance_ms(20 * STEP_MS);
    distinct_codes_around_now(&app, &user.secret);
    let s = step_of(app.clock.now_ms());
    let code = |k: i64| code_for_step(&user.secret, s + k);

    assert_problem(
        with_code(
            &app,
            &challenge(&app, &user.email).await,
            &wrong_code(&app, &user.secret),
        )
        .await,
        401,
        "INVALID_MFA_CODE",
    )
    .await;
    // Two steps either way: refused.
    for k in [-2, 2] {
        assert_problem(
            with_code(&app, &challenge(&app, &user.email).await, &code(k)).await,
            401,
            "INVALID_MFA_CODE",
        )
        .await;
    }
    // One step before: accepted.
    pair(with_code(&app, &challenge(&app, &user.email).await, &code(-1)).await).await;
    // A step on (the clock at s + 1), the code one step after it (s + 2): accepted.
    app.clock.advance_ms(STEP_MS);
    pair(with_code(&app, &challenge(&app, &user.email).await, &code(2)).await).await;

    // Replayed: the same code, of the same step, on a fresh mfa_token.
    assert_problem(
        with_code(&app, &challenge(&app, &user.email).await, &code(2)).await,
        401,
        "INVALID_MFA_CODE",
    )
    .await;
    // Older than the last accepted (s + 2), though within the skew of now (s + 1): the current
    // step's code, and the one before.
    for k in [1, 0] {
        assert_problem(
            with_code(&app, &challenge(&app, &user.email).await, &code(k)).await,
            401,
            "INVALID_MFA_CODE",
        )
        .await;
    }
    // A later step is accepted again, with spaces inside the code (they are ignored).
    app.clock.advance_ms(2 * STEP_MS);
    let spaced = format!("{} {}", &code(3)[..3], &code(3)[3..]);
    pair(with_code(&app, &challenge(&app, &user.email).await, &spaced).await).await;
}

// ---------------------------------------------------------------------------------------------
// 5. The mfa_token's life.

#[tokio::test]
async fn an_mfa_token_lives_its_lifetime_to_the_millisecond() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let user = enrolled(&app).await;
    app.clock.advance_ms(STEP_MS);

    let start = app.clock.now_ms();
    let token = challenge(&app, &user.email).await;
    app.clock.set_ms(start + MFA_TOKEN_MS - 1);
    pair(with_code(&app, &token, &code_now(&app, &user.secret)).await).await;

    let start = app.clock.now_ms();
    let token = challenge(&app, &user.email).await;
    app.clock.set_ms(start + MFA_TOKEN_MS);
    assert_problem(
        with_code(&app, &token, &code_now(&app, &user.secret)).await,
        401,
        "INVALID_TOKEN",
    )
    .await;
}

#[tokio::test]
async fn the_mfa_token_lifetime_is_mfa_token_expire_seconds() {
    let app = spawn_app_with(&[("MFA_TOKEN_EXPIRE_SECONDS", "60")]).await;
    freeze_clock(&app);
    let user = enrolled(&app).await;
    app.clock.advance_ms(STEP_MS);

    let start = app.clock.now_ms();
    let body = assert_problem(app.login(&user.email, PASSWORD).await, 403, "MFA_REQUIRED").await;
    assert_eq!(body["expires_in"], 60, "{body}");
    let token = body["mfa_token"].as_str().unwrap().to_string();
    app.clock.set_ms(start + 60_000 - 1);
    pair(with_code(&app, &token, &code_now(&app, &user.secret)).await).await;

    let start = app.clock.now_ms();
    let token = challenge(&app, &user.email).await;
    app.clock.set_ms(start + 60_000);
    assert_problem(
        with_code(&app, &token, &code_now(&app, &user.secret)).await,
        401,
        "INVALID_TOKEN",
    )
    .await;
}

#[tokio::test]
async fn an_mfa_token_dies_after_five_wrong_codes() {
    let app = spawn_app_with(&[("LOGIN_FREE_ATTEMPTS", "50")]).await;
    freeze_clock(&app);
    let user = enrolled(&app).await;
    app.clock.advance_ms(STEP_MS);

    let token = challenge(&app, &user.email).await;
    let wrong = wrong_code(&app, &user.secret);
    for _ in 0..5 {
        assert_problem(
            with_code(&app, &token, &wrong).await,
            401,
            "INVALID_MFA_CODE",
        )
        .await;
    }
    let right = code_now(&app, &user.secret);
    assert_problem(with_code(&app, &token, &right).await, 401, "INVALID_TOKEN").await;
    // The account is fine: a new mfa_token and a code complete a login.
    pair(
        with_code(
            &app,
            &challenge(&app, &user.email).await,
            &next_code(&app, &user.secret),
        )
        .await,
    )
    .await;
}

#[tokio::test]
async fn an_mfa_token_dies_when_the_password_changes() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let user = enrolled(&app).await;
    let token = challenge(&app, &user.email).await;

    let changed = call(
        &app,
        Method::PUT,
        "/me/password",
        &user.session.access,
        &json!({
            "current_password": PASSWORD,
            "new_password": NEW_PASSWORD,
            "code": next_code(&app, &user.secret),
        }),
    )
    .await;
    assert_eq!(changed.status(), StatusCode::NO_CONTENT);
    assert_problem(
        with_code(&app, &token, &next_code(&app, &user.secret)).await,
        401,
        "INVALID_TOKEN",
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// 6. The lockout of the second factor.

#[tokio::test]
async fn wrong_codes_lock_the_second_factor_across_mfa_tokens_until_the_lock_passes() {
    // The defaults: 5 failures answered at once, then a 1 s lock, doubling.
    let app = spawn_app().await;
    freeze_clock(&app);
    let user = enrolled(&app).await;
    app.clock.advance_ms(STEP_MS);
    let key = format!("MFA:{}", user.id);
    let wrong = wrong_code(&app, &user.secret);

    let first = challenge(&app, &user.email).await;
    for _ in 0..3 {
        assert_problem(
            with_code(&app, &first, &wrong).await,
            401,
            "INVALID_MFA_CODE",
        )
        .await;
    }
    // A correct password (a new mfa_token) does not clear the count.
    let second = challenge(&app, &user.email).await;
    // spec-silent (read from "the same rules as passwords"): the fifth failure locks as it is
    // counted and is still answered 401, as the fifth wrong password is.
    for _ in 0..2 {
        assert_problem(
            with_code(&app, &second, &wrong).await,
            401,
            "INVALID_MFA_CODE",
        )
        .await;
    }
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM login_attempts WHERE email = $1 AND locked_until IS NOT NULL",
            &key
        )
        .await,
        1,
        "the lock is kept under {key}"
    );

    // Locked: even the right code, or a recovery code, is refused.
    let right = code_now(&app, &user.secret);
    let refused = with_code(&app, &second, &right).await;
    assert_eq!(retry_after(&refused), "1");
    assert_problem(refused, 429, "TOO_MANY_REQUESTS").await;
    let refused = with_recovery(&app, &second, &user.recovery[0]).await;
    assert_eq!(retry_after(&refused), "1");
    assert_problem(refused, 429, "TOO_MANY_REQUESTS").await;

    // At the lock's end the right code works (on a new mfa_token: the second has had its tries).
    app.clock.advance_ms(1_000);
    pair(with_code(&app, &challenge(&app, &user.email).await, &right).await).await;

    // The right code cleared the count: four more failures are answered at once, and do not lock.
    let third = challenge(&app, &user.email).await;
    for _ in 0..4 {
        assert_problem(
            with_code(&app, &third, &wrong).await,
            401,
            "INVALID_MFA_CODE",
        )
        .await;
    }
    pair(
        with_code(
            &app,
            &challenge(&app, &user.email).await,
            &next_code(&app, &user.secret),
        )
        .await,
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// 7. Recovery codes.

#[tokio::test]
async fn recovery_codes_work_once_each_and_a_new_set_voids_the_old() {
    let sink = SmtpSink::start().await;
    let app = app_with_mail(&sink, NOTICES).await;
    freeze_clock(&app);
    let user = enrolled(&app).await;
    // The enrolment's notice first, so that the later ones are told apart from it.
    let (seen, _) = notice(&sink, &user.email, 0, "second factor").await;

    let login =
        pair(with_recovery(&app, &challenge(&app, &user.email).await, &user.recovery[0]).await)
            .await;
    assert_eq!(claims_of(&login.access)["amr"], json!(["pwd", "mfa"]));
    assert_eq!(app.me(&login.access).await.status(), StatusCode::OK);
    // Once only.
    assert_problem(
        with_recovery(&app, &challenge(&app, &user.email).await, &user.recovery[0]).await,
        401,
        "INVALID_MFA_CODE",
    )
    .await;
    let status = mfa_status(&app, &login.access).await;
    assert_eq!(status["recovery_codes_remaining"], 9, "{status}");
    assert_eq!(status["methods"], json!(BOTH_METHODS), "{status}");
    // "A recovery code was used" (9 remaining).
    let (seen, text) = notice(&sink, &user.email, seen, "recovery code").await;
    // spec-silent: the number left is written in digits.
    assert!(
        text.split(|c: char| !c.is_ascii_alphanumeric())
            .any(|word| word == "9"),
        "the number left: {text}"
    );

    // Case, spaces and hyphens do not matter.
    let messy = format!(" {} ", user.recovery[1].to_uppercase().replace('-', " - "));
    pair(with_recovery(&app, &challenge(&app, &user.email).await, &messy).await).await;
    let bare_code = user.recovery[2].replace('-', "");
    pair(with_recovery(&app, &challenge(&app, &user.email).await, &bare_code).await).await;
    assert_eq!(
        mfa_status(&app, &login.access).await["recovery_codes_remaining"],
        7
    );

    // A new set, with the password and a code.
    let fresh = recovery_codes(
        call(
            &app,
            Method::POST,
            "/me/mfa/recovery-codes",
            &login.access,
            &json!({ "password": PASSWORD, "code": next_code(&app, &user.secret) }),
        )
        .await,
    )
    .await;
    assert!(
        fresh.iter().all(|c| !user.recovery.contains(c)),
        "a new set: {fresh:?}"
    );
    assert_eq!(
        mfa_status(&app, &login.access).await["recovery_codes_remaining"],
        10
    );
    // The old set's unused codes are void; the new ones work.
    assert_problem(
        with_recovery(&app, &challenge(&app, &user.email).await, &user.recovery[3]).await,
        401,
        "INVALID_MFA_CODE",
    )
    .await;
    let again =
        pair(with_recovery(&app, &challenge(&app, &user.email).await, &fresh[0]).await).await;
    assert_eq!(claims_of(&again.access)["amr"], json!(["pwd", "mfa"]));
    assert_eq!(
        mfa_status(&app, &again.access).await["recovery_codes_remaining"],
        9
    );
    notice(&sink, &user.email, seen, "recovery code").await;
}

#[tokio::test]
async fn recovery_code_leaves_the_methods_when_none_are_left() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let user = enrolled(&app).await;
    for code in &user.recovery {
        pair(with_recovery(&app, &challenge(&app, &user.email).await, code).await).await;
    }
    let status = mfa_status(&app, &user.session.access).await;
    assert_eq!(status["totp"], true, "{status}");
    assert_eq!(status["recovery_codes_remaining"], 0, "{status}");
    assert_eq!(status["methods"], json!(["totp"]), "{status}");
    // spec-silent: the login's `methods` follow the same rule as GET /me/mfa's (what the login
    // can be completed with).
    let body = assert_problem(app.login(&user.email, PASSWORD).await, 403, "MFA_REQUIRED").await;
    assert_eq!(body["methods"], json!(["totp"]), "{body}");
}

// ---------------------------------------------------------------------------------------------
// 8. Step-up.

/// The sensitive changes.
#[derive(Clone, Copy, Debug)]
enum Sensitive {
    PutEmail,
    PatchEmail,
    Password,
    DeleteMe,
    RecoveryCodes,
}

impl Sensitive {
    /// The request with `password` (and `new_email` where it applies), `extra` fields added.
    async fn send(
        self,
        app: &TestApp,
        access: &str,
        password: &str,
        new_email: &str,
        extra: Value,
    ) -> Response {
        let (method, path, mut body) = match self {
            Self::PutEmail => (
                Method::PUT,
                "/me",
                json!({ "email": new_email, "current_password": password }),
            ),
            Self::PatchEmail => (
                Method::PATCH,
                "/me",
                json!({ "email": new_email, "current_password": password }),
            ),
            Self::Password => (
                Method::PUT,
                "/me/password",
                json!({ "current_password": password, "new_password": NEW_PASSWORD }),
            ),
            Self::DeleteMe => (Method::DELETE, "/me", json!({ "password": password })),
            Self::RecoveryCodes => (
                Method::POST,
                "/me/mfa/recovery-codes",
                json!({ "password": password }),
            ),
        };
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        call(app, method, path, access, &body).await
    }
}

/// A session of `user` that passed the second factor longer than MFA_STEP_UP_SECONDS (the
/// default) ago: a fresh MFA login, then the clock moved past the window (well within the
/// access token's 30 minutes).
async fn stale_session(app: &TestApp, user: &Enrolled) -> Tokens {
    let session = mfa_login_ok(app, &user.email, &user.secret).await;
    // spec-silent: whether the window's last instant is in it; a second past it is not.
    app.clock.advance_ms(STEP_UP_MS + 1_000);
    session
}

/// For an account with TOTP, from a session past its step-up window: no code → 403
/// STEP_UP_REQUIRED (before the password is looked at); a wrong code → 403 INVALID_MFA_CODE; a
/// wrong password with a right code → 403 INVALID_CREDENTIALS, the code unspent; the password
/// and that code → done.
async fn step_up_is_needed(case: Sensitive) {
    let app = spawn_app_with(&[("LOGIN_FREE_ATTEMPTS", "50")]).await;
    freeze_clock(&app);
    let user = enrolled(&app).await;
    let session = stale_session(&app, &user).await;
    let new_email = unique_email();
    let send = async |password: &str, extra: Value| {
        case.send(&app, &session.access, password, &new_email, extra)
            .await
    };

    let body = assert_problem(send(PASSWORD, json!({})).await, 403, "STEP_UP_REQUIRED").await;
    assert_eq!(body["methods"], json!(BOTH_METHODS), "{body}");
    // Checked before the password.
    assert_problem(
        send(WRONG_PASSWORD, json!({})).await,
        403,
        "STEP_UP_REQUIRED",
    )
    .await;
    assert_problem(
        send(PASSWORD, json!({ "code": wrong_code(&app, &user.secret) })).await,
        403,
        "INVALID_MFA_CODE",
    )
    .await;
    // The password is checked before the code, which is not spent on a wrong password.
    let code = next_code(&app, &user.secret);
    assert_problem(
        send(WRONG_PASSWORD, json!({ "code": code })).await,
        403,
        "INVALID_CREDENTIALS",
    )
    .await;
    let done = send(PASSWORD, json!({ "code": code })).await;

    match case {
        Sensitive::PutEmail | Sensitive::PatchEmail => {
            assert_eq!(done.status(), StatusCode::OK, "{case:?}");
            let me: Value = done.json().await.unwrap();
            assert_eq!(me["email"], new_email);
            challenge(&app, &new_email).await;
            assert_problem(
                app.login(&user.email, PASSWORD).await,
                401,
                "INVALID_CREDENTIALS",
            )
            .await;
            // A code that passes step-up renews the window: the next change needs none.
            let newer = unique_email();
            let again = Sensitive::PatchEmail
                .send(&app, &session.access, PASSWORD, &newer, json!({}))
                .await;
            assert_eq!(again.status(), StatusCode::OK);
            challenge(&app, &newer).await;
        }
        Sensitive::Password => {
            assert_eq!(done.status(), StatusCode::NO_CONTENT);
            assert_problem(
                app.login(&user.email, PASSWORD).await,
                401,
                "INVALID_CREDENTIALS",
            )
            .await;
            assert_problem(
                app.login(&user.email, NEW_PASSWORD).await,
                403,
                "MFA_REQUIRED",
            )
            .await;
            assert_eq!(app.me(&session.access).await.status(), StatusCode::OK);
        }
        Sensitive::DeleteMe => {
            assert_eq!(done.status(), StatusCode::NO_CONTENT);
            assert_eq!(
                app.count("SELECT COUNT(*) FROM users WHERE id = $1", &user.id)
                    .await,
                0
            );
            assert_problem(app.me(&session.access).await, 401, "UNAUTHORIZED").await;
            assert_problem(
                app.login(&user.email, PASSWORD).await,
                401,
                "INVALID_CREDENTIALS",
            )
            .await;
        }
        Sensitive::RecoveryCodes => {
            let fresh = recovery_codes(done).await;
            assert!(fresh.iter().all(|c| !user.recovery.contains(c)));
            assert_problem(
                with_recovery(&app, &challenge(&app, &user.email).await, &user.recovery[0]).await,
                401,
                "INVALID_MFA_CODE",
            )
            .await;
        }
    }
}

#[tokio::test]
async fn step_up_put_me_with_a_new_email() {
    step_up_is_needed(Sensitive::PutEmail).await;
}

#[tokio::test]
async fn step_up_patch_me_with_a_new_email() {
    step_up_is_needed(Sensitive::PatchEmail).await;
}

#[tokio::test]
async fn step_up_put_me_password() {
    step_up_is_needed(Sensitive::Password).await;
}

#[tokio::test]
async fn step_up_delete_me() {
    step_up_is_needed(Sensitive::DeleteMe).await;
}

#[tokio::test]
async fn step_up_new_recovery_codes() {
    step_up_is_needed(Sensitive::RecoveryCodes).await;
}

#[tokio::test]
async fn a_name_change_needs_no_step_up() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let user = enrolled(&app).await;
    let session = stale_session(&app, &user).await;
    let response = call(
        &app,
        Method::PUT,
        "/me",
        &session.access,
        &json!({ "name": "Renamed" }),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.json::<Value>().await.unwrap()["name"], "Renamed");
}

#[tokio::test]
async fn a_recovery_code_passes_step_up() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let user = enrolled(&app).await;
    let session = stale_session(&app, &user).await;
    let response = Sensitive::Password
        .send(
            &app,
            &session.access,
            PASSWORD,
            "",
            json!({ "recovery_code": user.recovery[0] }),
        )
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        mfa_status(&app, &session.access).await["recovery_codes_remaining"],
        9
    );
    assert_problem(
        app.login(&user.email, NEW_PASSWORD).await,
        403,
        "MFA_REQUIRED",
    )
    .await;
}

#[tokio::test]
async fn within_the_step_up_window_no_code_is_needed() {
    let app = spawn_app().await;
    freeze_clock(&app);
    // Right after an MFA login.
    let user = enrolled(&app).await;
    let session = mfa_login_ok(&app, &user.email, &user.secret).await;
    app.clock.advance_ms(STEP_UP_MS - 60_000);
    let response = Sensitive::Password
        .send(&app, &session.access, PASSWORD, "", json!({}))
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_problem(
        app.login(&user.email, NEW_PASSWORD).await,
        403,
        "MFA_REQUIRED",
    )
    .await;
    assert_problem(
        app.login(&user.email, PASSWORD).await,
        401,
        "INVALID_CREDENTIALS",
    )
    .await;

    // Right after the enrolment's confirmation, in the session that confirmed it.
    let other = enrolled(&app).await;
    let new_email = unique_email();
    let response = Sensitive::PutEmail
        .send(&app, &other.session.access, PASSWORD, &new_email, json!({}))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.json::<Value>().await.unwrap()["email"], new_email);
}

#[tokio::test]
async fn with_mfa_step_up_seconds_0_every_sensitive_change_needs_a_code() {
    let app = spawn_app_with(&[("MFA_STEP_UP_SECONDS", "0")]).await;
    freeze_clock(&app);
    let user = enrolled(&app).await;
    let session = mfa_login_ok(&app, &user.email, &user.secret).await;
    assert_problem(
        Sensitive::Password
            .send(&app, &session.access, PASSWORD, "", json!({}))
            .await,
        403,
        "STEP_UP_REQUIRED",
    )
    .await;
    let response = Sensitive::Password
        .send(
            &app,
            &session.access,
            PASSWORD,
            "",
            json!({ "code": next_code(&app, &user.secret) }),
        )
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn disabling_totp_always_needs_a_code_and_leaves_the_password_alone() {
    let sink = SmtpSink::start().await;
    let app = app_with_mail(&sink, NOTICES).await;
    freeze_clock(&app);
    let user = enrolled(&app).await;
    let (seen, _) = notice(&sink, &user.email, 0, "second factor").await;
    // A session that has just passed the second factor: no window for this one.
    let session = mfa_login_ok(&app, &user.email, &user.secret).await;
    let disable = async |body: Value| {
        call(&app, Method::DELETE, "/me/mfa/totp", &session.access, &body).await
    };

    let body = assert_problem(
        disable(json!({ "password": PASSWORD })).await,
        403,
        "STEP_UP_REQUIRED",
    )
    .await;
    assert_eq!(body["methods"], json!(BOTH_METHODS), "{body}");
    assert_problem(
        disable(json!({ "password": PASSWORD, "code": wrong_code(&app, &user.secret) })).await,
        403,
        "INVALID_MFA_CODE",
    )
    .await;
    let code = next_code(&app, &user.secret);
    assert_problem(
        disable(json!({ "password": WRONG_PASSWORD, "code": code })).await,
        403,
        "INVALID_CREDENTIALS",
    )
    .await;
    assert_eq!(mfa_status(&app, &session.access).await["totp"], true);

    let response = disable(json!({ "password": PASSWORD, "code": code })).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    // spec-silent: disabling the factor keeps the session that did it (it proved the password
    // and a code just now).

    let status = mfa_status(&app, &session.access).await;
    assert_eq!(status["totp"], false, "{status}");
    assert_eq!(status["methods"], json!([]), "{status}");
    assert_eq!(status["recovery_codes_remaining"], 0, "{status}");
    let login = pair(app.login(&user.email, PASSWORD).await).await;
    assert_eq!(claims_of(&login.access)["amr"], json!(["pwd"]));
    // "The second factor was removed from your account".
    notice(&sink, &user.email, seen, "removed").await;

    // Nothing left to disable or renew (a well-formed code, so that only the state refuses).
    assert_problem(
        disable(json!({ "password": PASSWORD, "code": next_code(&app, &user.secret) })).await,
        409,
        "MFA_NOT_ENABLED",
    )
    .await;
    assert_problem(
        call(
            &app,
            Method::POST,
            "/me/mfa/recovery-codes",
            &login.access,
            &json!({ "password": PASSWORD }),
        )
        .await,
        409,
        "MFA_NOT_ENABLED",
    )
    .await;
    // A new enrolment can begin.
    assert_eq!(
        start_enrolment(&app, &login.access, PASSWORD)
            .await
            .status(),
        StatusCode::OK
    );
}

// ---------------------------------------------------------------------------------------------
// 11. Claims.

#[tokio::test]
async fn tokens_carry_amr_and_auth_time_and_a_refresh_keeps_them() {
    let app = spawn_app().await;
    let t = freeze_clock(&app);
    let email = unique_email();
    let (_, login) = app.signed_up(&email).await;
    let claims = claims_of(&login.access);
    assert_eq!(claims["amr"], json!(["pwd"]), "{claims}");
    assert_eq!(claims["auth_time"].as_i64(), Some(t / 1000), "{claims}");
    // Refresh tokens carry neither.
    let refresh_claims = claims_of(&login.refresh);
    assert!(refresh_claims.get("amr").is_none(), "{refresh_claims}");
    assert!(
        refresh_claims.get("auth_time").is_none(),
        "{refresh_claims}"
    );

    app.clock.advance_ms(5_000);
    let refreshed = pair(app.refresh(&login.refresh).await).await;
    let claims = claims_of(&refreshed.access);
    assert_eq!(claims["amr"], json!(["pwd"]), "{claims}");
    assert_eq!(claims["auth_time"].as_i64(), Some(t / 1000), "{claims}");
    assert_eq!(claims["iat"].as_i64(), Some(t / 1000 + 5), "{claims}");

    let (secret, _) = enrol(&app, &refreshed.access).await;
    app.clock.advance_ms(60_000);
    let password_step = app.clock.now_ms();
    let token = challenge(&app, &email).await;
    app.clock.advance_ms(10_000);
    let mfa = pair(with_code(&app, &token, &code_now(&app, &secret)).await).await;
    let claims = claims_of(&mfa.access);
    assert_eq!(claims["amr"], json!(["pwd", "otp", "mfa"]), "{claims}");
    // spec-silent: "Unix seconds of the login" read as the time of the password step (the
    // login began there; the code completes it).
    assert_eq!(
        claims["auth_time"].as_i64(),
        Some(password_step / 1000),
        "{claims}"
    );

    app.clock.advance_ms(7_000);
    let refreshed = pair(app.refresh(&mfa.refresh).await).await;
    let claims = claims_of(&refreshed.access);
    assert_eq!(claims["amr"], json!(["pwd", "otp", "mfa"]), "{claims}");
    assert_eq!(
        claims["auth_time"].as_i64(),
        Some(password_step / 1000),
        "{claims}"
    );
    assert_eq!(
        claims["iat"].as_i64(),
        Some(app.clock.now_ms() / 1000),
        "{claims}"
    );
}

// ---------------------------------------------------------------------------------------------
// 12. What is stored.

/// Everything stored: on SQLite the database file and its WAL, byte for byte; on PostgreSQL
/// every column of every row of every table of the schema, as text.
async fn stored(app: &TestApp) -> Vec<u8> {
    match &app.sql {
        TestPool::Sqlite(_) => {
            let url = app.var("DATABASE_URL");
            let path = url
                .strip_prefix("sqlite://")
                .expect("a sqlite:// URL")
                .split('?')
                .next()
                .unwrap()
                .to_string();
            let mut bytes = std::fs::read(&path).expect("the database file");
            assert!(!bytes.is_empty());
            if let Ok(wal) = std::fs::read(format!("{path}-wal")) {
                bytes.extend(wal);
            }
            bytes
        }
        TestPool::Postgres(pool) => {
            let columns: Vec<(String, String)> = sqlx::query_as(
                "SELECT CAST(table_name AS TEXT), CAST(column_name AS TEXT) \
                 FROM information_schema.columns WHERE table_schema = current_schema()",
            )
            .fetch_all(pool)
            .await
            .unwrap();
            let mut bytes = Vec::new();
            for (table, column) in columns {
                let values: Vec<Option<String>> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                    r#"SELECT CAST("{column}" AS TEXT) FROM "{table}""#
                )))
                .fetch_all(pool)
                .await
                .unwrap();
                for value in values.into_iter().flatten() {
                    bytes.extend(value.into_bytes());
                    bytes.push(b'\n');
                }
            }
            bytes
        }
    }
}

/// The forms a secret could be stored in: base32 (either case), raw, hex (either case), base64.
/// The rows of `mfa_totp` with a sealed secret (the table and column the contract names).
async fn sealed_secrets(app: &TestApp) -> i64 {
    const SQL: &str = "SELECT COUNT(*) FROM mfa_totp WHERE secret_sealed IS NOT NULL";
    match &app.sql {
        TestPool::Sqlite(pool) => sqlx::query_scalar(SQL).fetch_one(pool).await,
        TestPool::Postgres(pool) => sqlx::query_scalar(SQL).fetch_one(pool).await,
    }
    .unwrap()
}

fn secret_forms(secret: &str) -> Vec<(String, Vec<u8>)> {
    use base64::Engine as _;
    let raw = secret_bytes(secret);
    let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    vec![
        ("base32".into(), secret.as_bytes().to_vec()),
        (
            "base32, lower case".into(),
            secret.to_lowercase().into_bytes(),
        ),
        ("raw bytes".into(), raw.clone()),
        ("hex".into(), hex.clone().into_bytes()),
        ("hex, upper case".into(), hex.to_uppercase().into_bytes()),
        (
            "base64".into(),
            base64::engine::general_purpose::STANDARD_NO_PAD
                .encode(&raw)
                .into_bytes(),
        ),
        (
            "base64url".into(),
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(&raw)
                .into_bytes(),
        ),
    ]
}

fn assert_absent(haystack: &[u8], forms: &[(String, Vec<u8>)]) {
    for (what, needle) in forms {
        assert!(
            !haystack
                .windows(needle.len())
                .any(|w| w == needle.as_slice()),
            "found in the database: {what} ({})",
            String::from_utf8_lossy(needle)
        );
    }
}

#[tokio::test]
async fn the_secret_and_the_recovery_codes_are_not_stored_readably() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let (_, session) = app.signed_up(&unique_email()).await;
    let response = start_enrolment(&app, &session.access, PASSWORD).await;
    assert_eq!(response.status(), StatusCode::OK);
    let secret = response.json::<Value>().await.unwrap()["secret"]
        .as_str()
        .unwrap()
        .to_string();
    // Pending: not readable either.
    assert_absent(&stored(&app).await, &secret_forms(&secret));

    let codes =
        recovery_codes(confirm(&app, &session.access, &code_now(&app, &secret)).await).await;
    assert_eq!(mfa_status(&app, &session.access).await["totp"], true);
    assert_eq!(sealed_secrets(&app).await, 1);
    let mut forms = secret_forms(&secret);
    for code in &codes {
        let plain = code.replace('-', "");
        forms.push((format!("recovery code {code}"), code.clone().into_bytes()));
        forms.push((format!("recovery code {plain}"), plain.clone().into_bytes()));
        forms.push((
            format!("recovery code {}", plain.to_uppercase()),
            plain.to_uppercase().into_bytes(),
        ));
    }
    assert_absent(&stored(&app).await, &forms);
}

// ---------------------------------------------------------------------------------------------
// 13. Bad input.

#[tokio::test]
async fn bad_second_step_input_is_a_validation_failure_not_an_error() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let user = enrolled(&app).await;
    let token = challenge(&app, &user.email).await;
    let right = next_code(&app, &user.secret);

    for (body, fields) in [
        (json!({ "mfa_token": token }), None),
        (
            json!({ "mfa_token": token, "code": right, "recovery_code": user.recovery[0] }),
            None,
        ),
        (
            json!({ "mfa_token": token, "code": "12a456" }),
            Some("code"),
        ),
        (json!({ "mfa_token": token, "code": "12345" }), Some("code")),
        (
            json!({ "mfa_token": token, "code": "1234567" }),
            Some("code"),
        ),
        (
            json!({ "mfa_token": token, "code": "１２３４５６" }),
            Some("code"),
        ),
        (
            json!({ "mfa_token": token, "code": "-12345" }),
            Some("code"),
        ),
        // spec-silent: an empty or missing mfa_token is a field error (as an empty reset token
        // is), not an unknown token.
        (json!({ "mfa_token": "", "code": right }), Some("mfa_token")),
        (json!({ "code": right }), Some("mfa_token")),
        // spec-silent: as every body here, unknown fields and wrong types are refused.
        (
            json!({ "mfa_token": token, "code": right, "remember": true }),
            None,
        ),
        (json!({ "mfa_token": token, "code": 123456 }), None),
    ] {
        let response = login_mfa(&app, &body).await;
        let problem = assert_problem(response, 422, "VALIDATION_FAILED").await;
        if let Some(field) = fields {
            assert_eq!(error_fields(&problem), [field], "{body}: {problem}");
        }
    }
    // Not JSON at all.
    let response = app
        .client
        .post(app.url("/login/mfa"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert!(response.status().is_client_error(), "{}", response.status());

    // A well-formed body with a token the server never gave.
    assert_problem(
        with_code(&app, "garbage", &right).await,
        401,
        "INVALID_TOKEN",
    )
    .await;
    assert_problem(
        with_code(&app, &"A".repeat(43), &right).await,
        401,
        "INVALID_TOKEN",
    )
    .await;

    // spec-silent: refused bodies are not tries on the token: it still completes the login.
    pair(with_code(&app, &token, &right).await).await;

    // The other places a code is sent check its form too.
    let (_, other) = app.signed_up(&unique_email()).await;
    assert_eq!(
        start_enrolment(&app, &other.access, PASSWORD)
            .await
            .status(),
        StatusCode::OK
    );
    let body = assert_problem(
        confirm(&app, &other.access, "abcdef").await,
        422,
        "VALIDATION_FAILED",
    )
    .await;
    assert_eq!(error_fields(&body), ["code"]);
    let body = assert_problem(
        call(
            &app,
            Method::DELETE,
            "/me/mfa/totp",
            &user.session.access,
            &json!({ "password": PASSWORD, "code": "12345x" }),
        )
        .await,
        422,
        "VALIDATION_FAILED",
    )
    .await;
    assert_eq!(error_fields(&body), ["code"]);

    // No bearer token.
    for (method, path) in [
        (Method::GET, "/me/mfa"),
        (Method::POST, "/me/mfa/totp"),
        (Method::POST, "/me/mfa/totp/confirm"),
        (Method::DELETE, "/me/mfa/totp"),
        (Method::POST, "/me/mfa/recovery-codes"),
        (Method::DELETE, "/me/mfa/reset"),
    ] {
        let response = app
            .client
            .request(method, app.url(path))
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_problem(response, 401, "UNAUTHORIZED").await;
    }
}

/// The step-up window (MFA_STEP_UP_SECONDS) after an MFA login holds through its last
/// millisecond and is over at its end.
#[tokio::test]
async fn the_step_up_window_ends_to_the_millisecond() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let user = enrolled(&app).await;
    let session = mfa_login_ok(&app, &user.email, &user.secret).await;
    let body = json!({ "password": PASSWORD });
    let path = "/me/mfa/recovery-codes";
    app.clock.advance_ms(STEP_UP_MS - 1);
    let response = call(&app, Method::POST, path, &session.access, &body).await;
    assert_eq!(response.status(), StatusCode::OK);
    app.clock.advance_ms(1);
    let response = call(&app, Method::POST, path, &session.access, &body).await;
    assert_problem(response, 403, "STEP_UP_REQUIRED").await;
}
