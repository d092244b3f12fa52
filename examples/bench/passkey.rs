//! A software passkey, as the passkey scenario's browser and authenticator: 1Password's
//! `passkey-authenticator` (a CTAP2 authenticator in memory: ES256, a signature counter that
//! grows by one per assertion) behind the few lines of a browser that write `clientDataJSON` and
//! `PublicKeyCredential.toJSON()`. The honest path only of the tests' `tests/api/soft_passkey.rs`
//! (which can also lie), so that the bench does not compile the test suite's helpers.
//!
//! Each worker of the scenario holds one, registered to an account of its own: the counters
//! grow, as the server's cloned-authenticator check asks.

use std::future::Future;
use std::pin::Pin;

use base64::Engine as _;
use passkey_authenticator::{
    Authenticator, CredentialIdLength, UiHint, UserCheck, UserValidationMethod,
};
use passkey_types::Passkey;
use passkey_types::ctap2::{Aaguid, Ctap2Error, get_assertion, make_credential};
use passkey_types::webauthn::{PublicKeyCredentialParameters, PublicKeyCredentialUserEntity};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The origin of the server's pages by default (PUBLIC_URL's), where passkeys may be used.
pub const ORIGIN: &str = "http://localhost:8000";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn sha256(bytes: &[u8]) -> Vec<u8> {
    Sha256::digest(bytes).to_vec()
}

/// `clientDataJSON` as browsers serialise it.
fn client_data_json(ty: &str, challenge: &str) -> Vec<u8> {
    format!(
        r#"{{"type":{},"challenge":{},"origin":{},"crossOrigin":false}}"#,
        Value::from(ty),
        Value::from(challenge),
        Value::from(ORIGIN)
    )
    .into_bytes()
}

/// The user, always present and verified.
struct SoftUser;

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
            verification,
        };
        Box::pin(async move { Ok(check) })
    }

    fn is_presence_enabled(&self) -> bool {
        true
    }

    fn is_verification_enabled(&self) -> Option<bool> {
        Some(true)
    }
}

/// A discoverable, user-verifying passkey with a signature counter.
pub struct SoftPasskey {
    authenticator: Authenticator<Option<Passkey>, SoftUser>,
}

impl SoftPasskey {
    pub fn new() -> Self {
        let mut authenticator = Authenticator::new(Aaguid::new_empty(), None, SoftUser);
        authenticator.set_make_credentials_with_signature_counter(true);
        authenticator.set_make_credential_id_length(CredentialIdLength::from(32));
        Self { authenticator }
    }

    /// Registers a credential for the creation options (`{"publicKey": {...}}`): the JSON of the
    /// new credential, attestation "none".
    pub async fn create(&mut self, options: &Value) -> Value {
        let options = &options["publicKey"];
        let challenge = options["challenge"].as_str().expect("a challenge");
        let client_data_json = client_data_json("webauthn.create", challenge);
        let user = &options["user"];
        let user = PublicKeyCredentialUserEntity {
            id: base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(user["id"].as_str().expect("user.id"))
                .expect("user.id in base64url")
                .into(),
            name: user["name"].as_str().unwrap_or_default().to_string(),
            display_name: user["displayName"].as_str().unwrap_or_default().to_string(),
        };
        let params: Vec<PublicKeyCredentialParameters> = options["pubKeyCredParams"]
            .as_array()
            .expect("pubKeyCredParams")
            .iter()
            .filter_map(|p| serde_json::from_value(p.clone()).ok())
            .collect();
        let request = make_credential::Request {
            client_data_hash: sha256(&client_data_json).into(),
            rp: make_credential::PublicKeyCredentialRpEntity {
                id: options["rp"]["id"].as_str().expect("rp.id").to_string(),
                name: options["rp"]["name"].as_str().map(str::to_string),
            },
            user,
            pub_key_cred_params: params,
            exclude_list: None,
            extensions: None,
            options: make_credential::Options {
                rk: true,
                up: true,
                uv: true,
            },
            pin_auth: None,
            pin_protocol: None,
        };
        let response = self
            .authenticator
            .make_credential(request)
            .await
            .expect("the authenticator makes a credential");
        let attested = response
            .auth_data
            .attested_credential_data
            .as_ref()
            .expect("attested credential data");
        let public_key = passkey_authenticator::public_key_der_from_cose_key(&attested.key)
            .expect("an ES256 public key");
        let id = b64(attested.credential_id());
        let authenticator_data = response.auth_data.to_vec();
        // The attestation object: {"fmt": "none", "attStmt": {}, "authData": h'...'}.
        let mut object = vec![0xa3];
        cbor_text(&mut object, "fmt");
        cbor_text(&mut object, "none");
        cbor_text(&mut object, "attStmt");
        object.push(0xa0);
        cbor_text(&mut object, "authData");
        cbor_bytes(&mut object, &authenticator_data);
        json!({
            "id": id,
            "rawId": id,
            "type": "public-key",
            "response": {
                "clientDataJSON": b64(&client_data_json),
                "authenticatorData": b64(&authenticator_data),
                "transports": ["internal", "hybrid"],
                "publicKey": b64(&public_key),
                "publicKeyAlgorithm": -7,
                "attestationObject": b64(&object),
            },
            "authenticatorAttachment": "platform",
            "clientExtensionResults": {"credProps": {"rk": true}},
        })
    }

    /// Signs in with the request options (`{"publicKey": {...}}`): the JSON of the assertion.
    pub async fn get(&mut self, options: &Value) -> Value {
        let options = &options["publicKey"];
        let challenge = options["challenge"].as_str().expect("a challenge");
        let client_data_json = client_data_json("webauthn.get", challenge);
        let request = get_assertion::Request {
            rp_id: options["rpId"].as_str().expect("rpId").to_string(),
            client_data_hash: sha256(&client_data_json).into(),
            allow_list: None,
            extensions: None,
            options: make_credential::Options {
                rk: false,
                up: true,
                uv: true,
            },
            pin_auth: None,
            pin_protocol: None,
        };
        let response = self
            .authenticator
            .get_assertion(request)
            .await
            .expect("the authenticator signs");
        let id = b64(&response.credential.expect("the credential").id);
        let mut json_response = json!({
            "clientDataJSON": b64(&client_data_json),
            "authenticatorData": b64(&response.auth_data.to_vec()),
            "signature": b64(&response.signature),
        });
        if let Some(user) = response.user {
            json_response["userHandle"] = json!(b64(&user.id));
        }
        json!({
            "id": id,
            "rawId": id,
            "type": "public-key",
            "response": json_response,
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

fn cbor_text(out: &mut Vec<u8>, text: &str) {
    cbor_head(out, 3, text.len());
    out.extend_from_slice(text.as_bytes());
}

fn cbor_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    cbor_head(out, 2, bytes.len());
    out.extend_from_slice(bytes);
}
