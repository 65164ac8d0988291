//! The `tenants` table (lookups needed by authentication for now).

use sqlx::PgPool;
use uuid::Uuid;

/// The id of the tenant with `slug`, if there is one.
pub async fn id_by_slug(pool: &PgPool, slug: &str) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar("SELECT id FROM tenants WHERE slug = $1")
        .bind(slug)
        .fetch_optional(pool)
        .await
}

/// Whether a tenant with `id` exists.
pub async fn exists(pool: &PgPool, id: Uuid) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM tenants WHERE id = $1)")
        .bind(id)
        .fetch_one(pool)
        .await
}

/// The fields a tenant needs to exist.
#[derive(Debug, Clone)]
pub struct NewTenant<'a> {
    /// Its unique slug (already checked against the slug rule).
    pub slug: &'a domain::Slug,
    /// Display name.
    pub name: &'a str,
    /// Commercial plan.
    pub plan: &'a str,
}

/// Inserts a tenant with the defaults of the schema; returns its id.
pub async fn insert(
    conn: &mut sqlx::PgConnection,
    tenant: &NewTenant<'_>,
) -> Result<Uuid, sqlx::Error> {
    sqlx::query_scalar("INSERT INTO tenants (slug, name, plan) VALUES ($1, $2, $3) RETURNING id")
        .bind(tenant.slug.as_str())
        .bind(tenant.name)
        .bind(tenant.plan)
        .fetch_one(conn)
        .await
}
