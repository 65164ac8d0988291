//! Provisioning: queueing a product's plan for a tenant when it subscribes and its teardown
//! when it leaves or is purged, the state of each (tenant, product), retrying what failed,
//! and the product's report on its hook. The runner's records of each step are in [`runs`];
//! the steps themselves run in the `provisioner` crate.

pub mod runs;

use chrono::{DateTime, Utc};
use domain::TenantWrite;
use domain::product::Manifest;
use domain::provisioning::{Plan, ProvisioningState};
use serde_json::{Map, Value, json};
use storage::backups::{self, BackupRow};
use storage::operations::{self, NewOperation};
use storage::provisioning::{self as store, Failure, Queued, RunRow};
use storage::roles::{self, RoleRow};
use storage::{PgConnection, PgPool};
use uuid::Uuid;

use crate::trail::{self, Target};
use crate::{Actor, RegistryError};

/// Who the audit records of the runner's own changes name as having acted.
pub const ACTOR_ID: &str = "system:provisioning";

/// What a run is for, as stored in `goal`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Goal {
    /// Run the plan.
    Provision,
    /// Undo it: hook, backup, drop, roles.
    Deprovision,
    /// Only the migrations step (a fleet migration).
    Migrate,
}

impl Goal {
    /// The goal as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Goal::Provision => "provision",
            Goal::Deprovision => "deprovision",
            Goal::Migrate => "migrate",
        }
    }

    fn parse(stored: &str) -> Result<Self, RegistryError> {
        match stored {
            "provision" => Ok(Goal::Provision),
            "deprovision" => Ok(Goal::Deprovision),
            "migrate" => Ok(Goal::Migrate),
            other => Err(RegistryError::internal(format!("unknown goal {other}"))),
        }
    }
}

/// The plan a stored run holds.
pub fn plan_of(row: &RunRow) -> Result<Plan, RegistryError> {
    serde_json::from_value(row.plan.clone()).map_err(RegistryError::internal)
}

/// The state a stored run is in.
pub fn state_of(row: &RunRow) -> Result<ProvisioningState, RegistryError> {
    row.state.parse().map_err(RegistryError::internal)
}

fn stored_plan(plan: &Plan) -> Result<Value, RegistryError> {
    serde_json::to_value(plan).map_err(RegistryError::internal)
}

/// Queues `manifest`'s plan for tenant `tenant_id` in the caller's transaction (a
/// subscription being made): a pair with no run, or one undone or being undone, starts from
/// the first step; one ready, running or failed is left as it is.
pub(crate) async fn queue_plan(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    product_id: &str,
    manifest: &Manifest,
) -> Result<Option<RunRow>, RegistryError> {
    let Some(plan) = &manifest.provisioning else {
        return Ok(None);
    };
    let current = store::lock(conn, tenant_id, product_id).await?;
    // Undone, being undone, or a teardown that failed part-way: running the plan again
    // (each step creates what is missing) gives the tenant back whole.
    let undone = current.as_ref().is_none_or(|row| {
        matches!(
            state_of(row),
            Ok(ProvisioningState::Deprovisioned | ProvisioningState::Deprovisioning)
        ) || (row.goal == Goal::Deprovision.as_str()
            && matches!(state_of(row), Ok(ProvisioningState::Failed)))
    });
    if !undone {
        return Ok(None);
    }
    let plan = stored_plan(plan)?;
    let row = store::queue(
        conn,
        &Queued {
            tenant_id,
            product_id,
            goal: Goal::Provision.as_str(),
            state: ProvisioningState::Pending.as_str(),
            plan: Some(&plan),
            step: 0,
            operation_id: None,
        },
    )
    .await?;
    Ok(Some(row))
}

/// Queues the plan of every product tenant `tenant_id` has enabled whose run was undone (or
/// never made), in the caller's transaction: a tenant restored after a purge that failed
/// half-way gets back what the purge's teardowns removed.
pub(crate) async fn queue_enabled_plans(
    conn: &mut PgConnection,
    tenant_id: Uuid,
) -> Result<(), RegistryError> {
    for (product_id, manifest) in storage::products::enabled_manifests(conn, tenant_id).await? {
        let manifest: Manifest =
            serde_json::from_value(manifest).map_err(RegistryError::internal)?;
        queue_plan(conn, tenant_id, &product_id, &manifest).await?;
    }
    Ok(())
}

/// Queues the teardown of (`tenant_id`, `product_id`) in the caller's transaction, as part
/// of `operation_id` if given: a pair that has a run not yet undone. Answers whether one was
/// queued.
pub(crate) async fn queue_teardown(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    product_id: &str,
    operation_id: Option<Uuid>,
) -> Result<bool, RegistryError> {
    let Some(current) = store::lock(conn, tenant_id, product_id).await? else {
        return Ok(false);
    };
    if state_of(&current)? == ProvisioningState::Deprovisioned {
        return Ok(false);
    }
    store::queue(
        conn,
        &Queued {
            tenant_id,
            product_id,
            goal: Goal::Deprovision.as_str(),
            state: ProvisioningState::Deprovisioning.as_str(),
            plan: None,
            step: 0,
            operation_id,
        },
    )
    .await?;
    Ok(true)
}

/// Starts a purge of tenant `tenant_id` (locked, archived) as operation `operation_id`:
/// the teardown of every product run not undone yet. Answers the pairs queued; none means
/// the purge can happen at once.
pub(crate) async fn queue_purge(
    conn: &mut PgConnection,
    actor_id: &str,
    tenant_id: Uuid,
    operation_id: Uuid,
) -> Result<Vec<(Uuid, String)>, RegistryError> {
    let runs = store::for_tenant(conn, tenant_id).await?;
    let mut queued = Vec::new();
    for run in &runs {
        if state_of(run)? != ProvisioningState::Deprovisioned {
            queued.push((tenant_id, run.product_id.clone()));
        }
    }
    operations::insert(
        conn,
        NewOperation {
            id: operation_id,
            kind: "tenant.purge",
            tenant_id: Some(tenant_id),
            product_id: None,
            requested_by: actor_id,
        },
        &queued,
    )
    .await?;
    for (_, product_id) in &queued {
        queue_teardown(conn, tenant_id, product_id, Some(operation_id)).await?;
    }
    Ok(queued)
}

/// Queues a migrations-only run, as operation `operation_id`, for every tenant whose run of
/// `product_id` is ready, if the product's plan has a migrations step. Answers how many.
pub(crate) async fn queue_fleet_migration(
    conn: &mut PgConnection,
    actor_id: &str,
    product_id: &str,
    plan: &Plan,
    operation_id: Uuid,
) -> Result<Option<usize>, RegistryError> {
    if plan.migrations_step().is_none() {
        return Ok(None);
    }
    let tenants = store::ready_tenants(conn, product_id).await?;
    let items: Vec<(Uuid, String)> = tenants
        .iter()
        .map(|tenant| (*tenant, product_id.to_owned()))
        .collect();
    operations::insert(
        conn,
        NewOperation {
            id: operation_id,
            kind: "product.migrations",
            tenant_id: None,
            product_id: Some(product_id),
            requested_by: actor_id,
        },
        &items,
    )
    .await?;
    for tenant_id in &tenants {
        store::queue(
            conn,
            &Queued {
                tenant_id: *tenant_id,
                product_id,
                goal: Goal::Migrate.as_str(),
                state: ProvisioningState::Running.as_str(),
                plan: None,
                step: 0,
                operation_id: Some(operation_id),
            },
        )
        .await?;
    }
    if tenants.is_empty() {
        operations::end_if_settled(conn, operation_id, &json!({"migrated": 0}), Utc::now()).await?;
    }
    Ok(Some(tenants.len()))
}

/// Every run of tenant `tenant_id`.
pub async fn runs_of(pool: &PgPool, tenant_id: Uuid) -> Result<Vec<RunRow>, RegistryError> {
    let mut conn = pool.acquire().await.map_err(RegistryError::from)?;
    Ok(store::for_tenant(&mut conn, tenant_id).await?)
}

/// Tenant `tenant_id`'s roles by name after `after`, at most `limit`.
pub async fn roles_of(
    pool: &PgPool,
    tenant_id: Uuid,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<RoleRow>, RegistryError> {
    let mut conn = pool.acquire().await.map_err(RegistryError::from)?;
    Ok(roles::list(&mut conn, tenant_id, after, limit).await?)
}

/// Which of `names` tenant `tenant_id` has already from something other than product
/// `product_id` (another product's plan, or the tenant: `None`), by name.
pub async fn roles_taken(
    pool: &PgPool,
    tenant_id: Uuid,
    product_id: &str,
    names: &[String],
) -> Result<Vec<(String, Option<String>)>, RegistryError> {
    let mut conn = pool.acquire().await.map_err(RegistryError::from)?;
    Ok(roles::taken(&mut conn, tenant_id, product_id, names).await?)
}

/// Holds tenant `tenant_id`'s row (the lock order: the tenant, then its rows); not found
/// when there is no such tenant.
async fn tenant_held(
    conn: &mut PgConnection,
    tenant_id: Uuid,
) -> Result<storage::tenants::TenantRow, RegistryError> {
    storage::tenants::share_lock(conn, tenant_id)
        .await?
        .ok_or_else(|| RegistryError::not_found("no such tenant"))
}

/// Tenant `tenant_id`'s backups, newest first (a purged tenant's too).
pub async fn backups_of(pool: &PgPool, tenant_id: Uuid) -> Result<Vec<BackupRow>, RegistryError> {
    let mut conn = pool.acquire().await.map_err(RegistryError::from)?;
    Ok(backups::for_tenant(&mut conn, tenant_id).await?)
}

/// Up to `limit` backups whose retention ended by `now`, not deleted yet.
pub async fn expired_backups(
    pool: &PgPool,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<BackupRow>, RegistryError> {
    let mut conn = pool.acquire().await.map_err(RegistryError::from)?;
    Ok(backups::expired(&mut conn, now, limit).await?)
}

/// Records that `backup`'s file was deleted at `now`, its retention over.
pub async fn backup_deleted(
    pool: &PgPool,
    backup: &BackupRow,
    now: DateTime<Utc>,
) -> Result<(), RegistryError> {
    let mut conn = pool.acquire().await.map_err(RegistryError::from)?;
    backups::mark_deleted(&mut conn, backup.id, now).await?;
    tracing::info!(backup_id = %backup.id, tenant_id = %backup.tenant_id, product = %backup.product_id, "expired backup deleted");
    Ok(())
}

/// Operation `id`, its items counted.
pub async fn operation(
    pool: &PgPool,
    id: Uuid,
) -> Result<Option<operations::OperationRow>, RegistryError> {
    let mut conn = pool.acquire().await.map_err(RegistryError::from)?;
    Ok(operations::get(&mut conn, id).await?)
}

/// The items of operation `id` that failed, with why, at most `limit`.
pub async fn operation_failures(
    pool: &PgPool,
    id: Uuid,
    limit: i64,
) -> Result<Vec<(Uuid, String, Option<String>)>, RegistryError> {
    let mut conn = pool.acquire().await.map_err(RegistryError::from)?;
    Ok(operations::failures(&mut conn, id, limit).await?)
}

fn audit_target(tenant_id: Uuid, product_id: &str) -> Target {
    Target {
        tenant_id: Some(tenant_id),
        id: format!("{tenant_id}/{product_id}"),
        kind: "tenant_provisioning",
        name: product_id.to_owned(),
    }
}

/// Starts tenant `tenant_id`'s failed runs again where they stopped, and reopens the
/// operations they belong to. Answers the runs restarted.
pub async fn retry(
    pool: &PgPool,
    actor: &Actor<'_>,
    tenant_id: Uuid,
    write: TenantWrite,
) -> Result<Vec<RunRow>, RegistryError> {
    storage::with_retries(move || async move {
        let mut transaction = storage::begin(pool).await?;
        // Retrying re-drives a product's hooks and cluster work: a frozen or archived tenant
        // may not do it on its own behalf, as it may make no other write.
        crate::lifecycle::permit(&mut transaction, tenant_id, write).await?;
        let restarted = store::retry_failed(&mut transaction, tenant_id).await?;
        for run in &restarted {
            if let Some(operation_id) = run.operation_id {
                operations::reopen_item(&mut transaction, operation_id, tenant_id, &run.product_id)
                    .await?;
            }
            let fields = Map::from_iter([("goal".to_owned(), Value::from(run.goal.clone()))]);
            trail::record(
                &mut transaction,
                actor,
                audit_target(tenant_id, &run.product_id),
                "tenant_provisioning.retried",
                'u',
                fields,
            )
            .await?;
        }
        storage::commit(transaction).await?;
        Ok(restarted)
    })
    .await
}

/// What a product reports on a run parked on its hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The hook request it answers (its `webhook-id`, also `data.report.request_id`).
    pub request_id: String,
    /// What it says.
    pub outcome: Outcome,
}

/// A product's word on its part of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Its part is done.
    Complete,
    /// Its part failed, and why.
    Fail(String),
}

/// Records product `product_id`'s report on its hook for tenant `tenant_id`: `complete`
/// moves the run on, `fail` counts a failed attempt (retried with backoff, `failed` after the
/// last). A conflict when the run is not waiting for a report, or waits for the report on
/// another hook request than the one named (an earlier run's).
pub async fn report(
    pool: &PgPool,
    actor: &Actor<'_>,
    tenant_id: Uuid,
    product_id: &str,
    report: &Report,
    retry_base: chrono::TimeDelta,
) -> Result<RunRow, RegistryError> {
    storage::with_retries(move || async move {
        let now = Utc::now();
        let mut transaction = storage::begin(pool).await?;
        let tenant = tenant_held(&mut transaction, tenant_id).await?;
        let run = store::lock(&mut transaction, tenant_id, product_id)
            .await?
            .ok_or_else(|| {
                RegistryError::not_found("the tenant has no provisioning of this product")
            })?;
        if run.hook_waiting_until.is_none() {
            return Err(RegistryError::conflict(format!(
                "the provisioning of {product_id} is {} and waits for no report",
                run.state
            )));
        }
        let waits_for =
            domain::provisioning::hook_request_id(tenant_id, product_id, &run.goal, run.generation);
        if report.request_id != waits_for {
            return Err(RegistryError::conflict(format!(
                "the provisioning of {product_id} waits for the report on hook request \
                 {waits_for}, not {}",
                report.request_id
            )));
        }
        let (action, fields) = match &report.outcome {
            Outcome::Complete => {
                store::reported_done(&mut transaction, tenant_id, product_id, run.step, now)
                    .await?;
                ("tenant_provisioning.hook_completed", Map::new())
            }
            Outcome::Fail(error) => {
                let plan = plan_of(&run)?;
                let attempts = u32::try_from(run.attempts).unwrap_or(0) + 1;
                let last = attempts >= plan.max_attempts;
                let failure = Failure {
                    error,
                    next_attempt_at: now + domain::provisioning::retry_delay(retry_base, attempts),
                    last,
                    now,
                };
                store::reported_failed(&mut transaction, tenant_id, product_id, failure).await?;
                if last {
                    runs::gave_up(
                        &mut transaction,
                        &run,
                        &tenant,
                        "hook",
                        error,
                        attempts,
                        now,
                    )
                    .await?;
                }
                let fields = Map::from_iter([("error".to_owned(), Value::from(error.clone()))]);
                ("tenant_provisioning.hook_failed", fields)
            }
        };
        trail::record(
            &mut transaction,
            actor,
            audit_target(tenant_id, product_id),
            action,
            'u',
            fields,
        )
        .await?;
        let after = store::lock(&mut transaction, tenant_id, product_id)
            .await?
            .ok_or_else(|| RegistryError::internal("the run vanished in its own transaction"))?;
        storage::commit(transaction).await?;
        Ok(after)
    })
    .await
}

/// The step a stored run is on, by kind, for views (`None` once past the last).
pub fn step_kind(row: &RunRow) -> Option<&'static str> {
    step_at(&row.goal, &plan_of(row).ok()?.kinds(), row.step)
}

/// The step a run with `goal`, over a plan whose steps are of `kinds`, is on at `index`.
pub fn step_at<S: AsRef<str>>(goal: &str, kinds: &[S], index: i32) -> Option<&'static str> {
    let index = usize::try_from(index).ok()?;
    match Goal::parse(goal).ok()? {
        Goal::Provision => domain::provisioning::step_kind(kinds.get(index)?.as_ref()),
        Goal::Deprovision => domain::provisioning::teardown_kinds(kinds)
            .get(index)
            .copied(),
        Goal::Migrate => Some("migrations"),
    }
}

/// When `row` is due for the runner, if it is.
pub fn due_at(row: &RunRow) -> Option<DateTime<Utc>> {
    state_of(row)
        .ok()
        .filter(|state| state.is_active())
        .map(|_| row.next_attempt_at)
}
