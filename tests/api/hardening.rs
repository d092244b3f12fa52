//! Brute force, flooding, password policy, old hashes, imports, headers, and what reaches the log.

use std::time::{Duration, Instant};

use argon2::password_hash::phc::PasswordHash;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;
use crate::smtp::SmtpSink;

async fn stored_hash(app: &TestApp, email: &str) -> String {
    app.sql
        .text("SELECT password_hash FROM users WHERE email = $1", email)
        .await
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
async fn repeated_failures_lock_the_address_and_the_right_password_gets_no_tokens() {
    let app = spawn_app().await;
    let email = unique_email();
    app.register(&email, PASSWORD, "Target").await;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(
            app.login(&email, "wrong password guess")
                .await
                .status()
                .as_u16(),
        );
    }
    assert_eq!(
        &statuses[..5],
        &[401; 5],
        "five free attempts: {statuses:?}"
    );
    let locked = app.login(&email, PASSWORD).await;
    assert_eq!(locked.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = locked.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    let body = assert_problem(locked, 429, "TOO_MANY_REQUESTS").await;
    assert!(body.get("access_token").is_none());
    // Another instance sees the same lock: the count is in the database.
    let other = app.another_instance().await;
    assert_problem(
        other.login(&email, PASSWORD).await,
        429,
        "TOO_MANY_REQUESTS",
    )
    .await;

    // Once the lock has passed (`Retry-After` seconds on the server's clock), the right password
    // works and the count starts again.
    app.clock.advance(Duration::from_secs(retry_after));
    assert_eq!(app.login(&email, PASSWORD).await.status(), StatusCode::OK);
    assert_problem(
        app.login(&email, "wrong password guess").await,
        401,
        "INVALID_CREDENTIALS",
    )
    .await;
    assert_eq!(app.login(&email, PASSWORD).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_lockout_says_nothing_about_which_accounts_exist() {
    let app = spawn_app().await;
    let nobody = unique_email();
    for _ in 0..6 {
        app.login(&nobody, "wrong password guess").await;
    }
    assert_problem(app.login(&nobody, PASSWORD).await, 429, "TOO_MANY_REQUESTS").await;
}

#[tokio::test]
async fn a_password_reset_works_for_a_locked_account_and_lifts_the_lock() {
    let sink = SmtpSink::start().await;
    let url = sink.url();
    // A lock of an hour, far longer than the test: only the reset can lift it in time.
    let app = spawn_app_with(&[
        ("SMTP_URL", url.as_str()),
        ("MAIL_FROM", "no-reply@example.com"),
        ("LOGIN_FREE_ATTEMPTS", "5"),
        ("LOGIN_LOCKOUT_FIRST_SECONDS", "3600"),
        ("LOGIN_LOCKOUT_MAX_SECONDS", "3600"),
    ])
    .await;
    let email = unique_email();
    app.register(&email, PASSWORD, "Locked").await;
    // The fifth failure locks the address (README: LOGIN_FREE_ATTEMPTS checks, the last of which
    // sets the first lock).
    for _ in 0..5 {
        assert_problem(
            app.login(&email, "wrong password guess").await,
            401,
            "INVALID_CREDENTIALS",
        )
        .await;
    }
    app.post_json("/password-reset/request", &json!({"email": email}))
        .await;
    let token = sink
        .wait_for(&email, "Reset", 1, Duration::from_secs(10))
        .await[0]
        .link_token("/reset-password")
        .unwrap();
    // Right before the reset, the lock is in force, for about the hour.
    let locked = app.login(&email, PASSWORD).await;
    let retry_after: u64 = locked.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((3000..=3600).contains(&retry_after), "{retry_after}");
    assert_problem(locked, 429, "TOO_MANY_REQUESTS").await;
    assert_eq!(
        app.confirm_reset(&token, "a fresh start at last")
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    // Right after it, the new password logs in: the lock is gone.
    assert_eq!(
        app.login(&email, "a fresh start at last").await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn per_address_limits_hold_and_forwarded_for_does_not_escape_them() {
    let app = spawn_app_with(&[
        ("RATE_LIMIT_LOGIN_PER_MINUTE", "3"),
        ("RATE_LIMIT_REGISTER_PER_MINUTE", "2"),
    ])
    .await;
    for i in 0..3 {
        let response = app
            .client
            .post(app.url("/login"))
            .header("x-forwarded-for", format!("198.51.100.{i}"))
            .json(&json!({"email": unique_email(), "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    // A new X-Forwarded-For from an untrusted peer is the same client.
    let response = app
        .client
        .post(app.url("/login"))
        .header("x-forwarded-for", "203.0.113.99")
        .json(&json!({"email": unique_email(), "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    assert_problem(response, 429, "TOO_MANY_REQUESTS").await;
    // Each group has its own allowance.
    assert_eq!(
        app.register(&unique_email(), PASSWORD, "One")
            .await
            .status(),
        StatusCode::CREATED
    );
    assert_eq!(
        app.register(&unique_email(), PASSWORD, "Two")
            .await
            .status(),
        StatusCode::CREATED
    );
    assert_problem(
        app.register(&unique_email(), PASSWORD, "Three").await,
        429,
        "TOO_MANY_REQUESTS",
    )
    .await;

    // Behind a trusted proxy, the forwarded address is the client.
    let proxied = spawn_app_with(&[
        ("RATE_LIMIT_LOGIN_PER_MINUTE", "1"),
        ("TRUSTED_PROXIES", "127.0.0.1"),
    ])
    .await;
    for i in 0..4 {
        let response = proxied
            .client
            .post(proxied.url("/login"))
            .header("x-forwarded-for", format!("198.51.100.{i}"))
            .json(&json!({"email": unique_email(), "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "client {i}");
    }
    let again = proxied
        .client
        .post(proxied.url("/login"))
        .header("x-forwarded-for", "198.51.100.0")
        .json(&json!({"email": unique_email(), "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_problem(again, 429, "TOO_MANY_REQUESTS").await;
}

#[tokio::test]
async fn a_login_flood_is_turned_away_while_health_answers_and_memory_stays_bounded() {
    // The real argon2 memory cost (19 MiB a hash) and one hashing thread a core (the default),
    // given explicitly so that the bounds below come from what the server was told; in a process
    // of its own so that its memory is its own.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (memory_kib, concurrency, queue_limit) = (19_456u64, cores, 32usize);
    // More logins than can be hashing or queued at once, whatever the core count: 4 x (queue +
    // threads), at least 500.
    let clients = (4 * (queue_limit + concurrency)).max(500);
    let server = ChildServer::on_test_database(&[
        ("ARGON2_MEMORY_KIB", &memory_kib.to_string()),
        ("HASH_CONCURRENCY", &concurrency.to_string()),
        ("HASH_QUEUE_LIMIT", &queue_limit.to_string()),
        ("RATE_LIMIT_LOGIN_PER_MINUTE", "0"),
        // All the clients at once, all from 127.0.0.1.
        ("MAX_CONNECTIONS_PER_CLIENT", &(clients + 100).to_string()),
    ])
    .await;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(clients + 100)
        .build()
        .unwrap();
    let baseline = server.peak_rss_kib();
    let flood: Vec<_> = (0..clients)
        .map(|i| {
            let client = client.clone();
            let url = server.url("/login");
            async move {
                let response = client.post(url).json(&json!({"email": format!("flood{i}@example.com"), "password": "not the password"})).send().await;
                response.map(|r| r.status().as_u16()).unwrap_or(0)
            }
        })
        .collect();
    let health = {
        let client = client.clone();
        let url = server.url("/health");
        tokio::spawn(async move {
            let mut slowest = Duration::ZERO;
            let until = Instant::now() + Duration::from_secs(3);
            while Instant::now() < until {
                let started = Instant::now();
                let status = client
                    .get(&url)
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await
                    .unwrap()
                    .status();
                assert_eq!(status, StatusCode::OK);
                slowest = slowest.max(started.elapsed());
                // A probe every 50 ms (pacing, not waiting for anything).
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            slowest
        })
    };
    let statuses = concurrently(flood).await;
    let slowest_health = health.await.unwrap();
    let turned_away = statuses.iter().filter(|s| **s == 503 || **s == 429).count();
    assert!(
        statuses.iter().all(|s| [401, 429, 503].contains(s)),
        "{statuses:?}"
    );
    assert!(turned_away > 0, "the queue was not bounded: {statuses:?}");
    assert!(
        slowest_health < Duration::from_secs(1),
        "/health took {slowest_health:?}"
    );
    let peak = server.peak_rss_kib();
    // The bound: 64 MiB for the server itself (runtime, pools, the clients' connections), plus
    // the argon2 buffer each hashing thread keeps: HASH_CONCURRENCY x ARGON2_MEMORY_KIB.
    let bound = 64 * 1024 + concurrency as u64 * memory_kib;
    eprintln!(
        "login flood: peak RSS {peak} KiB (at start {baseline} KiB), bound {bound} KiB ({concurrency} hashing threads), {turned_away} of {clients} turned away, slowest /health {slowest_health:?}"
    );
    assert!(
        peak < bound,
        "peak RSS {peak} KiB (baseline {baseline} KiB) is over {bound} KiB"
    );
}

#[tokio::test]
async fn guessable_passwords_are_refused_everywhere_with_a_reason() {
    let app = spawn_app().await;
    let email = "maria.gonzalez@example.com";
    for weak in ["password", "12345678", "qwertyuiop", email, "MariaGonzalez"] {
        let body = assert_problem(
            app.register(email, weak, "Maria Gonzalez").await,
            422,
            "VALIDATION_FAILED",
        )
        .await;
        assert_eq!(error_fields(&body), ["password"], "{weak}");
        let message = body["errors"][0]["message"].as_str().unwrap();
        assert!(
            message.contains("too easy to guess") && message.contains("passphrase"),
            "{message}"
        );
    }
    let (_, tokens) = app.signed_up(&unique_email()).await;
    let response = app
        .client
        .put(app.url("/me/password"))
        .bearer_auth(&tokens.access)
        .json(&json!({"current_password": PASSWORD, "new_password": "12345678"}))
        .send()
        .await
        .unwrap();
    let body = assert_problem(response, 422, "VALIDATION_FAILED").await;
    assert_eq!(error_fields(&body), ["new_password"]);
    // The minimum length can be raised.
    let strict = spawn_app_with(&[("PASSWORD_MIN_LENGTH", "20")]).await;
    let body = assert_problem(
        strict.register(&unique_email(), "ñ7ü€ß9Ωж-Zq", "N").await,
        422,
        "VALIDATION_FAILED",
    )
    .await;
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("at least 20")
    );
}

#[tokio::test]
async fn a_passlib_bcrypt_hash_logs_in_and_is_replaced_by_argon2id() {
    let app = spawn_app().await;
    let email = unique_email();
    app.register(&email, PASSWORD, "Legacy").await;
    let bcrypt_hash = bcrypt::hash(PASSWORD, 12).unwrap();
    assert!(bcrypt_hash.starts_with("$2b$12$"));
    set_hash(&app, &email, &bcrypt_hash).await;
    assert_problem(
        app.login(&email, "wrong password guess").await,
        401,
        "INVALID_CREDENTIALS",
    )
    .await;
    assert_eq!(app.login(&email, PASSWORD).await.status(), StatusCode::OK);
    let mut upgraded = String::new();
    for _ in 0..100 {
        upgraded = stored_hash(&app, &email).await;
        if upgraded.starts_with("$argon2id$") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let parsed = PasswordHash::new(&upgraded).unwrap();
    assert_eq!(parsed.algorithm.as_str(), "argon2id");
    assert_eq!(app.login(&email, PASSWORD).await.status(), StatusCode::OK);
    // $2a$ and $2y$ (other writers of bcrypt) verify too.
    for prefix in ["$2a$", "$2y$"] {
        set_hash(
            &app,
            &email,
            &bcrypt::hash(PASSWORD, 4)
                .unwrap()
                .replacen("$2b$", prefix, 1),
        )
        .await;
        assert_eq!(
            app.login(&email, PASSWORD).await.status(),
            StatusCode::OK,
            "{prefix}"
        );
    }
}

/// A SQLite file shaped like the original service's database (SQLAlchemy's `users` table).
pub(crate) fn original_database(path: &std::path::Path, rows: &[(&str, &str, &str)]) {
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let rows: Vec<(String, String, String)> = rows
        .iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect();
    std::thread::spawn(move || {
        rt.block_on(async move {
            let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
            sqlx::raw_sql(
                "CREATE TABLE users (
                    id INTEGER NOT NULL PRIMARY KEY,
                    email VARCHAR NOT NULL UNIQUE,
                    name VARCHAR NOT NULL,
                    hashed_password VARCHAR NOT NULL,
                    is_active BOOLEAN NOT NULL DEFAULT 1,
                    is_verified BOOLEAN NOT NULL DEFAULT 0,
                    created_at DATETIME DEFAULT (CURRENT_TIMESTAMP),
                    updated_at DATETIME
                );
                CREATE TABLE refresh_tokens (id INTEGER PRIMARY KEY, token VARCHAR, user_id INTEGER);",
            )
            .execute(&pool)
            .await
            .unwrap();
            for (email, name, hash) in rows {
                sqlx::query("INSERT INTO users (email, name, hashed_password, is_active, created_at) VALUES ($1, $2, $3, 1, '2025-03-14 15:09:26.535897')")
                    .bind(email)
                    .bind(name)
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
async fn the_importer_brings_over_the_original_services_users_once() {
    let app = spawn_app().await;
    let taken = unique_email();
    app.register(&taken, PASSWORD, "Already Here").await;
    let dir = std::env::temp_dir().join(format!(
        "auth-server-import-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let old = dir.join("sqlite.db");
    let alice = unique_email();
    let alice_hash = bcrypt::hash("alice's old passphrase", 12).unwrap();
    let bob_hash = bcrypt::hash("bob's old passphrase", 4).unwrap();
    original_database(
        &old,
        &[
            (&alice.to_uppercase(), "Alice", &alice_hash),
            (&taken, "Someone Else", &bob_hash),
            ("not-an-email", "Broken", &bob_hash),
            ("plain@example.com", "Plain", "stored-in-the-clear"),
        ],
    );
    let from = format!("sqlite://{}", old.display());
    let run = || {
        let mut command = server_command();
        command
            .args(["import-users", "--from", &from])
            .env("DATABASE_URL", app.var("DATABASE_URL"));
        run_to_end(command, Duration::from_secs(60))
    };
    let first = run();
    let report = String::from_utf8_lossy(&first.stdout).to_string();
    assert!(
        first.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(
        report.contains("imported 1 account(s); skipped 1 already present, 2 invalid"),
        "{report}"
    );
    assert!(report.contains(&format!("skipped {taken}")), "{report}");
    assert!(report.contains("skipped not-an-email"), "{report}");
    assert!(report.contains("skipped plain@example.com"), "{report}");

    let second = run();
    let report = String::from_utf8_lossy(&second.stdout).to_string();
    assert!(second.status.success());
    assert!(
        report.contains("imported 0 account(s); skipped 2 already present, 2 invalid"),
        "{report}"
    );

    // Alice logs in with her old password; her hash becomes argon2id; her data came along.
    let tokens = app.login_ok_with(&alice, "alice's old passphrase").await;
    let me: Value = app.me(&tokens.access).await.json().await.unwrap();
    assert_eq!(me["name"], "Alice");
    assert_eq!(me["email"], alice);
    assert_eq!(me["is_active"], true);
    assert!(
        me["created_at"]
            .as_str()
            .unwrap()
            .starts_with("2025-03-14T15:09:26")
    );
    // The existing account was left alone.
    assert_eq!(app.login(&taken, PASSWORD).await.status(), StatusCode::OK);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn security_headers_are_on_every_response() {
    let app = spawn_app_with(&[("HSTS", "true")]).await;
    let (_, tokens) = app.signed_up(&unique_email()).await;
    let big = "x".repeat(70 * 1024);
    let responses = vec![
        ("200", app.me(&tokens.access).await),
        ("401", app.me("nonsense").await),
        (
            "404",
            app.client.get(app.url("/nope")).send().await.unwrap(),
        ),
        (
            "405",
            app.client.delete(app.url("/login")).send().await.unwrap(),
        ),
        (
            "413",
            app.client
                .post(app.url("/login"))
                .header("content-type", "application/json")
                .body(big)
                .send()
                .await
                .unwrap(),
        ),
        (
            "431",
            app.client
                .get(app.url("/me"))
                .header("x-padding", "p".repeat(20 * 1024))
                .send()
                .await
                .unwrap(),
        ),
    ];
    for (expected, response) in responses {
        assert_eq!(response.status().as_str(), expected);
        let h = response.headers();
        assert_eq!(h["x-content-type-options"], "nosniff", "{expected}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{expected}");
        assert_eq!(h["x-frame-options"], "DENY", "{expected}");
        assert_eq!(
            h["strict-transport-security"], "max-age=31536000; includeSubDomains",
            "{expected}"
        );
        if expected != "200" {
            assert_eq!(h["content-type"], "application/problem+json", "{expected}");
        }
    }
    // Anything with tokens or user data is not to be cached.
    assert_eq!(
        app.login(&unique_email(), PASSWORD).await.headers()["cache-control"],
        "no-store"
    );
    assert_eq!(
        app.me(&tokens.access).await.headers()["cache-control"],
        "no-store"
    );
    // Without HSTS=true, no HSTS.
    let plain = spawn_app().await;
    assert!(
        !plain
            .client
            .get(plain.url("/health"))
            .send()
            .await
            .unwrap()
            .headers()
            .contains_key("strict-transport-security")
    );
}

/// A tiny HTTP server in the test process: answers every request with `body` (JSON) and counts
/// the connections made to it, so a test can tell whether anything fetched from it at all.
struct CountingServer {
    base: String,
    connections: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl CountingServer {
    async fn serving(body: String) -> Self {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let connections = std::sync::Arc::new(AtomicUsize::new(0));
        let counted = connections.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let body = body.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(n) if n > 0 => head.extend_from_slice(&buf[..n]),
                            _ => return,
                        }
                    }
                    let response = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(response.as_bytes()).await;
                });
            }
        });
        Self {
            base,
            connections,
            task,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for CountingServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A token may name where its key is (`jku`, a JWKS; `x5u`, a certificate): the server never
/// fetches either. Here the URLs are real: the attacker's JWKS, with the public half of the key
/// that signed the token, served by the test and counting every connection.
#[tokio::test]
async fn keys_named_in_token_headers_are_never_fetched_nor_used() {
    use jsonwebtoken::jwk::{Jwk, JwkSet};
    use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};

    use base64::Engine as _;
    use ed25519_dalek::pkcs8::DecodePrivateKey as _;

    // The attacker's Ed25519 key pair, and its public half as a JWK.
    let attacker_pem = auth_server::auth::keys::generate(Algorithm::EdDSA).unwrap();
    let attacker = EncodingKey::from_ed_pem(attacker_pem.as_bytes()).unwrap();
    let public = ed25519_dalek::SigningKey::from_pkcs8_pem(&attacker_pem)
        .unwrap()
        .verifying_key();
    let jwk: Jwk = serde_json::from_value(json!({
        "kty": "OKP",
        "crv": "Ed25519",
        "x": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(public.as_bytes()),
        "kid": "the-attackers-key",
        "alg": "EdDSA",
        "use": "sig",
    }))
    .unwrap();
    let jwks = JwkSet {
        keys: vec![jwk.clone()],
    };
    let published = CountingServer::serving(serde_json::to_string(&jwks).unwrap()).await;

    // The server's own EdDSA key, so that the attacker's token has the algorithm it expects;
    // and the suite's HS256.
    /// A directory removed when the test ends, however it ends.
    struct TempDir(std::path::PathBuf);
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let key_dir = TempDir(
        std::env::temp_dir().join(format!("auth-server-jku-{}", uuid::Uuid::new_v4().simple())),
    );
    std::fs::create_dir_all(&key_dir.0).unwrap();
    let own_key = key_dir.0.join("own.pem");
    std::fs::write(
        &own_key,
        auth_server::auth::keys::generate(Algorithm::EdDSA).unwrap(),
    )
    .unwrap();
    let own_key = own_key.to_str().unwrap().to_string();
    let eddsa = [
        ("ALGORITHM", "EdDSA"),
        ("PRIVATE_KEY_FILE", own_key.as_str()),
    ];
    for (extra, real_key) in [
        (
            &eddsa[..],
            EncodingKey::from_ed_pem(&std::fs::read(&own_key).unwrap()).unwrap(),
        ),
        (&[][..], EncodingKey::from_secret(SECRET.as_bytes())),
    ] {
        let app = spawn_app_with(extra).await;
        let (_, tokens) = app.signed_up(&unique_email()).await;
        let real_alg = if extra.is_empty() {
            Algorithm::HS256
        } else {
            Algorithm::EdDSA
        };
        let named = |alg: Algorithm, typ: &str, kid: &str| {
            let mut header = Header::new(alg);
            header.typ = Some(typ.into());
            header.kid = Some(kid.into());
            header.jku = Some(published.url("/.well-known/jwks.json"));
            header.x5u = Some(published.url("/cert.pem"));
            header
        };

        // The attacker's access token, signed with the key the header points at.
        let forged = jsonwebtoken::encode(
            &named(Algorithm::EdDSA, "at+jwt", "the-attackers-key"),
            &claims_of(&tokens.access),
            &attacker,
        )
        .unwrap();
        // (It is a good token for whoever follows `jku`: the JWKS served there verifies it.)
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp"]);
        jsonwebtoken::decode::<Value>(&forged, &DecodingKey::from_jwk(&jwk).unwrap(), &validation)
            .expect("the published JWKS verifies the forged token");
        assert_problem(app.me(&forged).await, 401, "UNAUTHORIZED").await;

        // The attacker's refresh token likewise.
        let forged_refresh = jsonwebtoken::encode(
            &named(Algorithm::EdDSA, "refresh+jwt", "the-attackers-key"),
            &claims_of(&tokens.refresh),
            &attacker,
        )
        .unwrap();
        assert_problem(app.refresh(&forged_refresh).await, 401, "INVALID_TOKEN").await;

        // The same header on a token signed with the real key changes nothing: the names are
        // ignored, and not even looked up.
        let honest = jsonwebtoken::encode(
            &named(real_alg, "at+jwt", "../../../../dev/null"),
            &claims_of(&tokens.access),
            &real_key,
        )
        .unwrap();
        assert_eq!(app.me(&honest).await.status(), StatusCode::OK, "{extra:?}");

        assert_eq!(
            published.connections(),
            0,
            "the server fetched a URL named in a token header ({extra:?})"
        );
    }
}

#[tokio::test]
async fn no_password_token_or_hash_reaches_the_log_at_any_level() {
    let sink = SmtpSink::start().await;
    let url = sink.url();
    let server = ChildServer::on_test_database(&[
        ("RUST_LOG", "trace"),
        ("ACCESS_LOG", "true"),
        ("SMTP_URL", url.as_str()),
        ("MAIL_FROM", "no-reply@example.com"),
        ("ARGON2_MEMORY_KIB", "256"),
        ("ARGON2_ITERATIONS", "1"),
        ("MAIL_RATE_LIMIT_SECONDS", "0"),
    ])
    .await;
    let client = reqwest::Client::new();
    let post = |path: &str, body: Value, token: Option<&str>| {
        let mut r = client.post(server.url(path)).json(&body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    let email = unique_email();
    let new_password = "a second secret passphrase";
    let mut secrets = vec![PASSWORD.to_string(), new_password.to_string()];
    post(
        "/register",
        json!({"email": email, "password": PASSWORD, "name": "Quiet"}),
        None,
    )
    .await
    .unwrap();
    let pair: Value = post(
        "/login",
        json!({"email": email, "password": PASSWORD}),
        None,
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    post(
        "/login",
        json!({"email": email, "password": "a wrong passphrase here"}),
        None,
    )
    .await
    .unwrap();
    secrets.push("a wrong passphrase here".into());
    let (access, refresh) = (
        pair["access_token"].as_str().unwrap().to_string(),
        pair["refresh_token"].as_str().unwrap().to_string(),
    );
    client
        .get(server.url("/me"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    let next: Value = post("/refresh", json!({"refresh_token": refresh}), None)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let verify = sink
        .wait_for(&email, "Confirm", 1, Duration::from_secs(10))
        .await[0]
        .link_token("/verify-email")
        .unwrap();
    post("/verify/confirm", json!({"token": verify}), None)
        .await
        .unwrap();
    post("/password-reset/request", json!({"email": email}), None)
        .await
        .unwrap();
    let reset = sink
        .wait_for(&email, "Reset", 1, Duration::from_secs(10))
        .await[0]
        .link_token("/reset-password")
        .unwrap();
    post(
        "/password-reset/confirm",
        json!({"token": reset, "new_password": new_password}),
        None,
    )
    .await
    .unwrap();
    let last: Value = post(
        "/login",
        json!({"email": email, "password": new_password}),
        None,
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    // The last request, marked so that its line in the log can be waited for.
    let last_request = format!("the-last-request-{}", uuid::Uuid::new_v4().simple());
    client
        .post(server.url("/logout"))
        .header("x-request-id", &last_request)
        .json(&json!({"refresh_token": last["refresh_token"]}))
        .send()
        .await
        .unwrap();
    for t in [&access, &refresh, &verify, &reset] {
        secrets.push(t.to_string());
    }
    for t in [
        &next["access_token"],
        &next["refresh_token"],
        &last["access_token"],
        &last["refresh_token"],
    ] {
        secrets.push(t.as_str().unwrap().to_string());
    }
    // The stored hash, read from the server's database.
    let hash = server
        .sql
        .text("SELECT password_hash FROM users WHERE email = $1", &email)
        .await;
    secrets.push(hash.clone());
    secrets.push(hash.rsplit('$').next().unwrap().to_string());
    // Its response is logged once it has gone: every request's lines are in by then.
    server
        .wait_for_line_where("the last request's response", |line| {
            line.contains("finished processing request") && line.contains(&last_request)
        })
        .await;

    let log = server.output();
    assert!(
        log.lines().count() > 50,
        "the log is too short to mean anything: {log}"
    );
    assert!(
        log.contains("TRACE") || log.contains("\"level\":\"TRACE\""),
        "trace level was not on"
    );
    for secret in &secrets {
        assert!(
            !log.contains(secret.as_str()),
            "the log contains a secret: {secret}"
        );
    }
}
