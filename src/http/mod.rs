//! The HTTP layer: routes, extractors, request and response types, middleware.

mod admin_routes;
mod auth_routes;
mod discovery_routes;
mod edge;
mod events_routes;
pub mod extract;
mod invitation_routes;
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
mod webhook_routes;
pub mod webhook_types;

use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderValue, Method, header};
use axum::response::IntoResponse;
use tower::ServiceBuilder;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

use crate::config::MetricsExposure;
use crate::error::Error;
use crate::state::AppState;
use edge::REQUEST_ID;

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
        .merge(webhook_routes::router())
        .merge(invitation_routes::router())
        .merge(events_routes::router())
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
        app = app
            .merge(page_routes)
            .layer(pages::RegisterFormFirst::new(register_form));
    }
    if config.metrics.exposure() == MetricsExposure::MainListener {
        app = app.merge(metrics_routes::router(state.clone()));
    }
    let mut app = app.fallback(|| async { Error::NotFound("there is nothing at this path") });
    if !config.server.cors_origins.is_empty() {
        app = app.layer(cors(&config.server.cors_origins));
    }
    // Everything else every request passes through (request id, span and access line, metrics,
    // security headers, problem documents, panics, the head, time and body limits, the origin
    // for the audit trail), folded into one service: see `edge`.
    app.layer(
        ServiceBuilder::new()
            .layer(edge::EdgeLayer::new(&state))
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
