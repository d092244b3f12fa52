//! The reference: a bare axum server answering `GET /health/live` and `GET /me` with exactly the
//! bytes (body and content type) the server under test answered for them, nothing else: no
//! middleware, no token, no database. The targets compare the server against it, in the same
//! run, back to back, on the same cores.
//!
//! It runs in a process of its own, as the server does: the bench starts itself again in a
//! hidden mode (`bench --reference-server --port P --body-dir D`), where [`serve`] runs
//! `axum::serve` on the default multi-thread tokio runtime.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::client::{Conn, request};
use crate::server::free_port;

/// One route's answer: (content type, body).
type Answer = (String, Vec<u8>);

/// The files of a route's answer in the body directory.
fn files(dir: &Path, route: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{route}.type")),
        dir.join(format!("{route}.body")),
    )
}

fn read(dir: &Path, route: &str) -> Answer {
    let (ty, body) = files(dir, route);
    (
        std::fs::read_to_string(ty).expect("the reference's content type"),
        std::fs::read(body).expect("the reference's body"),
    )
}

/// Serves the answers in `dir` on `port` until killed (the hidden mode).
pub async fn serve(port: u16, dir: &Path) {
    let answer = |(ty, body): Answer| {
        let ty = HeaderValue::from_str(&ty).unwrap();
        let body = axum::body::Bytes::from(body);
        move || {
            let (ty, body) = (ty.clone(), body.clone());
            async move { (StatusCode::OK, [(CONTENT_TYPE, ty)], body).into_response() }
        }
    };
    let app = axum::Router::new()
        .route("/health/live", get(answer(read(dir, "live"))))
        .route("/me", get(answer(read(dir, "me"))));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    axum::serve(listener, app).await.unwrap();
}

/// The reference process, killed when dropped.
pub struct Reference {
    child: Child,
    pub port: u16,
}

impl Drop for Reference {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Fetches `GET /health/live` and `GET /me` (with `token`) from the server on `server_port`,
/// writes them into `dir`, and starts the reference on them; waits until it answers.
pub async fn start(server_port: u16, token: &str, dir: &Path) -> Reference {
    let mut conn = Conn::open(server_port).await.unwrap();
    for (route, bearer) in [("live", None), ("me", Some(token))] {
        let path = if route == "live" {
            "/health/live"
        } else {
            "/me"
        };
        let (status, body) = conn
            .call(&request("GET", path, bearer, None))
            .await
            .unwrap();
        assert_eq!(
            status,
            200,
            "GET {path}: {}",
            String::from_utf8_lossy(&body)
        );
        let (ty_file, body_file) = files(dir, route);
        std::fs::write(ty_file, &conn.content_type).unwrap();
        std::fs::write(body_file, &body).unwrap();
    }
    let port = free_port();
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["--reference-server", "--no-build", "--port"])
        .arg(port.to_string())
        .arg("--body-dir")
        .arg(dir)
        .stdout(Stdio::null())
        .spawn()
        .expect("start the reference server");
    let reference = Reference { child, port };
    for _ in 0..200 {
        if let Ok(mut c) = Conn::open(port).await
            && let Ok((200, _)) = c.call(&request("GET", "/health/live", None, None)).await
        {
            return reference;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the reference server did not start");
}
