//! The `tenant_projects` table: sub-tenancy inside a tenant.

use chrono::{DateTime, Utc};
use domain::{ProjectStatus, Slug};
use sqlx::{FromRow, PgConnection, PgPool};
use uuid::Uuid;

/// A project as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectRow {
    /// Id.
    pub id: Uuid,
    /// The tenant it belongs to.
    pub tenant_id: Uuid,
    /// Slug, unique within the tenant.
    pub slug: String,
    /// Display name.
    pub name: String,
    /// Active or archived.
    pub status: ProjectStatus,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

#[derive(FromRow)]
struct RawProject {
    id: Uuid,
    tenant_id: Uuid,
    slug: String,
    name: String,
    status: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<RawProject> for ProjectRow {
    type Error = sqlx::Error;

    fn try_from(raw: RawProject) -> Result<Self, Self::Error> {
        Ok(Self {
            id: raw.id,
            tenant_id: raw.tenant_id,
            slug: raw.slug,
            name: raw.name,
            status: raw
                .status
                .parse()
                .map_err(|error| sqlx::Error::Decode(Box::new(error)))?,
            created_at: raw.created_at,
            updated_at: raw.updated_at,
        })
    }
}

const COLUMNS: &str = "id, tenant_id, slug, name, status::text AS status, created_at, updated_at";

fn one(raw: Option<RawProject>) -> Result<Option<ProjectRow>, sqlx::Error> {
    raw.map(ProjectRow::try_from).transpose()
}

/// Creates a project.
pub async fn insert(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    slug: &Slug,
    name: &str,
) -> Result<ProjectRow, sqlx::Error> {
    let raw: RawProject = sqlx::query_as(&format!(
        "INSERT INTO tenant_projects (tenant_id, slug, name) VALUES ($1, $2, $3) RETURNING {COLUMNS}"
    ))
    .bind(tenant_id)
    .bind(slug.as_str())
    .bind(name)
    .fetch_one(conn)
    .await?;
    raw.try_into()
}

/// One project of a tenant, by id.
pub async fn get(
    pool: &PgPool,
    tenant_id: Uuid,
    id: Uuid,
) -> Result<Option<ProjectRow>, sqlx::Error> {
    one(sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM tenant_projects WHERE tenant_id = $1 AND id = $2"
    ))
    .bind(tenant_id)
    .bind(id)
    .fetch_optional(pool)
    .await?)
}

/// One project of a tenant, by id, locked until the caller's transaction ends.
pub async fn lock(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    id: Uuid,
) -> Result<Option<ProjectRow>, sqlx::Error> {
    one(sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM tenant_projects WHERE tenant_id = $1 AND id = $2 FOR UPDATE"
    ))
    .bind(tenant_id)
    .bind(id)
    .fetch_optional(conn)
    .await?)
}

/// One project of a tenant, by slug.
pub async fn get_by_slug(
    pool: &PgPool,
    tenant_id: Uuid,
    slug: &str,
) -> Result<Option<ProjectRow>, sqlx::Error> {
    one(sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM tenant_projects WHERE tenant_id = $1 AND slug = $2"
    ))
    .bind(tenant_id)
    .bind(slug)
    .fetch_optional(pool)
    .await?)
}

/// A page of a tenant's projects in `(created_at, id)` order.
pub async fn list(
    pool: &PgPool,
    tenant_id: Uuid,
    status: Option<ProjectStatus>,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<ProjectRow>, sqlx::Error> {
    let (after_time, after_id) = after.unzip();
    let rows: Vec<RawProject> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM tenant_projects
         WHERE tenant_id = $1
           AND ($2::text IS NULL OR status::text = $2)
           AND ($3::timestamptz IS NULL OR (created_at, id) > ($3, $4))
         ORDER BY created_at, id LIMIT $5"
    ))
    .bind(tenant_id)
    .bind(status.map(ProjectStatus::as_str))
    .bind(after_time)
    .bind(after_id)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(ProjectRow::try_from).collect()
}

/// Changes a project's slug and/or name; `None` if there is no such project.
pub async fn update(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    id: Uuid,
    slug: Option<&Slug>,
    name: Option<&str>,
) -> Result<Option<ProjectRow>, sqlx::Error> {
    one(sqlx::query_as(&format!(
        "UPDATE tenant_projects SET slug = coalesce($3, slug), name = coalesce($4, name)
         WHERE tenant_id = $1 AND id = $2 RETURNING {COLUMNS}"
    ))
    .bind(tenant_id)
    .bind(id)
    .bind(slug.map(Slug::as_str))
    .bind(name)
    .fetch_optional(conn)
    .await?)
}

/// Sets a project's status; `None` if there is no such project.
pub async fn set_status(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    id: Uuid,
    status: ProjectStatus,
) -> Result<Option<ProjectRow>, sqlx::Error> {
    one(sqlx::query_as(&format!(
        "UPDATE tenant_projects SET status = $3::tenant_project_status
         WHERE tenant_id = $1 AND id = $2 RETURNING {COLUMNS}"
    ))
    .bind(tenant_id)
    .bind(id)
    .bind(status.as_str())
    .fetch_optional(conn)
    .await?)
}
