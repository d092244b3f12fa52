//! The account page (GET /account) and its forms: profile, email, password, the second factor
//! (enrolment, recovery codes, turning it off), the sessions, deleting the account (the
//! passkeys' forms are in `passkeys`). Every form
//! is bound to the browser's session (see `browser`); each one that fails shows the page again
//! with its errors. A session that MFA_REQUIRED_FOR keeps to enrolment sees, and may post, only
//! the second factor's part.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use minijinja::context;
use minijinja::value::{Serde, Value};
use serde::{Deserialize, Serialize};

use super::Pages;
use super::browser::{self, Browser, PageForm, Refused};
use super::public::{
    done, filled, password_hint, query, required, required_password, second_factor,
};
use super::render::{self, Form, View};
use crate::domain::{Email, FieldErrors, Name, Password};
use crate::error::{Error, Result};
use crate::service::accounts::{self, ProfileUpdate};
use crate::service::mfa::{self, Enrolment, SecondFactor};
use crate::service::passkeys::{self, PasskeyView};
use crate::service::policy;
use crate::service::sessions::{self, Caller, LogoutScope};

/// A time as the page shows it.
pub(super) fn human(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%-d %b %Y, %H:%M UTC").to_string())
        .unwrap_or_default()
}

/// One passkey of the list.
#[derive(Serialize)]
struct PasskeyRow {
    id: String,
    name: String,
    created_at: String,
    created: String,
    last_used_at: Option<String>,
    last_used: Option<String>,
    /// Where it lives, in words.
    kind: &'static str,
}

impl From<PasskeyView> for PasskeyRow {
    fn from(k: PasskeyView) -> Self {
        let kind = match (k.backed_up, k.backup_eligible) {
            (true, _) => "Synced: your other devices may have it too.",
            (false, true) => "Can be synced, not synced yet.",
            (false, false) => "Kept on one device or security key only.",
        };
        Self {
            created_at: crate::clock::rfc3339(k.created_at),
            created: human(k.created_at),
            last_used_at: k.last_used_at.map(crate::clock::rfc3339),
            last_used: k.last_used_at.map(human),
            name: k.name,
            id: k.id,
            kind,
        }
    }
}

/// What a sensitive form needs besides its fields, for `passkeys.js`: `data-step-up` is
/// "always" when the form must come with a passkey proof, "unless-code" when a passkey proof
/// may stand for the code it asks for, empty when a proof is fresh enough (or impossible).
struct Proofs {
    /// The forms that take the password (and the code of an account with a second factor).
    sensitive: &'static str,
    /// The forms that take only the password (the enrolment, turning TOTP off).
    password: &'static str,
    /// Removing the password: a recent passkey proof whatever the rest.
    passkey: &'static str,
}

impl Proofs {
    fn of(pages: &Pages, caller: &Caller, has_passkeys: bool) -> Self {
        let mfa_fresh = mfa::recently_passed(&pages.app, caller, has_passkeys);
        let passkey_fresh = passkeys::recently_proved(&pages.app, caller);
        let has_password = caller.account.has_password;
        let always = |needed: bool| if needed { "always" } else { "" };
        Self {
            sensitive: match (has_passkeys, has_password) {
                (false, _) => "",
                (true, false) => always(!passkey_fresh),
                (true, true) if mfa_fresh => "",
                (true, true) => "unless-code",
            },
            password: always(has_passkeys && !has_password && !passkey_fresh),
            passkey: always(has_passkeys && !passkey_fresh),
        }
    }
}

/// One row of the sessions' table.
#[derive(Serialize)]
struct SessionRow {
    id: String,
    device: String,
    ip: Option<String>,
    current: bool,
    created_at: String,
    created: String,
    last_used_at: String,
    last_used: String,
}

/// The hint under a step-up code's input.
fn code_hint(pages: &Pages) -> String {
    let window = pages.app.config.mfa.step_up.as_secs();
    let within = match window {
        0 => return "A recovery code works too.".into(),
        60 => "minute".to_string(),
        w if w % 60 == 0 => format!("{} minutes", w / 60),
        w => format!("{w} seconds"),
    };
    format!("Not needed if you entered one in the last {within}. A recovery code works too.")
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct DoneQuery {
    done: Option<String>,
}

/// GET /account (signed in; otherwise to the sign-in page, and back).
pub(super) async fn page(
    State(pages): State<Pages>,
    browser: Browser,
    RawQuery(raw): RawQuery,
) -> Response {
    let Some(caller) = browser.caller else {
        return render::redirect("/sign-in?next=/account");
    };
    let q: DoneQuery = query(raw);
    account_view(&pages, &caller, done(q.done.as_deref()), None).await
}

/// The account page, with a form that failed (what was typed, what is wrong), if one did.
pub(super) async fn account_view(
    pages: &Pages,
    caller: &Caller,
    notice: Option<&str>,
    failed: Option<Form>,
) -> Response {
    let state = &pages.app;
    let passkeys_enabled = super::passkeys::enabled(state);
    let loaded: Result<_> = async {
        Ok((
            mfa::status(state, caller).await?,
            sessions::list(state, caller).await?,
            mfa::must_enrol(state, caller).await?,
            match passkeys_enabled {
                true => passkeys::list(state, caller).await?,
                false => Vec::new(),
            },
        ))
    }
    .await;
    let (status, list, confined, keys) = match loaded {
        Ok(loaded) => loaded,
        Err(e) => return render::error_page(e),
    };
    let rows: Vec<SessionRow> = list
        .into_iter()
        .map(|s| SessionRow {
            device: s.user_agent.unwrap_or_else(|| "Unknown device".into()),
            ip: s.ip,
            current: s.current,
            created_at: crate::clock::rfc3339(s.created_at),
            created: human(s.created_at),
            last_used_at: crate::clock::rfc3339(s.last_used_at),
            last_used: human(s.last_used_at),
            id: s.id,
        })
        .collect();
    let account = &caller.account;
    let can_remove_password = account.has_password && keys.iter().any(|k| k.user_verified);
    let proofs = Proofs::of(pages, caller, !keys.is_empty());
    let keys: Vec<PasskeyRow> = keys.into_iter().map(PasskeyRow::from).collect();
    let mut view = View::new("account.html", Browser::session_token_for(pages, caller))
        .signed_in()
        .notice(notice)
        .data(context! {
            account => context! {
                name => account.name.as_str(),
                email => account.email.as_str(),
                is_verified => account.is_verified,
            },
            totp => status.totp_enabled_at.is_some(),
            recovery_codes_left => status.recovery_codes_remaining,
            required => status.required,
            reset_pending_until => status.reset_pending_until.map(human),
            confined => confined,
            others => rows.iter().any(|r| !r.current),
            sessions => Serde(rows),
            password_hint => password_hint(pages),
            code_hint => code_hint(pages),
            passkeys => passkeys_enabled,
            passkeys_enabled,
            passkey_list => Serde(keys),
            has_password => account.has_password,
            can_remove_password,
            proof => proofs.sensitive,
            password_proof => proofs.password,
            passkey_proof => proofs.passkey,
        });
    if let Some(form) = failed {
        view = view.form(form);
    }
    view.into_response()
}

/// The account page again with `error` said on `form`; a session that ended meanwhile goes to
/// the sign-in page instead.
pub(super) async fn failed(
    pages: &Pages,
    caller: &Caller,
    mut form: Form,
    error: Error,
) -> Response {
    if matches!(error, Error::Unauthorized(_)) {
        return render::redirect("/sign-in?next=/account");
    }
    form.fail(error);
    account_view(pages, caller, None, Some(form)).await
}

/// The caller of a signed-in form's post (see `Browser::check_signed_in`). Unless the form is
/// part of the enrolment, a session that MFA_REQUIRED_FOR keeps to enrolment is refused.
pub(super) async fn caller_of(
    pages: &Pages,
    browser: Browser,
    csrf: Option<&str>,
    enrolment: bool,
) -> std::result::Result<Caller, Response> {
    let caller = browser
        .check_signed_in(pages, csrf)
        .map_err(IntoResponse::into_response)?;
    if !enrolment {
        match mfa::must_enrol(&pages.app, &caller).await {
            Ok(false) => {}
            Ok(true) => return Err(Refused::MustEnrol.into_response()),
            Err(e) => return Err(render::error_page(e)),
        }
    }
    Ok(caller)
}

macro_rules! caller_or_return {
    ($pages:expr, $browser:expr, $csrf:expr, $enrolment:expr) => {
        match caller_of(&$pages, $browser, $csrf.as_deref(), $enrolment).await {
            Ok(caller) => caller,
            Err(response) => return response,
        }
    };
}

#[derive(Debug, Deserialize)]
pub(super) struct ProfileForm {
    csrf: Option<String>,
    name: Option<String>,
}

/// POST /account/profile: the name.
pub(super) async fn profile(
    State(pages): State<Pages>,
    browser: Browser,
    PageForm(posted): PageForm<ProfileForm>,
) -> Response {
    let caller = caller_or_return!(pages, browser, posted.csrf, false);
    let mut form = Form::new("account-profile", &["name"]);
    form.keep("name", posted.name.as_deref());
    let result = async {
        let mut errors = FieldErrors::default();
        let name = required(&mut errors, "name", posted.name)
            .and_then(|n| errors.check(Name::parse("name", &n)));
        errors.finish()?;
        let update = ProfileUpdate {
            name,
            ..ProfileUpdate::default()
        };
        accounts::update_profile(&pages.app, &caller, update).await
    }
    .await;
    match result {
        Ok(_) => render::redirect("/account?done=profile"),
        Err(e) => failed(&pages, &caller, form, e).await,
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct EmailForm {
    csrf: Option<String>,
    new_email: Option<String>,
    current_password: Option<String>,
    code: Option<String>,
}

/// POST /account/email: a new address (the password, and step-up with a second factor).
pub(super) async fn email(
    State(pages): State<Pages>,
    browser: Browser,
    PageForm(posted): PageForm<EmailForm>,
) -> Response {
    let caller = caller_or_return!(pages, browser, posted.csrf, false);
    let mut form = Form::new("account-email", &["new_email", "current_password", "code"])
        .renaming(&[("email", "new_email")]);
    form.keep("new_email", posted.new_email.as_deref());
    let Some(factor) = second_factor(&mut form, posted.code, None) else {
        return account_view(&pages, &caller, None, Some(form)).await;
    };
    let result = async {
        let mut errors = FieldErrors::default();
        let email = required(&mut errors, "email", posted.new_email)
            .and_then(|e| errors.check(Email::parse("email", &e)));
        errors.finish()?;
        let update = ProfileUpdate {
            name: None,
            email,
            current_password: filled(posted.current_password).map(Password::given),
            factor,
        };
        accounts::update_profile(&pages.app, &caller, update).await
    }
    .await;
    match result {
        Ok(_) => render::redirect("/account?done=email"),
        Err(e) => failed(&pages, &caller, form, e).await,
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct PasswordForm {
    csrf: Option<String>,
    current_password: Option<String>,
    new_password: Option<String>,
    new_password2: Option<String>,
    code: Option<String>,
}

/// POST /account/password: a new password; every other session ends.
pub(super) async fn password(
    State(pages): State<Pages>,
    browser: Browser,
    PageForm(posted): PageForm<PasswordForm>,
) -> Response {
    let caller = caller_or_return!(pages, browser, posted.csrf, false);
    let mut form = Form::new(
        "account-password",
        &["current_password", "new_password", "new_password2", "code"],
    );
    let Some(factor) = second_factor(&mut form, posted.code, None) else {
        return account_view(&pages, &caller, None, Some(form)).await;
    };
    let new = posted.new_password.filter(|p| !p.is_empty());
    let mismatch = new.is_some() && posted.new_password2 != new;
    let result = async {
        let mut errors = FieldErrors::default();
        // An account without a password sets one: a passkey proof stands for the current one.
        let current = match caller.account.has_password {
            true => required_password(&mut errors, "current_password", posted.current_password),
            false => Some(String::new()),
        };
        let context = [caller.account.email.as_str(), caller.account.name.as_str()];
        let new = required_password(&mut errors, "new_password", new).and_then(|p| {
            errors.check(policy::new_password(
                &pages.app.config,
                "new_password",
                p,
                &context,
            ))
        });
        errors.finish()?;
        let (Some(current), Some(new)) = (current, new) else {
            unreachable!("finish() returns the errors of any missing field")
        };
        if mismatch {
            return Ok(false);
        }
        accounts::change_password(
            &pages.app,
            &caller,
            &Password::given(current),
            &new,
            factor.as_ref(),
        )
        .await
        .map(|()| true)
    }
    .await;
    if mismatch {
        form.error("new_password2", "The two passwords are not the same.");
    }
    match result {
        Ok(true) => render::redirect("/account?done=password"),
        Ok(false) => account_view(&pages, &caller, None, Some(form)).await,
        Err(e) => failed(&pages, &caller, form, e).await,
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct PasswordAndCode {
    csrf: Option<String>,
    password: Option<String>,
    code: Option<String>,
    recovery_code: Option<String>,
}

/// The password of a form, or its "is required". An account without a password has no such
/// field: it proves a passkey instead, which the service checks in place of the password
/// (`accounts::confirm_password`), given as empty.
fn password_of(form: &mut Form, caller: &Caller, password: Option<String>) -> Option<Password> {
    if !caller.account.has_password {
        return Some(Password::given(String::new()));
    }
    match password.filter(|p| !p.is_empty()) {
        Some(p) => Some(Password::given(p)),
        None => {
            form.fail(Error::validation("password", "is required"));
            None
        }
    }
}

/// POST /account/delete: the account, its sessions and tokens; the cookie goes.
pub(super) async fn delete(
    State(pages): State<Pages>,
    browser: Browser,
    PageForm(posted): PageForm<PasswordAndCode>,
) -> Response {
    let caller = caller_or_return!(pages, browser, posted.csrf, false);
    let mut form = Form::new("account-delete", &["password", "code"]);
    let factor = second_factor(&mut form, posted.code, None);
    let password = password_of(&mut form, &caller, posted.password);
    let (Some(factor), Some(password)) = (factor, password) else {
        return account_view(&pages, &caller, None, Some(form)).await;
    };
    match accounts::delete_account(&pages.app, &caller, &password, factor.as_ref()).await {
        Ok(()) => render::redirect_setting(
            "/sign-in?done=deleted",
            Some(browser::cleared_session_cookie(&pages.app.config)),
        ),
        Err(e) => failed(&pages, &caller, form, e).await,
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct CsrfOnly {
    csrf: Option<String>,
}

/// POST /account/sessions/{id}/revoke: one of the caller's other sessions ends.
pub(super) async fn revoke_one(
    State(pages): State<Pages>,
    browser: Browser,
    id: std::result::Result<Path<String>, PathRejection>,
    PageForm(posted): PageForm<CsrfOnly>,
) -> Response {
    let caller = caller_or_return!(pages, browser, posted.csrf, false);
    let id = id.map(|Path(id)| id).unwrap_or_default();
    let form = Form::new(format!("account-sessions-{id}-revoke"), &[]);
    match sessions::revoke_one(&pages.app, &caller, &id).await {
        Ok(()) => render::redirect("/account?done=session-ended"),
        Err(Error::NotFound(_)) => {
            let mut form = form;
            form.problem(StatusCode::NOT_FOUND, "That session has already ended.");
            account_view(&pages, &caller, None, Some(form)).await
        }
        Err(e) => failed(&pages, &caller, form, e).await,
    }
}

/// POST /account/sessions/revoke-others: every session but this one ends.
pub(super) async fn revoke_others(
    State(pages): State<Pages>,
    browser: Browser,
    PageForm(posted): PageForm<CsrfOnly>,
) -> Response {
    let caller = caller_or_return!(pages, browser, posted.csrf, false);
    match sessions::logout(&pages.app, &caller, LogoutScope::Others).await {
        Ok(()) => render::redirect("/account?done=others-ended"),
        Err(e) => {
            let form = Form::new("account-sessions-revoke-others", &[]);
            failed(&pages, &caller, form, e).await
        }
    }
}

/// The enrolment page: the QR code and the secret (when known), and the confirmation's form.
fn enrol_view(
    pages: &Pages,
    caller: &Caller,
    enrolment: Option<Enrolment>,
    form: Form,
) -> Response {
    let (secret, grouped, qr_svg) = match enrolment {
        Some(e) => {
            let grouped = e
                .secret
                .as_bytes()
                .chunks(4)
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect::<Vec<_>>()
                .join(" ");
            // The qrcode crate's SVG, not user input: inserted as it is, without its XML
            // declaration (an element inside HTML).
            let svg = match e.qr_svg.find("<svg") {
                Some(start) => e.qr_svg[start..].to_string(),
                None => e.qr_svg,
            };
            (e.secret, grouped, Value::from_safe_string(svg))
        }
        None => (String::new(), String::new(), Value::UNDEFINED),
    };
    View::new("enrol.html", Browser::session_token_for(pages, caller))
        .signed_in()
        .form(form)
        .data(context! { secret, secret_grouped => grouped, qr_svg })
        .into_response()
}

#[derive(Debug, Deserialize)]
pub(super) struct PasswordOnly {
    csrf: Option<String>,
    password: Option<String>,
}

/// POST /account/mfa/totp: starts the enrolment (the password), shows the secret.
pub(super) async fn begin_totp(
    State(pages): State<Pages>,
    browser: Browser,
    PageForm(posted): PageForm<PasswordOnly>,
) -> Response {
    let caller = caller_or_return!(pages, browser, posted.csrf, true);
    let mut form = Form::new("account-mfa-totp", &["password"]);
    let Some(password) = password_of(&mut form, &caller, posted.password) else {
        return account_view(&pages, &caller, None, Some(form)).await;
    };
    match mfa::begin_enrolment(&pages.app, &caller, &password).await {
        Ok(enrolment) => enrol_view(
            &pages,
            &caller,
            Some(enrolment),
            Form::new("account-mfa-totp-confirm", &["code"]),
        ),
        Err(e) => failed(&pages, &caller, form, e).await,
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct ConfirmForm {
    csrf: Option<String>,
    secret: Option<String>,
    code: Option<String>,
}

/// The recovery codes' page: shown once.
fn codes_view(pages: &Pages, caller: &Caller, codes: Vec<String>) -> Response {
    View::new(
        "recovery_codes.html",
        Browser::session_token_for(pages, caller),
    )
    .signed_in()
    .data(context! { codes })
    .into_response()
}

/// POST /account/mfa/totp/confirm: the first code turns TOTP on; the recovery codes follow.
pub(super) async fn confirm_totp(
    State(pages): State<Pages>,
    browser: Browser,
    PageForm(posted): PageForm<ConfirmForm>,
) -> Response {
    let caller = caller_or_return!(pages, browser, posted.csrf, true);
    let mut form = Form::new("account-mfa-totp-confirm", &["code"]);
    // Shown again beside an error: the secret as the page carried it (never read back).
    let again = |form: Form| {
        let enrolment = posted
            .secret
            .as_deref()
            .and_then(|s| mfa::enrolment_for(&pages.app, &caller, s));
        enrol_view(&pages, &caller, enrolment, form)
    };
    let code = match filled(posted.code.clone()) {
        None => {
            form.error("code", "Enter the 6-digit code the app shows.");
            return again(form);
        }
        Some(code) => match SecondFactor::from_fields(Some(code), None) {
            Ok(Some(SecondFactor::Totp(code))) => code,
            Ok(_) => unreachable!("a `code` field is a TOTP code"),
            Err(e) => {
                form.fail(Error::Validation(vec![e]));
                return again(form);
            }
        },
    };
    match mfa::confirm_enrolment(&pages.app, &caller, &code).await {
        Ok(codes) => codes_view(&pages, &caller, codes),
        Err(e @ (Error::NotFound(_) | Error::MfaAlreadyEnabled | Error::Unauthorized(_))) => {
            let form = Form::new("account-mfa-totp", &["password"]);
            failed(&pages, &caller, form, e).await
        }
        Err(e) => {
            form.fail(e);
            again(form)
        }
    }
}

/// POST /account/mfa/recovery-codes: a new set (the password, and step-up).
pub(super) async fn recovery_codes(
    State(pages): State<Pages>,
    browser: Browser,
    PageForm(posted): PageForm<PasswordAndCode>,
) -> Response {
    let caller = caller_or_return!(pages, browser, posted.csrf, false);
    let mut form = Form::new("account-mfa-recovery-codes", &["password", "code"]);
    let factor = second_factor(&mut form, posted.code, None);
    let password = password_of(&mut form, &caller, posted.password);
    let (Some(factor), Some(password)) = (factor, password) else {
        return account_view(&pages, &caller, None, Some(form)).await;
    };
    match mfa::regenerate_recovery_codes(&pages.app, &caller, &password, factor.as_ref()).await {
        Ok(codes) => codes_view(&pages, &caller, codes),
        Err(e) => failed(&pages, &caller, form, e).await,
    }
}

/// POST /account/mfa/disable: TOTP off (the password and a code, always).
pub(super) async fn disable_totp(
    State(pages): State<Pages>,
    browser: Browser,
    PageForm(posted): PageForm<PasswordAndCode>,
) -> Response {
    let caller = caller_or_return!(pages, browser, posted.csrf, false);
    let mut form = Form::new(
        "account-mfa-disable",
        &["password", "code", "recovery_code"],
    );
    let factor = second_factor(&mut form, posted.code, posted.recovery_code);
    let password = password_of(&mut form, &caller, posted.password);
    let (Some(factor), Some(password)) = (factor, password) else {
        return account_view(&pages, &caller, None, Some(form)).await;
    };
    match mfa::disable(&pages.app, &caller, &password, factor.as_ref()).await {
        Ok(()) => render::redirect("/account?done=mfa-off"),
        Err(Error::Forbidden(_)) => {
            form.problem(
                StatusCode::FORBIDDEN,
                "Your account must keep two-step verification: it cannot be turned off.",
            );
            account_view(&pages, &caller, None, Some(form)).await
        }
        Err(e) => failed(&pages, &caller, form, e).await,
    }
}
