//! `POST /v1/audit/events`: products write their audit events here, one or a batch of up
//! to 1,000, all or nothing.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use domain::Scope;
use serde::Serialize;
use serde_json::Value;
use storage::audit::IngestedEvent;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::AppState;
use crate::extract::{ApiJson, Caller};
use crate::problem::{ApiError, FieldError, Problem};

pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/v1/audit/events", post(ingest))
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
