//! All SQL lives in this module, one file per table. The layers above get a [`Db`] and call its
//! functions; they do not know which backend runs.
//!
//! The schema uses types both backends share (TEXT, BIGINT epoch milliseconds, BOOLEAN) and the
//! queries use `$n` placeholders, which both SQLite and PostgreSQL read, so one SQL text serves
//! both; [`with_pool!`] runs it on whichever pool is configured.
//!
//! **Blips** (`watch`): a PostgreSQL restart or a terminated backend kills the pool's
//! connections. A read whose connection was lost is run once more, on a connection that works
//! ([`read!`], used by every read function here); `BEGIN` is begun again the same way ([`Db::begin`]),
//! since nothing was sent before it. A write outside a transaction, any statement inside one, and
//! a `COMMIT` are never run again: whether they took effect is unknown, so the request is
//! answered 503 and the client decides (a retry then finds what was done, or does it once). After
//! a lost connection the pool is "suspect" for a few seconds and pings idle connections before
//! handing them out, so the blip's other dead connections are replaced rather than used.

pub mod events;
pub mod invitations;
pub mod login_attempts;
pub mod mail_quota;
pub mod mfa;
pub mod one_time_tokens;
pub mod original;
pub mod outbox;
pub mod passkeys;
pub mod session_cache;
pub mod sessions;
mod sqlite_read;
pub mod throttle;
pub mod users;
mod watch;
pub mod webhook_deliveries;
pub mod webhook_endpoints;

pub use watch::{DbStats, Degraded};

use std::str::FromStr;
use std::sync::Arc;

use sqlx::SqlSafeStr as _;
use std::time::Duration;

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::config::{DatabaseUrl, SqliteSynchronous as Synchronous};

/// A connection pool on the configured backend. What it holds is this module's own business:
/// the layers above, and the tests, go through the functions of `db`.
#[derive(Clone, Debug)]
pub struct Db {
    pool: Pool,
    /// Lost connections, retries and pool timeouts: the suspect window and `/health`.
    watch: Arc<watch::Watch>,
    observer: PoolObserver,
    /// The session check's cache (`session_cache`): off until `use_session_cache`.
    checks: Arc<session_cache::SessionCache>,
}

/// What the pool reports to the metrics (`crate::metrics` registers these): the waits for a
/// connection that ran out of time, and how long transactions waited for one.
#[derive(Clone, Debug)]
pub struct PoolObserver {
    /// `PoolTimedOut` errors of any query or transaction (each answered 503).
    pub timeouts: prometheus_client::metrics::counter::Counter,
    /// Seconds a transaction waited for its connection ([`Db::begin`]).
    pub acquire_seconds: prometheus_client::metrics::histogram::Histogram,
}

impl Default for PoolObserver {
    fn default() -> Self {
        Self {
            timeouts: Default::default(),
            acquire_seconds: prometheus_client::metrics::histogram::Histogram::new(
                crate::metrics::ACQUIRE_BUCKETS,
            ),
        }
    }
}

/// The pool's connections now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolState {
    pub in_use: u32,
    pub idle: u32,
    /// DATABASE_MAX_CONNECTIONS (or the backend's default).
    pub max: u32,
}

/// Counts a pool timeout in `result` (every query goes through [`with_pool!`] or [`Db::begin`]).
#[inline]
pub(crate) fn observed<T>(db: &Db, result: Result<T, sqlx::Error>) -> Result<T, sqlx::Error> {
    if let Err(sqlx::Error::PoolTimedOut) = &result {
        db.observer.timeouts.inc();
    }
    result
}

#[derive(Clone, Debug)]
enum Pool {
    Sqlite(SqliteDb),
    Postgres(PgPool),
}

/// SQLite: the sqlx pool, and read-only connections for the per-request session check.
#[derive(Clone, Debug)]
struct SqliteDb {
    pool: SqlitePool,
    readers: Option<std::sync::Arc<sqlite_read::Readers>>,
}

/// Runs `$body` (a `Result<_, sqlx::Error>`) with `$pool` bound to the concrete pool
/// (`&SqlitePool` or `&PgPool`), once: a write, or anything that must not run twice. Its error
/// is looked at: a pool timeout is counted (`PoolObserver`), a lost connection makes the pool
/// suspect (`watch`).
macro_rules! with_pool {
    ($db:expr, $pool:ident => $body:expr) => {{
        let db: &$crate::db::Db = $db;
        let done = match &db.pool {
            $crate::db::Pool::Sqlite($crate::db::SqliteDb { pool: $pool, .. }) => $body,
            $crate::db::Pool::Postgres($pool) => $body,
        };
        if let Err(e) = &done {
            db.watch.saw(e);
        }
        $crate::db::observed(db, done)
    }};
}
pub(crate) use with_pool;

/// A read: [`with_pool!`], and once more if its connection was lost (on PostgreSQL), on a
/// connection the suspect pool has checked. `$body` must be safe to run twice: a SELECT.
macro_rules! read {
    ($db:expr, $pool:ident => $body:expr) => {{
        let db: &$crate::db::Db = $db;
        match $crate::db::with_pool!(db, $pool => $body) {
            Err(e) if db.retry_read(&e) => $crate::db::with_pool!(db, $pool => $body),
            done => done,
        }
    }};
}
pub(crate) use read;

/// A transaction on the configured backend. Dropped without `commit`, it rolls back, and what
/// was to happen after its commit does not happen.
pub struct Tx {
    conn: TxConn,
    watch: Arc<watch::Watch>,
    /// Run in order once the commit succeeded (the audit trail's log lines, the webhook
    /// worker's wake-up: for what the database kept, never for what was rolled back).
    after_commit: Vec<Box<dyn FnOnce() + Send>>,
    checks: Arc<session_cache::SessionCache>,
}

enum TxConn {
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
}

/// Runs `$body` with `$conn` bound to the transaction's connection, once (a statement inside a
/// transaction is never run again: see the module's doc). Its error is looked at.
macro_rules! with_tx {
    ($tx:expr, $conn:ident => $body:expr) => {{
        let tx: &mut $crate::db::Tx = $tx;
        let done = match tx.conn_mut() {
            $crate::db::TxConnMut::Sqlite(conn) => {
                let $conn = conn;
                $body
            }
            $crate::db::TxConnMut::Postgres(conn) => {
                let $conn = conn;
                $body
            }
        };
        if let Err(e) = &done {
            tx.saw(e);
        }
        done
    }};
}
pub(crate) use with_tx;

/// The connection of a transaction, for [`with_tx!`].
pub(crate) enum TxConnMut<'a> {
    Sqlite(&'a mut sqlx::SqliteConnection),
    Postgres(&'a mut sqlx::PgConnection),
}

impl Tx {
    pub(crate) fn conn_mut(&mut self) -> TxConnMut<'_> {
        match &mut self.conn {
            TxConn::Sqlite(tx) => TxConnMut::Sqlite(tx),
            TxConn::Postgres(tx) => TxConnMut::Postgres(tx),
        }
    }

    pub(crate) fn saw(&self, e: &sqlx::Error) {
        self.watch.saw(e);
    }

    pub(crate) fn is_postgres(&self) -> bool {
        matches!(self.conn, TxConn::Postgres(_))
    }

    /// Commits, once: a COMMIT whose answer was lost may have been applied, so it is never sent
    /// again (the request is answered 503).
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        let done = match self.conn {
            TxConn::Sqlite(tx) => tx.commit().await,
            TxConn::Postgres(tx) => tx.commit().await,
        };
        if let Err(e) = &done {
            self.watch.saw(e);
        }
        done?;
        for then in self.after_commit {
            then();
        }
        Ok(())
    }

    /// Runs `then` once this transaction has committed; never if it rolls back.
    pub fn after_commit(&mut self, then: impl FnOnce() + Send + 'static) {
        self.after_commit.push(Box::new(then));
    }

    /// A statement of this transaction wrote a column the session check reads: once it
    /// commits, the cached checks of that account or session read before are not served.
    pub(crate) fn session_changed(&mut self, what: session_cache::Changed) {
        let checks = self.checks.clone();
        self.after_commit(move || checks.changed(what));
    }

    /// [`Tx::session_changed`] for an account (every session of it).
    pub(crate) fn account_changed(&mut self, id: &str) {
        self.session_changed(session_cache::Changed::Account(id.to_owned()));
    }
}

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// How long a request waits for a pooled connection before it is answered 503.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

impl Db {
    /// Connects (without retrying) and returns the pool. SQLite creates the file if it is
    /// missing, and commits with `synchronous=FULL`.
    pub async fn connect(
        url: &DatabaseUrl,
        max_connections: Option<u32>,
    ) -> Result<Self, sqlx::Error> {
        Self::connect_with(url, max_connections, Synchronous::Full).await
    }

    /// [`Db::connect`] with SQLite's `synchronous` setting (SQLITE_SYNCHRONOUS).
    pub async fn connect_with(
        url: &DatabaseUrl,
        max_connections: Option<u32>,
        synchronous: Synchronous,
    ) -> Result<Self, sqlx::Error> {
        match url {
            DatabaseUrl::Sqlite(url) => {
                // In WAL mode every setting survives a crash of this process (a commit is in the
                // OS's hands once written); they differ on a crash of the machine: FULL syncs
                // the WAL at each commit, NORMAL only at checkpoints, OFF never.
                let synchronous = match synchronous {
                    Synchronous::Off => SqliteSynchronous::Off,
                    Synchronous::Normal => SqliteSynchronous::Normal,
                    Synchronous::Full => SqliteSynchronous::Full,
                    Synchronous::Extra => SqliteSynchronous::Extra,
                };
                let options = SqliteConnectOptions::from_str(url)?
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(synchronous)
                    .busy_timeout(Duration::from_secs(5))
                    .foreign_keys(true);
                let pool = SqlitePoolOptions::new()
                    .max_connections(max_connections.unwrap_or(8))
                    .min_connections(1)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    // A local file does not drop connections; pinging one before each use
                    // doubled the cost of every query (each is a hand-off to its worker thread).
                    .test_before_acquire(false)
                    .connect_with(options.clone())
                    .await?;
                let readers = sqlite_read::Readers::for_file(&options).map(std::sync::Arc::new);
                Ok(Self {
                    pool: Pool::Sqlite(SqliteDb { pool, readers }),
                    watch: Arc::new(watch::Watch::new(false)),
                    observer: PoolObserver::default(),
                    checks: Default::default(),
                })
            }
            DatabaseUrl::Postgres(url) => {
                let watch = Arc::new(watch::Watch::new(true));
                let suspect = watch.clone();
                let pool = PgPoolOptions::new()
                    .max_connections(max_connections.unwrap_or(10))
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    // No ping before each use in steady state (a round trip per query) ...
                    .test_before_acquire(false)
                    // ... but for a few seconds after a lost connection (`watch`), an idle
                    // connection that does not answer a ping is closed and another one taken
                    // (or opened) instead: the other connections the blip killed are not used.
                    .before_acquire(move |conn, _| {
                        let check = suspect.suspect();
                        Box::pin(async move {
                            if !check {
                                return Ok(true);
                            }
                            Ok(sqlx::Connection::ping(conn).await.is_ok())
                        })
                    })
                    .connect(url)
                    .await?;
                Ok(Self {
                    pool: Pool::Postgres(pool),
                    watch,
                    observer: PoolObserver::default(),
                    checks: Default::default(),
                })
            }
        }
    }

    /// Connects, retrying for up to `patience` while the database is not reachable yet.
    pub async fn connect_with_retry(
        url: &DatabaseUrl,
        max_connections: Option<u32>,
        synchronous: Synchronous,
        patience: Duration,
    ) -> Result<Self, sqlx::Error> {
        let deadline = tokio::time::Instant::now() + patience;
        let mut delay = Duration::from_millis(250);
        loop {
            match Self::connect_with(url, max_connections, synchronous).await {
                Ok(db) => return Ok(db),
                Err(e) if is_unavailable(&e) && tokio::time::Instant::now() + delay < deadline => {
                    tracing::warn!(error = %e, "database not reachable yet; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(4));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Applies the migrations that this database has not seen yet, and brings older rows to
    /// what a migration cannot compute in SQL the same way on both backends (normalised emails,
    /// folded names for search).
    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        match &self.pool {
            Pool::Sqlite(db) => SQLITE_MIGRATIONS.run(&db.pool).await?,
            Pool::Postgres(pool) => POSTGRES_MIGRATIONS.run(pool).await?,
        }
        let filled = users::backfill_after_upgrade(self)
            .await
            .map_err(sqlx::migrate::MigrateError::Execute)?;
        if filled > 0 {
            tracing::info!(
                accounts = filled,
                "older accounts brought to today's address and name forms"
            );
        }
        Ok(())
    }

    /// Begins a transaction. On SQLite it takes the write lock at once (`BEGIN IMMEDIATE`), so
    /// that it waits its turn instead of failing when it would upgrade a read lock. A `BEGIN`
    /// whose connection was lost is sent once more, on another connection: nothing was sent
    /// before it, so nothing can be done twice.
    ///
    /// The wait for the connection is measured apart from the `BEGIN` (`PoolObserver`): this
    /// is what `Pool::begin_with` does, with a clock read around its `acquire`.
    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        match self.begin_once().await {
            Err(e) if self.watch.saw(&e) => {
                self.watch.retried_begin();
                let again = self.begin_once().await;
                if let Err(e) = &again {
                    self.watch.saw(e);
                }
                again
            }
            Err(e) => Err(e),
            Ok(tx) => Ok(tx),
        }
    }

    async fn begin_once(&self) -> Result<Tx, sqlx::Error> {
        let started = std::time::Instant::now();
        let conn = match &self.pool {
            Pool::Sqlite(db) => {
                let conn = self.acquired(started, db.pool.acquire().await)?;
                TxConn::Sqlite(
                    sqlx::Transaction::begin(conn, Some("BEGIN IMMEDIATE".into_sql_str())).await?,
                )
            }
            Pool::Postgres(pool) => {
                let conn = self.acquired(started, pool.acquire().await)?;
                TxConn::Postgres(sqlx::Transaction::begin(conn, None).await?)
            }
        };
        Ok(Tx {
            conn,
            watch: self.watch.clone(),
            after_commit: Vec::new(),
            checks: self.checks.clone(),
        })
    }

    /// [`read!`]'s decision after a read failed: run it again when its connection was lost
    /// (counted). The error has been looked at already, by [`with_pool!`].
    pub(crate) fn retry_read(&self, e: &sqlx::Error) -> bool {
        let lost = self.is_postgres() && watch::connection_lost(e);
        if lost {
            self.watch.retried_read();
        }
        lost
    }

    /// Records a transaction's wait for its connection, begun at `started`.
    fn acquired<C>(
        &self,
        started: std::time::Instant,
        conn: Result<C, sqlx::Error>,
    ) -> Result<C, sqlx::Error> {
        self.observer
            .acquire_seconds
            .observe(started.elapsed().as_secs_f64());
        observed(self, conn)
    }

    /// The metrics' handles on this pool (`crate::metrics::register_database`).
    pub fn observer(&self) -> &PoolObserver {
        &self.observer
    }

    /// The pool's connections now: cheap (no query), for the metrics.
    pub fn pool_state(&self) -> PoolState {
        let (size, idle, max) = match &self.pool {
            Pool::Sqlite(db) => (
                db.pool.size(),
                db.pool.num_idle(),
                db.pool.options().get_max_connections(),
            ),
            Pool::Postgres(pool) => (
                pool.size(),
                pool.num_idle(),
                pool.options().get_max_connections(),
            ),
        };
        let idle = u32::try_from(idle).unwrap_or(u32::MAX).min(size);
        PoolState {
            in_use: size - idle,
            idle,
            max,
        }
    }

    /// A round trip to the database (retried once, as a read, if its connection was lost).
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        read!(self, pool => sqlx::query("SELECT 1").execute(pool).await.map(|_| ()))
    }

    /// The clock `/health`'s "degraded" window is read by (the server's; the wall clock until
    /// this is called).
    pub fn use_clock(&self, clock: crate::clock::Clock) {
        self.watch.use_clock(clock);
    }

    /// Turns the session check's cache on (`session_cache`): up to `capacity` checks, each kept
    /// `ttl` (zero: off). On PostgreSQL the cache is unused until [`Db::listen_for_session_changes`]
    /// listens.
    pub fn use_session_cache(&self, ttl: Duration, capacity: usize) {
        self.checks.configure(ttl, capacity);
        if self.is_postgres() && !ttl.is_zero() {
            self.checks.set_usable(false);
        }
    }

    /// PostgreSQL: listens for other instances' and processes' changes of what the session
    /// check reads until `stop` (`session_cache::listen`); returns at once on SQLite or with the
    /// cache off.
    pub async fn listen_for_session_changes(&self, stop: tokio::sync::watch::Receiver<bool>) {
        if let Pool::Postgres(pool) = &self.pool
            && self.checks.configured()
        {
            session_cache::listen(pool.clone(), self.checks.clone(), stop).await;
        }
    }

    /// A write outside a transaction changed a column the session check reads (see
    /// `Tx::session_changed` for one inside).
    pub(crate) fn sessions_changed(&self, what: session_cache::Changed) {
        self.checks.changed(what);
    }

    /// The session cache's hits and misses so far, and whether it is in use now.
    pub fn session_cache_stats(&self) -> (u64, u64, bool) {
        let (hits, misses) = self.checks.stats();
        (hits, misses, self.checks.in_use())
    }

    /// Why the database is "degraded" now, if it is: what happened within the last minute.
    pub fn degraded(&self) -> Vec<Degraded> {
        self.watch.degraded()
    }

    /// Whether connections are pinged before use now (for a few seconds after a lost one).
    pub fn suspect(&self) -> bool {
        self.watch.suspect()
    }

    /// The pool's counters since start: lost connections, retries, pool timeouts.
    pub fn stats(&self) -> DbStats {
        self.watch.stats()
    }

    /// True on PostgreSQL, false on SQLite.
    fn is_postgres(&self) -> bool {
        matches!(self.pool, Pool::Postgres(_))
    }

    /// SQLite's `synchronous` setting as this pool's connections have it (0 off, 1 normal, 2
    /// full, 3 extra); `None` on PostgreSQL.
    pub async fn sqlite_synchronous(&self) -> Result<Option<i64>, sqlx::Error> {
        match &self.pool {
            Pool::Sqlite(db) => sqlx::query_scalar("PRAGMA synchronous")
                .fetch_one(&db.pool)
                .await
                .map(Some),
            Pool::Postgres(_) => Ok(None),
        }
    }

    /// After a bulk load: on SQLite, moves the write-ahead log into the database file (as a live
    /// database does as it goes), so that reads need not search the log; nothing on PostgreSQL.
    pub async fn checkpoint(&self) -> Result<(), sqlx::Error> {
        match &self.pool {
            Pool::Sqlite(db) => sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(&db.pool)
                .await
                .map(|_| ()),
            Pool::Postgres(_) => Ok(()),
        }
    }

    pub async fn close(&self) {
        if let Pool::Sqlite(SqliteDb {
            readers: Some(readers),
            ..
        }) = &self.pool
        {
            readers.close();
        }
        match &self.pool {
            Pool::Sqlite(db) => db.pool.close().await,
            Pool::Postgres(pool) => pool.close().await,
        }
    }
}

/// True for errors that mean "the database is not answering" (503) rather than a bug (500).
/// Whether `text` can be a key of a stored row: PostgreSQL text cannot hold NUL (it refuses the
/// query), so an id from a path with one names no row, on either backend.
pub(crate) fn can_be_stored(text: &str) -> bool {
    !text.contains('\0')
}

pub fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            // PostgreSQL: class 08 (connection), 57P0x (shutdown), 3D000 (database gone),
            // 53300 (too many connections). SQLite: 5 BUSY and 6 LOCKED after the busy timeout.
            code.starts_with("08")
                || code.starts_with("57P0")
                || matches!(&*code, "3D000" | "53300" | "5" | "6" | "517")
        }
        _ => false,
    }
}

/// True when the error is a violated unique constraint.
pub fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.is_unique_violation())
}
