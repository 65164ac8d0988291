//! `/v1/webhooks`: endpoints that receive the registry's events as signed Standard Webhooks
//! deliveries, their delivery history, retries, replays and test messages. The use cases
//! are `registry::webhooks`; the runner that delivers is the `webhooks` crate.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use domain::Scope;
use registry::webhooks::{EndpointInput, EndpointPatch, WithSecret};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use storage::webhooks::{self as endpoints, EndpointRow, Owner};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::AppState;
use crate::extract::{ApiJson, Caller};
use crate::fields::Fields;
use crate::pagination::{self, PageQuery};
use crate::problem::{ApiError, Problem};
use crate::tenants::{etag, if_match};

pub(crate) mod deliveries;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/webhooks", post(create).get(list))
        .route(
            "/v1/webhooks/{id}",
            get(get_one).patch(patch).delete(delete),
        )
        .route("/v1/webhooks/{id}/rotate-secret", post(rotate_secret))
        .route(
            "/v1/webhooks/{id}/deliveries",
            get(deliveries::list_deliveries),
        )
        .route(
            "/v1/webhooks/{id}/deliveries/{delivery}/retry",
            post(deliveries::retry_delivery),
        )
        .route("/v1/webhooks/{id}/replay", post(deliveries::replay))
        .route("/v1/webhooks/{id}/test", post(deliveries::send_test))
}

/// A webhook endpoint.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookView {
    /// Id.
    id: Uuid,
    /// Where deliveries go.
    #[schema(example = "https://hooks.example.com/tenant-registry")]
    url: String,
    /// Event type filters (`tenant.created`, `tenant.*`, `*`); null for every type.
    event_types: Option<Vec<String>>,
    /// The tenant whose events it receives; null for every tenant and platform-level events.
    tenant_id: Option<Uuid>,
    /// Free text.
    description: String,
    /// Whether deliveries are made.
    enabled: bool,
    /// Why it is disabled: by its owner, a `410 Gone`, or five days of failures.
    disabled_reason: Option<String>,
    /// Since when every delivery has failed, while that lasts.
    failing_since: Option<DateTime<Utc>>,
    /// Until when the secret before the last rotation still signs next to the current one.
    previous_secret_expires_at: Option<DateTime<Utc>>,
    /// Its version (also the `ETag`).
    version: i64,
    /// Creation time.
    created_at: DateTime<Utc>,
    /// Last change.
    updated_at: DateTime<Utc>,
}

impl From<EndpointRow> for WebhookView {
    fn from(row: EndpointRow) -> Self {
        let now = Utc::now();
        Self {
            id: row.id,
            url: row.url,
            event_types: row.event_types,
            tenant_id: row.tenant_id,
            description: row.description,
            enabled: row.enabled,
            disabled_reason: row.disabled_reason,
            failing_since: row.failing_since,
            previous_secret_expires_at: row.previous_secret_expires_at.filter(|at| *at > now),
            version: row.version,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// An endpoint with its signing secret, shown only in this answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookWithSecret {
    #[serde(flatten)]
    endpoint: WebhookView,
    /// `whsec_<base64>`: verify signatures with it (any Standard Webhooks library reads it).
    #[schema(example = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")]
    secret: String,
}

impl From<WithSecret> for WebhookWithSecret {
    fn from(created: WithSecret) -> Self {
        Self {
            endpoint: created.endpoint.into(),
            secret: created.secret,
        }
    }
}

/// A page of endpoints.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookPage {
    /// Oldest first.
    items: Vec<WebhookView>,
    /// Pass as `cursor` for the next page; null on the last page.
    next_cursor: Option<String>,
}

/// The body of `POST /v1/webhooks` (and, without `tenant_id`, of `PATCH`).
#[derive(Debug, Deserialize, ToSchema)]
#[expect(
    dead_code,
    reason = "documents the body for OpenAPI; it is read field by field to report every problem at once"
)]
pub struct WebhookInput {
    /// Where deliveries go: https (plain http only in development).
    url: String,
    /// Event type filters; absent or null for every type.
    event_types: Option<Vec<String>>,
    /// The tenant whose events it receives (a tenant principal's own, always); absent for
    /// every tenant (platform principals only).
    tenant_id: Option<Uuid>,
    /// Free text, at most 500 characters.
    description: Option<String>,
    /// Whether deliveries are made (default true).
    enabled: Option<bool>,
}

/// Paging of the endpoint list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WebhookListParams {
    /// Items per page, 1 to 200 (default 50).
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// Making an endpoint deliver (creating it, changing it, retrying or replaying) sends events
/// to a URL the caller chooses, so it needs what reading them needs: `events:read` as well
/// as `webhooks:manage`.
fn require_delivering(caller: &Caller) -> Result<(), ApiError> {
    caller.require(Scope::WebhooksManage)?;
    caller.require(Scope::EventsRead)
}

fn endpoint_id(raw: &str) -> Result<Uuid, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::not_found("no such webhook endpoint"))
}

fn with_etag(status: StatusCode, view: impl Serialize, version: i64) -> Response {
    let mut response = (status, Json(view)).into_response();
    response.headers_mut().insert(header::ETAG, etag(version));
    response
}

fn nullable_strings(fields: &mut Fields, name: &str) -> Option<Option<Vec<String>>> {
    if !fields.has(name) {
        return None;
    }
    if fields.is_null(name) {
        return Some(None);
    }
    fields.strings(name).map(Some)
}

/// Creates an endpoint; the answer carries its secret, once.
#[utoipa::path(post, path = "/v1/webhooks", operation_id = "create_webhook", tag = "webhooks",
    security(("bearer" = ["webhooks:manage", "events:read"])),
    request_body = WebhookInput,
    responses((status = 201, description = "Created; `secret` is shown only here", body = WebhookWithSecret,
        headers(("location" = String, description = "The endpoint's URL"))),
    (status = 403, description = "Missing webhooks:manage", body = Problem, content_type = "application/problem+json"),
    (status = 409, description = "The tenant is frozen or archived", body = Problem, content_type = "application/problem+json"),
    (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<Value>,
) -> Result<Response, ApiError> {
    require_delivering(&caller)?;
    let mut fields = Fields::new(
        body,
        &["url", "event_types", "tenant_id", "description", "enabled"],
    )?;
    let url = fields.required("url", |text| Ok(text.to_owned()));
    let event_types = nullable_strings(&mut fields, "event_types").flatten();
    let tenant_id = fields.optional("tenant_id", |text| {
        text.parse::<Uuid>()
            .map_err(|_| "must be a tenant id (a UUID)".to_owned())
    });
    let description = fields.optional_not_null("description", |text| Ok(text.to_owned()));
    let enabled = fields.boolean("enabled");
    fields.finish()?;
    let input = EndpointInput {
        url: url.unwrap_or_default(),
        event_types,
        tenant_id: tenant_id.flatten(),
        description,
        enabled,
    };
    let created = registry::webhooks::create(
        &state.pool,
        &state.settings.keyring,
        &caller.actor(),
        &input,
        &state.settings.outbound.policy(),
    )
    .await?;
    let location = format!("/v1/webhooks/{}", created.endpoint.id);
    let version = created.endpoint.version;
    let mut response = with_etag(
        StatusCode::CREATED,
        WebhookWithSecret::from(created),
        version,
    );
    if let Ok(location) = location.parse() {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// Lists the endpoints the caller manages, oldest first.
#[utoipa::path(get, path = "/v1/webhooks", operation_id = "list_webhooks", tag = "webhooks",
    security(("bearer" = ["webhooks:manage"])),
    params(WebhookListParams),
    responses((status = 200, description = "A page of endpoints", body = WebhookPage),
    (status = 403, description = "Missing webhooks:manage", body = Problem, content_type = "application/problem+json"),
    (status = 422, description = "Invalid limit or cursor", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    uri: Uri,
) -> Result<Json<WebhookPage>, ApiError> {
    caller.require(Scope::WebhooksManage)?;
    let params: WebhookListParams = crate::extract::query(&uri)?;
    let (limit, after) = PageQuery {
        limit: params.limit,
        cursor: params.cursor,
    }
    .resolve()?;
    let owner = caller
        .principal
        .tenant_id
        .map_or(Owner::Everyone, Owner::Tenant);
    let rows = endpoints::list(&state.pool, owner, after, limit + 1).await?;
    let (rows, next_cursor) = pagination::page(rows, limit, |row| (row.created_at, row.id));
    Ok(Json(WebhookPage {
        items: rows.into_iter().map(WebhookView::from).collect(),
        next_cursor,
    }))
}

/// One endpoint.
#[utoipa::path(get, path = "/v1/webhooks/{id}", operation_id = "get_webhook", tag = "webhooks",
    security(("bearer" = ["webhooks:manage"])),
    params(("id" = Uuid, Path, description = "The endpoint's id")),
    responses((status = 200, description = "The endpoint", body = WebhookView, headers(("etag" = String, description = "Its version"))),
    (status = 403, description = "Missing webhooks:manage", body = Problem, content_type = "application/problem+json"),
    (status = 404, description = "No such endpoint", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn get_one(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(Scope::WebhooksManage)?;
    let row = registry::webhooks::get(&state.pool, &caller.actor(), endpoint_id(&id)?).await?;
    let version = row.version;
    Ok(with_etag(StatusCode::OK, WebhookView::from(row), version))
}

/// Changes an endpoint (JSON merge patch of `url`, `event_types`, `description`,
/// `enabled`); enabling clears the failure record. Honours `If-Match`.
#[utoipa::path(patch, path = "/v1/webhooks/{id}", operation_id = "update_webhook", tag = "webhooks",
    security(("bearer" = ["webhooks:manage", "events:read"])),
    params(("id" = Uuid, Path, description = "The endpoint's id"),
           ("If-Match" = Option<String>, Header, description = "The ETag read; required when REQUIRE_IF_MATCH=true")),
    request_body(content = WebhookInput, content_type = "application/merge-patch+json"),
    responses((status = 200, description = "The changed endpoint", body = WebhookView),
    (status = 403, description = "Missing webhooks:manage", body = Problem, content_type = "application/problem+json"),
    (status = 404, description = "No such endpoint", body = Problem, content_type = "application/problem+json"),
    (status = 409, description = "The tenant is frozen or archived", body = Problem, content_type = "application/problem+json"),
    (status = 412, description = "If-Match is stale", body = Problem, content_type = "application/problem+json"),
    (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
    (status = 428, description = "If-Match required", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn patch(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Value>,
) -> Result<Response, ApiError> {
    require_delivering(&caller)?;
    let id = endpoint_id(&id)?;
    let expected = if_match(&headers, state.settings.require_if_match)?;
    let mut fields = Fields::new(body, &["url", "event_types", "description", "enabled"])?;
    let url = fields.optional_not_null("url", |text| Ok(text.to_owned()));
    let event_types = nullable_strings(&mut fields, "event_types");
    let description = fields.optional_not_null("description", |text| Ok(text.to_owned()));
    let enabled = fields.boolean("enabled");
    fields.finish()?;
    let patch = EndpointPatch {
        url,
        event_types,
        description,
        enabled,
    };
    let row = registry::webhooks::update(
        &state.pool,
        &caller.actor(),
        id,
        &patch,
        expected,
        &state.settings.outbound.policy(),
    )
    .await?;
    let version = row.version;
    Ok(with_etag(StatusCode::OK, WebhookView::from(row), version))
}

/// Deletes an endpoint and its delivery history.
#[utoipa::path(delete, path = "/v1/webhooks/{id}", operation_id = "delete_webhook", tag = "webhooks",
    security(("bearer" = ["webhooks:manage"])),
    params(("id" = Uuid, Path, description = "The endpoint's id")),
    responses((status = 204, description = "Deleted"),
    (status = 403, description = "Missing webhooks:manage", body = Problem, content_type = "application/problem+json"),
    (status = 404, description = "No such endpoint", body = Problem, content_type = "application/problem+json"),
    (status = 409, description = "The tenant is frozen or archived", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Scope::WebhooksManage)?;
    registry::webhooks::delete(&state.pool, &caller.actor(), endpoint_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Gives the endpoint a new secret, shown only in this answer; the old one keeps signing
/// next to it for 24 hours.
#[utoipa::path(post, path = "/v1/webhooks/{id}/rotate-secret", operation_id = "rotate_webhook_secret", tag = "webhooks",
    security(("bearer" = ["webhooks:manage"])),
    params(("id" = Uuid, Path, description = "The endpoint's id")),
    responses((status = 200, description = "The endpoint with its new secret", body = WebhookWithSecret),
    (status = 403, description = "Missing webhooks:manage", body = Problem, content_type = "application/problem+json"),
    (status = 404, description = "No such endpoint", body = Problem, content_type = "application/problem+json"),
    (status = 409, description = "The tenant is frozen or archived", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn rotate_secret(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(Scope::WebhooksManage)?;
    let rotated = registry::webhooks::rotate_secret(
        &state.pool,
        &state.settings.keyring,
        &caller.actor(),
        endpoint_id(&id)?,
        Utc::now(),
    )
    .await?;
    let version = rotated.endpoint.version;
    Ok(with_etag(
        StatusCode::OK,
        WebhookWithSecret::from(rotated),
        version,
    ))
}
