//! Invitations to register (REGISTRATION=invite): superusers only.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::admin_routes::number;
use super::extract::{JsonBody, Superuser, required};
use super::problem::Problem;
use super::types::*;
use crate::domain::{Email, FieldErrors, Name};
use crate::error::{Error, Result};
use crate::service::admin::MAX_PAGE;
use crate::service::invitations;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_invitation, list_invitations))
        .routes(routes!(revoke_invitation))
}

/// Invite an address to register.
///
/// Stores the invitation and mails the address a link to the registration page,
/// `{PUBLIC_URL}/register?invitation=<token>`, valid for INVITATION_EXPIRE_HOURS, once, for this
/// address only; the account it makes is verified. The token is in the mail alone: the answer
/// never carries it. Inviting an address again replaces its pending invitation. Works with
/// REGISTRATION=invite and open (where an invitation still makes the account verified); with
/// closed, nobody can register, so no invitation is made.
#[utoipa::path(
    post, path = "/invitations", tag = "administration",
    request_body = InvitationRequest,
    security(("bearer" = []), ("oauth2" = [])),
    responses(
        (status = 201, description = "Invited: the mail is on its way", body = InvitationResponse),
        (status = 403, description = "FORBIDDEN: not a superuser; REGISTRATION_CLOSED: REGISTRATION=closed", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "EMAIL_TAKEN: an account has this address", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn create_invitation(
    State(state): State<AppState>,
    Superuser(admin): Superuser,
    JsonBody(body): JsonBody<InvitationRequest>,
) -> Result<(StatusCode, Json<InvitationResponse>)> {
    let mut errors = FieldErrors::default();
    let email = errors
        .check(required("email", body.email))
        .and_then(|e| errors.check(Email::parse("email", &e)));
    let name = body
        .name
        .and_then(|n| errors.check(Name::parse("name", &n)));
    errors.finish()?;
    let Some(email) = email else {
        unreachable!("finish() returns the error of a missing email")
    };
    let invitation = invitations::create(&state, &admin, &email, name.as_ref()).await?;
    Ok((StatusCode::CREATED, Json(invitation.into())))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListParams {
    /// 1 to 100; default 50.
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100)]
    limit: Option<String>,
    /// 0 to 2147483647; default 0.
    #[param(value_type = Option<i64>, minimum = 0, maximum = 2147483647)]
    offset: Option<String>,
}

/// List the pending invitations (not accepted, revoked or expired), newest first.
#[utoipa::path(
    get, path = "/invitations", tag = "administration",
    params(ListParams),
    security(("bearer" = []), ("oauth2" = [])),
    responses(
        (status = 200, description = "A page of pending invitations", body = InvitationListResponse),
        (status = 403, description = "FORBIDDEN: not a superuser", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "VALIDATION_FAILED: a bad limit or offset", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list_invitations(
    State(state): State<AppState>,
    Superuser(_): Superuser,
    params: std::result::Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<InvitationListResponse>> {
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
    errors.finish()?;
    let (Some(limit), Some(offset)) = (limit, offset) else {
        unreachable!("finish() returns the errors of any bad field")
    };
    let (items, total) = invitations::list(&state, limit, offset).await?;
    Ok(Json(InvitationListResponse {
        items: items.into_iter().map(Into::into).collect(),
        total,
        limit,
        offset,
    }))
}

/// Revoke a pending invitation: its link stops working at once.
#[utoipa::path(
    delete, path = "/invitations/{id}", tag = "administration",
    params(("id" = uuid::Uuid, Path, description = "The invitation's id (a UUID: any other is 404)")),
    security(("bearer" = []), ("oauth2" = [])),
    responses(
        (status = 204, description = "Revoked"),
        (status = 403, description = "FORBIDDEN: not a superuser", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "NOT_FOUND: no pending invitation with this id (unknown, accepted, revoked or expired)", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn revoke_invitation(
    State(state): State<AppState>,
    Superuser(admin): Superuser,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    invitations::revoke(&state, &admin, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
