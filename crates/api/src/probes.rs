//! Probes for the orchestrator and the scraper: liveness, readiness and start-up on both
//! listeners, under the short names (`/healthz`, `/readyz`) and the `/health/…` names
//! Kubernetes guides use; the dependency report and metrics on the admin listener only.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use storage::migrations::SchemaState;
use utoipa::ToSchema;

use crate::AppState;
use crate::health::{Dependency, State as DependencyState};
use crate::problem::{ApiError, Problem};

/// The body of a passing probe.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProbeStatus {
    /// `ok` (alive), `ready` or `started`.
    #[schema(example = "ok")]
    status: &'static str,
}

/// The probes on the API listener (orchestrators often probe the serving port).
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/health/startup", get(startup))
}

/// The probes, the dependency report and the metrics, on the admin listener: the report
/// names the issuer and the resolver and takes a round trip to each, so it is for
/// operators, not for whoever reaches the API.
pub(crate) fn admin_router() -> Router<AppState> {
    router()
        .route("/health/dependencies", get(dependencies))
        .route("/metrics", get(metrics))
}

/// Liveness: the process serves HTTP.
#[utoipa::path(get, path = "/healthz", tag = "probes",
    responses((status = 200, description = "Alive", body = ProbeStatus)))]
pub(crate) async fn healthz() -> Json<ProbeStatus> {
    Json(ProbeStatus { status: "ok" })
}

/// Liveness under its Kubernetes name: the same answer as `/healthz`.
#[utoipa::path(get, path = "/health/live", tag = "probes",
    responses((status = 200, description = "Alive", body = ProbeStatus)))]
pub(crate) async fn live() -> Json<ProbeStatus> {
    healthz().await
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
    schema_is_current(&state).await?;
    Ok(Json(ProbeStatus { status: "ready" }))
}

/// Readiness under its Kubernetes name: the same answer as `/readyz`.
#[utoipa::path(get, path = "/health/ready", tag = "probes", responses(
    (status = 200, description = "Ready to serve", body = ProbeStatus),
    (status = 503, description = "Database unreachable or schema behind", body = Problem,
     content_type = "application/problem+json")))]
pub(crate) async fn ready(state: State<AppState>) -> Result<Json<ProbeStatus>, ApiError> {
    readyz(state).await
}

/// Start-up: 503 until the schema has been at this build's version once and the change
/// listener has subscribed; from then on 200 without asking the database again, so a
/// database outage later restarts nothing (readiness takes the pod out of the Service).
#[utoipa::path(get, path = "/health/startup", tag = "probes", responses(
    (status = 200, description = "Started", body = ProbeStatus),
    (status = 503, description = "Schema behind, database unreachable, or the change listener not subscribed yet",
     body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn startup(State(state): State<AppState>) -> Result<Json<ProbeStatus>, ApiError> {
    if !state.health.has_started() {
        schema_is_current(&state).await?;
        if !state.health.listening() {
            return Err(ApiError::unavailable(
                "the change listener has not subscribed yet",
            ));
        }
        state.health.mark_started();
    }
    Ok(Json(ProbeStatus { status: "started" }))
}

/// Whether the database answers within [`READINESS_BUDGET`] with a schema at (or ahead of)
/// this build's version; the 503 says which is not the case.
async fn schema_is_current(state: &AppState) -> Result<(), ApiError> {
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
        SchemaState::Current | SchemaState::Ahead { .. } => Ok(()),
        SchemaState::Behind { .. } => Err(ApiError::unavailable(schema.to_string())),
    }
}

/// The report of every dependency's state. Always a 200: the report is the answer (a
/// monitor reads `status`), and nothing should restart or unroute a pod on it.
#[derive(Debug, Serialize)]
pub struct DependencyReport {
    /// `up` when no dependency is down, `down` otherwise.
    status: DependencyState,
    /// Each dependency, in a fixed order.
    dependencies: Vec<Dependency>,
}

/// Every dependency's state and the latency of its check (admin listener only).
pub(crate) async fn dependencies(State(state): State<AppState>) -> Json<DependencyReport> {
    let dependencies = crate::health::dependencies(&state).await;
    let down = dependencies
        .iter()
        .any(|dependency| dependency.state == DependencyState::Down);
    Json(DependencyReport {
        status: if down {
            DependencyState::Down
        } else {
            DependencyState::Up
        },
        dependencies,
    })
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
