//! The project use cases (sub-tenancy): create, change, archive and restore, for tenants
//! with an enabled product whose manifest says `supports_projects`.

use domain::{ProjectStatus, Slug, TenantWrite};
use serde_json::{Map, Value};
use storage::projects::{self, ProjectRow};
use storage::{PgConnection, PgPool};
use uuid::Uuid;

use crate::trail::{self, Target};
use crate::{Actor, RegistryError, constraints, events, lifecycle};
use domain::event::EventType;

/// A project to create in a tenant.
pub struct NewProject {
    /// Its slug, unique within the tenant.
    pub slug: Slug,
    /// Its display name (validated by `domain::tenant::name`).
    pub name: String,
}

/// A change to a project: what is `None` stays.
#[derive(Default)]
pub struct ProjectChanges {
    /// A new slug.
    pub slug: Option<Slug>,
    /// A new display name.
    pub name: Option<String>,
}

impl ProjectChanges {
    /// The names of the fields it changes, for the audit record.
    fn field_names(&self) -> Vec<&'static str> {
        [
            self.slug.is_some().then_some("slug"),
            self.name.is_some().then_some("name"),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

fn no_such_project() -> RegistryError {
    RegistryError::not_found("no such project")
}

async fn require_projects_supported(
    conn: &mut PgConnection,
    tenant_id: Uuid,
) -> Result<(), RegistryError> {
    if storage::products::tenant_supports_projects(conn, tenant_id).await? {
        Ok(())
    } else {
        Err(RegistryError::conflict(
            "projects need an enabled product whose manifest has supports_projects: true; this tenant has none",
        ))
    }
}

/// Records `action` on `project` in the audit log and as the event of the same name
/// (`project.created`, `project.updated` with the changed `fields`, `project.archived`,
/// `project.restored`).
async fn audit(
    conn: &mut PgConnection,
    actor: &Actor<'_>,
    project: &ProjectRow,
    action: &str,
    crud: char,
    fields: Map<String, Value>,
) -> Result<(), RegistryError> {
    let target = Target {
        tenant_id: Some(project.tenant_id),
        id: project.id.to_string(),
        kind: "project",
        name: project.slug.clone(),
    };
    let changed: Vec<&str> = fields
        .get("fields")
        .and_then(Value::as_str)
        .map(|names| names.split(',').filter(|name| !name.is_empty()).collect())
        .unwrap_or_default();
    trail::record(conn, actor, target, action, crud, fields.clone()).await?;
    let event_type: EventType = action.parse().map_err(RegistryError::internal)?;
    let mut data = events::project(project);
    if event_type == EventType::ProjectUpdated {
        data["changed"] = serde_json::json!(changed);
    }
    events::emit(conn, event_type, Some(project.tenant_id), data).await
}

/// Creates a project in tenant `tenant_id`.
pub async fn create(
    pool: &PgPool,
    actor: &Actor<'_>,
    tenant_id: Uuid,
    project: &NewProject,
) -> Result<ProjectRow, RegistryError> {
    storage::with_retries(move || async move {
        let mut transaction = storage::begin(pool).await?;
        lifecycle::permit(&mut transaction, tenant_id, TenantWrite::Operate).await?;
        require_projects_supported(&mut transaction, tenant_id).await?;
        let row = projects::insert(&mut transaction, tenant_id, &project.slug, &project.name)
            .await
            .map_err(constraints::map)?;
        audit(
            &mut transaction,
            actor,
            &row,
            "project.created",
            'c',
            Map::new(),
        )
        .await?;
        storage::commit(transaction).await?;
        Ok(row)
    })
    .await
}

/// Renames a project or changes its slug.
pub async fn update(
    pool: &PgPool,
    actor: &Actor<'_>,
    tenant_id: Uuid,
    id: Uuid,
    changes: &ProjectChanges,
) -> Result<ProjectRow, RegistryError> {
    storage::with_retries(move || async move {
        let mut transaction = storage::begin(pool).await?;
        lifecycle::permit(&mut transaction, tenant_id, TenantWrite::Operate).await?;
        require_projects_supported(&mut transaction, tenant_id).await?;
        let row = projects::update(
            &mut transaction,
            tenant_id,
            id,
            changes.slug.as_ref(),
            changes.name.as_deref(),
        )
        .await
        .map_err(constraints::map)?
        .ok_or_else(no_such_project)?;
        let mut fields = Map::new();
        fields.insert(
            "fields".to_owned(),
            Value::from(changes.field_names().join(",")),
        );
        audit(
            &mut transaction,
            actor,
            &row,
            "project.updated",
            'u',
            fields,
        )
        .await?;
        storage::commit(transaction).await?;
        Ok(row)
    })
    .await
}

/// Archives or restores a project (idempotent; restoring needs a product supporting
/// projects).
pub async fn set_status(
    pool: &PgPool,
    actor: &Actor<'_>,
    tenant_id: Uuid,
    id: Uuid,
    status: ProjectStatus,
) -> Result<ProjectRow, RegistryError> {
    storage::with_retries(move || async move {
        let mut transaction = storage::begin(pool).await?;
        lifecycle::permit(&mut transaction, tenant_id, TenantWrite::Operate).await?;
        let current = projects::lock(&mut transaction, tenant_id, id)
            .await?
            .ok_or_else(no_such_project)?;
        if current.status == status {
            return Ok(current);
        }
        if status == ProjectStatus::Active {
            require_projects_supported(&mut transaction, tenant_id).await?;
        }
        let row = projects::set_status(&mut transaction, tenant_id, id, status)
            .await?
            .ok_or_else(no_such_project)?;
        let action = if status == ProjectStatus::Archived {
            "project.archived"
        } else {
            "project.restored"
        };
        audit(&mut transaction, actor, &row, action, 'u', Map::new()).await?;
        storage::commit(transaction).await?;
        Ok(row)
    })
    .await
}
