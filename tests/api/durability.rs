//! Every write the server acknowledged survives a crash of its process (SIGKILL in the middle of
//! a write load), on SQLite and on PostgreSQL; and SQLITE_SYNCHRONOUS reaches SQLite.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

const NEW_PASSWORD: &str = "a brand new passphrase for after";

/// One session's refresh tokens, as acknowledged: the last is the newest.
#[derive(Debug, Default)]
struct Chain {
    refresh: Vec<String>,
    access: String,
    /// A logout of this session was acknowledged.
    revoked: bool,
    /// A request on this session was in flight at the crash: its outcome is unknown.
    uncertain: bool,
}

/// One account, as acknowledged.
#[derive(Debug)]
struct Account {
    email: String,
    /// The passwords it may have: one, or two when a change was in flight at the crash.
    passwords: Vec<&'static str>,
    /// The password it had before an acknowledged change.
    old_password: Option<&'static str>,
    chains: Vec<Chain>,
}

/// What one client saw acknowledged before the server died.
#[derive(Debug, Default)]
struct Journal {
    accounts: Vec<Account>,
    acknowledged: usize,
}

struct Load {
    client: reqwest::Client,
    base: String,
    acked: Arc<AtomicUsize>,
    progress: Arc<tokio::sync::Notify>,
}

impl Load {
    async fn post(&self, path: &str, bearer: Option<&str>, body: Value) -> Option<(u16, Value)> {
        let mut request = self.client.post(format!("{}{path}", self.base));
        if !body.is_null() {
            request = request.json(&body);
        }
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.ok()?;
        let status = response.status().as_u16();
        let body = response.bytes().await.ok()?;
        Some((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
    }

    async fn put(&self, path: &str, bearer: &str, body: Value) -> Option<u16> {
        let response = self
            .client
            .put(format!("{}{path}", self.base))
            .bearer_auth(bearer)
            .json(&body)
            .send()
            .await
            .ok()?;
        let status = response.status().as_u16();
        response.bytes().await.ok()?;
        Some(status)
    }

    /// Counts an acknowledged write.
    fn ack(&self, journal: &mut Journal, status: u16, expected: u16) {
        assert_eq!(status, expected, "a write was refused before the crash");
        journal.acknowledged += 1;
        self.acked.fetch_add(1, Ordering::Relaxed);
        self.progress.notify_one();
    }

    /// Writes until the server stops answering; returns what it acknowledged.
    async fn run(self) -> Journal {
        let mut journal = Journal::default();
        loop {
            // Register.
            let email = unique_email();
            let Some((status, _)) = self
                .post(
                    "/register",
                    None,
                    json!({"email": email, "password": PASSWORD, "name": "Durable"}),
                )
                .await
            else {
                return journal;
            };
            self.ack(&mut journal, status, 201);
            journal.accounts.push(Account {
                email: email.clone(),
                passwords: vec![PASSWORD],
                old_password: None,
                chains: Vec::new(),
            });
            // Two sessions: A is refreshed twice, B logged out.
            for _ in 0..2 {
                let Some((status, body)) = self
                    .post(
                        "/login",
                        None,
                        json!({"email": email, "password": PASSWORD}),
                    )
                    .await
                else {
                    return journal;
                };
                self.ack(&mut journal, status, 200);
                let tokens = Tokens::from(body);
                journal.accounts.last_mut().unwrap().chains.push(Chain {
                    refresh: vec![tokens.refresh],
                    access: tokens.access,
                    ..Chain::default()
                });
            }
            for _ in 0..2 {
                if !self.refresh(&mut journal, 0).await {
                    return journal;
                }
            }
            let b = &mut journal.accounts.last_mut().unwrap().chains[1];
            let access = b.access.clone();
            b.uncertain = true;
            let Some((status, _)) = self.post("/logout", Some(&access), json!(null)).await else {
                return journal;
            };
            self.ack(&mut journal, status, 204);
            let b = &mut journal.accounts.last_mut().unwrap().chains[1];
            (b.uncertain, b.revoked) = (false, true);
            // A password change through session A (which it keeps).
            let account = journal.accounts.last_mut().unwrap();
            account.passwords.push(NEW_PASSWORD);
            let access = account.chains[0].access.clone();
            let Some(status) = self
                .put(
                    "/me/password",
                    &access,
                    json!({"current_password": PASSWORD, "new_password": NEW_PASSWORD}),
                )
                .await
            else {
                return journal;
            };
            self.ack(&mut journal, status, 204);
            let account = journal.accounts.last_mut().unwrap();
            account.passwords = vec![NEW_PASSWORD];
            account.old_password = Some(PASSWORD);
            if !self.refresh(&mut journal, 0).await {
                return journal;
            }
        }
    }

    /// Refreshes the newest token of chain `chain` of the last account.
    async fn refresh(&self, journal: &mut Journal, chain: usize) -> bool {
        let c = &mut journal.accounts.last_mut().unwrap().chains[chain];
        let token = c.refresh.last().unwrap().clone();
        c.uncertain = true;
        let Some((status, body)) = self
            .post("/refresh", None, json!({"refresh_token": token}))
            .await
        else {
            return false;
        };
        self.ack(journal, status, 200);
        let tokens = Tokens::from(body);
        let c = &mut journal.accounts.last_mut().unwrap().chains[chain];
        c.refresh.push(tokens.refresh);
        c.access = tokens.access;
        c.uncertain = false;
        true
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_a_sigkill_of_the_server() {
    let _cores = CORES.lock().await;
    let mut server = ChildServer::on_test_database(&[
        ("ARGON2_MEMORY_KIB", "256"),
        ("ARGON2_ITERATIONS", "1"),
        ("REFRESH_REUSE_INTERVAL_SECONDS", "0"),
        ("LOGIN_FREE_ATTEMPTS", "1000"),
        ("RATE_LIMIT_LOGIN_PER_MINUTE", "0"),
        ("RATE_LIMIT_REGISTER_PER_MINUTE", "0"),
        ("RATE_LIMIT_REFRESH_PER_MINUTE", "0"),
    ])
    .await;
    let acked = Arc::new(AtomicUsize::new(0));
    let progress = Arc::new(tokio::sync::Notify::new());
    let clients: Vec<_> = (0..6)
        .map(|_| {
            tokio::spawn(
                Load {
                    client: reqwest::Client::new(),
                    base: server.base.clone(),
                    acked: acked.clone(),
                    progress: progress.clone(),
                }
                .run(),
            )
        })
        .collect();
    // Once a good many writes are acknowledged, and while six more are on their way: SIGKILL.
    while acked.load(Ordering::Relaxed) < 300 {
        progress.notified().await;
    }
    server.kill9();
    let mut journals = Vec::new();
    for client in clients {
        journals.push(client.await.unwrap());
    }
    let acknowledged: usize = journals.iter().map(|j| j.acknowledged).sum();

    server.restart().await;
    let client = reqwest::Client::new();
    let post = |path: &str, body: Value| client.post(server.url(path)).json(&body).send();
    let (mut accounts, mut live, mut spent, mut revoked, mut changed) = (0, 0, 0, 0, 0);
    for account in journals.iter().flat_map(|j| &j.accounts) {
        accounts += 1;
        // The account logs in with its password (either, if a change was in flight).
        let mut logged_in = 0;
        for password in &account.passwords {
            let status = post(
                "/login",
                json!({"email": account.email, "password": password}),
            )
            .await
            .unwrap()
            .status();
            logged_in += usize::from(status == StatusCode::OK);
        }
        assert_eq!(logged_in, 1, "{}: {:?}", account.email, account.passwords);
        // A changed password is the new one only.
        if let Some(old) = account.old_password {
            changed += 1;
            let status = post("/login", json!({"email": account.email, "password": old}))
                .await
                .unwrap()
                .status();
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{}: the old password",
                account.email
            );
        }
        for chain in &account.chains {
            if chain.revoked {
                // A logged-out session stays logged out: its tokens are refused.
                revoked += 1;
                let me = client
                    .get(server.url("/me"))
                    .bearer_auth(&chain.access)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(me.status(), StatusCode::UNAUTHORIZED);
                let refreshed = post("/refresh", json!({"refresh_token": chain.refresh[0]}))
                    .await
                    .unwrap();
                assert_eq!(refreshed.status(), StatusCode::UNAUTHORIZED);
                continue;
            }
            if !chain.uncertain {
                // The newest refresh token works, and so does the newest access token.
                live += 1;
                let me = client
                    .get(server.url("/me"))
                    .bearer_auth(&chain.access)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(me.status(), StatusCode::OK, "{}", account.email);
                let newest = chain.refresh.last().unwrap();
                let refreshed = post("/refresh", json!({"refresh_token": newest}))
                    .await
                    .unwrap();
                assert_eq!(
                    refreshed.status(),
                    StatusCode::OK,
                    "{}: the newest refresh token",
                    account.email
                );
            }
            // The rotated-away ones are spent (presenting one ends the session: last).
            let rotated = &chain.refresh[..chain.refresh.len() - 1];
            for token in rotated.iter().rev() {
                spent += 1;
                let refreshed = post("/refresh", json!({"refresh_token": token}))
                    .await
                    .unwrap();
                assert_eq!(
                    refreshed.status(),
                    StatusCode::UNAUTHORIZED,
                    "{}: a spent refresh token",
                    account.email
                );
            }
        }
    }
    eprintln!(
        "{acknowledged} writes acknowledged before SIGKILL; checked {accounts} accounts \
         ({changed} changed passwords), {live} live sessions, {spent} spent refresh tokens, \
         {revoked} revoked sessions"
    );
    assert!(acknowledged >= 300);
    assert!(accounts >= 10 && live >= 10 && spent >= 10 && revoked >= 10 && changed >= 10);
}

/// `PRAGMA synchronous` as the server's SQLite connections have it.
async fn synchronous(app: &TestApp) -> i64 {
    app.state
        .db
        .sqlite_synchronous()
        .await
        .unwrap()
        .expect("SQLite")
}

#[tokio::test]
async fn sqlite_synchronous_is_normal_unless_configured() {
    if on_postgres() {
        // Ignored on PostgreSQL (which commits durably by default): the server runs with it.
        let app = spawn_app_with(&[("SQLITE_SYNCHRONOUS", "off")]).await;
        app.signed_up(&unique_email()).await;
        return;
    }
    assert_eq!(
        synchronous(&spawn_app().await).await,
        1,
        "NORMAL by default"
    );
    for (value, expected) in [("off", 0), ("normal", 1), ("FULL", 2), ("extra", 3)] {
        let app = spawn_app_with(&[("SQLITE_SYNCHRONOUS", value)]).await;
        assert_eq!(synchronous(&app).await, expected, "{value}");
        app.signed_up(&unique_email()).await;
    }
}
