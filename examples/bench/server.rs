//! The server under test: the release binary, built and started on a fresh database; its peak
//! memory; and its cleanup (the process, the temporary directory, a PostgreSQL database).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::SECRET;
use crate::client::{Conn, request};

/// Runs `cargo build --release --bin auth-server`.
pub fn build() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "--bin", "auth-server"])
        .status()
        .expect("run cargo");
    assert!(status.success(), "cargo build --release failed");
}

/// A PostgreSQL database made for the run: (server URL, database name), dropped at the end.
pub type Cleanup = Option<(String, String)>;

/// A fresh database: a new PostgreSQL database on `server` if given, else a SQLite file in `dir`.
/// Returns its URL and what to drop afterwards.
pub async fn fresh_database(server: Option<&str>, dir: &Path) -> (String, Cleanup) {
    match server {
        Some(server) => {
            let server = server.trim_end_matches('/').to_string();
            let name = format!("auth_bench_{}", std::process::id());
            // Creating a database is the operator's business, not the server's: a pool of its own.
            let Ok(admin) = sqlx::postgres::PgPoolOptions::new()
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
    }
}

pub struct Server {
    child: Child,
    pub port: u16,
    dir: PathBuf,
    cleanup: Cleanup,
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn peak_rss_kib(&self) -> u64 {
        proc_status(self.child.id(), "VmHWM:")
    }

    /// Starts a new peak for VmHWM (Linux: writing 5 to clear_refs).
    pub fn reset_peak(&self) {
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
                    if let Ok(pool) = sqlx::postgres::PgPoolOptions::new()
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

pub fn free_port() -> u16 {
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

/// Starts the release server on `database_url` (rate limits off) and waits until it answers.
/// `env`: settings over those (`--server-env`).
pub async fn start(
    database_url: &str,
    dir: &Path,
    cleanup: Cleanup,
    env: &[(String, String)],
) -> Server {
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
        .envs(env.iter().map(|(k, v)| (k, v)))
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
