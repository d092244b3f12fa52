//! The request body: JSON (and, for the login, form) bodies read within the configured limit
//! and parsed, every refusal a problem document that names the field at fault when it can.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use serde::de::DeserializeOwned;

use crate::domain::{FieldErrors, Password};
use crate::error::{Error, FieldError};
use crate::http::types::{LoginForm, LoginRequest};
use crate::state::AppState;

/// What kind of body a request declares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BodyKind {
    Json,
    Form,
    Other,
    None,
}

fn body_kind(headers: &HeaderMap) -> BodyKind {
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
async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, Error> {
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Error::PayloadTooLarge
        } else {
            Error::validation("body", "the request body could not be read")
        }
    })
}

/// Parses JSON into `T`, naming the field at fault when it can.
fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
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
fn parse_form<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
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

/// An optional JSON body: none at all, or JSON `null` (which the document's `Option<T>` body
/// allows), is `None`; anything else sent must be valid JSON of `T`.
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
        parse_json(&bytes).map(Self)
    }
}

/// Email and password from a JSON body or an OAuth2 password-grant form.
pub struct Credentials {
    pub email: String,
    pub password: Password,
}

impl FromRequest<AppState> for Credentials {
    type Rejection = Error;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let kind = body_kind(req.headers());
        let bytes = read_body(req, state).await?;
        let (email, password) = match kind {
            _ if bytes.is_empty() => {
                return Err(Error::Validation(vec![
                    FieldError::new("email", "is required"),
                    FieldError::new("password", "is required"),
                ]));
            }
            BodyKind::Json => {
                let body: LoginRequest = parse_json(&bytes)?;
                (body.email, body.password)
            }
            BodyKind::Form => {
                let form: LoginForm = parse_form(&bytes)?;
                if form.grant_type.as_deref().is_some_and(|g| g != "password") {
                    return Err(Error::validation(
                        "grant_type",
                        "only the `password` grant is supported",
                    ));
                }
                (form.username, form.password)
            }
            BodyKind::Other | BodyKind::None => {
                return Err(Error::UnsupportedMediaType(
                    "send application/json or application/x-www-form-urlencoded",
                ));
            }
        };
        let field = if kind == BodyKind::Form {
            "username"
        } else {
            "email"
        };
        let mut errors = FieldErrors::default();
        let email = errors.check(required(field, email));
        let password = errors.check(required("password", password));
        errors.finish()?;
        let (Some(email), Some(password)) = (email, password) else {
            unreachable!("finish() returns the errors of any missing field")
        };
        Ok(Self {
            email,
            password: Password::given(password),
        })
    }
}

/// Turns a missing required string into a field error.
pub fn required(field: &str, value: Option<String>) -> Result<String, FieldError> {
    value.ok_or_else(|| FieldError::new(field, "is required"))
}

/// A required token (refresh, reset, verification): missing or empty is "is required", as the
/// document's `minLength: 1` says; whether it is a live token is for the service to tell.
pub fn required_token(field: &str, value: Option<String>) -> Result<String, FieldError> {
    value
        .filter(|token| !token.is_empty())
        .ok_or_else(|| FieldError::new(field, "is required"))
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
    }
}
