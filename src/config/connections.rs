//! Connections and requests: how many connections are served at once, how long a slow or idle
//! one is kept, and how large and how long a request may be.

use std::time::Duration;

use super::values::{converted, positive, seconds, within};

#[derive(Clone, Debug, clap::Args)]
#[command(next_help_heading = "Connections and requests")]
pub struct ConnectionConfig {
    /// Connections served at once (1 to 1000000); more wait in the listen backlog (default:
    /// 10000, or what the open-file limit allows)
    #[arg(
        long = "max-connections",
        env = "MAX_CONNECTIONS",
        value_name = "N",
        value_parser = converted(within(1u64, 1_000_000), |n| n as usize)
    )]
    pub max_connections: Option<usize>,

    /// Connections open at once from one client address (an IPv6 network of IPV6_PREFIX bits);
    /// more are closed at once. Trusted proxies are exempt (1 to 1000000)
    #[arg(
        long = "max-connections-per-client",
        env = "MAX_CONNECTIONS_PER_CLIENT",
        value_name = "N",
        default_value = "256",
        value_parser = converted(within(1u64, 1_000_000), |n| n as usize)
    )]
    pub max_connections_per_client: usize,

    /// After SIGTERM or SIGINT, connections still open this long are closed (1 to 3600; default:
    /// REQUEST_TIMEOUT_SECONDS + 5)
    #[arg(
        long = "shutdown-grace-seconds",
        env = "SHUTDOWN_GRACE_SECONDS",
        value_name = "SECONDS",
        value_parser = seconds(within(1, 3600))
    )]
    pub shutdown_grace: Option<Duration>,

    /// A request head must arrive whole within this (from the connection's start, or the head's
    /// first byte); otherwise the connection is closed (1 to 3600)
    #[arg(
        long = "header-read-timeout-seconds",
        env = "HEADER_READ_TIMEOUT_SECONDS",
        value_name = "SECONDS",
        default_value = "10",
        value_parser = seconds(within(1, 3600))
    )]
    pub header_read_timeout: Duration,

    /// A connection idle this long between requests is closed (1 to 86400)
    #[arg(
        long = "keep-alive-timeout-seconds",
        env = "KEEP_ALIVE_TIMEOUT_SECONDS",
        value_name = "SECONDS",
        default_value = "75",
        value_parser = seconds(within(1, 86_400))
    )]
    pub keep_alive_timeout: Duration,

    /// Request bodies larger than this are refused with 413
    #[arg(
        long = "body-limit-bytes",
        env = "BODY_LIMIT_BYTES",
        value_name = "BYTES",
        default_value = "65536",
        value_parser = converted(positive::<u64>, |n| n as usize)
    )]
    pub body_limit_bytes: usize,

    /// A request running longer is answered 503
    #[arg(
        long = "request-timeout-seconds",
        env = "REQUEST_TIMEOUT_SECONDS",
        value_name = "SECONDS",
        default_value = "30",
        value_parser = seconds(positive)
    )]
    pub request_timeout: Duration,
}

impl ConnectionConfig {
    /// SHUTDOWN_GRACE_SECONDS, or long enough for a request begun at the signal to run its
    /// REQUEST_TIMEOUT_SECONDS and send its answer.
    pub fn shutdown_grace(&self) -> Duration {
        self.shutdown_grace
            .unwrap_or(self.request_timeout + Duration::from_secs(5))
    }
}
