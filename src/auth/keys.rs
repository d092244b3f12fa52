//! Signing keys for the asymmetric algorithms (RS256, ES256, EdDSA): loading PEM files, the
//! public half of each key, its `kid` (the RFC 7638 thumbprint), its JWK, and new keys.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::pkcs8::{DecodePrivateKey as _, DecodePublicKey as _, EncodePrivateKey as _};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use rsa::pkcs1::{DecodeRsaPrivateKey as _, DecodeRsaPublicKey as _};
use rsa::traits::PublicKeyParts as _;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The public half of a signing key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PublicKey {
    Rsa { n: Vec<u8>, e: Vec<u8> },
    P256 { x: Vec<u8>, y: Vec<u8> },
    Ed25519 { x: Vec<u8> },
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

impl PublicKey {
    pub fn algorithm(&self) -> Algorithm {
        match self {
            Self::Rsa { .. } => Algorithm::RS256,
            Self::P256 { .. } => Algorithm::ES256,
            Self::Ed25519 { .. } => Algorithm::EdDSA,
        }
    }

    /// The members RFC 7638 hashes, in its order (lexicographic, no whitespace).
    fn required_members(&self) -> String {
        match self {
            Self::Rsa { n, e } => format!(r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#, b64(e), b64(n)),
            Self::P256 { x, y } => format!(
                r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
                b64(x),
                b64(y)
            ),
            Self::Ed25519 { x } => format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#, b64(x)),
        }
    }

    /// The RFC 7638 JWK thumbprint (SHA-256, base64url): the key's `kid`.
    pub fn thumbprint(&self) -> String {
        b64(&Sha256::digest(self.required_members().as_bytes()))
    }

    /// The key as a JWK (RFC 7517) for the key set.
    pub fn jwk(&self) -> Value {
        let alg = match self.algorithm() {
            Algorithm::RS256 => "RS256",
            Algorithm::ES256 => "ES256",
            _ => "EdDSA",
        };
        let mut jwk: Value = serde_json::from_str(&self.required_members()).expect("valid JSON");
        let object = jwk.as_object_mut().expect("an object");
        object.insert("use".into(), json!("sig"));
        object.insert("alg".into(), json!(alg));
        object.insert("kid".into(), json!(self.thumbprint()));
        jwk
    }

    pub fn decoding_key(&self) -> DecodingKey {
        match self {
            Self::Rsa { n, e } => DecodingKey::from_rsa_raw_components(n, e),
            Self::P256 { x, y } => {
                DecodingKey::from_ec_components(&b64(x), &b64(y)).expect("a P-256 point")
            }
            Self::Ed25519 { x } => {
                DecodingKey::from_ed_components(&b64(x)).expect("an Ed25519 key")
            }
        }
    }
}

/// A private key that signs access tokens, with its public half.
#[derive(Clone)]
pub struct SigningKey {
    pub algorithm: Algorithm,
    /// PKCS#8 (or, for RSA, PKCS#1) PEM, as jsonwebtoken reads it.
    pem: String,
    pub public: PublicKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("algorithm", &self.algorithm)
            .field("kid", &self.public.thumbprint())
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    pub fn encoding_key(&self) -> EncodingKey {
        let key = match self.algorithm {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(self.pem.as_bytes()),
            Algorithm::ES256 => EncodingKey::from_ec_pem(self.pem.as_bytes()),
            _ => EncodingKey::from_ed_pem(self.pem.as_bytes()),
        };
        key.expect("the key was checked when it was loaded")
    }
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// Loads the private key for `algorithm` (RS256, ES256 or EdDSA) from a PEM file.
pub fn load_private(path: &Path, algorithm: Algorithm) -> Result<SigningKey, String> {
    let text = read(path)?;
    parse_private(&text, algorithm).map_err(|e| format!("{}: {e}", path.display()))
}

fn parse_private(text: &str, algorithm: Algorithm) -> Result<SigningKey, String> {
    match algorithm {
        Algorithm::RS256 => {
            let key = rsa::RsaPrivateKey::from_pkcs1_pem(text)
                .or_else(|_| rsa::RsaPrivateKey::from_pkcs8_pem(text))
                .map_err(|_| {
                    "not an RSA private key in PEM (PKCS#8 or PKCS#1), as RS256 needs".to_string()
                })?;
            if key.size() * 8 < 2048 {
                return Err(format!(
                    "the RSA key has {} bits; RS256 needs at least 2048",
                    key.size() * 8
                ));
            }
            let public = PublicKey::Rsa {
                n: key.n().to_bytes_be(),
                e: key.e().to_bytes_be(),
            };
            EncodingKey::from_rsa_pem(text.as_bytes()).map_err(|e| e.to_string())?;
            Ok(SigningKey {
                algorithm,
                pem: text.to_string(),
                public,
            })
        }
        Algorithm::ES256 => {
            let key = p256::SecretKey::from_pkcs8_pem(text)
                .or_else(|_| p256::SecretKey::from_sec1_pem(text))
                .map_err(|_| {
                    "not a P-256 private key in PEM (PKCS#8 or SEC1), as ES256 needs".to_string()
                })?;
            let point = p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(
                &key.public_key(),
                false,
            );
            let public = PublicKey::P256 {
                x: point.x().expect("an uncompressed point").to_vec(),
                y: point.y().expect("an uncompressed point").to_vec(),
            };
            let pem =
                p256::pkcs8::EncodePrivateKey::to_pkcs8_pem(&key, p256::pkcs8::LineEnding::LF)
                    .map_err(|e| e.to_string())?
                    .to_string();
            EncodingKey::from_ec_pem(pem.as_bytes()).map_err(|e| e.to_string())?;
            Ok(SigningKey {
                algorithm,
                pem,
                public,
            })
        }
        Algorithm::EdDSA => {
            let key = ed25519_dalek::SigningKey::from_pkcs8_pem(text).map_err(|_| {
                "not an Ed25519 private key in PEM (PKCS#8), as EdDSA needs".to_string()
            })?;
            let public = PublicKey::Ed25519 {
                x: key.verifying_key().to_bytes().to_vec(),
            };
            EncodingKey::from_ed_pem(text.as_bytes()).map_err(|e| e.to_string())?;
            Ok(SigningKey {
                algorithm,
                pem: text.to_string(),
                public,
            })
        }
        other => Err(format!("{other:?} is not an asymmetric algorithm")),
    }
}

/// Loads a retired key that still verifies: a public key PEM (SPKI, or PKCS#1 for RSA), or the
/// old private key file itself.
pub fn load_public(path: &Path) -> Result<PublicKey, String> {
    let text = read(path)?;
    if let Ok(k) = rsa::RsaPublicKey::from_public_key_pem(&text)
        .or_else(|_| rsa::RsaPublicKey::from_pkcs1_pem(&text))
    {
        return Ok(PublicKey::Rsa {
            n: k.n().to_bytes_be(),
            e: k.e().to_bytes_be(),
        });
    }
    if let Ok(k) = p256::PublicKey::from_public_key_pem(&text) {
        let point = p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(&k, false);
        return Ok(PublicKey::P256 {
            x: point.x().expect("uncompressed").to_vec(),
            y: point.y().expect("uncompressed").to_vec(),
        });
    }
    if let Ok(k) = ed25519_dalek::VerifyingKey::from_public_key_pem(&text) {
        return Ok(PublicKey::Ed25519 {
            x: k.to_bytes().to_vec(),
        });
    }
    for algorithm in [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA] {
        if let Ok(key) = parse_private(&text, algorithm) {
            return Ok(key.public);
        }
    }
    Err(format!(
        "{}: not an RSA, P-256 or Ed25519 key in PEM",
        path.display()
    ))
}

/// A new private key for `algorithm`, as PKCS#8 PEM.
pub fn generate(algorithm: Algorithm) -> Result<String, String> {
    let mut rng = rand_core::OsRng;
    let pem = match algorithm {
        Algorithm::RS256 => {
            let key = rsa::RsaPrivateKey::new(&mut rng, 2048).map_err(|e| e.to_string())?;
            rsa::pkcs8::EncodePrivateKey::to_pkcs8_pem(&key, rsa::pkcs8::LineEnding::LF)
                .map_err(|e| e.to_string())?
                .to_string()
        }
        Algorithm::ES256 => {
            let key = p256::SecretKey::random(&mut rng);
            p256::pkcs8::EncodePrivateKey::to_pkcs8_pem(&key, p256::pkcs8::LineEnding::LF)
                .map_err(|e| e.to_string())?
                .to_string()
        }
        Algorithm::EdDSA => ed25519_dalek::SigningKey::generate(&mut rng)
            .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .map_err(|e| e.to_string())?
            .to_string(),
        other => {
            return Err(format!(
                "{other:?} keys are not generated here; use RS256, ES256 or EdDSA"
            ));
        }
    };
    Ok(pem)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_load_and_have_stable_thumbprints() {
        for alg in [Algorithm::ES256, Algorithm::EdDSA, Algorithm::RS256] {
            let pem = generate(alg).unwrap();
            let key = parse_private(&pem, alg).unwrap();
            assert_eq!(key.public.algorithm(), alg);
            assert_eq!(
                key.public.thumbprint(),
                parse_private(&pem, alg).unwrap().public.thumbprint()
            );
            assert_eq!(key.public.jwk()["kid"], key.public.thumbprint());
            // A key of another kind is refused.
            let other = if alg == Algorithm::EdDSA {
                Algorithm::ES256
            } else {
                Algorithm::EdDSA
            };
            assert!(parse_private(&pem, other).is_err());
        }
    }

    #[test]
    fn rfc_7638_thumbprint_example() {
        // RFC 7638, section 3.1.
        let n = URL_SAFE_NO_PAD.decode("0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw").unwrap();
        let key = PublicKey::Rsa {
            n,
            e: vec![1, 0, 1],
        };
        assert_eq!(
            key.thumbprint(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }
}
