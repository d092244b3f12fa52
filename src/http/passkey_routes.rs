//! The caller's passkeys: /me/passkeys (options, register, list, rename, delete) and the
//! step-up with a passkey. Signing in with one is in `auth_routes.rs`, DELETE /me/password in
//! `me_routes.rs`.
//!
//! Registration, the list and the step-up take [`Enrolling`]: a passkey is a second factor, so
//! an account that MFA_REQUIRED_FOR keeps to enrolment may add one (or prove one it has).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{Authenticated, Enrolling, JsonBody, OptionalJsonBody};
use super::problem::Problem;
use super::types::*;
use crate::domain::Password;
use crate::error::{Error, Result};
use crate::service::mfa::SecondFactor;
use crate::service::passkeys;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(passkey_registration_options))
        .routes(routes!(list_passkeys, register_passkey))
        .routes(routes!(rename_passkey, delete_passkey))
        .routes(routes!(passkey_step_up_options))
        .routes(routes!(passkey_step_up))
}

/// Whether a request's path is one of the passkey routes (all of them 404 while PASSKEYS=false).
pub fn is_passkey_route(method: &axum::http::Method, path: &str) -> bool {
    path.starts_with("/me/passkeys")
        || path.starts_with("/login/passkey")
        || path.starts_with("/login/mfa/passkey/")
        || (method == axum::http::Method::DELETE && path == "/me/password")
}

/// The password and second factor of a body that may be left out.
fn change(body: Option<PasskeyChangeRequest>) -> Result<(Option<Password>, Option<SecondFactor>)> {
    let body = body.unwrap_or_default();
    let factor = SecondFactor::from_fields(body.code, body.recovery_code)
        .map_err(|e| Error::Validation(vec![e]))?;
    Ok((body.password.map(Password::given), factor))
}

/// Options to register a passkey.
///
/// Needs what other sensitive changes need: the `password` (unless the account has none: then
/// a passkey proved within MFA_STEP_UP_SECONDS), and, for an account with a second factor, a
/// `code` or `recovery_code` unless this session passed it within MFA_STEP_UP_SECONDS. Then
/// `navigator.credentials.create({publicKey: PublicKeyCredential.parseCreationOptionsFromJSON(publicKey)})`
/// and POST /me/passkeys with the credential, from this session, within
/// WEBAUTHN_CHALLENGE_SECONDS. The account's passkeys are excluded (`excludeCredentials`).
#[utoipa::path(
    post, path = "/me/passkeys/options", tag = "passkeys",
    request_body(content = Option<PasskeyChangeRequest>, description = "May be left out by an account that needs none of it"),
    security(("bearer" = []), ("oauth2" = [])),
    responses(
        (status = 200, description = "The options for `navigator.credentials.create()`", body = PasskeyOptionsResponse),
        (status = 403, description = "INVALID_CREDENTIALS: the password is wrong; STEP_UP_REQUIRED or INVALID_MFA_CODE: the account has a second factor (see `code`), or no password and no recent passkey proof", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "NOT_FOUND: passkeys are turned off (PASSKEYS=false)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "PASSKEY_LIMIT: the account has 20 passkeys", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn passkey_registration_options(
    State(state): State<AppState>,
    Enrolling(caller): Enrolling,
    body: OptionalJsonBody<PasskeyChangeRequest>,
) -> Result<Json<PasskeyOptionsResponse>> {
    let (password, factor) = change(body.0)?;
    let options =
        passkeys::registration_options(&state, &caller, password.as_ref(), factor.as_ref()).await?;
    Ok(Json(options.into()))
}

/// Register a passkey.
///
/// Send the credential `navigator.credentials.create()` returned (`PublicKeyCredential.toJSON()`)
/// for the options of POST /me/passkeys/options. A credential change, like enabling TOTP: the
/// account's other sessions end, this one counts as having passed the second factor and proved
/// a passkey, and the account is mailed.
#[utoipa::path(
    post, path = "/me/passkeys", tag = "passkeys",
    request_body = RegisterPasskeyRequest,
    security(("bearer" = []), ("oauth2" = [])),
    responses(
        (status = 201, description = "Registered", body = PasskeyResponse),
        (status = 401, description = "INVALID_PASSKEY: the credential failed verification (origin, RP ID, type, user presence, signature; the detail names the check); PASSKEY_CHALLENGE_INVALID: the challenge is unknown, used, expired, or was made for another session or before a credential change (ask for new options)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "NOT_FOUND: passkeys are turned off (PASSKEYS=false)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "PASSKEY_ALREADY_REGISTERED: this credential is registered already; PASSKEY_LIMIT: the account has 20 passkeys", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn register_passkey(
    State(state): State<AppState>,
    Enrolling(caller): Enrolling,
    JsonBody(body): JsonBody<RegisterPasskeyRequest>,
) -> Result<(StatusCode, Json<PasskeyResponse>)> {
    let credential = body
        .credential
        .ok_or_else(|| Error::validation("credential", "is required"))?;
    let view = passkeys::register(&state, &caller, &credential, body.name).await?;
    Ok((StatusCode::CREATED, Json(view.into())))
}

/// The caller's passkeys, oldest first.
#[utoipa::path(
    get, path = "/me/passkeys", tag = "passkeys",
    security(("bearer" = []), ("oauth2" = [])),
    responses(
        (status = 200, description = "The passkeys", body = Vec<PasskeyResponse>),
        (status = 404, description = "NOT_FOUND: passkeys are turned off (PASSKEYS=false)", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list_passkeys(
    State(state): State<AppState>,
    Enrolling(caller): Enrolling,
) -> Result<Json<Vec<PasskeyResponse>>> {
    let keys = passkeys::list(&state, &caller).await?;
    Ok(Json(keys.into_iter().map(Into::into).collect()))
}

/// Rename one of the caller's passkeys.
#[utoipa::path(
    patch, path = "/me/passkeys/{id}", tag = "passkeys",
    params(("id" = uuid::Uuid, Path, description = "A passkey id from GET /me/passkeys (a UUID: any other is 404)")),
    request_body = RenamePasskeyRequest,
    security(("bearer" = []), ("oauth2" = [])),
    responses(
        (status = 200, description = "Renamed", body = PasskeyResponse),
        (status = 404, description = "NOT_FOUND: not a passkey of the caller's (or passkeys are turned off)", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn rename_passkey(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<RenamePasskeyRequest>,
) -> Result<Json<PasskeyResponse>> {
    let name = body
        .name
        .ok_or_else(|| Error::validation("name", "is required"))?;
    let view = passkeys::rename(&state, &caller, &id, name).await?;
    Ok(Json(view.into()))
}

/// Remove one of the caller's passkeys.
///
/// Needs what other sensitive changes need (see POST /me/passkeys/options). Not the last passkey
/// registered with user verification of an account without a password (409 LAST_CREDENTIAL), nor
/// the last second factor of an account MFA_REQUIRED_FOR covers (403 FORBIDDEN). The account is
/// mailed.
#[utoipa::path(
    delete, path = "/me/passkeys/{id}", tag = "passkeys",
    params(("id" = uuid::Uuid, Path, description = "A passkey id from GET /me/passkeys (a UUID: any other is 404)")),
    request_body(content = Option<PasskeyChangeRequest>, description = "May be left out by an account that needs none of it"),
    security(("bearer" = []), ("oauth2" = [])),
    responses(
        (status = 204, description = "Removed"),
        (status = 403, description = "INVALID_CREDENTIALS, INVALID_MFA_CODE, STEP_UP_REQUIRED, or FORBIDDEN (MFA_REQUIRED_FOR needs this last second factor)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "NOT_FOUND: not a passkey of the caller's (or passkeys are turned off)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "LAST_CREDENTIAL: the account has no password and this is its last passkey registered with user verification", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn delete_passkey(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
    body: OptionalJsonBody<PasskeyChangeRequest>,
) -> Result<StatusCode> {
    let (password, factor) = change(body.0)?;
    passkeys::delete(&state, &caller, &id, password.as_ref(), factor.as_ref()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Options to prove a passkey (step-up).
///
/// The caller's passkeys, user verification required; then POST /me/passkeys/step-up with the
/// credential, from this session.
#[utoipa::path(
    post, path = "/me/passkeys/step-up/options", tag = "passkeys",
    security(("bearer" = []), ("oauth2" = [])),
    responses(
        (status = 200, description = "The options for `navigator.credentials.get()`", body = PasskeyOptionsResponse),
        (status = 404, description = "NOT_FOUND: passkeys are turned off (PASSKEYS=false)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "MFA_NOT_ENABLED: the account has no passkey", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn passkey_step_up_options(
    State(state): State<AppState>,
    Enrolling(caller): Enrolling,
) -> Result<Json<PasskeyOptionsResponse>> {
    let options = passkeys::step_up_options(&state, &caller).await?;
    Ok(Json(options.into()))
}

/// Prove a passkey (step-up).
///
/// A valid answer to POST /me/passkeys/step-up/options: for MFA_STEP_UP_SECONDS this session
/// makes sensitive changes without a code, and, for an account without a password, without the
/// password.
#[utoipa::path(
    post, path = "/me/passkeys/step-up", tag = "passkeys",
    request_body = PasskeyAssertionRequest,
    security(("bearer" = []), ("oauth2" = [])),
    responses(
        (status = 204, description = "Proved"),
        (status = 401, description = "INVALID_PASSKEY: the passkey failed verification (the detail names the check); PASSKEY_CHALLENGE_INVALID: the challenge is unknown, used, expired or another session's; PASSKEY_COUNTER_REGRESSED", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "NOT_FOUND: passkeys are turned off (PASSKEYS=false)", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn passkey_step_up(
    State(state): State<AppState>,
    Enrolling(caller): Enrolling,
    JsonBody(body): JsonBody<PasskeyAssertionRequest>,
) -> Result<StatusCode> {
    let credential = body
        .credential
        .ok_or_else(|| Error::validation("credential", "is required"))?;
    passkeys::step_up(&state, &caller, &credential).await?;
    Ok(StatusCode::NO_CONTENT)
}
