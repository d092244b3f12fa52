//! The tokens that the pages' forms carry against cross-site request forgery: an HMAC-SHA256,
//! under a key derived from SECRET_KEY, of what the form is bound to (the browser's session, or
//! the random value of its pre-session cookie). A form made for one binding is refused for any
//! other, and none can be made without the key. Pure functions: nothing here knows HTTP.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::auth::tokens::derive_key;

pub struct CsrfKey(Vec<u8>);

impl std::fmt::Debug for CsrfKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CsrfKey")
    }
}

impl CsrfKey {
    /// The key, derived from SECRET_KEY (so every instance makes and accepts the same tokens).
    pub fn derive(secret_key: &[u8]) -> Self {
        Self(derive_key(secret_key, "auth-server form token key"))
    }

    fn mac(&self, binding: &str) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(binding.as_bytes());
        mac
    }

    /// The token of forms bound to `binding`: base64url, 43 characters.
    pub fn token(&self, binding: &str) -> String {
        URL_SAFE_NO_PAD.encode(self.mac(binding).finalize().into_bytes())
    }

    /// Whether `token` is the token of `binding`, compared in constant time.
    pub fn verify(&self, binding: &str, token: &str) -> bool {
        match URL_SAFE_NO_PAD.decode(token.as_bytes()) {
            Ok(bytes) => self.mac(binding).verify_slice(&bytes).is_ok(),
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_fits_only_its_binding_and_its_key() {
        let key = CsrfKey::derive(b"a secret key of at least thirty-two bytes");
        let token = key.token("session:abc");
        assert_eq!(token.len(), 43);
        assert!(key.verify("session:abc", &token));
        assert!(!key.verify("session:abd", &token));
        assert!(!key.verify("anonymous:abc", &token));
        assert!(!key.verify("session:abc", ""));
        assert!(!key.verify("session:abc", "not base64!"));
        assert!(!key.verify("session:abc", &token[..42]));
        let other = CsrfKey::derive(b"another secret key of thirty-two bytes!!");
        assert!(!other.verify("session:abc", &token));
        assert_eq!(key.token("session:abc"), token, "deterministic");
    }
}
