//! Standard Webhooks signatures (https://www.standardwebhooks.com/) and their secrets.
//!
//! A secret is `whsec_` followed by the standard base64 (with padding) of 24 to 64 random bytes;
//! the bytes are the HMAC key. A message is signed as
//! `webhook-signature: v1,<base64 of HMAC-SHA256("{webhook-id}.{webhook-timestamp}.{body}")>`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

const PREFIX: &str = "whsec_";
/// The bytes of a generated secret.
const GENERATED_BYTES: usize = 32;
pub const MIN_SECRET_BYTES: usize = 24;
pub const MAX_SECRET_BYTES: usize = 64;
/// The shortest and longest secret text: `whsec_` and the base64 of 24 or 64 bytes.
pub const MIN_SECRET_LENGTH: usize = PREFIX.len() + MIN_SECRET_BYTES.div_ceil(3) * 4;
pub const MAX_SECRET_LENGTH: usize = PREFIX.len() + MAX_SECRET_BYTES.div_ceil(3) * 4;
/// Exactly the secrets [`Secret::parse`] takes, for the OpenAPI document: `whsec_`, then 8 to 21
/// groups of 4 base64 characters (24 to 63 bytes), possibly ended by a padded group whose last
/// character leaves no stray bits (1 or 2 more bytes, 64 at most).
pub const SECRET_PATTERN: &str = r"^whsec_(?:(?:[A-Za-z0-9+/]{4}){8,20}(?:[A-Za-z0-9+/][AQgw]==|[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=)?|(?:[A-Za-z0-9+/]{4}){21}(?:[A-Za-z0-9+/][AQgw]==)?)$";

/// A signing key. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl Secret {
    /// 32 random bytes.
    pub fn generate() -> Self {
        let mut bytes = vec![0u8; GENERATED_BYTES];
        getrandom::fill(&mut bytes).expect("the OS random number generator works");
        Self(bytes)
    }

    /// Reads `whsec_<base64>`; says what is wrong otherwise (never repeating the value).
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        const SHAPE: &str = "must be whsec_ followed by the base64 of 24 to 64 bytes";
        let encoded = text.strip_prefix(PREFIX).ok_or(SHAPE)?;
        let bytes = STANDARD.decode(encoded).map_err(|_| SHAPE)?;
        if !(MIN_SECRET_BYTES..=MAX_SECRET_BYTES).contains(&bytes.len()) {
            return Err(SHAPE);
        }
        Ok(Self(bytes))
    }

    /// From the bytes as stored (opened from their seal).
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// `whsec_<base64>`: what the receiver is given, once.
    pub fn text(&self) -> String {
        format!("{PREFIX}{}", STANDARD.encode(&self.0))
    }

    /// The `webhook-signature` header's value for message `id`, sent at `timestamp` (Unix
    /// seconds), with `body`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_standards_test_vector() {
        // The standardwebhooks crate's own test (Standard Webhooks' Rust library).
        let secret = Secret::parse("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
        assert_eq!(
            secret.sign(
                "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
                1649367553,
                br#"{"email":"test@example.com","username":"test_user"}"#
            ),
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
        );
    }

    #[test]
    fn secrets_are_whsec_and_24_to_64_bytes_of_standard_base64() {
        let generated = Secret::generate();
        let text = generated.text();
        assert!(text.starts_with("whsec_"), "{text}");
        assert_eq!(Secret::parse(&text).unwrap(), generated);
        assert_ne!(Secret::generate(), generated);
        let regex = regex::Regex::new(SECRET_PATTERN).unwrap();
        for bytes in [24, 25, 32, 63, 64] {
            let text = format!("whsec_{}", STANDARD.encode(vec![7u8; bytes]));
            assert!(Secret::parse(&text).is_ok(), "{bytes}");
            assert!(regex.is_match(&text), "{text}");
            assert!((MIN_SECRET_LENGTH..=MAX_SECRET_LENGTH).contains(&text.len()));
        }
        for bad in [
            format!("whsec_{}", STANDARD.encode([7u8; 23])),
            format!("whsec_{}", STANDARD.encode([7u8; 65])),
            STANDARD.encode([7u8; 32]),
            format!("whsec-{}", STANDARD.encode([7u8; 32])),
            format!("whsec_{}", STANDARD.encode([7u8; 32]).trim_end_matches('=')),
            "whsec_!!!!".into(),
            String::new(),
        ] {
            let error = Secret::parse(&bad).unwrap_err();
            assert!(!error.contains(&bad) || bad.is_empty());
        }
    }

    #[test]
    fn the_pattern_takes_exactly_what_parse_takes() {
        let regex = regex::Regex::new(SECRET_PATTERN).unwrap();
        let mut bytes = [0u8; 70];
        getrandom::fill(&mut bytes).unwrap();
        for length in 0..=70 {
            for fill in [0x00, 0xff, 0x5a] {
                let mut key = bytes[..length].to_vec();
                if fill != 0x5a {
                    key.iter_mut().for_each(|b| *b = fill);
                }
                let text = format!("whsec_{}", STANDARD.encode(&key));
                assert_eq!(
                    regex.is_match(&text),
                    Secret::parse(&text).is_ok(),
                    "{length} bytes: {text}"
                );
                // A stray bit in the last character before the padding.
                if text.ends_with('=') {
                    let trimmed = text.trim_end_matches('=');
                    let padding = &text[trimmed.len()..];
                    let last = trimmed.chars().last().unwrap();
                    let alphabet =
                        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
                    let next = alphabet
                        .chars()
                        .cycle()
                        .skip_while(|c| *c != last)
                        .nth(1)
                        .unwrap();
                    let changed = format!("{}{next}{padding}", &trimmed[..trimmed.len() - 1]);
                    assert_eq!(
                        regex.is_match(&changed),
                        Secret::parse(&changed).is_ok(),
                        "{changed}"
                    );
                }
            }
        }
    }

    #[test]
    fn debug_hides_the_key() {
        let secret = Secret::from_bytes(vec![0xab; 32]);
        assert_eq!(format!("{secret:?}"), "Secret([redacted])");
    }
}
