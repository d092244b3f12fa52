//! Delivers the webhooks queued in `webhook_deliveries`: claims due deliveries (a lease, so
//! instances never send one at once), POSTs them, and marks each delivered, to retry with
//! backoff, or given up. Woken when this instance queues a delivery, and every second in any
//! case, so deliveries queued by another instance or before a restart go out too.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use super::Counters;
use super::client::{Client, Outcome, status_line};
use super::signature::Secret;
use crate::auth::seal::SealKey;
use crate::clock::Clock;
use crate::db::webhook_deliveries::Claimed;
use crate::db::{Db, webhook_deliveries, webhook_endpoints};

const POLL: Duration = Duration::from_secs(1);
/// How long a claimed delivery is held before another worker may try it (a crashed worker's
/// claim).
const LEASE_MS: i64 = 120_000;
/// Deliveries attempted at once, each claimed just before its attempt begins (a slow receiver
/// holds up at most one of them).
const CONCURRENCY: i64 = 8;
/// The longest wait between two attempts.
const MAX_BACKOFF_MS: i64 = 24 * 3_600_000;

// An attempt (at most WEBHOOK_TIMEOUT_SECONDS) ends well within its claim.
const _: () = assert!(LEASE_MS >= 2 * 1000 * crate::config::WEBHOOK_TIMEOUT_MAX_SECONDS as i64);

/// The wait before the attempt after `attempts` failed ones: `base_ms` doubled for each attempt
/// after the first, up to a day, then spread by ±25% (`random` picks where), so that deliveries
/// that failed together do not all come back at once.
pub fn backoff_ms(base_ms: i64, attempts: i64, random: u32) -> i64 {
    let doublings = (attempts - 1).clamp(0, 40) as u32;
    let wait = base_ms
        .saturating_mul(1i64.checked_shl(doublings).unwrap_or(i64::MAX))
        .clamp(1, MAX_BACKOFF_MS);
    let spread = wait / 2;
    let offset =
        i64::try_from(u64::from(random) * spread as u64 / u64::from(u32::MAX)).unwrap_or(0);
    wait - wait / 4 + offset
}

pub struct Worker {
    pub db: Db,
    pub seal: Arc<SealKey>,
    pub client: Client,
    pub wakeup: Arc<Notify>,
    pub retry_base: Duration,
    pub max_attempts: u32,
    pub clock: Clock,
    pub counters: Arc<Counters>,
}

impl Worker {
    /// Runs until `stop` turns true.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let worker = Arc::new(self);
        loop {
            worker.deliver_due(&stop).await;
            tokio::select! {
                () = worker.wakeup.notified() => {}
                () = tokio::time::sleep(POLL) => {}
                _ = stop.wait_for(|stop| *stop) => return,
            }
        }
    }

    /// Sends everything that is due now, [`CONCURRENCY`] at a time, claiming a delivery each
    /// time a place is free; stops claiming once `stop` is true.
    pub async fn deliver_due(self: &Arc<Self>, stop: &watch::Receiver<bool>) {
        let mut running = JoinSet::new();
        loop {
            let free = CONCURRENCY - running.len() as i64;
            let claimed = if free > 0 && !*stop.borrow() {
                match webhook_deliveries::claim_due(&self.db, self.clock.now_ms(), LEASE_MS, free)
                    .await
                {
                    Ok(claimed) => claimed,
                    Err(e) => {
                        tracing::warn!(error = %e, "webhooks: cannot read the queue");
                        Vec::new()
                    }
                }
            } else {
                Vec::new()
            };
            for delivery in claimed {
                let worker = Arc::clone(self);
                running.spawn(async move { worker.deliver(delivery).await });
            }
            if running.join_next().await.is_none() {
                // The end of a pass (the tests wait on it to know the worker has looked).
                tracing::debug!("webhooks: nothing due");
                return;
            }
        }
    }

    async fn deliver(&self, delivery: Claimed) {
        let outcome = match self.attempt(&delivery).await {
            Ok(outcome) => outcome,
            Err(AttemptError::Gone) => return,
            Err(AttemptError::Failed(message)) => Outcome::Failed(message),
        };
        let now = self.clock.now_ms();
        let (status, error) = match outcome {
            Outcome::Answered(status) if (200..300).contains(&status) => {
                self.counters.delivered();
                tracing::info!(
                    delivery_id = delivery.id,
                    endpoint_id = %delivery.endpoint_id,
                    event_id = %delivery.event_id,
                    event_type = %delivery.event_type,
                    attempts = delivery.attempts,
                    status,
                    "webhook delivered"
                );
                let marked =
                    webhook_deliveries::mark_delivered(&self.db, &delivery, now, i64::from(status))
                        .await;
                self.log_lost(&delivery, marked);
                return;
            }
            Outcome::Answered(status) => (Some(i64::from(status)), status_line(status)),
            Outcome::Failed(message) => (None, message),
        };
        self.counters.failed_attempt();
        let marked = if delivery.attempts >= i64::from(self.max_attempts) {
            self.counters.given_up();
            tracing::error!(
                delivery_id = delivery.id,
                endpoint_id = %delivery.endpoint_id,
                event_id = %delivery.event_id,
                attempts = delivery.attempts,
                error = %error,
                "webhook could not be delivered; giving up"
            );
            webhook_deliveries::mark_failed(&self.db, &delivery, now, status, &error).await
        } else {
            let base = crate::service::ms(self.retry_base);
            let mut random = [0u8; 4];
            getrandom::fill(&mut random).expect("the OS random number generator works");
            let wait = backoff_ms(base, delivery.attempts, u32::from_le_bytes(random));
            tracing::warn!(
                delivery_id = delivery.id,
                endpoint_id = %delivery.endpoint_id,
                event_id = %delivery.event_id,
                attempts = delivery.attempts,
                retry_in_ms = wait,
                error = %error,
                "webhook not delivered; will retry"
            );
            webhook_deliveries::mark_retry(&self.db, &delivery, now + wait, status, &error).await
        };
        self.log_lost(&delivery, marked);
    }

    /// One POST of the delivery, signed with its endpoint's current secret.
    async fn attempt(&self, delivery: &Claimed) -> Result<Outcome, AttemptError> {
        let (url, sealed) = match webhook_endpoints::target(&self.db, &delivery.endpoint_id).await {
            Ok(Some(target)) => target,
            // Deleted meanwhile: its deliveries went with it.
            Ok(None) => return Err(AttemptError::Gone),
            Err(e) => {
                return Err(AttemptError::Failed(format!(
                    "cannot read the endpoint: {e}"
                )));
            }
        };
        let secret = self
            .seal
            .open(&sealed, delivery.endpoint_id.as_bytes())
            .map(Secret::from_bytes)
            .map_err(|e| {
                AttemptError::Failed(format!(
                    "the endpoint's secret cannot be opened ({e}: was MFA_ENCRYPTION_KEY or SECRET_KEY changed?)"
                ))
            })?;
        let timestamp = self.clock.now_s();
        let signature = secret.sign(&delivery.event_id, timestamp, delivery.payload.as_bytes());
        let headers = [
            ("webhook-id", delivery.event_id.clone()),
            ("webhook-timestamp", timestamp.to_string()),
            ("webhook-signature", signature),
        ];
        Ok(self
            .client
            .post(&url, &headers, delivery.payload.clone())
            .await)
    }

    fn log_lost(&self, delivery: &Claimed, marked: Result<bool, sqlx::Error>) {
        match marked {
            Ok(true) => {}
            // Redelivered by hand meanwhile (or the claim ran out): the newer state stands.
            Ok(false) => tracing::info!(
                delivery_id = delivery.id,
                "webhooks: the delivery changed during the attempt; its outcome is not recorded"
            ),
            // The lease runs out and the delivery is tried again: at worst it is sent twice.
            Err(e) => tracing::warn!(
                delivery_id = delivery.id,
                error = %e,
                "webhooks: cannot record the outcome"
            ),
        }
    }
}

enum AttemptError {
    /// The endpoint is gone: nothing to record.
    Gone,
    Failed(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_a_quarter_either_way_up_to_a_day() {
        for (attempts, wait) in [(1, 10_000), (2, 20_000), (3, 40_000), (6, 320_000)] {
            assert_eq!(backoff_ms(10_000, attempts, 0), wait * 3 / 4, "{attempts}");
            assert_eq!(
                backoff_ms(10_000, attempts, u32::MAX),
                wait * 5 / 4,
                "{attempts}"
            );
            let middle = backoff_ms(10_000, attempts, u32::MAX / 2);
            assert!(
                (wait - 1..=wait + 1).contains(&middle),
                "{attempts}: {middle}"
            );
        }
        let day = 24 * 3_600_000;
        assert_eq!(backoff_ms(3_600_000, 50, u32::MAX), day * 5 / 4);
        assert_eq!(backoff_ms(i64::MAX, i64::MAX, 0), day * 3 / 4);
        assert_eq!(backoff_ms(1000, 0, 0), 750);
    }
}
