//! The `one_time_tokens` table: password-reset and email-verification tokens, by hash.

use super::{Db, Tx, read, with_pool, with_tx};

pub const PASSWORD_RESET: &str = "password_reset";
pub const VERIFY_EMAIL: &str = "verify_email";

#[derive(Debug)]
pub struct NewToken<'a> {
    pub token_hash: &'a str,
    pub user_id: &'a str,
    pub purpose: &'static str,
    pub email: &'a str,
    /// The account's security stamp: the token dies when it moves.
    pub user_stamp: i64,
    pub created_at: i64,
    pub expires_at: i64,
}

/// Spends the user's unused tokens of `purpose` (a newer token replaces the older ones) and
/// stores the new one.
pub async fn replace(tx: &mut Tx, token: &NewToken<'_>) -> Result<(), sqlx::Error> {
    let spend = "UPDATE one_time_tokens SET used_at = $3 \
                 WHERE user_id = $1 AND purpose = $2 AND used_at IS NULL";
    with_tx!(tx, conn => sqlx::query(spend)
        .bind(token.user_id)
        .bind(token.purpose)
        .bind(token.created_at)
        .execute(conn)
        .await
        .map(|r| r.rows_affected()))?;
    let insert = "INSERT INTO one_time_tokens \
                  (token_hash, user_id, purpose, email, created_at, expires_at, used_at, user_stamp) \
                  VALUES ($1, $2, $3, $4, $5, $6, NULL, $7)";
    with_tx!(tx, conn => sqlx::query(insert)
        .bind(token.token_hash)
        .bind(token.user_id)
        .bind(token.purpose)
        .bind(token.email)
        .bind(token.created_at)
        .bind(token.expires_at)
        .bind(token.user_stamp)
        .execute(conn)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(())
}

/// What a spent token was for.
#[derive(Debug, sqlx::FromRow)]
pub struct Spent {
    pub user_id: String,
    pub email: String,
    pub user_stamp: i64,
}

/// A token is usable while it is unused, unexpired, and its account's credentials have not
/// changed since it was made.
macro_rules! usable {
    () => {
        "token_hash = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > $3 \
         AND user_stamp = (SELECT u.security_stamp FROM users u WHERE u.id = one_time_tokens.user_id)"
    };
}

/// Spends a token if it is usable, in one statement: of concurrent uses, one wins.
pub async fn spend(
    tx: &mut Tx,
    token_hash: &str,
    purpose: &str,
    now: i64,
) -> Result<Option<Spent>, sqlx::Error> {
    let sql = concat!(
        "UPDATE one_time_tokens SET used_at = $3 WHERE ",
        usable!(),
        " RETURNING user_id, email, user_stamp"
    );
    with_tx!(tx, conn => sqlx::query_as(sql)
        .bind(token_hash)
        .bind(purpose)
        .bind(now)
        .fetch_optional(conn)
        .await)
}

/// The user of a token that could be spent now (a look, without spending it).
pub async fn find_usable(
    db: &Db,
    token_hash: &str,
    purpose: &str,
    now: i64,
) -> Result<Option<String>, sqlx::Error> {
    let sql = concat!("SELECT user_id FROM one_time_tokens WHERE ", usable!());
    read!(db, pool => sqlx::query_scalar(sql)
        .bind(token_hash)
        .bind(purpose)
        .bind(now)
        .fetch_optional(pool)
        .await)
}
/// Deletes tokens used or expired before `before`. Returns how many.
pub async fn purge_spent(db: &Db, before: i64) -> Result<u64, sqlx::Error> {
    let sql = "DELETE FROM one_time_tokens WHERE used_at < $1 OR expires_at < $1";
    with_pool!(db, pool => sqlx::query(sql).bind(before).execute(pool).await.map(|r| r.rows_affected()))
}
