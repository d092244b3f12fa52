//! The `sessions` table: one row per login, holding the state of its refresh-token chain.

use super::session_cache::Changed;
use super::{Db, Tx, read, with_pool, with_tx};
use sqlx::Row as _;

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Session {
    pub id: String,
    pub user_id: String,
    pub refresh_generation: i64,
    pub refresh_jti_hash: String,
    pub previous_jti_hash: Option<String>,
    pub refreshed_at: i64,
    pub refresh_expires_at: i64,
    pub created_at: i64,
    pub last_used_at: i64,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
    /// The account's security stamp when the session was opened (or last carried forward): the
    /// session is live only while it is still the account's.
    pub user_stamp: i64,
    /// How the session was authenticated: RFC 8176 `amr` values, space-separated (`pwd`,
    /// `pwd otp mfa`, `pwd mfa`).
    pub amr: String,
    /// When the user authenticated (the password check); `None` for sessions older than this
    /// column: then `created_at`.
    pub auth_time: Option<i64>,
    /// When the session last passed the second factor (login, enrolment, step-up).
    pub mfa_at: Option<i64>,
    /// When the session last proved a passkey (a sign-in with user verification, a step-up).
    pub passkey_at: Option<i64>,
}

/// A session, and whether its account's credentials are still those it was opened under (and
/// the account still active).
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct SessionState {
    #[sqlx(flatten)]
    pub session: Session,
    pub credentials_current: bool,
}

/// The condition, on a row of `sessions`, that its account is active and its credentials have
/// not changed since the session was opened.
macro_rules! credentials_current {
    () => {
        "EXISTS (SELECT 1 FROM users u WHERE u.id = sessions.user_id \
         AND u.security_stamp = sessions.user_stamp AND u.is_active)"
    };
}

macro_rules! columns {
    () => {
        "id, user_id, refresh_generation, refresh_jti_hash, previous_jti_hash, \
    refreshed_at, refresh_expires_at, created_at, last_used_at, expires_at, revoked_at, user_agent, ip, \
    user_stamp, amr, auth_time, mfa_at, passkey_at"
    };
}

/// Inserts a session inside `tx` (with its `user.signed_in` event), if its account is still
/// active at `s.user_stamp` (a login whose credentials changed while its password was being
/// checked opens nothing): returns whether it was inserted. On PostgreSQL the account row is
/// read `FOR SHARE`: a credential change that is under way but not yet committed is waited for
/// and then seen, so a login racing it cannot open a session under the old stamp after the
/// change has carried the others forward.
pub async fn insert_in(tx: &mut Tx, s: &Session) -> Result<bool, sqlx::Error> {
    let sql = insert_sql(tx.is_postgres());
    let done = with_tx!(tx, conn => bind_session!(sqlx::query(sql), s)
        .execute(conn)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(done == 1)
}

fn insert_sql(postgres: bool) -> &'static str {
    macro_rules! insert_sql {
        ($lock:literal) => {
            concat!(
                "INSERT INTO sessions (",
                columns!(),
                ") SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18 \
                 FROM users WHERE id = $2 AND security_stamp = $14 AND is_active",
                $lock
            )
        };
    }
    if postgres {
        insert_sql!(" FOR SHARE")
    } else {
        insert_sql!("")
    }
}

/// Binds every column of a session, in the order of `columns!()`.
macro_rules! bind_session {
    ($query:expr, $s:expr) => {
        $query
            .bind(&$s.id)
            .bind(&$s.user_id)
            .bind($s.refresh_generation)
            .bind(&$s.refresh_jti_hash)
            .bind(&$s.previous_jti_hash)
            .bind($s.refreshed_at)
            .bind($s.refresh_expires_at)
            .bind($s.created_at)
            .bind($s.last_used_at)
            .bind($s.expires_at)
            .bind($s.revoked_at)
            .bind(&$s.user_agent)
            .bind(&$s.ip)
            .bind($s.user_stamp)
            .bind(&$s.amr)
            .bind($s.auth_time)
            .bind($s.mfa_at)
            .bind($s.passkey_at)
    };
}
use bind_session;

/// Rows a statement of [`insert_many`] writes: 18 parameters a row, 18,000 a statement, under
/// PostgreSQL's limit of 65,535 and SQLite's default of 32,766.
const INSERT_MANY_BATCH: usize = 1000;

/// Inserts many sessions at once, for bulk loads (the benchmark's live sessions): every column of
/// each [`Session`], in multi-row INSERTs of [`INSERT_MANY_BATCH`] rows, all in one transaction.
/// Unlike [`insert_in`] it checks nothing and records no event: each `user_stamp` must be its
/// account's current stamp for the session to be live. Returns the number of rows inserted.
pub async fn insert_many(db: &Db, sessions: &[Session]) -> Result<u64, sqlx::Error> {
    let mut tx = db.begin().await?;
    let mut inserted = 0;
    for batch in sessions.chunks(INSERT_MANY_BATCH) {
        inserted += with_tx!(&mut tx, conn => {
            let mut query = sqlx::QueryBuilder::new(concat!("INSERT INTO sessions (", columns!(), ") "));
            query.push_values(batch, |mut row, s| {
                row.push_bind(&s.id)
                    .push_bind(&s.user_id)
                    .push_bind(s.refresh_generation)
                    .push_bind(&s.refresh_jti_hash)
                    .push_bind(&s.previous_jti_hash)
                    .push_bind(s.refreshed_at)
                    .push_bind(s.refresh_expires_at)
                    .push_bind(s.created_at)
                    .push_bind(s.last_used_at)
                    .push_bind(s.expires_at)
                    .push_bind(s.revoked_at)
                    .push_bind(&s.user_agent)
                    .push_bind(&s.ip)
                    .push_bind(s.user_stamp)
                    .push_bind(&s.amr)
                    .push_bind(s.auth_time)
                    .push_bind(s.mfa_at)
                    .push_bind(s.passkey_at);
            });
            query.build().execute(conn).await.map(|r| r.rows_affected())
        })?;
    }
    tx.commit().await?;
    Ok(inserted)
}

/// A session, with whether its account's credentials are still current.
pub async fn find(db: &Db, id: &str) -> Result<Option<SessionState>, sqlx::Error> {
    let sql = concat!(
        "SELECT ",
        columns!(),
        ", ",
        credentials_current!(),
        " AS credentials_current FROM sessions WHERE id = $1"
    );
    read!(db, pool => sqlx::query_as(sql).bind(id).fetch_optional(pool).await)
}

/// The account of a live session, as the check of an access token reads it: without its
/// password hash, which is read only where a password is checked.
#[derive(Clone, sqlx::FromRow)]
pub struct LiveUser {
    pub id: String,
    pub email: String,
    pub name: String,
    pub is_active: bool,
    pub is_verified: bool,
    pub is_superuser: bool,
    pub created_at: i64,
    pub updated_at: i64,
    pub security_stamp: i64,
    /// The session's `amr`, `mfa_at` and `passkey_at` (see [`Session`]): what the policy and
    /// step-up read.
    pub amr: String,
    pub mfa_at: Option<i64>,
    pub passkey_at: Option<i64>,
    /// Whether the account has a password (an empty hash means none: a passkey-only account).
    pub has_password: bool,
    /// The session's sliding end when read (the session cache serves the check no later).
    pub refresh_expires_at: i64,
}

impl std::fmt::Debug for LiveUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the address: this may reach a log.
        f.debug_struct("LiveUser")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// The user of a session that is live at `now` (not revoked, not expired, opened under the
/// account's current credentials), in one round trip.
pub(super) const FIND_LIVE_USER: &str = "SELECT u.id, u.email, u.name, u.is_active, \
    u.is_verified, u.is_superuser, u.created_at, u.updated_at, u.security_stamp, s.amr, s.mfa_at, \
    s.passkey_at, u.password_hash <> '' AS has_password, s.refresh_expires_at \
    FROM sessions s JOIN users u ON u.id = s.user_id \
    WHERE s.id = $1 AND s.revoked_at IS NULL AND s.refresh_expires_at > $2 \
    AND s.user_stamp = u.security_stamp";

/// A [`LiveUser`] from a row of [`FIND_LIVE_USER`], whichever driver read it: `$get` is sqlx's
/// `try_get` or rusqlite's `get` (both take a column index and return a `Result`).
macro_rules! live_user_from_row {
    ($row:expr, $get:ident) => {
        $crate::db::sessions::LiveUser {
            id: $row.$get(0)?,
            email: $row.$get(1)?,
            name: $row.$get(2)?,
            is_active: $row.$get(3)?,
            is_verified: $row.$get(4)?,
            is_superuser: $row.$get(5)?,
            created_at: $row.$get(6)?,
            updated_at: $row.$get(7)?,
            security_stamp: $row.$get(8)?,
            amr: $row.$get(9)?,
            mfa_at: $row.$get(10)?,
            passkey_at: $row.$get(11)?,
            has_password: $row.$get(12)?,
            refresh_expires_at: $row.$get(13)?,
        }
    };
}
pub(super) use live_user_from_row;

/// The user of a session that is live at `now`: this runs on every authenticated request.
/// A check made in the last SESSION_CACHE_MS is answered from the process's cache
/// (`session_cache`: never one read before a change of the account or the session). Otherwise,
/// on a SQLite file it is read on rusqlite connections of their own, on two reader threads of
/// their own, never on an async worker (see `sqlite_read`); anything unexpected there, and
/// PostgreSQL, take sqlx. Both read [`FIND_LIVE_USER`] through `live_user_from_row!`.
///
/// Why not sqlx alone: GET /me against GET /health/live, back to back, `oha -z 10s -c 32`,
/// release build, SQLite, the load generator on the same 2 shared vCPUs, three alternating runs
/// each: sqlx alone 17,900-19,500 req/s /me, 26-31% of the trivial route; these reader
/// threads 30,200-36,400 req/s, 52-64%. (The same reads on `spawn_blocking`: 36-51%; run inline
/// on the request's task, as before: 36-76%, noisy.) sqlx's SQLite driver hands each
/// query and each row to its connection's worker thread and back through channels; here one
/// message goes each way.
pub async fn find_live_user(
    db: &Db,
    session_id: &str,
    now: i64,
) -> Result<Option<LiveUser>, sqlx::Error> {
    let ticket = match db.checks.get(session_id, now) {
        Ok(cached) => return Ok(Some(LiveUser::clone(&cached))),
        Err(ticket) => ticket,
    };
    let found = read_live_user(db, session_id, now).await?;
    if let (Some(ticket), Some(user)) = (ticket, &found) {
        db.checks.keep(ticket, session_id, user.clone());
    }
    Ok(found)
}

async fn read_live_user(
    db: &Db,
    session_id: &str,
    now: i64,
) -> Result<Option<LiveUser>, sqlx::Error> {
    if let super::Pool::Sqlite(super::SqliteDb {
        readers: Some(readers),
        ..
    }) = &db.pool
        && let Some(found) = readers.live_user(session_id, now).await
    {
        return Ok(found);
    }
    read!(db, pool => sqlx::query(FIND_LIVE_USER)
        .bind(session_id)
        .bind(now)
        .try_map(LiveUserRow::live_user)
        .fetch_optional(pool)
        .await)
}

/// A row of [`FIND_LIVE_USER`] on either backend, as a [`LiveUser`].
trait LiveUserRow: Sized {
    fn live_user(self) -> Result<LiveUser, sqlx::Error>;
}

impl LiveUserRow for sqlx::sqlite::SqliteRow {
    fn live_user(self) -> Result<LiveUser, sqlx::Error> {
        Ok(live_user_from_row!(self, try_get))
    }
}

impl LiveUserRow for sqlx::postgres::PgRow {
    fn live_user(self) -> Result<LiveUser, sqlx::Error> {
        Ok(live_user_from_row!(self, try_get))
    }
}

/// The new state of a session's chain after a rotation.
#[derive(Debug)]
pub struct Rotation<'a> {
    pub session_id: &'a str,
    /// The generation and hash the caller saw as live; the rotation happens only if they still are.
    pub expected_generation: i64,
    pub expected_jti_hash: &'a str,
    pub new_jti_hash: &'a str,
    pub now: i64,
    pub new_refresh_expires_at: i64,
    pub user_agent: Option<&'a str>,
    pub ip: Option<&'a str>,
}

/// Spends the live refresh token and makes the next generation live, in one conditional
/// statement: of any number of concurrent rotations of one token, on any number of instances,
/// exactly one succeeds (returns true); none does once the account's credentials changed.
pub async fn rotate(db: &Db, r: &Rotation<'_>) -> Result<bool, sqlx::Error> {
    let sql = concat!(
        "UPDATE sessions SET refresh_generation = refresh_generation + 1, \
         previous_jti_hash = refresh_jti_hash, refresh_jti_hash = $4, \
         refreshed_at = $5, last_used_at = $5, refresh_expires_at = $6, \
         user_agent = COALESCE($7, user_agent), ip = COALESCE($8, ip) \
         WHERE id = $1 AND refresh_generation = $2 AND refresh_jti_hash = $3 \
         AND revoked_at IS NULL AND refresh_expires_at > $5 AND expires_at > $5 AND ",
        credentials_current!()
    );
    let done = with_pool!(db, pool => sqlx::query(sql)
        .bind(r.session_id)
        .bind(r.expected_generation)
        .bind(r.expected_jti_hash)
        .bind(r.new_jti_hash)
        .bind(r.now)
        .bind(r.new_refresh_expires_at)
        .bind(r.user_agent)
        .bind(r.ip)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(done == 1)
}

const REVOKE_ONE: &str = "UPDATE sessions SET revoked_at = $3 \
    WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL \
    AND refresh_expires_at > $3 AND expires_at > $3";

/// Revokes one live session of a user inside `tx` (with the audit event that records it).
/// Returns false if it was not a live session of that user (unknown, someone else's, already
/// revoked, or expired).
pub async fn revoke_in(
    tx: &mut Tx,
    user_id: &str,
    session_id: &str,
    now: i64,
) -> Result<bool, sqlx::Error> {
    if !super::can_be_stored(session_id) || !super::can_be_stored(user_id) {
        return Ok(false);
    }
    tx.session_changed(Changed::Session(session_id.to_owned()));
    let done = with_tx!(tx, conn => sqlx::query(REVOKE_ONE)
        .bind(session_id)
        .bind(user_id)
        .bind(now)
        .execute(conn)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(done == 1)
}

/// Revokes every live session of a user, except `keep` if given.
const REVOKE_ALL_OF_USER: &str = "UPDATE sessions SET revoked_at = $2 \
    WHERE user_id = $1 AND revoked_at IS NULL AND ($3 IS NULL OR id <> $3)";

/// Revokes every live session of a user, except `keep` if given, inside a transaction.
pub async fn revoke_all_of_user_in(
    tx: &mut Tx,
    user_id: &str,
    keep: Option<&str>,
    now: i64,
) -> Result<u64, sqlx::Error> {
    tx.account_changed(user_id);
    with_tx!(tx, conn => sqlx::query(REVOKE_ALL_OF_USER)
        .bind(user_id)
        .bind(now)
        .bind(keep)
        .execute(conn)
        .await
        .map(|r| r.rows_affected()))
}

/// Keeps the user's live sessions that were current under `old_stamp` (all of them, or only
/// `only`) live under `new_stamp`, after a credential change that they survive (an email
/// change; the session that changed the password). A session opened by a login still in flight
/// under the old stamp is not among them, and stays dead.
pub async fn carry_forward(
    tx: &mut Tx,
    user_id: &str,
    old_stamp: i64,
    new_stamp: i64,
    only: Option<&str>,
) -> Result<u64, sqlx::Error> {
    let sql = "UPDATE sessions SET user_stamp = $3 \
               WHERE user_id = $1 AND user_stamp = $2 AND revoked_at IS NULL \
               AND ($4 IS NULL OR id = $4)";
    tx.account_changed(user_id);
    with_tx!(tx, conn => sqlx::query(sql)
        .bind(user_id)
        .bind(old_stamp)
        .bind(new_stamp)
        .bind(only)
        .execute(conn)
        .await
        .map(|r| r.rows_affected()))
}

/// The live sessions of a user, newest first.
pub async fn list_live_of_user(
    db: &Db,
    user_id: &str,
    now: i64,
) -> Result<Vec<Session>, sqlx::Error> {
    let sql = concat!(
        "SELECT ",
        columns!(),
        " FROM sessions WHERE user_id = $1 AND revoked_at IS NULL AND refresh_expires_at > $2 \
         AND expires_at > $2 AND ",
        credentials_current!(),
        " ORDER BY created_at DESC, id DESC"
    );
    read!(db, pool => sqlx::query_as(sql).bind(user_id).bind(now).fetch_all(pool).await)
}

/// Records, inside a transaction, that a live session passed the second factor at `now`, with
/// the `amr` it now has.
pub async fn passed_second_factor_in(
    tx: &mut Tx,
    session_id: &str,
    amr: &str,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let sql = "UPDATE sessions SET amr = $2, mfa_at = $3 WHERE id = $1 AND revoked_at IS NULL";
    tx.session_changed(Changed::Session(session_id.to_owned()));
    let done = with_tx!(tx, conn => sqlx::query(sql)
        .bind(session_id)
        .bind(amr)
        .bind(now)
        .execute(conn)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(done == 1)
}

/// Records, inside a transaction, that a live session proved a passkey at `now`: it passed
/// the second factor (`mfa_at`, with the `amr` it now has), and, when the user was verified,
/// `passkey_at`.
pub async fn passed_passkey_in(
    tx: &mut Tx,
    session_id: &str,
    amr: &str,
    user_verified: bool,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let sql = "UPDATE sessions SET amr = $2, mfa_at = $3, \
               passkey_at = CASE WHEN $4 THEN $3 ELSE passkey_at END \
               WHERE id = $1 AND revoked_at IS NULL";
    tx.session_changed(Changed::Session(session_id.to_owned()));
    let done = with_tx!(tx, conn => sqlx::query(sql)
        .bind(session_id)
        .bind(amr)
        .bind(now)
        .bind(user_verified)
        .execute(conn)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(done == 1)
}

/// Deletes sessions that ended (revoked or expired) before `before`. Returns how many.
pub async fn purge_ended(db: &Db, before: i64) -> Result<u64, sqlx::Error> {
    let sql =
        "DELETE FROM sessions WHERE revoked_at < $1 OR refresh_expires_at < $1 OR expires_at < $1";
    with_pool!(db, pool => sqlx::query(sql).bind(before).execute(pool).await.map(|r| r.rows_affected()))
}

/// How many sessions are live at `now`: not revoked, neither their refresh chain nor the
/// session expired (for the metrics; a scan of the table, which they read at most every 15 s).
pub async fn count_live(db: &Db, now: i64) -> Result<i64, sqlx::Error> {
    let sql = "SELECT COUNT(*) FROM sessions \
               WHERE revoked_at IS NULL AND refresh_expires_at > $1 AND expires_at > $1";
    read!(db, pool => sqlx::query_scalar(sql).bind(now).fetch_one(pool).await)
}
