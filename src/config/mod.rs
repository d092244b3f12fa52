//! One `Config`, read from the environment (and an optional `.env`) once at start and checked
//! there: a bad value stops the server with one line naming the variable.
//!
//! The settings are declared, not parsed by hand: each section below is a `clap::Args` struct
//! whose fields say their variable, flag, default and parser (`#[arg(long, env, ...)]`), as
//! launchbadge/realworld-axum-sqlx does. We use clap's `env` rather than a configuration library
//! because clap is already here for the command line: every setting is then a flag of `serve` as
//! well as a variable, `auth-server serve --help` documents every one with its default (secrets'
//! values hidden), and there is no second library, nor a second list of names to keep in step.
//!
//! Three ways in, one set of rules:
//! - `auth-server serve [flags]`: clap reads the flags, and the environment for the rest
//!   ([`parse_command_line`]);
//! - [`Config::from_env`]: the environment only (the other commands, and `auth-server` alone);
//! - [`Config::from_vars`]: a list of variables, for tests; the process's environment is not
//!   read. The variables become the matching flags.
//!
//! Each value is parsed and bounded as it is read (`values`); what spans two values (a key file
//! with RS256, ARGON2_MAX_MEMORY_KIB against ARGON2_MEMORY_KIB, ...) is checked by its section's
//! `validate()`, called by [`Config::validated`]. As in the original service, a variable set to
//! an empty value counts as unset.

mod accounts;
mod audit;
mod connections;
mod database;
mod hashing;
mod limits;
mod logging;
mod mail;
mod metrics;
mod mfa;
mod pages;
mod passkeys;
mod redis;
mod server;
mod tokens;
mod values;
mod webhooks;

use std::collections::HashMap;
use std::ffi::OsString;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Args, FromArgMatches};

pub use self::redis::RedisConfig;
pub use accounts::{AccountPolicy, PASSWORD_MAX_LENGTH, RegistrationMode};
pub use audit::AuditConfig;
pub use connections::ConnectionConfig;
pub use database::{DatabaseConfig, DatabaseUrl, SqliteSynchronous};
pub use hashing::{Argon2Config, HashingConfig};
pub use limits::{LoginLockout, RateLimits};
pub use logging::{LogFormat, LoggingConfig};
pub use mail::{MailConfig, SMTP_TIMEOUT_MAX_SECONDS};
pub use metrics::{Exposure as MetricsExposure, METRICS_TOKEN_MIN_LENGTH, MetricsConfig};
pub use mfa::{MfaConfig, MfaRequiredFor};
pub use pages::PagesConfig;
pub use passkeys::{CounterPolicy, PasskeyConfig};
pub use server::ServerConfig;
pub use tokens::{SigningAlgorithm, TokenConfig};
pub use webhooks::{WEBHOOK_TIMEOUT_MAX_SECONDS, WebhookConfig};

// Every setting, by section. (No doc comment: clap would take it as the command's description.)
#[derive(Clone, Debug, clap::Args)]
pub struct Config {
    #[command(flatten)]
    pub server: ServerConfig,
    #[command(flatten)]
    pub connections: ConnectionConfig,
    #[command(flatten)]
    pub database: DatabaseConfig,
    #[command(flatten)]
    pub tokens: TokenConfig,
    #[command(flatten)]
    pub argon2: Argon2Config,
    #[command(flatten)]
    pub hashing: HashingConfig,
    #[command(flatten)]
    pub mail: MailConfig,
    #[command(flatten)]
    pub accounts: AccountPolicy,
    #[command(flatten)]
    pub mfa: MfaConfig,
    #[command(flatten)]
    pub passkeys: PasskeyConfig,
    #[command(flatten)]
    pub lockout: LoginLockout,
    #[command(flatten)]
    pub rate_limits: RateLimits,
    #[command(flatten)]
    pub redis: RedisConfig,
    #[command(flatten)]
    pub logging: LoggingConfig,
    #[command(flatten)]
    pub pages: PagesConfig,
    #[command(flatten)]
    pub audit: AuditConfig,
    #[command(flatten)]
    pub webhooks: WebhookConfig,
    #[command(flatten)]
    pub metrics: MetricsConfig,
}

/// A configuration error: names the variable and says what is wrong, on one line.
#[derive(Debug, thiserror::Error)]
#[error("invalid {var}: {message}")]
pub struct ConfigError {
    pub var: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(var: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            var: var.into(),
            message: message.into(),
        }
    }

    /// The one-line form of clap's error about a setting's value, if that is what it is about
    /// (`cmd` is the command that declares the setting, at any depth).
    pub fn from_clap(cmd: &clap::Command, error: &clap::Error) -> Option<Self> {
        let Some(ContextValue::String(shown)) = error.get(ContextKind::InvalidArg) else {
            return None;
        };
        // Built, an argument shows as clap's messages show it.
        let mut cmd = cmd.clone();
        cmd.build();
        let var = find_arg(&cmd, shown)?
            .get_env()?
            .to_string_lossy()
            .into_owned();
        let message = match error.kind() {
            // The value parsers' own words (see `values`).
            ErrorKind::ValueValidation => std::error::Error::source(error)?.to_string(),
            ErrorKind::InvalidUtf8 => "is not valid UTF-8".to_string(),
            _ => return None,
        };
        Some(Self::new(var, message))
    }
}

/// The argument clap shows as `shown` (`--port <PORT>`), in `cmd` or its subcommands.
fn find_arg<'a>(cmd: &'a clap::Command, shown: &str) -> Option<&'a clap::Arg> {
    cmd.get_arguments()
        .find(|arg| arg.to_string() == shown)
        .or_else(|| cmd.get_subcommands().find_map(|sub| find_arg(sub, shown)))
}

/// A value `Debug` never shows (a key, a URL with a password in it).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Self {
        Self(value)
    }

    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> std::fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Reads `.env` from the working directory into the environment (a variable already set keeps
/// its value). It must come before the command line is parsed: clap reads the variables then.
pub fn load_dotenv() -> Result<(), ConfigError> {
    // A missing .env is normal; a malformed one is a configuration error.
    match dotenvy::dotenv() {
        Ok(_) => Ok(()),
        Err(e) if e.not_found() => Ok(()),
        Err(e) => Err(ConfigError::new(".env", e.to_string())),
    }
}

/// Parses the command line as `P` declares it (with `Config` flattened into a subcommand), the
/// environment filling in the settings not given as flags. A bad setting comes back as the
/// one-line error; any other command-line error, `--help` and `--version` end the process as
/// clap does.
pub fn parse_command_line<P: clap::Parser>() -> Result<P, ConfigError> {
    let cmd = P::command();
    let matches = match ignore_blank_variables(cmd.clone()).try_get_matches() {
        Ok(matches) => matches,
        // The help of the command as declared, which names the blank variables too.
        Err(e) if e.kind() == ErrorKind::DisplayHelp => {
            cmd.try_get_matches().err().unwrap_or(e).exit()
        }
        Err(e) => return Err(ConfigError::from_clap(&cmd, &e).unwrap_or_else(|| e.exit())),
    };
    P::from_arg_matches(&matches).map_err(|e| e.exit())
}

/// Clap would read a variable set to an empty (or blank) value as that value; it means unset
/// here, so such a variable is not given to clap at all.
fn ignore_blank_variables(cmd: clap::Command) -> clap::Command {
    cmd.mut_args(|arg| {
        let blank = arg
            .get_env()
            .and_then(std::env::var_os)
            .is_some_and(|value| value.to_str().is_some_and(|v| v.trim().is_empty()));
        if blank { arg.env(None::<&str>) } else { arg }
    })
    .mut_subcommands(ignore_blank_variables)
}

impl Config {
    /// The settings as a command: each a flag with its variable, default and description.
    pub fn command() -> clap::Command {
        Self::augment_args(clap::Command::new("auth-server"))
    }

    /// Reads `.env` (if present) and the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        load_dotenv()?;
        let cmd = Self::command();
        let matches = ignore_blank_variables(cmd.clone())
            .try_get_matches_from(["auth-server"])
            .map_err(|e| clap_error(&cmd, &e))?;
        Self::from_matches(&cmd, &matches)
    }

    /// Builds the configuration from a list of variables (tests use this directly): the last
    /// value of a variable wins, an empty value means unset, unknown variables are ignored, and
    /// the process's environment is not read.
    pub fn from_vars<I, K, V>(vars: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let mut values: HashMap<String, String> = HashMap::new();
        for (var, value) in vars {
            let (var, value) = (var.into(), value.into());
            if value.trim().is_empty() {
                values.remove(&var);
            } else {
                values.insert(var, value.trim().to_string());
            }
        }
        let cmd = Self::command();
        // Each variable becomes its flag: `PORT=8080` is `--port=8080` (the `=` keeps a value
        // that starts with `-` a value).
        let mut argv = vec![OsString::from("auth-server")];
        for arg in cmd.get_arguments() {
            let (Some(var), Some(long)) = (arg.get_env(), arg.get_long()) else {
                continue;
            };
            if let Some(value) = var.to_str().and_then(|var| values.get(var)) {
                argv.push(format!("--{long}={value}").into());
            }
        }
        let matches = cmd
            .clone()
            .mut_args(|arg| arg.env(None::<&str>))
            .try_get_matches_from(argv)
            .map_err(|e| clap_error(&cmd, &e))?;
        Self::from_matches(&cmd, &matches)
    }

    fn from_matches(cmd: &clap::Command, matches: &clap::ArgMatches) -> Result<Self, ConfigError> {
        Self::from_arg_matches(matches)
            .map_err(|e| clap_error(cmd, &e))?
            .validated()
    }

    /// Checks the rules between settings, section by section, and fills in the values derived
    /// from others (a generated SECRET_KEY, a first lock no longer than the longest).
    pub fn validated(mut self) -> Result<Self, ConfigError> {
        self.tokens.validate()?;
        self.argon2.validate()?;
        self.mail.validate()?;
        self.lockout.validate()?;
        self.passkeys.validate(&self.server, &self.mfa)?;
        self.metrics.validate(&self.server)?;
        Ok(self)
    }
}

/// Clap's error on a command made of settings only: always about one of them.
fn clap_error(cmd: &clap::Command, error: &clap::Error) -> ConfigError {
    ConfigError::from_clap(cmd, error).unwrap_or_else(|| {
        let first_line = error.to_string();
        let first_line = first_line.lines().next().unwrap_or_default();
        ConfigError::new("configuration", first_line.trim_start_matches("error: "))
    })
}

#[cfg(test)]
mod tests;
