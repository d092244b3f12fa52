//! Second-factor secrets at rest, and keyed hashes.
//!
//! A TOTP secret has to be read back to check a code, so unlike a password it cannot be stored
//! hashed; it is sealed instead, with XChaCha20-Poly1305 (random 192-bit nonces, so no nonce
//! bookkeeping) under a key the database does not hold. A copy of the database alone then gives
//! no one a second factor.
//!
//! Recovery codes need only be recognised, so they are stored as keyed hashes under a key
//! derived from the same one: fifty bits are too few to survive an offline search of a plain
//! hash, but not one without the key.

use base64::Engine as _;
use base64::alphabet;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// The version prefix of sealed values, so that another scheme can be told apart later.
const VERSION: &str = "v1";
const NONCE_BYTES: usize = 24;
const TAG_BYTES: usize = 16;
/// What [`SealKey::derive`] takes from SECRET_KEY (distinct from the labels in
/// `crate::auth::tokens`, so no two uses share a key).
const DERIVE_LABEL: &[u8] = b"auth-server second factor sealing key";
/// Hashed with the key into its id; fixed, so the id names the key without revealing it.
const KID_LABEL: &[u8] = b"auth-server sealing key id";
/// Prefixed to the purpose of a [`SealKey::keyed_hash`] to derive its key.
const HASH_LABEL: &[u8] = b"auth-server keyed hash: ";

const PARSE_ERROR: &str = "must be 32 bytes, base64-encoded (e.g. `openssl rand -base64 32`)";

/// Base64 with or without padding, in each alphabet: the setting is pasted from whatever tool
/// made it.
const INDIFFERENT: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
const STANDARD_ANY: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, INDIFFERENT);
const URL_SAFE_ANY: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, INDIFFERENT);

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The value names another key: the key was changed (or the value comes from another
    /// deployment), which the operator has to hear about as such, not as corruption.
    #[error("sealed under another key")]
    WrongKey,
    #[error("the sealed value is corrupt or was tampered with")]
    Corrupt,
}

/// The key that seals second-factor secrets (XChaCha20-Poly1305) and keys recovery-code hashes.
#[derive(Clone)]
pub struct SealKey {
    key: [u8; 32],
    /// The first 8 hex digits of SHA-256(KID_LABEL || key), written into every sealed value.
    kid: String,
}

/// The key id only: the key must not reach a log.
impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

impl SealKey {
    /// From 32 raw bytes.
    pub fn new(key: [u8; 32]) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(KID_LABEL);
        hasher.update(key);
        let digest = hasher.finalize();
        let kid = data_encoding::HEXLOWER.encode(&digest[..4]);
        Self { key, kid }
    }

    /// Derived from SECRET_KEY, for when MFA_ENCRYPTION_KEY is not set:
    /// HMAC-SHA256(secret, "auth-server second factor sealing key"). Changing SECRET_KEY then
    /// changes this key too, and the sealed secrets no longer open ([`SealError::WrongKey`]).
    pub fn derive(secret: &[u8]) -> Self {
        Self::new(hmac_sha256(secret, &[DERIVE_LABEL]))
    }

    /// Parses the MFA_ENCRYPTION_KEY setting: base64, standard or URL-safe, padded or not, of
    /// exactly 32 bytes (surrounding whitespace is ignored). The message of the error does not
    /// repeat the value, which may be a real key with a typo.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let bytes = STANDARD_ANY
            .decode(text)
            .or_else(|_| URL_SAFE_ANY.decode(text))
            .map_err(|_| PARSE_ERROR.to_string())?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| PARSE_ERROR.to_string())?;
        Ok(Self::new(key))
    }

    /// The key's id, as written into sealed values: 8 hex digits.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&Key::from(self.key))
    }

    /// Encrypts `plaintext` with a fresh random nonce, authenticating `associated` with it (the
    /// user id: a sealed secret copied onto another account does not open there).
    ///
    /// The result is `v1.{kid}.{base64url(nonce || ciphertext || tag)}`, unpadded; the key id
    /// lets [`open`](Self::open) tell a value sealed under another key from a corrupt one.
    pub fn seal(&self, plaintext: &[u8], associated: &[u8]) -> String {
        let mut nonce = [0u8; NONCE_BYTES];
        getrandom::fill(&mut nonce).expect("the OS random number generator works");
        let payload = Payload {
            msg: plaintext,
            aad: associated,
        };
        let ciphertext = self
            .cipher()
            .encrypt(&XNonce::from(nonce), payload)
            .expect("encryption fails only past 256 GiB of plaintext");
        let mut body = Vec::with_capacity(NONCE_BYTES + ciphertext.len());
        body.extend_from_slice(&nonce);
        body.extend_from_slice(&ciphertext);
        format!("{VERSION}.{}.{}", self.kid, URL_SAFE_NO_PAD.encode(body))
    }

    /// Decrypts what [`seal`](Self::seal) made with the same `associated` data.
    /// [`SealError::WrongKey`] when the value names another key; [`SealError::Corrupt`] for
    /// anything else: a bad format, base64 or length, or a failed authentication (a changed
    /// byte, or other associated data).
    pub fn open(&self, sealed: &str, associated: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut fields = sealed.split('.');
        let (Some(version), Some(kid), Some(body), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(SealError::Corrupt);
        };
        if version != VERSION {
            return Err(SealError::Corrupt);
        }
        if kid != self.kid {
            // A kid of the wrong shape is damage, not another key.
            let well_formed = kid.len() == self.kid.len()
                && kid.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
            return Err(if well_formed {
                SealError::WrongKey
            } else {
                SealError::Corrupt
            });
        }
        let body = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| SealError::Corrupt)?;
        if body.len() < NONCE_BYTES + TAG_BYTES {
            return Err(SealError::Corrupt);
        }
        let (nonce, ciphertext) = body.split_at(NONCE_BYTES);
        let nonce: [u8; NONCE_BYTES] = nonce.try_into().map_err(|_| SealError::Corrupt)?;
        let payload = Payload {
            msg: ciphertext,
            aad: associated,
        };
        self.cipher()
            .decrypt(&XNonce::from(nonce), payload)
            .map_err(|_| SealError::Corrupt)
    }

    /// A keyed hash, for values that need only be recognised, such as recovery codes: hex
    /// HMAC-SHA256 under a key derived from this one and `purpose` (so hashes made for one
    /// purpose never match another's), over `parts`, each prefixed with its length as 8 bytes
    /// big-endian (so ("ab", "c") and ("a", "bc") differ).
    pub fn keyed_hash(&self, purpose: &str, parts: &[&[u8]]) -> String {
        let key = hmac_sha256(&self.key, &[HASH_LABEL, purpose.as_bytes()]);
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&key).expect("HMAC takes any key length");
        for part in parts {
            let length = u64::try_from(part.len()).expect("a slice's length fits in 64 bits");
            mac.update(&length.to_be_bytes());
            mac.update(part);
        }
        data_encoding::HEXLOWER.encode(&mac.finalize().into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE};

    fn key() -> SealKey {
        SealKey::new(std::array::from_fn(|i| i as u8))
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn sealed_values_open() {
        let k = key();
        let secret = crate::auth::totp::new_secret();
        let sealed = k.seal(&secret, b"user-1");
        assert_eq!(k.open(&sealed, b"user-1").unwrap(), secret);
        assert!(sealed.starts_with(&format!("v1.{}.", k.kid())), "{sealed}");
        assert_eq!(k.open(&k.seal(b"", b""), b"").unwrap(), b"");
    }

    #[test]
    fn sealed_values_hide_the_plaintext() {
        let k = key();
        let secret = b"a plaintext secret!!";
        let sealed = k.seal(secret, b"user-1");
        assert!(!contains(sealed.as_bytes(), secret));
        assert!(!sealed.contains(&crate::auth::totp::base32(secret)));
        assert!(!sealed.contains(&URL_SAFE_NO_PAD.encode(secret)));
        assert_ne!(sealed, k.seal(secret, b"user-1"));
    }

    #[test]
    fn other_associated_data_does_not_open() {
        let k = key();
        let sealed = k.seal(b"secret", b"user-1");
        assert_eq!(k.open(&sealed, b"user-2"), Err(SealError::Corrupt));
        assert_eq!(k.open(&sealed, b""), Err(SealError::Corrupt));
    }

    #[test]
    fn any_changed_byte_is_corruption() {
        let k = key();
        let sealed = k.seal(b"secret", b"user-1");
        let (prefix, body) = sealed.rsplit_once('.').unwrap();
        let body = URL_SAFE_NO_PAD.decode(body).unwrap();
        for i in 0..body.len() {
            let mut changed = body.clone();
            changed[i] ^= 0x01;
            let tampered = format!("{prefix}.{}", URL_SAFE_NO_PAD.encode(&changed));
            assert_eq!(k.open(&tampered, b"user-1"), Err(SealError::Corrupt), "{i}");
        }
        let short = format!("{prefix}.{}", URL_SAFE_NO_PAD.encode(&body[..39]));
        assert_eq!(k.open(&short, b"user-1"), Err(SealError::Corrupt));
        let kid = k.kid();
        for bad in [
            String::new(),
            "v1".into(),
            format!("v1.{kid}"),
            format!("v2.{kid}.{}", URL_SAFE_NO_PAD.encode(&body)),
            format!("v1.{kid}.{}", STANDARD.encode(&body)),
            format!("v1.{kid}.!!!!"),
            format!("{sealed}.x"),
            format!("v1.XYZ.{}", URL_SAFE_NO_PAD.encode(&body)),
        ] {
            assert_eq!(k.open(&bad, b"user-1"), Err(SealError::Corrupt), "{bad:?}");
        }
    }

    #[test]
    fn another_key_is_told_apart() {
        let sealed = key().seal(b"secret", b"user-1");
        let other = SealKey::new([7; 32]);
        assert_ne!(other.kid(), key().kid());
        assert_eq!(other.open(&sealed, b"user-1"), Err(SealError::WrongKey));
    }

    #[test]
    fn settings_parse_as_base64_of_32_bytes() {
        let bytes: [u8; 32] = std::array::from_fn(|i| 0xf0 | i as u8);
        let kid = SealKey::new(bytes).kid().to_string();
        for engine in [STANDARD, URL_SAFE, URL_SAFE_NO_PAD] {
            let text = engine.encode(bytes);
            assert_eq!(SealKey::parse(&text).unwrap().kid(), kid, "{text}");
            assert_eq!(SealKey::parse(&format!(" {text}\n")).unwrap().kid(), kid);
        }
        let unpadded = STANDARD.encode(bytes).trim_end_matches('=').to_string();
        assert_eq!(SealKey::parse(&unpadded).unwrap().kid(), kid);
        for bad in [
            STANDARD.encode([1u8; 31]),
            STANDARD.encode([1u8; 33]),
            URL_SAFE_NO_PAD.encode([1u8; 31]),
            "not base64 at all, no way".into(),
            String::new(),
            "k".repeat(32),
        ] {
            let error = SealKey::parse(&bad).unwrap_err();
            assert!(error.contains("32 bytes"), "{error}");
        }
    }

    #[test]
    fn derived_keys_are_deterministic_per_secret() {
        let a = SealKey::derive(b"secret one, long enough to be a key");
        let b = SealKey::derive(b"secret one, long enough to be a key");
        let c = SealKey::derive(b"secret two, long enough to be a key");
        assert_eq!(a.kid(), b.kid());
        assert_ne!(a.kid(), c.kid());
        let sealed = a.seal(b"x", b"u");
        assert_eq!(b.open(&sealed, b"u").unwrap(), b"x");
        assert_eq!(c.open(&sealed, b"u"), Err(SealError::WrongKey));
    }

    #[test]
    fn keyed_hashes_are_deterministic_and_unambiguous() {
        let k = key();
        let h = k.keyed_hash("recovery code", &[b"user-1", b"abcdefghjk"]);
        assert_eq!(h.len(), 64);
        assert!(
            h.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_eq!(
            h,
            k.keyed_hash("recovery code", &[b"user-1", b"abcdefghjk"])
        );
        assert_ne!(h, k.keyed_hash("other", &[b"user-1", b"abcdefghjk"]));
        assert_ne!(
            h,
            SealKey::new([7; 32]).keyed_hash("recovery code", &[b"user-1", b"abcdefghjk"])
        );
        assert_ne!(
            k.keyed_hash("p", &[b"ab", b"c"]),
            k.keyed_hash("p", &[b"a", b"bc"])
        );
        assert_ne!(
            k.keyed_hash("p", &[b"abc"]),
            k.keyed_hash("p", &[b"ab", b"c"])
        );
        assert_ne!(k.keyed_hash("p", &[]), k.keyed_hash("p", &[b""]));
    }

    #[test]
    fn debug_does_not_show_the_key() {
        let bytes: [u8; 32] = std::array::from_fn(|i| 0xa0 + i as u8);
        let k = SealKey::new(bytes);
        let debug = format!("{k:?}");
        assert!(debug.contains(k.kid()), "{debug}");
        assert!(!debug.contains("160"), "{debug}");
        assert!(
            !debug.contains(&data_encoding::HEXLOWER.encode(&bytes[..4])),
            "{debug}"
        );
        assert!(!debug.contains(&STANDARD.encode(bytes)[..8]), "{debug}");
        assert!(
            !debug.contains(&URL_SAFE_NO_PAD.encode(bytes)[..8]),
            "{debug}"
        );
    }
}
