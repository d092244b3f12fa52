//! Per-client limits shared by instances through Redis (`REDIS_URL`), and what happens when
//! Redis goes away and comes back.
//!
//! They need the machine's Redis at 127.0.0.1:6379, and `redis-server` on PATH for the test that
//! runs (and kills) one of its own. Without them each test passes after one line on stderr (per
//! run); `REDIS_TESTS=required` (as .ci/run sets) fails them instead. Each test has a
//! `REDIS_KEY_PREFIX` of its own, so that tests running at once never share a budget.
//!
//! Redis's budgets refill on Redis's own clock (the script reads `TIME`), not on the server's
//! controlled clock: at 4 a minute one request's allowance comes back after 15 s, far longer than
//! these tests' few requests take. The in-memory buckets of the fallback follow the controlled
//! clock, which these tests freeze.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use auth_server::ratelimit::Backend;

use crate::helpers::*;
use crate::smtp::Logs;

const MACHINE_REDIS: &str = "redis://127.0.0.1:6379";

/// The log lines of the switches (`ratelimit::shared`).
const TO_LOCAL: &str = "Redis is unreachable: rate limits are per instance until it answers";
const BACK: &str = "Redis answers again: rate limits shared again";

/// Whether the Redis tests must run (`REDIS_TESTS=required`) rather than skip.
fn required() -> bool {
    std::env::var("REDIS_TESTS").is_ok_and(|v| v == "required")
}

/// Says once per run, on stderr, why the Redis tests are skipped; or fails the test when they
/// are required.
fn skip(why: &str) {
    if required() {
        panic!("Redis tests required (REDIS_TESTS=required), but {why}");
    }
    static SAID: OnceLock<()> = OnceLock::new();
    SAID.get_or_init(|| {
        // Straight to stderr: the test harness captures eprintln! of a passing test.
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "Redis tests skipped: {why} (.ci/run starts one)"
        );
    });
}

/// A connection to Redis at `url`, if it answers PING within 2 s.
async fn connect(url: &str) -> Option<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(url).ok()?;
    let ping = async {
        let mut connection = client.get_multiplexed_async_connection().await.ok()?;
        let pong: String = redis::cmd("PING").query_async(&mut connection).await.ok()?;
        (pong == "PONG").then_some(connection)
    };
    tokio::time::timeout(Duration::from_secs(2), ping)
        .await
        .ok()
        .flatten()
}

/// The machine's Redis, or `None` (said once) when it does not answer.
async fn machine_redis() -> Option<redis::aio::MultiplexedConnection> {
    let found = connect(MACHINE_REDIS).await;
    if found.is_none() {
        skip(&format!("no Redis answers at {MACHINE_REDIS}"));
    }
    found
}

/// A key prefix no other test uses.
fn unique_prefix() -> String {
    format!("auth-test-{}:", uuid::Uuid::new_v4().simple())
}

/// The keys under `prefix`.
async fn keys(redis: &mut redis::aio::MultiplexedConnection, prefix: &str) -> Vec<String> {
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(redis)
        .await
        .unwrap();
    keys.sort();
    keys
}

/// POST /login with an empty body: the limit is taken before the body is read, so an allowed
/// request is answered 422 and a limited one 429, at once and with no account.
async fn login_from(app: &TestApp, forwarded_for: Option<&str>) -> reqwest::Response {
    let mut request = app.client.post(app.url("/login")).json(&json!({}));
    if let Some(value) = forwarded_for {
        request = request.header("X-Forwarded-For", value);
    }
    request.send().await.unwrap()
}

/// One limited request: passed (422) or refused (429, with its Retry-After in seconds). Anything
/// else fails the test: Redis must never turn a request into a 5xx.
async fn attempt(app: &TestApp) -> Result<(), u64> {
    let response = login_from(app, None).await;
    match response.status() {
        StatusCode::UNPROCESSABLE_ENTITY => Ok(()),
        StatusCode::TOO_MANY_REQUESTS => Err(response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .expect("a 429 says Retry-After in seconds")),
        other => panic!(
            "a limited request was answered {other}: {}",
            response.text().await.unwrap_or_default()
        ),
    }
}

/// Two instances on one database and one Redis budget (`REDIS_URL` at `url`), the login limit
/// `per_minute`, the controlled clock frozen (it drives only the in-memory fallback).
async fn two_instances(url: &str, prefix: &str, per_minute: &str) -> (TestApp, TestApp) {
    let a = spawn_app_with(&[
        ("REDIS_URL", url),
        ("REDIS_KEY_PREFIX", prefix),
        ("RATE_LIMIT_LOGIN_PER_MINUTE", per_minute),
        ("RATE_LIMIT_REGISTER_PER_MINUTE", "10"),
    ])
    .await;
    freeze_clock(&a);
    let b = a.another_instance().await;
    (a, b)
}

#[tokio::test]
async fn two_instances_share_one_login_budget_through_redis() {
    let Some(mut redis) = machine_redis().await else {
        return;
    };
    let prefix = unique_prefix();
    let (a, b) = two_instances(MACHINE_REDIS, &prefix, "4").await;
    assert_eq!(a.state.limiter.backend(), Backend::Redis);
    assert_eq!(b.state.limiter.backend(), Backend::Redis);
    // Four requests, spread over both, pass: one budget of 4, not 4 each.
    for app in [&a, &b, &a, &b] {
        assert_eq!(attempt(app).await, Ok(()));
    }
    // The fifth is refused on either, with the bucket's wait (one allowance: 60 s / 4).
    for app in [&a, &b] {
        let wait = attempt(app).await.unwrap_err();
        assert!((1..=15).contains(&wait), "Retry-After: {wait}");
    }
    // Another group keeps its own budget.
    assert_ne!(
        a.post_json("/register", &json!({})).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    // Redis decided every one of them: six login checks and a registration, one round trip
    // each, and no fallback.
    let (sa, sb) = (a.state.limiter.stats(), b.state.limiter.stats());
    assert_eq!(sa.round_trips + sb.round_trips, 7, "{sa:?} {sb:?}");
    assert_eq!(sa.errors + sb.errors, 0);
    // One key per group and client network, with a TTL of at most a minute.
    let found = keys(&mut redis, &prefix).await;
    assert_eq!(
        found,
        vec![
            format!("{prefix}ratelimit:login:127.0.0.1"),
            format!("{prefix}ratelimit:register:127.0.0.1"),
        ]
    );
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&found[0])
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(ttl > 0 && ttl <= 60_000, "PTTL {ttl}");
}

#[tokio::test]
async fn rotating_x_forwarded_for_buys_no_fresh_budget_and_keys_stay_bounded() {
    let Some(mut redis) = machine_redis().await else {
        return;
    };
    // Without TRUSTED_PROXIES the header is not read at all: every request is 127.0.0.1's.
    let prefix = unique_prefix();
    let (a, b) = two_instances(MACHINE_REDIS, &prefix, "4").await;
    for i in 0..4 {
        let app = if i % 2 == 0 { &a } else { &b };
        let forged = format!("203.0.113.{i}, 2001:db8:{i}::1");
        assert_eq!(
            login_from(app, Some(&forged)).await.status(),
            StatusCode::UNPROCESSABLE_ENTITY
        );
    }
    for (i, app) in [&a, &b].into_iter().enumerate() {
        let forged = format!("198.51.100.{i}");
        assert_eq!(
            login_from(app, Some(&forged)).await.status(),
            StatusCode::TOO_MANY_REQUESTS
        );
    }
    assert_eq!(
        keys(&mut redis, &prefix).await,
        vec![format!("{prefix}ratelimit:login:127.0.0.1")]
    );

    // Behind a trusted proxy the header names the client, but a key is only ever a client
    // network: garbage ends the walk at the proxy, and a /64 is one client.
    let prefix = unique_prefix();
    let c = spawn_app_with(&[
        ("REDIS_URL", MACHINE_REDIS),
        ("REDIS_KEY_PREFIX", &prefix),
        ("RATE_LIMIT_LOGIN_PER_MINUTE", "1000"),
        ("TRUSTED_PROXIES", "127.0.0.1"),
    ])
    .await;
    let long = "x".repeat(4000);
    let forged = [
        "unknown".to_string(),
        long.clone(),
        format!("{long}:6379"),
        "*".to_string(),
        "auth:ratelimit:login:10.0.0.1".to_string(),
        "::ffff:zz".to_string(),
    ];
    for value in &forged {
        login_from(&c, Some(value)).await;
    }
    for i in 0..50u16 {
        login_from(&c, Some(&format!("2001:db8:5:6:{i:x}::{i:x}"))).await;
    }
    let found = keys(&mut redis, &prefix).await;
    let login = format!("{prefix}ratelimit:login:");
    for key in &found {
        let network = key
            .strip_prefix(&login)
            .unwrap_or_else(|| panic!("a key outside the login group: {key}"));
        assert!(
            network.parse::<IpAddr>().is_ok(),
            "a key is not a network: {key}"
        );
    }
    // The peer (for every line that is no address) and one /64 for the fifty addresses in it.
    assert_eq!(
        found,
        vec![
            format!("{login}127.0.0.1"),
            format!("{login}2001:db8:5:6::"),
        ]
    );
}

/// A `redis-server` of the test's own, on a Unix socket in a directory of its own (no port to
/// race for, and the same address when it is started again), with no persistence: started
/// again, it has forgotten every budget.
struct OwnRedis {
    dir: PathBuf,
    process: Option<OwnedChild>,
}

impl OwnRedis {
    /// `None` (said once) when there is no `redis-server`.
    async fn start() -> Option<Self> {
        let found = std::process::Command::new("redis-server")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            skip("redis-server is not on PATH");
            return None;
        }
        let dir = std::env::temp_dir().join(format!(
            "auth-server-redis-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut redis = Self { dir, process: None };
        redis.run().await;
        Some(redis)
    }

    fn url(&self) -> String {
        format!("redis+unix://{}", self.dir.join("redis.sock").display())
    }

    /// Starts the server and waits until it answers.
    async fn run(&mut self) {
        let mut command = std::process::Command::new("redis-server");
        command
            .current_dir(&self.dir)
            .args(["--port", "0", "--unixsocket"])
            .arg(self.dir.join("redis.sock"))
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        self.process = Some(OwnedChild::spawn(command));
        let url = self.url();
        eventually(
            "the test's redis-server answering",
            Duration::from_secs(10),
            || async { connect(&url).await.is_some() },
            |up| *up,
        )
        .await;
    }

    fn kill(&mut self) {
        self.process.take().expect("running").kill_and_reap();
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.process.take();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Sends limited requests to `app` until its limiter is back on Redis (Redis is tried once a
/// second while an instance is on its own limits); every one of them is answered, none 5xx.
async fn until_back_on_redis(app: &TestApp) -> Vec<Result<(), u64>> {
    let mut answers = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while app.state.limiter.backend() != Backend::Redis {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the instance did not go back to Redis within 20 s: {:?}",
            app.state.limiter.stats()
        );
        answers.push(attempt(app).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    answers
}

#[tokio::test]
async fn redis_going_away_leaves_each_instance_its_own_limits_until_it_is_back() {
    let Some(mut redis) = OwnRedis::start().await else {
        return;
    };
    let logs = Logs::capture();
    let prefix = unique_prefix();
    let (a, b) = two_instances(&redis.url(), &prefix, "3").await;

    // Shared: 3 in all.
    for app in [&a, &b, &a] {
        assert_eq!(attempt(app).await, Ok(()));
    }
    assert!(attempt(&b).await.is_err());
    assert!(attempt(&a).await.is_err());

    // Redis dies. Every request is still answered, and each instance now counts on its own:
    // its own 3 (its buckets were never touched while Redis decided), then 429.
    redis.kill();
    for app in [&a, &b] {
        for _ in 0..3 {
            assert_eq!(attempt(app).await, Ok(()));
        }
        for _ in 0..10 {
            assert!(attempt(app).await.is_err());
        }
        assert_eq!(app.state.limiter.backend(), Backend::Fallback);
    }
    // Said once per instance, not once per request; counted.
    assert_eq!(logs.count(&[TO_LOCAL]), 2);
    for app in [&a, &b] {
        let stats = app.state.limiter.stats();
        assert_eq!(stats.fallbacks, 1, "{stats:?}");
        assert!(stats.errors >= 1, "{stats:?}");
        let metrics = app.state.metrics.scrape(&app.state).await;
        for line in [
            "auth_rate_limit_backend{backend=\"fallback\"} 1",
            "auth_rate_limit_backend{backend=\"redis\"} 0",
            "auth_rate_limit_fallbacks_total 1",
        ] {
            assert!(metrics.contains(line), "{line} not in {metrics}");
        }
    }
    // /health says why the limits are not shared (the database is fine).
    let health = a.client.get(a.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let health: serde_json::Value = health.json().await.unwrap();
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(health["database"], "ok");
    assert!(
        health["reasons"]
            .as_array()
            .unwrap()
            .contains(&json!("rate_limits_local")),
        "{health}"
    );

    // Back, empty (no persistence). The first request of each instance that tries Redis again
    // is decided by it (a fresh budget: it passes); before that, the exhausted local buckets
    // refuse.
    redis.run().await;
    for app in [&a, &b] {
        let mut answers = until_back_on_redis(app).await;
        assert_eq!(answers.pop(), Some(Ok(())));
        assert!(answers.iter().all(Result::is_err), "{answers:?}");
    }
    // One shared budget again: those two probes took 2 of the 3, so one more passes, on either,
    // and then both refuse.
    assert_eq!(attempt(&b).await, Ok(()));
    assert!(attempt(&a).await.is_err());
    assert!(attempt(&b).await.is_err());
    assert_eq!(logs.count(&[BACK]), 2);
    assert_eq!(logs.count(&[TO_LOCAL]), 2);
    let metrics = a.state.metrics.scrape(&a.state).await;
    assert!(
        metrics.contains("auth_rate_limit_backend{backend=\"redis\"} 1"),
        "{metrics}"
    );
    let health = a.get_json("/health").await;
    assert_eq!(health["status"], "ok", "{health}");
}
