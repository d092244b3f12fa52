//! Passkeys (WebAuthn), the contract: registration, the list, renaming, removal; sign-in with a
//! passkey (usernameless and email-first); a passkey as the second factor of a password login,
//! and as a step-up; accounts without a password; the MFA_REQUIRED_FOR policy; the superuser's
//! reset; PASSKEYS=false.
//!
//! The passkey is [`SoftPasskey`] (a real CTAP2 authenticator in memory, behind a browser of the
//! test's own); the attacks on these rules are in `passkey_attacks.rs`. Every test freezes the
//! server's clock first.
//!
//! Where the contract says nothing, a test says `// spec-silent:` and what it assumes.

use std::collections::BTreeSet;

use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};

use crate::helpers::*;
use crate::mfa::*;
use crate::smtp::{RESET, SmtpSink, WAIT, app_with_mail};
use crate::soft_passkey::*;

/// WEBAUTHN_CHALLENGE_SECONDS' default, in ms.
pub const CHALLENGE_MS: i64 = 300_000;

/// The keys of a `PasskeyResponse`, exactly.
const PASSKEY_KEYS: [&str; 9] = [
    "aaguid",
    "backed_up",
    "backup_eligible",
    "created_at",
    "id",
    "last_used_at",
    "name",
    "transports",
    "user_verified",
];

// ---------------------------------------------------------------------------------------------
// Where the browser is.

/// PUBLIC_URL as the server reads it (its default when unset).
fn public_url(app: &TestApp) -> String {
    let url = app.var("PUBLIC_URL");
    if url.is_empty() {
        "http://localhost:8000".to_string()
    } else {
        url
    }
}

/// The origin the tests' browser is on: WEBAUTHN_ORIGINS' first when set, else PUBLIC_URL's
/// (which WEBAUTHN_ORIGINS holds by default).
pub fn origin(app: &TestApp) -> String {
    let origins = app.var("WEBAUTHN_ORIGINS");
    if let Some(first) = origins.split(',').map(str::trim).find(|o| !o.is_empty()) {
        return first.to_string();
    }
    url::Url::parse(&public_url(app))
        .unwrap()
        .origin()
        .ascii_serialization()
}

/// The RP ID: WEBAUTHN_RP_ID, else PUBLIC_URL's host.
pub fn rp_id(app: &TestApp) -> String {
    let id = app.var("WEBAUTHN_RP_ID");
    if !id.is_empty() {
        return id;
    }
    url::Url::parse(&public_url(app))
        .unwrap()
        .host_str()
        .unwrap()
        .to_string()
}

/// A new software passkey in a browser on the app's origin.
pub fn soft(app: &TestApp) -> SoftPasskey {
    SoftPasskey::new(&origin(app))
}

// ---------------------------------------------------------------------------------------------
// Requests.

/// The JSON of a 200 answer.
pub async fn ok_json(response: Response) -> Value {
    let status = response.status();
    let url = response.url().path().to_string();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(status, StatusCode::OK, "{url}: {body}");
    body
}

/// The options of a 200 answer, checked to be `{"publicKey": {...}}` with a 16-byte challenge.
pub async fn options_of(response: Response) -> Value {
    let body = ok_json(response).await;
    let public_key = body["publicKey"]
        .as_object()
        .unwrap_or_else(|| panic!("{{\"publicKey\": {{...}}}}: {body}"));
    let challenge = public_key["challenge"].as_str().expect("a challenge");
    assert_eq!(
        unb64(challenge).map(|c| c.len()),
        Some(16),
        "16 random bytes, base64url: {challenge}"
    );
    body
}

/// POST /me/passkeys/options with `body`.
pub async fn registration_options(app: &TestApp, access: &str, body: &Value) -> Response {
    call(app, Method::POST, "/me/passkeys/options", access, body).await
}

/// The creation options for the session `access` of an account whose password is [`PASSWORD`].
pub async fn creation_options(app: &TestApp, access: &str) -> Value {
    options_of(registration_options(app, access, &json!({ "password": PASSWORD })).await).await
}

/// POST /me/passkeys with `credential` (and `name` when given).
pub async fn register_credential(
    app: &TestApp,
    access: &str,
    credential: &Value,
    name: Option<&str>,
) -> Response {
    let mut body = json!({ "credential": credential });
    if let Some(name) = name {
        body["name"] = json!(name);
    }
    call(app, Method::POST, "/me/passkeys", access, &body).await
}

/// The `PasskeyResponse` of a 201 answer.
pub async fn created(response: Response) -> Value {
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body
}

/// Registers `passkey` on the account of the session `access` (password [`PASSWORD`], within
/// any step-up window): its `PasskeyResponse`.
pub async fn add_passkey(app: &TestApp, access: &str, passkey: &mut SoftPasskey) -> Value {
    let options = creation_options(app, access).await;
    let credential = passkey.create(&options).await;
    created(register_credential(app, access, &credential, None).await).await
}

/// GET /me/passkeys, asserting 200.
pub async fn passkeys(app: &TestApp, access: &str) -> Vec<Value> {
    let body = ok_json(bare(app, Method::GET, "/me/passkeys", access).await).await;
    body.as_array()
        .unwrap_or_else(|| panic!("a list: {body}"))
        .clone()
}

/// POST /login/passkey/options, with `body` (none when `None`).
pub async fn login_options(app: &TestApp, body: Option<&Value>) -> Response {
    let request = app.client.post(app.url("/login/passkey/options"));
    match body {
        Some(body) => request.json(body),
        None => request,
    }
    .send()
    .await
    .unwrap()
}

/// The usernameless request options.
pub async fn usernameless_options(app: &TestApp) -> Value {
    options_of(login_options(app, Some(&json!({}))).await).await
}

/// The email-first request options for `email`.
pub async fn email_options(app: &TestApp, email: &str) -> Value {
    options_of(login_options(app, Some(&json!({ "email": email }))).await).await
}

/// POST /login/passkey with `credential`.
pub async fn passkey_login(app: &TestApp, credential: &Value) -> Response {
    app.post_json("/login/passkey", &json!({ "credential": credential }))
        .await
}

/// A usernameless sign-in with `passkey`, asserting success: the token pair.
pub async fn sign_in(app: &TestApp, passkey: &mut SoftPasskey) -> Tokens {
    let options = usernameless_options(app).await;
    let credential = passkey.get(&options).await;
    pair(passkey_login(app, &credential).await).await
}

/// POST /login/mfa/passkey/options for `mfa_token`.
pub async fn mfa_passkey_options(app: &TestApp, mfa_token: &str) -> Response {
    app.post_json(
        "/login/mfa/passkey/options",
        &json!({ "mfa_token": mfa_token }),
    )
    .await
}

/// POST /login/mfa with a passkey.
pub async fn with_passkey(app: &TestApp, mfa_token: &str, credential: &Value) -> Response {
    login_mfa(
        app,
        &json!({ "mfa_token": mfa_token, "passkey": credential }),
    )
    .await
}

/// POST /me/passkeys/step-up/options.
pub async fn step_up_options(app: &TestApp, access: &str) -> Response {
    bare(app, Method::POST, "/me/passkeys/step-up/options", access).await
}

/// POST /me/passkeys/step-up with `credential`.
pub async fn step_up(app: &TestApp, access: &str, credential: &Value) -> Response {
    call(
        app,
        Method::POST,
        "/me/passkeys/step-up",
        access,
        &json!({ "credential": credential }),
    )
    .await
}

/// A passkey step-up of the session `access` with `passkey`, asserting 204.
pub async fn passkey_step_up(app: &TestApp, access: &str, passkey: &mut SoftPasskey) {
    let options = options_of(step_up_options(app, access).await).await;
    let credential = passkey.get(&options).await;
    let response = step_up(app, access, &credential).await;
    let status = response.status();
    assert_eq!(
        status,
        StatusCode::NO_CONTENT,
        "{}",
        response.text().await.unwrap()
    );
}

/// DELETE /me/passkeys/{id} with `body`.
pub async fn delete_passkey(app: &TestApp, access: &str, id: &str, body: &Value) -> Response {
    call(
        app,
        Method::DELETE,
        &format!("/me/passkeys/{id}"),
        access,
        body,
    )
    .await
}

/// PATCH /me/passkeys/{id} with `{"name": name}`.
pub async fn rename(app: &TestApp, access: &str, id: &str, name: &str) -> Response {
    call(
        app,
        Method::PATCH,
        &format!("/me/passkeys/{id}"),
        access,
        &json!({ "name": name }),
    )
    .await
}

/// DELETE /me/password.
pub async fn remove_password(app: &TestApp, access: &str) -> Response {
    bare(app, Method::DELETE, "/me/password", access).await
}

/// A password login of an account with a second factor: the `mfa_token` of its 403
/// MFA_REQUIRED, and the `methods` offered.
pub async fn password_step(app: &TestApp, email: &str) -> (String, Value) {
    let body = assert_problem(app.login(email, PASSWORD).await, 403, "MFA_REQUIRED").await;
    (
        body["mfa_token"].as_str().expect("mfa_token").to_string(),
        body["methods"].clone(),
    )
}

/// The JWT `amr` of an access token.
pub fn amr(tokens: &Tokens) -> Value {
    claims_of(&tokens.access)["amr"].clone()
}

// ---------------------------------------------------------------------------------------------
// Accounts.

/// An account (password [`PASSWORD`]) with one registered passkey, and the session that
/// registered it.
pub struct Holder {
    pub id: String,
    pub email: String,
    pub passkey: SoftPasskey,
    /// The passkey's id (ours, a uuid).
    pub passkey_id: String,
    pub session: Tokens,
}

/// A new account with `passkey` registered.
pub async fn holder_of(app: &TestApp, mut passkey: SoftPasskey) -> Holder {
    let email = unique_email();
    let (user, session) = app.signed_up(&email).await;
    let view = add_passkey(app, &session.access, &mut passkey).await;
    Holder {
        id: user["id"].as_str().unwrap().to_string(),
        email,
        passkey,
        passkey_id: view["id"].as_str().unwrap().to_string(),
        session,
    }
}

/// A new account with a default (discoverable, verifying, synced) passkey.
pub async fn holder(app: &TestApp) -> Holder {
    holder_of(app, soft(app)).await
}

/// A new account with a passkey and no password (removed right after the registration, whose
/// session has just proved the passkey).
pub async fn passwordless(app: &TestApp) -> Holder {
    let holder = holder(app).await;
    let response = remove_password(app, &holder.session.access).await;
    assert_eq!(
        response.status(),
        StatusCode::NO_CONTENT,
        "{}",
        response.text().await.unwrap()
    );
    holder
}

fn uuid_bytes(id: &str) -> Vec<u8> {
    uuid::Uuid::parse_str(id).unwrap().as_bytes().to_vec()
}

/// The credential ids (decoded) of `allowCredentials` / `excludeCredentials`, each checked to be
/// a public-key descriptor.
pub fn descriptor_ids(list: &Value) -> Vec<Vec<u8>> {
    list.as_array()
        .unwrap_or_else(|| panic!("a list of descriptors: {list}"))
        .iter()
        .map(|d| {
            assert_eq!(d["type"], "public-key", "{d}");
            unb64(d["id"].as_str().expect("an id")).expect("a base64url id")
        })
        .collect()
}

fn keys(object: &Value) -> BTreeSet<String> {
    object
        .as_object()
        .unwrap_or_else(|| panic!("an object: {object}"))
        .keys()
        .cloned()
        .collect()
}

fn strings(list: &Value) -> BTreeSet<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("a list: {list}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// Checks a `PasskeyResponse`: its keys exactly (never a public key or a credential id).
fn check_view(view: &Value) {
    let expected: BTreeSet<String> = PASSKEY_KEYS.iter().map(|k| k.to_string()).collect();
    assert_eq!(keys(view), expected, "{view}");
    uuid::Uuid::parse_str(view["id"].as_str().unwrap()).expect("a uuid id");
}

// ---------------------------------------------------------------------------------------------
// 1. Registration, the list, renaming, removal.

#[tokio::test]
async fn registration_options_describe_the_account_and_the_rp() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let email = unique_email();
    let (user, session) = app.signed_up(&email).await;
    let id = user["id"].as_str().unwrap();

    let options = creation_options(&app, &session.access).await;
    let pk = &options["publicKey"];
    assert_eq!(pk["rp"]["id"], "localhost", "{options}");
    // WEBAUTHN_RP_NAME's default: MFA_ISSUER's.
    assert_eq!(pk["rp"]["name"], "auth-server", "{options}");
    assert_eq!(
        pk["user"]["id"],
        b64(&uuid_bytes(id)),
        "the uuid's 16 bytes"
    );
    assert_eq!(pk["user"]["name"], email.as_str());
    assert_eq!(pk["user"]["displayName"], "Test User");
    let algs: BTreeSet<i64> = pk["pubKeyCredParams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            assert_eq!(p["type"], "public-key");
            p["alg"].as_i64().unwrap()
        })
        .collect();
    for alg in [-8, -7, -257] {
        assert!(algs.contains(&alg), "EdDSA, ES256, RS256: {options}");
    }
    assert_eq!(pk["timeout"], 300_000);
    assert_eq!(pk["excludeCredentials"], json!([]));
    let selection = &pk["authenticatorSelection"];
    assert_eq!(selection["residentKey"], "preferred", "{options}");
    assert_eq!(selection["requireResidentKey"], false, "{options}");
    assert_eq!(selection["userVerification"], "preferred", "{options}");
    assert_eq!(pk["attestation"], "none");
    assert_eq!(pk["extensions"]["credProps"], true, "{options}");
    // A new challenge each time.
    let again = creation_options(&app, &session.access).await;
    assert_ne!(again["publicKey"]["challenge"], pk["challenge"]);

    // The step-up body of the other sensitive changes: the password.
    // spec-silent: no body, or no password, is a field error; a wrong one INVALID_CREDENTIALS
    // (403), as on the other sensitive endpoints.
    assert_problem(
        registration_options(
            &app,
            &session.access,
            &json!({ "password": WRONG_PASSWORD }),
        )
        .await,
        403,
        "INVALID_CREDENTIALS",
    )
    .await;
    let body = assert_problem(
        registration_options(&app, &session.access, &json!({})).await,
        422,
        "VALIDATION_FAILED",
    )
    .await;
    assert_eq!(error_fields(&body), ["password"]);
    // Not signed in.
    let response = app
        .post_json("/me/passkeys/options", &json!({ "password": PASSWORD }))
        .await;
    assert_problem(response, 401, "UNAUTHORIZED").await;

    // The names, as configured.
    for (vars, name) in [
        (vec![("MFA_ISSUER", "Example Corp")], "Example Corp"),
        (
            vec![
                ("MFA_ISSUER", "Example Corp"),
                ("WEBAUTHN_RP_NAME", "Example Login"),
            ],
            "Example Login",
        ),
    ] {
        let app = spawn_app_with(&vars).await;
        let (_, session) = app.signed_up(&unique_email()).await;
        let options = creation_options(&app, &session.access).await;
        assert_eq!(options["publicKey"]["rp"]["name"], name, "{vars:?}");
    }
}

#[tokio::test]
async fn register_list_rename_and_delete() {
    let sink = SmtpSink::start().await;
    let app = app_with_mail(&sink, NOTICES).await;
    let t = freeze_clock(&app);
    let email = unique_email();
    let (_, session) = app.signed_up(&email).await;
    // app_with_mail's PUBLIC_URL: the RP ID is its host, the origin its origin.
    assert_eq!(rp_id(&app), "app.example.com");
    assert_eq!(origin(&app), "https://app.example.com");

    let mut phone = soft(&app);
    let options = creation_options(&app, &session.access).await;
    assert_eq!(options["publicKey"]["rp"]["id"], "app.example.com");
    let credential = phone.create(&options).await;
    let first = created(register_credential(&app, &session.access, &credential, None).await).await;
    check_view(&first);
    // spec-silent: an authenticator whose name is not known (the all-zero AAGUID) gets
    // "Passkey N", N counting the account's passkeys.
    assert_eq!(first["name"], "Passkey 1", "{first}");
    assert_eq!(ms_of(&first["created_at"]), t);
    assert_eq!(first["last_used_at"], Value::Null);
    assert_eq!(first["backup_eligible"], true, "{first}");
    assert_eq!(first["backed_up"], true, "{first}");
    assert_eq!(first["user_verified"], true, "{first}");
    assert_eq!(
        strings(&first["transports"]),
        strings(&json!(["internal", "hybrid"]))
    );
    // spec-silent: the all-zero AAGUID (attestation "none") is "no AAGUID".
    assert!(
        first["aaguid"].is_null() || first["aaguid"] == "00000000-0000-0000-0000-000000000000",
        "{first}"
    );
    let (seen, _) = notice(&sink, &email, 0, "passkey").await;

    // The second registration excludes the first credential; a name is trimmed.
    app.clock.advance_ms(1_000);
    let options = creation_options(&app, &session.access).await;
    assert_eq!(
        descriptor_ids(&options["publicKey"]["excludeCredentials"]),
        vec![phone.credential_id()]
    );
    // The browser would refuse to register the phone again.
    assert!(
        phone
            .create_with(&options, &Client::default())
            .await
            .is_err()
    );
    let mut laptop = soft(&app).device_bound().without_user_verification();
    let credential = laptop.create(&options).await;
    let second =
        created(register_credential(&app, &session.access, &credential, Some("  Laptop  ")).await)
            .await;
    check_view(&second);
    assert_eq!(second["name"], "Laptop");
    assert_eq!(second["backup_eligible"], false, "{second}");
    assert_eq!(second["backed_up"], false, "{second}");
    assert_eq!(second["user_verified"], false, "{second}");
    assert_eq!(ms_of(&second["created_at"]), t + 1_000);

    // The list: oldest first, nothing secret.
    let list = passkeys(&app, &session.access).await;
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["id"], first["id"]);
    assert_eq!(list[1]["id"], second["id"]);
    list.iter().for_each(check_view);
    let text = serde_json::to_string(&list).unwrap();
    for secret in [b64(&phone.credential_id()), b64(&laptop.credential_id())] {
        assert!(
            !text.contains(&secret),
            "a credential id in the list: {text}"
        );
    }

    // Renaming.
    let first_id = first["id"].as_str().unwrap();
    let renamed = ok_json(rename(&app, &session.access, first_id, " My phone ").await).await;
    assert_eq!(renamed["name"], "My phone");
    assert_eq!(renamed["id"], first["id"]);
    let sixty_four = "n".repeat(64);
    assert_eq!(
        ok_json(rename(&app, &session.access, first_id, &sixty_four).await).await["name"],
        sixty_four.as_str()
    );
    for bad in [
        "",
        "   ",
        &"n".repeat(65),
        "a\u{7}b",
        "line\nbreak",
        "nul\0",
    ] {
        let body = assert_problem(
            rename(&app, &session.access, first_id, bad).await,
            422,
            "VALIDATION_FAILED",
        )
        .await;
        assert_eq!(error_fields(&body), ["name"], "{bad:?}");
    }
    let list = passkeys(&app, &session.access).await;
    assert_eq!(list[0]["name"], sixty_four.as_str());

    // Removal (the session is within its step-up window: it just registered a passkey).
    let response = delete_passkey(
        &app,
        &session.access,
        first_id,
        &json!({ "password": PASSWORD }),
    )
    .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let list = passkeys(&app, &session.access).await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["id"], second["id"]);
    assert_problem(
        delete_passkey(
            &app,
            &session.access,
            first_id,
            &json!({ "password": PASSWORD }),
        )
        .await,
        404,
        "NOT_FOUND",
    )
    .await;
    notice(&sink, &email, seen, "removed").await;
    // The removed passkey signs no one in.
    let options = email_options(&app, &email).await;
    let assertion = phone
        .get_with(&options, &Client::ignoring_allow_list())
        .await
        .unwrap();
    assert_problem(
        passkey_login(&app, &assertion.json()).await,
        401,
        "INVALID_PASSKEY",
    )
    .await;
}

#[tokio::test]
async fn registering_a_passkey_ends_the_other_sessions_and_keeps_this_one() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let email = unique_email();
    let (_, this) = app.signed_up(&email).await;
    let other = app.login_ok(&email).await;
    // Options asked before the change, by the session that will be ended.
    let other_options = creation_options(&app, &other.access).await;

    add_passkey(&app, &this.access, &mut soft(&app)).await;

    assert_problem(app.me(&other.access).await, 401, "UNAUTHORIZED").await;
    assert_problem(app.refresh(&other.refresh).await, 401, "INVALID_TOKEN").await;
    assert_eq!(app.me(&this.access).await.status(), StatusCode::OK);
    app.clock.advance_ms(1_000);
    let next = pair(app.refresh(&this.refresh).await).await;
    assert_eq!(app.me(&next.access).await.status(), StatusCode::OK);
    // The ended session's ceremony is of no use.
    let credential = soft(&app).create(&other_options).await;
    assert_problem(
        register_credential(&app, &other.access, &credential, None).await,
        401,
        "UNAUTHORIZED",
    )
    .await;
    assert_eq!(passkeys(&app, &next.access).await.len(), 1);
}

#[tokio::test]
async fn another_accounts_passkey_or_a_bad_id_is_not_found() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let owner = holder(&app).await;
    let (_, stranger) = app.signed_up(&unique_email()).await;
    let body = json!({ "password": PASSWORD });
    for id in [
        owner.passkey_id.as_str(),
        &uuid::Uuid::new_v4().to_string(),
        "not-a-uuid",
        "%00",
        "a%00b",
        &"9".repeat(300),
    ] {
        assert_problem(
            rename(&app, &stranger.access, id, "Mine").await,
            404,
            "NOT_FOUND",
        )
        .await;
        assert_problem(
            delete_passkey(&app, &stranger.access, id, &body).await,
            404,
            "NOT_FOUND",
        )
        .await;
    }
    // The owner's passkey is as it was.
    let list = passkeys(&app, &owner.session.access).await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["name"], "Passkey 1");
}

#[tokio::test]
async fn twenty_passkeys_at_most() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let (_, session) = app.signed_up(&unique_email()).await;
    for _ in 0..20 {
        add_passkey(&app, &session.access, &mut soft(&app)).await;
    }
    assert_problem(
        registration_options(&app, &session.access, &json!({ "password": PASSWORD })).await,
        409,
        "PASSKEY_LIMIT",
    )
    .await;
    assert_eq!(passkeys(&app, &session.access).await.len(), 20);
}

// ---------------------------------------------------------------------------------------------
// 2. Sign-in with a passkey.

#[tokio::test]
async fn usernameless_sign_in() {
    let app = spawn_app().await;
    let t = freeze_clock(&app);
    let mut user = holder(&app).await;
    app.clock.advance_ms(60_000);

    // No body at all, and an empty object, are both usernameless options.
    for body in [None, Some(&json!({}))] {
        let options = options_of(login_options(&app, body).await).await;
        let pk = &options["publicKey"];
        assert_eq!(pk["allowCredentials"], json!([]), "{options}");
        assert_eq!(pk["rpId"], "localhost");
        // A first factor that must stand alone: the user is verified (PIN or biometrics).
        assert_eq!(pk["userVerification"], "required");
        assert_eq!(pk["timeout"], 300_000);
    }
    let options = usernameless_options(&app).await;
    let credential = user.passkey.get(&options).await;
    let response = passkey_login(&app, &credential).await;
    assert_eq!(response.headers()["cache-control"], "no-store");
    let tokens = pair(response).await;
    assert_eq!(tokens.body["token_type"], "bearer");
    let claims = claims_of(&tokens.access);
    // A synced passkey that verified the user: two factors in one.
    assert_eq!(claims["amr"], json!(["swk", "user", "mfa"]), "{claims}");
    assert_eq!(claims["auth_time"].as_i64(), Some((t + 60_000) / 1000));
    let me = ok_json(app.me(&tokens.access).await).await;
    assert_eq!(me["email"], user.email.as_str());
    // Its use is recorded.
    let list = passkeys(&app, &tokens.access).await;
    assert_eq!(ms_of(&list[0]["last_used_at"]), t + 60_000);
    // The refresh token works and keeps the amr.
    app.clock.advance_ms(1_000);
    let refreshed = pair(app.refresh(&tokens.refresh).await).await;
    assert_eq!(amr(&refreshed), json!(["swk", "user", "mfa"]));
    // The session counts as having passed the second factor: a sensitive change needs nothing
    // more than the password.
    let response = app
        .change_password(&refreshed.access, PASSWORD, NEW_PASSWORD)
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    // And it can be used again (the counter grows).
    app.clock.advance_ms(1_000);
    sign_in(&app, &mut user.passkey).await;
}

#[tokio::test]
async fn email_first_sign_in_with_a_credential_that_is_not_discoverable() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let mut user = holder_of(&app, soft(&app).not_discoverable().device_bound()).await;

    // Usernameless, the browser finds nothing to offer.
    let options = usernameless_options(&app).await;
    assert!(
        user.passkey
            .get_with(&options, &Client::default())
            .await
            .is_err()
    );

    // Email-first: the account's credentials, whatever the case of the address.
    for email in [user.email.clone(), user.email.to_uppercase()] {
        let options = email_options(&app, &email).await;
        let pk = &options["publicKey"];
        assert_eq!(
            descriptor_ids(&pk["allowCredentials"]),
            vec![user.passkey.credential_id()],
            "{options}"
        );
        assert_eq!(pk["userVerification"], "required");
        assert_eq!(pk["rpId"], "localhost");
        let credential = user.passkey.get(&options).await;
        assert!(credential["response"].get("userHandle").is_none());
        let tokens = pair(passkey_login(&app, &credential).await).await;
        // Device bound: a hardware key.
        assert_eq!(amr(&tokens), json!(["hwk", "user", "mfa"]));
        app.clock.advance_ms(1_000);
    }
}

#[tokio::test]
async fn a_passkey_without_user_verification_signs_in_only_as_the_second_step() {
    let app = spawn_app().await;
    freeze_clock(&app);
    // A key without a PIN alone is possession only: no first factor, usernameless or
    // email-first, whatever else the account has.
    let mut user = holder_of(&app, soft(&app).without_user_verification()).await;
    app.clock.advance_ms(1_000);
    for options in [
        usernameless_options(&app).await,
        email_options(&app, &user.email).await,
    ] {
        let credential = user.passkey.get(&options).await;
        let body = assert_problem(
            passkey_login(&app, &credential).await,
            401,
            "INVALID_PASSKEY",
        )
        .await;
        assert!(
            body["detail"].as_str().unwrap().contains("verify"),
            "{body}"
        );
    }

    // After the password, the same key is the second step.
    app.clock.advance_ms(1_000);
    let (token, methods) = password_step(&app, &user.email).await;
    assert_eq!(methods, json!(["passkey"]));
    let options = options_of(mfa_passkey_options(&app, &token).await).await;
    let credential = user.passkey.get(&options).await;
    let tokens = pair(with_passkey(&app, &token, &credential).await).await;
    assert_eq!(amr(&tokens), json!(["pwd", "swk", "mfa"]));
}

// ---------------------------------------------------------------------------------------------
// 3. A passkey as the second factor.

#[tokio::test]
async fn a_passkey_is_the_second_factor_of_a_password_login() {
    let app = spawn_app().await;
    let t = freeze_clock(&app);
    let mut user = holder(&app).await;

    let status = mfa_status(&app, &user.session.access).await;
    assert_eq!(status["methods"], json!(["passkey"]), "{status}");
    assert_eq!(status["passkeys"], 1, "{status}");
    assert_eq!(status["has_password"], true, "{status}");
    assert_eq!(status["totp"], false, "{status}");

    app.clock.advance_ms(10_000);
    let (token, methods) = password_step(&app, &user.email).await;
    assert_eq!(methods, json!(["passkey"]));
    let options = options_of(mfa_passkey_options(&app, &token).await).await;
    let pk = &options["publicKey"];
    assert_eq!(
        descriptor_ids(&pk["allowCredentials"]),
        vec![user.passkey.credential_id()]
    );
    assert_eq!(pk["userVerification"], "preferred");
    // Options do not spend the token: asking twice is fine, the later ones are used.
    let options = options_of(mfa_passkey_options(&app, &token).await).await;
    app.clock.advance_ms(5_000);
    let credential = user.passkey.get(&options).await;
    let response = with_passkey(&app, &token, &credential).await;
    assert_eq!(response.headers()["cache-control"], "no-store");
    let tokens = pair(response).await;
    let claims = claims_of(&tokens.access);
    assert_eq!(
        claims["amr"],
        json!(["pwd", "swk", "user", "mfa"]),
        "{claims}"
    );
    // spec-silent: auth_time is the password step's, as with a TOTP code.
    assert_eq!(claims["auth_time"].as_i64(), Some((t + 10_000) / 1000));
    assert_eq!(app.me(&tokens.access).await.status(), StatusCode::OK);

    // The token is spent.
    let options = usernameless_options(&app).await;
    let credential = user.passkey.get(&options).await;
    assert_problem(
        with_passkey(&app, &token, &credential).await,
        401,
        "INVALID_TOKEN",
    )
    .await;
    assert_problem(
        mfa_passkey_options(&app, &token).await,
        401,
        "INVALID_TOKEN",
    )
    .await;
    assert_problem(
        mfa_passkey_options(&app, "not-a-token").await,
        401,
        "INVALID_TOKEN",
    )
    .await;
}

#[tokio::test]
async fn with_totp_and_a_passkey_every_method_is_offered() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let user = enrolled(&app).await;
    let mut passkey = soft(&app).without_user_verification();
    add_passkey(&app, &user.session.access, &mut passkey).await;

    let status = mfa_status(&app, &user.session.access).await;
    assert_eq!(
        status["methods"],
        json!(["totp", "recovery_code", "passkey"]),
        "{status}"
    );
    assert_eq!(status["passkeys"], 1, "{status}");
    let (token, methods) = password_step(&app, &user.email).await;
    assert_eq!(methods, json!(["totp", "recovery_code", "passkey"]));

    // Exactly one of code, recovery_code and passkey.
    let options = options_of(mfa_passkey_options(&app, &token).await).await;
    let credential = passkey.get(&options).await;
    for body in [
        json!({ "mfa_token": token, "code": code_now(&app, &user.secret), "passkey": credential }),
        json!({ "mfa_token": token, "recovery_code": user.recovery[0], "passkey": credential }),
    ] {
        assert_problem(login_mfa(&app, &body).await, 422, "VALIDATION_FAILED").await;
    }
    // spec-silent: a refused body takes no ceremony: the assertion still completes the login.
    // Without UV the passkey is `pwd hwk|swk mfa`.
    let tokens = pair(with_passkey(&app, &token, &credential).await).await;
    assert_eq!(amr(&tokens), json!(["pwd", "swk", "mfa"]));
}

#[tokio::test]
async fn passkey_options_for_an_account_without_a_passkey_are_refused() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let user = enrolled(&app).await;
    let token = challenge(&app, &user.email).await;
    let body = assert_problem(
        mfa_passkey_options(&app, &token).await,
        409,
        "MFA_NOT_ENABLED",
    )
    .await;
    assert!(
        body["detail"].as_str().unwrap().contains("passkey"),
        "{body}"
    );
    // The token still works with a code.
    pair(with_code(&app, &token, &next_code(&app, &user.secret)).await).await;
}

// ---------------------------------------------------------------------------------------------
// 4. Step-up with a passkey.

#[tokio::test]
async fn a_passkey_passes_step_up() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let mut user = holder(&app).await;
    app.clock.advance_ms(STEP_UP_MS + 1_000);

    let change = |access: String| {
        let app = &app;
        async move { app.change_password(&access, PASSWORD, NEW_PASSWORD).await }
    };
    let body = assert_problem(
        change(user.session.access.clone()).await,
        403,
        "STEP_UP_REQUIRED",
    )
    .await;
    assert_eq!(body["methods"], json!(["passkey"]), "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("POST /me/passkeys/step-up"),
        "{body}"
    );

    let options = options_of(step_up_options(&app, &user.session.access).await).await;
    let pk = &options["publicKey"];
    assert_eq!(pk["userVerification"], "required", "{options}");
    assert_eq!(
        descriptor_ids(&pk["allowCredentials"]),
        vec![user.passkey.credential_id()]
    );
    let credential = user.passkey.get(&options).await;
    let response = step_up(&app, &user.session.access, &credential).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        change(user.session.access.clone()).await.status(),
        StatusCode::NO_CONTENT
    );

    // Without a passkey there is no passkey step-up.
    let (_, plain) = app.signed_up(&unique_email()).await;
    assert_problem(
        step_up_options(&app, &plain.access).await,
        409,
        "MFA_NOT_ENABLED",
    )
    .await;
}

#[tokio::test]
async fn with_totp_too_step_up_offers_every_method() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let user = enrolled(&app).await;
    let mut passkey = soft(&app);
    add_passkey(&app, &user.session.access, &mut passkey).await;
    app.clock.advance_ms(STEP_UP_MS + 1_000);
    let body = assert_problem(
        call(
            &app,
            Method::POST,
            "/me/mfa/recovery-codes",
            &user.session.access,
            &json!({ "password": PASSWORD }),
        )
        .await,
        403,
        "STEP_UP_REQUIRED",
    )
    .await;
    assert_eq!(
        body["methods"],
        json!(["totp", "recovery_code", "passkey"]),
        "{body}"
    );
    passkey_step_up(&app, &user.session.access, &mut passkey).await;
    let response = call(
        &app,
        Method::POST,
        "/me/mfa/recovery-codes",
        &user.session.access,
        &json!({ "password": PASSWORD }),
    )
    .await;
    recovery_codes(response).await;
}

// ---------------------------------------------------------------------------------------------
// 5. Accounts without a password.

#[tokio::test]
async fn a_passwordless_account() {
    let sink = SmtpSink::start().await;
    let app = app_with_mail(&sink, NOTICES).await;
    freeze_clock(&app);
    let mut user = holder(&app).await;
    let other = sign_in(&app, &mut user.passkey).await;
    let (seen, _) = notice(&sink, &user.email, 0, "passkey").await;

    // A passkey proof within MFA_STEP_UP_SECONDS is needed.
    app.clock.advance_ms(STEP_UP_MS + 1_000);
    let body = assert_problem(
        remove_password(&app, &user.session.access).await,
        403,
        "STEP_UP_REQUIRED",
    )
    .await;
    assert!(strings(&body["methods"]).contains("passkey"), "{body}");
    passkey_step_up(&app, &user.session.access, &mut user.passkey).await;
    let response = remove_password(&app, &user.session.access).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    notice(&sink, &user.email, seen, "password").await;
    // A credential change: the other session has ended, this one goes on.
    assert_problem(app.me(&other.access).await, 401, "UNAUTHORIZED").await;
    assert_eq!(app.me(&user.session.access).await.status(), StatusCode::OK);
    let status = mfa_status(&app, &user.session.access).await;
    assert_eq!(status["has_password"], false, "{status}");
    assert_problem(
        remove_password(&app, &user.session.access).await,
        409,
        "PASSWORD_NOT_SET",
    )
    .await;

    // No password signs in: not the old one, not an empty one.
    for password in [PASSWORD, "", " ", WRONG_PASSWORD] {
        let response = app.login(&user.email, password).await;
        assert!(
            matches!(response.status().as_u16(), 401 | 422),
            "{password:?}: {}",
            response.status()
        );
        if response.status() == StatusCode::UNAUTHORIZED {
            assert_problem(response, 401, "INVALID_CREDENTIALS").await;
        }
    }
    // The passkey does.
    app.clock.advance_ms(1_000);
    let session = sign_in(&app, &mut user.passkey).await;
    assert_eq!(amr(&session), json!(["swk", "user", "mfa"]));

    // A sensitive change needs no password, only a recent passkey proof (the sign-in was one).
    let new_email = unique_email();
    let response = call(
        &app,
        Method::PUT,
        "/me",
        &session.access,
        &json!({ "email": new_email }),
    )
    .await;
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "{}",
        response.text().await.unwrap()
    );
    let email = new_email;
    // After the window, the proof is needed again.
    app.clock.advance_ms(STEP_UP_MS + 1_000);
    let body = assert_problem(
        call(
            &app,
            Method::PUT,
            "/me",
            &session.access,
            &json!({ "email": unique_email() }),
        )
        .await,
        403,
        "STEP_UP_REQUIRED",
    )
    .await;
    assert_eq!(body["methods"], json!(["passkey"]), "{body}");

    // A reset link sets a password again.
    let response = app
        .post_json("/password-reset/request", &json!({ "email": email }))
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let mail = sink.wait_for(&email, RESET, 1, WAIT).await.remove(0);
    let token = mail.link_token("/reset-password").unwrap();
    assert_eq!(
        app.confirm_reset(&token, NEW_PASSWORD).await.status(),
        StatusCode::NO_CONTENT
    );
    // The password works again (as the first factor: the passkey is the second).
    let body = assert_problem(app.login(&email, NEW_PASSWORD).await, 403, "MFA_REQUIRED").await;
    assert_eq!(body["methods"], json!(["passkey"]));
    let session = sign_in(&app, &mut user.passkey).await;
    assert_eq!(
        mfa_status(&app, &session.access).await["has_password"],
        true
    );
}

#[tokio::test]
async fn a_passwordless_account_sets_a_password_with_a_passkey_proof() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let mut user = passwordless(&app).await;
    let set = |access: String, body: Value| {
        let app = &app;
        async move { call(app, Method::PUT, "/me/password", &access, &body).await }
    };
    // Within the proof's window: current_password is omitted.
    app.clock.advance_ms(STEP_UP_MS + 1_000);
    let body = assert_problem(
        set(
            user.session.access.clone(),
            json!({ "new_password": NEW_PASSWORD }),
        )
        .await,
        403,
        "STEP_UP_REQUIRED",
    )
    .await;
    assert_eq!(body["methods"], json!(["passkey"]), "{body}");
    passkey_step_up(&app, &user.session.access, &mut user.passkey).await;
    let response = set(
        user.session.access.clone(),
        json!({ "new_password": NEW_PASSWORD }),
    )
    .await;
    assert_eq!(
        response.status(),
        StatusCode::NO_CONTENT,
        "{}",
        response.text().await.unwrap()
    );
    assert_problem(
        app.login(&user.email, NEW_PASSWORD).await,
        403,
        "MFA_REQUIRED",
    )
    .await;
}

#[tokio::test]
async fn the_last_way_in_cannot_be_removed() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let user = passwordless(&app).await;
    let no_body = json!({});

    let body = assert_problem(
        delete_passkey(&app, &user.session.access, &user.passkey_id, &no_body).await,
        409,
        "LAST_CREDENTIAL",
    )
    .await;
    assert!(body["detail"].is_string());
    // With a second passkey, one of them can go; then the other is the last.
    let mut second = soft(&app);
    let options =
        options_of(registration_options(&app, &user.session.access, &no_body).await).await;
    let credential = second.create(&options).await;
    let view =
        created(register_credential(&app, &user.session.access, &credential, None).await).await;
    let response = delete_passkey(&app, &user.session.access, &user.passkey_id, &no_body).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_problem(
        delete_passkey(
            &app,
            &user.session.access,
            view["id"].as_str().unwrap(),
            &no_body,
        )
        .await,
        409,
        "LAST_CREDENTIAL",
    )
    .await;
    assert_eq!(passkeys(&app, &user.session.access).await.len(), 1);
}

#[tokio::test]
async fn removing_the_password_needs_a_passkey_that_verifies_the_user() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let email = unique_email();
    let (_, session) = app.signed_up(&email).await;
    // No passkey at all.
    assert_problem(
        remove_password(&app, &session.access).await,
        409,
        "LAST_CREDENTIAL",
    )
    .await;
    // A passkey without UV: registering it is no passkey proof, but the account is refused
    // first for having no passkey that verifies the user.
    add_passkey(
        &app,
        &session.access,
        &mut soft(&app).without_user_verification(),
    )
    .await;
    let body = assert_problem(
        remove_password(&app, &session.access).await,
        409,
        "LAST_CREDENTIAL",
    )
    .await;
    assert!(
        body["detail"].as_str().unwrap().contains("passkey"),
        "{body}"
    );
    // The password is still there (the first factor; the passkey is the second).
    assert_problem(app.login(&email, PASSWORD).await, 403, "MFA_REQUIRED").await;
    assert_eq!(
        mfa_status(&app, &session.access).await["has_password"],
        true
    );
}

// ---------------------------------------------------------------------------------------------
// 6. Policy, the superuser, PASSKEYS=false.

#[tokio::test]
async fn mfa_required_for_everyone_is_satisfied_by_a_passkey() {
    let app = spawn_app_with(&[("MFA_REQUIRED_FOR", "everyone")]).await;
    freeze_clock(&app);
    let email = unique_email();
    let (_, session) = app.signed_up(&email).await;
    assert_problem(app.me(&session.access).await, 403, "MFA_ENROLMENT_REQUIRED").await;

    // spec-silent: as TOTP enrolment, registering a passkey is open to a confined session.
    let mut passkey = soft(&app);
    add_passkey(&app, &session.access, &mut passkey).await;
    assert_eq!(app.me(&session.access).await.status(), StatusCode::OK);
    let status = mfa_status(&app, &session.access).await;
    assert_eq!(status["required"], true, "{status}");
    assert_eq!(status["methods"], json!(["passkey"]), "{status}");

    // A password login asks for the passkey; a passkey login is complete.
    let (token, methods) = password_step(&app, &email).await;
    assert_eq!(methods, json!(["passkey"]));
    let options = options_of(mfa_passkey_options(&app, &token).await).await;
    let tokens = pair(with_passkey(&app, &token, &passkey.get(&options).await).await).await;
    assert_eq!(app.me(&tokens.access).await.status(), StatusCode::OK);
    let tokens = sign_in(&app, &mut passkey).await;
    assert_eq!(app.me(&tokens.access).await.status(), StatusCode::OK);

    // The account's last second factor cannot go.
    let list = passkeys(&app, &tokens.access).await;
    assert_problem(
        delete_passkey(
            &app,
            &tokens.access,
            list[0]["id"].as_str().unwrap(),
            &json!({ "password": PASSWORD }),
        )
        .await,
        403,
        "FORBIDDEN",
    )
    .await;
    assert_eq!(passkeys(&app, &tokens.access).await.len(), 1);
}

#[tokio::test]
async fn a_superusers_reset_removes_the_passkeys() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let mut user = holder(&app).await;
    let (_, admin) = app.superuser().await;
    let response = bare(
        &app,
        Method::DELETE,
        &format!("/users/{}/mfa", user.id),
        &admin.access,
    )
    .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);

    // The user's sessions have ended; the password alone signs in.
    assert_problem(app.me(&user.session.access).await, 401, "UNAUTHORIZED").await;
    let login = pair(app.login(&user.email, PASSWORD).await).await;
    assert_eq!(amr(&login), json!(["pwd"]));
    assert!(passkeys(&app, &login.access).await.is_empty());
    let status = mfa_status(&app, &login.access).await;
    assert_eq!(status["passkeys"], 0, "{status}");
    assert_eq!(status["methods"], json!([]), "{status}");
    // The passkey is gone.
    let options = usernameless_options(&app).await;
    let credential = user.passkey.get(&options).await;
    assert_problem(
        passkey_login(&app, &credential).await,
        401,
        "INVALID_PASSKEY",
    )
    .await;
    assert_eq!(
        app.count("SELECT COUNT(*) FROM passkeys WHERE user_id = $1", &user.id)
            .await,
        0
    );
}

#[tokio::test]
async fn passkeys_false_removes_the_routes_and_the_factor() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let user = holder(&app).await;
    let app = app.restart(&[("PASSKEYS", "false")]).await;

    let credential = json!({ "id": "AA", "response": {} });
    let id = user.passkey_id.as_str();
    let routes: Vec<(Method, String, Value)> = vec![
        (
            Method::POST,
            "/me/passkeys/options".into(),
            json!({ "password": PASSWORD }),
        ),
        (
            Method::POST,
            "/me/passkeys".into(),
            json!({ "credential": credential }),
        ),
        (Method::GET, "/me/passkeys".into(), Value::Null),
        (
            Method::PATCH,
            format!("/me/passkeys/{id}"),
            json!({ "name": "x" }),
        ),
        (
            Method::DELETE,
            format!("/me/passkeys/{id}"),
            json!({ "password": PASSWORD }),
        ),
        (
            Method::POST,
            "/me/passkeys/step-up/options".into(),
            Value::Null,
        ),
        (
            Method::POST,
            "/me/passkeys/step-up".into(),
            json!({ "credential": credential }),
        ),
        (Method::POST, "/login/passkey/options".into(), json!({})),
        (
            Method::POST,
            "/login/passkey".into(),
            json!({ "credential": credential }),
        ),
        (
            Method::POST,
            "/login/mfa/passkey/options".into(),
            json!({ "mfa_token": "x" }),
        ),
    ];
    // The passkey stops counting as a second factor: the password alone signs in.
    let session = pair(app.login(&user.email, PASSWORD).await).await;
    assert_eq!(amr(&session), json!(["pwd"]));
    for (method, path, body) in routes {
        let mut request = app
            .client
            .request(method.clone(), app.url(&path))
            .bearer_auth(&session.access);
        if !body.is_null() {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{method} {path}");
    }
    let status = mfa_status(&app, &session.access).await;
    assert_eq!(status["methods"], json!([]), "{status}");
}

#[tokio::test]
async fn a_delayed_reset_removes_the_passkeys_when_it_is_applied() {
    let app = spawn_app_with(&[
        ("MFA_RESET_DELAY_HOURS", "24"),
        ("PURGE_INTERVAL_SECONDS", "1"),
    ])
    .await;
    freeze_clock(&app);
    let mut user = holder(&app).await;
    let (_, admin) = app.superuser().await;
    let response = bare(
        &app,
        Method::DELETE,
        &format!("/users/{}/mfa", user.id),
        &admin.access,
    )
    .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    // Pending: the passkey still signs in and is still asked for.
    password_step(&app, &user.email).await;
    sign_in(&app, &mut user.passkey).await;

    app.clock.advance_ms(24 * 3_600_000);
    eventually(
        "the delayed reset being applied",
        std::time::Duration::from_secs(20),
        || async { app.login(&user.email, PASSWORD).await.status() },
        |status| *status == StatusCode::OK,
    )
    .await;
    assert_eq!(
        app.count("SELECT COUNT(*) FROM passkeys WHERE user_id = $1", &user.id)
            .await,
        0
    );
    let options = usernameless_options(&app).await;
    let credential = user.passkey.get(&options).await;
    assert_problem(
        passkey_login(&app, &credential).await,
        401,
        "INVALID_PASSKEY",
    )
    .await;
}

#[tokio::test]
async fn expired_ceremonies_are_purged() {
    let app = spawn_app_with(&[("PURGE_INTERVAL_SECONDS", "1")]).await;
    freeze_clock(&app);
    let user = holder(&app).await;
    usernameless_options(&app).await;
    email_options(&app, &user.email).await;
    options_of(step_up_options(&app, &user.session.access).await).await;
    const LEFT: &str = "SELECT COUNT(*) FROM webauthn_ceremonies WHERE purpose <> $1";
    assert_eq!(app.count(LEFT, "none").await, 3);
    app.clock.advance_ms(CHALLENGE_MS + 1_000);
    app.wait_count(LEFT, "none", |n| n == 0).await;
}

#[tokio::test]
async fn the_passkey_routes_are_in_the_api_document() {
    let routes = [
        ("/me/passkeys/options", "post", "passkeys"),
        ("/me/passkeys", "post", "passkeys"),
        ("/me/passkeys", "get", "passkeys"),
        ("/me/passkeys/{id}", "patch", "passkeys"),
        ("/me/passkeys/{id}", "delete", "passkeys"),
        ("/me/passkeys/step-up/options", "post", "passkeys"),
        ("/me/passkeys/step-up", "post", "passkeys"),
        ("/login/passkey/options", "post", "authentication"),
        ("/login/passkey", "post", "authentication"),
        ("/login/mfa/passkey/options", "post", "authentication"),
    ];
    let app = spawn_app().await;
    let document = app.get_json("/openapi.json").await;
    for (path, method, tag) in routes {
        let operation = &document["paths"][path][method];
        assert!(operation.is_object(), "{method} {path} is documented");
        assert!(
            operation["tags"]
                .as_array()
                .is_some_and(|t| t.contains(&json!(tag))),
            "{method} {path} is tagged {tag}: {operation}"
        );
    }
    assert!(document["paths"]["/me/password"]["delete"].is_object());
    // POST /login/mfa's body has `passkey`.
    let body = &document["paths"]["/login/mfa"]["post"]["requestBody"]["content"]["application/json"]
        ["schema"];
    let body = match body["$ref"].as_str() {
        Some(reference) => {
            let name = reference.rsplit('/').next().unwrap();
            &document["components"]["schemas"][name]
        }
        None => body,
    };
    assert!(
        body.to_string().contains("\"passkey\""),
        "POST /login/mfa documents `passkey`: {body}"
    );

    // spec-silent: with PASSKEYS=false the document does not list what is not served.
    let app = spawn_app_with(&[("PASSKEYS", "false")]).await;
    let document = app.get_json("/openapi.json").await;
    for (path, method, _) in routes {
        assert!(
            document["paths"][path][method].is_null(),
            "{method} {path} is not documented when not served"
        );
    }
}

/// MFA_STEP_UP_SECONDS=0 asks for a code in the body of every sensitive change; a passkey
/// cannot travel there, so its proof at the step-up route lasts a minute, and an account whose
/// second factor is a passkey can still make a change.
#[tokio::test]
async fn a_passkey_step_up_lasts_a_minute_when_mfa_step_up_seconds_is_0() {
    let app = spawn_app_with(&[("MFA_STEP_UP_SECONDS", "0")]).await;
    freeze_clock(&app);
    let mut user = holder(&app).await;
    let change = |password: &'static str, new: &'static str| json!({ "current_password": password, "new_password": new });
    // The registration's pass is a minute old.
    app.clock.advance_ms(60_000);
    let access = user.session.access.clone();
    assert_problem(
        call(
            &app,
            Method::PUT,
            "/me/password",
            &access,
            &change(PASSWORD, NEW_PASSWORD),
        )
        .await,
        403,
        "STEP_UP_REQUIRED",
    )
    .await;
    passkey_step_up(&app, &access, &mut user.passkey).await;
    app.clock.advance_ms(59_000);
    let response = call(
        &app,
        Method::PUT,
        "/me/password",
        &access,
        &change(PASSWORD, NEW_PASSWORD),
    )
    .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    // And no longer than that.
    app.clock.advance_ms(1_000);
    assert_problem(
        call(
            &app,
            Method::PUT,
            "/me/password",
            &access,
            &change(NEW_PASSWORD, PASSWORD),
        )
        .await,
        403,
        "STEP_UP_REQUIRED",
    )
    .await;
}
