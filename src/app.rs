//! Building and running the server: `Application::build` connects, migrates and binds (port 0
//! gives a free port, which `port()` reports), `run_until` serves until told to stop, with the
//! mail and webhook workers and the purger beside it.

use std::future::Future;
use std::net::SocketAddr;

use tokio::net::TcpListener;

use std::sync::Arc;

use crate::auth::tokens::TokenKeys;
use crate::clock::Clock;
use crate::config::{Config, ConfigError, MetricsExposure};
use crate::db::Db;
use crate::mail::Mailer;
use crate::mail::worker::Worker;
use crate::state::AppState;

/// Why the server could not start. Each says what to fix, on one line.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot connect to the {backend} database: {source}")]
    Connect {
        backend: &'static str,
        source: sqlx::Error,
    },
    #[error("cannot apply the database migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot set up mail: {0}")]
    Mail(String),
    #[error("cannot start: {0}")]
    Setup(#[from] crate::Error),
    /// A setting that could only be checked at start (a key file that cannot be used).
    #[error(transparent)]
    Config(#[from] ConfigError),
}

pub struct Application {
    listener: TcpListener,
    /// METRICS_ADDRESS: the listener of its own that serves /metrics.
    metrics_listener: Option<TcpListener>,
    state: AppState,
    mailer: Arc<Mailer>,
}

impl Application {
    /// Connects to the database (retrying for a while), applies migrations, and binds.
    pub async fn build(config: Config) -> Result<Self, StartError> {
        Self::build_with_clock(config, Clock::system()).await
    }

    /// As [`Application::build`], with every time-based decision reading `clock` (tests move a
    /// [`Clock::controlled`] one).
    pub async fn build_with_clock(config: Config, clock: Clock) -> Result<Self, StartError> {
        // The keys first: a key file that cannot be used stops the start without a wait for the
        // database.
        let tokens = TokenKeys::new(&config.tokens)?;
        let database = &config.database;
        let db = Db::connect_with_retry(
            &database.url,
            database.max_connections,
            database.sqlite_synchronous,
            database.connect_timeout,
        )
        .await
        .map_err(|source| StartError::Connect {
            backend: database.url.backend_name(),
            source,
        })?;
        db.migrate().await?;
        Self::build_with(config, db, tokens, clock).await
    }

    /// Binds the server on an already migrated database.
    pub async fn build_with_db(config: Config, db: Db) -> Result<Self, StartError> {
        let tokens = TokenKeys::new(&config.tokens)?;
        Self::build_with(config, db, tokens, Clock::system()).await
    }

    async fn build_with(
        config: Config,
        db: Db,
        tokens: TokenKeys,
        clock: Clock,
    ) -> Result<Self, StartError> {
        let addr = SocketAddr::new(config.server.host, config.server.port);
        let listener = bind(addr).map_err(|source| StartError::Bind { addr, source })?;
        let metrics_listener = match config.metrics.exposure() {
            MetricsExposure::Separate(addr) => {
                Some(bind(addr).map_err(|source| StartError::Bind { addr, source })?)
            }
            _ => None,
        };
        let mailer = Mailer::new(&config.mail).map_err(StartError::Mail)?;
        if mailer.logs_only() {
            tracing::warn!(
                "SMTP_URL is not set: mail is written to the log instead of sent (development only)"
            );
        }
        let state = AppState::new(config, db, tokens, clock)?;
        // With REDIS_URL: says whether the limits start shared or local (never stops the start).
        state.limiter.start().await;
        // Accounts still on bcrypt must not stand out by their login timing.
        let bcrypt_cost =
            crate::db::users::max_bcrypt_cost(&state.db, state.hasher.limits().max_bcrypt_cost)
                .await
                .map_err(|e| StartError::Setup(e.into()))?;
        if let Some(cost) = bcrypt_cost {
            let hasher = state.hasher.clone();
            tokio::task::spawn_blocking(move || hasher.equalise_with_bcrypt(cost))
                .await
                .map_err(|e| StartError::Setup(crate::Error::internal(e)))?;
        }
        Ok(Self {
            listener,
            metrics_listener,
            state,
            mailer: Arc::new(mailer),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn port(&self) -> u16 {
        self.local_addr().port()
    }

    /// Where /metrics is served on a listener of its own (METRICS_ADDRESS; port 0 reads back
    /// the real port), if it is.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .map(|l| l.local_addr().expect("a bound listener has an address"))
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` completes, then lets requests in flight finish.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let app = crate::http::app(self.state.clone());
        let (stop_worker, stop) = tokio::sync::watch::channel(false);
        let worker = tokio::spawn(
            Worker {
                db: self.state.db.clone(),
                mailer: self.mailer.clone(),
                wakeup: self.state.mail_wakeup.clone(),
                retry_base: self.state.config.mail.retry_base,
                max_attempts: self.state.config.mail.max_attempts,
                clock: self.state.clock.clone(),
                counters: self.state.metrics.mail.clone(),
            }
            .run(stop),
        );
        let webhooks = &self.state.config.webhooks;
        let webhook_worker = tokio::spawn(
            crate::webhooks::worker::Worker {
                db: self.state.db.clone(),
                seal: self.state.seal.clone(),
                client: crate::webhooks::client::Client::new(
                    webhooks.allow_private_networks,
                    webhooks.timeout,
                ),
                wakeup: self.state.webhook_wakeup.clone(),
                retry_base: webhooks.retry_base,
                max_attempts: webhooks.max_attempts,
                clock: self.state.clock.clone(),
                counters: self.state.webhook_counters.clone(),
            }
            .run(stop_worker.subscribe()),
        );
        // PostgreSQL: other instances' changes of what the session check reads.
        let listener = {
            let (db, stop) = (self.state.db.clone(), stop_worker.subscribe());
            tokio::spawn(async move { db.listen_for_session_changes(stop).await })
        };
        let purger = tokio::spawn(crate::service::maintenance::run_purger(
            self.state.clone(),
            self.state.config.database.purge_interval,
            stop_worker.subscribe(),
        ));
        let config = &self.state.config;
        let open_file_limit = crate::serve::raise_open_file_limit();
        let limits = crate::serve::ConnectionLimits {
            header_read_timeout: config.connections.header_read_timeout,
            keep_alive_timeout: config.connections.keep_alive_timeout,
            max_connections: crate::serve::max_connections(
                config.connections.max_connections,
                open_file_limit,
                u64::from(config.database.max_connections.unwrap_or(10)),
            ),
            max_connections_per_client: config.connections.max_connections_per_client,
            ipv6_prefix: config.rate_limits.ipv6_prefix,
            exempt: config.server.trusted_proxies.clone(),
            shutdown_grace: config.connections.shutdown_grace(),
        };
        tracing::info!(
            max_connections = limits.max_connections,
            open_file_limit,
            header_read_timeout_seconds = limits.header_read_timeout.as_secs(),
            keep_alive_timeout_seconds = limits.keep_alive_timeout.as_secs(),
            max_connections_per_client = limits.max_connections_per_client,
            shutdown_grace_seconds = limits.shutdown_grace.as_secs(),
            "serving HTTP/1.1"
        );
        match config.metrics.exposure() {
            MetricsExposure::MainListener if config.metrics.token.is_none() => tracing::info!(
                "GET /metrics is served on the main listener without a token (set METRICS_TOKEN or METRICS_ADDRESS to restrict it)"
            ),
            MetricsExposure::MainListener => {
                tracing::info!("GET /metrics is served on the main listener behind METRICS_TOKEN")
            }
            _ => {}
        }
        // The metrics' own listener stops with the main one.
        let (stop_metrics, metrics_stopped) = tokio::sync::watch::channel(false);
        let metrics_server = self.metrics_listener.map(|listener| {
            let address = listener
                .local_addr()
                .map_or_else(|_| "?".to_string(), |a| a.to_string());
            tracing::info!(%address, "serving GET /metrics on its own listener (METRICS_ADDRESS)");
            let metrics_limits = crate::serve::ConnectionLimits {
                max_connections: METRICS_MAX_CONNECTIONS,
                max_connections_per_client: METRICS_MAX_CONNECTIONS,
                ..limits.clone()
            };
            let mut stopped = metrics_stopped;
            tokio::spawn(crate::serve::serve(
                listener,
                crate::http::metrics_routes::separate_app(self.state.clone()),
                metrics_limits,
                async move {
                    let _ = stopped.wait_for(|stop| *stop).await;
                },
            ))
        });
        crate::serve::serve(self.listener, app, limits, async move {
            shutdown.await;
            let _ = stop_metrics.send(true);
        })
        .await;
        if let Some(server) = metrics_server {
            let _ = server.await;
        }
        let _ = stop_worker.send(true);
        let _ = worker.await;
        let _ = webhook_worker.await;
        let _ = purger.await;
        let _ = listener.await;
        self.state.db.close().await;
        Ok(())
    }

    /// Serves until SIGINT or SIGTERM.
    pub async fn run(self) -> std::io::Result<()> {
        self.run_until(shutdown_signal()).await
    }
}

/// The most connections the metrics' own listener (METRICS_ADDRESS) holds at once.
const METRICS_MAX_CONNECTIONS: usize = 16;

/// Connections waiting to be accepted: those over `MAX_CONNECTIONS` wait here (the kernel caps it
/// at `net.core.somaxconn`).
const LISTEN_BACKLOG: u32 = 1024;

/// Binds as `TcpListener::bind` does (address reuse on Unix), with a longer listen backlog.
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Completes on Ctrl-C (SIGINT) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutdown signal received; finishing requests in flight");
}
