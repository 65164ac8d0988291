//! The delivery requests of `/v1/webhooks/{id}`: the history with its attempts, a retry of
//! one delivery, a replay since a time, and a test message.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use domain::Scope;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use storage::webhooks::deliveries::{self, AttemptRow, DeliveryRow};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::{endpoint_id, require_delivering};
use crate::AppState;
use crate::extract::{ApiJson, Caller};
use crate::fields::{self, Fields};
use crate::pagination::{self, PageQuery};
use crate::problem::{ApiError, Problem};

/// One delivery attempt.
#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptView {
    /// When it started.
    attempted_at: DateTime<Utc>,
    /// How long it took.
    duration_ms: i32,
    /// `delivered`, `gone` or `failed`.
    outcome: String,
    /// The receiver's status, if it answered.
    status_code: Option<i16>,
    /// Why no answer came (timeout, no connection).
    error: Option<String>,
    /// The first KiB of the answer.
    response_excerpt: Option<String>,
}

impl From<AttemptRow> for AttemptView {
    fn from(row: AttemptRow) -> Self {
        Self {
            attempted_at: row.attempted_at,
            duration_ms: row.duration_ms,
            outcome: row.outcome,
            status_code: row.status_code,
            error: row.error,
            response_excerpt: row.response_excerpt,
        }
    }
}

/// One message to one endpoint, with its attempts.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryView {
    /// Id.
    id: Uuid,
    /// The event it carries; null for a test message.
    event_id: Option<Uuid>,
    /// The event type (`webhook.test` for a test message).
    event_type: String,
    /// `pending`, `delivered` or `failed`.
    status: String,
    /// When the next attempt is due, while pending.
    next_attempt_at: Option<DateTime<Utc>>,
    /// When it was queued.
    created_at: DateTime<Utc>,
    /// Every attempt, oldest first.
    attempts: Vec<AttemptView>,
}

/// A page of deliveries.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryPage {
    /// Newest first.
    items: Vec<DeliveryView>,
    /// Pass as `cursor` for the next (older) page; null on the last page.
    next_cursor: Option<String>,
}

/// Filters of the delivery list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeliveryListParams {
    /// Only deliveries in this status: `pending`, `delivered` or `failed`.
    status: Option<String>,
    /// Items per page, 1 to 200 (default 50).
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// What a replay queued.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReplayAnswer {
    /// Deliveries queued.
    queued: u64,
}

/// The body of a replay.
#[derive(Debug, Deserialize, ToSchema)]
#[expect(
    dead_code,
    reason = "documents the body for OpenAPI; it is read field by field"
)]
pub struct ReplayInput {
    /// Every retained event that occurred at or after this time is sent again.
    since: DateTime<Utc>,
}

/// A queued test message.
#[derive(Debug, Serialize, ToSchema)]
pub struct TestAnswer {
    /// The delivery carrying it; follow it in the delivery list.
    delivery_id: Uuid,
}

/// The endpoint's deliveries, newest first, each with its attempts.
#[utoipa::path(get, path = "/v1/webhooks/{id}/deliveries", operation_id = "list_webhook_deliveries", tag = "webhooks",
    security(("bearer" = ["webhooks:manage"])),
    params(("id" = Uuid, Path, description = "The endpoint's id"), DeliveryListParams),
    responses((status = 200, description = "A page of deliveries", body = DeliveryPage),
    (status = 403, description = "Missing webhooks:manage", body = Problem, content_type = "application/problem+json"),
    (status = 404, description = "No such endpoint", body = Problem, content_type = "application/problem+json"),
    (status = 422, description = "Invalid filters", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn list_deliveries(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    uri: Uri,
) -> Result<Json<DeliveryPage>, ApiError> {
    caller.require(Scope::WebhooksManage)?;
    let endpoint = registry::webhooks::get(&state.pool, &caller.actor(), endpoint_id(&id)?).await?;
    let params: DeliveryListParams = crate::extract::query(&uri)?;
    let status = params.status.as_deref().map(delivery_status).transpose()?;
    let (limit, before) = PageQuery {
        limit: params.limit,
        cursor: params.cursor,
    }
    .resolve()?;
    let rows = deliveries::list(&state.pool, endpoint.id, status, before, limit + 1).await?;
    let (rows, next_cursor) = pagination::page(rows, limit, |row| (row.created_at, row.id));
    let ids: Vec<Uuid> = rows.iter().map(|row| row.id).collect();
    let mut attempts = deliveries::attempts_of(&state.pool, &ids).await?;
    let items = rows
        .into_iter()
        .map(|row: DeliveryRow| {
            let (mine, rest): (Vec<_>, Vec<_>) = attempts
                .drain(..)
                .partition(|attempt| attempt.delivery_id == row.id);
            attempts = rest;
            DeliveryView {
                id: row.id,
                event_id: row.event_id,
                event_type: row.event_type,
                status: row.status,
                next_attempt_at: row.next_attempt_at,
                created_at: row.created_at,
                attempts: mine.into_iter().map(AttemptView::from).collect(),
            }
        })
        .collect();
    Ok(Json(DeliveryPage { items, next_cursor }))
}

fn delivery_status(text: &str) -> Result<&str, ApiError> {
    match text {
        "pending" | "delivered" | "failed" => Ok(text),
        _ => Err(ApiError::invalid_field(
            "/status",
            "must be one of pending, delivered, failed",
        )),
    }
}

/// Queues a delivery again now, with a fresh retry schedule.
#[utoipa::path(post, path = "/v1/webhooks/{id}/deliveries/{delivery}/retry", operation_id = "retry_webhook_delivery", tag = "webhooks",
    security(("bearer" = ["webhooks:manage", "events:read"])),
    params(("id" = Uuid, Path, description = "The endpoint's id"), ("delivery" = Uuid, Path, description = "The delivery's id")),
    responses((status = 202, description = "Queued"),
    (status = 403, description = "Missing webhooks:manage", body = Problem, content_type = "application/problem+json"),
    (status = 404, description = "No such endpoint or delivery", body = Problem, content_type = "application/problem+json"),
    (status = 409, description = "The tenant is frozen or archived", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn retry_delivery(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, delivery)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    require_delivering(&caller)?;
    let delivery: Uuid = delivery
        .parse()
        .map_err(|_| ApiError::not_found("no such delivery"))?;
    registry::webhooks::retry_delivery(
        &state.pool,
        &caller.actor(),
        endpoint_id(&id)?,
        delivery,
        Utc::now(),
    )
    .await?;
    Ok(StatusCode::ACCEPTED)
}

/// Sends again every retained event since a time that the endpoint wants.
#[utoipa::path(post, path = "/v1/webhooks/{id}/replay", operation_id = "replay_webhook", tag = "webhooks",
    security(("bearer" = ["webhooks:manage", "events:read"])),
    params(("id" = Uuid, Path, description = "The endpoint's id")),
    request_body = ReplayInput,
    responses((status = 202, description = "Queued", body = ReplayAnswer),
    (status = 403, description = "Missing webhooks:manage", body = Problem, content_type = "application/problem+json"),
    (status = 404, description = "No such endpoint", body = Problem, content_type = "application/problem+json"),
    (status = 409, description = "The tenant is frozen or archived", body = Problem, content_type = "application/problem+json"),
    (status = 422, description = "Invalid or too distant `since`", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn replay(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<Value>,
) -> Result<Response, ApiError> {
    require_delivering(&caller)?;
    let id = endpoint_id(&id)?;
    let mut fields = Fields::new(body, &["since"])?;
    let since = fields.required("since", fields::timestamp);
    fields.finish()?;
    let since = since.unwrap_or_else(Utc::now);
    let queued =
        registry::webhooks::replay(&state.pool, &caller.actor(), id, since, Utc::now()).await?;
    Ok((StatusCode::ACCEPTED, Json(ReplayAnswer { queued })).into_response())
}

/// Queues a `webhook.test` message to the endpoint.
#[utoipa::path(post, path = "/v1/webhooks/{id}/test", operation_id = "test_webhook", tag = "webhooks",
    security(("bearer" = ["webhooks:manage"])),
    params(("id" = Uuid, Path, description = "The endpoint's id")),
    responses((status = 202, description = "Queued", body = TestAnswer),
    (status = 403, description = "Missing webhooks:manage", body = Problem, content_type = "application/problem+json"),
    (status = 404, description = "No such endpoint", body = Problem, content_type = "application/problem+json"),
    (status = 409, description = "The tenant is frozen or archived", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn send_test(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(Scope::WebhooksManage)?;
    let delivery_id =
        registry::webhooks::send_test(&state.pool, &caller.actor(), endpoint_id(&id)?, Utc::now())
            .await?;
    Ok((StatusCode::ACCEPTED, Json(TestAnswer { delivery_id })).into_response())
}
