//! The `security_events` table: the audit trail. Rows are written in the transaction of the change
//! they record (`insert_in`), read newest first with a cursor on `seq`, and purged by age.

use super::{Db, Tx, read, with_pool, with_tx};

/// One event as stored.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct EventRow {
    pub seq: i64,
    pub id: String,
    pub at: i64,
    #[sqlx(rename = "type")]
    pub kind: String,
    pub user_id: Option<String>,
    pub actor_id: Option<String>,
    pub session_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// A JSON object, as text.
    pub detail: String,
}

/// Which events a listing returns. Every field narrows it; `before_seq` is the cursor (the `seq`
/// of the last row of the previous page).
#[derive(Clone, Debug, Default)]
pub struct EventFilter {
    pub user_id: Option<String>,
    pub kinds: Vec<String>,
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub before_seq: Option<i64>,
}

/// Records `event` (its `seq` is given by the database; the one passed is ignored).
pub async fn insert_in(tx: &mut Tx, event: &EventRow) -> Result<(), sqlx::Error> {
    let sql = "INSERT INTO security_events \
               (id, at, type, user_id, actor_id, session_id, ip, user_agent, detail) \
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
    with_tx!(tx, conn => sqlx::query(sql)
        .bind(&event.id)
        .bind(event.at)
        .bind(&event.kind)
        .bind(&event.user_id)
        .bind(&event.actor_id)
        .bind(&event.session_id)
        .bind(&event.ip)
        .bind(&event.user_agent)
        .bind(&event.detail)
        .execute(conn)
        .await
        .map(|_| ()))?;
    Ok(())
}

/// Up to `limit` events matching `filter`, newest first.
pub async fn list(db: &Db, filter: &EventFilter, limit: i64) -> Result<Vec<EventRow>, sqlx::Error> {
    // The conditions present, each with its own placeholder, bound below in the same order.
    let mut conditions: Vec<String> = Vec::new();
    let mut n = 0;
    let mut next = || {
        n += 1;
        n
    };
    if filter.user_id.is_some() {
        conditions.push(format!("user_id = ${}", next()));
    }
    if !filter.kinds.is_empty() {
        let placeholders: Vec<String> = filter
            .kinds
            .iter()
            .map(|_| format!("${}", next()))
            .collect();
        conditions.push(format!("type IN ({})", placeholders.join(", ")));
    }
    if filter.since.is_some() {
        conditions.push(format!("at >= ${}", next()));
    }
    if filter.until.is_some() {
        conditions.push(format!("at < ${}", next()));
    }
    if filter.before_seq.is_some() {
        conditions.push(format!("seq < ${}", next()));
    }
    let limit_placeholder = next();
    let where_clause = if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    };
    // Only placeholders are formatted into the text; every value is bound.
    let sql = format!(
        "SELECT seq, id, at, type, user_id, actor_id, session_id, ip, user_agent, detail \
         FROM security_events {where_clause} ORDER BY seq DESC LIMIT ${limit_placeholder}"
    );
    read!(db, pool => {
        let mut query = sqlx::query_as::<_, EventRow>(sqlx::AssertSqlSafe(sql.as_str()));
        if let Some(user_id) = &filter.user_id {
            query = query.bind(user_id);
        }
        for kind in &filter.kinds {
            query = query.bind(kind);
        }
        if let Some(since) = filter.since {
            query = query.bind(since);
        }
        if let Some(until) = filter.until {
            query = query.bind(until);
        }
        if let Some(before) = filter.before_seq {
            query = query.bind(before);
        }
        query.bind(limit).fetch_all(pool).await
    })
}

/// Deletes the events recorded before `before`.
pub async fn purge_before(db: &Db, before: i64) -> Result<u64, sqlx::Error> {
    let sql = "DELETE FROM security_events WHERE at < $1";
    with_pool!(db, pool => sqlx::query(sql).bind(before).execute(pool).await.map(|r| r.rows_affected()))
}
