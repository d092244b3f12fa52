//! Webhooks: security events sent to the endpoints superusers registered, signed the Standard
//! Webhooks way (https://www.standardwebhooks.com/).
//!
//! - `service::webhooks` holds the rules: registering endpoints (the URL checked by [`guard`]),
//!   their secrets (sealed), and queueing a delivery for each subscribed endpoint in the
//!   transaction of each event (`service::audit::record_in`).
//! - [`worker`] delivers the queue: claims due deliveries with a lease, POSTs each through
//!   [`client`] (which resolves the host once, checks every address, and connects to a checked
//!   one), signs with [`signature`], and retries with exponential backoff.
//! - [`Counters`]: what the worker has done, and the queue's length as the last scrape read it
//!   (`Metrics::refresh`), exposed by [`register_metrics`].

pub mod client;
pub mod guard;
pub mod signature;
pub mod worker;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crate::metrics::{FnCounter, FnGauge, Metrics};

/// What this instance's worker has done since it started, and the queue's length as the last
/// scrape read it.
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
    /// Deliveries neither delivered nor given up, in the whole table (every instance's), as the
    /// last scrape of /metrics counted them.
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

    /// Called by `Metrics::refresh` with the count of the queue.
    pub fn set_pending(&self, pending: i64) {
        self.pending.store(pending, Ordering::Relaxed);
    }
}

/// Registers `counters` with the metrics: `auth_webhook_delivered_total`,
/// `auth_webhook_failed_attempts_total`, `auth_webhook_given_up_total` (this instance's) and
/// `auth_webhook_pending` (every instance's, counted at scrape time).
pub fn register_metrics(metrics: &Metrics, counters: &Arc<Counters>) {
    let read = |field: fn(&Counters) -> &AtomicU64| {
        let counters = counters.clone();
        FnCounter::new(move || field(&counters).load(Ordering::Relaxed))
    };
    metrics.register(
        "auth_webhook_delivered",
        "Webhook deliveries answered 2xx",
        read(|c| &c.delivered),
    );
    metrics.register(
        "auth_webhook_failed_attempts",
        "Webhook delivery attempts that failed (no 2xx: each retried attempt, and the last)",
        read(|c| &c.failed_attempts),
    );
    metrics.register(
        "auth_webhook_given_up",
        "Webhook deliveries given up after WEBHOOK_MAX_ATTEMPTS attempts",
        read(|c| &c.given_up),
    );
    let pending = counters.clone();
    metrics.register(
        "auth_webhook_pending",
        "Webhook deliveries neither delivered nor given up, all instances' (paused ones included)",
        FnGauge::new(move || pending.pending.load(Ordering::Relaxed)),
    );
}
