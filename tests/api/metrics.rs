//! GET /metrics: the counters move with the requests that move them, the labels stay bounded
//! whatever clients send, and the exposure settings (METRICS, METRICS_TOKEN, METRICS_ADDRESS)
//! hold.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::*;
use crate::mfa::{challenge, enrolled, next_code, with_code, wrong_code};
use crate::smtp::{Reply, SmtpSink, WAIT, app_with_mail};

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const TOKEN: &str = "metrics-token-0123456789abcdef";

/// One sample of the exposition: its name, labels and value.
#[derive(Clone, Debug)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

/// A scrape, parsed.
#[derive(Debug)]
struct Scrape {
    text: String,
    samples: Vec<Sample>,
}

impl Scrape {
    fn parse(text: String) -> Self {
        let samples = text
            .lines()
            .filter(|line| !line.starts_with('#') && !line.is_empty())
            .map(|line| {
                let (series, value) = line.rsplit_once(' ').expect("a sample has a value");
                let (name, labels) = match series.split_once('{') {
                    Some((name, labels)) => {
                        let labels = labels.strip_suffix('}').expect("labels end with }");
                        let labels = labels
                            .split(',')
                            .filter(|l| !l.is_empty())
                            .map(|label| {
                                let (key, value) = label.split_once('=').expect("key=value");
                                let value = value.trim_matches('"');
                                (key.to_string(), value.to_string())
                            })
                            .collect();
                        (name, labels)
                    }
                    None => (series, Vec::new()),
                };
                Sample {
                    name: name.to_string(),
                    labels,
                    value: value.parse().expect("a number"),
                }
            })
            .collect();
        Self { text, samples }
    }

    /// The samples named `name` that carry every label of `labels`.
    fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&str, &str)],
    ) -> impl Iterator<Item = &'a Sample> {
        self.samples.iter().filter(move |s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
        })
    }

    /// The sum of the samples named `name` that carry `labels` (0 when there is none).
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).map(|s| s.value).sum()
    }

    /// The one sample named `name` with `labels`: it must be there.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let found: Vec<_> = self.matching(name, labels).collect();
        assert_eq!(found.len(), 1, "{name} {labels:?} in\n{}", self.text);
        found[0].value
    }

    fn logins(&self, method: &str, outcome: &str) -> f64 {
        self.sum(
            "auth_logins_total",
            &[("method", method), ("outcome", outcome)],
        )
    }
}

async fn scrape_at(app: &TestApp, url: String, token: Option<&str>) -> Scrape {
    let mut request = app.client.get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], OPENMETRICS);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let text = response.text().await.unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    Scrape::parse(text)
}

async fn scrape(app: &TestApp) -> Scrape {
    scrape_at(app, app.url("/metrics"), None).await
}

#[tokio::test]
async fn requests_are_counted_by_route_method_and_status_and_timed() {
    let app = spawn_app().await;
    let random_id = uuid::Uuid::new_v4().to_string();
    for _ in 0..2 {
        assert_eq!(
            app.client
                .get(app.url("/health"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    assert_problem(
        app.client
            .get(app.url("/nothing/here"))
            .send()
            .await
            .unwrap(),
        404,
        "NOT_FOUND",
    )
    .await;
    assert_problem(
        app.client
            .delete(app.url(&format!("/me/sessions/{random_id}")))
            .send()
            .await
            .unwrap(),
        401,
        "UNAUTHORIZED",
    )
    .await;
    // A method the route does not take.
    assert_eq!(
        app.client
            .delete(app.url("/health"))
            .send()
            .await
            .unwrap()
            .status(),
        405
    );

    let m = scrape(&app).await;
    let requests = "http_requests_total";
    let health = [("route", "/health"), ("method", "GET")];
    assert_eq!(
        m.value(requests, &[health[0], health[1], ("status", "200")]),
        2.0
    );
    assert_eq!(
        m.value(
            requests,
            &[("route", "unmatched"), ("method", "GET"), ("status", "404")]
        ),
        1.0
    );
    // The route's template, never the path the client sent.
    assert_eq!(
        m.value(
            requests,
            &[
                ("route", "/me/sessions/{id}"),
                ("method", "DELETE"),
                ("status", "401")
            ]
        ),
        1.0
    );
    assert!(!m.text.contains(&random_id) && !m.text.contains("/nothing/here"));
    assert_eq!(
        m.value(
            requests,
            &[
                ("route", "/health"),
                ("method", "DELETE"),
                ("status", "405")
            ]
        ),
        1.0
    );
    // The latency histogram: two observations, in seconds, in cumulative buckets.
    let duration = "http_request_duration_seconds";
    assert_eq!(m.value(&format!("{duration}_count"), &health), 2.0);
    let sum = m.value(&format!("{duration}_sum"), &health);
    assert!(sum > 0.0 && sum < 10.0, "{sum}");
    assert_eq!(
        m.value(
            &format!("{duration}_bucket"),
            &[health[0], health[1], ("le", "+Inf")]
        ),
        2.0
    );
    // The scrape itself was counted when it was answered: the next one sees it.
    let m = scrape(&app).await;
    assert_eq!(
        m.value(
            requests,
            &[("route", "/metrics"), ("method", "GET"), ("status", "200")]
        ),
        1.0
    );
    // The build and start of this instance.
    assert_eq!(
        m.value("auth_build_info", &[("version", env!("CARGO_PKG_VERSION"))]),
        1.0
    );
    assert!(m.value("auth_start_time_seconds", &[]) > 1.7e9);
}

#[tokio::test]
async fn an_attacker_s_random_paths_and_methods_make_no_new_series() {
    let app = spawn_app().await;
    let requests: Vec<_> = (0..1000)
        .map(|i| {
            let (client, app_url) = (app.client.clone(), app.address.clone());
            async move {
                let id = uuid::Uuid::new_v4();
                let (method, path) = match i % 4 {
                    0 => (Method::GET, format!("/{id}")),
                    1 => (Method::POST, format!("/login/{id}/x?y={id}")),
                    2 => (Method::DELETE, format!("/me/sessions/{id}")),
                    // An invented method of its own each time.
                    _ => (
                        Method::from_bytes(format!("X{}", id.simple()).as_bytes()).unwrap(),
                        format!("/health/{id}"),
                    ),
                };
                client
                    .request(method, format!("{app_url}{path}"))
                    .send()
                    .await
                    .unwrap()
                    .status()
            }
        })
        .collect();
    let statuses = concurrently(requests).await;
    assert!(
        statuses
            .iter()
            .all(|s| [401, 404, 405].contains(&s.as_u16())),
        "{statuses:?}"
    );

    let m = scrape(&app).await;
    let series: Vec<_> = m.matching("http_requests_total", &[]).collect();
    assert!(series.len() <= 5, "{series:#?}");
    assert_eq!(m.sum("http_requests_total", &[]), 1000.0);
    assert_eq!(
        m.sum("http_requests_total", &[("route", "unmatched")]),
        750.0
    );
    assert_eq!(m.sum("http_requests_total", &[("method", "other")]), 250.0);
    let latency: Vec<_> = m
        .matching("http_request_duration_seconds_count", &[])
        .collect();
    assert!(latency.len() <= 5, "{latency:#?}");
    // No series, of any metric, names a path or a method a client made up.
    assert!(m.samples.len() < 400, "{} samples", m.samples.len());
    assert!(
        !m.text.contains("/login/") && !m.text.contains("method=\"X"),
        "{}",
        m.text
    );
}

#[tokio::test]
async fn logins_are_counted_by_method_and_outcome() {
    let app = spawn_app_with(&[
        ("LOGIN_FREE_ATTEMPTS", "3"),
        ("LOGIN_LOCKOUT_FIRST_SECONDS", "3600"),
        ("LOGIN_LOCKOUT_MAX_SECONDS", "3600"),
    ])
    .await;
    let before = scrape(&app).await;
    // Every method's main outcomes are there from the start, at 0.
    for method in ["password", "mfa", "passkey"] {
        for outcome in ["success", "invalid_credentials", "locked", "rate_limited"] {
            assert_eq!(
                before.value(
                    "auth_logins_total",
                    &[("method", method), ("outcome", outcome)]
                ),
                0.0
            );
        }
    }

    let email = unique_email();
    app.signed_up(&email).await; // a login
    assert_problem(
        app.login(&email, "not the password").await,
        401,
        "INVALID_CREDENTIALS",
    )
    .await;
    // Another address: three failures (the third locks it), then refused while locked.
    let locked = unique_email();
    for _ in 0..3 {
        assert_problem(
            app.login(&locked, "a guess").await,
            401,
            "INVALID_CREDENTIALS",
        )
        .await;
    }
    assert_problem(
        app.login(&locked, "a guess").await,
        429,
        "TOO_MANY_REQUESTS",
    )
    .await;

    let m = scrape(&app).await;
    assert_eq!(m.logins("password", "success"), 1.0);
    assert_eq!(m.logins("password", "invalid_credentials"), 4.0);
    assert_eq!(m.logins("password", "locked"), 1.0);
    assert_eq!(m.logins("password", "rate_limited"), 0.0);

    // The second factor: the password's step, a wrong code, the right one.
    let account = enrolled(&app).await; // a login (signed up), then the enrolment
    let mfa_token = challenge(&app, &account.email).await;
    assert_problem(
        with_code(&app, &mfa_token, &wrong_code(&app, &account.secret)).await,
        401,
        "INVALID_MFA_CODE",
    )
    .await;
    let response = with_code(&app, &mfa_token, &next_code(&app, &account.secret)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_problem(
        with_code(&app, "no such token", "123456").await,
        401,
        "INVALID_TOKEN",
    )
    .await;
    // A passkey sign-in whose credential cannot be read.
    assert_eq!(
        app.post_json("/login/passkey", &json!({"credential": {"id": 1}}))
            .await
            .status(),
        422
    );

    let m = scrape(&app).await;
    assert_eq!(m.logins("password", "success"), 2.0);
    assert_eq!(m.logins("password", "mfa_required"), 1.0);
    assert_eq!(m.logins("mfa", "invalid_code"), 1.0);
    assert_eq!(m.logins("mfa", "success"), 1.0);
    assert_eq!(m.logins("mfa", "invalid_token"), 1.0);
    assert_eq!(m.logins("passkey", "invalid_request"), 1.0);
    // Nothing else was counted.
    assert_eq!(m.sum("auth_logins_total", &[]), 12.0, "{}", m.text);
}

#[tokio::test]
async fn logins_refused_by_the_per_client_limit_are_counted_as_rate_limited() {
    let app = spawn_app_with(&[("RATE_LIMIT_LOGIN_PER_MINUTE", "3")]).await;
    let email = unique_email();
    let mut statuses = Vec::new();
    for _ in 0..10 {
        statuses.push(app.login(&email, "a guess").await.status().as_u16());
    }
    let mfa = app
        .post_json("/login/mfa", &json!({"mfa_token": "x", "code": "123456"}))
        .await
        .status();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert!(limited > 0 && mfa == 429, "{statuses:?} {mfa}");
    let m = scrape(&app).await;
    assert_eq!(m.logins("password", "rate_limited"), limited as f64);
    assert_eq!(
        m.logins("password", "invalid_credentials"),
        statuses.iter().filter(|s| **s == 401).count() as f64
    );
    assert_eq!(m.logins("mfa", "rate_limited"), 1.0);
    // The passkey options share the limit but are no login.
    app.post_json("/login/passkey/options", &json!({})).await;
    let after = scrape(&app).await;
    assert_eq!(
        after.sum("auth_logins_total", &[]),
        m.sum("auth_logins_total", &[])
    );
}

#[tokio::test]
async fn the_hashing_pool_reports_its_waits_queue_and_refusals() {
    let app = spawn_app().await;
    let email = unique_email();
    app.signed_up(&email).await;
    app.login_ok(&email).await;
    let m = scrape(&app).await;
    // A hash (the registration) and two verifications, each waited for in the queue.
    let computed = m.value("auth_hash_computed_total", &[]);
    assert!(computed >= 3.0, "{computed}");
    assert_eq!(m.value("auth_hash_wait_seconds_count", &[]), computed);
    assert!(m.value("auth_hash_wait_seconds_sum", &[]) >= 0.0);
    assert_eq!(m.value("auth_hash_queue_depth", &[]), 0.0);
    assert_eq!(m.value("auth_hash_in_progress", &[]), 0.0);
    assert_eq!(m.value("auth_hash_refused_total", &[]), 0.0);
    assert_eq!(m.value("auth_hash_abandoned_total", &[]), 0.0);
}

#[tokio::test]
async fn every_login_the_hashing_pool_sheds_is_counted_as_refused() {
    // One thread and room for one waiting job: of a burst of logins, most are turned away.
    let app = spawn_app_with(&[
        ("ARGON2_MEMORY_KIB", "4096"),
        ("ARGON2_ITERATIONS", "2"),
        ("HASH_CONCURRENCY", "1"),
        ("HASH_QUEUE_LIMIT", "1"),
        ("LOGIN_FREE_ATTEMPTS", "1000"),
    ])
    .await;
    let mut shed = 0;
    for round in 0..20 {
        let logins: Vec<_> = (0..16)
            .map(|i| {
                let (client, url) = (app.client.clone(), app.url("/login"));
                async move {
                    client
                        .post(url)
                        .json(
                            &json!({"email": format!("n{round}-{i}@example.com"), "password": "p"}),
                        )
                        .send()
                        .await
                        .unwrap()
                        .status()
                        .as_u16()
                }
            })
            .collect();
        let statuses = concurrently(logins).await;
        assert!(
            statuses.iter().all(|s| *s == 401 || *s == 503),
            "{statuses:?}"
        );
        shed += statuses.iter().filter(|s| **s == 503).count();
        if shed > 0 {
            break;
        }
    }
    assert!(shed > 0, "nothing was shed");
    let m = scrape(&app).await;
    assert_eq!(m.value("auth_hash_refused_total", &[]), shed as f64);
    assert_eq!(m.logins("password", "busy"), shed as f64);
}

#[tokio::test]
async fn the_mail_outbox_depth_and_deliveries_are_measured() {
    let sink = SmtpSink::start().await;
    // The first attempt is refused for now; the retry goes through.
    sink.script([Reply::RefuseRecipient(451)]);
    let app = app_with_mail(&sink, &[]).await;
    app.clock.freeze();
    let email = unique_email();
    app.register(&email, PASSWORD, "Mailed").await; // a verification mail

    // Refused once, it waits for its retry (the clock is frozen): one mail in the outbox.
    let m = eventually(
        "the failed attempt",
        WAIT,
        || scrape(&app),
        |m| m.value("auth_mail_failed_attempts_total", &[]) == 1.0,
    )
    .await;
    assert_eq!(m.value("auth_mail_outbox_depth", &[]), 1.0);
    assert_eq!(m.value("auth_mail_sent_total", &[]), 0.0);

    app.clock.advance(Duration::from_secs(2));
    sink.wait_for(&email, crate::smtp::VERIFY, 1, WAIT).await;
    let m = eventually(
        "the mail sent",
        WAIT,
        || scrape(&app),
        // (A scrape reads the depth before the counters: a mail counted as it was read is
        // still in the depth; the next scrape has it out.)
        |m| {
            m.value("auth_mail_sent_total", &[]) == 1.0
                && m.value("auth_mail_outbox_depth", &[]) == 0.0
        },
    )
    .await;
    assert_eq!(m.value("auth_mail_given_up_total", &[]), 0.0);

    // Refused for good: given up at once.
    sink.script([Reply::RefuseRecipient(550)]);
    let response = app
        .post_json("/password-reset/request", &json!({"email": email}))
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let m = eventually(
        "the mail given up",
        WAIT,
        || scrape(&app),
        |m| {
            m.value("auth_mail_given_up_total", &[]) == 1.0
                && m.value("auth_mail_outbox_depth", &[]) == 0.0
        },
    )
    .await;
    assert_eq!(m.value("auth_mail_failed_attempts_total", &[]), 2.0);
    assert_eq!(m.value("auth_mail_sent_total", &[]), 1.0);
}

#[tokio::test]
async fn live_sessions_are_counted_at_most_every_fifteen_seconds() {
    let app = spawn_app().await;
    freeze_clock(&app);
    let live = |m: &Scrape| m.value("auth_sessions_live", &[]);
    assert_eq!(live(&scrape(&app).await), 0.0);

    let email = unique_email();
    let (_, first) = app.signed_up(&email).await;
    app.login_ok(&email).await;
    app.login_ok(&email).await;
    // Counted a moment ago: the count is not read again yet.
    assert_eq!(live(&scrape(&app).await), 0.0);
    app.clock.advance(Duration::from_millis(14_999));
    assert_eq!(live(&scrape(&app).await), 0.0);
    app.clock.advance(Duration::from_millis(1));
    assert_eq!(live(&scrape(&app).await), 3.0);

    // A session ended (logout) is no longer live.
    assert_eq!(app.logout(&first.access, None).await.status(), 204);
    app.clock.advance(Duration::from_secs(15));
    assert_eq!(live(&scrape(&app).await), 2.0);
}

#[tokio::test]
async fn the_database_pool_gauges_are_there() {
    let app = spawn_app().await;
    app.signed_up(&unique_email()).await;
    let m = scrape(&app).await;
    assert_eq!(m.value("auth_db_connections_max", &[]), 5.0);
    let in_use = m.value("auth_db_connections_in_use", &[]);
    let idle = m.value("auth_db_connections_idle", &[]);
    assert!(in_use + idle <= 5.0 && idle >= 0.0, "{in_use} {idle}");
    assert_eq!(m.value("auth_db_pool_timeouts_total", &[]), 0.0);
    // The registration's transaction waited for its connection.
    assert!(m.value("auth_db_acquire_seconds_count", &[]) >= 1.0);
}

#[tokio::test]
async fn pool_timeouts_are_counted_and_the_metrics_still_answer_while_the_pool_is_exhausted() {
    let app = spawn_app_with(&[("DATABASE_MAX_CONNECTIONS", "1"), ("SESSION_CACHE_MS", "0")]).await;
    assert_eq!(
        scrape(&app).await.value("auth_db_pool_timeouts_total", &[]),
        0.0
    );
    // The test holds the pool's only connection.
    let held = app.state.db.begin().await.unwrap();
    assert_problem(
        app.login(&unique_email(), "a guess").await,
        503,
        "SERVICE_UNAVAILABLE",
    )
    .await;
    let m = scrape(&app).await;
    assert_eq!(m.value("auth_db_connections_in_use", &[]), 1.0);
    assert_eq!(m.value("auth_db_connections_idle", &[]), 0.0);
    assert!(m.value("auth_db_pool_timeouts_total", &[]) >= 1.0);
    // Its database reads gave up: their last values are served, and the failures counted.
    assert!(m.value("auth_metrics_scrape_read_failures_total", &[]) >= 1.0);
    drop(held);
    assert_eq!(
        app.login(&unique_email(), "a guess").await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_metrics_token_is_required_when_set() {
    let app = spawn_app_with(&[("METRICS_TOKEN", TOKEN)]).await;
    let get = |auth: Option<String>| {
        let mut request = app.client.get(app.url("/metrics"));
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        request.send()
    };
    let refused = [
        None,
        Some(String::new()),
        Some(TOKEN.to_string()),
        Some(format!("Basic {TOKEN}")),
        Some("Bearer wrong-token-0123456789abcdef".to_string()),
        Some(format!("Bearer {TOKEN}x")),
        Some(format!("Bearer {}", &TOKEN[..TOKEN.len() - 1])),
        Some("Bearer ".to_string()),
    ];
    for auth in refused {
        let response = get(auth.clone()).await.unwrap();
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{auth:?}"
        );
        let body = assert_problem(response, 401, "UNAUTHORIZED").await;
        assert!(!body.to_string().contains(TOKEN), "{body}");
    }
    for auth in [format!("Bearer {TOKEN}"), format!("bearer {TOKEN}")] {
        let response = get(Some(auth)).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], OPENMETRICS);
    }
    // The refusals were counted like any request.
    let m = scrape_at(&app, app.url("/metrics"), Some(TOKEN)).await;
    assert_eq!(
        m.value(
            "http_requests_total",
            &[("route", "/metrics"), ("status", "401")]
        ),
        8.0
    );
}

#[tokio::test]
async fn metrics_address_serves_them_on_a_listener_of_their_own() {
    let app = spawn_app_with(&[("METRICS_ADDRESS", "127.0.0.1:0"), ("METRICS_TOKEN", TOKEN)]).await;
    let separate = app
        .metrics_address
        .clone()
        .expect("the metrics' listener's address");
    assert_ne!(separate, app.address);
    // Not on the main listener.
    assert_problem(
        app.client.get(app.url("/metrics")).send().await.unwrap(),
        404,
        "NOT_FOUND",
    )
    .await;
    // On its own, behind the token.
    assert_problem(
        app.client
            .get(format!("{separate}/metrics"))
            .send()
            .await
            .unwrap(),
        401,
        "UNAUTHORIZED",
    )
    .await;
    let m = scrape_at(&app, format!("{separate}/metrics"), Some(TOKEN)).await;
    // It counts the main listener's requests (the 404 above), not its own.
    assert_eq!(
        m.value(
            "http_requests_total",
            &[("route", "unmatched"), ("status", "404")]
        ),
        1.0
    );
    assert_eq!(
        m.sum("http_requests_total", &[("route", "/metrics")]),
        0.0,
        "{}",
        m.text
    );
    assert_problem(
        app.client
            .post(format!("{separate}/metrics"))
            .send()
            .await
            .unwrap(),
        405,
        "METHOD_NOT_ALLOWED",
    )
    .await;
    // Nothing else is served there.
    for path in ["/health", "/login", "/openapi.json", "/metrics/x"] {
        assert_problem(
            app.client
                .get(format!("{separate}{path}"))
                .send()
                .await
                .unwrap(),
            404,
            "NOT_FOUND",
        )
        .await;
    }

    // It stops with the server.
    let client = reqwest::Client::new();
    drop(app);
    eventually(
        "the metrics' listener closed",
        Duration::from_secs(20),
        || {
            let (client, url) = (client.clone(), format!("{separate}/metrics"));
            async move { client.get(url).send().await.is_err() }
        },
        |closed| *closed,
    )
    .await;
}

#[tokio::test]
async fn metrics_false_serves_nothing_and_measures_no_request() {
    let app = spawn_app_with(&[("METRICS", "false"), ("METRICS_ADDRESS", "127.0.0.1:0")]).await;
    assert!(app.metrics_address.is_none());
    assert_problem(
        app.client.get(app.url("/metrics")).send().await.unwrap(),
        404,
        "NOT_FOUND",
    )
    .await;
    app.client.get(app.url("/health")).send().await.unwrap();
    let text = app.state.metrics.scrape(&app.state).await;
    assert!(!text.contains("http_requests_total{"), "{text}");
}

#[tokio::test]
async fn the_metrics_are_not_in_the_openapi_document() {
    let app = spawn_app().await;
    let document = app.get_json("/openapi.json").await;
    assert!(document["paths"].get("/metrics").is_none());
    assert!(document["paths"].get("/health").is_some());
}
