//! Webhooks: superusers register endpoints; every security event is queued, in its own
//! transaction, for each enabled endpoint subscribed to its type; a worker (`crate::webhooks`)
//! delivers the queue.
//!
//! Rules:
//! - An endpoint's URL is `http://` or `https://` (https recommended: the payload names accounts
//!   and addresses), without userinfo, and, unless WEBHOOK_ALLOW_PRIVATE_NETWORKS, neither is nor
//!   resolves to a non-public address (`webhooks::guard`). Checked here at registration and on
//!   every change of the URL, and again by the worker at every attempt (a name may resolve
//!   elsewhere later; the setting may have been turned off).
//! - The secret (`whsec_` and the base64 of 24 to 64 bytes, generated when not given) is shown
//!   once, in the answer that sets it, and stored sealed (`auth::seal`, the endpoint id as
//!   associated data). No audit event, log line or listing carries it; events and logs name an
//!   endpoint by its id and its URL's origin (the path or query may hold the receiver's token).
//! - At most [`MAX_ENDPOINTS`] endpoints, which bounds the deliveries one event makes.
//! - Each change of an endpoint is audited (`webhook.created`, `webhook.updated`,
//!   `webhook.deleted`) in its transaction.
//! - A delivery carries the event's id as `webhook-id`, the same on every retry and redelivery,
//!   so that receivers can ignore what they have seen.

use serde_json::{Value, json};

use crate::clock::rfc3339;
use crate::db::Tx;
use crate::db::events::EventRow;
use crate::db::webhook_deliveries::{self, DeliveryRow};
use crate::db::webhook_endpoints::{self, EndpointChange, EndpointRow};
use crate::error::{Error, FieldError, Result};
use crate::service::audit::{self, EventType};
use crate::service::sessions::Caller;
use crate::state::AppState;
use crate::webhooks::guard::{self, Refusal};
use crate::webhooks::signature::Secret;

/// The most endpoints there may be.
pub const MAX_ENDPOINTS: i64 = 50;
/// The longest description.
pub const MAX_DESCRIPTION: usize = 500;
/// The most entries `event_types` may have.
pub const MAX_EVENT_TYPES: usize = 64;
/// What `event_types` holds to subscribe to every type.
pub const ALL_TYPES: &str = "*";
/// The longest page of the delivery log.
pub const MAX_PAGE: i64 = 100;
/// How long registration waits for the URL's host to resolve; a host that does not resolve in
/// time is accepted (the worker checks it at every attempt).
const RESOLVE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(5);

/// An endpoint as superusers see it: never its secret.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub id: String,
    pub url: String,
    pub description: String,
    /// `["*"]`, or the types, in the order of `EventType::ALL`.
    pub event_types: Vec<String>,
    pub enabled: bool,
    pub created_by: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl From<EndpointRow> for Endpoint {
    fn from(row: EndpointRow) -> Self {
        Self {
            event_types: types_of_column(&row.event_types),
            id: row.id,
            url: row.url,
            description: row.description,
            enabled: row.enabled,
            created_by: row.created_by,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// Where a delivery stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryStatus {
    Pending,
    Delivered,
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }
}

/// One entry of an endpoint's delivery log.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub id: i64,
    pub event_id: String,
    pub event_type: String,
    pub created_at: i64,
    pub attempts: i64,
    pub status: DeliveryStatus,
    pub last_attempt_at: Option<i64>,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    /// While pending: when the next attempt is due.
    pub next_attempt_at: Option<i64>,
    pub delivered_at: Option<i64>,
    pub failed_at: Option<i64>,
}

impl From<DeliveryRow> for Delivery {
    fn from(row: DeliveryRow) -> Self {
        let status = if row.delivered_at.is_some() {
            DeliveryStatus::Delivered
        } else if row.failed_at.is_some() {
            DeliveryStatus::Failed
        } else {
            DeliveryStatus::Pending
        };
        Self {
            id: row.id,
            event_id: row.event_id,
            event_type: row.event_type,
            created_at: row.created_at,
            attempts: row.attempts,
            status,
            last_attempt_at: row.last_attempt_at,
            last_status: row.last_status,
            last_error: row.last_error,
            next_attempt_at: (status == DeliveryStatus::Pending).then_some(row.next_attempt_at),
            delivered_at: row.delivered_at,
            failed_at: row.failed_at,
        }
    }
}

/// A new endpoint, as the request gave it (checked by [`create`]).
#[derive(Clone, Debug, Default)]
pub struct NewEndpoint {
    pub url: String,
    pub event_types: Vec<String>,
    pub description: Option<String>,
    pub secret: Option<String>,
}

/// A change of an endpoint: each field given replaces the stored one.
#[derive(Clone, Debug, Default)]
pub struct EndpointUpdate {
    pub url: Option<String>,
    pub event_types: Option<Vec<String>>,
    pub description: Option<String>,
    pub enabled: Option<bool>,
}

// ----------------------------------------------------------------------------------------------
// Checking what a superuser sends.

/// The URL, normalised, if it may be registered: see the module's rules.
async fn checked_url(state: &AppState, text: &str) -> Result<(String, String), FieldError> {
    let refuse = |refusal: Refusal| FieldError::new("url", refusal.to_string());
    let target = guard::parse(text).map_err(refuse)?;
    if !state.config.webhooks.allow_private_networks {
        guard::check_host(&target).map_err(refuse)?;
        match tokio::time::timeout(RESOLVE_PATIENCE, guard::resolve(&target, false)).await {
            Ok(Ok(_)) | Ok(Err(Refusal::Unresolved { .. })) | Err(_) => {}
            Ok(Err(refusal)) => return Err(refuse(refusal)),
        }
    }
    Ok((target.as_str().to_string(), target.origin()))
}

/// `event_types` as stored: `*`, or every type between commas (`,a,b,`), in the order of
/// `EventType::ALL`, each once.
fn event_types_column(given: &[String]) -> Result<String, FieldError> {
    let refuse = |message: String| FieldError::new("event_types", message);
    if given.is_empty() {
        return Err(refuse(
            "must name at least one event type, or \"*\" for every type".into(),
        ));
    }
    if given.len() > MAX_EVENT_TYPES {
        return Err(refuse(format!(
            "must have at most {MAX_EVENT_TYPES} entries"
        )));
    }
    let mut wanted = Vec::new();
    let mut all = false;
    for name in given {
        if name == ALL_TYPES {
            all = true;
        } else if let Some(kind) = EventType::parse(name) {
            wanted.push(kind);
        } else {
            let shown: String = name.chars().take(64).collect();
            return Err(refuse(format!(
                "`{shown}` is not an event type (see the README's list), nor \"*\""
            )));
        }
    }
    if all {
        return Ok(ALL_TYPES.to_string());
    }
    let mut column = String::from(",");
    for kind in EventType::ALL.iter().filter(|k| wanted.contains(k)) {
        column.push_str(kind.as_str());
        column.push(',');
    }
    Ok(column)
}

/// The stored column as the list the API shows.
fn types_of_column(column: &str) -> Vec<String> {
    if column == ALL_TYPES {
        return vec![ALL_TYPES.to_string()];
    }
    column
        .split(',')
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

/// What the document says of a description: no control character (`char::is_control`).
pub const DESCRIPTION_PATTERN: &str = r"^[^\u0000-\u001f\u007f-\u009f]*$";

/// At most [`MAX_DESCRIPTION`] characters as sent, no control characters; stored trimmed.
fn checked_description(text: &str) -> Result<String, FieldError> {
    if text.chars().count() > MAX_DESCRIPTION {
        return Err(FieldError::new(
            "description",
            format!("must be at most {MAX_DESCRIPTION} characters"),
        ));
    }
    if text.chars().any(char::is_control) {
        return Err(FieldError::new(
            "description",
            "must not contain control characters",
        ));
    }
    Ok(text.trim().to_string())
}

fn checked_secret(text: Option<&str>) -> Result<Secret, FieldError> {
    match text {
        None => Ok(Secret::generate()),
        Some(text) => Secret::parse(text).map_err(|message| FieldError::new("secret", message)),
    }
}

/// Ids are UUIDs; anything else names no endpoint.
fn endpoint_id(id: &str) -> Result<String> {
    uuid::Uuid::parse_str(id)
        .map(|u| u.hyphenated().to_string())
        .map_err(|_| no_endpoint())
}

fn no_endpoint() -> Error {
    Error::NotFound("there is no webhook with this id")
}

fn errors_of(errors: Vec<FieldError>) -> Result<()> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Error::Validation(errors))
    }
}

/// Who acted, for the audit event: the superuser and their session, about no account.
fn event_by(kind: EventType, admin: &Caller) -> audit::Event {
    audit::Event::new(kind)
        .actor(&admin.account.id)
        .session(&admin.session_id)
}

// ----------------------------------------------------------------------------------------------
// The endpoints.

/// Registers an endpoint; returns it with its secret (`whsec_...`), which is shown only now.
#[tracing::instrument(skip_all, fields(admin_id = %admin.account.id))]
pub async fn create(
    state: &AppState,
    admin: &Caller,
    new: NewEndpoint,
) -> Result<(Endpoint, String)> {
    let mut errors = Vec::new();
    let url = checked_url(state, &new.url)
        .await
        .map_err(|e| errors.push(e))
        .ok();
    let types = event_types_column(&new.event_types)
        .map_err(|e| errors.push(e))
        .ok();
    let description = checked_description(new.description.as_deref().unwrap_or(""))
        .map_err(|e| errors.push(e))
        .ok();
    let secret = checked_secret(new.secret.as_deref())
        .map_err(|e| errors.push(e))
        .ok();
    errors_of(errors)?;
    let (Some((url, origin)), Some(types), Some(description), Some(secret)) =
        (url, types, description, secret)
    else {
        unreachable!("errors_of returns the errors of any bad field")
    };
    let id = uuid::Uuid::new_v4().to_string();
    let now = state.clock.now_ms();
    let row = EndpointRow {
        secret: state.seal.seal(secret.bytes(), id.as_bytes()),
        id,
        url,
        description,
        event_types: types,
        enabled: true,
        created_by: Some(admin.account.id.clone()),
        created_at: now,
        updated_at: now,
    };
    let mut tx = state.db.begin().await?;
    if !webhook_endpoints::insert_in(&mut tx, &row, MAX_ENDPOINTS).await? {
        return Err(Error::WebhookLimit);
    }
    let endpoint = Endpoint::from(row);
    let event = event_by(EventType::WebhookCreated, admin).detail(json!({
        "webhook_id": endpoint.id,
        "url": origin,
        "event_types": endpoint.event_types,
    }));
    audit::record_in(state, &mut tx, event).await?;
    tx.commit().await?;
    tracing::info!(webhook_id = %endpoint.id, url = %origin, "webhook endpoint registered");
    Ok((endpoint, secret.text()))
}

/// Every endpoint, oldest first.
pub async fn list(state: &AppState) -> Result<Vec<Endpoint>> {
    Ok(webhook_endpoints::list(&state.db)
        .await?
        .into_iter()
        .map(Endpoint::from)
        .collect())
}

pub async fn get(state: &AppState, id: &str) -> Result<Endpoint> {
    let id = endpoint_id(id)?;
    webhook_endpoints::find(&state.db, &id)
        .await?
        .map(Endpoint::from)
        .ok_or_else(no_endpoint)
}

/// Changes an endpoint. Deliveries already queued go to the new URL, signed with the current
/// secret; disabling pauses them (and queues nothing new) until the endpoint is enabled again.
#[tracing::instrument(skip_all, fields(admin_id = %admin.account.id, webhook_id = %id))]
pub async fn update(
    state: &AppState,
    admin: &Caller,
    id: &str,
    update: EndpointUpdate,
) -> Result<Endpoint> {
    let id = endpoint_id(id)?;
    let mut errors = Vec::new();
    let mut change = EndpointChange::default();
    let mut detail = serde_json::Map::new();
    let mut fields = Vec::new();
    if let Some(url) = &update.url {
        match checked_url(state, url).await {
            Ok((url, origin)) => {
                change.url = Some(url);
                detail.insert("url".into(), json!(origin));
                fields.push("url");
            }
            Err(e) => errors.push(e),
        }
    }
    if let Some(types) = &update.event_types {
        match event_types_column(types) {
            Ok(column) => {
                detail.insert("event_types".into(), json!(types_of_column(&column)));
                change.event_types = Some(column);
                fields.push("event_types");
            }
            Err(e) => errors.push(e),
        }
    }
    if let Some(description) = &update.description {
        change.description = checked_description(description)
            .map_err(|e| errors.push(e))
            .ok();
        fields.push("description");
    }
    if let Some(enabled) = update.enabled {
        change.enabled = Some(enabled);
        detail.insert("enabled".into(), json!(enabled));
        fields.push("enabled");
    }
    errors_of(errors)?;
    if fields.is_empty() {
        return get(state, &id).await;
    }
    let mut tx = state.db.begin().await?;
    let row = webhook_endpoints::update_in(&mut tx, &id, &change, state.clock.now_ms())
        .await?
        .ok_or_else(no_endpoint)?;
    detail.insert("webhook_id".into(), json!(id));
    detail.insert("fields".into(), json!(fields));
    let event = event_by(EventType::WebhookUpdated, admin).detail(Value::Object(detail));
    audit::record_in(state, &mut tx, event).await?;
    tx.commit().await?;
    if update.enabled == Some(true) {
        // Deliveries paused while it was disabled may be due.
        state.webhook_wakeup.notify_one();
    }
    Ok(row.into())
}

/// Deletes an endpoint and its delivery log; what was still queued for it is dropped.
#[tracing::instrument(skip_all, fields(admin_id = %admin.account.id, webhook_id = %id))]
pub async fn delete(state: &AppState, admin: &Caller, id: &str) -> Result<()> {
    let id = endpoint_id(id)?;
    let mut tx = state.db.begin().await?;
    let row = webhook_endpoints::delete_in(&mut tx, &id)
        .await?
        .ok_or_else(no_endpoint)?;
    let origin = guard::parse(&row.url)
        .map(|t| t.origin())
        .unwrap_or_default();
    let event = event_by(EventType::WebhookDeleted, admin)
        .detail(json!({ "webhook_id": id, "url": origin }));
    audit::record_in(state, &mut tx, event).await?;
    tx.commit().await?;
    Ok(())
}

/// Replaces the endpoint's secret (with `given`, or a generated one) and returns it: shown only
/// now. Every attempt from now on, retries of earlier events included, is signed with it.
#[tracing::instrument(skip_all, fields(admin_id = %admin.account.id, webhook_id = %id))]
pub async fn rotate_secret(
    state: &AppState,
    admin: &Caller,
    id: &str,
    given: Option<&str>,
) -> Result<String> {
    let id = endpoint_id(id)?;
    let secret = checked_secret(given).map_err(|e| Error::Validation(vec![e]))?;
    let sealed = state.seal.seal(secret.bytes(), id.as_bytes());
    let mut tx = state.db.begin().await?;
    if !webhook_endpoints::set_secret_in(&mut tx, &id, &sealed, state.clock.now_ms()).await? {
        return Err(no_endpoint());
    }
    let event = event_by(EventType::WebhookUpdated, admin)
        .detail(json!({ "webhook_id": id, "fields": ["secret"] }));
    audit::record_in(state, &mut tx, event).await?;
    tx.commit().await?;
    Ok(secret.text())
}

// ----------------------------------------------------------------------------------------------
// The delivery log.

/// A page of the endpoint's deliveries, newest first, after the cursor `before` (the last id of
/// the previous page); and the cursor of the next page, if there may be one.
pub async fn deliveries(
    state: &AppState,
    id: &str,
    before: Option<i64>,
    limit: i64,
) -> Result<(Vec<Delivery>, Option<i64>)> {
    let endpoint = get(state, id).await?;
    let rows = webhook_deliveries::list(&state.db, &endpoint.id, before, limit).await?;
    let next = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|r| r.id))
        .flatten();
    Ok((rows.into_iter().map(Delivery::from).collect(), next))
}

/// Queues a delivery again, due now, with a new attempt budget and the same `webhook-id`.
#[tracing::instrument(skip_all, fields(admin_id = %admin.account.id, webhook_id = %id))]
pub async fn redeliver(
    state: &AppState,
    admin: &Caller,
    id: &str,
    delivery_id: &str,
) -> Result<Delivery> {
    let id = endpoint_id(id)?;
    let not_found = || Error::NotFound("this webhook has no delivery with this id");
    let delivery_id: i64 = delivery_id.parse().map_err(|_| not_found())?;
    let row = webhook_deliveries::redeliver(&state.db, &id, delivery_id, state.clock.now_ms())
        .await?
        .ok_or_else(not_found)?;
    tracing::info!(delivery_id, event_id = %row.event_id, "webhook delivery queued again by hand");
    state.webhook_wakeup.notify_one();
    Ok(row.into())
}

// ----------------------------------------------------------------------------------------------
// Queueing events.

/// Queues `event` for every enabled endpoint subscribed to its type, in `tx` (the event's own
/// transaction: a delivery exists exactly when the event does), and wakes the worker once it
/// commits. Called by `audit::record_in` for every event.
pub async fn enqueue_in(state: &AppState, tx: &mut Tx, event: &EventRow) -> Result<()> {
    let queued =
        webhook_deliveries::enqueue_in(tx, &event.id, &event.kind, &payload(event), event.at)
            .await?;
    if queued > 0 {
        let wakeup = state.webhook_wakeup.clone();
        tx.after_commit(move || wakeup.notify_one());
    }
    Ok(())
}

/// What a delivery's body is: `{"type", "timestamp", "data": {the event}}`.
pub fn payload(event: &EventRow) -> String {
    let detail: Value = serde_json::from_str(&event.detail).unwrap_or_else(|_| json!({}));
    json!({
        "type": event.kind,
        "timestamp": rfc3339(event.at),
        "data": {
            "id": event.id,
            "user_id": event.user_id,
            "actor_id": event.actor_id,
            "session_id": event.session_id,
            "ip": event.ip,
            "user_agent": event.user_agent,
            "detail": detail,
        },
    })
    .to_string()
}

/// What this instance's worker has done (for the metrics).
pub fn counters(state: &AppState) -> crate::webhooks::CountersSnapshot {
    state.webhook_counters.snapshot()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn event_types_are_stored_between_commas_or_as_a_star() {
        assert_eq!(
            event_types_column(&strings(&[
                "user.signed_in",
                "user.created",
                "user.created"
            ])),
            Ok(",user.created,user.signed_in,".into())
        );
        assert_eq!(event_types_column(&strings(&["*"])), Ok("*".into()));
        assert_eq!(
            event_types_column(&strings(&["user.created", "*"])),
            Ok("*".into())
        );
        for bad in [
            vec![],
            strings(&["user.nope"]),
            strings(&["User.Created"]),
            strings(&[""]),
        ] {
            assert_eq!(event_types_column(&bad).unwrap_err().field, "event_types");
        }
        assert_eq!(
            types_of_column(",user.created,user.signed_in,"),
            strings(&["user.created", "user.signed_in"])
        );
        assert_eq!(types_of_column("*"), strings(&["*"]));
    }

    #[test]
    fn no_type_matches_another_as_a_like_pattern_would() {
        // The stored form: a type between commas is found by `LIKE '%,type,%'` only (with `_`
        // escaped); no type is a part of another between commas.
        for a in EventType::ALL {
            for b in EventType::ALL {
                let column = format!(",{},", b.as_str());
                assert_eq!(
                    column.contains(&format!(",{},", a.as_str())),
                    a == b,
                    "{a:?} {b:?}"
                );
            }
        }
    }

    #[test]
    fn the_payload_is_the_event() {
        let event = EventRow {
            seq: 1,
            id: "e1".into(),
            at: 1_764_000_000_000,
            kind: "user.created".into(),
            user_id: Some("u1".into()),
            actor_id: None,
            session_id: None,
            ip: Some("203.0.113.9".into()),
            user_agent: Some("curl/8".into()),
            detail: r#"{"via":"registration"}"#.into(),
        };
        let payload: Value = serde_json::from_str(&payload(&event)).unwrap();
        assert_eq!(
            payload,
            json!({
                "type": "user.created",
                "timestamp": "2025-11-24T16:00:00.000Z",
                "data": {
                    "id": "e1", "user_id": "u1", "actor_id": null, "session_id": null,
                    "ip": "203.0.113.9", "user_agent": "curl/8",
                    "detail": {"via": "registration"}
                }
            })
        );
    }

    #[test]
    fn descriptions_are_bounded_and_plain() {
        assert_eq!(checked_description("  hi  "), Ok("hi".into()));
        assert!(checked_description(&"x".repeat(501)).is_err());
        assert!(checked_description("a\nb").is_err());
        assert!(checked_description(&format!("{} ", "x".repeat(500))).is_err());
        let pattern = regex::Regex::new(DESCRIPTION_PATTERN).unwrap();
        for text in [
            "", "plain", " é ", "a\u{a0}b", "a\nb", "a\u{7f}", "\u{9f}", "a\tb",
        ] {
            assert_eq!(
                pattern.is_match(text),
                checked_description(text).is_ok(),
                "{text:?}"
            );
        }
    }
}
