//! Logging in: the credentials, the lockout around their check, the rehash of an old hash, and
//! the session that a login opens.

use crate::auth::tokens::hash_token_id;
use crate::db::{Tx, mfa, sessions, users};
use crate::domain::{Email, Password};
use crate::error::{Error, Result};
use crate::metrics::LoginMethod;
use crate::service::sessions::{ClientInfo, TokenPair, token_pair};
use crate::service::{lockout, ms};
use crate::state::AppState;

/// Checks email and password and opens a session. Every check is an attempt counted by the
/// lockout (see `service::lockout`) before the password is looked at.
#[tracing::instrument(skip_all)]
pub async fn login(
    state: &AppState,
    email: &str,
    password: &Password,
    client: ClientInfo,
) -> Result<TokenPair> {
    let result = check_password(state, email, password, client).await;
    state.metrics.login(LoginMethod::Password, &result);
    result
}

async fn check_password(
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
        // An account without a password costs the dummy verification an unknown address does.
        .verify(
            password,
            user.as_ref()
                .filter(|u| u.has_password())
                .map(|u| u.password_hash.as_str()),
        )
        .await
    {
        Ok(v) => v,
        Err(e) => {
            attempt.abandoned(state).await?;
            return Err(e);
        }
    };
    let user = match user {
        Some(user) if verification.matches && user.has_password() => user,
        _ => {
            attempt.failed();
            return Err(Error::InvalidCredentials);
        }
    };
    attempt.succeeded(state).await?;
    if !user.is_active {
        return Err(Error::AccountDisabled);
    }
    if state.config.accounts.require_verified_email && !user.is_verified {
        return Err(Error::EmailNotVerified);
    }
    if verification.needs_rehash {
        upgrade_hash_in_background(state, &user, password);
    }
    let passkeys = state.config.passkeys.enabled;
    if mfa::has_second_factor(&state.db, &user.id, passkeys).await? {
        return Err(crate::service::mfa::challenge(state, &user, client).await?);
    }
    let now = state.clock.now_ms();
    open_session(
        state,
        &user,
        client,
        Authentication {
            amr: crate::service::mfa::AMR_PASSWORD,
            auth_time: now,
            mfa_at: None,
            passkey_at: None,
        },
    )
    .await
}

/// How a session's user authenticated, recorded on the session and stated by its tokens.
#[derive(Clone, Copy, Debug)]
pub struct Authentication {
    /// RFC 8176 `amr` values, space-separated.
    pub amr: &'static str,
    /// When the user authenticated (the password check), epoch milliseconds.
    pub auth_time: i64,
    /// When the second factor was passed, if it was.
    pub mfa_at: Option<i64>,
    /// When a passkey was proved with user verification, if one was.
    pub passkey_at: Option<i64>,
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
            users::replace_password_hash(
                &state.db,
                &id,
                &old_hash,
                &new_hash,
                state.clock.now_ms(),
            )
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
    authentication: Authentication,
) -> Result<TokenPair> {
    let now = state.clock.now_ms();
    let session = new_session(state, user, client, authentication, now);
    if !sessions::insert(&state.db, &session).await? {
        return Err(Error::InvalidCredentials);
    }
    tracing::info!(user_id = %user.id, session_id = %session.id, "session opened");
    Ok(token_pair(state, &session, now))
}

/// [`open_session`] inside `tx` (with what else the login writes: a passkey's counter), for the
/// caller to commit. `None` when the account's credentials changed since `user` was read.
pub(crate) async fn open_session_in(
    state: &AppState,
    tx: &mut Tx,
    user: &users::User,
    client: ClientInfo,
    authentication: Authentication,
    now: i64,
) -> Result<Option<TokenPair>> {
    let session = new_session(state, user, client, authentication, now);
    if !sessions::insert_in(tx, &session).await? {
        return Ok(None);
    }
    tracing::info!(user_id = %user.id, session_id = %session.id, "session opened");
    Ok(Some(token_pair(state, &session, now)))
}

fn new_session(
    state: &AppState,
    user: &users::User,
    client: ClientInfo,
    authentication: Authentication,
    now: i64,
) -> sessions::Session {
    let config = &state.config;
    let id = uuid::Uuid::new_v4().to_string();
    let expires_at = now.saturating_add(ms(config.tokens.session_max_age));
    sessions::Session {
        refresh_generation: 0,
        refresh_jti_hash: hash_token_id(&state.tokens.refresh_jti(&id, 0)),
        previous_jti_hash: None,
        refreshed_at: now,
        refresh_expires_at: now
            .saturating_add(ms(config.tokens.refresh_token_ttl))
            .min(expires_at),
        created_at: now,
        last_used_at: now,
        expires_at,
        revoked_at: None,
        user_id: user.id.clone(),
        user_agent: client.user_agent,
        ip: client.ip,
        user_stamp: user.security_stamp,
        amr: authentication.amr.to_string(),
        auth_time: Some(authentication.auth_time),
        mfa_at: authentication.mfa_at,
        passkey_at: authentication.passkey_at,
        id,
    }
}
