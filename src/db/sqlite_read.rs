//! SQLite only: the session check that every authenticated request makes, run on read-only
//! rusqlite connections of its own, each on a reader thread of its own (never on an async
//! worker: a read may wait on the disk). It is [`sessions::FIND_LIVE_USER`](super::sessions)
//! with the same row mapping as the sqlx path. Anything unexpected (the file busy, an error) is
//! logged at warn and answers `None`, and the caller takes the ordinary sqlx path.

use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension};
use sqlx::sqlite::SqliteConnectOptions;
use tokio::sync::oneshot;

use super::sessions::LiveUser as User;
use super::sessions::live_user_from_row;

/// Reader threads, each with one connection.
const THREADS: usize = 2;

struct Request {
    session_id: String,
    now: i64,
    reply: oneshot::Sender<Option<Option<User>>>,
}

pub struct Readers {
    /// Taken at close: the threads end when it is dropped.
    requests: Mutex<Option<mpsc::Sender<Request>>>,
}

impl std::fmt::Debug for Readers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readers").finish_non_exhaustive()
    }
}

impl Readers {
    /// Readers for a database file (none for an in-memory database, which they cannot share).
    pub fn for_file(options: &SqliteConnectOptions) -> Option<Self> {
        let path = options.get_filename();
        let name = path.to_string_lossy();
        if name.is_empty() || name == ":memory:" || name.starts_with("file:") {
            return None;
        }
        let (requests, queue) = mpsc::channel::<Request>();
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..THREADS {
            let queue = queue.clone();
            let path = path.to_path_buf();
            let started = std::thread::Builder::new()
                .name(format!("sqlite-read-{i}"))
                .spawn(move || serve(&path, &queue));
            if let Err(e) = started {
                tracing::warn!(error = %e, "cannot start a SQLite reader thread; using the pool");
                return None;
            }
        }
        Some(Self {
            requests: Mutex::new(Some(requests)),
        })
    }

    pub fn close(&self) {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
    }

    /// `sessions::find_live_user` on a reader thread; `None`: take the pool.
    pub async fn live_user(&self, session_id: &str, now: i64) -> Option<Option<User>> {
        let (reply, answer) = oneshot::channel();
        let request = Request {
            session_id: session_id.to_owned(),
            now,
            reply,
        };
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()?
            .send(request)
            .ok()?;
        answer.await.ok().flatten()
    }
}

fn serve(path: &Path, queue: &Mutex<mpsc::Receiver<Request>>) {
    let mut conn: Option<Connection> = None;
    loop {
        let Ok(request) = queue.lock().unwrap_or_else(|e| e.into_inner()).recv() else {
            return;
        };
        if conn.is_none() {
            match open(path) {
                Ok(opened) => conn = Some(opened),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot open a SQLite reader; using the pool");
                    let _ = request.reply.send(None);
                    continue;
                }
            }
        }
        let read = conn
            .as_ref()
            .map(|conn| live_user(conn, &request.session_id, request.now));
        let answer = match read {
            Some(Ok(found)) => Some(found),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "the SQLite session read failed; using the pool");
                conn = None;
                None
            }
            None => None,
        };
        let _ = request.reply.send(answer);
    }
}

fn open(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    // Never hold the request up: a busy file sends the caller to the ordinary path.
    conn.busy_timeout(Duration::from_millis(20))?;
    Ok(conn)
}

fn live_user(conn: &Connection, session_id: &str, now: i64) -> rusqlite::Result<Option<User>> {
    let mut statement = conn.prepare_cached(super::sessions::FIND_LIVE_USER)?;
    statement
        .query_row((session_id, now), |row| Ok(live_user_from_row!(row, get)))
        .optional()
}
