//! Probes for the orchestrator and the scraper: liveness and readiness on both listeners,
//! metrics on the admin listener only.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use storage::migrations::SchemaState;
use utoipa::ToSchema;

use crate::AppState;
use crate::problem::{ApiError, Problem};

/// The body of a passing probe.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProbeStatus {
    /// `ok` (alive) or `ready`.
    #[schema(example = "ok")]
    status: &'static str,
}

/// The probes on the API listener (orchestrators often probe the serving port).
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

/// The probes and the metrics, on the admin listener.
pub(crate) fn admin_router() -> Router<AppState> {
    router().route("/metrics", get(metrics))
}

/// Liveness: the process serves HTTP.
#[utoipa::path(get, path = "/healthz", tag = "probes",
    responses((status = 200, description = "Alive", body = ProbeStatus)))]
pub(crate) async fn healthz() -> Json<ProbeStatus> {
    Json(ProbeStatus { status: "ok" })
}

/// How long readiness waits for the database.
const READINESS_BUDGET: std::time::Duration = std::time::Duration::from_millis(800);

/// Readiness: the database answers within 800 ms and its schema is at the version this
/// build expects.
#[utoipa::path(get, path = "/readyz", tag = "probes", responses(
    (status = 200, description = "Ready to serve", body = ProbeStatus),
    (status = 503, description = "Database unreachable or schema behind", body = Problem,
     content_type = "application/problem+json")))]
pub(crate) async fn readyz(State(state): State<AppState>) -> Result<Json<ProbeStatus>, ApiError> {
    // Bounded well under a second, whatever the pool's acquire timeout: an orchestrator
    // should see the database go, and come back, within a second.
    let schema = tokio::time::timeout(
        READINESS_BUDGET,
        storage::migrations::schema_state(&state.pool),
    )
    .await
    .map_err(|_| sqlx::Error::PoolTimedOut)
    .flatten()
    .map_err(|error| {
        tracing::warn!(%error, "readiness: database unreachable");
        ApiError::unavailable("the database does not answer")
    })?;
    match schema {
        SchemaState::Current | SchemaState::Ahead { .. } => {
            Ok(Json(ProbeStatus { status: "ready" }))
        }
        SchemaState::Behind { .. } => Err(ApiError::unavailable(schema.to_string())),
    }
}

/// Prometheus metrics in the OpenMetrics text format (admin listener only). The webhook
/// queue is read at scrape time; when the database does not answer, those gauges keep
/// their last values and the rest is still served.
pub(crate) async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    match storage::webhooks::deliveries::queue_depth(&state.pool).await {
        Ok(depth) => state.metrics.webhook_queue(&depth, chrono::Utc::now()),
        Err(error) => tracing::warn!(%error, "the webhook queue could not be read for metrics"),
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(&state.pool),
    )
}
