//! One `Config`, read from the environment (and an optional `.env`) once at start and validated
//! there: a bad value stops the server with a message naming the variable.

use std::collections::HashMap;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use crate::net::IpNet;

/// Which database the `DATABASE_URL` selects. The URL is kept in the form sqlx understands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// `sqlite://path` (sqlx form) or `sqlite+aiosqlite:///path` (the original service's form).
    Sqlite(String),
    /// `postgres://...` or `postgresql://...`.
    Postgres(String),
}

impl DatabaseUrl {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        let (scheme, rest) = raw.split_once(':').ok_or_else(|| {
            "expected a URL such as sqlite://sqlite.db or postgres://...".to_string()
        })?;
        // `sqlite+aiosqlite`, `postgresql+asyncpg`: SQLAlchemy's dialect+driver form.
        let dialect = scheme
            .split('+')
            .next()
            .unwrap_or(scheme)
            .to_ascii_lowercase();
        match dialect.as_str() {
            "sqlite" => {
                if scheme.contains('+') {
                    // SQLAlchemy: `sqlite:///relative.db`, `sqlite:////absolute.db`.
                    let path = rest.strip_prefix("///").ok_or_else(|| {
                        "expected sqlite+aiosqlite:///path/to/file.db".to_string()
                    })?;
                    if path.is_empty() {
                        return Err("the SQLite file path is empty".into());
                    }
                    Ok(Self::Sqlite(format!("sqlite://{path}")))
                } else {
                    let path = rest.trim_start_matches("//");
                    if path.is_empty() {
                        return Err("the SQLite file path is empty".into());
                    }
                    Ok(Self::Sqlite(format!("sqlite:{rest}")))
                }
            }
            "postgres" | "postgresql" => Ok(Self::Postgres(format!("postgres:{rest}"))),
            other => Err(format!(
                "unsupported database `{other}`: use sqlite://... or postgres://..."
            )),
        }
    }

    pub fn backend_name(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "sqlite",
            Self::Postgres(_) => "postgres",
        }
    }
}

/// The JWT signing algorithms `ALGORITHM` accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SigningAlgorithm {
    HS256,
    HS384,
    HS512,
    RS256,
    ES256,
    EdDSA,
}

impl SigningAlgorithm {
    pub fn jwt(self) -> jsonwebtoken::Algorithm {
        use jsonwebtoken::Algorithm as A;
        match self {
            Self::HS256 => A::HS256,
            Self::HS384 => A::HS384,
            Self::HS512 => A::HS512,
            Self::RS256 => A::RS256,
            Self::ES256 => A::ES256,
            Self::EdDSA => A::EdDSA,
        }
    }

    pub fn is_symmetric(self) -> bool {
        matches!(self, Self::HS256 | Self::HS384 | Self::HS512)
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::HS256 => "HS256",
            Self::HS384 => "HS384",
            Self::HS512 => "HS512",
            Self::RS256 => "RS256",
            Self::ES256 => "ES256",
            Self::EdDSA => "EdDSA",
        }
    }
}

impl FromStr for SigningAlgorithm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_uppercase().as_str() {
            "HS256" => Ok(Self::HS256),
            "HS384" => Ok(Self::HS384),
            "HS512" => Ok(Self::HS512),
            "RS256" => Ok(Self::RS256),
            "ES256" => Ok(Self::ES256),
            "EDDSA" => Ok(Self::EdDSA),
            _ => Err(format!(
                "`{s}` is not one of HS256, HS384, HS512, RS256, ES256, EdDSA"
            )),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Requests per minute per client address; 0 turns a limit off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimits {
    /// POST /login.
    pub login: u32,
    /// POST /register.
    pub register: u32,
    /// POST /refresh, and the reset and verification confirmations.
    pub refresh: u32,
    /// POST /password-reset/request and /verify/request.
    pub mail: u32,
    /// IPv6 clients are counted by this prefix of their address (1 to 128; default 64).
    pub ipv6_prefix: u8,
    /// The most client addresses each group's table holds; beyond it the least recently seen
    /// address is forgotten.
    pub max_clients: usize,
}

#[derive(Clone, Debug)]
pub struct Argon2Config {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    /// The most memory a stored argon2 hash may ask for (ARGON2_MAX_MEMORY_KIB): one that asks
    /// for more is refused at import and never verified.
    pub max_memory_kib: u32,
}

/// How durably SQLite commits (`PRAGMA synchronous`, in WAL mode). See the README.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SqliteSynchronous {
    /// No fsync at all: survives a crash of the process, not of the machine.
    Off,
    /// The WAL is synced at checkpoints only: a power loss can undo the latest commits.
    Normal,
    /// The WAL is synced at every commit: an acknowledged write survives a power loss.
    Full,
    /// As FULL (in WAL mode SQLite syncs nothing more).
    Extra,
}

impl FromStr for SqliteSynchronous {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "off" => Ok(Self::Off),
            "normal" => Ok(Self::Normal),
            "full" => Ok(Self::Full),
            "extra" => Ok(Self::Extra),
            _ => Err(format!("`{s}` is not one of off, normal, full, extra")),
        }
    }
}

#[derive(Clone)]
pub struct Config {
    pub database_url: DatabaseUrl,
    /// The key that signs (HS*) tokens. At least 32 bytes.
    pub secret_key: Vec<u8>,
    /// True when no SECRET_KEY was configured and `secret_key` was generated at start.
    pub secret_key_generated: bool,
    pub algorithm: SigningAlgorithm,
    /// With an asymmetric algorithm: the key that signs access tokens (PRIVATE_KEY_FILE).
    /// `auth::tokens::TokenKeys::new` reads it at start.
    pub private_key_file: Option<std::path::PathBuf>,
    /// Retired keys that still verify access tokens and stay in the JWKS (read at start too).
    pub previous_public_key_files: Vec<std::path::PathBuf>,
    /// This server's own public address, for the discovery document (default: PUBLIC_URL).
    pub api_url: String,
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    pub refresh_reuse_interval: Duration,
    pub session_max_age: Duration,
    pub jwt_issuer: String,
    pub jwt_audience: String,
    pub argon2: Argon2Config,
    /// How many password hashes run at once (default: the number of cores).
    pub hash_concurrency: usize,
    /// A hard bound on the hash jobs waiting for a slot (memory); beyond it, 503 at once.
    pub hash_queue_limit: usize,
    /// A hash whose expected wait for a slot is longer than this is turned away with 503.
    pub hash_max_wait: Duration,
    /// SQLite's `PRAGMA synchronous` (ignored on PostgreSQL).
    pub sqlite_synchronous: SqliteSynchronous,
    pub database_max_connections: Option<u32>,
    /// How long start-up waits for an unreachable database before giving up.
    pub database_connect_timeout: Duration,
    pub host: IpAddr,
    pub port: u16,
    pub public_url: String,
    /// Where mail goes; `None` writes each mail to the log instead (development).
    pub smtp_url: Option<String>,
    /// The From of every mail (required with SMTP_URL).
    pub mail_from: String,
    pub password_reset_ttl: Duration,
    pub verify_email_ttl: Duration,
    /// At most one reset (or verification) mail per address per this interval.
    pub mail_rate_limit: Duration,
    /// At most this many mails caused by one account per hour (verification, reset, email
    /// changes); notices of a changed email or password are not counted, so they cannot be
    /// suppressed by using the allowance up.
    pub mail_account_limit_per_hour: u32,
    /// The first retry of a failed mail waits this long; each next one twice as long (up to an hour).
    pub mail_retry_base: Duration,
    /// Attempts after which a mail is marked failed for good.
    pub mail_max_attempts: u32,
    pub cors_origins: Vec<String>,
    pub require_verified_email: bool,
    pub password_min_length: usize,
    /// The lowest zxcvbn score (0 to 4) a new password may have.
    pub password_min_score: u8,
    /// Failed logins to one address that are answered at once; each further one locks the
    /// address for twice as long as the last, from `login_lockout_first` up to `login_lockout_max`.
    pub login_free_attempts: u32,
    pub login_lockout_first: Duration,
    pub login_lockout_max: Duration,
    /// Requests per minute per client address (0: no limit), by endpoint group.
    pub rate_limits: RateLimits,
    pub trusted_proxies: Vec<IpNet>,
    pub hsts: bool,
    pub log_format: LogFormat,
    pub body_limit_bytes: usize,
    /// How often ended sessions, spent tokens and old mail are deleted.
    pub purge_interval: Duration,
    pub request_timeout: Duration,
    /// A request head (request line and headers) must arrive within this, counted from the
    /// connection's start or the head's first byte; otherwise the connection is closed.
    pub header_read_timeout: Duration,
    /// A connection idle between requests this long is closed.
    pub keep_alive_timeout: Duration,
    /// The most connections served at once; `None`: derived from the open-file limit at start.
    pub max_connections: Option<usize>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("database", &self.database_url.backend_name())
            .field("secret_key", &"[redacted]")
            .field("algorithm", &self.algorithm)
            .field("host", &self.host)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// A configuration error: names the variable and says what is wrong, on one line.
#[derive(Debug, thiserror::Error)]
#[error("invalid {var}: {message}")]
pub struct ConfigError {
    pub var: &'static str,
    pub message: String,
}

impl ConfigError {
    pub fn new(var: &'static str, message: impl Into<String>) -> Self {
        Self {
            var,
            message: message.into(),
        }
    }
}

pub const PASSWORD_MAX_LENGTH: usize = 128;
const DEFAULT_PASSWORD_MIN_LENGTH: usize = 8;

impl Config {
    /// Reads `.env` (if present) and the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        // A missing .env is normal; a malformed one is a configuration error.
        match dotenvy::dotenv() {
            Ok(_) => {}
            Err(e) if e.not_found() => {}
            Err(e) => {
                return Err(ConfigError {
                    var: ".env",
                    message: e.to_string(),
                });
            }
        }
        Self::from_vars(std::env::vars())
    }

    /// Builds the configuration from a set of variables (tests use this directly).
    pub fn from_vars<I, K, V>(vars: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        // The last value of a variable wins; an empty value means unset.
        let mut vars: HashMap<String, String> = vars
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        vars.retain(|_, v| !v.trim().is_empty());
        let get = |k: &str| vars.get(k).map(|v| v.trim().to_string());

        fn parse<T: FromStr>(
            var: &'static str,
            value: Option<String>,
            default: T,
        ) -> Result<T, ConfigError>
        where
            T::Err: std::fmt::Display,
        {
            match value {
                None => Ok(default),
                Some(v) => v.parse::<T>().map_err(|e| ConfigError {
                    var,
                    message: format!("`{v}`: {e}"),
                }),
            }
        }
        fn positive(var: &'static str, v: u64) -> Result<u64, ConfigError> {
            if v == 0 {
                Err(ConfigError {
                    var,
                    message: "must be greater than 0".into(),
                })
            } else {
                Ok(v)
            }
        }
        fn within(var: &'static str, v: u64, min: u64, max: u64) -> Result<u64, ConfigError> {
            if (min..=max).contains(&v) {
                Ok(v)
            } else {
                Err(ConfigError {
                    var,
                    message: format!("{v} must be {min} to {max}"),
                })
            }
        }
        fn boolean(var: &'static str, value: Option<String>) -> Result<bool, ConfigError> {
            match value.as_deref().map(str::to_ascii_lowercase).as_deref() {
                None => Ok(false),
                Some("true" | "1" | "yes" | "on") => Ok(true),
                Some("false" | "0" | "no" | "off") => Ok(false),
                Some(v) => Err(ConfigError {
                    var,
                    message: format!("`{v}` is not true or false"),
                }),
            }
        }
        let err = |var: &'static str, message: String| ConfigError { var, message };

        let database_url = DatabaseUrl::parse(
            &get("DATABASE_URL").unwrap_or_else(|| "sqlite://sqlite.db".to_string()),
        )
        .map_err(|m| err("DATABASE_URL", m))?;

        let (secret_key, secret_key_generated) = match get("SECRET_KEY") {
            Some(key) => {
                if key.len() < 32 {
                    return Err(err(
                        "SECRET_KEY",
                        format!(
                            "it is {} bytes long; use at least 32 random bytes (for example `openssl rand -hex 32`)",
                            key.len()
                        ),
                    ));
                }
                (key.into_bytes(), false)
            }
            None => {
                let mut key = vec![0u8; 64];
                getrandom::fill(&mut key)
                    .map_err(|e| err("SECRET_KEY", format!("cannot generate a key: {e}")))?;
                (key, true)
            }
        };

        let algorithm = parse("ALGORITHM", get("ALGORITHM"), SigningAlgorithm::HS256)?;
        let private_key_file = match (algorithm.is_symmetric(), get("PRIVATE_KEY_FILE")) {
            (true, None) => None,
            (true, Some(_)) => {
                return Err(err(
                    "PRIVATE_KEY_FILE",
                    format!(
                        "is set, but ALGORITHM={} signs with SECRET_KEY; use RS256, ES256 or EdDSA, or unset it",
                        algorithm.name()
                    ),
                ));
            }
            (false, None) => {
                return Err(err(
                    "PRIVATE_KEY_FILE",
                    format!(
                        "is required with ALGORITHM={} (make one with `auth-server generate-key`)",
                        algorithm.name()
                    ),
                ));
            }
            (false, Some(path)) => Some(std::path::PathBuf::from(path)),
        };
        let previous_public_key_files = get("PREVIOUS_PUBLIC_KEY_FILES")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(std::path::PathBuf::from)
            .collect();
        let minutes = positive(
            "ACCESS_TOKEN_EXPIRE_MINUTES",
            parse(
                "ACCESS_TOKEN_EXPIRE_MINUTES",
                get("ACCESS_TOKEN_EXPIRE_MINUTES"),
                30u64,
            )?,
        )?;
        let days = positive(
            "REFRESH_TOKEN_EXPIRE_DAYS",
            parse(
                "REFRESH_TOKEN_EXPIRE_DAYS",
                get("REFRESH_TOKEN_EXPIRE_DAYS"),
                7u64,
            )?,
        )?;
        let reuse = parse(
            "REFRESH_REUSE_INTERVAL_SECONDS",
            get("REFRESH_REUSE_INTERVAL_SECONDS"),
            10u64,
        )?;
        let session_days = positive(
            "SESSION_MAX_AGE_DAYS",
            parse("SESSION_MAX_AGE_DAYS", get("SESSION_MAX_AGE_DAYS"), 30u64)?,
        )?;
        // Bounded so that timestamps cannot overflow.
        for (var, v, max) in [
            ("ACCESS_TOKEN_EXPIRE_MINUTES", minutes, 60 * 24 * 366),
            ("REFRESH_TOKEN_EXPIRE_DAYS", days, 3660),
            ("SESSION_MAX_AGE_DAYS", session_days, 3660),
            ("REFRESH_REUSE_INTERVAL_SECONDS", reuse, 3600),
        ] {
            if v > max {
                return Err(err(var, format!("{v} is larger than the maximum {max}")));
            }
        }

        let jwt_issuer = get("JWT_ISSUER").unwrap_or_else(|| "auth-server".into());
        let jwt_audience = get("JWT_AUDIENCE").unwrap_or_else(|| "auth-server".into());

        let memory_kib = parse("ARGON2_MEMORY_KIB", get("ARGON2_MEMORY_KIB"), 19_456u32)?;
        let iterations = parse("ARGON2_ITERATIONS", get("ARGON2_ITERATIONS"), 2u32)?;
        let parallelism = parse("ARGON2_PARALLELISM", get("ARGON2_PARALLELISM"), 1u32)?;
        argon2::Params::new(memory_kib, iterations, parallelism, None).map_err(|e| {
            err(
                "ARGON2_MEMORY_KIB",
                format!(
                    "argon2 refuses memory={memory_kib} KiB, iterations={iterations}, parallelism={parallelism}: {e}"
                ),
            )
        })?;
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let hash_concurrency = positive(
            "HASH_CONCURRENCY",
            parse("HASH_CONCURRENCY", get("HASH_CONCURRENCY"), cores as u64)?,
        )? as usize;
        let max_memory_kib = parse(
            "ARGON2_MAX_MEMORY_KIB",
            get("ARGON2_MAX_MEMORY_KIB"),
            262_144u32,
        )?;
        if max_memory_kib < memory_kib {
            return Err(err(
                "ARGON2_MAX_MEMORY_KIB",
                format!("{max_memory_kib} is less than ARGON2_MEMORY_KIB ({memory_kib})"),
            ));
        }
        let hash_queue_limit = positive(
            "HASH_QUEUE_LIMIT",
            parse("HASH_QUEUE_LIMIT", get("HASH_QUEUE_LIMIT"), 1024u64)?,
        )?
        .min(1_000_000) as usize;
        let hash_max_wait = Duration::from_millis(
            positive(
                "HASH_MAX_WAIT_MILLISECONDS",
                parse(
                    "HASH_MAX_WAIT_MILLISECONDS",
                    get("HASH_MAX_WAIT_MILLISECONDS"),
                    5000u64,
                )?,
            )?
            .min(3_600_000),
        );
        let sqlite_synchronous = parse(
            "SQLITE_SYNCHRONOUS",
            get("SQLITE_SYNCHRONOUS"),
            SqliteSynchronous::Normal,
        )?;

        let database_max_connections = match get("DATABASE_MAX_CONNECTIONS") {
            None => None,
            Some(v) => Some(
                positive(
                    "DATABASE_MAX_CONNECTIONS",
                    parse("DATABASE_MAX_CONNECTIONS", Some(v), 0u64)?,
                )?
                .min(10_000) as u32,
            ),
        };

        let database_connect_timeout = Duration::from_secs(parse(
            "DATABASE_CONNECT_TIMEOUT_SECONDS",
            get("DATABASE_CONNECT_TIMEOUT_SECONDS"),
            10u64,
        )?);

        let host = parse(
            "HOST",
            get("HOST"),
            IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        )?;
        let port = parse("PORT", get("PORT"), 8000u16)?;

        let public_url = get("PUBLIC_URL").unwrap_or_else(|| "http://localhost:8000".into());
        if !(public_url.starts_with("http://") || public_url.starts_with("https://")) {
            return Err(err(
                "PUBLIC_URL",
                format!("`{public_url}` must start with http:// or https://"),
            ));
        }
        let public_url = public_url.trim_end_matches('/').to_string();
        let api_url = get("API_URL").unwrap_or_else(|| public_url.clone());
        if !(api_url.starts_with("http://") || api_url.starts_with("https://")) {
            return Err(err(
                "API_URL",
                format!("`{api_url}` must start with http:// or https://"),
            ));
        }
        let api_url = api_url.trim_end_matches('/').to_string();

        let smtp_url = get("SMTP_URL");
        if let Some(url) = &smtp_url {
            let parsed =
                url::Url::parse(url).map_err(|e| err("SMTP_URL", format!("not a URL: {e}")))?;
            if !matches!(parsed.scheme(), "smtp" | "smtps") || parsed.host_str().is_none() {
                return Err(err(
                    "SMTP_URL",
                    "expected smtp://user:password@host:port or smtps://...".into(),
                ));
            }
        }
        let mail_from = match (get("MAIL_FROM"), &smtp_url) {
            (Some(from), _) => from,
            (None, None) => "auth-server <no-reply@localhost>".to_string(),
            (None, Some(_)) => {
                return Err(err("MAIL_FROM", "is required when SMTP_URL is set".into()));
            }
        };
        if mail_from.parse::<lettre::message::Mailbox>().is_err() {
            return Err(err(
                "MAIL_FROM",
                format!("`{mail_from}` is not an address such as `Example <no-reply@example.com>`"),
            ));
        }
        let reset_minutes = positive(
            "PASSWORD_RESET_EXPIRE_MINUTES",
            parse(
                "PASSWORD_RESET_EXPIRE_MINUTES",
                get("PASSWORD_RESET_EXPIRE_MINUTES"),
                30u64,
            )?,
        )?
        .min(60 * 24 * 30);
        let verify_hours = positive(
            "VERIFY_EMAIL_EXPIRE_HOURS",
            parse(
                "VERIFY_EMAIL_EXPIRE_HOURS",
                get("VERIFY_EMAIL_EXPIRE_HOURS"),
                24u64,
            )?,
        )?
        .min(24 * 365);
        let mail_rate_limit = Duration::from_secs(
            parse(
                "MAIL_RATE_LIMIT_SECONDS",
                get("MAIL_RATE_LIMIT_SECONDS"),
                60u64,
            )?
            .min(86_400),
        );
        let mail_account_limit_per_hour = u32::try_from(positive(
            "MAIL_ACCOUNT_LIMIT_PER_HOUR",
            parse(
                "MAIL_ACCOUNT_LIMIT_PER_HOUR",
                get("MAIL_ACCOUNT_LIMIT_PER_HOUR"),
                10u64,
            )?,
        )?)
        .unwrap_or(u32::MAX);
        let mail_retry_base = Duration::from_secs(
            positive(
                "MAIL_RETRY_BASE_SECONDS",
                parse(
                    "MAIL_RETRY_BASE_SECONDS",
                    get("MAIL_RETRY_BASE_SECONDS"),
                    5u64,
                )?,
            )?
            .min(3600),
        );
        let mail_max_attempts = positive(
            "MAIL_MAX_ATTEMPTS",
            parse("MAIL_MAX_ATTEMPTS", get("MAIL_MAX_ATTEMPTS"), 10u64)?,
        )?
        .min(100) as u32;

        let mut cors_origins = Vec::new();
        for origin in get("CORS_ORIGINS")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|o| !o.is_empty())
        {
            let valid = (origin.starts_with("http://") || origin.starts_with("https://"))
                && !origin.trim_end_matches('/').contains(['*', ' '])
                && axum::http::HeaderValue::from_str(origin).is_ok();
            if !valid {
                return Err(err(
                    "CORS_ORIGINS",
                    format!(
                        "`{origin}` is not an origin such as https://app.example.com (wildcards and `null` are not allowed)"
                    ),
                ));
            }
            cors_origins.push(origin.trim_end_matches('/').to_string());
        }

        let require_verified_email =
            boolean("REQUIRE_VERIFIED_EMAIL", get("REQUIRE_VERIFIED_EMAIL"))?;
        let password_min_length = parse(
            "PASSWORD_MIN_LENGTH",
            get("PASSWORD_MIN_LENGTH"),
            DEFAULT_PASSWORD_MIN_LENGTH,
        )?;
        if !(DEFAULT_PASSWORD_MIN_LENGTH..=PASSWORD_MAX_LENGTH).contains(&password_min_length) {
            return Err(err(
                "PASSWORD_MIN_LENGTH",
                format!(
                    "{password_min_length} must be between {DEFAULT_PASSWORD_MIN_LENGTH} and {PASSWORD_MAX_LENGTH} (it can only be raised)"
                ),
            ));
        }

        let password_min_score = parse("PASSWORD_MIN_SCORE", get("PASSWORD_MIN_SCORE"), 2u8)?;
        if password_min_score > 4 {
            return Err(err(
                "PASSWORD_MIN_SCORE",
                format!("{password_min_score} must be 0 to 4"),
            ));
        }
        let login_free_attempts =
            parse("LOGIN_FREE_ATTEMPTS", get("LOGIN_FREE_ATTEMPTS"), 5u32)?.min(1000);
        let login_lockout_max = Duration::from_secs(positive(
            "LOGIN_LOCKOUT_MAX_SECONDS",
            parse(
                "LOGIN_LOCKOUT_MAX_SECONDS",
                get("LOGIN_LOCKOUT_MAX_SECONDS"),
                900u64,
            )?,
        )?);
        let login_lockout_first = Duration::from_secs(
            positive(
                "LOGIN_LOCKOUT_FIRST_SECONDS",
                parse(
                    "LOGIN_LOCKOUT_FIRST_SECONDS",
                    get("LOGIN_LOCKOUT_FIRST_SECONDS"),
                    1u64,
                )?,
            )?
            .min(login_lockout_max.as_secs()),
        );
        let per_minute = |var: &'static str, default: u32| -> Result<u32, ConfigError> {
            Ok(parse(var, get(var), default)?.min(1_000_000))
        };
        let rate_limits = RateLimits {
            login: per_minute("RATE_LIMIT_LOGIN_PER_MINUTE", 30)?,
            register: per_minute("RATE_LIMIT_REGISTER_PER_MINUTE", 10)?,
            refresh: per_minute("RATE_LIMIT_REFRESH_PER_MINUTE", 60)?,
            mail: per_minute("RATE_LIMIT_MAIL_PER_MINUTE", 10)?,
            ipv6_prefix: within(
                "RATE_LIMIT_IPV6_PREFIX",
                parse(
                    "RATE_LIMIT_IPV6_PREFIX",
                    get("RATE_LIMIT_IPV6_PREFIX"),
                    64u64,
                )?,
                1,
                128,
            )? as u8,
            max_clients: within(
                "RATE_LIMIT_MAX_CLIENTS",
                parse(
                    "RATE_LIMIT_MAX_CLIENTS",
                    get("RATE_LIMIT_MAX_CLIENTS"),
                    100_000u64,
                )?,
                1,
                10_000_000,
            )? as usize,
        };

        let mut trusted_proxies = Vec::new();
        for item in get("TRUSTED_PROXIES")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            trusted_proxies.push(
                item.parse::<IpNet>()
                    .map_err(|e| err("TRUSTED_PROXIES", format!("`{item}`: {e}")))?,
            );
        }

        let hsts = boolean("HSTS", get("HSTS"))?;
        let log_format = match get("LOG_FORMAT")
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(v) => return Err(err("LOG_FORMAT", format!("`{v}` is not text or json"))),
        };
        let body_limit_bytes = positive(
            "BODY_LIMIT_BYTES",
            parse("BODY_LIMIT_BYTES", get("BODY_LIMIT_BYTES"), 64 * 1024u64)?,
        )? as usize;
        let request_timeout = Duration::from_secs(positive(
            "REQUEST_TIMEOUT_SECONDS",
            parse(
                "REQUEST_TIMEOUT_SECONDS",
                get("REQUEST_TIMEOUT_SECONDS"),
                30u64,
            )?,
        )?);

        let header_read_timeout = Duration::from_secs(within(
            "HEADER_READ_TIMEOUT_SECONDS",
            parse(
                "HEADER_READ_TIMEOUT_SECONDS",
                get("HEADER_READ_TIMEOUT_SECONDS"),
                10u64,
            )?,
            1,
            3600,
        )?);
        let keep_alive_timeout = Duration::from_secs(within(
            "KEEP_ALIVE_TIMEOUT_SECONDS",
            parse(
                "KEEP_ALIVE_TIMEOUT_SECONDS",
                get("KEEP_ALIVE_TIMEOUT_SECONDS"),
                75u64,
            )?,
            1,
            86_400,
        )?);
        let max_connections = match get("MAX_CONNECTIONS") {
            None => None,
            Some(v) => Some(within(
                "MAX_CONNECTIONS",
                parse("MAX_CONNECTIONS", Some(v), 0u64)?,
                1,
                1_000_000,
            )? as usize),
        };

        let purge_interval = Duration::from_secs(positive(
            "PURGE_INTERVAL_SECONDS",
            parse(
                "PURGE_INTERVAL_SECONDS",
                get("PURGE_INTERVAL_SECONDS"),
                3600u64,
            )?,
        )?);

        Ok(Self {
            database_url,
            secret_key,
            secret_key_generated,
            algorithm,
            private_key_file,
            previous_public_key_files,
            api_url,
            access_token_ttl: Duration::from_secs(minutes * 60),
            refresh_token_ttl: Duration::from_secs(days * 86_400),
            refresh_reuse_interval: Duration::from_secs(reuse),
            session_max_age: Duration::from_secs(session_days * 86_400),
            jwt_issuer,
            jwt_audience,
            argon2: Argon2Config {
                memory_kib,
                iterations,
                parallelism,
                max_memory_kib,
            },
            hash_concurrency,
            hash_queue_limit,
            hash_max_wait,
            sqlite_synchronous,
            database_max_connections,
            database_connect_timeout,
            host,
            port,
            public_url,
            smtp_url,
            mail_from,
            password_reset_ttl: Duration::from_secs(reset_minutes * 60),
            verify_email_ttl: Duration::from_secs(verify_hours * 3600),
            mail_rate_limit,
            mail_account_limit_per_hour,
            mail_retry_base,
            mail_max_attempts,
            cors_origins,
            require_verified_email,
            password_min_length,
            password_min_score,
            login_free_attempts,
            login_lockout_first,
            login_lockout_max,
            rate_limits,
            trusted_proxies,
            hsts,
            log_format,
            body_limit_bytes,
            purge_interval,
            request_timeout,
            header_read_timeout,
            keep_alive_timeout,
            max_connections,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_vars(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn defaults_are_the_contracts() {
        let c = config(&[]).unwrap();
        assert_eq!(
            c.database_url,
            DatabaseUrl::Sqlite("sqlite://sqlite.db".into())
        );
        assert!(c.secret_key_generated);
        assert_eq!(c.port, 8000);
        assert_eq!(c.access_token_ttl, Duration::from_secs(1800));
        assert_eq!(c.refresh_token_ttl, Duration::from_secs(7 * 86_400));
        assert_eq!(c.argon2.memory_kib, 19_456);
        assert_eq!(c.body_limit_bytes, 65_536);
        assert_eq!(c.hash_max_wait, Duration::from_secs(5));
        assert_eq!(c.hash_queue_limit, 1024);
        assert_eq!(c.argon2.max_memory_kib, 262_144);
        assert_eq!(c.sqlite_synchronous, SqliteSynchronous::Normal);
        assert_eq!(c.rate_limits.ipv6_prefix, 64);
        assert_eq!(c.rate_limits.max_clients, 100_000);
        assert_eq!(c.header_read_timeout, Duration::from_secs(10));
        assert_eq!(c.keep_alive_timeout, Duration::from_secs(75));
        assert_eq!(c.max_connections, None);
        let c = config(&[("RATE_LIMIT_IPV6_PREFIX", "48"), ("MAX_CONNECTIONS", "500")]).unwrap();
        assert_eq!(c.rate_limits.ipv6_prefix, 48);
        assert_eq!(c.max_connections, Some(500));
    }

    #[test]
    fn the_last_value_wins_and_empty_means_unset() {
        let c = config(&[("PORT", "9000"), ("PORT", "9001")]).unwrap();
        assert_eq!(c.port, 9001);
        let c = config(&[("PORT", "9000"), ("PORT", " ")]).unwrap();
        assert_eq!(c.port, 8000);
    }

    #[test]
    fn database_url_forms() {
        assert_eq!(
            DatabaseUrl::parse("sqlite+aiosqlite:///./sqlite.db").unwrap(),
            DatabaseUrl::Sqlite("sqlite://./sqlite.db".into())
        );
        assert_eq!(
            DatabaseUrl::parse("sqlite+aiosqlite:////var/lib/a.db").unwrap(),
            DatabaseUrl::Sqlite("sqlite:///var/lib/a.db".into())
        );
        assert_eq!(
            DatabaseUrl::parse("postgresql://u@h/db").unwrap(),
            DatabaseUrl::Postgres("postgres://u@h/db".into())
        );
        assert!(DatabaseUrl::parse("mysql://x").is_err());
    }

    #[test]
    fn bad_values_name_the_variable() {
        let e = config(&[("PORT", "eighty")]).unwrap_err();
        assert_eq!(e.var, "PORT");
        let e = config(&[("SECRET_KEY", "short")]).unwrap_err();
        assert_eq!(e.var, "SECRET_KEY");
        let e = config(&[("PASSWORD_MIN_LENGTH", "6")]).unwrap_err();
        assert_eq!(e.var, "PASSWORD_MIN_LENGTH");
        let e = config(&[("CORS_ORIGINS", "*")]).unwrap_err();
        assert_eq!(e.var, "CORS_ORIGINS");
        let e = config(&[("SQLITE_SYNCHRONOUS", "sometimes")]).unwrap_err();
        assert_eq!(e.var, "SQLITE_SYNCHRONOUS");
        assert_eq!(
            config(&[("SQLITE_SYNCHRONOUS", "Normal")])
                .unwrap()
                .sqlite_synchronous,
            SqliteSynchronous::Normal
        );
        let e = config(&[("HASH_MAX_WAIT_MILLISECONDS", "0")]).unwrap_err();
        assert_eq!(e.var, "HASH_MAX_WAIT_MILLISECONDS");
        let e = config(&[
            ("ARGON2_MEMORY_KIB", "65536"),
            ("ARGON2_MAX_MEMORY_KIB", "32768"),
        ])
        .unwrap_err();
        assert_eq!(e.var, "ARGON2_MAX_MEMORY_KIB");
        for (var, value) in [
            ("RATE_LIMIT_IPV6_PREFIX", "0"),
            ("RATE_LIMIT_IPV6_PREFIX", "129"),
            ("RATE_LIMIT_MAX_CLIENTS", "0"),
            ("HEADER_READ_TIMEOUT_SECONDS", "0"),
            ("KEEP_ALIVE_TIMEOUT_SECONDS", "0"),
            ("MAX_CONNECTIONS", "0"),
            ("MAX_CONNECTIONS", "many"),
        ] {
            let e = config(&[(var, value)]).unwrap_err();
            assert_eq!(e.var, var, "{value}");
        }
        let e = config(&[("ALGORITHM", "none")]).unwrap_err();
        assert_eq!(e.var, "ALGORITHM");
        assert!(e.to_string().starts_with("invalid ALGORITHM"));
    }
}
