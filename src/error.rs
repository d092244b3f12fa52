//! The crate's one error type. Each variant maps to one row of the contract's error table; the
//! HTTP layer turns it into a problem+json response (see `http::problem`).

use std::time::Duration;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One invalid field of a request body.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the request is not valid")]
    Validation(Vec<FieldError>),
    /// A query parameter of a listing that cannot be taken (400 INVALID_PARAMETER): an unknown
    /// event type, a time that is not RFC 3339, a cursor that is not one the server gave.
    #[error("a query parameter is not valid")]
    InvalidParameter(Vec<FieldError>),
    #[error("an account with this email already exists")]
    EmailTaken,
    /// Login with a wrong email or password (401).
    #[error("wrong email or password")]
    InvalidCredentials,
    /// A wrong password where an authenticated call asks for it again (403).
    #[error("the password is wrong")]
    WrongPassword,
    #[error("this account is deactivated")]
    AccountDisabled,
    #[error("the email address of this account is not verified")]
    EmailNotVerified,
    /// Missing, malformed, expired, revoked or wrong-kind access token.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// A refresh token that is invalid, expired, spent or revoked (401).
    #[error("{0}")]
    InvalidRefreshToken(&'static str),
    /// A password-reset or verification token that is invalid, expired or used (400).
    #[error("{0}")]
    InvalidOneTimeToken(&'static str),
    /// The password was right and the account has a second factor: finish with POST /login/mfa.
    #[error(
        "this account needs a second factor: send a code to POST /login/mfa with the mfa_token"
    )]
    MfaRequired {
        mfa_token: String,
        methods: Vec<&'static str>,
        expires_in: i64,
    },
    /// An `mfa_token` that is unknown, used, expired, out of tries, or whose account changed (401).
    #[error("{0}")]
    InvalidMfaToken(&'static str),
    /// A wrong, old or replayed TOTP code, or an unknown or used recovery code, at POST
    /// /login/mfa (401).
    #[error("the code is not valid")]
    InvalidMfaCode,
    /// The same, where an authenticated call asks for a code (403).
    #[error("the code is not valid")]
    WrongMfaCode,
    /// A sensitive change by an account with a second factor, with no code and no recent pass;
    /// or, by an account without a password, with no recent passkey proof.
    #[error("{}", step_up_detail(methods))]
    StepUpRequired { methods: Vec<&'static str> },
    /// MFA_REQUIRED_FOR covers the account and its session has not passed a second factor.
    #[error(
        "this account must set up a second factor first: POST /me/mfa/totp, or a passkey at POST /me/passkeys/options"
    )]
    MfaEnrolmentRequired,
    #[error("a TOTP authenticator is already enabled")]
    MfaAlreadyEnabled,
    #[error("this account has no second factor")]
    MfaNotEnabled,
    /// A passkey's answer failed a check (named): unknown credential, origin, RP ID, type,
    /// signature, user handle, user presence or verification (401).
    #[error("{0}")]
    InvalidPasskey(&'static str),
    /// A passkey's answer to a challenge that is unknown, used, expired or another ceremony's
    /// (401): ask for new options.
    #[error("{0}")]
    PasskeyChallengeInvalid(&'static str),
    /// WEBAUTHN_COUNTER_POLICY=refuse and the passkey's signature counter did not grow (401).
    #[error(
        "the passkey's signature counter did not grow: the passkey may have been copied (the account's owner is told); use another passkey or sign in otherwise"
    )]
    PasskeyCounterRegressed,
    #[error("this passkey is already registered")]
    PasskeyAlreadyRegistered,
    #[error("this account has the most passkeys it may have (20): remove one first")]
    PasskeyLimit,
    /// There are as many webhook endpoints as there may be (409).
    #[error("there are as many webhooks as there may be (50): delete one first")]
    WebhookLimit,
    /// Removing it would leave the account no way to sign in (409).
    #[error("{0}")]
    LastCredential(&'static str),
    /// DELETE /me/password on an account without a password.
    #[error("this account has no password")]
    PasswordNotSet,
    /// A passkey ceremony asked of an account without a passkey (409 MFA_NOT_ENABLED).
    #[error("this account has no passkey")]
    NoPasskey,
    /// REGISTRATION=closed: nobody registers (403).
    #[error("registration is closed: accounts are created by an administrator")]
    RegistrationClosed,
    /// REGISTRATION=invite and no invitation was sent (403).
    #[error(
        "registration is by invitation only: send the `invitation` token from the invitation mail"
    )]
    InvitationRequired,
    /// An invitation token that is unknown, used, revoked, expired, or for another address (400).
    #[error("{0}")]
    InvitationInvalid(&'static str),
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{0}")]
    NotFound(&'static str),
    #[error("too many requests; try again later")]
    TooManyRequests { retry_after: Duration },
    #[error("the request body is larger than this server accepts")]
    PayloadTooLarge,
    #[error("{0}")]
    UnsupportedMediaType(&'static str),
    /// Password hashing is saturated: a new hash would wait longer than HASH_MAX_WAIT_MILLISECONDS.
    /// `retry_after` is that expected wait, in whole seconds.
    #[error("the server is busy; try again shortly")]
    Busy { retry_after: Duration },
    #[error("the database is not available")]
    DatabaseUnavailable(#[source] sqlx::Error),
    #[error("an unexpected error occurred")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// What STEP_UP_REQUIRED says, by what the account can answer with.
fn step_up_detail(methods: &[&'static str]) -> &'static str {
    let passkey = methods.contains(&"passkey");
    let code = methods.iter().any(|m| *m != "passkey");
    match (code, passkey) {
        (true, true) => {
            "this change needs your second factor: send `code` or `recovery_code` as well, or prove a passkey at POST /me/passkeys/step-up"
        }
        (false, true) => {
            "this change needs a recent passkey proof: prove a passkey at POST /me/passkeys/step-up"
        }
        _ => "this change needs your second factor: send `code` or `recovery_code` as well",
    }
}

impl Error {
    pub fn internal(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Internal(e.into())
    }

    pub fn validation(field: &str, message: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError::new(field, message)])
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        if crate::db::is_unavailable(&e) {
            Self::DatabaseUnavailable(e)
        } else {
            Self::Internal(Box::new(e))
        }
    }
}
