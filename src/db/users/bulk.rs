//! The `users` table, all of it at once: bulk and import inserts, the start-up scan for bcrypt
//! costs, and the one-off backfill after an upgrade.

use super::{User, search_folded};
use crate::db::{Db, read, with_pool, with_tx};

/// Rows a statement of [`insert_many`] writes: 11 parameters a row, 22,000 a statement, under
/// PostgreSQL's limit of 65,535 and SQLite's default of 32,766.
const INSERT_MANY_BATCH: usize = 2000;

/// Inserts many accounts at once, for bulk loads (the benchmark's seeding, imports): every column
/// of each [`User`] and its folded name for search, in multi-row INSERTs of [`INSERT_MANY_BATCH`]
/// rows, all in one transaction, so that all or none are written. It validates nothing: the
/// emails must be normalised already, and one that is taken fails the whole call with a unique
/// violation. Returns the number of rows inserted.
pub async fn insert_many(db: &Db, users: &[User]) -> Result<u64, sqlx::Error> {
    let mut tx = db.begin().await?;
    let mut inserted = 0;
    for batch in users.chunks(INSERT_MANY_BATCH) {
        inserted += with_tx!(&mut tx, conn => {
            let mut query =
                sqlx::QueryBuilder::new(concat!("INSERT INTO users (", columns!(), ", name_search) "));
            query.push_values(batch, |mut row, user| {
                row.push_bind(&user.id)
                    .push_bind(&user.email)
                    .push_bind(&user.name)
                    .push_bind(&user.password_hash)
                    .push_bind(user.is_active)
                    .push_bind(user.is_verified)
                    .push_bind(user.is_superuser)
                    .push_bind(user.created_at)
                    .push_bind(user.updated_at)
                    .push_bind(user.security_stamp)
                    .push_bind(search_folded(&user.name));
            });
            query.build().execute(conn).await.map(|r| r.rows_affected())
        })?;
    }
    tx.commit().await?;
    Ok(inserted)
}

/// Inserts an account unless one has its email already. Returns whether it was inserted.
pub async fn insert_if_absent(db: &Db, user: &User) -> Result<bool, sqlx::Error> {
    let sql = concat!(
        "INSERT INTO users (",
        columns!(),
        ", name_search) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
         ON CONFLICT (email) DO NOTHING"
    );
    let done = with_pool!(db, pool => bind_user!(sqlx::query(sql), user)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(done == 1)
}

/// The highest bcrypt cost, up to `at_most`, among the stored hashes (accounts imported from
/// the original service that have not logged in since), if any remain. Only well-formed
/// prefixes count (`$2a$`, `$2b$`, `$2y$` and two digits), so that a planted row with another
/// prefix or a cost beyond the bounds (which is never computed anyway) cannot hide the real
/// ones. Reads the whole table: once, at start.
pub async fn max_bcrypt_cost(db: &Db, at_most: u32) -> Result<Option<u32>, sqlx::Error> {
    // bcrypt writes its cost as two digits: `$2b$12$…`.
    let sql =
        "SELECT DISTINCT SUBSTR(password_hash, 1, 7) FROM users WHERE password_hash LIKE '$2%'";
    let prefixes: Vec<String> = read!(db, pool => sqlx::query_scalar(sql).fetch_all(pool).await)?;
    Ok(prefixes
        .iter()
        .filter_map(|p| {
            let rest = ["$2a$", "$2b$", "$2y$"]
                .iter()
                .find_map(|v| p.strip_prefix(v))?;
            let digits = rest.strip_suffix('$')?;
            (digits.len() == 2).then_some(())?;
            digits.parse::<u32>().ok()
        })
        .filter(|cost| (4..=at_most).contains(cost))
        .max())
}

/// Brings rows written before the `security_stamp` migration to today's forms, once, at start
/// (a no-op afterwards: it looks only at rows whose `name_search` is still empty): fills the
/// folded name, and rewrites the email in its normalised form (NFC, IDNA domain), which older
/// versions did not apply, so that the account is found by what its owner types. An address
/// whose normalised form another account already has is left as it is and reported (an operator
/// must decide which account keeps it). Returns how many rows were brought over.
pub async fn backfill_after_upgrade(db: &Db) -> Result<u64, sqlx::Error> {
    let mut filled = 0;
    loop {
        let rows: Vec<(String, String, String)> = read!(db, pool => sqlx::query_as(
            "SELECT id, email, name FROM users WHERE name_search IS NULL LIMIT 1000"
        )
        .fetch_all(pool)
        .await)?;
        if rows.is_empty() {
            return Ok(filled);
        }
        for (id, email, name) in rows {
            let normalised = crate::domain::Email::normalise(&email);
            if normalised != email {
                let sql = "UPDATE users SET email = $2 WHERE id = $1";
                let renamed = with_pool!(db, pool => sqlx::query(sql)
                    .bind(&id)
                    .bind(&normalised)
                    .execute(pool)
                    .await
                    .map(|_| ()));
                db.sessions_changed(crate::db::session_cache::Changed::Account(id.clone()));
                match renamed {
                    Ok(()) => {}
                    Err(e) if crate::db::is_unique_violation(&e) => tracing::error!(
                        user_id = %id,
                        "two accounts have addresses that are one after normalisation; this one \
                         keeps its old form (and cannot be found by it) until an operator resolves it"
                    ),
                    Err(e) => return Err(e),
                }
            }
            // A rename meanwhile has filled it already, from the new name.
            let sql = "UPDATE users SET name_search = $2 WHERE id = $1 AND name_search IS NULL";
            with_pool!(db, pool => sqlx::query(sql)
                .bind(&id)
                .bind(search_folded(&name))
                .execute(pool)
                .await
                .map(|_| ()))?;
            filled += 1;
        }
    }
}
