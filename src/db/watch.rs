//! What the pool has been through: connections lost (PostgreSQL restarted, a backend
//! terminated, the network cut), reads retried, transactions begun again, requests that waited
//! for a connection in vain. It decides two things:
//!
//! - **The pool is suspect** for [`SUSPECT_FOR`] after a lost connection: meanwhile the pool's
//!   `before_acquire` hook pings every idle connection before handing it out, so that the other
//!   connections the same blip killed are dropped and replaced instead of failing the next
//!   queries (a read's retry among them). In steady state nothing is pinged (a round trip per
//!   query otherwise).
//! - **`/health` says "degraded"** while a connection was lost or the pool ran out of
//!   connections within the last [`DEGRADED_FOR`], by the server's `Clock` (so that tests move
//!   it).
//!
//! Which errors mean "the connection was lost" ([`connection_lost`]): on PostgreSQL, an I/O
//! error, class 08 (connection exception) and 57P01-57P03 (the server is shutting down, crashed,
//! or not accepting connections yet). On SQLite, none: a local file does not drop connections.

use std::sync::RwLock;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::clock::Clock;

/// How long after a lost connection the pool pings connections before handing them out.
pub const SUSPECT_FOR: Duration = Duration::from_secs(5);

/// How long a lost connection or a pool timeout keeps `/health` "degraded".
pub const DEGRADED_FOR: Duration = Duration::from_secs(60);

/// Never: before any time the clock can read.
const NEVER: i64 = i64::MIN;

#[derive(Debug)]
pub(crate) struct Watch {
    postgres: bool,
    /// The server's clock (set by `Db::use_clock`; the wall clock until then), for `/health`'s
    /// window.
    clock: RwLock<Clock>,
    /// The I/O timer of the suspect window: ms since `epoch`.
    epoch: Instant,
    suspect_until_ms: AtomicU64,
    /// By `clock`: the last lost connection, the last pool timeout.
    lost_at: AtomicI64,
    pool_timeout_at: AtomicI64,
    connections_lost: AtomicU64,
    read_retries: AtomicU64,
    begin_retries: AtomicU64,
    pool_timeouts: AtomicU64,
}

/// The pool's counters since start, for the metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DbStats {
    /// Queries that failed because their connection was lost.
    pub connections_lost: u64,
    /// Reads run again on a fresh connection after that.
    pub read_retries: u64,
    /// Transactions whose `BEGIN` failed that way and were begun again.
    pub begin_retries: u64,
    /// Requests that waited for a connection in vain (the pool at its limit).
    pub pool_timeouts: u64,
}

/// Why `/health` says "degraded" (the database answers, but something is off).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Degraded {
    /// A connection was lost (and the query retried or answered 503) within the last minute.
    ConnectionLost,
    /// A request waited for a pooled connection in vain within the last minute.
    PoolExhausted,
}

impl Degraded {
    pub fn name(self) -> &'static str {
        match self {
            Degraded::ConnectionLost => "database_connection_lost",
            Degraded::PoolExhausted => "database_pool_exhausted",
        }
    }
}

impl Watch {
    pub fn new(postgres: bool) -> Self {
        Self {
            postgres,
            clock: RwLock::new(Clock::system()),
            epoch: Instant::now(),
            suspect_until_ms: AtomicU64::new(0),
            lost_at: AtomicI64::new(NEVER),
            pool_timeout_at: AtomicI64::new(NEVER),
            connections_lost: AtomicU64::new(0),
            read_retries: AtomicU64::new(0),
            begin_retries: AtomicU64::new(0),
            pool_timeouts: AtomicU64::new(0),
        }
    }

    pub fn use_clock(&self, clock: Clock) {
        *self.clock.write().unwrap_or_else(|e| e.into_inner()) = clock;
    }

    fn now(&self) -> i64 {
        self.clock
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .now_ms()
    }

    fn elapsed_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Within [`SUSPECT_FOR`] of a lost connection: connections are pinged before use.
    pub fn suspect(&self) -> bool {
        self.elapsed_ms() < self.suspect_until_ms.load(Ordering::Relaxed)
    }

    /// Looks at a query's error: a lost connection makes the pool suspect (and is counted, and
    /// dated for `/health`), and so is a pool timeout. Returns whether the connection was lost.
    pub fn saw(&self, e: &sqlx::Error) -> bool {
        if matches!(e, sqlx::Error::PoolTimedOut) {
            self.pool_timeouts.fetch_add(1, Ordering::Relaxed);
            self.pool_timeout_at.store(self.now(), Ordering::Relaxed);
            return false;
        }
        if !(self.postgres && connection_lost(e)) {
            return false;
        }
        self.connections_lost.fetch_add(1, Ordering::Relaxed);
        self.lost_at.store(self.now(), Ordering::Relaxed);
        let until = self.elapsed_ms() + SUSPECT_FOR.as_millis() as u64;
        if self.suspect_until_ms.swap(until, Ordering::Relaxed) <= self.elapsed_ms() {
            tracing::warn!(
                error = %e,
                "a database connection was lost: connections are checked before use for {}s",
                SUSPECT_FOR.as_secs()
            );
        }
        true
    }

    pub fn retried_read(&self) {
        self.read_retries.fetch_add(1, Ordering::Relaxed);
    }

    pub fn retried_begin(&self) {
        self.begin_retries.fetch_add(1, Ordering::Relaxed);
    }

    pub fn stats(&self) -> DbStats {
        DbStats {
            connections_lost: self.connections_lost.load(Ordering::Relaxed),
            read_retries: self.read_retries.load(Ordering::Relaxed),
            begin_retries: self.begin_retries.load(Ordering::Relaxed),
            pool_timeouts: self.pool_timeouts.load(Ordering::Relaxed),
        }
    }

    /// What happened within the last [`DEGRADED_FOR`], by the clock.
    pub fn degraded(&self) -> Vec<Degraded> {
        let since = self.now().saturating_sub(DEGRADED_FOR.as_millis() as i64);
        let mut reasons = Vec::new();
        if self.lost_at.load(Ordering::Relaxed) > since {
            reasons.push(Degraded::ConnectionLost);
        }
        if self.pool_timeout_at.load(Ordering::Relaxed) > since {
            reasons.push(Degraded::PoolExhausted);
        }
        reasons
    }
}

/// True when `e` says the query's connection was lost: the statement may not have run, or may
/// have run without our seeing its outcome (see `Db::begin` and the `read!` macro for what is
/// retried). PostgreSQL's codes only; the caller checks the backend.
pub fn connection_lost(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) => true,
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            code.starts_with("08") || matches!(&*code, "57P01" | "57P02" | "57P03")
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_never_loses_a_connection_and_a_pool_timeout_is_no_lost_connection() {
        let w = Watch::new(false);
        let io = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(!w.saw(&io));
        assert!(!w.suspect());
        assert!(w.degraded().is_empty());
        let pg = Watch::new(true);
        assert!(!pg.saw(&sqlx::Error::PoolTimedOut));
        assert!(!pg.suspect());
        assert_eq!(pg.degraded(), vec![Degraded::PoolExhausted]);
        assert!(!pg.saw(&sqlx::Error::RowNotFound));
        assert!(pg.saw(&io));
        assert!(pg.suspect());
        assert_eq!(pg.stats().connections_lost, 1);
    }

    #[test]
    fn degraded_lasts_a_minute_by_the_clock() {
        let clock = Clock::controlled();
        clock.freeze();
        let w = Watch::new(true);
        w.use_clock(clock.clone());
        let io = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        assert!(w.saw(&io));
        assert_eq!(w.degraded(), vec![Degraded::ConnectionLost]);
        clock.advance(DEGRADED_FOR - Duration::from_millis(1));
        assert_eq!(w.degraded(), vec![Degraded::ConnectionLost]);
        clock.advance(Duration::from_millis(1));
        assert!(w.degraded().is_empty());
    }
}
