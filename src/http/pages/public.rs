//! The pages anyone can open: sign-in and its second step, sign-out, registration, the
//! forgotten password and its reset, the email verification. Their forms are bound to the
//! browser's pre-session cookie (see `browser`).

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use minijinja::context;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::Pages;
use super::browser::{self, Browser, PageForm, safe_next};
use super::render::{self, Form, Message, View};
use crate::domain::{Email, FieldErrors, Name, Password};
use crate::error::{Error, FieldError, Result};
use crate::http::extract::{Client, ClientLimits, MailLimit, RefreshLimit, RegisterLimit};
use crate::metrics::LoginMethod;
use crate::service::accounts::{self, Registration};
use crate::service::mfa::{self, SecondFactor};
use crate::service::sessions::{self, LogoutScope, TokenPair};
use crate::service::{invitations, login, policy, recovery};

/// A query string's fields; one that cannot be read is read as none.
pub(super) fn query<T: DeserializeOwned + Default>(raw: Option<String>) -> T {
    raw.and_then(|q| serde_urlencoded::from_str(&q).ok())
        .unwrap_or_default()
}

/// A field that was filled in: an empty one counts as missing.
pub(super) fn filled(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.trim().is_empty())
}

/// A required field, or its "is required".
pub(super) fn required(
    errors: &mut FieldErrors,
    name: &str,
    value: Option<String>,
) -> Option<String> {
    errors.check(filled(value).ok_or_else(|| FieldError::new(name, "is required")))
}

/// A required password, exactly as typed (spaces are characters of it), or its "is required".
pub(super) fn required_password(
    errors: &mut FieldErrors,
    name: &str,
    value: Option<String>,
) -> Option<String> {
    errors.check(
        value
            .filter(|p| !p.is_empty())
            .ok_or_else(|| FieldError::new(name, "is required")),
    )
}

/// The second factor of a form's `code` (and `recovery_code`) fields: a recovery code typed
/// where the code goes is taken as one. `Some(None)` when neither is filled in; `None` when what
/// was typed is not a code, the form then saying why.
pub(super) fn second_factor(
    form: &mut Form,
    code: Option<String>,
    recovery_code: Option<String>,
) -> Option<Option<SecondFactor>> {
    let factor = match (filled(code), filled(recovery_code)) {
        (Some(_), Some(_)) => {
            form.error(
                "recovery_code",
                "Enter a code from the app or a recovery code, not both.",
            );
            return None;
        }
        (Some(code), None) => SecondFactor::from_fields(Some(code.clone()), None)
            .or_else(|e| SecondFactor::from_fields(None, Some(code)).map_err(|_| e)),
        (None, recovery_code) => SecondFactor::from_fields(None, recovery_code),
    };
    match factor {
        Ok(factor) => Some(factor),
        Err(e) => {
            form.fail(Error::Validation(vec![e]));
            None
        }
    }
}

/// The words a page shows after a redirect, by the key the redirect names (never text from
/// the query itself).
pub(super) fn done(key: Option<&str>) -> Option<&'static str> {
    Some(match key? {
        "deleted" => "Your account has been deleted.",
        "profile" => "Your name has been saved.",
        "email" => {
            "Your email address has been changed. Open the link we mailed to the new address \
             to confirm it."
        }
        "password" => "Your password has been changed. You are still signed in here only.",
        "mfa-off" => "Two-step verification is off.",
        "session-ended" => "That session has been signed out.",
        "others-ended" => "You have been signed out everywhere else.",
        "passkey-added" => "Passkey added. You can sign in with it from now on.",
        "passkey-renamed" => "The passkey has been renamed.",
        "passkey-removed" => "The passkey has been removed.",
        "password-removed" => {
            "Your password has been removed: sign in with a passkey from now on. You are still \
             signed in here only."
        }
        _ => return None,
    })
}

/// The hint under a new password's input.
pub(super) fn password_hint(pages: &Pages) -> String {
    format!(
        "At least {} characters. A passphrase of several unrelated words is long enough and \
         easy to remember.",
        pages.app.config.accounts.password_min_length
    )
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct NextQuery {
    next: Option<String>,
    done: Option<String>,
}

/// GET /: to the account page, or to the sign-in page.
pub(super) async fn home(browser: Browser) -> Response {
    match browser.caller {
        Some(_) => render::redirect("/account"),
        None => render::redirect("/sign-in"),
    }
}

pub(super) fn allowed_next(pages: &Pages, next: Option<&str>) -> Option<String> {
    next.and_then(|n| safe_next(n, &pages.app.config.pages.redirect_allowlist))
}

pub(super) const SIGN_IN: &[&str] = &["email", "password"];

/// The sign-in page, with `form`'s state.
pub(super) fn sign_in_view(
    pages: &Pages,
    browser: &Browser,
    form: Form,
    notice: Option<&str>,
) -> Response {
    let token = browser.anonymous_token(pages);
    View::new("sign_in.html", token.csrf)
        .cookie(token.set_cookie)
        .notice(notice)
        .form(form)
        .data(context! {
            passkeys => super::passkeys::enabled(&pages.app),
            registration_open => invitations::open_to_all(&pages.app),
        })
        .into_response()
}

/// GET /sign-in[?next=/path]
pub(super) async fn sign_in_page(
    State(pages): State<Pages>,
    browser: Browser,
    RawQuery(raw): RawQuery,
) -> Response {
    let q: NextQuery = query(raw);
    let mut form = Form::new("sign-in", SIGN_IN);
    form.keep("next", allowed_next(&pages, q.next.as_deref()).as_deref());
    sign_in_view(&pages, &browser, form, done(q.done.as_deref()))
}

/// A new session for the browser: its cookie, the browser's previous session (if it had one)
/// revoked, and on to `next` or the account page.
pub(super) async fn signed_in(
    pages: &Pages,
    browser: &Browser,
    pair: TokenPair,
    next: Option<String>,
) -> Response {
    if let Some(previous) = &browser.session_token
        && let Err(e) =
            sessions::logout_with_refresh_token(&pages.app, previous, LogoutScope::Local).await
    {
        // A cookie that names no live session has nothing to revoke.
        if !matches!(e, Error::InvalidRefreshToken(_)) {
            tracing::warn!(error = %e, "the browser's previous session could not be revoked");
        }
    }
    render::redirect_setting(
        next.as_deref().unwrap_or("/account"),
        Some(browser::session_cookie(
            &pages.app.config,
            &pair.refresh_token,
        )),
    )
}

#[derive(Debug, Deserialize)]
pub(super) struct SignInForm {
    csrf: Option<String>,
    email: Option<String>,
    password: Option<String>,
    next: Option<String>,
}

/// POST /sign-in
pub(super) async fn sign_in(
    State(pages): State<Pages>,
    browser: Browser,
    limits: ClientLimits,
    Client(client): Client,
    PageForm(posted): PageForm<SignInForm>,
) -> Response {
    if let Err(refused) = browser.check_anonymous(&pages, posted.csrf.as_deref()) {
        return refused.into_response();
    }
    let state = &pages.app;
    let next = allowed_next(&pages, posted.next.as_deref());
    let mut form = Form::new("sign-in", SIGN_IN);
    form.keep("email", posted.email.as_deref());
    form.keep("next", next.as_deref());
    let result = async {
        limits.check_login(state, LoginMethod::Password).await?;
        let mut errors = FieldErrors::default();
        let email = required(&mut errors, "email", posted.email);
        let password = required_password(&mut errors, "password", posted.password);
        errors.finish()?;
        let (Some(email), Some(password)) = (email, password) else {
            unreachable!("finish() returns the errors of any missing field")
        };
        login::login(state, &email, &Password::given(password), client).await
    }
    .await;
    match result {
        Ok(pair) => signed_in(&pages, &browser, pair, next).await,
        Err(Error::MfaRequired {
            mfa_token, methods, ..
        }) => second_step(&pages, &browser, &mfa_token, &methods, next.as_deref()),
        Err(e) => {
            form.fail(e);
            sign_in_view(&pages, &browser, form, None)
        }
    }
}

const MFA: &[&str] = &["code", "recovery_code"];

/// The second step's page for an `mfa_token` answering with one of `methods`.
pub(super) fn second_step(
    pages: &Pages,
    browser: &Browser,
    mfa_token: &str,
    methods: &[&str],
    next: Option<&str>,
) -> Response {
    let mut form = Form::new("sign-in-mfa", MFA);
    form.keep("mfa_token", Some(mfa_token));
    form.keep("methods", Some(&methods.join(" ")));
    form.keep("next", next);
    mfa_view(pages, browser, form)
}

/// The second step's page. Its form carries the methods the first step offered (what the page
/// shows: the code's fields, the passkey's button); the service decides what it accepts.
fn mfa_view(pages: &Pages, browser: &Browser, form: Form) -> Response {
    let token = browser.anonymous_token(pages);
    View::new("sign_in_mfa.html", token.csrf)
        .cookie(token.set_cookie)
        .form(form)
        .data(context! { passkeys => super::passkeys::enabled(&pages.app) })
        .into_response()
}

#[derive(Debug, Deserialize)]
pub(super) struct MfaForm {
    csrf: Option<String>,
    mfa_token: Option<String>,
    methods: Option<String>,
    code: Option<String>,
    recovery_code: Option<String>,
    /// A passkey's assertion (`PublicKeyCredential.toJSON()` as a JSON string).
    passkey: Option<String>,
    next: Option<String>,
}

/// POST /sign-in/mfa: the second step.
pub(super) async fn sign_in_mfa(
    State(pages): State<Pages>,
    browser: Browser,
    limits: ClientLimits,
    Client(client): Client,
    PageForm(posted): PageForm<MfaForm>,
) -> Response {
    if let Err(refused) = browser.check_anonymous(&pages, posted.csrf.as_deref()) {
        return refused.into_response();
    }
    let state = &pages.app;
    let next = allowed_next(&pages, posted.next.as_deref());
    let start_again = |error: Error| {
        let mut form = Form::new("sign-in", SIGN_IN);
        form.keep("next", next.as_deref());
        form.fail(error);
        sign_in_view(&pages, &browser, form, None)
    };
    let Some(mfa_token) = filled(posted.mfa_token) else {
        return start_again(Error::InvalidMfaToken("no mfa_token"));
    };
    let mut form = Form::new("sign-in-mfa", MFA);
    form.keep("mfa_token", Some(&mfa_token));
    form.keep("methods", posted.methods.as_deref());
    form.keep("next", next.as_deref());
    if let Err(e) = limits.check_login(state, LoginMethod::Mfa).await {
        form.fail(e);
        return mfa_view(&pages, &browser, form);
    }
    // A passkey (the page's button) or a code.
    let factor = match filled(posted.passkey) {
        Some(passkey) => match super::passkeys::credential(&passkey) {
            Ok(credential) => Some(Some(SecondFactor::Passkey(Box::new(credential)))),
            Err(sentence) => {
                form.problem(StatusCode::UNPROCESSABLE_ENTITY, sentence);
                None
            }
        },
        None => second_factor(&mut form, posted.code, posted.recovery_code),
    };
    let factor = match factor {
        Some(Some(factor)) => factor,
        Some(None) => {
            form.error(
                "code",
                "Enter the code from your authenticator app, or a recovery code.",
            );
            return mfa_view(&pages, &browser, form);
        }
        None => return mfa_view(&pages, &browser, form),
    };
    match mfa::complete_login(state, &mfa_token, &factor, client).await {
        Ok(pair) => signed_in(&pages, &browser, pair, next.clone()).await,
        Err(e @ Error::InvalidMfaToken(_)) => start_again(e),
        Err(e) => {
            form.fail(e);
            mfa_view(&pages, &browser, form)
        }
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct CsrfOnly {
    csrf: Option<String>,
}

/// POST /sign-out: this session ends, its cookie goes.
pub(super) async fn sign_out(
    State(pages): State<Pages>,
    browser: Browser,
    PageForm(posted): PageForm<CsrfOnly>,
) -> Response {
    let config = &pages.app.config;
    let cleared = Some(browser::cleared_session_cookie(config));
    if browser.caller.is_none() {
        // Signed out already (the session ended elsewhere): only the cookie is left to clear.
        return render::redirect_setting("/sign-in", cleared);
    }
    let caller = match browser.check_signed_in(&pages, posted.csrf.as_deref()) {
        Ok(caller) => caller,
        Err(refused) => return refused.into_response(),
    };
    match sessions::logout(&pages.app, &caller, LogoutScope::Local).await {
        Ok(()) => render::redirect_setting("/sign-in", cleared),
        Err(e) => render::error_page(e),
    }
}

const REGISTER: &[&str] = &["email", "name", "password", "password2"];

/// The registration form; with an invitation, its address is shown read-only and its token
/// goes in a hidden field.
fn register_view(pages: &Pages, browser: &Browser, form: Form, invited: bool) -> Response {
    let token = browser.anonymous_token(pages);
    View::new("register.html", token.csrf)
        .cookie(token.set_cookie)
        .form(form)
        .data(context! { password_hint => password_hint(pages), invited => invited })
        .into_response()
}

/// The page of a registration the mode refuses (REGISTRATION=closed, or invite without an
/// invitation), or of an invitation that cannot be used: words, and no form.
fn registration_refused(error: &Error) -> Response {
    let (status, _) = crate::http::problem::status_and_code(error);
    let title = match error {
        Error::RegistrationClosed => "Registration is closed",
        Error::InvitationRequired => "Registration is by invitation only",
        _ => "This invitation cannot be used",
    };
    render::message(
        status,
        Message {
            title,
            text: vec![render::words(error)],
            link: Some(("/sign-in", "Sign in")),
        },
    )
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RegisterQuery {
    invitation: Option<String>,
}

/// GET /register[?invitation=…] (the invitation mail's link): the form, with the invited
/// address filled in and read-only; or why there is none.
pub(super) async fn register_page(
    State(pages): State<Pages>,
    browser: Browser,
    RawQuery(raw): RawQuery,
) -> Response {
    let state = &pages.app;
    let q: RegisterQuery = query(raw);
    let token = filled(q.invitation);
    if let Err(e) = invitations::gate(state, token.as_deref()) {
        return registration_refused(&e);
    }
    let mut form = Form::new("register", REGISTER);
    let Some(token) = token else {
        return register_view(&pages, &browser, form, false);
    };
    match invitations::pending(state, &token).await {
        Ok(invitation) => {
            form.keep("invitation", Some(&token));
            form.keep("email", Some(&invitation.email));
            form.keep("name", invitation.name.as_deref());
            register_view(&pages, &browser, form, true)
        }
        Err(e @ Error::InvitationInvalid(_)) => registration_refused(&e),
        Err(e) => render::error_page(e),
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct RegisterForm {
    csrf: Option<String>,
    email: Option<String>,
    name: Option<String>,
    password: Option<String>,
    password2: Option<String>,
    /// The invitation's token (the hidden field of a form opened from an invitation's link).
    invitation: Option<String>,
}

/// POST /register, as a form (JSON goes to the API: see `RegisterFormFirst`).
pub(super) async fn register(
    State(pages): State<Pages>,
    browser: Browser,
    limits: ClientLimits,
    PageForm(posted): PageForm<RegisterForm>,
) -> Response {
    if let Err(refused) = browser.check_anonymous(&pages, posted.csrf.as_deref()) {
        return refused.into_response();
    }
    let state = &pages.app;
    let invitation = filled(posted.invitation);
    if let Err(e) = invitations::gate(state, invitation.as_deref()) {
        return registration_refused(&e);
    }
    let mut form = Form::new("register", REGISTER);
    form.keep("email", posted.email.as_deref());
    form.keep("name", posted.name.as_deref());
    form.keep("invitation", invitation.as_deref());
    let mismatch = posted.password.as_ref().is_some_and(|p| !p.is_empty())
        && posted.password2 != posted.password;
    let result: Result<_> = async {
        limits.check::<RegisterLimit>(state).await?;
        let mut errors = FieldErrors::default();
        let email = required(&mut errors, "email", posted.email)
            .and_then(|e| errors.check(Email::parse("email", &e)));
        let name = required(&mut errors, "name", posted.name)
            .and_then(|n| errors.check(Name::parse("name", &n)));
        let password = required_password(&mut errors, "password", posted.password);
        let password = password.and_then(|p| {
            let context: Vec<&str> = [
                email.as_ref().map(Email::as_str),
                name.as_ref().map(Name::as_str),
            ]
            .into_iter()
            .flatten()
            .collect();
            errors.check(policy::new_password(&state.config, "password", p, &context))
        });
        errors.finish()?;
        let (Some(email), Some(name), Some(password)) = (email, name, password) else {
            unreachable!("finish() returns the errors of any missing field")
        };
        if mismatch {
            return Ok(None);
        }
        let account = accounts::register(
            state,
            Registration {
                email,
                name,
                password,
                invitation: invitation.clone(),
            },
        )
        .await?;
        Ok(Some(account))
    }
    .await;
    if mismatch {
        form.error("password2", "The two passwords are not the same.");
    }
    let invited = invitation.is_some();
    match result {
        Ok(Some(account)) if invited => render::message(
            StatusCode::OK,
            Message {
                title: "Your account is ready",
                text: vec![format!(
                    "Your account for {} is ready, its address confirmed by the invitation: \
                     sign in.",
                    account.email
                )],
                link: Some(("/sign-in", "Sign in")),
            },
        ),
        Ok(Some(account)) => render::message(
            StatusCode::OK,
            Message {
                title: "Check your mail to confirm your address",
                text: vec![
                    format!(
                        "Your account is ready. We have sent a link to {}: open it to confirm \
                         the address.",
                        account.email
                    ),
                    "No mail? Look in the spam folder, or wait a minute.".into(),
                ],
                link: Some(("/sign-in", "Sign in")),
            },
        ),
        Ok(None) => register_view(&pages, &browser, form, invited),
        Err(e @ Error::InvitationInvalid(_)) => registration_refused(&e),
        Err(e) => {
            form.fail(e);
            register_view(&pages, &browser, form, invited)
        }
    }
}

fn forgot_view(pages: &Pages, browser: &Browser, form: Form) -> Response {
    let token = browser.anonymous_token(pages);
    View::new("forgot_password.html", token.csrf)
        .cookie(token.set_cookie)
        .form(form)
        .into_response()
}

/// GET /forgot-password
pub(super) async fn forgot_password_page(State(pages): State<Pages>, browser: Browser) -> Response {
    forgot_view(&pages, &browser, Form::new("forgot-password", &["email"]))
}

#[derive(Debug, Deserialize)]
pub(super) struct ForgotForm {
    csrf: Option<String>,
    email: Option<String>,
}

/// POST /forgot-password: the same answer whether or not an account has the address.
pub(super) async fn forgot_password(
    State(pages): State<Pages>,
    browser: Browser,
    limits: ClientLimits,
    PageForm(posted): PageForm<ForgotForm>,
) -> Response {
    if let Err(refused) = browser.check_anonymous(&pages, posted.csrf.as_deref()) {
        return refused.into_response();
    }
    let state = &pages.app;
    let mut form = Form::new("forgot-password", &["email"]);
    form.keep("email", posted.email.as_deref());
    let result: Result<Email> = async {
        limits.check::<MailLimit>(state).await?;
        let mut errors = FieldErrors::default();
        let email = required(&mut errors, "email", posted.email)
            .and_then(|e| errors.check(Email::parse("email", &e)));
        errors.finish()?;
        Ok(email.expect("finish() returns the error of a missing email"))
    }
    .await;
    match result {
        Ok(email) => {
            recovery::request_password_reset(state, email);
            render::message(
                StatusCode::OK,
                Message {
                    title: "Check your email",
                    text: vec![
                        "If an account has this address, a link is on its way. It lets you \
                         choose a new password, once, for a short while."
                            .into(),
                    ],
                    link: Some(("/sign-in", "Back to sign in")),
                },
            )
        }
        Err(e) => {
            form.fail(e);
            forgot_view(&pages, &browser, form)
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct TokenQuery {
    token: Option<String>,
}

/// The page for a link that lost its token on the way.
fn incomplete_link(ask_again: Option<(&'static str, &'static str)>) -> Response {
    render::message(
        StatusCode::BAD_REQUEST,
        Message {
            title: "This link is incomplete",
            text: vec![
                "The link is missing its code. Copy the whole link from the mail into the \
                 address bar, or ask for a new one."
                    .into(),
            ],
            link: ask_again,
        },
    )
}

const RESET: &[&str] = &["new_password", "new_password2"];

fn reset_view(pages: &Pages, browser: &Browser, form: Form) -> Response {
    let token = browser.anonymous_token(pages);
    View::new("reset_password.html", token.csrf)
        .cookie(token.set_cookie)
        .form(form)
        .data(context! { password_hint => password_hint(pages) })
        .into_response()
}

/// GET /reset-password?token=… (the link in the reset mail)
pub(super) async fn reset_password_page(
    State(pages): State<Pages>,
    browser: Browser,
    RawQuery(raw): RawQuery,
) -> Response {
    let q: TokenQuery = query(raw);
    let Some(token) = filled(q.token) else {
        return incomplete_link(Some(("/forgot-password", "Ask for a new link")));
    };
    let mut form = Form::new("reset-password", RESET);
    form.keep("token", Some(&token));
    reset_view(&pages, &browser, form)
}

#[derive(Debug, Deserialize)]
pub(super) struct ResetForm {
    csrf: Option<String>,
    token: Option<String>,
    new_password: Option<String>,
    new_password2: Option<String>,
}

/// POST /reset-password
pub(super) async fn reset_password(
    State(pages): State<Pages>,
    browser: Browser,
    limits: ClientLimits,
    PageForm(posted): PageForm<ResetForm>,
) -> Response {
    if let Err(refused) = browser.check_anonymous(&pages, posted.csrf.as_deref()) {
        return refused.into_response();
    }
    let state = &pages.app;
    let Some(token) = filled(posted.token) else {
        return incomplete_link(Some(("/forgot-password", "Ask for a new link")));
    };
    let mut form = Form::new("reset-password", RESET);
    form.keep("token", Some(&token));
    if let Err(e) = limits.check::<RefreshLimit>(state).await {
        form.fail(e);
        return reset_view(&pages, &browser, form);
    }
    let Some(password) = posted.new_password.filter(|p| !p.is_empty()) else {
        form.fail(Error::validation("new_password", "is required"));
        return reset_view(&pages, &browser, form);
    };
    if posted.new_password2.as_ref() != Some(&password) {
        form.error("new_password2", "The two passwords are not the same.");
    }
    // The length here, whatever the token; the rest of the policy, which knows the account,
    // once the token is known good (as the API does).
    let min = state.config.accounts.password_min_length;
    if let Err(e) = Password::new_password("new_password", password.clone(), min) {
        form.fail(Error::Validation(vec![e]));
    }
    if form.failed() {
        return reset_view(&pages, &browser, form);
    }
    match recovery::confirm_password_reset(state, &token, password).await {
        Ok(()) => render::message(
            StatusCode::OK,
            Message {
                title: "Your password has been changed",
                text: vec![
                    "You have been signed out everywhere: sign in with the new password.".into(),
                ],
                link: Some(("/sign-in", "Sign in")),
            },
        ),
        Err(e) => {
            form.fail(e);
            reset_view(&pages, &browser, form)
        }
    }
}

/// GET /verify-email?token=… (the link in the verification mail): a button, since a GET that
/// changed something could be set off by a mail scanner following the link.
pub(super) async fn verify_email_page(
    State(pages): State<Pages>,
    browser: Browser,
    RawQuery(raw): RawQuery,
) -> Response {
    let q: TokenQuery = query(raw);
    let Some(token) = filled(q.token) else {
        return incomplete_link(None);
    };
    let mut form = Form::new("verify-email", &[]);
    form.keep("token", Some(&token));
    let csrf = browser.anonymous_token(&pages);
    View::new("verify_email.html", csrf.csrf)
        .cookie(csrf.set_cookie)
        .form(form)
        .into_response()
}

#[derive(Debug, Deserialize)]
pub(super) struct VerifyForm {
    csrf: Option<String>,
    token: Option<String>,
}

/// POST /verify-email
pub(super) async fn verify_email(
    State(pages): State<Pages>,
    browser: Browser,
    limits: ClientLimits,
    PageForm(posted): PageForm<VerifyForm>,
) -> Response {
    if let Err(refused) = browser.check_anonymous(&pages, posted.csrf.as_deref()) {
        return refused.into_response();
    }
    let state = &pages.app;
    let Some(token) = filled(posted.token) else {
        return incomplete_link(None);
    };
    let result = match limits.check::<RefreshLimit>(state).await {
        Ok(()) => recovery::confirm_verification(state, &token).await,
        Err(e) => Err(e),
    };
    let onward = match browser.caller {
        Some(_) => ("/account", "Go to your account"),
        None => ("/sign-in", "Sign in"),
    };
    match result {
        Ok(_) => render::message(
            StatusCode::OK,
            Message {
                title: "Your email address is confirmed",
                text: vec!["Thank you: the address is confirmed.".into()],
                link: Some(onward),
            },
        ),
        Err(Error::InvalidOneTimeToken(_)) => render::message(
            StatusCode::BAD_REQUEST,
            Message {
                title: "This link has expired",
                text: vec![
                    "This link has expired or has already been used, or the address has \
                     changed since it was sent."
                        .into(),
                    "For a new link, use “Forgot your password?” on the sign-in page: the \
                     link it mails confirms the address too."
                        .into(),
                ],
                link: Some(onward),
            },
        ),
        Err(e) => render::error_page(e),
    }
}
