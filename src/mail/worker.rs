//! Delivers the outbox: claims due mails (a lease, so instances never send one at once), sends
//! them, and marks each sent, to retry with backoff, or failed for good. Woken when a request
//! queues mail, and every second in any case, so mail queued by another instance or before a
//! restart goes out too.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};

use super::Mailer;
use crate::db::{Db, outbox};

const POLL: Duration = Duration::from_secs(1);
/// How long a claimed mail is held before another worker may try it (a crashed worker's claim).
const LEASE_MS: i64 = 120_000;
/// Mails are claimed one at a time, each just before its attempt: a claimed batch would wait
/// behind the attempts before it (each up to MAIL_SMTP_TIMEOUT_SECONDS), and the claims at its
/// end could run out before their attempts even began, letting another instance send them too.
const BATCH: i64 = 1;
/// The longest wait between two attempts of a mail.
const MAX_BACKOFF_MS: i64 = 3_600_000;

// An attempt (at most MAIL_SMTP_TIMEOUT_SECONDS) ends well within its claim.
const _: () = assert!(LEASE_MS >= 2 * 1000 * crate::config::SMTP_TIMEOUT_MAX_SECONDS as i64);

pub struct Worker {
    pub db: Db,
    pub mailer: Arc<Mailer>,
    pub wakeup: Arc<Notify>,
    pub retry_base: Duration,
    pub max_attempts: u32,
    pub clock: crate::clock::Clock,
    /// Sent, failed attempts, given up (`crate::metrics`).
    pub counters: crate::metrics::MailCounters,
}

impl Worker {
    /// Runs until `stop` turns true.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        loop {
            self.deliver_due().await;
            tokio::select! {
                () = self.wakeup.notified() => {}
                () = tokio::time::sleep(POLL) => {}
                _ = stop.wait_for(|stop| *stop) => return,
            }
        }
    }

    /// Sends everything that is due now.
    pub async fn deliver_due(&self) {
        loop {
            let batch =
                match outbox::claim_due(&self.db, self.clock.now_ms(), LEASE_MS, BATCH).await {
                    Ok(batch) => batch,
                    Err(e) => {
                        tracing::warn!(error = %e, "mail outbox: cannot read the queue");
                        return;
                    }
                };
            if batch.is_empty() {
                // The end of a pass (the tests wait on it to know the worker has looked).
                tracing::debug!("mail outbox: nothing due");
                return;
            }
            for mail in &batch {
                self.deliver(mail).await;
            }
        }
    }

    async fn deliver(&self, mail: &outbox::Mail) {
        let outcome = self.mailer.send(mail).await;
        let now = self.clock.now_ms();
        let result = match outcome {
            Ok(()) => {
                tracing::info!(mail_id = %mail.id, attempts = mail.attempts, "mail sent");
                let recorded = outbox::mark_sent(&self.db, &mail.id, now).await;
                // Counted once recorded, so that a scrape never sees it sent and still queued.
                self.counters.sent.inc();
                recorded
            }
            Err(f) if f.permanent || mail.attempts >= i64::from(self.max_attempts) => {
                tracing::error!(
                    mail_id = %mail.id,
                    attempts = mail.attempts,
                    error = %f.message,
                    "mail could not be delivered; giving up"
                );
                let recorded = outbox::mark_failed(&self.db, &mail.id, now, &f.message).await;
                self.counters.failed_attempts.inc();
                self.counters.given_up.inc();
                recorded
            }
            Err(f) => {
                let base = i64::try_from(self.retry_base.as_millis()).unwrap_or(i64::MAX);
                let backoff = base
                    .saturating_mul(1i64 << (mail.attempts - 1).clamp(0, 30))
                    .min(MAX_BACKOFF_MS);
                tracing::warn!(
                    mail_id = %mail.id,
                    attempts = mail.attempts,
                    retry_in_ms = backoff,
                    error = %f.message,
                    "mail not sent; will retry"
                );
                let recorded =
                    outbox::mark_retry(&self.db, &mail.id, now + backoff, &f.message).await;
                self.counters.failed_attempts.inc();
                recorded
            }
        };
        if let Err(e) = result {
            // The lease runs out and the mail is tried again: at worst it is sent twice.
            tracing::warn!(mail_id = %mail.id, error = %e, "mail outbox: cannot record the outcome");
        }
    }
}
