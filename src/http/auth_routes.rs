//! POST /register, /login (with a password, a second factor, or a passkey), /refresh, /logout.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{
    Client, Credentials, JsonBody, Limited, LoginLimit, OptionalJsonBody, RefreshLimit,
    RegisterLimit, required, required_token,
};
use super::problem::Problem;
use super::types::*;
use crate::domain::{Email, FieldErrors, Name};
use crate::error::{Error, Result};
use crate::service::accounts::{self, Registration};
use crate::service::mfa::{self, SecondFactor};
use crate::service::policy;
use crate::service::sessions::{self, LogoutScope};
use crate::service::{invitations, login, passkeys, refresh};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(login))
        .routes(routes!(login_mfa))
        .routes(routes!(login_passkey_options))
        .routes(routes!(login_passkey))
        .routes(routes!(login_mfa_passkey_options))
        .routes(routes!(refresh))
        .routes(routes!(logout))
}

/// Create an account.
///
/// Who may register is REGISTRATION's: `open` (anyone), `invite` (with the `invitation` of an
/// invitation mail: POST /invitations), `closed` (nobody). An account made with an invitation
/// is verified at once, and gets no verification mail.
#[utoipa::path(
    post, path = "/register", tag = "authentication",
    request_body = RegisterRequest,
    responses(
        (status = 201, description = "The account was created", body = UserResponse),
        (status = 400, description = "INVITATION_INVALID: the invitation is unknown, used, revoked, expired or for another address", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "REGISTRATION_CLOSED: REGISTRATION=closed; INVITATION_REQUIRED: REGISTRATION=invite and no `invitation`", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "EMAIL_TAKEN: another account has this email", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn register(
    _: Limited<RegisterLimit>,
    State(state): State<AppState>,
    JsonBody(body): JsonBody<RegisterRequest>,
) -> Result<(StatusCode, Json<UserResponse>)> {
    // The mode first: a closed (or invitation-only) registration answers so, whatever the body.
    invitations::gate(&state, body.invitation.as_deref())?;
    let mut errors = FieldErrors::default();
    let email = errors
        .check(required("email", body.email))
        .and_then(|e| errors.check(Email::parse("email", &e)));
    let name = errors
        .check(required("name", body.name))
        .and_then(|n| errors.check(Name::parse("name", &n)));
    let password = errors
        .check(required("password", body.password))
        .and_then(|p| {
            let context: Vec<&str> = [
                email.as_ref().map(Email::as_str),
                name.as_ref().map(Name::as_str),
            ]
            .into_iter()
            .flatten()
            .collect();
            errors.check(policy::new_password(&state.config, "password", p, &context))
        });
    let invitation = match body.invitation {
        Some(token) => errors.check(required_token("invitation", Some(token))),
        None => None,
    };
    errors.finish()?;
    let (Some(email), Some(name), Some(password)) = (email, name, password) else {
        unreachable!("finish() returns the errors of any missing field")
    };
    let user = accounts::register(
        &state,
        Registration {
            email,
            name,
            password,
            invitation,
        },
    )
    .await?;
    Ok((StatusCode::CREATED, Json(user.into())))
}

/// Log in: open a session and get its tokens.
///
/// Takes JSON `{"email", "password"}`, or the OAuth2 password grant as a form
/// (`username=...&password=...`), which is what Swagger UI's Authorize button sends.
#[utoipa::path(
    post, path = "/login", tag = "authentication",
    request_body(content(
        (LoginRequest = "application/json"),
        (LoginForm = "application/x-www-form-urlencoded"),
    )),
    responses(
        (status = 200, description = "Logged in", body = TokenPairResponse),
        (status = 401, description = "INVALID_CREDENTIALS: wrong email or password", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "ACCOUNT_DISABLED, EMAIL_NOT_VERIFIED, or MFA_REQUIRED: the password was right and the account has a second factor; the document carries `mfa_token` (single use, MFA_TOKEN_EXPIRE_SECONDS), `methods` and `expires_in`: finish with POST /login/mfa", body = Problem, content_type = "application/problem+json",
            example = json!({"type": "about:blank", "title": "Forbidden", "status": 403, "code": "MFA_REQUIRED",
                "detail": "this account needs a second factor: send a code to POST /login/mfa with the mfa_token",
                "mfa_token": "q3Jx0cQ2c1mS9l5oYqk3bM7c8n0Zr1w4T6u2v9y8x7A", "methods": ["totp", "recovery_code"], "expires_in": 300})),
    )
)]
async fn login(
    _: Limited<LoginLimit>,
    State(state): State<AppState>,
    Client(client): Client,
    credentials: Credentials,
) -> Result<Json<TokenPairResponse>> {
    let pair = login::login(&state, &credentials.email, &credentials.password, client).await?;
    Ok(Json(pair.into()))
}

/// Finish a login with the second factor.
///
/// Send the `mfa_token` of the 403 MFA_REQUIRED answer with the authenticator's `code`, with a
/// `recovery_code` (it is spent, and the account is mailed), or with a `passkey`: the answer to
/// the options of POST /login/mfa/passkey/options. The token works once, for
/// MFA_TOKEN_EXPIRE_SECONDS, and for at most 5 tries. Wrong codes and passkeys count toward a
/// lockout of the account's second factor (the LOGIN_* lockout rules), which a right password
/// does not lift.
#[utoipa::path(
    post, path = "/login/mfa", tag = "authentication",
    request_body = LoginMfaRequest,
    responses(
        (status = 200, description = "Logged in; the access token's `amr` says how", body = TokenPairResponse),
        (status = 401, description = "INVALID_TOKEN: the mfa_token is unknown, used, expired or out of tries (log in again); INVALID_MFA_CODE: the code is wrong, old or already used; INVALID_PASSKEY: the passkey failed verification (the detail names the check); PASSKEY_CHALLENGE_INVALID: it answers an unknown, used or expired challenge (ask for new options); PASSKEY_COUNTER_REGRESSED: its signature counter did not grow (WEBAUTHN_COUNTER_POLICY=refuse)", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn login_mfa(
    _: Limited<LoginLimit>,
    State(state): State<AppState>,
    Client(client): Client,
    JsonBody(body): JsonBody<LoginMfaRequest>,
) -> Result<Json<TokenPairResponse>> {
    let mut errors = FieldErrors::default();
    let token = errors.check(required_token("mfa_token", body.mfa_token));
    // A null `passkey` is no factor; alone, it is a passkey that is not one.
    let factor = match body.passkey {
        Some(None) if body.code.is_none() && body.recovery_code.is_none() => errors
            .check::<SecondFactor>(Err(crate::error::FieldError::new(
                "passkey",
                "must be the object PublicKeyCredential.toJSON() gives",
            ))),
        passkey => errors.check(SecondFactor::required_of(
            body.code,
            body.recovery_code,
            passkey.flatten(),
        )),
    };
    errors.finish()?;
    let (Some(token), Some(factor)) = (token, factor) else {
        unreachable!("finish() returns the errors of any missing field")
    };
    let pair = mfa::complete_login(&state, &token, &factor, client).await?;
    Ok(Json(pair.into()))
}

/// Options to sign in with a passkey.
///
/// Without a body (or `email`), for any passkey of this site the browser holds: usernameless
/// sign-in and conditional UI (`mediation: "conditional"`). With `email`, for that account's
/// passkeys. User verification is required (a PIN, biometrics). The answer does not tell
/// whether the address has an account or passkeys (no `transports` are named). Then
/// `navigator.credentials.get({publicKey: PublicKeyCredential.parseRequestOptionsFromJSON(publicKey)})`,
/// and POST /login/passkey with the credential, within WEBAUTHN_CHALLENGE_SECONDS.
#[utoipa::path(
    post, path = "/login/passkey/options", tag = "authentication",
    request_body(content = Option<PasskeyLoginOptionsRequest>, description = "May be left out, null or `{}`"),
    responses(
        (status = 200, description = "The options for `navigator.credentials.get()`", body = PasskeyOptionsResponse),
        (status = 404, description = "NOT_FOUND: passkeys are turned off (PASSKEYS=false)", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn login_passkey_options(
    _: Limited<LoginLimit>,
    State(state): State<AppState>,
    body: OptionalJsonBody<PasskeyLoginOptionsRequest>,
) -> Result<Json<PasskeyOptionsResponse>> {
    let email = body.0.unwrap_or_default().email;
    if email
        .as_ref()
        .is_some_and(|e| e.chars().count() > Email::MAX_LENGTH)
    {
        return Err(Error::validation(
            "email",
            format!("must be at most {} characters", Email::MAX_LENGTH),
        ));
    }
    let options = passkeys::login_options(&state, email.as_deref()).await?;
    Ok(Json(options.into()))
}

/// Sign in with a passkey.
///
/// Send the credential `navigator.credentials.get()` returned (`PublicKeyCredential.toJSON()`)
/// for the options of POST /login/passkey/options. The passkey must verify the user (a PIN,
/// biometrics; the options say `userVerification: "required"`): it is then two factors, and the
/// session's `amr` is `["hwk"|"swk", "user", "mfa"]` (`swk`: a synced passkey). A passkey that
/// cannot (a security key without a PIN) is refused here (401 INVALID_PASSKEY): it is used as
/// the second factor after the password (POST /login/mfa).
#[utoipa::path(
    post, path = "/login/passkey", tag = "authentication",
    request_body = PasskeyAssertionRequest,
    responses(
        (status = 200, description = "Signed in", body = TokenPairResponse),
        (status = 401, description = "INVALID_PASSKEY: the passkey failed verification (unknown credential, not the account the email-first options named, origin, RP ID, type, signature, user handle, user presence: one detail for all, so that a real credential cannot be told from a decoy), or it did not verify the user (its own detail: use the password and the passkey as the second step); PASSKEY_CHALLENGE_INVALID: the challenge is unknown, used, expired or another ceremony's (ask for new options); PASSKEY_COUNTER_REGRESSED: the signature counter did not grow (WEBAUTHN_COUNTER_POLICY=refuse)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "ACCOUNT_DISABLED, EMAIL_NOT_VERIFIED", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "NOT_FOUND: passkeys are turned off (PASSKEYS=false)", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn login_passkey(
    _: Limited<LoginLimit>,
    State(state): State<AppState>,
    Client(client): Client,
    JsonBody(body): JsonBody<PasskeyAssertionRequest>,
) -> Result<Json<TokenPairResponse>> {
    let credential = body
        .credential
        .ok_or_else(|| Error::validation("credential", "is required"))?;
    let pair = passkeys::login(&state, &credential, client).await?;
    Ok(Json(pair.into()))
}

/// Options to finish a login with a passkey.
///
/// For an `mfa_token` whose account has passkeys (`methods` holds `passkey`): the options for
/// `navigator.credentials.get()` naming them; then POST /login/mfa with `passkey`. Spends no try
/// of the token.
#[utoipa::path(
    post, path = "/login/mfa/passkey/options", tag = "authentication",
    request_body = PasskeyMfaOptionsRequest,
    responses(
        (status = 200, description = "The options for `navigator.credentials.get()`", body = PasskeyOptionsResponse),
        (status = 401, description = "INVALID_TOKEN: the mfa_token is unknown, used, expired or out of tries (log in again)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "NOT_FOUND: passkeys are turned off (PASSKEYS=false)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "MFA_NOT_ENABLED: the account has no passkey", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn login_mfa_passkey_options(
    _: Limited<LoginLimit>,
    State(state): State<AppState>,
    JsonBody(body): JsonBody<PasskeyMfaOptionsRequest>,
) -> Result<Json<PasskeyOptionsResponse>> {
    let token =
        required_token("mfa_token", body.mfa_token).map_err(|e| Error::Validation(vec![e]))?;
    let options = passkeys::mfa_options(&state, &token).await?;
    Ok(Json(options.into()))
}

/// Spend a refresh token for a new pair.
///
/// Each refresh token works once. Presenting the token spent most recently again within
/// REFRESH_REUSE_INTERVAL_SECONDS returns the session's current refresh token (the same one the
/// first use returned) with a fresh access token; any other reuse revokes the session.
#[utoipa::path(
    post, path = "/refresh", tag = "authentication",
    request_body = RefreshRequest,
    responses(
        (status = 200, description = "A new pair", body = TokenPairResponse),
        (status = 401, description = "INVALID_TOKEN: invalid, expired, spent or revoked", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn refresh(
    _: Limited<RefreshLimit>,
    State(state): State<AppState>,
    Client(client): Client,
    JsonBody(body): JsonBody<RefreshRequest>,
) -> Result<Json<TokenPairResponse>> {
    let token = required_token("refresh_token", body.refresh_token)
        .map_err(|e| Error::Validation(vec![e]))?;
    let pair = refresh::refresh(&state, &token, client).await?;
    Ok(Json(pair.into()))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct LogoutParams {
    /// `local` (default): this session; `global`: every session of the user; `others`: every
    /// session but this one.
    scope: Option<LogoutScope>,
}

/// Log out.
///
/// With a bearer access token, or, without one, with the session's refresh token in the body.
/// A refresh token whose session has already ended is accepted (204).
#[utoipa::path(
    post, path = "/logout", tag = "authentication",
    params(LogoutParams),
    request_body(content = Option<LogoutRequest>, description = "Needed only without a bearer token (then it must hold the refresh token); with one, it may be omitted, null or `{}`"),
    security((), ("bearer" = []), ("oauth2" = [])),
    responses(
        (status = 204, description = "Logged out"),
        (status = 401, description = "UNAUTHORIZED (bad bearer token, or neither token given) or INVALID_TOKEN (bad refresh token)", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn logout(
    State(state): State<AppState>,
    caller: Option<super::extract::Enrolling>,
    query: std::result::Result<Query<LogoutParams>, axum::extract::rejection::QueryRejection>,
    body: OptionalJsonBody<LogoutRequest>,
) -> Result<StatusCode> {
    let Query(params) =
        query.map_err(|_| Error::validation("scope", "must be one of local, global, others"))?;
    let scope = params.scope.unwrap_or_default();
    // A refresh token, when one is sent, is not empty; with a bearer token the body may be
    // `{}` (clients that always send a JSON object) and is otherwise not read.
    let sent = body.0.map(|body| body.refresh_token);
    if matches!(&sent, Some(Some(token)) if token.is_empty()) {
        return Err(Error::validation("refresh_token", "is required"));
    }
    match (caller, sent) {
        (Some(super::extract::Enrolling(caller)), _) => {
            sessions::logout(&state, &caller, scope).await?;
        }
        (None, Some(Some(token))) => {
            sessions::logout_with_refresh_token(&state, &token, scope).await?;
        }
        (None, Some(None)) => return Err(Error::validation("refresh_token", "is required")),
        (None, None) => {
            return Err(Error::Unauthorized(
                "send an access token, or the refresh token in the body",
            ));
        }
    }
    Ok(StatusCode::NO_CONTENT)
}
