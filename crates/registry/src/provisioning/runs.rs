//! The runner's records: leasing due runs, each finished step with what it made (in the
//! registry: roles, a backup), the end of a run with its event and audit record, a failed
//! attempt with its backoff, and the operation a run is part of. Each in one transaction,
//! guarded by the run's lease and generation, so a runner that lost its run records nothing.

use chrono::{DateTime, TimeDelta, Utc};
use domain::event::EventType;
use domain::provisioning::{Plan, RoleSpec, retry_delay};
use serde_json::{Map, Value, json};
use storage::backups::{self, BackupRow};
use storage::operations;
use storage::provisioning::{self as store, Failure, Held, RunRow, StepDone};
use storage::roles::{self, NewRole};
use storage::{PgConnection, PgPool};
use uuid::Uuid;

use super::{ACTOR_ID, Goal, audit_target, plan_of};
use crate::trail::{self, Recorded};
use crate::{RegistryError, events, tenants};

/// A leased run, read for its runner.
#[derive(Debug, Clone)]
pub struct Run {
    /// The run as stored when leased.
    pub row: RunRow,
    /// What it is for.
    pub goal: Goal,
    /// The plan it runs.
    pub plan: Plan,
    /// The tenant's slug.
    pub tenant_slug: String,
    /// The tenant's name.
    pub tenant_name: String,
}

impl Run {
    fn held(&self) -> Held<'_> {
        Held {
            tenant_id: self.row.tenant_id,
            product_id: &self.row.product_id,
            token: self.row.lease_token.unwrap_or_default(),
            generation: self.row.generation,
        }
    }
}

fn system() -> Recorded<'static> {
    Recorded {
        actor_id: ACTOR_ID.to_owned(),
        source_ip: None,
    }
}

/// Leases up to `limit` due runs until `now + lease`, never two of one tenant at once.
pub async fn claim(
    pool: &PgPool,
    now: DateTime<Utc>,
    lease: TimeDelta,
    limit: i64,
) -> Result<Vec<Run>, RegistryError> {
    let rows = storage::with_retries(move || async move {
        let mut transaction = storage::begin(pool).await?;
        let rows = store::claim(&mut transaction, now, lease, limit).await?;
        storage::commit(transaction).await?;
        Ok::<_, RegistryError>(rows)
    })
    .await?;
    let mut runs = Vec::with_capacity(rows.len());
    for row in rows {
        let tenant = storage::tenants::get(pool, row.tenant_id).await?;
        let (tenant_slug, tenant_name) = tenant
            .map(|tenant| (tenant.slug, tenant.name))
            .unwrap_or_default();
        runs.push(Run {
            goal: Goal::parse(&row.goal)?,
            plan: plan_of(&row)?,
            row,
            tenant_slug,
            tenant_name,
        });
    }
    Ok(runs)
}

/// Extends `run`'s lease to `until`; `false` when the run is no longer the runner's.
pub async fn renew(pool: &PgPool, run: &Run, until: DateTime<Utc>) -> Result<bool, RegistryError> {
    let mut conn = pool.acquire().await.map_err(RegistryError::from)?;
    Ok(store::renew(&mut conn, run.held(), until).await?)
}

/// What a finished step made in the registry, recorded with it.
#[derive(Debug, Clone)]
pub enum Effect {
    /// Nothing in the registry (the step worked on the product's cluster).
    Nothing,
    /// The plan's default roles, made in the tenant.
    CreateRoles(Vec<RoleSpec>),
    /// The plan's default roles, removed.
    RemoveRoles,
    /// A backup taken.
    Backup(Box<BackupRow>),
}

/// Records that `run` finished step `step`, with what it left (`done`) and made (`effect`);
/// `false` when the run is no longer the runner's (nothing is recorded).
pub async fn step_done(
    pool: &PgPool,
    run: &Run,
    step: i32,
    done: StepDone,
    effect: Effect,
) -> Result<bool, RegistryError> {
    let (done, effect) = (&done, &effect);
    storage::with_retries(move || async move {
        let mut transaction = storage::begin(pool).await?;
        if !store::step_done(&mut transaction, run.held(), step, done).await? {
            return Ok(false);
        }
        let (tenant_id, product_id) = (run.row.tenant_id, run.row.product_id.as_str());
        let recorded = system();
        match effect {
            Effect::Nothing => {}
            Effect::CreateRoles(specs) => {
                let new: Vec<NewRole<'_>> = specs
                    .iter()
                    .map(|spec| NewRole {
                        name: &spec.name,
                        description: &spec.description,
                        permissions: &spec.permissions,
                    })
                    .collect();
                let changed =
                    roles::upsert_defaults(&mut transaction, tenant_id, product_id, &new).await?;
                if !changed.is_empty() {
                    let names: Vec<Value> = changed.into_iter().map(Value::from).collect();
                    let fields = Map::from_iter([("roles".to_owned(), Value::from(names))]);
                    let target = audit_target(tenant_id, product_id);
                    let action = "tenant_roles.defaults_set";
                    trail::record_as(&mut transaction, &recorded, target, action, 'c', fields)
                        .await?;
                }
            }
            Effect::RemoveRoles => {
                let removed =
                    roles::remove_defaults(&mut transaction, tenant_id, product_id).await?;
                if removed > 0 {
                    let fields =
                        Map::from_iter([("removed".to_owned(), Value::from(removed.to_string()))]);
                    let target = audit_target(tenant_id, product_id);
                    let action = "tenant_roles.defaults_removed";
                    trail::record_as(&mut transaction, &recorded, target, action, 'd', fields)
                        .await?;
                }
            }
            Effect::Backup(backup) => {
                backups::insert(&mut transaction, backup).await?;
                let fields = Map::from_iter([
                    ("backup_id".to_owned(), Value::from(backup.id.to_string())),
                    ("sha256".to_owned(), Value::from(backup.sha256.clone())),
                ]);
                let target = audit_target(tenant_id, product_id);
                trail::record_as(
                    &mut transaction,
                    &recorded,
                    target,
                    "tenant_backup.created",
                    'c',
                    fields,
                )
                .await?;
            }
        }
        storage::commit(transaction).await?;
        Ok::<_, RegistryError>(true)
    })
    .await
}

/// Parks `run` on its hook until `until`, when a missing report counts as a failure.
pub async fn wait_for_report(
    pool: &PgPool,
    run: &Run,
    until: DateTime<Utc>,
) -> Result<bool, RegistryError> {
    let mut conn = pool.acquire().await.map_err(RegistryError::from)?;
    Ok(store::wait_for_report(&mut conn, run.held(), until).await?)
}

/// Lets `run`'s lease go without recording anything (the runner is stopping).
pub async fn release(pool: &PgPool, run: &Run) -> Result<(), RegistryError> {
    let mut conn = pool.acquire().await.map_err(RegistryError::from)?;
    Ok(store::release(&mut conn, run.held()).await?)
}

/// Ends `run`: `ready` (`tenant.provisioned` for a plan run) or `deprovisioned`
/// (`tenant.deprovisioned`), with its operation's item; a purge whose last teardown this was
/// deletes the tenant in the same transaction. `false` when the run is no longer the
/// runner's.
pub async fn finish(pool: &PgPool, run: &Run, now: DateTime<Utc>) -> Result<bool, RegistryError> {
    storage::with_retries(move || async move {
        let mut transaction = storage::begin(pool).await?;
        let tenant_id = run.row.tenant_id;
        let migrates = run.goal != Goal::Deprovision && run.plan.migrations_step().is_some();
        let latest = if migrates {
            storage::product_migrations::latest_version_shared(
                &mut transaction,
                &run.row.product_id,
            )
            .await?
        } else {
            None
        };
        let Some(tenant) = storage::tenants::lock(&mut transaction, tenant_id).await? else {
            return Ok(false);
        };
        let Some(current) = store::lock(&mut transaction, tenant_id, &run.row.product_id).await?
        else {
            return Ok(false);
        };
        let state = if run.goal == Goal::Deprovision {
            "deprovisioned"
        } else {
            "ready"
        };
        if !store::finish(&mut transaction, run.held(), state, now).await? {
            return Ok(false);
        }
        let data = json!({
            "tenant": {"id": tenant.id, "slug": tenant.slug},
            "product": current.product_id,
            "isolation": current.isolation,
            "object_name": current.object_name,
            "migration_version": current.migration_version,
            "roles_created": current.roles_created_at.is_some(),
            "backup_id": current.backup_id,
        });
        let recorded = system();
        let target = audit_target(tenant_id, &current.product_id);
        let announced = match run.goal {
            Goal::Provision => Some((
                EventType::TenantProvisioned,
                "tenant_provisioning.ready",
                'u',
            )),
            Goal::Deprovision => Some((
                EventType::TenantDeprovisioned,
                "tenant_provisioning.deprovisioned",
                'd',
            )),
            Goal::Migrate => None,
        };
        if let Some((event_type, action, crud)) = announced {
            events::emit(&mut transaction, event_type, Some(tenant_id), data).await?;
            trail::record_as(
                &mut transaction,
                &recorded,
                target,
                action,
                crud,
                Map::new(),
            )
            .await?;
        }
        if let Some(operation_id) = current.operation_id {
            operations::item_ended(
                &mut transaction,
                operation_id,
                tenant_id,
                &current.product_id,
                None,
            )
            .await?;
            settle(&mut transaction, operation_id, &tenant, now).await?;
        }
        if latest > current.migration_version {
            migrate_again(&mut transaction, &current).await?;
        }
        storage::commit(transaction).await?;
        Ok::<_, RegistryError>(true)
    })
    .await
}

/// Queues a migrations-only run for `current`, which ended at an older version than the
/// product's latest: migrations registered while it ran (after its migrations step, or
/// before it was ready, so the fleet migration passed it by) still reach it.
async fn migrate_again(conn: &mut PgConnection, current: &RunRow) -> Result<(), RegistryError> {
    store::queue(
        conn,
        &store::Queued {
            tenant_id: current.tenant_id,
            product_id: &current.product_id,
            goal: Goal::Migrate.as_str(),
            state: domain::provisioning::ProvisioningState::Running.as_str(),
            plan: None,
            step: 0,
            operation_id: None,
        },
    )
    .await?;
    Ok(())
}

/// Ends operation `operation_id` if its items are all settled; a purge whose teardowns all
/// succeeded deletes its tenant here.
async fn settle(
    conn: &mut PgConnection,
    operation_id: Uuid,
    tenant: &storage::tenants::TenantRow,
    now: DateTime<Utc>,
) -> Result<(), RegistryError> {
    if !operations::lock(conn, operation_id).await? {
        return Ok(());
    }
    let Some(operation) = operations::get(conn, operation_id).await? else {
        return Ok(());
    };
    if operation.state != "running" || operation.succeeded + operation.failed < operation.total {
        return Ok(());
    }
    let result = match operation.kind.as_str() {
        "tenant.purge" if operation.failed == 0 => {
            tenants::purge_locked(conn, &system(), tenant, now).await?;
            json!({"purged": true, "tenant_id": tenant.id})
        }
        "tenant.purge" => json!({"purged": false, "tenant_id": tenant.id}),
        _ => json!({"migrated": operation.succeeded, "failed": operation.failed}),
    };
    operations::end_if_settled(conn, operation_id, &result, now).await?;
    Ok(())
}

/// Records a failed attempt of `run` at step `step_kind` with `error`: retried after a
/// backoff from `retry_base`, or `failed` after the plan's last attempt, with
/// `tenant.provisioning_failed` and its operation's item. `false` when the run is no longer
/// the runner's.
pub async fn fail(
    pool: &PgPool,
    run: &Run,
    step_kind: &str,
    error: &str,
    now: DateTime<Utc>,
    retry_base: TimeDelta,
) -> Result<bool, RegistryError> {
    storage::with_retries(move || async move {
        let mut transaction = storage::begin(pool).await?;
        let tenant_id = run.row.tenant_id;
        let Some(tenant) = storage::tenants::share_lock(&mut transaction, tenant_id).await? else {
            return Ok(false);
        };
        let attempts = u32::try_from(run.row.attempts).unwrap_or(0) + 1;
        let last = attempts >= run.plan.max_attempts;
        let failure = Failure {
            error,
            next_attempt_at: now + retry_delay(retry_base, attempts),
            last,
            now,
        };
        if store::fail(&mut transaction, run.held(), failure)
            .await?
            .is_none()
        {
            return Ok(false);
        }
        if last {
            gave_up(
                &mut transaction,
                &run.row,
                &tenant,
                step_kind,
                error,
                attempts,
                now,
            )
            .await?;
        }
        storage::commit(transaction).await?;
        Ok::<_, RegistryError>(true)
    })
    .await
}

/// A run's last attempt failed: `tenant.provisioning_failed` with its audit record, and the
/// run's operation item failed (the operation ended if that was its last item).
pub(crate) async fn gave_up(
    conn: &mut PgConnection,
    row: &RunRow,
    tenant: &storage::tenants::TenantRow,
    step_kind: &str,
    error: &str,
    attempts: u32,
    now: DateTime<Utc>,
) -> Result<(), RegistryError> {
    announce_failure(conn, row, step_kind, error, attempts).await?;
    if let Some(operation_id) = row.operation_id {
        operations::item_ended(
            conn,
            operation_id,
            row.tenant_id,
            &row.product_id,
            Some(error),
        )
        .await?;
        settle(conn, operation_id, tenant, now).await?;
    }
    Ok(())
}

/// `tenant.provisioning_failed` and its audit record, for a run whose last attempt failed.
async fn announce_failure(
    conn: &mut PgConnection,
    row: &RunRow,
    step_kind: &str,
    error: &str,
    attempts: u32,
) -> Result<(), RegistryError> {
    let data = json!({
        "tenant_id": row.tenant_id,
        "product": row.product_id,
        "goal": row.goal,
        "step": step_kind,
        "error": error,
        "attempts": attempts,
    });
    events::emit(
        conn,
        EventType::TenantProvisioningFailed,
        Some(row.tenant_id),
        data,
    )
    .await?;
    let fields = Map::from_iter([
        ("step".to_owned(), Value::from(step_kind)),
        ("error".to_owned(), Value::from(error)),
    ]);
    let target = audit_target(row.tenant_id, &row.product_id);
    trail::record_as(
        conn,
        &system(),
        target,
        "tenant_provisioning.failed",
        'u',
        fields,
    )
    .await
}

/// Runs with work to do, for the queue-depth gauge.
pub async fn queue_depth(pool: &PgPool) -> Result<i64, RegistryError> {
    let mut conn = pool.acquire().await.map_err(RegistryError::from)?;
    Ok(store::queue_depth(&mut conn).await?)
}
