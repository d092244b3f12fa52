//! The audit trail, read: GET /me/events (the caller's own), GET /events and GET
//! /users/{id}/events (superusers only).
//!
//! The query string is read by hand (`type` may repeat), and every parameter is checked: an
//! unknown one, a repeated one, an unknown event type, a time that is not RFC 3339, a cursor
//! the server did not give, are each 400 INVALID_PARAMETER naming the parameter.

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{Authenticated, Superuser};
use super::problem::Problem;
use super::types::*;
use crate::error::{Error, FieldError, Result};
use crate::service::audit::{self, EventType, Listing};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(my_events))
        .routes(routes!(events))
        .routes(routes!(user_events))
}

/// The paging parameters every listing takes.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct PageParams {
    /// How many events, 1 to 200; default 50.
    #[param(value_type = Option<i64>, minimum = 1, maximum = 200)]
    limit: Option<String>,
    /// The `next_cursor` of the previous page (an opaque string: anything else is 400).
    #[param(min_length = 1, max_length = 18, pattern = "^[1-9][0-9]{0,17}$")]
    cursor: Option<String>,
}

/// The filters of GET /events.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct FilterParams {
    /// Only the events about this account (a user id; it may have been deleted since).
    #[param(value_type = Option<uuid::Uuid>)]
    user: Option<String>,
    /// Only events of these types: repeat the parameter, or separate types with commas. An
    /// unknown type is 400.
    #[param(rename = "type", style = Form, explode)]
    kind: Option<Vec<String>>,
    /// Only events at or after this time (RFC 3339, e.g. `2026-11-24T09:30:00Z`).
    #[param(value_type = Option<String>, format = DateTime)]
    since: Option<String>,
    /// Only events before this time (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    until: Option<String>,
}

/// A query string's parameters, as read, checked against the names a listing takes.
struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    fn read(raw: Option<&str>, known: &[&str], errors: &mut Vec<FieldError>) -> Self {
        let pairs: Vec<(String, String)> =
            url::form_urlencoded::parse(raw.unwrap_or("").as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
        let mut reported = Vec::new();
        for (name, _) in &pairs {
            if !known.contains(&name.as_str()) && !reported.contains(name) {
                reported.push(name.clone());
                errors.push(FieldError::new(
                    name.clone(),
                    format!(
                        "is not a parameter of this listing (it takes {})",
                        known.join(", ")
                    ),
                ));
            }
        }
        Self { pairs }
    }

    fn all<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a str> {
        let name = name.to_string();
        self.pairs
            .iter()
            .filter(move |(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The one value of `name`, if given (given twice is an error).
    fn one<'a>(&'a self, name: &str, errors: &mut Vec<FieldError>) -> Option<&'a str> {
        let mut values = self.all(name);
        let first = values.next();
        if values.next().is_some() {
            errors.push(FieldError::new(name, "must be given at most once"));
            return None;
        }
        first
    }
}

fn limit(query: &Query, errors: &mut Vec<FieldError>) -> i64 {
    let Some(raw) = query.one("limit", errors) else {
        return audit::DEFAULT_PAGE;
    };
    // Digits only (no sign, no spaces): what the document's integer is.
    let digits = !raw.is_empty() && raw.len() <= 3 && raw.bytes().all(|b| b.is_ascii_digit());
    match raw.parse::<i64>().ok().filter(|_| digits) {
        Some(n) if (1..=audit::MAX_PAGE).contains(&n) => n,
        _ => {
            errors.push(FieldError::new(
                "limit",
                format!("must be a whole number from 1 to {}", audit::MAX_PAGE),
            ));
            audit::DEFAULT_PAGE
        }
    }
}

fn cursor(query: &Query, errors: &mut Vec<FieldError>) -> Option<i64> {
    let raw = query.one("cursor", errors)?;
    // Exactly the documented pattern: 1 to 18 digits, no leading zero (a positive i64).
    let well_formed = (1..=18).contains(&raw.len())
        && raw.bytes().all(|b| b.is_ascii_digit())
        && !raw.starts_with('0');
    let seq = well_formed.then(|| raw.parse::<i64>().ok()).flatten();
    if seq.is_none() {
        errors.push(FieldError::new(
            "cursor",
            "is not a cursor this server gave (use a page's next_cursor)",
        ));
    }
    seq
}

fn time(query: &Query, name: &str, errors: &mut Vec<FieldError>) -> Option<i64> {
    let raw = query.one(name, errors)?;
    match chrono::DateTime::parse_from_rfc3339(raw) {
        Ok(t) => Some(t.timestamp_millis()),
        Err(_) => {
            errors.push(FieldError::new(
                name,
                "must be an RFC 3339 time, such as 2026-11-24T09:30:00Z",
            ));
            None
        }
    }
}

fn kinds(query: &Query, errors: &mut Vec<FieldError>) -> Vec<EventType> {
    let mut kinds = Vec::new();
    for value in query.all("type") {
        for name in value.split(',').map(str::trim) {
            match EventType::parse(name) {
                Some(kind) if !kinds.contains(&kind) => kinds.push(kind),
                Some(_) => {}
                None => errors.push(FieldError::new(
                    "type",
                    if name.is_empty() {
                        "must name an event type".to_string()
                    } else {
                        format!(
                            "`{}` is not an event type (the types are listed in the README)",
                            name.chars().take(64).collect::<String>()
                        )
                    },
                )),
            }
        }
    }
    kinds
}

/// A user id: a UUID in its hyphenated form (either case), as the server writes them (lower
/// case).
fn user_id(raw: &str) -> Option<String> {
    let id = uuid::Uuid::try_parse(raw).ok()?.hyphenated().to_string();
    (id == raw.to_ascii_lowercase()).then_some(id)
}

fn finish(errors: Vec<FieldError>) -> Result<()> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Error::InvalidParameter(errors))
    }
}

/// The caller's recent security activity.
///
/// The events about the caller's account (sign-ins and failed ones, sign-outs, credential and
/// second-factor changes, a superuser's actions on it), newest first. No other account is
/// named: a superuser's action says `actor: "administrator"`, with nothing of their request.
#[utoipa::path(
    get, path = "/me/events", tag = "current user",
    params(PageParams),
    security(("bearer" = []), ("oauth2" = [])),
    responses(
        (status = 200, description = "A page of the caller's events", body = EventListResponse),
        (status = 400, description = "INVALID_PARAMETER: a bad limit or cursor, or a parameter this listing does not take; `errors` names each", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn my_events(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    RawQuery(raw): RawQuery,
) -> Result<Json<EventListResponse>> {
    let mut errors = Vec::new();
    let query = Query::read(raw.as_deref(), &["limit", "cursor"], &mut errors);
    let limit = limit(&query, &mut errors);
    let cursor = cursor(&query, &mut errors);
    finish(errors)?;
    let page = audit::list_own(&state, &caller, limit, cursor).await?;
    Ok(Json(page.into()))
}

/// The security events of every account.
///
/// Newest first, filtered by account, type and time; every field on record.
#[utoipa::path(
    get, path = "/events", tag = "administration",
    params(FilterParams, PageParams),
    security(("bearer" = []), ("oauth2" = [])),
    responses(
        (status = 200, description = "A page of events", body = EventListResponse),
        (status = 400, description = "INVALID_PARAMETER: an unknown type, a time that is not RFC 3339, a user that is not a user id, a bad limit or cursor, or a parameter this listing does not take; `errors` names each", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "FORBIDDEN: not a superuser", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn events(
    State(state): State<AppState>,
    Superuser(_): Superuser,
    RawQuery(raw): RawQuery,
) -> Result<Json<EventListResponse>> {
    let mut errors = Vec::new();
    let query = Query::read(
        raw.as_deref(),
        &["user", "type", "since", "until", "limit", "cursor"],
        &mut errors,
    );
    let user = query.one("user", &mut errors).and_then(|raw| {
        let id = user_id(raw);
        if id.is_none() {
            errors.push(FieldError::new("user", "must be a user id (a UUID)"));
        }
        id
    });
    let listing = Listing {
        user,
        kinds: kinds(&query, &mut errors),
        since: time(&query, "since", &mut errors),
        until: time(&query, "until", &mut errors),
        limit: limit(&query, &mut errors),
        cursor: cursor(&query, &mut errors),
    };
    finish(errors)?;
    Ok(Json(audit::list(&state, &listing).await?.into()))
}

/// One account's security events.
///
/// Newest first, every field on record; the account may have been deleted since (its events
/// stay until AUDIT_RETENTION_DAYS).
#[utoipa::path(
    get, path = "/users/{id}/events", tag = "administration",
    params(
        ("id" = uuid::Uuid, Path, description = "The user id (a UUID: any other is 404)"),
        PageParams,
    ),
    security(("bearer" = []), ("oauth2" = [])),
    responses(
        (status = 200, description = "A page of the account's events", body = EventListResponse),
        (status = 400, description = "INVALID_PARAMETER: a bad limit or cursor, or a parameter this listing does not take; `errors` names each", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "FORBIDDEN: not a superuser", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "NOT_FOUND: the id is not a user id", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn user_events(
    State(state): State<AppState>,
    Superuser(_): Superuser,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<EventListResponse>> {
    let user = user_id(&id).ok_or(Error::NotFound("there is no user with this id"))?;
    let mut errors = Vec::new();
    let query = Query::read(raw.as_deref(), &["limit", "cursor"], &mut errors);
    let listing = Listing {
        user: Some(user),
        limit: limit(&query, &mut errors),
        cursor: cursor(&query, &mut errors),
        ..Listing::default()
    };
    finish(errors)?;
    Ok(Json(audit::list(&state, &listing).await?.into()))
}
