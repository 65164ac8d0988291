//! The `tenant_domains` table and home-realm discovery.

use chrono::{DateTime, Utc};
use sqlx::{FromRow, PgConnection, PgPool};
use uuid::Uuid;

/// A claimed domain.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct DomainRow {
    /// Id.
    pub id: Uuid,
    /// The tenant claiming it.
    pub tenant_id: Uuid,
    /// The domain, lowercased.
    pub domain: String,
    /// The value the TXT record must hold.
    pub verification_token: String,
    /// When ownership was proven.
    pub verified_at: Option<DateTime<Utc>>,
    /// Claim time.
    pub created_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, tenant_id, domain, verification_token, verified_at, created_at";

/// Records a claim.
pub async fn insert(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    domain: &str,
    token: &str,
) -> Result<DomainRow, sqlx::Error> {
    sqlx::query_as(&format!(
        "INSERT INTO tenant_domains (tenant_id, domain, verification_token) VALUES ($1, $2, $3) RETURNING {COLUMNS}"
    ))
    .bind(tenant_id)
    .bind(domain)
    .bind(token)
    .fetch_one(conn)
    .await
}

/// A tenant's claims, by domain.
pub async fn list(pool: &PgPool, tenant_id: Uuid) -> Result<Vec<DomainRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM tenant_domains WHERE tenant_id = $1 ORDER BY domain"
    ))
    .bind(tenant_id)
    .fetch_all(pool)
    .await
}

/// One claim of a tenant.
pub async fn get(
    pool: &PgPool,
    tenant_id: Uuid,
    id: Uuid,
) -> Result<Option<DomainRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM tenant_domains WHERE tenant_id = $1 AND id = $2"
    ))
    .bind(tenant_id)
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// Marks a claim verified (keeping the first verification time).
pub async fn mark_verified(conn: &mut PgConnection, id: Uuid) -> Result<DomainRow, sqlx::Error> {
    sqlx::query_as(&format!(
        "UPDATE tenant_domains SET verified_at = coalesce(verified_at, now()) WHERE id = $1 RETURNING {COLUMNS}"
    ))
    .bind(id)
    .fetch_one(conn)
    .await
}

/// Deletes a claim; the row it was, if there was one.
pub async fn delete(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    id: Uuid,
) -> Result<Option<DomainRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "DELETE FROM tenant_domains WHERE tenant_id = $1 AND id = $2 RETURNING {COLUMNS}"
    ))
    .bind(tenant_id)
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// The tenant that verified `domain`, if any.
pub async fn verified_owner(pool: &PgPool, domain: &str) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT tenant_id FROM tenant_domains WHERE domain = $1 AND verified_at IS NOT NULL",
    )
    .bind(domain)
    .fetch_optional(pool)
    .await
}
