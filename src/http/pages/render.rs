//! The templates, and what they are given: the forms with what was typed (never a password) and
//! what is wrong with it, every `Error` in words for people, and the responses (HTML with the
//! error's status, marked so that `problem::problemize` leaves them as they are).
//!
//! The templates (`templates/*.html`, in the binary) are autoescaped, by their `.html` names;
//! the one value inserted as it is, the QR code, is the server's own SVG (`auth::totp::qr_svg`).

use std::collections::BTreeMap;
use std::sync::LazyLock;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use minijinja::value::{Serde, Value};
use minijinja::{Environment, UndefinedBehavior, context};
use serde::Serialize;

use crate::error::Error;
use crate::http::problem::{self, NotAProblem};

const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("templates/base.html")),
    ("macros.html", include_str!("templates/macros.html")),
    ("message.html", include_str!("templates/message.html")),
    ("sign_in.html", include_str!("templates/sign_in.html")),
    (
        "sign_in_mfa.html",
        include_str!("templates/sign_in_mfa.html"),
    ),
    ("register.html", include_str!("templates/register.html")),
    (
        "forgot_password.html",
        include_str!("templates/forgot_password.html"),
    ),
    (
        "reset_password.html",
        include_str!("templates/reset_password.html"),
    ),
    (
        "verify_email.html",
        include_str!("templates/verify_email.html"),
    ),
    ("account.html", include_str!("templates/account.html")),
    ("enrol.html", include_str!("templates/enrol.html")),
    (
        "recovery_codes.html",
        include_str!("templates/recovery_codes.html"),
    ),
];

/// The templates, parsed once.
static ENVIRONMENT: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    // A block tag's own line leaves nothing in the page.
    env.set_syntax(
        minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .expect("the default delimiters"),
    );
    // A missing value (a form with nothing typed yet) is empty, also when looked into.
    env.set_undefined_behavior(UndefinedBehavior::Chainable);
    for (name, source) in TEMPLATES {
        env.add_template(name, source)
            .unwrap_or_else(|e| panic!("the template {name} does not parse: {e}"));
    }
    env
});

/// Parses the templates now (at the router's build), so that a broken one stops the start.
pub(super) fn check_templates() {
    LazyLock::force(&ENVIRONMENT);
}

/// An HTML response of `status`.
fn html(status: StatusCode, body: String) -> Response {
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response();
    response.extensions_mut().insert(NotAProblem);
    response
}

fn render(template: &str, context: Value) -> Result<String, minijinja::Error> {
    ENVIRONMENT.get_template(template)?.render(context)
}

/// A 303 to `location` (after a post: the browser then GETs it).
pub(super) fn redirect(location: &str) -> Response {
    redirect_setting(location, None)
}

/// A 303 to `location`, setting a cookie.
pub(super) fn redirect_setting(location: &str, cookie: Option<String>) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(location) {
        headers.insert(header::LOCATION, value);
    }
    if let Some(value) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        headers.append(header::SET_COOKIE, value);
    }
    response
}

/// A page that only says something: a title (its `<h1>`), paragraphs, and a link on.
pub(super) struct Message {
    pub title: &'static str,
    pub text: Vec<String>,
    pub link: Option<(&'static str, &'static str)>,
}

pub(super) fn message(status: StatusCode, message: Message) -> Response {
    View::new("message.html", String::new())
        .status(status)
        .data(context! {
            title => message.title,
            text => message.text,
            link_href => message.link.map(|(href, _)| href),
            link_text => message.link.map(|(_, text)| text),
        })
        .into_response()
}

/// The page of an error that has no form to go back to (the database is away, say).
pub(super) fn error_page(error: Error) -> Response {
    problem::log_error(&error);
    let (status, _) = problem::status_and_code(&error);
    let retry_after = problem::retry_after_seconds(&error);
    let mut response = message(
        status,
        Message {
            title: "Something went wrong",
            text: vec![words(&error)],
            link: None,
        },
    );
    if let Some(seconds) = retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

/// "N second(s)".
fn seconds(n: u64) -> String {
    if n == 1 {
        "1 second".into()
    } else {
        format!("{n} seconds")
    }
}

/// An error in words for people. (Field errors are said beside their fields; see [`Form`].)
pub(super) fn words(error: &Error) -> String {
    let wait = || seconds(problem::retry_after_seconds(error).unwrap_or(1));
    match error {
        Error::Validation(_) | Error::InvalidParameter(_) => {
            "Some of the answers need correcting.".into()
        }
        Error::EmailTaken => "An account with this email address already exists.".into(),
        Error::InvalidCredentials => "Wrong email or password.".into(),
        Error::WrongPassword => "The password is wrong.".into(),
        Error::AccountDisabled => "This account has been deactivated.".into(),
        Error::EmailNotVerified => {
            "Confirm your email address first: open the link we mailed to you.".into()
        }
        Error::Unauthorized(_) | Error::InvalidRefreshToken(_) => {
            "You have been signed out. Sign in again.".into()
        }
        Error::InvalidOneTimeToken(_) => {
            "This link has expired or has already been used: ask for a new link.".into()
        }
        Error::MfaRequired { .. } => "This account needs a second step to sign in.".into(),
        Error::InvalidMfaToken(_) => {
            "Signing in took too long or had too many wrong codes: start again.".into()
        }
        Error::InvalidMfaCode | Error::WrongMfaCode => {
            "The code is not right, or has already been used. Try the next one.".into()
        }
        Error::StepUpRequired { methods } => {
            let passkey = methods.contains(&"passkey");
            let code = methods.iter().any(|m| *m != "passkey");
            match (code, passkey) {
                (true, true) => {
                    "Enter the code from your authenticator app (or a recovery code), or confirm \
                     with your passkey, to make this change."
                }
                (false, true) => "Confirm with your passkey to make this change.",
                _ => {
                    "Enter the code from your authenticator app (or a recovery code) to make this \
                     change."
                }
            }
            .into()
        }
        Error::MfaEnrolmentRequired => "Set up an authenticator app first.".into(),
        Error::MfaAlreadyEnabled => "An authenticator app is already set up.".into(),
        Error::MfaNotEnabled => "This account has no authenticator app.".into(),
        Error::InvalidPasskey(_) => {
            "This passkey could not be used here. Try again, or use another passkey or your \
             password."
                .into()
        }
        Error::PasskeyChallengeInvalid(_) => {
            "That took too long, or the page is out of date: try the passkey again.".into()
        }
        Error::PasskeyCounterRegressed => {
            "This passkey may have been copied, so it cannot be used: use another passkey or \
             your password. We have told you by mail."
                .into()
        }
        Error::PasskeyAlreadyRegistered => "This passkey is already on your account.".into(),
        Error::PasskeyLimit => {
            "Your account has as many passkeys as it may have (20): remove one first.".into()
        }
        Error::LastCredential(_) => {
            "That would leave your account without a way to sign in: set a password, or add \
             another passkey (one that checks it is you, with a PIN, fingerprint or face) first."
                .into()
        }
        Error::WebhookLimit => "There are as many webhooks as there may be.".into(),
        Error::PasswordNotSet => "Your account has no password already.".into(),
        Error::NoPasskey => "Your account has no passkey.".into(),
        Error::RegistrationClosed => {
            "New accounts are not being created here. If you need one, ask an administrator.".into()
        }
        Error::InvitationRequired => {
            "You need an invitation to create an account here: open the link in your \
             invitation mail."
                .into()
        }
        Error::InvitationInvalid(_) => {
            "This invitation has expired, has been used or withdrawn, or is for another \
             address: ask for a new one."
                .into()
        }
        Error::Forbidden(_) => "You are not allowed to do this.".into(),
        Error::NotFound(_) => "There is nothing here.".into(),
        Error::TooManyRequests { .. } => format!("Too many attempts; try again in {}.", wait()),
        Error::PayloadTooLarge => "The form is too large.".into(),
        Error::UnsupportedMediaType(_) => "This form could not be read.".into(),
        Error::Busy { .. } => format!("The server is busy; try again in {}.", wait()),
        Error::DatabaseUnavailable(_) => {
            "The service is unavailable for a moment; try again shortly.".into()
        }
        Error::Internal(_) => "Something went wrong on our side; try again.".into(),
    }
}

/// The label of an input, as its `<label>` says it: the start of its field errors.
fn label(name: &str) -> &'static str {
    match name {
        "email" => "Email address",
        "name" => "Name",
        "password" | "current_password" => "Password",
        "password2" | "new_password2" => "The repeated password",
        "new_email" => "New email address",
        "new_password" => "New password",
        "code" => "Code",
        "recovery_code" => "Recovery code",
        "credential" | "passkey" => "The passkey's answer",
        _ => "This answer",
    }
}

/// One form as a page shows it: what was typed, and what is wrong.
#[derive(Debug)]
pub(super) struct Form {
    pub id: String,
    /// The names of its inputs (not its hidden ones).
    inputs: &'static [&'static str],
    /// The service's names for some of them (`email` for `new_email`, say).
    renames: &'static [(&'static str, &'static str)],
    values: BTreeMap<&'static str, String>,
    errors: BTreeMap<&'static str, String>,
    /// What is wrong with the form as a whole.
    problems: Vec<String>,
    status: StatusCode,
    /// The stable code of what failed first, and with STEP_UP_REQUIRED what the account can
    /// answer with (`problem_json` says them).
    code: Option<&'static str>,
    methods: Option<Vec<&'static str>>,
    retry_after: Option<u64>,
}

/// A form as a template reads it (`forms[id].values.email`, `forms[id].errors.email`).
#[derive(Serialize)]
struct FormView<'a> {
    values: &'a BTreeMap<&'static str, String>,
    errors: &'a BTreeMap<&'static str, String>,
}

/// A line of the error summary: a link to its input, or the form's own problem.
#[derive(Serialize)]
struct SummaryLine {
    href: Option<String>,
    text: String,
}

impl Form {
    pub fn new(id: impl Into<String>, inputs: &'static [&'static str]) -> Self {
        Self {
            id: id.into(),
            inputs,
            renames: &[],
            values: BTreeMap::new(),
            errors: BTreeMap::new(),
            problems: Vec::new(),
            status: StatusCode::OK,
            code: None,
            methods: None,
            retry_after: None,
        }
    }

    /// The service calls `from` what this form calls `to`.
    pub fn renaming(mut self, renames: &'static [(&'static str, &'static str)]) -> Self {
        self.renames = renames;
        self
    }

    /// A value to show in the input `name` (never a password).
    pub fn keep(&mut self, name: &'static str, value: Option<&str>) {
        if let Some(value) = value.filter(|v| !v.is_empty()) {
            self.values.insert(name, value.to_string());
        }
    }

    pub fn failed(&self) -> bool {
        !(self.errors.is_empty() && self.problems.is_empty())
    }

    fn fail_with(&mut self, status: StatusCode) {
        if !self.failed() || self.status.is_success() {
            self.status = status;
        }
    }

    fn code_of(&mut self, code: &'static str) {
        self.code.get_or_insert(code);
    }

    /// An error beside the input `name`, in words of ours (a whole sentence): 422.
    pub fn error(&mut self, name: &'static str, sentence: impl Into<String>) {
        self.fail_with(StatusCode::UNPROCESSABLE_ENTITY);
        self.code_of("VALIDATION_FAILED");
        self.errors.entry(name).or_insert(sentence.into());
    }

    /// A problem of the whole form, with its status.
    pub fn problem(&mut self, status: StatusCode, sentence: impl Into<String>) {
        self.fail_with(status);
        self.code_of(match status {
            StatusCode::NOT_FOUND => "NOT_FOUND",
            StatusCode::FORBIDDEN => "FORBIDDEN",
            _ => "VALIDATION_FAILED",
        });
        self.problems.push(sentence.into());
    }

    /// The input a field of the service's is, if this form has it.
    fn input(&self, field: &str) -> Option<&'static str> {
        let field = self
            .renames
            .iter()
            .find(|(from, _)| *from == field)
            .map_or(field, |(_, to)| to);
        self.inputs.iter().copied().find(|i| *i == field)
    }

    /// The first of `candidates` this form has.
    fn any_of(&self, candidates: &[&str]) -> Option<&'static str> {
        candidates.iter().find_map(|c| self.input(c))
    }

    /// Says `error` on this form: beside the input it concerns where there is one, else above.
    pub fn fail(&mut self, error: Error) {
        problem::log_error(&error);
        let (status, code) = problem::status_and_code(&error);
        self.code_of(code);
        if let Error::StepUpRequired { methods } = &error {
            self.methods.get_or_insert_with(|| methods.clone());
        }
        if let Some(seconds) = problem::retry_after_seconds(&error) {
            self.retry_after = Some(seconds);
        }
        let input = match &error {
            Error::Validation(fields) => {
                for field in fields {
                    match self.input(&field.field) {
                        Some(name) => {
                            self.errors.entry(name).or_insert(format!(
                                "{} {}.",
                                label(name),
                                field.message
                            ));
                        }
                        None => self.problems.push(format!(
                            "{} {}.",
                            label(&field.field),
                            field.message
                        )),
                    }
                }
                self.fail_with(status);
                return;
            }
            Error::EmailTaken => self.any_of(&["email", "new_email"]),
            Error::WrongPassword => self.any_of(&["password", "current_password"]),
            Error::InvalidMfaCode | Error::WrongMfaCode | Error::StepUpRequired { .. } => {
                self.any_of(&["code"])
            }
            _ => None,
        };
        match input {
            Some(name) => {
                self.fail_with(status);
                self.errors.entry(name).or_insert(words(&error));
            }
            None => self.problem(status, words(&error)),
        }
    }

    /// The form's errors as `passkeys.js` reads them, for the routes it calls with the form's
    /// fields: a problem document (the status and `code` of what failed first, its `methods`;
    /// the sentences the page would show as `detail`) with `fields`, each input's sentence by
    /// its name.
    pub fn problem_json(&self) -> Response {
        let status = if self.failed() {
            self.status
        } else {
            StatusCode::UNPROCESSABLE_ENTITY
        };
        let sentences: Vec<String> = self.summary().map(|line| line.text).collect();
        let mut body = problem::problem(
            status,
            self.code.unwrap_or("VALIDATION_FAILED"),
            sentences.join(" "),
        );
        body.methods = self.methods.clone();
        if body.detail.is_empty() {
            body.detail = "Something went wrong; try again.".into();
        }
        let mut body = serde_json::to_value(body).unwrap_or_default();
        body["fields"] = serde_json::to_value(&self.errors).unwrap_or_default();
        let mut response = (status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(problem::PROBLEM_JSON),
        );
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }

    fn summary(&self) -> impl Iterator<Item = SummaryLine> + '_ {
        let problems = self.problems.iter().map(|text| SummaryLine {
            href: None,
            text: text.clone(),
        });
        // In the order of the inputs on the page.
        let fields = self.inputs.iter().filter_map(|name| {
            self.errors.get(name).map(|text| SummaryLine {
                href: Some(format!("#{}-{name}", self.id)),
                text: text.clone(),
            })
        });
        problems.chain(fields)
    }
}

/// A page being made: its template, the form token of its forms, its forms' states, the
/// template's own values, and what the response carries besides.
pub(super) struct View {
    template: &'static str,
    status: StatusCode,
    csrf: String,
    signed_in: bool,
    notice: Option<String>,
    forms: Vec<Form>,
    data: Value,
    cookies: Vec<String>,
}

impl View {
    pub fn new(template: &'static str, csrf: String) -> Self {
        Self {
            template,
            status: StatusCode::OK,
            csrf,
            signed_in: false,
            notice: None,
            forms: Vec::new(),
            data: Value::UNDEFINED,
            cookies: Vec::new(),
        }
    }

    pub fn status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    /// The page of a signed-in browser: its header has the sign-out button.
    pub fn signed_in(mut self) -> Self {
        self.signed_in = true;
        self
    }

    pub fn notice(mut self, notice: Option<&str>) -> Self {
        self.notice = notice.map(str::to_string);
        self
    }

    /// A form's state; a form that failed sets the page's status. A later form of the same id
    /// replaces an earlier one.
    pub fn form(mut self, form: Form) -> Self {
        if form.failed() {
            self.status = form.status;
        }
        self.forms.retain(|f| f.id != form.id);
        self.forms.push(form);
        self
    }

    pub fn data(mut self, data: Value) -> Self {
        self.data = data;
        self
    }

    pub fn cookie(mut self, cookie: Option<String>) -> Self {
        self.cookies.extend(cookie);
        self
    }

    pub fn into_response(self) -> Response {
        let forms: BTreeMap<&str, FormView<'_>> = self
            .forms
            .iter()
            .map(|f| {
                (
                    f.id.as_str(),
                    FormView {
                        values: &f.values,
                        errors: &f.errors,
                    },
                )
            })
            .collect();
        let summary: Vec<SummaryLine> = self.forms.iter().flat_map(Form::summary).collect();
        let retry_after = self.forms.iter().find_map(|f| f.retry_after);
        let context = context! {
            csrf => self.csrf,
            signed_in => self.signed_in,
            notice => self.notice,
            summary => Serde(summary),
            forms => Serde(forms),
            ..self.data
        };
        let mut response = match render(self.template, context) {
            Ok(body) => html(self.status, body),
            Err(e) => {
                tracing::error!(template = self.template, error = %e, "a page could not be rendered");
                html(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "<!doctype html><title>Error</title><p>Something went wrong on our side.</p>"
                        .into(),
                )
            }
        };
        let headers = response.headers_mut();
        for cookie in self.cookies {
            if let Ok(value) = HeaderValue::from_str(&cookie) {
                headers.append(header::SET_COOKIE, value);
            }
        }
        if let Some(seconds) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::FieldError;

    fn body(response: Response) -> String {
        let bytes = bytes_of(response);
        String::from_utf8(bytes).unwrap()
    }

    fn bytes_of(response: Response) -> Vec<u8> {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(axum::body::to_bytes(response.into_body(), usize::MAX))
            .unwrap()
            .to_vec()
    }

    #[test]
    fn every_template_parses() {
        check_templates();
        for (name, _) in TEMPLATES {
            assert!(ENVIRONMENT.get_template(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn field_errors_go_beside_their_inputs_and_into_the_summary() {
        let mut form = Form::new("account-email", &["new_email", "current_password", "code"])
            .renaming(&[("email", "new_email")]);
        form.keep("new_email", Some("<b>@example.com"));
        form.fail(Error::Validation(vec![
            FieldError::new("email", "is not a valid email address"),
            FieldError::new("elsewhere", "is odd"),
        ]));
        form.fail(Error::WrongPassword);
        assert_eq!(form.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            form.errors["new_email"],
            "New email address is not a valid email address."
        );
        assert_eq!(form.errors["current_password"], "The password is wrong.");
        let page = body(
            View::new("account.html", "t".into())
                .signed_in()
                .form(form)
                .into_response(),
        );
        assert!(
            page.contains(r##"<a href="#account-email-new_email">"##),
            "{page}"
        );
        assert!(page.contains("This answer is odd."));
        // Autoescaped: what was typed is text, never markup.
        assert!(page.contains("&lt;b&gt;@example.com"), "{page}");
        assert!(!page.contains("<b>@"));
    }

    #[test]
    fn a_forms_errors_as_the_script_reads_them() {
        let mut form = Form::new("passkey-add", &["name", "password", "code"]);
        form.fail(Error::WrongPassword);
        let response = form.problem_json();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            problem::PROBLEM_JSON
        );
        let body: serde_json::Value = serde_json::from_slice(&bytes_of(response)).unwrap();
        assert_eq!(body["code"], "INVALID_CREDENTIALS");
        assert_eq!(body["detail"], "The password is wrong.");
        assert_eq!(body["fields"]["password"], "The password is wrong.");

        let mut form = Form::new("passkey-add", &["name", "password", "code"]);
        form.fail(Error::StepUpRequired {
            methods: vec!["totp", "passkey"],
        });
        form.fail(Error::TooManyRequests {
            retry_after: std::time::Duration::from_secs(3),
        });
        let response = form.problem_json();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert_eq!(response.headers()[header::RETRY_AFTER], "3");
        let body: serde_json::Value = serde_json::from_slice(&bytes_of(response)).unwrap();
        assert_eq!(body["code"], "STEP_UP_REQUIRED");
        assert_eq!(body["methods"], serde_json::json!(["totp", "passkey"]));
        assert!(body["fields"]["code"].is_string(), "{body}");
    }

    #[test]
    fn a_lockout_says_how_long() {
        let mut form = Form::new("sign-in", &["email", "password"]);
        form.fail(Error::TooManyRequests {
            retry_after: std::time::Duration::from_millis(1500),
        });
        assert_eq!(form.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(form.retry_after, Some(2));
        assert_eq!(
            form.problems,
            ["Too many attempts; try again in 2 seconds."]
        );
    }
}
