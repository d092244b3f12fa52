//! The `users` table, one account at a time (what requests do); what reads or writes the
//! whole table (the import, the start-up scan, the upgrade backfill) is in `bulk`.

use super::{Db, Tx, read, with_pool, with_tx};

/// An account as stored. `email` is normalised (trimmed, lower-cased).
#[derive(Clone, sqlx::FromRow)]
pub struct User {
    pub id: String,
    pub email: String,
    pub name: String,
    pub password_hash: String,
    pub is_active: bool,
    pub is_verified: bool,
    pub is_superuser: bool,
    pub created_at: i64,
    pub updated_at: i64,
    /// Moves on every change of email, password, active or superuser flag (see the migration
    /// `security_stamp`): what sessions and one-time tokens are checked against.
    pub security_stamp: i64,
}

impl User {
    /// Whether the account has a password: an empty hash means none (a passkey-only account).
    pub fn has_password(&self) -> bool {
        !self.password_hash.is_empty()
    }
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the hash, never the address: this may reach a log.
        f.debug_struct("User")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

macro_rules! columns {
    () => {
        "id, email, name, password_hash, is_active, is_verified, is_superuser, created_at, updated_at, \
         security_stamp"
    };
}

/// Binds every column of `user`, in the order of `columns!()`, to `$1` .. `$10`, and its
/// folded name to `$11`.
macro_rules! bind_user {
    ($query:expr, $user:expr) => {
        $query
            .bind(&$user.id)
            .bind(&$user.email)
            .bind(&$user.name)
            .bind(&$user.password_hash)
            .bind($user.is_active)
            .bind($user.is_verified)
            .bind($user.is_superuser)
            .bind($user.created_at)
            .bind($user.updated_at)
            .bind($user.security_stamp)
            .bind(search_folded(&$user.name))
    };
}

// Here, after the column macros, which it uses.
mod bulk;

pub use bulk::{backfill_after_upgrade, insert_if_absent, insert_many, max_bcrypt_cost};

/// Case-folds text for search the same way on every backend: Unicode lower case, then NFC
/// (control characters dropped: no name has them, and PostgreSQL text cannot hold NUL).
pub fn search_folded(text: &str) -> String {
    let printable: String = text.chars().filter(|c| !c.is_control()).collect();
    crate::domain::nfc(&printable.to_lowercase())
}

/// Inserts a new account. A taken email fails with a unique violation (see `db::is_unique_violation`).
pub async fn insert(tx: &mut Tx, user: &User) -> Result<(), sqlx::Error> {
    let sql = concat!(
        "INSERT INTO users (",
        columns!(),
        ", name_search) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
    );
    with_tx!(tx, conn => bind_user!(sqlx::query(sql), user)
        .execute(conn)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(())
}

pub async fn find_by_email(db: &Db, email: &str) -> Result<Option<User>, sqlx::Error> {
    let sql = concat!("SELECT ", columns!(), " FROM users WHERE email = $1");
    read!(db, pool => sqlx::query_as(sql).bind(email).fetch_optional(pool).await)
}

pub async fn find_by_id(db: &Db, id: &str) -> Result<Option<User>, sqlx::Error> {
    if !super::can_be_stored(id) {
        return Ok(None);
    }
    let sql = concat!("SELECT ", columns!(), " FROM users WHERE id = $1");
    read!(db, pool => sqlx::query_as(sql).bind(id).fetch_optional(pool).await)
}

/// An account's address, inside a transaction.
pub async fn email_in(tx: &mut Tx, id: &str) -> Result<Option<String>, sqlx::Error> {
    if !super::can_be_stored(id) {
        return Ok(None);
    }
    let sql = "SELECT email FROM users WHERE id = $1";
    with_tx!(tx, conn => sqlx::query_scalar(sql).bind(id).fetch_optional(conn).await)
}

/// The changes a profile update may make; `None` leaves a column as it is.
#[derive(Debug, Default)]
pub struct ProfileChanges<'a> {
    pub name: Option<&'a str>,
    pub email: Option<&'a str>,
    /// Set `is_verified` to false (the email changed).
    pub unverify: bool,
}

/// The condition that the caller's session `$n` is still a live session of the account being
/// written (revoking a session stops the requests it has under way from changing anything).
macro_rules! caller_session_live {
    ($n:literal) => {
        concat!(
            "EXISTS (SELECT 1 FROM sessions s WHERE s.id = ",
            $n,
            " AND s.user_id = users.id AND s.revoked_at IS NULL)"
        )
    };
}

/// Applies `changes` and returns the updated row, if the account is still at `expected_stamp`
/// and `session_id` is still one of its live sessions (`None` otherwise: gone, credentials
/// changed, or the session revoked meanwhile). A new email moves the security stamp. A taken
/// email fails with a unique violation.
pub async fn update_profile(
    tx: &mut Tx,
    id: &str,
    expected_stamp: i64,
    session_id: &str,
    changes: &ProfileChanges<'_>,
    now: i64,
) -> Result<Option<User>, sqlx::Error> {
    let sql = concat!(
        "UPDATE users SET name = COALESCE($2, name), name_search = COALESCE($6, name_search), \
         email = COALESCE($3, email), \
         is_verified = CASE WHEN $4 THEN FALSE ELSE is_verified END, \
         security_stamp = security_stamp + CASE WHEN $3 IS NOT NULL AND $3 <> email THEN 1 ELSE 0 END, \
         updated_at = $5 WHERE id = $1 AND security_stamp = $7 AND ",
        caller_session_live!("$8"),
        " RETURNING ",
        columns!()
    );
    tx.account_changed(id);
    with_tx!(tx, conn => sqlx::query_as(sql)
        .bind(id)
        .bind(changes.name)
        .bind(changes.email)
        .bind(changes.unverify)
        .bind(now)
        .bind(changes.name.map(search_folded))
        .bind(expected_stamp)
        .bind(session_id)
        .fetch_optional(conn)
        .await)
}

/// Replaces the password hash, but only if it is still `old_hash` (a concurrent password change
/// wins over a rehash at login).
pub async fn replace_password_hash(
    db: &Db,
    id: &str,
    old_hash: &str,
    new_hash: &str,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let sql =
        "UPDATE users SET password_hash = $3, updated_at = $4 WHERE id = $1 AND password_hash = $2";
    let done = with_pool!(db, pool => sqlx::query(sql)
        .bind(id)
        .bind(old_hash)
        .bind(new_hash)
        .bind(now)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))?;
    db.sessions_changed(super::session_cache::Changed::Account(id.to_owned()));
    Ok(done == 1)
}

/// Deletes the account on its own request, inside `tx` (with the audit event that records it):
/// only while its credentials are still at `expected_stamp` and `session_id` is one of its live
/// sessions. Its sessions and tokens go with it (ON DELETE CASCADE). Returns whether it was
/// deleted.
pub async fn delete_own_in(
    tx: &mut Tx,
    id: &str,
    expected_stamp: i64,
    session_id: &str,
) -> Result<bool, sqlx::Error> {
    let sql = concat!(
        "DELETE FROM users WHERE id = $1 AND security_stamp = $2 AND ",
        caller_session_live!("$3")
    );
    tx.account_changed(id);
    let done = with_tx!(tx, conn => sqlx::query(sql)
        .bind(id)
        .bind(expected_stamp)
        .bind(session_id)
        .execute(conn)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(done == 1)
}

/// Deletes the account inside `tx`; its sessions go with it (ON DELETE CASCADE). Returns its
/// address if it was deleted.
pub async fn delete_in(tx: &mut Tx, id: &str) -> Result<Option<String>, sqlx::Error> {
    if !super::can_be_stored(id) {
        return Ok(None);
    }
    let sql = "DELETE FROM users WHERE id = $1 RETURNING email";
    tx.account_changed(id);
    with_tx!(tx, conn => sqlx::query_scalar(sql).bind(id).fetch_optional(conn).await)
}

/// Marks the account verified, if its address is still `email` and its credentials have not
/// changed since `stamp`. Returns the updated row.
pub async fn mark_verified(
    tx: &mut Tx,
    id: &str,
    email: &str,
    stamp: i64,
    now: i64,
) -> Result<Option<User>, sqlx::Error> {
    let sql = concat!(
        "UPDATE users SET is_verified = TRUE, updated_at = $3 \
         WHERE id = $1 AND email = $2 AND security_stamp = $4 RETURNING ",
        columns!()
    );
    tx.account_changed(id);
    with_tx!(tx, conn => sqlx::query_as(sql)
        .bind(id)
        .bind(email)
        .bind(now)
        .bind(stamp)
        .fetch_optional(conn)
        .await)
}

/// A new password hash, set only if the account is still at `expected_stamp` and, for a reset,
/// still has the address the link was mailed to (which it then marks verified: the link proved
/// it), or, for a change by the user, the caller's session is still live. Moves the security
/// stamp; returns the updated row.
#[derive(Debug)]
pub struct NewPassword<'a> {
    pub id: &'a str,
    pub hash: &'a str,
    pub expected_stamp: i64,
    /// A reset: the address the link went to, which must still be the account's.
    pub reset_email: Option<&'a str>,
    /// A change by the user: the session it is made from.
    pub session_id: Option<&'a str>,
}

pub async fn set_password_hash(
    tx: &mut Tx,
    change: &NewPassword<'_>,
    now: i64,
) -> Result<Option<User>, sqlx::Error> {
    let sql = concat!(
        "UPDATE users SET password_hash = $2, is_verified = is_verified OR $3 IS NOT NULL, \
         security_stamp = security_stamp + 1, updated_at = $4 \
         WHERE id = $1 AND security_stamp = $5 AND ($3 IS NULL OR email = $3) \
         AND ($6 IS NULL OR ",
        caller_session_live!("$6"),
        ") RETURNING ",
        columns!()
    );
    tx.account_changed(change.id);
    with_tx!(tx, conn => sqlx::query_as(sql)
        .bind(change.id)
        .bind(change.hash)
        .bind(change.reset_email)
        .bind(now)
        .bind(change.expected_stamp)
        .bind(change.session_id)
        .fetch_optional(conn)
        .await)
}

/// Locks the account's row until the transaction ends (PostgreSQL; SQLite's write lock is
/// already held), so that changes that must see each other's effect (removing the last
/// credentials) take turns.
pub async fn lock_in(tx: &mut Tx, id: &str) -> Result<(), sqlx::Error> {
    let sql = "UPDATE users SET updated_at = updated_at WHERE id = $1";
    with_tx!(tx, conn => sqlx::query(sql).bind(id).execute(conn).await.map(|_| ()))
}

/// Makes the account passwordless (an empty hash), moving the stamp, if it is still at
/// `expected_stamp`, still has a password, and `session_id` is still one of its live sessions.
/// Returns the updated row.
pub async fn remove_password(
    tx: &mut Tx,
    id: &str,
    expected_stamp: i64,
    session_id: &str,
    now: i64,
) -> Result<Option<User>, sqlx::Error> {
    let sql = concat!(
        "UPDATE users SET password_hash = '', security_stamp = security_stamp + 1, updated_at = $3 \
         WHERE id = $1 AND security_stamp = $2 AND password_hash <> '' AND ",
        caller_session_live!("$4"),
        " RETURNING ",
        columns!()
    );
    tx.account_changed(id);
    with_tx!(tx, conn => sqlx::query_as(sql)
        .bind(id)
        .bind(expected_stamp)
        .bind(now)
        .bind(session_id)
        .fetch_optional(conn)
        .await)
}

/// Moves the account's security stamp for a credential change that touches no column of
/// `users` (a second factor added), if it is still at `expected_stamp` and `session_id` is still
/// one of its live sessions. Returns the new stamp.
pub async fn move_stamp(
    tx: &mut Tx,
    id: &str,
    expected_stamp: i64,
    session_id: &str,
    now: i64,
) -> Result<Option<i64>, sqlx::Error> {
    let sql = concat!(
        "UPDATE users SET security_stamp = security_stamp + 1, updated_at = $3 \
         WHERE id = $1 AND security_stamp = $2 AND ",
        caller_session_live!("$4"),
        " RETURNING security_stamp"
    );
    tx.account_changed(id);
    with_tx!(tx, conn => sqlx::query_scalar(sql)
        .bind(id)
        .bind(expected_stamp)
        .bind(now)
        .bind(session_id)
        .fetch_optional(conn)
        .await)
}

/// `%` and `_` in a search are literal.
fn like_pattern(folded: &str) -> String {
    let escaped = folded
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}

/// A page of accounts, newest first, optionally those whose email or name contains `q`
/// (case-insensitively, folded by [`search_folded`] on both sides, so both backends agree; an
/// internationalised domain is also looked for in its IDNA form, as addresses are stored); and
/// how many match in all.
pub async fn list(
    db: &Db,
    q: Option<&str>,
    limit: i64,
    offset: i64,
) -> Result<(Vec<User>, i64), sqlx::Error> {
    macro_rules! matching {
        () => {
            " FROM users WHERE ($1 IS NULL OR email LIKE $1 ESCAPE '\\' \
             OR email LIKE $2 ESCAPE '\\' OR name_search LIKE $1 ESCAPE '\\')"
        };
    }
    let folded = q.map(search_folded);
    let pattern = folded.as_deref().map(like_pattern);
    let idna = folded
        .as_deref()
        .filter(|f| !f.is_ascii())
        .and_then(|f| idna::domain_to_ascii(f).ok())
        .map(|ascii| like_pattern(&ascii));
    let page = concat!(
        "SELECT ",
        columns!(),
        matching!(),
        " ORDER BY created_at DESC, id DESC LIMIT $3 OFFSET $4"
    );
    let count = concat!("SELECT COUNT(*)", matching!());
    let items = read!(db, pool => sqlx::query_as(page)
        .bind(&pattern)
        .bind(&idna)
        .bind(limit)
        .bind(offset)
        .fetch_all(pool)
        .await)?;
    let total = read!(db, pool => sqlx::query_scalar(count)
        .bind(&pattern)
        .bind(&idna)
        .fetch_one(pool)
        .await)?;
    Ok((items, total))
}

/// The changes an administrator may make; `None` leaves a column as it is.
#[derive(Debug, Default)]
pub struct AdminChanges<'a> {
    pub name: Option<&'a str>,
    pub email: Option<&'a str>,
    pub is_active: Option<bool>,
    pub is_verified: Option<bool>,
    pub is_superuser: Option<bool>,
}

/// Applies an administrator's changes, if the account is still at `expected_stamp`; returns the
/// updated row, `None` if there is no such user or its stamp moved. A change of email, active or
/// superuser flag moves the security stamp.
pub async fn admin_update(
    tx: &mut Tx,
    id: &str,
    expected_stamp: i64,
    c: &AdminChanges<'_>,
    now: i64,
) -> Result<Option<User>, sqlx::Error> {
    let sql = concat!(
        "UPDATE users SET name = COALESCE($2, name), name_search = COALESCE($8, name_search), \
         email = COALESCE($3, email), \
         is_active = COALESCE($4, is_active), is_verified = COALESCE($5, is_verified), \
         is_superuser = COALESCE($6, is_superuser), \
         security_stamp = security_stamp + CASE WHEN ($3 IS NOT NULL AND $3 <> email) \
             OR ($4 IS NOT NULL AND $4 <> is_active) OR ($6 IS NOT NULL AND $6 <> is_superuser) \
             THEN 1 ELSE 0 END, \
         updated_at = $7 WHERE id = $1 AND security_stamp = $9 RETURNING ",
        columns!()
    );
    tx.account_changed(id);
    with_tx!(tx, conn => sqlx::query_as(sql)
        .bind(id)
        .bind(c.name)
        .bind(c.email)
        .bind(c.is_active)
        .bind(c.is_verified)
        .bind(c.is_superuser)
        .bind(now)
        .bind(c.name.map(search_folded))
        .bind(expected_stamp)
        .fetch_optional(conn)
        .await)
}

/// Makes an existing account a superuser, inside `tx` (with the audit event that records it).
/// The flag is a credential: the stamp moves (outstanding links and logins in flight die), and
/// the account's live sessions are carried forward to it, as an administrator's change does.
pub async fn promote_in(tx: &mut Tx, email: &str, now: i64) -> Result<Promotion, sqlx::Error> {
    let sql = "SELECT id, security_stamp, is_superuser FROM users WHERE email = $1";
    let found: Option<(String, i64, bool)> =
        with_tx!(tx, conn => sqlx::query_as(sql).bind(email).fetch_optional(conn).await)?;
    let Some((id, stamp, already)) = found else {
        return Ok(Promotion::NoAccount);
    };
    if already {
        return Ok(Promotion::Already(id));
    }
    let sql = "UPDATE users SET is_superuser = TRUE, updated_at = $3, \
               security_stamp = security_stamp + 1 WHERE id = $1 AND security_stamp = $2";
    tx.account_changed(&id);
    let done = with_tx!(tx, conn => sqlx::query(sql)
        .bind(&id)
        .bind(stamp)
        .bind(now)
        .execute(conn)
        .await
        .map(|r| r.rows_affected()))?;
    if done != 1 {
        // A concurrent credential change moved the stamp first; promoting over it would need a
        // fresh look, and the command can simply be run again.
        return Ok(Promotion::Raced);
    }
    super::sessions::carry_forward(tx, &id, stamp, stamp + 1, None).await?;
    Ok(Promotion::Promoted(id))
}

/// What [`promote_in`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Promotion {
    NoAccount,
    /// The account (its id) was a superuser already: nothing changed.
    Already(String),
    Promoted(String),
    /// The account changed meanwhile: nothing changed.
    Raced,
}
