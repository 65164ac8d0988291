//! Long-running operations (a purge, a fleet migration) and their items, one per (tenant,
//! product) they touch: an operation is done when none of its items is still running.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

/// An operation as stored, with its items counted.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct OperationRow {
    /// Its id.
    pub id: Uuid,
    /// `tenant.purge` or `product.migrations`.
    pub kind: String,
    /// The tenant it is about, if one.
    pub tenant_id: Option<Uuid>,
    /// The product it is about, if one.
    pub product_id: Option<String>,
    /// Who asked (a principal's id).
    pub requested_by: String,
    /// `running`, `succeeded` or `failed`.
    pub state: String,
    /// What it came to, once done.
    pub result: Option<Value>,
    /// Why it failed, once failed.
    pub error: Option<Value>,
    /// When it was asked for.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// When it ended.
    pub done_at: Option<DateTime<Utc>>,
    /// Its items.
    pub total: i64,
    /// Items that succeeded.
    pub succeeded: i64,
    /// Items that failed.
    pub failed: i64,
}

/// An operation to record.
#[derive(Debug, Clone, Copy)]
pub struct NewOperation<'a> {
    /// Its id.
    pub id: Uuid,
    /// Its kind.
    pub kind: &'a str,
    /// The tenant it is about.
    pub tenant_id: Option<Uuid>,
    /// The product it is about.
    pub product_id: Option<&'a str>,
    /// Who asked.
    pub requested_by: &'a str,
}

/// Records `operation`, running, with an item for each of `items`.
pub async fn insert(
    conn: &mut PgConnection,
    operation: NewOperation<'_>,
    items: &[(Uuid, String)],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO operations (id, kind, tenant_id, product_id, requested_by)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(operation.id)
    .bind(operation.kind)
    .bind(operation.tenant_id)
    .bind(operation.product_id)
    .bind(operation.requested_by)
    .execute(&mut *conn)
    .await?;
    let tenants: Vec<Uuid> = items.iter().map(|(tenant, _)| *tenant).collect();
    let products: Vec<&str> = items.iter().map(|(_, product)| product.as_str()).collect();
    sqlx::query(
        "INSERT INTO operation_items (operation_id, tenant_id, product_id)
         SELECT $1, tenant_id, product_id FROM unnest($2::uuid[], $3::text[]) AS i (tenant_id, product_id)",
    )
    .bind(operation.id)
    .bind(tenants)
    .bind(products)
    .execute(conn)
    .await
    .map(drop)
}

/// Locks operation `id` until the caller's transaction ends: the runs that settle its items
/// take turns, so the last one to commit counts every other's item as ended (each counts
/// after the previous one committed) and ends the operation.
pub async fn lock(conn: &mut PgConnection, id: Uuid) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar::<_, Uuid>("SELECT id FROM operations WHERE id = $1 FOR UPDATE")
        .bind(id)
        .fetch_optional(conn)
        .await
        .map(|found| found.is_some())
}

/// Operation `id`, its items counted.
pub async fn get(conn: &mut PgConnection, id: Uuid) -> Result<Option<OperationRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT o.id, o.kind, o.tenant_id, o.product_id, o.requested_by, o.state, o.result,
                o.error, o.created_at, o.updated_at, o.done_at,
                count(i.*) AS total,
                count(i.*) FILTER (WHERE i.state = 'succeeded') AS succeeded,
                count(i.*) FILTER (WHERE i.state = 'failed') AS failed
         FROM operations o LEFT JOIN operation_items i ON i.operation_id = o.id
         WHERE o.id = $1 GROUP BY o.id",
    )
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// The items of operation `id` that failed, with why, at most `limit`.
pub async fn failures(
    conn: &mut PgConnection,
    id: Uuid,
    limit: i64,
) -> Result<Vec<(Uuid, String, Option<String>)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT tenant_id, product_id, error FROM operation_items
         WHERE operation_id = $1 AND state = 'failed' ORDER BY tenant_id, product_id LIMIT $2",
    )
    .bind(id)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Records how operation `id`'s item for (`tenant_id`, `product_id`) ended.
pub async fn item_ended(
    conn: &mut PgConnection,
    id: Uuid,
    tenant_id: Uuid,
    product_id: &str,
    error: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE operation_items SET state = CASE WHEN $4::text IS NULL THEN 'succeeded' ELSE 'failed' END,
             error = $4, updated_at = now()
         WHERE operation_id = $1 AND tenant_id = $2 AND product_id = $3",
    )
    .bind(id)
    .bind(tenant_id)
    .bind(product_id)
    .bind(error)
    .execute(conn)
    .await
    .map(drop)
}

/// Ends operation `id` if none of its items is still running: `failed` with `error` when
/// one failed, else `succeeded` with `result`. Answers whether it ended now.
pub async fn end_if_settled(
    conn: &mut PgConnection,
    id: Uuid,
    result: &Value,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    sqlx::query(
        "UPDATE operations o SET
             state = CASE WHEN EXISTS (SELECT 1 FROM operation_items i
                                       WHERE i.operation_id = o.id AND i.state = 'failed')
                          THEN 'failed' ELSE 'succeeded' END,
             result = $2, done_at = $3, updated_at = $3
         WHERE o.id = $1 AND o.state = 'running'
           AND NOT EXISTS (SELECT 1 FROM operation_items i
                           WHERE i.operation_id = o.id AND i.state = 'running')",
    )
    .bind(id)
    .bind(result)
    .bind(now)
    .execute(conn)
    .await
    .map(|done| done.rows_affected() == 1)
}

/// Ends operation `id` as failed with `error`, whatever its items say.
pub async fn fail(
    conn: &mut PgConnection,
    id: Uuid,
    error: &Value,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE operations SET state = 'failed', error = $2, done_at = $3, updated_at = $3
         WHERE id = $1 AND state = 'running'",
    )
    .bind(id)
    .bind(error)
    .bind(now)
    .execute(conn)
    .await
    .map(drop)
}

/// The running purge of tenant `tenant_id`, if one is under way.
pub async fn running_purge(
    conn: &mut PgConnection,
    tenant_id: Uuid,
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT id FROM operations WHERE tenant_id = $1 AND kind = 'tenant.purge' AND state = 'running'",
    )
    .bind(tenant_id)
    .fetch_optional(conn)
    .await
}

/// Marks operation `id`'s item for (`tenant_id`, `product_id`) running again (its run was
/// retried), and the operation with it.
pub async fn reopen_item(
    conn: &mut PgConnection,
    id: Uuid,
    tenant_id: Uuid,
    product_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "WITH item AS (
             UPDATE operation_items SET state = 'running', error = NULL, updated_at = now()
             WHERE operation_id = $1 AND tenant_id = $2 AND product_id = $3 RETURNING operation_id)
         UPDATE operations SET state = 'running', error = NULL, result = NULL, done_at = NULL,
             updated_at = now()
         WHERE id IN (SELECT operation_id FROM item)",
    )
    .bind(id)
    .bind(tenant_id)
    .bind(product_id)
    .execute(conn)
    .await
    .map(drop)
}
