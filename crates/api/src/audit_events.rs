//! The audit log over HTTP: products ingest their events (one or a batch of up to 1,000,
//! all or nothing), tenants and platform operators search, export and verify them.

use std::collections::HashMap;
use std::convert::Infallible;

use audit::{EventFilter, EventRow, EventView, ExportFormat, Verification};
use auth::PrincipalKind;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use domain::Scope;
use http_body_util::StreamBody;
use hyper::body::Frame;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::types::Json as Jsonb;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::extract::{ApiJson, Caller};
use crate::problem::{ApiError, FieldError, Problem};
use crate::{AppState, pagination};

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/audit/events", post(ingest).get(search))
        .route("/v1/audit/events/export", get(export))
        .route("/v1/audit/verify", get(verify))
}

/// Filters of the search and the export; every one given narrows the result.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventQuery {
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
    /// Retraced search string: `action:tenant.* crud:u actor.id:u-1 target.id:…
    /// target.type:… product:… is_failure:true received:2026-01-01,2026-02-01
    /// created:…,…` plus free words or "quoted phrases", all of which must occur in the
    /// description. Dates are midnight UTC; ranges include the start and exclude the end.
    /// At most 512 characters, 12 terms of at most 100 characters, 6 words or phrases.
    q: Option<String>,
    /// Search only: items per page, 1 to 200 (default 50).
    limit: Option<i64>,
    /// Search only: `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Export only: `ndjson` (default) or `csv`.
    format: Option<String>,
}

impl EventQuery {
    /// The filter these parameters ask for, within what `caller` may read.
    fn filter(&self, caller: &Caller) -> Result<EventFilter, ApiError> {
        caller.require(Scope::AuditRead)?;
        let tenant_id = match (caller.principal.tenant_id, self.group_id) {
            (Some(_), Some(_)) => {
                return Err(ApiError::forbidden(
                    "group_id is for platform principals; a tenant sees its own events",
                ));
            }
            (Some(own), None) => Some(own),
            (None, group) => group,
        };
        if self
            .crud
            .as_deref()
            .is_some_and(|crud| !matches!(crud, "c" | "r" | "u" | "d"))
        {
            return Err(ApiError::invalid_field(
                "/crud",
                "must be one of c, r, u, d",
            ));
        }
        for (pointer, time) in [("/from", self.from), ("/to", self.to)] {
            if time.is_some_and(|time| time < storage::earliest_timestamp()) {
                return Err(ApiError::invalid_field(pointer, "must be after 4714 BC"));
            }
        }
        let mut filter = EventFilter {
            tenant_id,
            action: self.action.clone(),
            crud: self.crud.clone(),
            actor_id: self.actor_id.clone(),
            target_id: self.target_id.clone(),
            target_type: self.target_type.clone(),
            product: self.product.clone(),
            is_failure: self.is_failure,
            from: self.from,
            to: self.to,
            ..EventFilter::default()
        };
        if caller.principal.kind == PrincipalKind::ViewerToken {
            // A viewer token reads its own product's events of its tenant, nothing else.
            let own = caller.principal.product.clone();
            if filter.product.is_some() && filter.product != own {
                return Err(ApiError::forbidden(
                    "a viewer token reads the events of the product that issued it only",
                ));
            }
            filter.product = own;
        }
        if let Some(q) = &self.q {
            audit::apply_query(q, &mut filter)
                .map_err(|error| ApiError::invalid_field("/q", error.to_string()))?;
        }
        Ok(filter)
    }
}

/// A page of events, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventPage {
    /// The events.
    items: Vec<EventView>,
    /// Pass as `cursor` for the next (older) page; null on the last page.
    next_cursor: Option<String>,
}

fn only_for(value: Option<&impl Sized>, parameter: &str, endpoint: &str) -> Result<(), ApiError> {
    match value {
        Some(_) => Err(ApiError::invalid_field(
            format!("/{parameter}"),
            format!("applies to {endpoint} only"),
        )),
        None => Ok(()),
    }
}

/// Searches the audit log, newest first, a page at a time; a tenant principal sees only its
/// own tenant's events. Events arriving while a client pages do not shift the pages.
#[utoipa::path(get, path = "/v1/audit/events", operation_id = "search_audit_events", tag = "audit",
    security(("bearer" = ["audit:read"])), params(EventQuery),
    responses((status = 200, description = "A page of events", body = EventPage),
    (status = 403, description = "Missing audit:read, or group_id from a tenant principal", body = Problem, content_type = "application/problem+json"),
    (status = 422, description = "Invalid filters or search string", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn search(
    State(state): State<AppState>,
    caller: Caller,
    uri: Uri,
) -> Result<Json<EventPage>, ApiError> {
    let params: EventQuery = crate::extract::query(&uri)?;
    let filter = params.filter(&caller)?;
    only_for(params.format.as_ref(), "format", "/v1/audit/events/export")?;
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
    let rows = audit::search(
        &state.pool,
        &filter,
        before,
        limit + 1,
        state.settings.statement_timeout(),
    )
    .await?;
    let (rows, next_cursor) = pagination::page(rows, limit, |row| (row.created_at, row.id));
    Ok(Json(EventPage {
        items: rows.into_iter().map(EventView::from).collect(),
        next_cursor,
    }))
}

/// Exports every event matching the filters, newest first, as NDJSON (the search's event
/// shape, one per line) or CSV (a header row; field maps as JSON text; cells a spreadsheet
/// would run as formulas prefixed with `'`). The body is streamed as it is read.
#[utoipa::path(get, path = "/v1/audit/events/export", operation_id = "export_audit_events", tag = "audit",
    security(("bearer" = ["audit:read"])), params(EventQuery),
    responses((status = 200, description = "The events, as an attachment; the body ends with the trailer x-export-status: complete, or truncated when a page after the first failed (the body then ends after its last whole line or row)", content(
        (String = "application/x-ndjson"), (String = "text/csv"))),
    (status = 403, description = "Missing audit:read, or group_id from a tenant principal", body = Problem, content_type = "application/problem+json"),
    (status = 422, description = "Invalid filters, search string or format", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn export(
    State(state): State<AppState>,
    caller: Caller,
    uri: Uri,
) -> Result<Response, ApiError> {
    let params: EventQuery = crate::extract::query(&uri)?;
    let filter = params.filter(&caller)?;
    only_for(params.limit.as_ref(), "limit", "/v1/audit/events")?;
    only_for(params.cursor.as_ref(), "cursor", "/v1/audit/events")?;
    let format = match params.format.as_deref() {
        None | Some("ndjson") => ExportFormat::Ndjson,
        Some("csv") => ExportFormat::Csv,
        Some(_) => return Err(ApiError::invalid_field("/format", "must be ndjson or csv")),
    };
    let scope = filter
        .tenant_id
        .map_or_else(|| "all".to_owned(), |tenant| tenant.to_string());
    let filename = format!(
        "audit-events-{scope}-{}.{}",
        Utc::now().format("%Y%m%dT%H%M%SZ"),
        format.extension()
    );
    // The first page is read before the status is sent, so its failure is a status; a later
    // one ends the body after the last whole page (logged), never in the middle of a chunk.
    let (chunks, outcome) = audit::export(
        state.pool.clone(),
        filter,
        format,
        state.settings.statement_timeout(),
    )
    .await?;
    let data = futures::StreamExt::map(chunks, |text| {
        Ok::<_, Infallible>(Frame::data(Bytes::from(text)))
    });
    // Said after the last chunk, once the stream knows: a reader that reads trailers can
    // tell a complete export from one cut short after its last whole page.
    let status = futures::stream::once(async move {
        let mut trailers = HeaderMap::new();
        let said = if outcome.cut_short() {
            HeaderValue::from_static("truncated")
        } else {
            HeaderValue::from_static("complete")
        };
        trailers.insert(EXPORT_STATUS, said);
        Ok(Frame::trailers(trailers))
    });
    let body = Body::new(StreamBody::new(futures::StreamExt::chain(data, status)));
    Ok((
        [
            (header::CONTENT_TYPE, format.content_type().to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
            (header::CACHE_CONTROL, "no-store".to_owned()),
            (header::TRAILER, EXPORT_STATUS.as_str().to_owned()),
        ],
        body,
    )
        .into_response())
}

/// The trailer that ends an export: `complete`, or `truncated` when a page after the first
/// failed and the body ended after the last whole page.
pub const EXPORT_STATUS: HeaderName = HeaderName::from_static("x-export-status");

/// Parameters of `GET /v1/audit/verify`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct VerifyQuery {
    /// The tenant whose chain to verify, by id or slug (a tenant principal: its own, the
    /// default). A platform principal without it verifies the chain of events that belong
    /// to no tenant.
    group_id: Option<String>,
    /// `incremental` (default): every checkpoint, then the events after the newest one.
    /// `full`: every event from the retention anchor, at most 50,000 per request.
    mode: Option<String>,
    /// Full mode only: go on after this position (the previous answer's `next_after_seq`).
    after_seq: Option<i64>,
}

/// Recomputes a tenant's audit hash chain and reports every broken range. Incremental by
/// default (checkpoints, then the events after the newest); `mode=full` recomputes every
/// event, a part at a time. At most two verifications run at once per replica; more are
/// answered 503 with `Retry-After`.
#[utoipa::path(get, path = "/v1/audit/verify", operation_id = "verify_audit_chain", tag = "audit",
    security(("bearer" = ["audit:read"])), params(VerifyQuery),
    responses((status = 200, description = "The outcome (ok false when tampering shows, with every broken range)", body = Verification),
    (status = 403, description = "Missing audit:read", body = Problem, content_type = "application/problem+json"),
    (status = 422, description = "No such tenant among those the caller may read (another tenant's answers alike), an unknown mode, or an after_seq that is not a checkpoint", body = Problem, content_type = "application/problem+json"),
    (status = 503, description = "Two verifications are running already (see Retry-After), or the chain could not be read within the request's time", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn verify(
    State(state): State<AppState>,
    caller: Caller,
    uri: Uri,
) -> Result<Json<Verification>, ApiError> {
    caller.require(Scope::AuditRead)?;
    if caller.principal.kind == PrincipalKind::ViewerToken {
        return Err(ApiError::forbidden(
            "a viewer token searches and exports its tenant's events; it does not verify chains",
        ));
    }
    let params: VerifyQuery = crate::extract::query(&uri)?;
    let mode = match params.mode.as_deref() {
        None | Some("incremental") => audit::Mode::Incremental,
        Some("full") => audit::Mode::Full,
        Some(_) => {
            return Err(ApiError::invalid_field(
                "/mode",
                "must be incremental or full",
            ));
        }
    };
    if mode == audit::Mode::Incremental {
        only_for(params.after_seq.as_ref(), "after_seq", "mode=full")?;
    }
    let key = match &params.group_id {
        None => caller.principal.tenant_id.unwrap_or_else(Uuid::nil),
        Some(group) => visible_tenant(&state, &caller, group)
            .await?
            .ok_or_else(|| ApiError::invalid_field("/group_id", NO_SUCH_TENANT))?,
    };
    let _permit = state.verifications.try_acquire().map_err(|_| {
        ApiError::busy(
            "other audit chain verifications are running; retry in a moment",
            VERIFY_RETRY_AFTER_SECS,
        )
    })?;
    audit::verify(
        &state.pool,
        key,
        mode,
        params.after_seq,
        state.settings.statement_timeout(),
    )
    .await
    .map(Json)
    .map_err(|error| match error {
        audit::VerifyError::NotACheckpoint => {
            ApiError::invalid_field("/after_seq", error.to_string())
        }
        audit::VerifyError::Database(error) => ApiError::from(error),
        audit::VerifyError::Hashing(error) => ApiError::internal(error),
    })
}

/// The `Retry-After` of a verification refused because others are running.
const VERIFY_RETRY_AFTER_SECS: u32 = 2;

/// What a caller hears about a tenant it cannot use, whether it exists or not.
pub(crate) const NO_SUCH_TENANT: &str = "no such tenant (by id or slug)";

/// The tenant `id_or_slug` names, if it exists and `caller` may act on it. Another tenant's
/// id or slug gives `None`, as an unknown one does, so a tenant principal cannot tell which
/// tenants exist.
pub(crate) async fn visible_tenant(
    state: &AppState,
    caller: &Caller,
    id_or_slug: &str,
) -> Result<Option<Uuid>, ApiError> {
    let found = match id_or_slug.parse::<Uuid>() {
        Ok(id) => storage::tenants::exists(&state.pool, id)
            .await?
            .then_some(id),
        Err(_) => storage::tenants::id_by_slug(&state.pool, id_or_slug).await?,
    };
    Ok(found.filter(|tenant| caller.principal.can_access_tenant(Some(*tenant))))
}

/// What an ingest stored.
#[derive(Debug, Serialize, ToSchema)]
pub struct IngestResult {
    /// Events stored.
    stored: u64,
    /// Events skipped because their `external_id` was already stored for this product.
    duplicates: u64,
}

/// Where the events of a body sit: `/{index}` in an array, the root for a lone event.
pub(crate) fn native_pointer(batch: bool) -> impl Fn(usize) -> String {
    move |index| {
        if batch {
            format!("/{index}")
        } else {
            String::new()
        }
    }
}

/// Ingests events in Retraced's shape. A tenant key's events belong to its own tenant (a
/// group naming another is refused like an unknown one); a platform key may name any
/// tenant, by id or slug.
#[utoipa::path(post, path = "/v1/audit/events", operation_id = "ingest_audit_events", tag = "audit",
    security(("bearer" = ["audit:write"])),
    request_body(content = Object, description = "One Retraced event, or an array of up to 1,000"),
    responses((status = 201, description = "Stored (duplicates skipped)", body = IngestResult),
    (status = 403, description = "Missing audit:write, or a key whose product is the registry's own name", body = Problem, content_type = "application/problem+json"),
    (status = 409, description = "The same external_id arrived concurrently; retrying skips it", body = Problem, content_type = "application/problem+json"),
    (status = 422, description = "Invalid events, each problem with its pointer (a group naming a tenant the key may not write to is an unknown one); nothing stored", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn ingest(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<Value>,
) -> Result<(StatusCode, Json<IngestResult>), ApiError> {
    caller.require(Scope::AuditWrite)?;
    let batch = body.is_array();
    let received = Utc::now();
    let events = audit::parse_batch(body, received).map_err(invalid_events)?;
    let rows = ingest_rows(&state, &caller, events, native_pointer(batch), received).await?;
    let total = u64::try_from(rows.len()).unwrap_or(u64::MAX);
    let stored = store(&state, rows).await?.stored;
    Ok((
        StatusCode::CREATED,
        Json(IngestResult {
            stored,
            duplicates: total - stored,
        }),
    ))
}

/// The 422 of a batch that `audit::parse_batch` refused.
fn invalid_events(problems: Vec<(String, String)>) -> ApiError {
    ApiError::invalid(
        problems
            .into_iter()
            .map(|(pointer, detail)| FieldError { pointer, detail })
            .collect(),
    )
}

/// The rows `events`, received at `received`, become when `caller` ingests them: each in
/// the tenant its group names (by id or slug, among those the caller may write to; a tenant
/// key's own without a group), under the caller's product. 422 pointing at every group the
/// caller may not use (`at` gives the pointer of the event at an index).
pub(crate) async fn ingest_rows(
    state: &AppState,
    caller: &Caller,
    events: Vec<audit::Event>,
    at: impl Fn(usize) -> String,
    received: DateTime<Utc>,
) -> Result<Vec<EventRow>, ApiError> {
    let mut resolved: HashMap<String, Option<Uuid>> = HashMap::new();
    let mut problems = Vec::new();
    let mut rows = Vec::with_capacity(events.len());
    let product = caller.principal.product();
    // Keys made before the catalog check (V15) may still name the registry itself.
    if product == audit::PRODUCT {
        return Err(ApiError::forbidden(format!(
            "this key's product is \"{product}\", the registry's own name: its events could \
             not be told from the registry's records; use a key of a catalog product"
        )));
    }
    for (index, event) in events.into_iter().enumerate() {
        let group_id = event.group.as_ref().and_then(|group| group.id.clone());
        let tenant_id = match &group_id {
            None => caller.principal.tenant_id,
            Some(id) => {
                if !resolved.contains_key(id) {
                    let found = visible_tenant(state, caller, id).await?;
                    resolved.insert(id.clone(), found);
                }
                let found = resolved.get(id).copied().flatten();
                if found.is_none() {
                    problems.push(FieldError {
                        pointer: format!("{}/group/id", at(index)),
                        detail: NO_SUCH_TENANT.to_owned(),
                    });
                }
                found
            }
        };
        let actor = event.actor.unwrap_or_default();
        let target = event.target.unwrap_or_default();
        rows.push(EventRow {
            tenant_id,
            group_id: group_id.or_else(|| tenant_id.map(|id| id.to_string())),
            group_name: event.group.and_then(|group| group.name),
            product: Some(product.clone()),
            action: event.action,
            crud: event.crud,
            actor_id: actor.id,
            actor_name: actor.name,
            actor_href: actor.href,
            actor_fields: Jsonb(audit::Event::fields_json(&actor.fields)),
            target_id: target.id,
            target_name: target.name,
            target_type: target.kind,
            target_href: target.href,
            target_fields: Jsonb(audit::Event::fields_json(&target.fields)),
            source_ip: event.source_ip,
            description: event.description,
            is_failure: event.is_failure,
            is_anonymous: event.is_anonymous,
            fields: Jsonb(audit::Event::fields_json(&event.fields)),
            metadata: Jsonb(audit::Event::fields_json(
                &event.metadata.unwrap_or_default(),
            )),
            external_id: event.external_id,
            created_at: event.created.unwrap_or(received),
            component: event.component,
            version: event.version,
            ..EventRow::default()
        });
    }
    if !problems.is_empty() {
        return Err(ApiError::invalid(problems));
    }
    Ok(rows)
}

/// Stores `rows` in one transaction (retried on a deadlock or serialization failure),
/// chained like every event.
pub(crate) async fn store(
    state: &AppState,
    rows: Vec<EventRow>,
) -> Result<audit::Appended, ApiError> {
    let (pool, rows) = (&state.pool, &rows);
    storage::with_retries(move || async move {
        let mut transaction = storage::begin(pool).await?;
        let appended = audit::append_identified(&mut transaction, rows.clone()).await?;
        storage::commit(transaction).await?;
        Ok::<_, ApiError>(appended)
    })
    .await
}
