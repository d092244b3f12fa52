//! Password hashing with argon2id, off the async workers and with bounded concurrency: at most
//! `concurrency` hashes run at once and at most `queue_limit` more wait; beyond that callers are
//! turned away at once (`Error::Busy`), so a login storm can neither stall the request workers
//! nor pile up memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use argon2::password_hash::phc::PasswordHash;
use argon2::{Algorithm, Argon2, Params, PasswordHasher as _, PasswordVerifier as _, Version};
use tokio::sync::Semaphore;

use crate::config::Argon2Config;
use crate::domain::Password;
use crate::error::{Error, Result};

/// The outcome of checking a password against a stored hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verification {
    pub matches: bool,
    /// The stored hash was made with other parameters (or another algorithm) than the
    /// configured ones and should be replaced.
    pub needs_rehash: bool,
}

pub struct PasswordHasher {
    params: Params,
    slots: Arc<Semaphore>,
    admitted: AtomicUsize,
    admit_limit: usize,
    /// Verified in place of a missing account's hash, so that an unknown email costs the same.
    dummy_hash: String,
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasher")
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

impl PasswordHasher {
    /// Builds the hasher; computes the dummy hash once (one hash's time at start).
    pub fn new(config: &Argon2Config, concurrency: usize, queue_limit: usize) -> Result<Self> {
        let params = Params::new(
            config.memory_kib,
            config.iterations,
            config.parallelism,
            None,
        )
        .map_err(Error::internal)?;
        let dummy_hash = hash_with(&params, "dummy password for unknown accounts")?;
        Ok(Self {
            params,
            slots: Arc::new(Semaphore::new(concurrency)),
            admitted: AtomicUsize::new(0),
            admit_limit: concurrency + queue_limit,
            dummy_hash,
        })
    }

    /// Hashes a new password (PHC string, argon2id with the configured parameters).
    pub async fn hash(&self, password: &Password) -> Result<String> {
        let params = self.params.clone();
        let password = password.clone();
        self.run(move || hash_with(&params, password.expose()))
            .await?
    }

    /// Checks `password` against `stored`, or against the dummy hash when there is no account
    /// (the answer is then always "no match", after the same work).
    pub async fn verify(&self, password: &Password, stored: Option<&str>) -> Result<Verification> {
        let params = self.params.clone();
        let password = password.clone();
        let (hash, real) = match stored {
            Some(h) => (h.to_string(), true),
            None => (self.dummy_hash.clone(), false),
        };
        self.run(move || {
            let verification = verify_with(&params, password.expose(), &hash);
            Verification {
                matches: verification.matches && real,
                needs_rehash: verification.needs_rehash,
            }
        })
        .await
    }

    async fn run<T: Send + 'static>(&self, job: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        struct Admission<'a>(&'a AtomicUsize);
        impl Drop for Admission<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::AcqRel);
            }
        }
        if self.admitted.fetch_add(1, Ordering::AcqRel) >= self.admit_limit {
            self.admitted.fetch_sub(1, Ordering::AcqRel);
            return Err(Error::Busy);
        }
        let _admission = Admission(&self.admitted);
        let permit = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(Error::internal)?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            job()
        })
        .await
        .map_err(Error::internal)
    }
}

fn hash_with(params: &Params, password: &str) -> Result<String> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| Error::internal(format!("argon2: {e}")))
}

fn verify_with(params: &Params, password: &str, stored: &str) -> Verification {
    let Ok(parsed) = PasswordHash::new(stored) else {
        tracing::warn!("a stored password hash is not a PHC string; the password cannot match");
        return Verification {
            matches: false,
            needs_rehash: false,
        };
    };
    let matches = Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok();
    let current = parsed.algorithm.as_str() == "argon2id"
        && parsed.version == Some(Version::V0x13.into())
        && Params::try_from(&parsed).is_ok_and(|p| {
            p.m_cost() >= params.m_cost()
                && p.t_cost() >= params.t_cost()
                && p.p_cost() == params.p_cost()
        });
    Verification {
        matches,
        needs_rehash: !current,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> Argon2Config {
        Argon2Config {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        }
    }

    #[tokio::test]
    async fn hashes_verify_and_report_old_parameters() {
        let hasher = PasswordHasher::new(&cheap(), 2, 8).unwrap();
        let pw = Password::given("correct horse battery staple".into());
        let hash = hasher.hash(&pw).await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=64,t=1,p=1$"));
        let v = hasher.verify(&pw, Some(&hash)).await.unwrap();
        assert!(v.matches && !v.needs_rehash);
        let wrong = hasher
            .verify(&Password::given("wrong".into()), Some(&hash))
            .await
            .unwrap();
        assert!(!wrong.matches);

        let stronger = PasswordHasher::new(
            &Argon2Config {
                memory_kib: 128,
                ..cheap()
            },
            1,
            1,
        )
        .unwrap();
        let v = stronger.verify(&pw, Some(&hash)).await.unwrap();
        assert!(v.matches && v.needs_rehash);
    }

    #[tokio::test]
    async fn unknown_accounts_never_match() {
        let hasher = PasswordHasher::new(&cheap(), 1, 1).unwrap();
        let v = hasher
            .verify(
                &Password::given("dummy password for unknown accounts".into()),
                None,
            )
            .await
            .unwrap();
        assert!(!v.matches);
    }
}
