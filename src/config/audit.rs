//! The security audit trail: how long its events are kept.

use std::time::Duration;

use super::values::{days, within};

#[derive(Clone, Debug, clap::Args)]
#[command(next_help_heading = "Audit trail")]
pub struct AuditConfig {
    /// How long security events (sign-ins, credential changes, admin actions) are kept before
    /// the purge deletes them (1 to 3650 days)
    #[arg(
        long = "audit-retention-days",
        env = "AUDIT_RETENTION_DAYS",
        value_name = "DAYS",
        default_value = "90",
        value_parser = days(within(1u64, 3650))
    )]
    pub retention: Duration,
}
