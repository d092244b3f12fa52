//! Bad requests of every kind get problem documents, never plain text, never a 500.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn unknown_paths_are_404_problems() {
    let app = spawn_app().await;
    for path in ["/nope", "/me/nope", "/users/../etc/passwd", "/register/"] {
        let response = app.client.get(app.url(path)).send().await.unwrap();
        assert_problem(response, 404, "NOT_FOUND").await;
    }
}

#[tokio::test]
async fn wrong_methods_are_405_problems_with_allow() {
    let app = spawn_app().await;
    // (GET /register is the registration page: see pages.rs.)
    for (method, path) in [
        ("GET", "/login"),
        ("DELETE", "/login"),
        ("POST", "/me"),
        ("PUT", "/health"),
    ] {
        let response = app
            .client
            .request(method.parse().unwrap(), app.url(path))
            .send()
            .await
            .unwrap();
        assert!(response.headers().contains_key("allow"), "{method} {path}");
        assert_problem(response, 405, "METHOD_NOT_ALLOWED").await;
    }
    let response = app.client.get(app.url("/login")).send().await.unwrap();
    assert!(
        response.headers()["allow"]
            .to_str()
            .unwrap()
            .contains("POST")
    );
}

#[tokio::test]
async fn oversized_bodies_are_413_problems() {
    let app = spawn_app().await;
    let big = json!({"email": "a@example.com", "password": "x".repeat(70 * 1024), "name": "Big"});
    assert_problem(
        app.post_json("/register", &big).await,
        413,
        "PAYLOAD_TOO_LARGE",
    )
    .await;
    // Without a Content-Length (chunked), too: sent by hand over a socket.
    let raw = raw_chunked_post(&app, "/login", 100, 1024).await;
    assert!(raw.starts_with("HTTP/1.1 413"), "{raw}");
    assert!(
        raw.to_ascii_lowercase()
            .contains("content-type: application/problem+json"),
        "{raw}"
    );
    assert!(raw.contains("PAYLOAD_TOO_LARGE"), "{raw}");
    // Under the limit is fine.
    let ok = app
        .register(&unique_email(), PASSWORD, &"n".repeat(100))
        .await;
    assert_eq!(ok.status(), StatusCode::CREATED);
}

/// POSTs `chunks` chunks of `size` spaces with chunked encoding; returns the raw response.
async fn raw_chunked_post(app: &TestApp, path: &str, chunks: usize, size: usize) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = app.address.trim_start_matches("http://").to_string();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let chunk = format!("{size:x}\r\n{}\r\n", " ".repeat(size));
    for _ in 0..chunks {
        // The server may answer and close before the whole body is sent.
        if stream.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    String::from_utf8_lossy(&response).into_owned()
}

#[tokio::test]
async fn malformed_bodies_are_422_problems() {
    let app = spawn_app().await;
    for body in ["{", "[]", "null", "\"text\"", "{\"email\": }", "{} {}"] {
        let response = app
            .client
            .post(app.url("/register"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_problem(response, 422, "VALIDATION_FAILED").await;
    }
    let invalid_utf8 = app
        .client
        .post(app.url("/register"))
        .header("content-type", "application/json")
        .body(vec![b'{', b'"', 0xff, 0xfe, b'"', b'}'])
        .send()
        .await
        .unwrap();
    assert_problem(invalid_utf8, 422, "VALIDATION_FAILED").await;
}

#[tokio::test]
async fn bodies_need_a_json_content_type() {
    let app = spawn_app().await;
    let body = json!({"email": unique_email(), "password": PASSWORD, "name": "N"}).to_string();
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/xml"),
        Some("multipart/form-data"),
    ] {
        let mut request = app.client.post(app.url("/register")).body(body.clone());
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        assert_problem(request.send().await.unwrap(), 415, "UNSUPPORTED_MEDIA_TYPE").await;
    }
    // A missing body is a validation error.
    let response = app
        .client
        .post(app.url("/register"))
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    let problem = assert_problem(response, 422, "VALIDATION_FAILED").await;
    assert_eq!(error_fields(&problem), ["body"]);
    // A charset parameter is fine.
    let response = app
        .client
        .post(app.url("/register"))
        .header("content-type", "application/json; charset=utf-8")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
}
