//! The `mail_outbox` table: mail written with the change that causes it, sent by a worker.

use super::{Db, Tx, read, with_pool, with_tx};

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Mail {
    pub id: String,
    pub recipient: String,
    pub subject: String,
    pub body_text: String,
    pub attempts: i64,
}

pub async fn enqueue(
    tx: &mut Tx,
    recipient: &str,
    subject: &str,
    body: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    let sql = "INSERT INTO mail_outbox (id, recipient, subject, body_text, created_at, attempts, next_attempt_at) \
               VALUES ($1, $2, $3, $4, $5, 0, $5)";
    with_tx!(tx, conn => sqlx::query(sql)
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(recipient)
        .bind(subject)
        .bind(body)
        .bind(now)
        .execute(conn)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(())
}

/// Claims up to `limit` mails that are due and not claimed by another worker, for `lease_ms`,
/// and counts the attempt. The claim is re-checked row by row, so two workers never hold one mail.
pub async fn claim_due(
    db: &Db,
    now: i64,
    lease_ms: i64,
    limit: i64,
) -> Result<Vec<Mail>, sqlx::Error> {
    let sql = "UPDATE mail_outbox SET locked_until = $2, attempts = attempts + 1 \
               WHERE id IN (SELECT id FROM mail_outbox \
                            WHERE sent_at IS NULL AND failed_at IS NULL AND next_attempt_at <= $1 \
                              AND (locked_until IS NULL OR locked_until <= $1) \
                            ORDER BY next_attempt_at LIMIT $3) \
                 AND sent_at IS NULL AND failed_at IS NULL \
                 AND (locked_until IS NULL OR locked_until <= $1) \
               RETURNING id, recipient, subject, body_text, attempts";
    with_pool!(db, pool => sqlx::query_as(sql)
        .bind(now)
        .bind(now + lease_ms)
        .bind(limit)
        .fetch_all(pool)
        .await)
}

/// The mail went out: mark it, and drop its body (it may carry a token).
pub async fn mark_sent(db: &Db, id: &str, now: i64) -> Result<(), sqlx::Error> {
    let sql = "UPDATE mail_outbox SET sent_at = $2, locked_until = NULL, body_text = '', last_error = NULL WHERE id = $1";
    with_pool!(db, pool => sqlx::query(sql).bind(id).bind(now).execute(pool)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(())
}

/// The attempt failed; try again at `next_attempt_at`.
pub async fn mark_retry(
    db: &Db,
    id: &str,
    next_attempt_at: i64,
    error: &str,
) -> Result<(), sqlx::Error> {
    let sql = "UPDATE mail_outbox SET next_attempt_at = $2, locked_until = NULL, last_error = $3 WHERE id = $1";
    with_pool!(db, pool => sqlx::query(sql).bind(id).bind(next_attempt_at).bind(error).execute(pool)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(())
}

/// The mail cannot be delivered: mark it failed for good and drop its body.
pub async fn mark_failed(db: &Db, id: &str, now: i64, error: &str) -> Result<(), sqlx::Error> {
    let sql = "UPDATE mail_outbox SET failed_at = $2, locked_until = NULL, body_text = '', last_error = $3 WHERE id = $1";
    with_pool!(db, pool => sqlx::query(sql).bind(id).bind(now).bind(error).execute(pool)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(())
}

/// Deletes mail sent or failed before `before`. Returns how many.
pub async fn purge_done(db: &Db, before: i64) -> Result<u64, sqlx::Error> {
    let sql = "DELETE FROM mail_outbox WHERE sent_at < $1 OR failed_at < $1";
    with_pool!(db, pool => sqlx::query(sql).bind(before).execute(pool).await.map(|r| r.rows_affected()))
}

/// How many mails wait to be sent (not sent, not given up), by the index of due mail.
pub async fn count_pending(db: &Db) -> Result<i64, sqlx::Error> {
    let sql = "SELECT COUNT(*) FROM mail_outbox WHERE sent_at IS NULL AND failed_at IS NULL";
    read!(db, pool => sqlx::query_scalar(sql).fetch_one(pool).await)
}
