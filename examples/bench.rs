//! The benchmark: builds and starts the release server on a fresh database, seeds users, drives
//! it over loopback HTTP with keep-alive connections, and prints one table.
//!
//! ```sh
//! cargo run --release --example bench                       # SQLite, 32 connections, 5 s a scenario
//! cargo run --release --example bench -- --database postgres://postgres@127.0.0.1:5432
//! cargo run --release --example bench -- --concurrency 64 --duration 10 --large-users 1000000
//! ```
//!
//! The load generator is a small HTTP/1.1 client in this file (pre-built requests, one
//! connection per worker), so that it costs the shared cores as little as possible. It exits
//! non-zero if any scenario saw an error.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use auth_server::config::DatabaseUrl;
use auth_server::db::Db;
use clap::Parser;
use sqlx::postgres::PgPoolOptions;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const PASSWORD: &str = "benchmark passphrase for everyone";
const SECRET: &str = "benchmark-secret-key-that-is-long-enough-0123456789";

#[derive(Parser, Clone)]
#[command(about = "Benchmark auth-server over loopback HTTP")]
struct Args {
    /// A PostgreSQL server URL (a fresh database is created on it and dropped after);
    /// default: a fresh SQLite file.
    #[arg(long)]
    database: Option<String>,
    /// Connections for each scenario.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Seconds each scenario runs.
    #[arg(long, default_value_t = 5)]
    duration: u64,
    /// Users in the database for the ordinary scenarios.
    #[arg(long, default_value_t = 1000)]
    users: usize,
    /// Users for the large-database scenarios (0 skips them).
    #[arg(long, default_value_t = 1_000_000)]
    large_users: usize,
    /// Do not run `cargo build --release` first.
    #[arg(long)]
    no_build: bool,
    /// Run only the scenarios whose name contains this (for profiling one of them).
    #[arg(long)]
    only: Option<String>,
    /// Keep the server running this many seconds before the scenarios (to attach a profiler).
    #[arg(long, default_value_t = 0)]
    pause: u64,
}

// ---------------------------------------------------------------- a small HTTP/1.1 client

struct Conn {
    stream: BufReader<TcpStream>,
    line: String,
}

impl Conn {
    async fn open(port: u16) -> std::io::Result<Self> {
        let stream = TcpStream::connect(("127.0.0.1", port)).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream: BufReader::with_capacity(16 * 1024, stream),
            line: String::new(),
        })
    }

    /// Sends one request and reads the whole response: (status, body).
    async fn call(&mut self, request: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
        self.stream.get_mut().write_all(request).await?;
        self.line.clear();
        if self.stream.read_line(&mut self.line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let status: u16 = self
            .line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or(std::io::ErrorKind::InvalidData)?;
        let mut length = 0usize;
        let mut chunked = false;
        loop {
            self.line.clear();
            self.stream.read_line(&mut self.line).await?;
            let header = self.line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                } else if name.eq_ignore_ascii_case("transfer-encoding")
                    && value.contains("chunked")
                {
                    chunked = true;
                }
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                self.line.clear();
                self.stream.read_line(&mut self.line).await?;
                let size = usize::from_str_radix(self.line.trim(), 16)
                    .map_err(|_| std::io::ErrorKind::InvalidData)?;
                let mut chunk = vec![0; size + 2];
                self.stream.read_exact(&mut chunk).await?;
                if size == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..size]);
            }
        } else {
            body.resize(length, 0);
            self.stream.read_exact(&mut body).await?;
        }
        Ok((status, body))
    }
}

fn request(method: &str, path: &str, bearer: Option<&str>, body: Option<&str>) -> Vec<u8> {
    let mut r = format!("{method} {path} HTTP/1.1\r\nHost: bench\r\n");
    if let Some(token) = bearer {
        r.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    match body {
        Some(b) => r.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
            b.len()
        )),
        None => r.push_str("\r\n"),
    }
    r.into_bytes()
}

fn field(body: &[u8], name: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v.get(name)?.as_str().map(str::to_string)
}

// ---------------------------------------------------------------- the server under test

struct Server {
    child: Child,
    port: u16,
    dir: PathBuf,
    cleanup: Option<(String, String)>,
}

impl Server {
    fn peak_rss_kib(&self) -> u64 {
        proc_status(self.child.id(), "VmHWM:")
    }

    /// Starts a new peak for VmHWM (Linux: writing 5 to clear_refs).
    fn reset_peak(&self) {
        let _ = std::fs::write(format!("/proc/{}/clear_refs", self.child.id()), "5");
    }
}

fn proc_status(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
        if let Some((server, name)) = self.cleanup.take() {
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
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
                    }
                });
            })
            .join();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn server_binary() -> PathBuf {
    // target/release/examples/bench -> target/release/auth-server
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .and_then(Path::parent)
        .unwrap()
        .join("auth-server")
}

async fn start_server(database_url: &str, dir: &Path, cleanup: Option<(String, String)>) -> Server {
    let port = free_port();
    let child = Command::new(server_binary())
        .current_dir(dir)
        .env("DATABASE_URL", database_url)
        .env("PORT", port.to_string())
        .env("SECRET_KEY", SECRET)
        .env("RATE_LIMIT_LOGIN_PER_MINUTE", "0")
        .env("RATE_LIMIT_REGISTER_PER_MINUTE", "0")
        .env("RATE_LIMIT_REFRESH_PER_MINUTE", "0")
        .env("RATE_LIMIT_MAIL_PER_MINUTE", "0")
        .env("DATABASE_CONNECT_TIMEOUT_SECONDS", "30")
        .env("MAIL_RATE_LIMIT_SECONDS", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the release server (cargo build --release)");
    let server = Server {
        child,
        port,
        dir: dir.to_path_buf(),
        cleanup,
    };
    for _ in 0..600 {
        if let Ok(mut c) = Conn::open(port).await
            && let Ok((200, _)) = c.call(&request("GET", "/health", None, None)).await
        {
            return server;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the server did not start");
}

// ---------------------------------------------------------------- seeding

fn email(i: usize) -> String {
    format!("user{i}@bench.example")
}

/// The benchmark's own pool on the server's database, for seeding (the server's `Db` keeps its
/// pool to itself).
enum SeedPool {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

/// Writes users `from..to` straight into the database, all with one argon2id hash.
async fn seed(db: &SeedPool, hash: &str, from: usize, to: usize) {
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
            SeedPool::Sqlite(pool) => insert!(pool, sqlx::Sqlite),
            SeedPool::Postgres(pool) => insert!(pool, sqlx::Postgres),
        }
        i = end;
    }
}

// ---------------------------------------------------------------- load

#[derive(Default)]
struct Stats {
    latencies_us: Vec<u32>,
    errors: u64,
    elapsed: Duration,
}

impl Stats {
    fn rps(&self) -> f64 {
        self.latencies_us.len() as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        let i = ((self.latencies_us.len() as f64 * p).ceil() as usize)
            .clamp(1, self.latencies_us.len())
            - 1;
        f64::from(self.latencies_us[i]) / 1000.0
    }
}

/// What one worker does, request after request.
#[derive(Clone)]
enum Work {
    Trivial,
    Me {
        tokens: Arc<Vec<String>>,
    },
    Login {
        users: usize,
    },
    Register {
        run: u64,
    },
    Refresh {
        tokens: Arc<Vec<String>>,
    },
    Mixed {
        access: Arc<Vec<String>>,
        refresh: Arc<Vec<String>>,
        users: usize,
        run: u64,
    },
}

struct Worker {
    work: Work,
    id: usize,
    n: u64,
    rng: u64,
    access: Option<String>,
    refresh: Option<String>,
}

impl Worker {
    fn random(&mut self, below: usize) -> usize {
        // xorshift: cheap and good enough to spread requests.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng % below as u64) as usize
    }

    fn login_body(&mut self, users: usize) -> String {
        let user = self.random(users);
        format!(r#"{{"email":"{}","password":"{PASSWORD}"}}"#, email(user))
    }

    /// One request; true if it got the expected answer.
    async fn step(&mut self, conn: &mut Conn) -> std::io::Result<bool> {
        self.n += 1;
        let work = self.work.clone();
        match work {
            Work::Trivial => Ok(conn
                .call(&request("GET", "/health/live", None, None))
                .await?
                .0
                == 200),
            Work::Me { tokens } => {
                let token = &tokens[self.id % tokens.len()];
                Ok(conn
                    .call(&request("GET", "/me", Some(token), None))
                    .await?
                    .0
                    == 200)
            }
            Work::Login { users } => {
                let body = self.login_body(users);
                Ok(conn
                    .call(&request("POST", "/login", None, Some(&body)))
                    .await?
                    .0
                    == 200)
            }
            Work::Register { run } => {
                let body = format!(
                    r#"{{"email":"new-{run}-{}-{}@bench.example","password":"{PASSWORD}","name":"New User"}}"#,
                    self.id, self.n
                );
                Ok(conn
                    .call(&request("POST", "/register", None, Some(&body)))
                    .await?
                    .0
                    == 201)
            }
            Work::Refresh { tokens } => {
                let token = self
                    .refresh
                    .clone()
                    .unwrap_or_else(|| tokens[self.id % tokens.len()].clone());
                let body = format!(r#"{{"refresh_token":"{token}"}}"#);
                let (status, response) = conn
                    .call(&request("POST", "/refresh", None, Some(&body)))
                    .await?;
                self.refresh = field(&response, "refresh_token");
                Ok(status == 200 && self.refresh.is_some())
            }
            Work::Mixed {
                access,
                refresh,
                users,
                run,
            } => {
                let roll = self.random(100);
                if roll < 70 {
                    let token = self
                        .access
                        .clone()
                        .unwrap_or_else(|| access[self.id % access.len()].clone());
                    Ok(conn
                        .call(&request("GET", "/me", Some(&token), None))
                        .await?
                        .0
                        == 200)
                } else if roll < 90 {
                    let token = self
                        .refresh
                        .clone()
                        .unwrap_or_else(|| refresh[self.id % refresh.len()].clone());
                    let body = format!(r#"{{"refresh_token":"{token}"}}"#);
                    let (status, response) = conn
                        .call(&request("POST", "/refresh", None, Some(&body)))
                        .await?;
                    self.refresh = field(&response, "refresh_token");
                    self.access = field(&response, "access_token");
                    Ok(status == 200 && self.refresh.is_some())
                } else if roll < 98 {
                    let body = self.login_body(users);
                    Ok(conn
                        .call(&request("POST", "/login", None, Some(&body)))
                        .await?
                        .0
                        == 200)
                } else {
                    let body = format!(
                        r#"{{"email":"mixed-{run}-{}-{}@bench.example","password":"{PASSWORD}","name":"New User"}}"#,
                        self.id, self.n
                    );
                    Ok(conn
                        .call(&request("POST", "/register", None, Some(&body)))
                        .await?
                        .0
                        == 201)
                }
            }
        }
    }
}

/// Runs `work` on `concurrency` connections for `duration`.
async fn load(port: u16, work: Work, concurrency: usize, duration: Duration) -> Stats {
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let handles: Vec<_> = (0..concurrency)
        .map(|id| {
            let (work, stop, errors) = (work.clone(), stop.clone(), errors.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(1 << 16);
                let mut worker = Worker {
                    work,
                    id,
                    n: 0,
                    rng: 0x9E37_79B9_7F4A_7C15 ^ (id as u64 + 1),
                    access: None,
                    refresh: None,
                };
                let mut conn = Conn::open(port).await.expect("connect");
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    match worker.step(&mut conn).await {
                        Ok(true) => {
                            latencies.push(t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32)
                        }
                        Ok(false) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            conn = Conn::open(port).await.expect("reconnect");
                        }
                    }
                }
                latencies
            })
        })
        .collect();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies_us = Vec::new();
    for h in handles {
        latencies_us.extend(h.await.unwrap());
    }
    let elapsed = started.elapsed();
    latencies_us.sort_unstable();
    Stats {
        latencies_us,
        errors: errors.load(Ordering::Relaxed),
        elapsed,
    }
}

/// Logs in `count` users (spread over `users`) and returns their access and refresh tokens.
async fn sessions(port: u16, users: usize, count: usize) -> (Arc<Vec<String>>, Arc<Vec<String>>) {
    let mut conn = Conn::open(port).await.unwrap();
    let (mut access, mut refresh) = (Vec::new(), Vec::new());
    for k in 0..count {
        let user = (k * 7919 + 13) % users;
        let body = format!(r#"{{"email":"{}","password":"{PASSWORD}"}}"#, email(user));
        let (status, response) = conn
            .call(&request("POST", "/login", None, Some(&body)))
            .await
            .unwrap();
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&response));
        access.push(field(&response, "access_token").unwrap());
        refresh.push(field(&response, "refresh_token").unwrap());
    }
    (Arc::new(access), Arc::new(refresh))
}

// ---------------------------------------------------------------- the report

struct Row {
    name: String,
    stats: Stats,
    peak_rss_kib: u64,
}

fn print_table(rows: &[Row]) {
    println!();
    println!(
        "| {:<34} | {:>9} | {:>8} | {:>8} | {:>8} | {:>6} | {:>9} |",
        "scenario", "req/s", "p50 ms", "p99 ms", "p99.9 ms", "errors", "peak RSS"
    );
    println!(
        "|{:-<36}|{:->11}|{:->10}|{:->10}|{:->10}|{:->8}|{:->11}|",
        "", "", "", "", "", "", ""
    );
    for r in rows {
        println!(
            "| {:<34} | {:>9.0} | {:>8.2} | {:>8.2} | {:>8.2} | {:>6} | {:>6.1} MiB |",
            r.name,
            r.stats.rps(),
            r.stats.percentile(0.50),
            r.stats.percentile(0.99),
            r.stats.percentile(0.999),
            r.stats.errors,
            r.peak_rss_kib as f64 / 1024.0
        );
    }
}

/// The argon2id cost at the configured (default) parameters: one hash alone, and the most
/// hashes per second all cores can do at once, each thread reusing its memory as the server's
/// hashing threads do. The second is the login ceiling: on machines whose vCPUs share physical
/// cores, it is well below `cores / one hash`.
fn argon2_cost(cores: usize) -> (f64, f64, String) {
    use argon2::{Algorithm, Argon2, Block, Params, PasswordHasher, Version};
    let config = auth_server::Config::from_vars([("SECRET_KEY", SECRET)]).unwrap();
    let params = Params::new(
        config.argon2.memory_kib,
        config.argon2.iterations,
        config.argon2.parallelism,
        None,
    )
    .unwrap();
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let hash = argon2
        .hash_password(PASSWORD.as_bytes())
        .unwrap()
        .to_string();
    let hash_with = |memory: &mut Vec<Block>| {
        let mut out = [0u8; 32];
        argon2
            .hash_password_into_with_memory(
                PASSWORD.as_bytes(),
                b"a benchmark salt",
                &mut out,
                memory,
            )
            .unwrap();
    };
    let mut memory = vec![Block::default(); params.block_count()];
    let mut alone: Vec<f64> = (0..15)
        .map(|_| {
            let t = Instant::now();
            hash_with(&mut memory);
            t.elapsed().as_secs_f64()
        })
        .collect();
    alone.sort_by(f64::total_cmp);
    let per_thread = 30;
    let t = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..cores {
            s.spawn(|| {
                let mut memory = vec![Block::default(); params.block_count()];
                for _ in 0..per_thread {
                    hash_with(&mut memory);
                }
            });
        }
    });
    let parallel = (cores * per_thread) as f64 / t.elapsed().as_secs_f64();
    (alone[alone.len() / 2], parallel, hash)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if !args.no_build {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--release", "--bin", "auth-server"])
            .status()
            .expect("run cargo");
        assert!(status.success(), "cargo build --release failed");
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (hash_seconds, login_ceiling, hash) = argon2_cost(cores);
    println!(
        "machine: {cores} cores; {}",
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(
                |c| c.lines().find(|l| l.starts_with("model name")).map(|l| l
                    .split(':')
                    .nth(1)
                    .unwrap_or("")
                    .trim()
                    .to_string())
            )
            .unwrap_or_default()
    );
    println!(
        "argon2id at the default parameters (19456 KiB, t=2, p=1): {:.1} ms a hash alone ({:.1}/s = {cores} cores / hash time); \
         {cores} threads hashing at once: {login_ceiling:.1}/s = the login ceiling",
        hash_seconds * 1000.0,
        cores as f64 / hash_seconds
    );

    // A fresh database, migrated and seeded before the server starts.
    let dir = std::env::temp_dir().join(format!("auth-server-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (url, cleanup) = match &args.database {
        Some(server) => {
            let server = server.trim_end_matches('/').to_string();
            let name = format!("auth_bench_{}", std::process::id());
            let Ok(admin) = PgPoolOptions::new()
                .max_connections(1)
                .connect(&format!("{server}/postgres"))
                .await
            else {
                panic!("--database must be a reachable postgres:// server URL");
            };
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&admin)
                .await
                .unwrap();
            (format!("{server}/{name}"), Some((server, name)))
        }
        None => (format!("sqlite://{}", dir.join("bench.db").display()), None),
    };
    let db_url = DatabaseUrl::parse(&url).unwrap();
    let db = Db::connect(&db_url, Some(2)).await.unwrap();
    db.migrate().await.unwrap();
    let seeder = match &db_url {
        DatabaseUrl::Sqlite(url) => SeedPool::Sqlite(sqlx::SqlitePool::connect(url).await.unwrap()),
        DatabaseUrl::Postgres(url) => SeedPool::Postgres(sqlx::PgPool::connect(url).await.unwrap()),
    };
    seed(&seeder, &hash, 0, args.users).await;
    println!(
        "database: {}; {} users seeded",
        db_url.backend_name(),
        args.users
    );
    let server = start_server(&url, &dir, cleanup).await;
    let port = server.port;
    let duration = Duration::from_secs(args.duration);
    let c = args.concurrency;
    let mut rows = Vec::new();
    let run_id = std::process::id() as u64;

    let wanted = |name: &str| args.only.as_deref().is_none_or(|only| name.contains(only));
    if args.pause > 0 {
        println!(
            "server pid {} on port {port}; starting in {} s",
            server.child.id(),
            args.pause
        );
        tokio::time::sleep(Duration::from_secs(args.pause)).await;
    }
    macro_rules! scenario {
        ($name:expr, $work:expr, $concurrency:expr) => {{
            let name: String = $name.to_string();
            if wanted(&name) {
                server.reset_peak();
                let stats = load(port, $work, $concurrency, duration).await;
                let row = Row {
                    name: $name.to_string(),
                    stats,
                    peak_rss_kib: server.peak_rss_kib(),
                };
                eprintln!(
                    "  {:<34} {:>9.0} req/s, {} errors",
                    row.name,
                    row.stats.rps(),
                    row.stats.errors
                );
                rows.push(row);
            }
        }};
    }

    let (access, _) = sessions(port, args.users, c).await;
    scenario!("GET /health/live (trivial route)", Work::Trivial, c);
    scenario!(
        "GET /me",
        Work::Me {
            tokens: access.clone()
        },
        c
    );
    scenario!("POST /login", Work::Login { users: args.users }, c);
    scenario!("POST /register", Work::Register { run: run_id }, c);
    let (_, chains) = sessions(port, args.users, c).await;
    scenario!(
        "POST /refresh (following the chain)",
        Work::Refresh { tokens: chains },
        c
    );
    let (mixed_access, mixed_refresh) = sessions(port, args.users, c).await;
    scenario!(
        "mixed 70/20/8/2 me/refresh/login/reg",
        Work::Mixed {
            access: mixed_access,
            refresh: mixed_refresh,
            users: args.users,
            run: run_id + 1
        },
        c
    );

    // /me while logins keep the hashing pool saturated.
    if wanted("GET /me during a login storm") {
        let storm = tokio::spawn(load(
            port,
            Work::Login { users: args.users },
            2 * cores + 4,
            duration + Duration::from_millis(600),
        ));
        tokio::time::sleep(Duration::from_millis(300)).await;
        server.reset_peak();
        let me_during = load(
            port,
            Work::Me {
                tokens: access.clone(),
            },
            c,
            duration,
        )
        .await;
        let logins_during = storm.await.unwrap();
        rows.push(Row {
            name: "GET /me during a login storm".into(),
            stats: me_during,
            peak_rss_kib: server.peak_rss_kib(),
        });
        rows.push(Row {
            name: "  (the login storm beside it)".into(),
            stats: logins_during,
            peak_rss_kib: server.peak_rss_kib(),
        });
    }

    let mut large = None;
    if args.large_users > args.users && (wanted("users)")) {
        let t = Instant::now();
        seed(&seeder, &hash, args.users, args.large_users).await;
        // A bulk load leaves the rows in SQLite's write-ahead log, where every read has to look
        // for them; a live database is checkpointed as it goes. Checkpoint, as it would be.
        if let SeedPool::Sqlite(pool) = &seeder {
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(pool)
                .await
                .expect("checkpoint");
        }
        println!(
            "seeded up to {} users in {:.1} s",
            args.large_users,
            t.elapsed().as_secs_f64()
        );
        let (large_access, _) = sessions(port, args.large_users, c).await;
        scenario!(
            format!("POST /login ({} users)", args.large_users),
            Work::Login {
                users: args.large_users
            },
            c
        );
        scenario!(
            format!("GET /me ({} users)", args.large_users),
            Work::Me {
                tokens: large_access
            },
            c
        );
        large = Some(());
    }
    db.close().await;

    print_table(&rows);
    let errors: u64 = rows.iter().map(|r| r.stats.errors).sum();
    let get = |name: &str| {
        rows.iter()
            .find(|r| r.name.starts_with(name))
            .map(|r| &r.stats)
    };
    let (Some(trivial), Some(me), Some(login), Some(register), Some(me_storm)) = (
        get("GET /health/live"),
        get("GET /me"),
        get("POST /login"),
        get("POST /register"),
        get("GET /me during"),
    ) else {
        // A partial run (--only) has no targets to check.
        return if errors > 0 {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        };
    };
    let peak = rows.iter().map(|r| r.peak_rss_kib).max().unwrap_or(0) as f64 / 1024.0;
    let pool_mib = cores as f64 * 19456.0 / 1024.0;
    println!();
    println!("targets (measured in this run):");
    let check =
        |what: String, ok: bool| println!("  [{}] {what}", if ok { "met" } else { "MISSED" });
    check(
        format!(
            "GET /me at least 50% of the trivial route: {:.0}%",
            100.0 * me.rps() / trivial.rps()
        ),
        me.rps() >= 0.5 * trivial.rps(),
    );
    check(
        format!(
            "login at least 90% of the hash ceiling ({login_ceiling:.1}/s): {:.0}%",
            100.0 * login.rps() / login_ceiling
        ),
        login.rps() >= 0.9 * login_ceiling,
    );
    check(
        format!(
            "register at least 80% of login: {:.0}%",
            100.0 * register.rps() / login.rps()
        ),
        register.rps() >= 0.8 * login.rps(),
    );
    check(
        format!(
            "/me p99 during the login storm at most 3x alone: {:.2} ms vs {:.2} ms ({:.1}x)",
            me_storm.percentile(0.99),
            me.percentile(0.99),
            me_storm.percentile(0.99) / me.percentile(0.99)
        ),
        me_storm.percentile(0.99) <= 3.0 * me.percentile(0.99),
    );
    if large.is_some() {
        let login_large = rows
            .iter()
            .find(|r| r.name.starts_with("POST /login ("))
            .unwrap();
        let me_large = rows
            .iter()
            .find(|r| r.name.starts_with("GET /me ("))
            .unwrap();
        check(
            format!(
                "login with {} users within 10% of {}: {:.0}%",
                args.large_users,
                args.users,
                100.0 * login_large.stats.rps() / login.rps()
            ),
            login_large.stats.rps() >= 0.9 * login.rps(),
        );
        check(
            format!(
                "/me with {} users within 10% of {}: {:.0}%",
                args.large_users,
                args.users,
                100.0 * me_large.stats.rps() / me.rps()
            ),
            me_large.stats.rps() >= 0.9 * me.rps(),
        );
    }
    check(
        format!(
            "peak RSS under 64 MiB + the hashing pool's argon2 memory ({pool_mib:.0} MiB): {peak:.1} MiB"
        ),
        peak < 64.0 + pool_mib,
    );

    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    if errors > 0 {
        eprintln!("{errors} requests failed");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
