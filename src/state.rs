//! The state every request shares.

use std::sync::Arc;

use crate::auth::password::{PasswordHasher, PoolConfig};
use crate::auth::seal::SealKey;
use crate::auth::tokens::TokenKeys;
use crate::auth::webauthn::WebAuthn;
use crate::clock::Clock;
use crate::config::Config;
use crate::db::Db;
use crate::metrics::Metrics;

/// The shared state, behind one `Arc`: extractors and middleware clone it for every request, and
/// one reference count is cheaper than one per field (a profile of GET /me showed the field-wise
/// clone and drop at 4% of the server's time). Fields are read through `Deref`.
#[derive(Clone, Debug)]
pub struct AppState(Arc<State>);

impl std::ops::Deref for AppState {
    type Target = State;

    fn deref(&self) -> &State {
        &self.0
    }
}

#[derive(Debug)]
pub struct State {
    pub config: Arc<Config>,
    pub db: Db,
    pub hasher: Arc<PasswordHasher>,
    pub tokens: Arc<TokenKeys>,
    /// Seals TOTP secrets and keys recovery-code hashes (MFA_ENCRYPTION_KEY, or derived from
    /// SECRET_KEY).
    pub seal: Arc<SealKey>,
    /// Per-client-address request limits (in Redis with REDIS_URL, else in memory).
    pub limiter: Arc<crate::ratelimit::RateLimiter>,
    /// Wakes the mail worker when a request has queued mail.
    pub mail_wakeup: Arc<tokio::sync::Notify>,
    /// The time every expiry, window and lockout decision reads (the wall clock in production).
    pub clock: Clock,
    /// The WebAuthn relying party (PASSKEYS' settings), built once.
    pub webauthn: Arc<WebAuthn>,
    /// Wakes the webhook worker when a transaction has queued deliveries.
    pub webhook_wakeup: Arc<tokio::sync::Notify>,
    /// What this instance's webhook worker has done (for the metrics).
    pub webhook_counters: Arc<crate::webhooks::Counters>,
    /// This server's metrics registry (GET /metrics); see `crate::metrics` for adding one.
    pub metrics: Arc<Metrics>,
}

impl AppState {
    /// `tokens` comes from `TokenKeys::new(&config.tokens)`, which reads the key files: the
    /// caller does that first, so that a bad key stops the start before the database is awaited.
    pub fn new(config: Config, db: Db, tokens: TokenKeys, clock: Clock) -> crate::Result<Self> {
        let hasher = PasswordHasher::new(
            &config.argon2,
            PoolConfig {
                concurrency: config.hashing.concurrency,
                queue_limit: config.hashing.queue_limit,
                max_wait: config.hashing.max_wait,
                nice: config.hashing.nice,
            },
        )?;
        let limiter = Arc::new(
            crate::ratelimit::RateLimiter::with_redis(
                config.rate_limits,
                &config.redis,
                clock.clone(),
            )
            .map_err(crate::Error::internal)?,
        );
        // `/health`'s "degraded" window runs on the server's clock.
        db.use_clock(clock.clone());
        db.use_session_cache(
            config.tokens.session_cache,
            config.tokens.session_cache_entries,
        );
        let seal = match &config.mfa.encryption_key {
            Some(key) => SealKey::new(*key.expose()),
            None => SealKey::derive(config.tokens.secret_key()),
        };
        let webauthn = WebAuthn::new(&config.passkeys).map_err(crate::Error::internal)?;
        let hasher = Arc::new(hasher);
        let metrics = Metrics::new(clock.now_ms());
        crate::metrics::register_hashing(&metrics, &hasher);
        crate::metrics::register_database(&metrics, &db);
        let webhook_counters = Arc::new(crate::webhooks::Counters::default());
        crate::webhooks::register_metrics(&metrics, &webhook_counters);
        crate::metrics::register_rate_limits(&metrics, &limiter);
        Ok(Self(Arc::new(State {
            metrics: Arc::new(metrics),
            webauthn: Arc::new(webauthn),
            limiter,
            seal: Arc::new(seal),
            config: Arc::new(config),
            db,
            hasher,
            tokens: Arc::new(tokens),
            mail_wakeup: Arc::new(tokio::sync::Notify::new()),
            webhook_wakeup: Arc::new(tokio::sync::Notify::new()),
            webhook_counters,
            clock,
        })))
    }
}
