//! Liveness probe: answers as long as the process can serve HTTP.

use axum::{Json, Router, routing::get};
use serde::Serialize;

use crate::AppState;

/// The body of a healthy liveness probe.
#[derive(Debug, Serialize)]
struct Health {
    status: &'static str,
}

pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/healthz", get(healthz))
}

async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}
