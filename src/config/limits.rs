//! Limits on what one client may try: requests per minute per client address, and the lockout
//! after failed logins to one account address.

use std::time::Duration;

use super::ConfigError;
use super::values::{capped, converted, positive, seconds, within};

// Requests per minute per client address; 0 turns a limit off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::Args)]
#[command(next_help_heading = "Rate limits")]
pub struct RateLimits {
    /// POST /login: requests per client address per minute and instance (0: no limit)
    #[arg(
        long = "rate-limit-login-per-minute",
        env = "RATE_LIMIT_LOGIN_PER_MINUTE",
        value_name = "N",
        default_value = "30",
        value_parser = capped(1_000_000u32)
    )]
    pub login: u32,

    /// POST /register: requests per client address per minute and instance (0: no limit)
    #[arg(
        long = "rate-limit-register-per-minute",
        env = "RATE_LIMIT_REGISTER_PER_MINUTE",
        value_name = "N",
        default_value = "10",
        value_parser = capped(1_000_000u32)
    )]
    pub register: u32,

    /// POST /refresh, and the reset and verification confirmations: requests per client
    /// address per minute and instance (0: no limit)
    #[arg(
        long = "rate-limit-refresh-per-minute",
        env = "RATE_LIMIT_REFRESH_PER_MINUTE",
        value_name = "N",
        default_value = "60",
        value_parser = capped(1_000_000u32)
    )]
    pub refresh: u32,

    /// POST /password-reset/request and /verify/request: requests per client address per minute
    /// and instance (0: no limit)
    #[arg(
        long = "rate-limit-mail-per-minute",
        env = "RATE_LIMIT_MAIL_PER_MINUTE",
        value_name = "N",
        default_value = "10",
        value_parser = capped(1_000_000u32)
    )]
    pub mail: u32,

    /// IPv6 clients are counted by this many leading bits of their address (1 to 128)
    #[arg(
        long = "rate-limit-ipv6-prefix",
        env = "RATE_LIMIT_IPV6_PREFIX",
        value_name = "BITS",
        default_value = "64",
        value_parser = converted(within(1u64, 128), |n| n as u8)
    )]
    pub ipv6_prefix: u8,

    /// The most client addresses each limit group remembers; beyond it the least recently seen
    /// is forgotten (1 to 10000000)
    #[arg(
        long = "rate-limit-max-clients",
        env = "RATE_LIMIT_MAX_CLIENTS",
        value_name = "N",
        default_value = "100000",
        value_parser = converted(within(1u64, 10_000_000), |n| n as usize)
    )]
    pub max_clients: usize,
}

// Failed logins to one address that are answered at once; each further one locks the address
// for twice as long as the last, from `first` up to `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::Args)]
#[command(next_help_heading = "Login lockout")]
pub struct LoginLockout {
    /// Failed logins to one address answered at once, before the first lock (at most 1000)
    #[arg(
        long = "login-free-attempts",
        env = "LOGIN_FREE_ATTEMPTS",
        value_name = "N",
        default_value = "5",
        value_parser = capped(1000u32)
    )]
    pub free_attempts: u32,

    /// The first lock after them, doubling with each further failure (at most
    /// LOGIN_LOCKOUT_MAX_SECONDS)
    #[arg(
        long = "login-lockout-first-seconds",
        env = "LOGIN_LOCKOUT_FIRST_SECONDS",
        value_name = "SECONDS",
        default_value = "1",
        value_parser = seconds(positive)
    )]
    pub first: Duration,

    /// The longest lock
    #[arg(
        long = "login-lockout-max-seconds",
        env = "LOGIN_LOCKOUT_MAX_SECONDS",
        value_name = "SECONDS",
        default_value = "900",
        value_parser = seconds(positive)
    )]
    pub max: Duration,
}

impl LoginLockout {
    /// The first lock is never longer than the longest (a longer one is shortened).
    pub fn validate(&mut self) -> Result<(), ConfigError> {
        self.first = self.first.min(self.max);
        Ok(())
    }
}
