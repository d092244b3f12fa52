//! Attacks on passkeys: each test tries to break one rule of the contract (an attack is a test).
//! Ceremonies (single use, bound to their purpose, session, token, account and stamp, and
//! short-lived), what is verified in an assertion or a registration (origin, RP ID, type,
//! signature, authenticator data, flags, user handle, counter), whose credential may be used
//! where, accounts that are gone or disabled, enumeration, and bytes no browser would send.
//!
//! The helpers are in `passkeys.rs`; the software passkey, and how it lies, in `soft_passkey.rs`.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::*;
use crate::mfa::*;
use crate::passkeys::*;
use crate::smtp::{RESET, SmtpSink, WAIT, app_with_mail};
use crate::soft_passkey::*;

/// A base64url challenge no server issued.
fn stray_challenge() -> String {
    b64(uuid::Uuid::new_v4().as_bytes())
}

/// The JSON of `passkey`'s assertion for `options` through `client`.
async fn lie(passkey: &mut SoftPasskey, options: &Value, client: &Client) -> Value {
    passkey
        .get_with(options, client)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .json()
}

// ---------------------------------------------------------------------------------------------
// 1. Ceremonies are single use.

#[tokio::test]
async fn a_sign_in_ceremony_is_used_once() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let mut user = holder(&app).await;

    let options = usernameless_options(&app).await;
    let credential = user.passkey.get(&options).await;
    pair(passkey_login(&app, &credential).await).await;
    // The same assertion again.
    assert_problem(
        passkey_login(&app, &credential).await,
        401,
        "PASSKEY_CHALLENGE_INVALID",
    )
    .await;
    // A new assertion (the counter grown) over the spent challenge.
    let again = user.passkey.get(&options).await;
    let body = assert_problem(
        passkey_login(&app, &again).await,
        401,
        "PASSKEY_CHALLENGE_INVALID",
    )
    .await;
    assert!(body["detail"].is_string());
}

#[tokio::test]
async fn a_ceremony_is_gone_once_taken_even_when_the_assertion_failed() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let mut user = holder(&app).await;

    let options = usernameless_options(&app).await;
    let mut bad = user
        .passkey
        .get_with(&options, &Client::default())
        .await
        .unwrap();
    bad.flip_signature_byte(10);
    assert_problem(
        passkey_login(&app, &bad.json()).await,
        401,
        "INVALID_PASSKEY",
    )
    .await;
    let good = user.passkey.get(&options).await;
    assert_problem(
        passkey_login(&app, &good).await,
        401,
        "PASSKEY_CHALLENGE_INVALID",
    )
    .await;
    // A new ceremony works.
    sign_in(&app, &mut user.passkey).await;
}

#[tokio::test]
async fn a_registration_ceremony_is_used_once() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let (_, session) = app.signed_up(&unique_email()).await;
    let options = creation_options(&app, &session.access).await;
    let credential = soft(&app).create(&options).await;
    created(register_credential(&app, &session.access, &credential, None).await).await;
    assert_problem(
        register_credential(&app, &session.access, &credential, None).await,
        401,
        "PASSKEY_CHALLENGE_INVALID",
    )
    .await;
    // Another authenticator answering the spent challenge.
    let other = soft(&app).create(&options).await;
    assert_problem(
        register_credential(&app, &session.access, &other, None).await,
        401,
        "PASSKEY_CHALLENGE_INVALID",
    )
    .await;
    assert_eq!(passkeys(&app, &session.access).await.len(), 1);
}

#[tokio::test]
async fn a_step_up_ceremony_is_used_once() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let mut user = holder(&app).await;
    let options = options_of(step_up_options(&app, &user.session.access).await).await;
    let credential = user.passkey.get(&options).await;
    assert_eq!(
        step_up(&app, &user.session.access, &credential)
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    assert_problem(
        step_up(&app, &user.session.access, &credential).await,
        401,
        "PASSKEY_CHALLENGE_INVALID",
    )
    .await;
}

#[tokio::test]
async fn concurrent_uses_of_one_assertion_open_one_session() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let mut user = holder(&app).await;
    let options = usernameless_options(&app).await;
    let credential = user.passkey.get(&options).await;
    let requests = (0..8)
        .map(|_| {
            let client = app.client.clone();
            let url = app.url("/login/passkey");
            let body = json!({ "credential": credential });
            async move {
                let response = client.post(url).json(&body).send().await.unwrap();
                let status = response.status();
                let body: Value = response.json().await.unwrap();
                (status, body)
            }
        })
        .collect();
    let results = concurrently(requests).await;
    let ok = results.iter().filter(|(s, _)| *s == StatusCode::OK).count();
    assert_eq!(ok, 1, "{results:?}");
    for (status, body) in results.iter().filter(|(s, _)| *s != StatusCode::OK) {
        assert_eq!(*status, StatusCode::UNAUTHORIZED, "{body}");
        assert_eq!(body["code"], "PASSKEY_CHALLENGE_INVALID", "{body}");
    }
    assert_eq!(
        app.count("SELECT COUNT(*) FROM sessions WHERE user_id = $1", &user.id)
            .await,
        2,
        "the registering session and one more"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. A ceremony is for one purpose, session, token, account and stamp.

#[tokio::test]
async fn a_challenge_of_another_purpose_is_refused_and_left_for_its_own() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let mut user = holder(&app).await;
    let access = user.session.access.clone();

    // A sign-in challenge presented as a step-up, then used as a sign-in.
    let login = usernameless_options(&app).await;
    let credential = user.passkey.get(&login).await;
    assert_problem(
        step_up(&app, &access, &credential).await,
        401,
        "PASSKEY_CHALLENGE_INVALID",
    )
    .await;
    // (The taking is by challenge *and* purpose: the sign-in's ceremony is still there.)
    pair(passkey_login(&app, &credential).await).await;

    // A step-up challenge presented as a sign-in.
    let step = options_of(step_up_options(&app, &access).await).await;
    let credential = user.passkey.get(&step).await;
    assert_problem(
        passkey_login(&app, &credential).await,
        401,
        "PASSKEY_CHALLENGE_INVALID",
    )
    .await;
    assert_eq!(
        step_up(&app, &access, &credential).await.status(),
        StatusCode::NO_CONTENT
    );

    // A second-factor challenge presented as a sign-in, and a sign-in's as a second factor.
    let (token, _) = password_step(&app, &user.email).await;
    let mfa = options_of(mfa_passkey_options(&app, &token).await).await;
    let credential = user.passkey.get(&mfa).await;
    assert_problem(
        passkey_login(&app, &credential).await,
        401,
        "PASSKEY_CHALLENGE_INVALID",
    )
    .await;
    let login = usernameless_options(&app).await;
    let from_login = user.passkey.get(&login).await;
    assert_problem(
        with_passkey(&app, &token, &from_login).await,
        401,
        "PASSKEY_CHALLENGE_INVALID",
    )
    .await;
    pair(with_passkey(&app, &token, &credential).await).await;

    // A registration challenge answered with an assertion, and a sign-in challenge with a
    // registration.
    let register = creation_options(&app, &access).await;
    let assertion = lie(&mut user.passkey, &register, &Client::ignoring_allow_list()).await;
    assert_problem(
        passkey_login(&app, &assertion).await,
        401,
        "PASSKEY_CHALLENGE_INVALID",
    )
    .await;
    let login = usernameless_options(&app).await;
    let mut other = soft(&app);
    let registration = other
        .create_with(
            &register,
            &Client::challenge(login["publicKey"]["challenge"].as_str().unwrap()),
        )
        .await
        .unwrap();
    assert_problem(
        register_credential(&app, &access, &registration.json(), None).await,
        401,
        "PASSKEY_CHALLENGE_INVALID",
    )
    .await;
    assert_eq!(passkeys(&app, &access).await.len(), 1);
}

#[tokio::test]
async fn a_registration_ceremony_belongs_to_its_session_and_account() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let email = unique_email();
    let (_, first) = app.signed_up(&email).await;
    let second = app.login_ok(&email).await;
    let (_, stranger) = app.signed_up(&unique_email()).await;

    // Another session of the same account.
    let options = creation_options(&app, &first.access).await;
    let credential = soft(&app).create(&options).await;
    assert_problem(
        register_credential(&app, &second.access, &credential, None).await,
        401,
        "PASSKEY_CHALLENGE_INVALID",
    )
    .await;
    // The ceremony was taken: its own session cannot use it any more either.
    assert_problem(
        register_credential(&app, &first.access, &credential, None).await,
        401,
        "PASSKEY_CHALLENGE_INVALID",
    )
    .await;

    // Another account: the stranger would get a passkey that says it is for the first account.
    let options = creation_options(&app, &first.access).await;
    let credential = soft(&app).create(&options).await;
    assert_problem(
        register_credential(&app, &stranger.access, &credential, None).await,
        401,
        "PASSKEY_CHALLENGE_INVALID",
    )
    .await;
    assert!(passkeys(&app, &first.access).await.is_empty());
    assert!(passkeys(&app, &stranger.access).await.is_empty());
}

#[tokio::test]
async fn a_step_up_ceremony_belongs_to_its_session() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let mut user = holder(&app).await;
    let other = sign_in(&app, &mut user.passkey).await;
    let options = options_of(step_up_options(&app, &user.session.access).await).await;
    let credential = user.passkey.get(&options).await;
    assert_problem(
        step_up(&app, &other.access, &credential).await,
        401,
        "PASSKEY_CHALLENGE_INVALID",
    )
    .await;
}

#[tokio::test]
async fn a_second_factor_ceremony_belongs_to_its_mfa_token() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let mut user = holder(&app).await;
    let (first, _) = password_step(&app, &user.email).await;
    let (second, _) = password_step(&app, &user.email).await;
    let options = options_of(mfa_passkey_options(&app, &first).await).await;
    let credential = user.passkey.get(&options).await;
    assert_problem(
        with_passkey(&app, &second, &credential).await,
        401,
        "PASSKEY_CHALLENGE_INVALID",
    )
    .await;
    // Both tokens still complete a login with their own ceremonies.
    for token in [&first, &second] {
        let options = options_of(mfa_passkey_options(&app, token).await).await;
        pair(with_passkey(&app, token, &user.passkey.get(&options).await).await).await;
    }
}

#[tokio::test]
async fn a_registration_ceremony_dies_with_a_credential_change() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let (_, session) = app.signed_up(&unique_email()).await;
    let options = creation_options(&app, &session.access).await;
    // The password changes (the stamp moves; this session is carried forward).
    let changed = app
        .change_password(&session.access, PASSWORD, NEW_PASSWORD)
        .await;
    assert_eq!(changed.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.me(&session.access).await.status(), StatusCode::OK);
    let credential = soft(&app).create(&options).await;
    assert_problem(
        register_credential(&app, &session.access, &credential, None).await,
        401,
        "PASSKEY_CHALLENGE_INVALID",
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// 3. A ceremony lives WEBAUTHN_CHALLENGE_SECONDS.

#[tokio::test]
async fn a_ceremony_expires() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let mut user = holder(&app).await;

    // Sign-in: within its life it works, after it not.
    let options = usernameless_options(&app).await;
    app.clock.advance_ms(CHALLENGE_MS - 1_000);
    pair(passkey_login(&app, &user.passkey.get(&options).await).await).await;
    let options = usernameless_options(&app).await;
    app.clock.advance_ms(CHALLENGE_MS + 1_000);
    assert_problem(
        passkey_login(&app, &user.passkey.get(&options).await).await,
        401,
        "PASSKEY_CHALLENGE_INVALID",
    )
    .await;

    // Registration.
    let session = sign_in(&app, &mut user.passkey).await;
    let options = creation_options(&app, &session.access).await;
    app.clock.advance_ms(CHALLENGE_MS + 1_000);
    let credential = soft(&app).create(&options).await;
    assert_problem(
        register_credential(&app, &session.access, &credential, None).await,
        401,
        "PASSKEY_CHALLENGE_INVALID",
    )
    .await;

    // Step-up.
    let options = options_of(step_up_options(&app, &session.access).await).await;
    app.clock.advance_ms(CHALLENGE_MS + 1_000);
    assert_problem(
        step_up(&app, &session.access, &user.passkey.get(&options).await).await,
        401,
        "PASSKEY_CHALLENGE_INVALID",
    )
    .await;
}

#[tokio::test]
async fn webauthn_challenge_seconds_sets_the_life_and_the_timeout() {
    let app = spawn_app_with(&[("WEBAUTHN_CHALLENGE_SECONDS", "60")]).await;
    freeze_clock(&app);
    let mut user = holder(&app).await;
    let options = usernameless_options(&app).await;
    assert_eq!(options["publicKey"]["timeout"], 60_000);
    app.clock.advance_ms(61_000);
    assert_problem(
        passkey_login(&app, &user.passkey.get(&options).await).await,
        401,
        "PASSKEY_CHALLENGE_INVALID",
    )
    .await;
    let options = usernameless_options(&app).await;
    app.clock.advance_ms(59_000);
    pair(passkey_login(&app, &user.passkey.get(&options).await).await).await;
}

#[tokio::test]
async fn a_challenge_no_server_issued_is_refused() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let mut user = holder(&app).await;
    let options = usernameless_options(&app).await;
    let credential = lie(
        &mut user.passkey,
        &options,
        &Client::challenge(&stray_challenge()),
    )
    .await;
    assert_problem(
        passkey_login(&app, &credential).await,
        401,
        "PASSKEY_CHALLENGE_INVALID",
    )
    .await;
    let credential = lie(
        &mut user.passkey,
        &options,
        &Client::challenge(&stray_challenge()),
    )
    .await;
    assert_problem(
        step_up(&app, &user.session.access, &credential).await,
        401,
        "PASSKEY_CHALLENGE_INVALID",
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// 4. What the browser says: origin, type.

/// Origins that are not `http://localhost:8000` (the default PUBLIC_URL's): another host, port,
/// scheme, a subdomain, a parent, the opaque origin.
const WRONG_ORIGINS: [&str; 7] = [
    "https://evil.example.com",
    "http://localhost:8001",
    "https://localhost:8000",
    "http://localhost",
    "http://sub.localhost:8000",
    "http://127.0.0.1:8000",
    "null",
];

/// A sign-in and a registration through the lying `client` are both 401 INVALID_PASSKEY.
async fn sign_in_and_registration_refused(app: &TestApp, user: &mut Holder, client: &Client) {
    let options = usernameless_options(app).await;
    let credential = lie(&mut user.passkey, &options, client).await;
    assert_problem(
        passkey_login(app, &credential).await,
        401,
        "INVALID_PASSKEY",
    )
    .await;

    let options = creation_options(app, &user.session.access).await;
    let registration = soft(app).create_with(&options, client).await.unwrap();
    assert_problem(
        register_credential(app, &user.session.access, &registration.json(), None).await,
        401,
        "INVALID_PASSKEY",
    )
    .await;
}

#[tokio::test]
async fn a_wrong_origin_is_refused() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let mut user = holder(&app).await;
    for origin in WRONG_ORIGINS {
        sign_in_and_registration_refused(&app, &mut user, &Client::origin(origin)).await;
    }
    assert_eq!(passkeys(&app, &user.session.access).await.len(), 1);
}

#[tokio::test]
async fn webauthn_origins_are_the_origins_allowed() {
    let app = spawn_app_with(&[
        ("PUBLIC_URL", "https://app.example.com"),
        ("WEBAUTHN_RP_ID", "example.com"),
        (
            "WEBAUTHN_ORIGINS",
            "https://app.example.com,https://login.example.com",
        ),
    ])
    .await;
    freeze_clock(&app);
    let mut user = holder(&app).await;
    let options = usernameless_options(&app).await;
    assert_eq!(options["publicKey"]["rpId"], "example.com");
    // The second origin.
    let credential = lie(
        &mut user.passkey,
        &options,
        &Client::origin("https://login.example.com"),
    )
    .await;
    pair(passkey_login(&app, &credential).await).await;
    // Not listed: the RP ID's own origin, another subdomain, http.
    for origin in [
        "https://example.com",
        "https://evil.example.com",
        "http://app.example.com",
        "https://app.example.com:8443",
    ] {
        let options = usernameless_options(&app).await;
        let credential = lie(&mut user.passkey, &options, &Client::origin(origin)).await;
        assert_problem(
            passkey_login(&app, &credential).await,
            401,
            "INVALID_PASSKEY",
        )
        .await;
    }
}

#[tokio::test]
async fn a_wrong_client_data_type_is_refused() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let mut user = holder(&app).await;
    for ty in ["webauthn.create", "payment.get", "", "WEBAUTHN.GET"] {
        let options = usernameless_options(&app).await;
        let credential = lie(&mut user.passkey, &options, &Client::ty(ty)).await;
        assert_problem(
            passkey_login(&app, &credential).await,
            401,
            "INVALID_PASSKEY",
        )
        .await;
    }
    for ty in ["webauthn.get", "payment.create"] {
        let options = creation_options(&app, &user.session.access).await;
        let registration = soft(&app)
            .create_with(&options, &Client::ty(ty))
            .await
            .unwrap();
        assert_problem(
            register_credential(&app, &user.session.access, &registration.json(), None).await,
            401,
            "INVALID_PASSKEY",
        )
        .await;
    }
}

// ---------------------------------------------------------------------------------------------
// 5. What the authenticator says: RP ID, signature, authenticator data, flags.

#[tokio::test]
async fn a_wrong_rp_id_is_refused() {
    let app = spawn_app_with(&[
        ("PUBLIC_URL", "https://app.example.com"),
        ("WEBAUTHN_RP_ID", "example.com"),
    ])
    .await;
    freeze_clock(&app);
    let mut user = holder(&app).await;
    // Another domain, a subdomain of the RP ID (the origin's host), a parent.
    for rp in ["evil.com", "app.example.com", "com", "example.co"] {
        sign_in_and_registration_refused(&app, &mut user, &Client::rp_id(rp)).await;
    }
    assert_eq!(passkeys(&app, &user.session.access).await.len(), 1);
}

#[tokio::test]
async fn a_tampered_signature_is_refused() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let mut user = holder(&app).await;
    let mut someone = holder(&app).await.passkey;

    let options = usernameless_options(&app).await;
    let good = user
        .passkey
        .get_with(&options, &Client::default())
        .await
        .unwrap();
    // Within r, and the last byte (of s): DER signatures differ in length, so each its own.
    for last in [false, true] {
        let options = usernameless_options(&app).await;
        let mut bad = user
            .passkey
            .get_with(&options, &Client::default())
            .await
            .unwrap();
        let i = if last { bad.signature.len() - 1 } else { 10 };
        bad.flip_signature_byte(i);
        assert_problem(
            passkey_login(&app, &bad.json()).await,
            401,
            "INVALID_PASSKEY",
        )
        .await;
    }
    // A well-formed signature of something else: another assertion's.
    let options = usernameless_options(&app).await;
    let mut bad = user
        .passkey
        .get_with(&options, &Client::default())
        .await
        .unwrap();
    bad.signature = good.signature.clone();
    assert_problem(
        passkey_login(&app, &bad.json()).await,
        401,
        "INVALID_PASSKEY",
    )
    .await;
    // Another credential's signature over the same data.
    let options = usernameless_options(&app).await;
    let mut bad = user
        .passkey
        .get_with(&options, &Client::default())
        .await
        .unwrap();
    let theirs = someone
        .get_with(&options, &Client::ignoring_allow_list())
        .await
        .unwrap();
    bad.signature = theirs.signature;
    assert_problem(
        passkey_login(&app, &bad.json()).await,
        401,
        "INVALID_PASSKEY",
    )
    .await;

    // The same in the second step, and in a step-up.
    let (token, _) = password_step(&app, &user.email).await;
    let options = options_of(mfa_passkey_options(&app, &token).await).await;
    let mut bad = user
        .passkey
        .get_with(&options, &Client::default())
        .await
        .unwrap();
    bad.flip_signature_byte(10);
    assert_problem(
        with_passkey(&app, &token, &bad.json()).await,
        401,
        "INVALID_PASSKEY",
    )
    .await;
    let options = options_of(step_up_options(&app, &user.session.access).await).await;
    let mut bad = user
        .passkey
        .get_with(&options, &Client::default())
        .await
        .unwrap();
    bad.flip_signature_byte(10);
    assert_problem(
        step_up(&app, &user.session.access, &bad.json()).await,
        401,
        "INVALID_PASSKEY",
    )
    .await;
}

#[tokio::test]
async fn tampered_authenticator_data_is_refused() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let mut user = holder_of(&app, soft(&app).without_user_verification()).await;
    // The RP ID hash, the flags (UP off; UV on would be bit 2), the counter, and bytes appended.
    for tamper in 0..5 {
        let options = usernameless_options(&app).await;
        let mut bad = user
            .passkey
            .get_with(&options, &Client::default())
            .await
            .unwrap();
        match tamper {
            0 => bad.flip_authenticator_data_byte(0),
            1 => bad.flip_authenticator_data_byte(32),
            2 => bad.authenticator_data[32] |= UV,
            3 => bad.flip_authenticator_data_byte(36),
            _ => bad.authenticator_data.extend_from_slice(&[0xa0]),
        }
        assert_problem(
            passkey_login(&app, &bad.json()).await,
            401,
            "INVALID_PASSKEY",
        )
        .await;
    }
    // The account signed in with none of them.
    assert_eq!(
        app.count("SELECT COUNT(*) FROM sessions WHERE user_id = $1", &user.id)
            .await,
        1
    );
}

#[tokio::test]
async fn an_authenticator_that_says_the_user_was_not_there_is_refused() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let mut user = holder(&app).await;
    // Signed again after the flags changed: only the flag is wrong.
    let options = usernameless_options(&app).await;
    let mut absent = user
        .passkey
        .get_with(&options, &Client::default())
        .await
        .unwrap();
    user.passkey.lie_about_flags(&mut absent, 0, UP);
    assert_problem(
        passkey_login(&app, &absent.json()).await,
        401,
        "INVALID_PASSKEY",
    )
    .await;
    // A registration without UP (attestation "none" signs nothing).
    let options = creation_options(&app, &user.session.access).await;
    let mut registration = soft(&app)
        .create_with(&options, &Client::default())
        .await
        .unwrap();
    registration.authenticator_data[32] &= !UP;
    assert_problem(
        register_credential(&app, &user.session.access, &registration.json(), None).await,
        401,
        "INVALID_PASSKEY",
    )
    .await;
}

#[tokio::test]
async fn a_step_up_requires_user_verification() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let mut user = holder(&app).await;
    app.clock.advance_ms(STEP_UP_MS + 1_000);
    // A verifying passkey's assertion with UV cleared (signed again).
    let options = options_of(step_up_options(&app, &user.session.access).await).await;
    let mut assertion = user
        .passkey
        .get_with(&options, &Client::default())
        .await
        .unwrap();
    user.passkey.lie_about_flags(&mut assertion, 0, UV);
    assert_problem(
        step_up(&app, &user.session.access, &assertion.json()).await,
        401,
        "INVALID_PASSKEY",
    )
    .await;
    // A passkey that cannot verify.
    let other = holder_of(&app, soft(&app).without_user_verification()).await;
    let mut their = other.passkey;
    app.clock.advance_ms(STEP_UP_MS + 1_000);
    let options = options_of(step_up_options(&app, &other.session.access).await).await;
    assert_problem(
        step_up(&app, &other.session.access, &their.get(&options).await).await,
        401,
        "INVALID_PASSKEY",
    )
    .await;
    // Neither passed: the sensitive change is still refused.
    assert_problem(
        app.change_password(&user.session.access, PASSWORD, NEW_PASSWORD)
            .await,
        403,
        "STEP_UP_REQUIRED",
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// 6. Whose credential, where.

#[tokio::test]
async fn a_user_handle_that_is_not_the_credentials_is_refused() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let mut user = holder(&app).await;
    let victim = holder(&app).await;
    for handle in [
        uuid::Uuid::parse_str(&victim.id)
            .unwrap()
            .as_bytes()
            .to_vec(),
        uuid::Uuid::new_v4().as_bytes().to_vec(),
        vec![0; 16],
        vec![1; 64],
    ] {
        let options = usernameless_options(&app).await;
        let mut assertion = user
            .passkey
            .get_with(&options, &Client::default())
            .await
            .unwrap();
        assertion.user_handle = Some(handle);
        assert_problem(
            passkey_login(&app, &assertion.json()).await,
            401,
            "INVALID_PASSKEY",
        )
        .await;
    }
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM sessions WHERE user_id = $1",
            &victim.id
        )
        .await,
        1,
        "no session opened for the victim"
    );
}

#[tokio::test]
async fn an_email_first_ceremony_is_for_that_accounts_passkeys() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let mut attacker = holder(&app).await;
    let victim = holder(&app).await;
    let options = email_options(&app, &victim.email).await;
    let credential = lie(
        &mut attacker.passkey,
        &options,
        &Client::ignoring_allow_list(),
    )
    .await;
    let body = assert_problem(
        passkey_login(&app, &credential).await,
        401,
        "INVALID_PASSKEY",
    )
    .await;
    // The detail never says whose credential it is.
    let detail = body["detail"].as_str().unwrap();
    assert!(
        !detail.contains(&attacker.email) && !detail.contains(&victim.email),
        "{detail}"
    );
    assert!(
        !detail.contains(&attacker.id) && !detail.contains(&victim.id),
        "{detail}"
    );
}

#[tokio::test]
async fn the_second_factor_is_the_accounts_own_passkey_and_a_wrong_one_is_a_try() {
    // The default lockout: 5 failures answered at once, then a lock.
    let app = spawn_app().await;
    freeze_clock(&app);
    let mut attacker = holder(&app).await;
    let mut victim = holder(&app).await;
    // The attacker knows the victim's password, not their passkey.
    let (token, _) = password_step(&app, &victim.email).await;
    for _ in 0..5 {
        let options = options_of(mfa_passkey_options(&app, &token).await).await;
        let credential = lie(
            &mut attacker.passkey,
            &options,
            &Client::ignoring_allow_list(),
        )
        .await;
        assert_problem(
            with_passkey(&app, &token, &credential).await,
            401,
            "INVALID_PASSKEY",
        )
        .await;
    }
    // Five failures: the token is dead, and the victim's second factor is locked.
    let key = format!("MFA:{}", victim.id);
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM login_attempts WHERE email = $1 AND locked_until IS NOT NULL",
            &key
        )
        .await,
        1,
        "the lock is kept under {key}"
    );
    app.clock.advance_ms(60_000);
    let options = mfa_passkey_options(&app, &token).await;
    if options.status() == StatusCode::OK {
        let options = options_of(options).await;
        let credential = victim.passkey.get(&options).await;
        assert_problem(
            with_passkey(&app, &token, &credential).await,
            401,
            "INVALID_TOKEN",
        )
        .await;
    } else {
        assert_problem(options, 401, "INVALID_TOKEN").await;
    }
    // The victim, after the lock, completes a login.
    let (token, _) = password_step(&app, &victim.email).await;
    let options = options_of(mfa_passkey_options(&app, &token).await).await;
    pair(with_passkey(&app, &token, &victim.passkey.get(&options).await).await).await;
}

#[tokio::test]
async fn a_step_up_is_the_sessions_own_passkey() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let user = holder(&app).await;
    let mut attacker = holder(&app).await;
    app.clock.advance_ms(STEP_UP_MS + 1_000);
    let options = options_of(step_up_options(&app, &user.session.access).await).await;
    let credential = lie(
        &mut attacker.passkey,
        &options,
        &Client::ignoring_allow_list(),
    )
    .await;
    assert_problem(
        step_up(&app, &user.session.access, &credential).await,
        401,
        "INVALID_PASSKEY",
    )
    .await;
    assert_problem(
        app.change_password(&user.session.access, PASSWORD, NEW_PASSWORD)
            .await,
        403,
        "STEP_UP_REQUIRED",
    )
    .await;
}

#[tokio::test]
async fn a_credential_is_registered_once() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let owner = holder(&app).await;
    // The owner's registration, captured: attestation "none" signs nothing, so anyone holding it
    // can present it again under a challenge of their own.
    let options = creation_options(&app, &owner.session.access).await;
    let mut again = SoftPasskey::new(&origin(&app));
    let captured = again
        .create_with(&options, &Client::default())
        .await
        .unwrap();
    created(register_credential(&app, &owner.session.access, &captured.json(), None).await).await;

    let (_, thief) = app.signed_up(&unique_email()).await;
    let options = creation_options(&app, &thief.access).await;
    let replayed = captured.rechallenged(&options, &origin(&app));
    assert_problem(
        register_credential(&app, &thief.access, &replayed.json(), None).await,
        409,
        "PASSKEY_ALREADY_REGISTERED",
    )
    .await;
    assert!(passkeys(&app, &thief.access).await.is_empty());
    // The owner, again.
    let options = creation_options(&app, &owner.session.access).await;
    let replayed = captured.rechallenged(&options, &origin(&app));
    assert_problem(
        register_credential(&app, &owner.session.access, &replayed.json(), None).await,
        409,
        "PASSKEY_ALREADY_REGISTERED",
    )
    .await;
    assert_eq!(passkeys(&app, &owner.session.access).await.len(), 2);
    // The credential still signs its owner in.
    let tokens = sign_in(&app, &mut again).await;
    let me = ok_json(app.me(&tokens.access).await).await;
    assert_eq!(me["email"], owner.email.as_str());
}

// ---------------------------------------------------------------------------------------------
// 7. The signature counter.

#[tokio::test]
async fn a_cloned_authenticator_is_refused_by_default() {
    let sink = SmtpSink::start().await;
    let app = app_with_mail(&sink, NOTICES).await;
    freeze_clock(&app);
    let mut user = holder(&app).await;
    let (seen, _) = notice(&sink, &user.email, 0, "passkey").await;
    sign_in(&app, &mut user.passkey).await;
    let mut clone = user.passkey.cloned();
    assert_eq!(clone.counter(), 1);
    // The original goes on; the clone then says a count the server has already seen.
    sign_in(&app, &mut user.passkey).await;
    let options = usernameless_options(&app).await;
    let credential = clone.get(&options).await;
    let body = assert_problem(
        passkey_login(&app, &credential).await,
        401,
        "PASSKEY_COUNTER_REGRESSED",
    )
    .await;
    assert!(body["detail"].is_string());
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM passkeys WHERE user_id = $1 AND counter_regressed_at IS NOT NULL",
            &user.id
        )
        .await,
        1
    );
    notice(&sink, &user.email, seen, "passkey").await;
    // A lower count, signed by the key itself, likewise; and as a second factor.
    let options = usernameless_options(&app).await;
    let mut lower = user
        .passkey
        .get_with(&options, &Client::default())
        .await
        .unwrap();
    user.passkey.lie_about_counter(&mut lower, 1);
    assert_problem(
        passkey_login(&app, &lower.json()).await,
        401,
        "PASSKEY_COUNTER_REGRESSED",
    )
    .await;
    let (token, _) = password_step(&app, &user.email).await;
    let options = options_of(mfa_passkey_options(&app, &token).await).await;
    let mut lower = user
        .passkey
        .get_with(&options, &Client::default())
        .await
        .unwrap();
    user.passkey.lie_about_counter(&mut lower, 1);
    let response = with_passkey(&app, &token, &lower.json()).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    // The original, whose count grows, still signs in.
    sign_in(&app, &mut user.passkey).await;
}

#[tokio::test]
async fn a_cloned_authenticator_is_reported_under_the_report_policy() {
    let sink = SmtpSink::start().await;
    let mut vars = NOTICES.to_vec();
    vars.push(("WEBAUTHN_COUNTER_POLICY", "report"));
    let app = app_with_mail(&sink, &vars).await;
    freeze_clock(&app);
    let mut user = holder(&app).await;
    let (seen, _) = notice(&sink, &user.email, 0, "passkey").await;
    sign_in(&app, &mut user.passkey).await;
    let mut clone = user.passkey.cloned();
    sign_in(&app, &mut user.passkey).await;
    let tokens = sign_in(&app, &mut clone).await;
    assert_eq!(app.me(&tokens.access).await.status(), StatusCode::OK);
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM passkeys WHERE user_id = $1 AND counter_regressed_at IS NOT NULL",
            &user.id
        )
        .await,
        1,
        "flagged"
    );
    notice(&sink, &user.email, seen, "passkey").await;
}

#[tokio::test]
async fn a_passkey_without_a_counter_is_used_again_and_again() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let mut user = holder_of(&app, soft(&app).without_counter()).await;
    for _ in 0..3 {
        let options = usernameless_options(&app).await;
        let assertion = user
            .passkey
            .get_with(&options, &Client::default())
            .await
            .unwrap();
        assert_eq!(assertion.counter(), 0);
        pair(passkey_login(&app, &assertion.json()).await).await;
    }
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM passkeys WHERE user_id = $1 AND counter_regressed_at IS NOT NULL",
            &user.id
        )
        .await,
        0
    );
}

#[tokio::test]
async fn a_clone_and_its_original_at_the_same_count_at_the_same_time_let_one_through() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let mut user = holder(&app).await;
    sign_in(&app, &mut user.passkey).await;
    let mut clone = user.passkey.cloned();
    let first = usernameless_options(&app).await;
    let second = usernameless_options(&app).await;
    let a = user.passkey.get(&first).await;
    let b = clone.get(&second).await;
    let requests = [a, b]
        .into_iter()
        .map(|credential| {
            let client = app.client.clone();
            let url = app.url("/login/passkey");
            async move {
                let response = client
                    .post(url)
                    .json(&json!({ "credential": credential }))
                    .send()
                    .await
                    .unwrap();
                let status = response.status();
                let body: Value = response.json().await.unwrap();
                (status, body)
            }
        })
        .collect();
    let results = concurrently(requests).await;
    let ok = results.iter().filter(|(s, _)| *s == StatusCode::OK).count();
    assert_eq!(ok, 1, "one of two uses of one count: {results:?}");
    let refused = results.iter().find(|(s, _)| *s != StatusCode::OK).unwrap();
    assert_eq!(
        refused.1["code"], "PASSKEY_COUNTER_REGRESSED",
        "{refused:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 8. Credentials and accounts that are gone or disabled.

#[tokio::test]
async fn a_deleted_passkey_is_neither_a_first_nor_a_second_factor() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let mut user = holder(&app).await;
    let mut spare = soft(&app);
    add_passkey(&app, &user.session.access, &mut spare).await;
    let response = delete_passkey(
        &app,
        &user.session.access,
        &user.passkey_id,
        &json!({ "password": PASSWORD }),
    )
    .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);

    let options = usernameless_options(&app).await;
    assert_problem(
        passkey_login(&app, &user.passkey.get(&options).await).await,
        401,
        "INVALID_PASSKEY",
    )
    .await;
    let (token, _) = password_step(&app, &user.email).await;
    let options = options_of(mfa_passkey_options(&app, &token).await).await;
    assert_eq!(
        descriptor_ids(&options["publicKey"]["allowCredentials"]),
        vec![spare.credential_id()]
    );
    let credential = lie(&mut user.passkey, &options, &Client::ignoring_allow_list()).await;
    assert_problem(
        with_passkey(&app, &token, &credential).await,
        401,
        "INVALID_PASSKEY",
    )
    .await;
    let options = options_of(step_up_options(&app, &user.session.access).await).await;
    let credential = lie(&mut user.passkey, &options, &Client::ignoring_allow_list()).await;
    assert_problem(
        step_up(&app, &user.session.access, &credential).await,
        401,
        "INVALID_PASSKEY",
    )
    .await;
}

#[tokio::test]
async fn a_deactivated_account_does_not_sign_in_with_a_passkey() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let mut user = holder(&app).await;
    let (_, admin) = app.superuser().await;
    let response = call(
        &app,
        Method::PATCH,
        &format!("/users/{}", user.id),
        &admin.access,
        &json!({ "is_active": false }),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);

    let options = usernameless_options(&app).await;
    assert_problem(
        passkey_login(&app, &user.passkey.get(&options).await).await,
        403,
        "ACCOUNT_DISABLED",
    )
    .await;
    // A bad assertion says nothing of the account's state.
    let options = usernameless_options(&app).await;
    let mut bad = user
        .passkey
        .get_with(&options, &Client::default())
        .await
        .unwrap();
    bad.flip_signature_byte(10);
    assert_problem(
        passkey_login(&app, &bad.json()).await,
        401,
        "INVALID_PASSKEY",
    )
    .await;
    // Email-first options for a disabled account name decoys, not its passkey.
    let options = email_options(&app, &user.email).await;
    let ids = descriptor_ids(&options["publicKey"]["allowCredentials"]);
    assert!((1..=3).contains(&ids.len()), "{options}");
    assert!(!ids.contains(&user.passkey.credential_id()), "{options}");
}

#[tokio::test]
async fn a_deleted_account_does_not_sign_in_with_a_passkey() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let mut user = holder(&app).await;
    let response = call(
        &app,
        Method::DELETE,
        "/me",
        &user.session.access,
        &json!({ "password": PASSWORD }),
    )
    .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM passkeys WHERE user_id = $1", &user.id)
            .await,
        0
    );
    let options = usernameless_options(&app).await;
    assert_problem(
        passkey_login(&app, &user.passkey.get(&options).await).await,
        401,
        "INVALID_PASSKEY",
    )
    .await;
}

#[tokio::test]
async fn an_unverified_account_does_not_sign_in_with_a_passkey_when_verification_is_required() {
    let app = spawn_app_with(&[("REQUIRE_VERIFIED_EMAIL", "true")]).await;
    freeze_clock(&app);
    let email = unique_email();
    app.register(&email, PASSWORD, "Unverified").await;
    app.execute(
        "UPDATE users SET is_verified = TRUE WHERE email = $1",
        &email,
    )
    .await;
    let session = app.login_ok(&email).await;
    let mut passkey = soft(&app);
    add_passkey(&app, &session.access, &mut passkey).await;
    app.execute(
        "UPDATE users SET is_verified = FALSE WHERE email = $1",
        &email,
    )
    .await;
    let options = usernameless_options(&app).await;
    assert_problem(
        passkey_login(&app, &passkey.get(&options).await).await,
        403,
        "EMAIL_NOT_VERIFIED",
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// 9. No enumeration.

#[tokio::test]
async fn email_first_options_do_not_tell_who_has_an_account() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let user = holder(&app).await;
    let (_, _) = app.signed_up(&unique_email()).await;
    let without_passkey = unique_email();
    app.signed_up(&without_passkey).await;
    let unknown = unique_email();

    let shape = |options: &Value| -> Vec<String> {
        let mut keys: Vec<String> = options["publicKey"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        keys.sort();
        keys
    };
    let known = email_options(&app, &user.email).await;
    for descriptor in known["publicKey"]["allowCredentials"].as_array().unwrap() {
        assert!(descriptor.get("transports").is_none(), "{descriptor}");
    }
    let real = descriptor_ids(&known["publicKey"]["allowCredentials"]);
    assert_eq!(real, vec![user.passkey.credential_id()]);
    assert_eq!(real[0].len(), CREDENTIAL_ID_LEN);

    for email in [unknown.clone(), without_passkey.clone()] {
        let response = login_options(&app, Some(&json!({ "email": email }))).await;
        assert_eq!(
            response.headers()["content-type"],
            "application/json",
            "{email}"
        );
        let options = options_of(response).await;
        assert_eq!(shape(&options), shape(&known), "{options} vs {known}");
        let pk = &options["publicKey"];
        assert_eq!(
            pk["userVerification"],
            known["publicKey"]["userVerification"]
        );
        assert_eq!(pk["rpId"], known["publicKey"]["rpId"]);
        assert_eq!(pk["timeout"], known["publicKey"]["timeout"]);
        let decoys = pk["allowCredentials"].as_array().unwrap();
        assert!((1..=3).contains(&decoys.len()), "{options}");
        for decoy in decoys {
            assert_eq!(decoy["type"], "public-key", "{decoy}");
            assert_eq!(
                unb64(decoy["id"].as_str().unwrap()).unwrap().len(),
                32,
                "{decoy}"
            );
            // No transports in any email-first descriptor: a security key's `["usb"]` would
            // tell a real credential from a decoy.
            assert!(decoy.get("transports").is_none(), "{decoy}");
        }
        // Stable across calls (and across the address's case): a second look tells nothing.
        let again = email_options(&app, &email.to_uppercase()).await;
        assert_eq!(
            again["publicKey"]["allowCredentials"], pk["allowCredentials"],
            "{email}"
        );
        assert_ne!(again["publicKey"]["challenge"], pk["challenge"]);
    }
    // Two unknown addresses have their own decoys.
    let a = email_options(&app, &unique_email()).await;
    let b = email_options(&app, &unique_email()).await;
    assert_ne!(
        a["publicKey"]["allowCredentials"],
        b["publicKey"]["allowCredentials"]
    );
    // A decoy signs no one in.
    let options = email_options(&app, &unknown).await;
    let decoy = descriptor_ids(&options["publicKey"]["allowCredentials"]).remove(0);
    let mut forged = user
        .passkey
        .cloned()
        .get_with(&options, &Client::ignoring_allow_list())
        .await
        .unwrap();
    forged.credential_id = decoy;
    forged.user_handle = None;
    assert_problem(
        passkey_login(&app, &forged.json()).await,
        401,
        "INVALID_PASSKEY",
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// 10. Accounts without a password.

#[tokio::test]
async fn removing_the_password_voids_the_one_time_tokens() {
    let sink = SmtpSink::start().await;
    let app = app_with_mail(&sink, NOTICES).await;
    freeze_clock(&app);
    let user = holder(&app).await;
    let response = app
        .post_json("/password-reset/request", &json!({ "email": user.email }))
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let token = sink.wait_for(&user.email, RESET, 1, WAIT).await[0]
        .link_token("/reset-password")
        .unwrap();
    let response = remove_password(&app, &user.session.access).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_problem(
        app.confirm_reset(&token, NEW_PASSWORD).await,
        400,
        "INVALID_TOKEN",
    )
    .await;
    // No password was set by it.
    assert_problem(
        app.login(&user.email, NEW_PASSWORD).await,
        401,
        "INVALID_CREDENTIALS",
    )
    .await;
}

#[tokio::test]
async fn no_password_matches_an_account_without_one() {
    // Enough free attempts that the lockout does not answer for the account.
    let app = spawn_app_with(&[("LOGIN_FREE_ATTEMPTS", "50")]).await;
    freeze_clock(&app);
    let user = passwordless(&app).await;
    // The JSON login, the OAuth2 form, a sensitive change's current password.
    for password in [
        PASSWORD,
        "x",
        "                ",
        "$argon2id$v=19$m=256,t=1,p=1$",
    ] {
        let response = app.login(&user.email, password).await;
        let status = response.status().as_u16();
        assert!(matches!(status, 401 | 422), "{password:?}: {status}");
        if status == 401 {
            assert_problem(response, 401, "INVALID_CREDENTIALS").await;
        }
        let form = app
            .client
            .post(app.url("/login"))
            .form(&[
                ("grant_type", "password"),
                ("username", user.email.as_str()),
                ("password", password),
            ])
            .send()
            .await
            .unwrap();
        assert_ne!(form.status(), StatusCode::OK, "{password:?}");
    }
    // Past the proof's window, a current password is no substitute for the passkey.
    app.clock.advance_ms(STEP_UP_MS + 1_000);
    for current in [PASSWORD, ""] {
        let response = call(
            &app,
            Method::PUT,
            "/me/password",
            &user.session.access,
            &json!({ "current_password": current, "new_password": NEW_PASSWORD }),
        )
        .await;
        assert!(
            matches!(response.status().as_u16(), 403 | 422),
            "{current:?}: {}",
            response.status()
        );
    }
    assert_eq!(
        mfa_status(&app, &user.session.access).await["has_password"],
        false
    );
}

#[tokio::test]
async fn a_passkey_without_user_verification_is_no_proof_for_an_account_without_a_password() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let user = passwordless(&app).await;
    // Half the step-up window after the account's last passkey proof, a key without UV is
    // added (the proof is still fresh enough for that).
    app.clock.advance_ms(STEP_UP_MS / 2);
    let mut key = soft(&app).without_user_verification();
    let options =
        options_of(registration_options(&app, &user.session.access, &json!({})).await).await;
    let credential = key.create(&options).await;
    created(register_credential(&app, &user.session.access, &credential, None).await).await;

    // Registering it proved no passkey: once the earlier proof is old, a sensitive change is
    // refused although the key was added within the window.
    app.clock.advance_ms(STEP_UP_MS / 2 + 1_000);
    let body = assert_problem(
        call(
            &app,
            Method::PUT,
            "/me",
            &user.session.access,
            &json!({ "email": unique_email() }),
        )
        .await,
        403,
        "STEP_UP_REQUIRED",
    )
    .await;
    assert_eq!(body["methods"], json!(["passkey"]), "{body}");
    // Nor does it sign in alone.
    let options = usernameless_options(&app).await;
    assert_problem(
        passkey_login(&app, &key.get(&options).await).await,
        401,
        "INVALID_PASSKEY",
    )
    .await;
}

#[tokio::test]
async fn a_passkey_without_user_verification_is_no_first_factor_even_beside_totp() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let user = enrolled(&app).await;
    let mut key = soft(&app).without_user_verification();
    add_passkey(&app, &user.session.access, &mut key).await;
    // Neither a session nor an mfa_token: possession alone starts no login.
    let options = usernameless_options(&app).await;
    let body = assert_problem(
        passkey_login(&app, &key.get(&options).await).await,
        401,
        "INVALID_PASSKEY",
    )
    .await;
    assert!(body.get("mfa_token").is_none(), "{body}");
    // Email-first, the same.
    let options = email_options(&app, &user.email).await;
    let credential = key.get(&options).await;
    assert_problem(
        passkey_login(&app, &credential).await,
        401,
        "INVALID_PASSKEY",
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// 11. Bytes no browser would send.

/// `credential` with the JSON pointer `at` set to `value`.
fn with(credential: &Value, at: &str, value: Value) -> Value {
    let mut credential = credential.clone();
    *credential.pointer_mut(at).unwrap_or_else(|| panic!("{at}")) = value;
    credential
}

/// `credential` without the member at the JSON pointer `at`.
fn without(credential: &Value, at: &str) -> Value {
    let mut credential = credential.clone();
    let (parent, key) = at.rsplit_once('/').unwrap();
    credential
        .pointer_mut(if parent.is_empty() { "" } else { parent })
        .and_then(Value::as_object_mut)
        .unwrap()
        .remove(key);
    credential
}

/// Bad versions of the registration `good`.
fn bad_registrations(good: &Attestation) -> Vec<(&'static str, Value)> {
    let json = good.json();
    let mut truncated = good.clone();
    truncated.authenticator_data.truncate(30);
    let mut no_auth_data = Vec::new();
    no_auth_data.push(0xa2);
    cbor_text(&mut no_auth_data, "fmt");
    cbor_text(&mut no_auth_data, "none");
    cbor_text(&mut no_auth_data, "attStmt");
    no_auth_data.push(0xa0);
    let mut huge_length = Vec::new();
    huge_length.push(0xa1);
    cbor_text(&mut huge_length, "authData");
    huge_length.extend([0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
    vec![
        (
            "garbage CBOR",
            with(
                &json,
                "/response/attestationObject",
                json!(b64(&[0xff, 0x00, 0x13, 0x37])),
            ),
        ),
        (
            "empty attestation object",
            with(&json, "/response/attestationObject", json!("")),
        ),
        (
            "no authData",
            with(
                &json,
                "/response/attestationObject",
                json!(b64(&no_auth_data)),
            ),
        ),
        (
            "a CBOR length of 2^64",
            with(
                &json,
                "/response/attestationObject",
                json!(b64(&huge_length)),
            ),
        ),
        (
            "truncated authenticator data",
            without(
                &without(
                    &with(
                        &json,
                        "/response/attestationObject",
                        json!(b64(&truncated.attestation_object())),
                    ),
                    "/response/authenticatorData",
                ),
                "/response/publicKey",
            ),
        ),
        (
            "bad base64 attestation",
            with(
                &json,
                "/response/attestationObject",
                json!("!!not base64!!"),
            ),
        ),
        (
            "bad base64 client data",
            with(&json, "/response/clientDataJSON", json!("*&^%")),
        ),
        (
            "client data not JSON",
            with(&json, "/response/clientDataJSON", json!(b64(b"not json"))),
        ),
        (
            "no attestation object",
            without(&json, "/response/attestationObject"),
        ),
        (
            "a number for a public key algorithm",
            with(&json, "/response/publicKeyAlgorithm", json!(1e300)),
        ),
    ]
}

/// Bad versions of the assertion `good`.
fn bad_assertions(good: &Assertion) -> Vec<(&'static str, Value)> {
    let json = good.json();
    let mut truncated = good.clone();
    truncated.authenticator_data.truncate(20);
    vec![
        ("truncated authenticator data", truncated.json()),
        (
            "bad base64 authenticator data",
            with(&json, "/response/authenticatorData", json!("~~~~")),
        ),
        (
            "bad base64 signature",
            with(&json, "/response/signature", json!("%%%")),
        ),
        (
            "bad base64 client data",
            with(&json, "/response/clientDataJSON", json!("a b c")),
        ),
        (
            "client data not JSON",
            with(&json, "/response/clientDataJSON", json!(b64(b"\xff\xfe"))),
        ),
        (
            "client data an array",
            with(&json, "/response/clientDataJSON", json!(b64(b"[1,2,3]"))),
        ),
        (
            "bad base64 id",
            with(&with(&json, "/id", json!("@@@")), "/rawId", json!("@@@")),
        ),
        ("no signature", without(&json, "/response/signature")),
        (
            "no authenticator data",
            without(&json, "/response/authenticatorData"),
        ),
        ("no response", without(&json, "/response")),
        (
            "a string response",
            with(&json, "/response", json!("response")),
        ),
        (
            "a number for a signature",
            with(&json, "/response/signature", json!(12345)),
        ),
        (
            "a huge id",
            with(
                &with(&json, "/id", json!("A".repeat(20_000))),
                "/rawId",
                json!("A".repeat(20_000)),
            ),
        ),
    ]
}

/// Credentials that are not objects.
fn not_objects() -> Vec<(&'static str, Value)> {
    vec![
        ("a string", json!("credential")),
        ("a number", json!(42)),
        ("an array", json!([])),
        ("null", Value::Null),
        ("true", json!(true)),
        ("an empty object", json!({})),
    ]
}

/// Sends `body` and checks the answer: 422 naming `credential` (or 413 for a body over the
/// limit), never a 500.
async fn refused_as_malformed(
    app: &TestApp,
    path: &str,
    access: Option<&str>,
    body: &Value,
    what: &str,
) {
    let mut request = app.client.post(app.url(path)).json(body);
    if let Some(access) = access {
        request = request.bearer_auth(access);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    assert!(status < 500, "{path}, {what}: {status} {text}");
    if status == 413 {
        return;
    }
    assert_eq!(status, 422, "{path}, {what}: {text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["code"], "VALIDATION_FAILED", "{path}, {what}: {body}");
    let fields = error_fields(&body);
    assert!(
        fields
            .iter()
            .any(|f| f.starts_with("credential") || f.starts_with("passkey")),
        "{path}, {what}: {body}"
    );
}

#[tokio::test]
async fn malformed_credentials_are_validation_failures_never_500s() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let mut user = holder(&app).await;
    let access = user.session.access.clone();
    let (token, _) = password_step(&app, &user.email).await;

    // Each bad credential is made from a good one answering a ceremony of its own, so that the
    // refusal is for the bytes, not for the challenge.
    let sample = soft(&app)
        .create_with(&creation_options(&app, &access).await, &Client::default())
        .await
        .unwrap();
    for i in 0..bad_registrations(&sample).len() + not_objects().len() {
        let options = creation_options(&app, &access).await;
        let good = soft(&app)
            .create_with(&options, &Client::default())
            .await
            .unwrap();
        let (what, credential) = bad_registrations(&good)
            .into_iter()
            .chain(not_objects())
            .nth(i)
            .unwrap();
        refused_as_malformed(
            &app,
            "/me/passkeys",
            Some(&access),
            &json!({ "credential": credential }),
            what,
        )
        .await;
    }
    assert_eq!(passkeys(&app, &access).await.len(), 1);

    let options = usernameless_options(&app).await;
    let sample = user
        .passkey
        .get_with(&options, &Client::default())
        .await
        .unwrap();
    for i in 0..bad_assertions(&sample).len() + not_objects().len() {
        let nth = |good: &Assertion| {
            bad_assertions(good)
                .into_iter()
                .chain(not_objects())
                .nth(i)
                .unwrap()
        };
        // Sign-in.
        let options = usernameless_options(&app).await;
        let good = user
            .passkey
            .get_with(&options, &Client::default())
            .await
            .unwrap();
        let (what, credential) = nth(&good);
        refused_as_malformed(
            &app,
            "/login/passkey",
            None,
            &json!({ "credential": credential }),
            what,
        )
        .await;
        // Step-up.
        let options = options_of(step_up_options(&app, &access).await).await;
        let good = user
            .passkey
            .get_with(&options, &Client::default())
            .await
            .unwrap();
        let (what, credential) = nth(&good);
        refused_as_malformed(
            &app,
            "/me/passkeys/step-up",
            Some(&access),
            &json!({ "credential": credential }),
            what,
        )
        .await;
        // The second factor.
        let options = options_of(mfa_passkey_options(&app, &token).await).await;
        let good = user
            .passkey
            .get_with(&options, &Client::default())
            .await
            .unwrap();
        let (what, credential) = nth(&good);
        refused_as_malformed(
            &app,
            "/login/mfa",
            None,
            &json!({ "mfa_token": token, "passkey": credential }),
            what,
        )
        .await;
    }

    // Over the body limit: 413, not a 500.
    let huge = json!({ "credential": { "id": "A".repeat(100_000), "response": {} } });
    refused_as_malformed(&app, "/login/passkey", None, &huge, "a 100 kB id").await;
    // Deep nesting within the limit.
    let mut nested = json!({});
    for _ in 0..300 {
        nested = json!({ "a": nested });
    }
    let deep =
        json!({ "credential": { "id": "AA", "response": {}, "clientExtensionResults": nested } });
    refused_as_malformed(&app, "/login/passkey", None, &deep, "deep nesting").await;

    // After all that the server is well, and the bad bytes were not second-factor tries of the
    // token. spec-silent: a malformed credential is refused before it counts as a try (as the
    // refused bodies of /login/mfa with codes).
    let options = options_of(mfa_passkey_options(&app, &token).await).await;
    pair(with_passkey(&app, &token, &user.passkey.get(&options).await).await).await;
}

#[tokio::test]
async fn odd_options_bodies_are_validation_failures_never_500s() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let user = holder(&app).await;
    for body in [
        json!({ "email": 42 }),
        json!({ "email": ["a@example.com"] }),
        json!({ "email": "x".repeat(10_000) }),
        json!({ "email": "nul\u{0}@example.com" }),
        json!("email"),
        json!([]),
    ] {
        let response = login_options(&app, Some(&body)).await;
        let status = response.status().as_u16();
        assert!(status == 200 || status == 422, "{body}: {status}");
    }
    for body in [
        json!({ "mfa_token": 42 }),
        json!({}),
        json!({ "mfa_token": "\u{0}" }),
    ] {
        let response = app.post_json("/login/mfa/passkey/options", &body).await;
        let status = response.status().as_u16();
        assert!(status == 401 || status == 422, "{body}: {status}");
    }
    for name in [
        json!(42),
        json!(null),
        json!(["a"]),
        json!("\u{202e}x".repeat(100)),
    ] {
        let response = call(
            &app,
            Method::PATCH,
            &format!("/me/passkeys/{}", user.passkey_id),
            &user.session.access,
            &json!({ "name": name }),
        )
        .await;
        assert_eq!(
            response.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{name}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 12. More of what is verified, and what a passkey change needs.

#[tokio::test]
async fn self_attestation_is_accepted_and_a_forged_one_refused() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let (_, session) = app.signed_up(&unique_email()).await;

    let options = creation_options(&app, &session.access).await;
    let mut key = soft(&app);
    let mut attestation = key.create_with(&options, &Client::default()).await.unwrap();
    key.self_attest(&mut attestation);
    created(register_credential(&app, &session.access, &attestation.json(), None).await).await;

    // A self attestation whose signature is wrong, and one signed by another key.
    for forge in 0..2 {
        let options = creation_options(&app, &session.access).await;
        let mut other = soft(&app);
        let mut attestation = other
            .create_with(&options, &Client::default())
            .await
            .unwrap();
        if forge == 0 {
            other.self_attest(&mut attestation);
            attestation.self_attestation.as_mut().unwrap()[10] ^= 0x01;
        } else {
            key.self_attest(&mut attestation);
        }
        assert_problem(
            register_credential(&app, &session.access, &attestation.json(), None).await,
            401,
            "INVALID_PASSKEY",
        )
        .await;
    }
    assert_eq!(passkeys(&app, &session.access).await.len(), 1);
}

#[tokio::test]
async fn adding_or_removing_a_passkey_from_a_stale_session_needs_a_step_up() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let mut user = holder(&app).await;
    let access = user.session.access.clone();
    // A stolen access token of a session that proved nothing lately.
    app.clock.advance_ms(STEP_UP_MS + 1_000);
    let password = json!({ "password": PASSWORD });
    let body = assert_problem(
        registration_options(&app, &access, &password).await,
        403,
        "STEP_UP_REQUIRED",
    )
    .await;
    assert_eq!(body["methods"], json!(["passkey"]), "{body}");
    assert_problem(
        delete_passkey(&app, &access, &user.passkey_id, &password).await,
        403,
        "STEP_UP_REQUIRED",
    )
    .await;
    assert_eq!(passkeys(&app, &access).await.len(), 1);

    // After a step-up, the password is still checked.
    passkey_step_up(&app, &access, &mut user.passkey).await;
    let wrong = json!({ "password": WRONG_PASSWORD });
    assert_problem(
        registration_options(&app, &access, &wrong).await,
        403,
        "INVALID_CREDENTIALS",
    )
    .await;
    assert_problem(
        delete_passkey(&app, &access, &user.passkey_id, &wrong).await,
        403,
        "INVALID_CREDENTIALS",
    )
    .await;
    add_passkey(&app, &access, &mut soft(&app)).await;
    let response = delete_passkey(&app, &access, &user.passkey_id, &password).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);

    // An account with TOTP too: a code does as well.
    let totp = enrolled(&app).await;
    add_passkey(&app, &totp.session.access, &mut soft(&app)).await;
    app.clock.advance_ms(STEP_UP_MS + 1_000);
    let body = assert_problem(
        registration_options(&app, &totp.session.access, &password).await,
        403,
        "STEP_UP_REQUIRED",
    )
    .await;
    assert_eq!(
        body["methods"],
        json!(["totp", "recovery_code", "passkey"]),
        "{body}"
    );
    let with_code = json!({ "password": PASSWORD, "code": code_now(&app, &totp.secret) });
    options_of(registration_options(&app, &totp.session.access, &with_code).await).await;
}

#[tokio::test]
async fn the_backup_state_follows_the_authenticator() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let mut user = holder(&app).await;
    let options = usernameless_options(&app).await;
    let mut assertion = user
        .passkey
        .get_with(&options, &Client::default())
        .await
        .unwrap();
    // The passkey says it is no longer backed up (still backup eligible).
    user.passkey.lie_about_flags(&mut assertion, 0, BS);
    let tokens = pair(passkey_login(&app, &assertion.json()).await).await;
    assert_eq!(amr(&tokens), json!(["swk", "user", "mfa"]));
    let list = passkeys(&app, &tokens.access).await;
    assert_eq!(list[0]["backup_eligible"], true, "{list:?}");
    assert_eq!(list[0]["backed_up"], false, "{list:?}");
}

#[tokio::test]
async fn me_says_nothing_of_passkeys() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let (_, session) = app.signed_up(&unique_email()).await;
    let before = ok_json(app.me(&session.access).await).await;
    add_passkey(&app, &session.access, &mut soft(&app)).await;
    let after = ok_json(app.me(&session.access).await).await;
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&before), keys(&after), "{after}");
}

#[tokio::test]
async fn passkey_sign_in_is_limited_per_client() {
    let app = spawn_app_with(&[
        ("TRUSTED_PROXIES", "127.0.0.1/32"),
        ("RATE_LIMIT_LOGIN_PER_MINUTE", "2"),
    ])
    .await;
    freeze_clock(&app);
    let mut user = holder(&app).await;
    let from = |client: &'static str, path: &str, body: Value| {
        app.client
            .post(app.url(path))
            .header("X-Forwarded-For", client)
            .json(&body)
            .send()
    };
    // One client tries forged assertions until it is held back.
    let options = usernameless_options(&app).await;
    let mut forged = user
        .passkey
        .get_with(&options, &Client::default())
        .await
        .unwrap();
    forged.flip_signature_byte(10);
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let response = from(
            "203.0.113.7",
            "/login/passkey",
            json!({ "credential": forged.json() }),
        )
        .await
        .unwrap();
        statuses.push(response.status().as_u16());
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            assert!(response.headers().contains_key("retry-after"));
            assert_problem(response, 429, "TOO_MANY_REQUESTS").await;
            break;
        }
    }
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    // Another client is not.
    let options = options_of(
        from("198.51.100.2", "/login/passkey/options", json!({}))
            .await
            .unwrap(),
    )
    .await;
    let credential = user.passkey.get(&options).await;
    let response = from(
        "198.51.100.2",
        "/login/passkey",
        json!({ "credential": credential }),
    )
    .await
    .unwrap();
    pair(response).await;
}

// ---------------------------------------------------------------------------------------------
// 13. Fields that say one thing where the signed bytes say another.

#[tokio::test]
async fn an_assertion_whose_id_and_raw_id_disagree_signs_no_one_in() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let mut attacker = holder(&app).await;
    let victim = holder(&app).await;
    let theirs = b64(&victim.passkey.credential_id());
    for field in ["/id", "/rawId"] {
        let options = usernameless_options(&app).await;
        let mut assertion = attacker
            .passkey
            .get_with(&options, &Client::default())
            .await
            .unwrap();
        assertion.user_handle = None;
        let credential = with(&assertion.json(), field, json!(theirs));
        let response = passkey_login(&app, &credential).await;
        let status = response.status().as_u16();
        assert!(
            matches!(status, 401 | 422),
            "{field}: {status} {}",
            response.text().await.unwrap()
        );
    }
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM sessions WHERE user_id = $1",
            &victim.id
        )
        .await,
        1,
        "no session opened for the victim"
    );
}

#[tokio::test]
async fn a_registration_cannot_claim_another_credentials_id() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let mut victim = holder(&app).await;
    let (_, attacker) = app.signed_up(&unique_email()).await;
    let theirs = b64(&victim.passkey.credential_id());
    let options = creation_options(&app, &attacker.access).await;
    let mut key = soft(&app);
    let registration = key.create_with(&options, &Client::default()).await.unwrap();
    let credential = with(
        &with(&registration.json(), "/id", json!(theirs)),
        "/rawId",
        json!(theirs),
    );
    let response = register_credential(&app, &attacker.access, &credential, None).await;
    let status = response.status().as_u16();
    assert!(
        matches!(status, 201 | 401 | 409 | 422),
        "{status}: {}",
        response.text().await.unwrap()
    );
    // Whatever was answered, the victim's credential is still the victim's, and the attacker's
    // key (if registered at all) is registered under its own id.
    let tokens = sign_in(&app, &mut victim.passkey).await;
    assert_eq!(
        ok_json(app.me(&tokens.access).await).await["email"],
        victim.email.as_str()
    );
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM passkeys WHERE credential_id = $1",
            &theirs
        )
        .await,
        1
    );
    if status == 201 {
        let tokens = sign_in(&app, &mut key).await;
        assert_ne!(
            ok_json(app.me(&tokens.access).await).await["email"],
            victim.email.as_str()
        );
    }
}

#[tokio::test]
async fn a_cross_origin_assertion_is_refused() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let mut user = holder(&app).await;
    // spec-silent: the server allows no top origin, so an assertion made in a frame of another
    // site (crossOrigin true) is refused, signed or not.
    for client_data in [
        r#"{"type":"webauthn.get","challenge":"C","origin":"http://localhost:8000","crossOrigin":true}"#,
        r#"{"type":"webauthn.get","challenge":"C","origin":"http://localhost:8000","crossOrigin":true,"topOrigin":"https://evil.example.com"}"#,
    ] {
        let options = usernameless_options(&app).await;
        let challenge = options["publicKey"]["challenge"].as_str().unwrap();
        let mut assertion = user
            .passkey
            .get_with(&options, &Client::default())
            .await
            .unwrap();
        assertion.client_data_json = client_data
            .replace("\"C\"", &format!("\"{challenge}\""))
            .into_bytes();
        user.passkey.resign(&mut assertion);
        assert_problem(
            passkey_login(&app, &assertion.json()).await,
            401,
            "INVALID_PASSKEY",
        )
        .await;
    }
}

#[tokio::test]
async fn odd_but_harmless_fields_are_no_500() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let mut user = holder(&app).await;
    let access = user.session.access.clone();
    // Transports no one knows, or too many, at registration.
    for transports in [
        json!(["usb", "bogus", "x".repeat(1000)]),
        json!(vec!["internal"; 500]),
        json!([]),
        json!("internal"),
    ] {
        let options = creation_options(&app, &access).await;
        let registration = soft(&app)
            .create_with(&options, &Client::default())
            .await
            .unwrap();
        let credential = with(
            &registration.json(),
            "/response/transports",
            transports.clone(),
        );
        let response = register_credential(&app, &access, &credential, None).await;
        let status = response.status().as_u16();
        assert!(
            matches!(status, 201 | 422),
            "{transports}: {status} {}",
            response.text().await.unwrap()
        );
    }
    for listed in passkeys(&app, &access).await {
        for transport in listed["transports"].as_array().unwrap() {
            assert!(
                transport.as_str().unwrap().len() < 32,
                "stored as sent: {listed}"
            );
        }
    }
    // An empty user handle, and another attachment than at registration (a phone's passkey
    // used from a computer is "cross-platform").
    for (field, value) in [
        ("/response/userHandle", json!("")),
        ("/authenticatorAttachment", json!("cross-platform")),
        ("/authenticatorAttachment", json!("spaceship")),
        ("/type", json!("password")),
    ] {
        let options = usernameless_options(&app).await;
        let credential = with(&user.passkey.get(&options).await, field, value.clone());
        let response = passkey_login(&app, &credential).await;
        let status = response.status().as_u16();
        assert!(
            status < 500,
            "{field} = {value}: {status} {}",
            response.text().await.unwrap()
        );
        // spec-silent: the attachment may change between uses (hybrid); it is not checked.
        if value == "cross-platform" {
            assert_eq!(status, 200, "{field} = {value}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 14. Races and limits.

#[tokio::test]
async fn one_credential_registered_by_two_accounts_at_once_goes_to_one() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let (_, first) = app.signed_up(&unique_email()).await;
    let (_, second) = app.signed_up(&unique_email()).await;
    let first_options = creation_options(&app, &first.access).await;
    let second_options = creation_options(&app, &second.access).await;
    let mut key = soft(&app);
    let captured = key
        .create_with(&first_options, &Client::default())
        .await
        .unwrap();
    let replayed = captured.rechallenged(&second_options, &origin(&app));
    let requests = [
        (first.access.clone(), captured),
        (second.access.clone(), replayed),
    ]
    .into_iter()
    .map(|(access, attestation)| {
        let client = app.client.clone();
        let url = app.url("/me/passkeys");
        async move {
            let response = client
                .post(url)
                .bearer_auth(access)
                .json(&json!({ "credential": attestation.json() }))
                .send()
                .await
                .unwrap();
            let status = response.status();
            let body: Value = response.json().await.unwrap();
            (status, body)
        }
    })
    .collect();
    let results = concurrently(requests).await;
    let created_count = results
        .iter()
        .filter(|(s, _)| *s == StatusCode::CREATED)
        .count();
    assert_eq!(created_count, 1, "{results:?}");
    let refused = results
        .iter()
        .find(|(s, _)| *s != StatusCode::CREATED)
        .unwrap();
    assert_eq!(refused.0, StatusCode::CONFLICT, "{refused:?}");
    assert_eq!(
        refused.1["code"], "PASSKEY_ALREADY_REGISTERED",
        "{refused:?}"
    );
}

#[tokio::test]
async fn the_limit_holds_for_options_asked_before_it_was_reached() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let (_, session) = app.signed_up(&unique_email()).await;
    for _ in 0..19 {
        add_passkey(&app, &session.access, &mut soft(&app)).await;
    }
    // One after the other: the first registration moves the stamp, so the second's ceremony is
    // refused (or the limit is, which would do as well).
    let a = creation_options(&app, &session.access).await;
    let b = creation_options(&app, &session.access).await;
    let credential = soft(&app).create(&a).await;
    created(register_credential(&app, &session.access, &credential, None).await).await;
    let credential = soft(&app).create(&b).await;
    let response = register_credential(&app, &session.access, &credential, None).await;
    let body = assert_refused(
        response,
        &[(401, "PASSKEY_CHALLENGE_INVALID"), (409, "PASSKEY_LIMIT")],
    )
    .await;
    assert!(body["detail"].is_string());
    assert_eq!(passkeys(&app, &session.access).await.len(), 20);

    // At the same time, from 19: never 21.
    let (_, session) = app.signed_up(&unique_email()).await;
    for _ in 0..19 {
        add_passkey(&app, &session.access, &mut soft(&app)).await;
    }
    let mut requests = Vec::new();
    for _ in 0..3 {
        let options = creation_options(&app, &session.access).await;
        let credential = soft(&app).create(&options).await;
        let client = app.client.clone();
        let url = app.url("/me/passkeys");
        let access = session.access.clone();
        requests.push(async move {
            let response = client
                .post(url)
                .bearer_auth(access)
                .json(&json!({ "credential": credential }))
                .send()
                .await
                .unwrap();
            response.status().as_u16()
        });
    }
    let statuses = concurrently(requests).await;
    assert!(
        statuses.iter().all(|s| matches!(s, 201 | 401 | 409)),
        "{statuses:?}"
    );
    assert!(statuses.contains(&201), "{statuses:?}");
    assert_eq!(
        passkeys(&app, &session.access).await.len(),
        20,
        "{statuses:?}"
    );
}

/// Asserts a problem whose status and code are one of `allowed`; its body.
async fn assert_refused(response: reqwest::Response, allowed: &[(u16, &str)]) -> Value {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    assert!(
        allowed
            .iter()
            .any(|(s, c)| *s == status && body["code"] == *c),
        "{status} {body}, expected one of {allowed:?}"
    );
    body
}

/// DELETE `path` with `body` for each `(access, path, body)` at the same time: the statuses.
async fn deletes_at_once(app: &TestApp, deletes: Vec<(String, String, Value)>) -> Vec<u16> {
    let requests = deletes
        .into_iter()
        .map(|(access, path, body)| {
            let client = app.client.clone();
            let url = app.url(&path);
            async move {
                client
                    .delete(url)
                    .bearer_auth(access)
                    .json(&body)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            }
        })
        .collect();
    concurrently(requests).await
}

#[tokio::test]
async fn two_passkeys_removed_at_once_leave_a_passwordless_account_one() {
    let app = spawn_app().await;
    freeze_clock(&app);
    for _ in 0..5 {
        let user = passwordless(&app).await;
        let options =
            options_of(registration_options(&app, &user.session.access, &json!({})).await).await;
        let credential = soft(&app).create(&options).await;
        let second =
            created(register_credential(&app, &user.session.access, &credential, None).await).await;
        let access = user.session.access.clone();
        let statuses = deletes_at_once(
            &app,
            vec![
                (
                    access.clone(),
                    format!("/me/passkeys/{}", user.passkey_id),
                    json!({}),
                ),
                (
                    access.clone(),
                    format!("/me/passkeys/{}", second["id"].as_str().unwrap()),
                    json!({}),
                ),
            ],
        )
        .await;
        assert_eq!(
            passkeys(&app, &access).await.len(),
            1,
            "the last way in is kept: {statuses:?}"
        );
        assert!(
            statuses.contains(&204) && statuses.contains(&409),
            "{statuses:?}"
        );
    }
}

#[tokio::test]
async fn removing_the_password_and_the_passkey_at_once_leaves_one_of_them() {
    let app = spawn_app().await;
    freeze_clock(&app);
    for _ in 0..5 {
        let user = holder(&app).await;
        let access = user.session.access.clone();
        let statuses = deletes_at_once(
            &app,
            vec![
                (access.clone(), "/me/password".to_string(), Value::Null),
                (
                    access.clone(),
                    format!("/me/passkeys/{}", user.passkey_id),
                    json!({ "password": PASSWORD }),
                ),
            ],
        )
        .await;
        let status = mfa_status(&app, &access).await;
        let has_password = status["has_password"] == true;
        let has_passkey = !passkeys(&app, &access).await.is_empty();
        assert!(
            has_password || has_passkey,
            "neither a password nor a passkey is left: {statuses:?} {status}"
        );
    }
}

#[tokio::test]
async fn two_factors_removed_at_once_under_the_policy_leave_one() {
    let app = spawn_app_with(&[("MFA_REQUIRED_FOR", "everyone")]).await;
    freeze_clock(&app);
    let body = json!({ "password": PASSWORD });
    // Two passkeys, each removed by its own request at the same time (a few times over: a race
    // is not lost every time).
    for _ in 0..5 {
        let (_, session) = app.signed_up(&unique_email()).await;
        let first = add_passkey(&app, &session.access, &mut soft(&app)).await;
        let second = add_passkey(&app, &session.access, &mut soft(&app)).await;
        let statuses = deletes_at_once(
            &app,
            vec![
                (
                    session.access.clone(),
                    format!("/me/passkeys/{}", first["id"].as_str().unwrap()),
                    body.clone(),
                ),
                (
                    session.access.clone(),
                    format!("/me/passkeys/{}", second["id"].as_str().unwrap()),
                    body.clone(),
                ),
            ],
        )
        .await;
        assert_eq!(
            passkeys(&app, &session.access).await.len(),
            1,
            "the last second factor is kept: {statuses:?}"
        );
    }
}

#[tokio::test]
async fn under_the_policy_totp_goes_when_a_passkey_stays_and_not_both_at_once() {
    let app = spawn_app_with(&[("MFA_REQUIRED_FOR", "everyone")]).await;
    freeze_clock(&app);
    // One after the other: the passkey is a second factor, so TOTP may go; then the passkey may
    // not.
    let (_, session) = app.signed_up(&unique_email()).await;
    let (secret, _) = enrol(&app, &session.access).await;
    let key = add_passkey(&app, &session.access, &mut soft(&app)).await;
    let response = call(
        &app,
        Method::DELETE,
        "/me/mfa/totp",
        &session.access,
        &json!({ "password": PASSWORD, "code": next_code(&app, &secret) }),
    )
    .await;
    assert_eq!(
        response.status(),
        StatusCode::NO_CONTENT,
        "{}",
        response.text().await.unwrap()
    );
    assert_problem(
        delete_passkey(
            &app,
            &session.access,
            key["id"].as_str().unwrap(),
            &json!({ "password": PASSWORD }),
        )
        .await,
        403,
        "FORBIDDEN",
    )
    .await;

    // At the same time: one of them stays.
    for _ in 0..5 {
        let (_, session) = app.signed_up(&unique_email()).await;
        let (secret, _) = enrol(&app, &session.access).await;
        let key = add_passkey(&app, &session.access, &mut soft(&app)).await;
        let code = next_code(&app, &secret);
        let statuses = deletes_at_once(
            &app,
            vec![
                (
                    session.access.clone(),
                    "/me/mfa/totp".to_string(),
                    json!({ "password": PASSWORD, "code": code }),
                ),
                (
                    session.access.clone(),
                    format!("/me/passkeys/{}", key["id"].as_str().unwrap()),
                    json!({ "password": PASSWORD }),
                ),
            ],
        )
        .await;
        let totp = mfa_status(&app, &session.access).await["totp"] == true;
        let passkey = !passkeys(&app, &session.access).await.is_empty();
        assert!(totp || passkey, "no second factor is left: {statuses:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// 15. What a passkey proof is not.

#[tokio::test]
async fn a_passkey_is_no_substitute_for_an_existing_password() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let mut user = holder(&app).await;
    // A fresh passkey sign-in (UV): the session has just proved a passkey.
    let session = sign_in(&app, &mut user.passkey).await;
    let response = call(
        &app,
        Method::PUT,
        "/me/password",
        &session.access,
        &json!({ "new_password": NEW_PASSWORD }),
    )
    .await;
    let body = assert_problem(response, 422, "VALIDATION_FAILED").await;
    assert_eq!(error_fields(&body), ["current_password"]);
    assert_problem(
        call(
            &app,
            Method::PUT,
            "/me/password",
            &session.access,
            &json!({ "current_password": WRONG_PASSWORD, "new_password": NEW_PASSWORD }),
        )
        .await,
        403,
        "INVALID_CREDENTIALS",
    )
    .await;
    for (method, path, body) in [
        (Method::PUT, "/me", json!({ "email": unique_email() })),
        (Method::DELETE, "/me", json!({})),
    ] {
        let response = call(&app, method.clone(), path, &session.access, &body).await;
        assert_problem(response, 422, "VALIDATION_FAILED").await;
    }
    // The password is the same, and still the first step of a password login.
    password_step(&app, &user.email).await;
}

#[tokio::test]
async fn a_step_up_is_for_its_own_session() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let mut user = holder(&app).await;
    let other = sign_in(&app, &mut user.passkey).await;
    app.clock.advance_ms(STEP_UP_MS + 1_000);
    passkey_step_up(&app, &user.session.access, &mut user.passkey).await;
    assert_problem(
        app.change_password(&other.access, PASSWORD, NEW_PASSWORD)
            .await,
        403,
        "STEP_UP_REQUIRED",
    )
    .await;
    let response = app
        .change_password(&user.session.access, PASSWORD, NEW_PASSWORD)
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn a_passwordless_account_is_deleted_only_after_a_passkey_proof() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let mut user = passwordless(&app).await;
    app.clock.advance_ms(STEP_UP_MS + 1_000);
    let body = assert_problem(
        call(
            &app,
            Method::DELETE,
            "/me",
            &user.session.access,
            &json!({}),
        )
        .await,
        403,
        "STEP_UP_REQUIRED",
    )
    .await;
    assert_eq!(body["methods"], json!(["passkey"]), "{body}");
    let access = user.session.access.clone();
    passkey_step_up(&app, &access, &mut user.passkey).await;
    let response = call(&app, Method::DELETE, "/me", &access, &json!({})).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM users WHERE id = $1", &user.id)
            .await,
        0
    );
}
