//! Tokens: the key that signs them (`SECRET_KEY`, or a private key file with an asymmetric
//! `ALGORITHM`), their lifetimes, their issuer and audience.
//!
//! The configuration holds the key files' paths only: `auth::tokens::TokenKeys::new` reads them
//! when the server starts (and names the variable if one cannot be used).

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use super::values::{
    List, at_most, converted, days, list, milliseconds, minutes, parsed, positive_at_most, seconds,
    text, within,
};
use super::{ConfigError, Secret};

#[derive(Clone, Debug, clap::Args)]
#[command(next_help_heading = "Tokens")]
pub struct TokenConfig {
    /// At least 32 bytes (for example `openssl rand -hex 32`); signs the tokens; every instance
    /// needs the same. Unset: a random key is generated at start (with a warning), so tokens do
    /// not survive a restart
    #[arg(
        long = "secret-key",
        env = "SECRET_KEY",
        value_name = "KEY",
        value_parser = secret_key,
        hide_env_values = true
    )]
    secret_key: Option<Secret<Vec<u8>>>,

    /// True when no SECRET_KEY was configured and the key was generated at start.
    #[arg(skip)]
    pub secret_key_generated: bool,

    /// HS256, HS384, HS512 (with SECRET_KEY); RS256, ES256, EdDSA (with PRIVATE_KEY_FILE)
    #[arg(
        long = "algorithm",
        env = "ALGORITHM",
        value_name = "ALGORITHM",
        default_value = "HS256",
        value_parser = parsed::<SigningAlgorithm>
    )]
    pub algorithm: SigningAlgorithm,

    /// The PEM private key that signs access tokens with RS256, ES256 or EdDSA (make one with
    /// `auth-server generate-key`); required with them, refused with HS*
    #[arg(
        long = "private-key-file",
        env = "PRIVATE_KEY_FILE",
        value_name = "FILE",
        value_parser = path
    )]
    pub private_key_file: Option<PathBuf>,

    /// Comma-separated PEM files (public keys, or the old private key files) of retired keys
    /// that still verify access tokens and stay in the JWKS (default: none)
    #[arg(
        long = "previous-public-key-files",
        env = "PREVIOUS_PUBLIC_KEY_FILES",
        value_name = "FILES",
        default_value = "",
        hide_default_value = true,
        value_parser = list(path)
    )]
    pub previous_public_key_files: List<PathBuf>,

    /// The lifetime of an access token (at most 366 days)
    #[arg(
        long = "access-token-expire-minutes",
        env = "ACCESS_TOKEN_EXPIRE_MINUTES",
        value_name = "MINUTES",
        default_value = "30",
        value_parser = minutes(positive_at_most(60 * 24 * 366))
    )]
    pub access_token_ttl: Duration,

    /// The lifetime of a refresh token (at most 3660)
    #[arg(
        long = "refresh-token-expire-days",
        env = "REFRESH_TOKEN_EXPIRE_DAYS",
        value_name = "DAYS",
        default_value = "7",
        value_parser = days(positive_at_most(3660))
    )]
    pub refresh_token_ttl: Duration,

    /// How long the refresh token spent most recently may be presented again (0: never; at
    /// most 3600)
    #[arg(
        long = "refresh-reuse-interval-seconds",
        env = "REFRESH_REUSE_INTERVAL_SECONDS",
        value_name = "SECONDS",
        default_value = "10",
        value_parser = seconds(at_most(3600))
    )]
    pub refresh_reuse_interval: Duration,

    /// A session's absolute lifetime, however often it is refreshed (at most 3660)
    #[arg(
        long = "session-max-age-days",
        env = "SESSION_MAX_AGE_DAYS",
        value_name = "DAYS",
        default_value = "30",
        value_parser = days(positive_at_most(3660))
    )]
    pub session_max_age: Duration,

    /// The `iss` of issued tokens, checked on every token received
    #[arg(
        long = "jwt-issuer",
        env = "JWT_ISSUER",
        value_name = "ISSUER",
        default_value = "auth-server",
        value_parser = text
    )]
    pub jwt_issuer: String,

    /// The `aud` of issued tokens, checked on every token received
    #[arg(
        long = "jwt-audience",
        env = "JWT_AUDIENCE",
        value_name = "AUDIENCE",
        default_value = "auth-server",
        value_parser = text
    )]
    pub jwt_audience: String,

    /// How long an instance may answer the session check of an access token from its own
    /// memory (at most 60000; 0: every request reads the database). A revocation is seen at
    /// once by the instance that made it; by other instances when PostgreSQL's notification
    /// arrives (milliseconds), and never later than this
    #[arg(
        long = "session-cache-ms",
        env = "SESSION_CACHE_MS",
        value_name = "MILLISECONDS",
        default_value = "5000",
        value_parser = milliseconds(at_most(60_000))
    )]
    pub session_cache: Duration,

    /// How many session checks an instance keeps at most (1 to 1000000; the least recently
    /// used go first)
    #[arg(
        long = "session-cache-entries",
        env = "SESSION_CACHE_ENTRIES",
        value_name = "COUNT",
        default_value = "10000",
        value_parser = converted(within(1u64, 1_000_000), |n| n as usize)
    )]
    pub session_cache_entries: usize,
}

fn secret_key(text: &str) -> Result<Secret<Vec<u8>>, String> {
    let key = text.trim();
    if key.len() < 32 {
        return Err(format!(
            "it is {} bytes long; use at least 32 random bytes (for example `openssl rand -hex 32`)",
            key.len()
        ));
    }
    Ok(Secret::new(key.as_bytes().to_vec()))
}

fn path(text: &str) -> Result<PathBuf, String> {
    Ok(PathBuf::from(text.trim()))
}

impl TokenConfig {
    /// Generates the key when none is configured, and checks that the key file goes with the
    /// algorithm (the file itself is read by `auth` at start).
    pub fn validate(&mut self) -> Result<(), ConfigError> {
        if self.secret_key.is_none() {
            let mut key = vec![0u8; 64];
            getrandom::fill(&mut key).map_err(|e| {
                ConfigError::new("SECRET_KEY", format!("cannot generate a key: {e}"))
            })?;
            self.secret_key = Some(Secret::new(key));
            self.secret_key_generated = true;
        }
        let algorithm = self.algorithm.name();
        match (self.algorithm.is_symmetric(), &self.private_key_file) {
            (true, Some(_)) => Err(ConfigError::new(
                "PRIVATE_KEY_FILE",
                format!(
                    "is set, but ALGORITHM={algorithm} signs with SECRET_KEY; use RS256, ES256 or EdDSA, or unset it"
                ),
            )),
            (false, None) => Err(ConfigError::new(
                "PRIVATE_KEY_FILE",
                format!(
                    "is required with ALGORITHM={algorithm} (make one with `auth-server generate-key`)"
                ),
            )),
            _ => Ok(()),
        }
    }

    /// The key that signs HS* access tokens and from which the refresh token keys are derived:
    /// SECRET_KEY, or the one generated at start.
    pub fn secret_key(&self) -> &[u8] {
        self.secret_key
            .as_ref()
            .expect("validate() generates the key when none is configured")
            .expose()
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
