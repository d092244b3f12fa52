//! The `invitations` table: a superuser's invitation of one address, by the hash of its token.
//!
//! An invitation is *pending* while it is not accepted, not revoked and not expired; only a
//! pending one can be accepted, listed or revoked, and every statement below that reads or
//! writes one says so in its own `WHERE` (`pending!`), so that a decision never rests on an
//! earlier read.

use super::{Db, Tx, read, with_pool, with_tx};

/// An invitation as stored, without its token hash.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Invitation {
    pub id: String,
    pub email: String,
    pub name: Option<String>,
    pub invited_by: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
}

macro_rules! columns {
    () => {
        "id, email, name, invited_by, created_at, expires_at"
    };
}

/// Not accepted, not revoked, and not expired at `$n` (the time, in ms).
macro_rules! pending {
    ($now:literal) => {
        concat!(
            "accepted_at IS NULL AND revoked_at IS NULL AND expires_at > ",
            $now
        )
    };
}

#[derive(Debug)]
pub struct NewInvitation<'a> {
    pub id: &'a str,
    pub email: &'a str,
    pub name: Option<&'a str>,
    pub token_hash: &'a str,
    pub invited_by: &'a str,
    pub created_at: i64,
    pub expires_at: i64,
}

/// Stores a new invitation, revoking the address's earlier ones that are not accepted yet (a
/// new invitation replaces them: one live link per address). Returns how many it revoked.
pub async fn insert(tx: &mut Tx, new: &NewInvitation<'_>) -> Result<u64, sqlx::Error> {
    let replace = "UPDATE invitations SET revoked_at = $2 \
                   WHERE email = $1 AND accepted_at IS NULL AND revoked_at IS NULL";
    let replaced = with_tx!(tx, conn => sqlx::query(replace)
        .bind(new.email)
        .bind(new.created_at)
        .execute(conn)
        .await
        .map(|r| r.rows_affected()))?;
    let insert = "INSERT INTO invitations \
                  (id, email, name, token_hash, invited_by, created_at, expires_at) \
                  VALUES ($1, $2, $3, $4, $5, $6, $7)";
    with_tx!(tx, conn => sqlx::query(insert)
        .bind(new.id)
        .bind(new.email)
        .bind(new.name)
        .bind(new.token_hash)
        .bind(new.invited_by)
        .bind(new.created_at)
        .bind(new.expires_at)
        .execute(conn)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(replaced)
}

/// The pending invitation of a token (a look, without using it).
pub async fn find_pending(
    db: &Db,
    token_hash: &str,
    now: i64,
) -> Result<Option<Invitation>, sqlx::Error> {
    let sql = concat!(
        "SELECT ",
        columns!(),
        " FROM invitations WHERE token_hash = $1 AND ",
        pending!("$2")
    );
    read!(db, pool => sqlx::query_as(sql)
        .bind(token_hash)
        .bind(now)
        .fetch_optional(pool)
        .await)
}

/// Accepts the token's invitation for `email`, if it is pending and for that address: one
/// conditional statement, so that of concurrent uses of one token exactly one gets the row (the
/// others wait for its lock, then find it accepted).
pub async fn accept(
    tx: &mut Tx,
    token_hash: &str,
    email: &str,
    now: i64,
) -> Result<Option<Invitation>, sqlx::Error> {
    let sql = concat!(
        "UPDATE invitations SET accepted_at = $3 WHERE token_hash = $1 AND email = $2 AND ",
        pending!("$3"),
        " RETURNING ",
        columns!()
    );
    with_tx!(tx, conn => sqlx::query_as(sql)
        .bind(token_hash)
        .bind(email)
        .bind(now)
        .fetch_optional(conn)
        .await)
}

/// Records the account an accepted invitation made (in the acceptance's transaction, once the
/// account is inserted).
pub async fn set_accepted_user(tx: &mut Tx, id: &str, user_id: &str) -> Result<(), sqlx::Error> {
    let sql = "UPDATE invitations SET accepted_user_id = $2 WHERE id = $1";
    with_tx!(tx, conn => sqlx::query(sql)
        .bind(id)
        .bind(user_id)
        .execute(conn)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(())
}

/// A page of pending invitations, newest first, and how many are pending in all.
pub async fn list_pending(
    db: &Db,
    now: i64,
    limit: i64,
    offset: i64,
) -> Result<(Vec<Invitation>, i64), sqlx::Error> {
    let page = concat!(
        "SELECT ",
        columns!(),
        " FROM invitations WHERE ",
        pending!("$1"),
        " ORDER BY created_at DESC, id LIMIT $2 OFFSET $3"
    );
    let count = concat!("SELECT COUNT(*) FROM invitations WHERE ", pending!("$1"));
    read!(db, pool => {
        let items = sqlx::query_as(page)
            .bind(now)
            .bind(limit)
            .bind(offset)
            .fetch_all(pool)
            .await?;
        let total: i64 = sqlx::query_scalar(count).bind(now).fetch_one(pool).await?;
        Ok((items, total))
    })
}

/// Revokes a pending invitation; `None` when there is no pending invitation with this id.
pub async fn revoke(tx: &mut Tx, id: &str, now: i64) -> Result<Option<Invitation>, sqlx::Error> {
    if !super::can_be_stored(id) {
        return Ok(None);
    }
    let sql = concat!(
        "UPDATE invitations SET revoked_at = $2 WHERE id = $1 AND ",
        pending!("$2"),
        " RETURNING ",
        columns!()
    );
    with_tx!(tx, conn => sqlx::query_as(sql)
        .bind(id)
        .bind(now)
        .fetch_optional(conn)
        .await)
}

/// Deletes invitations accepted, revoked or expired before `before`. Returns how many.
pub async fn purge_ended(db: &Db, before: i64) -> Result<u64, sqlx::Error> {
    let sql = "DELETE FROM invitations \
               WHERE accepted_at < $1 OR revoked_at < $1 OR expires_at < $1";
    with_pool!(db, pool => sqlx::query(sql).bind(before).execute(pool).await.map(|r| r.rows_affected()))
}
