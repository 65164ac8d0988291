//! Retraced's publisher ingest: `event` (one event) and `event/bulk` (`{"events": [...]}`),
//! answering each event's id and the hash Retraced's clients check. The events go through
//! the native ingest (same validation, tenants, storage and hash chain).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::Utc;
use domain::Scope;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::AppState;
use crate::audit_events::{ingest_rows, store};
use crate::extract::{ApiJson, Caller};
use crate::problem::{ApiError, FieldError, Problem};

/// What Retraced answers for a published event.
#[derive(Debug, Serialize, ToSchema)]
pub struct Published {
    /// The event's id (a duplicate `external_id` answers the stored event's).
    id: String,
    /// Lowercase hex SHA-256 of Retraced's canonical string of the event as sent, with
    /// this id: what the clients compute to check it.
    hash: String,
}

/// Publishes one event in Retraced's shape to project (product) `projectId`: the event is
/// stored as the native ingest stores it, and answered with its id and Retraced's hash.
#[utoipa::path(post, path = "/auditlog/publisher/v1/project/{projectId}/event",
    operation_id = "retraced_publish_event", tag = "retraced",
    security(("retraced_token" = ["audit:write"]), ("bearer" = ["audit:write"])),
    params(("projectId" = String, Path, description = "The Retraced project: the product of the caller's API key")),
    request_body(content = Object, description = "One Retraced event (as `POST /v1/audit/events` takes it)"),
    responses((status = 201, description = "Stored (or already stored under its external_id)", body = Published),
    (status = 403, description = "Missing audit:write, or the key's product is not projectId", body = Problem, content_type = "application/problem+json"),
    (status = 409, description = "The same external_id arrived concurrently; retrying answers the stored event", body = Problem, content_type = "application/problem+json"),
    (status = 422, description = "An invalid event, each problem with its pointer; a group naming a tenant the key may not write to is an unknown one", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn event(
    State(state): State<AppState>,
    Path(project_id): Path<String>,
    caller: Caller,
    ApiJson(body): ApiJson<Value>,
) -> Result<(StatusCode, Json<Published>), ApiError> {
    super::for_project(&caller, &project_id, Scope::AuditWrite)?;
    if !body.is_object() {
        return Err(ApiError::invalid_field("/", "must be an event object"));
    }
    let mut published = publish(&state, &caller, vec![body], false).await?;
    Ok((StatusCode::CREATED, Json(published.remove(0))))
}

/// `{"events": [...]}`, Retraced's bulk body.
#[derive(Debug, serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Bulk {
    /// Up to 1,000 Retraced events.
    #[schema(value_type = Vec<Object>)]
    events: Vec<Value>,
}

/// Publishes up to 1,000 events at once, all or nothing, answering each one's id and hash
/// in the order sent.
#[utoipa::path(post, path = "/auditlog/publisher/v1/project/{projectId}/event/bulk",
    operation_id = "retraced_publish_events", tag = "retraced",
    security(("retraced_token" = ["audit:write"]), ("bearer" = ["audit:write"])),
    params(("projectId" = String, Path, description = "The Retraced project: the product of the caller's API key")),
    request_body(content = Bulk, description = "Retraced events, as `events`"),
    responses((status = 201, description = "Stored, each with its id and hash, in the order sent", body = Vec<Published>),
    (status = 403, description = "Missing audit:write, or the key's product is not projectId", body = Problem, content_type = "application/problem+json"),
    (status = 409, description = "The same external_id arrived concurrently; retrying answers the stored event", body = Problem, content_type = "application/problem+json"),
    (status = 422, description = "Invalid events (pointers under /events), or none, or over 1,000; nothing stored", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn bulk(
    State(state): State<AppState>,
    Path(project_id): Path<String>,
    caller: Caller,
    ApiJson(body): ApiJson<Bulk>,
) -> Result<(StatusCode, Json<Vec<Published>>), ApiError> {
    super::for_project(&caller, &project_id, Scope::AuditWrite)?;
    if body.events.iter().any(|event| !event.is_object()) {
        let errors = body
            .events
            .iter()
            .enumerate()
            .filter(|(_, event)| !event.is_object())
            .map(|(index, _)| FieldError {
                pointer: format!("/events/{index}"),
                detail: "must be an event object".to_owned(),
            })
            .collect();
        return Err(ApiError::invalid(errors));
    }
    let published = publish(&state, &caller, body.events, true).await?;
    Ok((StatusCode::CREATED, Json(published)))
}

/// Stores `events` (JSON objects) and answers each one's id and Retraced hash; `bulk` says
/// whether they came as a bulk body's `events` (which pointers then start with).
async fn publish(
    state: &AppState,
    caller: &Caller,
    events: Vec<Value>,
    bulk: bool,
) -> Result<Vec<Published>, ApiError> {
    let at = |index: usize| {
        if bulk {
            format!("/events/{index}")
        } else {
            String::new()
        }
    };
    let mut problems: Vec<FieldError> = events
        .iter()
        .enumerate()
        .flat_map(|(index, event)| missing_ids(event, &at(index)))
        .collect();
    // Retraced's hash tells an absent `fields` from an empty one; the event model does not.
    let fields_given: Vec<bool> = events
        .iter()
        .map(|event| event.get("fields").is_some_and(|fields| !fields.is_null()))
        .collect();
    let received = Utc::now();
    // parse_batch points into an array: under /events in a bulk body, while a lone event
    // is the batch of one.
    let moved = |pointer: String| match (bulk, pointer.as_str()) {
        (true, "/") => "/events".to_owned(),
        (true, _) => format!("/events{pointer}"),
        (false, _) => match pointer.strip_prefix("/0") {
            Some(rest) if !rest.is_empty() => rest.to_owned(),
            _ => "/".to_owned(),
        },
    };
    let parsed = match audit::parse_batch(Value::Array(events), received) {
        Ok(parsed) if problems.is_empty() => parsed,
        Ok(_) => Vec::new(),
        Err(refused) => {
            problems.extend(refused.into_iter().map(|(pointer, detail)| FieldError {
                pointer: moved(pointer),
                detail,
            }));
            Vec::new()
        }
    };
    if !problems.is_empty() {
        problems.sort_by(|left, right| left.pointer.cmp(&right.pointer));
        problems.dedup_by(|left, right| left.pointer == right.pointer);
        return Err(ApiError::invalid(problems));
    }
    let rows = ingest_rows(state, caller, parsed.clone(), at, received).await?;
    let appended = store(state, rows).await?;
    Ok(parsed
        .iter()
        .zip(fields_given)
        .zip(appended.ids)
        .map(|((event, fields_given), id)| {
            let id = id.to_string();
            let hash = audit::retraced_hash(&id, &hash_input(event, fields_given));
            Published { id, hash }
        })
        .collect())
}

/// What Retraced's clients require before they hash: an actor or target that is given
/// (not empty) has an id. Without one the client cannot check the answer, so the event is
/// refused rather than stored unverifiable.
fn missing_ids(event: &Value, at: &str) -> Vec<FieldError> {
    ["actor", "target"]
        .into_iter()
        .filter(|part| {
            let Some(Value::Object(object)) = event.get(*part) else {
                return false;
            };
            !object.is_empty()
                && object
                    .get("id")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
        })
        .map(|part| FieldError {
            pointer: format!("{at}/{part}/id"),
            detail: format!("is required when {part} is given (Retraced's event hash covers it)"),
        })
        .collect()
}

/// The parts of `event` Retraced's hash covers, as sent.
fn hash_input(event: &audit::Event, fields_given: bool) -> audit::RetracedHashInput<'_> {
    let fields: Option<&BTreeMap<String, String>> = fields_given.then_some(&event.fields);
    audit::RetracedHashInput {
        action: &event.action,
        target_id: event
            .target
            .as_ref()
            .and_then(|target| target.id.as_deref()),
        actor_id: event.actor.as_ref().and_then(|actor| actor.id.as_deref()),
        group_id: event.group.as_ref().and_then(|group| group.id.as_deref()),
        source_ip: event.source_ip.as_deref(),
        is_failure: event.is_failure,
        is_anonymous: event.is_anonymous,
        fields,
        external_id: event.external_id.as_deref(),
        metadata: event.metadata.as_ref(),
    }
}
