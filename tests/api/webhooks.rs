//! Webhooks: endpoints registered by superusers receive the security events, signed the Standard
//! Webhooks way (checked here with Standard Webhooks' own library), through a durable outbox:
//! retried with backoff, kept across restarts, logged, redelivered by hand; never sent to a
//! private or loopback address unless WEBHOOK_ALLOW_PRIVATE_NETWORKS says so, never following a
//! redirect. The receiver is a small server in the test process, on 127.0.0.1 (hence the
//! setting in most tests).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode as AxumStatus, Uri, header};
use axum::response::{IntoResponse, Response as AxumResponse};
use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};

use crate::helpers::*;

/// Long enough for a few retries at WEBHOOK_RETRY_BASE_SECONDS=1 on a busy machine.
const WAIT: Duration = Duration::from_secs(30);

// ------------------------------------------------------------------------------------------------
// The receiver.

/// How the receiver answers a request.
#[derive(Clone, Debug)]
enum Answer {
    Status(u16),
    /// 307 to this path.
    Redirect(&'static str),
}

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Received {
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

impl Received {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    /// Whether Standard Webhooks' verifier accepts it under `secret`.
    fn verifies_with(&self, secret: &str) -> bool {
        let verifier = standardwebhooks::Webhook::new(secret).expect("a whsec_ secret");
        verifier.verify(&self.body, &self.headers).is_ok()
    }
}

#[derive(Default)]
struct ReceiverState {
    received: Mutex<Vec<Received>>,
    /// Answers for the next requests, in order; then `otherwise`.
    script: Mutex<VecDeque<Answer>>,
    otherwise: Mutex<Option<Answer>>,
}

/// A webhook receiver on 127.0.0.1: records every request and answers as scripted (200 by
/// default). Stops when dropped.
struct Receiver {
    addr: SocketAddr,
    state: Arc<ReceiverState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    async fn start() -> Self {
        let state = Arc::new(ReceiverState::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = state.clone();
        let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: Bytes| {
            let state = shared.clone();
            async move { answer(&state, uri, headers, body) }
        });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, state, task }
    }

    /// `http://127.0.0.1:port{path}`.
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Answers the next requests with these statuses, in order.
    fn then(&self, answers: impl IntoIterator<Item = Answer>) {
        self.state.script.lock().unwrap().extend(answers);
    }

    /// Answers every request not scripted with `answer` (200 when never set).
    fn always(&self, answer: Answer) {
        *self.state.otherwise.lock().unwrap() = Some(answer);
    }

    fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    /// The requests to `path`.
    fn at(&self, path: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }

    /// Waits until `path` has had `count` requests; returns them.
    async fn wait_for(&self, path: &str, count: usize) -> Vec<Received> {
        eventually(
            &format!("{count} requests at {path}"),
            WAIT,
            || async { self.at(path) },
            |got| got.len() >= count,
        )
        .await
    }
}

fn answer(state: &ReceiverState, uri: Uri, headers: HeaderMap, body: Bytes) -> AxumResponse {
    state.received.lock().unwrap().push(Received {
        path: uri.path().to_string(),
        headers,
        body,
    });
    let scripted = state.script.lock().unwrap().pop_front();
    let answer = scripted
        .or_else(|| state.otherwise.lock().unwrap().clone())
        .unwrap_or(Answer::Status(200));
    match answer {
        Answer::Status(status) => AxumStatus::from_u16(status).unwrap().into_response(),
        Answer::Redirect(to) => {
            (AxumStatus::TEMPORARY_REDIRECT, [(header::LOCATION, to)]).into_response()
        }
    }
}

// ------------------------------------------------------------------------------------------------
// The server side.

/// A server that may deliver to the receiver on 127.0.0.1, retrying after about a second.
async fn hooks_app(extra: &[(&str, &str)]) -> TestApp {
    let mut vars = vec![
        ("WEBHOOK_ALLOW_PRIVATE_NETWORKS", "true"),
        ("WEBHOOK_RETRY_BASE_SECONDS", "1"),
    ];
    vars.extend_from_slice(extra);
    spawn_app_with(&vars).await
}

async fn call(
    app: &TestApp,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Response {
    let mut request = app.client.request(method, app.url(path)).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap()
}

async fn create(app: &TestApp, token: &str, body: Value) -> Response {
    call(app, token, Method::POST, "/webhooks", Some(body)).await
}

/// Registers `url` for `types`; the answer (with its secret).
async fn create_ok(app: &TestApp, token: &str, url: &str, types: &[&str]) -> Value {
    let response = create(app, token, json!({"url": url, "event_types": types})).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    response.json().await.unwrap()
}

async fn get_ok(app: &TestApp, token: &str, path: &str) -> Value {
    let response = call(app, token, Method::GET, path, None).await;
    assert_eq!(response.status(), StatusCode::OK, "GET {path}");
    response.json().await.unwrap()
}

/// The endpoint's delivery log (the first page), newest first.
async fn deliveries(app: &TestApp, token: &str, id: &str) -> Vec<Value> {
    let page = get_ok(app, token, &format!("/webhooks/{id}/deliveries")).await;
    page["items"].as_array().unwrap().clone()
}

/// Waits until the endpoint's newest delivery satisfies `done`; returns it.
async fn wait_delivery(
    app: &TestApp,
    token: &str,
    id: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    eventually(
        what,
        WAIT,
        || async {
            deliveries(app, token, id)
                .await
                .first()
                .cloned()
                .unwrap_or(Value::Null)
        },
        |d| !d.is_null() && done(d),
    )
    .await
}

/// GET /metrics.
async fn scrape(app: &TestApp) -> String {
    let response = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.text().await.unwrap()
}

/// Registers an account: a `user.created` event. Its id.
async fn new_account(app: &TestApp) -> String {
    let response = app.register(&unique_email(), PASSWORD, "Hooked").await;
    assert_eq!(response.status(), StatusCode::CREATED);
    response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The id of the `user.created` event of `user_id`: the webhook-id of its deliveries.
async fn created_event_id(app: &TestApp, user_id: &str) -> String {
    app.sql
        .text(
            "SELECT id FROM security_events WHERE type = 'user.created' AND user_id = $1",
            user_id,
        )
        .await
}

// ------------------------------------------------------------------------------------------------
// Delivery.

#[tokio::test]
async fn an_event_is_delivered_signed_with_the_standard_headers() {
    let receiver = Receiver::start().await;
    let app = hooks_app(&[]).await;
    let (admin, tokens) = app.superuser().await;
    let endpoint = create_ok(
        &app,
        &tokens.access,
        &receiver.url("/hook?source=auth"),
        &["user.created"],
    )
    .await;
    let secret = endpoint["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"), "{secret}");
    assert_eq!(endpoint["event_types"], json!(["user.created"]));
    assert_eq!(endpoint["enabled"], true);
    assert_eq!(endpoint["created_by"], admin["id"]);

    let user_id = new_account(&app).await;
    let got = receiver.wait_for("/hook", 1).await;
    assert_eq!(got.len(), 1, "one event, one request: {got:?}");
    let request = &got[0];
    let event_id = created_event_id(&app, &user_id).await;

    // The headers of Standard Webhooks, and an independent verifier's word on the signature.
    assert_eq!(request.header("webhook-id"), event_id);
    let timestamp: i64 = request.header("webhook-timestamp").parse().unwrap();
    assert!((timestamp - app.clock.now_s()).abs() < 300, "{timestamp}");
    assert!(request.header("webhook-signature").starts_with("v1,"));
    assert_eq!(request.header("content-type"), "application/json");
    assert!(
        request
            .header("user-agent")
            .starts_with("auth-server-webhooks/")
    );
    assert!(request.verifies_with(&secret));
    let other = format!("whsec_{}", "A".repeat(43) + "=");
    assert!(
        !request.verifies_with(&other),
        "the verifier checks something"
    );

    // The payload: the event.
    let payload = request.json();
    assert_eq!(payload["type"], "user.created");
    assert_eq!(payload["data"]["id"], event_id.as_str());
    assert_eq!(payload["data"]["user_id"], user_id.as_str());
    assert_eq!(payload["data"]["ip"], "127.0.0.1");
    assert_eq!(payload["data"]["detail"]["via"], "registration");
    let at = chrono::DateTime::parse_from_rfc3339(payload["timestamp"].as_str().unwrap()).unwrap();
    assert!((at.timestamp() - timestamp).abs() < 60);

    // The log.
    let id = endpoint["id"].as_str().unwrap();
    let delivery = wait_delivery(&app, &tokens.access, id, "delivered", |d| {
        d["status"] == "delivered"
    })
    .await;
    assert_eq!(delivery["event_id"], event_id.as_str());
    assert_eq!(delivery["event_type"], "user.created");
    assert_eq!(delivery["attempts"], 1);
    assert_eq!(delivery["last_status"], 200);
    assert!(delivery["last_error"].is_null());
    assert!(delivery["next_attempt_at"].is_null());
    assert!(delivery["delivered_at"].is_string());
    assert_eq!(app.state.webhook_counters.snapshot().delivered, 1);
}

#[tokio::test]
async fn an_endpoint_gets_only_the_types_it_subscribed_to() {
    let receiver = Receiver::start().await;
    let app = hooks_app(&[]).await;
    let (_, tokens) = app.superuser().await;
    let token = &tokens.access;
    let sign_ins = create_ok(&app, token, &receiver.url("/sign-ins"), &["user.signed_in"]).await;
    let some = create_ok(
        &app,
        token,
        &receiver.url("/some"),
        &["user.created", "webhook.updated"],
    )
    .await;
    let every = create_ok(&app, token, &receiver.url("/every"), &["*"]).await;
    let paused = create_ok(&app, token, &receiver.url("/paused"), &["*"]).await;
    let paused_id = paused["id"].as_str().unwrap();
    let response = call(
        &app,
        token,
        Method::PATCH,
        &format!("/webhooks/{paused_id}"),
        Some(json!({"enabled": false})),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    // `every` has seen itself and `paused` created, and `paused` updated (an endpoint subscribed
    // to webhook.created gets its own creation; the disabling is not queued for the endpoint it
    // disables).
    receiver.wait_for("/every", 3).await;

    let user_id = new_account(&app).await;
    let sign_ins_id = sign_ins["id"].as_str().unwrap();
    let response = call(
        &app,
        token,
        Method::PATCH,
        &format!("/webhooks/{sign_ins_id}"),
        Some(json!({"description": "sign-ins"})),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);

    let some_got = receiver.wait_for("/some", 3).await;
    let types: Vec<String> = some_got
        .iter()
        .map(|r| r.json()["type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        types.iter().filter(|t| *t == "user.created").count(),
        1,
        "{types:?}"
    );
    assert_eq!(
        types.iter().filter(|t| *t == "webhook.updated").count(),
        2,
        "{types:?}"
    );
    assert!(
        types
            .iter()
            .all(|t| t == "user.created" || t == "webhook.updated"),
        "{types:?}"
    );
    let every_got = receiver.wait_for("/every", 5).await;
    assert!(
        every_got
            .iter()
            .any(|r| r.json()["data"]["user_id"] == user_id.as_str())
    );
    let secret = every["secret"].as_str().unwrap();
    assert!(every_got.iter().all(|r| r.verifies_with(secret)));

    // Nothing was ever queued for the endpoint of sign-ins, nor for the disabled one since it
    // was disabled (only its own creation, before): the outbox is written with the event, so
    // the logs are final.
    assert!(deliveries(&app, token, sign_ins_id).await.is_empty());
    let paused_log = deliveries(&app, token, paused_id).await;
    assert_eq!(paused_log.len(), 1, "{paused_log:?}");
    assert_eq!(paused_log[0]["event_type"], "webhook.created");
    assert!(receiver.at("/sign-ins").is_empty());
    assert!(receiver.at("/paused").len() <= 1);
    let _ = some;
}

#[tokio::test]
async fn a_failing_receiver_is_retried_until_it_answers() {
    let receiver = Receiver::start().await;
    receiver.then([Answer::Status(500), Answer::Status(500)]);
    let app = hooks_app(&[]).await;
    let (_, tokens) = app.superuser().await;
    let endpoint = create_ok(
        &app,
        &tokens.access,
        &receiver.url("/hook"),
        &["user.created"],
    )
    .await;
    let id = endpoint["id"].as_str().unwrap();
    let secret = endpoint["secret"].as_str().unwrap();

    let user_id = new_account(&app).await;
    let delivery = wait_delivery(
        &app,
        &tokens.access,
        id,
        "delivered after two failures",
        |d| d["status"] == "delivered",
    )
    .await;
    assert_eq!(delivery["attempts"], 3);
    assert_eq!(delivery["last_status"], 200);
    assert!(delivery["last_error"].is_null());

    let got = receiver.at("/hook");
    assert_eq!(got.len(), 3, "{got:?}");
    let event_id = created_event_id(&app, &user_id).await;
    for request in &got {
        // The same message each time: the same id and body, signed anew.
        assert_eq!(request.header("webhook-id"), event_id);
        assert_eq!(request.body, got[0].body);
        assert!(request.verifies_with(secret));
    }
    let counters = app.state.webhook_counters.snapshot();
    assert_eq!(
        (
            counters.delivered,
            counters.failed_attempts,
            counters.given_up
        ),
        (1, 2, 0)
    );
    // The same on GET /metrics, with the queue's length (counted at the scrape).
    let metrics = scrape(&app).await;
    for line in [
        "auth_webhook_delivered_total 1",
        "auth_webhook_failed_attempts_total 2",
        "auth_webhook_given_up_total 0",
        "auth_webhook_pending 0",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in {metrics}");
    }
}

#[tokio::test]
async fn a_delivery_is_given_up_after_the_last_attempt_and_redelivered_by_hand() {
    let receiver = Receiver::start().await;
    receiver.always(Answer::Status(503));
    let app = hooks_app(&[("WEBHOOK_MAX_ATTEMPTS", "2")]).await;
    let (_, tokens) = app.superuser().await;
    let token = &tokens.access;
    let endpoint = create_ok(&app, token, &receiver.url("/hook"), &["user.created"]).await;
    let id = endpoint["id"].as_str().unwrap();
    let user_id = new_account(&app).await;

    let failed = wait_delivery(&app, token, id, "given up", |d| d["status"] == "failed").await;
    assert_eq!(failed["attempts"], 2);
    assert_eq!(failed["last_status"], 503);
    assert_eq!(failed["last_error"], "HTTP 503 Service Unavailable");
    assert!(failed["failed_at"].is_string());
    assert!(failed["next_attempt_at"].is_null());
    assert_eq!(app.state.webhook_counters.snapshot().given_up, 1);

    // By hand: queued again at once, a new budget, the same event.
    receiver.always(Answer::Status(204));
    let delivery_id = failed["id"].as_i64().unwrap();
    let path = format!("/webhooks/{id}/deliveries/{delivery_id}/redeliver");
    let response = call(&app, token, Method::POST, &path, None).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let queued: Value = response.json().await.unwrap();
    assert_eq!(queued["status"], "pending");
    assert_eq!(queued["attempts"], 0);
    let delivered = wait_delivery(&app, token, id, "redelivered", |d| {
        d["status"] == "delivered"
    })
    .await;
    assert_eq!(delivered["id"], failed["id"]);
    assert_eq!(delivered["attempts"], 1);
    assert_eq!(delivered["last_status"], 204);

    // A delivered one can be sent again too; every request carried the one event id.
    let response = call(&app, token, Method::POST, &path, None).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let got = receiver.wait_for("/hook", 4).await;
    let event_id = created_event_id(&app, &user_id).await;
    assert!(got.iter().all(|r| r.header("webhook-id") == event_id));
    assert_eq!(
        deliveries(&app, token, id).await.len(),
        1,
        "one delivery, sent again"
    );

    // Only this endpoint's deliveries, by their ids.
    let other = create_ok(&app, token, &receiver.url("/other"), &["mfa.reset"]).await;
    let other_id = other["id"].as_str().unwrap();
    for path in [
        format!("/webhooks/{other_id}/deliveries/{delivery_id}/redeliver"),
        format!("/webhooks/{id}/deliveries/{}/redeliver", delivery_id + 1000),
        format!("/webhooks/{id}/deliveries/x/redeliver"),
        format!(
            "/webhooks/{}/deliveries/{delivery_id}/redeliver",
            uuid::Uuid::new_v4()
        ),
    ] {
        assert_problem(
            call(&app, token, Method::POST, &path, None).await,
            404,
            "NOT_FOUND",
        )
        .await;
    }
}

#[tokio::test]
async fn pending_deliveries_survive_a_restart() {
    let receiver = Receiver::start().await;
    receiver.always(Answer::Status(503));
    let app = hooks_app(&[]).await;
    let (_, tokens) = app.superuser().await;
    let endpoint = create_ok(
        &app,
        &tokens.access,
        &receiver.url("/hook"),
        &["user.created"],
    )
    .await;
    let id = endpoint["id"].as_str().unwrap().to_string();
    let secret = endpoint["secret"].as_str().unwrap().to_string();
    let users = [
        new_account(&app).await,
        new_account(&app).await,
        new_account(&app).await,
    ];
    // Each tried and failed at least once: pending, in the database only.
    eventually(
        "three failed attempts",
        WAIT,
        || async { deliveries(&app, &tokens.access, &id).await },
        |log| {
            log.len() == 3
                && log
                    .iter()
                    .all(|d| d["status"] == "pending" && d["attempts"].as_i64() >= Some(1))
        },
    )
    .await;

    let metrics = scrape(&app).await;
    assert!(
        metrics.lines().any(|l| l == "auth_webhook_pending 3"),
        "{metrics}"
    );
    let app = app.restart(&[]).await;
    receiver.always(Answer::Status(200));
    let log = eventually(
        "three deliveries after the restart",
        WAIT,
        || async { deliveries(&app, &tokens.access, &id).await },
        |log| log.iter().filter(|d| d["status"] == "delivered").count() == 3,
    )
    .await;
    assert_eq!(log.len(), 3);
    for user in &users {
        let event_id = created_event_id(&app, user).await;
        let answered = receiver
            .at("/hook")
            .into_iter()
            .filter(|r| r.header("webhook-id") == event_id)
            .collect::<Vec<_>>();
        assert!(
            answered.len() >= 2,
            "tried before the restart and after: {answered:?}"
        );
        assert!(answered.iter().all(|r| r.verifies_with(&secret)));
    }
    // The new instance delivered them.
    assert_eq!(app.state.webhook_counters.snapshot().delivered, 3);
}

#[tokio::test]
async fn a_redirect_is_not_followed() {
    let receiver = Receiver::start().await;
    receiver.always(Answer::Redirect("/elsewhere"));
    let app = hooks_app(&[("WEBHOOK_MAX_ATTEMPTS", "1")]).await;
    let (_, tokens) = app.superuser().await;
    let endpoint = create_ok(
        &app,
        &tokens.access,
        &receiver.url("/hook"),
        &["user.created"],
    )
    .await;
    let id = endpoint["id"].as_str().unwrap();
    new_account(&app).await;
    let failed = wait_delivery(&app, &tokens.access, id, "given up", |d| {
        d["status"] == "failed"
    })
    .await;
    assert_eq!(failed["last_status"], 307);
    assert_eq!(failed["last_error"], "HTTP 307 Temporary Redirect");
    assert_eq!(receiver.at("/hook").len(), 1);
    assert!(
        receiver.at("/elsewhere").is_empty(),
        "{:?}",
        receiver.received()
    );
}

#[tokio::test]
async fn https_is_spoken_to_an_https_url() {
    // A plain-HTTP receiver behind an https:// URL: the TLS handshake fails, and is recorded.
    let receiver = Receiver::start().await;
    let app = hooks_app(&[("WEBHOOK_MAX_ATTEMPTS", "1")]).await;
    let (_, tokens) = app.superuser().await;
    let url = format!("https://{}/hook", receiver.addr);
    let endpoint = create_ok(&app, &tokens.access, &url, &["user.created"]).await;
    let id = endpoint["id"].as_str().unwrap();
    new_account(&app).await;
    let failed = wait_delivery(&app, &tokens.access, id, "given up", |d| {
        d["status"] == "failed"
    })
    .await;
    assert!(failed["last_status"].is_null());
    let error = failed["last_error"].as_str().unwrap();
    assert!(error.starts_with("TLS"), "{error}");
    assert!(
        receiver.at("/hook").is_empty(),
        "no HTTP request went through"
    );
}

// ------------------------------------------------------------------------------------------------
// Server-side request forgery.

#[tokio::test]
async fn private_and_loopback_urls_are_refused_at_registration() {
    let app = spawn_app().await;
    let (_, tokens) = app.superuser().await;
    let token = &tokens.access;
    for url in [
        "http://127.0.0.1/hook",
        "http://127.1:8080/hook",
        "http://2130706433/hook",
        "http://localhost/hook",
        "http://LocalHost./hook",
        "http://api.localhost/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://[::ffff:169.254.169.254]/hook",
        "http://[fd00::1]/hook",
        "http://[fe80::1]/hook",
        "http://10.0.0.1/hook",
        "http://172.16.5.4/hook",
        "http://192.168.1.1/hook",
        "http://100.64.0.1/hook",
        "http://0.0.0.0/hook",
        "http://198.18.0.1/hook",
        "http://240.0.0.1/hook",
        "http://224.0.0.1/hook",
        "https://user:password@hooks.example.com/hook",
        "https://token@hooks.example.com/hook",
        "ftp://hooks.example.com/hook",
        "file:///etc/passwd",
        "gopher://127.0.0.1:6379/_FLUSHALL",
        " http://127.0.0.1/hook",
    ] {
        let response = create(&app, token, json!({"url": url, "event_types": ["*"]})).await;
        let body = assert_problem(response, 422, "VALIDATION_FAILED").await;
        assert_eq!(error_fields(&body), ["url"], "{url}: {body}");
    }
    // A change of the URL is held to the same rules.
    let endpoint = create_ok(&app, token, "https://93.184.215.14/hook", &["mfa.reset"]).await;
    let id = endpoint["id"].as_str().unwrap();
    let response = call(
        &app,
        token,
        Method::PATCH,
        &format!("/webhooks/{id}"),
        Some(json!({"url": "http://169.254.169.254/"})),
    )
    .await;
    let body = assert_problem(response, 422, "VALIDATION_FAILED").await;
    assert_eq!(error_fields(&body), ["url"]);
    assert_eq!(
        get_ok(&app, token, &format!("/webhooks/{id}")).await["url"],
        "https://93.184.215.14/hook"
    );
    // Nothing was registered but that one.
    assert_eq!(
        get_ok(&app, token, "/webhooks")
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn private_addresses_are_refused_at_delivery_once_the_setting_is_off() {
    let receiver = Receiver::start().await;
    let app = hooks_app(&[("WEBHOOK_MAX_ATTEMPTS", "1")]).await;
    let (_, tokens) = app.superuser().await;
    let token = tokens.access.clone();
    let port = receiver.addr.port();
    // Registered while private networks were allowed: a name that resolves to loopback, and a
    // loopback literal.
    let by_name = create_ok(
        &app,
        &token,
        &format!("http://localhost:{port}/by-name"),
        &["user.created"],
    )
    .await;
    let by_address = create_ok(
        &app,
        &token,
        &receiver.url("/by-address"),
        &["user.created"],
    )
    .await;

    let app = app
        .restart(&[("WEBHOOK_ALLOW_PRIVATE_NETWORKS", "false")])
        .await;
    new_account(&app).await;
    for (endpoint, words) in [
        (&by_name, "localhost"),
        (&by_address, "loopback address (127.0.0.1)"),
    ] {
        let id = endpoint["id"].as_str().unwrap();
        let failed = wait_delivery(&app, &token, id, "refused", |d| d["status"] == "failed").await;
        let error = failed["last_error"].as_str().unwrap();
        assert!(error.starts_with("refused: the host"), "{error}");
        assert!(error.contains(words), "{error}");
        assert!(failed["last_status"].is_null());
    }
    assert!(receiver.received().is_empty(), "{:?}", receiver.received());

    // The receiver was there all along: allowed again, a redelivery reaches it.
    let app = app
        .restart(&[("WEBHOOK_ALLOW_PRIVATE_NETWORKS", "true")])
        .await;
    let id = by_name["id"].as_str().unwrap();
    let delivery_id = deliveries(&app, &token, id).await[0]["id"]
        .as_i64()
        .unwrap();
    let path = format!("/webhooks/{id}/deliveries/{delivery_id}/redeliver");
    assert_eq!(
        call(&app, &token, Method::POST, &path, None).await.status(),
        StatusCode::ACCEPTED
    );
    receiver.wait_for("/by-name", 1).await;
}

// ------------------------------------------------------------------------------------------------
// The API.

#[tokio::test]
async fn only_superusers_reach_the_webhook_routes() {
    let app = spawn_app().await;
    let (_, admin) = app.superuser().await;
    let endpoint = create_ok(
        &app,
        &admin.access,
        "https://93.184.215.14/hook",
        &["mfa.reset"],
    )
    .await;
    let id = endpoint["id"].as_str().unwrap();
    let (_, user) = app.signed_up(&unique_email()).await;
    let body = json!({"url": "https://93.184.215.14/other", "event_types": ["*"]});
    let routes = [
        (Method::POST, "/webhooks".to_string(), Some(body)),
        (Method::GET, "/webhooks".to_string(), None),
        (Method::GET, format!("/webhooks/{id}"), None),
        (
            Method::PATCH,
            format!("/webhooks/{id}"),
            Some(json!({"enabled": false})),
        ),
        (Method::DELETE, format!("/webhooks/{id}"), None),
        (Method::POST, format!("/webhooks/{id}/secret"), None),
        (Method::GET, format!("/webhooks/{id}/deliveries"), None),
        (
            Method::POST,
            format!("/webhooks/{id}/deliveries/1/redeliver"),
            None,
        ),
    ];
    for (method, path, body) in routes {
        let response = call(&app, &user.access, method.clone(), &path, body.clone()).await;
        assert_problem(response, 403, "FORBIDDEN").await;
        let mut anonymous = app.client.request(method.clone(), app.url(&path));
        if let Some(body) = &body {
            anonymous = anonymous.json(body);
        }
        assert_problem(anonymous.send().await.unwrap(), 401, "UNAUTHORIZED").await;
    }
    // Nothing changed.
    let still = get_ok(&app, &admin.access, &format!("/webhooks/{id}")).await;
    assert_eq!(still["enabled"], true);
    assert_eq!(
        get_ok(&app, &admin.access, "/webhooks")
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

/// Every log event, all its fields, while it lives.
struct AllLogs {
    lines: Arc<Mutex<Vec<String>>>,
    _guard: tracing::subscriber::DefaultGuard,
    /// A second registered dispatcher, kept alive: with one only, tracing-core decides whether a
    /// callsite first hit on another thread (another test's server) is enabled by asking that
    /// thread's default (none), and caches "never" for every thread, this test's included.
    _second: tracing::Dispatch,
}

struct Everything(Arc<Mutex<Vec<String>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Everything {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Fields(String);
        impl tracing::field::Visit for Fields {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                self.0.push_str(&format!(" {}={value:?}", field.name()));
            }
        }
        let mut fields = Fields(event.metadata().target().to_string());
        event.record(&mut fields);
        self.0.lock().unwrap().push(fields.0);
    }
}

impl AllLogs {
    fn capture() -> Self {
        use tracing_subscriber::layer::SubscriberExt;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let subscriber = tracing_subscriber::registry()
            .with(tracing_subscriber::filter::LevelFilter::TRACE)
            .with(Everything(lines.clone()));
        let second = tracing::Dispatch::new(tracing_subscriber::registry());
        Self {
            lines,
            _guard: tracing::subscriber::set_default(subscriber),
            _second: second,
        }
    }

    fn text(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }
}

#[tokio::test]
async fn the_secret_is_shown_once_and_never_again() {
    let logs = AllLogs::capture();
    let receiver = Receiver::start().await;
    let app = hooks_app(&[]).await;
    let (_, tokens) = app.superuser().await;
    let token = &tokens.access;
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwJ3dN5Cq4ie0=";
    let key_base64 = secret.trim_start_matches("whsec_");
    // A token of the receiver's in the path: kept out of events and logs too.
    let url = receiver.url("/hook/receiver-token-4711?key=query-token-0815");
    let response = create(
        &app,
        token,
        json!({"url": url, "event_types": ["*"], "secret": secret, "description": "SIEM"}),
    )
    .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let endpoint: Value = response.json().await.unwrap();
    assert_eq!(endpoint["secret"], secret);
    let id = endpoint["id"].as_str().unwrap().to_string();

    new_account(&app).await;
    let patched = call(
        &app,
        token,
        Method::PATCH,
        &format!("/webhooks/{id}"),
        Some(json!({"description": "SIEM 2"})),
    )
    .await;
    assert_eq!(patched.status(), StatusCode::OK);
    let patched = patched.text().await.unwrap();
    // Its own creation, the account, the change.
    let before = receiver.wait_for("/hook/receiver-token-4711", 3).await;
    assert!(before.iter().all(|r| r.verifies_with(secret)));
    // Rotated: the new one is shown once, and signs from now on.
    let rotated = call(
        &app,
        token,
        Method::POST,
        &format!("/webhooks/{id}/secret"),
        None,
    )
    .await;
    assert_eq!(rotated.status(), StatusCode::OK);
    let new_secret = rotated.json::<Value>().await.unwrap()["secret"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(new_secret.starts_with("whsec_") && new_secret != secret);
    new_account(&app).await;
    // The rotation's own event and the next account's: signed with the new secret only.
    let got = receiver.wait_for("/hook/receiver-token-4711", 5).await;
    for request in &got[3..] {
        assert!(request.verifies_with(&new_secret) && !request.verifies_with(secret));
    }

    // Nowhere else: not in a listing, the endpoint, a change's answer, the delivery log, the
    // payloads, the audit trail, the logs, nor the table (sealed).
    let listing = call(&app, token, Method::GET, "/webhooks", None)
        .await
        .text()
        .await
        .unwrap();
    let one = call(&app, token, Method::GET, &format!("/webhooks/{id}"), None)
        .await
        .text()
        .await
        .unwrap();
    let log = call(
        &app,
        token,
        Method::GET,
        &format!("/webhooks/{id}/deliveries"),
        None,
    )
    .await
    .text()
    .await
    .unwrap();
    let payloads: Vec<String> = got
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    let events = app
        .sql
        .text(
            "SELECT COALESCE(STRING_AGG(detail, ' '), '') FROM security_events WHERE type LIKE $1",
            "webhook.%",
        )
        .await;
    assert!(events.contains(&id), "{events}");
    let stored = app
        .sql
        .text("SELECT secret FROM webhook_endpoints WHERE id = $1", &id)
        .await;
    let logged = logs.text();
    assert!(logged.contains("webhook delivered"), "the capture works");
    for (what, text) in [
        ("list", &listing),
        ("get", &one),
        ("patch", &patched),
        ("deliveries", &log),
        ("payloads", &payloads.join(" ")),
        ("events", &events),
        ("stored", &stored),
        ("logs", &logged),
    ] {
        for secret in [
            secret,
            key_base64,
            &new_secret,
            new_secret.trim_start_matches("whsec_"),
        ] {
            assert!(!text.contains(secret), "{what} shows a secret");
        }
    }
    for (what, text) in [
        ("list", &listing),
        ("get", &one),
        ("patch", &patched),
        ("deliveries", &log),
    ] {
        assert!(!text.contains("\"secret\""), "{what}: {text}");
    }
    for (what, text) in [("events", &events), ("logs", &logged)] {
        assert!(
            !text.contains("receiver-token-4711"),
            "{what} shows the URL's path"
        );
        assert!(
            !text.contains("query-token-0815"),
            "{what} shows the URL's query"
        );
    }
}

#[tokio::test]
async fn changes_to_endpoints_are_audited_with_the_superuser_as_actor() {
    let app = spawn_app().await;
    let (admin, tokens) = app.superuser().await;
    let token = &tokens.access;
    let endpoint = create_ok(
        &app,
        token,
        "https://93.184.215.14/hook",
        &["mfa.reset", "user.created"],
    )
    .await;
    let id = endpoint["id"].as_str().unwrap();
    let response = call(
        &app,
        token,
        Method::PATCH,
        &format!("/webhooks/{id}"),
        Some(json!({"enabled": false, "event_types": ["*"]})),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let changed: Value = response.json().await.unwrap();
    assert_eq!(changed["enabled"], false);
    assert_eq!(changed["event_types"], json!(["*"]));
    assert_eq!(
        call(
            &app,
            token,
            Method::DELETE,
            &format!("/webhooks/{id}"),
            None
        )
        .await
        .status(),
        StatusCode::NO_CONTENT
    );
    assert_problem(
        call(&app, token, Method::GET, &format!("/webhooks/{id}"), None).await,
        404,
        "NOT_FOUND",
    )
    .await;
    assert_problem(
        call(
            &app,
            token,
            Method::DELETE,
            &format!("/webhooks/{id}"),
            None,
        )
        .await,
        404,
        "NOT_FOUND",
    )
    .await;

    let admin_id = admin["id"].as_str().unwrap();
    for (kind, words) in [
        (
            "webhook.created",
            vec!["https://93.184.215.14", "\"user.created\""],
        ),
        ("webhook.updated", vec!["\"enabled\"", "\"*\""]),
        ("webhook.deleted", vec!["https://93.184.215.14"]),
    ] {
        let detail = app
            .sql
            .text("SELECT detail FROM security_events WHERE type = $1", kind)
            .await;
        assert!(detail.contains(id), "{kind}: {detail}");
        for word in words {
            assert!(detail.contains(word), "{kind}: {detail}");
        }
        let by_admin = app
            .count(
                "SELECT COUNT(*) FROM security_events WHERE type = $1 AND actor_id IS NOT NULL AND user_id IS NULL",
                kind,
            )
            .await;
        assert_eq!(by_admin, 1, "{kind}");
    }
    let actors = app
        .count(
            "SELECT COUNT(*) FROM security_events WHERE type LIKE 'webhook.%' AND actor_id = $1",
            admin_id,
        )
        .await;
    assert_eq!(actors, 3);
}

#[tokio::test]
async fn bad_input_is_refused_naming_the_field() {
    let app = spawn_app().await;
    let (_, tokens) = app.superuser().await;
    let token = &tokens.access;
    let url = "https://93.184.215.14/hook";
    for (body, field) in [
        (
            json!({"url": url, "event_types": ["user.nope"]}),
            "event_types",
        ),
        (json!({"url": url, "event_types": []}), "event_types"),
        (
            json!({"url": url, "event_types": ["user.created", 7]}),
            "event_types[1]",
        ),
        (json!({"url": url, "event_types": "*"}), "event_types"),
        (json!({"event_types": ["*"]}), "url"),
        (json!({"url": url}), "event_types"),
        (json!({"url": "not a url", "event_types": ["*"]}), "url"),
        (
            json!({"url": format!("https://a.example/{}", "x".repeat(2048)), "event_types": ["*"]}),
            "url",
        ),
        (
            json!({"url": url, "event_types": ["*"], "secret": "hunter2"}),
            "secret",
        ),
        (
            json!({"url": url, "event_types": ["*"], "secret": format!("whsec_{}", "QUFB".repeat(5))}),
            "secret",
        ),
        (
            json!({"url": url, "event_types": ["*"], "description": "x".repeat(501)}),
            "description",
        ),
        (
            json!({"url": url, "event_types": ["*"], "description": "a\u{7}b"}),
            "description",
        ),
        (
            json!({"url": url, "event_types": ["*"], "is_superuser": true}),
            "is_superuser",
        ),
    ] {
        let body = assert_problem(
            create(&app, token, body.clone()).await,
            422,
            "VALIDATION_FAILED",
        )
        .await;
        let fields = error_fields(&body);
        assert!(fields.iter().any(|f| f == field), "{field}: {body}");
        // No secret repeated in an error.
        assert!(!body.to_string().contains("hunter2"), "{body}");
    }
    let created = create_ok(&app, token, url, &["mfa.reset"]).await;
    let id = created["id"].as_str().unwrap();
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("cursor=x", "cursor"),
        ("cursor=0", "cursor"),
    ] {
        let response = call(
            &app,
            token,
            Method::GET,
            &format!("/webhooks/{id}/deliveries?{query}"),
            None,
        )
        .await;
        let body = assert_problem(response, 422, "VALIDATION_FAILED").await;
        assert_eq!(error_fields(&body), [field], "{query}");
    }
    for path in [
        "/webhooks/not-a-uuid",
        &format!("/webhooks/{}", uuid::Uuid::new_v4()),
    ] {
        assert_problem(
            call(&app, token, Method::GET, path, None).await,
            404,
            "NOT_FOUND",
        )
        .await;
        let deliveries = format!("{path}/deliveries");
        assert_problem(
            call(&app, token, Method::GET, &deliveries, None).await,
            404,
            "NOT_FOUND",
        )
        .await;
    }
}

#[tokio::test]
async fn there_are_at_most_fifty_endpoints() {
    let app = spawn_app().await;
    let (_, tokens) = app.superuser().await;
    for n in 0..50 {
        create_ok(
            &app,
            &tokens.access,
            &format!("https://93.184.215.14/hook/{n}"),
            &["mfa.reset"],
        )
        .await;
    }
    let response = create(
        &app,
        &tokens.access,
        json!({"url": "https://93.184.215.14/more", "event_types": ["*"]}),
    )
    .await;
    assert_problem(response, 409, "WEBHOOK_LIMIT").await;
    let all = get_ok(&app, &tokens.access, "/webhooks").await;
    assert_eq!(all.as_array().unwrap().len(), 50);
}

#[tokio::test]
async fn the_delivery_log_pages_newest_first() {
    let receiver = Receiver::start().await;
    let app = hooks_app(&[]).await;
    let (_, tokens) = app.superuser().await;
    let token = &tokens.access;
    let endpoint = create_ok(&app, token, &receiver.url("/hook"), &["user.created"]).await;
    let id = endpoint["id"].as_str().unwrap();
    let mut users = Vec::new();
    for _ in 0..5 {
        users.push(new_account(&app).await);
    }
    let first = get_ok(&app, token, &format!("/webhooks/{id}/deliveries?limit=2")).await;
    let second = get_ok(
        &app,
        token,
        &format!(
            "/webhooks/{id}/deliveries?limit=2&cursor={}",
            first["next_cursor"]
        ),
    )
    .await;
    let third = get_ok(
        &app,
        token,
        &format!(
            "/webhooks/{id}/deliveries?limit=2&cursor={}",
            second["next_cursor"]
        ),
    )
    .await;
    assert!(third["next_cursor"].is_null(), "{third}");
    let mut events = Vec::new();
    for page in [&first, &second, &third] {
        for item in page["items"].as_array().unwrap() {
            events.push(item["event_id"].as_str().unwrap().to_string());
        }
    }
    let mut expected = Vec::new();
    for user in users.iter().rev() {
        expected.push(created_event_id(&app, user).await);
    }
    assert_eq!(events, expected);
}

#[tokio::test]
async fn deleting_an_endpoint_drops_its_queue() {
    let receiver = Receiver::start().await;
    receiver.always(Answer::Status(500));
    let app = hooks_app(&[]).await;
    let (_, tokens) = app.superuser().await;
    let endpoint = create_ok(
        &app,
        &tokens.access,
        &receiver.url("/hook"),
        &["user.created"],
    )
    .await;
    let id = endpoint["id"].as_str().unwrap();
    new_account(&app).await;
    receiver.wait_for("/hook", 1).await;
    let response = call(
        &app,
        &tokens.access,
        Method::DELETE,
        &format!("/webhooks/{id}"),
        None,
    )
    .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM webhook_deliveries WHERE endpoint_id = $1",
            id
        )
        .await,
        0
    );
}

#[tokio::test]
async fn the_document_states_the_webhook_rules() {
    let app = spawn_app().await;
    let document = app.get_json("/openapi.json").await;
    let schemas = &document["components"]["schemas"];
    let create = &schemas["CreateWebhookRequest"]["properties"];
    assert_eq!(
        create["secret"]["pattern"],
        auth_server::webhooks::signature::SECRET_PATTERN
    );
    assert_eq!(
        schemas["RotateWebhookSecretRequest"]["properties"]["secret"]["pattern"],
        auth_server::webhooks::signature::SECRET_PATTERN
    );
    assert_eq!(
        create["description"]["pattern"],
        auth_server::service::webhooks::DESCRIPTION_PATTERN
    );
    assert_eq!(
        create["description"]["maxLength"],
        auth_server::service::webhooks::MAX_DESCRIPTION
    );
    assert_eq!(
        create["url"]["maxLength"],
        auth_server::webhooks::guard::MAX_URL_LENGTH
    );
    let types = schemas["WebhookEventType"]["enum"].as_array().unwrap();
    assert_eq!(
        types.len(),
        auth_server::service::audit::EventType::ALL.len() + 1
    );
    assert!(types.contains(&json!("*")) && types.contains(&json!("user.signed_in")));
    for (path, methods) in [
        ("/webhooks", &["get", "post"][..]),
        ("/webhooks/{id}", &["get", "patch", "delete"][..]),
        ("/webhooks/{id}/secret", &["post"][..]),
        ("/webhooks/{id}/deliveries", &["get"][..]),
        (
            "/webhooks/{id}/deliveries/{delivery_id}/redeliver",
            &["post"][..],
        ),
    ] {
        for method in methods {
            let operation = &document["paths"][path][method];
            assert_eq!(operation["tags"], json!(["webhooks"]), "{method} {path}");
            assert!(operation["responses"]["403"].is_object(), "{method} {path}");
        }
    }
}

#[tokio::test]
async fn the_purge_keeps_the_log_for_its_retention_and_pending_deliveries_for_ever() {
    let receiver = Receiver::start().await;
    let failing = Receiver::start().await;
    failing.always(Answer::Status(503));
    // A failed attempt is retried an hour later: pending until then.
    let app = hooks_app(&[("WEBHOOK_RETRY_BASE_SECONDS", "3600")]).await;
    let (_, tokens) = app.superuser().await;
    let token = &tokens.access;
    let delivered = create_ok(&app, token, &receiver.url("/ok"), &["user.created"]).await;
    let waiting = create_ok(&app, token, &failing.url("/down"), &["user.created"]).await;
    new_account(&app).await;
    let id = delivered["id"].as_str().unwrap();
    let waiting_id = waiting["id"].as_str().unwrap();
    let done = wait_delivery(&app, token, id, "delivered", |d| d["status"] == "delivered").await;
    wait_delivery(&app, token, waiting_id, "tried", |d| {
        d["status"] == "pending" && d["attempts"] == 1
    })
    .await;
    let delivered_at = chrono::DateTime::parse_from_rfc3339(done["delivered_at"].as_str().unwrap())
        .unwrap()
        .timestamp_millis();
    let retention = auth_server::service::maintenance::Retention {
        audit_ms: i64::MAX,
        webhook_log_ms: 30 * 86_400_000,
    };
    let count = |endpoint: &str| {
        let endpoint = endpoint.to_string();
        let app = &app;
        async move {
            app.count(
                "SELECT COUNT(*) FROM webhook_deliveries WHERE endpoint_id = $1",
                &endpoint,
            )
            .await
        }
    };
    let purge = |now: i64| auth_server::service::maintenance::purge(&app.state.db, now, retention);
    // At the retention's end: kept; a millisecond past it: purged.
    let at_end = delivered_at + retention.webhook_log_ms;
    assert_eq!(purge(at_end).await.unwrap().webhook_deliveries, 0);
    assert_eq!(count(id).await, 1);
    assert_eq!(purge(at_end + 1).await.unwrap().webhook_deliveries, 1);
    assert_eq!(count(id).await, 0);
    // A pending delivery is never purged, however old.
    purge(at_end + 365 * 86_400_000).await.unwrap();
    assert_eq!(count(waiting_id).await, 1);
}
