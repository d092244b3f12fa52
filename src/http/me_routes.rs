//! The current user: GET, PUT/PATCH and DELETE /me.
//!
//! PUT and PATCH /me are one handler documented twice: each OpenAPI operation has its own
//! operationId (`update_me`, `patch_me`), which client generators need.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{Authenticated, JsonBody, caller_password, required};
use super::problem::Problem;
use super::types::*;
use crate::domain::{Email, FieldErrors, Name, Password};
use crate::error::Result;
use crate::service::accounts::{self, ProfileUpdate};
use crate::service::mfa::SecondFactor;
use crate::service::{policy, sessions};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_me, update_me, patch_me, delete_me))
        .routes(routes!(change_password, remove_password))
        .routes(routes!(list_sessions))
        .routes(routes!(revoke_session))
}

/// The current user.
#[utoipa::path(
    get, path = "/me", tag = "current user",
    security(("bearer" = []), ("oauth2" = [])),
    responses((status = 200, description = "The caller's account", body = UserResponse))
)]
async fn get_me(Authenticated(caller): Authenticated) -> Json<UserResponse> {
    Json(caller.account.into())
}

/// Change the name or the email address.
///
/// Fields left out stay as they are. Changing the email needs `current_password` and makes the
/// account unverified. PUT and PATCH do the same.
#[utoipa::path(
    put, path = "/me", tag = "current user",
    request_body = UpdateMeRequest,
    security(("bearer" = []), ("oauth2" = [])),
    responses(
        (status = 200, description = "The updated account", body = UserResponse),
        (status = 403, description = "INVALID_CREDENTIALS: current_password is wrong; STEP_UP_REQUIRED or INVALID_MFA_CODE: the account has a second factor (see `code`)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "EMAIL_TAKEN: another account has this email", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn update_me(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    JsonBody(body): JsonBody<UpdateMeRequest>,
) -> Result<Json<UserResponse>> {
    let mut errors = FieldErrors::default();
    let update = ProfileUpdate {
        name: body
            .name
            .and_then(|n| errors.check(Name::parse("name", &n))),
        email: body
            .email
            .and_then(|e| errors.check(Email::parse("email", &e))),
        current_password: body.current_password.map(Password::given),
        factor: errors
            .check(SecondFactor::from_fields(body.code, body.recovery_code))
            .flatten(),
    };
    errors.finish()?;
    let user = accounts::update_profile(&state, &caller, update).await?;
    Ok(Json(user.into()))
}

/// Change the name or the email address (the same as PUT).
///
/// Fields left out stay as they are. Changing the email needs `current_password` and makes the
/// account unverified.
#[utoipa::path(
    patch, path = "/me", tag = "current user",
    request_body = UpdateMeRequest,
    security(("bearer" = []), ("oauth2" = [])),
    responses(
        (status = 200, description = "The updated account", body = UserResponse),
        (status = 403, description = "INVALID_CREDENTIALS: current_password is wrong; STEP_UP_REQUIRED or INVALID_MFA_CODE: the account has a second factor (see `code`)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "EMAIL_TAKEN: another account has this email", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn patch_me(
    state: State<AppState>,
    caller: Authenticated,
    body: JsonBody<UpdateMeRequest>,
) -> Result<Json<UserResponse>> {
    update_me(state, caller, body).await
}

/// Delete the account, with all its sessions and tokens.
#[utoipa::path(
    delete, path = "/me", tag = "current user",
    request_body = DeleteMeRequest,
    security(("bearer" = []), ("oauth2" = [])),
    responses(
        (status = 204, description = "The account is deleted"),
        (status = 403, description = "INVALID_CREDENTIALS: the password is wrong; STEP_UP_REQUIRED or INVALID_MFA_CODE: the account has a second factor (see `code`), or no password and no recent passkey proof", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn delete_me(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    JsonBody(body): JsonBody<DeleteMeRequest>,
) -> Result<StatusCode> {
    let mut errors = FieldErrors::default();
    let password = errors.check(caller_password(&caller, "password", body.password));
    let factor = errors.check(SecondFactor::from_fields(body.code, body.recovery_code));
    errors.finish()?;
    let (Some(password), Some(factor)) = (password, factor) else {
        unreachable!("finish() returns the errors of any missing field")
    };
    accounts::delete_account(&state, &caller, &password, factor.as_ref()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Change the password.
///
/// Needs the current password; ends every other session of the account and keeps this one. An
/// account without a password sets one here: it leaves `current_password` out and proves a
/// passkey first (POST /me/passkeys/step-up).
#[utoipa::path(
    put, path = "/me/password", tag = "current user",
    request_body = ChangePasswordRequest,
    security(("bearer" = []), ("oauth2" = [])),
    responses(
        (status = 204, description = "The password is changed"),
        (status = 403, description = "INVALID_CREDENTIALS: current_password is wrong; STEP_UP_REQUIRED or INVALID_MFA_CODE: the account has a second factor (see `code`)", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn change_password(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    JsonBody(body): JsonBody<ChangePasswordRequest>,
) -> Result<StatusCode> {
    let mut errors = FieldErrors::default();
    let current = errors.check(caller_password(
        &caller,
        "current_password",
        body.current_password,
    ));
    let context = [caller.account.email.as_str(), caller.account.name.as_str()];
    let new = errors
        .check(required("new_password", body.new_password))
        .and_then(|p| {
            errors.check(policy::new_password(
                &state.config,
                "new_password",
                p,
                &context,
            ))
        });
    let factor = errors.check(SecondFactor::from_fields(body.code, body.recovery_code));
    errors.finish()?;
    let (Some(current), Some(new), Some(factor)) = (current, new, factor) else {
        unreachable!("finish() returns the errors of any missing field")
    };
    accounts::change_password(&state, &caller, &current, &new, factor.as_ref()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Remove the password: sign in with passkeys only.
///
/// Needs a passkey registered with user verification (else 409 LAST_CREDENTIAL) and a passkey
/// proved within MFA_STEP_UP_SECONDS (POST /me/passkeys/step-up; else 403 STEP_UP_REQUIRED). A
/// credential change: the other sessions end, outstanding links stop working, the account is
/// mailed. A password reset link sets a password again, as does PUT /me/password.
#[utoipa::path(
    delete, path = "/me/password", tag = "passkeys",
    security(("bearer" = []), ("oauth2" = [])),
    responses(
        (status = 204, description = "The account has no password now"),
        (status = 403, description = "STEP_UP_REQUIRED: prove a passkey first (POST /me/passkeys/step-up)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "NOT_FOUND: passkeys are turned off (PASSKEYS=false)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "PASSWORD_NOT_SET: the account has no password already; LAST_CREDENTIAL: it has no passkey that verifies the user", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn remove_password(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
) -> Result<StatusCode> {
    crate::service::passkeys::remove_password(&state, &caller).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The caller's live sessions, newest first.
#[utoipa::path(
    get, path = "/me/sessions", tag = "current user",
    security(("bearer" = []), ("oauth2" = [])),
    responses((status = 200, description = "Live sessions", body = Vec<SessionResponse>))
)]
async fn list_sessions(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
) -> Result<Json<Vec<SessionResponse>>> {
    let list = sessions::list(&state, &caller).await?;
    Ok(Json(list.into_iter().map(Into::into).collect()))
}

/// End one of the caller's sessions: its refresh token and access tokens stop working at once.
#[utoipa::path(
    delete, path = "/me/sessions/{id}", tag = "current user",
    params(("id" = uuid::Uuid, Path, description = "A session id from GET /me/sessions (a UUID: any other is 404)")),
    security(("bearer" = []), ("oauth2" = [])),
    responses(
        (status = 204, description = "The session has ended"),
        (status = 404, description = "NOT_FOUND: not a live session of the caller", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn revoke_session(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    sessions::revoke_one(&state, &caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
