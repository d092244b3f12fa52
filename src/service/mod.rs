//! The account rules. Called by the HTTP layer; calls `db` for storage and `auth` for credentials.

pub mod accounts;
pub mod admin;
pub mod audit;
pub mod import;
pub mod invitations;
pub mod lockout;
pub mod login;
pub mod maintenance;
pub mod mfa;
pub mod passkeys;
pub mod policy;
pub mod recovery;
pub mod refresh;
pub mod sessions;
mod views;
pub mod webhooks;

/// A duration in milliseconds, the unit of every timestamp column.
pub(crate) fn ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
