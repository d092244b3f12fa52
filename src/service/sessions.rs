//! Login sessions and their tokens: log in, check an access token, rotate a refresh token,
//! log out.

use crate::auth::tokens::{Claims, TokenError, hash_token_id};
use crate::db::{self, sessions, users};
use crate::domain::{Email, Password};
use crate::error::{Error, Result};
use crate::service::{lockout, ms};
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

/// An authenticated caller: the user and the session its access token belongs to.
#[derive(Clone, Debug)]
pub struct Caller {
    pub user: users::User,
    pub session_id: String,
}

fn ms_to_s(ms: i64) -> i64 {
    ms.div_euclid(1000)
}

/// Checks email and password and opens a session. Every check is an attempt counted by the
/// lockout (see `service::lockout`) before the password is looked at.
#[tracing::instrument(skip_all)]
pub async fn login(
    state: &AppState,
    email: &str,
    password: &Password,
    client: ClientInfo,
) -> Result<TokenPair> {
    let parsed = Email::parse("email", email).ok();
    let key: String = match &parsed {
        Some(e) => e.as_str().to_string(),
        None => Email::normalise(email)
            .chars()
            .take(Email::MAX_LENGTH)
            .collect(),
    };
    let attempt = lockout::begin(state, &key).await?;
    // An address that cannot be valid cannot have an account; it still costs a verification.
    let user = match &parsed {
        Some(email) => users::find_by_email(&state.db, email.as_str()).await?,
        None => None,
    };
    let verification = match state
        .hasher
        .verify(password, user.as_ref().map(|u| u.password_hash.as_str()))
        .await
    {
        Ok(v) => v,
        Err(e) => {
            attempt.abandoned(state).await?;
            return Err(e);
        }
    };
    let user = match user {
        Some(user) if verification.matches => user,
        _ => {
            attempt.failed();
            return Err(Error::InvalidCredentials);
        }
    };
    attempt.succeeded(state).await?;
    if !user.is_active {
        return Err(Error::AccountDisabled);
    }
    if state.config.require_verified_email && !user.is_verified {
        return Err(Error::EmailNotVerified);
    }
    if verification.needs_rehash {
        upgrade_hash_in_background(state, &user, password);
    }
    open_session(state, &user, client).await
}

/// Replaces a hash made with old parameters, without delaying the login that found it.
fn upgrade_hash_in_background(state: &AppState, user: &users::User, password: &Password) {
    let state = state.clone();
    let (id, old_hash, password) = (
        user.id.clone(),
        user.password_hash.clone(),
        password.clone(),
    );
    tokio::spawn(async move {
        let result = async {
            let new_hash = state.hasher.hash(&password).await?;
            users::replace_password_hash(&state.db, &id, &old_hash, &new_hash, db::now_ms())
                .await?;
            Ok::<_, Error>(())
        }
        .await;
        match result {
            Ok(()) => {
                tracing::info!(user_id = %id, "password hash upgraded to the current parameters")
            }
            Err(e) => {
                tracing::warn!(user_id = %id, error = %e, "could not upgrade a password hash")
            }
        }
    });
}

/// Opens a new session for `user` and returns its first token pair. The session opens only if
/// the account's credentials are still those `user` was read with: a login whose password was
/// checked against credentials that have changed since yields nothing.
pub async fn open_session(
    state: &AppState,
    user: &users::User,
    client: ClientInfo,
) -> Result<TokenPair> {
    let config = &state.config;
    let now = db::now_ms();
    let id = uuid::Uuid::new_v4().to_string();
    let expires_at = now.saturating_add(ms(config.session_max_age));
    let session = sessions::Session {
        refresh_generation: 0,
        refresh_jti_hash: hash_token_id(&state.tokens.refresh_jti(&id, 0)),
        previous_jti_hash: None,
        refreshed_at: now,
        refresh_expires_at: now
            .saturating_add(ms(config.refresh_token_ttl))
            .min(expires_at),
        created_at: now,
        last_used_at: now,
        expires_at,
        revoked_at: None,
        user_id: user.id.clone(),
        user_agent: client.user_agent,
        ip: client.ip,
        user_stamp: user.security_stamp,
        id,
    };
    if !sessions::insert(&state.db, &session).await? {
        return Err(Error::InvalidCredentials);
    }
    tracing::info!(user_id = %user.id, session_id = %session.id, "session opened");
    Ok(token_pair(state, &session, now))
}

/// The pair for the session's live refresh generation, with a fresh access token.
fn token_pair(state: &AppState, session: &sessions::Session, now: i64) -> TokenPair {
    let access_exp = ms_to_s(
        now.saturating_add(ms(state.config.access_token_ttl))
            .min(session.refresh_expires_at),
    );
    let iat = ms_to_s(now);
    TokenPair {
        access_token: state
            .tokens
            .issue_access(&session.user_id, &session.id, iat, access_exp),
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
    let claims = state.tokens.verify_access(token).map_err(|e| {
        Error::Unauthorized(match e {
            TokenError::Expired => "the access token has expired",
            TokenError::WrongType => "this is not an access token",
            TokenError::Malformed | TokenError::Invalid => "the access token is not valid",
        })
    })?;
    let user = sessions::find_live_user(&state.db, &claims.sid, db::now_ms())
        .await?
        .filter(|u| u.id == claims.sub && u.is_active)
        .ok_or(Error::Unauthorized("the session has ended"))?;
    Ok(Caller {
        user,
        session_id: claims.sid,
    })
}

/// What a presented refresh token is to its session.
enum Standing {
    /// The live token: it may be spent.
    Live,
    /// The token spent most recently, inside the reuse window: the current pair is handed out.
    JustSpent,
    /// Spent earlier, or outside the window: the chain has leaked.
    Reused,
}

fn standing(state: &AppState, session: &sessions::Session, claims: &Claims, now: i64) -> Standing {
    let presented = hash_token_id(&claims.jti);
    if presented == session.refresh_jti_hash {
        return Standing::Live;
    }
    let window = ms(state.config.refresh_reuse_interval);
    if session.previous_jti_hash.as_deref() == Some(presented.as_str())
        && window > 0
        && now.saturating_sub(session.refreshed_at) <= window
    {
        Standing::JustSpent
    } else {
        Standing::Reused
    }
}

/// Loads the session a refresh token names, if it is live; errors say why not.
async fn live_session_of(state: &AppState, claims: &Claims, now: i64) -> Result<sessions::Session> {
    let found = sessions::find(&state.db, &claims.sid)
        .await?
        .filter(|s| s.session.user_id == claims.sub)
        .ok_or(Error::InvalidRefreshToken("the refresh token is not valid"))?;
    let session = found.session;
    if session.revoked_at.is_some() {
        return Err(Error::InvalidRefreshToken("the session has been revoked"));
    }
    if now >= session.expires_at || now >= session.refresh_expires_at {
        return Err(Error::InvalidRefreshToken("the session has expired"));
    }
    if !found.credentials_current {
        return Err(Error::InvalidRefreshToken(
            "the account's credentials have changed, or it is not active",
        ));
    }
    Ok(session)
}

fn verify_refresh(state: &AppState, token: &str) -> Result<Claims> {
    state.tokens.verify_refresh(token).map_err(|e| {
        Error::InvalidRefreshToken(match e {
            TokenError::Expired => "the refresh token has expired",
            TokenError::WrongType => "this is not a refresh token",
            TokenError::Malformed | TokenError::Invalid => "the refresh token is not valid",
        })
    })
}

async fn revoke_for_reuse(
    state: &AppState,
    session: &sessions::Session,
    now: i64,
) -> Result<Error> {
    sessions::revoke(&state.db, &session.user_id, &session.id, now).await?;
    tracing::warn!(
        user_id = %session.user_id,
        session_id = %session.id,
        "a spent refresh token was presented again; the session is revoked"
    );
    Ok(Error::InvalidRefreshToken(
        "the refresh token was already used; the session is revoked",
    ))
}

/// Spends a refresh token and returns the next pair (see the rotation rules in the README).
#[tracing::instrument(skip_all)]
pub async fn refresh(state: &AppState, token: &str, client: ClientInfo) -> Result<TokenPair> {
    let claims = verify_refresh(state, token)?;
    // A lost race to rotate is followed by one more look, which then finds the token just spent.
    for _ in 0..2 {
        let now = db::now_ms();
        let session = live_session_of(state, &claims, now).await?;
        match standing(state, &session, &claims, now) {
            Standing::Live => {
                let generation = session.refresh_generation + 1;
                let new_jti_hash =
                    hash_token_id(&state.tokens.refresh_jti(&session.id, generation));
                let refresh_expires_at = now
                    .saturating_add(ms(state.config.refresh_token_ttl))
                    .min(session.expires_at);
                let rotated = sessions::rotate(
                    &state.db,
                    &sessions::Rotation {
                        session_id: &session.id,
                        expected_generation: session.refresh_generation,
                        expected_jti_hash: &session.refresh_jti_hash,
                        new_jti_hash: &new_jti_hash,
                        now,
                        new_refresh_expires_at: refresh_expires_at,
                        user_agent: client.user_agent.as_deref(),
                        ip: client.ip.as_deref(),
                    },
                )
                .await?;
                if rotated {
                    let next = sessions::Session {
                        refresh_generation: generation,
                        refresh_jti_hash: new_jti_hash,
                        previous_jti_hash: Some(session.refresh_jti_hash.clone()),
                        refreshed_at: now,
                        refresh_expires_at,
                        last_used_at: now,
                        ..session
                    };
                    return Ok(token_pair(state, &next, now));
                }
            }
            Standing::JustSpent => {
                return Ok(token_pair(state, &session, now));
            }
            Standing::Reused => return Err(revoke_for_reuse(state, &session, now).await?),
        }
    }
    Err(Error::InvalidRefreshToken(
        "the refresh token is no longer valid",
    ))
}

/// Ends sessions of an authenticated caller.
pub async fn logout(state: &AppState, caller: &Caller, scope: LogoutScope) -> Result<()> {
    end_sessions(state, &caller.user.id, &caller.session_id, scope).await
}

/// Ends sessions named by a refresh token (for clients whose access token has expired).
/// A token of a session that has already ended is accepted: the logout has happened.
pub async fn logout_with_refresh_token(
    state: &AppState,
    token: &str,
    scope: LogoutScope,
) -> Result<()> {
    let claims = verify_refresh(state, token)?;
    let now = db::now_ms();
    let session = match live_session_of(state, &claims, now).await {
        Ok(session) => session,
        Err(Error::InvalidRefreshToken(_)) => return Ok(()),
        Err(e) => return Err(e),
    };
    match standing(state, &session, &claims, now) {
        Standing::Live | Standing::JustSpent => {
            end_sessions(state, &session.user_id, &session.id, scope).await
        }
        Standing::Reused => Err(revoke_for_reuse(state, &session, now).await?),
    }
}

async fn end_sessions(
    state: &AppState,
    user_id: &str,
    session_id: &str,
    scope: LogoutScope,
) -> Result<()> {
    let now = db::now_ms();
    let ended = match scope {
        LogoutScope::Local => {
            u64::from(sessions::revoke(&state.db, user_id, session_id, now).await?)
        }
        LogoutScope::Global => sessions::revoke_all_of_user(&state.db, user_id, None, now).await?,
        LogoutScope::Others => {
            sessions::revoke_all_of_user(&state.db, user_id, Some(session_id), now).await?
        }
    };
    tracing::info!(user_id = %user_id, ?scope, ended, "logged out");
    Ok(())
}

/// The caller's live sessions, newest first.
pub async fn list(state: &AppState, caller: &Caller) -> Result<Vec<sessions::Session>> {
    Ok(sessions::list_live_of_user(&state.db, &caller.user.id, db::now_ms()).await?)
}

/// Revokes one of the caller's live sessions (its refresh token and access tokens die at once).
pub async fn revoke_one(state: &AppState, caller: &Caller, session_id: &str) -> Result<()> {
    if !sessions::revoke(&state.db, &caller.user.id, session_id, db::now_ms()).await? {
        return Err(Error::NotFound("you have no live session with this id"));
    }
    tracing::info!(user_id = %caller.user.id, session_id, "session revoked by its user");
    Ok(())
}
