//! Passkeys: a thin layer over `webauthn_rp` (the WebAuthn relying party), so that the rest of
//! the server deals in strings, bytes and booleans, never in the library's types.
//!
//! - [`WebAuthn`] is built once at start from PASSKEYS' settings (the RP ID, its name, the
//!   allowed origins, the ceremonies' life) and lives in `AppState`.
//! - `start_*` build the options a browser's `navigator.credentials.create/get` take (returned as
//!   `{"publicKey": {...}}`, what `PublicKeyCredential.parse*OptionsFromJSON` read) and the
//!   ceremony's state, encoded for the database ([`Started`]).
//! - [`parse_registration`] and [`parse_assertion`] read what `PublicKeyCredential.toJSON()`
//!   gives (relaxed: unknown fields ignored), and name the challenge it answers by its hash: the
//!   key of the stored ceremony.
//! - `finish_*` verify an answer against its ceremony's state: origin (exactly one of the
//!   allowed), RP ID hash, type, challenge, user presence, the signature, the backup flags; what
//!   a credential needs is returned as [`NewCredential`], and what an assertion says as
//!   [`Asserted`].
//!
//! Pure functions: the database, the clock and the policy (the counter, user verification where
//! preferred) are the caller's.

use std::num::NonZeroU32;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};
use webauthn_rp::bin::{Decode, Encode};
use webauthn_rp::request::auth::{
    AllowedCredential, AllowedCredentials, AuthenticationVerificationOptions,
    SignatureCounterEnforcement,
};
use webauthn_rp::request::register::{
    CoseAlgorithmIdentifier, Nickname, PublicKeyCredentialUserEntity,
    RegistrationVerificationOptions, ResidentKeyRequirement, UserHandle, Username,
};
use webauthn_rp::request::{
    AsciiDomain, BackupReq, Credentials as _, ExtensionReq, PublicKeyCredentialDescriptor, RpId,
    TimedCeremony as _, UserVerificationRequirement,
};
use webauthn_rp::response::auth::AuthenticatorData;
use webauthn_rp::response::auth::error::AuthCeremonyErr;
use webauthn_rp::response::register::error::RegCeremonyErr;
use webauthn_rp::response::register::{CompressedPubKey, DynamicState, StaticState};
use webauthn_rp::response::{
    AuthTransports, AuthenticatorAttachment, AuthenticatorTransport, Backup, CredentialId,
    SentChallenge,
};
use webauthn_rp::{
    AuthenticatedCredential, DiscoverableAuthentication16, DiscoverableAuthenticationServerState,
    DiscoverableCredentialRequestOptions, NonDiscoverableAuthentication16,
    NonDiscoverableAuthenticationServerState, NonDiscoverableCredentialRequestOptions,
    PublicKeyCredentialCreationOptions, Registration, RegistrationServerState,
};

use crate::config::PasskeyConfig;

/// The user handle: the 16 bytes of the account's UUID.
pub type Handle = [u8; 16];

/// The transports, by the names WebAuthn gives them, and their bit in `AuthTransports`.
const TRANSPORTS: [(AuthenticatorTransport, &str, u8); 6] = [
    (AuthenticatorTransport::Ble, "ble", 0x1),
    (AuthenticatorTransport::Hybrid, "hybrid", 0x2),
    (AuthenticatorTransport::Internal, "internal", 0x4),
    (AuthenticatorTransport::Nfc, "nfc", 0x8),
    (AuthenticatorTransport::SmartCard, "smart-card", 0x10),
    (AuthenticatorTransport::Usb, "usb", 0x20),
];

/// The kinds of stored ceremony state, the first byte of [`Started::state`]'s bytes.
const REGISTRATION: u8 = b'R';
const DISCOVERABLE: u8 = b'D';
const NON_DISCOVERABLE: u8 = b'N';

/// The relying party, as configured.
pub struct WebAuthn {
    rp_id: RpId,
    rp_name: String,
    origins: Vec<String>,
    timeout_ms: NonZeroU32,
}

impl std::fmt::Debug for WebAuthn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebAuthn")
            .field("rp_id", &self.rp_id.as_ref())
            .field("origins", &self.origins)
            .finish_non_exhaustive()
    }
}

/// A ceremony begun: the options for the browser, and what is stored until its answer comes.
#[derive(Debug)]
pub struct Started {
    /// `{"publicKey": {...}}`.
    pub options: serde_json::Value,
    /// The hex SHA-256 of the 16 challenge bytes: the stored ceremony's key.
    pub challenge_hash: String,
    /// The library's state of the ceremony, base64, with its kind.
    pub state: String,
}

/// A credential the caller already has, for `excludeCredentials` or `allowCredentials`.
#[derive(Clone, Debug)]
pub struct Descriptor {
    /// base64url, no padding (as stored).
    pub credential_id: String,
    pub transports: Vec<String>,
}

/// How strongly a ceremony asks for user verification.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verification {
    Preferred,
    /// Asked for, and an assertion without it refused here (before its signature is checked).
    Required,
    /// Asked for (`"required"`), but an assertion without it is verified all the same: the
    /// caller refuses it once the signature is known to be good (see [`Asserted::user_verified`]),
    /// so that only the passkey's holder learns it was the reason.
    RequiredByCaller,
}

/// Why an answer was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The ceremony does not fit this answer (another kind of ceremony, or expired): ask for new
    /// options.
    Challenge(&'static str),
    /// The answer itself failed a check, named here.
    Invalid(&'static str),
}

/// A registration response, parsed.
pub struct ParsedRegistration {
    inner: Registration,
    pub challenge_hash: String,
}

/// An assertion, parsed.
pub struct ParsedAssertion {
    inner: NonDiscoverableAuthentication16,
    json: Vec<u8>,
    pub challenge_hash: String,
    /// base64url, no padding.
    pub credential_id: String,
    /// The user handle the authenticator returned, if it did and it is 16 bytes long.
    pub user_handle: Option<Handle>,
    /// The authenticator returned a user handle of another length (1 to 64 bytes): no account
    /// of this server's.
    pub foreign_user_handle: bool,
}

/// What a verified registration yields, to be stored.
#[derive(Clone, Debug)]
pub struct NewCredential {
    /// base64url, no padding.
    pub credential_id: String,
    /// The library's encoding of the public key and its extensions, base64.
    pub credential: String,
    pub sign_count: i64,
    pub backup_eligible: bool,
    pub backed_up: bool,
    pub user_verified: bool,
    pub transports: Vec<String>,
    /// The authenticator's model (a UUID), when it said (not all zeros).
    pub aaguid: Option<String>,
}

/// A stored credential, as an assertion is checked against it.
#[derive(Clone, Copy, Debug)]
pub struct StoredCredential<'a> {
    pub credential: &'a str,
    pub user_handle: Handle,
    pub sign_count: i64,
    pub backup_eligible: bool,
    pub backed_up: bool,
    pub user_verified: bool,
}

/// What a verified assertion says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Asserted {
    /// Whether this assertion verified the user (the UV flag).
    pub user_verified: bool,
    pub backed_up: bool,
    /// The counter to store (never lower than the stored one).
    pub sign_count: i64,
    /// The counter the authenticator sent.
    pub presented_count: i64,
    /// Both counters non-zero and the new one not greater: possibly a cloned authenticator.
    pub counter_regressed: bool,
}

fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn challenge_hash(challenge: SentChallenge) -> String {
    data_encoding::HEXLOWER.encode(&Sha256::digest(challenge.0.to_le_bytes()))
}

fn transports_of(names: &[String]) -> AuthTransports {
    let bits = TRANSPORTS
        .iter()
        .filter(|(_, name, _)| names.iter().any(|n| n == name))
        .fold(0u8, |bits, (_, _, bit)| bits | bit);
    AuthTransports::decode(bits)
        .unwrap_or_else(|_| AuthTransports::decode(0).expect("the empty set of transports decodes"))
}

fn transport_names(transports: AuthTransports) -> Vec<String> {
    TRANSPORTS
        .iter()
        .filter(|(t, _, _)| transports.contains(*t))
        .map(|(_, name, _)| (*name).to_string())
        .collect()
}

fn descriptors(list: &[Descriptor]) -> Vec<PublicKeyCredentialDescriptor<Vec<u8>>> {
    list.iter()
        .filter_map(|d| {
            let bytes = URL_SAFE_NO_PAD.decode(&d.credential_id).ok()?;
            let id = CredentialId::<Vec<u8>>::decode(bytes).ok()?;
            Some(PublicKeyCredentialDescriptor {
                id,
                transports: transports_of(&d.transports),
            })
        })
        .collect()
}

/// Drops `transports: []` from the options' `allowCredentials` (the library always writes the
/// key): no transports known is said by omitting them.
fn omit_empty_transports(options: &mut serde_json::Value) {
    if let Some(list) = options
        .get_mut("allowCredentials")
        .and_then(serde_json::Value::as_array_mut)
    {
        for descriptor in list.iter_mut().filter_map(serde_json::Value::as_object_mut) {
            if descriptor
                .get("transports")
                .and_then(serde_json::Value::as_array)
                .is_some_and(Vec::is_empty)
            {
                descriptor.remove("transports");
            }
        }
    }
}

/// What the library checks (the options say `"required"` for [`Verification::RequiredByCaller`]).
fn requirement(uv: Verification) -> UserVerificationRequirement {
    match uv {
        Verification::Preferred | Verification::RequiredByCaller => {
            UserVerificationRequirement::Preferred
        }
        Verification::Required => UserVerificationRequirement::Required,
    }
}

fn encode_state(kind: u8, bytes: &[u8]) -> String {
    let mut all = Vec::with_capacity(bytes.len() + 1);
    all.push(kind);
    all.extend_from_slice(bytes);
    STANDARD.encode(all)
}

fn decode_state(state: &str) -> Option<(u8, Vec<u8>)> {
    let mut bytes = STANDARD.decode(state).ok()?;
    if bytes.is_empty() {
        return None;
    }
    let kind = bytes.remove(0);
    Some((kind, bytes))
}

const STATE_UNREADABLE: Refusal = Refusal::Challenge("the ceremony's stored state cannot be read");
const OTHER_CEREMONY: Refusal =
    Refusal::Challenge("the challenge belongs to another kind of ceremony");

impl WebAuthn {
    /// The relying party of PASSKEYS' settings (already checked by the configuration).
    pub fn new(config: &PasskeyConfig) -> Result<Self, String> {
        let domain = AsciiDomain::try_from(config.rp_id().to_string())
            .map_err(|e| format!("WEBAUTHN_RP_ID: {e}"))?;
        let ms = config
            .challenge_ttl
            .as_millis()
            .clamp(1, u128::from(u32::MAX));
        Ok(Self {
            rp_id: RpId::Domain(domain),
            rp_name: config.rp_name().to_string(),
            origins: config.origins().to_vec(),
            timeout_ms: NonZeroU32::new(u32::try_from(ms).unwrap_or(u32::MAX))
                .unwrap_or(NonZeroU32::MIN),
        })
    }

    /// Starts a registration for the user `handle` named `name` (the email) and `display_name`:
    /// a discoverable credential preferred, user verification preferred, no attestation, the
    /// user's existing credentials excluded.
    pub fn start_registration(
        &self,
        handle: Handle,
        name: &str,
        display_name: &str,
        exclude: &[Descriptor],
    ) -> Result<Started, String> {
        let user_id = UserHandle::<16>::decode(handle).map_err(|e| format!("{e:?}"))?;
        // An address the RFC 8265 profile refuses (a rare Unicode local part) is shown as the
        // display name alone.
        let username = Username::try_from(name)
            .or_else(|_| Username::try_from(format!("user-{}", b64url(&handle))))
            .map_err(|e| e.to_string())?;
        let user = PublicKeyCredentialUserEntity {
            name: username,
            id: &user_id,
            display_name: Nickname::try_from(display_name).ok(),
        };
        let mut options =
            PublicKeyCredentialCreationOptions::passkey(&self.rp_id, user, descriptors(exclude));
        options.timeout = self.timeout_ms;
        options.pub_key_cred_params = options
            .pub_key_cred_params
            .remove(CoseAlgorithmIdentifier::Es384);
        options.authenticator_selection.resident_key = ResidentKeyRequirement::Preferred;
        options.authenticator_selection.user_verification = UserVerificationRequirement::Preferred;
        options.extensions.cred_props = Some(ExtensionReq::Allow);
        options.extensions.cred_protect = webauthn_rp::request::register::CredProtect::None;
        let (server, client) = options.start_ceremony().map_err(|e| e.to_string())?;
        let mut public_key = serde_json::to_value(&client).map_err(|e| e.to_string())?;
        if let Some(rp) = public_key.get_mut("rp") {
            rp["name"] = serde_json::Value::String(self.rp_name.clone());
        }
        let state = server.encode().map_err(|e| e.to_string())?;
        Ok(Started {
            options: serde_json::json!({ "publicKey": public_key }),
            challenge_hash: challenge_hash(server.sent_challenge()),
            state: encode_state(REGISTRATION, &state),
        })
    }

    /// Starts an authentication: for any discoverable credential (`allow` is `None`: usernameless
    /// and conditional UI), or for the listed credentials (which must not be empty).
    pub fn start_authentication(
        &self,
        allow: Option<&[Descriptor]>,
        uv: Verification,
    ) -> Result<Started, String> {
        let (public_key, challenge, state) = match allow {
            None => {
                let mut options = DiscoverableCredentialRequestOptions::passkey(&self.rp_id);
                options.0.timeout = self.timeout_ms;
                options.0.user_verification = requirement(uv);
                let (server, client) = options.start_ceremony().map_err(|e| e.to_string())?;
                let json = serde_json::to_value(&client).map_err(|e| e.to_string())?;
                let state = server.encode().map_err(|e| e.to_string())?;
                (
                    json,
                    server.sent_challenge(),
                    encode_state(DISCOVERABLE, &state),
                )
            }
            Some(list) => {
                let mut allowed = AllowedCredentials::with_capacity(list.len());
                for descriptor in descriptors(list) {
                    allowed.push(AllowedCredential::from(descriptor));
                }
                let mut options =
                    NonDiscoverableCredentialRequestOptions::second_factor(&self.rp_id, allowed)
                        .map_err(|e| e.to_string())?;
                options.options().timeout = self.timeout_ms;
                options.options().user_verification = requirement(uv);
                let (server, client) = options.start_ceremony().map_err(|e| e.to_string())?;
                let mut json = serde_json::to_value(&client).map_err(|e| e.to_string())?;
                omit_empty_transports(&mut json);
                let state = server.encode().map_err(|e| e.to_string())?;
                (
                    json,
                    server.sent_challenge(),
                    encode_state(NON_DISCOVERABLE, &state),
                )
            }
        };
        let mut public_key = public_key;
        if uv == Verification::RequiredByCaller {
            public_key["userVerification"] = serde_json::Value::String("required".into());
        }
        Ok(Started {
            options: serde_json::json!({ "publicKey": public_key }),
            challenge_hash: challenge_hash(challenge),
            state,
        })
    }

    /// Verifies a registration against its ceremony's `state`.
    pub fn finish_registration(
        &self,
        state: &str,
        registration: &ParsedRegistration,
    ) -> Result<NewCredential, Refusal> {
        let (kind, bytes) = decode_state(state).ok_or(STATE_UNREADABLE)?;
        if kind != REGISTRATION {
            return Err(OTHER_CEREMONY);
        }
        let server = RegistrationServerState::<16>::decode(bytes.as_slice())
            .map_err(|_| STATE_UNREADABLE)?;
        let options = RegistrationVerificationOptions::<String, String> {
            allowed_origins: &self.origins,
            allowed_top_origins: None,
            backup_requirement: BackupReq::None,
            error_on_unsolicited_extensions: false,
            require_authenticator_attachment: false,
            client_data_json_relaxed: true,
        };
        let credential = server
            .verify(&self.rp_id, &registration.inner, &options)
            .map_err(registration_refusal)?;
        let (id, transports, _, static_state, dynamic, metadata) = credential.into_parts();
        let encoded = static_state.encode().map_err(|_| STATE_UNREADABLE)?;
        let aaguid = metadata.aaguid.data();
        Ok(NewCredential {
            credential_id: b64url(id.as_ref()),
            credential: STANDARD.encode(encoded),
            sign_count: i64::from(dynamic.sign_count),
            backup_eligible: !matches!(dynamic.backup, Backup::NotEligible),
            backed_up: matches!(dynamic.backup, Backup::Exists),
            user_verified: dynamic.user_verified,
            transports: transport_names(transports),
            aaguid: (aaguid.len() == 16 && aaguid.iter().any(|b| *b != 0))
                .then(|| uuid::Uuid::from_slice(aaguid).map(|u| u.to_string()).ok())
                .flatten(),
        })
    }

    /// Verifies an assertion against its ceremony's `state` and the stored credential it names.
    /// The counter is judged by the caller (WEBAUTHN_COUNTER_POLICY): here it is never refused,
    /// and never lowered.
    pub fn finish_authentication(
        &self,
        state: &str,
        assertion: &ParsedAssertion,
        stored: &StoredCredential<'_>,
    ) -> Result<Asserted, Refusal> {
        let (kind, bytes) = decode_state(state).ok_or(STATE_UNREADABLE)?;
        let static_bytes = STANDARD
            .decode(stored.credential)
            .map_err(|_| Refusal::Invalid("the stored passkey cannot be read"))?;
        let static_state =
            StaticState::<CompressedPubKey<[u8; 32], [u8; 32], [u8; 48], Vec<u8>>>::decode(
                static_bytes.as_slice(),
            )
            .map_err(|_| Refusal::Invalid("the stored passkey cannot be read"))?;
        let user = UserHandle::<16>::decode(stored.user_handle)
            .map_err(|_| Refusal::Invalid("the stored passkey cannot be read"))?;
        let prev_count = u32::try_from(stored.sign_count).unwrap_or(0);
        let dynamic = DynamicState {
            user_verified: stored.user_verified,
            backup: match (stored.backup_eligible, stored.backed_up) {
                (false, _) => Backup::NotEligible,
                (true, false) => Backup::Eligible,
                (true, true) => Backup::Exists,
            },
            sign_count: prev_count,
            authenticator_attachment: AuthenticatorAttachment::None,
        };
        let options = AuthenticationVerificationOptions::<String, String> {
            allowed_origins: &self.origins,
            allowed_top_origins: None,
            backup_requirement: None,
            error_on_unsolicited_extensions: false,
            sig_counter_enforcement: SignatureCounterEnforcement::Ignore,
            ..AuthenticationVerificationOptions::default()
        };
        let (dynamic_after, authenticator_data) = match kind {
            DISCOVERABLE => {
                let server = DiscoverableAuthenticationServerState::decode(bytes.as_slice())
                    .map_err(|_| STATE_UNREADABLE)?;
                let discoverable = DiscoverableAuthentication16::from_json_relaxed(&assertion.json)
                    .map_err(|_| {
                        Refusal::Invalid(
                            "the passkey did not say whose it is (response.userHandle)",
                        )
                    })?;
                let mut credential = AuthenticatedCredential::new(
                    discoverable.raw_id(),
                    &user,
                    static_state,
                    dynamic,
                )
                .map_err(|_| Refusal::Invalid("the stored passkey cannot be used"))?;
                server
                    .verify(&self.rp_id, &discoverable, &mut credential, &options)
                    .map_err(authentication_refusal)?;
                (
                    credential.dynamic_state(),
                    discoverable.response().authenticator_data().to_vec(),
                )
            }
            NON_DISCOVERABLE => {
                let server = NonDiscoverableAuthenticationServerState::decode(bytes.as_slice())
                    .map_err(|_| STATE_UNREADABLE)?;
                let mut credential = AuthenticatedCredential::new(
                    assertion.inner.raw_id(),
                    &user,
                    static_state,
                    dynamic,
                )
                .map_err(|_| Refusal::Invalid("the stored passkey cannot be used"))?;
                server
                    .verify(&self.rp_id, &assertion.inner, &mut credential, &options)
                    .map_err(authentication_refusal)?;
                (
                    credential.dynamic_state(),
                    assertion.inner.response().authenticator_data().to_vec(),
                )
            }
            _ => return Err(OTHER_CEREMONY),
        };
        // Signed, so authentic: the flags and counter of this assertion.
        let data = AuthenticatorData::try_from(authenticator_data.as_slice())
            .map_err(|_| Refusal::Invalid("the authenticator data cannot be read"))?;
        let presented = data.sign_count();
        Ok(Asserted {
            user_verified: data.flags().user_verified,
            backed_up: matches!(dynamic_after.backup, Backup::Exists),
            sign_count: i64::from(dynamic_after.sign_count.max(prev_count)),
            presented_count: i64::from(presented),
            counter_regressed: prev_count != 0 && presented != 0 && presented <= prev_count,
        })
    }
}

/// Reads `PublicKeyCredential.toJSON()` of a `navigator.credentials.create()`.
pub fn parse_registration(value: &serde_json::Value) -> Result<ParsedRegistration, String> {
    if !value.is_object() {
        return Err("must be the object PublicKeyCredential.toJSON() gives".into());
    }
    let json = serde_json::to_vec(value).map_err(|e| e.to_string())?;
    let inner = Registration::from_json_relaxed(&json)
        .map_err(|e| format!("is not a registration response: {}", short(&e.to_string())))?;
    let challenge = inner
        .challenge_relaxed()
        .map_err(|_| "its clientDataJSON holds no challenge of this server's".to_string())?;
    Ok(ParsedRegistration {
        inner,
        challenge_hash: challenge_hash(challenge),
    })
}

/// The length of authenticator data without extensions or attested credential data: the RP ID
/// hash, the flags and the counter.
const AUTHENTICATOR_DATA_MIN: usize = 37;

/// Reads `PublicKeyCredential.toJSON()` of a `navigator.credentials.get()`.
pub fn parse_assertion(value: &serde_json::Value) -> Result<ParsedAssertion, String> {
    if !value.is_object() {
        return Err("must be the object PublicKeyCredential.toJSON() gives".into());
    }
    let response = value.get("response");
    let data = response
        .and_then(|r| r.get("authenticatorData"))
        .and_then(serde_json::Value::as_str)
        .and_then(|d| URL_SAFE_NO_PAD.decode(d.trim_end_matches('=')).ok());
    if data.is_some_and(|d| d.len() < AUTHENTICATOR_DATA_MIN) {
        return Err(format!(
            "response.authenticatorData is shorter than the {AUTHENTICATOR_DATA_MIN} bytes any has"
        ));
    }
    // A user handle of another length than ours is well formed, but no account's here: it is
    // set aside (and refused once the ceremony is taken), so that the rest can be read.
    let mut value = value.clone();
    let foreign_user_handle = match value
        .pointer("/response/userHandle")
        .and_then(serde_json::Value::as_str)
        .map(|h| URL_SAFE_NO_PAD.decode(h.trim_end_matches('=')))
    {
        Some(Ok(handle)) if handle.len() != 16 && (1..=64).contains(&handle.len()) => {
            if let Some(response) = value.get_mut("response") {
                response["userHandle"] = serde_json::Value::Null;
            }
            true
        }
        _ => false,
    };
    let json = serde_json::to_vec(&value).map_err(|e| e.to_string())?;
    let inner = NonDiscoverableAuthentication16::from_json_relaxed(&json).map_err(|e| {
        format!(
            "is not an authentication response: {}",
            short(&e.to_string())
        )
    })?;
    let challenge = inner
        .challenge_relaxed()
        .map_err(|_| "its clientDataJSON holds no challenge of this server's".to_string())?;
    let credential_id = b64url(inner.raw_id().as_ref());
    let user_handle = inner.response().user_handle().map(|h| {
        let mut handle = [0u8; 16];
        handle.copy_from_slice(h.as_ref());
        handle
    });
    Ok(ParsedAssertion {
        challenge_hash: challenge_hash(challenge),
        credential_id,
        user_handle,
        foreign_user_handle,
        inner,
        json,
    })
}

/// A parser's message, cut short (it may quote the input).
fn short(message: &str) -> String {
    let mut cut: String = message.chars().take(160).collect();
    if cut.len() < message.len() {
        cut.push('…');
    }
    cut
}

fn registration_refusal(e: RegCeremonyErr) -> Refusal {
    use RegCeremonyErr as E;
    match e {
        E::Timeout => Refusal::Challenge("the ceremony has expired"),
        E::OriginMismatch | E::CrossOrigin | E::TopOriginMismatch => {
            Refusal::Invalid("the origin is not one of WEBAUTHN_ORIGINS")
        }
        E::ChallengeMismatch => Refusal::Challenge("the challenge is not this ceremony's"),
        E::RpIdHashMismatch => Refusal::Invalid("the passkey is for another RP ID"),
        E::UserNotPresent => Refusal::Invalid("the user was not present (UP flag)"),
        E::UserNotVerified => Refusal::Invalid("user verification was required (UV flag)"),
        E::CollectedClientData(_) | E::CollectedClientDataRelaxed(_) => Refusal::Invalid(
            "the clientDataJSON is not a registration's (type webauthn.create, origin, challenge)",
        ),
        E::AttestationObject(_) => {
            Refusal::Invalid("the attestation object or its authenticator data is not valid")
        }
        E::AttestationSignature => Refusal::Invalid("the attestation signature is not valid"),
        E::PubKey(_) => Refusal::Invalid("the public key is not valid or not an allowed algorithm"),
        _ => Refusal::Invalid("the registration response failed verification"),
    }
}

fn authentication_refusal(e: AuthCeremonyErr) -> Refusal {
    use AuthCeremonyErr as E;
    match e {
        E::Timeout => Refusal::Challenge("the ceremony has expired"),
        E::ChallengeMismatch => Refusal::Challenge("the challenge is not this ceremony's"),
        E::OriginMismatch | E::CrossOrigin | E::TopOriginMismatch => {
            Refusal::Invalid("the origin is not one of WEBAUTHN_ORIGINS")
        }
        E::RpIdHashMismatch => Refusal::Invalid("the passkey is for another RP ID"),
        E::CollectedClientData(_) | E::CollectedClientDataRelaxed(_) => Refusal::Invalid(
            "the clientDataJSON is not an authentication's (type webauthn.get, origin, challenge)",
        ),
        E::AuthenticatorData(_) => {
            Refusal::Invalid("the authenticator data is not valid (or the user was not present)")
        }
        E::AssertionSignature | E::PubKey(_) => Refusal::Invalid("the signature is not valid"),
        E::UserNotVerified => Refusal::Invalid("user verification was required (UV flag)"),
        E::BackupEligible | E::BackupNotEligible | E::BackupDoesNotExist => {
            Refusal::Invalid("the backup eligibility of the passkey changed")
        }
        E::UserHandleMismatch | E::MissingUserHandle => {
            Refusal::Invalid("the user handle does not match the passkey")
        }
        E::CredentialIdMismatch | E::NoMatchingAllowedCredential => {
            Refusal::Invalid("the passkey is not one this ceremony allows")
        }
        E::SignatureCounter => Refusal::Invalid("the signature counter did not grow"),
        _ => Refusal::Invalid("the assertion failed verification"),
    }
}

/// The user handle of an account: the 16 bytes of its UUID.
pub fn handle_of(user_id: &str) -> Option<Handle> {
    uuid::Uuid::parse_str(user_id).ok().map(|u| *u.as_bytes())
}

/// The account id of a user handle.
pub fn user_id_of(handle: &Handle) -> String {
    uuid::Uuid::from_bytes(*handle).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rp() -> WebAuthn {
        let config = crate::config::Config::from_vars([
            ("WEBAUTHN_RP_ID", "example.test"),
            ("WEBAUTHN_ORIGINS", "https://app.example.test"),
            ("WEBAUTHN_RP_NAME", "Example"),
        ])
        .unwrap();
        WebAuthn::new(&config.passkeys).unwrap()
    }

    #[test]
    fn registration_options_are_what_the_browser_reads() {
        let handle = *uuid::Uuid::new_v4().as_bytes();
        let started = rp()
            .start_registration(
                handle,
                "alice@example.test",
                "Alice",
                &[Descriptor {
                    credential_id: b64url(&[7; 32]),
                    transports: vec!["internal".into(), "hybrid".into()],
                }],
            )
            .unwrap();
        let o = &started.options["publicKey"];
        assert_eq!(
            o["rp"],
            serde_json::json!({"id": "example.test", "name": "Example"})
        );
        assert_eq!(o["user"]["id"], b64url(&handle));
        assert_eq!(o["user"]["name"], "alice@example.test");
        assert_eq!(o["user"]["displayName"], "Alice");
        assert_eq!(o["timeout"], 300_000);
        assert_eq!(o["attestation"], "none");
        assert_eq!(
            o["authenticatorSelection"],
            serde_json::json!({"residentKey": "preferred", "requireResidentKey": false, "userVerification": "preferred"})
        );
        assert_eq!(o["extensions"], serde_json::json!({"credProps": true}));
        let algs: Vec<i64> = o["pubKeyCredParams"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["alg"].as_i64().unwrap())
            .collect();
        assert_eq!(algs, [-8, -7, -257]);
        assert_eq!(o["excludeCredentials"][0]["id"], b64url(&[7; 32]));
        assert_eq!(
            o["excludeCredentials"][0]["transports"],
            serde_json::json!(["hybrid", "internal"])
        );
        let challenge = URL_SAFE_NO_PAD
            .decode(o["challenge"].as_str().unwrap())
            .unwrap();
        assert_eq!(challenge.len(), 16);
        assert_eq!(
            started.challenge_hash,
            data_encoding::HEXLOWER.encode(&Sha256::digest(&challenge))
        );
    }

    #[test]
    fn request_options_name_the_credentials_or_none() {
        let usernameless = rp()
            .start_authentication(None, Verification::Preferred)
            .unwrap();
        let o = &usernameless.options["publicKey"];
        assert_eq!(o["rpId"], "example.test");
        assert_eq!(o["allowCredentials"], serde_json::json!([]));
        assert_eq!(o["userVerification"], "preferred");
        let list = [Descriptor {
            credential_id: b64url(&[1; 32]),
            transports: vec!["usb".into()],
        }];
        let named = rp()
            .start_authentication(Some(&list), Verification::Required)
            .unwrap();
        let o = &named.options["publicKey"];
        assert_eq!(o["allowCredentials"][0]["id"], b64url(&[1; 32]));
        assert_eq!(
            o["allowCredentials"][0]["transports"],
            serde_json::json!(["usb"])
        );
        assert_eq!(o["userVerification"], "required");
        let unknown = [Descriptor {
            credential_id: b64url(&[2; 32]),
            transports: Vec::new(),
        }];
        let o = &rp()
            .start_authentication(Some(&unknown), Verification::Preferred)
            .unwrap()
            .options["publicKey"];
        assert_eq!(
            o["allowCredentials"],
            serde_json::json!([{"type": "public-key", "id": b64url(&[2; 32])}])
        );
        assert_ne!(usernameless.challenge_hash, named.challenge_hash);
        let by_caller = rp()
            .start_authentication(None, Verification::RequiredByCaller)
            .unwrap();
        assert_eq!(
            by_caller.options["publicKey"]["userVerification"],
            "required"
        );
        assert!(
            rp().start_authentication(Some(&[]), Verification::Preferred)
                .is_err()
        );
    }

    #[test]
    fn garbage_is_refused_as_a_message() {
        for bad in [
            serde_json::json!("x"),
            serde_json::json!({}),
            serde_json::json!({"id": "AAAA", "rawId": "AAAA", "type": "public-key", "response": {}}),
            serde_json::json!({"id": "!!", "rawId": "!!", "type": "public-key",
                "response": {"clientDataJSON": "e30", "authenticatorData": "AAAA", "signature": "AAAA"}}),
        ] {
            assert!(parse_assertion(&bad).is_err(), "{bad}");
            assert!(parse_registration(&bad).is_err(), "{bad}");
        }
    }
}
