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
//! **Priority.** The threads run at HASH_NICE (19 by default): the kernel gives the request
//! workers the cores first while hashes run, so a token check's latency barely moves during a
//! login storm (p99 within 2x of its p99 alone, measured; 6x at nice 0), and still gives the
//! hashes a share under any load, so logins slow under a flood but never starve, unlike idle
//! priority (`SCHED_IDLE`, tried before: a flood of cheap requests held logins for as long as it
//! lasted). HASH_NICE=0 shares the cores fairly.
//!
//! **Hashes from elsewhere** (imported, or written into the database by someone else) are
//! checked against sane bounds before anything is computed: see [`HashLimits`].

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use argon2::Params;
use tokio::sync::oneshot;

use crate::config::Argon2Config;
use crate::domain::Password;
use crate::error::{Error, Result};

mod limits;
#[cfg(test)]
mod tests;
mod worker;

pub use limits::{HashLimits, StoredHash, check_stored_hash};
use worker::Worker;

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

/// A verification as a hashing thread answers it.
struct Verified {
    verification: Verification,
    /// How long computing it took.
    took: Duration,
    /// How long its argon2 part took (all of it, but for a bcrypt hash).
    argon2_part: Duration,
}

/// How the pool runs: HASH_CONCURRENCY, HASH_QUEUE_LIMIT, HASH_MAX_WAIT_MILLISECONDS.
#[derive(Clone, Copy, Debug)]
pub struct PoolConfig {
    pub concurrency: usize,
    /// A hard bound on the jobs waiting (memory), whatever their expected wait.
    pub queue_limit: usize,
    /// The longest expected wait at which a job is still accepted.
    pub max_wait: Duration,
    /// The threads' nice value (HASH_NICE).
    pub nice: i32,
}

/// What the pool has done so far (for tests and diagnostics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolStats {
    /// Jobs computed (hashes and verifications).
    pub computed: u64,
    /// Jobs dropped unstarted because their request had gone.
    pub abandoned: u64,
    /// Jobs turned away because the expected wait or the queue was over its bound.
    pub refused: u64,
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
        /// The answer, how long computing it took, and how long its argon2 part took.
        reply: oneshot::Sender<Verified>,
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
    /// The jobs waiting, each with the time it was queued.
    jobs: VecDeque<(Instant, Job)>,
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
    /// Jobs turned away by the admission (`Error::Busy`).
    refused: AtomicU64,
    running: AtomicUsize,
    /// Told how long each job waited in the queue before a thread took it (the metrics).
    on_wait: std::sync::OnceLock<WaitHook>,
}

/// See [`PasswordHasher::on_wait`].
type WaitHook = Box<dyn Fn(Duration) + Send + Sync>;

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
        queue.jobs.retain(|(_, job)| !job.abandoned());
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
    /// While accounts with bcrypt hashes remain, every verification answers no sooner than this
    /// many thousandths of its own argon2 part (0: no padding), so that timing cannot tell them
    /// apart (see [`PasswordHasher::equalise_with_bcrypt`]).
    padding_factor_milli: AtomicU64,
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasher").finish_non_exhaustive()
    }
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
            refused: AtomicU64::new(0),
            running: AtomicUsize::new(0),
            on_wait: std::sync::OnceLock::new(),
        });
        for i in 0..threads {
            let worker = Worker::new(params.clone(), dummy_hash.clone());
            let shared = shared.clone();
            let nice = pool.nice;
            std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || {
                    worker::set_nice(nice);
                    worker.run(shared)
                })
                .map_err(Error::internal)?;
        }
        Ok(Self {
            shared,
            pool,
            limits: HashLimits::from_config(config),
            dummy_hash,
            padding_factor_milli: AtomicU64::new(0),
        })
    }

    /// Makes every verification answer no sooner than a bcrypt verification at `cost` would
    /// (with the argon2 check that follows one): while accounts imported with bcrypt remain,
    /// wrong passwords for them, for argon2 accounts and for unknown addresses all take the same
    /// time. The padding is relative: each answer waits until `factor` times its own argon2
    /// part has passed, the factor being (bcrypt + argon2) / argon2 measured here once, with a
    /// margin; so when the machine is loaded and every hash is slower, the padding grows with
    /// it. The wait is a timer, not computation: it holds no hashing thread. Costs beyond the
    /// limits are never computed, so never waited for.
    pub fn equalise_with_bcrypt(&self, cost: u32) {
        if cost > self.limits.max_bcrypt_cost {
            return;
        }
        let Ok(sample) = bcrypt::hash("timing sample", cost) else {
            return;
        };
        let started = Instant::now();
        let _ = bcrypt::verify("timing sample", &sample);
        let bcrypt = started.elapsed().as_secs_f64();
        let argon2 = Duration::from_nanos(self.shared.mean_nanos.load(Ordering::Relaxed))
            .as_secs_f64()
            .max(1e-6);
        let factor = 1.25 * (bcrypt + argon2) / argon2;
        self.padding_factor_milli
            .fetch_max((factor * 1000.0) as u64, Ordering::Relaxed);
        tracing::info!(
            bcrypt_cost = cost,
            factor = format!("{factor:.1}"),
            "accounts with bcrypt hashes remain: every password check takes this many times an \
             argon2 check, so that timing does not tell them apart"
        );
    }

    /// How long an answer whose argon2 part took `argon2_part` must take in all.
    fn padded(&self, argon2_part: Duration) -> Duration {
        match self.padding_factor_milli.load(Ordering::Relaxed) {
            0 => Duration::ZERO,
            milli => argon2_part.mul_f64(milli as f64 / 1000.0),
        }
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
            let mean = self.stats().mean;
            tokio::time::sleep(self.padded(mean).max(mean)).await;
            return Ok(NO_MATCH);
        }
        let (reply, answer) = oneshot::channel();
        self.submit(Job::Verify {
            password: password.clone(),
            stored: stored.unwrap_or(&self.dummy_hash).to_string(),
            real: stored.is_some(),
            reply,
        })?;
        let verified = answer.await.map_err(Error::internal)?;
        if let Some(rest) = self.padded(verified.argon2_part).checked_sub(verified.took) {
            tokio::time::sleep(rest).await;
        }
        Ok(verified.verification)
    }

    /// Calls `hook` with how long each job waited in the queue before a thread took it (the
    /// jobs computed, not those dropped because their request had gone). Set once; a second
    /// hook is ignored. It runs on the hashing thread: keep it to a few atomic operations.
    pub fn on_wait(&self, hook: impl Fn(Duration) + Send + Sync + 'static) {
        let _ = self.shared.on_wait.set(Box::new(hook));
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
            refused: self.shared.refused.load(Ordering::Relaxed),
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
            self.shared.refused.fetch_add(1, Ordering::Relaxed);
            return Err(Error::Busy {
                retry_after: whole_seconds(wait),
            });
        }
        queue.jobs.push_back((Instant::now(), job));
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
