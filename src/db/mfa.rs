//! The second factor's tables: `mfa_totp` (one sealed TOTP secret per account, with the last
//! accepted time step and a pending superuser reset), `mfa_recovery_codes` (keyed hashes) and
//! `mfa_challenges` (the `mfa_token` of a login waiting for its second factor, by hash).

use super::{Db, Tx, read, with_pool, with_tx};

/// An account's TOTP authenticator, confirmed or under enrolment.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Totp {
    pub user_id: String,
    pub secret_sealed: String,
    pub created_at: i64,
    /// `None` while enrolment is under way.
    pub confirmed_at: Option<i64>,
    pub last_step: Option<i64>,
    pub reset_due_at: Option<i64>,
}

const TOTP_OF: &str = "SELECT user_id, secret_sealed, created_at, confirmed_at, last_step, \
    reset_due_at FROM mfa_totp WHERE user_id = $1";

/// The account's TOTP row, if any.
pub async fn totp_of(db: &Db, user_id: &str) -> Result<Option<Totp>, sqlx::Error> {
    read!(db, pool => sqlx::query_as(TOTP_OF).bind(user_id).fetch_optional(pool).await)
}

/// The same, inside a transaction: a request that holds one never waits for a second pooled
/// connection (concurrent code checks would otherwise hold the whole pool, waiting).
pub async fn totp_of_in(tx: &mut Tx, user_id: &str) -> Result<Option<Totp>, sqlx::Error> {
    with_tx!(tx, conn => sqlx::query_as(TOTP_OF).bind(user_id).fetch_optional(conn).await)
}

/// Whether the account has a confirmed TOTP authenticator.
pub async fn has_totp(db: &Db, user_id: &str) -> Result<bool, sqlx::Error> {
    let sql = "SELECT COUNT(*) FROM mfa_totp WHERE user_id = $1 AND confirmed_at IS NOT NULL";
    let n: i64 = read!(db, pool => sqlx::query_scalar(sql).bind(user_id).fetch_one(pool).await)?;
    Ok(n > 0)
}

/// Whether the account has a second factor: a confirmed TOTP authenticator, or (when
/// `passkeys` count) a passkey. One query.
pub async fn has_second_factor(
    db: &Db,
    user_id: &str,
    passkeys: bool,
) -> Result<bool, sqlx::Error> {
    let sql = "SELECT (SELECT COUNT(*) FROM mfa_totp WHERE user_id = $1 AND confirmed_at IS NOT NULL) \
               + CASE WHEN $2 THEN (SELECT COUNT(*) FROM passkeys WHERE user_id = $1) ELSE 0 END";
    let n: i64 = read!(db, pool => sqlx::query_scalar(sql)
        .bind(user_id)
        .bind(passkeys)
        .fetch_one(pool)
        .await)?;
    Ok(n > 0)
}

/// Starts (or restarts) an enrolment with a new sealed secret: only while no authenticator is
/// confirmed. Returns false when one is.
pub async fn begin_enrolment(
    db: &Db,
    user_id: &str,
    secret_sealed: &str,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let sql = "INSERT INTO mfa_totp (user_id, secret_sealed, created_at) VALUES ($1, $2, $3) \
               ON CONFLICT (user_id) DO UPDATE SET secret_sealed = excluded.secret_sealed, \
               created_at = excluded.created_at, last_step = NULL \
               WHERE mfa_totp.confirmed_at IS NULL";
    let done = with_pool!(db, pool => sqlx::query(sql)
        .bind(user_id)
        .bind(secret_sealed)
        .bind(now)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(done == 1)
}

/// Confirms the enrolment of exactly the secret `secret_sealed` (not one that replaced it
/// meanwhile), with the step its first code was for. Returns false if it is no longer pending.
pub async fn confirm(
    tx: &mut Tx,
    user_id: &str,
    secret_sealed: &str,
    step: i64,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let sql = "UPDATE mfa_totp SET confirmed_at = $4, last_step = $3 \
               WHERE user_id = $1 AND secret_sealed = $2 AND confirmed_at IS NULL";
    let done = with_tx!(tx, conn => sqlx::query(sql)
        .bind(user_id)
        .bind(secret_sealed)
        .bind(step)
        .bind(now)
        .execute(conn)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(done == 1)
}

/// Accepts a code of `step` for the confirmed authenticator whose secret is `secret_sealed`
/// (not one that replaced it meanwhile), only if `step` is later than every step accepted
/// before (RFC 6238 §5.2): of concurrent uses of one code, one wins, and no code works twice.
/// Returns whether it was accepted.
pub async fn accept_step(
    tx: &mut Tx,
    user_id: &str,
    secret_sealed: &str,
    step: i64,
) -> Result<bool, sqlx::Error> {
    let sql = "UPDATE mfa_totp SET last_step = $2 WHERE user_id = $1 AND secret_sealed = $3 \
               AND confirmed_at IS NOT NULL AND (last_step IS NULL OR last_step < $2)";
    let done = with_tx!(tx, conn => sqlx::query(sql)
        .bind(user_id)
        .bind(step)
        .bind(secret_sealed)
        .execute(conn)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(done == 1)
}

/// Removes every second factor of the account (its authenticator, confirmed or not, and its
/// recovery codes) and every login waiting for one. Returns whether there was a confirmed
/// authenticator.
pub async fn remove_all(tx: &mut Tx, user_id: &str) -> Result<bool, sqlx::Error> {
    let confirmed = "DELETE FROM mfa_totp WHERE user_id = $1 AND confirmed_at IS NOT NULL";
    let removed = with_tx!(tx, conn => sqlx::query(confirmed)
        .bind(user_id)
        .execute(conn)
        .await
        .map(|r| r.rows_affected()))?;
    for sql in [
        "DELETE FROM mfa_totp WHERE user_id = $1",
        "DELETE FROM mfa_recovery_codes WHERE user_id = $1",
        "DELETE FROM mfa_challenges WHERE user_id = $1",
    ] {
        with_tx!(tx, conn => sqlx::query(sql).bind(user_id).execute(conn).await.map(|_| ()))?;
    }
    Ok(removed == 1)
}

/// Schedules a superuser's removal of the account's second factors at `due` (an earlier
/// schedule stands). The schedule lives on the account's `mfa_totp` row; an account with
/// passkeys only gets a row without a secret (`secret_sealed` empty: no enrolment) to hold it.
/// Returns the time it is due.
pub async fn schedule_reset(
    tx: &mut Tx,
    user_id: &str,
    due: i64,
    requested_by: &str,
    now: i64,
) -> Result<i64, sqlx::Error> {
    let sql = "INSERT INTO mfa_totp (user_id, secret_sealed, created_at, reset_due_at, \
               reset_requested_by) VALUES ($1, '', $4, $2, $3) \
               ON CONFLICT (user_id) DO UPDATE SET \
               reset_due_at = COALESCE(mfa_totp.reset_due_at, excluded.reset_due_at), \
               reset_requested_by = COALESCE(mfa_totp.reset_requested_by, excluded.reset_requested_by) \
               RETURNING reset_due_at";
    let due: Option<i64> = with_tx!(tx, conn => sqlx::query_scalar(sql)
        .bind(user_id)
        .bind(due)
        .bind(requested_by)
        .bind(now)
        .fetch_one(conn)
        .await)?;
    Ok(due.unwrap_or_default())
}

/// Cancels a pending reset, inside `tx`. Returns whether there was one.
pub async fn cancel_reset_in(tx: &mut Tx, user_id: &str) -> Result<bool, sqlx::Error> {
    let sql = "UPDATE mfa_totp SET reset_due_at = NULL, reset_requested_by = NULL \
               WHERE user_id = $1 AND reset_due_at IS NOT NULL";
    let done = with_tx!(tx, conn => sqlx::query(sql)
        .bind(user_id)
        .execute(conn)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(done == 1)
}

/// The accounts whose pending reset is due at `now`, with who asked for it.
pub async fn due_resets(db: &Db, now: i64) -> Result<Vec<(String, String)>, sqlx::Error> {
    let sql = "SELECT user_id, COALESCE(reset_requested_by, '') FROM mfa_totp \
               WHERE reset_due_at IS NOT NULL AND reset_due_at <= $1 LIMIT 100";
    read!(db, pool => sqlx::query_as(sql).bind(now).fetch_all(pool).await)
}

/// Takes a due reset for applying: clears it only if it is still due (of several instances
/// applying it at once, one does). Returns whether this caller took it.
pub async fn take_due_reset(tx: &mut Tx, user_id: &str, now: i64) -> Result<bool, sqlx::Error> {
    let sql = "UPDATE mfa_totp SET reset_due_at = NULL \
               WHERE user_id = $1 AND reset_due_at IS NOT NULL AND reset_due_at <= $2";
    let done = with_tx!(tx, conn => sqlx::query(sql)
        .bind(user_id)
        .bind(now)
        .execute(conn)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(done == 1)
}

/// Replaces the account's recovery codes with a new set (the old ones stop working).
pub async fn replace_recovery_codes(
    tx: &mut Tx,
    user_id: &str,
    code_hashes: &[String],
    now: i64,
) -> Result<(), sqlx::Error> {
    let delete = "DELETE FROM mfa_recovery_codes WHERE user_id = $1";
    with_tx!(tx, conn => sqlx::query(delete).bind(user_id).execute(conn).await.map(|_| ()))?;
    let insert =
        "INSERT INTO mfa_recovery_codes (user_id, code_hash, created_at) VALUES ($1, $2, $3)";
    for hash in code_hashes {
        with_tx!(tx, conn => sqlx::query(insert)
            .bind(user_id)
            .bind(hash)
            .bind(now)
            .execute(conn)
            .await
            .map(|_| ()))?;
    }
    Ok(())
}

/// Spends an unused recovery code of the account. Returns whether it was one.
pub async fn use_recovery_code(
    tx: &mut Tx,
    user_id: &str,
    code_hash: &str,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let sql = "UPDATE mfa_recovery_codes SET used_at = $3 \
               WHERE user_id = $1 AND code_hash = $2 AND used_at IS NULL";
    let done = with_tx!(tx, conn => sqlx::query(sql)
        .bind(user_id)
        .bind(code_hash)
        .bind(now)
        .execute(conn)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(done == 1)
}

const RECOVERY_CODES_LEFT: &str =
    "SELECT COUNT(*) FROM mfa_recovery_codes WHERE user_id = $1 AND used_at IS NULL";

/// How many unused recovery codes the account has.
pub async fn recovery_codes_left(db: &Db, user_id: &str) -> Result<i64, sqlx::Error> {
    read!(db, pool => sqlx::query_scalar(RECOVERY_CODES_LEFT).bind(user_id).fetch_one(pool).await)
}

/// The same, inside a transaction (after a code was spent in it).
pub async fn recovery_codes_left_in(tx: &mut Tx, user_id: &str) -> Result<i64, sqlx::Error> {
    with_tx!(tx, conn => sqlx::query_scalar(RECOVERY_CODES_LEFT).bind(user_id).fetch_one(conn).await)
}

/// A login waiting for its second factor.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Challenge {
    pub token_hash: String,
    pub user_id: String,
    pub user_stamp: i64,
    /// When the password was checked.
    pub created_at: i64,
    pub expires_at: i64,
    pub attempts: i64,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
}

pub async fn insert_challenge(db: &Db, c: &Challenge) -> Result<(), sqlx::Error> {
    let sql = "INSERT INTO mfa_challenges \
               (token_hash, user_id, user_stamp, created_at, expires_at, attempts, user_agent, ip) \
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
    with_pool!(db, pool => sqlx::query(sql)
        .bind(&c.token_hash)
        .bind(&c.user_id)
        .bind(c.user_stamp)
        .bind(c.created_at)
        .bind(c.expires_at)
        .bind(c.attempts)
        .bind(&c.user_agent)
        .bind(&c.ip)
        .execute(pool)
        .await
        .map(|_| ()))
}

/// Counts one try of a code against a challenge, if it can still be tried: unused, unexpired at
/// `now`, fewer than `max_attempts` tries so far, and its account's credentials (and active flag)
/// unchanged since the password was checked. Counted before the code is looked at, in one
/// statement, so concurrent tries never exceed the limit. Returns the challenge as counted.
pub async fn try_challenge(
    db: &Db,
    token_hash: &str,
    now: i64,
    max_attempts: i64,
) -> Result<Option<Challenge>, sqlx::Error> {
    let sql = "UPDATE mfa_challenges SET attempts = attempts + 1 \
               WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2 AND attempts < $3 \
               AND EXISTS (SELECT 1 FROM users u WHERE u.id = mfa_challenges.user_id \
               AND u.security_stamp = mfa_challenges.user_stamp AND u.is_active) \
               RETURNING token_hash, user_id, user_stamp, created_at, expires_at, attempts, \
               user_agent, ip";
    with_pool!(db, pool => sqlx::query_as(sql)
        .bind(token_hash)
        .bind(now)
        .bind(max_attempts)
        .fetch_optional(pool)
        .await)
}

/// A challenge that could still be tried (as [`try_challenge`] judges it), without counting a
/// try: for asking a passkey's options.
pub async fn peek_challenge(
    db: &Db,
    token_hash: &str,
    now: i64,
    max_attempts: i64,
) -> Result<Option<Challenge>, sqlx::Error> {
    let sql = "SELECT token_hash, user_id, user_stamp, created_at, expires_at, attempts, \
               user_agent, ip FROM mfa_challenges \
               WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2 AND attempts < $3 \
               AND EXISTS (SELECT 1 FROM users u WHERE u.id = mfa_challenges.user_id \
               AND u.security_stamp = mfa_challenges.user_stamp AND u.is_active)";
    read!(db, pool => sqlx::query_as(sql)
        .bind(token_hash)
        .bind(now)
        .bind(max_attempts)
        .fetch_optional(pool)
        .await)
}

/// Spends a challenge (its second factor was right): of concurrent successes, one wins.
pub async fn spend_challenge(tx: &mut Tx, token_hash: &str, now: i64) -> Result<bool, sqlx::Error> {
    let sql = "UPDATE mfa_challenges SET used_at = $2 WHERE token_hash = $1 AND used_at IS NULL";
    let done = with_tx!(tx, conn => sqlx::query(sql)
        .bind(token_hash)
        .bind(now)
        .execute(conn)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(done == 1)
}

/// Deletes challenges that expired before `before`. Returns how many.
pub async fn purge_challenges(db: &Db, before: i64) -> Result<u64, sqlx::Error> {
    let sql = "DELETE FROM mfa_challenges WHERE expires_at < $1";
    with_pool!(db, pool => sqlx::query(sql).bind(before).execute(pool).await.map(|r| r.rows_affected()))
}
