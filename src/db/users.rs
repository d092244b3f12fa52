//! The `users` table.

use super::{Db, Tx, with_pool, with_tx};

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
        "id, email, name, password_hash, is_active, is_verified, is_superuser, created_at, updated_at"
    };
}

/// Inserts a new account. A taken email fails with a unique violation (see `db::is_unique_violation`).
pub async fn insert(tx: &mut Tx, user: &User) -> Result<(), sqlx::Error> {
    let sql = concat!(
        "INSERT INTO users (",
        columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
    );
    with_tx!(tx, conn => sqlx::query(sql)
        .bind(&user.id)
        .bind(&user.email)
        .bind(&user.name)
        .bind(&user.password_hash)
        .bind(user.is_active)
        .bind(user.is_verified)
        .bind(user.is_superuser)
        .bind(user.created_at)
        .bind(user.updated_at)
        .execute(conn)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(())
}

pub async fn find_by_email(db: &Db, email: &str) -> Result<Option<User>, sqlx::Error> {
    let sql = concat!("SELECT ", columns!(), " FROM users WHERE email = $1");
    with_pool!(db, pool => sqlx::query_as(sql).bind(email).fetch_optional(pool).await)
}

pub async fn find_by_id(db: &Db, id: &str) -> Result<Option<User>, sqlx::Error> {
    let sql = concat!("SELECT ", columns!(), " FROM users WHERE id = $1");
    with_pool!(db, pool => sqlx::query_as(sql).bind(id).fetch_optional(pool).await)
}

/// The changes a profile update may make; `None` leaves a column as it is.
#[derive(Debug, Default)]
pub struct ProfileChanges<'a> {
    pub name: Option<&'a str>,
    pub email: Option<&'a str>,
    /// Set `is_verified` to false (the email changed).
    pub unverify: bool,
}

/// Applies `changes` and returns the updated row (`None` if the user is gone). A taken email
/// fails with a unique violation.
pub async fn update_profile(
    tx: &mut Tx,
    id: &str,
    changes: &ProfileChanges<'_>,
    now: i64,
) -> Result<Option<User>, sqlx::Error> {
    let sql = concat!(
        "UPDATE users SET name = COALESCE($2, name), email = COALESCE($3, email), \
         is_verified = CASE WHEN $4 THEN FALSE ELSE is_verified END, updated_at = $5 \
         WHERE id = $1 RETURNING ",
        columns!(),
        ""
    );
    with_tx!(tx, conn => sqlx::query_as(sql)
        .bind(id)
        .bind(changes.name)
        .bind(changes.email)
        .bind(changes.unverify)
        .bind(now)
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
    Ok(done == 1)
}

/// Deletes the account; its sessions go with it (ON DELETE CASCADE).
pub async fn delete(db: &Db, id: &str) -> Result<bool, sqlx::Error> {
    let done = with_pool!(db, pool => sqlx::query("DELETE FROM users WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(done == 1)
}

/// Sets a new password hash (a reset) and marks the address verified: the reset link proved it.
pub async fn reset_password(
    tx: &mut Tx,
    id: &str,
    new_hash: &str,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let sql =
        "UPDATE users SET password_hash = $2, is_verified = TRUE, updated_at = $3 WHERE id = $1";
    let done = with_tx!(tx, conn => sqlx::query(sql)
        .bind(id)
        .bind(new_hash)
        .bind(now)
        .execute(conn)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(done == 1)
}

/// Marks the account verified, if its address is still `email`. Returns the updated row.
pub async fn mark_verified(
    tx: &mut Tx,
    id: &str,
    email: &str,
    now: i64,
) -> Result<Option<User>, sqlx::Error> {
    let sql = concat!(
        "UPDATE users SET is_verified = TRUE, updated_at = $3 WHERE id = $1 AND email = $2 RETURNING ",
        columns!()
    );
    with_tx!(tx, conn => sqlx::query_as(sql).bind(id).bind(email).bind(now).fetch_optional(conn).await)
}
