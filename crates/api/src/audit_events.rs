//! `POST /v1/audit/events`: products write their audit events here, one or a batch of up
//! to 1,000, all or nothing.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::routing::post;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use domain::Scope;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use storage::audit::{EventFilter, IngestedEvent};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::extract::{ApiJson, Caller};
use crate::problem::{ApiError, FieldError, Problem};
use crate::{AppState, pagination};

pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/v1/audit/events", post(ingest).get(search))
}

/// Filters of `GET /v1/audit/events`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SearchParams {
    /// Exact action, or a prefix ending in `*` (`tenant.*`).
    action: Option<String>,
    /// c, r, u or d.
    crud: Option<String>,
    /// Actor id.
    actor_id: Option<String>,
    /// Target id.
    target_id: Option<String>,
    /// Target kind.
    target_type: Option<String>,
    /// Reporting product.
    product: Option<String>,
    /// Only failed (true) or successful (false) actions.
    is_failure: Option<bool>,
    /// Created at or after (RFC 3339).
    from: Option<DateTime<Utc>>,
    /// Created before (RFC 3339).
    to: Option<DateTime<Utc>>,
    /// Only this tenant (platform principals; tenant principals always see their own).
    group_id: Option<Uuid>,
    /// Items per page, 1 to 200 (default 50).
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// A stored event.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventView {
    /// Id.
    id: i64,
    /// The group (tenant) id as recorded.
    group_id: Option<String>,
    /// Reporting product.
    product: Option<String>,
    /// What happened.
    action: String,
    /// c, r, u or d.
    crud: String,
    /// Actor id.
    actor_id: Option<String>,
    /// Actor name.
    actor_name: Option<String>,
    /// Target id.
    target_id: Option<String>,
    /// Target name.
    target_name: Option<String>,
    /// Target kind.
    target_type: Option<String>,
    /// Source address.
    source_ip: Option<String>,
    /// Description.
    description: Option<String>,
    /// Whether it failed.
    is_failure: bool,
    /// Extra fields.
    #[schema(value_type = Object)]
    fields: Value,
    /// The product's id for it.
    external_id: Option<String>,
    /// When it happened.
    created: DateTime<Utc>,
    /// When it was received.
    received: DateTime<Utc>,
}

/// A page of events, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventPage {
    /// The events.
    items: Vec<EventView>,
    /// Pass as `cursor` for the next (older) page; null on the last page.
    next_cursor: Option<String>,
}

/// Searches the audit log, newest first, a page at a time; a tenant principal sees only its
/// own tenant's events.
#[utoipa::path(get, path = "/v1/audit/events", operation_id = "search_audit_events", tag = "audit",
    security(("bearer" = ["audit:read"])), params(SearchParams),
    responses((status = 200, description = "A page of events", body = EventPage),
    (status = 403, description = "Missing audit:read, or group_id from a tenant principal", body = Problem, content_type = "application/problem+json"),
    (status = 422, description = "Invalid filters", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn search(
    State(state): State<AppState>,
    caller: Caller,
    uri: Uri,
) -> Result<Json<EventPage>, ApiError> {
    caller.require(Scope::AuditRead)?;
    let params: SearchParams = crate::extract::query(&uri)?;
    let tenant_id = match (caller.principal.tenant_id, params.group_id) {
        (Some(_), Some(_)) => {
            return Err(ApiError::forbidden(
                "group_id is for platform principals; a tenant sees its own events",
            ));
        }
        (Some(own), None) => Some(own),
        (None, group) => group,
    };
    if params
        .crud
        .as_deref()
        .is_some_and(|crud| !matches!(crud, "c" | "r" | "u" | "d"))
    {
        return Err(ApiError::invalid_field(
            "/crud",
            "must be one of c, r, u, d",
        ));
    }
    let limit = params.limit.unwrap_or(pagination::DEFAULT_LIMIT);
    if !(1..=pagination::MAX_LIMIT).contains(&limit) {
        return Err(ApiError::invalid_field(
            "/limit",
            format!("must be between 1 and {}", pagination::MAX_LIMIT),
        ));
    }
    let before = params
        .cursor
        .as_deref()
        .map(pagination::decode_as::<i64>)
        .transpose()?;
    let rows = storage::audit::search(
        &state.pool,
        &EventFilter {
            tenant_id,
            action: params.action,
            crud: params.crud,
            actor_id: params.actor_id,
            target_id: params.target_id,
            target_type: params.target_type,
            product: params.product,
            is_failure: params.is_failure,
            from: params.from,
            to: params.to,
            before,
            limit: limit + 1,
        },
    )
    .await?;
    let (rows, next_cursor) = pagination::page(rows, limit, |row| (row.created_at, row.id));
    let items = rows
        .into_iter()
        .map(|row| EventView {
            id: row.id,
            group_id: row.group_id,
            product: row.product,
            action: row.action,
            crud: row.crud,
            actor_id: row.actor_id,
            actor_name: row.actor_name,
            target_id: row.target_id,
            target_name: row.target_name,
            target_type: row.target_type,
            source_ip: row.source_ip,
            description: row.description,
            is_failure: row.is_failure,
            fields: row.fields.0,
            external_id: row.external_id,
            created: row.created_at,
            received: row.received_at,
        })
        .collect();
    Ok(Json(EventPage { items, next_cursor }))
}

/// What an ingest stored.
#[derive(Debug, Serialize, ToSchema)]
pub struct IngestResult {
    /// Events stored.
    stored: u64,
    /// Events skipped because their `external_id` was already stored for this product.
    duplicates: u64,
}

fn pointer(batch: bool, index: usize, field: &str) -> String {
    if batch {
        format!("/{index}{field}")
    } else {
        field.to_owned()
    }
}

/// Ingests events in Retraced's shape. A tenant key's events belong to its own tenant (a
/// group naming another is refused); a platform key may name any tenant, by id or slug.
#[utoipa::path(post, path = "/v1/audit/events", operation_id = "ingest_audit_events", tag = "audit",
    security(("bearer" = ["audit:write"])),
    request_body(content = Object, description = "One Retraced event, or an array of up to 1,000"),
    responses((status = 201, description = "Stored (duplicates skipped)", body = IngestResult),
    (status = 403, description = "Missing audit:write, or a group naming another tenant", body = Problem, content_type = "application/problem+json"),
    (status = 422, description = "Invalid events, each problem with its pointer; nothing stored", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn ingest(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<Value>,
) -> Result<(StatusCode, Json<IngestResult>), ApiError> {
    caller.require(Scope::AuditWrite)?;
    let batch = body.is_array();
    let events = audit::parse_batch(body).map_err(|problems| {
        ApiError::invalid(
            problems
                .into_iter()
                .map(|(pointer, detail)| FieldError { pointer, detail })
                .collect(),
        )
    })?;
    let mut resolved: HashMap<String, Option<Uuid>> = HashMap::new();
    let mut problems = Vec::new();
    let mut rows = Vec::with_capacity(events.len());
    let product = caller.principal.actor_id();
    for (index, event) in events.into_iter().enumerate() {
        let group_id = event.group.as_ref().and_then(|group| group.id.clone());
        let tenant_id = match &group_id {
            None => caller.principal.tenant_id,
            Some(id) => {
                if !resolved.contains_key(id) {
                    let found = match id.parse::<Uuid>() {
                        Ok(uuid) => storage::tenants::exists(&state.pool, uuid)
                            .await?
                            .then_some(uuid),
                        Err(_) => storage::tenants::id_by_slug(&state.pool, id).await?,
                    };
                    resolved.insert(id.clone(), found);
                }
                match resolved.get(id).copied().flatten() {
                    Some(tenant) if caller.principal.can_access_tenant(Some(tenant)) => {
                        Some(tenant)
                    }
                    Some(_) => {
                        return Err(ApiError::forbidden(format!(
                            "{}: a tenant key writes only its own tenant's events",
                            pointer(batch, index, "/group/id")
                        )));
                    }
                    None => {
                        problems.push(FieldError {
                            pointer: pointer(batch, index, "/group/id"),
                            detail: "no such tenant (by id or slug)".to_owned(),
                        });
                        None
                    }
                }
            }
        };
        let actor = event.actor.unwrap_or_default();
        let target = event.target.unwrap_or_default();
        rows.push(IngestedEvent {
            tenant_id,
            group_id: group_id.or_else(|| tenant_id.map(|id| id.to_string())),
            group_name: event.group.and_then(|group| group.name),
            product: product.clone(),
            action: event.action,
            crud: event.crud,
            actor_id: actor.id,
            actor_name: actor.name,
            actor_href: actor.href,
            actor_fields: audit::Event::fields_json(&actor.fields),
            target_id: target.id,
            target_name: target.name,
            target_type: target.kind,
            target_href: target.href,
            target_fields: audit::Event::fields_json(&target.fields),
            source_ip: event.source_ip,
            description: event.description,
            is_failure: event.is_failure,
            is_anonymous: event.is_anonymous,
            fields: audit::Event::fields_json(&event.fields),
            external_id: event.external_id,
            created_at: event.created,
            component: event.component,
            version: event.version,
        });
    }
    if !problems.is_empty() {
        return Err(ApiError::invalid(problems));
    }
    let mut transaction = state.pool.begin().await?;
    let stored = storage::audit::ingest(&mut transaction, &rows).await?;
    transaction.commit().await?;
    let total = u64::try_from(rows.len()).unwrap_or(u64::MAX);
    Ok((
        StatusCode::CREATED,
        Json(IngestResult {
            stored,
            duplicates: total - stored,
        }),
    ))
}
