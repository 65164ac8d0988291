//! A tenant's provisioning (`/v1/tenants/{id}/provisioning`): the state of each product's
//! plan, retrying what failed, and the product's report on its hook; the roles plans made
//! (`/v1/tenants/{id}/roles`) and the backups taken before a drop (`…/backups`). The use
//! cases are `registry::provisioning`; the runner is the `provisioner` crate.

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use domain::Scope;
use domain::provisioning::Plan;
use registry::provisioning::{self, Outcome, Report};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use storage::backups::BackupRow;
use storage::provisioning::RunRow;
use storage::roles::RoleRow;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::AppState;
use crate::extract::{ApiJson, ApiQuery, Caller, from_json_value};
use crate::problem::{ApiError, Problem};
use crate::product_migrations::require_product_manager;
use crate::tenants::{visible_by_path, write_by};

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/tenants/{id}/provisioning", get(show))
        .route("/v1/tenants/{id}/provisioning/retry", post(retry))
        .route(
            "/v1/tenants/{id}/provisioning/{product}/complete",
            post(complete),
        )
        .route("/v1/tenants/{id}/provisioning/{product}/fail", post(fail))
        .route("/v1/tenants/{id}/roles", get(roles))
        .route("/v1/tenants/{id}/backups", get(backups))
}

/// The schema or database a plan made.
#[derive(Debug, Serialize, ToSchema)]
pub struct DatabaseView {
    /// `schema` or `database`.
    isolation: Option<String>,
    /// Its name (from the tenant's id).
    name: Option<String>,
    /// Whether it was made (and not dropped since).
    provisioned: bool,
    /// Whether the product's cluster answers and holds it, asked now (`null` when not
    /// made).
    reachable: Option<bool>,
}

/// One product's provisioning of the tenant.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProvisioningView {
    /// The product.
    product: String,
    /// `provision`, `deprovision` or `migrate`.
    goal: String,
    /// `pending`, `running`, `ready`, `failed`, `deprovisioning` or `deprovisioned`.
    state: String,
    /// The kind of the step it is on (`null` once past the last).
    step: Option<String>,
    /// The index of that step.
    step_index: i32,
    /// Failed attempts of this run.
    attempts: i32,
    /// Attempts the plan allows.
    max_attempts: u32,
    /// Why the last attempt failed.
    last_error: Option<String>,
    /// When the runner takes it up next (only while it has work to do).
    next_attempt_at: Option<DateTime<Utc>>,
    /// The schema or database.
    database: DatabaseView,
    /// The last migration applied in it.
    migration_version: Option<i32>,
    /// When the seed ran.
    seeded_at: Option<DateTime<Utc>>,
    /// Whether the default roles were made.
    roles_created: bool,
    /// When the product answered its hook.
    hook_answered_at: Option<DateTime<Utc>>,
    /// Until when the run waits for the product's report on its hook.
    hook_waiting_until: Option<DateTime<Utc>>,
    /// The backup taken before the drop.
    backup_id: Option<Uuid>,
    /// The operation this run is part of (a purge, a fleet migration).
    operation_id: Option<Uuid>,
    /// When it was queued.
    queued_at: DateTime<Utc>,
    /// When a runner first took it.
    started_at: Option<DateTime<Utc>>,
    /// When it ended.
    finished_at: Option<DateTime<Utc>>,
    /// Last change.
    updated_at: DateTime<Utc>,
}

/// Every product's provisioning of the tenant.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProvisioningList {
    /// By product.
    items: Vec<ProvisioningView>,
}

/// What to look for on the product's cluster for `row`, with its plan: nothing unless a
/// schema or database was made.
fn probe_of<'a>(row: &'a RunRow, plan: Option<&'a Plan>) -> Option<provisioner::Probe<'a>> {
    let made = row.object_name.is_some() && row.state != "deprovisioned";
    match (plan, &row.object_name, &row.isolation) {
        (Some(plan), Some(name), Some(isolation)) if made => Some(provisioner::Probe {
            product: &row.product_id,
            plan,
            isolation,
            name,
        }),
        _ => None,
    }
}

/// Each of `rows` in the view, its cluster asked now (concurrently, each within a deadline).
async fn views(state: &AppState, rows: Vec<RunRow>) -> Vec<ProvisioningView> {
    let plans: Vec<Option<Plan>> = rows
        .iter()
        .map(|row| provisioning::plan_of(row).ok())
        .collect();
    let probes: Vec<Option<provisioner::Probe<'_>>> = rows
        .iter()
        .zip(&plans)
        .map(|(row, plan)| probe_of(row, plan.as_ref()))
        .collect();
    let reachable = state.settings.clusters.reachable(&probes).await;
    drop(probes);
    rows.into_iter()
        .zip(plans)
        .zip(reachable)
        .map(|((row, plan), reachable)| view(row, plan.as_ref(), reachable))
        .collect()
}

fn view(row: RunRow, plan: Option<&Plan>, reachable: Option<bool>) -> ProvisioningView {
    let made = row.object_name.is_some() && row.state != "deprovisioned";
    ProvisioningView {
        step: provisioning::step_kind(&row).map(str::to_owned),
        next_attempt_at: provisioning::due_at(&row),
        max_attempts: plan.map_or(0, |plan| plan.max_attempts),
        database: DatabaseView {
            isolation: row.isolation,
            name: row.object_name,
            provisioned: made,
            reachable,
        },
        product: row.product_id,
        goal: row.goal,
        state: row.state,
        step_index: row.step,
        attempts: row.attempts,
        last_error: row.last_error,
        migration_version: row.migration_version,
        seeded_at: row.seeded_at,
        roles_created: row.roles_created_at.is_some(),
        hook_answered_at: row.hook_answered_at,
        hook_waiting_until: row.hook_waiting_until,
        backup_id: row.backup_id,
        operation_id: row.operation_id,
        queued_at: row.queued_at,
        started_at: row.started_at,
        finished_at: row.finished_at,
        updated_at: row.updated_at,
    }
}

async fn list_of(state: &AppState, rows: Vec<RunRow>) -> ProvisioningList {
    ProvisioningList {
        items: views(state, rows).await,
    }
}

/// Each product's provisioning of the tenant: state, step, attempts, last error, and what
/// was made (the database asked now whether it answers).
#[utoipa::path(get, path = "/v1/tenants/{id}/provisioning", operation_id = "get_tenant_provisioning", tag = "provisioning",
    security(("bearer" = ["tenants:read"])),
    params(("id" = Uuid, Path, description = "The tenant's id")),
    responses((status = 200, description = "By product", body = ProvisioningList),
    (status = 404, description = "No such tenant, or not the caller's", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<ProvisioningList>, ApiError> {
    caller.require(Scope::TenantsRead)?;
    let tenant = visible_by_path(&state, &caller, &id).await?;
    let rows = provisioning::runs_of(&state.pool, tenant.id).await?;
    Ok(Json(list_of(&state, rows).await))
}

/// Starts the tenant's failed provisioning runs again at the step each stopped on.
#[utoipa::path(post, path = "/v1/tenants/{id}/provisioning/retry", operation_id = "retry_tenant_provisioning", tag = "provisioning",
    security(("bearer" = ["tenants:write"])),
    params(("id" = Uuid, Path, description = "The tenant's id")),
    responses((status = 200, description = "The runs restarted (none when nothing had failed)", body = ProvisioningList),
    (status = 404, description = "No such tenant, or not the caller's", body = Problem, content_type = "application/problem+json"),
    (status = 409, description = "A tenant principal's tenant is frozen or archived", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn retry(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<ProvisioningList>, ApiError> {
    caller.require(Scope::TenantsWrite)?;
    let tenant = visible_by_path(&state, &caller, &id).await?;
    let rows =
        provisioning::retry(&state.pool, &caller.actor(), tenant.id, write_by(&caller)).await?;
    Ok(Json(list_of(&state, rows).await))
}

/// A product's word that its part is done.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompletionReport {
    /// The hook request it answers: its `webhook-id` header, also `data.report.request_id`.
    #[schema(example = "prov_6bb0d0f1c2a94e0f8d1f3b2a9c8e7d60_certifai_provision_1")]
    request_id: String,
}

/// What a product says went wrong on its side.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FailureReport {
    /// The hook request it answers: its `webhook-id` header, also `data.report.request_id`.
    #[schema(example = "prov_6bb0d0f1c2a94e0f8d1f3b2a9c8e7d60_certifai_provision_1")]
    request_id: String,
    /// Why, in words for an operator (1 to 2000 characters).
    #[schema(example = "the search index could not be created")]
    error: String,
}

/// Longest failure text a product may report.
const REPORTED_ERROR_MAX: usize = 2000;

/// Longest hook request id a report may name (the registry's own are under 100).
const REQUEST_ID_MAX: usize = 200;

fn request_id(raw: String) -> Result<String, ApiError> {
    if raw.is_empty() || raw.len() > REQUEST_ID_MAX {
        return Err(ApiError::invalid_field(
            "/request_id",
            format!("must be the hook request's webhook-id (1 to {REQUEST_ID_MAX} bytes)"),
        ));
    }
    Ok(raw)
}

async fn reported(
    state: &AppState,
    caller: &Caller,
    id: &str,
    product: &str,
    body: Value,
    read: fn(Value) -> Result<Report, ApiError>,
) -> Result<Json<ProvisioningView>, ApiError> {
    let product =
        domain::product::catalog_id(product).map_err(|_| ApiError::not_found("no such product"))?;
    require_product_manager(caller, product.as_str(), Scope::ProductsWrite)?;
    let tenant_id = crate::tenants::parse_id(id)?;
    let report = read(body)?;
    let row = provisioning::report(
        &state.pool,
        &caller.actor(),
        tenant_id,
        product.as_str(),
        &report,
        state.settings.provisioning_retry_base,
    )
    .await?;
    let mut one = views(state, vec![row]).await;
    one.pop()
        .map(Json)
        .ok_or_else(|| ApiError::internal("no view of the run"))
}

/// The product reports that its part of the tenant's provisioning (or deprovisioning) is
/// done, after answering the hook with 202.
#[utoipa::path(post, path = "/v1/tenants/{id}/provisioning/{product}/complete", operation_id = "complete_tenant_provisioning", tag = "provisioning",
    security(("bearer" = ["products:write"])),
    params(("id" = Uuid, Path, description = "The tenant's id"), ("product" = String, Path, description = "Product id")),
    request_body = CompletionReport,
    responses((status = 200, description = "Recorded; the run goes on", body = ProvisioningView),
    (status = 403, description = "Neither a platform admin nor the product's own platform key", body = Problem, content_type = "application/problem+json"),
    (status = 404, description = "No such tenant, or no provisioning of this product", body = Problem, content_type = "application/problem+json"),
    (status = 409, description = "The run waits for no report, or for the report on another hook request (an earlier run's)", body = Problem, content_type = "application/problem+json"),
    (status = 422, description = "No request_id, or too long", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn complete(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, product)): Path<(String, String)>,
    ApiJson(body): ApiJson<Value>,
) -> Result<Json<ProvisioningView>, ApiError> {
    reported(&state, &caller, &id, &product, body, |body| {
        let report: CompletionReport = from_json_value(body)?;
        Ok(Report {
            request_id: request_id(report.request_id)?,
            outcome: Outcome::Complete,
        })
    })
    .await
}

/// The product reports that its part failed: an attempt of the run fails (retried with
/// backoff; `failed` and `tenant.provisioning_failed` after the last).
#[utoipa::path(post, path = "/v1/tenants/{id}/provisioning/{product}/fail", operation_id = "fail_tenant_provisioning", tag = "provisioning",
    security(("bearer" = ["products:write"])),
    params(("id" = Uuid, Path, description = "The tenant's id"), ("product" = String, Path, description = "Product id")),
    request_body = FailureReport,
    responses((status = 200, description = "Recorded", body = ProvisioningView),
    (status = 403, description = "Neither a platform admin nor the product's own platform key", body = Problem, content_type = "application/problem+json"),
    (status = 404, description = "No such tenant, or no provisioning of this product", body = Problem, content_type = "application/problem+json"),
    (status = 409, description = "The run waits for no report, or for the report on another hook request (an earlier run's)", body = Problem, content_type = "application/problem+json"),
    (status = 422, description = "No request_id or error text, or too long", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn fail(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, product)): Path<(String, String)>,
    ApiJson(body): ApiJson<Value>,
) -> Result<Json<ProvisioningView>, ApiError> {
    reported(&state, &caller, &id, &product, body, |body| {
        let report: FailureReport = from_json_value(body)?;
        let error = report.error.trim();
        if error.is_empty() || error.chars().count() > REPORTED_ERROR_MAX {
            return Err(ApiError::invalid_field(
                "/error",
                format!("must be 1 to {REPORTED_ERROR_MAX} characters"),
            ));
        }
        Ok(Report {
            request_id: request_id(report.request_id)?,
            outcome: Outcome::Fail(error.to_owned()),
        })
    })
    .await
}

/// A role of the tenant.
#[derive(Debug, Serialize, ToSchema)]
pub struct RoleView {
    /// Its name.
    name: String,
    /// The product whose plan made it.
    product: Option<String>,
    /// What it is for.
    description: String,
    /// Its permissions, sorted.
    permissions: Vec<String>,
    /// When it was made.
    created_at: DateTime<Utc>,
    /// Last change.
    updated_at: DateTime<Utc>,
}

/// A page of the tenant's roles, by name.
#[derive(Debug, Serialize, ToSchema)]
pub struct RoleList {
    /// The roles.
    items: Vec<RoleView>,
    /// Pass as `cursor` for the next page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

/// `limit` and `cursor` of the roles listing.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RolesQuery {
    /// Items per page, 1 to 200 (default 50).
    limit: Option<i64>,
    /// Where the previous page ended.
    cursor: Option<String>,
}

fn role_after(cursor: Option<&str>) -> Result<Option<String>, ApiError> {
    let invalid = || ApiError::invalid_field("/cursor", "not a cursor this service issued");
    cursor
        .map(|cursor| {
            let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
            let name = String::from_utf8(bytes).map_err(|_| invalid())?;
            domain::Slug::parse(&name).map_err(|_| invalid())?;
            Ok(name)
        })
        .transpose()
}

/// The tenant's roles: the defaults its products' plans made, each with its permissions.
#[utoipa::path(get, path = "/v1/tenants/{id}/roles", operation_id = "list_tenant_roles", tag = "provisioning",
    security(("bearer" = ["tenants:read"])),
    params(("id" = Uuid, Path, description = "The tenant's id"), RolesQuery),
    responses((status = 200, description = "A page of roles", body = RoleList),
    (status = 404, description = "No such tenant, or not the caller's", body = Problem, content_type = "application/problem+json"),
    (status = 422, description = "A bad limit or cursor", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn roles(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<RolesQuery>,
) -> Result<Json<RoleList>, ApiError> {
    caller.require(Scope::TenantsRead)?;
    let tenant = visible_by_path(&state, &caller, &id).await?;
    let limit = query.limit.unwrap_or(crate::pagination::DEFAULT_LIMIT);
    if !(1..=crate::pagination::MAX_LIMIT).contains(&limit) {
        return Err(ApiError::invalid_field(
            "/limit",
            format!("must be between 1 and {}", crate::pagination::MAX_LIMIT),
        ));
    }
    let after = role_after(query.cursor.as_deref())?;
    let mut rows: Vec<RoleRow> =
        provisioning::roles_of(&state.pool, tenant.id, after.as_deref(), limit + 1).await?;
    let more = rows.len() > usize::try_from(limit).unwrap_or(usize::MAX);
    rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let next_cursor = more
        .then(|| rows.last().map(|last| URL_SAFE_NO_PAD.encode(&last.name)))
        .flatten();
    Ok(Json(RoleList {
        items: rows
            .into_iter()
            .map(|row| RoleView {
                name: row.name,
                product: row.product_id,
                description: row.description,
                permissions: row.permissions,
                created_at: row.created_at,
                updated_at: row.updated_at,
            })
            .collect(),
        next_cursor,
    }))
}

/// A backup of a tenant's product data.
#[derive(Debug, Serialize, ToSchema)]
pub struct BackupView {
    /// Its id.
    id: Uuid,
    /// The product whose data it holds.
    product: String,
    /// The tenant's slug when it was taken.
    tenant_slug: String,
    /// `schema` or `database`.
    isolation: String,
    /// The schema's or database's name.
    object_name: String,
    /// Where it is: a path under `BACKUP_DIR`, or an object store URL.
    location: String,
    /// `pg_dump-custom` (`pg_restore` reads it).
    format: String,
    /// Its size in bytes.
    size_bytes: i64,
    /// The SHA-256 of its bytes, hex.
    sha256: String,
    /// When it was taken.
    created_at: DateTime<Utc>,
    /// When it is deleted (`BACKUP_RETENTION_DAYS` after).
    expires_at: DateTime<Utc>,
    /// When it was deleted, once it was.
    deleted_at: Option<DateTime<Utc>>,
}

/// The tenant's backups, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct BackupList {
    /// The backups.
    items: Vec<BackupView>,
}

fn backup_view(row: BackupRow) -> BackupView {
    BackupView {
        id: row.id,
        product: row.product_id,
        tenant_slug: row.tenant_slug,
        isolation: row.isolation,
        object_name: row.object_name,
        location: row.location,
        format: row.format,
        size_bytes: row.size_bytes,
        sha256: row.sha256,
        created_at: row.created_at,
        expires_at: row.expires_at,
        deleted_at: row.deleted_at,
    }
}

/// The backups taken of the tenant's product data before each drop, kept
/// `BACKUP_RETENTION_DAYS`. A purged tenant's backups stay readable by platform admins.
#[utoipa::path(get, path = "/v1/tenants/{id}/backups", operation_id = "list_tenant_backups", tag = "provisioning",
    security(("bearer" = ["platform:admin"])),
    params(("id" = Uuid, Path, description = "The tenant's id (a purged tenant's too)")),
    responses((status = 200, description = "Newest first", body = BackupList),
    (status = 403, description = "Not a platform admin", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn backups(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<BackupList>, ApiError> {
    caller.require(Scope::PlatformAdmin)?;
    let tenant_id = crate::tenants::parse_id(&id)?;
    let rows = registry::provisioning::backups_of(&state.pool, tenant_id).await?;
    Ok(Json(BackupList {
        items: rows.into_iter().map(backup_view).collect(),
    }))
}
