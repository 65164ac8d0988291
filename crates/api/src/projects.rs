//! `/v1/tenants/{id}/projects`: sub-tenancy, for tenants with an enabled product whose
//! manifest says `supports_projects`.

use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use domain::{ProjectStatus, Scope, Slug, TenantWrite, tenant};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use storage::projects::{self, ProjectRow};
use storage::tenants::TenantRow;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::AppState;
use crate::extract::{ApiJson, Caller};
use crate::fields::{self, Fields};
use crate::pagination::{self, PageQuery};
use crate::problem::{ApiError, FieldError, Problem};
use crate::tenants::{visible_by_path, writable_by_path};
use registry::projects::{NewProject, ProjectChanges};

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/tenants/{id}/projects", post(create).get(list))
        .route("/v1/tenants/{id}/projects/by-slug/{slug}", get(get_by_slug))
        .route(
            "/v1/tenants/{id}/projects/{project}",
            get(get_one).patch(patch),
        )
        .route("/v1/tenants/{id}/projects/{project}/archive", post(archive))
        .route("/v1/tenants/{id}/projects/{project}/restore", post(restore))
}

/// A project.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectView {
    /// Id.
    id: Uuid,
    /// The tenant it belongs to.
    tenant_id: Uuid,
    /// Slug, unique within the tenant.
    #[schema(example = "web-shop")]
    slug: String,
    /// Display name.
    #[schema(example = "Web shop")]
    name: String,
    /// active or archived.
    #[schema(example = "active")]
    status: String,
    /// Creation time.
    created_at: DateTime<Utc>,
    /// Last change.
    updated_at: DateTime<Utc>,
}

impl From<ProjectRow> for ProjectView {
    fn from(row: ProjectRow) -> Self {
        Self {
            id: row.id,
            tenant_id: row.tenant_id,
            slug: row.slug,
            name: row.name,
            status: row.status.to_string(),
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// A page of projects.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectPage {
    /// The projects, oldest first.
    items: Vec<ProjectView>,
    /// Pass as `cursor` for the next page; null on the last page.
    next_cursor: Option<String>,
}

/// The body of `POST` (both fields) and `PATCH` (either) of a project.
#[derive(Debug, Deserialize, ToSchema)]
#[expect(
    dead_code,
    reason = "documents the body for OpenAPI; it is read field by field to report every problem at once"
)]
pub struct ProjectInput {
    /// Slug (3–63 of `[a-z0-9-]`), unique within the tenant.
    #[schema(example = "web-shop")]
    slug: String,
    /// Display name (1–200 characters).
    #[schema(example = "Web shop")]
    name: String,
}

/// Filters of the project list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ProjectListParams {
    /// Only projects in this status.
    status: Option<String>,
    /// Items per page, 1 to 200 (default 50).
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

fn slug_rule(text: &str) -> Result<Slug, String> {
    Slug::parse(text).map_err(|error| error.to_string())
}

fn project_id(raw: &str) -> Result<Uuid, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::not_found("no such project"))
}

async fn existing(state: &AppState, tenant: &TenantRow, raw: &str) -> Result<ProjectRow, ApiError> {
    projects::get(&state.pool, tenant.id, project_id(raw)?)
        .await?
        .ok_or_else(|| ApiError::not_found("no such project"))
}

/// Creates a project.
#[utoipa::path(post, path = "/v1/tenants/{id}/projects", operation_id = "create_project", tag = "projects",
    security(("bearer" = ["projects:write"])), request_body = ProjectInput,
    params(("id" = Uuid, Path, description = "The tenant's id")),
    responses((status = 201, description = "Created", body = ProjectView, headers(("location" = String, description = "The project's URL"))),
    (status = 404, description = "No such tenant, or not the caller's", body = Problem, content_type = "application/problem+json"),
    (status = 409, description = "Slug taken in this tenant, no product supporting projects, or the tenant is frozen or archived", body = Problem, content_type = "application/problem+json"),
    (status = 422, description = "Invalid fields, all listed", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant): Path<String>,
    ApiJson(body): ApiJson<Value>,
) -> Result<Response, ApiError> {
    caller.require(Scope::ProjectsWrite)?;
    let tenant = writable_by_path(&state, &caller, &tenant, TenantWrite::Operate).await?;
    let mut fields = Fields::new(body, &["slug", "name"])?;
    let slug = fields.required("slug", slug_rule);
    let name = fields.required("name", tenant::name);
    fields.finish()?;
    let (Some(slug), Some(name)) = (slug, name) else {
        return Err(ApiError::internal(
            "required fields passed validation unset",
        ));
    };
    let row = registry::projects::create(
        &state.pool,
        &caller.actor(),
        tenant.id,
        &NewProject { slug, name },
    )
    .await?;
    let location = format!("/v1/tenants/{}/projects/{}", tenant.id, row.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(ProjectView::from(row)),
    )
        .into_response())
}

/// Lists a tenant's projects, oldest first, a page at a time.
#[utoipa::path(get, path = "/v1/tenants/{id}/projects", operation_id = "list_projects", tag = "projects",
    security(("bearer" = ["projects:read"])),
    params(("id" = Uuid, Path, description = "The tenant's id"), ProjectListParams),
    responses((status = 200, description = "A page of projects", body = ProjectPage),
    (status = 404, description = "No such tenant", body = Problem, content_type = "application/problem+json"),
    (status = 422, description = "Invalid filters", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant): Path<String>,
    uri: Uri,
) -> Result<Json<ProjectPage>, ApiError> {
    caller.require(Scope::ProjectsRead)?;
    let tenant = visible_by_path(&state, &caller, &tenant).await?;
    let params: ProjectListParams = crate::extract::query(&uri)?;
    let status = params
        .status
        .as_deref()
        .map(fields::label::<ProjectStatus>)
        .transpose()
        .map_err(|detail| {
            ApiError::invalid(vec![FieldError {
                pointer: "/status".to_owned(),
                detail,
            }])
        })?;
    let (limit, after) = PageQuery {
        limit: params.limit,
        cursor: params.cursor,
    }
    .resolve()?;
    let rows = projects::list(&state.pool, tenant.id, status, after, limit + 1).await?;
    let (rows, next_cursor) = pagination::page(rows, limit, |row| (row.created_at, row.id));
    Ok(Json(ProjectPage {
        items: rows.into_iter().map(ProjectView::from).collect(),
        next_cursor,
    }))
}

/// One project by id.
#[utoipa::path(get, path = "/v1/tenants/{id}/projects/{project}", operation_id = "get_project", tag = "projects",
    security(("bearer" = ["projects:read"])),
    params(("id" = Uuid, Path, description = "The tenant's id"), ("project" = Uuid, Path, description = "The project's id")),
    responses((status = 200, description = "The project", body = ProjectView),
    (status = 404, description = "No such tenant or project", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn get_one(
    State(state): State<AppState>,
    caller: Caller,
    Path((tenant, project)): Path<(String, String)>,
) -> Result<Json<ProjectView>, ApiError> {
    caller.require(Scope::ProjectsRead)?;
    let tenant = visible_by_path(&state, &caller, &tenant).await?;
    Ok(Json(existing(&state, &tenant, &project).await?.into()))
}

/// One project by slug.
#[utoipa::path(get, path = "/v1/tenants/{id}/projects/by-slug/{slug}", operation_id = "get_project_by_slug", tag = "projects",
    security(("bearer" = ["projects:read"])),
    params(("id" = Uuid, Path, description = "The tenant's id"), ("slug" = String, Path, description = "The project's slug")),
    responses((status = 200, description = "The project", body = ProjectView),
    (status = 404, description = "No such tenant or project", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn get_by_slug(
    State(state): State<AppState>,
    caller: Caller,
    Path((tenant, slug)): Path<(String, String)>,
) -> Result<Json<ProjectView>, ApiError> {
    caller.require(Scope::ProjectsRead)?;
    // A text that breaks the slug rule names no project: the database is not asked.
    let slug = Slug::parse(&slug).map_err(|_| ApiError::not_found("no such project"))?;
    let tenant = visible_by_path(&state, &caller, &tenant).await?;
    projects::get_by_slug(&state.pool, tenant.id, slug.as_str())
        .await?
        .map(|row| Json(row.into()))
        .ok_or_else(|| ApiError::not_found("no such project"))
}

/// Renames a project or changes its slug.
#[utoipa::path(patch, path = "/v1/tenants/{id}/projects/{project}", operation_id = "patch_project", tag = "projects",
    security(("bearer" = ["projects:write"])), request_body = ProjectInput,
    params(("id" = Uuid, Path, description = "The tenant's id"), ("project" = Uuid, Path, description = "The project's id")),
    responses((status = 200, description = "Changed", body = ProjectView),
    (status = 404, description = "No such tenant or project", body = Problem, content_type = "application/problem+json"),
    (status = 409, description = "Slug taken, no product supporting projects, or the tenant is frozen or archived", body = Problem, content_type = "application/problem+json"),
    (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn patch(
    State(state): State<AppState>,
    caller: Caller,
    Path((tenant, project)): Path<(String, String)>,
    ApiJson(body): ApiJson<Value>,
) -> Result<Json<ProjectView>, ApiError> {
    caller.require(Scope::ProjectsWrite)?;
    let tenant = writable_by_path(&state, &caller, &tenant, TenantWrite::Operate).await?;
    let current = existing(&state, &tenant, &project).await?;
    let mut fields = Fields::new(body, &["slug", "name"])?;
    let changes = ProjectChanges {
        slug: fields.optional_not_null("slug", slug_rule),
        name: fields.optional_not_null("name", tenant::name),
    };
    fields.finish()?;
    let row = registry::projects::update(
        &state.pool,
        &caller.actor(),
        tenant.id,
        current.id,
        &changes,
    )
    .await?;
    Ok(Json(row.into()))
}

async fn set_status(
    state: &AppState,
    caller: &Caller,
    tenant: &str,
    project: &str,
    status: ProjectStatus,
) -> Result<Json<ProjectView>, ApiError> {
    caller.require(Scope::ProjectsWrite)?;
    let tenant = writable_by_path(state, caller, tenant, TenantWrite::Operate).await?;
    let row = registry::projects::set_status(
        &state.pool,
        &caller.actor(),
        tenant.id,
        project_id(project)?,
        status,
    )
    .await?;
    Ok(Json(row.into()))
}

/// Archives a project (idempotent).
#[utoipa::path(post, path = "/v1/tenants/{id}/projects/{project}/archive", operation_id = "archive_project", tag = "projects",
    security(("bearer" = ["projects:write"])),
    params(("id" = Uuid, Path, description = "The tenant's id"), ("project" = Uuid, Path, description = "The project's id")),
    responses((status = 200, description = "Archived", body = ProjectView),
    (status = 404, description = "No such tenant or project", body = Problem, content_type = "application/problem+json"),
    (status = 409, description = "The tenant is frozen or archived", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn archive(
    State(state): State<AppState>,
    caller: Caller,
    Path((tenant, project)): Path<(String, String)>,
) -> Result<Json<ProjectView>, ApiError> {
    set_status(&state, &caller, &tenant, &project, ProjectStatus::Archived).await
}

/// Restores an archived project (idempotent; needs a product supporting projects).
#[utoipa::path(post, path = "/v1/tenants/{id}/projects/{project}/restore", operation_id = "restore_project", tag = "projects",
    security(("bearer" = ["projects:write"])),
    params(("id" = Uuid, Path, description = "The tenant's id"), ("project" = Uuid, Path, description = "The project's id")),
    responses((status = 200, description = "Active again", body = ProjectView),
    (status = 404, description = "No such tenant or project", body = Problem, content_type = "application/problem+json"),
    (status = 409, description = "No product supporting projects, or the tenant is frozen or archived", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn restore(
    State(state): State<AppState>,
    caller: Caller,
    Path((tenant, project)): Path<(String, String)>,
) -> Result<Json<ProjectView>, ApiError> {
    set_status(&state, &caller, &tenant, &project, ProjectStatus::Active).await
}
