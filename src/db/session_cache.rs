//! The session check's cache: what [`sessions::find_live_user`](super::sessions) read for a
//! session, kept in this process for at most SESSION_CACHE_MS so that the token check of most
//! requests needs no round trip to the database.
//!
//! **Revocation stays immediate in this instance.** Every function of `db` that writes a column
//! the session check reads (the account's row; a session's `revoked_at`, `user_stamp`, `amr`,
//! `mfa_at`, `passkey_at`) says so here, by account or by session: after its commit when it is
//! in a transaction (`Tx::session_changed`), after the statement otherwise
//! (`Db::sessions_changed`). From then on no entry read before the change is served.
//!
//! **A read that raced a change is never served.** The cache counts changes (`generation`). A
//! read notes the generation before it asks the database; a change records, for its account or
//! session, the generation it made. An entry is served only if it was read at or after every
//! change recorded for its account and its session, and after the last flush. So a read that
//! began before a change committed and finished after the change was recorded is never served,
//! whatever the order in which they reach the cache.
//!
//! **Other instances** (and other processes: the command line, an operator's SQL) see a change
//! within the bound: on PostgreSQL, triggers (migration 11) `NOTIFY auth_session_check` with the
//! account's id in the transaction of every such change, and [`listen`] drops that account's
//! entries when the notification arrives (milliseconds); while the listening connection is
//! down or does not answer its ping, the cache is flushed and not used (every check goes to the
//! database) until it listens again. On SQLite (one machine), another process's change is seen
//! when the entries expire. In every case an entry is served at most SESSION_CACHE_MS after it
//! was read; with 0, nothing is kept and every request checks the database.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hashlink::LruCache;

use super::sessions::LiveUser;

/// The PostgreSQL channel the triggers notify (payload: an account id, or `*` for everything).
pub const CHANNEL: &str = "auth_session_check";

/// What a change concerns: an account (all its sessions) or one session.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Changed {
    Account(String),
    Session(String),
}

/// One session check as the database answered it.
struct Entry {
    user: Arc<LiveUser>,
    /// The generation the read began at, and when.
    generation: u64,
    read_at: Instant,
}

struct Inner {
    generation: u64,
    entries: LruCache<String, Entry>,
    /// The generation of the last change recorded for an account, and for a session, and when:
    /// a record older than the TTL concerns only entries that have expired anyway, so the maps
    /// are pruned of them as they grow.
    accounts: HashMap<String, (u64, Instant)>,
    sessions: HashMap<String, (u64, Instant)>,
    prune_at: usize,
    /// Entries read before this generation are not served (a flush).
    flushed: u64,
}

/// The cache; disabled (TTL 0) until [`SessionCache::configure`] is called, as in the command
/// line's processes.
pub struct SessionCache {
    /// SESSION_CACHE_MS.
    ttl_ms: AtomicU64,
    /// Whether entries may be served and kept: false while PostgreSQL's channel is down.
    usable: AtomicBool,
    inner: Mutex<Inner>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl std::fmt::Debug for SessionCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionCache")
            .field("ttl", &self.ttl())
            .finish_non_exhaustive()
    }
}

/// A read under way: the generation it began at.
#[derive(Clone, Copy, Debug)]
pub struct Ticket {
    generation: u64,
    read_at: Instant,
}

const MIN_PRUNE: usize = 1024;

impl Default for SessionCache {
    fn default() -> Self {
        Self {
            ttl_ms: AtomicU64::new(0),
            usable: AtomicBool::new(true),
            inner: Mutex::new(Inner {
                generation: 0,
                entries: LruCache::new(1),
                accounts: HashMap::new(),
                sessions: HashMap::new(),
                prune_at: MIN_PRUNE,
                flushed: 0,
            }),
            hits: Default::default(),
            misses: Default::default(),
        }
    }
}

impl SessionCache {
    /// Keeps up to `capacity` checks, each for at most `ttl` (zero: none).
    pub fn configure(&self, ttl: Duration, capacity: usize) {
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        self.ttl_ms.store(ms, Ordering::Release);
        let mut inner = self.lock();
        inner.entries = LruCache::new(capacity.max(1));
        inner.generation += 1;
        inner.flushed = inner.generation;
    }

    fn ttl(&self) -> Duration {
        Duration::from_millis(self.ttl_ms.load(Ordering::Acquire))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Nothing here panics while holding the lock; a poisoned one is still consistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the cache is in use at all (a TTL above zero and, on PostgreSQL, the channel up).
    fn enabled(&self) -> bool {
        self.usable.load(Ordering::Acquire) && !self.ttl().is_zero()
    }

    /// The check of `session_id` if one is cached, still fresh, not older than any change of its
    /// account or session, and live at `now` (epoch ms, the server's clock). Otherwise a
    /// ticket for the read the caller makes instead, to [`SessionCache::keep`] its answer.
    pub fn get(&self, session_id: &str, now: i64) -> Result<Arc<LiveUser>, Option<Ticket>> {
        if !self.enabled() {
            return Err(None);
        }
        let ttl = self.ttl();
        let mut inner = self.lock();
        let ticket = Ticket {
            generation: inner.generation,
            read_at: Instant::now(),
        };
        let flushed = inner.flushed;
        let fresh = inner.entries.get(session_id).and_then(|e| {
            let live = e.read_at.elapsed() < ttl
                && e.user.refresh_expires_at > now
                && e.generation >= flushed;
            live.then(|| (e.user.clone(), e.generation))
        });
        let changed = |map: &HashMap<String, (u64, Instant)>, key: &str| {
            map.get(key).map_or(0, |(generation, _)| *generation)
        };
        let served = fresh.filter(|(user, generation)| {
            *generation >= changed(&inner.accounts, &user.id)
                && *generation >= changed(&inner.sessions, session_id)
        });
        match served {
            Some((user, _)) => {
                drop(inner);
                self.hits.fetch_add(1, Ordering::Relaxed);
                Ok(user)
            }
            None => {
                inner.entries.remove(session_id);
                drop(inner);
                self.misses.fetch_add(1, Ordering::Relaxed);
                Err(Some(ticket))
            }
        }
    }

    /// Keeps what a read that began at `ticket` found live. It is not served past the session's
    /// `refresh_expires_at` as read (a rotation only moves that later, so an older value only
    /// makes the cache ask again). A read that raced a change is kept but never served (see the
    /// module's doc).
    pub fn keep(&self, ticket: Ticket, session_id: &str, user: LiveUser) {
        if !self.enabled() {
            return;
        }
        let mut inner = self.lock();
        if ticket.generation < inner.flushed {
            return;
        }
        inner.entries.insert(
            session_id.to_string(),
            Entry {
                user: Arc::new(user),
                generation: ticket.generation,
                read_at: ticket.read_at,
            },
        );
    }

    /// A change of the checked columns committed: entries read before it are not served.
    pub fn changed(&self, what: Changed) {
        let ttl = self.ttl();
        let mut inner = self.lock();
        inner.generation += 1;
        let generation = inner.generation;
        let now = Instant::now();
        match what {
            Changed::Account(id) => {
                inner.accounts.insert(id, (generation, now));
            }
            Changed::Session(id) => {
                inner.entries.remove(id.as_str());
                inner.sessions.insert(id, (generation, now));
            }
        }
        if inner.accounts.len() + inner.sessions.len() >= inner.prune_at {
            let recent = |_: &String, (_, at): &mut (u64, Instant)| now.duration_since(*at) <= ttl;
            inner.accounts.retain(recent);
            inner.sessions.retain(recent);
            inner.prune_at = ((inner.accounts.len() + inner.sessions.len()) * 2).max(MIN_PRUNE);
        }
    }

    /// Nothing read so far is served again (the channel of other instances' changes was
    /// interrupted, or a change concerned everything).
    pub fn flush(&self) {
        let mut inner = self.lock();
        inner.generation += 1;
        inner.flushed = inner.generation;
        inner.entries.clear();
        inner.accounts.clear();
        inner.sessions.clear();
        inner.prune_at = MIN_PRUNE;
    }

    /// PostgreSQL's channel went down (false: flushed, unused) or is listening again (true).
    pub fn set_usable(&self, usable: bool) {
        if !usable {
            self.usable.store(false, Ordering::Release);
        }
        self.flush();
        if usable {
            self.usable.store(true, Ordering::Release);
        }
    }

    /// Hits and misses so far (for the metrics).
    pub fn stats(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }

    /// Whether entries are being served (a TTL above zero and the channel up).
    pub fn in_use(&self) -> bool {
        self.enabled()
    }

    /// Whether a TTL above zero was configured.
    pub fn configured(&self) -> bool {
        !self.ttl().is_zero()
    }
}

/// What a notification's payload says: an account id, `*` for everything, or a ping.
#[derive(Debug, PartialEq, Eq)]
enum Payload<'a> {
    Changed(Changed),
    Everything,
    Ping(&'a str),
}

/// The longest payload taken for an account id (ids are UUIDs): anything longer, which only
/// someone else's NOTIFY can send, empties the cache rather than being kept as a change.
const MAX_ID: usize = 64;

fn parse_payload(payload: &str) -> Payload<'_> {
    match payload {
        "*" => Payload::Everything,
        p if p.len() > MAX_ID && !p.starts_with("ping:") => Payload::Everything,
        p => match p.strip_prefix("ping:") {
            Some(nonce) => Payload::Ping(nonce),
            None => Payload::Changed(Changed::Account(p.to_string())),
        },
    }
}

/// How often the channel is pinged (a notification of our own, sent on another connection of
/// the pool), and how long its echo may take before the channel counts as interrupted.
const PING_EVERY: Duration = Duration::from_secs(1);
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// PostgreSQL: listens on [`CHANNEL`] until `stop`, dropping the entries of each account
/// notified. While the connection is being made, is lost, or a ping's echo is late, the cache
/// is flushed and unused; it is used again once `LISTEN` succeeded. Reconnects with backoff.
pub async fn listen(
    pool: sqlx::PgPool,
    cache: Arc<SessionCache>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    // Connections of their own (the listening one and one to send pings), outside the pool
    // requests use: a pool exhausted by requests neither delays the channel nor is made smaller
    // by it.
    let options = pool.connect_options().as_ref().clone();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .min_connections(0)
        .acquire_timeout(PING_TIMEOUT)
        .connect_lazy_with(options);
    listen_on(&pool, &cache, stop).await;
    pool.close().await;
}

async fn listen_on(
    pool: &sqlx::PgPool,
    cache: &Arc<SessionCache>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    use sqlx::postgres::PgListener;
    let mut delay = Duration::from_millis(100);
    let mut nonce = [0u8; 8];
    let _ = getrandom::fill(&mut nonce);
    let nonce = nonce.iter().map(|b| format!("{b:02x}")).collect::<String>();
    loop {
        cache.set_usable(false);
        let connected = async {
            let mut listener = PgListener::connect_with(pool).await?;
            listener.listen(CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let connected = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            connected = tokio::time::timeout(PING_TIMEOUT * 2, connected) => connected,
        };
        let listener = match connected {
            Ok(Ok(listener)) => listener,
            failed => {
                let error = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => "timed out".to_string(),
                };
                tracing::warn!(%error, "cannot listen for session changes; every token is checked in the database meanwhile");
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => return,
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        delay = Duration::from_millis(100);
        cache.set_usable(true);
        tracing::debug!("listening for session changes");
        let echoed = tokio::sync::watch::channel(0u64);
        // Either ends the listening: the connection lost, or a ping not echoed in time. The
        // listener is dropped with the select, never used after a cancelled receive.
        let why = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            why = receive(listener, cache, &nonce, echoed.0) => why,
            why = ping(pool, &nonce, echoed.1) => why,
        };
        tracing::warn!(
            "the session changes' channel {why}; the cache is dropped until it listens again"
        );
    }
}

/// Applies notifications until the connection is lost; a ping's echo is passed to `echoed`.
async fn receive(
    mut listener: sqlx::postgres::PgListener,
    cache: &SessionCache,
    nonce: &str,
    echoed: tokio::sync::watch::Sender<u64>,
) -> &'static str {
    loop {
        match listener.try_recv().await {
            Ok(Some(notification)) => match parse_payload(notification.payload()) {
                Payload::Changed(change) => cache.changed(change),
                Payload::Everything => cache.flush(),
                Payload::Ping(p) => {
                    let echo = p.strip_prefix(nonce).and_then(|n| n.strip_prefix(':'));
                    if let Some(Ok(n)) = echo.map(str::parse) {
                        echoed.send_replace(n);
                    }
                }
            },
            Ok(None) | Err(_) => return "was interrupted",
        }
    }
}

/// Sends a numbered ping every [`PING_EVERY`] and returns when one was not echoed within
/// [`PING_TIMEOUT`] (or could not be sent).
async fn ping(
    pool: &sqlx::PgPool,
    nonce: &str,
    mut echoed: tokio::sync::watch::Receiver<u64>,
) -> &'static str {
    let mut n = 0u64;
    loop {
        tokio::time::sleep(PING_EVERY).await;
        n += 1;
        let payload = format!("ping:{nonce}:{n}");
        let sent = tokio::time::timeout(PING_TIMEOUT, async {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(CHANNEL)
                .bind(&payload)
                .execute(pool)
                .await?;
            echoed
                .wait_for(|echo| *echo == n)
                .await
                .map_err(|_| sqlx::Error::PoolClosed)?;
            Ok::<_, sqlx::Error>(())
        })
        .await;
        if !matches!(sent, Ok(Ok(()))) {
            return "did not echo a ping in time";
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str) -> LiveUser {
        LiveUser {
            id: id.into(),
            email: "a@example.com".into(),
            name: "A".into(),
            is_active: true,
            is_verified: true,
            is_superuser: false,
            created_at: 0,
            updated_at: 0,
            security_stamp: 0,
            amr: "pwd".into(),
            mfa_at: None,
            passkey_at: None,
            has_password: true,
            refresh_expires_at: 1_000,
        }
    }

    fn cache() -> SessionCache {
        let cache = SessionCache::default();
        cache.configure(Duration::from_secs(60), 100);
        cache
    }

    #[test]
    fn a_kept_check_is_served_until_its_account_changes() {
        let cache = cache();
        let ticket = cache.get("s1", 0).unwrap_err().unwrap();
        cache.keep(ticket, "s1", user("u1"));
        assert_eq!(cache.get("s1", 0).unwrap().id, "u1");
        cache.changed(Changed::Account("u2".into()));
        assert!(cache.get("s1", 0).is_ok(), "another account's change");
        cache.changed(Changed::Account("u1".into()));
        assert!(cache.get("s1", 0).is_err());
    }

    #[test]
    fn a_read_that_raced_a_change_is_not_served() {
        let cache = cache();
        let ticket = cache.get("s1", 0).unwrap_err().unwrap();
        // The change commits while the read is under way; the read's stale answer arrives last.
        cache.changed(Changed::Session("s1".into()));
        cache.keep(ticket, "s1", user("u1"));
        assert!(cache.get("s1", 0).is_err());
        let ticket = cache.get("s1", 0).unwrap_err().unwrap();
        cache.keep(ticket, "s1", user("u1"));
        assert!(cache.get("s1", 0).is_ok(), "a read after the change is");
    }

    #[test]
    fn expiry_flush_ttl_and_the_channel() {
        let cache = cache();
        let ticket = cache.get("s1", 0).unwrap_err().unwrap();
        cache.keep(ticket, "s1", user("u1"));
        assert!(cache.get("s1", 999).is_ok());
        assert!(cache.get("s1", 1_000).is_err(), "the session's own expiry");
        let ticket = cache.get("s1", 0).unwrap_err().unwrap();
        cache.keep(ticket, "s1", user("u1"));
        cache.flush();
        assert!(cache.get("s1", 0).is_err());
        let ticket = cache.get("s1", 0).unwrap_err().unwrap();
        cache.set_usable(false);
        cache.keep(ticket, "s1", user("u1"));
        assert!(matches!(cache.get("s1", 0), Err(None)), "unused while down");
        cache.set_usable(true);
        assert!(
            cache.get("s1", 0).is_err(),
            "a read from before is not kept"
        );
        cache.configure(Duration::ZERO, 100);
        assert!(
            matches!(cache.get("s1", 0), Err(None)),
            "a TTL of 0 keeps nothing"
        );
    }

    #[test]
    fn changes_are_pruned_but_still_count_within_the_ttl() {
        let cache = cache();
        let ticket = cache.get("s1", 0).unwrap_err().unwrap();
        cache.keep(ticket, "s1", user("u1"));
        cache.changed(Changed::Account("u1".into()));
        for i in 0..5_000 {
            cache.changed(Changed::Account(format!("other{i}")));
        }
        assert!(cache.get("s1", 0).is_err());
        assert_eq!(parse_payload("*"), Payload::Everything);
        assert_eq!(parse_payload(&"x".repeat(65)), Payload::Everything);
        assert_eq!(parse_payload("ping:ab:3"), Payload::Ping("ab:3"));
        assert_eq!(
            parse_payload("u1"),
            Payload::Changed(Changed::Account("u1".into()))
        );
    }
}
