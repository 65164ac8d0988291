//! Provisioning runs: one row per (tenant, product) whose product has a plan, queued by the
//! use cases, leased by the runner one tenant at a time, and advanced step by step. Every
//! write of a runner is guarded by its lease token and the run's generation, so a runner
//! whose lease lapsed, or whose run was queued again meanwhile, changes nothing.

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

/// A run as stored.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct RunRow {
    /// The tenant.
    pub tenant_id: Uuid,
    /// The product.
    pub product_id: String,
    /// `provision`, `deprovision` or `migrate`.
    pub goal: String,
    /// Where it stands (`domain::provisioning::ProvisioningState`).
    pub state: String,
    /// The plan it runs.
    pub plan: Value,
    /// The index of the next step.
    pub step: i32,
    /// Bumped at each queueing.
    pub generation: i64,
    /// Failed attempts of this run.
    pub attempts: i32,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When it is due.
    pub next_attempt_at: DateTime<Utc>,
    /// The runner's lease, while one runs it.
    pub lease_token: Option<Uuid>,
    /// Until when the lease holds.
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// Waiting for the product's report on its hook until then.
    pub hook_waiting_until: Option<DateTime<Utc>>,
    /// `schema` or `database`, once made.
    pub isolation: Option<String>,
    /// The schema's or database's name, once made.
    pub object_name: Option<String>,
    /// The last migration applied.
    pub migration_version: Option<i32>,
    /// When the seed ran.
    pub seeded_at: Option<DateTime<Utc>>,
    /// When the default roles were made.
    pub roles_created_at: Option<DateTime<Utc>>,
    /// When the product answered its hook.
    pub hook_answered_at: Option<DateTime<Utc>>,
    /// The backup taken before the drop.
    pub backup_id: Option<Uuid>,
    /// The operation this run is part of.
    pub operation_id: Option<Uuid>,
    /// When it was queued.
    pub queued_at: DateTime<Utc>,
    /// When a runner first took it.
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended (ready, failed, deprovisioned).
    pub finished_at: Option<DateTime<Utc>>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "tenant_id, product_id, goal, state, plan, step, generation, attempts,
    last_error, next_attempt_at, lease_token, lease_expires_at, hook_waiting_until, isolation,
    object_name, migration_version, seeded_at, roles_created_at, hook_answered_at, backup_id,
    operation_id, queued_at, started_at, finished_at, updated_at";

/// A run to queue.
#[derive(Debug, Clone)]
pub struct Queued<'a> {
    /// The tenant.
    pub tenant_id: Uuid,
    /// The product.
    pub product_id: &'a str,
    /// `provision`, `deprovision` or `migrate`.
    pub goal: &'a str,
    /// The state it starts in.
    pub state: &'a str,
    /// The plan to run; `None` keeps the stored one (a teardown undoes what was done).
    pub plan: Option<&'a Value>,
    /// The step it starts at.
    pub step: i32,
    /// The operation it is part of.
    pub operation_id: Option<Uuid>,
}

/// Queues a run, replacing the pair's previous one (its generation bumped, so that run's
/// runner stops); due at once. A new run forgets the previous one's backup (a drop is
/// justified only by a backup taken in its own run) and, when it provisions again, its seed
/// and roles.
pub async fn queue(conn: &mut PgConnection, run: &Queued<'_>) -> Result<RunRow, sqlx::Error> {
    sqlx::query_as(&format!(
        "INSERT INTO tenant_provisioning (tenant_id, product_id, goal, state, plan, step, operation_id)
         VALUES ($1, $2, $3, $4, coalesce($5, '{{}}'::jsonb), $6, $7)
         ON CONFLICT (tenant_id, product_id) DO UPDATE SET
             goal = EXCLUDED.goal, state = EXCLUDED.state,
             plan = coalesce($5, tenant_provisioning.plan), step = EXCLUDED.step,
             generation = tenant_provisioning.generation + 1, attempts = 0, last_error = NULL,
             next_attempt_at = now(), hook_waiting_until = NULL, hook_answered_at = NULL,
             backup_id = NULL,
             seeded_at = CASE WHEN EXCLUDED.goal = 'provision' THEN NULL ELSE tenant_provisioning.seeded_at END,
             roles_created_at = CASE WHEN EXCLUDED.goal = 'provision' THEN NULL
                                     ELSE tenant_provisioning.roles_created_at END,
             operation_id = EXCLUDED.operation_id, queued_at = now(), started_at = NULL,
             finished_at = NULL, updated_at = now()
         RETURNING {COLUMNS}"
    ))
    .bind(run.tenant_id)
    .bind(run.product_id)
    .bind(run.goal)
    .bind(run.state)
    .bind(run.plan)
    .bind(run.step)
    .bind(run.operation_id)
    .fetch_one(conn)
    .await
}

/// Every run of tenant `tenant_id`, by product.
pub async fn for_tenant(
    conn: &mut PgConnection,
    tenant_id: Uuid,
) -> Result<Vec<RunRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM tenant_provisioning WHERE tenant_id = $1 ORDER BY product_id"
    ))
    .bind(tenant_id)
    .fetch_all(conn)
    .await
}

/// The run of (`tenant_id`, `product_id`), locked until the caller's transaction ends.
pub async fn lock(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    product_id: &str,
) -> Result<Option<RunRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM tenant_provisioning WHERE tenant_id = $1 AND product_id = $2
         FOR UPDATE"
    ))
    .bind(tenant_id)
    .bind(product_id)
    .fetch_optional(conn)
    .await
}

/// Leases up to `limit` due runs until `now + lease`, never two of one tenant at once (here
/// or on another replica: each candidate's tenant is taken under a transaction-scoped
/// advisory lock, then checked for a live lease with a fresh snapshot).
///
/// Candidates are one run a tenant (its earliest due), of tenants with no live lease, in
/// order of due time: a tenant with many runs waiting behind its running one fills no more
/// than one place of the window, so it cannot keep other tenants' due runs from being
/// leased.
pub async fn claim(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    lease: TimeDelta,
    limit: i64,
) -> Result<Vec<RunRow>, sqlx::Error> {
    let candidates: Vec<(Uuid, String)> = sqlx::query_as(
        "SELECT tenant_id, product_id FROM (
             SELECT DISTINCT ON (run.tenant_id) run.tenant_id, run.product_id, run.next_attempt_at
             FROM tenant_provisioning run
             WHERE run.state IN ('pending', 'running', 'deprovisioning') AND run.next_attempt_at <= $1
               AND (run.lease_expires_at IS NULL OR run.lease_expires_at < $1)
               AND NOT EXISTS (SELECT 1 FROM tenant_provisioning held
                               WHERE held.tenant_id = run.tenant_id AND held.lease_expires_at >= $1)
             ORDER BY run.tenant_id, run.next_attempt_at, run.product_id
         ) due
         ORDER BY next_attempt_at, tenant_id LIMIT $2",
    )
    .bind(now)
    .bind(limit.saturating_mul(4))
    .fetch_all(&mut *conn)
    .await?;
    let mut claimed = Vec::new();
    for (tenant_id, product_id) in candidates {
        if i64::try_from(claimed.len()).unwrap_or(i64::MAX) >= limit {
            break;
        }
        let locked: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(hashtextextended($1::text, 15))")
                .bind(tenant_id)
                .fetch_one(&mut *conn)
                .await?;
        if !locked {
            continue;
        }
        let busy: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM tenant_provisioning
                            WHERE tenant_id = $1 AND product_id <> $2 AND lease_expires_at >= $3)",
        )
        .bind(tenant_id)
        .bind(&product_id)
        .bind(now)
        .fetch_one(&mut *conn)
        .await?;
        if busy {
            continue;
        }
        // Still due and unleased: the candidates were read without row locks. The tenant's
        // advisory lock keeps other runners away; a row a use case is queueing again is
        // waited for and leased as it then is (its new generation).
        let row: Option<RunRow> = sqlx::query_as(&format!(
            "UPDATE tenant_provisioning SET lease_token = gen_random_uuid(),
                 lease_expires_at = $3, started_at = coalesce(started_at, $4),
                 state = CASE WHEN state = 'pending' THEN 'running' ELSE state END,
                 updated_at = now()
             WHERE tenant_id = $1 AND product_id = $2
               AND state IN ('pending', 'running', 'deprovisioning') AND next_attempt_at <= $4
               AND (lease_expires_at IS NULL OR lease_expires_at < $4)
             RETURNING {COLUMNS}"
        ))
        .bind(tenant_id)
        .bind(&product_id)
        .bind(now + lease)
        .bind(now)
        .fetch_optional(&mut *conn)
        .await?;
        claimed.extend(row);
    }
    Ok(claimed)
}

/// Which run a runner holds: the pair, its lease and the generation it runs.
#[derive(Debug, Clone, Copy)]
pub struct Held<'a> {
    /// The tenant.
    pub tenant_id: Uuid,
    /// The product.
    pub product_id: &'a str,
    /// The lease token the claim gave.
    pub token: Uuid,
    /// The generation claimed.
    pub generation: i64,
}

/// Extends the lease to `until`; `false` when it is no longer the holder's.
pub async fn renew(
    conn: &mut PgConnection,
    held: Held<'_>,
    until: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    sqlx::query(
        "UPDATE tenant_provisioning SET lease_expires_at = $5
         WHERE tenant_id = $1 AND product_id = $2 AND lease_token = $3 AND generation = $4",
    )
    .bind(held.tenant_id)
    .bind(held.product_id)
    .bind(held.token)
    .bind(held.generation)
    .bind(until)
    .execute(conn)
    .await
    .map(|done| done.rows_affected() == 1)
}

/// What a finished step leaves behind; `None` keeps a column as it is.
#[derive(Debug, Clone, Default)]
pub struct StepDone {
    /// `schema` or `database`.
    pub isolation: Option<String>,
    /// The schema's or database's name.
    pub object_name: Option<String>,
    /// The last migration applied.
    pub migration_version: Option<i32>,
    /// When the seed ran.
    pub seeded_at: Option<DateTime<Utc>>,
    /// When the roles were made.
    pub roles_created_at: Option<DateTime<Utc>>,
    /// When the product answered.
    pub hook_answered_at: Option<DateTime<Utc>>,
    /// The backup taken.
    pub backup_id: Option<Uuid>,
}

/// Moves the held run past step `step` (so the next is `step + 1`); `false` when the run is
/// not the holder's any more, or is not on that step (the product reported back already).
pub async fn step_done(
    conn: &mut PgConnection,
    held: Held<'_>,
    step: i32,
    done: &StepDone,
) -> Result<bool, sqlx::Error> {
    sqlx::query(
        "UPDATE tenant_provisioning SET step = $5 + 1,
             isolation = coalesce($6, isolation), object_name = coalesce($7, object_name),
             migration_version = coalesce($8, migration_version),
             seeded_at = coalesce($9, seeded_at), roles_created_at = coalesce($10, roles_created_at),
             hook_answered_at = coalesce($11, hook_answered_at),
             backup_id = coalesce($12, backup_id), attempts = 0, last_error = NULL,
             updated_at = now()
         WHERE tenant_id = $1 AND product_id = $2 AND lease_token = $3 AND generation = $4
           AND step = $5",
    )
    .bind(held.tenant_id)
    .bind(held.product_id)
    .bind(held.token)
    .bind(held.generation)
    .bind(step)
    .bind(&done.isolation)
    .bind(&done.object_name)
    .bind(done.migration_version)
    .bind(done.seeded_at)
    .bind(done.roles_created_at)
    .bind(done.hook_answered_at)
    .bind(done.backup_id)
    .execute(conn)
    .await
    .map(|updated| updated.rows_affected() == 1)
}

/// Ends the held run in `state` (`ready` or `deprovisioned`) and lets its lease go.
pub async fn finish(
    conn: &mut PgConnection,
    held: Held<'_>,
    state: &str,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    sqlx::query(
        "UPDATE tenant_provisioning SET state = $5, finished_at = $6, attempts = 0,
             last_error = NULL, lease_token = NULL, lease_expires_at = NULL, updated_at = now()
         WHERE tenant_id = $1 AND product_id = $2 AND lease_token = $3 AND generation = $4",
    )
    .bind(held.tenant_id)
    .bind(held.product_id)
    .bind(held.token)
    .bind(held.generation)
    .bind(state)
    .bind(now)
    .execute(conn)
    .await
    .map(|updated| updated.rows_affected() == 1)
}

/// How a failed attempt is recorded.
#[derive(Debug, Clone, Copy)]
pub struct Failure<'a> {
    /// Why.
    pub error: &'a str,
    /// When the next attempt is due.
    pub next_attempt_at: DateTime<Utc>,
    /// Whether that was the last attempt (the run becomes `failed`).
    pub last: bool,
    /// Now.
    pub now: DateTime<Utc>,
}

/// Records a failed attempt of the held run and lets its lease go; answers the attempts so
/// far, or `None` when the run is not the holder's any more.
pub async fn fail(
    conn: &mut PgConnection,
    held: Held<'_>,
    failure: Failure<'_>,
) -> Result<Option<i32>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE tenant_provisioning SET attempts = attempts + 1, last_error = $5,
             next_attempt_at = $6,
             state = CASE WHEN $7 THEN 'failed' ELSE state END,
             finished_at = CASE WHEN $7 THEN $8 ELSE finished_at END,
             hook_waiting_until = NULL,
             lease_token = NULL, lease_expires_at = NULL, updated_at = now()
         WHERE tenant_id = $1 AND product_id = $2 AND lease_token = $3 AND generation = $4
         RETURNING attempts",
    )
    .bind(held.tenant_id)
    .bind(held.product_id)
    .bind(held.token)
    .bind(held.generation)
    .bind(failure.error)
    .bind(failure.next_attempt_at)
    .bind(failure.last)
    .bind(failure.now)
    .fetch_optional(conn)
    .await
}

/// Parks the held run on its hook until `until` (the product answered 202 and reports back
/// by then) and lets its lease go.
pub async fn wait_for_report(
    conn: &mut PgConnection,
    held: Held<'_>,
    until: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    sqlx::query(
        "UPDATE tenant_provisioning SET hook_waiting_until = $5, next_attempt_at = $5,
             lease_token = NULL, lease_expires_at = NULL, updated_at = now()
         WHERE tenant_id = $1 AND product_id = $2 AND lease_token = $3 AND generation = $4",
    )
    .bind(held.tenant_id)
    .bind(held.product_id)
    .bind(held.token)
    .bind(held.generation)
    .bind(until)
    .execute(conn)
    .await
    .map(|updated| updated.rows_affected() == 1)
}

/// Lets the held run's lease go without recording anything (shutting down), so another
/// runner takes it at once.
pub async fn release(conn: &mut PgConnection, held: Held<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE tenant_provisioning SET lease_token = NULL, lease_expires_at = NULL
         WHERE tenant_id = $1 AND product_id = $2 AND lease_token = $3",
    )
    .bind(held.tenant_id)
    .bind(held.product_id)
    .bind(held.token)
    .execute(conn)
    .await
    .map(drop)
}

/// The product's report on a run parked on its hook (locked by the caller): moves it past
/// step `step` and makes it due now. `false` when it is not waiting there.
pub async fn reported_done(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    product_id: &str,
    step: i32,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    sqlx::query(
        "UPDATE tenant_provisioning SET step = step + 1, hook_waiting_until = NULL,
             hook_answered_at = $4, next_attempt_at = $4, attempts = 0, last_error = NULL,
             updated_at = now()
         WHERE tenant_id = $1 AND product_id = $2 AND step = $3 AND hook_waiting_until IS NOT NULL",
    )
    .bind(tenant_id)
    .bind(product_id)
    .bind(step)
    .bind(now)
    .execute(conn)
    .await
    .map(|updated| updated.rows_affected() == 1)
}

/// The product's failure report on a run parked on its hook: an attempt failed, as
/// [`fail`] records one, without a lease (the run is parked, none holds it).
pub async fn reported_failed(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    product_id: &str,
    failure: Failure<'_>,
) -> Result<Option<i32>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE tenant_provisioning SET attempts = attempts + 1, last_error = $3,
             next_attempt_at = $4,
             state = CASE WHEN $5 THEN 'failed' ELSE state END,
             finished_at = CASE WHEN $5 THEN $6 ELSE finished_at END,
             hook_waiting_until = NULL, updated_at = now()
         WHERE tenant_id = $1 AND product_id = $2 AND hook_waiting_until IS NOT NULL
         RETURNING attempts",
    )
    .bind(tenant_id)
    .bind(product_id)
    .bind(failure.error)
    .bind(failure.next_attempt_at)
    .bind(failure.last)
    .bind(failure.now)
    .fetch_optional(conn)
    .await
}

/// Starts the failed runs of tenant `tenant_id` again where they stopped; answers them.
pub async fn retry_failed(
    conn: &mut PgConnection,
    tenant_id: Uuid,
) -> Result<Vec<RunRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "UPDATE tenant_provisioning SET
             state = CASE WHEN goal = 'deprovision' THEN 'deprovisioning' ELSE 'running' END,
             attempts = 0, next_attempt_at = now(), finished_at = NULL,
             generation = generation + 1, updated_at = now()
         WHERE tenant_id = $1 AND state = 'failed' RETURNING {COLUMNS}"
    ))
    .bind(tenant_id)
    .fetch_all(conn)
    .await
}

/// Runs with work to do: queued, running or being undone.
pub async fn queue_depth(conn: &mut PgConnection) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FROM tenant_provisioning
         WHERE state IN ('pending', 'running', 'deprovisioning')",
    )
    .fetch_one(conn)
    .await
}

/// The tenants of product `product_id` whose run of it is `ready` (provisioned), locked
/// until the caller's transaction ends.
pub async fn ready_tenants(
    conn: &mut PgConnection,
    product_id: &str,
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT tenant_id FROM tenant_provisioning WHERE product_id = $1 AND state = 'ready'
         ORDER BY tenant_id FOR UPDATE",
    )
    .bind(product_id)
    .fetch_all(conn)
    .await
}
