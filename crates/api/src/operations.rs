//! Long-running operations (`/v1/operations/{id}`), in the manner of Google's: a purge, a
//! fleet migration; answered with `202` by the request that starts one, read back here.

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use domain::Scope;
use serde::Serialize;
use serde_json::Value;
use storage::operations::OperationRow;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::AppState;
use crate::extract::Caller;
use crate::problem::{ApiError, Problem};

pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/v1/operations/{id}", get(show))
}

/// How far an operation has come: one item per (tenant, product) it touches.
#[derive(Debug, Serialize, ToSchema)]
pub struct Progress {
    /// Items in all.
    total: i64,
    /// Items done.
    succeeded: i64,
    /// Items failed (see `failures`).
    failed: i64,
}

/// An item that failed.
#[derive(Debug, Serialize, ToSchema)]
pub struct ItemFailure {
    /// The tenant.
    tenant_id: Uuid,
    /// The product.
    product: String,
    /// Why.
    error: Option<String>,
}

/// A long-running operation.
#[derive(Debug, Serialize, ToSchema)]
pub struct OperationView {
    /// Its id.
    id: Uuid,
    /// `tenant.purge` or `product.migrations`.
    kind: String,
    /// `running`, `succeeded` or `failed`.
    state: String,
    /// Whether it ended.
    done: bool,
    /// The tenant it is about.
    tenant_id: Option<Uuid>,
    /// The product it is about.
    product: Option<String>,
    /// Its items.
    progress: Progress,
    /// The first 100 items that failed.
    failures: Vec<ItemFailure>,
    /// What it came to, once done.
    #[schema(value_type = Option<Object>)]
    result: Option<Value>,
    /// Why it failed, once failed.
    #[schema(value_type = Option<Object>)]
    error: Option<Value>,
    /// When it was asked for.
    created_at: DateTime<Utc>,
    /// Last change.
    updated_at: DateTime<Utc>,
    /// When it ended.
    done_at: Option<DateTime<Utc>>,
}

/// Failed items an operation view lists.
const FAILURES_SHOWN: i64 = 100;

/// The view of `row`, with its failed items read.
pub(crate) async fn view(state: &AppState, row: OperationRow) -> Result<OperationView, ApiError> {
    let failures = if row.failed > 0 {
        registry::provisioning::operation_failures(&state.pool, row.id, FAILURES_SHOWN).await?
    } else {
        Vec::new()
    };
    Ok(OperationView {
        id: row.id,
        kind: row.kind,
        done: row.state != "running",
        state: row.state,
        tenant_id: row.tenant_id,
        product: row.product_id,
        progress: Progress {
            total: row.total,
            succeeded: row.succeeded,
            failed: row.failed,
        },
        failures: failures
            .into_iter()
            .map(|(tenant_id, product, error)| ItemFailure {
                tenant_id,
                product,
                error,
            })
            .collect(),
        result: row.result,
        error: row.error,
        created_at: row.created_at,
        updated_at: row.updated_at,
        done_at: row.done_at,
    })
}

/// `202 Accepted` with the operation, and `Location` where it is read back.
pub(crate) async fn accepted(state: &AppState, row: OperationRow) -> Result<Response, ApiError> {
    let location =
        HeaderValue::from_str(&format!("/v1/operations/{}", row.id)).map_err(ApiError::internal)?;
    let view = view(state, row).await?;
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(view),
    )
        .into_response())
}

/// A long-running operation: its state, progress and, once done, its result or error.
#[utoipa::path(get, path = "/v1/operations/{id}", operation_id = "get_operation", tag = "provisioning",
    security(("bearer" = ["tenants:read"])),
    params(("id" = Uuid, Path, description = "The operation's id")),
    responses((status = 200, description = "The operation", body = OperationView),
    (status = 404, description = "No such operation, or not the caller's", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<OperationView>, ApiError> {
    caller.require(Scope::TenantsRead)?;
    let not_found = || ApiError::not_found("no such operation");
    let id: Uuid = id.parse().map_err(|_| not_found())?;
    let row = registry::provisioning::operation(&state.pool, id)
        .await?
        .filter(|row| match caller.principal.tenant_id {
            None => true,
            Some(own) => row.tenant_id == Some(own),
        })
        .ok_or_else(not_found)?;
    Ok(Json(view(&state, row).await?))
}
