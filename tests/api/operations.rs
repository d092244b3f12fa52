//! Health, the OpenAPI document, Swagger UI, request ids, CORS, configuration errors.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

#[tokio::test]
async fn health_reports_the_database() {
    let app = spawn_app().await;
    let response = app.client.get(app.url("/health")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body, serde_json::json!({"status": "ok", "database": "ok"}));
}

#[tokio::test]
async fn health_says_unavailable_when_the_database_is_gone() {
    let app = spawn_app().await;
    app.state.db.close().await;
    let response = app.client.get(app.url("/health")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["database"], "unavailable");
    // The endpoints that need it answer 503 problems, not 500s.
    let response = app.login(&unique_email(), PASSWORD).await;
    assert!(response.headers().contains_key("retry-after"));
    assert_problem(response, 503, "SERVICE_UNAVAILABLE").await;
}

#[tokio::test]
async fn the_openapi_document_describes_every_endpoint() {
    let app = spawn_app().await;
    let doc = app.get_json("/openapi.json").await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths = &doc["paths"];
    for (path, methods) in [
        ("/register", &["post"][..]),
        ("/login", &["post"]),
        ("/refresh", &["post"]),
        ("/logout", &["post"]),
        ("/me", &["get", "put", "patch", "delete"]),
        ("/health", &["get"]),
    ] {
        for method in methods {
            let op = &paths[path][method];
            assert!(op.is_object(), "{method} {path} is missing");
            assert!(
                op["responses"]["500"].is_object(),
                "{method} {path} has no 500"
            );
        }
    }
    // Request bodies and error responses are described.
    assert!(paths["/register"]["post"]["requestBody"].is_object());
    assert!(paths["/register"]["post"]["responses"]["409"].is_object());
    assert!(paths["/register"]["post"]["responses"]["422"].is_object());
    assert!(paths["/me"]["get"]["responses"]["401"].is_object());
    let login_body = &paths["/login"]["post"]["requestBody"]["content"];
    assert!(login_body["application/json"].is_object());
    assert!(login_body["application/x-www-form-urlencoded"].is_object());
    // Both ways of authenticating, the OAuth2 one pointing at /login.
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    assert_eq!(schemes["oauth2"]["flows"]["password"]["tokenUrl"], "/login");
    for schema in [
        "Problem",
        "UserResponse",
        "TokenPairResponse",
        "RegisterRequest",
    ] {
        assert!(doc["components"]["schemas"][schema].is_object(), "{schema}");
    }
}

#[tokio::test]
async fn swagger_ui_is_served_from_the_binary() {
    let app = spawn_app().await;
    let response = app.client.get(app.url("/docs/")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let html = response.text().await.unwrap();
    assert!(html.contains("swagger-ui"), "{html}");
    // Its assets come from the binary, not a CDN.
    assert!(!html.contains("https://"), "{html}");
    let js = app
        .client
        .get(app.url("/docs/swagger-ui-bundle.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(js.status(), StatusCode::OK);
    let init = app
        .client
        .get(app.url("/docs/swagger-initializer.js"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(init.contains("/openapi.json"), "{init}");
    let bare = app.client.get(app.url("/docs")).send().await.unwrap();
    assert!(bare.status().is_success() || bare.status().is_redirection());
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_the_security_headers() {
    let app = spawn_app().await;
    for path in ["/health", "/nope", "/me"] {
        let response = app.client.get(app.url(path)).send().await.unwrap();
        let id = response.headers()["x-request-id"].to_str().unwrap();
        assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
        assert_eq!(response.headers()["x-content-type-options"], "nosniff");
        assert_eq!(response.headers()["referrer-policy"], "no-referrer");
        assert_eq!(response.headers()["x-frame-options"], "DENY");
    }
    // A caller's own request id is kept.
    let response = app
        .client
        .get(app.url("/health"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "abc-123");
}

#[tokio::test]
async fn cors_allows_exactly_the_configured_origins() {
    let app = spawn_app_with(&[(
        "CORS_ORIGINS",
        "https://app.example.com, https://admin.example.com",
    )])
    .await;
    let preflight = |origin: &'static str| {
        app.client
            .request(reqwest::Method::OPTIONS, app.url("/login"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .send()
    };
    let allowed = preflight("https://app.example.com").await.unwrap();
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert!(
        !allowed
            .headers()
            .contains_key("access-control-allow-credentials")
    );
    for origin in ["https://evil.example.com", "null"] {
        let refused = preflight(origin).await.unwrap();
        assert!(
            !refused
                .headers()
                .contains_key("access-control-allow-origin"),
            "{origin}"
        );
    }
    // Without CORS_ORIGINS, no cross-origin access at all.
    let app = spawn_app().await;
    let response = app
        .client
        .get(app.url("/health"))
        .header("origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert!(
        !response
            .headers()
            .contains_key("access-control-allow-origin")
    );
}

#[test]
fn a_bad_configuration_value_stops_the_server_with_one_line() {
    for (var, value) in [
        ("PORT", "eighty"),
        ("SECRET_KEY", "too-short"),
        ("DATABASE_URL", "mysql://x"),
        ("ARGON2_MEMORY_KIB", "1"),
    ] {
        let mut command = server_command();
        command.env(var, value).env(
            "DATABASE_URL",
            if var == "DATABASE_URL" {
                value
            } else {
                "sqlite::memory:"
            },
        );
        // A value taken for good would leave a server running: it is stopped after 30 s.
        let output = run_to_end(command, Duration::from_secs(30));
        assert!(!output.status.success(), "{var}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.contains(var), "{var}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

/// Reads from `stream` up to the end of a response head (or an interim response); returns it.
async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(LOG_WAIT, stream.read(&mut byte))
            .await
            .expect("a response head in time")
            .unwrap();
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&head));
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).to_string()
}

#[tokio::test]
async fn sigterm_and_sigint_stop_the_server_gracefully() {
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let server = ChildServer::on_test_database(&[
            ("ARGON2_MEMORY_KIB", "256"),
            ("ARGON2_ITERATIONS", "1"),
        ])
        .await;
        // A request in flight when the signal comes: its head is in, and the handler is reading
        // its body, which the server says by asking for it (`100 Continue`).
        let body = serde_json::to_vec(
            &serde_json::json!({"email": unique_email(), "password": PASSWORD, "name": "Last"}),
        )
        .unwrap();
        let mut stream = TcpStream::connect(server.address).await.unwrap();
        stream
            .write_all(
                format!(
                    "POST /register HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
                     Content-Length: {}\r\nExpect: 100-continue\r\n\r\n",
                    body.len()
                )
                .as_bytes(),
            )
            .await
            .unwrap();
        let interim = read_head(&mut stream).await;
        assert!(interim.starts_with("HTTP/1.1 100"), "{interim}");
        server.signal(signal);
        server.wait_for_line("shutdown signal received").await;
        // Only now the body: the request is answered, and then the server exits.
        stream.write_all(&body).await.unwrap();
        let head = read_head(&mut stream).await;
        assert!(head.starts_with("HTTP/1.1 201"), "{head}");
        let status = server
            .exited()
            .await
            .expect("the server did not stop within 10 s");
        assert!(status.success(), "exit status {status:?}");
    }
}
