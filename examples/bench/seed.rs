//! Seeding: accounts written straight into the database through `db::users::insert_many`.

use auth_server::db::Db;
use auth_server::db::users::{self, User};

/// Accounts built and written per call (one transaction each).
const CHUNK: usize = 10_000;

/// The address of seeded user `i`.
pub fn email(i: usize) -> String {
    format!("user{i}@bench.example")
}

/// Writes users `from..to` straight into the database, all with one argon2id hash.
pub async fn seed(db: &Db, hash: &str, from: usize, to: usize) {
    let now = chrono::Utc::now().timestamp_millis();
    let mut i = from;
    while i < to {
        let end = (i + CHUNK).min(to);
        let batch: Vec<User> = (i..end)
            .map(|n| User {
                id: uuid::Uuid::new_v4().to_string(),
                email: email(n),
                name: format!("Bench User {n}"),
                password_hash: hash.to_string(),
                is_active: true,
                is_verified: true,
                is_superuser: false,
                created_at: now - n as i64,
                updated_at: now - n as i64,
                security_stamp: 0,
            })
            .collect();
        users::insert_many(db, &batch).await.expect("seed users");
        i = end;
    }
}

/// A bulk load leaves the rows in SQLite's write-ahead log, where every read has to look for
/// them; a live database is checkpointed as it goes. Checkpoint, as it would be.
pub async fn checkpoint(db: &Db) {
    db.checkpoint().await.expect("checkpoint");
}
