//! Backups of tenants' product data, taken before a schema or database is dropped: where
//! each is, how big, its SHA-256, and until when it is kept. A backup outlives its tenant.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

/// A backup as stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct BackupRow {
    /// Its id.
    pub id: Uuid,
    /// The tenant it is of.
    pub tenant_id: Uuid,
    /// The tenant's slug when it was taken.
    pub tenant_slug: String,
    /// The product whose data it holds.
    pub product_id: String,
    /// `schema` or `database`.
    pub isolation: String,
    /// The schema's or database's name.
    pub object_name: String,
    /// Where it is (a path, or an object store URL).
    pub location: String,
    /// `pg_dump-custom`.
    pub format: String,
    /// Its size.
    pub size_bytes: i64,
    /// The SHA-256 of its bytes, hex.
    pub sha256: String,
    /// When it was taken.
    pub created_at: DateTime<Utc>,
    /// When it is deleted.
    pub expires_at: DateTime<Utc>,
    /// When it was deleted, if it was.
    pub deleted_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "id, tenant_id, tenant_slug, product_id, isolation, object_name, location,
    format, size_bytes, sha256, created_at, expires_at, deleted_at";

/// Records `backup` (its `deleted_at` ignored).
pub async fn insert(conn: &mut PgConnection, backup: &BackupRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO tenant_backups (id, tenant_id, tenant_slug, product_id, isolation,
             object_name, location, format, size_bytes, sha256, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(backup.id)
    .bind(backup.tenant_id)
    .bind(&backup.tenant_slug)
    .bind(&backup.product_id)
    .bind(&backup.isolation)
    .bind(&backup.object_name)
    .bind(&backup.location)
    .bind(&backup.format)
    .bind(backup.size_bytes)
    .bind(&backup.sha256)
    .bind(backup.created_at)
    .bind(backup.expires_at)
    .execute(conn)
    .await
    .map(drop)
}

/// Tenant `tenant_id`'s backups, newest first, deleted ones included.
pub async fn for_tenant(
    conn: &mut PgConnection,
    tenant_id: Uuid,
) -> Result<Vec<BackupRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM tenant_backups WHERE tenant_id = $1 ORDER BY created_at DESC, id"
    ))
    .bind(tenant_id)
    .fetch_all(conn)
    .await
}

/// Up to `limit` backups expired by `now` and not deleted yet, oldest first (deleting a
/// file twice is harmless, so replicas need not take turns).
pub async fn expired(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<BackupRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM tenant_backups WHERE deleted_at IS NULL AND expires_at <= $1
         ORDER BY expires_at LIMIT $2"
    ))
    .bind(now)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Records that backup `id` was deleted at `now`.
pub async fn mark_deleted(
    conn: &mut PgConnection,
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE tenant_backups SET deleted_at = $2 WHERE id = $1")
        .bind(id)
        .bind(now)
        .execute(conn)
        .await
        .map(drop)
}

/// Whether backup `id` is recorded and not deleted.
pub async fn is_kept(conn: &mut PgConnection, id: Uuid) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM tenant_backups WHERE id = $1 AND deleted_at IS NULL)",
    )
    .bind(id)
    .fetch_one(conn)
    .await
}
