//! The pages for people (pages-spec.md, issue 15), in a real browser: headless Chromium driven
//! over WebDriver ([`webdriver`]) against the in-process server. They select only on the
//! spec's "Markup contract". Every distinct page is screenshotted (desktop, and phone width with
//! no horizontal scroll) under `target/browser-screenshots/` and checked with axe-core (no
//! `serious` or `critical` violation).
//!
//! They need `chromedriver`, Chromium and axe-core's `axe.min.js`; without them each test
//! passes after one line on stderr (per run). `BROWSER_TESTS=off` skips them;
//! `BROWSER_TESTS=required` (as .ci/run sets) fails them instead of skipping. Paths:
//! `CHROMEDRIVER` (else `chromedriver` on PATH), `CHROME_BIN` (else /usr/bin/chromium),
//! `AXE_CORE_JS` (else `target/axe-core/axe.min.js`).
//!
//! Where the spec says nothing, a test says `// spec-silent:` and what it assumes.

mod webdriver;

use std::path::PathBuf;
use std::sync::OnceLock;

use serde_json::{Value, json};

use crate::helpers::*;
use crate::mfa::{NEW_PASSWORD, code_now, next_code};
use crate::smtp::{RESET, SmtpSink, VERIFY, WAIT};
use webdriver::{Browser, ENTER, TAB};

/// What the browser tests need, found once per run.
struct Tools {
    chromedriver: PathBuf,
    chrome: PathBuf,
    axe: String,
}

const INSTALL: &str = "install Debian's chromium and chromium-driver; .ci/run does";

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"))
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// A path from `var` if set (it must exist then), else the first of `fallback` that exists.
fn locate(var: &str, fallback: impl FnOnce() -> Option<PathBuf>) -> Result<PathBuf, String> {
    match std::env::var_os(var).filter(|v| !v.is_empty()) {
        Some(path) if PathBuf::from(&path).is_file() => Ok(path.into()),
        Some(path) => Err(format!("not found at {var}={}", path.to_string_lossy())),
        None => fallback().ok_or_else(|| "not found".to_string()),
    }
}

fn find_tools() -> Result<Tools, String> {
    if std::env::var("BROWSER_TESTS").is_ok_and(|v| v == "off") {
        return Err("BROWSER_TESTS=off".into());
    }
    let chromedriver = locate("CHROMEDRIVER", || on_path("chromedriver"))
        .map_err(|e| format!("chromedriver {e} ({INSTALL})"))?;
    let chrome = locate("CHROME_BIN", || {
        let usual = PathBuf::from("/usr/bin/chromium");
        usual
            .is_file()
            .then_some(usual)
            .or_else(|| on_path("chromium"))
    })
    .map_err(|e| format!("chromium {e} ({INSTALL})"))?;
    let axe = locate("AXE_CORE_JS", || {
        Some(target_dir().join("axe-core/axe.min.js")).filter(|p| p.is_file())
    })
    .map_err(|e| match e.as_str() {
        "not found" => format!(
            "axe-core not found at {} (set AXE_CORE_JS; .ci/run puts it there with npm pack axe-core@4)",
            target_dir().join("axe-core/axe.min.js").display()
        ),
        _ => format!("axe-core {e}"),
    })?;
    let axe = std::fs::read_to_string(&axe).map_err(|e| format!("axe-core: {e}"))?;
    Ok(Tools {
        chromedriver,
        chrome,
        axe,
    })
}

/// The tools, or `None` after saying once per run why the browser tests are skipped.
fn tools() -> Option<&'static Tools> {
    static TOOLS: OnceLock<Result<Tools, String>> = OnceLock::new();
    let found = TOOLS.get_or_init(|| {
        let found = find_tools();
        if let Err(why) = &found {
            let line = if std::env::var("BROWSER_TESTS").is_ok_and(|v| v == "required") {
                format!("browser tests required (BROWSER_TESTS=required), but {why}")
            } else {
                format!("browser tests skipped: {why}")
            };
            // Straight to stderr: the test harness captures eprintln! of a passing test.
            use std::io::Write as _;
            let _ = writeln!(std::io::stderr(), "{line}");
        }
        found
    });
    if found.is_err() && std::env::var("BROWSER_TESTS").is_ok_and(|v| v == "required") {
        panic!("browser tests required: {}", found.as_ref().err().unwrap());
    }
    found.as_ref().ok()
}

/// A browser for one test, with what it has found wrong so far.
struct Pages {
    b: Browser,
    axe: &'static str,
    shots: PathBuf,
    /// The number of the next screenshot.
    n: u32,
    /// Serious or critical accessibility violations, page by page.
    violations: Vec<String>,
    // The browser works the cores: the tests that time things wait (and so do other browsers).
    _cores: tokio::sync::MutexGuard<'static, ()>,
}

impl Pages {
    /// A browser, or `None` when the browser tests are skipped.
    async fn start(first_shot: u32) -> Option<Pages> {
        let tools = tools()?;
        let cores = CORES.lock().await;
        let shots = target_dir().join("browser-screenshots");
        std::fs::create_dir_all(&shots).unwrap();
        Some(Pages {
            b: Browser::start(&tools.chromedriver, &tools.chrome).await,
            axe: &tools.axe,
            shots,
            n: first_shot,
            violations: Vec::new(),
            _cores: cores,
        })
    }

    /// Takes `NN-{page}{suffix}.png`.
    async fn shot(&self, page: &str, suffix: &str) {
        let path = self.shots.join(format!("{:02}-{page}{suffix}.png", self.n));
        self.b.screenshot(&path).await;
    }

    /// The checks of every distinct page: the spec's structure, a screenshot, axe, and the same
    /// page at phone width (390x844) without horizontal scrolling.
    async fn check(&mut self, page: &str) {
        let shape = self
            .b
            .script(
                "return {lang: document.documentElement.lang, \
                 h1: document.querySelectorAll('h1').length, \
                 main: document.querySelectorAll('main').length, \
                 viewport: !!document.querySelector('meta[name=viewport]'), \
                 formsWithoutCsrf: [...document.forms].filter(f => f.method === 'post' \
                   && !f.querySelector('input[name=csrf]')).map(f => f.getAttribute('action'))}",
                json!([]),
            )
            .await;
        let expected = json!({"lang": "en", "h1": 1, "main": 1, "viewport": true,
            "formsWithoutCsrf": []});
        assert_eq!(shape, expected, "the page {page} ({})", self.b.url().await);
        self.shot(page, "").await;
        self.axe(page).await;
        self.b.set_window_size(390, 844).await;
        self.shot(page, "-phone").await;
        let widths = self
            .b
            .script(
                "return [document.documentElement.scrollWidth, window.innerWidth]",
                json!([]),
            )
            .await;
        self.b.set_window_size(1280, 900).await;
        assert!(
            widths[0].as_i64() <= widths[1].as_i64(),
            "the page {page} scrolls sideways at phone width: scrollWidth, innerWidth = {widths}"
        );
        self.n += 1;
    }

    /// Runs axe-core on the page (injected through WebDriver: the pages' CSP allows no script)
    /// and keeps its serious and critical violations.
    async fn axe(&mut self, page: &str) {
        if self.b.script("return typeof window.axe", json!([])).await != "object" {
            self.b.script(self.axe, json!([])).await;
        }
        let found = self
            .b
            .script_async(
                "const done = arguments[arguments.length - 1]; \
                 axe.run(document, {resultTypes: ['violations']}).then(r => done(r.violations \
                   .filter(v => v.impact === 'serious' || v.impact === 'critical') \
                   .map(v => ({id: v.id, impact: v.impact, help: v.help, \
                     nodes: v.nodes.map(n => n.target.join(' ') + '  ' + n.html.slice(0, 160))})))) \
                 .catch(e => done({error: String(e)}));",
                json!([]),
            )
            .await;
        let found = found
            .as_array()
            .unwrap_or_else(|| panic!("axe on {page}: {found}"));
        for v in found {
            let nodes: Vec<&str> = v["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(Value::as_str)
                .collect();
            let line = format!(
                "{page}: {} ({}): {}\n    {}",
                v["id"].as_str().unwrap(),
                v["impact"].as_str().unwrap(),
                v["help"].as_str().unwrap(),
                nodes.join("\n    ")
            );
            eprintln!("axe violation on {line}");
            self.violations.push(line);
        }
    }

    /// Fails on the accessibility violations found on the way.
    fn assert_accessible(&self) {
        assert!(
            self.violations.is_empty(),
            "serious or critical accessibility violations:\n{}",
            self.violations.join("\n")
        );
    }

    async fn h1(&self) -> String {
        self.b.find("h1").await.text().await.trim().to_string()
    }

    /// Asserts the page's `<h1>` and that it shows no errors.
    async fn at(&self, h1: &str) {
        let errors = match self.b.try_find("#errors").await {
            Some(e) => e.text().await,
            None => String::new(),
        };
        assert_eq!(
            (self.h1().await.as_str(), errors.as_str()),
            (h1, ""),
            "expected the page {h1:?} without errors at {}: {}",
            self.b.url().await,
            self.b.text().await
        );
    }

    /// Types `value` into the field `name` of the form posting to `action`.
    async fn fill(&self, action: &str, name: &str, value: &str) {
        let field = self
            .b
            .find(&format!("form[action=\"{action}\"] [name=\"{name}\"]"))
            .await;
        field.clear().await;
        field.send_keys(value).await;
    }

    /// Types `password` into every password field of the form posting to `action` (the password
    /// and its confirmation, whatever their names).
    async fn fill_passwords(&self, action: &str, password: &str) {
        let fields = self
            .b
            .find_all(&format!("form[action=\"{action}\"] input[type=password]"))
            .await;
        assert!(!fields.is_empty(), "no password field in the form {action}");
        for field in fields {
            field.clear().await;
            field.send_keys(password).await;
        }
    }

    /// Clicks the submit button of the form posting to `action` and waits for the next page.
    async fn submit(&self, action: &str) {
        let button = self
            .b
            .find(&format!("form[action=\"{action}\"] button[type=submit]"))
            .await;
        self.b
            .script("window.__before_submit = true", json!([]))
            .await;
        button.click().await;
        self.loaded().await;
    }

    /// Waits until the page that replaced the one marked `__before_submit` has loaded.
    async fn loaded(&self) {
        for _ in 0..200 {
            let state = self
                .b
                .script(
                    "return [!!window.__before_submit, document.readyState]",
                    json!([]),
                )
                .await;
            if state == json!([false, "complete"]) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!(
            "no new page loaded at {}: {}",
            self.b.url().await,
            self.b.text().await
        );
    }

    /// The HTTP status of the current page.
    async fn status(&self) -> i64 {
        let status = self
            .b
            .script(
                "return performance.getEntriesByType('navigation')[0].responseStatus",
                json!([]),
            )
            .await;
        status.as_i64().unwrap()
    }

    async fn value(&self, css: &str) -> String {
        self.b
            .find(css)
            .await
            .attr("value")
            .await
            .unwrap_or_default()
    }

    /// The text of the `#mfa` section: "On" or "Off".
    async fn mfa_state(&self) -> &'static str {
        let text = self.b.find("#mfa").await.text().await;
        let words: Vec<&str> = text.split(|c: char| !c.is_alphanumeric()).collect();
        match (words.contains(&"On"), words.contains(&"Off")) {
            (true, false) => "On",
            (false, true) => "Off",
            _ => panic!("#mfa should say On or Off: {text}"),
        }
    }
}

/// The link to `path` in the newest mail to `to` with `subject`, opened on `app` (the mail
/// says PUBLIC_URL, which is this server's default address, not the test's port).
async fn mailed_link(
    app: &TestApp,
    sink: &SmtpSink,
    to: &str,
    subject: &str,
    path: &str,
) -> String {
    let mail = sink.wait_for(to, subject, 1, WAIT).await.pop().unwrap();
    let link = format!("http://localhost:8000{path}?token=");
    assert!(mail.body().contains(&link), "{}", mail.body());
    let token = mail.link_token(path).unwrap();
    app.url(&format!("{path}?token={token}"))
}

/// Signs in through the form (as far as the page after it).
async fn sign_in(p: &Pages, app: &TestApp, email: &str, password: &str) {
    sign_in_at(p, &app.address, email, password).await;
}

/// Signs in through the form of the server at `site` (`http://host:port`).
async fn sign_in_at(p: &Pages, site: &str, email: &str, password: &str) {
    p.b.goto(&format!("{site}/sign-in")).await;
    p.fill("/sign-in", "email", email).await;
    p.fill_passwords("/sign-in", password).await;
    p.submit("/sign-in").await;
}

/// Signs out with the button on the account page.
async fn sign_out(p: &Pages, app: &TestApp) {
    sign_out_at(p, &app.address).await;
}

/// Signs out with the button on the account page of the server at `site`.
async fn sign_out_at(p: &Pages, site: &str) {
    p.b.goto(&format!("{site}/account")).await;
    p.submit("/sign-out").await;
    // spec-silent: the redirect may carry a query (a notice, say) after /sign-in.
    let url = p.b.url().await;
    assert!(url.starts_with(&format!("{site}/sign-in")), "{url}");
    p.at("Sign in").await;
    // Signed out: the account page sends the browser to sign in.
    p.b.goto(&format!("{site}/account")).await;
    assert!(
        p.b.url().await.starts_with(&format!("{site}/sign-in")),
        "{}",
        p.b.url().await
    );
}

#[tokio::test]
async fn a_person_registers_verifies_enrols_a_second_factor_and_resets_the_password() {
    let Some(mut p) = Pages::start(1).await else {
        return;
    };
    let sink = SmtpSink::start().await;
    let smtp = sink.url();
    let app = spawn_app_with(&[
        ("SMTP_URL", &smtp),
        ("MAIL_FROM", "Example App <no-reply@example.com>"),
        ("MAIL_RETRY_BASE_SECONDS", "1"),
        ("MAIL_RATE_LIMIT_SECONDS", "0"),
        ("REQUIRE_VERIFIED_EMAIL", "true"),
    ])
    .await;
    // The codes are computed on the server's clock, from before the first token is made.
    freeze_clock(&app);
    let email = unique_email();

    // Register.
    p.b.goto(&app.url("/register")).await;
    p.at("Create an account").await;
    p.check("register").await;
    p.fill("/register", "email", &email).await;
    p.fill("/register", "name", "Ada Browser").await;
    p.fill_passwords("/register", PASSWORD).await;
    p.submit("/register").await;
    // spec-silent: the "check your mail" page has no set <h1>; it has no form to register and
    // a link to sign in.
    assert!(
        p.b.try_find("#errors").await.is_none(),
        "{}",
        p.b.text().await
    );
    assert!(p.b.try_find("form[action=\"/register\"]").await.is_none());
    p.b.find("a[href^=\"/sign-in\"]").await;
    p.check("check-your-mail").await;

    // Unverified, signing in is refused.
    sign_in(&p, &app, &email, PASSWORD).await;
    assert!(
        p.b.try_find("#errors").await.is_some(),
        "{}",
        p.b.text().await
    );
    assert_eq!(p.status().await, 403);

    // Verify by the mailed link: a page with a button, then the confirmed page.
    p.b.goto(&mailed_link(&app, &sink, &email, VERIFY, "/verify-email").await)
        .await;
    p.at("Confirm your email address").await;
    p.check("verify-email").await;
    p.submit("/verify-email").await;
    assert!(
        p.b.try_find("#errors").await.is_none(),
        "{}",
        p.b.text().await
    );
    p.check("email-confirmed").await;
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM users WHERE email = $1 AND is_verified",
            &email
        )
        .await,
        1
    );

    // Sign in: the account page, no second factor yet.
    p.b.goto(&app.url("/sign-in")).await;
    p.at("Sign in").await;
    p.check("sign-in").await;
    sign_in(&p, &app, &email, PASSWORD).await;
    assert!(p.b.url().await.ends_with("/account"), "{}", p.b.url().await);
    p.at("Your account").await;
    assert_eq!(p.mfa_state().await, "Off");
    for section in [
        "#profile",
        "#email",
        "#password",
        "#mfa",
        "#sessions",
        "#delete",
    ] {
        p.b.find(section).await;
    }
    assert_eq!(
        p.b.find_all("#sessions tr[data-session-id][data-current=\"true\"]")
            .await
            .len(),
        1
    );
    p.check("account").await;

    // Enrol TOTP: the secret and the QR code, then the code of now.
    p.fill_passwords("/account/mfa/totp", PASSWORD).await;
    p.submit("/account/mfa/totp").await;
    p.at("Set up an authenticator app").await;
    p.b.find("#totp-qr svg").await;
    let secret: String =
        p.b.find("#totp-secret")
            .await
            .text()
            .await
            .split_whitespace()
            .collect();
    assert!(secret.len() >= 16, "{secret}");
    p.check("totp-setup").await;
    p.fill(
        "/account/mfa/totp/confirm",
        "code",
        &code_now(&app, &secret),
    )
    .await;
    p.submit("/account/mfa/totp/confirm").await;
    p.at("Your recovery codes").await;
    let mut codes = Vec::new();
    for code in p.b.find_all("#recovery-codes li code").await {
        codes.push(code.text().await.trim().to_string());
    }
    assert_eq!(codes.len(), 10, "{codes:?}");
    for code in &codes {
        let shape = code.len() == 11 && code.char_indices().all(|(i, c)| (i == 5) == (c == '-'));
        assert!(shape, "a recovery code is xxxxx-xxxxx: {code}");
    }
    p.check("recovery-codes").await;
    p.b.script("window.__before_submit = true", json!([])).await;
    p.b.find("main a[href=\"/account\"]").await.click().await;
    p.loaded().await;
    p.at("Your account").await;
    assert_eq!(p.mfa_state().await, "On");
    p.check("account-with-mfa").await;

    // Sign out, and in again: the second step takes a code of a later step.
    sign_out(&p, &app).await;
    sign_in(&p, &app, &email, PASSWORD).await;
    p.at("Two-step verification").await;
    p.check("sign-in-mfa").await;
    p.fill("/sign-in/mfa", "code", &next_code(&app, &secret))
        .await;
    p.submit("/sign-in/mfa").await;
    p.at("Your account").await;
    sign_out(&p, &app).await;

    // Forgot the password: the mailed link, a new password.
    p.b.goto(&app.url("/forgot-password")).await;
    p.at("Forgot your password?").await;
    p.check("forgot-password").await;
    p.fill("/forgot-password", "email", &email).await;
    p.submit("/forgot-password").await;
    assert!(
        p.b.try_find("#errors").await.is_none(),
        "{}",
        p.b.text().await
    );
    p.check("forgot-password-sent").await;
    p.b.goto(&mailed_link(&app, &sink, &email, RESET, "/reset-password").await)
        .await;
    p.at("Choose a new password").await;
    p.check("reset-password").await;
    p.fill_passwords("/reset-password", NEW_PASSWORD).await;
    p.submit("/reset-password").await;
    assert!(
        p.b.try_find("#errors").await.is_none(),
        "{}",
        p.b.text().await
    );
    p.b.find("a[href^=\"/sign-in\"]").await;
    p.check("password-reset").await;

    // The old password no longer works: the form again, the email kept, the password not.
    sign_in(&p, &app, &email, PASSWORD).await;
    assert_eq!(p.status().await, 401);
    assert_eq!(p.h1().await, "Sign in");
    assert!(!p.b.find("#errors").await.text().await.trim().is_empty());
    assert_eq!(
        p.value("form[action=\"/sign-in\"] [name=\"email\"]").await,
        email
    );
    assert_eq!(
        p.value("form[action=\"/sign-in\"] [name=\"password\"]")
            .await,
        ""
    );
    p.check("sign-in-error").await;

    // The new one does, with the code.
    sign_in(&p, &app, &email, NEW_PASSWORD).await;
    p.at("Two-step verification").await;
    p.fill("/sign-in/mfa", "code", &next_code(&app, &secret))
        .await;
    p.submit("/sign-in/mfa").await;
    p.at("Your account").await;
    assert_eq!(p.mfa_state().await, "On");

    p.assert_accessible();
}

/// What has the focus: its tag, name, type, the action of its form, and whether a focus ring
/// shows (an outline or a box shadow).
const FOCUSED: &str = "const e = document.activeElement; const s = getComputedStyle(e); \
    return {tag: e.tagName.toLowerCase(), name: e.getAttribute('name'), type: e.getAttribute('type'), \
      form: e.form ? e.form.getAttribute('action') : null, \
      ring: (s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) > 0) || s.boxShadow !== 'none'}";

#[tokio::test]
async fn signing_in_works_with_the_keyboard_alone() {
    let Some(p) = Pages::start(40).await else {
        return;
    };
    let app = spawn_app().await;
    let email = unique_email();
    app.register(&email, PASSWORD, "Kay Board").await;

    p.b.goto(&app.url("/sign-in")).await;
    // spec-silent: nothing has the focus when the page opens (no autofocus).
    assert_eq!(
        p.b.script("return document.activeElement === document.body", json!([]))
            .await,
        true
    );
    // Tab through the page: the email, the password, then the submit button, in that order
    // (links between them allowed), each with a visible focus ring.
    let mut order = Vec::new();
    for _ in 0..20 {
        p.b.keys(TAB).await;
        let focused = p.b.script(FOCUSED, json!([])).await;
        let what = match (
            focused["tag"].as_str(),
            focused["name"].as_str(),
            focused["form"].as_str(),
        ) {
            (Some("input"), Some("email"), Some("/sign-in")) => "email",
            (Some("input"), Some("password"), Some("/sign-in")) => "password",
            (Some("button"), _, Some("/sign-in")) if focused["type"] == "submit" => "submit",
            _ => continue,
        };
        assert_eq!(
            focused["ring"], true,
            "no visible focus on the {what} field: {focused}"
        );
        order.push(what);
        if what == "submit" {
            break;
        }
    }
    assert_eq!(
        order,
        ["email", "password", "submit"],
        "the focus order on /sign-in"
    );

    // From the top again: type into the fields reached by Tab, and submit with Enter.
    p.b.goto(&app.url("/sign-in")).await;
    p.b.script("window.__before_submit = true", json!([])).await;
    for (field, text) in [("email", email.as_str()), ("password", PASSWORD)] {
        for _ in 0..20 {
            p.b.keys(TAB).await;
            if p.b.script(FOCUSED, json!([])).await["name"] == field {
                break;
            }
        }
        p.b.keys(text).await;
    }
    p.b.keys(ENTER).await;
    p.loaded().await;
    p.at("Your account").await;
}

#[tokio::test]
async fn a_form_without_its_csrf_token_is_refused_and_changes_nothing() {
    let Some(mut p) = Pages::start(50).await else {
        return;
    };
    let app = spawn_app().await;
    let email = unique_email();
    app.register(&email, PASSWORD, "Cee Surf").await;
    sign_in(&p, &app, &email, PASSWORD).await;
    p.at("Your account").await;

    p.fill("/account/profile", "name", "Someone Else").await;
    let removed = p
        .b
        .script(
            "const i = document.querySelector('form[action=\"/account/profile\"] input[name=csrf]'); \
             if (!i) return false; i.remove(); return true;",
            json!([]),
        )
        .await;
    assert_eq!(removed, true, "the profile form carries a csrf field");
    p.submit("/account/profile").await;
    assert_eq!(p.status().await, 403);
    // The 403 page: "this form has expired or came from another site".
    let said = p.b.find("main").await.text().await.to_lowercase();
    assert!(said.contains("expired"), "{said}");
    p.check("form-expired").await;

    p.b.goto(&app.url("/account")).await;
    p.at("Your account").await;
    assert_eq!(
        p.value("form[action=\"/account/profile\"] [name=\"name\"]")
            .await,
        "Cee Surf"
    );
    assert_eq!(
        app.sql
            .text("SELECT name FROM users WHERE email = $1", &email)
            .await,
        "Cee Surf"
    );
    p.assert_accessible();
}

/// A server for the passkey tests: on `http://localhost:{port}` (WebAuthn needs a secure
/// context, which plain http is only on localhost, and a domain as its RP ID), with
/// WEBAUTHN_RP_ID=localhost and that origin allowed. The port is picked before the server starts
/// (the origin is configuration); should another process take it meanwhile, another is tried.
async fn spawn_app_on_localhost(extra: &[(&str, &str)]) -> (TestApp, String) {
    for _ in 0..5 {
        let port = free_port().to_string();
        let site = format!("http://localhost:{port}");
        let mut vars: Vec<(String, String)> = extra
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        vars.extend([
            ("PORT".to_string(), port),
            ("WEBAUTHN_RP_ID".to_string(), "localhost".to_string()),
            ("WEBAUTHN_ORIGINS".to_string(), site.clone()),
        ]);
        // A port taken meanwhile makes the start panic: in a task of its own, so that another
        // port can be tried.
        let started = tokio::spawn(async move {
            let vars: Vec<(&str, &str)> =
                vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            spawn_app_with(&vars).await
        })
        .await;
        if let Ok(app) = started {
            assert!(app.address.ends_with(&site["http://localhost".len()..]));
            return (app, site);
        }
    }
    panic!("no free port for the server on localhost");
}

/// Chromium's virtual authenticator as a platform one that holds passkeys and verifies the user.
const PLATFORM_AUTHENTICATOR: &str = r#"{"protocol": "ctap2", "transport": "internal",
    "hasResidentKey": true, "hasUserVerification": true, "isUserVerified": true}"#;

#[tokio::test]
async fn a_person_adds_a_passkey_and_signs_in_with_it_without_a_password() {
    let Some(mut p) = Pages::start(60).await else {
        return;
    };
    let sink = SmtpSink::start().await;
    let smtp = sink.url();
    let (app, site) = spawn_app_on_localhost(&[
        ("SMTP_URL", &smtp),
        ("MAIL_FROM", "Example App <no-reply@example.com>"),
        ("MAIL_RETRY_BASE_SECONDS", "1"),
        ("MAIL_RATE_LIMIT_SECONDS", "0"),
        ("REQUIRE_VERIFIED_EMAIL", "true"),
    ])
    .await;
    let at = |path: &str| format!("{site}{path}");
    let authenticator =
        p.b.add_virtual_authenticator(serde_json::from_str(PLATFORM_AUTHENTICATOR).unwrap())
            .await;
    let email = unique_email();

    // Register, and confirm the address by the mailed link.
    p.b.goto(&at("/register")).await;
    p.fill("/register", "email", &email).await;
    p.fill("/register", "name", "Pat Key").await;
    p.fill_passwords("/register", PASSWORD).await;
    p.submit("/register").await;
    assert!(
        p.b.try_find("#errors").await.is_none(),
        "{}",
        p.b.text().await
    );
    let link = mailed_link(&app, &sink, &email, VERIFY, "/verify-email").await;
    p.b.goto(&link.replacen(&app.address, &site, 1)).await;
    p.at("Confirm your email address").await;
    p.submit("/verify-email").await;
    assert!(
        p.b.try_find("#errors").await.is_none(),
        "{}",
        p.b.text().await
    );

    // The sign-in page offers passkeys: the email field's autofill, and the button (shown by
    // the script).
    p.b.goto(&at("/sign-in")).await;
    p.at("Sign in").await;
    assert_eq!(
        p.b.find("#sign-in-email")
            .await
            .attr("autocomplete")
            .await
            .as_deref(),
        Some("username webauthn")
    );
    let shown = "return !document.getElementById('passkey-sign-in').closest('[hidden]')";
    assert_eq!(p.b.script(shown, json!([])).await, true);

    // Sign in with the password: no passkey yet.
    sign_in_at(&p, &site, &email, PASSWORD).await;
    assert_eq!(p.b.url().await, at("/account"));
    p.at("Your account").await;
    p.b.find("#passkeys #passkeys-none").await;

    // A wrong password: the script says so in the form (role=alert), by the field.
    p.fill("/account/passkeys", "name", "Work laptop").await;
    p.fill_passwords("/account/passkeys", "not the password")
        .await;
    p.b.find("form[action=\"/account/passkeys\"] button[type=submit]")
        .await
        .click()
        .await;
    let said = "const f = document.getElementById('passkey-add'); \
                const alert = f.querySelector('[role=alert]'); \
                return alert.hidden ? null : [alert.textContent, \
                  f.elements.password.getAttribute('aria-invalid')]";
    let mut shown = Value::Null;
    for _ in 0..100 {
        shown = p.b.script(said, json!([])).await;
        if !shown.is_null() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(shown, json!(["The password is wrong.", "true"]));
    assert!(
        p.b.authenticator_credentials(&authenticator)
            .await
            .is_empty()
    );

    // Add one: the password, a name; the script asks the authenticator.
    p.fill_passwords("/account/passkeys", PASSWORD).await;
    p.submit("/account/passkeys").await;
    p.at("Your account").await;
    assert!(
        p.b.find("#notice")
            .await
            .text()
            .await
            .contains("Passkey added"),
        "{}",
        p.b.text().await
    );
    let listed = p.b.find_all("#passkey-list li[data-passkey-id]").await;
    assert_eq!(listed.len(), 1, "{}", p.b.text().await);
    assert_eq!(
        p.b.find("#passkey-list .passkey-name").await.text().await,
        "Work laptop"
    );
    assert!(
        p.b.try_find("#passkey-list .passkey-last-used")
            .await
            .is_none()
    );
    // The authenticator holds it as a discoverable credential for this RP ID, for this account.
    let credentials = p.b.authenticator_credentials(&authenticator).await;
    assert_eq!(credentials.len(), 1, "{credentials:?}");
    assert_eq!(credentials[0]["rpId"], "localhost");
    assert_eq!(credentials[0]["isResidentCredential"], true);
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM passkeys WHERE user_id = \
             (SELECT id FROM users WHERE email = $1) AND user_verified",
            &email
        )
        .await,
        1
    );
    p.b.script(SHOW_PASSKEYS, json!([])).await;
    p.check("account-passkey-added").await;

    // Sign out, and in again with the button: no email, no password (a discoverable passkey).
    // Chromium's virtual authenticator answers the autofill's (conditional) request by itself,
    // where a person would pick the passkey in the email field's list: first, as a browser
    // without that autofill, for the button.
    let without_autofill =
        p.b.cdp(
            "Page.addScriptToEvaluateOnNewDocument",
            json!({"source": NO_CONDITIONAL_MEDIATION}),
        )
        .await;
    sign_out_at(&p, &site).await;
    p.b.goto(&at("/sign-in")).await;
    p.at("Sign in").await;
    p.check("sign-in-with-passkeys").await;
    p.b.script("window.__before_submit = true", json!([])).await;
    p.b.find("#passkey-sign-in").await.click().await;
    p.loaded().await;
    assert_eq!(p.b.url().await, at("/account"), "{}", p.b.text().await);
    p.at("Your account").await;
    // Listed, with the time it was last used.
    let last_used = p.b.find("#passkey-list .passkey-last-used").await;
    assert!(
        last_used
            .attr("datetime")
            .await
            .is_some_and(|t| t.len() >= 20),
        "{}",
        p.b.text().await
    );
    p.b.script(SHOW_PASSKEYS, json!([])).await;
    p.check("account-signed-in-with-passkey").await;
    // The session is the passkey's: a second factor passed (user verified) without a password.
    let amr = live_amr(&app, &email).await;
    assert!(
        amr.split_whitespace().all(|m| m != "pwd") && amr.contains("mfa"),
        "{amr}"
    );

    // Then with the autofill: signed out, the sign-in page signs in by itself (the
    // authenticator having "picked" the passkey offered in the email field).
    p.b.cdp(
        "Page.removeScriptToEvaluateOnNewDocument",
        json!({"identifier": without_autofill["identifier"]}),
    )
    .await;
    p.b.goto(&at("/account")).await;
    p.submit("/sign-out").await;
    let mut url = String::new();
    for _ in 0..200 {
        url = p.b.url().await;
        if url == at("/account") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(url, at("/account"), "{}", p.b.text().await);
    p.at("Your account").await;
    let amr = live_amr(&app, &email).await;
    assert!(!amr.contains("pwd") && amr.contains("mfa"), "{amr}");

    // Rename it: "Rename or remove" opens its forms.
    let id =
        p.b.find("#passkey-list li[data-passkey-id]")
            .await
            .attr("data-passkey-id")
            .await
            .unwrap();
    p.b.find("#passkey-list summary").await.click().await;
    p.b.script(SHOW_PASSKEYS, json!([])).await;
    p.check("account-passkey-rename-or-remove").await;
    let rename = format!("/account/passkeys/{id}/rename");
    p.fill(&rename, "name", "Old laptop").await;
    p.submit(&rename).await;
    p.at("Your account").await;
    assert!(
        p.b.find("#notice").await.text().await.contains("renamed"),
        "{}",
        p.b.text().await
    );
    assert_eq!(
        p.b.find("#passkey-list .passkey-name").await.text().await,
        "Old laptop"
    );

    // The password and the passkey: the passkey is the second step (again as a browser
    // without the autofill, which would sign in with the passkey alone).
    let without_autofill =
        p.b.cdp(
            "Page.addScriptToEvaluateOnNewDocument",
            json!({"source": NO_CONDITIONAL_MEDIATION}),
        )
        .await;
    sign_out_at(&p, &site).await;
    sign_in_at(&p, &site, &email, PASSWORD).await;
    p.at("Two-step verification").await;
    assert!(p.b.try_find("#sign-in-mfa-code").await.is_none());
    p.check("sign-in-second-step-passkey").await;
    p.b.script("window.__before_submit = true", json!([])).await;
    p.b.find("#passkey-mfa").await.click().await;
    p.loaded().await;
    assert_eq!(p.b.url().await, at("/account"), "{}", p.b.text().await);
    p.at("Your account").await;
    let amr = live_amr(&app, &email).await;
    assert!(amr.contains("pwd") && amr.contains("mfa"), "{amr}");
    p.b.cdp(
        "Page.removeScriptToEvaluateOnNewDocument",
        json!({"identifier": without_autofill["identifier"]}),
    )
    .await;

    // Later (past MFA_STEP_UP_SECONDS), removing the password: the script proves the passkey
    // first (a step-up), then posts the form.
    app.clock.advance(std::time::Duration::from_secs(301));
    p.b.goto(&at("/account")).await;
    let step_up = "return Object.fromEntries([...document.querySelectorAll('form[data-step-up]')] \
                   .map(f => [f.getAttribute('action'), f.dataset.stepUp]))";
    let step_up = p.b.script(step_up, json!([])).await;
    assert_eq!(step_up["/account/password/remove"], "always", "{step_up}");
    assert_eq!(step_up["/account/passkeys"], "unless-code", "{step_up}");
    assert_eq!(step_up["/account/delete"], "unless-code", "{step_up}");
    p.submit("/account/password/remove").await;
    p.at("Your account").await;
    assert!(
        p.b.find("#notice")
            .await
            .text()
            .await
            .contains("password has been removed"),
        "{}",
        p.b.text().await
    );
    // No form asks for a password now; the password's form sets one.
    assert!(
        p.b.find_all("input[autocomplete=current-password]")
            .await
            .is_empty()
    );
    assert_eq!(
        p.b.find("form[action=\"/account/password\"] button[type=submit]")
            .await
            .text()
            .await,
        "Set a password"
    );
    assert!(
        p.b.try_find("form[action=\"/account/password/remove\"]")
            .await
            .is_none()
    );
    p.b.script(SHOW_PASSKEYS, json!([])).await;
    p.check("account-without-a-password").await;

    // Its last passkey cannot be removed: the page says why, with 409.
    p.b.find("#passkey-list summary").await.click().await;
    let delete = format!("/account/passkeys/{id}/delete");
    p.submit(&delete).await;
    assert_eq!(p.status().await, 409);
    let errors = p.b.find("#errors").await.text().await;
    assert!(errors.contains("without a way to sign in"), "{errors}");
    p.check("account-last-passkey").await;
    assert_eq!(p.b.authenticator_credentials(&authenticator).await.len(), 1);
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM passkeys WHERE user_id = \
             (SELECT id FROM users WHERE email = $1)",
            &email
        )
        .await,
        1
    );

    p.assert_accessible();
}

/// What a page sees of a browser without the passkeys' autofill (conditional mediation).
const NO_CONDITIONAL_MEDIATION: &str = "if (window.PublicKeyCredential) \
    PublicKeyCredential.isConditionalMediationAvailable = async () => false;";

/// The `amr` of the account's one live session.
async fn live_amr(app: &TestApp, email: &str) -> String {
    let live = app
        .count(
            "SELECT COUNT(*) FROM sessions WHERE revoked_at IS NULL AND user_id = \
             (SELECT id FROM users WHERE email = $1)",
            email,
        )
        .await;
    assert_eq!(live, 1, "one live session");
    app.sql
        .text(
            "SELECT amr FROM sessions WHERE revoked_at IS NULL AND user_id = \
             (SELECT id FROM users WHERE email = $1)",
            email,
        )
        .await
}

/// Scrolls the account page to its passkeys (for the screenshot).
const SHOW_PASSKEYS: &str = "document.getElementById('passkeys').scrollIntoView()";

// ---------------------------------------------------------------------------------------------
// The harness itself, on pages that exist whatever the state of the pages for people.

#[tokio::test]
async fn the_harness_drives_chromium_on_the_docs_page() {
    let Some(p) = Pages::start(0).await else {
        return;
    };
    let app = spawn_app().await;
    p.b.goto(&app.url("/docs/")).await;
    assert!(
        p.b.url().await.starts_with(&app.url("/docs")),
        "{}",
        p.b.url().await
    );
    assert_eq!(p.b.title().await, "Swagger UI");
    // Swagger UI renders the document with scripts of its own: wait for the operations.
    let mut seen = 0;
    for _ in 0..200 {
        seen = p.b.find_all(".opblock").await.len();
        if seen > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(seen > 5, "Swagger UI shows the operations: {seen}");
    assert!(
        p.b.find(".info .title").await.text().await.contains("auth"),
        "{}",
        p.b.text().await
    );
    assert_eq!(p.b.script("return arguments[0] + 1", json!([41])).await, 42);
    let later = "const done = arguments[arguments.length - 1]; setTimeout(() => done('later'), 10)";
    assert_eq!(p.b.script_async(later, json!([])).await, "later");
    p.shot("docs", "").await;
    p.b.set_window_size(390, 844).await;
    assert_eq!(p.b.script("return window.innerWidth", json!([])).await, 390);
    p.shot("docs", "-phone").await;
    let png = std::fs::read(p.shots.join("00-docs.png")).unwrap();
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
        "{}",
        png.len()
    );
}

/// Serves `page` (whatever the path) under the pages' own Content-Security-Policy.
async fn serve_under_the_pages_csp(page: &'static str) -> String {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut stream = tokio::io::BufReader::new(stream);
                let mut line = String::new();
                while stream.read_line(&mut line).await.is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\
                     Content-Security-Policy: default-src 'none'; script-src 'self'; \
                     connect-src 'self'; style-src 'self'; img-src 'self' data:; \
                     form-action 'self'; frame-ancestors 'none'; base-uri 'none'\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{page}",
                    page.len()
                );
                let _ = stream.get_mut().write_all(response.as_bytes()).await;
            });
        }
    });
    address
}

#[tokio::test]
async fn axe_runs_under_the_pages_csp_and_finds_what_is_wrong() {
    let Some(mut p) = Pages::start(0).await else {
        return;
    };
    let fine = serve_under_the_pages_csp(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Fine</title>\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"></head><body><main>\
         <h1>Fine</h1><form action=\"/echo\" method=\"get\"><label for=\"q\">Query</label>\
         <input id=\"q\" name=\"q\"><button type=\"submit\">Go</button></form>\
         <script>document.body.dataset.inline = 'ran'</script></main></body></html>",
    )
    .await;
    p.b.goto(&format!("{fine}/")).await;
    // The CSP holds: the page's own script did not run; the injected axe does.
    assert_eq!(
        p.b.script("return document.body.dataset.inline || null", json!([]))
            .await,
        Value::Null
    );
    p.axe("fine").await;
    assert!(p.violations.is_empty(), "{:?}", p.violations);
    assert_eq!(
        p.b.script("return typeof window.axe", json!([])).await,
        "object"
    );
    // Typing, Tab and a click on the page.
    p.b.keys(TAB).await;
    assert_eq!(p.b.script(FOCUSED, json!([])).await["name"], "q");
    p.b.find("#q").await.send_keys("hello").await;
    p.b.script("window.__before_submit = true", json!([])).await;
    p.b.find("button[type=submit]").await.click().await;
    p.loaded().await;
    assert_eq!(p.b.url().await, format!("{fine}/echo?q=hello"));

    let broken = serve_under_the_pages_csp(
        "<!doctype html><html><head><title>Broken</title></head><body>\
         <img src=\"data:image/gif;base64,R0lGODlhAQABAAAAACw=\"><input name=\"q\"></body></html>",
    )
    .await;
    p.b.goto(&format!("{broken}/")).await;
    p.axe("broken").await;
    let found = p.violations.join("\n");
    for id in ["html-has-lang", "image-alt", "label"] {
        assert!(
            found.contains(&format!("broken: {id} (")),
            "axe finds {id}: {found}"
        );
    }
}
