//! The network edge under attack: forged X-Forwarded-For lines, IPv6 prefixes, floods of client
//! addresses, half-open and idle connections, the connection cap; log colours; unique OpenAPI
//! operation ids.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

/// A request through the test's "proxy" (the peer 127.0.0.1): one `X-Forwarded-For` line per
/// entry of `forwarded_for`, in order.
fn via_proxy(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    forwarded_for: &[&str],
) -> reqwest::RequestBuilder {
    let mut request = app.client.request(method, app.url(path));
    for line in forwarded_for {
        // `header` appends: each call is a header line of its own.
        request = request.header("x-forwarded-for", *line);
    }
    request
}

async fn failed_login(app: &TestApp, forwarded_for: &[&str]) -> StatusCode {
    via_proxy(app, reqwest::Method::POST, "/login", forwarded_for)
        .json(&json!({"email": unique_email(), "password": PASSWORD}))
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn a_forged_first_forwarded_for_line_is_not_the_client() {
    let app = spawn_app_with(&[
        ("TRUSTED_PROXIES", "127.0.0.1/32"),
        ("RATE_LIMIT_LOGIN_PER_MINUTE", "3"),
    ])
    .await;
    let real = "203.0.113.7";
    let email = unique_email();
    app.register(&email, PASSWORD, "Behind a proxy").await;

    // The client sends its own X-Forwarded-For; the proxy adds a second line with the address it
    // saw. The session records the proxy's, not the client's.
    let response = via_proxy(
        &app,
        reqwest::Method::POST,
        "/login",
        &["198.51.100.66", real],
    )
    .json(&json!({"email": email, "password": PASSWORD}))
    .send()
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let tokens = Tokens::from(response.json::<Value>().await.unwrap());
    let sessions: Value = app.live_sessions(&tokens.access).await;
    assert_eq!(sessions[0]["ip"], real, "{sessions}");

    // A refresh through the proxy records the real address too, whatever the first line says.
    let response = via_proxy(
        &app,
        reqwest::Method::POST,
        "/refresh",
        &["192.0.2.1, 192.0.2.2", real],
    )
    .json(&json!({"refresh_token": tokens.refresh}))
    .send()
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let tokens = Tokens::from(response.json::<Value>().await.unwrap());
    let sessions: Value = app.live_sessions(&tokens.access).await;
    assert_eq!(sessions[0]["ip"], real, "{sessions}");

    // The limit counts the real client, however the forged line changes: the login above was
    // its first of 3.
    for i in 0..2 {
        let forged = format!("198.51.100.{i}");
        assert_eq!(
            failed_login(&app, &[&forged, real]).await,
            StatusCode::UNAUTHORIZED
        );
    }
    for i in 2..6 {
        let forged = format!("198.51.100.{i}");
        assert_eq!(
            failed_login(&app, &[&forged, real]).await,
            StatusCode::TOO_MANY_REQUESTS,
            "forged {forged}"
        );
    }
    // Another real client is not affected, even when its first line names the limited one.
    assert_eq!(
        failed_login(&app, &[real, "203.0.113.8"]).await,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn ipv6_clients_are_limited_by_the_configured_prefix() {
    let app = spawn_app_with(&[
        ("TRUSTED_PROXIES", "127.0.0.1/32"),
        ("RATE_LIMIT_LOGIN_PER_MINUTE", "1"),
        ("RATE_LIMIT_IPV6_PREFIX", "48"),
    ])
    .await;
    assert_eq!(
        failed_login(&app, &["2001:db8:1:2::1"]).await,
        StatusCode::UNAUTHORIZED
    );
    // Same /48, another /64: the same client.
    assert_eq!(
        failed_login(&app, &["2001:db8:1:ffff::9"]).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    // Another /48.
    assert_eq!(
        failed_login(&app, &["2001:db8:2::1"]).await,
        StatusCode::UNAUTHORIZED
    );

    // The default, /64: another /64 of the same /48 is another client.
    let app = spawn_app_with(&[
        ("TRUSTED_PROXIES", "127.0.0.1/32"),
        ("RATE_LIMIT_LOGIN_PER_MINUTE", "1"),
    ])
    .await;
    assert_eq!(
        failed_login(&app, &["2001:db8:1:2::1"]).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        failed_login(&app, &["2001:db8:1:2:ffff::9"]).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        failed_login(&app, &["2001:db8:1:3::1"]).await,
        StatusCode::UNAUTHORIZED
    );
}

/// POST /refresh with a token that is not one: cheap, and limited per client.
async fn refresh_from(app: &TestApp, client: &str) -> StatusCode {
    via_proxy(app, reqwest::Method::POST, "/refresh", &[client])
        .json(&json!({"refresh_token": "not-a-token"}))
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_client_addresses_neither_grows_the_table_nor_locks_anyone_out() {
    const CAP: usize = 200;
    let app = spawn_app_with(&[
        ("TRUSTED_PROXIES", "127.0.0.1/32"),
        ("RATE_LIMIT_REFRESH_PER_MINUTE", "2"),
        ("RATE_LIMIT_MAX_CLIENTS", "200"),
    ])
    .await;
    let active = "192.0.2.10";
    assert_eq!(refresh_from(&app, active).await, StatusCode::UNAUTHORIZED);
    assert_eq!(refresh_from(&app, active).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        refresh_from(&app, active).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    // Ten times the table's capacity in distinct addresses, IPv4 and IPv6, 50 at a time.
    let addresses: Vec<String> = (0..2000u32)
        .map(|i| {
            if i.is_multiple_of(2) {
                std::net::Ipv4Addr::from(0x0a00_0000 + i).to_string()
            } else {
                format!("2001:db8:{:x}:{:x}::1", i >> 16, i & 0xffff)
            }
        })
        .collect();
    for (n, batch) in addresses.chunks(50).enumerate() {
        let statuses = concurrently(
            batch
                .iter()
                .map(|ip| {
                    let request = via_proxy(&app, reqwest::Method::POST, "/refresh", &[ip])
                        .json(&json!({"refresh_token": "not-a-token"}))
                        .send();
                    async move { request.await.unwrap().status() }
                })
                .collect(),
        )
        .await;
        for status in statuses {
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "batch {n}: a new client was refused"
            );
        }
        assert!(
            app.state
                .limiter
                .clients(auth_server::ratelimit::Group::Refresh)
                <= CAP
        );
        // The active client keeps coming back, and stays limited.
        assert_eq!(
            refresh_from(&app, active).await,
            StatusCode::TOO_MANY_REQUESTS,
            "batch {n}"
        );
    }
    assert_eq!(
        app.state
            .limiter
            .clients(auth_server::ratelimit::Group::Refresh),
        CAP
    );
    // A client never seen before is served.
    assert_eq!(
        refresh_from(&app, "198.51.100.1").await,
        StatusCode::UNAUTHORIZED
    );
}

fn host_port(app: &TestApp) -> String {
    app.address.trim_start_matches("http://").to_string()
}

/// Waits until the server closes `stream` (end of stream or reset), up to `deadline`; returns
/// when that happened, `None` if it is still open.
async fn closed_by(stream: &mut TcpStream, deadline: tokio::time::Instant) -> Option<Instant> {
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(Instant::now()),
            Ok(Ok(_)) => continue,
        }
    }
}

/// Reads one whole response (head and Content-Length body) from `stream`; returns its head.
async fn read_response(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&received[..end]).to_string();
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            if received.len() >= end + 4 + length {
                return head;
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("a response within 5 s")
            .unwrap();
        assert!(n > 0, "the connection closed before the response");
        received.extend_from_slice(&buf[..n]);
    }
}

const HEALTH: &[u8] = b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n";

/// Whether a new connection to `address` gets a 200 to `GET /health` (false if the server
/// closes it first).
async fn health_answers(address: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect(address).await else {
        return false;
    };
    if stream.write_all(HEALTH).await.is_err() {
        return false;
    }
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => head.extend_from_slice(&buf[..n]),
            _ => return false,
        }
    }
    head.starts_with(b"HTTP/1.1 200")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_connections_neither_block_others_nor_stay_open() {
    // Each connection is two descriptors in this process (ours and the server's).
    let files = auth_server::serve::raise_open_file_limit().expect("an open-file limit");
    let n = 2000.min((files.saturating_sub(2000) / 2) as usize);
    assert!(
        n >= 500,
        "the open-file limit ({files}) is too low for this test"
    );
    // All from 127.0.0.1: one client, allowed them all here.
    let app = spawn_app_with(&[
        ("HEADER_READ_TIMEOUT_SECONDS", "1"),
        ("MAX_CONNECTIONS_PER_CLIENT", "1000000"),
    ])
    .await;
    let address = host_port(&app);

    let mut half_open = Vec::with_capacity(n);
    for i in 0..n {
        let mut stream = TcpStream::connect(&address).await.unwrap();
        // Most send part of a request head and stop; every tenth sends nothing at all.
        if !i.is_multiple_of(10) {
            stream
                .write_all(b"POST /login HTTP/1.1\r\nHost: localhost\r\nContent-Type: appl")
                .await
                .unwrap();
        }
        half_open.push(stream);
    }
    let opened = tokio::time::Instant::now();

    // The server still answers others, at once.
    let asked = Instant::now();
    let response = app
        .client
        .get(app.url("/health"))
        .timeout(Duration::from_secs(1))
        .send()
        .await
        .expect("/health answers within a second beside the half-open connections");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(asked.elapsed() < Duration::from_secs(1));

    // And closes every one of them after HEADER_READ_TIMEOUT_SECONDS.
    let deadline = opened + Duration::from_secs(4);
    let mut still_open = 0;
    for stream in &mut half_open {
        if closed_by(stream, deadline).await.is_none() {
            still_open += 1;
        }
    }
    assert_eq!(
        still_open,
        0,
        "{still_open} of {n} connections still open {:?} after the last was opened",
        deadline - opened
    );

    // Not before the timeout, though: a slow head has its whole second.
    let mut slow = TcpStream::connect(&address).await.unwrap();
    let start = tokio::time::Instant::now();
    slow.write_all(b"GET /health HTTP/1.1\r\n").await.unwrap();
    assert!(
        closed_by(&mut slow, start + Duration::from_millis(700))
            .await
            .is_none(),
        "closed before HEADER_READ_TIMEOUT_SECONDS"
    );
    // Finishing the head in time gets the answer.
    slow.write_all(b"Host: localhost\r\n\r\n").await.unwrap();
    let head = read_response(&mut slow).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}

#[tokio::test]
async fn an_oversized_request_head_is_refused_before_it_is_buffered() {
    let app = spawn_app().await;
    let mut stream = TcpStream::connect(host_port(&app)).await.unwrap();
    let padding = "p".repeat(40 * 1024);
    stream
        .write_all(
            format!("GET /health HTTP/1.1\r\nHost: localhost\r\nX-Padding: {padding}").as_bytes(),
        )
        .await
        .unwrap();
    let head = read_response(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 431"), "{head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_are_closed_after_the_keep_alive_timeout() {
    let app = spawn_app_with(&[
        ("KEEP_ALIVE_TIMEOUT_SECONDS", "2"),
        ("HEADER_READ_TIMEOUT_SECONDS", "4"),
    ])
    .await;
    let address = host_port(&app);

    let silent_since = Instant::now();
    let mut silent = TcpStream::connect(&address).await.unwrap();
    // A connection that keeps asking outlives the idle timeout: 4 requests over 2.1 s.
    let mut busy = TcpStream::connect(&address).await.unwrap();
    for i in 0..4 {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(700)).await;
        }
        busy.write_all(HEALTH).await.unwrap();
        let head = read_response(&mut busy).await;
        assert!(head.starts_with("HTTP/1.1 200"), "request {i}: {head}");
    }
    // Then, idle, it is closed after KEEP_ALIVE_TIMEOUT_SECONDS.
    let idle_since = Instant::now();
    let closed = closed_by(
        &mut busy,
        tokio::time::Instant::now() + Duration::from_secs(5),
    )
    .await
    .expect("an idle keep-alive connection is closed");
    let idle = closed - idle_since;
    assert!(
        idle >= Duration::from_millis(1500) && idle < Duration::from_millis(3500),
        "closed after {idle:?} idle"
    );

    // A new connection that never sends a byte has the header timeout (4 s) instead: it was
    // opened before the requests above, and outlived the idle timeout.
    let closed = closed_by(
        &mut silent,
        tokio::time::Instant::now() + Duration::from_secs(5),
    )
    .await
    .expect("a silent connection is closed after HEADER_READ_TIMEOUT_SECONDS");
    let after = closed - silent_since;
    assert!(
        after >= Duration::from_millis(3500) && after < Duration::from_millis(5500),
        "closed after {after:?}"
    );
}

/// A client that opens a new connection for every request.
fn fresh_connections() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_cap_is_logged_once_and_the_server_recovers() {
    const CAP: usize = 20;
    let server = ChildServer::on_test_database(&[
        ("MAX_CONNECTIONS", "20"),
        ("HEADER_READ_TIMEOUT_SECONDS", "30"),
        ("KEEP_ALIVE_TIMEOUT_SECONDS", "60"),
    ])
    .await;
    let address = server.address;
    let client = fresh_connections();
    let reached = |output: &str| output.matches("MAX_CONNECTIONS reached").count();

    // CAP silent connections take every slot: the server says so once it has accepted them all.
    let mut silent = Vec::new();
    for _ in 0..CAP {
        silent.push(TcpStream::connect(address).await.unwrap());
    }
    server.wait_for_line("MAX_CONNECTIONS reached").await;
    // Over the cap, connections wait (here, longer than the client does).
    for _ in 0..3 {
        let waited = client
            .get(server.url("/health"))
            .timeout(Duration::from_millis(500))
            .send()
            .await;
        assert!(waited.is_err(), "served over the cap: {waited:?}");
    }
    let mut waiting = Vec::new();
    for _ in 0..5 {
        waiting.push(TcpStream::connect(address).await.unwrap());
    }
    // Still the one warning, after the 1.5 s the three clients waited at the cap (the server asks
    // idle connections to close every 250 ms meanwhile).
    assert_eq!(reached(&server.output()), 1, "{}", server.output());

    // Connections close: the waiting ones are served, and new ones at once.
    drop(silent);
    drop(waiting);
    let response = client
        .get(server.url("/health"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .expect("served once connections closed");
    assert_eq!(response.status(), StatusCode::OK);
    server
        .wait_for_line("open connections are back under MAX_CONNECTIONS")
        .await;

    // Slots held by idle keep-alive connections are given to clients with a request.
    let mut idle = Vec::new();
    for _ in 0..CAP {
        let mut stream = TcpStream::connect(address).await.unwrap();
        stream.write_all(HEALTH).await.unwrap();
        read_response(&mut stream).await;
        idle.push(stream);
    }
    let asked = Instant::now();
    let response = client
        .get(server.url("/health"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .expect("served by closing idle connections");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "{:?}",
        asked.elapsed()
    );
    let soon = tokio::time::Instant::now() + Duration::from_millis(500);
    let mut closed = 0;
    for stream in &mut idle {
        if closed_by(stream, soon).await.is_some() {
            closed += 1;
        }
    }
    assert!(closed > 0, "no idle connection was closed");
    // A second burst, a second warning.
    server.wait_for_lines("MAX_CONNECTIONS reached", 2).await;
}

#[tokio::test]
async fn text_logs_carry_no_colour_codes_when_not_on_a_terminal() {
    for extra in [&[][..], &[("NO_COLOR", "1")][..]] {
        let mut env = vec![("LOG_FORMAT", "text"), ("ACCESS_LOG", "true")];
        env.extend_from_slice(extra);
        let server = ChildServer::on_test_database(&env).await;
        let response = reqwest::get(server.url("/health")).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        // The request's line is written once the response has gone.
        server.wait_for_line("/health").await;
        let output = server.output();
        assert!(output.contains("listening"), "{output}");
        assert!(!output.contains('\x1b'), "{extra:?}: {output:?}");
    }
}

/// Runs the server with stdout and stderr on a pseudo-terminal until it serves; returns
/// everything it wrote there.
async fn output_on_a_terminal(env: &[(&str, &str)]) -> String {
    let server = ChildServer::on_a_terminal(env).await;
    server.wait_for_line("serving HTTP/1.1").await;
    server.output()
}

#[tokio::test]
async fn on_a_terminal_text_logs_are_coloured_unless_no_color_is_set() {
    let coloured = output_on_a_terminal(&[("LOG_FORMAT", "text")]).await;
    assert!(coloured.contains('\x1b'), "{coloured:?}");
    let plain = output_on_a_terminal(&[("LOG_FORMAT", "text"), ("NO_COLOR", "1")]).await;
    assert!(!plain.contains('\x1b'), "{plain:?}");
}

#[tokio::test]
async fn every_openapi_operation_has_a_unique_operation_id() {
    let app = spawn_app().await;
    let doc: Value = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut seen = HashSet::new();
    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in [
            "get", "put", "post", "delete", "options", "head", "patch", "trace",
        ] {
            let Some(op) = item.get(method) else {
                continue;
            };
            operations += 1;
            let id = op["operationId"].as_str().unwrap_or_default();
            assert!(!id.is_empty(), "{method} {path} has no operationId");
            assert!(
                seen.insert(id.to_string()),
                "{method} {path}: operationId `{id}` is used twice"
            );
        }
    }
    assert!(operations > 20, "{operations}");
    // PUT and PATCH /me are two operations now.
    assert_eq!(doc["paths"]["/me"]["put"]["operationId"], "update_me");
    assert_eq!(doc["paths"]["/me"]["patch"]["operationId"], "patch_me");
}

/// A proxy that appends its entry to the client's own line (nginx's
/// `$proxy_add_x_forwarded_for`) keeps whatever bytes the client sent: bytes that are not text
/// spoil only the client's entry, and the client is still the address the proxy saw.
#[tokio::test]
async fn bytes_that_are_not_text_in_a_merged_line_do_not_hide_the_client() {
    let app = spawn_app_with(&[("TRUSTED_PROXIES", "127.0.0.1/32")]).await;
    let email = unique_email();
    app.register(&email, PASSWORD, "Merged line").await;
    let line = reqwest::header::HeaderValue::from_bytes(b"\xff\xfe, 203.0.113.9").unwrap();
    let response = app
        .client
        .post(app.url("/login"))
        .header("x-forwarded-for", line)
        .json(&json!({"email": email, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let tokens = Tokens::from(response.json::<Value>().await.unwrap());
    let sessions: Value = app.live_sessions(&tokens.access).await;
    assert_eq!(sessions[0]["ip"], "203.0.113.9", "{sessions}");
}

/// A connection with a receive buffer of a few KiB, so that the server's writes to it block.
async fn small_window(address: &str) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(address.parse().unwrap()).await.unwrap()
}

const BUNDLE: &[u8] = b"GET /docs/swagger-ui-bundle.js HTTP/1.1\r\nHost: localhost\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_must_take_its_response_within_the_keep_alive_timeout() {
    let app = spawn_app_with(&[
        ("KEEP_ALIVE_TIMEOUT_SECONDS", "2"),
        ("HEADER_READ_TIMEOUT_SECONDS", "1"),
    ])
    .await;
    let mut slow = small_window(&host_port(&app)).await;
    slow.write_all(&BUNDLE.repeat(3)).await.unwrap();
    // 2 KiB every 100 ms: the server writes all the time, and the ~4 MB would take minutes.
    let start = Instant::now();
    let mut buf = [0u8; 2048];
    let closed = loop {
        assert!(
            start.elapsed() < Duration::from_secs(6),
            "a slow reader still connected after {:?}",
            start.elapsed()
        );
        match tokio::time::timeout(Duration::from_secs(1), slow.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break start.elapsed(),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    assert!(
        closed >= Duration::from_millis(1500),
        "closed after {closed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_per_client_cap_are_closed_unless_from_a_trusted_proxy() {
    for trusted in [false, true] {
        let mut env = vec![
            ("MAX_CONNECTIONS_PER_CLIENT", "5"),
            ("HEADER_READ_TIMEOUT_SECONDS", "30"),
        ];
        if trusted {
            env.push(("TRUSTED_PROXIES", "127.0.0.1"));
        }
        let app = spawn_app_with(&env).await;
        let address = host_port(&app);
        let mut open = Vec::new();
        for _ in 0..5 {
            open.push(TcpStream::connect(&address).await.unwrap());
        }
        let mut sixth = TcpStream::connect(&address).await.unwrap();
        let soon = tokio::time::Instant::now() + Duration::from_millis(500);
        assert_eq!(
            closed_by(&mut sixth, soon).await.is_some(),
            !trusted,
            "trusted: {trusted}"
        );
        for stream in &mut open {
            let soon = tokio::time::Instant::now() + Duration::from_millis(50);
            assert!(
                closed_by(stream, soon).await.is_none(),
                "trusted: {trusted}"
            );
        }
        // A place given back is taken again, once the server has seen it closed (a connection
        // that comes before that is closed at once, and the next one tried).
        if !trusted {
            drop(open.pop());
            let deadline = Instant::now() + Duration::from_secs(5);
            while !health_answers(&address).await {
                assert!(Instant::now() < deadline, "the place was not given back");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_what_is_still_open_after_the_grace_period() {
    let mut server = ChildServer::on_test_database(&[
        ("SHUTDOWN_GRACE_SECONDS", "1"),
        ("KEEP_ALIVE_TIMEOUT_SECONDS", "60"),
    ])
    .await;
    // A reader that takes nothing: its response is never written out. Once its first bytes have
    // come, the response is being written, and about 4 MB of it cannot fit the buffers.
    let mut slow = small_window(&server.address.to_string()).await;
    slow.write_all(&BUNDLE.repeat(3)).await.unwrap();
    slow.read_exact(&mut [0u8; 1024]).await.unwrap();
    let signalled = Instant::now();
    let status = server
        .stop_with(libc::SIGTERM)
        .await
        .expect("the server exits with a slow client connected");
    assert!(status.success(), "{}", server.output());
    assert!(
        signalled.elapsed() < Duration::from_secs(4),
        "{:?}",
        signalled.elapsed()
    );
    assert!(server.output().contains("SHUTDOWN_GRACE_SECONDS is over"));
    drop(slow);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelined_head_that_never_completes_has_the_header_timeout() {
    let app = spawn_app_with(&[
        ("HEADER_READ_TIMEOUT_SECONDS", "1"),
        ("KEEP_ALIVE_TIMEOUT_SECONDS", "5"),
    ])
    .await;
    let mut stream = TcpStream::connect(host_port(&app)).await.unwrap();
    // One write: the second head is read with the first, and is never finished.
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\nGET /health HTTP/1.1\r\nHo")
        .await
        .unwrap();
    let head = read_response(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let answered = Instant::now();
    let closed = closed_by(
        &mut stream,
        tokio::time::Instant::now() + Duration::from_secs(4),
    )
    .await
    .expect("closed after HEADER_READ_TIMEOUT_SECONDS, not KEEP_ALIVE_TIMEOUT_SECONDS");
    assert!(closed - answered < Duration::from_millis(2500));
}
