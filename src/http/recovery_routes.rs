//! Password reset and email verification.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{
    Authenticated, JsonBody, Limited, MailLimit, RefreshLimit, required, required_token,
};
use super::problem::Problem;
use super::types::*;
use crate::domain::{Email, FieldErrors, Password};
use crate::error::{Error, Result};
use crate::service::recovery;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(request_password_reset))
        .routes(routes!(confirm_password_reset))
        .routes(routes!(request_verification))
        .routes(routes!(confirm_verification))
}

const RESET_ACCEPTED: &str =
    "If an active account has this address, a link to reset its password is on its way.";

/// Ask for a password-reset link.
///
/// Always 202 with the same body, whether or not an account has the address: the answer says
/// nothing about which accounts exist. The link (`{PUBLIC_URL}/reset-password?token=...`) works
/// once, for PASSWORD_RESET_EXPIRE_MINUTES; a newer request replaces it. At most one mail per
/// address per MAIL_RATE_LIMIT_SECONDS.
#[utoipa::path(
    post, path = "/password-reset/request", tag = "password reset and verification",
    request_body = PasswordResetRequest,
    responses((status = 202, description = "Accepted", body = AcceptedResponse))
)]
async fn request_password_reset(
    _: Limited<MailLimit>,
    State(state): State<AppState>,
    JsonBody(body): JsonBody<PasswordResetRequest>,
) -> Result<(StatusCode, Json<AcceptedResponse>)> {
    let raw = required("email", body.email).map_err(|e| Error::Validation(vec![e]))?;
    let email = Email::parse("email", &raw).map_err(|e| Error::Validation(vec![e]))?;
    recovery::request_password_reset(&state, email);
    Ok((
        StatusCode::ACCEPTED,
        Json(AcceptedResponse {
            message: RESET_ACCEPTED,
        }),
    ))
}

/// Set a new password with the token from a reset link.
///
/// Ends every session of the account, and marks its address verified (the link proved it).
#[utoipa::path(
    post, path = "/password-reset/confirm", tag = "password reset and verification",
    request_body = PasswordResetConfirm,
    responses(
        (status = 204, description = "The password is changed"),
        (status = 400, description = "INVALID_TOKEN: unknown, used or expired token", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn confirm_password_reset(
    _: Limited<RefreshLimit>,
    State(state): State<AppState>,
    JsonBody(body): JsonBody<PasswordResetConfirm>,
) -> Result<StatusCode> {
    let mut errors = FieldErrors::default();
    let token = errors.check(required_token("token", body.token));
    // The length is checked here, whatever the token; the rest of the policy, which knows the
    // account, once the token is known good.
    let password = errors
        .check(required("new_password", body.new_password))
        .and_then(|p| {
            let min = state.config.accounts.password_min_length;
            errors.check(Password::new_password("new_password", p.clone(), min).map(|_| p))
        });
    errors.finish()?;
    let (Some(token), Some(password)) = (token, password) else {
        unreachable!("finish() returns the errors of any missing field")
    };
    recovery::confirm_password_reset(&state, &token, password).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Ask for a link that confirms the caller's email address.
///
/// 202 in every case; no mail when the address is already verified, or when one went out less
/// than MAIL_RATE_LIMIT_SECONDS ago. The link is `{PUBLIC_URL}/verify-email?token=...`.
#[utoipa::path(
    post, path = "/verify/request", tag = "password reset and verification",
    security(("bearer" = []), ("oauth2" = [])),
    responses((status = 202, description = "Accepted", body = AcceptedResponse))
)]
async fn request_verification(
    _: Limited<MailLimit>,
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
) -> Result<(StatusCode, Json<AcceptedResponse>)> {
    recovery::request_verification(&state, &caller).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(AcceptedResponse {
            message: "If the address is not verified yet, a link to verify it is on its way.",
        }),
    ))
}

/// Confirm an email address with the token from a verification link.
#[utoipa::path(
    post, path = "/verify/confirm", tag = "password reset and verification",
    request_body = VerifyConfirm,
    responses(
        (status = 200, description = "The account, now verified", body = UserResponse),
        (status = 400, description = "INVALID_TOKEN: unknown, used or expired token, or the address has changed since", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn confirm_verification(
    _: Limited<RefreshLimit>,
    State(state): State<AppState>,
    JsonBody(body): JsonBody<VerifyConfirm>,
) -> Result<Json<UserResponse>> {
    let token = required_token("token", body.token).map_err(|e| Error::Validation(vec![e]))?;
    let user = recovery::confirm_verification(&state, &token).await?;
    Ok(Json(user.into()))
}
