//! The caller's second factor: /me/mfa (status), TOTP enrolment and removal, recovery codes,
//! and cancelling a superuser's pending reset.
//!
//! The status and enrolment take [`Enrolling`]: they are what an account that MFA_REQUIRED_FOR
//! covers can still do before it has a second factor.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{Authenticated, Enrolling, JsonBody, caller_password, required};
use super::problem::Problem;
use super::types::*;
use crate::domain::{FieldErrors, Password};
use crate::error::{Error, Result};
use crate::service::mfa::{self, SecondFactor};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(status))
        .routes(routes!(begin_totp, disable_totp))
        .routes(routes!(confirm_totp))
        .routes(routes!(regenerate_recovery_codes))
        .routes(routes!(cancel_reset))
}

/// The caller's second factors.
#[utoipa::path(
    get, path = "/me/mfa", tag = "second factor",
    security(("bearer" = []), ("oauth2" = [])),
    responses((status = 200, description = "What the account has", body = MfaStatusResponse))
)]
async fn status(
    State(state): State<AppState>,
    Enrolling(caller): Enrolling,
) -> Result<Json<MfaStatusResponse>> {
    Ok(Json(mfa::status(&state, &caller).await?.into()))
}

/// Start TOTP enrolment.
///
/// Needs the password. Returns the secret, its `otpauth://` URI and a QR code of it; nothing is
/// enabled until POST /me/mfa/totp/confirm receives a first code. Calling again replaces a
/// secret that was not confirmed.
#[utoipa::path(
    post, path = "/me/mfa/totp", tag = "second factor",
    request_body = PasswordConfirmRequest,
    security(("bearer" = []), ("oauth2" = [])),
    responses(
        (status = 200, description = "Put this in an authenticator app, then confirm", body = TotpEnrolmentResponse),
        (status = 403, description = "INVALID_CREDENTIALS: the password is wrong", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "MFA_ALREADY_ENABLED", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn begin_totp(
    State(state): State<AppState>,
    Enrolling(caller): Enrolling,
    JsonBody(body): JsonBody<PasswordConfirmRequest>,
) -> Result<Json<TotpEnrolmentResponse>> {
    let password = caller_password(&caller, "password", body.password)
        .map_err(|e| Error::Validation(vec![e]))?;
    let enrolment = mfa::begin_enrolment(&state, &caller, &password).await?;
    Ok(Json(enrolment.into()))
}

/// Confirm TOTP enrolment with a first code.
///
/// Enables TOTP and returns 10 recovery codes, shown only this once. Ends the account's other
/// sessions; this one counts as having passed the second factor (its next tokens, after a
/// refresh, carry `amr` `["pwd", "otp", "mfa"]`). The account is mailed.
#[utoipa::path(
    post, path = "/me/mfa/totp/confirm", tag = "second factor",
    request_body = ConfirmTotpRequest,
    security(("bearer" = []), ("oauth2" = [])),
    responses(
        (status = 200, description = "Enabled", body = RecoveryCodesResponse),
        (status = 403, description = "INVALID_MFA_CODE: the code is wrong", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "NOT_FOUND: no enrolment is under way", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "MFA_ALREADY_ENABLED", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn confirm_totp(
    State(state): State<AppState>,
    Enrolling(caller): Enrolling,
    JsonBody(body): JsonBody<ConfirmTotpRequest>,
) -> Result<Json<RecoveryCodesResponse>> {
    let code = required("code", body.code)
        .and_then(|code| SecondFactor::required(Some(code), None))
        .map_err(|e| Error::Validation(vec![e]))?;
    let SecondFactor::Totp(code) = code else {
        unreachable!("a `code` field is a TOTP code")
    };
    let recovery_codes = mfa::confirm_enrolment(&state, &caller, &code).await?;
    Ok(Json(RecoveryCodesResponse { recovery_codes }))
}

/// The password and the second factor of a body.
fn password_and_factor(
    caller: &crate::service::sessions::Caller,
    password: Option<String>,
    code: Option<String>,
    recovery_code: Option<String>,
) -> Result<(Password, Option<SecondFactor>)> {
    let mut errors = FieldErrors::default();
    let password = errors.check(caller_password(caller, "password", password));
    let factor = errors.check(SecondFactor::from_fields(code, recovery_code));
    errors.finish()?;
    let (Some(password), Some(factor)) = (password, factor) else {
        unreachable!("finish() returns the errors of any missing field")
    };
    Ok((password, factor))
}

/// Turn TOTP off.
///
/// Needs the password and a current `code` (or a `recovery_code`), always. Removes the
/// authenticator and the recovery codes; the account is mailed. Refused while MFA_REQUIRED_FOR
/// covers the account.
#[utoipa::path(
    delete, path = "/me/mfa/totp", tag = "second factor",
    request_body = SecondFactorRequest,
    security(("bearer" = []), ("oauth2" = [])),
    responses(
        (status = 204, description = "Removed"),
        (status = 403, description = "INVALID_CREDENTIALS, INVALID_MFA_CODE, STEP_UP_REQUIRED (no code sent), or FORBIDDEN (MFA_REQUIRED_FOR covers the account)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "MFA_NOT_ENABLED", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn disable_totp(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    JsonBody(body): JsonBody<SecondFactorRequest>,
) -> Result<StatusCode> {
    let (password, factor) =
        password_and_factor(&caller, body.password, body.code, body.recovery_code)?;
    mfa::disable(&state, &caller, &password, factor.as_ref()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Make a new set of recovery codes.
///
/// Needs the password and step-up (a `code` or `recovery_code`, unless this session passed the
/// second factor within MFA_STEP_UP_SECONDS). The old set stops working.
#[utoipa::path(
    post, path = "/me/mfa/recovery-codes", tag = "second factor",
    request_body = SecondFactorRequest,
    security(("bearer" = []), ("oauth2" = [])),
    responses(
        (status = 200, description = "The new set, shown only now", body = RecoveryCodesResponse),
        (status = 403, description = "INVALID_CREDENTIALS, INVALID_MFA_CODE or STEP_UP_REQUIRED", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "MFA_NOT_ENABLED", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn regenerate_recovery_codes(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    JsonBody(body): JsonBody<SecondFactorRequest>,
) -> Result<Json<RecoveryCodesResponse>> {
    let (password, factor) =
        password_and_factor(&caller, body.password, body.code, body.recovery_code)?;
    let recovery_codes =
        mfa::regenerate_recovery_codes(&state, &caller, &password, factor.as_ref()).await?;
    Ok(Json(RecoveryCodesResponse { recovery_codes }))
}

/// Cancel a superuser's pending removal of your second factor.
#[utoipa::path(
    delete, path = "/me/mfa/reset", tag = "second factor",
    security(("bearer" = []), ("oauth2" = [])),
    responses(
        (status = 204, description = "Cancelled: the second factor stays"),
        (status = 404, description = "NOT_FOUND: no removal is pending", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn cancel_reset(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
) -> Result<StatusCode> {
    mfa::cancel_reset(&state, &caller).await?;
    Ok(StatusCode::NO_CONTENT)
}
