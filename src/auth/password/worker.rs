//! A hashing thread: takes jobs from the pool's queue, first come first served, and computes
//! them in the one argon2 memory buffer it keeps.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use argon2::password_hash::phc::PasswordHash;
use argon2::{Algorithm, Argon2, Block, Params, Version};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;

use super::{Job, NO_MATCH, Shared, Verification, Verified};
use crate::error::{Error, Result};

/// One hashing thread's state: the configured parameters and the memory it reuses.
pub(super) struct Worker {
    params: Params,
    memory: Vec<Block>,
    dummy_hash: Arc<str>,
}

const OUTPUT_LEN: usize = 32;
const SALT_LEN: usize = 16;

impl Worker {
    pub(super) fn new(params: Params, dummy_hash: Arc<str>) -> Self {
        let memory = vec![Block::default(); params.block_count()];
        Self {
            params,
            memory,
            dummy_hash,
        }
    }

    pub(super) fn run(mut self, shared: Arc<Shared>) {
        loop {
            let job = {
                let mut queue = shared.lock();
                loop {
                    if queue.stopped {
                        return;
                    }
                    if let Some((queued, job)) = queue.jobs.pop_front() {
                        shared.running.fetch_add(1, Ordering::Relaxed);
                        break (queued, job);
                    }
                    queue = shared.ready.wait(queue).unwrap_or_else(|e| e.into_inner());
                }
            };
            let (queued, job) = job;
            if job.abandoned() {
                shared.abandoned.fetch_add(1, Ordering::Relaxed);
                shared.running.fetch_sub(1, Ordering::Relaxed);
                continue;
            }
            let started = Instant::now();
            if let Some(hook) = shared.on_wait.get() {
                hook(started.saturating_duration_since(queued));
            }
            match job {
                Job::Hash { password, reply } => {
                    let hash = self.hash(password.expose());
                    shared.record(started.elapsed());
                    let _ = reply.send(hash);
                }
                Job::Verify {
                    password,
                    stored,
                    real,
                    reply,
                } => {
                    let (v, argon2_part) = self.verify(password.expose(), &stored);
                    let took = started.elapsed();
                    shared.record(took);
                    let _ = reply.send(Verified {
                        verification: Verification {
                            matches: v.matches && real,
                            needs_rehash: v.needs_rehash,
                        },
                        took,
                        argon2_part: argon2_part.unwrap_or(took),
                    });
                }
            }
        }
    }

    /// A PHC string: `$argon2id$v=19$m=…,t=…,p=…$salt$hash`.
    pub(super) fn hash(&mut self, password: &str) -> Result<String> {
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

    /// Verifies against a hash already checked by [`check_stored_hash`]; for a bcrypt hash, also
    /// says how long its argon2 part took (the yardstick the answer is padded by, see
    /// `PasswordHasher::equalise_with_bcrypt`).
    fn verify(&mut self, password: &str, stored: &str) -> (Verification, Option<Duration>) {
        // bcrypt, as passlib wrote it for the original service: verified, then replaced. The
        // dummy argon2 verification after it makes the login cost what any other login costs
        // (an unknown email's included), so an imported account is never cheaper than the rest;
        // what its own bcrypt cost adds is hidden by padding every answer (see the README).
        if ["$2a$", "$2b$", "$2y$"]
            .iter()
            .any(|p| stored.starts_with(p))
        {
            let matches = bcrypt::verify(password, stored).unwrap_or(false);
            let dummy = self.dummy_hash.clone();
            let started = Instant::now();
            let _ = self.verify_argon2(password, &dummy);
            let verification = Verification {
                matches,
                needs_rehash: true,
            };
            return (verification, Some(started.elapsed()));
        }
        (self.verify_argon2(password, stored), None)
    }

    fn verify_argon2(&mut self, password: &str, stored: &str) -> Verification {
        let Ok(parsed) = PasswordHash::new(stored) else {
            return NO_MATCH;
        };
        let (Ok(algorithm), Ok(params), Some(salt), Some(expected)) = (
            Algorithm::new(parsed.algorithm.as_str()),
            Params::try_from(&parsed),
            parsed.salt,
            parsed.hash,
        ) else {
            return NO_MATCH;
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
            // A hash made with more memory than configured (within the limits): this once,
            // more memory.
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

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Sets the calling thread's nice value (Linux: per thread), if above 0. A failure is logged
/// and the thread runs at the normal priority.
pub(super) fn set_nice(nice: i32) {
    if nice <= 0 {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid has no preconditions; setpriority only reads its arguments.
        let done = unsafe {
            let tid = libc::gettid();
            libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice)
        };
        if done != 0 {
            tracing::warn!(
                nice,
                error = %std::io::Error::last_os_error(),
                "cannot lower the hashing thread's priority"
            );
        }
    }
}
