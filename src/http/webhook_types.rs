//! Request and response bodies of the webhook routes (`webhook_routes.rs`).

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};

use super::types::rfc3339;
use crate::service::audit::EventType;
use crate::service::webhooks::{ALL_TYPES, Delivery, Endpoint};

/// An event type, or `*` for every type: the strings of the README's table.
pub struct WebhookEventType;

impl utoipa::PartialSchema for WebhookEventType {
    fn schema() -> RefOr<Schema> {
        let names = std::iter::once(ALL_TYPES).chain(EventType::ALL.iter().map(|t| t.as_str()));
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(names))
            .description(Some(
                "A security event's type, as in the audit trail, or `*` for every type",
            ))
            .into()
    }
}

impl ToSchema for WebhookEventType {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("WebhookEventType")
    }
}

// The URL's `pattern` is what `webhooks::guard::parse` checks first (the scheme, in any case);
// the rest of its rules (a host, no user name or password, no fragment, no private address)
// are in the description. The description's and the secret's patterns are
// `service::webhooks::DESCRIPTION_PATTERN` and `webhooks::signature::SECRET_PATTERN`
// (tests/api/webhooks.rs checks the document against them).

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhookRequest {
    /// Where to POST the events: `https://` (recommended: the payload names accounts and their
    /// addresses) or `http://`, at most 2048 characters, with a host, no user name or password,
    /// no fragment. Unless WEBHOOK_ALLOW_PRIVATE_NETWORKS, the host must not be, nor resolve
    /// to, a loopback, private, link-local or other non-public address, nor be `localhost`
    /// (422 naming `url`); it is checked again at every delivery.
    #[schema(
        required = true,
        nullable = false,
        max_length = 2048,
        pattern = "^[Hh][Tt][Tt][Pp][Ss]?://",
        example = "https://hooks.example.com/auth-events"
    )]
    pub url: Option<String>,
    /// The event types to send, or `["*"]` for every type (duplicates are ignored).
    #[schema(
        required = true,
        nullable = false,
        value_type = Vec<WebhookEventType>,
        min_items = 1,
        max_items = 64,
        example = json!(["user.signed_in", "user.password_changed"])
    )]
    pub event_types: Option<Vec<String>>,
    /// For people: at most 500 characters, no control characters; stored trimmed.
    #[schema(
        max_length = 500,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$",
        example = "SIEM"
    )]
    pub description: Option<String>,
    /// The signing secret, `whsec_` and the base64 (standard, padded) of 24 to 64 bytes; left
    /// out, one is generated (32 bytes). Shown only in this answer.
    #[schema(
        pattern = r"^whsec_(?:(?:[A-Za-z0-9+/]{4}){8,20}(?:[A-Za-z0-9+/][AQgw]==|[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=)?|(?:[A-Za-z0-9+/]{4}){21}(?:[A-Za-z0-9+/][AQgw]==)?)$",
        format = Password
    )]
    pub secret: Option<String>,
}

/// What a superuser may change; fields left out (or null) stay as they are.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateWebhookRequest {
    /// The rules of `CreateWebhookRequest.url`. Deliveries still queued go to the new URL.
    #[schema(max_length = 2048, pattern = "^[Hh][Tt][Tt][Pp][Ss]?://")]
    pub url: Option<String>,
    /// The rules of `CreateWebhookRequest.event_types`; applies to events from now on.
    #[schema(value_type = Option<Vec<WebhookEventType>>, min_items = 1, max_items = 64)]
    pub event_types: Option<Vec<String>>,
    /// The rules of `CreateWebhookRequest.description`.
    #[schema(max_length = 500, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    pub description: Option<String>,
    /// false pauses the endpoint: no new deliveries are queued for it, and those queued wait
    /// until it is enabled again.
    pub enabled: Option<bool>,
}

/// A new secret for an endpoint.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateWebhookSecretRequest {
    /// The rules of `CreateWebhookRequest.secret`; left out, one is generated.
    #[schema(
        pattern = r"^whsec_(?:(?:[A-Za-z0-9+/]{4}){8,20}(?:[A-Za-z0-9+/][AQgw]==|[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=)?|(?:[A-Za-z0-9+/]{4}){21}(?:[A-Za-z0-9+/][AQgw]==)?)$",
        format = Password
    )]
    pub secret: Option<String>,
}

/// A webhook endpoint. Never its secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookResponse {
    #[schema(format = Uuid)]
    pub id: String,
    #[schema(example = "https://hooks.example.com/auth-events")]
    pub url: String,
    pub description: String,
    /// `["*"]`, or the types sent.
    #[schema(value_type = Vec<WebhookEventType>)]
    pub event_types: Vec<String>,
    pub enabled: bool,
    /// The superuser who registered it (null once that account is deleted).
    #[schema(format = Uuid)]
    pub created_by: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

impl From<Endpoint> for WebhookResponse {
    fn from(e: Endpoint) -> Self {
        Self {
            id: e.id,
            url: e.url,
            description: e.description,
            event_types: e.event_types,
            enabled: e.enabled,
            created_by: e.created_by,
            created_at: rfc3339(e.created_at),
            updated_at: rfc3339(e.updated_at),
        }
    }
}

/// A new endpoint, with its secret: the only answer that shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookCreatedResponse {
    #[schema(format = Uuid)]
    pub id: String,
    pub url: String,
    pub description: String,
    #[schema(value_type = Vec<WebhookEventType>)]
    pub event_types: Vec<String>,
    pub enabled: bool,
    #[schema(format = Uuid)]
    pub created_by: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
    /// The signing secret (`whsec_...`): keep it in the receiver; it is not shown again.
    #[schema(example = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwJ3dN5Cq4ie0=")]
    pub secret: String,
}

impl WebhookCreatedResponse {
    pub fn new(endpoint: Endpoint, secret: String) -> Self {
        let e = WebhookResponse::from(endpoint);
        Self {
            id: e.id,
            url: e.url,
            description: e.description,
            event_types: e.event_types,
            enabled: e.enabled,
            created_by: e.created_by,
            created_at: e.created_at,
            updated_at: e.updated_at,
            secret,
        }
    }
}

/// An endpoint's new secret: the only answer that shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookSecretResponse {
    #[schema(example = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwJ3dN5Cq4ie0=")]
    pub secret: String,
}

/// Where a delivery stands.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WebhookDeliveryStatus {
    /// Not delivered yet: due at `next_attempt_at` (or paused while the endpoint is disabled).
    Pending,
    /// Answered 2xx.
    Delivered,
    /// Given up after WEBHOOK_MAX_ATTEMPTS attempts.
    Failed,
}

/// One event sent (or to be sent) to one endpoint.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookDeliveryResponse {
    #[schema(minimum = 1)]
    pub id: i64,
    /// The event's id, sent as `webhook-id` (the same on every attempt and redelivery).
    #[schema(format = Uuid)]
    pub event_id: String,
    #[schema(value_type = WebhookEventType)]
    pub event_type: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// Attempts begun since it was queued (or last redelivered).
    pub attempts: i64,
    pub status: WebhookDeliveryStatus,
    #[schema(format = DateTime)]
    pub last_attempt_at: Option<String>,
    /// The receiver's HTTP status at the last attempt, if it answered.
    pub last_status: Option<i64>,
    /// Why the last attempt failed (`HTTP 503 Service Unavailable`, a refused address, a
    /// timeout); null after a delivery.
    pub last_error: Option<String>,
    /// While pending: when the next attempt is due.
    #[schema(format = DateTime)]
    pub next_attempt_at: Option<String>,
    #[schema(format = DateTime)]
    pub delivered_at: Option<String>,
    /// When it was given up.
    #[schema(format = DateTime)]
    pub failed_at: Option<String>,
}

impl From<Delivery> for WebhookDeliveryResponse {
    fn from(d: Delivery) -> Self {
        use crate::service::webhooks::DeliveryStatus as S;
        Self {
            id: d.id,
            event_id: d.event_id,
            event_type: d.event_type,
            created_at: rfc3339(d.created_at),
            attempts: d.attempts,
            status: match d.status {
                S::Pending => WebhookDeliveryStatus::Pending,
                S::Delivered => WebhookDeliveryStatus::Delivered,
                S::Failed => WebhookDeliveryStatus::Failed,
            },
            last_attempt_at: d.last_attempt_at.map(rfc3339),
            last_status: d.last_status,
            last_error: d.last_error,
            next_attempt_at: d.next_attempt_at.map(rfc3339),
            delivered_at: d.delivered_at.map(rfc3339),
            failed_at: d.failed_at.map(rfc3339),
        }
    }
}

/// A page of an endpoint's delivery log, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookDeliveryListResponse {
    pub items: Vec<WebhookDeliveryResponse>,
    /// Pass as `cursor` for the next page; null on the last one.
    pub next_cursor: Option<i64>,
}
