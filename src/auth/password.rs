//! Password hashing with argon2id on a pool of its own: `concurrency` OS threads, each holding
//! one argon2 memory buffer that it reuses for every hash, fed by a queue of at most
//! `queue_limit` jobs. A full queue turns callers away at once (`Error::Busy`), so a login storm
//! can neither stall the async request workers nor pile up memory: the pool's memory is
//! `concurrency` × ARGON2_MEMORY_KIB, whatever the load.

use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};

use argon2::password_hash::phc::PasswordHash;
use argon2::{Algorithm, Argon2, Block, Params, Version};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use tokio::sync::oneshot;

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

enum Job {
    Hash {
        password: Password,
        reply: oneshot::Sender<Result<String>>,
    },
    Verify {
        password: Password,
        stored: String,
        real: bool,
        reply: oneshot::Sender<Verification>,
    },
}

pub struct PasswordHasher {
    queue: SyncSender<Job>,
    /// Verified in place of a missing account's hash, so that an unknown email costs the same.
    dummy_hash: String,
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasher").finish_non_exhaustive()
    }
}

/// One hashing thread's state: the configured parameters and the memory it reuses.
struct Worker {
    params: Params,
    memory: Vec<Block>,
}

const OUTPUT_LEN: usize = 32;
const SALT_LEN: usize = 16;

impl Worker {
    fn new(params: Params) -> Self {
        let memory = vec![Block::default(); params.block_count()];
        Self { params, memory }
    }

    fn run(mut self, jobs: Arc<Mutex<Receiver<Job>>>) {
        lower_priority();
        loop {
            // The lock is held only while waiting for the next job.
            let job = match jobs.lock().unwrap_or_else(|e| e.into_inner()).recv() {
                Ok(job) => job,
                Err(_) => return,
            };
            match job {
                Job::Hash { password, reply } => {
                    let _ = reply.send(self.hash(password.expose()));
                }
                Job::Verify {
                    password,
                    stored,
                    real,
                    reply,
                } => {
                    let v = self.verify(password.expose(), &stored);
                    let _ = reply.send(Verification {
                        matches: v.matches && real,
                        needs_rehash: v.needs_rehash,
                    });
                }
            }
        }
    }

    /// A PHC string: `$argon2id$v=19$m=…,t=…,p=…$salt$hash`.
    fn hash(&mut self, password: &str) -> Result<String> {
        let mut salt = [0u8; SALT_LEN];
        getrandom::fill(&mut salt).map_err(|e| Error::internal(format!("OS random: {e}")))?;
        let mut out = [0u8; OUTPUT_LEN];
        Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone())
            .hash_password_into_with_memory(password.as_bytes(), &salt, &mut out, &mut self.memory)
            .map_err(|e| Error::internal(format!("argon2: {e}")))?;
        Ok(format!(
            "$argon2id$v=19$m={},t={},p={}${}${}",
            self.params.m_cost(),
            self.params.t_cost(),
            self.params.p_cost(),
            STANDARD_NO_PAD.encode(salt),
            STANDARD_NO_PAD.encode(out)
        ))
    }

    fn verify(&mut self, password: &str, stored: &str) -> Verification {
        // bcrypt, as passlib wrote it for the original service: verified, then replaced.
        if ["$2a$", "$2b$", "$2y$"]
            .iter()
            .any(|p| stored.starts_with(p))
        {
            return Verification {
                matches: bcrypt::verify(password, stored).unwrap_or(false),
                needs_rehash: true,
            };
        }
        let no = Verification {
            matches: false,
            needs_rehash: false,
        };
        let Ok(parsed) = PasswordHash::new(stored) else {
            tracing::warn!("a stored password hash is not a PHC string; the password cannot match");
            return no;
        };
        let (Ok(algorithm), Ok(params), Some(salt), Some(expected)) = (
            Algorithm::new(parsed.algorithm.as_str()),
            Params::try_from(&parsed),
            parsed.salt,
            parsed.hash,
        ) else {
            tracing::warn!(
                "a stored password hash is not an argon2 hash; the password cannot match"
            );
            return no;
        };
        let version = parsed
            .version
            .and_then(|v| Version::try_from(v).ok())
            .unwrap_or(Version::V0x13);
        let expected = expected.as_bytes();
        let mut out = vec![0u8; expected.len()];
        let argon2 = Argon2::new(algorithm, version, params.clone());
        let computed = if params.block_count() <= self.memory.len() {
            argon2.hash_password_into_with_memory(
                password.as_bytes(),
                &salt,
                &mut out,
                &mut self.memory[..params.block_count()],
            )
        } else {
            // A hash made with more memory than configured: this once, more memory.
            argon2.hash_password_into(password.as_bytes(), &salt, &mut out)
        };
        let matches = computed.is_ok() && constant_time_eq(&out, expected);
        let current = algorithm == Algorithm::Argon2id
            && version == Version::V0x13
            && params.m_cost() >= self.params.m_cost()
            && params.t_cost() >= self.params.t_cost()
            && params.p_cost() == self.params.p_cost();
        Verification {
            matches,
            needs_rehash: !current,
        }
    }
}

/// Hashing yields to the request workers when both want a core: hashes take a little longer
/// under load, and everything else (GET /me, /health) keeps its latency.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority on this thread's own id (Linux gives each thread its own nice value);
    // failure only leaves the priority as it was.
    unsafe {
        let param = libc::sched_param { sched_priority: 0 };
        libc::sched_setscheduler(0, libc::SCHED_IDLE, &param);
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl PasswordHasher {
    /// Starts the hashing threads; computes the dummy hash once (one hash's time at start).
    pub fn new(config: &Argon2Config, concurrency: usize, queue_limit: usize) -> Result<Self> {
        let params = Params::new(
            config.memory_kib,
            config.iterations,
            config.parallelism,
            None,
        )
        .map_err(Error::internal)?;
        let dummy_hash = Worker::new(params.clone()).hash("dummy password for unknown accounts")?;
        let (queue, jobs) = sync_channel(queue_limit);
        let jobs = Arc::new(Mutex::new(jobs));
        for i in 0..concurrency.max(1) {
            let worker = Worker::new(params.clone());
            let jobs = jobs.clone();
            std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || worker.run(jobs))
                .map_err(Error::internal)?;
        }
        Ok(Self { queue, dummy_hash })
    }

    /// Hashes a new password (PHC string, argon2id with the configured parameters).
    pub async fn hash(&self, password: &Password) -> Result<String> {
        let (reply, answer) = oneshot::channel();
        self.submit(Job::Hash {
            password: password.clone(),
            reply,
        })?;
        answer.await.map_err(Error::internal)?
    }

    /// Checks `password` against `stored`, or against the dummy hash when there is no account
    /// (the answer is then always "no match", after the same work).
    pub async fn verify(&self, password: &Password, stored: Option<&str>) -> Result<Verification> {
        let (reply, answer) = oneshot::channel();
        self.submit(Job::Verify {
            password: password.clone(),
            stored: stored.unwrap_or(&self.dummy_hash).to_string(),
            real: stored.is_some(),
            reply,
        })?;
        answer.await.map_err(Error::internal)
    }

    fn submit(&self, job: Job) -> Result<()> {
        self.queue.try_send(job).map_err(|e| match e {
            TrySendError::Full(_) => Error::Busy,
            TrySendError::Disconnected(_) => Error::internal("the hashing threads have stopped"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::PasswordHasher as _;

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
        // The argon2 crate reads it as a standard PHC string and verifies it.
        let parsed = PasswordHash::new(&hash).unwrap();
        assert!(
            argon2::PasswordVerifier::verify_password(
                &Argon2::default(),
                pw.expose().as_bytes(),
                &parsed
            )
            .is_ok()
        );
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
    async fn hashes_made_elsewhere_verify() {
        let hasher = PasswordHasher::new(&cheap(), 1, 4).unwrap();
        let pw = Password::given("made by another program".into());
        // More memory than the pool's buffer, and argon2i.
        let big = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(256, 2, 1, None).unwrap(),
        )
        .hash_password(pw.expose().as_bytes())
        .unwrap()
        .to_string();
        let v = hasher.verify(&pw, Some(&big)).await.unwrap();
        assert!(v.matches && !v.needs_rehash);
        let argon2i = Argon2::new(
            Algorithm::Argon2i,
            Version::V0x13,
            Params::new(64, 1, 1, None).unwrap(),
        )
        .hash_password(pw.expose().as_bytes())
        .unwrap()
        .to_string();
        let v = hasher.verify(&pw, Some(&argon2i)).await.unwrap();
        assert!(v.matches && v.needs_rehash);
        let v = hasher.verify(&pw, Some("not a hash")).await.unwrap();
        assert!(!v.matches);
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

    #[tokio::test]
    async fn a_full_queue_turns_callers_away() {
        let hasher = Arc::new(
            PasswordHasher::new(
                &Argon2Config {
                    memory_kib: 8192,
                    iterations: 3,
                    parallelism: 1,
                },
                1,
                2,
            )
            .unwrap(),
        );
        let pw = Password::given("x".repeat(10));
        let jobs: Vec<_> = (0..20)
            .map(|_| {
                let (h, pw) = (hasher.clone(), pw.clone());
                tokio::spawn(async move { h.hash(&pw).await })
            })
            .collect();
        let mut busy = 0;
        for j in jobs {
            if matches!(j.await.unwrap(), Err(Error::Busy)) {
                busy += 1;
            }
        }
        assert!(busy > 0);
    }
}
