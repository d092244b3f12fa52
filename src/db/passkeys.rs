//! The passkey tables: `passkeys` (one registered WebAuthn credential per row: its id, the
//! library's encoding of its public key, its counter and flags, the name its user gave it) and
//! `webauthn_ceremonies` (a ceremony waiting for its answer, by the hash of its challenge).

use super::{Db, Tx, read, with_pool, with_tx};

/// A registered passkey.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Passkey {
    pub id: String,
    pub user_id: String,
    /// base64url, no padding.
    pub credential_id: String,
    /// The library's encoding of the public key and its extensions, base64.
    pub credential: String,
    pub sign_count: i64,
    pub backup_eligible: bool,
    pub backed_up: bool,
    /// Whether the user was verified when it was registered.
    pub user_verified: bool,
    /// A JSON array of transport names.
    pub transports: String,
    pub aaguid: Option<String>,
    pub name: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub counter_regressed_at: Option<i64>,
}

macro_rules! columns {
    () => {
        "id, user_id, credential_id, credential, sign_count, backup_eligible, backed_up, \
         user_verified, transports, aaguid, name, created_at, last_used_at, counter_regressed_at"
    };
}

/// Inserts a passkey. A credential id already stored (on any account) fails with a unique
/// violation (see `db::is_unique_violation`).
pub async fn insert(tx: &mut Tx, p: &Passkey) -> Result<(), sqlx::Error> {
    let sql = concat!(
        "INSERT INTO passkeys (",
        columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
    );
    with_tx!(tx, conn => sqlx::query(sql)
        .bind(&p.id)
        .bind(&p.user_id)
        .bind(&p.credential_id)
        .bind(&p.credential)
        .bind(p.sign_count)
        .bind(p.backup_eligible)
        .bind(p.backed_up)
        .bind(p.user_verified)
        .bind(&p.transports)
        .bind(&p.aaguid)
        .bind(&p.name)
        .bind(p.created_at)
        .bind(p.last_used_at)
        .bind(p.counter_regressed_at)
        .execute(conn)
        .await
        .map(|_| ()))
}

const LIST_OF_USER: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM passkeys WHERE user_id = $1 ORDER BY created_at, id"
);

/// The account's passkeys, oldest first.
pub async fn list_of_user(db: &Db, user_id: &str) -> Result<Vec<Passkey>, sqlx::Error> {
    if !super::can_be_stored(user_id) {
        return Ok(Vec::new());
    }
    read!(db, pool => sqlx::query_as(LIST_OF_USER).bind(user_id).fetch_all(pool).await)
}

const COUNT_OF_USER: &str = "SELECT COUNT(*) FROM passkeys WHERE user_id = $1";

/// How many passkeys the account has.
pub async fn count_of_user(db: &Db, user_id: &str) -> Result<i64, sqlx::Error> {
    read!(db, pool => sqlx::query_scalar(COUNT_OF_USER).bind(user_id).fetch_one(pool).await)
}

/// The same, inside a transaction.
pub async fn count_of_user_in(tx: &mut Tx, user_id: &str) -> Result<i64, sqlx::Error> {
    with_tx!(tx, conn => sqlx::query_scalar(COUNT_OF_USER).bind(user_id).fetch_one(conn).await)
}

/// How many of the account's passkeys verified the user when they were registered.
pub async fn count_user_verified(db: &Db, user_id: &str) -> Result<i64, sqlx::Error> {
    let sql = "SELECT COUNT(*) FROM passkeys WHERE user_id = $1 AND user_verified";
    read!(db, pool => sqlx::query_scalar(sql).bind(user_id).fetch_one(pool).await)
}

/// The same, inside a transaction.
pub async fn count_user_verified_in(tx: &mut Tx, user_id: &str) -> Result<i64, sqlx::Error> {
    let sql = "SELECT COUNT(*) FROM passkeys WHERE user_id = $1 AND user_verified";
    with_tx!(tx, conn => sqlx::query_scalar(sql).bind(user_id).fetch_one(conn).await)
}

/// What an account has left of its credentials.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Remaining {
    /// Its passkeys.
    pub passkeys: i64,
    /// Those of its passkeys registered with user verification.
    pub verifying_passkeys: i64,
    /// Whether it has a password.
    pub password: bool,
    /// Whether it has a confirmed TOTP authenticator.
    pub totp: bool,
}

/// What the account has left, inside a transaction (after `users::lock_in`, so that concurrent
/// removals see each other's). One query.
pub async fn remaining_in(tx: &mut Tx, user_id: &str) -> Result<Remaining, sqlx::Error> {
    let sql = "SELECT (SELECT COUNT(*) FROM passkeys WHERE user_id = $1), \
               (SELECT COUNT(*) FROM passkeys WHERE user_id = $1 AND user_verified), \
               (SELECT COUNT(*) FROM users WHERE id = $1 AND password_hash <> ''), \
               (SELECT COUNT(*) FROM mfa_totp WHERE user_id = $1 AND confirmed_at IS NOT NULL)";
    let (passkeys, verifying_passkeys, password, totp): (i64, i64, i64, i64) =
        with_tx!(tx, conn => sqlx::query_as(sql).bind(user_id).fetch_one(conn).await)?;
    Ok(Remaining {
        passkeys,
        verifying_passkeys,
        password: password > 0,
        totp: totp > 0,
    })
}

/// The passkey with this credential id (base64url), whoever's it is.
pub async fn find_by_credential_id(
    db: &Db,
    credential_id: &str,
) -> Result<Option<Passkey>, sqlx::Error> {
    if !super::can_be_stored(credential_id) {
        return Ok(None);
    }
    let sql = concat!(
        "SELECT ",
        columns!(),
        " FROM passkeys WHERE credential_id = $1"
    );
    read!(db, pool => sqlx::query_as(sql).bind(credential_id).fetch_optional(pool).await)
}

/// One of the account's passkeys, by our id.
pub async fn find_of_user(
    db: &Db,
    user_id: &str,
    id: &str,
) -> Result<Option<Passkey>, sqlx::Error> {
    if !super::can_be_stored(id) {
        return Ok(None);
    }
    let sql = concat!(
        "SELECT ",
        columns!(),
        " FROM passkeys WHERE id = $1 AND user_id = $2"
    );
    read!(db, pool => sqlx::query_as(sql).bind(id).bind(user_id).fetch_optional(pool).await)
}

/// Renames one of the account's passkeys; returns it, or `None` if it is not the account's.
pub async fn rename(
    db: &Db,
    user_id: &str,
    id: &str,
    name: &str,
) -> Result<Option<Passkey>, sqlx::Error> {
    if !super::can_be_stored(id) {
        return Ok(None);
    }
    let sql = concat!(
        "UPDATE passkeys SET name = $3 WHERE id = $1 AND user_id = $2 RETURNING ",
        columns!()
    );
    with_pool!(db, pool => sqlx::query_as(sql)
        .bind(id)
        .bind(user_id)
        .bind(name)
        .fetch_optional(pool)
        .await)
}

/// Deletes one of the account's passkeys. Returns whether it was there.
pub async fn delete(tx: &mut Tx, user_id: &str, id: &str) -> Result<bool, sqlx::Error> {
    if !super::can_be_stored(id) {
        return Ok(false);
    }
    let sql = "DELETE FROM passkeys WHERE id = $1 AND user_id = $2";
    let done = with_tx!(tx, conn => sqlx::query(sql)
        .bind(id)
        .bind(user_id)
        .execute(conn)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(done == 1)
}

/// Deletes every passkey of the account, and its ceremonies. Returns how many passkeys.
pub async fn remove_all_of_user(tx: &mut Tx, user_id: &str) -> Result<u64, sqlx::Error> {
    let sql = "DELETE FROM webauthn_ceremonies WHERE user_id = $1";
    with_tx!(tx, conn => sqlx::query(sql).bind(user_id).execute(conn).await.map(|_| ()))?;
    let sql = "DELETE FROM passkeys WHERE user_id = $1";
    with_tx!(tx, conn => sqlx::query(sql)
        .bind(user_id)
        .execute(conn)
        .await
        .map(|r| r.rows_affected()))
}

/// A use of a passkey: its new counter and backup state, if its counter is still the one the
/// assertion was checked against (of two concurrent uses, one wins). Returns whether it was
/// recorded.
#[derive(Debug)]
pub struct Use<'a> {
    pub id: &'a str,
    pub expected_count: i64,
    pub sign_count: i64,
    pub backed_up: bool,
    pub now: i64,
}

pub async fn record_use(tx: &mut Tx, u: &Use<'_>) -> Result<bool, sqlx::Error> {
    let sql = "UPDATE passkeys SET sign_count = $3, backed_up = $4, last_used_at = $5 \
               WHERE id = $1 AND sign_count = $2";
    let done = with_tx!(tx, conn => sqlx::query(sql)
        .bind(u.id)
        .bind(u.expected_count)
        .bind(u.sign_count)
        .bind(u.backed_up)
        .bind(u.now)
        .execute(conn)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(done == 1)
}

/// A passkey's stored counter, inside a transaction.
pub async fn sign_count_in(tx: &mut Tx, id: &str) -> Result<Option<i64>, sqlx::Error> {
    let sql = "SELECT sign_count FROM passkeys WHERE id = $1";
    with_tx!(tx, conn => sqlx::query_scalar(sql).bind(id).fetch_optional(conn).await)
}

/// Flags a passkey whose counter did not grow. Returns whether this is the first time.
pub async fn mark_counter_regressed(tx: &mut Tx, id: &str, now: i64) -> Result<bool, sqlx::Error> {
    let sql = "UPDATE passkeys SET counter_regressed_at = $2 \
               WHERE id = $1 AND counter_regressed_at IS NULL";
    let done = with_tx!(tx, conn => sqlx::query(sql)
        .bind(id)
        .bind(now)
        .execute(conn)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(done == 1)
}

/// A WebAuthn ceremony waiting for its answer.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Ceremony {
    /// The hex SHA-256 of its challenge's 16 bytes.
    pub challenge_hash: String,
    /// `register`, `login`, `mfa` or `step_up`.
    pub purpose: String,
    pub user_id: Option<String>,
    /// The session (`register`, `step_up`) or the mfa_token's hash (`mfa`) it is bound to.
    pub binding: Option<String>,
    pub user_stamp: Option<i64>,
    /// The library's state of the ceremony.
    pub state: String,
    pub created_at: i64,
    pub expires_at: i64,
}

pub async fn insert_ceremony(db: &Db, c: &Ceremony) -> Result<(), sqlx::Error> {
    let sql = "INSERT INTO webauthn_ceremonies \
               (challenge_hash, purpose, user_id, binding, user_stamp, state, created_at, expires_at) \
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
    with_pool!(db, pool => sqlx::query(sql)
        .bind(&c.challenge_hash)
        .bind(&c.purpose)
        .bind(&c.user_id)
        .bind(&c.binding)
        .bind(c.user_stamp)
        .bind(&c.state)
        .bind(c.created_at)
        .bind(c.expires_at)
        .execute(pool)
        .await
        .map(|_| ()))
}

/// Takes (deletes and returns) the ceremony of this challenge and purpose: it is gone whatever
/// its answer turns out to be, so no challenge is answered twice.
pub async fn take_ceremony(
    db: &Db,
    challenge_hash: &str,
    purpose: &str,
) -> Result<Option<Ceremony>, sqlx::Error> {
    let sql = "DELETE FROM webauthn_ceremonies WHERE challenge_hash = $1 AND purpose = $2 \
               RETURNING challenge_hash, purpose, user_id, binding, user_stamp, state, \
               created_at, expires_at";
    with_pool!(db, pool => sqlx::query_as(sql)
        .bind(challenge_hash)
        .bind(purpose)
        .fetch_optional(pool)
        .await)
}

/// Deletes ceremonies that expired before `before`. Returns how many.
pub async fn purge_ceremonies(db: &Db, before: i64) -> Result<u64, sqlx::Error> {
    let sql = "DELETE FROM webauthn_ceremonies WHERE expires_at < $1";
    with_pool!(db, pool => sqlx::query(sql).bind(before).execute(pool).await.map(|r| r.rows_affected()))
}
