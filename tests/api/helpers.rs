//! The test harness: the real server on port 0, a fresh database per test, over real HTTP.
//!
//! By default each test gets a new SQLite file. With `TEST_DATABASE_URL=postgres://...` (a
//! server URL; its database part is ignored) each test gets a freshly created PostgreSQL
//! database, dropped when the test ends.

use std::path::PathBuf;
use std::sync::Arc;

use auth_server::state::AppState;
use auth_server::{Application, Clock, Config};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};

/// The tests that measure time or saturate the cores take turns, so as not to skew each other.
pub static CORES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub const SECRET: &str = "test-secret-key-that-is-at-least-32-bytes-long";
pub const PASSWORD: &str = "correct horse battery staple";

/// Where a test's database lives; removed when the test ends.
enum TestDb {
    Sqlite(PathBuf),
    Postgres { server: String, name: String },
}

impl TestDb {
    async fn create() -> (Self, String) {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let db = match std::env::var("TEST_DATABASE_URL") {
            Ok(server) if !server.is_empty() => {
                let server = server_url(&server);
                let name = format!("auth_test_{id}");
                let admin = PgPoolOptions::new()
                    .max_connections(1)
                    .connect(&format!("{server}/postgres"))
                    .await
                    .expect("TEST_DATABASE_URL must reach a PostgreSQL server");
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&admin)
                    .await
                    .expect("create the test database");
                admin.close().await;
                Self::Postgres { server, name }
            }
            _ => Self::Sqlite(std::env::temp_dir().join(format!("auth-server-test-{id}.db"))),
        };
        let url = db.url();
        (db, url)
    }

    fn url(&self) -> String {
        match self {
            Self::Sqlite(path) => format!("sqlite://{}", path.display()),
            Self::Postgres { server, name } => format!("{server}/{name}"),
        }
    }

    /// A pool of the test's own on this database (connecting when first used).
    fn pool(&self) -> TestPool {
        match self {
            Self::Sqlite(path) => TestPool::Sqlite(
                SqlitePoolOptions::new()
                    .max_connections(1)
                    .connect_lazy_with(
                        SqliteConnectOptions::new()
                            .filename(path)
                            .create_if_missing(true)
                            .busy_timeout(std::time::Duration::from_secs(5)),
                    ),
            ),
            Self::Postgres { .. } => TestPool::Postgres(
                PgPoolOptions::new()
                    .max_connections(1)
                    .connect_lazy(&self.url())
                    .expect("a PostgreSQL URL"),
            ),
        }
    }
}

/// `postgres://user@host:port/db?x` -> `postgres://user@host:port`.
fn server_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    format!("{scheme}://{authority}")
}

impl Drop for TestDb {
    fn drop(&mut self) {
        match self {
            Self::Sqlite(path) => {
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
                }
            }
            Self::Postgres { server, name } => {
                let (server, name) = (server.clone(), name.clone());
                // Drop runs inside the test's runtime; the drop needs one of its own.
                let _ = std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    rt.block_on(async move {
                        if let Ok(pool) = PgPoolOptions::new()
                            .max_connections(1)
                            .connect(&format!("{server}/postgres"))
                            .await
                        {
                            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                            )))
                            .execute(&pool)
                            .await;
                            pool.close().await;
                        }
                    });
                })
                .join();
            }
        }
    }
}

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub state: AppState,
    /// The server's clock: it runs with the wall clock until a test freezes or moves it.
    /// Instances of one test share it.
    pub clock: Clock,
    /// The test's own connection to the server's database, for the SQL a test runs to set up or
    /// look at what the server did (never the server's pool).
    pub sql: TestPool,
    /// The configuration variables the server was started with.
    pub vars: Vec<(String, String)>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    // Last: the database is removed after every server on it has stopped.
    db: Arc<TestDb>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// The configuration every test starts from: cheap argon2, a fixed key, port 0.
pub fn test_vars(database_url: &str) -> Vec<(String, String)> {
    [
        ("DATABASE_URL", database_url),
        ("PORT", "0"),
        ("SECRET_KEY", SECRET),
        ("ARGON2_MEMORY_KIB", "256"),
        ("ARGON2_ITERATIONS", "1"),
        ("ARGON2_PARALLELISM", "1"),
        ("DATABASE_MAX_CONNECTIONS", "5"),
        // Every test's requests come from 127.0.0.1: the per-address limits are tested on their own.
        ("RATE_LIMIT_LOGIN_PER_MINUTE", "100000"),
        ("RATE_LIMIT_REGISTER_PER_MINUTE", "100000"),
        ("RATE_LIMIT_REFRESH_PER_MINUTE", "100000"),
        ("RATE_LIMIT_MAIL_PER_MINUTE", "100000"),
        // Likewise the open connections per client address (tested on its own in edge.rs).
        ("MAX_CONNECTIONS_PER_CLIENT", "1000000"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// Starts the server with extra configuration variables over the test defaults.
pub async fn spawn_app_with(extra: &[(&str, &str)]) -> TestApp {
    spawn_app_on(extra, |url| url.to_string()).await
}

/// Starts the server with its database URL rewritten by `route` (to go through a proxy, say).
pub async fn spawn_app_on(extra: &[(&str, &str)], route: impl FnOnce(&str) -> String) -> TestApp {
    let (db, url) = TestDb::create().await;
    let mut vars = test_vars(&route(&url));
    vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    start(vars, Arc::new(db), Clock::controlled()).await
}

/// Starts the server on a database that `prepare` has set up first (an older schema, say).
pub async fn spawn_app_after(prepare: impl AsyncFnOnce(&TestPool)) -> TestApp {
    let (db, url) = TestDb::create().await;
    let pool = db.pool();
    prepare(&pool).await;
    pool.close().await;
    start(test_vars(&url), Arc::new(db), Clock::controlled()).await
}

/// True when the suite runs on PostgreSQL.
pub fn on_postgres() -> bool {
    std::env::var("TEST_DATABASE_URL").is_ok_and(|u| !u.is_empty())
}

async fn start(vars: Vec<(String, String)>, db: Arc<TestDb>, clock: Clock) -> TestApp {
    let config = Config::from_vars(vars.clone()).expect("test configuration");
    let app = Application::build_with_clock(config, clock.clone())
        .await
        .expect("the server starts");
    let address = format!("http://127.0.0.1:{}", app.port());
    let state = app.state().clone();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async move {
        let _ = rx.await;
    }));
    TestApp {
        address,
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        state,
        clock,
        sql: db.pool(),
        vars,
        shutdown: Some(tx),
        server: Some(server),
        db,
    }
}

impl TestApp {
    /// Stops this server (letting it finish) and starts it again on the same database, with
    /// `extra` variables changed.
    pub async fn restart(mut self, extra: &[(&str, &str)]) -> TestApp {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
        let mut vars = self.vars.clone();
        vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        start(vars, self.db.clone(), self.clock.clone()).await
    }

    /// Another server process's worth: a second instance, with its own pool, on the same database.
    pub async fn another_instance(&self) -> TestApp {
        start(self.vars.clone(), self.db.clone(), self.clock.clone()).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn register(&self, email: &str, password: &str, name: &str) -> Response {
        self.post_json(
            "/register",
            &json!({"email": email, "password": password, "name": name}),
        )
        .await
    }

    pub async fn login(&self, email: &str, password: &str) -> Response {
        self.post_json("/login", &json!({"email": email, "password": password}))
            .await
    }

    pub async fn refresh(&self, refresh_token: &str) -> Response {
        self.post_json("/refresh", &json!({"refresh_token": refresh_token}))
            .await
    }

    pub async fn me(&self, access_token: &str) -> Response {
        self.client
            .get(self.url("/me"))
            .bearer_auth(access_token)
            .send()
            .await
            .unwrap()
    }

    /// GET `path`, asserting 200: its JSON body.
    pub async fn get_json(&self, path: &str) -> Value {
        let response = self.client.get(self.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        response.json().await.unwrap()
    }

    /// POST /password-reset/confirm.
    pub async fn confirm_reset(&self, token: &str, new_password: &str) -> Response {
        self.post_json(
            "/password-reset/confirm",
            &json!({"token": token, "new_password": new_password}),
        )
        .await
    }

    /// GET /me/sessions with `access_token`, asserting success: the caller's live sessions.
    pub async fn live_sessions(&self, access_token: &str) -> Value {
        let response = self
            .client
            .get(self.url("/me/sessions"))
            .bearer_auth(access_token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    pub async fn logout(&self, access_token: &str, scope: Option<&str>) -> Response {
        let path = match scope {
            Some(s) => format!("/logout?scope={s}"),
            None => "/logout".to_string(),
        };
        self.client
            .post(self.url(&path))
            .bearer_auth(access_token)
            .send()
            .await
            .unwrap()
    }

    /// The value of one configuration variable the server was started with.
    pub fn var(&self, name: &str) -> String {
        self.vars
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }

    /// A superuser's tokens (made by SQL, as the CLI would).
    pub async fn superuser(&self) -> (Value, Tokens) {
        let email = unique_email();
        let user: Value = self
            .register(&email, PASSWORD, "Admin")
            .await
            .json()
            .await
            .unwrap();
        self.execute(
            "UPDATE users SET is_superuser = TRUE WHERE email = $1",
            &email,
        )
        .await;
        (user, self.login_ok(&email).await)
    }

    /// Registers `email` with [`PASSWORD`] and logs in; returns the user and the token pair.
    pub async fn signed_up(&self, email: &str) -> (Value, Tokens) {
        let user = self.register(email, PASSWORD, "Test User").await;
        assert_eq!(user.status(), StatusCode::CREATED);
        let user: Value = user.json().await.unwrap();
        let tokens = self.login_ok(email).await;
        (user, tokens)
    }

    /// Logs in with [`PASSWORD`], asserting success.
    pub async fn login_ok(&self, email: &str) -> Tokens {
        self.login_ok_with(email, PASSWORD).await
    }

    /// Logs in with `password`, asserting success.
    pub async fn login_ok_with(&self, email: &str, password: &str) -> Tokens {
        let response = self.login(email, password).await;
        assert_eq!(response.status(), StatusCode::OK);
        Tokens::from(response.json::<Value>().await.unwrap())
    }

    /// Runs a counting query with one text parameter.
    pub async fn count(&self, sql: &'static str, bind: &str) -> i64 {
        self.sql.count(sql, bind).await
    }

    /// Runs a statement with two text parameters.
    pub async fn execute2(&self, sql: &'static str, a: &str, b: &str) {
        self.sql.execute2(sql, a, b).await
    }

    /// Runs a statement with one text parameter.
    pub async fn execute(&self, sql: &'static str, bind: &str) {
        self.sql.execute(sql, bind).await
    }
}

/// A test's own pool on its database, on whichever backend the suite runs.
#[derive(Clone, Debug)]
pub enum TestPool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to the concrete pool.
macro_rules! on_pool {
    ($test_pool:expr, $pool:ident => $body:expr) => {
        match $test_pool {
            TestPool::Sqlite($pool) => $body,
            TestPool::Postgres($pool) => $body,
        }
    };
}

impl TestPool {
    /// The directory of this backend's migrations under `migrations/`.
    pub fn backend(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "sqlite",
            Self::Postgres(_) => "postgres",
        }
    }

    /// Runs a counting query with one text parameter.
    pub async fn count(&self, sql: &'static str, bind: &str) -> i64 {
        on_pool!(self, pool => sqlx::query_scalar(sql).bind(bind).fetch_one(pool).await).unwrap()
    }

    /// Runs a query for one text value, with one text parameter.
    pub async fn text(&self, sql: &'static str, bind: &str) -> String {
        on_pool!(self, pool => sqlx::query_scalar(sql).bind(bind).fetch_one(pool).await).unwrap()
    }

    /// Runs a statement with one text parameter.
    pub async fn execute(&self, sql: &'static str, bind: &str) {
        on_pool!(self, pool => sqlx::query(sql).bind(bind).execute(pool).await.map(|_| ())).unwrap()
    }

    /// Runs a statement with two text parameters.
    pub async fn execute2(&self, sql: &'static str, a: &str, b: &str) {
        on_pool!(self, pool => sqlx::query(sql).bind(a).bind(b).execute(pool).await.map(|_| ()))
            .unwrap()
    }

    /// Runs a statement with three text parameters.
    pub async fn execute3(&self, sql: &'static str, a: &str, b: &str, c: &str) {
        on_pool!(self, pool => sqlx::query(sql).bind(a).bind(b).bind(c).execute(pool).await.map(|_| ()))
            .unwrap()
    }

    /// Applies the migrations of `migrator` (a subset of the server's, say).
    pub async fn migrate(&self, migrator: &sqlx::migrate::Migrator) {
        on_pool!(self, pool => migrator.run(pool).await).unwrap()
    }

    pub async fn close(&self) {
        on_pool!(self, pool => pool.close().await)
    }
}

#[derive(Clone, Debug)]
pub struct Tokens {
    pub access: String,
    pub refresh: String,
    pub body: Value,
}

impl From<Value> for Tokens {
    fn from(body: Value) -> Self {
        Self {
            access: body["access_token"]
                .as_str()
                .expect("access_token")
                .to_string(),
            refresh: body["refresh_token"]
                .as_str()
                .expect("refresh_token")
                .to_string(),
            body,
        }
    }
}

/// Asserts a problem+json response with `status` and `code`, and returns its body.
pub async fn assert_problem(response: Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status().as_u16(), status, "status");
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert_eq!(content_type, "application/problem+json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], code, "code in {body}");
    assert_eq!(body["status"], status);
    assert_eq!(body["type"], "about:blank");
    assert!(
        body["title"].is_string() && body["detail"].is_string(),
        "{body}"
    );
    body
}

/// The field names of a VALIDATION_FAILED body.
pub fn error_fields(body: &Value) -> Vec<String> {
    body["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["field"].as_str().unwrap().to_string())
        .collect()
}

/// A port on which nothing listens (bound, read, released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn unique_email() -> String {
    format!("user-{}@example.com", uuid::Uuid::new_v4().simple())
}

/// Runs futures at the same time, each on its own task, and returns their outputs in order.
pub async fn concurrently<F>(futures: Vec<F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut outputs = Vec::with_capacity(handles.len());
    for handle in handles {
        outputs.push(handle.await.expect("the task finished"));
    }
    outputs
}

/// The server binary run as a child process, with its output captured: for what only a whole
/// process shows (its memory, everything it logs, a crash). [`ChildServer::start`] runs it on a
/// fresh SQLite file in a directory of its own; [`ChildServer::on_test_database`] on the test's
/// database (a fresh PostgreSQL database with `TEST_DATABASE_URL`).
pub struct ChildServer {
    pub base: String,
    /// The SQLite file of [`ChildServer::start`].
    pub database: PathBuf,
    child: std::process::Child,
    dir: PathBuf,
    env: Vec<(String, String)>,
    database_url: String,
    output: Arc<std::sync::Mutex<String>>,
    // Last: the database is removed after the process has stopped.
    _db: Option<TestDb>,
}

impl ChildServer {
    pub async fn start(env: &[(&str, &str)]) -> Self {
        Self::launch(env, "sqlite://auth.db".into(), None).await
    }

    /// On the test database: a fresh PostgreSQL database when the suite runs on PostgreSQL, a
    /// fresh SQLite file otherwise.
    pub async fn on_test_database(env: &[(&str, &str)]) -> Self {
        let (db, url) = TestDb::create().await;
        Self::launch(env, url, Some(db)).await
    }

    async fn launch(env: &[(&str, &str)], database_url: String, db: Option<TestDb>) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "auth-server-child-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let output = Arc::new(std::sync::Mutex::new(String::new()));
        let (child, port) = Self::spawn(&dir, &env, &database_url, &output);
        let server = Self {
            base: format!("http://127.0.0.1:{port}"),
            database: dir.join("auth.db"),
            child,
            dir,
            env,
            database_url,
            output,
            _db: db,
        };
        server.wait_until_up().await;
        server
    }

    fn spawn(
        dir: &std::path::Path,
        env: &[(String, String)],
        database_url: &str,
        output: &Arc<std::sync::Mutex<String>>,
    ) -> (std::process::Child, u16) {
        use std::io::{BufRead, BufReader};
        use std::process::{Command, Stdio};
        let port = free_port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_auth-server"));
        command
            .current_dir(dir)
            .env("PORT", port.to_string())
            .env("SECRET_KEY", SECRET)
            .env("DATABASE_URL", database_url)
            .env("LOG_FORMAT", "json")
            .env_remove("SMTP_URL")
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().unwrap();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let output = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let mut all = output.lock().unwrap();
                    all.push_str(&line);
                    all.push('\n');
                }
            });
        }
        (child, port)
    }

    async fn wait_until_up(&self) {
        let client = reqwest::Client::new();
        for _ in 0..200 {
            if client.get(self.url("/health")).send().await.is_ok() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("the server did not start: {}", self.output());
    }

    /// Kills the process with SIGKILL (no chance to finish anything) and waits for it to die.
    pub fn kill9(&mut self) {
        let status = self.stop_with(libc::SIGKILL).expect("SIGKILL kills");
        assert!(!status.success());
    }

    /// Starts the server again, after it has stopped, on the same database and configuration
    /// (on another port).
    pub async fn restart(&mut self) {
        assert!(
            self.child.try_wait().unwrap().is_some(),
            "the server is still running"
        );
        let (child, port) = Self::spawn(&self.dir, &self.env, &self.database_url, &self.output);
        self.child = child;
        self.base = format!("http://127.0.0.1:{port}");
        self.wait_until_up().await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Everything the process has written so far, stdout and stderr.
    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// Sends `signal` and waits (up to 10 s) for the process to exit; returns its exit status.
    pub fn stop_with(&mut self, signal: i32) -> Option<std::process::ExitStatus> {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, signal);
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        None
    }

    /// The peak resident memory of the process so far, in KiB (Linux).
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse().ok())
            .unwrap()
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The claims of a JWT, decoded without checking anything.
pub fn claims_of(token: &str) -> Value {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).expect("a JWT has three parts");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

/// Freezes the server's clock at a whole second a day ahead of the wall clock (so that a time
/// the server took from the wall clock instead would show) and returns it, in Unix ms.
pub fn freeze_clock(app: &TestApp) -> i64 {
    let t = (app.clock.now_ms() / 1000 + 86_400) * 1000;
    app.clock.set_ms(t);
    t
}
