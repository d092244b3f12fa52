//! The original Python service's SQLite database, read once by `import-users`: its `users`
//! table, whose columns went by several names (SQLAlchemy models differed between deployments),
//! read into plain [`OriginalUser`]s. What is kept of them is the importer's business
//! (`service::import`).

use std::str::FromStr;

use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions, SqliteRow};
use sqlx::{Row, ValueRef};

/// One row of the original `users` table, as stored there.
#[derive(Clone, Default)]
pub struct OriginalUser {
    /// Empty when the column is NULL.
    pub email: String,
    /// Empty when the column is NULL.
    pub password_hash: String,
    pub name: Option<String>,
    /// `None` when the table has no such column or the value is not a recognisable boolean.
    pub is_active: Option<bool>,
    pub is_verified: Option<bool>,
    pub is_superuser: Option<bool>,
    /// Epoch milliseconds; `None` when absent or unreadable.
    pub created_at: Option<i64>,
    pub updated_at: Option<i64>,
}

impl std::fmt::Debug for OriginalUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the hash.
        f.debug_struct("OriginalUser").finish_non_exhaustive()
    }
}

/// Why the original database could not be read.
#[derive(Debug)]
pub enum ReadError {
    /// The SQLite URL is malformed.
    Url(sqlx::Error),
    /// The file could not be opened.
    Open(sqlx::Error),
    /// The `users` table could not be read.
    Read(sqlx::Error),
    NoUsersTable,
    NoEmailColumn,
    NoHashColumn,
}

/// Every row of the `users` table of the SQLite database at `url` (sqlx form), opened read-only.
pub async fn read_users(url: &str) -> Result<Vec<OriginalUser>, ReadError> {
    let options = SqliteConnectOptions::from_str(url)
        .map_err(ReadError::Url)?
        .read_only(true);
    let source = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .map_err(ReadError::Open)?;
    let columns: Vec<String> = sqlx::query_scalar("SELECT name FROM pragma_table_info('users')")
        .fetch_all(&source)
        .await
        .map_err(ReadError::Read)?;
    if columns.is_empty() {
        return Err(ReadError::NoUsersTable);
    }
    let email = pick(&columns, &["email"]).ok_or(ReadError::NoEmailColumn)?;
    let hash = pick(&columns, &["hashed_password", "password_hash", "password"])
        .ok_or(ReadError::NoHashColumn)?;
    let name = pick(&columns, &["name", "full_name", "username", "first_name"]);
    let active = pick(&columns, &["is_active", "active"]);
    let verified = pick(&columns, &["is_verified", "verified", "email_verified"]);
    let superuser = pick(&columns, &["is_superuser", "is_admin", "superuser"]);
    let created = pick(&columns, &["created_at", "date_joined", "created"]);
    let updated = pick(&columns, &["updated_at", "modified_at", "updated"]);

    let rows = sqlx::query("SELECT * FROM users")
        .fetch_all(&source)
        .await
        .map_err(ReadError::Read)?;
    source.close().await;
    Ok(rows
        .iter()
        .map(|row| OriginalUser {
            email: text(row, email).unwrap_or_default(),
            password_hash: text(row, hash).unwrap_or_default(),
            name: name.and_then(|c| text(row, c)),
            is_active: flag(row, active),
            is_verified: flag(row, verified),
            is_superuser: flag(row, superuser),
            created_at: timestamp_ms(row, created),
            updated_at: timestamp_ms(row, updated),
        })
        .collect())
}

fn pick<'a>(columns: &'a [String], names: &[&str]) -> Option<&'a str> {
    names
        .iter()
        .find_map(|n| columns.iter().find(|c| c.eq_ignore_ascii_case(n)))
        .map(String::as_str)
}

fn text(row: &SqliteRow, column: &str) -> Option<String> {
    let raw = row.try_get_raw(column).ok()?;
    if raw.is_null() {
        return None;
    }
    row.try_get::<String, _>(column)
        .ok()
        .or_else(|| row.try_get::<i64, _>(column).ok().map(|n| n.to_string()))
}

fn flag(row: &SqliteRow, column: Option<&str>) -> Option<bool> {
    match text(row, column?)
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("1" | "true" | "t" | "yes") => Some(true),
        Some("0" | "false" | "f" | "no") => Some(false),
        _ => None,
    }
}

/// SQLAlchemy writes DATETIME as `2024-05-01 12:34:56.789012`; some rows hold epoch seconds.
fn timestamp_ms(row: &SqliteRow, column: Option<&str>) -> Option<i64> {
    let value = text(row, column?)?;
    if let Ok(seconds) = value.parse::<i64>() {
        return Some(seconds.saturating_mul(1000));
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(&value) {
        return Some(t.timestamp_millis());
    }
    ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
        .iter()
        .find_map(|f| chrono::NaiveDateTime::parse_from_str(&value, f).ok())
        .map(|t| t.and_utc().timestamp_millis())
}
