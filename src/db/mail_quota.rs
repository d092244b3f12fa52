//! The `mail_quota` table: how many mails each account has caused in the current window, so
//! that one account cannot spray mail (at its own address or, through email changes, at
//! arbitrary ones), across every instance (decided by one conditional upsert).

use super::{Db, Tx, with_pool, with_tx};

/// Takes `count` mails from the account's allowance of `limit` per window of `window_ms`
/// starting at `window_start`; returns whether they fit.
pub async fn try_take(
    tx: &mut Tx,
    user_id: &str,
    count: i64,
    limit: i64,
    window_start: i64,
) -> Result<bool, sqlx::Error> {
    if count > limit {
        return Ok(false);
    }
    let sql = "INSERT INTO mail_quota (user_id, window_start, sent) VALUES ($1, $2, $3) \
               ON CONFLICT (user_id) DO UPDATE SET \
               sent = CASE WHEN mail_quota.window_start = $2 THEN mail_quota.sent + $3 ELSE $3 END, \
               window_start = $2 \
               WHERE mail_quota.window_start <> $2 OR mail_quota.sent + $3 <= $4";
    let done = with_tx!(tx, conn => sqlx::query(sql)
        .bind(user_id)
        .bind(window_start)
        .bind(count)
        .bind(limit)
        .execute(conn)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(done == 1)
}

/// Forgets windows that ended before `before`.
pub async fn purge_before(db: &Db, before: i64) -> Result<u64, sqlx::Error> {
    let sql = "DELETE FROM mail_quota WHERE window_start < $1";
    with_pool!(db, pool => sqlx::query(sql).bind(before).execute(pool).await.map(|r| r.rows_affected()))
}
