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
//! - A failed sign-in ([`sign_in_failed`]) names the account only where the path that does not
//!   know one does the same work.
//! - Reading: [`list`] (a superuser's view, every field) and [`list_own`] (an account's own
//!   events, naming no other account: see [`EventView`]), newest first, by a `seq` cursor.

use std::future::Future;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::db::events::{self, EventRow};
use crate::db::{Db, Tx};
use crate::error::{Error, Result};
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
    /// An account was created (`detail.via`: `registration`, `cli`; an invitation's or a
    /// superuser's elsewhere).
    UserCreated = "user.created",
    /// A sign-in succeeded and opened a session (`session`; `detail.method`: `password` or
    /// `passkey`, `detail.second_factor`: `totp`, `recovery_code` or `passkey` when one was
    /// passed, `detail.amr`).
    SignedIn = "user.signed_in",
    /// A sign-in failed (`detail.method`, `detail.second_factor` at the second step,
    /// `detail.reason`); `user` when the account is known.
    SignInFailed = "user.sign_in_failed",
    /// Sessions were ended by their user (`session`: the one that signed out; `detail.scope`:
    /// `local`, `global` or `others`, `detail.sessions_ended`).
    SignedOut = "user.signed_out",
    /// A session was revoked by its user from another session, or by a superuser
    /// (`detail.revoked_session_id`, or `detail.scope` `all` and `detail.sessions_ended`).
    SessionRevoked = "session.revoked",
    /// A spent refresh token was presented again: the session (`session`) was revoked
    /// (`detail.via`: `refresh`, `browser` or `logout`).
    RefreshReuseDetected = "session.refresh_reuse_detected",
    /// The password was changed with the current one (or set, on an account without one:
    /// `detail.had_password`; `detail.sessions_ended`).
    PasswordChanged = "user.password_changed",
    /// A reset mail was asked for at the public endpoint and queued (no event when none is
    /// sent: an unknown or deactivated address, the per-address limit).
    PasswordResetRequested = "user.password_reset_requested",
    /// A password was set through a reset link (`detail.sessions_ended`).
    PasswordReset = "user.password_reset",
    /// A reset mail was sent at a superuser's request.
    PasswordResetSent = "user.password_reset_sent",
    /// The password was removed (the account signs in with passkeys only).
    PasswordRemoved = "user.password_removed",
    /// The address changed (`detail.from`, `detail.to`), by its user or a superuser.
    EmailChanged = "user.email_changed",
    /// An address was verified through its link (`detail.email`).
    EmailVerified = "user.email_verified",
    /// The name changed, or a superuser changed the account's name, verified or superuser
    /// flag (`detail.fields`, and the new value of each flag changed).
    UserUpdated = "user.updated",
    UserDeactivated = "user.deactivated",
    UserReactivated = "user.reactivated",
    /// The account was deleted, by itself or a superuser (`detail.email`).
    UserDeleted = "user.deleted",
    /// An authenticator app (TOTP) was enrolled (`detail.method`: `totp`).
    MfaEnabled = "mfa.enabled",
    /// The authenticator app was removed by its user (`detail.method`: `totp`).
    MfaDisabled = "mfa.disabled",
    /// A superuser removed the account's second factors (`detail.stage`: `applied`, with
    /// `detail.delayed`), or scheduled it (`detail.stage`: `scheduled`, `detail.effective_at`);
    /// a delayed one is applied by the server's job (no actor).
    MfaReset = "mfa.reset",
    /// The user cancelled a superuser's pending reset of their second factor.
    MfaResetCancelled = "mfa.reset_cancelled",
    /// A recovery code was spent (`detail.recovery_codes_left`).
    RecoveryCodeUsed = "mfa.recovery_code_used",
    RecoveryCodesRegenerated = "mfa.recovery_codes_regenerated",
    /// A passkey was registered (`detail.passkey_id`, `name`, `user_verified`, `synced`).
    PasskeyAdded = "passkey.added",
    /// A passkey was removed (`detail.passkey_id`, `name`).
    PasskeyRemoved = "passkey.removed",
    /// A superuser cleared the account's lockouts (`detail.address`, `detail.address_was_counted`,
    /// `detail.second_factor_was_counted`).
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

/// Where a request came from, worked out only when an event asks for it: `http` keeps the
/// request's address and user agent header, and makes the strings for the events it records
/// (most requests record none).
pub trait OriginSource: Send + Sync {
    fn origin(&self) -> Origin;
}

impl OriginSource for Origin {
    fn origin(&self) -> Origin {
        self.clone()
    }
}

tokio::task_local! {
    static ORIGIN: Arc<dyn OriginSource>;
}

/// Runs `work` with `origin` as the request's origin for the events it records.
pub async fn with_origin<F: Future>(origin: Origin, work: F) -> F::Output {
    ORIGIN.scope(Arc::new(origin), work).await
}

/// Runs `work` with `source` as the request's origin: [`with_origin`] as a nameable future, for
/// the middleware.
pub fn scope_origin<F: Future>(
    source: Arc<dyn OriginSource>,
    work: F,
) -> tokio::task::futures::TaskLocalFuture<Arc<dyn OriginSource>, F> {
    ORIGIN.scope(source, work)
}

/// The origin of the request being served (empty outside one: the command line, a job).
pub fn current_origin() -> Origin {
    ORIGIN
        .try_with(|source| source.origin())
        .unwrap_or_default()
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

/// The `reason` a failed sign-in is recorded with, for the error it ended with; `None` for an
/// outcome that is no failed sign-in (a second factor asked for, a malformed request, the
/// server's own trouble), which records nothing.
pub fn failure_reason(error: &Error) -> Option<&'static str> {
    Some(match error {
        Error::InvalidCredentials => "invalid_credentials",
        Error::AccountDisabled => "disabled",
        Error::EmailNotVerified => "unverified",
        Error::TooManyRequests { .. } => "locked",
        Error::InvalidMfaCode | Error::WrongMfaCode => "invalid_code",
        Error::InvalidMfaToken(_) => "invalid_mfa_token",
        Error::InvalidPasskey(_) => "invalid_passkey",
        Error::PasskeyChallengeInvalid(_) => "invalid_passkey_challenge",
        Error::PasskeyCounterRegressed => "passkey_counter_regressed",
        _ => return None,
    })
}

/// How a sign-in went about it, for its events.
#[derive(Clone, Copy, Debug)]
pub struct SignInMethod {
    /// `password` or `passkey`.
    pub method: &'static str,
    /// `totp`, `recovery_code` or `passkey`, at the second step of a password sign-in.
    pub second_factor: Option<&'static str>,
}

impl SignInMethod {
    pub const PASSWORD: Self = Self {
        method: "password",
        second_factor: None,
    };
    pub const PASSKEY: Self = Self {
        method: "passkey",
        second_factor: None,
    };

    fn detail(self) -> serde_json::Map<String, Value> {
        let mut detail = serde_json::Map::new();
        detail.insert("method".into(), json!(self.method));
        if let Some(factor) = self.second_factor {
            detail.insert("second_factor".into(), json!(factor));
        }
        detail
    }
}

/// The `user.signed_in` event of the session `session_id` of `user_id`, opened with `amr`.
pub fn signed_in(user_id: &str, session_id: &str, how: SignInMethod, amr: &str) -> Event {
    let mut detail = how.detail();
    let amr: Vec<&str> = amr.split_ascii_whitespace().collect();
    detail.insert("amr".into(), json!(amr));
    Event::new(EventType::SignedIn)
        .user(user_id)
        .actor(user_id)
        .session(session_id)
        .detail(Value::Object(detail))
}

/// Records a failed sign-in that ended with `error` (nothing when [`failure_reason`] names no
/// reason): `user` is the account when it is known (the same statement either way, so that a
/// known address costs no more than an unknown one). It is written alone, and a failure to
/// write it is logged, not answered: the sign-in's own error stands.
pub async fn sign_in_failed(
    state: &AppState,
    how: SignInMethod,
    user: Option<&str>,
    error: &Error,
) {
    let Some(reason) = failure_reason(error) else {
        return;
    };
    let mut detail = how.detail();
    detail.insert("reason".into(), json!(reason));
    let mut event = Event::new(EventType::SignInFailed).detail(Value::Object(detail));
    event.user = user.map(str::to_string);
    if let Err(e) = record(state, event).await {
        tracing::warn!(error = %e, "a failed sign-in could not be recorded in the audit trail");
    }
}

/// The most events one page holds, and how many when the caller does not say.
pub const MAX_PAGE: i64 = 200;
pub const DEFAULT_PAGE: i64 = 50;

/// Who acted, as the listings say it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActorKind {
    /// The account itself (`self`).
    Own,
    /// Another account: a superuser (`administrator`).
    Administrator,
    /// Nobody, outside any request: the command line, the server's job (`system`).
    System,
    /// Nobody signed in, from a request: a failed sign-in, a reset asked for, a spent refresh
    /// token presented again (`anonymous`).
    Anonymous,
}

impl ActorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActorKind::Own => "self",
            ActorKind::Administrator => "administrator",
            ActorKind::System => "system",
            ActorKind::Anonymous => "anonymous",
        }
    }

    fn of(row: &EventRow) -> Self {
        match &row.actor_id {
            Some(actor) if row.user_id.as_ref() == Some(actor) => ActorKind::Own,
            Some(_) => ActorKind::Administrator,
            None if row.ip.is_some() || row.user_agent.is_some() => ActorKind::Anonymous,
            None => ActorKind::System,
        }
    }
}

/// An event as a listing shows it.
#[derive(Clone, Debug)]
pub struct EventView {
    pub id: String,
    pub kind: String,
    pub at: i64,
    pub user_id: Option<String>,
    pub actor_id: Option<String>,
    pub actor: ActorKind,
    pub session_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub detail: Value,
}

impl EventView {
    /// Everything on record: a superuser's view.
    fn whole(row: EventRow) -> Self {
        Self {
            actor: ActorKind::of(&row),
            detail: serde_json::from_str(&row.detail).unwrap_or_else(|_| json!({})),
            id: row.id,
            kind: row.kind,
            at: row.at,
            user_id: row.user_id,
            actor_id: row.actor_id,
            session_id: row.session_id,
            ip: row.ip,
            user_agent: row.user_agent,
        }
    }

    /// The account's own view of an event about it: no other account's id, and nothing of a
    /// superuser's request (their session, address, user agent) when one acted.
    fn owners(row: EventRow) -> Self {
        let whole = Self::whole(row);
        match whole.actor {
            ActorKind::Administrator => Self {
                actor_id: None,
                session_id: None,
                ip: None,
                user_agent: None,
                ..whole
            },
            ActorKind::Own => whole,
            ActorKind::System | ActorKind::Anonymous => Self {
                actor_id: None,
                ..whole
            },
        }
    }
}

/// A page of events, newest first, and the cursor of the next one (the `seq` of this page's
/// last event) when there may be more.
#[derive(Debug)]
pub struct EventPage {
    pub events: Vec<EventView>,
    pub next_cursor: Option<i64>,
}

/// What a superuser's listing asks for. Every field narrows it; `since` is inclusive, `until`
/// exclusive (epoch ms); `cursor` is a previous page's `next_cursor`.
#[derive(Debug, Default)]
pub struct Listing {
    pub user: Option<String>,
    pub kinds: Vec<EventType>,
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub limit: i64,
    pub cursor: Option<i64>,
}

/// The events matching `listing`, as a superuser sees them.
pub async fn list(state: &AppState, listing: &Listing) -> Result<EventPage> {
    page(state, listing, EventView::whole).await
}

/// The caller's own events (those whose `user` is the caller's account), as its owner sees them.
pub async fn list_own(
    state: &AppState,
    caller: &Caller,
    limit: i64,
    cursor: Option<i64>,
) -> Result<EventPage> {
    let listing = Listing {
        user: Some(caller.account.id.clone()),
        limit,
        cursor,
        ..Listing::default()
    };
    page(state, &listing, EventView::owners).await
}

async fn page(
    state: &AppState,
    listing: &Listing,
    view: fn(EventRow) -> EventView,
) -> Result<EventPage> {
    let limit = listing.limit.clamp(1, MAX_PAGE);
    let filter = events::EventFilter {
        user_id: listing.user.clone(),
        kinds: listing
            .kinds
            .iter()
            .map(|k| k.as_str().to_string())
            .collect(),
        since: listing.since,
        until: listing.until,
        before_seq: listing.cursor,
    };
    // One more than the page: whether there is a next one.
    let mut rows = events::list(&state.db, &filter, limit + 1).await?;
    let more = rows.len() > usize::try_from(limit).unwrap_or(usize::MAX);
    rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let next_cursor = if more {
        rows.last().map(|r| r.seq)
    } else {
        None
    };
    Ok(EventPage {
        events: rows.into_iter().map(view).collect(),
        next_cursor,
    })
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
