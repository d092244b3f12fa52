//! Bringing accounts over from the original Python service's SQLite database: email, name,
//! flags and password hashes (passlib's bcrypt, verified at the next login and then replaced by
//! argon2id). Accounts whose email is already here are skipped, so running it twice is safe.
//! A hash that is not bcrypt or argon2, or whose cost is beyond the [`HashLimits`], is reported
//! and not brought over: the server would never verify it.

use crate::auth::password::{HashLimits, check_stored_hash};
use crate::config::DatabaseUrl;
use crate::db::original::{self, ReadError};
use crate::db::{Db, users};
use crate::domain::{Email, Name};

#[derive(Debug, Default)]
pub struct ImportReport {
    pub imported: usize,
    /// Emails that already had an account here.
    pub duplicates: Vec<String>,
    /// Rows that could not be brought over, and why.
    pub invalid: Vec<(String, String)>,
}

/// Copies the `users` table of the SQLite database at `from` into `target`; password hashes
/// beyond `limits` are refused. The imported rows are stamped with `now` (Unix ms).
pub async fn import_users(
    target: &Db,
    now: i64,
    from: &str,
    limits: &HashLimits,
) -> Result<ImportReport, String> {
    let DatabaseUrl::Sqlite(url) = DatabaseUrl::parse(from).map_err(|e| format!("--from: {e}"))?
    else {
        return Err("--from must be a SQLite database (sqlite:///path/to/sqlite.db)".into());
    };
    let rows = original::read_users(&url).await.map_err(|e| match e {
        ReadError::Url(e) => format!("--from: {e}"),
        ReadError::Open(e) => format!("cannot open {from}: {e}"),
        ReadError::Read(e) => format!("cannot read the users table: {e}"),
        ReadError::NoUsersTable => format!("{from} has no users table"),
        ReadError::NoEmailColumn => "the users table has no email column".into(),
        ReadError::NoHashColumn => "the users table has no password hash column \
            (hashed_password, password_hash or password)"
            .into(),
    })?;

    let mut report = ImportReport::default();
    for row in rows {
        let email = match Email::parse("email", &row.email) {
            Ok(e) => e,
            Err(e) => {
                report
                    .invalid
                    .push((row.email, format!("the email {}", e.message)));
                continue;
            }
        };
        if let Err(why) = check_stored_hash(&row.password_hash, limits) {
            report.invalid.push((email.as_str().into(), why));
            continue;
        }
        let name = row
            .name
            .and_then(|n| Name::parse("name", &n).ok())
            .or_else(|| {
                Name::parse("name", email.as_str().split('@').next().unwrap_or("user")).ok()
            })
            .map_or_else(|| "User".to_string(), |n| n.as_str().to_string());
        let created_at = row.created_at.unwrap_or(now);
        let user = users::User {
            id: uuid::Uuid::new_v4().to_string(),
            email: email.as_str().to_string(),
            name,
            password_hash: row.password_hash,
            // A column the original table did not have, or a value that is not a boolean.
            is_active: row.is_active.unwrap_or(true),
            is_verified: row.is_verified.unwrap_or(false),
            is_superuser: row.is_superuser.unwrap_or(false),
            created_at,
            updated_at: row.updated_at.unwrap_or(created_at),
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
