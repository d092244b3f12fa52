//! The HTTP layer: routes, extractors, request and response types, middleware.

mod admin_routes;
mod auth_routes;
mod discovery_routes;
pub mod extract;
mod me_routes;
pub mod metrics_routes;
mod mfa_routes;
pub mod openapi;
mod ops_routes;
mod pages;
mod passkey_routes;
pub mod problem;
mod recovery_routes;
pub mod types;

use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{from_fn_with_state, map_response};
use axum::response::IntoResponse;
use tower::ServiceBuilder;
use tower_http::LatencyUnit;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

use crate::config::MetricsExposure;
use crate::error::Error;
use crate::state::AppState;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The API's routes, the discovery routes, and their one OpenAPI document, built from the same
/// handler lists.
pub fn api() -> (Router<AppState>, Router<AppState>, utoipa::openapi::OpenApi) {
    let (discovery, discovery_doc) = OpenApiRouter::new()
        .merge(discovery_routes::router())
        .split_for_parts();
    let (router, mut api) = OpenApiRouter::with_openapi(openapi::base())
        .merge(auth_routes::router())
        .merge(me_routes::router())
        .merge(mfa_routes::router())
        .merge(passkey_routes::router())
        .merge(recovery_routes::router())
        .merge(admin_routes::router())
        .merge(ops_routes::router())
        .split_for_parts();
    api.merge(discovery_doc);
    (router, discovery, openapi::finish(api))
}

/// The whole application: API, docs, and the middleware stack.
pub fn app(state: AppState) -> Router {
    let config = state.config.clone();
    let (api, discovery, openapi) = api();
    let openapi = openapi::configure(openapi, &config);

    // Anything carrying tokens or user data must not be stored by caches.
    let mut api = api.with_state(state.clone());
    if !config.passkeys.enabled {
        api = api.layer(axum::middleware::from_fn(without_passkeys));
    }
    let api = api.layer(SetResponseHeaderLayer::overriding(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    ));
    // Public keys change only at a rotation: resource servers may cache them a while.
    let discovery = discovery
        .with_state(state.clone())
        .layer(SetResponseHeaderLayer::overriding(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=300"),
        ));
    let docs: Router = SwaggerUi::new("/docs")
        .url("/openapi.json", openapi)
        .config(
            utoipa_swagger_ui::Config::default()
                .persist_authorization(false)
                .try_it_out_enabled(true),
        )
        .into();

    let mut app = Router::new().merge(api).merge(discovery).merge(docs);
    if config.pages.enabled {
        // The pages, with their own headers (`pages::routes`); a form posted to /register is
        // the registration page's, JSON the API's.
        let (page_routes, register_form) = pages::routes(state.clone());
        app = app.merge(page_routes).layer(from_fn_with_state(
            register_form,
            pages::register_form_first,
        ));
    }
    if config.metrics.exposure() == MetricsExposure::MainListener {
        app = app.merge(metrics_routes::router(state.clone()));
    }
    let mut app = app.fallback(|| async { Error::NotFound("there is nothing at this path") });
    if !config.server.cors_origins.is_empty() {
        app = app.layer(cors(&config.server.cors_origins));
    }
    let header =
        |name, value| SetResponseHeaderLayer::overriding(name, HeaderValue::from_static(value));
    let hsts = config.server.hsts.then(|| {
        header(
            header::STRICT_TRANSPORT_SECURITY,
            "max-age=31536000; includeSubDomains",
        )
    });

    // With METRICS=false nothing is measured (no cost at all).
    let track = config
        .metrics
        .enabled
        .then(|| from_fn_with_state(state.metrics.clone(), metrics_routes::track_requests));

    // Outermost first: a request id for every request and a span carrying it; the request's
    // metrics (its final status, its whole time); the security headers on every response,
    // errors included; then the limits. Responses the framework or the limits make are turned
    // into problem documents.
    app.layer(
        ServiceBuilder::new()
            .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
            .layer(
                TraceLayer::new_for_http()
                    .make_span_with(request_span)
                    .on_request(())
                    .on_response(
                        DefaultOnResponse::new()
                            .level(Level::INFO)
                            .latency_unit(LatencyUnit::Millis),
                    ),
            )
            .layer(PropagateRequestIdLayer::new(REQUEST_ID))
            .option_layer(track)
            .layer(header(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
            // The pages set their own (`same-origin`: with `no-referrer` a browser sends
            // `Origin: null` on a page's own form posts, which the pages' check refuses).
            .layer(SetResponseHeaderLayer::if_not_present(
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ))
            .layer(header(header::X_FRAME_OPTIONS, "DENY"))
            .option_layer(hsts)
            .layer(map_response(problem::problemize))
            .layer(CatchPanicLayer::custom(problem::panic_response))
            .layer(axum::middleware::from_fn(limit_headers))
            .layer(TimeoutLayer::with_status_code(
                StatusCode::SERVICE_UNAVAILABLE,
                config.connections.request_timeout,
            ))
            .layer(RequestBodyLimitLayer::new(
                config.connections.body_limit_bytes,
            ))
            .layer(DefaultBodyLimit::max(config.connections.body_limit_bytes)),
    )
}

/// PASSKEYS=false: the passkey routes are not there (404), before anything else is looked at.
async fn without_passkeys(
    request: Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if passkey_routes::is_passkey_route(request.method(), request.uri().path()) {
        return Error::NotFound("there is nothing at this path").into_response();
    }
    next.run(request).await
}

/// The most header bytes a request may carry (hyper itself stops at about 400 KiB).
const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Refuses requests with more than [`MAX_HEADER_BYTES`] of headers: 431.
async fn limit_headers(request: Request, next: axum::middleware::Next) -> axum::response::Response {
    let size: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if size > MAX_HEADER_BYTES {
        return problem::problem(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            format!("the request headers are larger than {MAX_HEADER_BYTES} bytes"),
        )
        .into_response();
    }
    next.run(request).await
}

fn cors(origins: &[String]) -> CorsLayer {
    let origins: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, REQUEST_ID])
        .expose_headers([REQUEST_ID, header::RETRY_AFTER, header::WWW_AUTHENTICATE])
        .max_age(Duration::from_secs(600))
}

/// The span of one request: method, path (never the query), route and request id, so every
/// log line of the request carries them. Headers are not recorded: they hold tokens.
fn request_span(request: &Request) -> tracing::Span {
    let request_id = request
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str)
        .unwrap_or("-");
    tracing::info_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
        route,
        request_id,
    )
}
