//! Password hashing with argon2id on a pool of its own: `concurrency` OS threads, each holding
//! one argon2 memory buffer that it reuses for every hash, fed first come, first served from one
//! queue.
//!
//! **Admission by expected wait.** The pool keeps a moving average of how long a job takes
//! (measured, so it follows the machine's load). A new job would wait about
//! `jobs queued × mean job time / concurrency`; when that is longer than `max_wait`
//! (HASH_MAX_WAIT_MILLISECONDS) the caller is turned away at once (`Error::Busy`, whose
//! Retry-After is that wait), and otherwise it is queued. So a burst the pool can finish within
//! `max_wait` is served whole, however many requests it has, and a flood is shed without delaying
//! anyone. `queue_limit` (HASH_QUEUE_LIMIT) only bounds memory. The pool's argon2 memory is
//! `concurrency` × ARGON2_MEMORY_KIB, whatever the load.
//!
//! **Abandoned jobs are not computed.** A job carries its reply channel; when the request that
//! made it has gone (the client disconnected, the request timed out), the channel is closed and
//! the worker drops the job instead of hashing for nobody.
//!
//! **Priority.** The threads run at the normal priority: the kernel shares the cores fairly
//! between them and the request workers, so neither logins nor other requests can starve.
//!
//! **Hashes from elsewhere** (imported, or written into the database by someone else) are
//! checked against sane bounds before anything is computed: see [`HashLimits`].

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

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

const NO_MATCH: Verification = Verification {
    matches: false,
    needs_rehash: false,
};

/// The most a stored hash may cost to verify. A hash beyond them (a planted row, a bad import)
/// is never computed: it could otherwise make each login attempt spend minutes or gigabytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HashLimits {
    /// argon2 `m`, in KiB (ARGON2_MAX_MEMORY_KIB, at least ARGON2_MEMORY_KIB).
    pub max_memory_kib: u32,
    /// argon2 `t`: 10, or ARGON2_ITERATIONS if higher.
    pub max_iterations: u32,
    /// argon2 `p`: 16, or ARGON2_PARALLELISM if higher.
    pub max_parallelism: u32,
    /// bcrypt's cost (2^cost rounds): 14, four times the original service's 12.
    pub max_bcrypt_cost: u32,
}

impl HashLimits {
    pub const MAX_ITERATIONS: u32 = 10;
    pub const MAX_PARALLELISM: u32 = 16;
    pub const MAX_BCRYPT_COST: u32 = 14;

    pub fn from_config(config: &Argon2Config) -> Self {
        Self {
            max_memory_kib: config.max_memory_kib.max(config.memory_kib),
            max_iterations: Self::MAX_ITERATIONS.max(config.iterations),
            max_parallelism: Self::MAX_PARALLELISM.max(config.parallelism),
            max_bcrypt_cost: Self::MAX_BCRYPT_COST,
        }
    }
}

/// What a stored hash is, once checked against [`HashLimits`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoredHash {
    /// passlib's bcrypt (`$2a$`, `$2b$`, `$2y$`) with its cost.
    Bcrypt { cost: u32 },
    /// A PHC argon2 string (argon2id, argon2i or argon2d).
    Argon2,
}

/// Checks a stored hash's form and cost, without computing anything; the error says why it
/// cannot be used (one line, without the hash).
pub fn check_stored_hash(
    stored: &str,
    limits: &HashLimits,
) -> std::result::Result<StoredHash, String> {
    if ["$2a$", "$2b$", "$2y$"]
        .iter()
        .any(|p| stored.starts_with(p))
    {
        let parts: bcrypt::HashParts = stored
            .parse()
            .map_err(|_| "the password hash is not a well-formed bcrypt hash".to_string())?;
        let cost = parts.get_cost();
        if cost > limits.max_bcrypt_cost {
            return Err(format!(
                "the bcrypt cost {cost} is over the limit of {}",
                limits.max_bcrypt_cost
            ));
        }
        return Ok(StoredHash::Bcrypt { cost });
    }
    let parsed = PasswordHash::new(stored)
        .map_err(|_| "the password hash is not bcrypt or argon2".to_string())?;
    let (Ok(_), Ok(params), Some(_), Some(_)) = (
        Algorithm::new(parsed.algorithm.as_str()),
        Params::try_from(&parsed),
        parsed.salt,
        parsed.hash,
    ) else {
        return Err("the password hash is not bcrypt or argon2".into());
    };
    if params.m_cost() > limits.max_memory_kib {
        return Err(format!(
            "the argon2 memory {} KiB is over the limit of {} KiB (ARGON2_MAX_MEMORY_KIB)",
            params.m_cost(),
            limits.max_memory_kib
        ));
    }
    if params.t_cost() > limits.max_iterations {
        return Err(format!(
            "the argon2 iterations {} are over the limit of {}",
            params.t_cost(),
            limits.max_iterations
        ));
    }
    if params.p_cost() > limits.max_parallelism {
        return Err(format!(
            "the argon2 parallelism {} is over the limit of {}",
            params.p_cost(),
            limits.max_parallelism
        ));
    }
    Ok(StoredHash::Argon2)
}

/// How the pool runs: HASH_CONCURRENCY, HASH_QUEUE_LIMIT, HASH_MAX_WAIT_MILLISECONDS.
#[derive(Clone, Copy, Debug)]
pub struct PoolConfig {
    pub concurrency: usize,
    /// A hard bound on the jobs waiting (memory), whatever their expected wait.
    pub queue_limit: usize,
    /// The longest expected wait at which a job is still accepted.
    pub max_wait: Duration,
}

/// What the pool has done so far (for tests and diagnostics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolStats {
    /// Jobs computed (hashes and verifications).
    pub computed: u64,
    /// Jobs dropped unstarted because their request had gone.
    pub abandoned: u64,
    /// Jobs waiting now.
    pub queued: usize,
    /// Jobs being computed now.
    pub running: usize,
    /// The moving average of a job's duration.
    pub mean: Duration,
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
        /// The answer, and how long computing it took.
        reply: oneshot::Sender<(Verification, Duration)>,
    },
}

impl Job {
    /// True when nobody waits for the answer any more.
    fn abandoned(&self) -> bool {
        match self {
            Job::Hash { reply, .. } => reply.is_closed(),
            Job::Verify { reply, .. } => reply.is_closed(),
        }
    }
}

struct Queue {
    jobs: VecDeque<Job>,
    stopped: bool,
}

/// What the hashing threads and the submitters share.
struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
    /// The moving average of a job's duration, in nanoseconds.
    mean_nanos: AtomicU64,
    computed: AtomicU64,
    abandoned: AtomicU64,
    running: AtomicUsize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Folds one job's duration into the moving average (weight 1/5: about the last ten jobs).
    fn record(&self, took: Duration) {
        let took = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let _ = self
            .mean_nanos
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |mean| {
                Some(mean - mean / 5 + took / 5)
            });
        self.computed.fetch_add(1, Ordering::Relaxed);
        self.running.fetch_sub(1, Ordering::Relaxed);
    }

    /// Removes the jobs whose requests have gone; returns how many.
    fn drop_abandoned(&self, queue: &mut Queue) -> usize {
        let before = queue.jobs.len();
        queue.jobs.retain(|job| !job.abandoned());
        let dropped = before - queue.jobs.len();
        self.abandoned.fetch_add(dropped as u64, Ordering::Relaxed);
        dropped
    }
}

pub struct PasswordHasher {
    shared: Arc<Shared>,
    pool: PoolConfig,
    limits: HashLimits,
    /// Verified in place of a missing account's hash, so that an unknown email costs the same.
    dummy_hash: Arc<str>,
    /// The least time a verification answers in, in nanoseconds (0: none): while accounts with
    /// bcrypt hashes remain, every verification is made to take as long as one of theirs (see
    /// [`PasswordHasher::equalise_with_bcrypt`]), so that timing cannot tell them apart.
    verify_floor_nanos: AtomicU64,
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
    dummy_hash: Arc<str>,
}

const OUTPUT_LEN: usize = 32;
const SALT_LEN: usize = 16;

impl Worker {
    fn new(params: Params, dummy_hash: Arc<str>) -> Self {
        let memory = vec![Block::default(); params.block_count()];
        Self {
            params,
            memory,
            dummy_hash,
        }
    }

    fn run(mut self, shared: Arc<Shared>) {
        loop {
            let job = {
                let mut queue = shared.lock();
                loop {
                    if queue.stopped {
                        return;
                    }
                    if let Some(job) = queue.jobs.pop_front() {
                        shared.running.fetch_add(1, Ordering::Relaxed);
                        break job;
                    }
                    queue = shared.ready.wait(queue).unwrap_or_else(|e| e.into_inner());
                }
            };
            if job.abandoned() {
                shared.abandoned.fetch_add(1, Ordering::Relaxed);
                shared.running.fetch_sub(1, Ordering::Relaxed);
                continue;
            }
            let started = Instant::now();
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
                    let v = self.verify(password.expose(), &stored);
                    let took = started.elapsed();
                    shared.record(took);
                    let _ = reply.send((
                        Verification {
                            matches: v.matches && real,
                            needs_rehash: v.needs_rehash,
                        },
                        took,
                    ));
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

    /// Verifies against a hash already checked by [`check_stored_hash`].
    fn verify(&mut self, password: &str, stored: &str) -> Verification {
        // bcrypt, as passlib wrote it for the original service: verified, then replaced. The
        // dummy argon2 verification after it makes the login cost what any other login costs
        // (an unknown email's included), so an imported account does not stand out by being
        // cheaper than the rest; its own bcrypt cost comes on top (see the README).
        if ["$2a$", "$2b$", "$2y$"]
            .iter()
            .any(|p| stored.starts_with(p))
        {
            let matches = bcrypt::verify(password, stored).unwrap_or(false);
            let dummy = self.dummy_hash.clone();
            let _ = self.verify_argon2(password, &dummy);
            return Verification {
                matches,
                needs_rehash: true,
            };
        }
        self.verify_argon2(password, stored)
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

/// A wait rounded up to whole seconds, at least one (for Retry-After).
fn whole_seconds(wait: Duration) -> Duration {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    Duration::from_secs(seconds.max(1))
}

impl PasswordHasher {
    /// Starts the hashing threads; computes the dummy hash once, and takes its time as the
    /// first estimate of a job's duration.
    pub fn new(config: &Argon2Config, pool: PoolConfig) -> Result<Self> {
        Self::with_threads(config, pool, pool.concurrency.max(1))
    }

    /// [`PasswordHasher::new`] with `threads` hashing threads (tests use none, to hold a queue).
    fn with_threads(config: &Argon2Config, pool: PoolConfig, threads: usize) -> Result<Self> {
        let params = Params::new(
            config.memory_kib,
            config.iterations,
            config.parallelism,
            None,
        )
        .map_err(Error::internal)?;
        let mut first = Worker::new(params.clone(), Arc::from(""));
        let started = Instant::now();
        let dummy_hash: Arc<str> = first.hash("dummy password for unknown accounts")?.into();
        let took = started.elapsed();
        drop(first);
        let pool = PoolConfig {
            concurrency: pool.concurrency.max(1),
            queue_limit: pool.queue_limit.max(1),
            ..pool
        };
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                jobs: VecDeque::new(),
                stopped: false,
            }),
            ready: Condvar::new(),
            mean_nanos: AtomicU64::new(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX)),
            computed: AtomicU64::new(0),
            abandoned: AtomicU64::new(0),
            running: AtomicUsize::new(0),
        });
        for i in 0..threads {
            let worker = Worker::new(params.clone(), dummy_hash.clone());
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || worker.run(shared))
                .map_err(Error::internal)?;
        }
        Ok(Self {
            shared,
            pool,
            limits: HashLimits::from_config(config),
            dummy_hash,
            verify_floor_nanos: AtomicU64::new(0),
        })
    }

    /// Makes every verification answer no sooner than a bcrypt verification at `cost` would
    /// (with the argon2 check that follows one), measured here once, with a margin: while
    /// accounts imported with bcrypt remain, wrong passwords for them, for argon2 accounts and
    /// for unknown addresses all take the same time. The wait is a timer, not computation: it
    /// holds no hashing thread. Costs beyond the limits are never computed, so never waited for.
    pub fn equalise_with_bcrypt(&self, cost: u32) {
        if cost > self.limits.max_bcrypt_cost {
            return;
        }
        let Ok(sample) = bcrypt::hash("timing sample", cost) else {
            return;
        };
        let started = Instant::now();
        let _ = bcrypt::verify("timing sample", &sample);
        let bcrypt = started.elapsed();
        let argon2 = Duration::from_nanos(self.shared.mean_nanos.load(Ordering::Relaxed));
        let floor = (bcrypt + argon2).mul_f64(1.25);
        self.verify_floor_nanos.fetch_max(
            u64::try_from(floor.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        tracing::info!(
            bcrypt_cost = cost,
            floor_ms = floor.as_millis() as u64,
            "accounts with bcrypt hashes remain: every password check takes at least this long, so \
             that timing does not tell them apart"
        );
    }

    fn verify_floor(&self) -> Duration {
        Duration::from_nanos(self.verify_floor_nanos.load(Ordering::Relaxed))
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
    /// (the answer is then always "no match", after the same work). A stored hash beyond the
    /// [`HashLimits`], or not a hash at all, is never computed: the answer is "no match", at once.
    pub async fn verify(&self, password: &Password, stored: Option<&str>) -> Result<Verification> {
        if let Some(stored) = stored
            && let Err(why) = check_stored_hash(stored, &self.limits)
        {
            tracing::warn!(
                reason = %why,
                "a stored password hash is refused without being computed; the password cannot match"
            );
            // As long as a computed answer would take (a timer, no computation).
            tokio::time::sleep(self.verify_floor().max(self.stats().mean)).await;
            return Ok(NO_MATCH);
        }
        let (reply, answer) = oneshot::channel();
        self.submit(Job::Verify {
            password: password.clone(),
            stored: stored.unwrap_or(&self.dummy_hash).to_string(),
            real: stored.is_some(),
            reply,
        })?;
        let (verification, took) = answer.await.map_err(Error::internal)?;
        if let Some(rest) = self.verify_floor().checked_sub(took) {
            tokio::time::sleep(rest).await;
        }
        Ok(verification)
    }

    /// The limits stored hashes are checked against.
    pub fn limits(&self) -> &HashLimits {
        &self.limits
    }

    pub fn stats(&self) -> PoolStats {
        // Under the lock, so that a job being taken is counted either queued or running.
        let queue = self.shared.lock();
        PoolStats {
            computed: self.shared.computed.load(Ordering::Relaxed),
            abandoned: self.shared.abandoned.load(Ordering::Relaxed),
            queued: queue.jobs.len(),
            running: self.shared.running.load(Ordering::Relaxed),
            mean: Duration::from_nanos(self.shared.mean_nanos.load(Ordering::Relaxed)),
        }
    }

    /// How long a job queued behind `ahead` others waits for a thread, by the moving average.
    fn expected_wait(&self, ahead: usize) -> Duration {
        let mean = self.shared.mean_nanos.load(Ordering::Relaxed);
        Duration::from_nanos(mean.saturating_mul(ahead as u64) / self.pool.concurrency as u64)
    }

    fn submit(&self, job: Job) -> Result<()> {
        let mut queue = self.shared.lock();
        if queue.stopped {
            return Err(Error::internal("the hashing threads have stopped"));
        }
        let over = |queue: &Queue| {
            let wait = self.expected_wait(queue.jobs.len());
            (wait > self.pool.max_wait || queue.jobs.len() >= self.pool.queue_limit).then_some(wait)
        };
        if over(&queue).is_some() {
            // Requests that have gone hold room they no longer need: look again without them.
            self.shared.drop_abandoned(&mut queue);
        }
        if let Some(wait) = over(&queue) {
            return Err(Error::Busy {
                retry_after: whole_seconds(wait),
            });
        }
        queue.jobs.push_back(job);
        drop(queue);
        self.shared.ready.notify_one();
        Ok(())
    }
}

impl Drop for PasswordHasher {
    fn drop(&mut self) {
        self.shared.lock().stopped = true;
        self.shared.ready.notify_all();
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
            max_memory_kib: 262_144,
        }
    }

    /// About 10 to 40 ms a hash: costly enough to queue behind.
    fn costly() -> Argon2Config {
        Argon2Config {
            memory_kib: 8192,
            iterations: 3,
            ..cheap()
        }
    }

    fn pool(concurrency: usize, queue_limit: usize, max_wait: Duration) -> PoolConfig {
        PoolConfig {
            concurrency,
            queue_limit,
            max_wait,
        }
    }

    fn roomy() -> PoolConfig {
        pool(2, 1024, Duration::from_secs(3600))
    }

    #[tokio::test]
    async fn hashes_verify_and_report_old_parameters() {
        let hasher = PasswordHasher::new(&cheap(), roomy()).unwrap();
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
            roomy(),
        )
        .unwrap();
        let v = stronger.verify(&pw, Some(&hash)).await.unwrap();
        assert!(v.matches && v.needs_rehash);
    }

    #[tokio::test]
    async fn hashes_made_elsewhere_verify() {
        let hasher = PasswordHasher::new(&cheap(), roomy()).unwrap();
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
        let bcrypt = bcrypt::hash(pw.expose(), 4).unwrap();
        let v = hasher.verify(&pw, Some(&bcrypt)).await.unwrap();
        assert!(v.matches && v.needs_rehash);
    }

    #[tokio::test]
    async fn unknown_accounts_never_match() {
        let hasher = PasswordHasher::new(&cheap(), roomy()).unwrap();
        let v = hasher
            .verify(
                &Password::given("dummy password for unknown accounts".into()),
                None,
            )
            .await
            .unwrap();
        assert!(!v.matches);
    }

    /// A PHC argon2id string with the given parameters (the hash itself is made up).
    fn planted_argon2(m: u32, t: u32, p: u32) -> String {
        format!(
            "$argon2id$v=19$m={m},t={t},p={p}${}${}",
            STANDARD_NO_PAD.encode([7u8; 16]),
            STANDARD_NO_PAD.encode([9u8; 32])
        )
    }

    #[test]
    fn stored_hashes_beyond_the_limits_are_refused() {
        let limits = HashLimits::from_config(&cheap());
        assert_eq!(
            check_stored_hash(&planted_argon2(19_456, 2, 1), &limits),
            Ok(StoredHash::Argon2)
        );
        assert_eq!(
            check_stored_hash(&planted_argon2(262_144, 10, 16), &limits),
            Ok(StoredHash::Argon2)
        );
        for (hash, what) in [
            (planted_argon2(262_145, 1, 1), "memory"),
            (planted_argon2(4 * 1024 * 1024, 1, 1), "memory"),
            (planted_argon2(65_536, 11, 1), "iterations"),
            (planted_argon2(65_536, 1_000_000, 1), "iterations"),
            (planted_argon2(65_536, 1, 17), "parallelism"),
        ] {
            let why = check_stored_hash(&hash, &limits).unwrap_err();
            assert!(why.contains(what), "{why}");
        }
        let cheap_bcrypt = bcrypt::hash("x", 4).unwrap();
        assert_eq!(
            check_stored_hash(&cheap_bcrypt, &limits),
            Ok(StoredHash::Bcrypt { cost: 4 })
        );
        let costly_bcrypt = cheap_bcrypt.replacen("$04$", "$15$", 1);
        let why = check_stored_hash(&costly_bcrypt, &limits).unwrap_err();
        assert!(why.contains("bcrypt cost 15"), "{why}");
        assert!(check_stored_hash(&cheap_bcrypt.replacen("$04$", "$31$", 1), &limits).is_err());
        assert!(check_stored_hash("$2b$12$short", &limits).is_err());
        assert!(check_stored_hash("stored-in-the-clear", &limits).is_err());
        // A configured cost above the built-in bounds raises them.
        let generous = HashLimits::from_config(&Argon2Config {
            iterations: 12,
            ..cheap()
        });
        assert!(check_stored_hash(&planted_argon2(65_536, 12, 1), &generous).is_ok());
    }

    #[tokio::test]
    async fn a_planted_costly_hash_is_never_computed() {
        let hasher = PasswordHasher::new(&cheap(), roomy()).unwrap();
        let pw = Password::given("anything at all".into());
        // 4 GiB and a million passes: minutes and gigabytes if it ran.
        for planted in [
            planted_argon2(4 * 1024 * 1024, 1_000_000, 1),
            bcrypt::hash("x", 4).unwrap().replacen("$04$", "$31$", 1),
        ] {
            let started = Instant::now();
            let v = hasher.verify(&pw, Some(&planted)).await.unwrap();
            assert_eq!(v, NO_MATCH);
            assert!(started.elapsed() < Duration::from_secs(1));
        }
        assert_eq!(hasher.stats().computed, 0);
    }

    #[tokio::test]
    async fn shedding_follows_the_expected_wait_not_a_queue_length() {
        // One thread; a budget of about ten hashes.
        let probe = PasswordHasher::new(&costly(), roomy()).unwrap();
        let mean = probe.stats().mean;
        drop(probe);
        let budget = mean * 10;
        let burst = |hasher: Arc<PasswordHasher>| async move {
            let pw = Password::given("x".repeat(10));
            let jobs: Vec<_> = (0..60)
                .map(|_| {
                    let (h, pw) = (hasher.clone(), pw.clone());
                    tokio::spawn(async move { h.verify(&pw, None).await })
                })
                .collect();
            let mut busy = Vec::new();
            for j in jobs {
                if let Err(Error::Busy { retry_after }) = j.await.unwrap() {
                    busy.push(retry_after);
                }
            }
            busy
        };
        let tight = Arc::new(PasswordHasher::new(&costly(), pool(1, 1024, budget)).unwrap());
        let busy = burst(tight.clone()).await;
        let admitted = 60 - busy.len();
        // About 11 (budget / mean + the one running); generous bounds for a noisy machine.
        assert!((3..=40).contains(&admitted), "admitted {admitted}");
        assert!(
            busy.iter()
                .all(|r| *r >= Duration::from_secs(1) && r.subsec_nanos() == 0)
        );
        assert_eq!(tight.stats().computed as usize, admitted);

        // The same burst with room for it: all of it, whatever the queue's length.
        let roomy = Arc::new(PasswordHasher::new(&costly(), roomy()).unwrap());
        assert!(burst(roomy).await.is_empty());
        // HASH_QUEUE_LIMIT still bounds memory.
        let bounded = Arc::new(
            PasswordHasher::new(&costly(), pool(1, 5, Duration::from_secs(3600))).unwrap(),
        );
        assert!(!burst(bounded).await.is_empty());
    }

    #[tokio::test]
    async fn retry_after_is_the_expected_wait_rounded_up() {
        assert_eq!(whole_seconds(Duration::ZERO), Duration::from_secs(1));
        assert_eq!(
            whole_seconds(Duration::from_millis(1001)),
            Duration::from_secs(2)
        );
        assert_eq!(
            whole_seconds(Duration::from_secs(3)),
            Duration::from_secs(3)
        );
        // No threads: the queue stays as filled. A job "takes" 700 ms; 5 ahead on 2 threads: 1.75 s.
        let hasher =
            PasswordHasher::with_threads(&cheap(), pool(2, 1024, Duration::from_secs(1)), 0)
                .unwrap();
        hasher
            .shared
            .mean_nanos
            .store(700_000_000, Ordering::Relaxed);
        let mut queue = hasher.shared.lock();
        let mut answers = Vec::new();
        for _ in 0..5 {
            let (reply, answer) = oneshot::channel();
            answers.push(answer);
            queue.jobs.push_back(Job::Hash {
                password: Password::given("x".into()),
                reply,
            });
        }
        drop(queue);
        assert_eq!(hasher.expected_wait(5), Duration::from_millis(1750));
        let (reply, _answer) = oneshot::channel();
        match hasher.submit(Job::Hash {
            password: Password::given("x".into()),
            reply,
        }) {
            Err(Error::Busy { retry_after }) => assert_eq!(retry_after, Duration::from_secs(2)),
            other => panic!("{:?}", other.err()),
        }
        // Once the requests behind the queued jobs have gone, their room is free again.
        drop(answers);
        let (reply, _answer) = oneshot::channel();
        assert!(
            hasher
                .submit(Job::Hash {
                    password: Password::given("x".into()),
                    reply,
                })
                .is_ok()
        );
        assert_eq!(hasher.stats().abandoned, 5);
    }

    #[tokio::test]
    async fn jobs_whose_requests_have_gone_are_not_computed() {
        let hasher = Arc::new(
            PasswordHasher::new(&costly(), pool(1, 1024, Duration::from_secs(3600))).unwrap(),
        );
        let pw = Password::given("x".repeat(10));
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let (h, pw) = (hasher.clone(), pw.clone());
                tokio::spawn(async move { h.verify(&pw, None).await })
            })
            .collect();
        // Once all are submitted, every request goes away.
        while hasher.stats().queued + (hasher.stats().computed as usize) < 19 {
            tokio::task::yield_now().await;
        }
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            let _ = t.await;
        }
        loop {
            let stats = hasher.stats();
            if stats.queued == 0 && stats.computed + stats.abandoned >= 20 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let stats = hasher.stats();
        assert!(stats.computed <= 4, "{stats:?}");
        assert!(stats.abandoned >= 16, "{stats:?}");
    }

    #[tokio::test]
    async fn a_bcrypt_verification_costs_at_least_an_argon2_one() {
        let hasher = PasswordHasher::new(&costly(), roomy()).unwrap();
        let pw = Password::given("the password".into());
        let argon2 = hasher.hash(&pw).await.unwrap();
        let bcrypt = bcrypt::hash(pw.expose(), 4).unwrap();
        let wrong = Password::given("not the password".into());
        // Alternately, so that the machine's noise falls on both alike; medians of five.
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for _ in 0..5 {
            for (stored, times) in [(&argon2, &mut a), (&bcrypt, &mut b)] {
                let started = Instant::now();
                hasher.verify(&wrong, Some(stored)).await.unwrap();
                times.push(started.elapsed());
            }
        }
        a.sort();
        b.sort();
        let (a, b) = (a[2], b[2]);
        // bcrypt at cost 4 alone takes about 1 ms; with the dummy argon2 it takes an argon2's time.
        assert!(b * 2 >= a, "bcrypt {b:?}, argon2 {a:?}");
    }
}
