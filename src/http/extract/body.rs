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

/// Whether a request declares a form body (`application/x-www-form-urlencoded`).
pub fn is_form(headers: &HeaderMap) -> bool {
    body_kind(headers) == BodyKind::Form
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
        // Nesting too deep inside a field is that field's fault (a credential, say).
        let top = path.split(['.', '[']).next().unwrap_or_default();
        if inner.is_syntax() && inner.to_string().contains("recursion limit") && !top.is_empty() {
            return Error::validation(top, "is nested too deeply");
        }
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

/// The caller's password where a request asks for it: required (422 when missing) unless the
/// account has none, which proves a passkey instead (`accounts::confirm_password`): it may leave
/// the field out, and is given an empty one.
pub fn caller_password(
    caller: &crate::service::sessions::Caller,
    field: &str,
    value: Option<String>,
) -> Result<Password, FieldError> {
    match value {
        Some(password) => Ok(Password::given(password)),
        None if !caller.account.has_password => Ok(Password::given(String::new())),
        None => Err(FieldError::new(field, "is required")),
    }
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
    use crate::domain::properties::{emails, passwords};
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

    /// Field names a client might slip into a body: the account's flags and columns, the other
    /// endpoints' fields, and any name.
    fn extra_field() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => prop::sample::select(&[
                "is_superuser", "is_active", "is_verified", "id", "password_hash",
                "security_stamp", "created_at", "current_password", "new_password", "token",
                "refresh_token", "Email", "email ", "username",
            ][..])
            .prop_map(str::to_string),
            1 => "[a-z_]{1,12}".prop_filter("not a field of the body", |f| {
                !["email", "password", "name"].contains(&f.as_str())
            }),
        ]
    }

    /// Content types as clients send them, JSON and form ones in any case and with parameters,
    /// with the kind each declares.
    fn declared_content_type() -> impl Strategy<Value = (String, BodyKind)> {
        let essence = prop::sample::select(
            &[
                ("application/json", BodyKind::Json),
                ("application/merge-patch+json", BodyKind::Json),
                ("application/vnd.api+json", BodyKind::Json),
                ("application/x-www-form-urlencoded", BodyKind::Form),
                ("text/plain", BodyKind::Other),
                ("text/json", BodyKind::Other),
                ("multipart/form-data", BodyKind::Other),
                ("application/jsonx", BodyKind::Other),
                ("application/xml", BodyKind::Other),
            ][..],
        );
        (
            essence,
            any::<prop::sample::Index>(),
            proptest::option::of("; ?(charset=(utf-8|UTF-8|utf-16)|boundary=x)"),
            " {0,2}",
        )
            .prop_map(|((essence, kind), upper, parameter, space)| {
                // Some letters upper case: media types are case-insensitive.
                let flip = upper.index(essence.len() + 1);
                let essence: String = essence
                    .chars()
                    .enumerate()
                    .map(|(i, c)| if i < flip { c.to_ascii_uppercase() } else { c })
                    .collect();
                (
                    format!("{space}{essence}{}", parameter.unwrap_or_default()),
                    kind,
                )
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Rule: no body makes the parsers fail in any other way than a 422 that names a field:
        /// never a panic, never a 500.
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

        /// Rule: a field an endpoint does not take is refused with a 422 naming it, never
        /// ignored, so that `is_superuser` and the like cannot be slipped into a registration
        /// (no mass assignment); a body with only its own fields is taken, the password exactly
        /// as typed.
        #[test]
        fn a_field_the_endpoint_does_not_take_is_refused_by_name(
            email in proptest::option::of(emails()),
            password in proptest::option::of(passwords()),
            name in proptest::option::of("\\PC{0,30}"),
            extra in proptest::option::of((extra_field(), any::<i64>())),
        ) {
            let mut body = serde_json::Map::new();
            if let Some(e) = &email { body.insert("email".into(), e.clone().into()); }
            if let Some(p) = &password { body.insert("password".into(), p.clone().into()); }
            if let Some(n) = &name { body.insert("name".into(), n.clone().into()); }
            if let Some((field, value)) = &extra { body.insert(field.clone(), (*value).into()); }
            let bytes = serde_json::to_vec(&body).unwrap();
            match (parse_json::<RegisterRequest>(&bytes), extra) {
                (Err(Error::Validation(errors)), Some((field, _))) => {
                    prop_assert_eq!(errors.len(), 1);
                    prop_assert_eq!(&errors[0].field, &field);
                }
                (Ok(parsed), None) => {
                    prop_assert_eq!(parsed.email, email);
                    prop_assert_eq!(parsed.password, password);
                    prop_assert_eq!(parsed.name, name);
                }
                (other, extra) => {
                    return Err(TestCaseError::fail(format!("{other:?} with {extra:?}")));
                }
            }
        }

        /// Rule: the password checked is the one typed, whichever way the login comes: spaces,
        /// `+`, `&`, `=`, `%` and any Unicode arrive unchanged, in JSON and in the OAuth2 form.
        #[test]
        fn a_login_password_arrives_as_typed_in_json_and_in_the_form(
            email in emails(),
            password in passwords(),
        ) {
            let json = serde_json::to_vec(&serde_json::json!({"email": email, "password": password})).unwrap();
            let login: LoginRequest = parse_json(&json).unwrap();
            prop_assert_eq!(login.email.as_deref(), Some(email.as_str()));
            prop_assert_eq!(login.password.as_deref(), Some(password.as_str()));
            let form = serde_urlencoded::to_string([
                ("grant_type", "password"),
                ("username", email.as_str()),
                ("password", password.as_str()),
            ]).unwrap();
            let login: LoginForm = parse_form(form.as_bytes()).unwrap();
            prop_assert_eq!(login.username.as_deref(), Some(email.as_str()));
            prop_assert_eq!(login.password.as_deref(), Some(password.as_str()));
        }

        /// Rule: a body is read as JSON only when declared JSON (`application/json` or
        /// `+json`, in any case, with any parameters) and as a form only when declared a form:
        /// never guessed from what it holds; any other header value is neither, and none panics.
        #[test]
        fn a_body_is_read_only_as_what_its_content_type_declares(
            (declared, kind) in declared_content_type(),
            noise in "[ -~]{0,80}",
        ) {
            let mut headers = HeaderMap::new();
            headers.insert(CONTENT_TYPE, HeaderValue::from_str(&declared).unwrap());
            prop_assert_eq!(body_kind(&headers), kind, "{:?}", declared);
            if let Ok(v) = HeaderValue::from_str(&noise) {
                headers.insert(CONTENT_TYPE, v);
                let _ = body_kind(&headers);
            }
        }
    }
}
