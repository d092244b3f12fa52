//! Webhooks: how deliveries are attempted and retried, how long their log is kept, and whether
//! endpoints may be on private networks.

use std::time::Duration;

use super::values::{boolean, converted, days, positive_at_most, seconds, within};

/// The longest WEBHOOK_TIMEOUT_SECONDS: an attempt must end well within the worker's claim on
/// the delivery (two minutes), or another instance could send it at the same time.
pub const WEBHOOK_TIMEOUT_MAX_SECONDS: u64 = 60;

#[derive(Clone, Debug, clap::Args)]
#[command(next_help_heading = "Webhooks")]
pub struct WebhookConfig {
    /// Allow webhook endpoints on loopback, private (RFC 1918), link-local, CGNAT and other
    /// non-public addresses (refused by default, at registration and at each delivery, so that a
    /// superuser's token cannot reach the internal network through a webhook). For development
    /// and tests, or an internal receiver you trust
    #[arg(
        id = "webhook-allow-private-networks",
        long = "webhook-allow-private-networks",
        env = "WEBHOOK_ALLOW_PRIVATE_NETWORKS",
        value_name = "BOOL",
        default_value = "false",
        num_args = 0..=1,
        default_missing_value = "true",
        value_parser = boolean
    )]
    pub allow_private_networks: bool,

    /// How long one delivery attempt may take, from resolving the host to the response's status
    /// line; a slower receiver fails the attempt, which is retried (1 to 60)
    #[arg(
        id = "webhook-timeout-seconds",
        long = "webhook-timeout-seconds",
        env = "WEBHOOK_TIMEOUT_SECONDS",
        value_name = "SECONDS",
        default_value = "10",
        value_parser = seconds(positive_at_most(WEBHOOK_TIMEOUT_MAX_SECONDS))
    )]
    pub timeout: Duration,

    /// The first retry of a failed delivery waits about this long, each next one twice as long
    /// (with 25% jitter either way), up to a day (1 to 3600)
    #[arg(
        id = "webhook-retry-base-seconds",
        long = "webhook-retry-base-seconds",
        env = "WEBHOOK_RETRY_BASE_SECONDS",
        value_name = "SECONDS",
        default_value = "10",
        value_parser = seconds(positive_at_most(3600))
    )]
    pub retry_base: Duration,

    /// Attempts after which a delivery is given up (marked failed; it can still be redelivered
    /// by hand) (1 to 50)
    #[arg(
        id = "webhook-max-attempts",
        long = "webhook-max-attempts",
        env = "WEBHOOK_MAX_ATTEMPTS",
        value_name = "N",
        default_value = "12",
        value_parser = converted(within(1u64, 50), |n| n as u32)
    )]
    pub max_attempts: u32,

    /// How long delivered and given-up deliveries stay in the delivery log before the purge
    /// deletes them (1 to 365 days)
    #[arg(
        id = "webhook-log-retention-days",
        long = "webhook-log-retention-days",
        env = "WEBHOOK_LOG_RETENTION_DAYS",
        value_name = "DAYS",
        default_value = "30",
        value_parser = days(within(1u64, 365))
    )]
    pub log_retention: Duration,
}
