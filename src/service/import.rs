//! Bringing accounts over from the original Python service's SQLite database: email, name,
//! flags and password hashes (passlib's bcrypt, verified at the next login and then replaced by
//! argon2id). Accounts whose email is already here are skipped, so running it twice is safe.
//! A hash that is not bcrypt or argon2, or whose cost is beyond the [`HashLimits`], is reported
//! and not brought over: the server would never verify it.

use std::str::FromStr;

use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions, SqliteRow};
use sqlx::{Row, ValueRef};

use crate::auth::password::{HashLimits, check_stored_hash};
use crate::config::DatabaseUrl;
use crate::db::{self, Db, users};
use crate::domain::{Email, Name};

#[derive(Debug, Default)]
pub struct ImportReport {
    pub imported: usize,
    /// Emails that already had an account here.
    pub duplicates: Vec<String>,
    /// Rows that could not be brought over, and why.
    pub invalid: Vec<(String, String)>,
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

fn flag(row: &SqliteRow, column: Option<&str>, default: bool) -> bool {
    let Some(column) = column else { return default };
    match text(row, column)
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("1" | "true" | "t" | "yes") => true,
        Some("0" | "false" | "f" | "no") => false,
        _ => default,
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

/// Copies the `users` table of the SQLite database at `from` into `target`; password hashes
/// beyond `limits` are refused.
pub async fn import_users(
    target: &Db,
    from: &str,
    limits: &HashLimits,
) -> Result<ImportReport, String> {
    let DatabaseUrl::Sqlite(url) = DatabaseUrl::parse(from).map_err(|e| format!("--from: {e}"))?
    else {
        return Err("--from must be a SQLite database (sqlite:///path/to/sqlite.db)".into());
    };
    let options = SqliteConnectOptions::from_str(&url)
        .map_err(|e| format!("--from: {e}"))?
        .read_only(true);
    let source = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .map_err(|e| format!("cannot open {from}: {e}"))?;
    let columns: Vec<String> = sqlx::query_scalar("SELECT name FROM pragma_table_info('users')")
        .fetch_all(&source)
        .await
        .map_err(|e| format!("cannot read the users table: {e}"))?;
    if columns.is_empty() {
        return Err(format!("{from} has no users table"));
    }
    let email_column = pick(&columns, &["email"]).ok_or("the users table has no email column")?;
    let hash_column = pick(&columns, &["hashed_password", "password_hash", "password"]).ok_or(
        "the users table has no password hash column (hashed_password, password_hash or password)",
    )?;
    let name_column = pick(&columns, &["name", "full_name", "username", "first_name"]);
    let active = pick(&columns, &["is_active", "active"]);
    let verified = pick(&columns, &["is_verified", "verified", "email_verified"]);
    let superuser = pick(&columns, &["is_superuser", "is_admin", "superuser"]);
    let created = pick(&columns, &["created_at", "date_joined", "created"]);
    let updated = pick(&columns, &["updated_at", "modified_at", "updated"]);

    let rows = sqlx::query("SELECT * FROM users")
        .fetch_all(&source)
        .await
        .map_err(|e| format!("cannot read the users table: {e}"))?;
    source.close().await;

    let mut report = ImportReport::default();
    let now = db::now_ms();
    for row in &rows {
        let raw_email = text(row, email_column).unwrap_or_default();
        let email = match Email::parse("email", &raw_email) {
            Ok(e) => e,
            Err(e) => {
                report
                    .invalid
                    .push((raw_email, format!("the email {}", e.message)));
                continue;
            }
        };
        let hash = text(row, hash_column).unwrap_or_default();
        if let Err(why) = check_stored_hash(&hash, limits) {
            report.invalid.push((email.as_str().into(), why));
            continue;
        }
        let name = name_column
            .and_then(|c| text(row, c))
            .and_then(|n| Name::parse("name", &n).ok())
            .or_else(|| {
                Name::parse("name", email.as_str().split('@').next().unwrap_or("user")).ok()
            })
            .map_or_else(|| "User".to_string(), |n| n.as_str().to_string());
        let created_at = timestamp_ms(row, created).unwrap_or(now);
        let user = users::User {
            id: uuid::Uuid::new_v4().to_string(),
            email: email.as_str().to_string(),
            name,
            password_hash: hash,
            is_active: flag(row, active, true),
            is_verified: flag(row, verified, false),
            is_superuser: flag(row, superuser, false),
            created_at,
            updated_at: timestamp_ms(row, updated).unwrap_or(created_at),
            security_stamp: 0,
        };
        match users::insert_if_absent(target, &user).await {
            Ok(true) => report.imported += 1,
            Ok(false) => report.duplicates.push(user.email),
            Err(e) => return Err(format!("cannot write {}: {e}", user.email)),
        }
    }
    Ok(report)
}
