//! The `login_attempts` table: consecutive password checks that were not followed by a success,
//! per address, for the lockout. An attempt is counted *before* its password is checked (see
//! `service::lockout`), with one conditional statement, so concurrent attempts on any number of
//! instances cannot check more passwords than the lockout allows.

use super::{Db, Tx, read, with_pool, with_tx};

/// What is on record for an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct Attempts {
    pub failures: i64,
    pub locked_until: Option<i64>,
}

/// The record of `email`, if it has one.
pub async fn lookup(db: &Db, email: &str) -> Result<Option<Attempts>, sqlx::Error> {
    let sql = "SELECT failures, locked_until FROM login_attempts WHERE email = $1";
    read!(db, pool => sqlx::query_as(sql).bind(email).fetch_optional(pool).await)
}

/// Counts one attempt, if the record is still `seen` (`None`: there was none) and not locked at
/// `now`; `lock` is the lock that this attempt brings if it fails (set now, so that attempts
/// racing it find the address locked; a success clears it). Returns whether the attempt was
/// counted; false means another attempt changed the record first: look again.
pub async fn reserve(
    db: &Db,
    email: &str,
    seen: Option<Attempts>,
    lock: Option<i64>,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let done = match seen {
        None => {
            let sql = "INSERT INTO login_attempts (email, failures, locked_until, updated_at) \
                       VALUES ($1, 1, $2, $3) ON CONFLICT (email) DO NOTHING";
            with_pool!(db, pool => sqlx::query(sql)
                .bind(email)
                .bind(lock)
                .bind(now)
                .execute(pool)
                .await
                .map(|r| r.rows_affected()))?
        }
        Some(seen) => {
            // Only an expired lock is ever replaced, so a shorter lock never replaces a longer one.
            let sql = "UPDATE login_attempts SET failures = failures + 1, \
                       locked_until = COALESCE($3, locked_until), updated_at = $4 \
                       WHERE email = $1 AND failures = $2 \
                       AND (locked_until IS NULL OR locked_until <= $4)";
            with_pool!(db, pool => sqlx::query(sql)
                .bind(email)
                .bind(seen.failures)
                .bind(lock)
                .bind(now)
                .execute(pool)
                .await
                .map(|r| r.rows_affected()))?
        }
    };
    Ok(done == 1)
}

/// Undoes the count of an attempt whose password was never checked, if the record is still as
/// that attempt left it (`counted` failures); puts back the record it found (`before`).
pub async fn take_back(
    db: &Db,
    email: &str,
    counted: i64,
    before: Option<Attempts>,
) -> Result<(), sqlx::Error> {
    match before {
        None => {
            let sql = "DELETE FROM login_attempts WHERE email = $1 AND failures = $2";
            with_pool!(db, pool => sqlx::query(sql).bind(email).bind(counted).execute(pool).await.map(|_| ()))?;
        }
        Some(before) => {
            let sql = "UPDATE login_attempts SET failures = $3, locked_until = $4 \
                       WHERE email = $1 AND failures = $2";
            with_pool!(db, pool => sqlx::query(sql)
                .bind(email)
                .bind(counted)
                .bind(before.failures)
                .bind(before.locked_until)
                .execute(pool)
                .await
                .map(|_| ()))?;
        }
    }
    Ok(())
}

/// Forgets the attempts of `email` (a successful check or a password reset).
pub async fn clear(db: &Db, email: &str) -> Result<(), sqlx::Error> {
    let sql = "DELETE FROM login_attempts WHERE email = $1";
    with_pool!(db, pool => sqlx::query(sql).bind(email).execute(pool).await.map(|_| ()))
}

/// Forgets the attempts of `key`, inside `tx` (a superuser's unlock, with its audit event).
/// Returns whether there were any.
pub async fn clear_in(tx: &mut Tx, key: &str) -> Result<bool, sqlx::Error> {
    let sql = "DELETE FROM login_attempts WHERE email = $1";
    let done = with_tx!(tx, conn => sqlx::query(sql)
        .bind(key)
        .execute(conn)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(done > 0)
}

/// Forgets addresses with no failure since `before` and no lock in force.
pub async fn purge_before(db: &Db, before: i64, now: i64) -> Result<u64, sqlx::Error> {
    let sql = "DELETE FROM login_attempts WHERE updated_at < $1 AND (locked_until IS NULL OR locked_until <= $2)";
    with_pool!(db, pool => sqlx::query(sql).bind(before).bind(now).execute(pool).await.map(|r| r.rows_affected()))
}
