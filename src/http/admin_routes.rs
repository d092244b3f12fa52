//! Administration of accounts: superusers only.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{JsonBody, OptionalJsonBody, Superuser};
use super::problem::Problem;
use super::types::*;
use crate::domain::{Email, FieldErrors, Name};
use crate::error::{Error, FieldError, Result};
use crate::service::admin::{self, MAX_PAGE, UserUpdate};
use crate::service::mfa::SecondFactor;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_users))
        .routes(routes!(get_user, update_user, delete_user))
        .routes(routes!(reset_mfa))
}

/// The longest search string `q`.
const MAX_QUERY: usize = 254;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListParams {
    /// 1 to 100; default 50.
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100)]
    limit: Option<String>,
    /// 0 to 2147483647; default 0.
    #[param(value_type = Option<i64>, minimum = 0, maximum = 2147483647)]
    offset: Option<String>,
    /// Only accounts whose email or name contains this, ignoring case; at most 254 characters
    /// (surrounding spaces are trimmed; nothing left, no filter).
    #[param(max_length = 254)]
    q: Option<String>,
}

pub(super) fn number(
    field: &str,
    raw: Option<&str>,
    default: i64,
    range: std::ops::RangeInclusive<i64>,
) -> Result<i64, FieldError> {
    let Some(raw) = raw else { return Ok(default) };
    raw.trim()
        .parse::<i64>()
        .ok()
        .filter(|n| range.contains(n))
        .ok_or_else(|| {
            FieldError::new(
                field,
                format!(
                    "must be a whole number from {} to {}",
                    range.start(),
                    range.end()
                ),
            )
        })
}

/// List accounts, newest first.
#[utoipa::path(
    get, path = "/users", tag = "administration",
    params(ListParams),
    security(("bearer" = []), ("oauth2" = [])),
    responses(
        (status = 200, description = "A page of accounts", body = UserListResponse),
        (status = 403, description = "FORBIDDEN: not a superuser", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "VALIDATION_FAILED: a bad limit, offset or q", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list_users(
    State(state): State<AppState>,
    Superuser(_): Superuser,
    params: std::result::Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<UserListResponse>> {
    let Query(params) =
        params.map_err(|_| Error::validation("query", "the query string is not valid"))?;
    let mut errors = FieldErrors::default();
    let limit = errors.check(number("limit", params.limit.as_deref(), 50, 1..=MAX_PAGE));
    let offset = errors.check(number(
        "offset",
        params.offset.as_deref(),
        0,
        0..=i64::from(i32::MAX),
    ));
    // The length as sent, what `maxLength` says; then trimmed.
    if params
        .q
        .as_ref()
        .is_some_and(|q| q.chars().count() > MAX_QUERY)
    {
        errors.push(FieldError::new(
            "q",
            format!("must be at most {MAX_QUERY} characters"),
        ));
    }
    let q = params
        .q
        .map(|q| q.trim().to_string())
        .filter(|q| !q.is_empty());
    errors.finish()?;
    let (Some(limit), Some(offset)) = (limit, offset) else {
        unreachable!("finish() returns the errors of any bad field")
    };
    let (users, total) = admin::list(&state, q.as_deref(), limit, offset).await?;
    Ok(Json(UserListResponse {
        items: users.into_iter().map(Into::into).collect(),
        total,
        limit,
        offset,
    }))
}

/// One account.
#[utoipa::path(
    get, path = "/users/{id}", tag = "administration",
    params(("id" = uuid::Uuid, Path, description = "The user id (a UUID: any other is 404)")),
    security(("bearer" = []), ("oauth2" = [])),
    responses(
        (status = 200, description = "The account", body = UserResponse),
        (status = 403, description = "FORBIDDEN: not a superuser", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "NOT_FOUND: no such user", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn get_user(
    State(state): State<AppState>,
    Superuser(_): Superuser,
    Path(id): Path<String>,
) -> Result<Json<UserResponse>> {
    Ok(Json(admin::get(&state, &id).await?.into()))
}

/// Change an account.
///
/// Deactivating (`is_active: false`) ends all its sessions; its logins are then refused with
/// 403 ACCOUNT_DISABLED. A superuser cannot remove its own superuser flag or deactivate itself.
#[utoipa::path(
    patch, path = "/users/{id}", tag = "administration",
    params(("id" = uuid::Uuid, Path, description = "The user id (a UUID: any other is 404)")),
    request_body = AdminUpdateRequest,
    security(("bearer" = []), ("oauth2" = [])),
    responses(
        (status = 200, description = "The updated account", body = UserResponse),
        (status = 403, description = "FORBIDDEN: not a superuser, or a change to oneself that is refused", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "NOT_FOUND: no such user", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "EMAIL_TAKEN", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn update_user(
    State(state): State<AppState>,
    Superuser(admin_caller): Superuser,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<AdminUpdateRequest>,
) -> Result<Json<UserResponse>> {
    let mut errors = FieldErrors::default();
    let update = UserUpdate {
        name: body
            .name
            .and_then(|n| errors.check(Name::parse("name", &n))),
        email: body
            .email
            .and_then(|e| errors.check(Email::parse("email", &e))),
        is_active: body.is_active,
        is_verified: body.is_verified,
        is_superuser: body.is_superuser,
    };
    errors.finish()?;
    Ok(Json(
        admin::update(&state, &admin_caller, &id, update)
            .await?
            .into(),
    ))
}

/// Delete an account, with its sessions and tokens. A superuser cannot delete itself here.
#[utoipa::path(
    delete, path = "/users/{id}", tag = "administration",
    params(("id" = uuid::Uuid, Path, description = "The user id (a UUID: any other is 404)")),
    security(("bearer" = []), ("oauth2" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "FORBIDDEN: not a superuser, or oneself", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "NOT_FOUND: no such user", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn delete_user(
    State(state): State<AppState>,
    Superuser(admin_caller): Superuser,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    admin::delete(&state, &admin_caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Remove a user's second factors (for a user who lost them).
///
/// Removes the TOTP authenticator and the recovery codes, ends all the user's sessions, mails
/// the user, and is logged. With MFA_RESET_DELAY_HOURS (0 by default) the removal waits that
/// long (202): the user is mailed at once and can cancel it with DELETE /me/mfa/reset, so that
/// a superuser talked into it by an impostor is found out in time. A superuser removes their
/// own factor with DELETE /me/mfa/totp.
///
/// A superuser who has a second factor steps up for this: `code` or `recovery_code` in the
/// body, unless their session passed the second factor within MFA_STEP_UP_SECONDS.
#[utoipa::path(
    delete, path = "/users/{id}/mfa", tag = "administration",
    params(("id" = uuid::Uuid, Path, description = "The user id (a UUID: any other is 404)")),
    request_body(content = Option<StepUpRequest>, description = "The superuser's own second factor, for step-up; may be left out"),
    security(("bearer" = []), ("oauth2" = [])),
    responses(
        (status = 204, description = "Removed"),
        (status = 202, description = "Scheduled: it takes effect at `effective_at` unless the user cancels it", body = MfaResetResponse),
        (status = 403, description = "FORBIDDEN: not a superuser, or oneself; STEP_UP_REQUIRED or INVALID_MFA_CODE: the superuser's own second factor", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "NOT_FOUND: no such user", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "MFA_NOT_ENABLED: the user has no second factor", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn reset_mfa(
    State(state): State<AppState>,
    Superuser(admin_caller): Superuser,
    Path(id): Path<String>,
    body: OptionalJsonBody<StepUpRequest>,
) -> Result<axum::response::Response> {
    use axum::response::IntoResponse;
    let factor = match body.0 {
        Some(body) => SecondFactor::from_fields(body.code, body.recovery_code)
            .map_err(|e| Error::Validation(vec![e]))?,
        None => None,
    };
    Ok(
        match crate::service::mfa::admin_reset(&state, &admin_caller, &id, factor.as_ref()).await? {
            None => StatusCode::NO_CONTENT.into_response(),
            Some(due) => (
                StatusCode::ACCEPTED,
                Json(MfaResetResponse {
                    effective_at: rfc3339(due),
                }),
            )
                .into_response(),
        },
    )
}
