//! The current user: GET, PUT/PATCH and DELETE /me.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{Authenticated, JsonBody, required};
use super::problem::Problem;
use super::types::*;
use crate::domain::{Email, FieldErrors, Name, Password};
use crate::error::{Error, Result};
use crate::service::accounts::{self, ProfileUpdate};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_me, update_me, delete_me))
}

/// The current user.
#[utoipa::path(
    get, path = "/me", tag = "current user",
    security(("bearer" = []), ("oauth2" = [])),
    responses((status = 200, description = "The caller's account", body = UserResponse))
)]
async fn get_me(Authenticated(caller): Authenticated) -> Json<UserResponse> {
    Json(caller.user.into())
}

/// Change the name or the email address.
///
/// Fields left out stay as they are. Changing the email needs `current_password` and makes the
/// account unverified. PUT and PATCH do the same.
#[utoipa::path(
    method(put, patch), path = "/me", tag = "current user",
    request_body = UpdateMeRequest,
    security(("bearer" = []), ("oauth2" = [])),
    responses(
        (status = 200, description = "The updated account", body = UserResponse),
        (status = 403, description = "INVALID_CREDENTIALS: current_password is wrong", body = Problem, content_type = "application/problem+json"),
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
    };
    errors.finish()?;
    let user = accounts::update_profile(&state, &caller.user, update).await?;
    Ok(Json(user.into()))
}

/// Delete the account, with all its sessions and tokens.
#[utoipa::path(
    delete, path = "/me", tag = "current user",
    request_body = DeleteMeRequest,
    security(("bearer" = []), ("oauth2" = [])),
    responses(
        (status = 204, description = "The account is deleted"),
        (status = 403, description = "INVALID_CREDENTIALS: the password is wrong", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn delete_me(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    JsonBody(body): JsonBody<DeleteMeRequest>,
) -> Result<StatusCode> {
    let password = required("password", body.password).map_err(|e| Error::Validation(vec![e]))?;
    accounts::delete_account(&state, &caller.user, &Password::given(password)).await?;
    Ok(StatusCode::NO_CONTENT)
}
