//! Webhooks: security events sent to the endpoints superusers registered, signed the Standard
//! Webhooks way (https://www.standardwebhooks.com/).
//!
//! - `service::webhooks` holds the rules: registering endpoints (the URL checked by [`guard`]),
//!   their secrets (sealed), and queueing a delivery for each subscribed endpoint in the
//!   transaction of each event (`service::audit::record_in`).
//! - [`worker`] delivers the queue: claims due deliveries with a lease, POSTs each through
//!   [`client`] (which resolves the host once, checks every address, and connects to a checked
//!   one), signs with [`signature`], and retries with exponential backoff.
//! - [`Counters`]: what the worker has done, for the metrics.

pub mod client;
pub mod guard;
pub mod signature;
pub mod worker;

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// What this instance's worker has done since it started, and the queue's length as it last
/// saw it.
#[derive(Debug, Default)]
pub struct Counters {
    delivered: AtomicU64,
    failed_attempts: AtomicU64,
    given_up: AtomicU64,
    pending: AtomicI64,
}

/// A reading of [`Counters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CountersSnapshot {
    /// Deliveries answered 2xx.
    pub delivered: u64,
    /// Attempts that were not (each retry that fails counts).
    pub failed_attempts: u64,
    /// Deliveries given up after WEBHOOK_MAX_ATTEMPTS.
    pub given_up: u64,
    /// Deliveries neither delivered nor given up, in the whole table (every instance's).
    pub pending: i64,
}

impl Counters {
    pub fn snapshot(&self) -> CountersSnapshot {
        CountersSnapshot {
            delivered: self.delivered.load(Ordering::Relaxed),
            failed_attempts: self.failed_attempts.load(Ordering::Relaxed),
            given_up: self.given_up.load(Ordering::Relaxed),
            pending: self.pending.load(Ordering::Relaxed),
        }
    }

    fn delivered(&self) {
        self.delivered.fetch_add(1, Ordering::Relaxed);
    }

    fn failed_attempt(&self) {
        self.failed_attempts.fetch_add(1, Ordering::Relaxed);
    }

    fn given_up(&self) {
        self.given_up.fetch_add(1, Ordering::Relaxed);
    }

    fn set_pending(&self, pending: i64) {
        self.pending.store(pending, Ordering::Relaxed);
    }
}
