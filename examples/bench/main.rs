//! The benchmark: builds and starts the release server on a fresh database, seeds users, drives
//! it over loopback HTTP with keep-alive connections, and prints one table.
//!
//! ```sh
//! cargo run --release --example bench                       # SQLite, 32 connections, 5 s a scenario
//! cargo run --release --example bench -- --database postgres://postgres@127.0.0.1:5432
//! cargo run --release --example bench -- --concurrency 64 --duration 10 --large-users 1000000
//! cargo run --release --example bench -- --oha              # the ratio scenarios through oha too
//! ```
//!
//! The load generator is a small HTTP/1.1 client (`client.rs`: pre-built requests, one
//! connection per worker), so that it costs the shared cores as little as possible. The targets
//! compare the server with a bare axum server answering the same bytes (`reference.rs`), run
//! right before it on the same cores. It exits non-zero if any scenario saw an error.
//!
//! This file reads the arguments and runs the scenarios in order; `server.rs` is the server
//! under test, `reference.rs` the bare axum reference, `seed.rs` the accounts, sessions and
//! authenticators, `load.rs` the workers, `scenarios.rs` a scenario's run, `totp.rs` and
//! `passkey.rs` the second factors' client side, `oha.rs` the external load generator,
//! `machine.rs` the hash cost, `report.rs` the tables and the targets.

mod client;
mod load;
mod machine;
mod oha;
mod passkey;
mod reference;
mod report;
mod scenarios;
mod seed;
mod server;
mod totp;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use auth_server::config::DatabaseUrl;
use auth_server::db::Db;
use clap::Parser;

use load::Work;
use report::{
    Baseline, LOGIN, ME, MFA_LOGIN, PASSKEY_LOGIN, REFERENCE_ME, REFERENCE_TRIVIAL, REFRESH,
    REGISTER, TRIVIAL,
};
use scenarios::{Runner, passkeys, sessions};
use seed::Kind;

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
    /// Live sessions seeded for the large-database scenarios (spread over their users).
    #[arg(long, default_value_t = 100_000)]
    large_sessions: usize,
    /// Also run the ratio scenarios (reference and server, trivial route and /me) through oha,
    /// if it is on PATH or at ~/.cargo/bin/oha.
    #[arg(long)]
    oha: bool,
    /// Do not run `cargo build --release` first.
    #[arg(long)]
    no_build: bool,
    /// A setting for the server under test, KEY=VALUE (repeatable): to compare settings in one
    /// run's terms, e.g. `--server-env SESSION_CACHE_MS=0` or `--server-env HASH_NICE=10`.
    #[arg(long = "server-env", value_name = "KEY=VALUE", value_parser = key_value)]
    server_env: Vec<(String, String)>,
    /// Run only the scenarios whose name contains this (for profiling one of them).
    #[arg(long)]
    only: Option<String>,
    /// Keep the server running this many seconds before the scenarios (to attach a profiler).
    #[arg(long, default_value_t = 0)]
    pause: u64,
    /// The hidden mode the bench starts itself in for the bare axum reference (`reference.rs`).
    #[arg(long, hide = true)]
    reference_server: bool,
    #[arg(long, hide = true, default_value_t = 0)]
    port: u16,
    #[arg(long, hide = true)]
    body_dir: Option<std::path::PathBuf>,
}

/// Tokens minted for the large /me scenario: requests spread over this many sessions.
const LARGE_TOKENS: usize = 10_000;

fn key_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| "expected KEY=VALUE".to_string())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if args.reference_server {
        reference::serve(args.port, args.body_dir.as_deref().unwrap()).await;
        return ExitCode::SUCCESS;
    }
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
    let c = args.concurrency;
    let duration = Duration::from_secs(args.duration);
    let wanted = |name: &str| args.only.as_deref().is_none_or(|only| name.contains(only));

    // A fresh database, migrated and seeded before the server starts.
    let dir = std::env::temp_dir().join(format!("auth-server-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (url, cleanup) = server::fresh_database(args.database.as_deref(), &dir).await;
    let db_url = DatabaseUrl::parse(&url).unwrap();
    let database = match db_url.backend_name() {
        "postgres" => "PostgreSQL",
        _ => "SQLite",
    };
    let db = Db::connect(&db_url, Some(2)).await.unwrap();
    db.migrate().await.unwrap();
    let t = Instant::now();
    seed::seed(&db, &hash, 0, args.users).await;
    // Enough TOTP accounts that none is needed twice in a 30 s step: twice the faster of the
    // two hash rates (the machine is noisy: the parallel one is sometimes measured low).
    let mfa_accounts = if wanted(MFA_LOGIN) {
        let rate = login_ceiling.max(cores as f64 / hash_seconds);
        (2.0 * rate * (args.duration + 1).min(30) as f64).ceil() as usize + 2 * c
    } else {
        0
    };
    seed::seed_accounts(&db, Kind::Mfa, &hash, 0, mfa_accounts).await;
    let totp_accounts = Arc::new(totp::TotpAccounts::new(
        seed::totp_secrets(&db, mfa_accounts).await,
    ));
    let passkey_accounts = if wanted(PASSKEY_LOGIN) { c } else { 0 };
    seed::seed_accounts(&db, Kind::Passkey, &hash, 0, passkey_accounts).await;
    println!(
        "database: {database}; {} users, {} with TOTP, {} for passkeys seeded in {:.1} s",
        args.users,
        totp_accounts.len(),
        passkey_accounts,
        t.elapsed().as_secs_f64()
    );
    let server = server::start(&url, &dir, cleanup, &args.server_env).await;
    if !args.server_env.is_empty() {
        let shown: Vec<String> = args
            .server_env
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        println!("server settings: {}", shown.join(" "));
    }
    let port = server.port;
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
        duration,
        only: args.only.as_deref(),
        rows: Vec::new(),
    };

    // The ratio scenarios: each of the server's right after the bare axum reference's.
    let (access, _) = sessions(port, args.users, c).await;
    let reference_dir = dir.join("reference");
    std::fs::create_dir_all(&reference_dir).unwrap();
    let reference = reference::start(port, &access[0], &reference_dir).await;
    let me = Work::Me {
        tokens: access.clone(),
        spread: false,
    };
    runner
        .run_reference(reference.port, REFERENCE_TRIVIAL, Work::Trivial, c)
        .await;
    runner.run(TRIVIAL, Work::Trivial, c).await;
    runner
        .run_reference(reference.port, REFERENCE_ME, me.clone(), c)
        .await;
    runner.run(ME, me, c).await;
    let mut oha_rows = Vec::new();
    if args.oha {
        match oha::find() {
            None => println!("--oha: oha is neither on PATH nor at ~/.cargo/bin/oha; skipped"),
            Some(oha) => {
                for (name, port, path, bearer) in [
                    (REFERENCE_TRIVIAL, reference.port, "/health/live", None),
                    (TRIVIAL, port, "/health/live", None),
                    (
                        REFERENCE_ME,
                        reference.port,
                        "/me",
                        Some(access[0].as_str()),
                    ),
                    (ME, port, "/me", Some(access[0].as_str())),
                ] {
                    if wanted(name) {
                        let stats = oha::run(&oha, port, path, bearer, c, duration);
                        eprintln!(
                            "  oha: {name:<35} {:>9.0} req/s, {} errors",
                            stats.rps, stats.errors
                        );
                        oha_rows.push((name, stats));
                    }
                }
            }
        }
    }
    drop(reference);

    let login = Work::Login { users: args.users };
    runner.run(LOGIN, login, c).await;
    let register = Work::Register { run: run_id };
    runner.run(REGISTER, register, c).await;
    let (_, chains) = sessions(port, args.users, c).await;
    let refresh = Work::Refresh { tokens: chains };
    runner.run(REFRESH, refresh, c).await;
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
    let mfa = Work::MfaLogin {
        accounts: totp_accounts.clone(),
    };
    runner.run(MFA_LOGIN, mfa, c).await;
    if totp_accounts.waits() > 0 {
        println!(
            "note: the {} TOTP accounts ran out {} times (workers waited for the next 30 s \
             step): the MFA figure is low",
            totp_accounts.len(),
            totp_accounts.waits()
        );
    }
    if passkey_accounts > 0 {
        let t = Instant::now();
        let passkeys = passkeys(port, passkey_accounts).await;
        println!(
            "{passkey_accounts} passkeys registered in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        runner
            .run(PASSKEY_LOGIN, Work::PasskeyLogin { passkeys }, c)
            .await;
    }

    let mut large = None;
    let (n, m) = (args.large_users, args.large_sessions);
    if n > args.users && runner.wanted("users") {
        let t = Instant::now();
        seed::seed(&db, &hash, args.users, n).await;
        let large_access = seed::live_sessions(&db, n, m.max(1), LARGE_TOKENS).await;
        seed::checkpoint(&db).await;
        println!(
            "seeded up to {n} users and {m} live sessions in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        let login = Work::Login { users: n };
        runner.run(report::large_login(n), login, c).await;
        let me = Work::Me {
            tokens: large_access,
            spread: true,
        };
        runner.run(report::large_me(n, m.max(1)), me, c).await;
        large = Some((n, m.max(1)));
    }
    db.close().await;

    let rows = runner.rows;
    report::print_table(&rows);
    if !oha_rows.is_empty() {
        report::print_oha(&rows, &oha_rows);
    }
    let errors: u64 = rows.iter().map(|r| r.stats.errors).sum::<u64>()
        + oha_rows.iter().map(|(_, o)| o.errors).sum::<u64>();
    let baseline = Baseline {
        cores,
        login_ceiling,
        users: args.users,
        database,
        large,
    };
    let complete = report::check_targets(&rows, &baseline);
    report::print_per_core(&rows, cores);
    if complete {
        drop(server);
        let _ = std::fs::remove_dir_all(&dir);
    }
    if errors > 0 {
        eprintln!("{errors} requests failed");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
