//! The middleware every route's requests pass through, folded into one tower service with one
//! future (each of axum's `from_fn` / `map_response` layers and tower-http's layers was a boxed
//! service, a boxed future or both, per request). Outermost first, as the layers were:
//!
//! 1. the request id: the caller's `X-Request-Id`, or a new UUID v4 ([`request_id`]); copied to
//!    the response;
//! 2. the request's span (method, path, route, request id) and, once answered, the access line
//!    (`finished processing request`, latency in ms and status, target
//!    `tower_http::trace::on_response`; a 5xx also `response failed` at error level, target
//!    `tower_http::trace::on_failure`), as tower-http's `TraceLayer` wrote them;
//! 3. the request metrics (route, method, status, time), with the series resolved once per
//!    route ([`Metrics::request_series`]);
//! 4. the security headers: `X-Content-Type-Options: nosniff`, `Referrer-Policy: no-referrer`
//!    unless the response has one, `X-Frame-Options: DENY`, `Strict-Transport-Security` with
//!    HSTS=true;
//! 5. responses the framework and the limits make turned into problem documents
//!    ([`problem::problemize`]);
//! 6. a handler's panic answered 500 ([`problem::panic_response`]);
//! 7. request heads over [`MAX_HEADER_BYTES`]: 431;
//! 8. `REQUEST_TIMEOUT_SECONDS`: 503;
//! 9. `BODY_LIMIT_BYTES`: a `Content-Length` over it is 413 at once; a body is cut off there
//!    (the extractors answer 413);
//! 10. the request's origin for the audit trail and the client extractors
//!     ([`RequestOrigin`]), worked out only when something needs it.

use std::convert::Infallible;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use pin_project_lite::pin_project;
use tokio::task::futures::TaskLocalFuture;
use tracing::Instrument as _;
use tracing::instrument::Instrumented;

use super::extract::client::RequestOrigin;
use super::metrics_routes::method_label;
use super::problem;
use crate::metrics::{Metrics, RequestSeries};
use crate::service::audit::{self, OriginSource};
use crate::state::AppState;

pub(super) const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The most header bytes a request may carry (hyper itself stops at about 400 KiB).
pub(super) const MAX_HEADER_BYTES: usize = 16 * 1024;

const NOSNIFF: HeaderValue = HeaderValue::from_static("nosniff");
const NO_REFERRER: HeaderValue = HeaderValue::from_static("no-referrer");
const DENY: HeaderValue = HeaderValue::from_static("DENY");
const HSTS: HeaderValue = HeaderValue::from_static("max-age=31536000; includeSubDomains");

/// The layer: [`Edge`] around each route (axum's `Router::layer` applies it per route and
/// method, so each keeps its own metric series).
#[derive(Clone)]
pub(super) struct EdgeLayer {
    shared: Arc<Shared>,
}

struct Shared {
    state: AppState,
    hsts: bool,
    timeout: Duration,
    body_limit: usize,
    /// ACCESS_LOG: the request's span and its access line.
    access_log: bool,
    /// With METRICS=false nothing is measured.
    metrics: Option<Arc<Metrics>>,
}

impl EdgeLayer {
    pub(super) fn new(state: &AppState) -> Self {
        let config = &state.config;
        Self {
            shared: Arc::new(Shared {
                access_log: config.logging.access_log,
                state: state.clone(),
                hsts: config.server.hsts,
                timeout: config.connections.request_timeout,
                body_limit: config.connections.body_limit_bytes,
                metrics: config.metrics.enabled.then(|| state.metrics.clone()),
            }),
        }
    }
}

impl<S> tower::Layer<S> for EdgeLayer {
    type Service = Edge<S>;

    fn layer(&self, inner: S) -> Edge<S> {
        Edge {
            inner,
            shared: self.shared.clone(),
            series: Arc::new(OnceLock::new()),
        }
    }
}

#[derive(Clone)]
pub(super) struct Edge<S> {
    inner: S,
    shared: Arc<Shared>,
    /// This route's metric series, resolved at its first answer.
    series: Arc<OnceLock<RequestSeries>>,
}

impl<S> tower::Service<Request> for Edge<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = EdgeFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let started = Instant::now();
        let request_id = match request.headers().get(&REQUEST_ID) {
            Some(id) => id.clone(),
            None => {
                let id = request_id::new();
                request.headers_mut().insert(REQUEST_ID, id.clone());
                id
            }
        };
        let span = if self.shared.access_log {
            request_span(&request, &request_id)
        } else {
            tracing::Span::none()
        };
        let route = request.extensions().get::<MatchedPath>().cloned();
        let done = Done {
            started,
            request_id,
            method: method_label(request.method()),
            route,
            shared: self.shared.clone(),
            series: self.series.clone(),
            span: span.clone(),
        };

        let early = if header_bytes(&request) > MAX_HEADER_BYTES {
            Some(
                problem::problem(
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    "PAYLOAD_TOO_LARGE",
                    format!("the request headers are larger than {MAX_HEADER_BYTES} bytes"),
                )
                .into_response(),
            )
        } else {
            limit_body(&mut request, self.shared.body_limit)
                .err()
                .map(|status| status.into_response())
        };
        if let Some(response) = early {
            return EdgeFuture {
                inner: None,
                early: Some(response),
                done: Some(done),
            };
        }

        let origin = Arc::new(RequestOrigin::of(&request, &self.shared.state));
        request.extensions_mut().insert(origin.clone());
        let inner = match catch_unwind(AssertUnwindSafe(|| self.inner.call(request))) {
            Ok(future) => future,
            Err(panic) => {
                return EdgeFuture {
                    inner: None,
                    early: Some(problem::panic_response(panic)),
                    done: Some(done),
                };
            }
        };
        let inner = audit::scope_origin(
            origin as Arc<dyn OriginSource>,
            tokio::time::timeout(self.shared.timeout, inner),
        )
        .instrument(span);
        EdgeFuture {
            inner: Some(inner),
            early: None,
            done: Some(done),
        }
    }
}

type Inner<F> = Instrumented<TaskLocalFuture<Arc<dyn OriginSource>, tokio::time::Timeout<F>>>;

pin_project! {
    pub(super) struct EdgeFuture<F> {
        #[pin]
        inner: Option<Inner<F>>,
        early: Option<Response>,
        done: Option<Done>,
    }
}

impl<F> Future for EdgeFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let response = match this.early.take() {
            Some(response) => response,
            None => {
                let Some(inner) = this.inner.as_mut().as_pin_mut() else {
                    panic!("EdgeFuture polled after completion");
                };
                match catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
                    Ok(Poll::Pending) => return Poll::Pending,
                    Ok(Poll::Ready(Ok(Ok(response)))) => response,
                    Ok(Poll::Ready(Ok(Err(never)))) => match never {},
                    // REQUEST_TIMEOUT_SECONDS: an empty 503, which `problemize` explains.
                    Ok(Poll::Ready(Err(_elapsed))) => {
                        StatusCode::SERVICE_UNAVAILABLE.into_response()
                    }
                    Err(panic) => problem::panic_response(panic),
                }
            }
        };
        this.inner.set(None);
        let done = this
            .done
            .take()
            .expect("EdgeFuture polled after completion");
        Poll::Ready(Ok(done.finish(response)))
    }
}

/// What is left to do once the response is there.
struct Done {
    started: Instant,
    request_id: HeaderValue,
    method: &'static str,
    route: Option<MatchedPath>,
    shared: Arc<Shared>,
    series: Arc<OnceLock<RequestSeries>>,
    span: tracing::Span,
}

impl Done {
    fn finish(self, response: Response) -> Response {
        let mut response = problem::problemize_response(response);
        let headers = response.headers_mut();
        if self.shared.hsts {
            headers.insert(header::STRICT_TRANSPORT_SECURITY, HSTS);
        }
        headers.insert(header::X_FRAME_OPTIONS, DENY);
        headers
            .entry(header::REFERRER_POLICY)
            .or_insert(NO_REFERRER);
        headers.insert(header::X_CONTENT_TYPE_OPTIONS, NOSNIFF);
        let status = response.status();
        let elapsed = self.started.elapsed();
        if let Some(metrics) = &self.shared.metrics {
            let route = self.route.as_ref().map(MatchedPath::as_str);
            let series = self
                .series
                .get_or_init(|| metrics.request_series(route, self.method));
            if series.is_for(route, self.method) {
                metrics.observe_series(series, status.as_u16(), elapsed);
            } else {
                // The router's fallbacks serve several methods and paths.
                metrics.observe_request(route, self.method, status.as_u16(), elapsed);
            }
        }
        response
            .headers_mut()
            .entry(&REQUEST_ID)
            .or_insert(self.request_id);
        if self.shared.access_log {
            access_line(&self.span, status, elapsed);
        } else if status.is_server_error() {
            let route = self.route.as_ref().map_or("-", MatchedPath::as_str);
            let request_id = response
                .headers()
                .get(&REQUEST_ID)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-");
            tracing::error!(
                target: "tower_http::trace::on_failure",
                method = self.method,
                route,
                request_id,
                classification = %Failure(status),
                latency = %Millis(elapsed),
                "response failed"
            );
        }
        response
    }
}

/// The span of one request: method, path (never the query), route and request id, so every
/// log line of the request carries them. Headers are not recorded: they hold tokens.
fn request_span(request: &Request, request_id: &HeaderValue) -> tracing::Span {
    // Target and fields as before the fold (`http::request_span`), so filters still match.
    tracing::info_span!(
        target: "auth_server::http",
        "request",
        method = %request.method(),
        path = %request.uri().path(),
        route = request
            .extensions()
            .get::<MatchedPath>()
            .map_or("-", MatchedPath::as_str),
        request_id = request_id.to_str().unwrap_or("-"),
    )
}

/// The access line, as tower-http's `DefaultOnResponse` (at INFO, in milliseconds) and, for a
/// 5xx, `DefaultOnFailure` wrote it (their targets, so `RUST_LOG=tower_http=warn` still silences
/// it).
fn access_line(span: &tracing::Span, status: StatusCode, elapsed: Duration) {
    let latency = Millis(elapsed);
    tracing::info!(
        target: "tower_http::trace::on_response",
        parent: span,
        %latency,
        status = i32::from(status.as_u16()),
        "finished processing request"
    );
    if status.is_server_error() {
        tracing::error!(
            target: "tower_http::trace::on_failure",
            parent: span,
            classification = %Failure(status),
            %latency,
            "response failed"
        );
    }
}

struct Millis(Duration);

/// tower-http's `ServerErrorsFailureClass::StatusCode` as it displayed.
struct Failure(StatusCode);

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Status code: {}", self.0)
    }
}

impl std::fmt::Display for Millis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ms", self.0.as_millis())
    }
}

/// The request head's size as the 431 counts it.
fn header_bytes(request: &Request) -> usize {
    request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum()
}

/// BODY_LIMIT_BYTES, as tower-http's `RequestBodyLimit` applied it: a `Content-Length` over the
/// limit is refused at once; a body is cut off at the limit (or at its `Content-Length`).
fn limit_body(request: &mut Request, limit: usize) -> Result<(), StatusCode> {
    use axum::body::HttpBody as _;
    let content_length = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.parse::<usize>().ok());
    let limit = match content_length {
        Some(length) if length > limit => return Err(StatusCode::PAYLOAD_TOO_LARGE),
        Some(length) => limit.min(length),
        None => limit,
    };
    // A request without a body (most GETs) has nothing to cut off.
    if !request.body().is_end_stream() {
        let body = std::mem::take(request.body_mut());
        *request.body_mut() = Body::new(http_body_util::Limited::new(body, limit));
    }
    Ok(())
}

/// X-Request-Id values: UUID v4 from a per-thread generator seeded from the operating system
/// (a correlation id must be unique, not secret; `Uuid::new_v4` asked the OS for 16 bytes on
/// every request, a system call).
pub(super) mod request_id {
    use std::cell::Cell;

    use axum::http::HeaderValue;

    thread_local! {
        static STATE: Cell<u64> = Cell::new(seed());
    }

    fn seed() -> u64 {
        let mut bytes = [0u8; 8];
        if getrandom::fill(&mut bytes).is_err() {
            // Unique enough still: the time and the thread's address.
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            return now ^ (&bytes as *const _ as u64).rotate_left(32);
        }
        u64::from_le_bytes(bytes)
    }

    /// wyrand (Wang Yi's): a 64-bit state stepped by a constant (every thread's sequence is a
    /// full-period walk from its own random start), mixed by a 128-bit multiply.
    fn next() -> u64 {
        STATE.with(|state| {
            let s = state.get().wrapping_add(0xa076_1d64_78bd_642f);
            state.set(s);
            let t = u128::from(s) * u128::from(s ^ 0xe703_7ed1_a0b4_28db);
            ((t >> 64) as u64) ^ (t as u64)
        })
    }

    /// A new request id: a UUID v4, hyphenated, lower case.
    pub fn new() -> HeaderValue {
        let mut random = [0u8; 16];
        random[..8].copy_from_slice(&next().to_le_bytes());
        random[8..].copy_from_slice(&next().to_le_bytes());
        let uuid = uuid::Builder::from_random_bytes(random).into_uuid();
        let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let text = uuid.hyphenated().encode_lower(&mut text);
        HeaderValue::from_str(text).expect("a UUID is a valid header value")
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn ids_are_uuid_v4_and_differ() {
            let a = super::new();
            let b = super::new();
            assert_ne!(a, b);
            let parsed = uuid::Uuid::parse_str(a.to_str().unwrap()).unwrap();
            assert_eq!(parsed.get_version_num(), 4);
            assert_eq!(a.to_str().unwrap(), parsed.hyphenated().to_string());
        }
    }
}
