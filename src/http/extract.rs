//! Extractors whose rejections are the crate's own problem documents.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{
    ConnectInfo, FromRef, FromRequest, FromRequestParts, OptionalFromRequestParts, Request,
};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use serde::de::DeserializeOwned;

use crate::error::{Error, FieldError};
use crate::service::sessions::{self, Caller, ClientInfo};
use crate::state::AppState;

/// What kind of body a request declares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyKind {
    Json,
    Form,
    Other,
    None,
}

pub fn body_kind(headers: &HeaderMap) -> BodyKind {
    let Some(value) = headers.get(CONTENT_TYPE) else {
        return BodyKind::None;
    };
    let Ok(value) = value.to_str() else {
        return BodyKind::Other;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
    {
        BodyKind::Json
    } else if essence == "application/x-www-form-urlencoded" {
        BodyKind::Form
    } else {
        BodyKind::Other
    }
}

/// Reads the whole body, within the configured limit.
pub async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, Error> {
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Error::PayloadTooLarge
        } else {
            Error::validation("body", "the request body could not be read")
        }
    })
}

/// Parses JSON into `T`, naming the field at fault when it can.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return Error::validation(
                "body",
                format!("is not valid JSON: {}", strip_position(&inner)),
            );
        }
        let message = strip_position(&inner);
        let field = if path == "." || path.is_empty() {
            backquoted(&message).unwrap_or_else(|| "body".to_string())
        } else {
            path
        };
        Error::validation(&field, message)
    })?;
    de.end()
        .map_err(|_| Error::validation("body", "has trailing characters after the JSON value"))?;
    Ok(value)
}

/// Parses a form body into `T`.
pub fn parse_form<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    serde_urlencoded::from_bytes(bytes).map_err(|e| {
        let message = e.to_string();
        let field = backquoted(&message).unwrap_or_else(|| "body".to_string());
        Error::validation(&field, message)
    })
}

/// serde_json's messages end in " at line 1 column 7", which says nothing to a client.
fn strip_position(e: &serde_json::Error) -> String {
    let message = e.to_string();
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message,
    }
}

/// The first `name` in a message such as "missing field `email`".
fn backquoted(message: &str) -> Option<String> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(message[start..start + len].to_string())
}

/// A JSON request body. A missing body is 422, a body of another type 415, bad JSON 422.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let kind = body_kind(req.headers());
        let bytes = read_body(req, state).await?;
        if bytes.is_empty() {
            return Err(Error::validation("body", "a JSON body is required"));
        }
        if kind != BodyKind::Json {
            return Err(Error::UnsupportedMediaType(
                "send the body as application/json",
            ));
        }
        parse_json(&bytes).map(JsonBody)
    }
}

/// An optional JSON body: none at all is `None`; anything sent must be valid JSON.
pub struct OptionalJsonBody<T>(pub Option<T>);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for OptionalJsonBody<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let kind = body_kind(req.headers());
        let bytes = read_body(req, state).await?;
        if bytes.is_empty() {
            return Ok(Self(None));
        }
        if kind != BodyKind::Json {
            return Err(Error::UnsupportedMediaType(
                "send the body as application/json",
            ));
        }
        parse_json(&bytes).map(|v| Self(Some(v)))
    }
}

/// The bearer token of the Authorization header: `None` without the header, an error when the
/// header is there but is not `Bearer <token>`.
fn bearer_token(parts: &Parts) -> Result<Option<&str>, Error> {
    let Some(value) = parts.headers.get(AUTHORIZATION) else {
        return Ok(None);
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|token| !token.is_empty())
        .ok_or(Error::Unauthorized(
            "the Authorization header must be `Bearer <access token>`",
        ))?;
    Ok(Some(token))
}

/// The authenticated caller. Rejects a missing or bad token with 401.
///
/// `Option<Authenticated>` is `None` only when there is no Authorization header at all: a bad
/// token is still refused, never silently treated as anonymous.
pub struct Authenticated(pub Caller);

impl<S> FromRequestParts<S> for Authenticated
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let token =
            bearer_token(parts)?.ok_or(Error::Unauthorized("an access token is required"))?;
        let state = AppState::from_ref(state);
        sessions::authenticate(&state, token).await.map(Self)
    }
}

impl<S> OptionalFromRequestParts<S> for Authenticated
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        match bearer_token(parts)? {
            None => Ok(None),
            Some(token) => {
                let state = AppState::from_ref(state);
                sessions::authenticate(&state, token)
                    .await
                    .map(|c| Some(Self(c)))
            }
        }
    }
}

/// An authenticated superuser; anyone else authenticated gets 403 FORBIDDEN.
pub struct Superuser(pub Caller);

impl<S> FromRequestParts<S> for Superuser
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Authenticated(caller) =
            <Authenticated as FromRequestParts<S>>::from_request_parts(parts, state).await?;
        if caller.user.is_superuser {
            Ok(Self(caller))
        } else {
            Err(Error::Forbidden("this needs a superuser"))
        }
    }
}

/// The client's address: the peer, or through `TRUSTED_PROXIES` only, X-Forwarded-For (all of
/// its lines, in order, as one list).
fn client_addr(parts: &Parts, state: &AppState) -> Option<std::net::IpAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| {
            let forwarded = parts
                .headers
                .get_all(X_FORWARDED_FOR)
                .iter()
                .map(|v| v.to_str().ok());
            crate::net::client_ip(peer.ip(), forwarded, &state.config.server.trusted_proxies)
        })
}

const X_FORWARDED_FOR: axum::http::HeaderName =
    axum::http::HeaderName::from_static("x-forwarded-for");

/// A per-client-address limit on an endpoint group; over it, 429 with Retry-After.
pub struct Limited<G>(std::marker::PhantomData<G>);

pub trait LimitGroup {
    const GROUP: crate::ratelimit::Group;
}

macro_rules! limit_group {
    ($name:ident, $group:ident) => {
        pub struct $name;
        impl LimitGroup for $name {
            const GROUP: crate::ratelimit::Group = crate::ratelimit::Group::$group;
        }
    };
}
limit_group!(LoginLimit, Login);
limit_group!(RegisterLimit, Register);
limit_group!(RefreshLimit, Refresh);
limit_group!(MailLimit, Mail);

impl<S, G: LimitGroup> FromRequestParts<S> for Limited<G>
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = AppState::from_ref(state);
        if let Some(ip) = client_addr(parts, &state) {
            state
                .limiter
                .check(G::GROUP, ip)
                .map_err(|retry_after| Error::TooManyRequests { retry_after })?;
        }
        Ok(Self(std::marker::PhantomData))
    }
}

/// The client's address (through trusted proxies only) and user agent.
pub struct Client(pub ClientInfo);

const USER_AGENT_MAX: usize = 512;

impl<S> FromRequestParts<S> for Client
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = AppState::from_ref(state);
        let ip = client_addr(parts, &state).map(|ip| ip.to_string());
        let user_agent = parts
            .headers
            .get(USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| ua.chars().take(USER_AGENT_MAX).collect());
        Ok(Self(ClientInfo { ip, user_agent }))
    }
}

/// Turns a missing required string into a field error.
pub fn required(field: &str, value: Option<String>) -> Result<String, FieldError> {
    value.ok_or_else(|| FieldError::new(field, "is required"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        email: String,
        age: Option<u8>,
    }

    fn field_of(e: Error) -> String {
        match e {
            Error::Validation(errors) => errors[0].field.clone(),
            other => panic!("not a validation error: {other:?}"),
        }
    }

    #[test]
    fn json_errors_name_the_field() {
        assert_eq!(field_of(parse_json::<Body>(b"{").unwrap_err()), "body");
        assert_eq!(field_of(parse_json::<Body>(b"{}").unwrap_err()), "email");
        assert_eq!(
            field_of(parse_json::<Body>(br#"{"email": 3}"#).unwrap_err()),
            "email"
        );
        assert_eq!(
            field_of(parse_json::<Body>(br#"{"email": "a", "age": -1}"#).unwrap_err()),
            "age"
        );
        assert_eq!(
            field_of(parse_json::<Body>(br#"{"email": "a", "admin": true}"#).unwrap_err()),
            "admin"
        );
        assert_eq!(
            field_of(parse_json::<Body>(br#"{"email": "a"} x"#).unwrap_err()),
            "body"
        );
        assert!(parse_json::<Body>(br#"{"email": "a"}"#).is_ok());
    }

    #[test]
    fn content_types() {
        let mut h = HeaderMap::new();
        assert_eq!(body_kind(&h), BodyKind::None);
        h.insert(
            CONTENT_TYPE,
            "application/json; charset=utf-8".parse().unwrap(),
        );
        assert_eq!(body_kind(&h), BodyKind::Json);
        h.insert(
            CONTENT_TYPE,
            "application/merge-patch+json".parse().unwrap(),
        );
        assert_eq!(body_kind(&h), BodyKind::Json);
        h.insert(
            CONTENT_TYPE,
            "application/x-www-form-urlencoded".parse().unwrap(),
        );
        assert_eq!(body_kind(&h), BodyKind::Form);
        h.insert(CONTENT_TYPE, "text/plain".parse().unwrap());
        assert_eq!(body_kind(&h), BodyKind::Other);
    }
}

#[cfg(test)]
mod properties {
    use axum::http::HeaderValue;
    use proptest::prelude::*;

    use super::*;
    use crate::http::types::{LoginForm, LoginRequest, RegisterRequest, UpdateMeRequest};

    fn field_errors_are_named(e: Error) -> Result<(), TestCaseError> {
        match e {
            Error::Validation(errors) => {
                prop_assert!(!errors.is_empty());
                for e in errors {
                    prop_assert!(!e.field.is_empty() && !e.message.is_empty());
                }
                Ok(())
            }
            other => Err(TestCaseError::fail(format!(
                "not a validation error: {other:?}"
            ))),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn any_bytes_parse_or_name_the_bad_field(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            for result in [
                parse_json::<RegisterRequest>(&bytes).map(|_| ()),
                parse_json::<LoginRequest>(&bytes).map(|_| ()),
                parse_json::<UpdateMeRequest>(&bytes).map(|_| ()),
                parse_form::<LoginForm>(&bytes).map(|_| ()),
            ] {
                if let Err(e) = result {
                    field_errors_are_named(e)?;
                }
            }
        }

        #[test]
        fn json_shaped_input_parses_or_names_the_bad_field(
            email in proptest::option::of(".{0,300}"),
            password in proptest::option::of(any::<String>()),
            extra in proptest::option::of("[a-z_]{1,12}"),
            number in any::<i64>(),
        ) {
            let mut body = serde_json::Map::new();
            if let Some(e) = email { body.insert("email".into(), e.into()); }
            if let Some(p) = password { body.insert("password".into(), p.into()); }
            if let Some(x) = extra { body.insert(x, number.into()); }
            let bytes = serde_json::to_vec(&body).unwrap();
            if let Err(e) = parse_json::<RegisterRequest>(&bytes) {
                field_errors_are_named(e)?;
            }
        }

        #[test]
        fn content_types_never_panic(ct in "[ -~]{0,80}") {
            let mut headers = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_str(&ct) {
                headers.insert(CONTENT_TYPE, v);
            }
            let _ = body_kind(&headers);
        }

        #[test]
        fn emails_normalise_idempotently(raw in ".{0,300}") {
            if let Ok(email) = crate::domain::Email::parse("email", &raw) {
                let again = crate::domain::Email::parse("email", email.as_str()).unwrap();
                prop_assert_eq!(again.as_str(), email.as_str());
                prop_assert_eq!(email.as_str(), email.as_str().trim().to_lowercase());
                prop_assert!(email.as_str().chars().count() <= 254);
            }
        }

        #[test]
        fn forwarded_for_never_yields_an_address_from_nowhere(
            lines in proptest::collection::vec("[0-9a-f.:, \\[\\]]{0,60}", 0..4),
            trusted in any::<bool>(),
        ) {
            let peer: std::net::IpAddr = "10.0.0.1".parse().unwrap();
            let proxies = if trusted { vec!["10.0.0.0/8".parse().unwrap()] } else { vec![] };
            let ip = crate::net::client_ip(peer, lines.iter().map(|l| Some(l.as_str())), &proxies);
            if trusted {
                let named = lines.iter().flat_map(|l| l.split(',')).any(|hop| {
                    crate::net::parse_hop(hop).map(crate::net::canonical) == Some(ip)
                });
                prop_assert!(ip == peer || named, "{ip} from {lines:?}");
            } else {
                prop_assert_eq!(ip, peer);
            }
        }
    }
}
