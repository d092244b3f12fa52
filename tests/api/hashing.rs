//! The password hashing pool under load (bursts served whole, floods shed by expected wait,
//! abandoned hashes not computed, no starvation), hashes from elsewhere (bounded cost, no
//! timing tell), and the import's refusals.

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

/// Registers `count` new accounts at once; returns the statuses.
async fn register_burst(app: &TestApp, count: usize) -> Vec<u16> {
    let requests: Vec<_> = (0..count)
        .map(|_| {
            let (client, url) = (app.client.clone(), app.url("/register"));
            async move {
                client
                    .post(url)
                    .json(&json!({"email": unique_email(), "password": PASSWORD, "name": "Burst"}))
                    .send()
                    .await
                    .map_or(0, |r| r.status().as_u16())
            }
        })
        .collect();
    concurrently(requests).await
}

#[tokio::test]
async fn a_burst_the_pool_can_finish_within_the_budget_is_served_whole() {
    let _cores = CORES.lock().await;
    // The suite's cheap argon2: far more requests than the old fixed queue (64) allowed.
    let app = spawn_app().await;
    let statuses = register_burst(&app, 200).await;
    assert!(statuses.iter().all(|s| *s == 201), "{statuses:?}");

    // Costlier parameters, where the burst keeps both threads busy for a while, within the
    // default budget (HASH_MAX_WAIT_MILLISECONDS, 5 s).
    let (concurrency, budget) = (2u32, Duration::from_secs(5));
    let app = spawn_app_with(&[
        ("ARGON2_MEMORY_KIB", "8192"),
        ("ARGON2_ITERATIONS", "2"),
        ("HASH_CONCURRENCY", &concurrency.to_string()),
    ])
    .await;
    // The burst the pool finishes in half the budget by the hash time the server measured at
    // start, so that it is served whole on a machine twice as slow as that: n = budget / 2 x
    // HASH_CONCURRENCY / mean hash time (at most 200).
    let mean = app.state.hasher.stats().mean;
    let burst = ((budget / 2 * concurrency).as_secs_f64() / mean.as_secs_f64()).min(200.0) as usize;
    assert!(
        burst >= 20,
        "a hash takes {mean:?}: too slow a machine for this test"
    );
    let started = Instant::now();
    let statuses = register_burst(&app, burst).await;
    let stats = app.state.hasher.stats();
    eprintln!(
        "{burst} registrations in {:?}; {stats:?}; the last one's expected wait {:?}",
        started.elapsed(),
        stats.mean * burst as u32 / concurrency
    );
    assert!(statuses.iter().all(|s| *s == 201), "{statuses:?}");
    assert_eq!(stats.computed, burst as u64);
}

#[tokio::test]
async fn a_flood_is_shed_when_the_expected_wait_passes_the_budget_with_that_wait_as_retry_after() {
    let _cores = CORES.lock().await;
    let budget = Duration::from_millis(1000);
    let app = spawn_app_with(&[
        ("ARGON2_MEMORY_KIB", "8192"),
        ("ARGON2_ITERATIONS", "2"),
        ("HASH_CONCURRENCY", "1"),
        ("HASH_MAX_WAIT_MILLISECONDS", "1000"),
        ("LOGIN_FREE_ATTEMPTS", "1000"),
    ])
    .await;
    // Three times what fits in the budget by the hash time measured at start (budget / mean
    // hash time, with one hashing thread), at least 300: more than fits, on any machine.
    let start_mean = app.state.hasher.stats().mean;
    let clients = ((3.0 * budget.as_secs_f64() / start_mean.as_secs_f64()) as usize).max(300);
    let requests: Vec<_> = (0..clients)
        .map(|i| {
            let (client, url) = (app.client.clone(), app.url("/login"));
            async move {
                let response = client
                    .post(url)
                    .json(&json!({"email": format!("nobody{i}@example.com"), "password": "not the password"}))
                    .send()
                    .await
                    .unwrap();
                let status = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
                let code = response.json::<Value>().await.unwrap()["code"].clone();
                (status, retry_after, code)
            }
        })
        .collect();
    let answers = concurrently(requests).await;
    let mean = app.state.hasher.stats().mean;
    let admitted = answers.iter().filter(|(s, ..)| *s == 401).count();
    let shed: Vec<_> = answers.iter().filter(|(s, ..)| *s == 503).collect();
    eprintln!(
        "{admitted} admitted, {} shed; mean hash {mean:?}; Retry-After {:?}",
        shed.len(),
        shed.iter().map(|(_, r, _)| r.unwrap()).collect::<Vec<_>>()
    );
    assert_eq!(admitted + shed.len(), clients, "{answers:?}");
    assert!(!shed.is_empty(), "nothing was shed");
    for (_, retry_after, code) in &shed {
        assert_eq!(code, "SERVICE_UNAVAILABLE");
        // Shed only past the budget (1 s), so the wait rounded up is at least 2 s.
        let retry_after = retry_after.expect("Retry-After");
        assert!((2..=30).contains(&retry_after), "Retry-After {retry_after}");
    }
    // About budget / mean hashes fit in the budget, plus those done while the burst arrived.
    let fit = (budget.as_secs_f64() / mean.as_secs_f64()) as usize;
    assert!(
        admitted >= fit / 3 && admitted <= (fit * 3).max(10),
        "{admitted} admitted where about {fit} fit"
    );
}

/// Waits until the pool has nothing queued or running.
async fn pool_idle(app: &TestApp) -> auth_server::auth::password::PoolStats {
    eventually(
        "the pool draining",
        Duration::from_secs(60),
        || async { app.state.hasher.stats() },
        |stats| stats.queued == 0 && stats.running == 0,
    )
    .await
}

#[tokio::test]
async fn hashes_for_clients_that_have_gone_are_not_computed() {
    let _cores = CORES.lock().await;
    // One thread, about 15 to 30 ms a hash: 100 hashes take seconds.
    let app = spawn_app_with(&[
        ("ARGON2_MEMORY_KIB", "19456"),
        ("ARGON2_ITERATIONS", "2"),
        ("HASH_CONCURRENCY", "1"),
        ("HASH_MAX_WAIT_MILLISECONDS", "600000"),
        ("LOGIN_FREE_ATTEMPTS", "1000"),
    ])
    .await;
    let login = |app: &TestApp, i: usize, timeout: Option<Duration>| {
        let (client, url) = (app.client.clone(), app.url("/login"));
        async move {
            let mut request = client.post(url).json(
                &json!({"email": format!("gone{i}@example.com"), "password": "not the password"}),
            );
            if let Some(timeout) = timeout {
                request = request.timeout(timeout);
            }
            request.send().await.map(|r| r.status().as_u16())
        }
    };

    // The pool's hash time as it is now (its running mean, after ten hashes one at a time: the
    // one measured at start may have been on a machine busier then).
    for i in 0..10 {
        login(&app, 1000 + i, None).await.unwrap();
    }
    // 100 clients send a login and hang up after about ten hashes' time (HASH_CONCURRENCY = 1):
    // some ten are answered, the rest have gone.
    let before = app.state.hasher.stats();
    let hang_up = before.mean * 10;
    let started = Instant::now();
    let answers = concurrently((0..100).map(|i| login(&app, i, Some(hang_up))).collect()).await;
    let hung_up = answers.iter().filter(|a| a.is_err()).count();
    let stats = pool_idle(&app).await;
    let computed = stats.computed - before.computed;
    eprintln!(
        "{hung_up} hung up after {hang_up:?}; {computed} computed, {} abandoned, in {:?}",
        stats.abandoned - before.abandoned,
        started.elapsed()
    );
    assert!(hung_up >= 80, "{answers:?}");
    assert!(
        computed <= 100 - hung_up as u64 + 20,
        "{computed} hashes computed for {hung_up} clients that had gone"
    );

    // A request that runs past REQUEST_TIMEOUT_SECONDS is answered 503, and its hash is dropped:
    // with more logins than one thread hashes in three such timeouts (3 s / mean hash time, at
    // least 100), some run past it.
    let app = app.restart(&[("REQUEST_TIMEOUT_SECONDS", "1")]).await;
    let before = app.state.hasher.stats();
    let clients = ((3.0 / before.mean.as_secs_f64()) as usize).max(100);
    let answers = concurrently((0..clients).map(|i| login(&app, i + 100, None)).collect()).await;
    let statuses: Vec<u16> = answers.into_iter().map(Result::unwrap).collect();
    let timed_out = statuses.iter().filter(|s| **s == 503).count();
    let stats = pool_idle(&app).await;
    let computed = stats.computed - before.computed;
    eprintln!("{timed_out} timed out; {computed} computed");
    assert!(
        statuses.iter().all(|s| [401, 503].contains(s)),
        "{statuses:?}"
    );
    assert!(timed_out > 0, "{statuses:?}");
    assert!(
        computed <= (clients - timed_out) as u64 + 10,
        "{computed} computed for {} answered",
        clients - timed_out
    );
}

/// The cores of this machine (as the server counts them for HASH_CONCURRENCY's default).
fn cores() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
}

// More runtime threads than cores (twice as many), all busy with the flood: the cores are never
// idle.
#[test]
fn logins_keep_progressing_beside_a_flood_of_cheap_requests() {
    flooded_runtime().block_on(logins_beside_a_flood(Nice::Fair));
}

/// The default HASH_NICE (19) gives the request workers the cores first: logins beside the
/// flood are slower than a fair share, but they finish while it lasts (at idle priority they
/// would wait for its end).
#[test]
fn at_the_default_nice_logins_still_finish_during_a_flood() {
    flooded_runtime().block_on(logins_beside_a_flood(Nice::Default));
}

fn flooded_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2 * cores() as usize)
        .enable_all()
        .build()
        .unwrap()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Nice {
    /// HASH_NICE=0: the cores shared fairly; the bound is a fair share's.
    Fair,
    /// HASH_NICE's default: the bound is the flood's own length (logins finish within it).
    Default,
}

async fn logins_beside_a_flood(nice: Nice) {
    let _cores = CORES.lock().await;
    let mut vars = vec![
        ("ARGON2_MEMORY_KIB", "19456"),
        ("ARGON2_ITERATIONS", "2"),
        ("HASH_MAX_WAIT_MILLISECONDS", "1000"),
    ];
    if nice == Nice::Fair {
        vars.push(("HASH_NICE", "0"));
    } else {
        // At nice 19 the measured hash time grows under the flood, and with it the expected
        // wait that admission sheds by (503): this test is about starvation, not shedding.
        vars.retain(|(k, _)| *k != "HASH_MAX_WAIT_MILLISECONDS");
        vars.push(("HASH_MAX_WAIT_MILLISECONDS", "4000"));
    }
    let app = spawn_app_with(&vars).await;
    let email = unique_email();
    app.signed_up(&email).await;
    // The bound, from the configuration: an admitted hash waits at most the budget, then takes
    // one hash's time (as the server measured it at start), stretched by a fair share of the
    // machine: the runtime's 2 x cores workers and HASH_CONCURRENCY (= cores, the default)
    // hashing threads all runnable on `cores` cores give each (2c + c) / c = 3 times the time,
    // and 13 times that again for a machine shared with other work. Hashing threads that get only
    // idle CPU (SCHED_IDLE) would wait for the flood to end.
    let budget = Duration::from_millis(1000);
    let hash = app.state.hasher.stats().mean;
    let (workers, hashers) = (2 * cores(), cores());
    let stretch = (workers + hashers) as f64 / cores() as f64;
    let fair = budget + hash.mul_f64(stretch * 13.0);
    // At nice 19 a hashing thread beside a busy worker gets 15/1039 of a core (the kernel's
    // weights): about 70 times one hash's time, seconds with these parameters. The flood runs
    // three times the bound (24 s); idle priority would hold a login for all of it.
    let bound = match nice {
        Nice::Fair => fair,
        Nice::Default => Duration::from_secs(8),
    };

    // The flood: 64 clients asking GET /health/live as fast as they can, on the same cores.
    let flood_for = bound * 3;
    let flood: Vec<_> = (0..64)
        .map(|_| {
            let (client, url) = (app.client.clone(), app.url("/health/live"));
            async move {
                let until = Instant::now() + flood_for;
                let mut answered = 0u64;
                while Instant::now() < until {
                    if client
                        .get(&url)
                        .send()
                        .await
                        .is_ok_and(|r| r.status() == 200)
                    {
                        answered += 1;
                    }
                }
                answered
            }
        })
        .collect();
    let flood = tokio::spawn(concurrently(flood));
    // Three clients logging in, one login after another, while it lasts.
    let logins: Vec<_> = (0..3)
        .map(|_| {
            let (client, url, email) = (app.client.clone(), app.url("/login"), email.clone());
            async move {
                let until = Instant::now() + flood_for;
                let mut latencies = Vec::new();
                while Instant::now() < until {
                    let started = Instant::now();
                    let status = client
                        .post(&url)
                        .json(&json!({"email": email, "password": PASSWORD}))
                        .timeout(flood_for * 2)
                        .send()
                        .await
                        .map_or(0, |r| r.status().as_u16());
                    latencies.push((status, started.elapsed()));
                }
                latencies
            }
        })
        .collect();
    let logins: Vec<_> = concurrently(logins).await.into_iter().flatten().collect();
    let answered: u64 = flood.await.unwrap().iter().sum();
    let slowest = logins.iter().map(|(_, t)| *t).max().unwrap();
    eprintln!(
        "{} logins beside {answered} cheap requests; slowest login {slowest:?}, bound {bound:?}",
        logins.len()
    );
    assert!(
        logins.iter().all(|(s, _)| *s == 200),
        "{:?}",
        logins.iter().map(|(s, _)| s).collect::<Vec<_>>()
    );
    assert!(slowest <= bound, "a login took {slowest:?}, over {bound:?}");
    assert!(logins.len() >= 6, "only {} logins", logins.len());
}

/// A PHC argon2id string with the given parameters (the hash itself is made up).
fn planted_argon2(m: u32, t: u32, p: u32) -> String {
    format!(
        "$argon2id$v=19$m={m},t={t},p={p}${}${}",
        STANDARD_NO_PAD.encode([7u8; 16]),
        STANDARD_NO_PAD.encode([9u8; 32])
    )
}

async fn set_hash(app: &TestApp, email: &str, hash: &str) {
    app.execute2(
        "UPDATE users SET password_hash = $1 WHERE email = $2",
        hash,
        email,
    )
    .await;
}

#[tokio::test]
async fn a_planted_hash_beyond_the_limits_is_never_computed() {
    let app = spawn_app_with(&[("LOGIN_FREE_ATTEMPTS", "1000")]).await;
    let email = unique_email();
    app.register(&email, PASSWORD, "Planted").await;
    let before = app.state.hasher.stats().computed;
    // 4 GiB and a million passes; bcrypt at cost 31 (days). Either would hold a hashing thread
    // for minutes (and the first, gigabytes) at every attempt.
    let bcrypt31 = bcrypt::hash(PASSWORD, 4)
        .unwrap()
        .replacen("$04$", "$31$", 1);
    for planted in [planted_argon2(4 * 1024 * 1024, 1_000_000, 1), bcrypt31] {
        set_hash(&app, &email, &planted).await;
        for password in [PASSWORD, "another guess entirely"] {
            let started = Instant::now();
            assert_problem(
                app.login(&email, password).await,
                401,
                "INVALID_CREDENTIALS",
            )
            .await;
            assert!(started.elapsed() < Duration::from_secs(2));
        }
    }
    assert_eq!(
        app.state.hasher.stats().computed,
        before,
        "a planted hash was computed"
    );
    // Within the limits, a hash made elsewhere still verifies (argon2id at 64 MiB, t=3, p=4, as
    // argon2-cffi makes them).
    let elsewhere = {
        use argon2::PasswordHasher as _;
        argon2::Argon2::new(
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x13,
            argon2::Params::new(65_536, 3, 4, None).unwrap(),
        )
        .hash_password(PASSWORD.as_bytes())
        .unwrap()
        .to_string()
    };
    set_hash(&app, &email, &elsewhere).await;
    assert_eq!(app.login(&email, PASSWORD).await.status(), StatusCode::OK);
}

/// The median of `samples`.
fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// Wrong passwords for an argon2 account, a bcrypt account and an unknown address take the
/// same time (the median of 15 rounds' ratios, within 0.67x to 1.5x), whichever hash costs more.
async fn bcrypt_account_timing(argon2: &[(&str, &str)], bcrypt_cost: u32) {
    let _cores = CORES.lock().await;
    let mut vars = argon2.to_vec();
    vars.push(("LOGIN_FREE_ATTEMPTS", "1000"));
    let app = spawn_app_with(&vars).await;
    let (argon2_account, bcrypt_account, unknown) =
        (unique_email(), unique_email(), unique_email());
    app.register(&argon2_account, PASSWORD, "Argon2").await;
    app.register(&bcrypt_account, PASSWORD, "Bcrypt").await;
    set_hash(
        &app,
        &bcrypt_account,
        &bcrypt::hash(PASSWORD, bcrypt_cost).unwrap(),
    )
    .await;
    // Rows planted beside it (a cost beyond the bounds, a malformed prefix) must not hide the
    // real cost from the start-up scan.
    for planted in ["$2b$31$", "$2z$zz$"] {
        let email = unique_email();
        app.register(&email, PASSWORD, "Planted").await;
        set_hash(&app, &email, &format!("{planted}{}", "x".repeat(53))).await;
    }
    // The server sees at start which bcrypt costs remain.
    let app = app.restart(&[]).await;
    // In rounds of three close together, so that the machine's noise falls on all three alike;
    // the median of each round's ratio to the argon2 account's time.
    let (mut bcrypt_ratios, mut unknown_ratios, mut argon2_times) =
        (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..15 {
        let mut round = Vec::new();
        for email in [&argon2_account, &bcrypt_account, &unknown] {
            let started = Instant::now();
            let response = app.login(email, "a wrong password guess").await;
            round.push(started.elapsed().as_secs_f64());
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        }
        argon2_times.push(Duration::from_secs_f64(round[0]));
        bcrypt_ratios.push(round[1] / round[0]);
        unknown_ratios.push(round[2] / round[0]);
    }
    let median_of = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (b, u) = (median_of(bcrypt_ratios), median_of(unknown_ratios));
    eprintln!(
        "wrong password, against an argon2 account ({:?}): bcrypt account {b:.2}x, unknown email {u:.2}x",
        median(argon2_times)
    );
    for (what, ratio) in [("bcrypt account", b), ("unknown email", u)] {
        assert!(
            (0.67..=1.5).contains(&ratio),
            "{what}: {ratio:.2}x the time of an argon2 account"
        );
    }
    // The bcrypt account still logs in (and is upgraded).
    assert_eq!(
        app.login(&bcrypt_account, PASSWORD).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_bcrypt_account_does_not_stand_out_when_argon2_costs_more() {
    // An argon2 cost (30 to 50 ms) that dominates bcrypt's at cost 5 (about 2 ms).
    bcrypt_account_timing(
        &[("ARGON2_MEMORY_KIB", "19456"), ("ARGON2_ITERATIONS", "3")],
        5,
    )
    .await;
}

#[tokio::test]
async fn a_bcrypt_account_does_not_stand_out_when_bcrypt_costs_more() {
    // bcrypt at cost 10 (about 60 ms; the original service used 12, four times that) against
    // the tests' cheap argon2 (about 1 ms): every check waits as long as a bcrypt one.
    bcrypt_account_timing(&[], 10).await;
}

/// A SQLite file shaped like the original service's database, with these rows.
fn original_database(path: &std::path::Path, rows: Vec<(String, String)>) {
    let url = format!("sqlite://{}?mode=rwc", path.display());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
            sqlx::raw_sql(
                "CREATE TABLE users (id INTEGER PRIMARY KEY, email VARCHAR NOT NULL UNIQUE,
                 name VARCHAR NOT NULL, hashed_password VARCHAR NOT NULL)",
            )
            .execute(&pool)
            .await
            .unwrap();
            for (email, hash) in rows {
                sqlx::query(
                    "INSERT INTO users (email, name, hashed_password) VALUES ($1, 'Old', $2)",
                )
                .bind(email)
                .bind(hash)
                .execute(&pool)
                .await
                .unwrap();
            }
            pool.close().await;
        })
    })
    .join()
    .unwrap();
}

#[tokio::test]
async fn the_import_refuses_hashes_beyond_the_limits() {
    let app = spawn_app().await;
    let dir = std::env::temp_dir().join(format!(
        "auth-server-import-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let old = dir.join("sqlite.db");
    let (fine, costly_bcrypt, huge_argon2, slow_argon2) = (
        unique_email(),
        unique_email(),
        unique_email(),
        unique_email(),
    );
    let bcrypt4 = bcrypt::hash("the old passphrase", 4).unwrap();
    original_database(
        &old,
        vec![
            (fine.clone(), bcrypt4.clone()),
            (costly_bcrypt.clone(), bcrypt4.replacen("$04$", "$16$", 1)),
            (huge_argon2.clone(), planted_argon2(2 * 1024 * 1024, 1, 1)),
            (slow_argon2.clone(), planted_argon2(19_456, 1000, 1)),
        ],
    );
    let mut command = server_command();
    command
        .args([
            "import-users",
            "--from",
            &format!("sqlite://{}", old.display()),
        ])
        .env("DATABASE_URL", app.var("DATABASE_URL"));
    let output = run_to_end(command, Duration::from_secs(60));
    let report = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        report.contains("imported 1 account(s); skipped 0 already present, 3 invalid"),
        "{report}"
    );
    for (email, why) in [
        (&costly_bcrypt, "bcrypt cost 16"),
        (&huge_argon2, "memory 2097152 KiB"),
        (&slow_argon2, "iterations 1000"),
    ] {
        let line = report
            .lines()
            .find(|l| l.contains(email.as_str()))
            .unwrap_or_else(|| panic!("{email} not reported: {report}"));
        assert!(line.contains(why), "{line}");
        assert_eq!(
            app.count("SELECT COUNT(*) FROM users WHERE email = $1", email)
                .await,
            0
        );
    }
    assert_eq!(
        app.login(&fine, "the old passphrase").await.status(),
        StatusCode::OK
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
