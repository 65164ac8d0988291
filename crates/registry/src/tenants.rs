//! The tenant use cases: create, update, transition, archive, purge and releasing a former
//! slug; each opens one transaction for the change and its audit record.

use chrono::{DateTime, Utc};
use domain::product::Subscription;
use domain::{TenantStatus, TenantWrite, tenant};
use keyring::Keyring;
use storage::PgPool;
use storage::tenant_names;
use storage::tenants::{self, NewTenant, TenantChanges, TenantRow, UpdateOutcome};
use uuid::Uuid;

use crate::trail::{self, Recorded, Target};
use crate::{Actor, RegistryError, constraints, events, lifecycle, provisioning};
use domain::event::EventType;

/// A tenant to create, every field validated.
pub struct CreateTenant {
    /// The row to insert (its contact email still in clear, below).
    pub tenant: NewTenant,
    /// The contact email, to be encrypted with the tenant's id.
    pub contact_email: Option<String>,
    /// The products it starts subscribed to (each checked against its product), their
    /// plans queued with it.
    pub products: Vec<(String, Subscription)>,
}

/// A validated JSON merge patch: the changes, and the contact email change still in clear.
pub struct Patch {
    /// Everything but the contact email.
    pub changes: TenantChanges,
    /// `Some(None)` clears it, `Some(Some(email))` sets it.
    pub contact_email: Option<Option<String>>,
}

/// A move along the lifecycle.
pub struct Transition {
    /// The target status.
    pub to: TenantStatus,
    /// Why, for the record.
    pub reason: String,
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

/// Where a tenant's contact email is bound when encrypted.
pub fn contact_email_context(id: Uuid) -> String {
    format!("tenants.contact_email:{id}")
}

fn seal_email(keyring: &Keyring, id: Uuid, email: &str) -> Result<Vec<u8>, RegistryError> {
    keyring
        .seal_str(&contact_email_context(id), email)
        .map_err(RegistryError::internal)
}

async fn audit(
    conn: &mut storage::PgConnection,
    recorded: &Recorded<'_>,
    tenant: &TenantRow,
    action: &str,
    crud: char,
    fields: serde_json::Map<String, serde_json::Value>,
) -> Result<(), RegistryError> {
    let target = Target {
        tenant_id: Some(tenant.id),
        id: tenant.id.to_string(),
        kind: "tenant",
        name: tenant.slug.clone(),
    };
    trail::record_as(conn, recorded, target, action, crud, fields).await
}

fn field_map(pairs: &[(&str, String)]) -> serde_json::Map<String, serde_json::Value> {
    pairs
        .iter()
        .map(|(name, value)| ((*name).to_owned(), serde_json::Value::from(value.clone())))
        .collect()
}

fn no_such_tenant() -> RegistryError {
    RegistryError::not_found("no such tenant")
}

/// Creates a tenant and its `tenant.created` record.
pub async fn create(
    pool: &PgPool,
    keyring: &Keyring,
    actor: &Actor<'_>,
    request: CreateTenant,
) -> Result<TenantRow, RegistryError> {
    let mut tenant = request.tenant;
    if let Some(email) = &request.contact_email {
        tenant.contact_email_encrypted = Some(seal_email(keyring, tenant.id, email)?);
    }
    let tenant = &tenant;
    let products = &request.products;
    let row = storage::with_retries(move || async move {
        let mut transaction = storage::begin(pool).await?;
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
        audit(
            &mut transaction,
            &actor.into(),
            &row,
            "tenant.created",
            'c',
            fields,
        )
        .await?;
        let data = events::tenant(&row);
        events::emit(
            &mut transaction,
            EventType::TenantCreated,
            Some(row.id),
            data,
        )
        .await?;
        for (product, subscription) in products {
            crate::products::subscribe_in(
                &mut transaction,
                actor,
                row.id,
                product,
                TenantWrite::Administer,
                subscription,
            )
            .await?;
        }
        let row = if products.is_empty() {
            row
        } else {
            tenants::get_on(&mut transaction, row.id)
                .await?
                .ok_or_else(|| RegistryError::internal("a tenant vanished in its own creation"))?
        };
        storage::commit(transaction).await?;
        Ok::<_, RegistryError>(row)
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

fn slug_unavailable() -> RegistryError {
    RegistryError::conflict_field("/slug", constraints::SLUG_UNAVAILABLE)
}

/// A change to the trial end checked against the tenant's status, as at creation: only a
/// trial has one, it lies ahead, and a trial keeps one.
fn check_trial_end(
    status: TenantStatus,
    change: Option<Option<DateTime<Utc>>>,
    now: DateTime<Utc>,
) -> Result<(), RegistryError> {
    let problem = match change {
        Some(Some(at)) => tenant::trial_end(status, at, now).err(),
        Some(None) if status == TenantStatus::Trial => {
            Some("a trial tenant keeps a trial end; move it to active to end the trial".to_owned())
        }
        _ => None,
    };
    problem.map_or(Ok(()), |detail| {
        Err(RegistryError::invalid_field("/trial_ends_at", detail))
    })
}

fn version_mismatch(current: i64) -> RegistryError {
    RegistryError::PreconditionFailed(format!(
        "the tenant is at version \"{current}\"; read it again and retry"
    ))
}

/// Applies a merge patch if the tenant's lifecycle permits it, its status admits the new
/// trial end, it is at the expected version and a new slug is free.
pub async fn update(
    pool: &PgPool,
    keyring: &Keyring,
    actor: &Actor<'_>,
    update: Update,
) -> Result<TenantRow, RegistryError> {
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
        let mut transaction = storage::begin(pool).await?;
        let current = tenants::lock(&mut transaction, id)
            .await?
            .ok_or_else(no_such_tenant)?;
        current.status.permits(write)?;
        check_trial_end(current.status, changes.trial_ends_at, Utc::now())?;
        let row = match tenants::update(&mut transaction, id, expected_version, changes)
            .await
            .map_err(constraints::map)?
        {
            UpdateOutcome::Updated(row) => *row,
            UpdateOutcome::NotFound => return Err(no_such_tenant()),
            UpdateOutcome::VersionMismatch { current } => return Err(version_mismatch(current)),
            UpdateOutcome::SlugUnavailable => return Err(slug_unavailable()),
            UpdateOutcome::TooManyFormerSlugs(refusal) => return Err(refusal.into()),
        };
        let fields = field_map(&[("fields", changes.field_names().join(","))]);
        audit(
            &mut transaction,
            &actor.into(),
            &row,
            "tenant.updated",
            'u',
            fields,
        )
        .await?;
        announce_update(&mut transaction, &current, &row).await?;
        storage::commit(transaction).await?;
        Ok(row)
    })
    .await
}

/// `tenant.updated` with what changed and its previous values (nothing when nothing
/// changed), and `tenant.entitlements_changed` when the plan did.
async fn announce_update(
    conn: &mut storage::PgConnection,
    before: &TenantRow,
    after: &TenantRow,
) -> Result<(), RegistryError> {
    let (changed, previous) = events::tenant_changes(before, after);
    if changed.is_empty() {
        return Ok(());
    }
    let plan_changed = changed.iter().any(|field| field == "plan");
    let data = serde_json::json!({
        "tenant": events::tenant(after),
        "changed": changed,
        "previous": previous,
    });
    events::emit(conn, EventType::TenantUpdated, Some(after.id), data).await?;
    if plan_changed {
        let data = events::entitlements_changed(after.id, "plan", None);
        events::emit(
            conn,
            EventType::TenantEntitlementsChanged,
            Some(after.id),
            data,
        )
        .await?;
    }
    Ok(())
}

/// Moves the locked tenant `current` to `to`, recording who, when and why.
pub(crate) async fn move_locked(
    conn: &mut storage::PgConnection,
    actor: &Recorded<'_>,
    current: &TenantRow,
    request: &Transition,
) -> Result<TenantRow, RegistryError> {
    let to = current.status.transition_to(request.to)?;
    let purging = if current.status == TenantStatus::Archived {
        storage::operations::running_purge(conn, current.id).await?
    } else {
        None
    };
    if let Some(running) = purging {
        return Err(RegistryError::conflict(format!(
            "the tenant is being purged (operation {running}); it can no longer be restored"
        )));
    }
    let row = tenants::record_transition(
        conn,
        current.id,
        current.status,
        to,
        &request.reason,
        &actor.actor_id,
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
    audit(conn, actor, &row, action, 'u', fields).await?;
    if to == TenantStatus::Archived {
        crate::api_keys::revoke_all_of_archived_tenant(conn, actor, row.id).await?;
    } else if current.status == TenantStatus::Archived {
        provisioning::queue_enabled_plans(conn, row.id).await?;
    }
    let from = current.status.to_string();
    let data = events::status_changed(&row, &from, &request.reason);
    events::emit(conn, EventType::TenantStatusChanged, Some(row.id), data).await?;
    let milestone = match (current.status, to) {
        (_, TenantStatus::Archived) => Some(EventType::TenantArchived),
        (TenantStatus::Archived, _) => Some(EventType::TenantRestored),
        _ => None,
    };
    if let Some(milestone) = milestone {
        let data = events::tenant(&row);
        events::emit(conn, milestone, Some(row.id), data).await?;
    }
    Ok(row)
}

/// Moves a tenant along its lifecycle, recording who, when and why.
pub async fn transition(
    pool: &PgPool,
    actor: &Actor<'_>,
    id: Uuid,
    request: Transition,
) -> Result<TenantRow, RegistryError> {
    let request = &request;
    storage::with_retries(move || async move {
        let mut transaction = storage::begin(pool).await?;
        let current = tenants::lock(&mut transaction, id)
            .await?
            .ok_or_else(no_such_tenant)?;
        let row = move_locked(&mut transaction, &actor.into(), &current, request).await?;
        storage::commit(transaction).await?;
        Ok(row)
    })
    .await
}

/// Archives a tenant (soft delete) if it is at the expected version; archiving an archived
/// tenant changes nothing.
pub async fn archive(
    pool: &PgPool,
    actor: &Actor<'_>,
    id: Uuid,
    expected_version: Option<i64>,
) -> Result<TenantRow, RegistryError> {
    let request = &Transition {
        to: TenantStatus::Archived,
        reason: "archived with DELETE".to_owned(),
    };
    storage::with_retries(move || async move {
        let mut transaction = storage::begin(pool).await?;
        let current = tenants::lock(&mut transaction, id)
            .await?
            .ok_or_else(no_such_tenant)?;
        if current.status == TenantStatus::Archived {
            return Ok(current);
        }
        if expected_version.is_some_and(|expected| expected != current.version) {
            return Err(version_mismatch(current.version));
        }
        let row = move_locked(&mut transaction, &actor.into(), &current, request).await?;
        storage::commit(transaction).await?;
        Ok(row)
    })
    .await
}

/// Releases a former slug of tenant `id` (a platform decision): it stops leading to the
/// tenant and any tenant may take it.
pub async fn release_former_slug(
    pool: &PgPool,
    actor: &Actor<'_>,
    id: Uuid,
    slug: &str,
) -> Result<(), RegistryError> {
    storage::with_retries(move || async move {
        let mut transaction = storage::begin(pool).await?;
        let tenant = lifecycle::permit(&mut transaction, id, TenantWrite::Administer).await?;
        if !tenant_names::release(&mut transaction, id, slug).await? {
            return Err(RegistryError::not_found(
                "the tenant has no such former slug",
            ));
        }
        let fields = field_map(&[("slug", slug.to_owned())]);
        audit(
            &mut transaction,
            &actor.into(),
            &tenant,
            "tenant.former_slug_released",
            'd',
            fields,
        )
        .await?;
        storage::commit(transaction).await?;
        Ok(())
    })
    .await
}

/// Purges archived tenant `id` as a long-running operation (answered, and readable at
/// `GET /v1/operations/{id}`): each product's data is torn down first (hook, backup, drop),
/// then the tenant and everything it owns are deleted; its audit trail and backups stay. A
/// tenant with nothing to tear down is deleted at once, its operation already succeeded. A
/// stale `expected_version` (the caller's If-Match) refuses it: a purge cannot be undone.
pub async fn purge(
    pool: &PgPool,
    actor: &Actor<'_>,
    id: Uuid,
    expected_version: Option<i64>,
) -> Result<storage::operations::OperationRow, RegistryError> {
    let operation_id = Uuid::new_v4();
    storage::with_retries(move || async move {
        let mut transaction = storage::begin(pool).await?;
        let current = tenants::lock(&mut transaction, id)
            .await?
            .ok_or_else(no_such_tenant)?;
        if expected_version.is_some_and(|expected| expected != current.version) {
            return Err(version_mismatch(current.version));
        }
        if current.status != TenantStatus::Archived {
            return Err(RegistryError::conflict(format!(
                "only an archived tenant can be purged; this one is {}",
                current.status
            )));
        }
        if let Some(running) = storage::operations::running_purge(&mut transaction, id).await? {
            return Err(RegistryError::conflict(format!(
                "the tenant is being purged already (operation {running})"
            )));
        }
        let recorded = Recorded::from(actor);
        let queued =
            provisioning::queue_purge(&mut transaction, &recorded.actor_id, id, operation_id)
                .await?;
        if queued.is_empty() {
            purge_locked(&mut transaction, &recorded, &current, Utc::now()).await?;
            let result = serde_json::json!({"purged": true, "tenant_id": id});
            storage::operations::end_if_settled(
                &mut transaction,
                operation_id,
                &result,
                Utc::now(),
            )
            .await?;
        }
        let operation = storage::operations::get(&mut transaction, operation_id)
            .await?
            .ok_or_else(|| RegistryError::internal("the purge operation vanished"))?;
        storage::commit(transaction).await?;
        Ok(operation)
    })
    .await
}

/// Deletes tenant `current` (locked, archived) and everything it owns, with its audit record
/// and `tenant.purged`, in the caller's transaction.
pub(crate) async fn purge_locked(
    conn: &mut storage::PgConnection,
    recorded: &Recorded<'_>,
    current: &TenantRow,
    now: DateTime<Utc>,
) -> Result<(), RegistryError> {
    let fields = field_map(&[("slug", current.slug.clone())]);
    audit(conn, recorded, current, "tenant.purged", 'd', fields).await?;
    let data = events::purged(current, now);
    events::emit(conn, EventType::TenantPurged, Some(current.id), data).await?;
    tenants::delete(conn, current.id).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn rejected(result: Result<(), RegistryError>) -> Vec<String> {
        match result {
            Err(RegistryError::Invalid(problems)) => problems
                .into_iter()
                .map(|problem| problem.pointer)
                .collect(),
            other => panic!("expected an invalid field, got {other:?}"),
        }
    }

    #[test]
    fn a_trial_keeps_a_trial_end_and_only_a_trial_gets_one() {
        let now = Utc::now();
        let ahead = Some(Some(now + Duration::days(3)));
        assert!(check_trial_end(TenantStatus::Trial, ahead, now).is_ok());
        assert!(check_trial_end(TenantStatus::Active, None, now).is_ok());
        assert!(check_trial_end(TenantStatus::Active, Some(None), now).is_ok());
        assert_eq!(
            rejected(check_trial_end(TenantStatus::Trial, Some(None), now)),
            ["/trial_ends_at"]
        );
        assert_eq!(
            rejected(check_trial_end(TenantStatus::Active, ahead, now)),
            ["/trial_ends_at"]
        );
        assert_eq!(
            rejected(check_trial_end(
                TenantStatus::Trial,
                Some(Some(now - Duration::days(1))),
                now
            )),
            ["/trial_ends_at"]
        );
    }
}
