//! A database blip costs no request (PostgreSQL only): the server's backends are terminated
//! (`pg_terminate_backend`, as a restart or a failover does to them) while requests run. A read
//! whose connection was lost runs once more on a fresh one, so every read is answered; a write
//! whose outcome is unknown is answered 503 and never applied twice; `/health` says "degraded"
//! for a minute after a blip and "down" when the database is gone.
//!
//! On SQLite (no connection to lose) each test passes after one line on stderr.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use sqlx::Connection as _;
use sqlx::postgres::PgConnection;

use crate::helpers::*;

/// These tests are about the database's path: the session check's cache (which would answer
/// GET /me without it) is off.
const NO_CACHE: (&str, &str) = ("SESSION_CACHE_MS", "0");

/// False, after one line on stderr (once per run), when the suite runs on SQLite.
fn postgres_only() -> bool {
    if on_postgres() {
        return true;
    }
    static SAID: OnceLock<()> = OnceLock::new();
    SAID.get_or_init(|| {
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "blips tests skipped: PostgreSQL only (set TEST_DATABASE_URL to run them)"
        );
    });
    false
}

/// Terminates every backend of the test's database but the one asking (the test's own
/// connection): the server's pool loses every connection it has, in use or idle. Returns how
/// many were terminated.
async fn terminate_backends(app: &TestApp) -> i64 {
    let TestPool::Postgres(pool) = &app.sql else {
        unreachable!("PostgreSQL only")
    };
    sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) AS done FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()) t WHERE done",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

/// The server's database, by name.
fn database_name(app: &TestApp) -> String {
    let url = app.var("DATABASE_URL");
    url.rsplit('/').next().unwrap().to_string()
}

/// Requests running on tasks of their own until stopped, every answer counted by what was asked
/// and its status.
struct Load {
    answers: Arc<Mutex<BTreeMap<(String, u16), usize>>>,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// `tasks` tasks, each sending `next(task, i)` for its i-th request.
    fn start<F, Fut>(tasks: usize, next: F) -> Self
    where
        F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = (String, u16)> + Send,
    {
        let answers = Arc::new(Mutex::new(BTreeMap::new()));
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let next = Arc::new(next);
        let tasks = (0..tasks)
            .map(|task| {
                let (answers, stopped, next) = (answers.clone(), stopped.clone(), next.clone());
                tokio::spawn(async move {
                    let mut i = 0;
                    while !*stopped.borrow() {
                        let answer = next(task, i).await;
                        *answers.lock().unwrap().entry(answer).or_default() += 1;
                        i += 1;
                    }
                })
            })
            .collect();
        Self {
            answers,
            stop,
            tasks,
        }
    }

    fn count(&self) -> usize {
        self.answers.lock().unwrap().values().sum()
    }

    /// Waits until `more` answers have come since the call.
    async fn until_more(&self, more: usize) {
        let from = self.count();
        eventually(
            &format!("{more} more answers"),
            Duration::from_secs(60),
            || async { self.count() },
            |n| *n >= from + more,
        )
        .await;
    }

    /// Stops the tasks (each finishes its request) and returns every answer.
    async fn finish(self) -> BTreeMap<(String, u16), usize> {
        self.stop.send_replace(true);
        for task in self.tasks {
            task.await.unwrap();
        }
        self.answers.lock().unwrap().clone()
    }
}

#[tokio::test]
async fn reads_under_load_survive_two_blips() {
    if !postgres_only() {
        return;
    }
    // A small pool, so that the reads queue for connections the blips kill.
    let app = Arc::new(spawn_app_with(&[("DATABASE_MAX_CONNECTIONS", "3"), NO_CACHE]).await);
    let (_, admin) = app.superuser().await;
    let mut users = Vec::new();
    for _ in 0..3 {
        users.push(app.signed_up(&unique_email()).await.1.access);
    }
    let users = Arc::new(users);
    let load = {
        let (app, users, admin) = (app.clone(), users.clone(), admin.access.clone());
        Load::start(6, move |task, i| {
            let (app, users, admin) = (app.clone(), users.clone(), admin.clone());
            async move {
                let (path, token) = match (task + i) % 5 {
                    0 | 1 => ("/me", &users[task % users.len()]),
                    2 => ("/me/sessions", &users[(task + 1) % users.len()]),
                    3 => ("/me/mfa", &users[(task + 2) % users.len()]),
                    _ => ("/users?limit=10", &admin),
                };
                let response = app
                    .client
                    .get(app.url(path))
                    .bearer_auth(token)
                    .send()
                    .await
                    .unwrap();
                (path.to_string(), response.status().as_u16())
            }
        })
    };
    load.until_more(100).await;
    assert!(terminate_backends(&app).await >= 1, "no server connection");
    load.until_more(100).await;
    // The second blip comes once the pool trusts its connections again (no ping before use),
    // and is a blip of its own.
    eventually(
        "the pool's suspect window ending",
        Duration::from_secs(30),
        || async { app.state.db.suspect() },
        |suspect| !suspect,
    )
    .await;
    assert!(terminate_backends(&app).await >= 1, "no server connection");
    load.until_more(100).await;
    let answers = load.finish().await;
    let failed: Vec<_> = answers.iter().filter(|((_, s), _)| *s != 200).collect();
    assert!(failed.is_empty(), "reads not answered 200: {answers:?}");
    // How many reads were run again depends on where each connection was when it died (one
    // killed while sqlx pinged it on its way back to the pool is dropped unseen); /health says
    // whether any was lost.
    let lost = app.state.db.stats().connections_lost;
    let health = app.get_json("/health").await;
    assert_eq!(health["status"] == "degraded", lost > 0, "{health}");
}

#[tokio::test]
async fn an_idle_connection_killed_between_requests_costs_no_read_and_health_says_degraded_for_a_minute()
 {
    if !postgres_only() {
        return;
    }
    let app = spawn_app_with(&[("DATABASE_MAX_CONNECTIONS", "2"), NO_CACHE]).await;
    let (_, tokens) = app.signed_up(&unique_email()).await;
    assert_eq!(app.me(&tokens.access).await.status(), StatusCode::OK);
    assert_eq!(
        app.get_json("/health").await,
        serde_json::json!({"status": "ok", "database": "ok"})
    );
    // Every connection of the pool is idle now, and dies: the next read finds a dead one, and
    // runs again on a new one.
    assert!(terminate_backends(&app).await >= 1);
    assert_eq!(app.me(&tokens.access).await.status(), StatusCode::OK);
    assert_eq!(
        app.live_sessions(&tokens.access)
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let stats = app.state.db.stats();
    assert!(stats.connections_lost >= 1, "{stats:?}");
    let metrics = app.state.metrics.scrape(&app.state).await;
    assert!(
        metrics.contains(&format!(
            "auth_db_connections_lost_total {}",
            stats.connections_lost
        )),
        "{metrics}"
    );

    // Degraded for a minute (by the server's clock), with the reason; then ok.
    let health = app.get_json("/health").await;
    assert_eq!(
        health,
        serde_json::json!({"status": "degraded", "database": "ok",
                           "reasons": ["database_connection_lost"]})
    );
    app.clock.advance(Duration::from_secs(59));
    assert_eq!(app.get_json("/health").await["status"], "degraded");
    app.clock.advance(Duration::from_secs(2));
    assert_eq!(
        app.get_json("/health").await,
        serde_json::json!({"status": "ok", "database": "ok"})
    );
}

#[tokio::test]
async fn registrations_during_blips_are_applied_once_or_answered_503() {
    if !postgres_only() {
        return;
    }
    let app = Arc::new(spawn_app_with(&[("DATABASE_MAX_CONNECTIONS", "3"), NO_CACHE]).await);
    let load = {
        let app = app.clone();
        Load::start(4, move |task, i| {
            let app = app.clone();
            async move {
                let email = format!("blip-{task}-{i}@example.com");
                let status = app.register(&email, PASSWORD, "Blip").await.status();
                (email, status.as_u16())
            }
        })
    };
    load.until_more(20).await;
    terminate_backends(&app).await;
    load.until_more(20).await;
    terminate_backends(&app).await;
    load.until_more(20).await;
    let answers = load.finish().await;
    let mut unknown = Vec::new();
    for ((email, status), n) in &answers {
        assert_eq!(*n, 1, "{email} was asked once");
        let rows = app
            .count("SELECT count(*) FROM users WHERE email = $1", email)
            .await;
        match *status {
            201 => assert_eq!(rows, 1, "{email}: 201 without exactly one account"),
            // Its outcome is unknown to the server: at most once, never twice.
            503 => {
                assert!(rows <= 1, "{email}: {rows} accounts");
                unknown.push(email.clone());
            }
            other => panic!("{email}: a registration during a blip was answered {other}"),
        }
    }
    // The client tries the unknown ones again: each ends with exactly one account (made now,
    // or found there: 409).
    for email in &unknown {
        let status = app.register(email, PASSWORD, "Blip").await.status();
        assert!(
            status == StatusCode::CREATED || status == StatusCode::CONFLICT,
            "{email}: {status}"
        );
        assert_eq!(
            app.count("SELECT count(*) FROM users WHERE email = $1", email)
                .await,
            1
        );
    }
}

/// A connection of the test's own holding a row of `users` (`SELECT ... FOR UPDATE` in an open
/// transaction): a server's write of that row waits, inside its transaction, holding its pooled
/// connection, until [`RowHolder::release`].
struct RowHolder {
    conn: PgConnection,
}

impl RowHolder {
    async fn lock(app: &TestApp, user_id: &str) -> Self {
        let mut conn = PgConnection::connect(&app.var("DATABASE_URL"))
            .await
            .unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe("BEGIN"))
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::query("SELECT id FROM users WHERE id = $1 FOR UPDATE")
            .bind(user_id)
            .execute(&mut conn)
            .await
            .unwrap();
        Self { conn }
    }

    /// Returns once another backend of the database waits for a lock (the server's write).
    async fn until_waited_for(&mut self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            // Inside a transaction the activity view is a snapshot until cleared.
            sqlx::query("SELECT pg_stat_clear_snapshot()")
                .execute(&mut self.conn)
                .await
                .unwrap();
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .fetch_one(&mut self.conn)
            .await
            .unwrap();
            if waiting >= 1 {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no write waited for the row within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn release(mut self) {
        sqlx::raw_sql(sqlx::AssertSqlSafe("ROLLBACK"))
            .execute(&mut self.conn)
            .await
            .unwrap();
        self.conn.close().await.unwrap();
    }
}

#[tokio::test]
async fn a_pool_that_ran_out_of_connections_shows_in_health_for_a_minute() {
    if !postgres_only() {
        return;
    }
    // One connection, held by a password change that waits for the row the test holds.
    let app = Arc::new(spawn_app_with(&[("DATABASE_MAX_CONNECTIONS", "1"), NO_CACHE]).await);
    let email = unique_email();
    let (user, tokens) = app.signed_up(&email).await;
    let mut holder = RowHolder::lock(&app, user["id"].as_str().unwrap()).await;
    let change = {
        let (app, token) = (app.clone(), tokens.access.clone());
        tokio::spawn(async move {
            app.change_password(&token, PASSWORD, "another passphrase for the pool")
                .await
                .status()
        })
    };
    holder.until_waited_for().await;
    // A read waits for the connection (3 s), in vain: 503, never a hang.
    assert_problem(app.me(&tokens.access).await, 503, "SERVICE_UNAVAILABLE").await;
    holder.release().await;
    assert!(change.await.unwrap().is_success());
    assert!(app.state.db.stats().pool_timeouts >= 1);
    let health = app.get_json("/health").await;
    assert_eq!(health["status"], "degraded", "{health}");
    assert!(
        health["reasons"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("database_pool_exhausted")),
        "{health}"
    );
    app.clock.advance(Duration::from_secs(61));
    assert_eq!(
        app.get_json("/health").await,
        serde_json::json!({"status": "ok", "database": "ok"})
    );
}

/// PUT /me/password, sent again while it is answered 503 (at most 3 times), as a client does.
async fn change_password_retrying(app: &TestApp, token: &str, from: &str, to: &str) -> StatusCode {
    for _ in 0..3 {
        let status = app.change_password(token, from, to).await.status();
        if status != StatusCode::SERVICE_UNAVAILABLE {
            return status;
        }
    }
    StatusCode::SERVICE_UNAVAILABLE
}

#[tokio::test]
async fn a_write_cut_inside_its_transaction_is_answered_503_and_retried_by_the_client() {
    if !postgres_only() {
        return;
    }
    let app = Arc::new(spawn_app_with(&[NO_CACHE]).await);
    let email = unique_email();
    let (user, tokens) = app.signed_up(&email).await;
    let user_id = user["id"].as_str().unwrap().to_string();
    const NEW: &str = "a brand new passphrase for blips";

    // The test holds the account's row, so that the password change waits inside its
    // transaction (the UPDATE of `users`) ...
    let mut holder = RowHolder::lock(&app, &user_id).await;
    let change = {
        let (app, token) = (app.clone(), tokens.access.clone());
        tokio::spawn(async move {
            let response = app.change_password(&token, PASSWORD, NEW).await;
            (response.status(), response.text().await.unwrap())
        })
    };
    holder.until_waited_for().await;
    // ... and is cut there: its outcome is unknown to the server, which never sends it again.
    let terminated: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) AS done FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()) t WHERE done",
    )
    .fetch_one(&mut holder.conn)
    .await
    .unwrap();
    assert!(terminated >= 1);
    let (status, body) = change.await.unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("SERVICE_UNAVAILABLE"), "{body}");
    holder.release().await;

    // Not applied: the old password still works, and the client's retry changes it, once.
    app.login_ok(&email).await;
    let status = change_password_retrying(&app, &tokens.access, PASSWORD, NEW).await;
    assert!(status.is_success(), "{status}");
    assert_eq!(
        app.login(&email, PASSWORD).await.status(),
        StatusCode::UNAUTHORIZED
    );
    app.login_ok_with(&email, NEW).await;
    // The caller's session survived its own change.
    assert_eq!(app.me(&tokens.access).await.status(), StatusCode::OK);
    let health: Value = app.get_json("/health").await;
    assert_eq!(health["status"], "degraded", "{health}");
}

#[tokio::test]
async fn health_is_down_when_the_database_is_gone() {
    if !postgres_only() {
        return;
    }
    let app = spawn_app_with(&[NO_CACHE]).await;
    assert_eq!(
        app.get_json("/health").await,
        serde_json::json!({"status": "ok", "database": "ok"})
    );
    // The server's database is dropped under it (its connections ended with it).
    let server_url = std::env::var("TEST_DATABASE_URL").unwrap();
    let (scheme, rest) = server_url.split_once("://").unwrap();
    let authority = rest.split(['/', '?']).next().unwrap();
    let mut admin = PgConnection::connect(&format!("{scheme}://{authority}/postgres"))
        .await
        .unwrap();
    app.sql.close().await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE {} WITH (FORCE)",
        database_name(&app)
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    admin.close().await.unwrap();
    let health = app.client.get(app.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        health.json::<Value>().await.unwrap(),
        serde_json::json!({"status": "down", "database": "unavailable"})
    );
}
