//! The pages for people, over real HTTP without a browser: a small cookie-carrying client
//! ([`Browser`]) posts the forms as a browser would, reading the form tokens and values out of
//! the HTML by the ids the markup contract gives them (`{form-id}-{name}`).

use std::collections::BTreeMap;

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use crate::helpers::*;
use crate::mfa::{code_now, next_code};
use crate::smtp::{RESET, SmtpSink, VERIFY, WAIT, app_with_mail};

const CSP: &str = "default-src 'none'; script-src 'self'; connect-src 'self'; \
                   style-src 'self'; img-src 'self' data:; form-action 'self'; \
                   frame-ancestors 'none'; base-uri 'none'";
const USER_AGENT: &str = "PagesTest/1.0 (a browser of the test's own)";

/// A page as the server answered it.
pub(crate) struct Page {
    pub(crate) status: StatusCode,
    headers: HeaderMap,
    pub(crate) body: String,
}

/// Undoes minijinja's HTML escaping.
pub(crate) fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&#x2f;", "/")
        .replace("&amp;", "&")
}

impl Page {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub(crate) fn location(&self) -> &str {
        assert_eq!(self.status, StatusCode::SEE_OTHER, "{}", self.body);
        self.header("location").expect("a Location")
    }

    /// The start tag of the element with `id`.
    pub(crate) fn tag(&self, id: &str) -> Option<&str> {
        let at = self.body.find(&format!("id=\"{id}\""))?;
        let start = self.body[..at].rfind('<')?;
        let end = at + self.body[at..].find('>')?;
        Some(&self.body[start..=end])
    }

    /// The value of the input `{form}-{name}`.
    pub(crate) fn value(&self, form: &str, name: &str) -> String {
        let id = format!("{form}-{name}");
        let tag = self
            .tag(&id)
            .unwrap_or_else(|| panic!("no #{id} in {}", self.body));
        match tag.find("value=\"") {
            Some(at) => {
                let rest = &tag[at + 7..];
                unescape(&rest[..rest.find('"').unwrap()])
            }
            None => String::new(),
        }
    }

    /// The text inside the element with `id` (up to its first child's end: enough for the
    /// leaf elements read here).
    pub(crate) fn text(&self, id: &str) -> String {
        let tag = self
            .tag(id)
            .unwrap_or_else(|| panic!("no #{id} in {}", self.body));
        let start = self.body.find(tag).unwrap() + tag.len();
        let end = start + self.body[start..].find("</").unwrap();
        unescape(&self.body[start..end])
    }

    /// The `<h1>`'s text.
    pub(crate) fn h1(&self) -> String {
        let start = self.body.find("<h1>").expect("an h1") + 4;
        let end = start + self.body[start..].find("</h1>").unwrap();
        unescape(&self.body[start..end])
    }

    /// The whole element with `id`, up to the end of its kind (`</section>`, `</div>`...).
    pub(crate) fn element(&self, id: &str, kind: &str) -> &str {
        let tag = self
            .tag(id)
            .unwrap_or_else(|| panic!("no #{id} in {}", self.body));
        let start = self.body.find(tag).unwrap();
        let end = start + self.body[start..].find(&format!("</{kind}>")).unwrap();
        &self.body[start..end]
    }

    /// Asserts an HTML page of `status` with the pages' headers.
    pub(crate) fn assert_html(&self, status: StatusCode) {
        assert_eq!(self.status, status, "{}", self.body);
        assert_eq!(
            self.header("content-type"),
            Some("text/html; charset=utf-8")
        );
        assert_eq!(self.header("content-security-policy"), Some(CSP));
        assert_eq!(self.header("cache-control"), Some("no-store"));
        assert_eq!(self.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(self.header("x-frame-options"), Some("DENY"));
        assert_eq!(self.header("referrer-policy"), Some("same-origin"));
        assert!(self.body.starts_with("<!doctype html>\n<html lang=\"en\">"));
        assert_eq!(self.body.matches("<h1>").count(), 1, "one h1");
        assert_eq!(self.body.matches("<main").count(), 1, "one main");
    }

    /// Asserts an HTML page of `status` whose `<h1>` is `h1`.
    pub(crate) fn assert_page(&self, status: StatusCode, h1: &str) {
        self.assert_html(status);
        assert_eq!(self.h1(), h1);
    }

    /// The summary of errors at the top of `<main>`.
    pub(crate) fn errors(&self) -> String {
        self.element("errors", "div").to_string()
    }
}

/// A browser's worth of HTTP: its own cookies, no redirects followed, its own user agent.
pub(crate) struct Browser<'a> {
    app: &'a TestApp,
    cookies: BTreeMap<String, String>,
    /// The `Set-Cookie` lines received, in order.
    set_cookies: Vec<String>,
}

impl<'a> Browser<'a> {
    pub(crate) fn new(app: &'a TestApp) -> Self {
        Self {
            app,
            cookies: BTreeMap::new(),
            set_cookies: Vec::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn send(&mut self, request: reqwest::RequestBuilder) -> Page {
        let mut request = request.header("user-agent", USER_AGENT);
        if !self.cookies.is_empty() {
            request = request.header("cookie", self.cookie_header());
        }
        let response = request.send().await.unwrap();
        for line in response.headers().get_all("set-cookie") {
            let line = line.to_str().unwrap().to_string();
            let (pair, attributes) = line.split_once(';').unwrap_or((&line, ""));
            let (name, value) = pair.split_once('=').unwrap();
            if attributes.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_string(), value.to_string());
            }
            self.set_cookies.push(line);
        }
        Page {
            status: response.status(),
            headers: response.headers().clone(),
            body: response.text().await.unwrap(),
        }
    }

    pub(crate) async fn get(&mut self, path: &str) -> Page {
        let request = self.app.client.get(self.app.url(path));
        self.send(request).await
    }

    pub(crate) async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        self.post_with(path, fields, &[]).await
    }

    async fn post_with(
        &mut self,
        path: &str,
        fields: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> Page {
        let mut request = self.app.client.post(self.app.url(path)).form(fields);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.send(request).await
    }

    /// GET `page`, then post its form `form` (by id, at `action`) with its token and `fields`.
    pub(crate) async fn submit(
        &mut self,
        page: &str,
        form: &str,
        action: &str,
        fields: &[(&str, &str)],
    ) -> Page {
        let shown = self.get(page).await;
        assert_eq!(shown.status, StatusCode::OK, "GET {page}: {}", shown.body);
        let csrf = shown.value(form, "csrf");
        let mut all = vec![("csrf", csrf.as_str())];
        all.extend_from_slice(fields);
        self.post(action, &all).await
    }

    /// Signs in through the sign-in form (`next` as the form carries it).
    async fn sign_in(&mut self, email: &str, password: &str) -> Page {
        self.submit(
            "/sign-in",
            "sign-in",
            "/sign-in",
            &[("email", email), ("password", password)],
        )
        .await
    }

    /// Signs in, asserting it lands on the account page.
    async fn signed_in(&mut self, email: &str) {
        let page = self.sign_in(email, PASSWORD).await;
        assert_eq!(page.location(), "/account");
    }

    /// The session cookie's value.
    fn session(&self) -> Option<&String> {
        self.cookies
            .get("auth_session")
            .or_else(|| self.cookies.get("__Host-auth_session"))
    }
}

/// Registers through the API, verified (pages need no verification by default).
async fn account(app: &TestApp) -> String {
    let email = unique_email();
    assert_eq!(
        app.register(&email, PASSWORD, "Page User").await.status(),
        StatusCode::CREATED
    );
    email
}

#[tokio::test]
async fn every_page_is_html_with_its_headers_and_the_api_is_unchanged() {
    let app = spawn_app().await;
    let mut browser = Browser::new(&app);
    for (path, h1) in [
        ("/sign-in", "Sign in"),
        ("/sign-in?next=/account", "Sign in"),
        ("/register", "Create an account"),
        ("/forgot-password", "Forgot your password?"),
        ("/reset-password?token=abc", "Choose a new password"),
        ("/verify-email?token=abc", "Confirm your email address"),
    ] {
        let page = browser.get(path).await;
        page.assert_page(StatusCode::OK, h1);
        assert!(
            page.body
                .contains(r#"<link rel="stylesheet" href="/static/style.css">"#)
        );
        assert!(page.body.contains(r#"<meta name="viewport""#));
    }
    // Links that lost their token.
    for path in ["/reset-password", "/verify-email?token="] {
        browser
            .get(path)
            .await
            .assert_page(StatusCode::BAD_REQUEST, "This link is incomplete");
    }
    assert_eq!(browser.get("/").await.location(), "/sign-in");
    assert_eq!(
        browser.get("/account").await.location(),
        "/sign-in?next=/account"
    );

    let email = account(&app).await;
    browser.signed_in(&email).await;
    assert_eq!(browser.get("/").await.location(), "/account");
    let page = browser.get("/account").await;
    page.assert_page(StatusCode::OK, "Your account");
    for section in ["profile", "email", "password", "mfa", "sessions", "delete"] {
        assert!(
            page.tag(section).unwrap().starts_with("<section"),
            "{section}"
        );
    }

    let css = app
        .client
        .get(app.url("/static/style.css"))
        .send()
        .await
        .unwrap();
    assert_eq!(css.status(), StatusCode::OK);
    assert_eq!(css.headers()["content-type"], "text/css; charset=utf-8");
    assert_eq!(css.headers()["cache-control"], "public, max-age=3600");
    assert!(css.text().await.unwrap().contains(":focus-visible"));

    // The API answers as before: JSON, its own headers, no page policy.
    let health = app.client.get(app.url("/health")).send().await.unwrap();
    assert_eq!(health.headers()["cache-control"], "no-store");
    assert!(health.headers().get("content-security-policy").is_none());
    let registered = app.register(&unique_email(), PASSWORD, "Json Person").await;
    assert_eq!(registered.status(), StatusCode::CREATED);
    assert!(
        registered
            .headers()
            .get("content-security-policy")
            .is_none()
    );
    let problem = app.post_json("/register", &json!({})).await;
    assert_problem(problem, 422, "VALIDATION_FAILED").await;
    // A form posted there is the registration page's: without its token, the page's 403.
    let page = browser
        .post("/register", &[("email", "a@example.com"), ("name", "A")])
        .await;
    forbidden(&page);
    // An unknown path is still the API's 404.
    let response = app
        .client
        .get(app.url("/sign-in/nope"))
        .send()
        .await
        .unwrap();
    assert_problem(response, 404, "NOT_FOUND").await;
}

#[tokio::test]
async fn register_verify_sign_in_enrol_sign_in_with_a_code_and_reset_through_the_forms() {
    let sink = SmtpSink::start().await;
    // PUBLIC_URL back at this server: the mails' links are the pages'.
    let app = app_with_mail(&sink, &[("PUBLIC_URL", "http://localhost:8000")]).await;
    freeze_clock(&app);
    let mut browser = Browser::new(&app);
    let email = unique_email();

    // Register.
    let page = browser
        .submit(
            "/register",
            "register",
            "/register",
            &[
                ("email", &email),
                ("name", "Ada Page"),
                ("password", PASSWORD),
                ("password2", PASSWORD),
            ],
        )
        .await;
    page.assert_page(StatusCode::OK, "Check your mail to confirm your address");
    assert!(unescape(&page.body).contains(r#"<a href="/sign-in">"#));

    // Verify by the mailed link: the GET only shows a button; the POST confirms.
    let mail = sink.wait_for(&email, VERIFY, 1, WAIT).await.remove(0);
    assert!(
        mail.body()
            .contains("http://localhost:8000/verify-email?token=")
    );
    let token = mail.link_token("/verify-email").unwrap();
    let shown = browser.get(&format!("/verify-email?token={token}")).await;
    shown.assert_page(StatusCode::OK, "Confirm your email address");
    assert_eq!(shown.value("verify-email", "token"), token);
    let api = app.login_ok(&email).await;
    let me: Value = app.me(&api.access).await.json().await.unwrap();
    assert_eq!(me["is_verified"], false, "a GET changes nothing");
    let csrf = shown.value("verify-email", "csrf");
    let page = browser
        .post("/verify-email", &[("csrf", &csrf), ("token", &token)])
        .await;
    page.assert_page(StatusCode::OK, "Your email address is confirmed");
    let me: Value = app.me(&api.access).await.json().await.unwrap();
    assert_eq!(me["is_verified"], true);
    // Once only.
    let page = browser
        .post("/verify-email", &[("csrf", &csrf), ("token", &token)])
        .await;
    page.assert_html(StatusCode::BAD_REQUEST);

    // Sign in, to the account page.
    browser.signed_in(&email).await;
    let page = browser.get("/account").await;
    page.assert_page(StatusCode::OK, "Your account");
    assert_eq!(page.text("mfa-status"), "Off");
    assert_eq!(page.value("account-profile", "name"), "Ada Page");

    // Set up the authenticator app: the secret as text, the QR code inline.
    let page = browser
        .submit(
            "/account",
            "account-mfa-totp",
            "/account/mfa/totp",
            &[("password", PASSWORD)],
        )
        .await;
    page.assert_page(StatusCode::OK, "Set up an authenticator app");
    let secret: String = page.text("totp-secret").split_whitespace().collect();
    assert_eq!(secret.len(), 32, "160 bits in base32");
    assert!(page.element("totp-qr", "div").contains("<svg"));
    // A wrong code: the same page again, the same secret, the error at the code.
    let csrf = page.value("account-mfa-totp-confirm", "csrf");
    let carried = page.value("account-mfa-totp-confirm", "secret");
    let page = browser
        .post(
            "/account/mfa/totp/confirm",
            &[("csrf", &csrf), ("secret", &carried), ("code", "12345")],
        )
        .await;
    page.assert_page(
        StatusCode::UNPROCESSABLE_ENTITY,
        "Set up an authenticator app",
    );
    assert_eq!(
        page.text("totp-secret")
            .split_whitespace()
            .collect::<String>(),
        secret
    );
    let input = page.tag("account-mfa-totp-confirm-code").unwrap();
    assert!(input.contains(r#"aria-invalid="true""#), "{input}");
    assert!(input.contains(r#"aria-describedby="account-mfa-totp-confirm-code-error""#));
    // The right one: the recovery codes, once.
    let code = code_now(&app, &secret);
    let page = browser
        .post(
            "/account/mfa/totp/confirm",
            &[("csrf", &csrf), ("secret", &carried), ("code", &code)],
        )
        .await;
    page.assert_page(StatusCode::OK, "Your recovery codes");
    let codes = page.element("recovery-codes", "ol");
    assert_eq!(codes.matches("<li><code>").count(), 10, "{codes}");
    let page = browser.get("/account").await;
    assert_eq!(page.text("mfa-status"), "On");

    // Sign out: the cookie goes, the session ends.
    let session = browser.session().unwrap().clone();
    let page = browser
        .submit("/account", "sign-out", "/sign-out", &[])
        .await;
    assert_eq!(page.location(), "/sign-in");
    assert!(browser.session().is_none());
    browser.cookies.insert("auth_session".into(), session);
    assert_eq!(
        browser.get("/account").await.location(),
        "/sign-in?next=/account"
    );
    browser.cookies.remove("auth_session");

    // Sign in again: the password, then the second step with a code.
    let page = browser.sign_in(&email, PASSWORD).await;
    page.assert_page(StatusCode::OK, "Two-step verification");
    let mfa_token = page.value("sign-in-mfa", "mfa_token");
    let csrf = page.value("sign-in-mfa", "csrf");
    let page = browser
        .post(
            "/sign-in/mfa",
            &[
                ("csrf", &csrf),
                ("mfa_token", &mfa_token),
                ("code", "000000"),
            ],
        )
        .await;
    page.assert_page(StatusCode::UNAUTHORIZED, "Two-step verification");
    assert!(page.errors().contains("sign-in-mfa-code"));
    let code = next_code(&app, &secret);
    let page = browser
        .post(
            "/sign-in/mfa",
            &[("csrf", &csrf), ("mfa_token", &mfa_token), ("code", &code)],
        )
        .await;
    assert_eq!(page.location(), "/account");
    browser
        .get("/account")
        .await
        .assert_page(StatusCode::OK, "Your account");
    // The token is spent: the sign-in form again, to start over.
    let page = browser
        .post(
            "/sign-in/mfa",
            &[("csrf", &csrf), ("mfa_token", &mfa_token), ("code", &code)],
        )
        .await;
    page.assert_page(StatusCode::UNAUTHORIZED, "Sign in");
    assert!(page.errors().contains("start again"));

    // Forgot the password: the mailed link opens the reset page.
    let page = browser
        .submit(
            "/forgot-password",
            "forgot-password",
            "/forgot-password",
            &[("email", &email)],
        )
        .await;
    page.assert_page(StatusCode::OK, "Check your email");
    assert!(
        page.body
            .contains("If an account has this address, a link is on its way.")
    );
    let mail = sink.wait_for(&email, RESET, 1, WAIT).await.remove(0);
    let token = mail.link_token("/reset-password").unwrap();
    let path = format!("/reset-password?token={token}");
    let page = browser
        .submit(
            &path,
            "reset-password",
            "/reset-password",
            &[
                ("token", &token),
                ("new_password", "a new passphrase for the pages"),
                ("new_password2", "a different passphrase entirely"),
            ],
        )
        .await;
    page.assert_page(StatusCode::UNPROCESSABLE_ENTITY, "Choose a new password");
    assert!(
        page.body
            .contains(r#"id="reset-password-new_password2-error""#)
    );
    let page = browser
        .submit(
            &path,
            "reset-password",
            "/reset-password",
            &[
                ("token", &token),
                ("new_password", "a new passphrase for the pages"),
                ("new_password2", "a new passphrase for the pages"),
            ],
        )
        .await;
    page.assert_page(StatusCode::OK, "Your password has been changed");
    // Every session ended, the browser's too; the new password works (with the code).
    assert_eq!(
        browser.get("/account").await.location(),
        "/sign-in?next=/account"
    );
    let page = browser
        .sign_in(&email, "a new passphrase for the pages")
        .await;
    page.assert_page(StatusCode::OK, "Two-step verification");
    // The link is spent.
    let page = browser
        .submit(
            &path,
            "reset-password",
            "/reset-password",
            &[
                ("token", &token),
                ("new_password", "yet another passphrase here"),
                ("new_password2", "yet another passphrase here"),
            ],
        )
        .await;
    page.assert_page(StatusCode::BAD_REQUEST, "Choose a new password");
    assert!(page.errors().contains("ask for a new link"));
}

/// Asserts the answer to a forged post: 403, as a page.
fn forbidden(page: &Page) {
    page.assert_page(StatusCode::FORBIDDEN, "This form has expired");
    assert!(
        page.body
            .contains("this form has expired or came from another site; go back and try again")
    );
}

#[tokio::test]
async fn posts_without_the_right_token_or_from_another_site_are_refused() {
    let app = spawn_app().await;
    let email = account(&app).await;
    let mut browser = Browser::new(&app);
    let csrf = browser.get("/sign-in").await.value("sign-in", "csrf");
    assert_eq!(csrf.len(), 43);
    let sign_in = |csrf: &str| {
        let mut fields = vec![("email", email.clone()), ("password", PASSWORD.to_string())];
        if !csrf.is_empty() {
            fields.push(("csrf", csrf.to_string()));
        }
        fields
    };
    let post = async |browser: &mut Browser<'_>, csrf: &str, headers: &[(&str, &str)]| {
        let fields = sign_in(csrf);
        let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        browser.post_with("/sign-in", &fields, headers).await
    };
    // No token, a wrong one, another browser's.
    forbidden(&post(&mut browser, "", &[]).await);
    forbidden(&post(&mut browser, &"A".repeat(43), &[]).await);
    let theirs = Browser::new(&app)
        .get("/sign-in")
        .await
        .value("sign-in", "csrf");
    forbidden(&post(&mut browser, &theirs, &[]).await);
    // The right token without the cookie it is bound to.
    let mut stranger = Browser::new(&app);
    forbidden(&post(&mut stranger, &csrf, &[]).await);
    // From another site, with the right token.
    for headers in [
        [("origin", "https://evil.example")],
        [("origin", "null")],
        [("sec-fetch-site", "cross-site")],
    ] {
        forbidden(&post(&mut browser, &csrf, &headers).await);
    }
    assert!(browser.session().is_none(), "nothing signed in");
    // From this site: the request's own origin.
    let own = app.address.clone();
    let headers = [("origin", own.as_str()), ("sec-fetch-site", "same-origin")];
    assert_eq!(
        post(&mut browser, &csrf, &headers).await.location(),
        "/account"
    );

    // The account's forms are bound to the session: the signed-out token does not do.
    let profile = |csrf: &str| [("csrf", csrf.to_string()), ("name", "Mallory".to_string())];
    let post_profile = async |browser: &mut Browser<'_>, csrf: &str, headers: &[(&str, &str)]| {
        let fields = profile(csrf);
        let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        browser
            .post_with("/account/profile", &fields, headers)
            .await
    };
    for token in [csrf.as_str(), "", &"B".repeat(43)] {
        forbidden(&post_profile(&mut browser, token, &[]).await);
    }
    let token = browser
        .get("/account")
        .await
        .value("account-profile", "csrf");
    let evil = [("origin", "https://evil.example")];
    forbidden(&post_profile(&mut browser, &token, &evil).await);
    // Without the session, to the sign-in page (and nothing changed).
    let page = post_profile(&mut stranger, &token, &[]).await;
    assert_eq!(page.location(), "/sign-in?next=/account");
    let me: Value = app
        .me(&app.login_ok(&email).await.access)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["name"], "Page User");
    // With it, done.
    let page = post_profile(&mut browser, &token, &[]).await;
    assert_eq!(page.location(), "/account?done=profile");
    let page = browser.get("/account?done=profile").await;
    assert_eq!(page.value("account-profile", "name"), "Mallory");
    assert!(page.text("notice").contains("Your name has been saved."));
    // A body that is not a form.
    let response = app
        .client
        .post(app.url("/account/profile"))
        .header("content-type", "application/json")
        .header("cookie", browser.cookie_header())
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(
        response.headers()["content-type"],
        "text/html; charset=utf-8"
    );
}

#[tokio::test]
async fn next_leads_only_to_this_server_or_an_allowed_origin() {
    let app = spawn_app_with(&[("PAGES_REDIRECT_ALLOWLIST", "https://app.example.com")]).await;
    let email = account(&app).await;
    for (next, expected) in [
        ("//evil.example", "/account"),
        ("https://evil.example", "/account"),
        ("/\\evil.example", "/account"),
        ("https://app.example.com.evil.example/", "/account"),
        ("javascript:alert(1)", "/account"),
        ("/account", "/account"),
        ("/account?done=profile", "/account?done=profile"),
        (
            "https://app.example.com/welcome",
            "https://app.example.com/welcome",
        ),
    ] {
        let mut browser = Browser::new(&app);
        let page = browser
            .get(&format!("/sign-in?next={}", url_encode(next)))
            .await;
        let csrf = page.value("sign-in", "csrf");
        // The page carries only what it would follow.
        let carried = if expected == next { next } else { "" };
        assert_eq!(page.value("sign-in", "next"), carried, "{next}");
        // Posted as given, whatever the page carried.
        let page = browser
            .post(
                "/sign-in",
                &[
                    ("csrf", &csrf),
                    ("email", &email),
                    ("password", PASSWORD),
                    ("next", next),
                ],
            )
            .await;
        assert_eq!(page.location(), expected, "{next}");
    }
}

fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn pages_can_be_turned_off() {
    let app = spawn_app_with(&[("PAGES", "false")]).await;
    for path in [
        "/sign-in",
        "/account",
        "/register?x=1",
        "/static/style.css",
        "/",
    ] {
        let response = app.client.get(app.url(path)).send().await.unwrap();
        if path == "/register?x=1" {
            // The API's registration, which only takes POST.
            assert_problem(response, 405, "METHOD_NOT_ALLOWED").await;
        } else {
            assert_problem(response, 404, "NOT_FOUND").await;
        }
    }
    // A form posted to /register is the API's, which takes JSON only.
    let response = app
        .client
        .post(app.url("/register"))
        .form(&[("email", "a@example.com")])
        .send()
        .await
        .unwrap();
    assert_problem(response, 415, "UNSUPPORTED_MEDIA_TYPE").await;
    let response = app
        .client
        .post(app.url("/sign-in"))
        .form(&[("a", "b")])
        .send()
        .await
        .unwrap();
    assert_problem(response, 404, "NOT_FOUND").await;
    assert_eq!(
        app.register(&unique_email(), PASSWORD, "Api Only")
            .await
            .status(),
        StatusCode::CREATED
    );
}

/// The attributes of the last `Set-Cookie` for `name`.
fn set_cookie<'b>(browser: &'b Browser<'_>, name: &str) -> &'b str {
    browser
        .set_cookies
        .iter()
        .rev()
        .find(|line| line.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} cookie in {:?}", browser.set_cookies))
}

#[tokio::test]
async fn the_cookies_are_host_only_http_only_and_lax_and_secure_behind_https() {
    let app = spawn_app().await;
    let email = account(&app).await;
    let mut browser = Browser::new(&app);
    browser.signed_in(&email).await;
    let csrf = set_cookie(&browser, "auth_csrf");
    assert!(csrf.ends_with("; Path=/; HttpOnly; SameSite=Lax"), "{csrf}");
    let session = set_cookie(&browser, "auth_session");
    assert!(
        session.ends_with("; Path=/; HttpOnly; SameSite=Lax; Max-Age=604800"),
        "{session}"
    );
    assert!(!session.contains("Domain") && !session.contains("Secure"));

    // This server behind https: `__Host-` names, Secure.
    let app = spawn_app_with(&[("API_URL", "https://auth.example.com")]).await;
    let email = account(&app).await;
    let mut browser = Browser::new(&app);
    browser.signed_in(&email).await;
    let csrf = set_cookie(&browser, "__Host-auth_csrf");
    assert!(
        csrf.ends_with("; Path=/; HttpOnly; SameSite=Lax; Secure"),
        "{csrf}"
    );
    let session = set_cookie(&browser, "__Host-auth_session");
    assert!(
        session.ends_with("; Path=/; HttpOnly; SameSite=Lax; Secure; Max-Age=604800"),
        "{session}"
    );
    browser
        .get("/account")
        .await
        .assert_page(StatusCode::OK, "Your account");
    // A post whose Origin is this server's configured address is its own.
    let token = browser
        .get("/account")
        .await
        .value("account-profile", "csrf");
    let page = browser
        .post_with(
            "/account/profile",
            &[("csrf", &token), ("name", "Secure Person")],
            &[("origin", "https://auth.example.com")],
        )
        .await;
    assert_eq!(page.location(), "/account?done=profile");
}

#[tokio::test]
async fn a_browser_session_is_a_session_like_any_other() {
    let app = spawn_app().await;
    let email = account(&app).await;
    let mut browser = Browser::new(&app);
    browser.signed_in(&email).await;
    let first = claims_of(browser.session().unwrap())["sid"].clone();
    // Signing in again replaces the browser's session.
    browser.signed_in(&email).await;
    let sid = claims_of(browser.session().unwrap())["sid"].clone();
    assert_ne!(first, sid);

    // The API sees it, with its user agent; the page lists the API's too.
    let api = app.login_ok(&email).await;
    let sessions = app.live_sessions(&api.access).await;
    let ids: Vec<&Value> = sessions
        .as_array()
        .unwrap()
        .iter()
        .map(|s| &s["id"])
        .collect();
    assert_eq!(ids.len(), 2, "the API's and the browser's: {sessions}");
    assert!(ids.contains(&&sid) && !ids.contains(&&first));
    let browsers = &sessions
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == sid)
        .unwrap();
    assert_eq!(browsers["user_agent"], USER_AGENT);
    let page = browser.get("/account").await;
    let table = page.element("sessions", "section");
    assert_eq!(table.matches("<tr data-session-id=").count(), 2, "{table}");
    let sid = sid.as_str().unwrap();
    assert!(table.contains(&format!(
        r#"<tr data-session-id="{sid}" data-current="true">"#
    )));
    let api_sid = claims_of(&api.access)["sid"].as_str().unwrap().to_string();
    assert!(table.contains(&format!(r#"<tr data-session-id="{api_sid}">"#)));
    assert!(table.contains(&format!(r#"action="/account/sessions/{api_sid}/revoke""#)));

    // A password change through the API ends it: the page sends the browser to sign in.
    let response = app
        .client
        .put(app.url("/me/password"))
        .bearer_auth(&api.access)
        .json(&json!({"current_password": PASSWORD, "new_password": "another passphrase for this"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        browser.get("/account").await.location(),
        "/sign-in?next=/account"
    );
    assert_eq!(
        app.live_sessions(&api.access)
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // The browser's session ends any way a session ends: here, from its own page, the others.
    browser
        .signed_in_with(&email, "another passphrase for this")
        .await;
    let page = browser
        .submit(
            "/account",
            "account-sessions-revoke-others",
            "/account/sessions/revoke-others",
            &[],
        )
        .await;
    assert_eq!(page.location(), "/account?done=others-ended");
    assert_problem(app.me(&api.access).await, 401, "UNAUTHORIZED").await;
    browser
        .get("/account")
        .await
        .assert_page(StatusCode::OK, "Your account");
}

#[tokio::test]
async fn the_cookie_holds_a_refresh_token_and_a_copy_spent_elsewhere_ends_the_session() {
    let app = spawn_app().await;
    let email = account(&app).await;
    let mut browser = Browser::new(&app);
    browser.signed_in(&email).await;
    // The cookie is the session's refresh token: /refresh takes it, and rotates it...
    let copied = browser.session().unwrap().clone();
    let response = app.refresh(&copied).await;
    assert_eq!(response.status(), StatusCode::OK);
    let stolen = Tokens::from(response.json::<Value>().await.unwrap());
    // ...so the browser's token is no longer the live one: a reuse, which ends the session
    // for both holders, as /refresh itself would.
    assert_eq!(
        browser.get("/account").await.location(),
        "/sign-in?next=/account"
    );
    assert_problem(app.refresh(&stolen.refresh).await, 401, "INVALID_TOKEN").await;
    assert_problem(app.me(&stolen.access).await, 401, "UNAUTHORIZED").await;
}

impl Browser<'_> {
    async fn signed_in_with(&mut self, email: &str, password: &str) {
        let page = self.sign_in(email, password).await;
        assert_eq!(page.location(), "/account");
    }
}

#[tokio::test]
async fn six_wrong_passwords_show_the_lockout_as_a_page() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let email = account(&app).await;
    let mut browser = Browser::new(&app);
    for _ in 0..5 {
        let page = browser.sign_in(&email, "not the password at all").await;
        page.assert_page(StatusCode::UNAUTHORIZED, "Sign in");
        assert!(page.errors().contains("Wrong email or password."));
        // The email kept, the password not.
        assert_eq!(page.value("sign-in", "email"), email);
        assert_eq!(page.value("sign-in", "password"), "");
    }
    let page = browser.sign_in(&email, "not the password at all").await;
    page.assert_page(StatusCode::TOO_MANY_REQUESTS, "Sign in");
    assert!(
        page.errors().contains("Too many attempts; try again in"),
        "{}",
        page.body
    );
    assert!(page.header("retry-after").is_some());
    assert_eq!(page.value("sign-in", "email"), email);
    // The right password too, while it lasts.
    let page = browser.sign_in(&email, PASSWORD).await;
    page.assert_html(StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn errors_are_said_beside_their_fields_with_their_status() {
    let app = spawn_app().await;
    let email = account(&app).await;
    let mut browser = Browser::new(&app);

    // Registration: nothing filled in; a taken address; a guessable password.
    let page = browser
        .submit("/register", "register", "/register", &[])
        .await;
    page.assert_page(StatusCode::UNPROCESSABLE_ENTITY, "Create an account");
    for field in ["email", "name", "password"] {
        let id = format!("register-{field}");
        let input = page.tag(&id).unwrap();
        assert!(input.contains(r#"aria-invalid="true""#), "{input}");
        assert!(
            input.contains(&format!(r#"aria-describedby="{id}-error""#))
                || input.contains(&format!(r#" {id}-error""#)),
            "{input}"
        );
        assert!(
            page.body
                .contains(&format!(r#"<p class="field-error" id="{id}-error">"#))
        );
        assert!(page.errors().contains(&format!(r##"href="#{id}""##)));
        assert!(page.body.contains(&format!(r#"<label for="{id}">"#)));
    }
    assert_eq!(page.errors().matches("role=\"alert\"").count(), 1);
    let taken = [
        ("email", email.as_str()),
        ("name", "Someone"),
        ("password", PASSWORD),
        ("password2", PASSWORD),
    ];
    let page = browser
        .submit("/register", "register", "/register", &taken)
        .await;
    page.assert_page(StatusCode::CONFLICT, "Create an account");
    assert!(page.text("register-email-error").contains("already exists"));
    assert_eq!(page.value("register", "email"), email);
    let page = browser
        .submit(
            "/register",
            "register",
            "/register",
            &[
                ("email", &unique_email()),
                ("name", "Someone"),
                ("password", "password"),
                ("password2", "password"),
            ],
        )
        .await;
    page.assert_page(StatusCode::UNPROCESSABLE_ENTITY, "Create an account");
    assert!(
        page.text("register-password-error")
            .starts_with("Password is too easy to guess")
    );

    // The account page: a wrong current password is the password field's, 403.
    browser.signed_in(&email).await;
    let page = browser
        .submit(
            "/account",
            "account-email",
            "/account/email",
            &[
                ("new_email", "<script>@example.com"),
                ("current_password", "wrong password here"),
            ],
        )
        .await;
    page.assert_page(StatusCode::UNPROCESSABLE_ENTITY, "Your account");
    assert!(
        page.text("account-email-new_email-error")
            .starts_with("New email address")
    );
    assert!(!page.body.contains("<script>"), "escaped");
    let new_email = unique_email();
    let page = browser
        .submit(
            "/account",
            "account-email",
            "/account/email",
            &[
                ("new_email", &new_email),
                ("current_password", "wrong password here"),
            ],
        )
        .await;
    page.assert_page(StatusCode::FORBIDDEN, "Your account");
    assert_eq!(
        page.text("account-email-current_password-error"),
        "The password is wrong."
    );
    assert_eq!(page.value("account-email", "new_email"), new_email);
    let page = browser
        .submit(
            "/account",
            "account-email",
            "/account/email",
            &[("new_email", &new_email), ("current_password", PASSWORD)],
        )
        .await;
    assert_eq!(page.location(), "/account?done=email");
    // A session that is not there.
    let page = browser
        .submit("/account", "sign-out", "/account/sessions/nope/revoke", &[])
        .await;
    page.assert_page(StatusCode::NOT_FOUND, "Your account");
    assert!(page.errors().contains("That session has already ended."));
}

#[tokio::test]
async fn step_up_on_the_account_page_asks_for_the_code() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let email = account(&app).await;
    let api = app.login_ok(&email).await;
    let (secret, recovery) = crate::mfa::enrol(&app, &api.access).await;
    let mut browser = Browser::new(&app);
    let page = browser.sign_in(&email, PASSWORD).await;
    let (csrf, token) = (
        page.value("sign-in-mfa", "csrf"),
        page.value("sign-in-mfa", "mfa_token"),
    );
    // A recovery code in its own field.
    let page = browser
        .post(
            "/sign-in/mfa",
            &[
                ("csrf", &csrf),
                ("mfa_token", &token),
                ("recovery_code", &recovery[0]),
            ],
        )
        .await;
    assert_eq!(page.location(), "/account");
    // The recovery code passed the second factor just now: the step-up window is open.
    let page = browser.get("/account").await;
    assert!(
        page.tag("account-password-code").is_some(),
        "the code field is shown"
    );
    app.clock.advance_ms(301_000);
    let change = [
        ("current_password", PASSWORD),
        ("new_password", "a passphrase after step-up"),
        ("new_password2", "a passphrase after step-up"),
    ];
    let page = browser
        .submit("/account", "account-password", "/account/password", &change)
        .await;
    page.assert_page(StatusCode::FORBIDDEN, "Your account");
    assert!(
        page.text("account-password-code-error")
            .starts_with("Enter the code")
    );
    let code = next_code(&app, &secret);
    let mut with_code = change.to_vec();
    with_code.push(("code", &code));
    let page = browser
        .submit(
            "/account",
            "account-password",
            "/account/password",
            &with_code,
        )
        .await;
    assert_eq!(page.location(), "/account?done=password");
    // Still signed in here; the API's session ended.
    browser
        .get("/account")
        .await
        .assert_page(StatusCode::OK, "Your account");
    assert_problem(app.me(&api.access).await, 401, "UNAUTHORIZED").await;
    // Turning it off needs a code always; a recovery code in the code field does too.
    let page = browser
        .submit(
            "/account",
            "account-mfa-disable",
            "/account/mfa/disable",
            &[
                ("password", "a passphrase after step-up"),
                ("code", &recovery[1]),
            ],
        )
        .await;
    assert_eq!(page.location(), "/account?done=mfa-off");
    assert_eq!(browser.get("/account").await.text("mfa-status"), "Off");
    // Deleting the account ends the browser's session and clears its cookie.
    let page = browser
        .submit(
            "/account",
            "account-delete",
            "/account/delete",
            &[("password", "a passphrase after step-up")],
        )
        .await;
    assert_eq!(page.location(), "/sign-in?done=deleted");
    assert!(browser.session().is_none());
    assert_problem(
        app.login(&email, "a passphrase after step-up").await,
        401,
        "INVALID_CREDENTIALS",
    )
    .await;
}

#[tokio::test]
async fn a_session_kept_to_enrolment_sees_only_the_enrolment() {
    let app = spawn_app_with(&[("MFA_REQUIRED_FOR", "everyone")]).await;
    freeze_clock(&app);
    let email = account(&app).await;
    let mut browser = Browser::new(&app);
    browser.signed_in(&email).await;
    let page = browser.get("/account").await;
    page.assert_page(StatusCode::OK, "Your account");
    assert!(page.tag("mfa").is_some());
    for hidden in ["profile", "email", "password", "sessions", "delete"] {
        assert!(page.tag(hidden).is_none(), "#{hidden} is not shown");
    }
    let csrf = page.value("account-mfa-totp", "csrf");
    let page = browser
        .post("/account/profile", &[("csrf", &csrf), ("name", "Not Yet")])
        .await;
    page.assert_page(StatusCode::FORBIDDEN, "Set up an authenticator app first");
    // Enrolment is allowed, and then everything.
    let page = browser
        .post(
            "/account/mfa/totp",
            &[("csrf", &csrf), ("password", PASSWORD)],
        )
        .await;
    page.assert_page(StatusCode::OK, "Set up an authenticator app");
    let secret: String = page.text("totp-secret").split_whitespace().collect();
    let code = code_now(&app, &secret);
    let page = browser
        .post(
            "/account/mfa/totp/confirm",
            &[("csrf", &csrf), ("code", &code)],
        )
        .await;
    page.assert_page(StatusCode::OK, "Your recovery codes");
    let page = browser.get("/account").await;
    assert!(page.tag("profile").is_some());
    // It cannot be turned off: the form is not even offered.
    assert!(page.tag("account-mfa-disable").is_none());
}

/// A NUL byte in an id from a path names no row (PostgreSQL cannot even be asked): 404, never a
/// server error, on the page and in the API.
#[tokio::test]
async fn a_nul_in_a_session_or_user_id_is_not_a_server_error() {
    let app = spawn_app().await;
    let email = account(&app).await;
    let mut browser = Browser::new(&app);
    browser.signed_in(&email).await;
    let csrf = browser
        .get("/account")
        .await
        .value("account-profile", "csrf");
    let page = browser
        .post("/account/sessions/%00/revoke", &[("csrf", &csrf)])
        .await;
    page.assert_html(StatusCode::NOT_FOUND);
    assert!(page.errors().contains("That session has already ended."));
    let api = app.login_ok(&email).await;
    let response = app
        .client
        .delete(app.url("/me/sessions/%00"))
        .bearer_auth(&api.access)
        .send()
        .await
        .unwrap();
    assert_problem(response, 404, "NOT_FOUND").await;
    let (_, admin) = app.superuser().await;
    for (method, path) in [
        (reqwest::Method::GET, "/users/%00"),
        (reqwest::Method::DELETE, "/users/%00"),
        (reqwest::Method::DELETE, "/users/%00/mfa"),
    ] {
        let response = app
            .client
            .request(method, app.url(path))
            .bearer_auth(&admin.access)
            .send()
            .await
            .unwrap();
        assert_problem(response, 404, "NOT_FOUND").await;
    }
}

/// An allowed origin for `next=` is also in the pages' `form-action`: Chromium checks it against
/// the redirect that follows the sign-in's post.
#[tokio::test]
async fn an_allowed_next_elsewhere_is_within_the_sign_in_forms_form_action() {
    let app = spawn_app_with(&[("PAGES_REDIRECT_ALLOWLIST", "https://app.example.com")]).await;
    let mut browser = Browser::new(&app);
    let page = browser
        .get("/sign-in?next=https%3A%2F%2Fapp.example.com%2Fwelcome")
        .await;
    let csp = page.header("content-security-policy").unwrap();
    let form_action = csp
        .split(';')
        .map(str::trim)
        .find(|d| d.starts_with("form-action"))
        .unwrap();
    assert_eq!(
        form_action, "form-action 'self' https://app.example.com",
        "{csp}"
    );
}

// ---------------------------------------------------------------------------------------------
// Passkeys on the pages (passkey-spec.md, "Pages"): what can be checked without a browser. The
// ceremonies themselves run in Chromium (`browser.rs`).

/// The start tags of every `<script>` of a page.
fn scripts(page: &Page) -> Vec<&str> {
    page.body
        .match_indices("<script")
        .map(|(at, _)| &page.body[at..at + page.body[at..].find('>').unwrap() + 1])
        .collect()
}

#[tokio::test]
async fn the_one_script_is_served_from_the_binary_and_no_page_has_inline_script() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(app.url("/static/passkeys.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    assert_eq!(response.headers()["cache-control"], "public, max-age=3600");
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    let script = response.text().await.unwrap();
    for used in [
        "parseCreationOptionsFromJSON",
        "parseRequestOptionsFromJSON",
        "toJSON",
        "\"conditional\"",
        "/login/passkey/options",
        "/account/passkeys/options",
        "/account/passkeys/step-up",
    ] {
        assert!(script.contains(used), "the script uses {used}");
    }
    // Nothing the CSP would refuse: no eval, no inline handlers written into the page.
    for unsafe_ in ["eval(", "new Function", "innerHTML", "document.write"] {
        assert!(!script.contains(unsafe_), "{unsafe_}");
    }

    // The pages load it by its address, and only so: script-src 'self', nothing inline.
    let mut browser = Browser::new(&app);
    let sign_in = browser.get("/sign-in").await;
    sign_in.assert_page(StatusCode::OK, "Sign in");
    let csp = sign_in.header("content-security-policy").unwrap();
    assert!(csp.contains("script-src 'self';") && csp.contains("connect-src 'self';"));
    assert!(!csp.contains("unsafe"), "{csp}");
    assert_eq!(
        scripts(&sign_in),
        [r#"<script src="/static/passkeys.js" defer>"#]
    );
    // The markup the script works with: the email field's autofill, the button (hidden
    // until the script shows it), the form it posts.
    assert!(
        sign_in
            .tag("sign-in-email")
            .unwrap()
            .contains(r#"autocomplete="username webauthn""#)
    );
    assert!(sign_in.element("sign-in", "form").contains("sign-in-email"));
    let button = sign_in.tag("passkey-sign-in").unwrap();
    assert!(button.starts_with("<button type=\"button\""), "{button}");
    let form = sign_in.tag("passkey-form").unwrap();
    assert!(
        form.contains(r#"action="/sign-in/passkey" method="post""#) && form.contains("hidden"),
        "{form}"
    );
    assert_eq!(sign_in.value("passkey-form", "csrf").len(), 43);
    assert_eq!(sign_in.value("passkey-form", "credential"), "");
    let with_next = browser.get("/sign-in?next=/account%3Ftab%3D1").await;
    assert_eq!(with_next.value("passkey-form", "next"), "/account?tab=1");

    // The account page: the Passkeys section, the form the script takes over.
    let email = account(&app).await;
    browser.signed_in(&email).await;
    let page = browser.get("/account").await;
    page.assert_page(StatusCode::OK, "Your account");
    assert_eq!(
        scripts(&page),
        [r#"<script src="/static/passkeys.js" defer>"#]
    );
    let section = page.element("passkeys", "section");
    assert!(section.contains("You have no passkey yet."), "{section}");
    let add = page.tag("passkey-add").unwrap();
    assert!(add.contains(r#"action="/account/passkeys""#), "{add}");
    assert_eq!(page.value("passkey-add", "credential"), "");
    for input in ["passkey-add-name", "passkey-add-password"] {
        assert!(page.tag(input).is_some(), "{input}");
    }
    // Without a passkey that verifies the user, the password cannot be removed.
    assert!(page.tag("account-password-remove").is_none());
}

#[tokio::test]
async fn the_passkey_posts_are_refused_without_the_token_or_from_another_site() {
    let app = spawn_app().await;
    let email = account(&app).await;
    let mut browser = Browser::new(&app);
    let anonymous = browser.get("/sign-in").await.value("passkey-form", "csrf");
    let credential = r#"{"id":"AAAA","rawId":"AAAA","type":"public-key","response":{}}"#;
    // Signing in with a passkey: the signed-out form's token, from this site.
    for (token, headers) in [
        ("", &[][..]),
        ("A".repeat(43).as_str(), &[][..]),
        (
            anonymous.as_str(),
            &[("origin", "https://evil.example")][..],
        ),
        (anonymous.as_str(), &[("origin", "null")][..]),
        (anonymous.as_str(), &[("sec-fetch-site", "cross-site")][..]),
    ] {
        let fields = [("csrf", token), ("credential", credential)];
        forbidden(
            &browser
                .post_with("/sign-in/passkey", &fields, headers)
                .await,
        );
    }
    // What the form carries that is not a credential: the sign-in page again, 422, no 500.
    for unreadable in ["", "not json", "[]", "\"a string\"", "{"] {
        let fields = [("csrf", anonymous.as_str()), ("credential", unreadable)];
        let page = browser.post("/sign-in/passkey", &fields).await;
        page.assert_page(StatusCode::UNPROCESSABLE_ENTITY, "Sign in");
        assert!(page.errors().contains("could not be read"), "{}", page.body);
    }
    assert!(browser.session().is_none(), "nothing signed in");

    // The account's passkey forms: the session's token, from this site.
    browser.signed_in(&email).await;
    let token = browser.get("/account").await.value("passkey-add", "csrf");
    let id = uuid::Uuid::new_v4().to_string();
    let rename = format!("/account/passkeys/{id}/rename");
    let delete = format!("/account/passkeys/{id}/delete");
    let form_posts = [
        "/account/passkeys",
        rename.as_str(),
        delete.as_str(),
        "/account/password/remove",
    ];
    for path in form_posts {
        for (csrf, headers) in [
            ("", &[][..]),
            (anonymous.as_str(), &[][..]),
            (token.as_str(), &[("origin", "https://evil.example")][..]),
            (token.as_str(), &[("sec-fetch-site", "cross-site")][..]),
        ] {
            let fields = [
                ("csrf", csrf),
                ("credential", credential),
                ("name", "Mallory's key"),
                ("password", PASSWORD),
            ];
            forbidden(&browser.post_with(path, &fields, headers).await);
        }
    }
    // The routes the script calls answer a problem document, which it shows.
    let script_posts = [
        "/account/passkeys/options",
        "/account/passkeys/step-up/options",
        "/account/passkeys/step-up",
    ];
    for path in script_posts {
        for (csrf, headers) in [
            ("", &[][..]),
            (anonymous.as_str(), &[][..]),
            (token.as_str(), &[("origin", "https://evil.example")][..]),
            (token.as_str(), &[("sec-fetch-site", "cross-site")][..]),
        ] {
            let fields = [("csrf", csrf), ("password", PASSWORD)];
            let page = browser.post_with(path, &fields, headers).await;
            assert_eq!(page.status, StatusCode::FORBIDDEN, "{path}: {}", page.body);
            assert_eq!(
                page.header("content-type"),
                Some("application/problem+json"),
                "{path}"
            );
            let problem: Value = serde_json::from_str(&page.body).unwrap();
            assert_eq!(problem["code"], "FORBIDDEN", "{path}");
            assert!(
                problem["detail"].as_str().unwrap().contains("expired"),
                "{problem}"
            );
        }
    }
    // Without the session: the pages send the browser to sign in, the script is told so.
    let mut stranger = Browser::new(&app);
    let page = stranger
        .post(
            "/account/passkeys",
            &[("csrf", &token), ("credential", credential)],
        )
        .await;
    assert_eq!(page.location(), "/sign-in?next=/account");
    let page = stranger
        .post("/account/passkeys/options", &[("csrf", &token)])
        .await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED, "{}", page.body);
    let problem: Value = serde_json::from_str(&page.body).unwrap();
    assert_eq!(problem["code"], "UNAUTHORIZED");

    // Nothing was added, and the session is still there.
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM passkeys WHERE user_id = (SELECT id FROM users WHERE email = $1)",
            &email
        )
        .await,
        0
    );
    browser
        .get("/account")
        .await
        .assert_page(StatusCode::OK, "Your account");
}

#[tokio::test]
async fn without_passkeys_the_pages_have_no_script_and_no_passkey_route() {
    let app = spawn_app_with(&[("PASSKEYS", "false")]).await;
    let mut browser = Browser::new(&app);
    let page = browser.get("/sign-in").await;
    page.assert_page(StatusCode::OK, "Sign in");
    assert!(scripts(&page).is_empty(), "{}", page.body);
    assert!(page.tag("passkey-sign-in").is_none() && page.tag("passkey-form").is_none());
    assert!(
        page.tag("sign-in-email")
            .unwrap()
            .contains(r#"autocomplete="email""#)
    );
    let email = account(&app).await;
    browser.signed_in(&email).await;
    let page = browser.get("/account").await;
    page.assert_page(StatusCode::OK, "Your account");
    assert!(scripts(&page).is_empty());
    assert!(page.tag("passkeys").is_none() && page.tag("passkey-add").is_none());
    let response = app
        .client
        .get(app.url("/static/passkeys.js"))
        .send()
        .await
        .unwrap();
    assert_problem(response, 404, "NOT_FOUND").await;
    let token = page.value("account-profile", "csrf");
    for path in [
        "/sign-in/passkey",
        "/account/passkeys",
        "/account/passkeys/options",
        "/account/passkeys/step-up/options",
        "/account/passkeys/step-up",
        "/account/passkeys/x/rename",
        "/account/passkeys/x/delete",
        "/account/password/remove",
    ] {
        let response = app
            .client
            .post(app.url(path))
            .header("cookie", browser.cookie_header())
            .form(&[("csrf", token.as_str())])
            .send()
            .await
            .unwrap();
        assert_problem(response, 404, "NOT_FOUND").await;
    }
}

/// Gives the account of `email` a passkey row named `name` (as if registered; nothing can sign
/// in with it: the ceremonies are `browser.rs`'s and the API tests'), and returns its id.
async fn stored_passkey(app: &TestApp, email: &str, name: &str) -> String {
    let id = uuid::Uuid::new_v4().to_string();
    app.sql
        .execute3(
            "INSERT INTO passkeys (id, user_id, credential_id, credential, sign_count, \
             backup_eligible, backed_up, user_verified, name, created_at) \
             SELECT $1, id, 'cred-' || $1, 'AA', 0, TRUE, TRUE, TRUE, $2, 1700000000000 \
             FROM users WHERE email = $3",
            &id,
            name,
            email,
        )
        .await;
    id
}

#[tokio::test]
async fn the_options_of_a_new_passkey_are_json_and_its_errors_a_problem_the_script_shows() {
    let app = spawn_app().await;
    let email = account(&app).await;
    let mut browser = Browser::new(&app);
    browser.signed_in(&email).await;
    let token = browser.get("/account").await.value("passkey-add", "csrf");
    let problem = |page: &Page| -> Value {
        assert_eq!(
            page.header("content-type"),
            Some("application/problem+json"),
            "{}",
            page.body
        );
        serde_json::from_str(&page.body).unwrap()
    };

    // Without the password, with a wrong one: the page's words, by the input they concern.
    let page = browser
        .post("/account/passkeys/options", &[("csrf", &token)])
        .await;
    assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);
    let body = problem(&page);
    assert_eq!(body["code"], "VALIDATION_FAILED");
    assert_eq!(body["fields"]["password"], "Password is required.");
    let page = browser
        .post(
            "/account/passkeys/options",
            &[("csrf", &token), ("password", "not the password")],
        )
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    let body = problem(&page);
    assert_eq!(body["code"], "INVALID_CREDENTIALS");
    assert_eq!(body["fields"]["password"], "The password is wrong.");
    assert_eq!(body["detail"], "The password is wrong.");
    // A code that is not one.
    let page = browser
        .post(
            "/account/passkeys/options",
            &[("csrf", &token), ("password", PASSWORD), ("code", "12")],
        )
        .await;
    assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(problem(&page)["fields"]["code"].is_string());

    // The password: what PublicKeyCredential.parseCreationOptionsFromJSON takes.
    let page = browser
        .post(
            "/account/passkeys/options",
            &[("csrf", &token), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert_eq!(page.header("content-type"), Some("application/json"));
    assert_eq!(page.header("cache-control"), Some("no-store"));
    let options: Value = serde_json::from_str(&page.body).unwrap();
    let public_key = &options["publicKey"];
    assert_eq!(public_key["user"]["name"], email.as_str());
    assert_eq!(public_key["rp"]["id"], "localhost");
    assert!(
        public_key["challenge"]
            .as_str()
            .is_some_and(|c| c.len() >= 22)
    );
    assert_eq!(public_key["attestation"], "none");

    // What the form posts that is not a credential: the account page again, 422.
    let page = browser
        .post(
            "/account/passkeys",
            &[("csrf", &token), ("credential", "{"), ("name", "Laptop")],
        )
        .await;
    page.assert_page(StatusCode::UNPROCESSABLE_ENTITY, "Your account");
    assert!(page.errors().contains("could not be read"), "{}", page.body);
    assert_eq!(page.value("passkey-add", "name"), "Laptop");
    // A credential the service refuses (not an answer to any challenge): said, never a 500.
    let forged = r#"{"id":"AAAA","rawId":"AAAA","type":"public-key","response":{"clientDataJSON":"e30","attestationObject":"oA"},"clientExtensionResults":{}}"#;
    let page = browser
        .post(
            "/account/passkeys",
            &[("csrf", &token), ("credential", forged)],
        )
        .await;
    assert!(
        page.status.is_client_error(),
        "{}: {}",
        page.status,
        page.body
    );
    assert_eq!(page.h1(), "Your account");
    assert!(!page.errors().is_empty());
}

#[tokio::test]
async fn the_account_page_lists_renames_and_guards_the_removal_of_passkeys() {
    let app = spawn_app().await;
    let email = account(&app).await;
    let mut browser = Browser::new(&app);
    // Signed in with the password alone; then the account gains a passkey (its second factor).
    browser.signed_in(&email).await;
    let id = stored_passkey(&app, &email, "Phone <b>").await;
    let page = browser.get("/account").await;
    page.assert_page(StatusCode::OK, "Your account");
    let item = page.element(&format!("account-passkeys-{id}-rename"), "form");
    assert!(item.contains(r#"value="Phone &lt;b&gt;""#), "{item}");
    let section = page.element("passkeys", "section");
    assert!(section.contains("Phone &lt;b&gt;") && !section.contains("Phone <b>"));
    assert!(section.contains("Not used yet."), "{section}");
    assert!(section.contains("Synced"), "{section}");
    // A passkey that verifies the user: the password may go.
    assert!(page.tag("account-password-remove").is_some());
    // The session has passed no second factor: its sensitive forms prove the passkey first.
    let delete = format!("account-passkeys-{id}-delete");
    for form in [
        "account-email",
        "account-password",
        "account-delete",
        &delete,
    ] {
        assert!(
            page.tag(form)
                .unwrap()
                .contains(r#"data-step-up="unless-code""#),
            "{form}: {}",
            page.tag(form).unwrap()
        );
    }
    assert!(
        page.tag("account-password-remove")
            .unwrap()
            .contains(r#"data-step-up="always""#)
    );
    let token = page.value("passkey-add", "csrf");

    // Renaming: an empty name is said beside its input; a good one is saved.
    let rename = format!("/account/passkeys/{id}/rename");
    let page = browser
        .post(&rename, &[("csrf", &token), ("name", "  ")])
        .await;
    page.assert_page(StatusCode::UNPROCESSABLE_ENTITY, "Your account");
    assert!(
        page.errors()
            .contains(&format!("#account-passkeys-{id}-rename-name")),
        "{}",
        page.errors()
    );
    assert!(page.body.contains("<details open>"));
    let page = browser
        .post(&rename, &[("csrf", &token), ("name", " Work phone ")])
        .await;
    assert_eq!(page.location(), "/account?done=passkey-renamed");
    let page = browser.get("/account?done=passkey-renamed").await;
    assert!(page.text("notice").contains("renamed"));
    assert!(
        page.element("passkeys", "section")
            .contains("<h3 class=\"passkey-name\">Work phone</h3>")
    );
    // Another account's passkey, or none: "already removed", 404.
    for other in [uuid::Uuid::new_v4().to_string(), "%00".to_string()] {
        let page = browser
            .post(
                &format!("/account/passkeys/{other}/rename"),
                &[("csrf", &token), ("name", "Mine now")],
            )
            .await;
        page.assert_page(StatusCode::NOT_FOUND, "Your account");
        assert!(page.errors().contains("already been removed"));
    }

    // Removing it needs the password and a passkey proof (no code: the account has no app).
    let delete_path = format!("/account/passkeys/{id}/delete");
    let page = browser
        .post(
            &delete_path,
            &[("csrf", &token), ("password", "not the password")],
        )
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN, "{}", page.body);
    let page = browser
        .post(&delete_path, &[("csrf", &token), ("password", PASSWORD)])
        .await;
    page.assert_page(StatusCode::FORBIDDEN, "Your account");
    assert!(
        page.errors()
            .contains("Confirm with your passkey to make this change."),
        "{}",
        page.errors()
    );
    // Removing the password likewise.
    let page = browser
        .post("/account/password/remove", &[("csrf", &token)])
        .await;
    page.assert_page(StatusCode::FORBIDDEN, "Your account");
    assert!(page.errors().contains("Confirm with your passkey"));
    assert_eq!(
        app.count("SELECT COUNT(*) FROM passkeys WHERE id = $1", &id)
            .await,
        1
    );
}

#[tokio::test]
async fn the_second_step_offers_the_passkey_of_an_account_that_has_one() {
    let app = spawn_app().await;
    let email = account(&app).await;
    stored_passkey(&app, &email, "Laptop").await;
    let mut browser = Browser::new(&app);
    let page = browser.sign_in(&email, PASSWORD).await;
    page.assert_page(StatusCode::OK, "Two-step verification");
    // No authenticator app: no code's fields, the passkey's button and its form.
    assert!(page.tag("sign-in-mfa-code").is_none(), "{}", page.body);
    assert!(page.tag("passkey-mfa").is_some());
    let token = page.value("passkey-mfa-form", "mfa_token");
    assert!(!token.is_empty());
    assert_eq!(page.value("passkey-mfa-form", "methods"), "passkey");
    assert_eq!(
        scripts(&page),
        [r#"<script src="/static/passkeys.js" defer>"#]
    );
    let csrf = page.value("passkey-mfa-form", "csrf");
    // What is not a credential: the same page, 422; a forged one: refused, never a 500.
    let page = browser
        .post(
            "/sign-in/mfa",
            &[
                ("csrf", csrf.as_str()),
                ("mfa_token", &token),
                ("methods", "passkey"),
                ("passkey", "[1]"),
            ],
        )
        .await;
    page.assert_page(StatusCode::UNPROCESSABLE_ENTITY, "Two-step verification");
    assert!(page.errors().contains("could not be read"));
    assert!(page.tag("passkey-mfa").is_some());
    let forged = r#"{"id":"AAAA","rawId":"AAAA","type":"public-key","response":{"clientDataJSON":"e30","authenticatorData":"AA","signature":"AA"},"clientExtensionResults":{}}"#;
    let page = browser
        .post(
            "/sign-in/mfa",
            &[
                ("csrf", csrf.as_str()),
                ("mfa_token", &token),
                ("methods", "passkey"),
                ("passkey", forged),
            ],
        )
        .await;
    assert!(
        page.status.is_client_error(),
        "{}: {}",
        page.status,
        page.body
    );
    assert!(browser.session().is_none(), "nothing signed in");
}

#[tokio::test]
async fn a_session_kept_to_enrolment_may_add_a_passkey() {
    let app = spawn_app_with(&[("MFA_REQUIRED_FOR", "everyone")]).await;
    let email = account(&app).await;
    let mut browser = Browser::new(&app);
    browser.signed_in(&email).await;
    let page = browser.get("/account").await;
    page.assert_page(StatusCode::OK, "Your account");
    assert!(page.tag("profile").is_none());
    // The passkeys are a second factor too: the section and its form "Add a passkey".
    assert!(page.tag("passkeys").is_some() && page.tag("passkey-add").is_some());
    let csrf = page.value("passkey-add", "csrf");
    let page = browser
        .post(
            "/account/passkeys/options",
            &[("csrf", &csrf), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let options: Value = serde_json::from_str(&page.body).unwrap();
    assert!(options["publicKey"]["challenge"].is_string());
}
