//! Pages for people: server-rendered HTML beside the JSON API (sign-in with the second step,
//! registration, password reset, email verification, the account page). They call the same
//! `service` functions as the API, so every rule (password policy, lockout, rate limits,
//! step-up, MFA_REQUIRED_FOR) is the API's; what differs is the answer: every error is a
//! message beside the field it concerns, in HTML with the error's status, never problem+json.
//!
//! - `browser`: the browser's session (a cookie holding its session's refresh token), the
//!   forms' CSRF tokens, the Origin and Sec-Fetch-Site checks, and `?next=`.
//! - `render`: the templates (minijinja, built once), forms with their errors, responses.
//! - `public`: the pages anyone can open; `account`: the account page and its forms.
//! - `passkeys`: the passkeys' routes (sign-in with a passkey, the account page's passkeys);
//!   `passkeys.js`, the one script, drives the browser's side of them.
//!
//! One stylesheet and one script, both from the binary; the Content-Security-Policy allows
//! nothing else (no inline script, no eval) and lets the script fetch from this origin only.
//! Every page works without the script but the passkey controls, which it reveals.

mod account;
mod browser;
mod passkeys;
mod public;
mod render;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Router;
use axum::extract::{FromRef, Request};
use axum::http::{HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tower_http::set_header::SetResponseHeaderLayer;

use crate::auth::csrf::CsrfKey;
use crate::state::AppState;

/// What the pages' handlers share: the application's state and the key of the forms' tokens.
#[derive(Clone)]
pub(crate) struct Pages {
    app: AppState,
    csrf: Arc<CsrfKey>,
}

impl FromRef<Pages> for AppState {
    fn from_ref(pages: &Pages) -> Self {
        pages.app.clone()
    }
}

/// The pages' Content-Security-Policy: the one script and the one stylesheet of this origin,
/// the script's requests to this origin (`connect-src`: the passkeys' options). `form-action`
/// names PAGES_REDIRECT_ALLOWLIST's origins too: Chromium checks it against the redirect that
/// follows a form post, so a sign-in's `next=` to an allowed origin would otherwise be blocked.
fn csp(allowlist: &[String]) -> String {
    let mut form_action = String::from("'self'");
    for origin in allowlist {
        form_action.push(' ');
        form_action.push_str(origin);
    }
    format!(
        "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; \
         img-src 'self' data:; form-action {form_action}; frame-ancestors 'none'; \
         base-uri 'none'"
    )
}

/// The pages' routes, and the one route they share with the API: POST /register, the page's
/// form when the body is a form, the API's JSON registration otherwise (see
/// [`RegisterFormFirst`]). `http::app` merges them when PAGES is true.
pub fn routes(state: AppState) -> (Router, Router) {
    render::check_templates();
    let pages = Pages {
        csrf: Arc::new(CsrfKey::derive(state.config.tokens.secret_key())),
        app: state,
    };
    // The allowlist holds validated origins (scheme, host, port): a valid header value.
    let csp = HeaderValue::from_str(&csp(&pages.app.config.pages.redirect_allowlist))
        .expect("validated origins make a valid header value");
    let headers = |router: Router<Pages>| {
        router
            .layer(SetResponseHeaderLayer::overriding(
                header::CONTENT_SECURITY_POLICY,
                csp.clone(),
            ))
            // The page's own form posts then carry its true `Origin` (with the API's
            // `no-referrer`, Chromium sends `Origin: null`); other sites get no referrer.
            .layer(SetResponseHeaderLayer::overriding(
                header::REFERRER_POLICY,
                HeaderValue::from_static("same-origin"),
            ))
            // Every page may show an account or carry a form token: no cache keeps one. The
            // stylesheet and the script say otherwise for themselves.
            .layer(SetResponseHeaderLayer::if_not_present(
                header::CACHE_CONTROL,
                HeaderValue::from_static("no-store"),
            ))
    };
    let mut router = Router::new()
        .route("/", get(public::home))
        .route("/static/style.css", get(stylesheet))
        .route("/sign-in", get(public::sign_in_page).post(public::sign_in))
        .route("/sign-in/mfa", post(public::sign_in_mfa))
        .route("/sign-out", post(public::sign_out))
        .route("/register", get(public::register_page))
        .route(
            "/forgot-password",
            get(public::forgot_password_page).post(public::forgot_password),
        )
        .route(
            "/reset-password",
            get(public::reset_password_page).post(public::reset_password),
        )
        .route(
            "/verify-email",
            get(public::verify_email_page).post(public::verify_email),
        )
        .route("/account", get(account::page))
        .route("/account/profile", post(account::profile))
        .route("/account/email", post(account::email))
        .route("/account/password", post(account::password))
        .route("/account/delete", post(account::delete))
        .route(
            "/account/sessions/revoke-others",
            post(account::revoke_others),
        )
        .route("/account/sessions/{id}/revoke", post(account::revoke_one))
        .route("/account/mfa/totp", post(account::begin_totp))
        .route("/account/mfa/totp/confirm", post(account::confirm_totp))
        .route("/account/mfa/recovery-codes", post(account::recovery_codes))
        .route("/account/mfa/disable", post(account::disable_totp));
    if passkeys::enabled(&pages.app) {
        router = router
            .route("/static/passkeys.js", get(script))
            .route("/sign-in/passkey", post(passkeys::sign_in))
            .route("/account/passkeys", post(passkeys::add))
            .route("/account/passkeys/options", post(passkeys::add_options))
            .route(
                "/account/passkeys/step-up/options",
                post(passkeys::step_up_options),
            )
            .route("/account/passkeys/step-up", post(passkeys::step_up))
            .route("/account/passkeys/{id}/rename", post(passkeys::rename))
            .route("/account/passkeys/{id}/delete", post(passkeys::delete))
            .route("/account/password/remove", post(passkeys::remove_password));
    }
    let register_form = Router::new().route("/register", post(public::register));
    (
        headers(router).with_state(pages.clone()),
        headers(register_form).with_state(pages),
    )
}

/// Sends a form posted to /register (the registration page's) to the page's router; anything
/// else, JSON included, goes on to the API's POST /register as before. A tower layer written out
/// (not `from_fn`: that boxed a service and a future for every request of every route).
#[derive(Clone)]
pub struct RegisterFormFirst {
    form: Router,
}

impl RegisterFormFirst {
    pub fn new(form: Router) -> Self {
        Self { form }
    }
}

impl<S> tower::Layer<S> for RegisterFormFirst {
    type Service = RegisterFormFirstService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RegisterFormFirstService {
            form: self.form.clone(),
            inner,
        }
    }
}

#[derive(Clone)]
pub struct RegisterFormFirstService<S> {
    form: Router,
    inner: S,
}

impl<S> tower::Service<Request> for RegisterFormFirstService<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = FormOrApi<axum::routing::future::RouteFuture<Infallible>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        if request.method() == Method::POST
            && request.uri().path() == "/register"
            && super::extract::is_form(request.headers())
        {
            // A Router is always ready.
            return FormOrApi::Form {
                future: tower::Service::call(&mut self.form, request),
            };
        }
        FormOrApi::Api {
            future: self.inner.call(request),
        }
    }
}

pin_project_lite::pin_project! {
    #[project = FormOrApiProjection]
    pub enum FormOrApi<F, A> {
        Form { #[pin] future: F },
        Api { #[pin] future: A },
    }
}

impl<F, A> Future for FormOrApi<F, A>
where
    F: Future<Output = Result<Response, Infallible>>,
    A: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            FormOrApiProjection::Form { future } => future.poll(cx),
            FormOrApiProjection::Api { future } => future.poll(cx),
        }
    }
}

/// GET /static/passkeys.js: the one script, from the binary (PASSKEYS=true).
async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("passkeys.js"),
    )
        .into_response()
}

/// GET /static/style.css: the one stylesheet, from the binary.
async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("style.css"),
    )
        .into_response()
}
