//! An independent security review of passkeys (issue 16), as attacks: each test tries to break
//! one rule of /work/passkey-spec.md. A test that fails against the server exposes a finding
//! (named `finding:` in its doc); the others are attacks that held.
//!
//! The software authenticator is `soft_passkey.rs`; the helpers below are this file's own.

use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};

use crate::helpers::*;
use crate::mfa::{bare, call, code_now, enrol, login_mfa, pair};
use crate::soft_passkey::*;

// ---------------------------------------------------------------------------------------------
// Helpers.

/// The origin of the tests' browser: WEBAUTHN_ORIGINS' first, else PUBLIC_URL's.
fn origin(app: &TestApp) -> String {
    let origins = app.var("WEBAUTHN_ORIGINS");
    if let Some(first) = origins.split(',').map(str::trim).find(|o| !o.is_empty()) {
        return first.to_string();
    }
    let url = app.var("PUBLIC_URL");
    let url = if url.is_empty() {
        "http://localhost:8000".to_string()
    } else {
        url
    };
    url::Url::parse(&url)
        .unwrap()
        .origin()
        .ascii_serialization()
}

fn soft(app: &TestApp) -> SoftPasskey {
    SoftPasskey::new(&origin(app))
}

/// The body of a 200 answer.
async fn ok(response: Response) -> Value {
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// (status, code, detail) of an answer: what an attacker compares.
async fn answer(response: Response) -> (u16, Value, Value) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    (status, body["code"].clone(), body["detail"].clone())
}

async fn creation_options(app: &TestApp, access: &str, body: &Value) -> Value {
    ok(call(app, Method::POST, "/me/passkeys/options", access, body).await).await
}

async fn register(app: &TestApp, access: &str, credential: &Value) -> Response {
    call(
        app,
        Method::POST,
        "/me/passkeys",
        access,
        &json!({ "credential": credential }),
    )
    .await
}

/// Registers `passkey` with the step-up body `body`; its `PasskeyResponse`.
async fn add(app: &TestApp, access: &str, passkey: &mut SoftPasskey, body: &Value) -> Value {
    let options = creation_options(app, access, body).await;
    let credential = passkey.create(&options).await;
    let response = register(app, access, &credential).await;
    let status = response.status();
    let view: Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{view}");
    view
}

async fn email_options(app: &TestApp, email: &str) -> Value {
    ok(app
        .post_json("/login/passkey/options", &json!({ "email": email }))
        .await)
    .await
}

async fn usernameless_options(app: &TestApp) -> Value {
    ok(app.post_json("/login/passkey/options", &json!({})).await).await
}

async fn passkey_login(app: &TestApp, credential: &Value) -> Response {
    app.post_json("/login/passkey", &json!({ "credential": credential }))
        .await
}

async fn delete_passkey(app: &TestApp, access: &str, id: &str, body: &Value) -> Response {
    call(
        app,
        Method::DELETE,
        &format!("/me/passkeys/{id}"),
        access,
        body,
    )
    .await
}

async fn remove_password(app: &TestApp, access: &str) -> Response {
    bare(app, Method::DELETE, "/me/password", access).await
}

/// An account (password [`PASSWORD`]) with `passkey` registered by the session `session`.
struct Holder {
    id: String,
    email: String,
    passkey: SoftPasskey,
    passkey_id: String,
    session: Tokens,
}

async fn holder_of(app: &TestApp, mut passkey: SoftPasskey) -> Holder {
    let email = unique_email();
    let (user, session) = app.signed_up(&email).await;
    let view = add(
        app,
        &session.access,
        &mut passkey,
        &json!({ "password": PASSWORD }),
    )
    .await;
    Holder {
        id: user["id"].as_str().unwrap().to_string(),
        email,
        passkey,
        passkey_id: view["id"].as_str().unwrap().to_string(),
        session,
    }
}

async fn holder(app: &TestApp) -> Holder {
    holder_of(app, soft(app)).await
}

/// The `mfa_token` of a password login of an account with a second factor.
async fn mfa_token(app: &TestApp, email: &str) -> String {
    let body = assert_problem(app.login(email, PASSWORD).await, 403, "MFA_REQUIRED").await;
    body["mfa_token"].as_str().unwrap().to_string()
}

// ---------------------------------------------------------------------------------------------
// Findings: enumeration through the answer to an email-first ceremony.

/// finding: an email-first ceremony remembers the account it named (`user_id`) for a known
/// address, and nothing for an unknown one; the checks then run in another order, so the same
/// foreign answer (the attacker's own passkey, with a user handle that is not its own: the
/// handle is not signed) gets "the passkey is not one this ceremony allows" for an address with
/// an account (with passkeys or not, disabled or not) and "the user handle does not match the
/// passkey" for an address without one. An existence oracle, against "No enumeration".
#[tokio::test]
async fn an_email_first_answer_does_not_tell_whether_the_address_has_an_account() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let mut attacker = holder(&app).await;
    let victim = unique_email();
    app.signed_up(&victim).await;
    let unknown = unique_email();

    let mut answers = Vec::new();
    for email in [&victim, &unknown] {
        let options = email_options(&app, email).await;
        let mut assertion = attacker
            .passkey
            .get_with(&options, &Client::ignoring_allow_list())
            .await
            .unwrap();
        // Not covered by the signature: any client may send any handle.
        assertion.user_handle = Some(vec![7; 16]);
        answers.push(answer(passkey_login(&app, &assertion.json()).await).await);
    }
    assert_eq!(answers[0].0, 401);
    assert_eq!(
        answers[0], answers[1],
        "the answer for an address with an account ({victim}) and without one must not differ"
    );
}

/// finding: naming one of the listed credential ids in an (attacker-signed) assertion answers
/// "the signature is not valid" when the id is a real passkey's and "this passkey is not
/// registered here" when it is a decoy: whether the address has an account with passkeys, which
/// the decoys are meant to hide.
#[tokio::test]
async fn an_email_first_answer_does_not_tell_real_credentials_from_decoys() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let mut attacker = holder(&app).await;
    let victim = holder(&app).await;
    let unknown = unique_email();

    let mut answers = Vec::new();
    for email in [&victim.email, &unknown] {
        let options = email_options(&app, email).await;
        let listed = options["publicKey"]["allowCredentials"][0]["id"]
            .as_str()
            .unwrap()
            .to_string();
        let mut assertion = attacker
            .passkey
            .get_with(&options, &Client::ignoring_allow_list())
            .await
            .unwrap();
        assertion.credential_id = unb64(&listed).unwrap();
        assertion.user_handle = None;
        answers.push(answer(passkey_login(&app, &assertion.json()).await).await);
    }
    assert_eq!(answers[0].0, 401);
    assert_eq!(
        answers[0], answers[1],
        "a real credential id and a decoy must be refused alike"
    );
}

/// finding (spec-level): the decoys always say `transports: ["internal", "hybrid"]` and 32-byte
/// ids, while an account's real descriptors carry what its authenticators said (a security key:
/// `["usb"]`, `["nfc","usb"]`...): the options alone tell a real account from a decoy.
#[tokio::test]
async fn decoys_cannot_be_told_from_a_security_keys_descriptor() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let email = unique_email();
    let (_, session) = app.signed_up(&email).await;
    let mut key = soft(&app).device_bound();
    let options = creation_options(&app, &session.access, &json!({ "password": PASSWORD })).await;
    let mut attestation = key.create_with(&options, &Client::default()).await.unwrap();
    attestation.transports = vec!["usb".into()];
    let response = register(&app, &session.access, &attestation.json()).await;
    assert_eq!(response.status(), StatusCode::CREATED);

    let real = email_options(&app, &email).await["publicKey"]["allowCredentials"].clone();
    let decoy = email_options(&app, &unique_email()).await["publicKey"]["allowCredentials"].clone();
    let shape = |list: &Value| -> Vec<Value> {
        list.as_array()
            .unwrap()
            .iter()
            .map(|d| json!([d["type"], d["transports"]]))
            .collect()
    };
    assert_eq!(
        shape(&real)[0],
        shape(&decoy)[0],
        "a real descriptor {real} and a decoy {decoy} look alike"
    );
}

// ---------------------------------------------------------------------------------------------
// Findings: passkey proofs and the last credentials.

/// finding: registering a passkey records a passkey proof (`passkey_at`) even when the
/// authenticator did not verify the user (`passed_passkey_in(.., true, ..)`): a password and a
/// TOTP code then stand in for the passkey proof DELETE /me/password asks for, without any
/// passkey ever being presented with user verification in this session.
#[tokio::test]
async fn registering_a_passkey_without_user_verification_is_no_passkey_proof() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let email = unique_email();
    let (_, session) = app.signed_up(&email).await;
    let (secret, _) = enrol(&app, &session.access).await;
    let mut verifying = soft(&app);
    add(
        &app,
        &session.access,
        &mut verifying,
        &json!({ "password": PASSWORD }),
    )
    .await;
    // The proof of that registration runs out (MFA_STEP_UP_SECONDS = 300).
    app.clock.advance_ms(400_000);
    assert_problem(
        remove_password(&app, &session.access).await,
        403,
        "STEP_UP_REQUIRED",
    )
    .await;
    // A passkey that cannot verify the user, added with the password and a code.
    let mut plain = soft(&app).without_user_verification();
    let view = add(
        &app,
        &session.access,
        &mut plain,
        &json!({ "password": PASSWORD, "code": code_now(&app, &secret) }),
    )
    .await;
    assert_eq!(view["user_verified"], false);
    // No passkey has verified the user in this session since the window ran out.
    assert_problem(
        remove_password(&app, &session.access).await,
        403,
        "STEP_UP_REQUIRED",
    )
    .await;
}

/// finding: the last-second-factor rule of DELETE /me/passkeys/{id} (403 under MFA_REQUIRED_FOR)
/// is checked before the transaction only (`service/passkeys.rs` `delete`): two concurrent
/// removals of an account's two passkeys both pass it, and the account is left without a
/// second factor.
#[tokio::test]
async fn concurrent_removals_cannot_take_the_last_second_factor_under_mfa_required_for() {
    let app = spawn_app_with(&[("MFA_REQUIRED_FOR", "everyone")]).await;
    let other = app.another_instance().await;
    freeze_clock(&app);
    let mut lost = 0;
    for _ in 0..5 {
        let email = unique_email();
        let (_, session) = app.signed_up(&email).await;
        let body = json!({ "password": PASSWORD });
        let first = add(&app, &session.access, &mut soft(&app), &body).await;
        let second = add(&app, &session.access, &mut soft(&app), &body).await;
        let ids = [
            first["id"].as_str().unwrap().to_string(),
            second["id"].as_str().unwrap().to_string(),
        ];
        let url = |app: &TestApp, id: &str| app.url(&format!("/me/passkeys/{id}"));
        let requests = vec![
            app.client
                .delete(url(&app, &ids[0]))
                .bearer_auth(&session.access)
                .json(&body)
                .send(),
            other
                .client
                .delete(url(&other, &ids[1]))
                .bearer_auth(&session.access)
                .json(&body)
                .send(),
        ];
        let statuses: Vec<u16> = futures_join(requests).await;
        let user_id = claims_of(&session.access)["sub"]
            .as_str()
            .unwrap()
            .to_string();
        let left = app
            .count("SELECT COUNT(*) FROM passkeys WHERE user_id = $1", &user_id)
            .await;
        assert!(
            statuses.contains(&204),
            "one removal goes through: {statuses:?}"
        );
        if left == 0 {
            lost += 1;
        }
    }
    assert_eq!(
        lost, 0,
        "rounds out of 5 in which concurrent removals left an account MFA_REQUIRED_FOR covers without a second factor"
    );
}

/// Sends the requests at the same time; their statuses.
async fn futures_join<F>(requests: Vec<F>) -> Vec<u16>
where
    F: std::future::Future<Output = reqwest::Result<Response>> + Send + 'static,
{
    let responses = concurrently(requests).await;
    responses
        .into_iter()
        .map(|r| r.unwrap().status().as_u16())
        .collect()
}

/// finding (spec-silent): an account without a password may remove its only passkey that
/// verifies the user as long as another (non-verifying) passkey remains; it is then left with
/// passkeys that can sign in but never prove themselves (step-up requires user verification),
/// so no sensitive change (a new passkey, a password, the email) is possible any more: the
/// invariant DELETE /me/password enforces ("a passkey registered with UV") is not kept.
#[tokio::test]
async fn a_passwordless_account_keeps_a_passkey_that_verifies_the_user() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let user = holder(&app).await;
    let access = user.session.access.clone();
    let response = remove_password(&app, &access).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    // The registration's proof still stands: a second passkey, without user verification.
    add(
        &app,
        &access,
        &mut soft(&app).without_user_verification(),
        &json!({}),
    )
    .await;
    let response = delete_passkey(&app, &access, &user.passkey_id, &json!({})).await;
    assert_problem(response, 409, "LAST_CREDENTIAL").await;
}

// ---------------------------------------------------------------------------------------------
// Attacks that held: ceremonies.

/// One assertion sent 8 times at once to two instances opens one session (the ceremony is taken
/// once; a passkey without a counter, so that the counter's conditional write cannot be what
/// stops the others).
#[tokio::test]
async fn one_assertion_at_once_on_two_instances_opens_one_session() {
    let app = spawn_app().await;
    let other = app.another_instance().await;
    freeze_clock(&app);
    let mut user = holder_of(&app, soft(&app).without_counter()).await;
    let options = usernameless_options(&app).await;
    let credential = user.passkey.get(&options).await;
    let body = json!({ "credential": credential });
    let requests: Vec<_> = (0..8)
        .map(|i| {
            let target = if i % 2 == 0 { &app } else { &other };
            target
                .client
                .post(target.url("/login/passkey"))
                .json(&body)
                .send()
        })
        .collect();
    let statuses = futures_join(requests).await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 401),
        "{statuses:?}"
    );
    let sessions = app
        .count(
            "SELECT COUNT(*) FROM sessions WHERE user_id = $1 AND amr LIKE '%user%'",
            &user.id,
        )
        .await;
    // The registering session has `swk user mfa` too; the sign-in adds one.
    assert_eq!(sessions, 2);
}

/// A `login` ceremony answered at POST /login/mfa, and an `mfa` ceremony answered at POST
/// /login/passkey, are refused; the `mfa` ceremony of one token does not finish another token's
/// login of the same account.
#[tokio::test]
async fn ceremonies_do_not_cross_purposes_or_tokens() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let mut user = holder(&app).await;
    let token = mfa_token(&app, &user.email).await;
    let other_token = mfa_token(&app, &user.email).await;

    // A login ceremony at /login/mfa.
    let options = usernameless_options(&app).await;
    let credential = user.passkey.get(&options).await;
    let response = login_mfa(&app, &json!({ "mfa_token": token, "passkey": credential })).await;
    assert_problem(response, 401, "PASSKEY_CHALLENGE_INVALID").await;

    // The mfa ceremony of `other_token` at /login/passkey, then at /login/mfa with `token`.
    let options = ok(app
        .post_json(
            "/login/mfa/passkey/options",
            &json!({ "mfa_token": other_token }),
        )
        .await)
    .await;
    let credential = user.passkey.get(&options).await;
    assert_problem(
        passkey_login(&app, &credential).await,
        401,
        "PASSKEY_CHALLENGE_INVALID",
    )
    .await;
    let response = login_mfa(&app, &json!({ "mfa_token": token, "passkey": credential })).await;
    assert_problem(response, 401, "PASSKEY_CHALLENGE_INVALID").await;
}

/// On the controlled clock: a ceremony answered 1 ms before it expires is accepted, one answered
/// when it expires is refused (and the library's own wall-clock expiry plays no part).
#[tokio::test]
async fn a_ceremony_expires_on_the_servers_clock() {
    let app = spawn_app().await;
    let t = freeze_clock(&app);
    let mut user = holder(&app).await;
    let options = usernameless_options(&app).await;
    let credential = user.passkey.get(&options).await;
    app.clock.set_ms(t + 300_000);
    assert_problem(
        passkey_login(&app, &credential).await,
        401,
        "PASSKEY_CHALLENGE_INVALID",
    )
    .await;
    let options = usernameless_options(&app).await;
    let credential = user.passkey.get(&options).await;
    app.clock.set_ms(t + 600_000 - 1);
    pair(passkey_login(&app, &credential).await).await;
}

// ---------------------------------------------------------------------------------------------
// Attacks that held: whose passkey.

/// An email-first ceremony for A answered with B's passkey (B's own, valid, user handle and
/// all) is refused, and the attempt does not sign B in either.
#[tokio::test]
async fn an_email_first_ceremony_for_one_account_is_not_answered_with_anothers_passkey() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let victim = holder(&app).await;
    let mut attacker = holder(&app).await;
    let options = email_options(&app, &victim.email).await;
    let credential = attacker
        .passkey
        .get_with(&options, &Client::ignoring_allow_list())
        .await
        .unwrap()
        .json();
    assert_problem(
        passkey_login(&app, &credential).await,
        401,
        "INVALID_PASSKEY",
    )
    .await;
    // A usernameless answer whose user handle names the victim, with the attacker's passkey.
    let options = usernameless_options(&app).await;
    let mut assertion = attacker
        .passkey
        .get_with(&options, &Client::default())
        .await
        .unwrap();
    assertion.user_handle = Some(
        uuid::Uuid::parse_str(&victim.id)
            .unwrap()
            .as_bytes()
            .to_vec(),
    );
    assert_problem(
        passkey_login(&app, &assertion.json()).await,
        401,
        "INVALID_PASSKEY",
    )
    .await;
}

/// At POST /login/mfa, another account's passkey is a wrong try; five wrong tries spend the
/// token, after which even the account's own passkey is refused (INVALID_TOKEN), and the options
/// are refused too.
#[tokio::test]
async fn wrong_passkeys_at_login_mfa_spend_the_tokens_tries() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let mut user = holder(&app).await;
    let mut attacker = holder(&app).await;
    let token = mfa_token(&app, &user.email).await;
    for _ in 0..5 {
        let options = ok(app
            .post_json("/login/mfa/passkey/options", &json!({ "mfa_token": token }))
            .await)
        .await;
        let credential = attacker
            .passkey
            .get_with(&options, &Client::ignoring_allow_list())
            .await
            .unwrap()
            .json();
        let response = login_mfa(&app, &json!({ "mfa_token": token, "passkey": credential })).await;
        assert_problem(response, 401, "INVALID_PASSKEY").await;
    }
    let response = app
        .post_json("/login/mfa/passkey/options", &json!({ "mfa_token": token }))
        .await;
    assert_problem(response, 401, "INVALID_TOKEN").await;
    // A fresh token's ceremony answered with the spent token.
    let fresh = mfa_token(&app, &user.email).await;
    let options = ok(app
        .post_json("/login/mfa/passkey/options", &json!({ "mfa_token": fresh }))
        .await)
    .await;
    let credential = user.passkey.get(&options).await;
    let response = login_mfa(&app, &json!({ "mfa_token": token, "passkey": credential })).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

/// A superuser's reset removes the passkeys: a ceremony started before it, answered after, does
/// not sign in; nor does a passkey of a deactivated account (403 after the assertion, no
/// session).
#[tokio::test]
async fn a_reset_or_a_deactivation_leaves_no_passkey_usable() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let (_, admin) = app.superuser().await;
    let mut user = holder(&app).await;
    let options = usernameless_options(&app).await;
    let credential = user.passkey.get(&options).await;
    let response = bare(
        &app,
        Method::DELETE,
        &format!("/users/{}/mfa", user.id),
        &admin.access,
    )
    .await;
    assert!(response.status().is_success(), "{}", response.status());
    assert_problem(
        passkey_login(&app, &credential).await,
        401,
        "INVALID_PASSKEY",
    )
    .await;

    let mut other = holder(&app).await;
    let response = call(
        &app,
        Method::PATCH,
        &format!("/users/{}", other.id),
        &admin.access,
        &json!({ "is_active": false }),
    )
    .await;
    assert!(response.status().is_success(), "{}", response.status());
    let options = email_options(&app, &other.email).await;
    // Decoys for a disabled account: its passkey is not listed.
    let credential = other
        .passkey
        .get_with(&options, &Client::ignoring_allow_list())
        .await
        .unwrap()
        .json();
    assert_eq!(passkey_login(&app, &credential).await.status(), 401);
    let options = usernameless_options(&app).await;
    let credential = other.passkey.get(&options).await;
    assert_problem(
        passkey_login(&app, &credential).await,
        403,
        "ACCOUNT_DISABLED",
    )
    .await;
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM sessions WHERE user_id = $1 AND revoked_at IS NULL",
            &other.id
        )
        .await,
        0
    );
}

// ---------------------------------------------------------------------------------------------
// Attacks that held: step-up and passwordless accounts.

/// A passkey that does not verify the user signs in alone nowhere (usernameless or email-first:
/// 401, once its signature is good), and as the second factor after the password it is no
/// passkey proof: DELETE /me/password is refused (403), and the step-up with it is refused too.
#[tokio::test]
async fn a_passkey_without_user_verification_proves_nothing() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let user = holder(&app).await;
    let mut plain = soft(&app).without_user_verification();
    add(
        &app,
        &user.session.access,
        &mut plain,
        &json!({ "password": PASSWORD }),
    )
    .await;
    for options in [
        usernameless_options(&app).await,
        email_options(&app, &user.email).await,
    ] {
        assert_eq!(options["publicKey"]["userVerification"], "required");
        let credential = plain.get(&options).await;
        let body = assert_problem(
            passkey_login(&app, &credential).await,
            401,
            "INVALID_PASSKEY",
        )
        .await;
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .contains("did not verify the user"),
            "{body}"
        );
    }
    let token = mfa_token(&app, &user.email).await;
    let options = ok(app
        .post_json("/login/mfa/passkey/options", &json!({ "mfa_token": token }))
        .await)
    .await;
    assert_eq!(options["publicKey"]["userVerification"], "preferred");
    let credential = plain.get(&options).await;
    let session =
        pair(login_mfa(&app, &json!({ "mfa_token": token, "passkey": credential })).await).await;
    assert_eq!(
        claims_of(&session.access)["amr"],
        json!(["pwd", "swk", "mfa"])
    );
    assert_problem(
        remove_password(&app, &session.access).await,
        403,
        "STEP_UP_REQUIRED",
    )
    .await;
    let options = ok(bare(
        &app,
        Method::POST,
        "/me/passkeys/step-up/options",
        &session.access,
    )
    .await)
    .await;
    assert_eq!(options["publicKey"]["userVerification"], "required");
    let credential = plain.get(&options).await;
    let response = call(
        &app,
        Method::POST,
        "/me/passkeys/step-up",
        &session.access,
        &json!({ "credential": credential }),
    )
    .await;
    assert_problem(response, 401, "INVALID_PASSKEY").await;
    assert_problem(
        remove_password(&app, &session.access).await,
        403,
        "STEP_UP_REQUIRED",
    )
    .await;
}

/// Two concurrent removals of the last two passkeys of an account without a password, on two
/// instances: one goes through, the other is 409 LAST_CREDENTIAL, one passkey is left.
#[tokio::test]
async fn concurrent_removals_leave_a_passwordless_account_a_passkey() {
    let app = spawn_app().await;
    let other = app.another_instance().await;
    freeze_clock(&app);
    for _ in 0..3 {
        let user = holder(&app).await;
        let access = user.session.access.clone();
        let second = add(
            &app,
            &access,
            &mut soft(&app),
            &json!({ "password": PASSWORD }),
        )
        .await;
        assert_eq!(remove_password(&app, &access).await.status(), 204);
        let ids = [
            user.passkey_id.clone(),
            second["id"].as_str().unwrap().to_string(),
        ];
        let requests = vec![
            app.client
                .delete(app.url(&format!("/me/passkeys/{}", ids[0])))
                .bearer_auth(&access)
                .json(&json!({}))
                .send(),
            other
                .client
                .delete(other.url(&format!("/me/passkeys/{}", ids[1])))
                .bearer_auth(&access)
                .json(&json!({}))
                .send(),
        ];
        let mut statuses = futures_join(requests).await;
        statuses.sort();
        assert_eq!(statuses, [204, 409]);
        assert_eq!(
            app.count("SELECT COUNT(*) FROM passkeys WHERE user_id = $1", &user.id)
                .await,
            1
        );
    }
}

/// An account without a password cannot change its email, delete itself or set a password from
/// a session whose passkey proof has run out, omitting or inventing the password.
#[tokio::test]
async fn a_passwordless_account_needs_a_fresh_passkey_proof_for_sensitive_changes() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let user = holder(&app).await;
    let access = user.session.access.clone();
    assert_eq!(remove_password(&app, &access).await.status(), 204);
    app.clock.advance_ms(400_000);
    let attempts = [
        (
            Method::PUT,
            "/me/password",
            json!({ "new_password": "another long passphrase 42" }),
        ),
        (
            Method::PUT,
            "/me/password",
            json!({ "current_password": "", "new_password": "another long passphrase 42" }),
        ),
        (Method::PATCH, "/me", json!({ "email": unique_email() })),
        (
            Method::PATCH,
            "/me",
            json!({ "email": unique_email(), "current_password": "x" }),
        ),
        (Method::DELETE, "/me", json!({})),
        (Method::DELETE, "/me", json!({ "password": "" })),
    ];
    for (method, path, body) in attempts {
        let response = call(&app, method.clone(), path, &access, &body).await;
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        assert_eq!(status, 403, "{method} {path} {body}: {text}");
        assert!(text.contains("STEP_UP_REQUIRED"), "{method} {path}: {text}");
    }
    // And a password login with an empty or any password is refused.
    let status = app.login(&user.email, "").await.status().as_u16();
    assert!([401, 422].contains(&status), "an empty password: {status}");
    assert_problem(
        app.login(&user.email, "anything at all").await,
        401,
        "INVALID_CREDENTIALS",
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// Attacks that held: enumeration through the options.

/// Email-first options for an unknown address, an account without passkeys and a disabled
/// account with passkeys: 200, the same keys, 1 to 3 descriptors of 32 bytes, stable per
/// address, never the disabled account's real credential.
#[tokio::test]
async fn email_first_options_look_alike_and_are_stable() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let (_, admin) = app.superuser().await;
    let without = unique_email();
    app.signed_up(&without).await;
    let disabled = holder(&app).await;
    call(
        &app,
        Method::PATCH,
        &format!("/users/{}", disabled.id),
        &admin.access,
        &json!({ "is_active": false }),
    )
    .await;
    let real = holder(&app).await;
    let keys = |o: &Value| {
        let mut k: Vec<String> = o["publicKey"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        k.sort();
        k
    };
    let reference = keys(&email_options(&app, &real.email).await);
    for email in [
        unique_email(),
        without.clone(),
        disabled.email.clone(),
        "not an address\u{0}".into(),
    ] {
        let first = email_options(&app, &email).await;
        let second = email_options(&app, &email).await;
        assert_eq!(keys(&first), reference, "{email}");
        let ids = |o: &Value| -> Vec<String> {
            o["publicKey"]["allowCredentials"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["id"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(ids(&first), ids(&second), "stable for {email}");
        assert!((1..=3).contains(&ids(&first).len()), "{email}: {first}");
        for id in ids(&first) {
            assert_eq!(unb64(&id).unwrap().len(), 32);
            assert_ne!(unb64(&id).unwrap(), disabled.passkey.credential_id());
        }
        assert_ne!(
            first["publicKey"]["challenge"],
            second["publicKey"]["challenge"]
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Attacks that held: origins and RP ID.

/// With WEBAUTHN_RP_ID=example.test and the origin https://app.example.test: a suffix trick, a
/// port, plain http, a sibling, a trailing slash, and the RP ID hash of a parent domain or of a
/// look-alike are all refused, at registration and at sign-in.
#[tokio::test]
async fn origins_and_rp_ids_are_compared_exactly() {
    let app = spawn_app_with(&[
        ("PUBLIC_URL", "https://app.example.test"),
        ("WEBAUTHN_RP_ID", "example.test"),
        ("WEBAUTHN_ORIGINS", "https://app.example.test"),
    ])
    .await;
    freeze_clock(&app);
    let mut user = holder(&app).await;
    let origins = [
        "https://app.example.test.evil.com",
        "https://app.example.test:8443",
        "https://app.example.test:443",
        "http://app.example.test",
        "https://evil.example.test",
        "https://app.example.test/",
        "https://APP.example.test",
        "null",
    ];
    // At sign-in every refusal has one detail (which check failed would tell a real credential
    // from a decoy): the check is named at the step-up, which signs the same way.
    let access = user.session.access.clone();
    let step_up_options =
        async || ok(bare(&app, Method::POST, "/me/passkeys/step-up/options", &access).await).await;
    let step_up = async |credential: &Value| {
        call(
            &app,
            Method::POST,
            "/me/passkeys/step-up",
            &access,
            &json!({ "credential": credential }),
        )
        .await
    };
    for origin in origins {
        let options = usernameless_options(&app).await;
        let credential = user
            .passkey
            .get_with(&options, &Client::origin(origin))
            .await
            .unwrap()
            .json();
        assert_problem(
            passkey_login(&app, &credential).await,
            401,
            "INVALID_PASSKEY",
        )
        .await;
        let options = step_up_options().await;
        let credential = user
            .passkey
            .get_with(&options, &Client::origin(origin))
            .await
            .unwrap()
            .json();
        let body = assert_problem(step_up(&credential).await, 401, "INVALID_PASSKEY").await;
        assert!(
            body["detail"].as_str().unwrap().contains("origin")
                || body["detail"].as_str().unwrap().contains("clientDataJSON"),
            "{origin}: {body}"
        );
    }
    // The RP ID hash of a parent domain, a look-alike or a sibling, signed by the right key.
    for rp_id in [
        "test",
        "evil.test",
        "example.test.evil.com",
        "app.example.test",
        "xample.test",
    ] {
        let options = usernameless_options(&app).await;
        let mut assertion = user
            .passkey
            .get_with(&options, &Client::default())
            .await
            .unwrap();
        assertion.authenticator_data[..32].copy_from_slice(&sha256(rp_id.as_bytes()));
        user.passkey.resign(&mut assertion);
        assert_problem(
            passkey_login(&app, &assertion.json()).await,
            401,
            "INVALID_PASSKEY",
        )
        .await;
        let options = step_up_options().await;
        let mut assertion = user
            .passkey
            .get_with(&options, &Client::default())
            .await
            .unwrap();
        assertion.authenticator_data[..32].copy_from_slice(&sha256(rp_id.as_bytes()));
        user.passkey.resign(&mut assertion);
        let body = assert_problem(step_up(&assertion.json()).await, 401, "INVALID_PASSKEY").await;
        assert!(
            body["detail"].as_str().unwrap().contains("RP ID"),
            "{rp_id}: {body}"
        );
    }
    // A registration from a look-alike origin, and for a parent RP ID.
    let (_, session) = app.signed_up(&unique_email()).await;
    for client in [
        Client::origin("https://app.example.test.evil.com"),
        Client::rp_id("test"),
    ] {
        let options =
            creation_options(&app, &session.access, &json!({ "password": PASSWORD })).await;
        let credential = soft(&app)
            .create_with(&options, &client)
            .await
            .unwrap()
            .json();
        assert_problem(
            register(&app, &session.access, &credential).await,
            401,
            "INVALID_PASSKEY",
        )
        .await;
    }
}

// ---------------------------------------------------------------------------------------------
// Attacks that held: bytes no browser sends.

/// Huge, deeply nested, non-UTF-8 and NUL-laden inputs, and path ids that are not uuids: never a
/// 500 (422, 404, 400, 401 or 413 as fits).
#[tokio::test]
async fn odd_bytes_never_cause_a_500() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let mut user = holder(&app).await;
    let access = user.session.access.clone();
    let options = usernameless_options(&app).await;
    let good = user.passkey.get(&options).await;

    let mut nested = String::new();
    for _ in 0..10_000 {
        nested.push_str("{\"a\":");
    }
    nested.push('1');
    for _ in 0..10_000 {
        nested.push('}');
    }
    let mut bodies: Vec<(String, Vec<u8>)> = vec![
        ("nested".into(), format!("{{\"credential\": {nested}}}").into_bytes()),
        ("non-utf8".into(), b"{\"credential\": {\"id\": \"\xff\xfe\"}}".to_vec()),
        ("nul id".into(), serde_json::to_vec(&json!({"credential": {"id": "a\u{0}b", "rawId": "a\u{0}b", "type": "public-key", "response": good["response"]}})).unwrap()),
    ];
    let mut giant = good.clone();
    giant["response"]["clientDataJSON"] = json!("A".repeat(900_000));
    bodies.push((
        "giant clientDataJSON".into(),
        serde_json::to_vec(&json!({ "credential": giant })).unwrap(),
    ));
    let mut giant = good.clone();
    giant["response"]["authenticatorData"] = json!("A".repeat(600_000));
    bodies.push((
        "giant authenticatorData".into(),
        serde_json::to_vec(&json!({ "credential": giant })).unwrap(),
    ));
    let mut long_handle = good.clone();
    long_handle["response"]["userHandle"] = json!(b64(&[1; 65]));
    bodies.push((
        "65-byte handle".into(),
        serde_json::to_vec(&json!({ "credential": long_handle })).unwrap(),
    ));
    let mut long_id = good.clone();
    long_id["id"] = json!(b64(&[1; 2000]));
    long_id["rawId"] = long_id["id"].clone();
    bodies.push((
        "2000-byte id".into(),
        serde_json::to_vec(&json!({ "credential": long_id })).unwrap(),
    ));

    let token = {
        // An mfa_token of the account (it has a passkey).
        mfa_token(&app, &user.email).await
    };
    for (what, body) in &bodies {
        for path in [
            "/login/passkey",
            "/me/passkeys",
            "/me/passkeys/step-up",
            "/login/mfa",
        ] {
            let mut bytes = body.clone();
            if path == "/login/mfa" {
                let text =
                    String::from_utf8_lossy(body).replacen("\"credential\"", "\"passkey\"", 1);
                bytes = format!("{{\"mfa_token\": \"{token}\", {}", &text[1..]).into_bytes();
            }
            let response = app
                .client
                .post(app.url(path))
                .bearer_auth(&access)
                .header("content-type", "application/json")
                .body(bytes)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let text = response.text().await.unwrap();
            assert!(
                [400, 401, 404, 413, 422].contains(&status),
                "{path}, {what}: {status} {text}"
            );
        }
    }
    for id in [
        "not-a-uuid",
        "%00",
        "a%00b",
        "..%2F..%2Fusers",
        &"9".repeat(5000),
    ] {
        for method in [Method::PATCH, Method::DELETE] {
            let response = call(
                &app,
                method.clone(),
                &format!("/me/passkeys/{id}"),
                &access,
                &json!({ "name": "x", "password": PASSWORD }),
            )
            .await;
            let status = response.status().as_u16();
            assert!(
                [400, 404, 414, 422, 431].contains(&status),
                "{method} {id}: {status}"
            );
        }
    }
    // The email of the options: NUL, huge, odd.
    for email in [
        "\u{0}",
        &"a".repeat(100_000),
        "@",
        "a@[::1]",
        "\u{202e}x@y.z",
    ] {
        let response = app
            .post_json("/login/passkey/options", &json!({ "email": email }))
            .await;
        assert!(
            [200, 413, 422].contains(&response.status().as_u16()),
            "{email:.20}: {}",
            response.status()
        );
    }
}
