//! The benchmark: builds and starts the release server on a fresh database, seeds users, drives
//! it over loopback HTTP with keep-alive connections, and prints one table.
//!
//! ```sh
//! cargo run --release --example bench                       # SQLite, 32 connections, 5 s a scenario
//! cargo run --release --example bench -- --database postgres://postgres@127.0.0.1:5432
//! cargo run --release --example bench -- --concurrency 64 --duration 10 --large-users 1000000
//! ```
//!
//! The load generator is a small HTTP/1.1 client (`client.rs`: pre-built requests, one
//! connection per worker), so that it costs the shared cores as little as possible. It exits
//! non-zero if any scenario saw an error.
//!
//! This file reads the arguments and runs the scenarios in order; `server.rs` is the server
//! under test, `seed.rs` the accounts, `load.rs` the workers, `scenarios.rs` a scenario's run,
//! `machine.rs` the hash cost, `report.rs` the table and the targets.

mod client;
mod load;
mod machine;
mod report;
mod scenarios;
mod seed;
mod server;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use auth_server::config::DatabaseUrl;
use auth_server::db::Db;
use clap::Parser;

use load::Work;
use report::Baseline;
use scenarios::{Runner, sessions};

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

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if !args.no_build {
        server::build();
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (hash_seconds, login_ceiling, hash) = machine::argon2_cost(cores);
    println!("machine: {cores} cores; {}", machine::cpu_model());
    println!(
        "argon2id at the default parameters (19456 KiB, t=2, p=1): {:.1} ms a hash alone ({:.1}/s = {cores} cores / hash time); \
         {cores} threads hashing at once: {login_ceiling:.1}/s = the login ceiling",
        hash_seconds * 1000.0,
        cores as f64 / hash_seconds
    );

    // A fresh database, migrated and seeded before the server starts.
    let dir = std::env::temp_dir().join(format!("auth-server-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (url, cleanup) = server::fresh_database(args.database.as_deref(), &dir).await;
    let db_url = DatabaseUrl::parse(&url).unwrap();
    let db = Db::connect(&db_url, Some(2)).await.unwrap();
    db.migrate().await.unwrap();
    seed::seed(&db, &hash, 0, args.users).await;
    println!(
        "database: {}; {} users seeded",
        db_url.backend_name(),
        args.users
    );
    let server = server::start(&url, &dir, cleanup).await;
    let port = server.port;
    let c = args.concurrency;
    let run_id = std::process::id() as u64;
    if args.pause > 0 {
        println!(
            "server pid {} on port {port}; starting in {} s",
            server.pid(),
            args.pause
        );
        tokio::time::sleep(Duration::from_secs(args.pause)).await;
    }
    let mut runner = Runner {
        server: &server,
        duration: Duration::from_secs(args.duration),
        only: args.only.as_deref(),
        rows: Vec::new(),
    };

    let (access, _) = sessions(port, args.users, c).await;
    runner
        .run("GET /health/live (trivial route)", Work::Trivial, c)
        .await;
    let me = Work::Me {
        tokens: access.clone(),
    };
    runner.run("GET /me", me, c).await;
    let login = Work::Login { users: args.users };
    runner.run("POST /login", login, c).await;
    let register = Work::Register { run: run_id };
    runner.run("POST /register", register, c).await;
    let (_, chains) = sessions(port, args.users, c).await;
    let refresh = Work::Refresh { tokens: chains };
    runner
        .run("POST /refresh (following the chain)", refresh, c)
        .await;
    let (mixed_access, mixed_refresh) = sessions(port, args.users, c).await;
    let mixed = Work::Mixed {
        access: mixed_access,
        refresh: mixed_refresh,
        users: args.users,
        run: run_id + 1,
    };
    runner
        .run("mixed 70/20/8/2 me/refresh/login/reg", mixed, c)
        .await;
    runner
        .me_during_login_storm(access.clone(), args.users, cores, c)
        .await;

    let mut large = None;
    if args.large_users > args.users && runner.wanted("users)") {
        let t = Instant::now();
        seed::seed(&db, &hash, args.users, args.large_users).await;
        seed::checkpoint(&db).await;
        println!(
            "seeded up to {} users in {:.1} s",
            args.large_users,
            t.elapsed().as_secs_f64()
        );
        let (large_access, _) = sessions(port, args.large_users, c).await;
        let n = args.large_users;
        let login = Work::Login { users: n };
        runner
            .run(format!("POST /login ({n} users)"), login, c)
            .await;
        let me = Work::Me {
            tokens: large_access,
        };
        runner.run(format!("GET /me ({n} users)"), me, c).await;
        large = Some(n);
    }
    db.close().await;

    let rows = runner.rows;
    report::print_table(&rows);
    let errors: u64 = rows.iter().map(|r| r.stats.errors).sum();
    let baseline = Baseline {
        cores,
        login_ceiling,
        users: args.users,
        large_users: large,
    };
    if !report::check_targets(&rows, &baseline) {
        return if errors > 0 {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        };
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    if errors > 0 {
        eprintln!("{errors} requests failed");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
