//! The tenant use cases: each opens one transaction for the change and its audit record.

use auth::keys::Actor;
use chrono::{DateTime, Utc};
use domain::{TenantStatus, TenantWrite, tenant};
use keyring::Keyring;
use storage::PgPool;
use storage::tenant_names;
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
        if !tenant_names::reserve(&mut transaction, tenant.id, tenant.slug.as_str()).await? {
            return Err(slug_unavailable());
        }
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

fn slug_unavailable() -> ApiError {
    ApiError::conflict_field("/slug", constraints::SLUG_UNAVAILABLE)
}

/// A change to the trial end checked against the tenant's status, as at creation: only a
/// trial has one, it lies ahead, and a trial keeps one.
fn check_trial_end(
    status: TenantStatus,
    change: Option<Option<DateTime<Utc>>>,
    now: DateTime<Utc>,
) -> Result<(), ApiError> {
    let problem = match change {
        Some(Some(at)) => tenant::trial_end(status, at, now).err(),
        Some(None) if status == TenantStatus::Trial => {
            Some("a trial tenant keeps a trial end; move it to active to end the trial".to_owned())
        }
        _ => None,
    };
    problem.map_or(Ok(()), |detail| {
        Err(ApiError::invalid_field("/trial_ends_at", detail))
    })
}

/// A merge patch: who asks decides the `write` its tenant's lifecycle must permit.
pub struct Update {
    /// The tenant.
    pub id: Uuid,
    /// The version the caller read (`If-Match`), if it sent one.
    pub expected_version: Option<i64>,
    /// The changes.
    pub patch: Patch,
    /// A tenant's own edit, or a platform decision.
    pub write: TenantWrite,
}

/// Applies a merge patch if the tenant's lifecycle permits it, its status admits the new
/// trial end, it is at the expected version and a new slug is free.
pub async fn update(
    pool: &PgPool,
    keyring: &Keyring,
    actor: &Actor<'_>,
    update: Update,
) -> Result<TenantRow, ApiError> {
    let Update {
        id,
        expected_version,
        patch,
        write,
    } = update;
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
        let current = tenants::lock(&mut transaction, id)
            .await?
            .ok_or_else(|| ApiError::not_found("no such tenant"))?;
        super::permit(current.status, write)?;
        check_trial_end(current.status, changes.trial_ends_at, Utc::now())?;
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
            UpdateOutcome::SlugUnavailable => return Err(slug_unavailable()),
            UpdateOutcome::TooManyFormerSlugs(refusal) => return Err(refusal.into()),
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

/// Releases a former slug of tenant `id` (a platform decision): it stops leading to the
/// tenant and any tenant may take it.
pub async fn release_former_slug(
    pool: &PgPool,
    actor: &Actor<'_>,
    tenant: &TenantRow,
    slug: &str,
) -> Result<(), ApiError> {
    super::permit(tenant.status, TenantWrite::Administer)?;
    let mut transaction = pool.begin().await?;
    if !tenant_names::release(&mut transaction, tenant.id, slug).await? {
        return Err(ApiError::not_found("the tenant has no such former slug"));
    }
    let fields = field_map(&[("slug", slug.to_owned())]);
    audit(
        &mut transaction,
        actor,
        tenant,
        "tenant.former_slug_released",
        'd',
        fields,
    )
    .await?;
    transaction.commit().await?;
    Ok(())
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
