//! The `webhook_endpoints` table: where superusers want security events sent. Written only by
//! `service::webhooks`, each change in the transaction of its audit event.

use super::{Db, Tx, read, with_tx};

/// One endpoint as stored. `event_types` is `*` or `,a,b,`; `secret` is sealed.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct EndpointRow {
    pub id: String,
    pub url: String,
    pub description: String,
    pub event_types: String,
    pub secret: String,
    pub enabled: bool,
    pub created_by: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

const COLUMNS: &str =
    "id, url, description, event_types, secret, enabled, created_by, created_at, updated_at";

/// Inserts `row` unless `max` endpoints exist already; false then. (Two creations at once on
/// PostgreSQL may both see one place left: the bound is the fan-out's, not an exact count.)
pub async fn insert_in(tx: &mut Tx, row: &EndpointRow, max: i64) -> Result<bool, sqlx::Error> {
    let sql = "INSERT INTO webhook_endpoints \
               (id, url, description, event_types, secret, enabled, created_by, created_at, updated_at) \
               SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9 \
               WHERE (SELECT COUNT(*) FROM webhook_endpoints) < $10";
    let inserted = with_tx!(tx, conn => sqlx::query(sql)
        .bind(&row.id)
        .bind(&row.url)
        .bind(&row.description)
        .bind(&row.event_types)
        .bind(&row.secret)
        .bind(row.enabled)
        .bind(&row.created_by)
        .bind(row.created_at)
        .bind(row.updated_at)
        .bind(max)
        .execute(conn)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(inserted == 1)
}

/// Every endpoint, oldest first.
pub async fn list(db: &Db) -> Result<Vec<EndpointRow>, sqlx::Error> {
    let sql = "SELECT id, url, description, event_types, secret, enabled, created_by, created_at, updated_at \
               FROM webhook_endpoints ORDER BY created_at, id";
    read!(db, pool => sqlx::query_as(sql).fetch_all(pool).await)
}

pub async fn find(db: &Db, id: &str) -> Result<Option<EndpointRow>, sqlx::Error> {
    let sql = "SELECT id, url, description, event_types, secret, enabled, created_by, created_at, updated_at \
               FROM webhook_endpoints WHERE id = $1";
    read!(db, pool => sqlx::query_as(sql).bind(id).fetch_optional(pool).await)
}

/// What an update changes: each field given replaces the stored one.
#[derive(Clone, Debug, Default)]
pub struct EndpointChange {
    pub url: Option<String>,
    pub description: Option<String>,
    pub event_types: Option<String>,
    pub enabled: Option<bool>,
}

/// Applies `change` in one statement (fields not given keep their value, whatever another update
/// did meanwhile); the endpoint as it is now, or `None` if there is none.
pub async fn update_in(
    tx: &mut Tx,
    id: &str,
    change: &EndpointChange,
    now: i64,
) -> Result<Option<EndpointRow>, sqlx::Error> {
    let sql = format!(
        "UPDATE webhook_endpoints SET url = COALESCE($2, url), \
         description = COALESCE($3, description), event_types = COALESCE($4, event_types), \
         enabled = COALESCE($5, enabled), updated_at = $6 WHERE id = $1 RETURNING {COLUMNS}"
    );
    with_tx!(tx, conn => sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
        .bind(id)
        .bind(&change.url)
        .bind(&change.description)
        .bind(&change.event_types)
        .bind(change.enabled)
        .bind(now)
        .fetch_optional(conn)
        .await)
}

/// Replaces the sealed secret; false if there is no such endpoint.
pub async fn set_secret_in(
    tx: &mut Tx,
    id: &str,
    sealed: &str,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let sql = "UPDATE webhook_endpoints SET secret = $2, updated_at = $3 WHERE id = $1";
    let n = with_tx!(tx, conn => sqlx::query(sql).bind(id).bind(sealed).bind(now).execute(conn)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

/// Deletes the endpoint and, by the foreign key, its deliveries; the row it was, if any.
pub async fn delete_in(tx: &mut Tx, id: &str) -> Result<Option<EndpointRow>, sqlx::Error> {
    let sql = format!("DELETE FROM webhook_endpoints WHERE id = $1 RETURNING {COLUMNS}");
    with_tx!(tx, conn => sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
        .bind(id)
        .fetch_optional(conn)
        .await)
}

/// What a delivery attempt needs of its endpoint: the URL and the sealed secret.
pub async fn target(db: &Db, id: &str) -> Result<Option<(String, String)>, sqlx::Error> {
    let sql = "SELECT url, secret FROM webhook_endpoints WHERE id = $1";
    read!(db, pool => sqlx::query_as(sql).bind(id).fetch_optional(pool).await)
}
