//! Seeding: accounts written straight into the database.

use auth_server::db::{Db, SqliteDb};

/// The address of seeded user `i`.
pub fn email(i: usize) -> String {
    format!("user{i}@bench.example")
}

/// Writes users `from..to` straight into the database, all with one argon2id hash.
pub async fn seed(db: &Db, hash: &str, from: usize, to: usize) {
    let now = chrono::Utc::now().timestamp_millis();
    let mut i = from;
    while i < to {
        let end = (i + 2000).min(to);
        macro_rules! insert {
            ($pool:expr, $db:ty) => {{
                let mut q = sqlx::QueryBuilder::<$db>::new(
                    "INSERT INTO users (id, email, name, password_hash, is_active, is_verified, is_superuser, created_at, updated_at) ",
                );
                q.push_values(i..end, |mut row, n| {
                    row.push_bind(uuid::Uuid::new_v4().to_string())
                        .push_bind(email(n))
                        .push_bind(format!("Bench User {n}"))
                        .push_bind(hash)
                        .push_bind(true)
                        .push_bind(true)
                        .push_bind(false)
                        .push_bind(now - n as i64)
                        .push_bind(now - n as i64);
                });
                q.build().execute($pool).await.expect("seed users");
            }};
        }
        match db {
            Db::Sqlite(SqliteDb { pool, .. }) => insert!(pool, sqlx::Sqlite),
            Db::Postgres(pool) => insert!(pool, sqlx::Postgres),
        }
        i = end;
    }
}

/// A bulk load leaves the rows in SQLite's write-ahead log, where every read has to look for
/// them; a live database is checkpointed as it goes. Checkpoint, as it would be.
pub async fn checkpoint(db: &Db) {
    if let Db::Sqlite(SqliteDb { pool, .. }) = db {
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(pool)
            .await
            .expect("checkpoint");
    }
}
