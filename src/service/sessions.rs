//! Session management: what a session hands out (its token pair), the check of an access token
//! on every request, listing and revoking sessions, and the logout scopes. Logging in is in
//! `service::login`, refreshing in `service::refresh`.

use serde_json::json;

use crate::auth::tokens::TokenError;
use crate::db::{sessions, users};
use crate::domain::{Account, SessionView};
use crate::error::{Error, Result};
use crate::service::audit::{self, EventType};
use crate::service::{ms, refresh, views};
use crate::state::AppState;

/// Where a request came from, recorded on its session.
#[derive(Clone, Debug, Default)]
pub struct ClientInfo {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

/// What a login or a refresh returns.
#[derive(Clone, Debug)]
pub struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
    /// Seconds until the access token expires.
    pub expires_in: i64,
}

/// Which sessions a logout ends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogoutScope {
    /// This session only.
    #[default]
    Local,
    /// Every session of the user.
    Global,
    /// Every session of the user but this one.
    Others,
}

/// An authenticated caller: the account and the session its access token belongs to. It never
/// holds the password hash: a service that checks the password reads it (see
/// `accounts::confirm_password`).
#[derive(Clone, Debug)]
pub struct Caller {
    pub account: Account,
    pub session_id: String,
    /// The account's security stamp that the session was found live under: the credentials
    /// this request acts on. A change it makes is conditional on the stamp still being this.
    pub security_stamp: i64,
    /// How the session authenticated (RFC 8176 values, space-separated) and when it last
    /// passed the second factor.
    pub amr: String,
    pub mfa_at: Option<i64>,
    /// When the session last proved a passkey (a sign-in with user verification, a passkey
    /// step-up, a registration): what stands in for the password of an account without one.
    pub passkey_at: Option<i64>,
}

impl Caller {
    /// Whether the session passed a second factor (at login, enrolment or a step-up).
    pub fn passed_second_factor(&self) -> bool {
        self.amr.split_ascii_whitespace().any(|m| m == "mfa")
    }
}

fn ms_to_s(ms: i64) -> i64 {
    ms.div_euclid(1000)
}

/// The pair for the session's live refresh generation, with a fresh access token.
pub(crate) fn token_pair(state: &AppState, session: &sessions::Session, now: i64) -> TokenPair {
    let access_exp = ms_to_s(
        now.saturating_add(ms(state.config.tokens.access_token_ttl))
            .min(session.refresh_expires_at),
    );
    let iat = ms_to_s(now);
    TokenPair {
        access_token: state.tokens.issue_access(
            &session.user_id,
            &session.id,
            iat,
            access_exp,
            crate::auth::tokens::Authentication {
                amr: &session.amr,
                auth_time: ms_to_s(session.auth_time.unwrap_or(session.created_at)),
            },
        ),
        refresh_token: state.tokens.issue_refresh(
            &session.user_id,
            &session.id,
            session.refresh_generation,
            ms_to_s(session.refreshed_at),
            ms_to_s(session.refresh_expires_at),
        ),
        expires_in: (access_exp - iat).max(0),
    }
}

/// Checks an access token: signature, kind, claims, and that its session is still live.
pub async fn authenticate(state: &AppState, token: &str) -> Result<Caller> {
    let claims = state
        .tokens
        .verify_access(token, state.clock.now_s())
        .map_err(|e| {
            Error::Unauthorized(match e {
                TokenError::Expired => "the access token has expired",
                TokenError::WrongType => "this is not an access token",
                TokenError::Malformed | TokenError::Invalid => "the access token is not valid",
            })
        })?;
    live_caller(state, claims.sid.clone(), &claims.sub).await
}

/// The caller of a session that is live now (not revoked, not expired, opened under the
/// account's current credentials, of an active account), whose user is `user_id`.
pub(crate) async fn live_caller(
    state: &AppState,
    session_id: String,
    user_id: &str,
) -> Result<Caller> {
    let user = sessions::find_live_user(&state.db, &session_id, state.clock.now_ms())
        .await?
        .filter(|u| u.id == user_id && u.is_active)
        .ok_or(Error::Unauthorized("the session has ended"))?;
    Ok(Caller {
        security_stamp: user.security_stamp,
        amr: user.amr.clone(),
        mfa_at: user.mfa_at,
        passkey_at: user.passkey_at,
        account: user.into(),
        session_id,
    })
}

/// Ends sessions of an authenticated caller.
pub async fn logout(state: &AppState, caller: &Caller, scope: LogoutScope) -> Result<()> {
    end_sessions(state, &caller.account.id, &caller.session_id, scope).await
}

/// Ends sessions named by a refresh token (for clients whose access token has expired).
/// A token of a session that has already ended is accepted: the logout has happened.
pub async fn logout_with_refresh_token(
    state: &AppState,
    token: &str,
    scope: LogoutScope,
) -> Result<()> {
    match refresh::session_to_log_out(state, token).await? {
        Some(session) => end_sessions(state, &session.user_id, &session.id, scope).await,
        None => Ok(()),
    }
}

impl LogoutScope {
    fn as_str(self) -> &'static str {
        match self {
            LogoutScope::Local => "local",
            LogoutScope::Global => "global",
            LogoutScope::Others => "others",
        }
    }
}

async fn end_sessions(
    state: &AppState,
    user_id: &str,
    session_id: &str,
    scope: LogoutScope,
) -> Result<()> {
    let now = state.clock.now_ms();
    let mut tx = state.db.begin().await?;
    let ended = match scope {
        LogoutScope::Local => {
            u64::from(sessions::revoke_in(&mut tx, user_id, session_id, now).await?)
        }
        LogoutScope::Global => sessions::revoke_all_of_user_in(&mut tx, user_id, None, now).await?,
        LogoutScope::Others => {
            sessions::revoke_all_of_user_in(&mut tx, user_id, Some(session_id), now).await?
        }
    };
    let signed_out = audit::Event::new(EventType::SignedOut)
        .user(user_id)
        .actor(user_id)
        .session(session_id)
        .detail(json!({ "scope": scope.as_str(), "sessions_ended": ended }));
    audit::record_in(state, &mut tx, signed_out).await?;
    tx.commit().await?;
    tracing::info!(user_id = %user_id, ?scope, ended, "logged out");
    Ok(())
}

/// The caller's live sessions, newest first.
pub async fn list(state: &AppState, caller: &Caller) -> Result<Vec<SessionView>> {
    let live =
        sessions::list_live_of_user(&state.db, &caller.account.id, state.clock.now_ms()).await?;
    Ok(live
        .into_iter()
        .map(|s| views::session_view(s, &caller.session_id))
        .collect())
}

/// Revokes one of the caller's live sessions (its refresh token and access tokens die at once).
pub async fn revoke_one(state: &AppState, caller: &Caller, session_id: &str) -> Result<()> {
    let mut tx = state.db.begin().await?;
    if !sessions::revoke_in(
        &mut tx,
        &caller.account.id,
        session_id,
        state.clock.now_ms(),
    )
    .await?
    {
        return Err(Error::NotFound("you have no live session with this id"));
    }
    let revoked = audit::Event::new(EventType::SessionRevoked)
        .by_self(caller)
        .detail(json!({ "revoked_session_id": session_id }));
    audit::record_in(state, &mut tx, revoked).await?;
    tx.commit().await?;
    tracing::info!(user_id = %caller.account.id, session_id, "session revoked by its user");
    Ok(())
}

const NO_SUCH_USER: Error = Error::NotFound("there is no user with this id");

/// The live sessions of the account `user_id`, newest first, for a superuser (as its user sees
/// them; `current` only for the superuser's own session, when it is theirs).
pub async fn list_of_user(
    state: &AppState,
    admin: &Caller,
    user_id: &str,
) -> Result<Vec<SessionView>> {
    if users::find_by_id(&state.db, user_id).await?.is_none() {
        return Err(NO_SUCH_USER);
    }
    let live = sessions::list_live_of_user(&state.db, user_id, state.clock.now_ms()).await?;
    Ok(live
        .into_iter()
        .map(|s| views::session_view(s, &admin.session_id))
        .collect())
}

/// A superuser revokes one live session of the account `user_id` (404 when it is not one).
#[tracing::instrument(skip_all, fields(admin_id = %admin.account.id, user_id = %user_id))]
pub async fn revoke_of_user(
    state: &AppState,
    admin: &Caller,
    user_id: &str,
    session_id: &str,
) -> Result<()> {
    let mut tx = state.db.begin().await?;
    if !sessions::revoke_in(&mut tx, user_id, session_id, state.clock.now_ms()).await? {
        drop(tx);
        return Err(match users::find_by_id(&state.db, user_id).await? {
            None => NO_SUCH_USER,
            Some(_) => Error::NotFound("this user has no live session with this id"),
        });
    }
    let revoked = audit::Event::new(EventType::SessionRevoked)
        .by_admin(admin, user_id)
        .detail(json!({ "revoked_session_id": session_id }));
    audit::record_in(state, &mut tx, revoked).await?;
    tx.commit().await?;
    tracing::info!(session_id, "session revoked by a superuser");
    Ok(())
}

/// A superuser revokes every live session of the account `user_id`. Returns how many ended.
#[tracing::instrument(skip_all, fields(admin_id = %admin.account.id, user_id = %user_id))]
pub async fn revoke_all_of_user(state: &AppState, admin: &Caller, user_id: &str) -> Result<u64> {
    let mut tx = state.db.begin().await?;
    // Read in the transaction: a deletion meanwhile is a 404, not an event about nobody.
    if users::email_in(&mut tx, user_id).await?.is_none() {
        return Err(NO_SUCH_USER);
    }
    let ended =
        sessions::revoke_all_of_user_in(&mut tx, user_id, None, state.clock.now_ms()).await?;
    let revoked = audit::Event::new(EventType::SessionRevoked)
        .by_admin(admin, user_id)
        .detail(json!({ "scope": "all", "sessions_ended": ended }));
    audit::record_in(state, &mut tx, revoked).await?;
    tx.commit().await?;
    tracing::info!(ended, "every session of a user revoked by a superuser");
    Ok(ended)
}
