//! The `login_attempts` table: consecutive failed logins per address, for the lockout.

use super::{Db, with_pool};

/// The failures on record for `email`: `None` when there are none (the common case, which
/// then needs no write after a successful login), else until when it is locked, if it is.
pub async fn lookup(db: &Db, email: &str) -> Result<Option<Option<i64>>, sqlx::Error> {
    let sql = "SELECT locked_until FROM login_attempts WHERE email = $1";
    with_pool!(db, pool => sqlx::query_scalar(sql).bind(email).fetch_optional(pool).await)
}

/// Counts a failure and returns the number of consecutive failures, in one statement (so that
/// concurrent failures on several instances all count).
pub async fn record_failure(db: &Db, email: &str, now: i64) -> Result<i64, sqlx::Error> {
    let sql = "INSERT INTO login_attempts (email, failures, locked_until, updated_at) VALUES ($1, 1, NULL, $2) \
               ON CONFLICT (email) DO UPDATE SET failures = login_attempts.failures + 1, updated_at = $2 \
               RETURNING failures";
    with_pool!(db, pool => sqlx::query_scalar(sql).bind(email).bind(now).fetch_one(pool).await)
}

/// Refuses logins to `email` until `until`.
pub async fn lock(db: &Db, email: &str, until: i64) -> Result<(), sqlx::Error> {
    let sql = "UPDATE login_attempts SET locked_until = $2 WHERE email = $1";
    with_pool!(db, pool => sqlx::query(sql).bind(email).bind(until).execute(pool).await.map(|_| ()))
}

/// Forgets the failures of `email` (a successful login or a password reset).
pub async fn clear(db: &Db, email: &str) -> Result<(), sqlx::Error> {
    let sql = "DELETE FROM login_attempts WHERE email = $1";
    with_pool!(db, pool => sqlx::query(sql).bind(email).execute(pool).await.map(|_| ()))
}

/// Forgets addresses with no failure since `before` and no lock in force.
pub async fn purge_before(db: &Db, before: i64, now: i64) -> Result<u64, sqlx::Error> {
    let sql = "DELETE FROM login_attempts WHERE updated_at < $1 AND (locked_until IS NULL OR locked_until < $2)";
    with_pool!(db, pool => sqlx::query(sql).bind(before).bind(now).execute(pool).await.map(|r| r.rows_affected()))
}
