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

/// Readiness: whether the database answers, and whether anything is off.
///
/// 200 `ok`; 200 `degraded` with its `reasons` while the database answers but a connection was
/// lost or the pool ran out of connections within the last minute, or the per-client limits are
/// on this instance's own because Redis does not answer; 503 `down` when the database does not
/// answer (within 2 s; a lost connection is tried once more first).
#[utoipa::path(
    get, path = "/health", tag = "operations",
    responses(
        (status = 200, description = "Serving, and the database answers: `ok`, or `degraded` with the reasons", body = HealthResponse,
         examples(
             ("ok" = (value = json!({"status": "ok", "database": "ok"}))),
             ("degraded" = (value = json!({"status": "degraded", "database": "ok", "reasons": ["database_connection_lost", "rate_limits_local"]}))),
         )),
        (status = 503, description = "The database does not answer", body = HealthResponse,
         example = json!({"status": "down", "database": "unavailable"})),
    )
)]
async fn health(State(state): State<AppState>) -> (StatusCode, Json<HealthResponse>) {
    let ping = tokio::time::timeout(std::time::Duration::from_secs(2), state.db.ping()).await;
    match ping {
        Ok(Ok(())) => {
            let mut reasons: Vec<&'static str> =
                state.db.degraded().into_iter().map(|d| d.name()).collect();
            if state.limiter.backend() == crate::ratelimit::Backend::Fallback {
                reasons.push("rate_limits_local");
            }
            let status = if reasons.is_empty() { "ok" } else { "degraded" };
            (
                StatusCode::OK,
                Json(HealthResponse {
                    status,
                    database: "ok",
                    reasons,
                }),
            )
        }
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
            status: "down",
            database: "unavailable",
            reasons: Vec::new(),
        }),
    )
}
