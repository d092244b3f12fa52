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
    /// With METRICS_ADDRESS: `http://` and the address /metrics is served on instead.
    pub metrics_address: Option<String>,
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
    let metrics_address = app.metrics_addr().map(|a| format!("http://{a}"));
    let state = app.state().clone();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async move {
        let _ = rx.await;
    }));
    TestApp {
        address,
        metrics_address,
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
        self.another_instance_with(&[]).await
    }

    /// [`TestApp::another_instance`] with `extra` variables changed.
    pub async fn another_instance_with(&self, extra: &[(&str, &str)]) -> TestApp {
        let mut vars = self.vars.clone();
        vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        start(vars, self.db.clone(), self.clock.clone()).await
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

    /// PUT /me/password from `current` to `new`.
    pub async fn change_password(&self, access_token: &str, current: &str, new: &str) -> Response {
        self.client
            .put(self.url("/me/password"))
            .bearer_auth(access_token)
            .json(&serde_json::json!({ "current_password": current, "new_password": new }))
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

    /// Waits (up to 10 s) until the count `sql` (with `bind`) satisfies `done`; returns it.
    pub async fn wait_count(
        &self,
        sql: &'static str,
        bind: &str,
        done: impl Fn(i64) -> bool,
    ) -> i64 {
        eventually(
            &format!("`{sql}` ({bind}) reaching its count"),
            std::time::Duration::from_secs(10),
            || self.count(sql, bind),
            |n| done(*n),
        )
        .await
    }

    /// Runs a statement with one text parameter.
    pub async fn execute(&self, sql: &'static str, bind: &str) {
        self.sql.execute(sql, bind).await
    }
}

/// Samples `sample` until `done` holds of what it returns, and returns that; panics after
/// `within`, naming `what` and the last sample. The one way a test waits for a condition.
pub async fn eventually<T, F>(
    what: &str,
    within: std::time::Duration,
    mut sample: impl FnMut() -> F,
    done: impl Fn(&T) -> bool,
) -> T
where
    T: std::fmt::Debug,
    F: std::future::Future<Output = T>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let value = sample().await;
        if done(&value) {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} did not happen within {within:?}; last seen: {value:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
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

/// A port on which nothing listens (bound, read, released): for a test that needs a dead
/// address. Never for a server to listen on: another process may take the port before it does
/// (a child server is started with `PORT=0` and says where it listens instead).
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

/// How long a child server has to say where it listens and answer `/health`.
const CHILD_START_WITHIN: std::time::Duration = std::time::Duration::from_secs(30);
/// How long a test waits for a line in a child server's log.
pub const LOG_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// A process a test started, owned from the moment it was spawned: dropping this (the test
/// ending, a failed start, a panic anywhere in the test or in a thread reading the process's
/// output) kills and reaps it. It is also spawned with `PR_SET_PDEATHSIG(SIGKILL)`, so that it
/// dies with the test binary even when that is SIGKILLed and no destructor runs.
pub struct OwnedChild {
    child: std::sync::Mutex<std::process::Child>,
    pid: u32,
}

/// A command to spawn, and where to send the child.
type SpawnRequest = (
    std::process::Command,
    std::sync::mpsc::Sender<std::io::Result<std::process::Child>>,
);

/// Spawns `command` on the one thread that lives as long as the test binary. The parent-death
/// signal is sent when the *thread* that forked the child exits, not the process: a child
/// forked on a test's own thread (or a tokio worker, or a blocking-pool thread) would be killed
/// when that thread ends, which may be while the test still uses it.
fn spawn_on_the_spawner_thread(
    command: std::process::Command,
) -> std::io::Result<std::process::Child> {
    use std::sync::mpsc;
    static SPAWNER: std::sync::OnceLock<mpsc::Sender<SpawnRequest>> = std::sync::OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (requests, incoming) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("child-spawner".into())
            .spawn(move || {
                for (mut command, reply) in incoming {
                    // A child nobody is left to own is not left running.
                    if let Err(mpsc::SendError(Ok(mut child))) = reply.send(command.spawn()) {
                        let _ = child.kill();
                        let _ = child.wait();
                    }
                }
            })
            .expect("the spawner thread starts");
        requests
    });
    let (reply, child) = mpsc::channel();
    spawner
        .send((command, reply))
        .expect("the spawner thread is running");
    child.recv().expect("the spawner thread answers")
}

impl OwnedChild {
    /// Spawns `command`, which dies with the test binary, and owns the child at once.
    pub fn spawn(mut command: std::process::Command) -> Self {
        use std::os::unix::process::CommandExt;
        let program = command.get_program().to_string_lossy().to_string();
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: between fork and exec the hook makes only async-signal-safe calls (prctl,
        // getppid) and allocates nothing.
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The test binary may have died before the prctl: no signal would come then.
                if libc::getppid() != parent {
                    return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            });
        }
        let child = spawn_on_the_spawner_thread(command)
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        Self {
            pid: child.id(),
            child: std::sync::Mutex::new(child),
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The child's stdout, if it was piped and not taken yet.
    pub fn take_stdout(&self) -> std::process::ChildStdout {
        self.child().stdout.take().expect("a piped stdout")
    }

    fn child(&self) -> std::sync::MutexGuard<'_, std::process::Child> {
        self.child
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The exit status, once the process has exited (and is reaped).
    pub fn try_wait(&self) -> Option<std::process::ExitStatus> {
        self.child().try_wait().ok().flatten()
    }

    /// Sends `signal`, unless the process has already exited and been reaped (its pid may
    /// belong to another process by then).
    pub fn signal(&self, signal: i32) {
        let mut child = self.child();
        if child.try_wait().ok().flatten().is_none() {
            // SAFETY: kill(2) on our own child, which has not been reaped (we hold the lock).
            unsafe {
                libc::kill(self.pid as libc::pid_t, signal);
            }
        }
    }

    /// Waits up to `within` for the process to exit; its exit status, if it did.
    pub async fn exited_within(
        &self,
        within: std::time::Duration,
    ) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// [`OwnedChild::exited_within`] for code that cannot await.
    pub fn exited_within_blocking(
        &self,
        within: std::time::Duration,
    ) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// Kills the process (if it still runs) and reaps it.
    pub fn kill_and_reap(&self) {
        let mut child = self.child();
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for OwnedChild {
    fn drop(&mut self) {
        self.kill_and_reap();
    }
}

/// In a thread that reads a child's output: if the thread panics, the child is killed and
/// reaped (it holds no strong reference, so it never keeps the child alive).
struct KillOnPanic(std::sync::Weak<OwnedChild>);

impl Drop for KillOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Some(process) = self.0.upgrade()
        {
            process.kill_and_reap();
        }
    }
}

/// Runs `command` to its end (at most `within`, or it is killed and the test fails), owned like
/// every process a test starts; its output, as [`std::process::Command::output`] gives it.
pub fn run_to_end(
    command: std::process::Command,
    within: std::time::Duration,
) -> std::process::Output {
    run_with_input(command, None, within)
}

/// [`run_to_end`], with `input` written to the process's standard input (then closed).
pub fn run_with_input(
    mut command: std::process::Command,
    input: Option<&str>,
    within: std::time::Duration,
) -> std::process::Output {
    use std::io::{Read, Write};
    use std::process::Stdio;
    command
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let process = Arc::new(OwnedChild::spawn(command));
    let (stdin, stdout, stderr) = {
        let mut child = process.child();
        (
            child.stdin.take(),
            child.stdout.take().unwrap(),
            child.stderr.take().unwrap(),
        )
    };
    if let (Some(mut stdin), Some(text)) = (stdin, input) {
        // A process that exits without reading is not a failure of the write.
        let _ = stdin.write_all(text.as_bytes());
    }
    let read_all = |mut stream: Box<dyn Read + Send>| {
        let guard = KillOnPanic(Arc::downgrade(&process));
        std::thread::spawn(move || {
            let _guard = guard;
            let mut bytes = Vec::new();
            let _ = stream.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = read_all(Box::new(stdout));
    let stderr = read_all(Box::new(stderr));
    let status = process.exited_within_blocking(within);
    if status.is_none() {
        // Its output ends only with it.
        process.kill_and_reap();
    }
    let (stdout, stderr) = (stdout.join().unwrap(), stderr.join().unwrap());
    let Some(status) = status else {
        panic!(
            "pid {} did not end within {within:?}: {}{}",
            process.pid(),
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        );
    };
    std::process::Output {
        status,
        stdout,
        stderr,
    }
}

/// The server binary, to run as a child process.
pub fn server_command() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_auth-server"))
}

/// What a child process has written, line by line, and a signal for every new line.
struct Output {
    text: std::sync::Mutex<String>,
    /// Bumped at every line and at the end of every stream.
    changed: tokio::sync::watch::Sender<u64>,
}

impl Output {
    fn new() -> Self {
        Self {
            text: std::sync::Mutex::new(String::new()),
            changed: tokio::sync::watch::Sender::new(0),
        }
    }

    fn text(&self) -> std::sync::MutexGuard<'_, String> {
        self.text
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reads `stream` line by line on a thread of its own, into this output; `open` counts the
    /// streams of the process still open.
    fn read(
        self: &Arc<Self>,
        stream: impl std::io::Read + Send + 'static,
        process: &Arc<OwnedChild>,
        open: &Arc<std::sync::atomic::AtomicUsize>,
    ) {
        use std::io::BufRead;
        use std::sync::atomic::Ordering;
        /// Counts the stream as ended when the reading thread ends, however it ends.
        struct Ended(Arc<Output>, Arc<std::sync::atomic::AtomicUsize>);
        impl Drop for Ended {
            fn drop(&mut self) {
                self.1.fetch_sub(1, Ordering::SeqCst);
                self.0.changed.send_modify(|n| *n += 1);
            }
        }
        open.fetch_add(1, Ordering::SeqCst);
        let ended = Ended(self.clone(), open.clone());
        let kill_on_panic = KillOnPanic(Arc::downgrade(process));
        let output = self.clone();
        std::thread::spawn(move || {
            // Dropped in reverse: a panic kills the process, then the stream counts as ended.
            let _ended = ended;
            let _kill_on_panic = kill_on_panic;
            let mut stream = std::io::BufReader::new(stream);
            let mut line = Vec::new();
            // A terminal ends with an error (EIO) once its last writer has gone.
            while stream.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
                let text = String::from_utf8_lossy(&line);
                output
                    .text()
                    .push_str(&format!("{}\n", text.trim_end_matches(['\r', '\n'])));
                output.changed.send_modify(|n| *n += 1);
                line.clear();
            }
        });
    }

    fn len(&self) -> usize {
        self.text().len()
    }

    /// Waits up to `within` until `found` finds what it looks for in the output from byte
    /// `from` on; fails early once the process has closed its output (`open` is 0).
    async fn wait_for<T>(
        &self,
        from: usize,
        within: std::time::Duration,
        open: &std::sync::atomic::AtomicUsize,
        mut found: impl FnMut(&str) -> Option<T>,
    ) -> Result<T, String> {
        let mut changed = self.changed.subscribe();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            changed.borrow_and_update();
            let closed = open.load(std::sync::atomic::Ordering::SeqCst) == 0;
            if let Some(value) = found(&self.text()[from..]) {
                return Ok(value);
            }
            if closed {
                return Err("the process closed its output".into());
            }
            if tokio::time::timeout_at(deadline, changed.changed())
                .await
                .is_err()
            {
                return Err(format!("not within {within:?}"));
            }
        }
    }
}

/// `text` without its terminal escape sequences (`ESC [ ... letter`).
pub fn without_escapes(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
}

/// Where the server says it listens, and on which database backend: its "auth-server
/// listening" line (JSON or text, coloured or not), an unspecified address read as loopback.
fn listening(output: &str) -> Option<(std::net::SocketAddr, String)> {
    let line = output
        .lines()
        .map(without_escapes)
        .find(|l| l.contains("auth-server listening"))?;
    let field = |name: &str| match serde_json::from_str::<Value>(&line) {
        Ok(json) => json[name].as_str().map(str::to_string),
        Err(_) => line
            .split_whitespace()
            .find_map(|word| word.strip_prefix(&format!("{name}=")))
            // Text logs quote a string field.
            .map(|value| value.trim_matches('"').to_string()),
    };
    let mut address: std::net::SocketAddr = field("address")?.parse().ok()?;
    if address.ip().is_unspecified() {
        address.set_ip(match address {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    Some((address, field("database")?))
}

/// Where a child server's stdout and stderr go.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Console {
    Pipes,
    /// A pseudo-terminal, as when run by hand.
    Terminal,
}

/// The server binary run as a child process on the test's database (a fresh PostgreSQL database
/// with `TEST_DATABASE_URL`, else a fresh SQLite file), with its output captured: for what only a
/// whole process shows (its memory, everything it logs, signals, a crash). It listens on a port
/// of its own choosing (`PORT=0`), read back from its log. The process is owned from the moment
/// it is spawned, and dies with the test binary (see [`OwnedChild`]).
pub struct ChildServer {
    pub base: String,
    pub address: std::net::SocketAddr,
    /// The test's own connection to the server's database.
    pub sql: TestPool,
    process: Arc<OwnedChild>,
    /// The output streams of the current process still open.
    open: Arc<std::sync::atomic::AtomicUsize>,
    console: Console,
    dir: PathBuf,
    env: Vec<(String, String)>,
    database_url: String,
    output: Arc<Output>,
    // Last: the database is removed after the process has stopped (see `Drop`).
    _db: TestDb,
}

impl ChildServer {
    /// On the test database: a fresh PostgreSQL database when the suite runs on PostgreSQL, a
    /// fresh SQLite file otherwise. `env` is over `LOG_FORMAT=json` and the server's defaults.
    pub async fn on_test_database(env: &[(&str, &str)]) -> Self {
        Self::launch(env, Console::Pipes, CHILD_START_WITHIN).await
    }

    /// As [`ChildServer::on_test_database`], with stdout and stderr on a pseudo-terminal.
    pub async fn on_a_terminal(env: &[(&str, &str)]) -> Self {
        Self::launch(env, Console::Terminal, CHILD_START_WITHIN).await
    }

    /// As [`ChildServer::on_test_database`], failing if the server is not up `within`.
    pub async fn up_within(env: &[(&str, &str)], within: std::time::Duration) -> Self {
        Self::launch(env, Console::Pipes, within).await
    }

    async fn launch(env: &[(&str, &str)], console: Console, within: std::time::Duration) -> Self {
        let (db, database_url) = TestDb::create().await;
        let dir = std::env::temp_dir().join(format!(
            "auth-server-child-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let output = Arc::new(Output::new());
        let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let process = Self::spawn(console, &dir, &env, &database_url, &output, &open);
        // Owned as a whole before anything can fail: a failed start drops it, which kills the
        // process, removes the directory and then the database.
        let mut server = Self {
            base: String::new(),
            address: ([0, 0, 0, 0], 0).into(),
            sql: db.pool(),
            process,
            open,
            console,
            dir,
            env,
            database_url,
            output,
            _db: db,
        };
        server.wait_until_up(0, within).await;
        server
    }

    fn spawn(
        console: Console,
        dir: &std::path::Path,
        env: &[(String, String)],
        database_url: &str,
        output: &Arc<Output>,
        open: &Arc<std::sync::atomic::AtomicUsize>,
    ) -> Arc<OwnedChild> {
        use std::process::Stdio;
        let mut command = server_command();
        command
            .current_dir(dir)
            .env("HOST", "127.0.0.1")
            // The server picks a free port and says which: no port is probed and then lost.
            .env("PORT", "0")
            .env("SECRET_KEY", SECRET)
            .env("DATABASE_URL", database_url)
            .env("LOG_FORMAT", "json")
            .env_remove("SMTP_URL")
            .env_remove("RUST_LOG")
            .env_remove("NO_COLOR")
            .stdin(Stdio::null());
        for (k, v) in env {
            command.env(k, v);
        }
        match console {
            Console::Pipes => {
                command.stdout(Stdio::piped()).stderr(Stdio::piped());
                let process = Arc::new(OwnedChild::spawn(command));
                let (stdout, stderr) = {
                    let mut child = process.child();
                    (child.stdout.take().unwrap(), child.stderr.take().unwrap())
                };
                output.read(stdout, &process, open);
                output.read(stderr, &process, open);
                process
            }
            Console::Terminal => {
                let (master, terminal) = pseudo_terminal();
                command
                    .stdout(terminal.try_clone().unwrap())
                    .stderr(terminal);
                // The command, and with it our copies of the terminal, ends in the spawner: the
                // server is then the terminal's last writer.
                let process = Arc::new(OwnedChild::spawn(command));
                output.read(master, &process, open);
                process
            }
        }
    }

    /// Waits for the "auth-server listening" line the process writes after byte `from` of the
    /// output, and for `/health` to answer.
    async fn wait_until_up(&mut self, from: usize, within: std::time::Duration) {
        let started = tokio::time::Instant::now();
        let (address, backend) = self
            .output
            .wait_for(from, within, &self.open, listening)
            .await
            .unwrap_or_else(|why| {
                panic!(
                    "the server (pid {}) did not say where it listens ({why}): {}",
                    self.pid(),
                    self.output()
                )
            });
        // The backend under test, whichever it is.
        let expected = if on_postgres() { "postgres" } else { "sqlite" };
        assert_eq!(backend, expected, "the server runs on the wrong backend");
        self.address = address;
        self.base = format!("http://{address}");
        // It listens from the moment it says so: this only checks that it answers.
        let health = reqwest::Client::new()
            .get(self.url("/health"))
            .timeout(within.saturating_sub(started.elapsed()))
            .send()
            .await;
        assert!(
            health.as_ref().is_ok_and(|r| r.status() == 200),
            "the server (pid {}) at {address} does not answer /health ({health:?}): {}",
            self.pid(),
            self.output()
        );
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The server's `DATABASE_URL`.
    pub fn database_url(&self) -> &str {
        &self.database_url
    }

    /// The server's working directory (its own, empty).
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Kills the process with SIGKILL (no chance to finish anything) and waits for it to die.
    pub fn kill9(&mut self) {
        self.process.signal(libc::SIGKILL);
        let status = self
            .process
            .exited_within_blocking(std::time::Duration::from_secs(10))
            .expect("SIGKILL kills");
        assert!(!status.success());
    }

    /// Starts the server again, after it has stopped, on the same database and configuration
    /// (on the port it then picks).
    pub async fn restart(&mut self) {
        assert!(
            self.process.try_wait().is_some(),
            "the server is still running"
        );
        let from = self.output.len();
        self.open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        self.process = Self::spawn(
            self.console,
            &self.dir,
            &self.env,
            &self.database_url,
            &self.output,
            &self.open,
        );
        self.wait_until_up(from, CHILD_START_WITHIN).await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Everything the process has written so far, stdout and stderr.
    pub fn output(&self) -> String {
        self.output.text().clone()
    }

    /// Waits (up to [`LOG_WAIT`]) until the output has a line containing `text`, and returns it.
    pub async fn wait_for_line(&self, text: &str) -> String {
        self.wait_for_lines(text, 1).await.remove(0)
    }

    /// Waits (up to [`LOG_WAIT`]) until the output has `count` lines containing `text`, and
    /// returns them all.
    pub async fn wait_for_lines(&self, text: &str, count: usize) -> Vec<String> {
        self.wait_for_matching(&format!("{text:?}"), count, |l| l.contains(text))
            .await
    }

    /// Waits (up to [`LOG_WAIT`]) until the output has a line for which `matches` holds, and
    /// returns it; `what` says what is awaited, for the failure message.
    pub async fn wait_for_line_where(&self, what: &str, matches: impl Fn(&str) -> bool) -> String {
        self.wait_for_matching(what, 1, matches).await.remove(0)
    }

    async fn wait_for_matching(
        &self,
        what: &str,
        count: usize,
        matches: impl Fn(&str) -> bool,
    ) -> Vec<String> {
        self.output
            .wait_for(0, LOG_WAIT, &self.open, |output| {
                let lines: Vec<String> = output
                    .lines()
                    .filter(|l| matches(l))
                    .map(str::to_string)
                    .collect();
                (lines.len() >= count).then_some(lines)
            })
            .await
            .unwrap_or_else(|why| {
                panic!(
                    "{count} line(s) with {what} were not logged ({why}): {}",
                    self.output()
                )
            })
    }

    /// Sends `signal` and waits (up to 10 s) for the process to exit; its exit status.
    pub async fn stop_with(&mut self, signal: i32) -> Option<std::process::ExitStatus> {
        self.process.signal(signal);
        self.exited().await
    }

    /// Waits (up to 10 s) for the process to exit; its exit status.
    pub async fn exited(&self) -> Option<std::process::ExitStatus> {
        self.process
            .exited_within(std::time::Duration::from_secs(10))
            .await
    }

    /// Sends `signal` to the process, without waiting.
    pub fn signal(&self, signal: i32) {
        self.process.signal(signal);
    }

    /// The peak resident memory of the process so far, in KiB (Linux).
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
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
        self.process.kill_and_reap();
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

/// A new pseudo-terminal: its master end (to read what is written) and the terminal itself.
fn pseudo_terminal() -> (std::fs::File, std::os::fd::OwnedFd) {
    use std::os::fd::{FromRawFd, OwnedFd};
    // SAFETY: the standard pseudo-terminal calls, on descriptors we own and check.
    unsafe {
        let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        assert!(master >= 0, "posix_openpt");
        let master = std::fs::File::from_raw_fd(master);
        let fd = std::os::fd::AsRawFd::as_raw_fd(&master);
        assert_eq!(libc::grantpt(fd), 0);
        assert_eq!(libc::unlockpt(fd), 0);
        let mut name = [0 as libc::c_char; 128];
        assert_eq!(libc::ptsname_r(fd, name.as_mut_ptr(), name.len()), 0);
        let terminal = libc::open(
            name.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        );
        assert!(terminal >= 0, "open the terminal");
        (master, OwnedFd::from_raw_fd(terminal))
    }
}
