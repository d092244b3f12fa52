//! The scenarios: each a load run against the server, recorded as a row of the report.

use std::sync::Arc;
use std::time::Duration;

use crate::PASSWORD;
use crate::client::{Conn, field, request};
use crate::load::{Work, load};
use crate::report::Row;
use crate::seed::email;
use crate::server::Server;

/// Logs in `count` users (spread over `users`) and returns their access and refresh tokens.
pub async fn sessions(
    port: u16,
    users: usize,
    count: usize,
) -> (Arc<Vec<String>>, Arc<Vec<String>>) {
    let mut conn = Conn::open(port).await.unwrap();
    let (mut access, mut refresh) = (Vec::new(), Vec::new());
    for k in 0..count {
        let user = (k * 7919 + 13) % users;
        let body = format!(r#"{{"email":"{}","password":"{PASSWORD}"}}"#, email(user));
        let (status, response) = conn
            .call(&request("POST", "/login", None, Some(&body)))
            .await
            .unwrap();
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&response));
        access.push(field(&response, "access_token").unwrap());
        refresh.push(field(&response, "refresh_token").unwrap());
    }
    (Arc::new(access), Arc::new(refresh))
}

/// Runs the scenarios that `--only` selects, one after another, and keeps their rows.
pub struct Runner<'a> {
    pub server: &'a Server,
    pub duration: Duration,
    pub only: Option<&'a str>,
    pub rows: Vec<Row>,
}

impl Runner<'_> {
    /// Whether `--only` selects the scenario `name` (all do without it).
    pub fn wanted(&self, name: &str) -> bool {
        self.only.is_none_or(|only| name.contains(only))
    }

    /// One scenario: `work` on `concurrency` connections, the server's peak memory measured
    /// from its start.
    pub async fn run(&mut self, name: impl Into<String>, work: Work, concurrency: usize) {
        let name = name.into();
        if !self.wanted(&name) {
            return;
        }
        self.server.reset_peak();
        let stats = load(self.server.port, work, concurrency, self.duration).await;
        let row = Row {
            name,
            stats,
            peak_rss_kib: self.server.peak_rss_kib(),
        };
        eprintln!(
            "  {:<34} {:>9.0} req/s, {} errors",
            row.name,
            row.stats.rps(),
            row.stats.errors
        );
        self.rows.push(row);
    }

    /// `GET /me` while `2 * cores + 4` connections of logins keep the hashing pool saturated:
    /// two rows, /me and the storm beside it.
    pub async fn me_during_login_storm(
        &mut self,
        tokens: Arc<Vec<String>>,
        users: usize,
        cores: usize,
        concurrency: usize,
    ) {
        if !self.wanted("GET /me during a login storm") {
            return;
        }
        let (port, duration) = (self.server.port, self.duration);
        let storm = tokio::spawn(load(
            port,
            Work::Login { users },
            2 * cores + 4,
            duration + Duration::from_millis(600),
        ));
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.server.reset_peak();
        let me_during = load(port, Work::Me { tokens }, concurrency, duration).await;
        let logins_during = storm.await.unwrap();
        self.rows.push(Row {
            name: "GET /me during a login storm".into(),
            stats: me_during,
            peak_rss_kib: self.server.peak_rss_kib(),
        });
        self.rows.push(Row {
            name: "  (the login storm beside it)".into(),
            stats: logins_during,
            peak_rss_kib: self.server.peak_rss_kib(),
        });
    }
}
