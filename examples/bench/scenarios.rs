//! The scenarios: each a load run against the server, recorded as a row of the report.

use std::sync::Arc;
use std::time::Duration;

use crate::PASSWORD;
use crate::client::{Conn, field, request};
use crate::load::{Work, load};
use crate::passkey::SoftPasskey;
use crate::report::{ME_DURING_STORM, Row};
use crate::seed::{Kind, email, email_of};
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

/// Registers a passkey for each of the accounts `0..count` of [`Kind::Passkey`] (a login, the
/// creation options for the password, the authenticator, `POST /me/passkeys`): one per worker
/// of the passkey scenario.
pub async fn passkeys(port: u16, count: usize) -> Arc<Vec<tokio::sync::Mutex<SoftPasskey>>> {
    let mut conn = Conn::open(port).await.unwrap();
    let mut passkeys = Vec::with_capacity(count);
    for i in 0..count {
        let body = format!(
            r#"{{"email":"{}","password":"{PASSWORD}"}}"#,
            email_of(Kind::Passkey, i)
        );
        let (status, response) = conn
            .call(&request("POST", "/login", None, Some(&body)))
            .await
            .unwrap();
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&response));
        let access = field(&response, "access_token").unwrap();
        let body = format!(r#"{{"password":"{PASSWORD}"}}"#);
        let (status, options) = conn
            .call(&request(
                "POST",
                "/me/passkeys/options",
                Some(&access),
                Some(&body),
            ))
            .await
            .unwrap();
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&options));
        let mut passkey = SoftPasskey::new();
        let credential = passkey
            .create(&serde_json::from_slice(&options).unwrap())
            .await;
        let body = serde_json::json!({ "credential": credential }).to_string();
        let (status, response) = conn
            .call(&request("POST", "/me/passkeys", Some(&access), Some(&body)))
            .await
            .unwrap();
        assert_eq!(status, 201, "{}", String::from_utf8_lossy(&response));
        passkeys.push(tokio::sync::Mutex::new(passkey));
    }
    Arc::new(passkeys)
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
        self.run_on(None, name.into(), work, concurrency).await;
    }

    /// The same against the bare axum reference on `port` (its memory is not measured).
    pub async fn run_reference(&mut self, port: u16, name: &str, work: Work, concurrency: usize) {
        self.run_on(Some(port), name.into(), work, concurrency)
            .await;
    }

    async fn run_on(
        &mut self,
        reference: Option<u16>,
        name: String,
        work: Work,
        concurrency: usize,
    ) {
        if !self.wanted(&name) {
            return;
        }
        self.server.reset_peak();
        let port = reference.unwrap_or(self.server.port);
        let stats = load(port, work, concurrency, self.duration).await;
        let row = Row {
            name,
            stats,
            peak_rss_kib: if reference.is_some() {
                0
            } else {
                self.server.peak_rss_kib()
            },
        };
        eprintln!(
            "  {:<40} {:>9.0} req/s, {} errors",
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
        if !self.wanted(ME_DURING_STORM) {
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
        let me = Work::Me {
            tokens,
            spread: false,
        };
        let me_during = load(port, me, concurrency, duration).await;
        let logins_during = storm.await.unwrap();
        self.rows.push(Row {
            name: ME_DURING_STORM.into(),
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
