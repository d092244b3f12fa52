//! The MFA scenario's accounts: a code is accepted once per 30 s step per account (RFC 6238
//! §5.2, as the server enforces it), so each account is handed out at most once per step, in
//! turn; with fewer accounts than logins in a step, workers wait for the next step (and the
//! scenario's figure drops: `main.rs` seeds enough for the run).

use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use auth_server::auth::totp;

pub struct TotpAccounts {
    secrets: Vec<Vec<u8>>,
    last_step: Vec<AtomicI64>,
    next: AtomicUsize,
    /// How many times a worker found every account used in the step, and waited.
    waits: AtomicU64,
}

impl TotpAccounts {
    pub fn new(secrets: Vec<Vec<u8>>) -> Self {
        let last_step = secrets.iter().map(|_| AtomicI64::new(i64::MIN)).collect();
        Self {
            secrets,
            last_step,
            next: AtomicUsize::new(0),
            waits: AtomicU64::new(0),
        }
    }

    pub fn len(&self) -> usize {
        self.secrets.len()
    }

    /// How many times a worker waited for the next step (then the scenario's figure is low).
    pub fn waits(&self) -> u64 {
        self.waits.load(Ordering::Relaxed)
    }

    /// An account not used in the current step, and its current code: (account, code).
    pub async fn take(&self) -> (usize, String) {
        loop {
            let now = chrono::Utc::now().timestamp_millis();
            let step = totp::step_at(now);
            for _ in 0..self.secrets.len() {
                let i = self.next.fetch_add(1, Ordering::Relaxed) % self.secrets.len();
                let last = self.last_step[i].load(Ordering::Relaxed);
                if last < step
                    && self.last_step[i]
                        .compare_exchange(last, step, Ordering::Relaxed, Ordering::Relaxed)
                        .is_ok()
                {
                    return (i, totp::code_at(&self.secrets[i], step));
                }
            }
            // Every account has had its code in this step: wait for the next one.
            self.waits.fetch_add(1, Ordering::Relaxed);
            let into_step = now.rem_euclid(totp::PERIOD_SECONDS * 1000);
            let left = (totp::PERIOD_SECONDS * 1000 - into_step) as u64 + 5;
            tokio::time::sleep(Duration::from_millis(left)).await;
        }
    }
}
