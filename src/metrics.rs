//! The server's metrics: one prometheus-client [`Registry`] per [`AppState`] (never a global:
//! the tests run many servers in one process), served as OpenMetrics text by `GET /metrics`
//! (`http::metrics_routes`; settings in `config::metrics`).
//!
//! What is measured, and where:
//! - HTTP requests by matched route, method and status, and their latency by route and method:
//!   the middleware `http::edge` calls [`Metrics::observe_series`] (a series resolved once per
//!   route, [`Metrics::request_series`]) or [`Metrics::observe_request`]. The route is the
//!   route's template (`/me/sessions/{id}`) or [`UNMATCHED`], never the path a client sent.
//! - Logins by method and outcome: [`Metrics::login`], called where each login is decided
//!   (`service::login::login`, `service::mfa::complete_login`, `service::passkeys::login`) with
//!   its `Result`, so the API and the pages count alike; [`Metrics::login_rate_limited`] where
//!   the per-client limit refuses one before it reaches the service.
//! - The hashing pool (`auth::password`): its queue and threads read at scrape time, its waits
//!   through the hook [`PasswordHasher::on_wait`](crate::auth::password::PasswordHasher::on_wait).
//! - The mail outbox: [`MailCounters`], held by `mail::worker::Worker`; its depth is a COUNT at
//!   scrape time.
//! - Webhooks: `webhooks::Counters` (`webhooks::register_metrics`), kept by their worker; the
//!   queue's length is a COUNT at scrape time.
//! - The database pool (`db::Db::pool_state`, `db::PoolObserver`; its lost connections and
//!   retries, `db::Db::stats`), and the live sessions (a COUNT, at most once per
//!   [`SESSIONS_COUNT_EVERY_MS`]).
//! - The per-client limits (`ratelimit`): the backend in use, Redis's errors and the switches
//!   to the local limits ([`register_rate_limits`]).
//!
//! # Adding a metric (other modules)
//!
//! Names start with `auth_`, in snake case, with no `_total` (a counter's is added) and no unit
//! (give it with [`Metrics::register_with_unit`]). Labels are bounded sets of values written in
//! the code (an enum's `&'static str`): never a path, an address, an email, a user id or
//! anything a client chooses, or each new value is a new series kept for ever.
//!
//! 1. A metric your module updates: create it beside your own state (prometheus-client metrics
//!    are `Arc`s inside: a clone is the same metric) and register a clone once, where your part
//!    is built (`AppState::new`, `Application::run_until`):
//!
//!    ```ignore
//!    use prometheus_client::metrics::counter::Counter;
//!    let deliveries: Counter = Counter::default();
//!    state.metrics.register("auth_webhook_deliveries", "Webhook deliveries", deliveries.clone());
//!    // on the hot path: deliveries.inc();
//!    ```
//!
//!    With labels, a `Family<Labels, Counter>` whose `Labels` derives `EncodeLabelSet` (see
//!    [`LoginLabels`]), its values `&'static str`.
//! 2. A value you already keep (an atomic, a `stats()`): read it at scrape time with
//!    [`FnCounter`] or [`FnGauge`]: `state.metrics.register("auth_x", "...",
//!    FnCounter::new(move || shared.load(Ordering::Relaxed)))`. The closure runs under the
//!    registry's lock at each scrape: keep it to a load (no I/O, no await).
//! 3. Something to read from the database at scrape time: add it to [`Metrics::refresh`], with
//!    a timeout and a cache if it is not cheap.
//!
//! Registering takes a lock that only registration and scrapes take; updating a metric takes
//! none of it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Metric, Registry, Unit};

use crate::error::Error;
use crate::state::AppState;

/// The `route` of a request no route matched (whatever its path).
pub const UNMATCHED: &str = "unmatched";

/// The live-session count is read at most once per this many milliseconds (of the `Clock`).
pub const SESSIONS_COUNT_EVERY_MS: i64 = 15_000;

/// How long a scrape waits for one database read before it serves the last value.
const SCRAPE_READ_TIMEOUT: Duration = Duration::from_secs(2);

/// Request latency buckets, in seconds: a session check takes under a millisecond, a login
/// takes about a hash (tens to hundreds of milliseconds), REQUEST_TIMEOUT_SECONDS ends the rest.
const REQUEST_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Hashing queue waits, in seconds (HASH_MAX_WAIT_MILLISECONDS bounds them, 5 s by default).
const HASH_WAIT_BUCKETS: [f64; 13] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Waits for a pooled connection, in seconds (the pool gives up after 3 s: 503).
pub const ACQUIRE_BUCKETS: [f64; 11] = [
    0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 1.0, 3.0,
];

/// How a login was tried: the `method` label of `auth_logins_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LoginMethod {
    /// Email and password (POST /login, the sign-in page).
    Password,
    /// The second step after a password: a TOTP or recovery code, or a passkey (POST
    /// /login/mfa, the second step's page).
    Mfa,
    /// A passkey as the first factor (POST /login/passkey, the sign-in page's passkey).
    Passkey,
}

impl LoginMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Password => "password",
            Self::Mfa => "mfa",
            Self::Passkey => "passkey",
        }
    }

    /// The login a path of the API is (the routes that take the login limit and decide one).
    pub fn of_api_path(path: &str) -> Option<Self> {
        match path {
            "/login" => Some(Self::Password),
            "/login/mfa" => Some(Self::Mfa),
            "/login/passkey" => Some(Self::Passkey),
            _ => None,
        }
    }
}

/// The `outcome` of a login that ended in `error`: one of a fixed set.
pub fn login_outcome(error: &Error) -> &'static str {
    match error {
        Error::InvalidCredentials => "invalid_credentials",
        // Inside the login, a 429 is the lockout (the per-client limit is counted apart).
        Error::TooManyRequests { .. } => "locked",
        Error::MfaRequired { .. } => "mfa_required",
        Error::AccountDisabled => "disabled",
        Error::EmailNotVerified => "unverified",
        Error::InvalidMfaCode => "invalid_code",
        Error::InvalidMfaToken(_) => "invalid_token",
        Error::InvalidPasskey(_) => "invalid_passkey",
        Error::PasskeyChallengeInvalid(_) => "invalid_challenge",
        Error::PasskeyCounterRegressed => "counter_regressed",
        Error::Validation(_) => "invalid_request",
        Error::Busy { .. } => "busy",
        Error::DatabaseUnavailable(_) => "unavailable",
        _ => "error",
    }
}

/// Every `outcome` of `auth_logins_total`: `success`, the rate limit's, and [`login_outcome`]'s.
pub const LOGIN_OUTCOMES: [&str; 16] = [
    "success",
    "invalid_credentials",
    "locked",
    "rate_limited",
    "mfa_required",
    "disabled",
    "unverified",
    "invalid_code",
    "invalid_token",
    "invalid_passkey",
    "invalid_challenge",
    "counter_regressed",
    "invalid_request",
    "busy",
    "unavailable",
    "error",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LoginLabels {
    pub method: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: Arc<str>,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: Arc<str>,
    method: &'static str,
}

/// One route's and method's request metrics, resolved once ([`Metrics::request_series`]): the
/// histogram, and the counter of the first status seen (for most routes, nearly every request's).
pub struct RequestSeries {
    route: Arc<str>,
    method: &'static str,
    seconds: Histogram,
    first_status: OnceLock<(u16, Counter)>,
}

impl RequestSeries {
    /// Whether this is the series of `route` (`None`: unmatched) and `method`.
    pub fn is_for(&self, route: Option<&str>, method: &'static str) -> bool {
        self.method == method
            && match route {
                Some(route) => *self.route == *route,
                None => &*self.route == UNMATCHED,
            }
    }
}

/// The mail worker's counters (`mail::worker::Worker` holds a clone).
#[derive(Clone, Debug, Default)]
pub struct MailCounters {
    /// Mails accepted by the SMTP server.
    pub sent: Counter,
    /// Attempts that failed (each retry's, and the last one's).
    pub failed_attempts: Counter,
    /// Mails given up for good (a permanent refusal, or MAIL_MAX_ATTEMPTS reached).
    pub given_up: Counter,
}

/// A counter read at scrape time from a value kept elsewhere.
pub struct FnCounter(Box<dyn Fn() -> u64 + Send + Sync>);

impl FnCounter {
    pub fn new(read: impl Fn() -> u64 + Send + Sync + 'static) -> Self {
        Self(Box::new(read))
    }
}

impl std::fmt::Debug for FnCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FnCounter")
    }
}

impl EncodeMetric for FnCounter {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        ConstCounter::new((self.0)()).encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }
}

/// A gauge read at scrape time from a value kept elsewhere.
pub struct FnGauge(Box<dyn Fn() -> i64 + Send + Sync>);

impl FnGauge {
    pub fn new(read: impl Fn() -> i64 + Send + Sync + 'static) -> Self {
        Self(Box::new(read))
    }
}

impl std::fmt::Debug for FnGauge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FnGauge")
    }
}

impl EncodeMetric for FnGauge {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        ConstGauge::new((self.0)()).encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Gauge
    }
}

fn request_histogram() -> Histogram {
    Histogram::new(REQUEST_BUCKETS)
}

pub struct Metrics {
    registry: Mutex<Registry>,
    requests: Family<RequestLabels, Counter>,
    request_seconds: Family<RouteLabels, Histogram, fn() -> Histogram>,
    /// The routes seen so far, each once (the route templates: a bounded set), so that the
    /// labels of a request share one string instead of copying it.
    routes: RwLock<HashMap<Box<str>, Arc<str>>>,
    unmatched: Arc<str>,
    logins: Family<LoginLabels, Counter>,
    /// The hashing pool's queue waits (fed by `auth::password`'s hook).
    pub hash_wait: Histogram,
    pub mail: MailCounters,
    outbox_depth: Gauge,
    sessions_live: Gauge,
    /// When the live sessions were last counted (`Clock` ms; 0: never).
    sessions_counted_at: tokio::sync::Mutex<i64>,
    scrape_failures: Counter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// The registry with the metrics this module updates itself; `now_ms` is the start time.
    pub fn new(now_ms: i64) -> Self {
        let metrics = Self {
            registry: Mutex::new(Registry::default()),
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(request_histogram),
            routes: RwLock::new(HashMap::new()),
            unmatched: Arc::from(UNMATCHED),
            logins: Family::default(),
            hash_wait: Histogram::new(HASH_WAIT_BUCKETS),
            mail: MailCounters::default(),
            outbox_depth: Gauge::default(),
            sessions_live: Gauge::default(),
            sessions_counted_at: tokio::sync::Mutex::new(0),
            scrape_failures: Counter::default(),
        };
        metrics.register(
            "http_requests",
            "HTTP requests answered, by matched route (`unmatched` for any other path), method and status",
            metrics.requests.clone(),
        );
        metrics.register_with_unit(
            "http_request_duration",
            "Time to answer an HTTP request (until its response head), by matched route and method",
            Unit::Seconds,
            metrics.request_seconds.clone(),
        );
        // Every (method, outcome) from the start, at 0: a rate over a series that appears only
        // at its first event misses that event.
        for method in [
            LoginMethod::Password,
            LoginMethod::Mfa,
            LoginMethod::Passkey,
        ] {
            for outcome in ["success", "invalid_credentials", "locked", "rate_limited"] {
                let _ = metrics.logins.get_or_create(&LoginLabels {
                    method: method.as_str(),
                    outcome,
                });
            }
        }
        metrics.register(
            "auth_logins",
            "Logins decided, by method (password, mfa: the second step, passkey: first factor) and outcome",
            metrics.logins.clone(),
        );
        metrics.register_with_unit(
            "auth_hash_wait",
            "Time a password hash or verification waited in the hashing queue for a thread",
            Unit::Seconds,
            metrics.hash_wait.clone(),
        );
        metrics.register(
            "auth_mail_sent",
            "Mails accepted by the SMTP server",
            metrics.mail.sent.clone(),
        );
        metrics.register(
            "auth_mail_failed_attempts",
            "Mail delivery attempts that failed (each retried attempt, and the last)",
            metrics.mail.failed_attempts.clone(),
        );
        metrics.register(
            "auth_mail_given_up",
            "Mails given up for good (permanent refusal, or MAIL_MAX_ATTEMPTS reached)",
            metrics.mail.given_up.clone(),
        );
        metrics.register(
            "auth_mail_outbox_depth",
            "Mails waiting in the outbox (not sent, not given up), all instances'",
            metrics.outbox_depth.clone(),
        );
        metrics.register(
            "auth_sessions_live",
            "Sessions neither revoked nor expired, all instances' (counted at most every 15 s)",
            metrics.sessions_live.clone(),
        );
        metrics.register(
            "auth_metrics_scrape_read_failures",
            "Database reads of a scrape that failed or timed out (the last value is served)",
            metrics.scrape_failures.clone(),
        );
        metrics.register(
            "auth_build",
            "The running version",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        metrics.register_with_unit(
            "auth_start_time",
            "When this instance started, in Unix time",
            Unit::Seconds,
            ConstGauge::new(now_ms as f64 / 1000.0),
        );
        metrics
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a metric to the registry (see the module doc). `name` without `_total` or unit.
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        self.registry().register(name, help, metric);
    }

    /// [`Metrics::register`] with a unit, which the exposition appends to the name.
    pub fn register_with_unit(&self, name: &str, help: &str, unit: Unit, metric: impl Metric) {
        self.registry().register_with_unit(name, help, unit, metric);
    }

    /// Counts one answered request. `route` is the matched route's template (`None`: no route
    /// matched), `method` one of a fixed set.
    pub fn observe_request(
        &self,
        route: Option<&str>,
        method: &'static str,
        status: u16,
        elapsed: Duration,
    ) {
        let route = match route {
            Some(route) => self.route(route),
            None => self.unmatched.clone(),
        };
        self.request_seconds
            .get_or_create(&RouteLabels {
                route: route.clone(),
                method,
            })
            .observe(elapsed.as_secs_f64());
        self.requests
            .get_or_create(&RequestLabels {
                route,
                method,
                status,
            })
            .inc();
    }

    /// The series of one route (`None`: [`UNMATCHED`]) and method, resolved once, for
    /// [`Metrics::observe_series`]: the middleware keeps one per route instead of looking the
    /// labels up on every request. Resolve it when a request has been answered (a series appears
    /// at its first observation, as with [`Metrics::observe_request`]).
    pub fn request_series(&self, route: Option<&str>, method: &'static str) -> RequestSeries {
        let route = match route {
            Some(route) => self.route(route),
            None => self.unmatched.clone(),
        };
        let seconds = self
            .request_seconds
            .get_or_create(&RouteLabels {
                route: route.clone(),
                method,
            })
            .clone();
        RequestSeries {
            route,
            method,
            seconds,
            first_status: OnceLock::new(),
        }
    }

    /// [`Metrics::observe_request`] on a resolved series: the same histogram and counters.
    pub fn observe_series(&self, series: &RequestSeries, status: u16, elapsed: Duration) {
        series.seconds.observe(elapsed.as_secs_f64());
        let count = |status| {
            self.requests
                .get_or_create(&RequestLabels {
                    route: series.route.clone(),
                    method: series.method,
                    status,
                })
                .clone()
        };
        let (first, counter) = series.first_status.get_or_init(|| (status, count(status)));
        if *first == status {
            counter.inc();
        } else {
            count(status).inc();
        }
    }

    /// The shared string of a route template.
    fn route(&self, route: &str) -> Arc<str> {
        if let Some(known) = self
            .routes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(route)
        {
            return known.clone();
        }
        self.routes
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(route.into())
            .or_insert_with(|| Arc::from(route))
            .clone()
    }

    /// Counts a login that `result` decided.
    pub fn login<T>(&self, method: LoginMethod, result: &Result<T, Error>) {
        let outcome = match result {
            Ok(_) => "success",
            Err(e) => login_outcome(e),
        };
        self.login_outcome(method, outcome);
    }

    /// Counts a login refused by the per-client limit before it was tried.
    pub fn login_rate_limited(&self, method: LoginMethod) {
        self.login_outcome(method, "rate_limited");
    }

    fn login_outcome(&self, method: LoginMethod, outcome: &'static str) {
        self.logins
            .get_or_create(&LoginLabels {
                method: method.as_str(),
                outcome,
            })
            .inc();
    }

    /// Reads what a scrape reads from the database (the outbox's depth; the live sessions, at
    /// most once per [`SESSIONS_COUNT_EVERY_MS`]). A read that fails or takes longer than
    /// [`SCRAPE_READ_TIMEOUT`] leaves the last value.
    pub async fn refresh(&self, state: &AppState) {
        match read(crate::db::outbox::count_pending(&state.db)).await {
            Some(depth) => {
                self.outbox_depth.set(depth);
            }
            None => {
                self.scrape_failures.inc();
            }
        }
        // The webhook queue (`webhooks::register_metrics` serves it from the counters).
        match read(crate::db::webhook_deliveries::pending_count(&state.db)).await {
            Some(pending) => state.webhook_counters.set_pending(pending),
            None => {
                self.scrape_failures.inc();
            }
        }
        let mut counted_at = self.sessions_counted_at.lock().await;
        let now = state.clock.now_ms();
        if *counted_at == 0 || now.saturating_sub(*counted_at) >= SESSIONS_COUNT_EVERY_MS {
            match read(crate::db::sessions::count_live(&state.db, now)).await {
                Some(live) => {
                    self.sessions_live.set(live);
                    *counted_at = now;
                }
                None => {
                    self.scrape_failures.inc();
                }
            }
        }
    }

    /// The OpenMetrics text of every registered metric, after [`Metrics::refresh`].
    pub async fn scrape(&self, state: &AppState) -> String {
        self.refresh(state).await;
        let mut text = String::with_capacity(16 * 1024);
        prometheus_client::encoding::text::encode(&mut text, &self.registry())
            .expect("writing to a String does not fail");
        text
    }
}

/// A database read of a scrape: `None` when it failed or took too long (logged).
async fn read<T>(query: impl Future<Output = Result<T, sqlx::Error>>) -> Option<T> {
    match tokio::time::timeout(SCRAPE_READ_TIMEOUT, query).await {
        Ok(Ok(value)) => Some(value),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "metrics: a database read failed; serving the last value");
            None
        }
        Err(_) => {
            tracing::warn!("metrics: a database read timed out; serving the last value");
            None
        }
    }
}

/// Registers the hashing pool's metrics: its queue and threads, read at scrape time, and its
/// waits, through the pool's hook.
pub fn register_hashing(metrics: &Metrics, hasher: &Arc<crate::auth::password::PasswordHasher>) {
    let wait = metrics.hash_wait.clone();
    hasher.on_wait(move |waited| wait.observe(waited.as_secs_f64()));
    let stats = |read: fn(crate::auth::password::PoolStats) -> u64| {
        let hasher = Arc::downgrade(hasher);
        move || hasher.upgrade().map_or(0, |h| read(h.stats()))
    };
    metrics.register(
        "auth_hash_queue_depth",
        "Password hashes and verifications waiting for a hashing thread",
        FnGauge::new({
            let read = stats(|s| s.queued as u64);
            move || read() as i64
        }),
    );
    metrics.register(
        "auth_hash_in_progress",
        "Password hashes and verifications being computed (at most HASH_CONCURRENCY)",
        FnGauge::new({
            let read = stats(|s| s.running as u64);
            move || read() as i64
        }),
    );
    metrics.register(
        "auth_hash_refused",
        "Hashing jobs turned away because the expected wait passed HASH_MAX_WAIT_MILLISECONDS or the queue was full (503)",
        FnCounter::new(stats(|s| s.refused)),
    );
    metrics.register(
        "auth_hash_abandoned",
        "Hashing jobs dropped unstarted because their request had gone",
        FnCounter::new(stats(|s| s.abandoned)),
    );
    metrics.register(
        "auth_hash_computed",
        "Password hashes and verifications computed",
        FnCounter::new(stats(|s| s.computed)),
    );
}

/// Registers the database pool's metrics: connections in use, idle and at most, read at scrape
/// time, and the pool's own counters (`db::PoolObserver`).
pub fn register_database(metrics: &Metrics, db: &crate::db::Db) {
    let observer = db.observer();
    let gauge = |read: fn(crate::db::PoolState) -> u32| {
        let db = db.clone();
        FnGauge::new(move || i64::from(read(db.pool_state())))
    };
    metrics.register(
        "auth_db_connections_in_use",
        "Pooled database connections in use",
        gauge(|s| s.in_use),
    );
    metrics.register(
        "auth_db_connections_idle",
        "Pooled database connections open and idle",
        gauge(|s| s.idle),
    );
    metrics.register(
        "auth_db_connections_max",
        "The most pooled database connections (DATABASE_MAX_CONNECTIONS)",
        gauge(|s| s.max),
    );
    metrics.register(
        "auth_db_pool_timeouts",
        "Requests for a pooled connection that waited past the pool's timeout (3 s; answered 503)",
        observer.timeouts.clone(),
    );
    metrics.register_with_unit(
        "auth_db_acquire",
        "Time a transaction waited for a pooled connection",
        Unit::Seconds,
        observer.acquire_seconds.clone(),
    );
    // Blips (`db::watch`): read at scrape time from the pool's own counters.
    let counter = |read: fn(crate::db::DbStats) -> u64| {
        let db = db.clone();
        FnCounter::new(move || read(db.stats()))
    };
    metrics.register(
        "auth_db_connections_lost",
        "Queries whose database connection was lost (a restart, a terminated backend, the network)",
        counter(|s| s.connections_lost),
    );
    metrics.register(
        "auth_db_read_retries",
        "Reads run again on a fresh connection after their connection was lost",
        counter(|s| s.read_retries),
    );
    metrics.register(
        "auth_db_begin_retries",
        "Transactions begun again after their BEGIN's connection was lost",
        counter(|s| s.begin_retries),
    );
    // The session check's cache (`db::session_cache`).
    let cache = |read: fn((u64, u64, bool)) -> u64| {
        let db = db.clone();
        FnCounter::new(move || read(db.session_cache_stats()))
    };
    metrics.register(
        "auth_session_cache_hits",
        "Access-token checks answered from this instance's session cache (SESSION_CACHE_MS)",
        cache(|(hits, _, _)| hits),
    );
    metrics.register(
        "auth_session_cache_misses",
        "Access-token checks that read the database while the session cache was in use",
        cache(|(_, misses, _)| misses),
    );
    let in_use = db.clone();
    metrics.register(
        "auth_session_cache_in_use",
        "1 while this instance answers session checks from its cache; 0 with SESSION_CACHE_MS=0, or on PostgreSQL while its channel of changes is down",
        FnGauge::new(move || i64::from(in_use.session_cache_stats().2)),
    );
}

/// The per-client limits (`ratelimit`): where they are kept now, and Redis's failures.
pub fn register_rate_limits(metrics: &Metrics, limiter: &Arc<crate::ratelimit::RateLimiter>) {
    metrics.register(
        "auth_rate_limit_backend",
        "Where the per-client limits are kept now: 1 for the backend in use (memory: no REDIS_URL; redis; fallback: this instance's memory while Redis does not answer), 0 for the others",
        BackendGauge(limiter.clone()),
    );
    let counter = |read: fn(crate::ratelimit::shared::SharedStats) -> u64| {
        let limiter = limiter.clone();
        FnCounter::new(move || read(limiter.stats()))
    };
    metrics.register(
        "auth_rate_limit_redis_errors",
        "Calls to Redis for a per-client limit that failed or did not answer within REDIS_TIMEOUT_MS (the instance's own limit decided)",
        counter(|s| s.errors),
    );
    metrics.register(
        "auth_rate_limit_fallbacks",
        "Times this instance switched its per-client limits to its own memory because Redis did not answer",
        counter(|s| s.fallbacks),
    );
}

/// `auth_rate_limit_backend{backend}`: one series per backend, 1 for the one in use.
struct BackendGauge(Arc<crate::ratelimit::RateLimiter>);

impl std::fmt::Debug for BackendGauge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BackendGauge")
    }
}

impl EncodeMetric for BackendGauge {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        use crate::ratelimit::Backend;
        let current = self.0.backend();
        for backend in [Backend::Memory, Backend::Redis, Backend::Fallback] {
            let labels = [("backend", backend.name())];
            ConstGauge::new(i64::from(backend == current))
                .encode(encoder.encode_family(&labels)?)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Gauge
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(metrics: &Metrics) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &metrics.registry()).unwrap();
        text
    }

    #[test]
    fn every_outcome_is_one_of_the_documented_set() {
        use std::time::Duration;
        let errors = [
            Error::InvalidCredentials,
            Error::TooManyRequests {
                retry_after: Duration::ZERO,
            },
            Error::AccountDisabled,
            Error::EmailNotVerified,
            Error::InvalidMfaCode,
            Error::InvalidMfaToken("x"),
            Error::InvalidPasskey("x"),
            Error::PasskeyChallengeInvalid("x"),
            Error::PasskeyCounterRegressed,
            Error::validation("x", "y"),
            Error::Busy {
                retry_after: Duration::ZERO,
            },
            Error::DatabaseUnavailable(sqlx::Error::PoolTimedOut),
            Error::internal("x"),
            Error::NotFound("x"),
            Error::MfaRequired {
                mfa_token: "t".into(),
                methods: vec![],
                expires_in: 1,
            },
        ];
        for error in &errors {
            assert!(LOGIN_OUTCOMES.contains(&login_outcome(error)), "{error:?}");
        }
        assert!(LOGIN_OUTCOMES.contains(&"success") && LOGIN_OUTCOMES.contains(&"rate_limited"));
    }

    #[test]
    fn requests_are_labelled_by_route_template_and_each_route_is_kept_once() {
        let metrics = Metrics::new(0);
        for _ in 0..3 {
            metrics.observe_request(
                Some("/me/sessions/{id}"),
                "DELETE",
                204,
                Duration::from_millis(3),
            );
        }
        metrics.observe_request(None, "GET", 404, Duration::from_millis(1));
        assert_eq!(metrics.routes.read().unwrap().len(), 1);
        let text = text(&metrics);
        assert!(
            text.contains(
                r#"http_requests_total{route="/me/sessions/{id}",method="DELETE",status="204"} 3"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"http_requests_total{route="unmatched",method="GET",status="404"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"http_request_duration_seconds_count{route="/me/sessions/{id}",method="DELETE"} 3"#
            ),
            "{text}"
        );
    }

    #[test]
    fn read_at_scrape_metrics_read_their_value_then() {
        let metrics = Metrics::new(0);
        let value = Arc::new(std::sync::atomic::AtomicU64::new(7));
        let read = value.clone();
        metrics.register(
            "auth_example",
            "An example",
            FnCounter::new(move || read.load(std::sync::atomic::Ordering::Relaxed)),
        );
        metrics.register("auth_example_gauge", "An example", FnGauge::new(|| -2));
        assert!(text(&metrics).contains("auth_example_total 7\n"));
        value.store(9, std::sync::atomic::Ordering::Relaxed);
        let text = text(&metrics);
        assert!(text.contains("auth_example_total 9\n"), "{text}");
        assert!(text.contains("# TYPE auth_example counter\n"), "{text}");
        assert!(text.contains("auth_example_gauge -2\n"), "{text}");
    }
}
