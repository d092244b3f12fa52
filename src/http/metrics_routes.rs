//! GET /metrics: the registry of `crate::metrics` as OpenMetrics text, on the main listener or
//! on a listener of its own (METRICS_ADDRESS), behind METRICS_TOKEN when it is set. Not in the
//! OpenAPI document: it is for the monitoring system, not for the API's clients.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

use crate::config::MetricsConfig;
use crate::error::{Error, Result};
use crate::state::AppState;

/// The OpenMetrics text format's content type.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

const PATH: &str = "/metrics";

/// The route, for the main router (with METRICS=true and no METRICS_ADDRESS).
pub fn router(state: AppState) -> Router {
    Router::new().route(PATH, get(metrics)).with_state(state)
}

/// The whole application of the separate listener (METRICS_ADDRESS): /metrics, and 404 for
/// anything else.
pub fn separate_app(state: AppState) -> Router {
    router(state)
        .fallback(|| async { Error::NotFound("there is nothing at this path") })
        // A wrong method's 405 as a problem document too.
        .layer(axum::middleware::map_response(super::problem::problemize))
        .layer(tower_http::set_header::SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
}

async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Result<Response> {
    authorize(&state.config.metrics, &headers)?;
    let text = state.metrics.scrape(&state).await;
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(OPENMETRICS)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        text,
    )
        .into_response())
}

/// With METRICS_TOKEN set, the request must carry `Authorization: Bearer <token>`, compared in
/// constant time (by digests: neither the content nor the length of the token shows in the
/// time); anything else is 401.
fn authorize(config: &MetricsConfig, headers: &HeaderMap) -> Result<()> {
    let Some(token) = &config.token else {
        return Ok(());
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, given)| given.trim());
    match given {
        Some(given) if same_secret(given.as_bytes(), token.expose().as_bytes()) => Ok(()),
        Some(_) => Err(Error::Unauthorized("the metrics token is wrong")),
        None => Err(Error::Unauthorized(
            "the metrics need a bearer token (METRICS_TOKEN): Authorization: Bearer <token>",
        )),
    }
}

/// Compares two secrets in time independent of where they differ and of their lengths.
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    let (given, expected) = (Sha256::digest(given), Sha256::digest(expected));
    let difference = given
        .iter()
        .zip(expected.iter())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    std::hint::black_box(difference) == 0
}

/// The `method` label: one of a fixed set, so that a client's invented methods make no series.
pub(super) fn method_label(method: &Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"0123456789abcdef", b"0123456789abcdef"));
        assert!(!same_secret(b"0123456789abcdef", b"0123456789abcdeF"));
        assert!(!same_secret(b"0123456789abcde", b"0123456789abcdef"));
        assert!(!same_secret(b"", b"0123456789abcdef"));
    }

    #[test]
    fn invented_methods_share_one_label() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "other");
    }
}
