//! SQLite only: the session check that every authenticated request makes, run on read-only
//! connections of its own, on the request's own task.
//!
//! sqlx's SQLite driver gives each connection a worker thread and passes every query to it and
//! the rows back through channels; on a small machine those hand-offs, not SQLite, were most of
//! the cost of GET /me (profiled: futex wake-ups and context switches, SQLite itself under 1%).
//! This read is one indexed lookup; in WAL mode a reader never waits for writers, so it takes
//! microseconds and can run where it is asked for. Anything unexpected (the file busy, an error)
//! returns `None` and the caller takes the ordinary sqlx path.

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension};
use sqlx::sqlite::SqliteConnectOptions;

use super::sessions::LiveUser;

/// Idle read-only connections kept for reuse.
const KEEP: usize = 8;

#[derive(Debug)]
pub struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    closed: AtomicBool,
}

impl Readers {
    /// Readers for a database file (none for an in-memory database, which they cannot share).
    pub fn for_file(options: &SqliteConnectOptions) -> Option<Self> {
        let path = options.get_filename();
        let name = path.to_string_lossy();
        if name.is_empty() || name == ":memory:" || name.starts_with("file:") {
            return None;
        }
        Some(Self {
            path: path.to_path_buf(),
            idle: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
        })
    }

    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    fn open(&self) -> rusqlite::Result<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        // Never hold the request up: a busy file sends the caller to the ordinary path.
        conn.busy_timeout(Duration::from_millis(20))?;
        Ok(conn)
    }

    fn with<T>(&self, read: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Option<T> {
        if self.closed.load(Ordering::Acquire) {
            return None;
        }
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let conn = match idle {
            Some(conn) => conn,
            None => self.open().ok()?,
        };
        let result = read(&conn);
        if result.is_ok() {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            if idle.len() < KEEP && !self.closed.load(Ordering::Acquire) {
                idle.push(conn);
            }
        }
        match result {
            Ok(value) => Some(value),
            Err(e) => {
                tracing::debug!(error = %e, "SQLite read path unavailable; using the pool");
                None
            }
        }
    }

    /// The same query as `sessions::find_live_user`.
    pub fn live_user(&self, session_id: &str, now: i64) -> Option<Option<LiveUser>> {
        self.with(|conn| {
            let mut statement = conn.prepare_cached(super::sessions::FIND_LIVE_USER)?;
            statement
                .query_row((session_id, now), |row| {
                    Ok(LiveUser {
                        id: row.get(0)?,
                        email: row.get(1)?,
                        name: row.get(2)?,
                        is_active: row.get(3)?,
                        is_verified: row.get(4)?,
                        is_superuser: row.get(5)?,
                        created_at: row.get(6)?,
                        updated_at: row.get(7)?,
                        security_stamp: row.get(8)?,
                    })
                })
                .optional()
        })
    }
}
