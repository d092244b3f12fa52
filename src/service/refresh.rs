//! Refreshing: spending a refresh token for the next pair. Each session has one live refresh
//! token; the one spent most recently is handed the current pair again within the reuse window
//! (two tabs refreshing at once); any other spent token is reuse, and revokes the session. The
//! decision is [`decide`], a pure function; [`refresh`] loads, decides and writes.

use crate::auth::tokens::{Claims, TokenError, hash_token_id};
use crate::db::sessions;
use crate::error::{Error, Result};
use crate::service::audit::{self, EventType};
use crate::service::ms;
use crate::service::sessions::{Caller, ClientInfo, TokenPair, live_caller, token_pair};
use crate::state::AppState;

/// What a session's refresh chain looks like to a presented token.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Chain<'a> {
    pub live_hash: &'a str,
    pub previous_hash: Option<&'a str>,
    /// When the live token was issued (the previous one spent).
    pub refreshed_at: i64,
    pub revoked: bool,
    /// The session's absolute end, and the live token's.
    pub expires_at: i64,
    pub refresh_expires_at: i64,
    /// The account is active and its credentials have not changed since the session opened.
    pub credentials_current: bool,
}

impl<'a> Chain<'a> {
    fn of(found: &'a sessions::SessionState) -> Self {
        let s = &found.session;
        Self {
            live_hash: &s.refresh_jti_hash,
            previous_hash: s.previous_jti_hash.as_deref(),
            refreshed_at: s.refreshed_at,
            revoked: s.revoked_at.is_some(),
            expires_at: s.expires_at,
            refresh_expires_at: s.refresh_expires_at,
            credentials_current: found.credentials_current,
        }
    }
}

/// What a presented refresh token gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// The live token: spend it, hand out the next pair.
    Rotate,
    /// The token spent most recently, within the reuse window: the current pair again.
    HandBackCurrent,
    /// Spent earlier, or outside the window: the chain has leaked; the session is revoked.
    RevokeForReuse,
    /// The session cannot be refreshed any more, for this reason.
    Refuse(&'static str),
}

/// The rotation rules, on plain values: a session that ended refuses every token (its end is
/// not reuse); the live token rotates; the token spent most recently is handed the current pair
/// up to and including `reuse_window_ms` after its spending (never with a window of 0); every
/// other token is reuse.
pub(crate) fn decide(
    chain: &Chain<'_>,
    presented_hash: &str,
    now: i64,
    reuse_window_ms: i64,
) -> Decision {
    if chain.revoked {
        return Decision::Refuse("the session has been revoked");
    }
    if now >= chain.expires_at || now >= chain.refresh_expires_at {
        return Decision::Refuse("the session has expired");
    }
    if !chain.credentials_current {
        return Decision::Refuse("the account's credentials have changed, or it is not active");
    }
    if presented_hash == chain.live_hash {
        return Decision::Rotate;
    }
    if chain.previous_hash == Some(presented_hash)
        && reuse_window_ms > 0
        && now.saturating_sub(chain.refreshed_at) <= reuse_window_ms
    {
        Decision::HandBackCurrent
    } else {
        Decision::RevokeForReuse
    }
}

fn verify_refresh(state: &AppState, token: &str) -> Result<Claims> {
    state
        .tokens
        .verify_refresh(token, state.clock.now_s())
        .map_err(|e| {
            Error::InvalidRefreshToken(match e {
                TokenError::Expired => "the refresh token has expired",
                TokenError::WrongType => "this is not a refresh token",
                TokenError::Malformed | TokenError::Invalid => "the refresh token is not valid",
            })
        })
}

/// The session a refresh token names (its user must be the token's subject).
async fn session_of(state: &AppState, claims: &Claims) -> Result<sessions::SessionState> {
    sessions::find(&state.db, &claims.sid)
        .await?
        .filter(|s| s.session.user_id == claims.sub)
        .ok_or(Error::InvalidRefreshToken("the refresh token is not valid"))
}

/// Where a spent refresh token was presented again, for its audit event.
#[derive(Clone, Copy, Debug)]
enum Presented {
    Refresh,
    Browser,
    Logout,
}

async fn revoke_for_reuse(
    state: &AppState,
    session: &sessions::Session,
    now: i64,
    via: Presented,
) -> Result<Error> {
    let mut tx = state.db.begin().await?;
    // Recorded once: of concurrent reuses of one chain, the one that revoked the session.
    if sessions::revoke_in(&mut tx, &session.user_id, &session.id, now).await? {
        let via = match via {
            Presented::Refresh => "refresh",
            Presented::Browser => "browser",
            Presented::Logout => "logout",
        };
        let reuse = audit::Event::new(EventType::RefreshReuseDetected)
            .user(&session.user_id)
            .session(&session.id)
            .detail(serde_json::json!({ "via": via }));
        audit::record_in(state, &mut tx, reuse).await?;
    }
    tx.commit().await?;
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
    let presented = hash_token_id(&claims.jti);
    let window = ms(state.config.tokens.refresh_reuse_interval);
    // A lost race to rotate is followed by one more look, which then finds the token just spent.
    for _ in 0..2 {
        let now = state.clock.now_ms();
        let found = session_of(state, &claims).await?;
        let session = &found.session;
        match decide(&Chain::of(&found), &presented, now, window) {
            Decision::Refuse(why) => return Err(Error::InvalidRefreshToken(why)),
            Decision::RevokeForReuse => {
                return Err(revoke_for_reuse(state, session, now, Presented::Refresh).await?);
            }
            Decision::HandBackCurrent => return Ok(token_pair(state, session, now)),
            Decision::Rotate => {
                let generation = session.refresh_generation + 1;
                let new_jti_hash =
                    hash_token_id(&state.tokens.refresh_jti(&session.id, generation));
                let refresh_expires_at = now
                    .saturating_add(ms(state.config.tokens.refresh_token_ttl))
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
                        ..found.session
                    };
                    return Ok(token_pair(state, &next, now));
                }
            }
        }
    }
    Err(Error::InvalidRefreshToken(
        "the refresh token is no longer valid",
    ))
}

/// The caller of a browser's session, whose cookie holds the session's refresh token (the pages'
/// sessions, `http::pages`): signed in while that token is the session's live one, checked as
/// [`refresh`] checks it but without rotating, and while the session is live under the
/// account's current credentials. A browser's session is never refreshed, so there is no reuse
/// window: an older token of the session means its chain has leaked (the live token was spent
/// at /refresh by someone holding a copy of the cookie), and the session is revoked, as
/// /refresh would revoke it.
pub async fn browser_session(state: &AppState, token: &str) -> Result<Caller> {
    let claims = verify_refresh(state, token)?;
    let found = session_of(state, &claims).await?;
    let now = state.clock.now_ms();
    match decide(&Chain::of(&found), &hash_token_id(&claims.jti), now, 0) {
        Decision::Rotate => live_caller(state, claims.sid, &claims.sub).await,
        Decision::Refuse(why) => Err(Error::InvalidRefreshToken(why)),
        Decision::RevokeForReuse | Decision::HandBackCurrent => {
            Err(revoke_for_reuse(state, &found.session, now, Presented::Browser).await?)
        }
    }
}

/// The live session a refresh token may log out: `None` when the session has already ended (the
/// logout has happened); reuse revokes the session, as at a refresh.
pub(crate) async fn session_to_log_out(
    state: &AppState,
    token: &str,
) -> Result<Option<sessions::Session>> {
    let claims = verify_refresh(state, token)?;
    let now = state.clock.now_ms();
    let found = match session_of(state, &claims).await {
        Ok(found) => found,
        Err(Error::InvalidRefreshToken(_)) => return Ok(None),
        Err(e) => return Err(e),
    };
    match decide(
        &Chain::of(&found),
        &hash_token_id(&claims.jti),
        now,
        ms(state.config.tokens.refresh_reuse_interval),
    ) {
        Decision::Refuse(_) => Ok(None),
        Decision::Rotate | Decision::HandBackCurrent => Ok(Some(found.session)),
        Decision::RevokeForReuse => {
            Err(revoke_for_reuse(state, &found.session, now, Presented::Logout).await?)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: i64 = 10_000;
    const NOW: i64 = 1_000_000;

    fn chain() -> Chain<'static> {
        Chain {
            live_hash: "live",
            previous_hash: Some("previous"),
            refreshed_at: NOW - 1_000,
            revoked: false,
            expires_at: NOW + 60_000,
            refresh_expires_at: NOW + 30_000,
            credentials_current: true,
        }
    }

    #[test]
    fn the_live_token_rotates() {
        assert_eq!(decide(&chain(), "live", NOW, WINDOW), Decision::Rotate);
        // With no reuse window too.
        assert_eq!(decide(&chain(), "live", NOW, 0), Decision::Rotate);
    }

    #[test]
    fn the_token_just_spent_gets_the_current_pair_up_to_the_window_edge() {
        let c = Chain {
            refreshed_at: NOW - WINDOW,
            ..chain()
        };
        assert_eq!(
            decide(&c, "previous", NOW, WINDOW),
            Decision::HandBackCurrent
        );
        assert_eq!(
            decide(&c, "previous", NOW + 1, WINDOW),
            Decision::RevokeForReuse
        );
        let fresh = Chain {
            refreshed_at: NOW,
            ..chain()
        };
        assert_eq!(
            decide(&fresh, "previous", NOW, WINDOW),
            Decision::HandBackCurrent
        );
    }

    #[test]
    fn a_window_of_zero_makes_every_second_use_reuse() {
        let c = Chain {
            refreshed_at: NOW,
            ..chain()
        };
        assert_eq!(decide(&c, "previous", NOW, 0), Decision::RevokeForReuse);
    }

    #[test]
    fn older_and_unknown_tokens_are_reuse() {
        assert_eq!(
            decide(&chain(), "older", NOW, WINDOW),
            Decision::RevokeForReuse
        );
        let first = Chain {
            previous_hash: None,
            ..chain()
        };
        assert_eq!(
            decide(&first, "previous", NOW, WINDOW),
            Decision::RevokeForReuse
        );
    }

    #[test]
    fn an_ended_session_refuses_every_token_without_calling_it_reuse() {
        let revoked = Chain {
            revoked: true,
            ..chain()
        };
        let expired = Chain {
            expires_at: NOW,
            ..chain()
        };
        let token_expired = Chain {
            refresh_expires_at: NOW,
            ..chain()
        };
        let changed = Chain {
            credentials_current: false,
            ..chain()
        };
        for c in [revoked, expired, token_expired, changed] {
            for presented in ["live", "previous", "older"] {
                assert!(
                    matches!(decide(&c, presented, NOW, WINDOW), Decision::Refuse(_)),
                    "{c:?} {presented}"
                );
            }
        }
        // One millisecond before the end, the session is still live.
        let ending = Chain {
            expires_at: NOW + 1,
            refresh_expires_at: NOW + 1,
            ..chain()
        };
        assert_eq!(decide(&ending, "live", NOW, WINDOW), Decision::Rotate);
    }
}
