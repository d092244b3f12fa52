//! Housekeeping: ended sessions, spent tokens, delivered mail, old security events and the old
//! webhook delivery log are deleted on a schedule, so the tables do not grow without bound.

use std::time::Duration;

use tokio::sync::watch;

use crate::db::{
    Db, events, invitations, login_attempts, mail_quota, mfa, one_time_tokens, outbox, passkeys,
    sessions, throttle, webhook_deliveries,
};
use crate::state::AppState;

/// How long ended rows are kept before they are deleted (for a look at recent history).
const RETENTION_MS: i64 = 24 * 3_600_000;
/// Delivered or failed mail is kept a week.
const MAIL_RETENTION_MS: i64 = 7 * 24 * 3_600_000;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Purged {
    pub sessions: u64,
    pub tokens: u64,
    pub mfa_challenges: u64,
    /// Passkey ceremonies that were never answered.
    pub webauthn_ceremonies: u64,
    pub mails: u64,
    pub throttles: u64,
    pub login_attempts: u64,
    /// Invitations accepted, revoked or expired.
    pub invitations: u64,
    /// Security events older than AUDIT_RETENTION_DAYS.
    pub events: u64,
    /// Webhook deliveries delivered or given up longer than WEBHOOK_LOG_RETENTION_DAYS ago.
    pub webhook_deliveries: u64,
}

/// How long what is kept by a setting is kept, in milliseconds.
#[derive(Clone, Copy, Debug)]
pub struct Retention {
    /// AUDIT_RETENTION_DAYS.
    pub audit_ms: i64,
    /// WEBHOOK_LOG_RETENTION_DAYS.
    pub webhook_log_ms: i64,
}

/// Deletes what ended long enough before `now`.
pub async fn purge(db: &Db, now: i64, retention: Retention) -> Result<Purged, sqlx::Error> {
    Ok(Purged {
        sessions: sessions::purge_ended(db, now - RETENTION_MS).await?,
        tokens: one_time_tokens::purge_spent(db, now - RETENTION_MS).await?,
        mfa_challenges: mfa::purge_challenges(db, now - RETENTION_MS).await?,
        // Unanswered ceremonies are of no use once expired: no retention.
        webauthn_ceremonies: passkeys::purge_ceremonies(db, now).await?,
        mails: outbox::purge_done(db, now - MAIL_RETENTION_MS).await?,
        throttles: throttle::purge_before(db, now - RETENTION_MS).await?
            + mail_quota::purge_before(db, now - RETENTION_MS).await?,
        login_attempts: login_attempts::purge_before(db, now - RETENTION_MS, now).await?,
        invitations: invitations::purge_ended(db, now - RETENTION_MS).await?,
        events: events::purge_before(db, now.saturating_sub(retention.audit_ms)).await?,
        webhook_deliveries: webhook_deliveries::purge_done(
            db,
            now.saturating_sub(retention.webhook_log_ms),
        )
        .await?,
    })
}

/// Purges, and applies the superusers' delayed second-factor resets that are due
/// (`service::mfa::apply_due_resets`), every `interval` until `stop` turns true. Every instance
/// runs one; the deletes are idempotent and each reset is taken by one instance, so they do not
/// get in each other's way.
pub async fn run_purger(state: AppState, interval: Duration, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
        match crate::service::mfa::apply_due_resets(&state).await {
            Ok(0) => {}
            Ok(applied) => tracing::info!(applied, "applied due second-factor resets"),
            Err(e) => {
                tracing::warn!(error = %e, "applying second-factor resets failed; will try again")
            }
        }
        let retention = Retention {
            audit_ms: crate::service::ms(state.config.audit.retention),
            webhook_log_ms: crate::service::ms(state.config.webhooks.log_retention),
        };
        match purge(&state.db, state.clock.now_ms(), retention).await {
            Ok(p) if p == Purged::default() => {}
            Ok(p) => tracing::info!(
                sessions = p.sessions,
                tokens = p.tokens,
                webauthn_ceremonies = p.webauthn_ceremonies,
                mails = p.mails,
                events = p.events,
                webhook_deliveries = p.webhook_deliveries,
                throttles = p.throttles,
                invitations = p.invitations,
                "purged ended sessions, spent tokens and old mail"
            ),
            Err(e) => tracing::warn!(error = %e, "purge failed; will try again"),
        }
    }
}
