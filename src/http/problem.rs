//! RFC 9457 problem documents: every error response of the server is one.

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{Error, FieldError};

pub const PROBLEM_JSON: &str = "application/problem+json";

/// An error, as every endpoint reports it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "type": "about:blank", "title": "Conflict", "status": 409,
    "detail": "an account with this email already exists", "code": "EMAIL_TAKEN"
}))]
pub struct Problem {
    /// Always `about:blank`: `code` says what happened.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The HTTP status text.
    pub title: &'static str,
    pub status: u16,
    /// What went wrong, for people.
    pub detail: String,
    /// What went wrong, for programs: VALIDATION_FAILED, INVALID_PARAMETER, EMAIL_TAKEN, INVALID_CREDENTIALS,
    /// ACCOUNT_DISABLED, EMAIL_NOT_VERIFIED, UNAUTHORIZED, INVALID_TOKEN, MFA_REQUIRED,
    /// INVALID_MFA_CODE, STEP_UP_REQUIRED, MFA_ENROLMENT_REQUIRED, MFA_ALREADY_ENABLED,
    /// MFA_NOT_ENABLED, INVALID_PASSKEY, PASSKEY_CHALLENGE_INVALID, PASSKEY_COUNTER_REGRESSED,
    /// PASSKEY_ALREADY_REGISTERED, PASSKEY_LIMIT, LAST_CREDENTIAL, PASSWORD_NOT_SET, WEBHOOK_LIMIT,
    /// REGISTRATION_CLOSED, INVITATION_REQUIRED, INVITATION_INVALID, FORBIDDEN, NOT_FOUND, TOO_MANY_REQUESTS, PAYLOAD_TOO_LARGE,
    /// UNSUPPORTED_MEDIA_TYPE, METHOD_NOT_ALLOWED, SERVICE_UNAVAILABLE or INTERNAL.
    pub code: &'static str,
    /// With VALIDATION_FAILED and INVALID_PARAMETER: one entry per bad field (or query
    /// parameter).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<FieldError>>,
    /// With MFA_REQUIRED: the single-use token to send to POST /login/mfa with a code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mfa_token: Option<String>,
    /// With MFA_REQUIRED and STEP_UP_REQUIRED: what the account can answer with (`totp`,
    /// `recovery_code`, `passkey`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub methods: Option<Vec<&'static str>>,
    /// With MFA_REQUIRED: seconds until `mfa_token` expires.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<i64>,
}

pub fn problem(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Problem {
    Problem {
        kind: "about:blank",
        title: status.canonical_reason().unwrap_or("Error"),
        status: status.as_u16(),
        detail: detail.into(),
        code,
        errors: None,
        mfa_token: None,
        methods: None,
        expires_in: None,
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = (status, body).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        response
    }
}

/// Logs an error with its whole chain of causes.
fn log_chain(e: &(dyn std::error::Error + 'static), message: &str) {
    let mut chain = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        chain.push_str(": ");
        chain.push_str(&cause.to_string());
        source = cause.source();
    }
    tracing::error!(error = %chain, "{message}");
}

/// The status and the stable `code` of an error.
pub fn status_and_code(error: &Error) -> (StatusCode, &'static str) {
    use StatusCode as S;
    match error {
        Error::Validation(_) => (S::UNPROCESSABLE_ENTITY, "VALIDATION_FAILED"),
        Error::InvalidParameter(_) => (S::BAD_REQUEST, "INVALID_PARAMETER"),
        Error::EmailTaken => (S::CONFLICT, "EMAIL_TAKEN"),
        Error::InvalidCredentials => (S::UNAUTHORIZED, "INVALID_CREDENTIALS"),
        Error::WrongPassword => (S::FORBIDDEN, "INVALID_CREDENTIALS"),
        Error::AccountDisabled => (S::FORBIDDEN, "ACCOUNT_DISABLED"),
        Error::EmailNotVerified => (S::FORBIDDEN, "EMAIL_NOT_VERIFIED"),
        Error::Unauthorized(_) => (S::UNAUTHORIZED, "UNAUTHORIZED"),
        Error::InvalidRefreshToken(_) => (S::UNAUTHORIZED, "INVALID_TOKEN"),
        Error::InvalidOneTimeToken(_) => (S::BAD_REQUEST, "INVALID_TOKEN"),
        Error::MfaRequired { .. } => (S::FORBIDDEN, "MFA_REQUIRED"),
        Error::InvalidMfaToken(_) => (S::UNAUTHORIZED, "INVALID_TOKEN"),
        Error::InvalidMfaCode => (S::UNAUTHORIZED, "INVALID_MFA_CODE"),
        Error::WrongMfaCode => (S::FORBIDDEN, "INVALID_MFA_CODE"),
        Error::StepUpRequired { .. } => (S::FORBIDDEN, "STEP_UP_REQUIRED"),
        Error::MfaEnrolmentRequired => (S::FORBIDDEN, "MFA_ENROLMENT_REQUIRED"),
        Error::MfaAlreadyEnabled => (S::CONFLICT, "MFA_ALREADY_ENABLED"),
        Error::MfaNotEnabled => (S::CONFLICT, "MFA_NOT_ENABLED"),
        Error::InvalidPasskey(_) => (S::UNAUTHORIZED, "INVALID_PASSKEY"),
        Error::PasskeyChallengeInvalid(_) => (S::UNAUTHORIZED, "PASSKEY_CHALLENGE_INVALID"),
        Error::PasskeyCounterRegressed => (S::UNAUTHORIZED, "PASSKEY_COUNTER_REGRESSED"),
        Error::PasskeyAlreadyRegistered => (S::CONFLICT, "PASSKEY_ALREADY_REGISTERED"),
        Error::PasskeyLimit => (S::CONFLICT, "PASSKEY_LIMIT"),
        Error::WebhookLimit => (S::CONFLICT, "WEBHOOK_LIMIT"),
        Error::LastCredential(_) => (S::CONFLICT, "LAST_CREDENTIAL"),
        Error::PasswordNotSet => (S::CONFLICT, "PASSWORD_NOT_SET"),
        Error::NoPasskey => (S::CONFLICT, "MFA_NOT_ENABLED"),
        Error::RegistrationClosed => (S::FORBIDDEN, "REGISTRATION_CLOSED"),
        Error::InvitationRequired => (S::FORBIDDEN, "INVITATION_REQUIRED"),
        Error::InvitationInvalid(_) => (S::BAD_REQUEST, "INVITATION_INVALID"),
        Error::Forbidden(_) => (S::FORBIDDEN, "FORBIDDEN"),
        Error::NotFound(_) => (S::NOT_FOUND, "NOT_FOUND"),
        Error::TooManyRequests { .. } => (S::TOO_MANY_REQUESTS, "TOO_MANY_REQUESTS"),
        Error::PayloadTooLarge => (S::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE"),
        Error::UnsupportedMediaType(_) => (S::UNSUPPORTED_MEDIA_TYPE, "UNSUPPORTED_MEDIA_TYPE"),
        Error::Busy { .. } | Error::DatabaseUnavailable(_) => {
            (S::SERVICE_UNAVAILABLE, "SERVICE_UNAVAILABLE")
        }
        Error::Internal(_) => (S::INTERNAL_SERVER_ERROR, "INTERNAL"),
    }
}

/// Logs what an operator must see of an error: the cause chain of an unexpected error or an
/// unavailable database, the hashing pool turning a request away.
pub fn log_error(error: &Error) {
    match error {
        Error::Internal(e) => log_chain(e.as_ref(), "request failed"),
        Error::DatabaseUnavailable(e) => log_chain(e, "database unavailable"),
        Error::Busy { retry_after } => tracing::warn!(
            retry_after_s = retry_after.as_secs(),
            "password hashing saturated; request turned away"
        ),
        _ => {}
    }
}

/// The `Retry-After` of an error, in whole seconds, if it has one.
pub fn retry_after_seconds(error: &Error) -> Option<u64> {
    match error {
        // Whole seconds, rounded up: a client that waits as told is not turned away again.
        Error::TooManyRequests { retry_after } | Error::Busy { retry_after } => {
            Some(retry_after.as_millis().div_ceil(1000).max(1) as u64)
        }
        Error::DatabaseUnavailable(_) => Some(1),
        _ => None,
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        use StatusCode as S;
        let detail = self.to_string();
        let (status, code) = status_and_code(&self);
        log_error(&self);
        let retry_after = retry_after_seconds(&self);
        let mut body = problem(status, code, detail);
        match self {
            Error::Validation(errors) | Error::InvalidParameter(errors) => {
                body.errors = Some(errors)
            }
            Error::MfaRequired {
                mfa_token,
                methods,
                expires_in,
            } => {
                body.mfa_token = Some(mfa_token);
                body.methods = Some(methods);
                body.expires_in = Some(expires_in);
            }
            Error::StepUpRequired { methods } => body.methods = Some(methods),
            _ => {}
        }
        let mut response = body.into_response();
        let headers = response.headers_mut();
        if status == S::UNAUTHORIZED && code == "UNAUTHORIZED" {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"auth-server\""),
            );
        }
        if let Some(seconds) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// Marks a response that is already in the form its client reads (a page's HTML, errors
/// included): [`problemize`] leaves it as it is.
#[derive(Clone, Copy, Debug)]
pub struct NotAProblem;

/// Turns the responses that the framework and middleware make themselves (unknown route, wrong
/// method, body too large, timeout, extractor rejections) into problem documents, keeping their
/// status and headers (such as `Allow`).
pub async fn problemize<B>(response: axum::http::Response<B>) -> Response
where
    B: axum::body::HttpBody<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    problemize_response(response.map(Body::new))
}

/// [`problemize`] for a response of axum's own body type, without a future.
pub fn problemize_response(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error())
        || response.extensions().get::<NotAProblem>().is_some()
    {
        return response;
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with(PROBLEM_JSON) || ct.starts_with("application/json"));
    if is_json {
        return response;
    }
    use StatusCode as S;
    let (code, detail) = match status {
        S::NOT_FOUND => ("NOT_FOUND", "there is nothing at this path"),
        S::METHOD_NOT_ALLOWED => (
            "METHOD_NOT_ALLOWED",
            "this path does not take this method; see the Allow header",
        ),
        S::PAYLOAD_TOO_LARGE => ("PAYLOAD_TOO_LARGE", "the request body is too large"),
        S::UNSUPPORTED_MEDIA_TYPE => (
            "UNSUPPORTED_MEDIA_TYPE",
            "send the body as application/json",
        ),
        S::UNPROCESSABLE_ENTITY | S::BAD_REQUEST => {
            ("VALIDATION_FAILED", "the request is not valid")
        }
        S::REQUEST_TIMEOUT | S::SERVICE_UNAVAILABLE | S::GATEWAY_TIMEOUT => (
            "SERVICE_UNAVAILABLE",
            "the server could not answer in time; try again",
        ),
        S::TOO_MANY_REQUESTS => ("TOO_MANY_REQUESTS", "too many requests; try again later"),
        S::UNAUTHORIZED => ("UNAUTHORIZED", "authentication is required"),
        S::FORBIDDEN => ("FORBIDDEN", "you are not allowed to do this"),
        s if s.is_server_error() => ("INTERNAL", "an unexpected error occurred"),
        _ => ("VALIDATION_FAILED", "the request is not valid"),
    };
    let (mut parts, _) = response.into_parts();
    let body = serde_json::to_vec(&problem(status, code, detail)).unwrap_or_default();
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    // SERVICE_UNAVAILABLE always says when to come back (here: a request that ran past
    // REQUEST_TIMEOUT_SECONDS), as the database's 503 does.
    if code == "SERVICE_UNAVAILABLE" {
        parts
            .headers
            .entry(header::RETRY_AFTER)
            .or_insert(HeaderValue::from(1u64));
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}

/// A handler that panicked: logged, and answered like any unexpected error.
pub fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string());
    tracing::error!(panic = %message, "request handler panicked");
    problem(
        StatusCode::INTERNAL_SERVER_ERROR,
        "INTERNAL",
        "an unexpected error occurred",
    )
    .into_response()
}
