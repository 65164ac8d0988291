//! The tenant use cases: each opens one transaction for the change and its audit record.

use auth::keys::Actor;
use domain::TenantStatus;
use keyring::Keyring;
use storage::PgPool;
use storage::tenants::{self, TenantChanges, TenantRow, UpdateOutcome};
use uuid::Uuid;

use super::input::{CreateTenant, Patch, Transition};
use crate::constraints;
use crate::problem::ApiError;
use crate::trail::{self, Target};

/// Where a tenant's contact email is bound when encrypted.
pub fn contact_email_context(id: Uuid) -> String {
    format!("tenants.contact_email:{id}")
}

fn seal_email(keyring: &Keyring, id: Uuid, email: &str) -> Result<Vec<u8>, ApiError> {
    keyring
        .seal_str(&contact_email_context(id), email)
        .map_err(ApiError::internal)
}

async fn audit(
    conn: &mut storage::PgConnection,
    actor: &Actor<'_>,
    tenant: &TenantRow,
    action: &str,
    crud: char,
    fields: serde_json::Map<String, serde_json::Value>,
) -> Result<(), ApiError> {
    let target = Target {
        tenant_id: Some(tenant.id),
        id: tenant.id.to_string(),
        kind: "tenant",
        name: tenant.slug.clone(),
    };
    trail::record(conn, actor, target, action, crud, fields).await
}

fn field_map(pairs: &[(&str, String)]) -> serde_json::Map<String, serde_json::Value> {
    pairs
        .iter()
        .map(|(name, value)| ((*name).to_owned(), serde_json::Value::from(value.clone())))
        .collect()
}

/// Creates a tenant and its `tenant.created` record.
pub async fn create(
    pool: &PgPool,
    keyring: &Keyring,
    actor: &Actor<'_>,
    request: CreateTenant,
) -> Result<TenantRow, ApiError> {
    let mut tenant = request.tenant;
    if let Some(email) = &request.contact_email {
        tenant.contact_email_encrypted = Some(seal_email(keyring, tenant.id, email)?);
    }
    let tenant = &tenant;
    let row = storage::with_retries(move || async move {
        let mut transaction = pool.begin().await?;
        let row = tenants::insert(&mut transaction, tenant)
            .await
            .map_err(constraints::map)?;
        let fields = field_map(&[
            ("status", row.status.to_string()),
            ("kind", row.kind.to_string()),
            ("plan", row.plan.clone()),
        ]);
        audit(&mut transaction, actor, &row, "tenant.created", 'c', fields).await?;
        transaction.commit().await?;
        Ok::<_, ApiError>(row)
    })
    .await?;
    tracing::info!(
        tenant_id = %row.id,
        slug = %row.slug,
        contact = %request.contact_email.as_deref().map(domain::tenant::mask_email).unwrap_or_default(),
        "tenant created"
    );
    Ok(row)
}

/// Applies a merge patch if the tenant is at `expected_version`.
pub async fn update(
    pool: &PgPool,
    keyring: &Keyring,
    actor: &Actor<'_>,
    id: Uuid,
    expected_version: Option<i64>,
    patch: Patch,
) -> Result<TenantRow, ApiError> {
    let mut changes: TenantChanges = patch.changes;
    if let Some(email) = patch.contact_email {
        changes.contact_email_encrypted = Some(
            email
                .map(|email| seal_email(keyring, id, &email))
                .transpose()?,
        );
    }
    let changes = &changes;
    storage::with_retries(move || async move {
        let mut transaction = pool.begin().await?;
        let row = match tenants::update(&mut transaction, id, expected_version, changes)
            .await
            .map_err(constraints::map)?
        {
            UpdateOutcome::Updated(row) => *row,
            UpdateOutcome::NotFound => return Err(ApiError::not_found("no such tenant")),
            UpdateOutcome::VersionMismatch { current } => {
                return Err(ApiError::precondition_failed(format!(
                    "the tenant is at version \"{current}\"; read it again and retry"
                )));
            }
        };
        let fields = field_map(&[("fields", changes.field_names().join(","))]);
        audit(&mut transaction, actor, &row, "tenant.updated", 'u', fields).await?;
        transaction.commit().await?;
        Ok(row)
    })
    .await
}

/// Moves a tenant along its lifecycle, recording who, when and why.
pub async fn transition(
    pool: &PgPool,
    actor: &Actor<'_>,
    id: Uuid,
    request: Transition,
) -> Result<TenantRow, ApiError> {
    let request = &request;
    storage::with_retries(move || async move {
        let mut transaction = pool.begin().await?;
        let current = tenants::lock(&mut transaction, id)
            .await?
            .ok_or_else(|| ApiError::not_found("no such tenant"))?;
        let to = current.status.transition_to(request.to).map_err(|error| {
            ApiError::illegal_transition(
                error.to_string(),
                error.allowed.iter().map(ToString::to_string).collect(),
            )
        })?;
        let row = tenants::record_transition(
            &mut transaction,
            id,
            current.status,
            to,
            &request.reason,
            &actor.principal.actor_id(),
        )
        .await?;
        let action = if to == TenantStatus::Archived {
            "tenant.archived"
        } else {
            "tenant.transitioned"
        };
        let fields = field_map(&[
            ("from", current.status.to_string()),
            ("to", to.to_string()),
            ("reason", request.reason.clone()),
        ]);
        audit(&mut transaction, actor, &row, action, 'u', fields).await?;
        transaction.commit().await?;

        Ok(row)
    })
    .await
}

/// Archives a tenant (soft delete); archiving an archived tenant changes nothing.
pub async fn archive(
    pool: &PgPool,
    actor: &Actor<'_>,
    id: Uuid,
    expected_version: Option<i64>,
) -> Result<TenantRow, ApiError> {
    let current = tenants::get(pool, id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such tenant"))?;
    if current.status == TenantStatus::Archived {
        return Ok(current);
    }
    if expected_version.is_some_and(|expected| expected != current.version) {
        return Err(ApiError::precondition_failed(format!(
            "the tenant is at version \"{}\"; read it again and retry",
            current.version
        )));
    }
    transition(
        pool,
        actor,
        id,
        Transition {
            to: TenantStatus::Archived,
            reason: "archived with DELETE".to_owned(),
        },
    )
    .await
}

/// Deletes an archived tenant and everything it owns; its audit trail stays, unlinked.
pub async fn purge(pool: &PgPool, actor: &Actor<'_>, id: Uuid) -> Result<(), ApiError> {
    storage::with_retries(move || async move {
        let mut transaction = pool.begin().await?;
        let current = tenants::lock(&mut transaction, id)
            .await?
            .ok_or_else(|| ApiError::not_found("no such tenant"))?;
        if current.status != TenantStatus::Archived {
            return Err(ApiError::conflict(format!(
                "only an archived tenant can be purged; this one is {}",
                current.status
            )));
        }
        let fields = field_map(&[("slug", current.slug.clone())]);
        audit(
            &mut transaction,
            actor,
            &current,
            "tenant.purged",
            'd',
            fields,
        )
        .await?;
        tenants::delete(&mut transaction, id).await?;
        transaction.commit().await?;

        Ok(())
    })
    .await
}
