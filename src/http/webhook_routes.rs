//! Webhooks: superusers register endpoints that receive the security events, read their
//! delivery logs and redeliver by hand (`service::webhooks`). Every route takes [`Superuser`].

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{JsonBody, OptionalJsonBody, Superuser};
use super::problem::Problem;
use super::webhook_types::*;
use crate::error::{Error, FieldError, Result};
use crate::service::webhooks::{self, EndpointUpdate, MAX_PAGE, NewEndpoint};
use crate::state::AppState;

/// The largest delivery id the document allows (2^53 - 1: every JSON reader's exact integers).
const MAX_ID: i64 = (1 << 53) - 1;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_webhooks, create_webhook))
        .routes(routes!(get_webhook, update_webhook, delete_webhook))
        .routes(routes!(rotate_webhook_secret))
        .routes(routes!(list_deliveries))
        .routes(routes!(redeliver))
}

/// Register a webhook endpoint.
///
/// Every security event of the types chosen is then POSTed to `url` as JSON, signed the
/// Standard Webhooks way with the secret (see the README's "Webhooks"). The answer is the only
/// one that shows the secret. At most 50 endpoints.
#[utoipa::path(
    post, path = "/webhooks", tag = "webhooks",
    request_body = CreateWebhookRequest,
    security(("bearer" = []), ("oauth2" = [])),
    responses(
        (status = 201, description = "Registered; `secret` is shown only now", body = WebhookCreatedResponse),
        (status = 403, description = "FORBIDDEN: not a superuser", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "WEBHOOK_LIMIT: there are 50 endpoints", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "VALIDATION_FAILED: a bad `url` (scheme, user name or password, fragment, a non-public address), unknown `event_types`, a bad `description` or `secret`", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn create_webhook(
    State(state): State<AppState>,
    Superuser(admin): Superuser,
    JsonBody(body): JsonBody<CreateWebhookRequest>,
) -> Result<(StatusCode, Json<WebhookCreatedResponse>)> {
    let mut missing = Vec::new();
    if body.url.is_none() {
        missing.push(FieldError::new("url", "is required"));
    }
    if body.event_types.is_none() {
        missing.push(FieldError::new("event_types", "is required"));
    }
    if !missing.is_empty() {
        return Err(Error::Validation(missing));
    }
    let new = NewEndpoint {
        url: body.url.unwrap_or_default(),
        event_types: body.event_types.unwrap_or_default(),
        description: body.description,
        secret: body.secret,
    };
    let (endpoint, secret) = webhooks::create(&state, &admin, new).await?;
    Ok((
        StatusCode::CREATED,
        Json(WebhookCreatedResponse::new(endpoint, secret)),
    ))
}

/// The webhook endpoints, oldest first (never their secrets).
#[utoipa::path(
    get, path = "/webhooks", tag = "webhooks",
    security(("bearer" = []), ("oauth2" = [])),
    responses(
        (status = 200, description = "Every endpoint", body = Vec<WebhookResponse>),
        (status = 403, description = "FORBIDDEN: not a superuser", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list_webhooks(
    State(state): State<AppState>,
    Superuser(_): Superuser,
) -> Result<Json<Vec<WebhookResponse>>> {
    let endpoints = webhooks::list(&state).await?;
    Ok(Json(endpoints.into_iter().map(Into::into).collect()))
}

/// One webhook endpoint (never its secret).
#[utoipa::path(
    get, path = "/webhooks/{id}", tag = "webhooks",
    params(("id" = uuid::Uuid, Path, description = "The endpoint's id (a UUID: any other is 404)")),
    security(("bearer" = []), ("oauth2" = [])),
    responses(
        (status = 200, description = "The endpoint", body = WebhookResponse),
        (status = 403, description = "FORBIDDEN: not a superuser", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "NOT_FOUND: no such endpoint", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn get_webhook(
    State(state): State<AppState>,
    Superuser(_): Superuser,
    Path(id): Path<String>,
) -> Result<Json<WebhookResponse>> {
    Ok(Json(webhooks::get(&state, &id).await?.into()))
}

/// Change a webhook endpoint: its URL, event types, description, or whether it is enabled.
#[utoipa::path(
    patch, path = "/webhooks/{id}", tag = "webhooks",
    params(("id" = uuid::Uuid, Path, description = "The endpoint's id (a UUID: any other is 404)")),
    request_body = UpdateWebhookRequest,
    security(("bearer" = []), ("oauth2" = [])),
    responses(
        (status = 200, description = "The endpoint as changed", body = WebhookResponse),
        (status = 403, description = "FORBIDDEN: not a superuser", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "NOT_FOUND: no such endpoint", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "VALIDATION_FAILED: as for POST /webhooks", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn update_webhook(
    State(state): State<AppState>,
    Superuser(admin): Superuser,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<UpdateWebhookRequest>,
) -> Result<Json<WebhookResponse>> {
    let update = EndpointUpdate {
        url: body.url,
        event_types: body.event_types,
        description: body.description,
        enabled: body.enabled,
    };
    Ok(Json(
        webhooks::update(&state, &admin, &id, update).await?.into(),
    ))
}

/// Delete a webhook endpoint, with its delivery log; what was still queued for it is dropped.
#[utoipa::path(
    delete, path = "/webhooks/{id}", tag = "webhooks",
    params(("id" = uuid::Uuid, Path, description = "The endpoint's id (a UUID: any other is 404)")),
    security(("bearer" = []), ("oauth2" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "FORBIDDEN: not a superuser", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "NOT_FOUND: no such endpoint", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn delete_webhook(
    State(state): State<AppState>,
    Superuser(admin): Superuser,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    webhooks::delete(&state, &admin, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Replace a webhook endpoint's secret.
///
/// With `secret`, that one; without (or with no body), a generated one. The answer is the only
/// one that shows it. Every attempt from now on, retries of earlier events included, is signed
/// with the new secret only.
#[utoipa::path(
    post, path = "/webhooks/{id}/secret", tag = "webhooks",
    params(("id" = uuid::Uuid, Path, description = "The endpoint's id (a UUID: any other is 404)")),
    request_body(content = Option<RotateWebhookSecretRequest>, description = "May be left out: a secret is generated"),
    security(("bearer" = []), ("oauth2" = [])),
    responses(
        (status = 200, description = "The new secret, shown only now", body = WebhookSecretResponse),
        (status = 403, description = "FORBIDDEN: not a superuser", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "NOT_FOUND: no such endpoint", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "VALIDATION_FAILED: a bad `secret`", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn rotate_webhook_secret(
    State(state): State<AppState>,
    Superuser(admin): Superuser,
    Path(id): Path<String>,
    body: OptionalJsonBody<RotateWebhookSecretRequest>,
) -> Result<Json<WebhookSecretResponse>> {
    let given = body.0.unwrap_or_default().secret;
    let secret = webhooks::rotate_secret(&state, &admin, &id, given.as_deref()).await?;
    Ok(Json(WebhookSecretResponse { secret }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct DeliveryParams {
    /// 1 to 100; default 50.
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100)]
    limit: Option<String>,
    /// The `next_cursor` of the previous page (1 to 2^53 - 1).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 9007199254740991_i64)]
    cursor: Option<String>,
}

/// A webhook endpoint's delivery log, newest first.
///
/// Each delivery is one event for this endpoint: whether it was delivered, is pending (and
/// when it is next tried) or was given up, its attempts and the last one's status or error.
/// Kept WEBHOOK_LOG_RETENTION_DAYS after it ended.
#[utoipa::path(
    get, path = "/webhooks/{id}/deliveries", tag = "webhooks",
    params(
        ("id" = uuid::Uuid, Path, description = "The endpoint's id (a UUID: any other is 404)"),
        DeliveryParams,
    ),
    security(("bearer" = []), ("oauth2" = [])),
    responses(
        (status = 200, description = "A page of deliveries", body = WebhookDeliveryListResponse),
        (status = 403, description = "FORBIDDEN: not a superuser", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "NOT_FOUND: no such endpoint", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "VALIDATION_FAILED: a bad limit or cursor", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list_deliveries(
    State(state): State<AppState>,
    Superuser(_): Superuser,
    Path(id): Path<String>,
    params: std::result::Result<Query<DeliveryParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<WebhookDeliveryListResponse>> {
    let Query(params) =
        params.map_err(|_| Error::validation("query", "the query string is not valid"))?;
    let mut errors = Vec::new();
    let limit = whole_number(&mut errors, "limit", params.limit.as_deref(), 1..=MAX_PAGE);
    let cursor = whole_number(&mut errors, "cursor", params.cursor.as_deref(), 1..=MAX_ID);
    if !errors.is_empty() {
        return Err(Error::Validation(errors));
    }
    let (deliveries, next) = webhooks::deliveries(&state, &id, cursor, limit.unwrap_or(50)).await?;
    Ok(Json(WebhookDeliveryListResponse {
        items: deliveries.into_iter().map(Into::into).collect(),
        next_cursor: next,
    }))
}

/// A query parameter that is a whole number in `range`, if given; its error recorded otherwise.
fn whole_number(
    errors: &mut Vec<FieldError>,
    field: &str,
    raw: Option<&str>,
    range: std::ops::RangeInclusive<i64>,
) -> Option<i64> {
    let raw = raw?;
    let parsed = raw.trim().parse::<i64>().ok().filter(|n| range.contains(n));
    if parsed.is_none() {
        errors.push(FieldError::new(
            field,
            format!(
                "must be a whole number from {} to {}",
                range.start(),
                range.end()
            ),
        ));
    }
    parsed
}

/// Send a delivery again.
///
/// It is queued at once, with a new budget of WEBHOOK_MAX_ATTEMPTS attempts, carrying the same
/// event (and the same `webhook-id`, so a receiver that has it can tell), signed with the
/// endpoint's current secret. Whatever it was: delivered, failed or pending.
#[utoipa::path(
    post, path = "/webhooks/{id}/deliveries/{delivery_id}/redeliver", tag = "webhooks",
    params(
        ("id" = uuid::Uuid, Path, description = "The endpoint's id (a UUID: any other is 404)"),
        ("delivery_id" = i64, Path, minimum = 1, maximum = 9007199254740991_i64, description = "A delivery's id from its log"),
    ),
    security(("bearer" = []), ("oauth2" = [])),
    responses(
        (status = 202, description = "Queued again", body = WebhookDeliveryResponse),
        (status = 403, description = "FORBIDDEN: not a superuser", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "NOT_FOUND: no such endpoint, or no such delivery of it", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn redeliver(
    State(state): State<AppState>,
    Superuser(admin): Superuser,
    Path((id, delivery_id)): Path<(String, String)>,
) -> Result<(StatusCode, Json<WebhookDeliveryResponse>)> {
    let delivery = webhooks::redeliver(&state, &admin, &id, &delivery_id).await?;
    Ok((StatusCode::ACCEPTED, Json(delivery.into())))
}
