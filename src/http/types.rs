//! Request and response bodies, as the contract fixes them.
//!
//! Request bodies refuse unknown fields (422): nothing a client sends is silently dropped, and
//! nothing it should not set (`is_superuser`, say) can be slipped in. Required fields are
//! `Option`s here so that one 422 can name every missing field at once.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::{Account, SessionView};
use crate::service::sessions::TokenPair;

// The constraints below are the ones the handlers check (`domain::Email`, `Name`, `Password`,
// `extract::required_token`), so that a client generated from the document validates as the
// server does; `openapi::configure` adds the names' pattern (`Name::PATTERN`) and puts the
// configured PASSWORD_MIN_LENGTH in place of the default 8. A required field is `nullable = false`: null is answered "is required". What no
// shape can tell (a wrong password, a token that is not a live one, a guessable new password)
// is said in the descriptions.

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// A valid address (internationalised domains too), at most 254 characters, no control
    /// characters; surrounding spaces are trimmed, and it is compared case-insensitively.
    #[schema(required = true, nullable = false, example = "alice@example.com", max_length = 254, format = Email)]
    pub email: Option<String>,
    /// PASSWORD_MIN_LENGTH (8 by default) to 128 characters, and not too easy to guess
    /// (zxcvbn, given the email and name, must score it PASSWORD_MIN_SCORE): a guessable one is
    /// refused with 422 and a reason.
    #[schema(required = true, nullable = false, example = "correct horse battery staple", min_length = 8, max_length = 128, format = Password)]
    pub password: Option<String>,
    /// 1 to 100 characters, no control characters, not only spaces; stored trimmed.
    #[schema(
        required = true,
        nullable = false,
        example = "Alice",
        min_length = 1,
        max_length = 100
    )]
    pub name: Option<String>,
    /// The token of an invitation (the `invitation` of the link in the invitation mail): needed
    /// with REGISTRATION=invite (without it: 403 INVITATION_REQUIRED). `email` must be the
    /// invited address. The account is then created verified. One that is unknown, used,
    /// revoked, expired or for another address is 400 INVITATION_INVALID (also with
    /// REGISTRATION=open, where an invitation is optional). Null or left out: none; when sent,
    /// not empty.
    #[schema(required = false, nullable = true, min_length = 1)]
    pub invitation: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// The account's email address. Any string is taken: one that is no account's address is
    /// answered 401 INVALID_CREDENTIALS, like a wrong password.
    #[schema(required = true, nullable = false, example = "alice@example.com")]
    pub email: Option<String>,
    /// Any string; a wrong one is 401 INVALID_CREDENTIALS.
    #[schema(required = true, nullable = false, example = "correct horse battery staple", format = Password)]
    pub password: Option<String>,
}

/// The OAuth2 password grant (RFC 6749 §4.3), as Swagger UI's Authorize button sends it.
/// `username` is the email address.
#[derive(Debug, Deserialize, ToSchema)]
pub struct LoginForm {
    /// The account's email address (any string, as `email` in the JSON body).
    #[schema(required = true, nullable = false, example = "alice@example.com")]
    pub username: Option<String>,
    /// Any string; a wrong one is 401 INVALID_CREDENTIALS.
    #[schema(required = true, nullable = false, format = Password)]
    pub password: Option<String>,
    /// `password` if given.
    #[schema(value_type = GrantType, required = false)]
    pub grant_type: Option<String>,
    /// Ignored.
    #[schema(nullable = false)]
    pub scope: Option<String>,
    /// Ignored.
    #[schema(nullable = false)]
    pub client_id: Option<String>,
    /// Ignored.
    #[schema(nullable = false)]
    pub client_secret: Option<String>,
}

/// The one OAuth2 grant `/login` takes.
#[derive(Debug, ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum GrantType {
    Password,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    /// A refresh token from /login or /refresh. An empty one is "is required"; one that is not
    /// the session's live token is 401 INVALID_TOKEN.
    #[schema(required = true, nullable = false, min_length = 1)]
    pub refresh_token: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LogoutRequest {
    /// The session's refresh token, for logging out without a (valid) access token: required
    /// then. With a bearer token it may be left out (or null); when sent, it is not empty.
    #[schema(required = false, nullable = true, min_length = 1)]
    pub refresh_token: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateMeRequest {
    /// 1 to 100 characters, no control characters, not only spaces; stored trimmed. Null or
    /// left out: unchanged.
    #[schema(example = "Alice Liddell", min_length = 1, max_length = 100)]
    pub name: Option<String>,
    /// A new address (the rules of `RegisterRequest.email`); needs `current_password`, and makes
    /// the account unverified. Null or left out: unchanged.
    #[schema(example = "alice@example.org", max_length = 254, format = Email)]
    pub email: Option<String>,
    /// Required when `email` changes (unless the account has no password: it then proves a
    /// passkey at POST /me/passkeys/step-up instead); a wrong one is 403 INVALID_CREDENTIALS.
    #[schema(format = Password)]
    pub current_password: Option<String>,
    /// With a second factor: the authenticator's current code (6 digits; spaces are ignored),
    /// for step-up; not needed while this session passed the second factor within
    /// MFA_STEP_UP_SECONDS. A wrong, old or replayed one is 403 INVALID_MFA_CODE.
    #[schema(example = "123456", pattern = "^ *([0-9] *){6}$")]
    pub code: Option<String>,
    /// Instead of `code`: one of the account's unused recovery codes (case and hyphens do not
    /// matter); it is spent.
    #[schema(
        example = "k7m2p-x9q4r",
        pattern = "^[ -]*([2-9a-hjkmnp-zA-HJKMNP-Z][ -]*){10}$"
    )]
    pub recovery_code: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteMeRequest {
    /// The account's password, to confirm; a wrong one is 403 INVALID_CREDENTIALS. Required
    /// unless the account has no password: it then proves a passkey (POST
    /// /me/passkeys/step-up, within MFA_STEP_UP_SECONDS) and may leave this out.
    #[schema(required = true, nullable = false, format = Password)]
    pub password: Option<String>,
    /// With a second factor: the authenticator's current code (6 digits; spaces are ignored),
    /// for step-up; not needed while this session passed the second factor within
    /// MFA_STEP_UP_SECONDS. A wrong, old or replayed one is 403 INVALID_MFA_CODE.
    #[schema(example = "123456", pattern = "^ *([0-9] *){6}$")]
    pub code: Option<String>,
    /// Instead of `code`: one of the account's unused recovery codes (case and hyphens do not
    /// matter); it is spent.
    #[schema(
        example = "k7m2p-x9q4r",
        pattern = "^[ -]*([2-9a-hjkmnp-zA-HJKMNP-Z][ -]*){10}$"
    )]
    pub recovery_code: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordResetRequest {
    /// A valid address (the rules of `RegisterRequest.email`).
    #[schema(required = true, nullable = false, example = "alice@example.com", max_length = 254, format = Email)]
    pub email: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordResetConfirm {
    /// The token from the link. An empty one is "is required"; one that is not a live reset
    /// token is 400 INVALID_TOKEN.
    #[schema(required = true, nullable = false, min_length = 1)]
    pub token: Option<String>,
    /// PASSWORD_MIN_LENGTH (8 by default) to 128 characters, and not too easy to guess (see
    /// `RegisterRequest.password`).
    #[schema(required = true, nullable = false, min_length = 8, max_length = 128, format = Password)]
    pub new_password: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyConfirm {
    /// The token from the link. An empty one is "is required"; one that is not a live
    /// verification token is 400 INVALID_TOKEN.
    #[schema(required = true, nullable = false, min_length = 1)]
    pub token: Option<String>,
}

/// The request was taken; what follows happens by mail.
#[derive(Debug, Serialize, ToSchema)]
pub struct AcceptedResponse {
    pub message: &'static str,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePasswordRequest {
    /// A wrong one is 403 INVALID_CREDENTIALS. Required unless the account has no password:
    /// it then proves a passkey (POST /me/passkeys/step-up, within MFA_STEP_UP_SECONDS), may
    /// leave this out, and this sets its password.
    #[schema(required = true, nullable = false, format = Password)]
    pub current_password: Option<String>,
    /// PASSWORD_MIN_LENGTH (8 by default) to 128 characters, and not too easy to guess (see
    /// `RegisterRequest.password`).
    #[schema(required = true, nullable = false, min_length = 8, max_length = 128, format = Password)]
    pub new_password: Option<String>,
    /// With a second factor: the authenticator's current code (6 digits; spaces are ignored),
    /// for step-up; not needed while this session passed the second factor within
    /// MFA_STEP_UP_SECONDS. A wrong, old or replayed one is 403 INVALID_MFA_CODE.
    #[schema(example = "123456", pattern = "^ *([0-9] *){6}$")]
    pub code: Option<String>,
    /// Instead of `code`: one of the account's unused recovery codes (case and hyphens do not
    /// matter); it is spent.
    #[schema(
        example = "k7m2p-x9q4r",
        pattern = "^[ -]*([2-9a-hjkmnp-zA-HJKMNP-Z][ -]*){10}$"
    )]
    pub recovery_code: Option<String>,
}

/// The second factors of the caller's account.
#[derive(Debug, Serialize, ToSchema)]
pub struct MfaStatusResponse {
    /// Whether a TOTP authenticator is enabled (confirmed).
    pub totp: bool,
    #[schema(format = DateTime, example = "2026-11-24T09:30:00.000Z")]
    pub totp_enabled_at: Option<String>,
    /// Unused recovery codes.
    pub recovery_codes_remaining: i64,
    /// What a login can be completed with: `totp`, `recovery_code` while unused codes remain,
    /// and `passkey` with a passkey; empty without a second factor.
    #[schema(example = json!(["totp", "recovery_code", "passkey"]))]
    pub methods: Vec<&'static str>,
    /// Whether MFA_REQUIRED_FOR covers this account (it cannot remove its factor, and must
    /// enrol before anything else).
    pub required: bool,
    /// When a superuser's delayed removal of the factor takes effect (cancel it with DELETE
    /// /me/mfa/reset), or null.
    #[schema(format = DateTime)]
    pub reset_pending_until: Option<String>,
    /// How many passkeys the account has (GET /me/passkeys lists them); each is a second
    /// factor too.
    pub passkeys: i64,
    /// Whether the account has a password (false: it signs in with its passkeys only).
    pub has_password: bool,
}

impl From<crate::service::mfa::Status> for MfaStatusResponse {
    fn from(s: crate::service::mfa::Status) -> Self {
        Self {
            totp: s.totp_enabled_at.is_some(),
            totp_enabled_at: s.totp_enabled_at.map(rfc3339),
            recovery_codes_remaining: s.recovery_codes_remaining,
            methods: s.methods,
            required: s.required,
            reset_pending_until: s.reset_pending_until.map(rfc3339),
            passkeys: s.passkeys,
            has_password: s.has_password,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordConfirmRequest {
    /// The account's password; a wrong one is 403 INVALID_CREDENTIALS. Required unless the
    /// account has no password (it then proves a passkey at POST /me/passkeys/step-up).
    #[schema(required = true, nullable = false, format = Password)]
    pub password: Option<String>,
}

/// A TOTP enrolment under way: put the secret in an authenticator app (scan `qr_svg` or open
/// `otpauth_uri`), then confirm with its first code.
#[derive(Debug, Serialize, ToSchema)]
pub struct TotpEnrolmentResponse {
    /// The shared secret, base32 (RFC 4648, no padding), for typing in by hand.
    #[schema(example = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP")]
    pub secret: String,
    /// The Key URI Format authenticator apps read.
    #[schema(
        example = "otpauth://totp/auth-server:alice%40example.com?secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP&issuer=auth-server&algorithm=SHA1&digits=6&period=30"
    )]
    pub otpauth_uri: String,
    /// `otpauth_uri` as a QR code: a standalone SVG document.
    pub qr_svg: String,
    #[schema(example = "SHA1")]
    pub algorithm: &'static str,
    #[schema(example = 6)]
    pub digits: u32,
    /// Seconds per code.
    #[schema(example = 30)]
    pub period: i64,
}

impl From<crate::service::mfa::Enrolment> for TotpEnrolmentResponse {
    fn from(e: crate::service::mfa::Enrolment) -> Self {
        Self {
            secret: e.secret,
            otpauth_uri: e.otpauth_uri,
            qr_svg: e.qr_svg,
            algorithm: "SHA1",
            digits: crate::auth::totp::DIGITS,
            period: crate::auth::totp::PERIOD_SECONDS,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmTotpRequest {
    /// The authenticator's current code (6 digits; spaces are ignored). A wrong one is 403
    /// INVALID_MFA_CODE.
    #[schema(
        required = true,
        nullable = false,
        example = "123456",
        pattern = "^ *([0-9] *){6}$"
    )]
    pub code: Option<String>,
}

/// Recovery codes: each works once, instead of a TOTP code. Shown only now: keep them safe.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecoveryCodesResponse {
    #[schema(example = json!(["k7m2p-x9q4r", "a3b4c-d5e6f"]))]
    pub recovery_codes: Vec<String>,
}

/// The password and a second factor (`code` or `recovery_code`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecondFactorRequest {
    /// The account's password; a wrong one is 403 INVALID_CREDENTIALS. Required unless the
    /// account has no password (it then proves a passkey at POST /me/passkeys/step-up).
    #[schema(required = true, nullable = false, format = Password)]
    pub password: Option<String>,
    /// With a second factor: the authenticator's current code (6 digits; spaces are ignored),
    /// for step-up; not needed while this session passed the second factor within
    /// MFA_STEP_UP_SECONDS. A wrong, old or replayed one is 403 INVALID_MFA_CODE.
    #[schema(example = "123456", pattern = "^ *([0-9] *){6}$")]
    pub code: Option<String>,
    /// Instead of `code`: one of the account's unused recovery codes (case and hyphens do not
    /// matter); it is spent.
    #[schema(
        example = "k7m2p-x9q4r",
        pattern = "^[ -]*([2-9a-hjkmnp-zA-HJKMNP-Z][ -]*){10}$"
    )]
    pub recovery_code: Option<String>,
}

/// The second step of a login.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginMfaRequest {
    /// The `mfa_token` of the 403 MFA_REQUIRED answer to /login. One that is unknown, used,
    /// expired or out of tries is 401 INVALID_TOKEN.
    #[schema(required = true, nullable = false, min_length = 1)]
    pub mfa_token: Option<String>,
    /// The authenticator's current code (6 digits; spaces are ignored); or send
    /// `recovery_code`. A wrong, old or replayed one is 401 INVALID_MFA_CODE.
    #[schema(example = "123456", pattern = "^ *([0-9] *){6}$")]
    pub code: Option<String>,
    /// Instead of `code`: one of the account's unused recovery codes (case and hyphens do not
    /// matter); it is spent.
    #[schema(
        example = "k7m2p-x9q4r",
        pattern = "^[ -]*([2-9a-hjkmnp-zA-HJKMNP-Z][ -]*){10}$"
    )]
    pub recovery_code: Option<String>,
    /// Instead of a code: a passkey's answer to the options of POST /login/mfa/passkey/options
    /// (what `PublicKeyCredential.toJSON()` gives). One that fails verification is 401
    /// INVALID_PASSKEY (a failed try), one answering an unknown, used or expired challenge 401
    /// PASSKEY_CHALLENGE_INVALID; one that cannot be read 422.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Object>, example = json!({"id": "…", "rawId": "…", "type": "public-key", "response": {"clientDataJSON": "…", "authenticatorData": "…", "signature": "…", "userHandle": "…"}, "authenticatorAttachment": "platform", "clientExtensionResults": {}}))]
    pub passkey: Option<Option<serde_json::Value>>,
}

/// A field that may be null: `Some(None)` when it is, `None` (by `default`) when it is not there.
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// The caller's own second factor, for step-up.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StepUpRequest {
    /// The caller's authenticator code (6 digits; spaces are ignored); not needed while the
    /// caller's session passed the second factor within MFA_STEP_UP_SECONDS. A wrong, old or
    /// replayed one is 403 INVALID_MFA_CODE.
    #[schema(example = "123456", pattern = "^ *([0-9] *){6}$")]
    pub code: Option<String>,
    /// Instead of `code`: one of the caller's unused recovery codes; it is spent.
    #[schema(
        example = "k7m2p-x9q4r",
        pattern = "^[ -]*([2-9a-hjkmnp-zA-HJKMNP-Z][ -]*){10}$"
    )]
    pub recovery_code: Option<String>,
}

/// A superuser's removal of a second factor that waits for MFA_RESET_DELAY_HOURS.
#[derive(Debug, Serialize, ToSchema)]
pub struct MfaResetResponse {
    #[schema(format = DateTime)]
    pub effective_at: String,
}

/// What a superuser may change; fields left out (or null) stay as they are.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminUpdateRequest {
    /// 1 to 100 characters, no control characters, not only spaces; stored trimmed.
    #[schema(min_length = 1, max_length = 100)]
    pub name: Option<String>,
    /// A new address (the rules of `RegisterRequest.email`); it is unverified unless
    /// `is_verified` says otherwise.
    #[schema(max_length = 254, format = Email)]
    pub email: Option<String>,
    /// false deactivates the account and ends all its sessions.
    pub is_active: Option<bool>,
    pub is_verified: Option<bool>,
    pub is_superuser: Option<bool>,
}

/// An invitation to register (superusers).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InvitationRequest {
    /// The address to invite (the rules of `RegisterRequest.email`). An address that already
    /// has an account is 409 EMAIL_TAKEN. Inviting an address again replaces its pending
    /// invitation (the earlier link stops working).
    #[schema(required = true, nullable = false, example = "bob@example.com", max_length = 254, format = Email)]
    pub email: Option<String>,
    /// The invitee's name, if known: the mail greets them with it and the registration page
    /// fills it in (they may change it). 1 to 100 characters, no control characters, not only
    /// spaces; stored trimmed. Null or left out: none.
    #[schema(example = "Bob", min_length = 1, max_length = 100)]
    pub name: Option<String>,
}

/// An invitation: never its token, which is only in the mail.
#[derive(Debug, Serialize, ToSchema)]
pub struct InvitationResponse {
    #[schema(format = Uuid)]
    pub id: String,
    /// The invited address (normalised): the account must be registered with exactly it.
    #[schema(example = "bob@example.com")]
    pub email: String,
    #[schema(example = "Bob")]
    pub name: Option<String>,
    /// The superuser who invited (null once that account is deleted).
    #[schema(format = Uuid)]
    pub invited_by: Option<String>,
    #[schema(format = DateTime, example = "2026-11-24T09:30:00.000Z")]
    pub created_at: String,
    /// After this the link no longer works (INVITATION_EXPIRE_HOURS after `created_at`).
    #[schema(format = DateTime, example = "2026-11-27T09:30:00.000Z")]
    pub expires_at: String,
}

impl From<crate::service::invitations::InvitationView> for InvitationResponse {
    fn from(i: crate::service::invitations::InvitationView) -> Self {
        Self {
            id: i.id,
            email: i.email,
            name: i.name,
            invited_by: i.invited_by,
            created_at: rfc3339(i.created_at),
            expires_at: rfc3339(i.expires_at),
        }
    }
}

/// A page of pending invitations (not accepted, revoked or expired).
#[derive(Debug, Serialize, ToSchema)]
pub struct InvitationListResponse {
    pub items: Vec<InvitationResponse>,
    /// How many invitations are pending, in all.
    pub total: i64,
    pub limit: i64,
    pub offset: i64,
}

/// A login session.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionResponse {
    #[schema(format = Uuid)]
    pub id: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// The last login or refresh.
    #[schema(format = DateTime)]
    pub last_used_at: String,
    /// When it ends unless refreshed before (never later than its absolute end).
    #[schema(format = DateTime)]
    pub expires_at: String,
    pub user_agent: Option<String>,
    /// The client address at the last login or refresh.
    pub ip: Option<String>,
    /// True for the session of the access token that asked.
    pub current: bool,
}

impl From<SessionView> for SessionResponse {
    fn from(s: SessionView) -> Self {
        Self {
            id: s.id,
            created_at: rfc3339(s.created_at),
            last_used_at: rfc3339(s.last_used_at),
            expires_at: rfc3339(s.expires_at),
            user_agent: s.user_agent,
            ip: s.ip,
            current: s.current,
        }
    }
}

/// A page of accounts.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserListResponse {
    pub items: Vec<UserResponse>,
    /// How many accounts match, in all.
    pub total: i64,
    pub limit: i64,
    pub offset: i64,
}

/// An account.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserResponse {
    #[schema(format = Uuid)]
    pub id: String,
    #[schema(example = "alice@example.com")]
    pub email: String,
    #[schema(example = "Alice")]
    pub name: String,
    pub is_active: bool,
    pub is_verified: bool,
    pub is_superuser: bool,
    /// RFC 3339, UTC.
    #[schema(format = DateTime, example = "2026-11-24T09:30:00.000Z")]
    pub created_at: String,
    #[schema(format = DateTime, example = "2026-11-24T09:30:00.000Z")]
    pub updated_at: String,
}

pub use crate::clock::rfc3339;

impl From<Account> for UserResponse {
    fn from(u: Account) -> Self {
        Self {
            id: u.id,
            email: u.email,
            name: u.name,
            is_active: u.is_active,
            is_verified: u.is_verified,
            is_superuser: u.is_superuser,
            created_at: rfc3339(u.created_at),
            updated_at: rfc3339(u.updated_at),
        }
    }
}

/// Tokens for a session.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenPairResponse {
    /// Send as `Authorization: Bearer <access_token>`.
    pub access_token: String,
    /// Single use: `/refresh` spends it and returns a new pair.
    pub refresh_token: String,
    /// Always `bearer`.
    #[schema(example = "bearer")]
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    #[schema(example = 1800)]
    pub expires_in: i64,
}

impl From<TokenPair> for TokenPairResponse {
    fn from(p: TokenPair) -> Self {
        Self {
            access_token: p.access_token,
            refresh_token: p.refresh_token,
            token_type: "bearer",
            expires_in: p.expires_in,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HealthResponse {
    /// `ok`; `degraded` when the database answers but something is off (see `reasons`); `down`
    /// when the database does not answer (with 503).
    #[schema(example = "ok")]
    pub status: &'static str,
    /// `ok` or `unavailable`.
    #[schema(example = "ok")]
    pub database: &'static str,
    /// Only when `degraded`, what is off: `database_connection_lost` (a database connection was
    /// lost within the last minute: a read was run again, or a write answered 503),
    /// `database_pool_exhausted` (a request waited for a database connection in vain within the
    /// last minute), `rate_limits_local` (REDIS_URL is set but Redis does not answer: each
    /// instance counts its own per-client limits).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(example = json!(["database_connection_lost"]))]
    pub reasons: Vec<&'static str>,
}

/// Options for `navigator.credentials.create()` or `.get()`: pass `publicKey` through
/// `PublicKeyCredential.parseCreationOptionsFromJSON` / `parseRequestOptionsFromJSON` (base64url
/// strings throughout).
#[derive(Debug, Serialize, ToSchema)]
pub struct PasskeyOptionsResponse {
    /// `PublicKeyCredentialCreationOptionsJSON` or `PublicKeyCredentialRequestOptionsJSON`.
    #[serde(rename = "publicKey")]
    #[schema(value_type = Object, example = json!({
        "challenge": "3q2-7wx8Kx0p9vYgA1b2cw", "timeout": 300000, "rpId": "example.com",
        "allowCredentials": [], "userVerification": "required", "hints": [], "extensions": {}
    }))]
    pub public_key: serde_json::Value,
}

impl From<crate::service::passkeys::Options> for PasskeyOptionsResponse {
    fn from(o: crate::service::passkeys::Options) -> Self {
        let mut value = o.0;
        let public_key = value
            .get_mut("publicKey")
            .map(serde_json::Value::take)
            .unwrap_or(value);
        Self { public_key }
    }
}

/// What a change of passkeys needs (the step-up of other sensitive changes). Every field may be
/// left out, and the body too, where the account does not need it.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasskeyChangeRequest {
    /// The account's password; a wrong one is 403 INVALID_CREDENTIALS. Required unless the
    /// account has no password (it then proves a passkey at POST /me/passkeys/step-up).
    #[schema(format = Password)]
    pub password: Option<String>,
    /// With a second factor: the authenticator's current code (6 digits; spaces are ignored),
    /// for step-up; not needed while this session passed the second factor within
    /// MFA_STEP_UP_SECONDS. A wrong, old or replayed one is 403 INVALID_MFA_CODE.
    #[schema(example = "123456", pattern = "^ *([0-9] *){6}$")]
    pub code: Option<String>,
    /// Instead of `code`: one of the account's unused recovery codes (case and hyphens do not
    /// matter); it is spent.
    #[schema(
        example = "k7m2p-x9q4r",
        pattern = "^[ -]*([2-9a-hjkmnp-zA-HJKMNP-Z][ -]*){10}$"
    )]
    pub recovery_code: Option<String>,
}

/// A new passkey: the answer of `navigator.credentials.create()` to POST /me/passkeys/options.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterPasskeyRequest {
    /// What `PublicKeyCredential.toJSON()` gives (`id`, `rawId`, `type`, `response` with
    /// `clientDataJSON`, `attestationObject` and `transports`, `authenticatorAttachment`,
    /// `clientExtensionResults`). One that cannot be read is 422.
    #[schema(value_type = Object, required = true, nullable = false, example = json!({
        "id": "…", "rawId": "…", "type": "public-key",
        "response": {"clientDataJSON": "…", "attestationObject": "…", "transports": ["internal", "hybrid"]},
        "authenticatorAttachment": "platform", "clientExtensionResults": {"credProps": {"rk": true}}
    }))]
    pub credential: Option<serde_json::Value>,
    /// At most 64 characters, no control characters, not only spaces; stored trimmed. Left out:
    /// the authenticator's name when it is a known one, else "Passkey N".
    #[schema(example = "MacBook", min_length = 1, max_length = 64)]
    pub name: Option<String>,
}

/// A passkey's new name.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenamePasskeyRequest {
    /// At most 64 characters, no control characters, not only spaces; stored trimmed.
    #[schema(
        required = true,
        nullable = false,
        example = "Work laptop",
        min_length = 1,
        max_length = 64
    )]
    pub name: Option<String>,
}

/// A passkey's answer to `navigator.credentials.get()`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasskeyAssertionRequest {
    /// What `PublicKeyCredential.toJSON()` gives (`id`, `rawId`, `type`, `response` with
    /// `clientDataJSON`, `authenticatorData`, `signature` and `userHandle`,
    /// `authenticatorAttachment`, `clientExtensionResults`). One that cannot be read is 422.
    #[schema(value_type = Object, required = true, nullable = false, example = json!({
        "id": "…", "rawId": "…", "type": "public-key",
        "response": {"clientDataJSON": "…", "authenticatorData": "…", "signature": "…", "userHandle": "…"},
        "authenticatorAttachment": "platform", "clientExtensionResults": {}
    }))]
    pub credential: Option<serde_json::Value>,
}

/// Options to sign in with a passkey.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasskeyLoginOptionsRequest {
    /// Email-first: the account's address, for its passkeys (`allowCredentials`). Left out (or
    /// empty): any passkey of this site (usernameless, conditional UI). An address that names
    /// no account with passkeys is answered the same way as one that does.
    #[schema(example = "alice@example.com", max_length = 254)]
    pub email: Option<String>,
}

/// Options to finish a password login with a passkey.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasskeyMfaOptionsRequest {
    /// The `mfa_token` of the 403 MFA_REQUIRED answer to /login. One that is unknown, used,
    /// expired or out of tries is 401 INVALID_TOKEN; asking for options spends no try.
    #[schema(required = true, nullable = false, min_length = 1)]
    pub mfa_token: Option<String>,
}

/// A passkey of the caller's account: never its public key or credential id.
#[derive(Debug, Serialize, ToSchema)]
pub struct PasskeyResponse {
    #[schema(format = Uuid)]
    pub id: String,
    #[schema(example = "MacBook")]
    pub name: String,
    #[schema(format = DateTime, example = "2026-11-24T09:30:00.000Z")]
    pub created_at: String,
    /// The last sign-in or step-up with it, or null.
    #[schema(format = DateTime)]
    pub last_used_at: Option<String>,
    /// Whether it may be synced to other devices (a password manager's passkey): `swk` in the
    /// session's `amr`, else `hwk`.
    pub backup_eligible: bool,
    /// Whether it is synced (backed up) now.
    pub backed_up: bool,
    /// Whether the authenticator verified the user (PIN, biometrics) when it was registered.
    pub user_verified: bool,
    /// How the browser may reach the authenticator (`internal`, `hybrid`, `usb`, `nfc`, `ble`,
    /// `smart-card`).
    #[schema(example = json!(["internal", "hybrid"]))]
    pub transports: Vec<String>,
    /// The authenticator's model (AAGUID), when it said.
    #[schema(format = Uuid)]
    pub aaguid: Option<String>,
}

impl From<crate::service::passkeys::PasskeyView> for PasskeyResponse {
    fn from(p: crate::service::passkeys::PasskeyView) -> Self {
        Self {
            id: p.id,
            name: p.name,
            created_at: rfc3339(p.created_at),
            last_used_at: p.last_used_at.map(rfc3339),
            backup_eligible: p.backup_eligible,
            backed_up: p.backed_up,
            user_verified: p.user_verified,
            transports: p.transports,
            aaguid: p.aaguid,
        }
    }
}

/// A security event (the audit trail). In the caller's own listing (GET /me/events) no other
/// account is named: `actor_id` is the caller's id when `actor` is `self` and null otherwise,
/// and an event a superuser caused shows nothing of the superuser's request (`session_id`,
/// `ip` and `user_agent` are null). A superuser's listings show everything on record.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "id": "5f0c1f5e-8a39-4d53-9b1e-8f0f4c1a2b3c", "type": "user.signed_in",
    "at": "2026-11-24T09:30:00.000Z", "user_id": "0d6f8a52-3b8e-4a0b-9f61-2f5d3c9e7a10",
    "actor": "self", "actor_id": "0d6f8a52-3b8e-4a0b-9f61-2f5d3c9e7a10",
    "session_id": "a3c1e7d2-6b4f-4e88-9d0a-1f2e3d4c5b6a", "ip": "203.0.113.7",
    "user_agent": "Mozilla/5.0", "detail": {"method": "password", "amr": ["pwd"]}
}))]
pub struct EventResponse {
    #[schema(format = Uuid)]
    pub id: String,
    /// The event type (the README's table).
    #[serde(rename = "type")]
    pub kind: String,
    /// When it happened (RFC 3339, UTC).
    #[schema(format = DateTime)]
    pub at: String,
    /// The account the event is about (it may have been deleted since).
    #[schema(format = Uuid)]
    pub user_id: Option<String>,
    /// Who acted: `self` (the account itself), `administrator` (a superuser), `system` (the
    /// server's job or the command line) or `anonymous` (a request by someone not signed in: a
    /// failed sign-in, a reset asked for, a spent refresh token presented again).
    #[schema(example = "self")]
    pub actor: &'static str,
    /// The account that acted (see `actor`).
    #[schema(format = Uuid)]
    pub actor_id: Option<String>,
    /// The session that acted (a sign-in's: the session it opened; a refresh reuse's: the session
    /// revoked).
    #[schema(format = Uuid)]
    pub session_id: Option<String>,
    /// The client address of the request that caused it.
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// What else there is to say (per type: the README's table); never a secret.
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

impl From<crate::service::audit::EventView> for EventResponse {
    fn from(e: crate::service::audit::EventView) -> Self {
        Self {
            id: e.id,
            kind: e.kind,
            at: rfc3339(e.at),
            user_id: e.user_id,
            actor: e.actor.as_str(),
            actor_id: e.actor_id,
            session_id: e.session_id,
            ip: e.ip,
            user_agent: e.user_agent,
            detail: e.detail,
        }
    }
}

/// A page of security events, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventListResponse {
    pub events: Vec<EventResponse>,
    /// Pass as `cursor` for the next page; null when there is no more.
    #[schema(example = "1234")]
    pub next_cursor: Option<String>,
}

impl From<crate::service::audit::EventPage> for EventListResponse {
    fn from(page: crate::service::audit::EventPage) -> Self {
        Self {
            events: page.events.into_iter().map(Into::into).collect(),
            next_cursor: page.next_cursor.map(|seq| seq.to_string()),
        }
    }
}
