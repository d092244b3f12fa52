//! Passkeys on the pages: signing in with one, and the account page's passkeys (add, rename,
//! remove, the step-up, removing the password). They call `service::passkeys` as the API does;
//! `passkeys.js` does the browser's side (the WebAuthn ceremonies) and posts what the
//! authenticator answered, `PublicKeyCredential.toJSON()` as a JSON string, in a form field.
//!
//! The routes the script calls with `fetch` (the options, the step-up) take the form's fields
//! (urlencoded, with its token) like every page's form and answer JSON: `{"publicKey": {…}}`,
//! or a problem document whose `detail` is the page's words and whose `fields` names the inputs
//! (see `Form::problem_json`). The others are ordinary form posts answered with pages.
//! With PASSKEYS=false, none of these routes exists and the pages show no passkey control.

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::Value;

use super::Pages;
use super::account::{self, caller_of};
use super::browser::{Browser, PageForm, Refused};
use super::public::{self, SIGN_IN, allowed_next, filled, second_factor};
use super::render::{self, Form};
use crate::domain::Password;
use crate::error::Error;
use crate::http::extract::{Client, ClientLimits};
use crate::http::problem;
use crate::metrics::LoginMethod;
use crate::service::passkeys::{self, Options};
use crate::service::sessions::Caller;
use crate::state::AppState;

/// Whether the pages offer passkeys (PASSKEYS).
pub(super) fn enabled(state: &AppState) -> bool {
    state.config.passkeys.enabled
}

/// What a page says of a credential field it cannot read.
const UNREADABLE: &str = "The passkey's answer could not be read. Try again.";

/// The credential a form carries: the JSON object `PublicKeyCredential.toJSON()` gave, as a
/// string. Anything else is `UNREADABLE` (the service checks the rest).
pub(super) fn credential(json: &str) -> Result<Value, &'static str> {
    match serde_json::from_str::<Value>(json) {
        Ok(value @ Value::Object(_)) => Ok(value),
        _ => Err(UNREADABLE),
    }
}

/// A ceremony's options, as the script reads them.
fn options(Options(options): Options) -> Response {
    (StatusCode::OK, Json(options)).into_response()
}

/// A post the script made that the browser checks refuse, as a problem document.
fn refused(refused: Refused) -> Response {
    let (status, code, detail) = match refused {
        Refused::Forged => (
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
            "This form has expired or came from another site: reload the page and try again.",
        ),
        Refused::SignedOut => (
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "You have been signed out. Sign in again.",
        ),
        Refused::MustEnrol => (
            StatusCode::FORBIDDEN,
            "MFA_ENROLMENT_REQUIRED",
            "Your account must have two-step verification before anything else can be changed.",
        ),
    };
    problem::problem(status, code, detail).into_response()
}

/// An error of a post the script made, said on a form of `inputs`.
fn failed_json(inputs: &'static [&'static str], error: Error) -> Response {
    let mut form = Form::new("script", inputs);
    form.fail(error);
    form.problem_json()
}

macro_rules! page_caller_or_return {
    ($pages:expr, $browser:expr, $csrf:expr, $enrolment:expr) => {
        match caller_of(&$pages, $browser, $csrf.as_deref(), $enrolment).await {
            Ok(caller) => caller,
            Err(response) => return response,
        }
    };
}

#[derive(Debug, Deserialize)]
pub(super) struct SignInForm {
    csrf: Option<String>,
    credential: Option<String>,
    next: Option<String>,
}

/// POST /sign-in/passkey: the sign-in page's passkey (conditional UI or the button). Signs in
/// as the password does; a passkey that did not verify the user, of an account with TOTP,
/// goes on to the second step.
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
    form.keep("next", next.as_deref());
    if let Err(e) = limits.check_login(state, LoginMethod::Passkey).await {
        form.fail(e);
        return public::sign_in_view(&pages, &browser, form, None);
    }
    let credential = match filled(posted.credential).as_deref().map(credential) {
        Some(Ok(credential)) => credential,
        _ => {
            form.problem(StatusCode::UNPROCESSABLE_ENTITY, UNREADABLE);
            return public::sign_in_view(&pages, &browser, form, None);
        }
    };
    match passkeys::login(state, &credential, client).await {
        Ok(pair) => public::signed_in(&pages, &browser, pair, next).await,
        Err(Error::MfaRequired {
            mfa_token, methods, ..
        }) => public::second_step(&pages, &browser, &mfa_token, &methods, next.as_deref()),
        Err(e) => {
            form.fail(e);
            public::sign_in_view(&pages, &browser, form, None)
        }
    }
}

/// The inputs of the form "Add a passkey".
const ADD: &[&str] = &["name", "password", "code"];

#[derive(Debug, Deserialize)]
pub(super) struct AddOptionsForm {
    csrf: Option<String>,
    password: Option<String>,
    code: Option<String>,
}

/// POST /account/passkeys/options (the script, from the form "Add a passkey"): the password,
/// and a code for an account with a second factor, as POST /me/passkeys/options takes them;
/// the creation options as JSON.
pub(super) async fn add_options(
    State(pages): State<Pages>,
    browser: Browser,
    PageForm(posted): PageForm<AddOptionsForm>,
) -> Response {
    // Every post the script makes is part of adding or proving a passkey, which a session that
    // MFA_REQUIRED_FOR keeps to enrolment may do.
    let caller = match browser.check_signed_in(&pages, posted.csrf.as_deref()) {
        Ok(caller) => caller,
        Err(refusal) => return refused(refusal),
    };
    let mut form = Form::new("passkey-add", ADD);
    let Some(factor) = second_factor(&mut form, posted.code, None) else {
        return form.problem_json();
    };
    let password = filled(posted.password).map(Password::given);
    match passkeys::registration_options(&pages.app, &caller, password.as_ref(), factor.as_ref())
        .await
    {
        Ok(o) => options(o),
        Err(e) => {
            form.fail(e);
            form.problem_json()
        }
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct AddForm {
    csrf: Option<String>,
    credential: Option<String>,
    name: Option<String>,
}

/// POST /account/passkeys: the new passkey (the authenticator's answer to the options), and
/// its name; then the account page says "Passkey added".
pub(super) async fn add(
    State(pages): State<Pages>,
    browser: Browser,
    PageForm(posted): PageForm<AddForm>,
) -> Response {
    let caller = page_caller_or_return!(pages, browser, posted.csrf, true);
    let mut form = Form::new("passkey-add", ADD);
    form.keep("name", posted.name.as_deref());
    let credential = match filled(posted.credential).as_deref().map(credential) {
        Some(Ok(credential)) => credential,
        _ => {
            form.problem(StatusCode::UNPROCESSABLE_ENTITY, UNREADABLE);
            return account::account_view(&pages, &caller, None, Some(form)).await;
        }
    };
    let name = filled(posted.name).map(|n| n.trim().to_string());
    match passkeys::register(&pages.app, &caller, &credential, name).await {
        Ok(_) => render::redirect("/account?done=passkey-added"),
        Err(e) => account::failed(&pages, &caller, form, e).await,
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct CsrfOnly {
    csrf: Option<String>,
}

/// POST /account/passkeys/step-up/options (the script, before a sensitive form): the request
/// options of a step-up, as JSON. Open to a session that MFA_REQUIRED_FOR keeps to enrolment,
/// as POST /me/passkeys/step-up/options is: proving a passkey it has is its way out.
pub(super) async fn step_up_options(
    State(pages): State<Pages>,
    browser: Browser,
    PageForm(posted): PageForm<CsrfOnly>,
) -> Response {
    // Every post the script makes is part of adding or proving a passkey, which a session that
    // MFA_REQUIRED_FOR keeps to enrolment may do.
    let caller = match browser.check_signed_in(&pages, posted.csrf.as_deref()) {
        Ok(caller) => caller,
        Err(refusal) => return refused(refusal),
    };
    match passkeys::step_up_options(&pages.app, &caller).await {
        Ok(o) => options(o),
        Err(e) => failed_json(&[], e),
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct CredentialForm {
    csrf: Option<String>,
    credential: Option<String>,
}

/// POST /account/passkeys/step-up (the script): the passkey's proof; 204, and the session has
/// passed its second factor (and proved a passkey) just now.
pub(super) async fn step_up(
    State(pages): State<Pages>,
    browser: Browser,
    PageForm(posted): PageForm<CredentialForm>,
) -> Response {
    // Every post the script makes is part of adding or proving a passkey, which a session that
    // MFA_REQUIRED_FOR keeps to enrolment may do.
    let caller = match browser.check_signed_in(&pages, posted.csrf.as_deref()) {
        Ok(caller) => caller,
        Err(refusal) => return refused(refusal),
    };
    let credential = match filled(posted.credential).as_deref().map(credential) {
        Some(Ok(credential)) => credential,
        _ => {
            let mut form = Form::new("script", &[]);
            form.problem(StatusCode::UNPROCESSABLE_ENTITY, UNREADABLE);
            return form.problem_json();
        }
    };
    match passkeys::step_up(&pages.app, &caller, &credential).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => failed_json(&[], e),
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct RenameForm {
    csrf: Option<String>,
    name: Option<String>,
}

/// The passkey id of a path: a path that cannot be read names no passkey.
fn id_of(id: Result<Path<String>, PathRejection>) -> String {
    id.map(|Path(id)| id).unwrap_or_default()
}

/// POST /account/passkeys/{id}/rename
pub(super) async fn rename(
    State(pages): State<Pages>,
    browser: Browser,
    id: Result<Path<String>, PathRejection>,
    PageForm(posted): PageForm<RenameForm>,
) -> Response {
    let caller = page_caller_or_return!(pages, browser, posted.csrf, false);
    let id = id_of(id);
    let mut form = Form::new(format!("account-passkeys-{id}-rename"), &["name"]);
    form.keep("name", posted.name.as_deref());
    let Some(name) = filled(posted.name) else {
        form.error("name", "Name is required.");
        return account::account_view(&pages, &caller, None, Some(form)).await;
    };
    match passkeys::rename(&pages.app, &caller, &id, name.trim().to_string()).await {
        Ok(_) => render::redirect("/account?done=passkey-renamed"),
        Err(Error::NotFound(_)) => gone(&pages, &caller, form).await,
        Err(e) => account::failed(&pages, &caller, form, e).await,
    }
}

/// The account page, saying that the passkey a form named is not (or no longer) there.
async fn gone(pages: &Pages, caller: &Caller, mut form: Form) -> Response {
    form.problem(
        StatusCode::NOT_FOUND,
        "That passkey has already been removed.",
    );
    account::account_view(pages, caller, None, Some(form)).await
}

#[derive(Debug, Deserialize)]
pub(super) struct DeleteForm {
    csrf: Option<String>,
    password: Option<String>,
    code: Option<String>,
}

/// POST /account/passkeys/{id}/delete: the password (for an account that has one) and a code
/// or a recent step-up, as DELETE /me/passkeys/{id} takes them.
pub(super) async fn delete(
    State(pages): State<Pages>,
    browser: Browser,
    id: Result<Path<String>, PathRejection>,
    PageForm(posted): PageForm<DeleteForm>,
) -> Response {
    let caller = page_caller_or_return!(pages, browser, posted.csrf, false);
    let id = id_of(id);
    let mut form = Form::new(
        format!("account-passkeys-{id}-delete"),
        &["password", "code"],
    );
    let Some(factor) = second_factor(&mut form, posted.code, None) else {
        return account::account_view(&pages, &caller, None, Some(form)).await;
    };
    let password = filled(posted.password).map(Password::given);
    match passkeys::delete(&pages.app, &caller, &id, password.as_ref(), factor.as_ref()).await {
        Ok(()) => render::redirect("/account?done=passkey-removed"),
        Err(Error::NotFound(_)) => gone(&pages, &caller, form).await,
        Err(e) => account::failed(&pages, &caller, form, e).await,
    }
}

/// POST /account/password/remove: the account signs in with passkeys only (the script proves a
/// passkey first, as DELETE /me/password needs a recent proof).
pub(super) async fn remove_password(
    State(pages): State<Pages>,
    browser: Browser,
    PageForm(posted): PageForm<CsrfOnly>,
) -> Response {
    let caller = page_caller_or_return!(pages, browser, posted.csrf, false);
    match passkeys::remove_password(&pages.app, &caller).await {
        Ok(()) => render::redirect("/account?done=password-removed"),
        Err(e) => {
            let form = Form::new("account-password-remove", &[]);
            account::failed(&pages, &caller, form, e).await
        }
    }
}
