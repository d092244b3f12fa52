//! Several instances on one database, and a database that goes away and comes back.

use std::collections::HashSet;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::helpers::*;

#[tokio::test]
async fn instances_share_sessions_and_revocations() {
    // "At once" across instances holds with the session cache off; with it, within its bound
    // (tests/api/session_cache.rs).
    let a = spawn_app_with(&[("SESSION_CACHE_MS", "0")]).await;
    let b = a.another_instance().await;
    assert_ne!(a.address, b.address);
    let email = unique_email();
    assert_eq!(
        a.register(&email, PASSWORD, "Shared").await.status(),
        StatusCode::CREATED
    );
    // An account made on one is there on the other; so are its tokens.
    let tokens = b.login_ok(&email).await;
    assert_eq!(a.me(&tokens.access).await.status(), StatusCode::OK);
    assert_eq!(b.me(&tokens.access).await.status(), StatusCode::OK);
    let refreshed = Tokens::from(
        a.refresh(&tokens.refresh)
            .await
            .json::<Value>()
            .await
            .unwrap(),
    );
    assert_eq!(b.me(&refreshed.access).await.status(), StatusCode::OK);
    // Logout on one is seen at once by the other.
    assert_eq!(
        b.logout(&refreshed.access, None).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_problem(a.me(&refreshed.access).await, 401, "UNAUTHORIZED").await;
    assert_problem(a.refresh(&refreshed.refresh).await, 401, "INVALID_TOKEN").await;
}

#[tokio::test]
async fn concurrent_refreshes_across_instances_never_fork_a_session() {
    let a = spawn_app().await;
    let b = a.another_instance().await;
    let (_, first) = a.signed_up(&unique_email()).await;
    let requests = (0..20)
        .map(|i| {
            let client = a.client.clone();
            let url = if i % 2 == 0 {
                a.url("/refresh")
            } else {
                b.url("/refresh")
            };
            let token = first.refresh.clone();
            async move {
                let response = client
                    .post(url)
                    .json(&json!({"refresh_token": token}))
                    .send()
                    .await
                    .unwrap();
                (response.status(), response.json::<Value>().await.unwrap())
            }
        })
        .collect();
    let mut refresh_tokens = HashSet::new();
    for (status, body) in concurrently(requests).await {
        assert_eq!(status, StatusCode::OK, "{body}");
        refresh_tokens.insert(body["refresh_token"].as_str().unwrap().to_string());
    }
    assert_eq!(
        refresh_tokens.len(),
        1,
        "the session forked: {refresh_tokens:?}"
    );
    let live = refresh_tokens.into_iter().next().unwrap();
    assert_eq!(b.refresh(&live).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn concurrent_registrations_across_instances_make_one_account() {
    let a = spawn_app().await;
    let b = a.another_instance().await;
    let email = unique_email();
    let requests = (0..50)
        .map(|i| {
            let client = a.client.clone();
            let url = if i % 2 == 0 {
                a.url("/register")
            } else {
                b.url("/register")
            };
            let body = json!({"email": email, "password": PASSWORD, "name": "Racer"});
            async move { client.post(url).json(&body).send().await.unwrap().status() }
        })
        .collect();
    let statuses = concurrently(requests).await;
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::CREATED)
            .count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::CREATED || *s == StatusCode::CONFLICT),
        "{statuses:?}"
    );
}

#[test]
fn an_unreachable_database_at_start_is_a_one_line_error() {
    let started = std::time::Instant::now();
    let mut command = server_command();
    command
        .env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/nowhere")
        .env("DATABASE_CONNECT_TIMEOUT_SECONDS", "1")
        .env("PORT", "0");
    let output = run_to_end(command, std::time::Duration::from_secs(30));
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("cannot connect to the postgres database"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"));
    assert!(started.elapsed() < Duration::from_secs(20));
}

/// A TCP proxy to the database that can be cut (every connection closed, new ones refused) and
/// restored on the same port: the database going away, as the server sees it.
struct Proxy {
    port: u16,
    /// What the test asks for: open or cut.
    open: watch::Sender<bool>,
    /// What the proxy has done: true once it listens, false once its listener is closed and every
    /// connection through it has been closed.
    done: watch::Receiver<bool>,
}

impl Proxy {
    async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (open, mut state) = watch::channel(true);
        let (acknowledge, done) = watch::channel(false);
        tokio::spawn(async move {
            let mut listener = Some(listener);
            loop {
                if *state.borrow_and_update() {
                    let l = match listener.take() {
                        Some(l) => l,
                        None => TcpListener::bind(("127.0.0.1", port)).await.unwrap(),
                    };
                    acknowledge.send_replace(true);
                    let mut connections = tokio::task::JoinSet::new();
                    loop {
                        tokio::select! {
                            accepted = l.accept() => {
                                let Ok((client, _)) = accepted else { continue };
                                let upstream = upstream.clone();
                                let mut cut = state.clone();
                                connections.spawn(async move {
                                    let Ok(server) = TcpStream::connect(&upstream).await else { return };
                                    let (mut client, mut server) = (client, server);
                                    tokio::select! {
                                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                                        _ = cut.wait_for(|open| !*open) => {}
                                    }
                                });
                            }
                            Some(_) = connections.join_next(), if !connections.is_empty() => {}
                            _ = state.changed() => {
                                if !*state.borrow_and_update() { break; }
                            }
                        }
                    }
                    // Dropping the listener refuses new connections; each connection closes both
                    // of its sockets as its task ends.
                    drop(l);
                    while connections.join_next().await.is_some() {}
                    acknowledge.send_replace(false);
                }
                if state.changed().await.is_err() {
                    return;
                }
            }
        });
        let proxy = Self { port, open, done };
        proxy.settled(true).await;
        proxy
    }

    /// Waits until the proxy has done what was last asked.
    async fn settled(&self, open: bool) {
        let mut done = self.done.clone();
        tokio::time::timeout(Duration::from_secs(10), done.wait_for(|o| *o == open))
            .await
            .expect("the proxy follows within 10 s")
            .expect("the proxy runs");
    }

    /// Cuts the database off: returns once no connection to it is open and none can be made.
    async fn cut(&self) {
        self.open.send_replace(false);
        self.settled(false).await;
    }

    /// Lets connections through again: returns once the proxy accepts them.
    async fn restore(&self) {
        self.open.send_replace(true);
        self.settled(true).await;
    }
}

#[tokio::test]
#[ignore = "needs PostgreSQL: run with TEST_DATABASE_URL=postgres://... and --include-ignored"]
async fn losing_the_database_gives_503_and_the_server_recovers() {
    assert!(on_postgres(), "set TEST_DATABASE_URL to run this test");
    // The server reaches its database only through the proxy.
    let server = std::env::var("TEST_DATABASE_URL").unwrap();
    let host = server.split_once("://").unwrap().1;
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    let host = host.split(['/', '?']).next().unwrap().to_string();
    let proxy = Proxy::start(host).await;
    let proxy_port = proxy.port;
    let app = spawn_app_on(&[], move |url| {
        let (scheme, rest) = url.split_once("://").unwrap();
        let (authority, path) = rest.split_once('/').unwrap();
        let user = authority.rsplit_once('@').map_or("postgres", |(u, _)| u);
        format!("{scheme}://{user}@127.0.0.1:{proxy_port}/{path}")
    })
    .await;

    let email = unique_email();
    let (_, tokens) = app.signed_up(&email).await;
    assert_eq!(app.me(&tokens.access).await.status(), StatusCode::OK);

    proxy.cut().await;
    let health = app.client.get(app.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        health.json::<Value>().await.unwrap()["database"],
        "unavailable"
    );
    assert_problem(app.me(&tokens.access).await, 503, "SERVICE_UNAVAILABLE").await;
    assert_problem(
        app.login(&email, PASSWORD).await,
        503,
        "SERVICE_UNAVAILABLE",
    )
    .await;
    assert_problem(
        app.register(&unique_email(), PASSWORD, "During").await,
        503,
        "SERVICE_UNAVAILABLE",
    )
    .await;

    proxy.restore().await;
    // The pool reconnects by itself: each connection it held across the outage fails once and
    // is replaced, so /health is back after at most that many failures; nothing was lost.
    let pool_size: usize = app.var("DATABASE_MAX_CONNECTIONS").parse().unwrap();
    let mut failures = 0;
    loop {
        let health = app.client.get(app.url("/health")).send().await.unwrap();
        if health.status() == StatusCode::OK {
            break;
        }
        failures += 1;
        assert!(failures <= pool_size, "the server did not recover");
    }
    assert_eq!(app.me(&tokens.access).await.status(), StatusCode::OK);
    assert_eq!(app.login(&email, PASSWORD).await.status(), StatusCode::OK);
    assert_eq!(
        app.register(&unique_email(), PASSWORD, "After")
            .await
            .status(),
        StatusCode::CREATED
    );
}
