//! A software passkey for the tests: 1Password's `passkey-authenticator` (a CTAP2 authenticator in
//! memory, whose authenticator data, CBOR and ES256 signatures are a real implementation's) behind
//! a "browser" of the test's own.
//!
//! The browser part is written here so that a test can make it lie: it builds `clientDataJSON`
//! itself (`{"type","challenge","origin","crossOrigin":false}`, byte for byte what browsers
//! write), so a test can choose another origin, type or challenge ([`Client`]), and it asks the
//! authenticator for the RP ID the test says, which may not be the options'. What it returns is
//! the JSON `PublicKeyCredential.toJSON()` gives (base64url without padding), from the parts a
//! test can still change: [`Attestation`] and [`Assertion`] keep their bytes in public fields, with
//! hooks to flip a byte of the signature or of the authenticator data, and
//! [`SoftPasskey::resign`] signs again what a test changed (an authenticator that lies about
//! its flags or its counter).
//!
//! One [`SoftPasskey`] holds one credential (registering again replaces it). By default it is
//! what a phone's platform authenticator is: discoverable, verifying the user, synced (the
//! backup-eligible and backed-up flags set), with a signature counter that starts at 0 and grows
//! by one per assertion; each of these can be turned off. [`SoftPasskey::cloned`] copies its
//! whole state (key and counter), as an attacker who cloned the device would.

use std::future::Future;
use std::pin::Pin;

use base64::Engine as _;
use p256::ecdsa::signature::Signer as _;
use passkey_authenticator::{
    Authenticator, CredentialIdLength, UiHint, UserCheck, UserValidationMethod,
};
use passkey_types::Passkey;
use passkey_types::ctap2::{Aaguid, Ctap2Error, Flags, get_assertion, make_credential};
use passkey_types::webauthn::{
    PublicKeyCredentialDescriptor, PublicKeyCredentialParameters, PublicKeyCredentialUserEntity,
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The authenticator data's flag bits (WebAuthn §6.1).
pub const UP: u8 = 0x01;
pub const UV: u8 = 0x04;
pub const BE: u8 = 0x08;
pub const BS: u8 = 0x10;
pub const AT: u8 = 0x40;

/// The length of the credential ids this authenticator makes (as a phone's: 32 bytes are common,
/// and the server's decoys for unknown emails are as long).
pub const CREDENTIAL_ID_LEN: usize = 32;

/// base64url without padding, as WebAuthn's JSON writes bytes.
pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The bytes of a base64url string (without padding), if it is one.
pub fn unb64(text: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .ok()
}

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// `clientDataJSON` exactly as browsers serialise it (the key order and the lack of spaces are
/// the WebAuthn "limited verification" format).
pub fn client_data_json(ty: &str, challenge: &str, origin: &str) -> Vec<u8> {
    format!(
        r#"{{"type":{},"challenge":{},"origin":{},"crossOrigin":false}}"#,
        Value::from(ty),
        Value::from(challenge),
        Value::from(origin)
    )
    .into_bytes()
}

/// What the browser does, where a test makes it lie. `None` is the truth: the options' challenge
/// and RP ID, the passkey's origin, the ceremony's type.
#[derive(Clone, Debug, Default)]
pub struct Client {
    /// `clientDataJSON.origin`.
    pub origin: Option<String>,
    /// `clientDataJSON.type` (`webauthn.create` / `webauthn.get`).
    pub ty: Option<String>,
    /// `clientDataJSON.challenge` (base64url), instead of the options'.
    pub challenge: Option<String>,
    /// The RP ID the authenticator is asked for (its hash is in the authenticator data).
    pub rp_id: Option<String>,
    /// Uses the credential whatever the options' `allowCredentials` say.
    pub ignore_allow_list: bool,
}

impl Client {
    pub fn origin(origin: &str) -> Self {
        Self {
            origin: Some(origin.to_string()),
            ..Self::default()
        }
    }

    pub fn ty(ty: &str) -> Self {
        Self {
            ty: Some(ty.to_string()),
            ..Self::default()
        }
    }

    pub fn challenge(challenge: &str) -> Self {
        Self {
            challenge: Some(challenge.to_string()),
            ..Self::default()
        }
    }

    pub fn rp_id(rp_id: &str) -> Self {
        Self {
            rp_id: Some(rp_id.to_string()),
            ..Self::default()
        }
    }

    pub fn ignoring_allow_list() -> Self {
        Self {
            ignore_allow_list: true,
            ..Self::default()
        }
    }
}

/// The user, as the authenticator's UI would check them: always present, verified when the
/// authenticator can verify and was asked to.
struct SoftUser {
    verifies: bool,
}

// `UserValidationMethod` is an `async_trait` trait; this is what the macro would write.
impl UserValidationMethod for SoftUser {
    type PasskeyItem = Passkey;

    fn check_user<'a, 'life0, 'async_trait>(
        &'life0 self,
        _hint: UiHint<'a, Passkey>,
        presence: bool,
        verification: bool,
    ) -> Pin<Box<dyn Future<Output = Result<UserCheck, Ctap2Error>> + Send + 'async_trait>>
    where
        'a: 'async_trait,
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        let check = UserCheck {
            presence,
            verification: verification && self.verifies,
        };
        Box::pin(async move { Ok(check) })
    }

    fn is_presence_enabled(&self) -> bool {
        true
    }

    fn is_verification_enabled(&self) -> Option<bool> {
        self.verifies.then_some(true)
    }
}

type Inner = Authenticator<Option<Passkey>, SoftUser>;

fn authenticator(verifies_user: bool, counter: bool, credential: Option<Passkey>) -> Inner {
    let mut authenticator = Authenticator::new(
        Aaguid::new_empty(),
        credential,
        SoftUser {
            verifies: verifies_user,
        },
    );
    authenticator.set_make_credentials_with_signature_counter(counter);
    authenticator.set_make_credential_id_length(CredentialIdLength::from(CREDENTIAL_ID_LEN as u8));
    authenticator
}

/// A software passkey (see the module's documentation).
pub struct SoftPasskey {
    authenticator: Inner,
    /// The origin the browser is on (`clientDataJSON.origin`).
    pub origin: String,
    discoverable: bool,
    verifies_user: bool,
    synced: bool,
    counter: bool,
}

impl SoftPasskey {
    /// A discoverable, user-verifying, synced passkey with a signature counter, in a browser on
    /// `origin`.
    pub fn new(origin: &str) -> Self {
        Self {
            authenticator: authenticator(true, true, None),
            origin: origin.to_string(),
            discoverable: true,
            verifies_user: true,
            synced: true,
            counter: true,
        }
    }

    /// An authenticator that cannot verify the user (a plain security key without PIN): UV is
    /// never set, whatever the server asks.
    pub fn without_user_verification(mut self) -> Self {
        self.verifies_user = false;
        self.authenticator = authenticator(false, self.counter, None);
        self
    }

    /// A credential that is not discoverable: it needs `allowCredentials`, and returns no user
    /// handle.
    pub fn not_discoverable(mut self) -> Self {
        self.discoverable = false;
        self
    }

    /// A device-bound credential: neither backup eligible nor backed up.
    pub fn device_bound(mut self) -> Self {
        self.synced = false;
        self
    }

    /// No signature counter: every assertion says 0 (as synced passkeys do).
    pub fn without_counter(mut self) -> Self {
        self.counter = false;
        self.authenticator = authenticator(self.verifies_user, false, None);
        self
    }

    /// A copy of the whole authenticator, key and counter: a clone of the device.
    pub fn cloned(&self) -> Self {
        Self {
            authenticator: authenticator(
                self.verifies_user,
                self.counter,
                self.authenticator.store().clone(),
            ),
            origin: self.origin.clone(),
            discoverable: self.discoverable,
            verifies_user: self.verifies_user,
            synced: self.synced,
            counter: self.counter,
        }
    }

    fn credential(&self) -> &Passkey {
        self.authenticator
            .store()
            .as_ref()
            .expect("the passkey has been registered")
    }

    /// The credential id (after registration).
    pub fn credential_id(&self) -> Vec<u8> {
        self.credential().credential_id.to_vec()
    }

    /// The signature counter the authenticator holds (what its next assertion says, less one).
    pub fn counter(&self) -> u32 {
        self.credential().counter.unwrap_or(0)
    }

    /// The user handle the authenticator stored (discoverable credentials only).
    pub fn user_handle(&self) -> Option<Vec<u8>> {
        self.credential().user_handle.as_ref().map(|h| h.to_vec())
    }

    /// Registers a credential for the creation options `options` (`{"publicKey": {...}}` or the
    /// inner object), as an honest browser would: the JSON of the new credential.
    pub async fn create(&mut self, options: &Value) -> Value {
        self.create_with(options, &Client::default())
            .await
            .unwrap_or_else(|e| panic!("create: {e}; options {options}"))
            .json()
    }

    /// Registers a credential for `options` through `client`: the parts of the answer, or the
    /// error a browser would raise.
    pub async fn create_with(
        &mut self,
        options: &Value,
        client: &Client,
    ) -> Result<Attestation, String> {
        let options = public_key(options);
        let challenge = client
            .challenge
            .clone()
            .or_else(|| options["challenge"].as_str().map(str::to_string))
            .ok_or("the options have no challenge")?;
        let rp_id = client
            .rp_id
            .clone()
            .or_else(|| options["rp"]["id"].as_str().map(str::to_string))
            .ok_or("the options have no rp.id")?;
        let origin = client.origin.clone().unwrap_or_else(|| self.origin.clone());
        let ty = client.ty.as_deref().unwrap_or("webauthn.create");
        let client_data_json = client_data_json(ty, &challenge, &origin);

        let user = &options["user"];
        let user = PublicKeyCredentialUserEntity {
            id: unb64(user["id"].as_str().ok_or("the options have no user.id")?)
                .ok_or("user.id is not base64url")?
                .into(),
            name: user["name"].as_str().unwrap_or_default().to_string(),
            display_name: user["displayName"].as_str().unwrap_or_default().to_string(),
        };
        let params: Vec<PublicKeyCredentialParameters> = options["pubKeyCredParams"]
            .as_array()
            .ok_or("the options have no pubKeyCredParams")?
            .iter()
            .filter_map(|p| serde_json::from_value(p.clone()).ok())
            .collect();
        // The browser refuses to make a second credential on an authenticator that already has
        // one of those the server excludes (InvalidStateError).
        let excluded = descriptors(&options["excludeCredentials"]);
        if let Some(current) = self.authenticator.store()
            && excluded.iter().any(|d| d.id == current.credential_id)
        {
            return Err("InvalidStateError: this authenticator is already registered".into());
        }
        let selection = &options["authenticatorSelection"];
        let rk = self.discoverable
            && (selection["residentKey"] != "discouraged"
                || selection["requireResidentKey"] == true);
        let uv = self.verifies_user && selection["userVerification"] != "discouraged";
        let request = make_credential::Request {
            client_data_hash: sha256(&client_data_json).to_vec().into(),
            rp: make_credential::PublicKeyCredentialRpEntity {
                id: rp_id,
                name: options["rp"]["name"].as_str().map(str::to_string),
            },
            user,
            pub_key_cred_params: params,
            exclude_list: None,
            extensions: None,
            options: make_credential::Options { rk, up: true, uv },
            pin_auth: None,
            pin_protocol: None,
        };
        let mut response = self
            .authenticator
            .make_credential(request)
            .await
            .map_err(|e| format!("the authenticator refused: {e:?}"))?;
        if !self.synced {
            response.auth_data.flags.remove(Flags::BE | Flags::BS);
        }
        if !self.discoverable
            && let Some(credential) = self.authenticator.store_mut()
        {
            credential.user_handle = None;
        }
        let attested = response
            .auth_data
            .attested_credential_data
            .as_ref()
            .ok_or("no attested credential data")?;
        let public_key = passkey_authenticator::public_key_der_from_cose_key(&attested.key)
            .map_err(|e| format!("the public key: {e:?}"))?;
        let cred_props = options["extensions"]["credProps"] == true;
        Ok(Attestation {
            credential_id: attested.credential_id().to_vec(),
            client_data_json,
            authenticator_data: response.auth_data.to_vec(),
            public_key: public_key.to_vec(),
            algorithm: -7,
            transports: vec!["internal".into(), "hybrid".into()],
            extension_results: if cred_props {
                json!({ "credProps": { "rk": rk } })
            } else {
                json!({})
            },
            self_attestation: None,
        })
    }

    /// Signs in with the request options `options`, as an honest browser would: the JSON of
    /// the assertion.
    pub async fn get(&mut self, options: &Value) -> Value {
        self.get_with(options, &Client::default())
            .await
            .unwrap_or_else(|e| panic!("get: {e}; options {options}"))
            .json()
    }

    /// An assertion for `options` through `client`: its parts, or the error a browser would
    /// raise (no credential it may use).
    pub async fn get_with(
        &mut self,
        options: &Value,
        client: &Client,
    ) -> Result<Assertion, String> {
        let options = public_key(options);
        let challenge = client
            .challenge
            .clone()
            .or_else(|| options["challenge"].as_str().map(str::to_string))
            .ok_or("the options have no challenge")?;
        let origin = client.origin.clone().unwrap_or_else(|| self.origin.clone());
        let rp_id = client
            .rp_id
            .clone()
            .or_else(|| options["rpId"].as_str().map(str::to_string))
            .or_else(|| {
                url::Url::parse(&origin)
                    .ok()
                    .and_then(|u| u.host_str().map(str::to_string))
            })
            .ok_or("no RP ID")?;
        let ty = client.ty.as_deref().unwrap_or("webauthn.get");
        let client_data_json = client_data_json(ty, &challenge, &origin);

        let allowed = descriptors(&options["allowCredentials"]);
        let id = self.credential_id();
        let allow_list = if client.ignore_allow_list {
            None
        } else if allowed.is_empty() {
            if !self.discoverable {
                return Err(
                    "NotAllowedError: a credential that is not discoverable needs allowCredentials"
                        .into(),
                );
            }
            None
        } else if allowed.iter().any(|d| *d.id == *id) {
            Some(allowed)
        } else {
            return Err("NotAllowedError: allowCredentials does not name this credential".into());
        };
        let uv = self.verifies_user && options["userVerification"] != "discouraged";
        let request = get_assertion::Request {
            rp_id,
            client_data_hash: sha256(&client_data_json).to_vec().into(),
            allow_list,
            extensions: None,
            options: make_credential::Options {
                rk: false,
                up: true,
                uv,
            },
            pin_auth: None,
            pin_protocol: None,
        };
        let response = self
            .authenticator
            .get_assertion(request)
            .await
            .map_err(|e| format!("the authenticator refused: {e:?}"))?;
        let mut assertion = Assertion {
            credential_id: response.credential.map_or(id, |c| c.id.to_vec()),
            client_data_json,
            authenticator_data: response.auth_data.to_vec(),
            signature: response.signature.to_vec(),
            user_handle: if self.discoverable {
                response.user.map(|u| u.id.to_vec())
            } else {
                None
            },
        };
        if !self.synced {
            assertion.authenticator_data[32] &= !(BE | BS);
            self.resign(&mut assertion);
        }
        Ok(assertion)
    }

    /// Signs `assertion` again (its authenticator data and the hash of its `clientDataJSON`)
    /// with this credential's key: what an authenticator that lies would send.
    pub fn resign(&self, assertion: &mut Assertion) {
        let key = passkey_authenticator::private_key_from_cose_key(&self.credential().key)
            .expect("an ES256 key");
        let signing = p256::ecdsa::SigningKey::from(&key);
        let mut message = assertion.authenticator_data.clone();
        message.extend_from_slice(&sha256(&assertion.client_data_json));
        let signature: p256::ecdsa::Signature = signing.sign(&message);
        assertion.signature = signature.to_der().as_bytes().to_vec();
    }

    /// Makes `attestation` a "packed" self attestation: signed, as its assertions are, with the
    /// credential's own key over its authenticator data and the hash of its `clientDataJSON`.
    pub fn self_attest(&self, attestation: &mut Attestation) {
        let key = passkey_authenticator::private_key_from_cose_key(&self.credential().key)
            .expect("an ES256 key");
        let mut message = attestation.authenticator_data.clone();
        message.extend_from_slice(&sha256(&attestation.client_data_json));
        let signature: p256::ecdsa::Signature = p256::ecdsa::SigningKey::from(&key).sign(&message);
        attestation.self_attestation = Some(signature.to_der().as_bytes().to_vec());
    }

    /// Sets the flag bits `set` and clears `clear` in the assertion's authenticator data, and
    /// signs it again.
    pub fn lie_about_flags(&self, assertion: &mut Assertion, set: u8, clear: u8) {
        assertion.authenticator_data[32] = (assertion.authenticator_data[32] | set) & !clear;
        self.resign(assertion);
    }

    /// Writes `counter` in the assertion's authenticator data, and signs it again.
    pub fn lie_about_counter(&self, assertion: &mut Assertion, counter: u32) {
        assertion.authenticator_data[33..37].copy_from_slice(&counter.to_be_bytes());
        self.resign(assertion);
    }
}

/// The `publicKey` member of options, or the options themselves.
fn public_key(options: &Value) -> &Value {
    options.get("publicKey").unwrap_or(options)
}

/// The credential descriptors of an `allowCredentials` / `excludeCredentials` array.
fn descriptors(list: &Value) -> Vec<PublicKeyCredentialDescriptor> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| serde_json::from_value(d.clone()).ok())
        .collect()
}

/// The signature counter of authenticator data.
pub fn counter_of(authenticator_data: &[u8]) -> u32 {
    u32::from_be_bytes(authenticator_data[33..37].try_into().unwrap())
}

/// A new credential, as the browser hands it over: the parts a test may change, then
/// [`Attestation::json`].
#[derive(Clone, Debug)]
pub struct Attestation {
    pub credential_id: Vec<u8>,
    pub client_data_json: Vec<u8>,
    /// With the attested credential data (the `attestationObject`'s `authData`).
    pub authenticator_data: Vec<u8>,
    /// SubjectPublicKeyInfo, DER.
    pub public_key: Vec<u8>,
    pub algorithm: i64,
    pub transports: Vec<String>,
    pub extension_results: Value,
    /// `None`: attestation "none". `Some(sig)`: "packed" self attestation (ES256), `sig` over
    /// the authenticator data and the hash of `clientDataJSON` (see
    /// [`SoftPasskey::self_attest`]).
    pub self_attestation: Option<Vec<u8>>,
}

impl Attestation {
    /// The CBOR attestation object, in CTAP2 canonical order: `{"fmt": "none", "attStmt": {},
    /// "authData": h'...'}`, or with self attestation `{"fmt": "packed", "attStmt": {"alg": -7,
    /// "sig": h'...'}, ...}`.
    pub fn attestation_object(&self) -> Vec<u8> {
        let mut cbor = vec![0xa3];
        cbor_text(&mut cbor, "fmt");
        match &self.self_attestation {
            None => {
                cbor_text(&mut cbor, "none");
                cbor_text(&mut cbor, "attStmt");
                cbor.push(0xa0);
            }
            Some(signature) => {
                cbor_text(&mut cbor, "packed");
                cbor_text(&mut cbor, "attStmt");
                cbor.push(0xa2);
                cbor_text(&mut cbor, "alg");
                // -7: a negative integer, 6 (major type 1).
                cbor.push(0x26);
                cbor_text(&mut cbor, "sig");
                cbor_bytes(&mut cbor, signature);
            }
        }
        cbor_text(&mut cbor, "authData");
        cbor_bytes(&mut cbor, &self.authenticator_data);
        cbor
    }

    /// The same credential answering another challenge (an attestation "none" signs nothing:
    /// anyone holding one can present it again).
    pub fn rechallenged(&self, options: &Value, origin: &str) -> Self {
        let challenge = public_key(options)["challenge"].as_str().unwrap();
        Self {
            client_data_json: client_data_json("webauthn.create", challenge, origin),
            ..self.clone()
        }
    }

    /// `PublicKeyCredential.toJSON()` of the registration.
    pub fn json(&self) -> Value {
        json!({
            "id": b64(&self.credential_id),
            "rawId": b64(&self.credential_id),
            "type": "public-key",
            "response": {
                "clientDataJSON": b64(&self.client_data_json),
                "authenticatorData": b64(&self.authenticator_data),
                "transports": self.transports,
                "publicKey": b64(&self.public_key),
                "publicKeyAlgorithm": self.algorithm,
                "attestationObject": b64(&self.attestation_object()),
            },
            "authenticatorAttachment": "platform",
            "clientExtensionResults": self.extension_results,
        })
    }
}

/// An assertion, as the browser hands it over: the parts a test may change, then
/// [`Assertion::json`].
#[derive(Clone, Debug)]
pub struct Assertion {
    pub credential_id: Vec<u8>,
    pub client_data_json: Vec<u8>,
    pub authenticator_data: Vec<u8>,
    /// ECDSA P-256, DER.
    pub signature: Vec<u8>,
    pub user_handle: Option<Vec<u8>>,
}

impl Assertion {
    /// The flags byte.
    pub fn flags(&self) -> u8 {
        self.authenticator_data[32]
    }

    pub fn counter(&self) -> u32 {
        counter_of(&self.authenticator_data)
    }

    /// Flips the low bit of the signature's byte `i` (without signing again). Byte 10 is within
    /// `r`, so the DER stays well formed: only the signature is wrong.
    pub fn flip_signature_byte(&mut self, i: usize) {
        self.signature[i] ^= 0x01;
    }

    /// Flips the low bit of the authenticator data's byte `i` (without signing again).
    pub fn flip_authenticator_data_byte(&mut self, i: usize) {
        self.authenticator_data[i] ^= 0x01;
    }

    /// `PublicKeyCredential.toJSON()` of the assertion.
    pub fn json(&self) -> Value {
        let mut response = json!({
            "clientDataJSON": b64(&self.client_data_json),
            "authenticatorData": b64(&self.authenticator_data),
            "signature": b64(&self.signature),
        });
        if let Some(handle) = &self.user_handle {
            response["userHandle"] = json!(b64(handle));
        }
        json!({
            "id": b64(&self.credential_id),
            "rawId": b64(&self.credential_id),
            "type": "public-key",
            "response": response,
            "authenticatorAttachment": "platform",
            "clientExtensionResults": {},
        })
    }
}

/// CBOR: the head of a major type with `len`.
fn cbor_head(out: &mut Vec<u8>, major: u8, len: usize) {
    let major = major << 5;
    match len {
        0..=23 => out.push(major | len as u8),
        24..=0xff => out.extend([major | 24, len as u8]),
        0x100..=0xffff => {
            out.push(major | 25);
            out.extend((len as u16).to_be_bytes());
        }
        _ => {
            out.push(major | 26);
            out.extend((len as u32).to_be_bytes());
        }
    }
}

/// CBOR: a text string.
pub fn cbor_text(out: &mut Vec<u8>, text: &str) {
    cbor_head(out, 3, text.len());
    out.extend_from_slice(text.as_bytes());
}

/// CBOR: a byte string.
pub fn cbor_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    cbor_head(out, 2, bytes.len());
    out.extend_from_slice(bytes);
}

// ---------------------------------------------------------------------------------------------
// The soft passkey itself, checked against what WebAuthn says a relying party verifies.

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::Verifier as _;
    use p256::pkcs8::DecodePublicKey as _;

    const ORIGIN: &str = "https://app.example.com";

    fn creation_options(challenge: &[u8]) -> Value {
        json!({"publicKey": {
            "rp": {"id": "app.example.com", "name": "Example"},
            "user": {"id": b64(&[7; 16]), "name": "a@example.com", "displayName": "A"},
            "challenge": b64(challenge),
            "pubKeyCredParams": [
                {"type": "public-key", "alg": -8},
                {"type": "public-key", "alg": -7},
                {"type": "public-key", "alg": -257}
            ],
            "timeout": 300000,
            "excludeCredentials": [],
            "authenticatorSelection": {"residentKey": "preferred", "requireResidentKey": false, "userVerification": "preferred"},
            "attestation": "none",
            "extensions": {"credProps": true}
        }})
    }

    fn request_options(challenge: &[u8], allow: &[Vec<u8>]) -> Value {
        let allow: Vec<Value> = allow
            .iter()
            .map(|id| json!({"type": "public-key", "id": b64(id)}))
            .collect();
        json!({"publicKey": {
            "challenge": b64(challenge),
            "timeout": 300000,
            "rpId": "app.example.com",
            "allowCredentials": allow,
            "userVerification": "preferred"
        }})
    }

    /// Verifies `assertion` as a relying party would, with the SPKI key of the registration.
    fn verifies(public_key: &[u8], assertion: &Assertion) -> bool {
        let key = p256::ecdsa::VerifyingKey::from_public_key_der(public_key).unwrap();
        let Ok(signature) = p256::ecdsa::Signature::from_der(&assertion.signature) else {
            return false;
        };
        let mut message = assertion.authenticator_data.clone();
        message.extend_from_slice(&sha256(&assertion.client_data_json));
        key.verify(&message, &signature).is_ok()
    }

    #[tokio::test]
    async fn client_data_json_is_the_browsers_byte_layout() {
        assert_eq!(
            client_data_json("webauthn.get", "AAAAAAAAAAAAAAAAAAAAAA", "https://example.com"),
            br#"{"type":"webauthn.get","challenge":"AAAAAAAAAAAAAAAAAAAAAA","origin":"https://example.com","crossOrigin":false}"#
        );
        // Quotes and backslashes are escaped as JSON.
        assert_eq!(
            client_data_json("t", "c", "a\"b"),
            br#"{"type":"t","challenge":"c","origin":"a\"b","crossOrigin":false}"#
        );
    }

    #[tokio::test]
    async fn a_registration_says_what_webauthn_says_it_should() {
        let mut passkey = SoftPasskey::new(ORIGIN);
        let challenge = [1u8; 16];
        let attestation = passkey
            .create_with(&creation_options(&challenge), &Client::default())
            .await
            .unwrap();
        let client_data: Value = serde_json::from_slice(&attestation.client_data_json).unwrap();
        assert_eq!(client_data["type"], "webauthn.create");
        assert_eq!(client_data["challenge"], b64(&challenge));
        assert_eq!(client_data["origin"], ORIGIN);
        let data = &attestation.authenticator_data;
        assert_eq!(&data[..32], &sha256(b"app.example.com"));
        assert_eq!(data[32], UP | UV | BE | BS | AT, "flags {:#x}", data[32]);
        assert_eq!(counter_of(data), 0);
        // The attested credential data: AAGUID, the id's length and the id.
        assert_eq!(&data[37..53], &[0; 16]);
        assert_eq!(
            u16::from_be_bytes([data[53], data[54]]) as usize,
            CREDENTIAL_ID_LEN
        );
        assert_eq!(
            &data[55..55 + CREDENTIAL_ID_LEN],
            &attestation.credential_id[..]
        );
        assert_eq!(passkey.credential_id(), attestation.credential_id);
        assert_eq!(passkey.user_handle(), Some(vec![7; 16]));
        // The attestation object is the CBOR map of format "none".
        let object = attestation.attestation_object();
        assert_eq!(&object[..5], &[0xa3, 0x63, b'f', b'm', b't']);
        assert!(object.ends_with(data));
        let json = attestation.json();
        assert_eq!(json["id"], b64(&attestation.credential_id));
        assert_eq!(json["rawId"], json["id"]);
        assert_eq!(json["type"], "public-key");
        assert_eq!(json["response"]["publicKeyAlgorithm"], -7);
        assert_eq!(
            json["clientExtensionResults"],
            json!({"credProps": {"rk": true}})
        );
        assert!(!json["id"].as_str().unwrap().contains('='));
    }

    #[tokio::test]
    async fn assertions_verify_and_count_and_a_clone_carries_on_from_the_copy() {
        let mut passkey = SoftPasskey::new(ORIGIN);
        let attestation = passkey
            .create_with(&creation_options(&[1; 16]), &Client::default())
            .await
            .unwrap();
        let id = passkey.credential_id();
        let first = passkey
            .get_with(&request_options(&[2; 16], &[]), &Client::default())
            .await
            .unwrap();
        assert!(verifies(&attestation.public_key, &first));
        assert_eq!(first.counter(), 1);
        assert_eq!(first.flags(), UP | UV | BE | BS);
        assert_eq!(first.user_handle, Some(vec![7; 16]));
        assert_eq!(first.credential_id, id);
        let client_data: Value = serde_json::from_slice(&first.client_data_json).unwrap();
        assert_eq!(client_data["type"], "webauthn.get");

        let mut clone = passkey.cloned();
        let second = passkey
            .get_with(
                &request_options(&[3; 16], std::slice::from_ref(&id)),
                &Client::default(),
            )
            .await
            .unwrap();
        assert_eq!(second.counter(), 2);
        let from_clone = clone
            .get_with(&request_options(&[4; 16], &[]), &Client::default())
            .await
            .unwrap();
        assert!(verifies(&attestation.public_key, &from_clone));
        assert_eq!(
            from_clone.counter(),
            2,
            "the clone counts from where it was copied"
        );

        // Another credential's allowCredentials: the browser finds nothing to use.
        assert!(
            passkey
                .get_with(
                    &request_options(&[5; 16], &[vec![9; 32]]),
                    &Client::default()
                )
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn the_hooks_break_the_signature_and_resigning_mends_it() {
        let mut passkey = SoftPasskey::new(ORIGIN);
        let attestation = passkey
            .create_with(&creation_options(&[1; 16]), &Client::default())
            .await
            .unwrap();
        let good = passkey
            .get_with(&request_options(&[2; 16], &[]), &Client::default())
            .await
            .unwrap();

        let mut bad = good.clone();
        bad.flip_signature_byte(10);
        assert!(
            p256::ecdsa::Signature::from_der(&bad.signature).is_ok(),
            "still DER"
        );
        assert!(!verifies(&attestation.public_key, &bad));

        let mut bad = good.clone();
        bad.flip_authenticator_data_byte(36);
        assert!(!verifies(&attestation.public_key, &bad));

        let mut lying = good.clone();
        passkey.lie_about_flags(&mut lying, 0, UP);
        assert_eq!(lying.flags() & UP, 0);
        assert!(verifies(&attestation.public_key, &lying));
        passkey.lie_about_counter(&mut lying, 7);
        assert_eq!(lying.counter(), 7);
        assert!(verifies(&attestation.public_key, &lying));
    }

    #[tokio::test]
    async fn the_options_and_the_lies_are_what_the_authenticator_signs() {
        // No UV, device bound, not discoverable, no counter.
        let mut passkey = SoftPasskey::new(ORIGIN)
            .without_user_verification()
            .device_bound()
            .not_discoverable()
            .without_counter();
        let attestation = passkey
            .create_with(&creation_options(&[1; 16]), &Client::default())
            .await
            .unwrap();
        assert_eq!(attestation.authenticator_data[32], UP | AT);
        assert_eq!(passkey.user_handle(), None);
        assert!(
            passkey
                .get_with(&request_options(&[2; 16], &[]), &Client::default())
                .await
                .is_err(),
            "not discoverable: needs allowCredentials"
        );
        let id = passkey.credential_id();
        let assertion = passkey
            .get_with(&request_options(&[2; 16], &[id]), &Client::default())
            .await
            .unwrap();
        assert_eq!(assertion.flags(), UP);
        assert_eq!(assertion.counter(), 0);
        assert_eq!(assertion.user_handle, None);
        assert!(verifies(&attestation.public_key, &assertion));
        assert!(assertion.json()["response"].get("userHandle").is_none());

        // A lying browser: another RP ID, origin, type and challenge.
        let client = Client {
            origin: Some("https://evil.example".into()),
            ty: Some("webauthn.create".into()),
            challenge: Some(b64(&[9; 16])),
            rp_id: Some("evil.example".into()),
            ignore_allow_list: true,
        };
        let lie = passkey
            .get_with(&request_options(&[2; 16], &[]), &client)
            .await
            .unwrap();
        assert_eq!(&lie.authenticator_data[..32], &sha256(b"evil.example"));
        let client_data: Value = serde_json::from_slice(&lie.client_data_json).unwrap();
        assert_eq!(client_data["origin"], "https://evil.example");
        assert_eq!(client_data["type"], "webauthn.create");
        assert_eq!(client_data["challenge"], b64(&[9; 16]));
        assert!(verifies(&attestation.public_key, &lie));
    }

    #[tokio::test]
    async fn the_browser_refuses_to_register_an_excluded_authenticator_again() {
        let mut passkey = SoftPasskey::new(ORIGIN);
        passkey.create(&creation_options(&[1; 16])).await;
        let mut options = creation_options(&[2; 16]);
        options["publicKey"]["excludeCredentials"] =
            json!([{"type": "public-key", "id": b64(&passkey.credential_id())}]);
        assert!(
            passkey
                .create_with(&options, &Client::default())
                .await
                .is_err()
        );
    }
}

/// The soft passkey through the server's WebAuthn library itself (`webauthn_rp`, as the server
/// uses it: relaxed JSON, the static state stored in its binary form): what it says is what a
/// relying party accepts, so that a refusal in the suite is the server's doing.
#[cfg(test)]
mod with_the_rp_library {
    use super::*;
    use webauthn_rp::bin::{Decode as _, Encode as _};
    use webauthn_rp::request::auth::AuthenticationVerificationOptions;
    use webauthn_rp::request::register::{
        PublicKeyCredentialUserEntity, RegistrationVerificationOptions, UserHandle16,
    };
    use webauthn_rp::request::{AsciiDomain, RpId};
    use webauthn_rp::response::register::{CompressedPubKey, StaticState};
    use webauthn_rp::{
        AuthenticatedCredential, DiscoverableAuthentication16,
        DiscoverableCredentialRequestOptions, PublicKeyCredentialCreationOptions, Registration,
    };

    type Stored = StaticState<CompressedPubKey<[u8; 32], [u8; 32], [u8; 48], Vec<u8>>>;

    #[tokio::test]
    async fn webauthn_rp_accepts_the_registration_and_the_assertions() {
        let rp_id = RpId::Domain(AsciiDomain::try_from("example.com".to_owned()).unwrap());
        let user_id = UserHandle16::new();
        let user = PublicKeyCredentialUserEntity {
            name: "a@example.com".try_into().unwrap(),
            id: &user_id,
            display_name: None,
        };
        let (server, client) =
            PublicKeyCredentialCreationOptions::passkey(&rp_id, user, Vec::new())
                .start_ceremony()
                .unwrap();
        let options = serde_json::to_value(&client).unwrap();
        let mut passkey = SoftPasskey::new("https://example.com");
        let credential = passkey.create(&options).await;
        let registration =
            Registration::from_json_relaxed(credential.to_string().as_bytes()).unwrap();
        let registered = server
            .verify(
                &rp_id,
                &registration,
                &RegistrationVerificationOptions::<&str, &str>::default(),
            )
            .unwrap_or_else(|e| panic!("registration refused: {e}"));
        let (id, _, handle, static_state, dynamic, _) = registered.into_parts();

        // A "packed" self attestation of another credential is accepted too.
        let user_id2 = UserHandle16::new();
        let user2 = PublicKeyCredentialUserEntity {
            name: "b@example.com".try_into().unwrap(),
            id: &user_id2,
            display_name: None,
        };
        let (server2, client2) =
            PublicKeyCredentialCreationOptions::passkey(&rp_id, user2, Vec::new())
                .start_ceremony()
                .unwrap();
        let mut other = SoftPasskey::new("https://example.com");
        let mut attested = other
            .create_with(&serde_json::to_value(&client2).unwrap(), &Client::default())
            .await
            .unwrap();
        other.self_attest(&mut attested);
        let registration2 =
            Registration::from_json_relaxed(attested.json().to_string().as_bytes()).unwrap();
        server2
            .verify(
                &rp_id,
                &registration2,
                &RegistrationVerificationOptions::<&str, &str>::default(),
            )
            .unwrap_or_else(|e| panic!("self attestation refused: {e}"));
        assert_eq!(id.as_ref(), passkey.credential_id().as_slice());
        assert_eq!(handle, user_id);
        let stored = static_state.encode().unwrap();
        let id = passkey.credential_id();

        let options_for = |counter_policy| AuthenticationVerificationOptions::<&str, &str> {
            sig_counter_enforcement: counter_policy,
            ..Default::default()
        };
        let mut dynamic = dynamic;
        for round in 0..2 {
            let (server, client) = DiscoverableCredentialRequestOptions::passkey(&rp_id)
                .start_ceremony()
                .unwrap();
            let options = serde_json::to_value(&client).unwrap();
            let assertion = passkey.get(&options).await;
            let authentication =
                DiscoverableAuthentication16::from_json_relaxed(assertion.to_string().as_bytes())
                    .unwrap();
            assert_eq!(authentication.raw_id().as_ref(), id.as_slice());
            let mut credential = AuthenticatedCredential::new(
                authentication.raw_id(),
                &user_id,
                Stored::decode(stored.as_slice()).unwrap(),
                dynamic,
            )
            .unwrap();
            server
                .verify(
                    &rp_id,
                    &authentication,
                    &mut credential,
                    &options_for(Default::default()),
                )
                .unwrap_or_else(|e| panic!("assertion {round} refused: {e}"));
            dynamic = credential.dynamic_state();
        }

        // A flipped signature is refused by the library too.
        let (server, client) = DiscoverableCredentialRequestOptions::passkey(&rp_id)
            .start_ceremony()
            .unwrap();
        let options = serde_json::to_value(&client).unwrap();
        let mut bad = passkey
            .get_with(&options, &Client::default())
            .await
            .unwrap();
        bad.flip_signature_byte(10);
        let authentication =
            DiscoverableAuthentication16::from_json_relaxed(bad.json().to_string().as_bytes())
                .unwrap();
        let mut credential = AuthenticatedCredential::new(
            authentication.raw_id(),
            &user_id,
            Stored::decode(stored.as_slice()).unwrap(),
            dynamic,
        )
        .unwrap();
        assert!(
            server
                .verify(
                    &rp_id,
                    &authentication,
                    &mut credential,
                    &options_for(Default::default())
                )
                .is_err()
        );
    }
}
