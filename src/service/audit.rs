//! The security audit trail: what happened to an account, who did it, from where.
//!
//! An event is written in the transaction of the change it records ([`record_in`]), so the trail
//! has a row exactly when the change was kept; an event with no change of its own (a failed
//! sign-in) is written alone ([`record`]). Once committed, each event is also written as one
//! structured log line (target `audit`). The client's address and user agent are those of the
//! request being served: `http` puts them in a task-local ([`with_origin`]) around every
//! request, so the services do not pass them along; work spawned off a request carries them over
//! with [`current_origin`] and [`with_origin`].
//!
//! Rules:
//! - `detail` is a small JSON object that never holds a secret (no password, token, code, key
//!   or hash), nor anything the account's owner may not read: users read their own events.
//! - `user` is the account the event is about, `actor` who acted (the account itself, a
//!   superuser, or nobody: the command line, a job); `session` the session that acted.
//! - Event types are the stable strings of [`EventType`]; they are the `type` of webhooks too.

use std::future::Future;

use serde_json::{Value, json};

use crate::db::events::{self, EventRow};
use crate::db::{Db, Tx};
use crate::error::Result;
use crate::service::sessions::Caller;
use crate::state::AppState;

macro_rules! event_types {
    ($($(#[$doc:meta])* $variant:ident = $name:literal,)*) => {
        /// What an event records. The string is stable: clients filter on it and webhooks carry it.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum EventType {
            $($(#[$doc])* $variant,)*
        }

        impl EventType {
            /// Every type, in the order of the README's table.
            pub const ALL: &'static [EventType] = &[$(EventType::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(EventType::$variant => $name,)*
                }
            }

            pub fn parse(text: &str) -> Option<Self> {
                match text {
                    $($name => Some(EventType::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

event_types! {
    /// An account was created: by registration, an invitation, a superuser or the command line
    /// (`detail.via`).
    UserCreated = "user.created",
    /// A sign-in succeeded and opened a session (`detail.method`, `detail.amr`).
    SignedIn = "user.signed_in",
    /// A sign-in failed (`detail.method`, `detail.reason`); `user` when the account is known.
    SignInFailed = "user.sign_in_failed",
    /// A session was ended by its user (`detail.scope`).
    SignedOut = "user.signed_out",
    /// A session was revoked by its user from another session, or by a superuser.
    SessionRevoked = "session.revoked",
    /// A spent refresh token was presented again: the session was revoked.
    RefreshReuseDetected = "session.refresh_reuse_detected",
    PasswordChanged = "user.password_changed",
    /// A password was set through a reset link.
    PasswordReset = "user.password_reset",
    /// A reset mail was sent at a superuser's request.
    PasswordResetSent = "user.password_reset_sent",
    /// The password was removed (the account signs in with passkeys only).
    PasswordRemoved = "user.password_removed",
    EmailChanged = "user.email_changed",
    EmailVerified = "user.email_verified",
    /// The profile changed (name), or a superuser changed the account (`detail.fields`).
    UserUpdated = "user.updated",
    UserDeactivated = "user.deactivated",
    UserReactivated = "user.reactivated",
    UserDeleted = "user.deleted",
    /// An authenticator app (TOTP) was enrolled.
    MfaEnabled = "mfa.enabled",
    MfaDisabled = "mfa.disabled",
    /// A superuser removed the account's second factors (or scheduled it: `detail.delayed`).
    MfaReset = "mfa.reset",
    RecoveryCodeUsed = "mfa.recovery_code_used",
    RecoveryCodesRegenerated = "mfa.recovery_codes_regenerated",
    PasskeyAdded = "passkey.added",
    PasskeyRemoved = "passkey.removed",
    /// A superuser cleared the lockout of an address (`detail.address`).
    LockoutCleared = "lockout.cleared",
    InvitationCreated = "invitation.created",
    InvitationRevoked = "invitation.revoked",
    WebhookCreated = "webhook.created",
    WebhookUpdated = "webhook.updated",
    WebhookDeleted = "webhook.deleted",
}

/// Where the request being served came from.
#[derive(Clone, Debug, Default)]
pub struct Origin {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

tokio::task_local! {
    static ORIGIN: Origin;
}

/// Runs `work` with `origin` as the request's origin for the events it records.
pub async fn with_origin<F: Future>(origin: Origin, work: F) -> F::Output {
    ORIGIN.scope(origin, work).await
}

/// The origin of the request being served (empty outside one: the command line, a job).
pub fn current_origin() -> Origin {
    ORIGIN.try_with(Clone::clone).unwrap_or_default()
}

/// An event to record: built with [`Event::new`] and the setters.
#[derive(Clone, Debug)]
#[must_use = "an event does nothing until it is recorded"]
pub struct Event {
    kind: EventType,
    user: Option<String>,
    actor: Option<String>,
    session: Option<String>,
    detail: Value,
}

impl Event {
    pub fn new(kind: EventType) -> Self {
        Self {
            kind,
            user: None,
            actor: None,
            session: None,
            detail: json!({}),
        }
    }

    /// The account the event is about.
    pub fn user(mut self, id: &str) -> Self {
        self.user = Some(id.to_string());
        self
    }

    /// Who acted (when not the account itself: a superuser).
    pub fn actor(mut self, id: &str) -> Self {
        self.actor = Some(id.to_string());
        self
    }

    /// The session that acted.
    pub fn session(mut self, id: &str) -> Self {
        self.session = Some(id.to_string());
        self
    }

    /// Acted by `caller` on their own account: user, actor and session from the caller.
    pub fn by_self(self, caller: &Caller) -> Self {
        let id = caller.account.id.clone();
        self.user(&id).actor(&id).session(&caller.session_id)
    }

    /// Acted by the superuser `admin` on the account `user`.
    pub fn by_admin(self, admin: &Caller, user: &str) -> Self {
        self.user(user)
            .actor(&admin.account.id)
            .session(&admin.session_id)
    }

    /// A small JSON object; never a secret.
    pub fn detail(mut self, detail: Value) -> Self {
        self.detail = detail;
        self
    }

    pub fn kind(&self) -> EventType {
        self.kind
    }
}

/// Records `event` in `tx`: it is kept if and only if the transaction commits, and logged then.
/// Its webhook deliveries are queued in `tx` too (`service::webhooks::enqueue_in`).
pub async fn record_in(state: &AppState, tx: &mut Tx, event: Event) -> Result<()> {
    let row = row_of(state, event);
    events::insert_in(tx, &row).await?;
    crate::service::webhooks::enqueue_in(state, tx, &row).await?;
    tx.after_commit(move || log(&row));
    Ok(())
}

/// Records `event` in a transaction of its own (an event that goes with no other write).
pub async fn record(state: &AppState, event: Event) -> Result<()> {
    record_on(&state.db, state, event).await
}

async fn record_on(db: &Db, state: &AppState, event: Event) -> Result<()> {
    let mut tx = db.begin().await?;
    record_in(state, &mut tx, event).await?;
    tx.commit().await?;
    Ok(())
}

fn row_of(state: &AppState, event: Event) -> EventRow {
    let origin = current_origin();
    EventRow {
        seq: 0,
        id: uuid::Uuid::new_v4().to_string(),
        at: state.clock.now_ms(),
        kind: event.kind.as_str().to_string(),
        user_id: event.user,
        actor_id: event.actor,
        session_id: event.session,
        ip: origin.ip,
        user_agent: origin.user_agent,
        detail: event.detail.to_string(),
    }
}

/// The event's log line: one per committed event, target `audit`, the same fields as the row.
fn log(row: &EventRow) {
    tracing::info!(
        target: "audit",
        event_id = %row.id,
        event_type = %row.kind,
        user_id = row.user_id.as_deref().unwrap_or("-"),
        actor_id = row.actor_id.as_deref().unwrap_or("-"),
        session_id = row.session_id.as_deref().unwrap_or("-"),
        ip = row.ip.as_deref().unwrap_or("-"),
        user_agent = row.user_agent.as_deref().unwrap_or("-"),
        detail = %row.detail,
        "security event"
    );
}

#[cfg(test)]
mod tests {
    use super::EventType;

    #[test]
    fn every_event_type_parses_back_and_names_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for kind in EventType::ALL {
            assert_eq!(EventType::parse(kind.as_str()), Some(*kind));
            assert!(seen.insert(kind.as_str()), "{} twice", kind.as_str());
            assert!(kind.as_str().contains('.'));
        }
        assert_eq!(EventType::parse("user.nope"), None);
    }
}
