//! The authenticated caller: the bearer token of the Authorization header, checked by
//! `service::sessions::authenticate` (its session must be live).

use axum::extract::{FromRef, FromRequestParts, OptionalFromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use crate::error::Error;
use crate::service::mfa;
use crate::service::sessions::{self, Caller};
use crate::state::AppState;

/// The bearer token of the Authorization header: `None` without the header, an error when the
/// header is there but is not `Bearer <token>`.
fn bearer_token(parts: &Parts) -> Result<Option<&str>, Error> {
    let Some(value) = parts.headers.get(AUTHORIZATION) else {
        return Ok(None);
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|token| !token.is_empty())
        .ok_or(Error::Unauthorized(
            "the Authorization header must be `Bearer <access token>`",
        ))?;
    Ok(Some(token))
}

/// The authenticated caller. Rejects a missing or bad token with 401, and, while
/// MFA_REQUIRED_FOR keeps the caller to enrolment (`service::mfa::must_enrol`), with 403
/// MFA_ENROLMENT_REQUIRED.
pub struct Authenticated(pub Caller);

impl<S> FromRequestParts<S> for Authenticated
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Enrolling(caller) =
            <Enrolling as FromRequestParts<S>>::from_request_parts(parts, state).await?;
        if mfa::must_enrol(&AppState::from_ref(state), &caller).await? {
            return Err(Error::MfaEnrolmentRequired);
        }
        Ok(Self(caller))
    }
}

/// An authenticated caller that the second-factor policy may still keep to enrolment: for the
/// endpoints such a caller can use (enrolment, GET /me/mfa, logout).
///
/// `Option<Enrolling>` is `None` only when there is no Authorization header at all: a bad token
/// is still refused, never silently treated as anonymous.
pub struct Enrolling(pub Caller);

impl<S> FromRequestParts<S> for Enrolling
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let token =
            bearer_token(parts)?.ok_or(Error::Unauthorized("an access token is required"))?;
        let state = AppState::from_ref(state);
        sessions::authenticate(&state, token).await.map(Self)
    }
}

impl<S> OptionalFromRequestParts<S> for Enrolling
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        match bearer_token(parts)? {
            None => Ok(None),
            Some(token) => {
                let state = AppState::from_ref(state);
                sessions::authenticate(&state, token)
                    .await
                    .map(|c| Some(Self(c)))
            }
        }
    }
}

/// An authenticated superuser; anyone else authenticated gets 403 FORBIDDEN.
pub struct Superuser(pub Caller);

impl<S> FromRequestParts<S> for Superuser
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Authenticated(caller) =
            <Authenticated as FromRequestParts<S>>::from_request_parts(parts, state).await?;
        if caller.account.is_superuser {
            Ok(Self(caller))
        } else {
            Err(Error::Forbidden("this needs a superuser"))
        }
    }
}
