//! Operations: GET /health.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::types::HealthResponse;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(liveness))
}

/// Liveness and database reachability, for load balancers and orchestrators.
#[utoipa::path(
    get, path = "/health", tag = "operations",
    responses(
        (status = 200, description = "Serving, and the database answers", body = HealthResponse,
         example = json!({"status": "ok", "database": "ok"})),
        (status = 503, description = "The database does not answer", body = HealthResponse,
         example = json!({"status": "unavailable", "database": "unavailable"})),
    )
)]
async fn health(State(state): State<AppState>) -> (StatusCode, Json<HealthResponse>) {
    let ping = tokio::time::timeout(std::time::Duration::from_secs(2), state.db.ping()).await;
    match ping {
        Ok(Ok(())) => (
            StatusCode::OK,
            Json(HealthResponse {
                status: "ok",
                database: "ok",
            }),
        ),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "health check: database unavailable");
            unavailable()
        }
        Err(_) => {
            tracing::warn!("health check: database did not answer within 2 s");
            unavailable()
        }
    }
}

/// Liveness: the process serves HTTP. Touches neither the database nor any token, so a probe
/// never restarts a healthy instance because its database is away.
#[utoipa::path(
    get, path = "/health/live", tag = "operations",
    responses((status = 200, description = "Serving", body = LiveResponse, example = json!({"status": "ok"})))
)]
async fn liveness() -> Json<LiveResponse> {
    Json(LiveResponse { status: "ok" })
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct LiveResponse {
    /// Always `ok`.
    pub status: &'static str,
}

fn unavailable() -> (StatusCode, Json<HealthResponse>) {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(HealthResponse {
            status: "unavailable",
            database: "unavailable",
        }),
    )
}
