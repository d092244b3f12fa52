//! The `webhook_deliveries` table: the outbox of webhooks and their delivery log. A row is
//! written for each subscribed endpoint in the transaction of the event it carries
//! ([`enqueue_in`], from `service::audit::record_in`), claimed by a worker with a lease
//! ([`claim_due`]), and marked delivered, to retry, or given up; the marks are conditional on
//! the lease they were claimed under, so a late answer never overwrites a newer claim or a
//! redelivery.

use super::{Db, Tx, read, with_pool, with_tx};

/// A delivery as the log shows it (no payload).
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct DeliveryRow {
    pub id: i64,
    pub endpoint_id: String,
    pub event_id: String,
    pub event_type: String,
    pub created_at: i64,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub delivered_at: Option<i64>,
    pub failed_at: Option<i64>,
    pub last_attempt_at: Option<i64>,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
}

const LOG_COLUMNS: &str = "id, endpoint_id, event_id, event_type, created_at, attempts, \
     next_attempt_at, delivered_at, failed_at, last_attempt_at, last_status, last_error";

/// A delivery claimed for an attempt. `lease` is the claim's `locked_until`: the marks below
/// take effect only while it is still the row's.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Claimed {
    pub id: i64,
    pub endpoint_id: String,
    pub event_id: String,
    pub event_type: String,
    pub payload: String,
    /// Attempts begun, this one included.
    pub attempts: i64,
    #[sqlx(rename = "locked_until")]
    pub lease: i64,
}

/// Queues `payload` for every enabled endpoint subscribed to `event_type` (`*`, or the type
/// between commas); due at once. One statement, whatever the number of endpoints: none costs a
/// look at an empty (or small) table. Returns how many deliveries were queued.
pub async fn enqueue_in(
    tx: &mut Tx,
    event_id: &str,
    event_type: &str,
    payload: &str,
    now: i64,
) -> Result<u64, sqlx::Error> {
    let sql = "INSERT INTO webhook_deliveries \
               (endpoint_id, event_id, event_type, payload, created_at, attempts, next_attempt_at) \
               SELECT id, $1, $2, $3, $4, 0, $4 FROM webhook_endpoints \
               WHERE enabled = TRUE AND (event_types = '*' OR event_types LIKE $5 ESCAPE '\\')";
    let pattern = format!("%,{},%", escape_like(event_type));
    with_tx!(tx, conn => sqlx::query(sql)
        .bind(event_id)
        .bind(event_type)
        .bind(payload)
        .bind(now)
        .bind(&pattern)
        .execute(conn)
        .await
        .map(|r| r.rows_affected()))
}

/// `text` as a LIKE pattern that matches only itself (`\` escapes).
fn escape_like(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// Claims up to `limit` deliveries that are due, of enabled endpoints, and not claimed by another
/// worker, for `lease_ms`, counting the attempt. The claim is checked again row by row, so two
/// workers never hold one delivery.
pub async fn claim_due(
    db: &Db,
    now: i64,
    lease_ms: i64,
    limit: i64,
) -> Result<Vec<Claimed>, sqlx::Error> {
    let sql = "UPDATE webhook_deliveries \
               SET locked_until = $2, attempts = attempts + 1, last_attempt_at = $1 \
               WHERE id IN (SELECT d.id FROM webhook_deliveries d \
                            JOIN webhook_endpoints e ON e.id = d.endpoint_id \
                            WHERE d.delivered_at IS NULL AND d.failed_at IS NULL \
                              AND d.next_attempt_at <= $1 \
                              AND (d.locked_until IS NULL OR d.locked_until <= $1) \
                              AND e.enabled = TRUE \
                            ORDER BY d.next_attempt_at LIMIT $3) \
                 AND delivered_at IS NULL AND failed_at IS NULL \
                 AND (locked_until IS NULL OR locked_until <= $1) \
               RETURNING id, endpoint_id, event_id, event_type, payload, attempts, locked_until";
    with_pool!(db, pool => sqlx::query_as(sql)
        .bind(now)
        .bind(now + lease_ms)
        .bind(limit)
        .fetch_all(pool)
        .await)
}

/// The receiver answered 2xx. False if the claim was lost (redelivered meanwhile, say).
pub async fn mark_delivered(
    db: &Db,
    claimed: &Claimed,
    now: i64,
    status: i64,
) -> Result<bool, sqlx::Error> {
    let sql = "UPDATE webhook_deliveries SET delivered_at = $3, locked_until = NULL, \
               last_status = $4, last_error = NULL WHERE id = $1 AND locked_until = $2";
    let n = with_pool!(db, pool => sqlx::query(sql)
        .bind(claimed.id)
        .bind(claimed.lease)
        .bind(now)
        .bind(status)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

/// The attempt failed: try again at `next_attempt_at`.
pub async fn mark_retry(
    db: &Db,
    claimed: &Claimed,
    next_attempt_at: i64,
    status: Option<i64>,
    error: &str,
) -> Result<bool, sqlx::Error> {
    let sql = "UPDATE webhook_deliveries SET next_attempt_at = $3, locked_until = NULL, \
               last_status = $4, last_error = $5 WHERE id = $1 AND locked_until = $2";
    let n = with_pool!(db, pool => sqlx::query(sql)
        .bind(claimed.id)
        .bind(claimed.lease)
        .bind(next_attempt_at)
        .bind(status)
        .bind(error)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

/// The last attempt failed: give up.
pub async fn mark_failed(
    db: &Db,
    claimed: &Claimed,
    now: i64,
    status: Option<i64>,
    error: &str,
) -> Result<bool, sqlx::Error> {
    let sql = "UPDATE webhook_deliveries SET failed_at = $3, locked_until = NULL, \
               last_status = $4, last_error = $5 WHERE id = $1 AND locked_until = $2";
    let n = with_pool!(db, pool => sqlx::query(sql)
        .bind(claimed.id)
        .bind(claimed.lease)
        .bind(now)
        .bind(status)
        .bind(error)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

/// Up to `limit` deliveries of `endpoint_id`, newest first, before the delivery `before` (the
/// cursor: the last id of the previous page).
pub async fn list(
    db: &Db,
    endpoint_id: &str,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<DeliveryRow>, sqlx::Error> {
    let sql = format!(
        "SELECT {LOG_COLUMNS} FROM webhook_deliveries WHERE endpoint_id = $1 AND id < $2 \
         ORDER BY id DESC LIMIT $3"
    );
    read!(db, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
        .bind(endpoint_id)
        .bind(before.unwrap_or(i64::MAX))
        .bind(limit)
        .fetch_all(pool)
        .await)
}

/// Queues the delivery again, due now, with a new attempt budget and the same event (and so the
/// same `webhook-id`); a claim in flight is dropped (its outcome will not be recorded). The
/// delivery as it is now, or `None` if `endpoint_id` has no such delivery.
pub async fn redeliver(
    db: &Db,
    endpoint_id: &str,
    id: i64,
    now: i64,
) -> Result<Option<DeliveryRow>, sqlx::Error> {
    let sql = format!(
        "UPDATE webhook_deliveries SET attempts = 0, next_attempt_at = $3, locked_until = NULL, \
         delivered_at = NULL, failed_at = NULL WHERE id = $1 AND endpoint_id = $2 \
         RETURNING {LOG_COLUMNS}"
    );
    with_pool!(db, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
        .bind(id)
        .bind(endpoint_id)
        .bind(now)
        .fetch_optional(pool)
        .await)
}

/// Deliveries not yet delivered nor given up (of every endpoint, enabled or not).
pub async fn pending_count(db: &Db) -> Result<i64, sqlx::Error> {
    let sql = "SELECT COUNT(*) FROM webhook_deliveries \
               WHERE delivered_at IS NULL AND failed_at IS NULL";
    read!(db, pool => sqlx::query_scalar(sql).fetch_one(pool).await)
}

/// Deletes deliveries made before `before` that were delivered or given up before it too.
pub async fn purge_done(db: &Db, before: i64) -> Result<u64, sqlx::Error> {
    let sql = "DELETE FROM webhook_deliveries WHERE created_at < $1 \
               AND (delivered_at < $1 OR failed_at < $1)";
    with_pool!(db, pool => sqlx::query(sql).bind(before).execute(pool).await.map(|r| r.rows_affected()))
}

#[cfg(test)]
mod tests {
    use super::escape_like;

    #[test]
    fn like_patterns_match_only_the_type() {
        assert_eq!(escape_like("user.signed_in"), "user.signed\\_in");
        assert_eq!(escape_like("a%b\\c"), "a\\%b\\\\c");
    }
}
