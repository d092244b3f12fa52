//! The `mail_throttle` table: at most one mail of a kind to an address per interval, across
//! every instance (decided by one conditional upsert).

use super::{Db, Tx, with_pool, with_tx};

/// Records a send to `key` at `now` if the last one was at least `interval_ms` ago; returns
/// whether the send may go ahead.
pub async fn try_take(
    tx: &mut Tx,
    key: &str,
    now: i64,
    interval_ms: i64,
) -> Result<bool, sqlx::Error> {
    let sql = "INSERT INTO mail_throttle (throttle_key, last_sent_at) VALUES ($1, $2) \
               ON CONFLICT (throttle_key) DO UPDATE SET last_sent_at = excluded.last_sent_at \
               WHERE mail_throttle.last_sent_at <= $3";
    let done = with_tx!(tx, conn => sqlx::query(sql)
        .bind(key)
        .bind(now)
        .bind(now - interval_ms)
        .execute(conn)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(done == 1)
}

/// When the last send to `key` was recorded, inside `tx`, if one was.
pub async fn last_sent_in(tx: &mut Tx, key: &str) -> Result<Option<i64>, sqlx::Error> {
    let sql = "SELECT last_sent_at FROM mail_throttle WHERE throttle_key = $1";
    with_tx!(tx, conn => sqlx::query_scalar(sql).bind(key).fetch_optional(conn).await)
}

/// Forgets sends older than `before`.
pub async fn purge_before(db: &Db, before: i64) -> Result<u64, sqlx::Error> {
    let sql = "DELETE FROM mail_throttle WHERE last_sent_at < $1";
    with_pool!(db, pool => sqlx::query(sql).bind(before).execute(pool).await.map(|r| r.rows_affected()))
}
