//! A minimal W3C WebDriver client (over reqwest and serde_json): a `chromedriver` of the test's
//! own (an [`OwnedChild`] on a port it picks itself), one headless Chromium session on it, and
//! the few commands the browser tests use. The session is deleted when the [`Browser`] is
//! dropped (Chromium quits), then the driver is killed.

use std::io::{BufRead, Read, Write};
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::OwnedChild;

/// The key of an element reference in WebDriver's JSON.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
pub const TAB: &str = "\u{E004}";
pub const ENTER: &str = "\u{E007}";

pub struct Browser {
    http: reqwest::Client,
    /// `http://127.0.0.1:{port}`: the driver.
    driver_url: String,
    /// `{driver_url}/session/{id}`.
    session: String,
    _driver: OwnedChild,
}

/// An element of the current page.
pub struct Element<'a> {
    browser: &'a Browser,
    id: String,
}

impl Browser {
    /// Starts `chromedriver` and a headless `chrome` session on it, 1280x900.
    pub async fn start(chromedriver: &Path, chrome: &Path) -> Browser {
        let mut command = std::process::Command::new(chromedriver);
        command
            .args(["--port=0", "--log-level=SEVERE"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null());
        let driver = OwnedChild::spawn(command);
        // It says which port it took, then keeps its stdout: drained on a thread to its end.
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let mut stdout = std::io::BufReader::new(driver.take_stdout());
        std::thread::spawn(move || {
            let mut line = String::new();
            while stdout.read_line(&mut line).is_ok_and(|n| n > 0) {
                if let Some(rest) = line.split("started successfully on port ").nth(1) {
                    let _ = port_tx.send(rest.trim().trim_end_matches('.').to_string());
                }
                line.clear();
            }
        });
        let mut port = None;
        for _ in 0..400 {
            match port_rx.try_recv() {
                Ok(p) => port = Some(p),
                Err(std::sync::mpsc::TryRecvError::Empty) => {}
                Err(std::sync::mpsc::TryRecvError::Disconnected) => break,
            }
            if port.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let port =
            port.unwrap_or_else(|| panic!("{} did not say its port", chromedriver.display()));
        let driver_url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        for _ in 0..200 {
            let status = http.get(format!("{driver_url}/status")).send().await;
            if let Ok(r) = status
                && let Ok(body) = r.json::<Value>().await
                && body["value"]["ready"] == true
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--window-size=1280,900",
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chrome, "args": args},
        }}});
        let mut browser = Browser {
            http,
            session: String::new(),
            driver_url,
            _driver: driver,
        };
        let created = browser.raw(Method::POST, "/session", Some(caps)).await;
        let id = created
            .as_ref()
            .ok()
            .and_then(|v| v["sessionId"].as_str())
            .unwrap_or_else(|| panic!("no WebDriver session: {created:?}"));
        browser.session = format!("{}/session/{id}", browser.driver_url);
        browser
    }

    async fn raw(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value, Value> {
        let url = if path.starts_with("/session") {
            format!("{}{path}", self.driver_url)
        } else {
            format!("{}{path}", self.session)
        };
        let request = self.http.request(method.clone(), &url);
        let request = match body {
            Some(body) => request.json(&body),
            None => request,
        };
        let response = request.send().await.map_err(|e| json!(e.to_string()))?;
        let ok = response.status().is_success();
        let value = response
            .json::<Value>()
            .await
            .map_err(|e| json!(e.to_string()))?["value"]
            .take();
        if ok { Ok(value) } else { Err(value) }
    }

    /// A command of this session (`path` after `/session/{id}`), panicking on a WebDriver error.
    pub async fn cmd(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        self.raw(method.clone(), path, body)
            .await
            .unwrap_or_else(|e| {
                panic!("WebDriver {method} {path}: {} {}", e["error"], e["message"])
            })
    }

    pub async fn goto(&self, url: &str) {
        self.cmd(Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    pub async fn url(&self) -> String {
        self.cmd(Method::GET, "/url", None)
            .await
            .as_str()
            .unwrap()
            .to_string()
    }

    pub async fn title(&self) -> String {
        self.cmd(Method::GET, "/title", None)
            .await
            .as_str()
            .unwrap()
            .to_string()
    }

    /// The first element matching `css`, if any.
    pub async fn try_find(&self, css: &str) -> Option<Element<'_>> {
        let body = json!({"using": "css selector", "value": css});
        let found = self.raw(Method::POST, "/element", Some(body)).await.ok()?;
        Some(self.element(&found))
    }

    /// The first element matching `css`; panics (saying where the browser is) if there is none.
    pub async fn find(&self, css: &str) -> Element<'_> {
        match self.try_find(css).await {
            Some(e) => e,
            None => panic!("no `{css}` on {}: {}", self.url().await, self.text().await),
        }
    }

    pub async fn find_all(&self, css: &str) -> Vec<Element<'_>> {
        let body = json!({"using": "css selector", "value": css});
        let found = self.cmd(Method::POST, "/elements", Some(body)).await;
        found
            .as_array()
            .unwrap()
            .iter()
            .map(|e| self.element(e))
            .collect()
    }

    fn element(&self, value: &Value) -> Element<'_> {
        let id = value[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("an element reference: {value}"));
        Element {
            browser: self,
            id: id.to_string(),
        }
    }

    /// The page's visible text.
    pub async fn text(&self) -> String {
        self.script(
            "return document.body ? document.body.innerText : ''",
            json!([]),
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_string()
    }

    /// Runs `body` (a function body; `arguments` are `args`) and returns what it returns.
    pub async fn script(&self, body: &str, args: Value) -> Value {
        let script = json!({"script": body, "args": args});
        self.cmd(Method::POST, "/execute/sync", Some(script)).await
    }

    /// Runs `body` asynchronously: it calls `arguments[arguments.length - 1]` with its result.
    pub async fn script_async(&self, body: &str, args: Value) -> Value {
        let script = json!({"script": body, "args": args});
        self.cmd(Method::POST, "/execute/async", Some(script)).await
    }

    /// Presses and releases each key of `keys` (`TAB`, `ENTER`, or text) on the focused element.
    pub async fn keys(&self, keys: &str) {
        let actions: Vec<Value> = keys
            .chars()
            .flat_map(|k| {
                [
                    json!({"type": "keyDown", "value": k}),
                    json!({"type": "keyUp", "value": k}),
                ]
            })
            .collect();
        let body = json!({"actions": [{"type": "key", "id": "keyboard", "actions": actions}]});
        self.cmd(Method::POST, "/actions", Some(body)).await;
    }

    /// Saves a screenshot of the viewport as PNG at `path`.
    pub async fn screenshot(&self, path: &Path) {
        let png = self.cmd(Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .expect("base64 PNG");
        std::fs::write(path, png).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }

    /// Adds a virtual authenticator (WebDriver's WebAuthn extension) with `options`
    /// (`protocol`, `transport`, `hasResidentKey`, ...) and returns its id. The page's
    /// `navigator.credentials` then talks to it, and it consents by itself.
    pub async fn add_virtual_authenticator(&self, options: Value) -> String {
        let id = self
            .cmd(Method::POST, "/webauthn/authenticator", Some(options))
            .await;
        id.as_str()
            .unwrap_or_else(|| panic!("an authenticator id: {id}"))
            .to_string()
    }

    /// The credentials a virtual authenticator holds (`credentialId`, `isResidentCredential`,
    /// `rpId`, `userHandle`, `signCount`, ...).
    pub async fn authenticator_credentials(&self, authenticator: &str) -> Vec<Value> {
        let path = format!("/webauthn/authenticator/{authenticator}/credentials");
        match self.cmd(Method::GET, &path, None).await {
            Value::Array(credentials) => credentials,
            other => panic!("credentials: {other}"),
        }
    }

    /// A Chrome DevTools Protocol command (chromedriver's `goog/cdp/execute`).
    pub async fn cdp(&self, command: &str, params: Value) -> Value {
        let body = json!({"cmd": command, "params": params});
        self.cmd(Method::POST, "/goog/cdp/execute", Some(body))
            .await
    }

    pub async fn set_window_size(&self, width: u32, height: u32) {
        let body = json!({"width": width, "height": height});
        self.cmd(Method::POST, "/window/rect", Some(body)).await;
    }
}

impl Element<'_> {
    async fn cmd(&self, method: Method, what: &str, body: Option<Value>) -> Value {
        let path = format!("/element/{}{what}", self.id);
        self.browser.cmd(method, &path, body).await
    }

    pub async fn send_keys(&self, text: &str) {
        self.cmd(Method::POST, "/value", Some(json!({"text": text})))
            .await;
    }

    pub async fn clear(&self) {
        self.cmd(Method::POST, "/clear", Some(json!({}))).await;
    }

    pub async fn click(&self) {
        self.cmd(Method::POST, "/click", Some(json!({}))).await;
    }

    pub async fn text(&self) -> String {
        self.cmd(Method::GET, "/text", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The attribute `name` (a live property where WebDriver says so, like `value`).
    pub async fn attr(&self, name: &str) -> Option<String> {
        let value = self
            .cmd(Method::GET, &format!("/attribute/{name}"), None)
            .await;
        value.as_str().map(str::to_string)
    }
}

impl Drop for Browser {
    /// Deletes the session (Chromium quits) over a plain blocking request: no runtime in a drop.
    fn drop(&mut self) {
        let Some(path) = self.session.strip_prefix(&self.driver_url) else {
            return;
        };
        let Ok(mut stream) =
            std::net::TcpStream::connect(self.driver_url.trim_start_matches("http://"))
        else {
            return;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        let request = format!(
            "DELETE {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        if stream.write_all(request.as_bytes()).is_err() {
            return;
        }
        // The answer is read to its end (the driver may keep the connection open).
        let (mut answer, mut chunk) = (Vec::new(), [0u8; 4096]);
        while let Ok(n @ 1..) = stream.read(&mut chunk) {
            answer.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&answer);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap_or(0))
                    })
                    .unwrap_or(0);
                if body.len() >= length {
                    return;
                }
            }
        }
    }
}
