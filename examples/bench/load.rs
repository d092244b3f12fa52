//! The load: workers sending requests on their own connections, and the latencies they record.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::PASSWORD;
use crate::client::{Conn, field, request};
use crate::passkey::SoftPasskey;
use crate::seed::{Kind, email, email_of};
use crate::totp::TotpAccounts;

#[derive(Default)]
pub struct Stats {
    pub latencies_us: Vec<u32>,
    pub errors: u64,
    pub elapsed: Duration,
}

impl Stats {
    pub fn rps(&self) -> f64 {
        self.latencies_us.len() as f64 / self.elapsed.as_secs_f64()
    }

    pub fn percentile(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        let i = ((self.latencies_us.len() as f64 * p).ceil() as usize)
            .clamp(1, self.latencies_us.len())
            - 1;
        f64::from(self.latencies_us[i]) / 1000.0
    }
}

/// What one worker does, request after request.
#[derive(Clone)]
pub enum Work {
    Trivial,
    /// `GET /me`: each worker with its own token of `tokens`, or, `spread`, a token picked at
    /// random for each request.
    Me {
        tokens: Arc<Vec<String>>,
        spread: bool,
    },
    Login {
        users: usize,
    },
    Register {
        run: u64,
    },
    Refresh {
        tokens: Arc<Vec<String>>,
    },
    /// A whole second-factor login: `POST /login` (403 MFA_REQUIRED, an `mfa_token`), then
    /// `POST /login/mfa` with the account's current code.
    MfaLogin {
        accounts: Arc<TotpAccounts>,
    },
    /// A whole passkey sign-in: the options, the authenticator's assertion, `POST /login/passkey`;
    /// each worker with the passkey of its own account (`passkeys[id]`).
    PasskeyLogin {
        passkeys: Arc<Vec<tokio::sync::Mutex<SoftPasskey>>>,
    },
    Mixed {
        access: Arc<Vec<String>>,
        refresh: Arc<Vec<String>>,
        users: usize,
        run: u64,
    },
}

struct Worker {
    work: Work,
    id: usize,
    n: u64,
    rng: u64,
    access: Option<String>,
    refresh: Option<String>,
}

impl Worker {
    fn random(&mut self, below: usize) -> usize {
        // xorshift: cheap and good enough to spread requests.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng % below as u64) as usize
    }

    fn login_body(&mut self, users: usize) -> String {
        let user = self.random(users);
        format!(r#"{{"email":"{}","password":"{PASSWORD}"}}"#, email(user))
    }

    /// One request; true if it got the expected answer.
    async fn step(&mut self, conn: &mut Conn) -> std::io::Result<bool> {
        self.n += 1;
        let work = self.work.clone();
        match work {
            Work::Trivial => Ok(conn
                .call(&request("GET", "/health/live", None, None))
                .await?
                .0
                == 200),
            Work::Me { tokens, spread } => {
                let i = if spread {
                    self.random(tokens.len())
                } else {
                    self.id % tokens.len()
                };
                Ok(conn
                    .call(&request("GET", "/me", Some(&tokens[i]), None))
                    .await?
                    .0
                    == 200)
            }
            Work::MfaLogin { accounts } => {
                let (account, code) = accounts.take().await;
                let body = format!(
                    r#"{{"email":"{}","password":"{PASSWORD}"}}"#,
                    email_of(Kind::Mfa, account)
                );
                let (status, response) = conn
                    .call(&request("POST", "/login", None, Some(&body)))
                    .await?;
                let Some(mfa_token) = field(&response, "mfa_token").filter(|_| status == 403)
                else {
                    return Ok(false);
                };
                let body = format!(r#"{{"mfa_token":"{mfa_token}","code":"{code}"}}"#);
                let (status, response) = conn
                    .call(&request("POST", "/login/mfa", None, Some(&body)))
                    .await?;
                Ok(status == 200 && field(&response, "access_token").is_some())
            }
            Work::PasskeyLogin { passkeys } => {
                let (status, options) = conn
                    .call(&request("POST", "/login/passkey/options", None, None))
                    .await?;
                let Ok(options) = serde_json::from_slice(&options) else {
                    return Ok(false);
                };
                if status != 200 {
                    return Ok(false);
                }
                let credential = passkeys[self.id].lock().await.get(&options).await;
                let body = serde_json::json!({ "credential": credential }).to_string();
                let (status, response) = conn
                    .call(&request("POST", "/login/passkey", None, Some(&body)))
                    .await?;
                Ok(status == 200 && field(&response, "access_token").is_some())
            }
            Work::Login { users } => {
                let body = self.login_body(users);
                Ok(conn
                    .call(&request("POST", "/login", None, Some(&body)))
                    .await?
                    .0
                    == 200)
            }
            Work::Register { run } => {
                let body = format!(
                    r#"{{"email":"new-{run}-{}-{}@bench.example","password":"{PASSWORD}","name":"New User"}}"#,
                    self.id, self.n
                );
                Ok(conn
                    .call(&request("POST", "/register", None, Some(&body)))
                    .await?
                    .0
                    == 201)
            }
            Work::Refresh { tokens } => {
                let token = self
                    .refresh
                    .clone()
                    .unwrap_or_else(|| tokens[self.id % tokens.len()].clone());
                let body = format!(r#"{{"refresh_token":"{token}"}}"#);
                let (status, response) = conn
                    .call(&request("POST", "/refresh", None, Some(&body)))
                    .await?;
                self.refresh = field(&response, "refresh_token");
                Ok(status == 200 && self.refresh.is_some())
            }
            Work::Mixed {
                access,
                refresh,
                users,
                run,
            } => {
                let roll = self.random(100);
                if roll < 70 {
                    let token = self
                        .access
                        .clone()
                        .unwrap_or_else(|| access[self.id % access.len()].clone());
                    Ok(conn
                        .call(&request("GET", "/me", Some(&token), None))
                        .await?
                        .0
                        == 200)
                } else if roll < 90 {
                    let token = self
                        .refresh
                        .clone()
                        .unwrap_or_else(|| refresh[self.id % refresh.len()].clone());
                    let body = format!(r#"{{"refresh_token":"{token}"}}"#);
                    let (status, response) = conn
                        .call(&request("POST", "/refresh", None, Some(&body)))
                        .await?;
                    self.refresh = field(&response, "refresh_token");
                    self.access = field(&response, "access_token");
                    Ok(status == 200 && self.refresh.is_some())
                } else if roll < 98 {
                    let body = self.login_body(users);
                    Ok(conn
                        .call(&request("POST", "/login", None, Some(&body)))
                        .await?
                        .0
                        == 200)
                } else {
                    let body = format!(
                        r#"{{"email":"mixed-{run}-{}-{}@bench.example","password":"{PASSWORD}","name":"New User"}}"#,
                        self.id, self.n
                    );
                    Ok(conn
                        .call(&request("POST", "/register", None, Some(&body)))
                        .await?
                        .0
                        == 201)
                }
            }
        }
    }
}

/// Runs `work` on `concurrency` connections for `duration`.
pub async fn load(port: u16, work: Work, concurrency: usize, duration: Duration) -> Stats {
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let handles: Vec<_> = (0..concurrency)
        .map(|id| {
            let (work, stop, errors) = (work.clone(), stop.clone(), errors.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(1 << 16);
                let mut worker = Worker {
                    work,
                    id,
                    n: 0,
                    rng: 0x9E37_79B9_7F4A_7C15 ^ (id as u64 + 1),
                    access: None,
                    refresh: None,
                };
                let mut conn = Conn::open(port).await.expect("connect");
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    match worker.step(&mut conn).await {
                        Ok(true) => {
                            latencies.push(t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32)
                        }
                        Ok(false) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            conn = Conn::open(port).await.expect("reconnect");
                        }
                    }
                }
                latencies
            })
        })
        .collect();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies_us = Vec::new();
    for h in handles {
        latencies_us.extend(h.await.unwrap());
    }
    let elapsed = started.elapsed();
    latencies_us.sort_unstable();
    Stats {
        latencies_us,
        errors: errors.load(Ordering::Relaxed),
        elapsed,
    }
}
