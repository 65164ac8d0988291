//! A tenant's roles: the defaults a product's plan makes, each a named set of permissions.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

/// A role as stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RoleRow {
    /// Its name, unique in the tenant.
    pub name: String,
    /// The product whose plan made it.
    pub product_id: Option<String>,
    /// What it is for.
    pub description: String,
    /// Its permissions, sorted.
    pub permissions: Vec<String>,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// A role to make.
#[derive(Debug, Clone, Copy)]
pub struct NewRole<'a> {
    /// Its name.
    pub name: &'a str,
    /// What it is for.
    pub description: &'a str,
    /// Its permissions.
    pub permissions: &'a [String],
}

/// Makes (or brings up to date) product `product_id`'s default roles in tenant `tenant_id`;
/// a role of that name the tenant already has from elsewhere is left as it is. Answers the
/// names made or changed.
pub async fn upsert_defaults(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    product_id: &str,
    roles: &[NewRole<'_>],
) -> Result<Vec<String>, sqlx::Error> {
    let mut changed = Vec::new();
    for role in roles {
        let mut permissions = role.permissions.to_vec();
        permissions.sort();
        permissions.dedup();
        let name: Option<String> = sqlx::query_scalar(
            "INSERT INTO tenant_roles (tenant_id, name, product_id, description, permissions)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (tenant_id, name) DO UPDATE SET
                 description = EXCLUDED.description, permissions = EXCLUDED.permissions,
                 updated_at = now()
             WHERE tenant_roles.product_id = EXCLUDED.product_id
               AND (tenant_roles.description, tenant_roles.permissions)
                   IS DISTINCT FROM (EXCLUDED.description, EXCLUDED.permissions)
             RETURNING name",
        )
        .bind(tenant_id)
        .bind(role.name)
        .bind(product_id)
        .bind(role.description)
        .bind(&permissions)
        .fetch_optional(&mut *conn)
        .await?;
        changed.extend(name);
    }
    Ok(changed)
}

/// Which of `names` tenant `tenant_id` has already, made by something other than product
/// `product_id` (another product's plan, or the tenant itself: `None`), by name.
pub async fn taken(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    product_id: &str,
    names: &[String],
) -> Result<Vec<(String, Option<String>)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT name, product_id FROM tenant_roles
         WHERE tenant_id = $1 AND name = ANY($3) AND product_id IS DISTINCT FROM $2
         ORDER BY name",
    )
    .bind(tenant_id)
    .bind(product_id)
    .bind(names)
    .fetch_all(conn)
    .await
}

/// Removes product `product_id`'s default roles from tenant `tenant_id`; answers how many.
pub async fn remove_defaults(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    product_id: &str,
) -> Result<u64, sqlx::Error> {
    sqlx::query("DELETE FROM tenant_roles WHERE tenant_id = $1 AND product_id = $2")
        .bind(tenant_id)
        .bind(product_id)
        .execute(conn)
        .await
        .map(|done| done.rows_affected())
}

/// Tenant `tenant_id`'s roles by name, after `after` (keyset pagination), at most `limit`.
pub async fn list(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<RoleRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT name, product_id, description, permissions, created_at, updated_at
         FROM tenant_roles WHERE tenant_id = $1 AND ($2::text IS NULL OR name > $2)
         ORDER BY name LIMIT $3",
    )
    .bind(tenant_id)
    .bind(after)
    .bind(limit)
    .fetch_all(conn)
    .await
}
