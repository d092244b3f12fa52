//! Redis, for the per-client limits that several instances share (`ratelimit::shared`): where it
//! is, the prefix of its keys, and how long a request may wait for it.

use std::time::Duration;

use super::Secret;
use super::values::{converted, milliseconds, within};

#[derive(Clone, Debug, clap::Args)]
#[command(next_help_heading = "Shared rate limits (Redis)")]
pub struct RedisConfig {
    /// redis://[user:password@]host:6379[/db] (rediss:// for TLS is not built in): the
    /// per-client rate limits are kept there, shared by every instance using it. Unset: each
    /// instance keeps its own, in memory
    #[arg(
        id = "redis_url",
        long = "redis-url",
        env = "REDIS_URL",
        value_name = "URL",
        value_parser = redis_url,
        hide_env_values = true
    )]
    pub url: Option<Secret<String>>,

    /// The prefix of every key the server writes in Redis (instances that share limits share
    /// it; 1 to 64 characters, no spaces)
    #[arg(
        id = "redis_key_prefix",
        long = "redis-key-prefix",
        env = "REDIS_KEY_PREFIX",
        value_name = "PREFIX",
        default_value = "auth:",
        value_parser = key_prefix
    )]
    pub key_prefix: String,

    /// How long one request waits for Redis (1 to 10000 ms); slower, or an error, and the
    /// instance counts on its own limits until Redis answers again (tried once a second)
    #[arg(
        id = "redis_timeout",
        long = "redis-timeout-ms",
        env = "REDIS_TIMEOUT_MS",
        value_name = "MILLISECONDS",
        default_value = "250",
        value_parser = milliseconds(converted(within(1u64, 10_000), |n| n))
    )]
    pub timeout: Duration,
}

/// A Redis URL the client library can connect with (checked here, so that a typo stops the
/// start with one line instead of turning every limit local).
fn redis_url(text: &str) -> Result<Secret<String>, String> {
    let text = text.trim();
    let scheme_ok = text.starts_with("redis://") || text.starts_with("redis+unix://");
    if !scheme_ok {
        return Err("expected redis://host:6379 (or redis+unix:///path)".into());
    }
    // The error's kind only: its text may repeat the URL, password included.
    redis::Client::open(text).map_err(|e| format!("not a usable Redis URL ({:?})", e.kind()))?;
    Ok(Secret::new(text.to_string()))
}

fn key_prefix(text: &str) -> Result<String, String> {
    let text = text.trim();
    if text.is_empty() || text.chars().count() > 64 {
        return Err("must be 1 to 64 characters".into());
    }
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain spaces or control characters".into());
    }
    Ok(text.to_string())
}
