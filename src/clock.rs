//! The one clock every time-based decision reads: expiries, windows, lockouts, retention, the
//! mail schedule and the `iat`/`exp` of tokens.
//!
//! Production runs on [`Clock::system`], the wall clock. Tests start the server on a
//! [`Clock::controlled`] one and move it: forward by an exact amount, or frozen, so that a
//! boundary ("at the limit", "1 ms past it") is tested exactly and without sleeping.
//!
//! Connection timers (header read, keep-alive, request timeout) and the hashing queue's wait are
//! I/O deadlines of this process, not decisions about stored state: they stay on tokio's timer.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

/// Unix epoch milliseconds, the unit of every timestamp column.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    controlled: Option<Arc<Controlled>>,
}

#[derive(Debug, Default)]
struct Controlled {
    /// Added to the wall clock while running; the time itself while frozen.
    offset_ms: AtomicI64,
    frozen: AtomicBool,
}

fn wall_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Clock {
    /// The wall clock.
    pub fn system() -> Self {
        Self { controlled: None }
    }

    /// A clock the caller moves: it starts at the wall clock's time and runs with it until
    /// [`Clock::freeze`]; [`Clock::advance`] moves it forward either way.
    pub fn controlled() -> Self {
        Self {
            controlled: Some(Arc::new(Controlled::default())),
        }
    }

    pub fn now_ms(&self) -> i64 {
        match &self.controlled {
            None => wall_ms(),
            Some(c) => {
                let offset = c.offset_ms.load(Ordering::SeqCst);
                if c.frozen.load(Ordering::SeqCst) {
                    offset
                } else {
                    wall_ms().saturating_add(offset)
                }
            }
        }
    }

    /// Unix seconds (rounded down), the unit of JWT claims.
    pub fn now_s(&self) -> i64 {
        self.now_ms().div_euclid(1000)
    }

    fn control(&self) -> &Controlled {
        self.controlled
            .as_deref()
            .expect("only a controlled clock can be moved (Clock::controlled)")
    }

    /// Stops the clock at its current time; it moves only by [`Clock::advance`] and
    /// [`Clock::set_ms`] from then on.
    pub fn freeze(&self) {
        let now = self.now_ms();
        self.set_ms(now);
    }

    /// Freezes the clock at `ms`.
    pub fn set_ms(&self, ms: i64) {
        let c = self.control();
        // Offset first: a reader that sees `frozen` then reads the frozen time.
        c.offset_ms.store(ms, Ordering::SeqCst);
        c.frozen.store(true, Ordering::SeqCst);
    }

    /// Moves the clock forward by `by` (whether it is frozen or running).
    pub fn advance(&self, by: Duration) {
        self.advance_ms(i64::try_from(by.as_millis()).unwrap_or(i64::MAX));
    }

    /// Moves the clock by `ms` (negative moves it back, as a wall clock can be set back).
    pub fn advance_ms(&self, ms: i64) {
        self.control().offset_ms.fetch_add(ms, Ordering::SeqCst);
    }
}

/// Epoch milliseconds as an RFC 3339 UTC time with milliseconds, as responses and mails show
/// times.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_clock_is_the_wall_clock() {
        let before = wall_ms();
        let now = Clock::system().now_ms();
        assert!(now >= before && now <= wall_ms());
    }

    #[test]
    fn a_controlled_clock_runs_with_the_wall_clock_until_frozen_and_moves_exactly() {
        let clock = Clock::controlled();
        let copy = clock.clone();
        let before = wall_ms();
        assert!(clock.now_ms() >= before);
        clock.advance(Duration::from_secs(3600));
        assert!(copy.now_ms() >= before + 3_600_000);
        clock.set_ms(1_000_000);
        assert_eq!(copy.now_ms(), 1_000_000);
        clock.advance_ms(1);
        assert_eq!(copy.now_ms(), 1_000_001);
        assert_eq!(copy.now_s(), 1_000);
        clock.advance_ms(-1_000_002);
        assert_eq!(copy.now_s(), -1, "seconds round down before the epoch");
    }

    #[test]
    #[should_panic(expected = "only a controlled clock")]
    fn the_system_clock_cannot_be_moved() {
        Clock::system().advance_ms(1);
    }
}
