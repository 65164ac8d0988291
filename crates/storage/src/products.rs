//! The products catalog and the tenant ↔ product matrix.
//!
//! Publishing a product notifies [`ENTITLEMENTS_CHANNEL`] with its id in the caller's
//! transaction, so each replica's entitlement cache forgets that product's answers when the
//! change commits. Changes to a tenant or its subscriptions are announced per tenant by the
//! V8 trigger on `tenants_changed`.

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{FromRow, PgConnection, PgPool};
use uuid::Uuid;

/// The LISTEN/NOTIFY channel that names a product whose manifest changed.
pub const ENTITLEMENTS_CHANNEL: &str = "entitlements_changed";

/// Tells every replica that product `id` changed (delivered at commit).
async fn notify_product_changed(conn: &mut PgConnection, id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(ENTITLEMENTS_CHANNEL)
        .bind(id)
        .execute(conn)
        .await
        .map(drop)
}

/// A catalog entry.
#[derive(Debug, Clone, FromRow)]
pub struct ProductRow {
    /// The product id.
    pub id: String,
    /// Its manifest, as published.
    pub manifest: Json<serde_json::Value>,
    /// First published.
    pub created_at: DateTime<Utc>,
    /// Last published.
    pub updated_at: DateTime<Utc>,
}

/// Publishes (creates or replaces) a manifest; returns the row and whether it is new.
pub async fn upsert(
    conn: &mut PgConnection,
    id: &str,
    manifest: &serde_json::Value,
) -> Result<(ProductRow, bool), sqlx::Error> {
    let row: ProductRow = sqlx::query_as(
        "INSERT INTO products (id, manifest) VALUES ($1, $2)
         ON CONFLICT (id) DO UPDATE SET manifest = EXCLUDED.manifest
         RETURNING id, manifest, created_at, updated_at",
    )
    .bind(id)
    .bind(Json(manifest))
    .fetch_one(&mut *conn)
    .await?;
    // A new row has both timestamps from the same now(); a replaced one had updated_at moved.
    let inserted = row.created_at == row.updated_at;
    notify_product_changed(conn, id).await?;
    Ok((row, inserted))
}

/// One product.
pub async fn get(pool: &PgPool, id: &str) -> Result<Option<ProductRow>, sqlx::Error> {
    sqlx::query_as("SELECT id, manifest, created_at, updated_at FROM products WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// Product `id`'s manifest, read in the caller's transaction.
pub async fn manifest_in(
    conn: &mut PgConnection,
    id: &str,
) -> Result<Option<serde_json::Value>, sqlx::Error> {
    sqlx::query_scalar::<_, Json<serde_json::Value>>("SELECT manifest FROM products WHERE id = $1")
        .bind(id)
        .fetch_optional(conn)
        .await
        .map(|found| found.map(|Json(manifest)| manifest))
}

/// The manifests of the products tenant `tenant_id` has enabled, by product id.
pub async fn enabled_manifests(
    conn: &mut PgConnection,
    tenant_id: uuid::Uuid,
) -> Result<Vec<(String, serde_json::Value)>, sqlx::Error> {
    sqlx::query_as::<_, (String, Json<serde_json::Value>)>(
        "SELECT p.id, p.manifest FROM tenant_products tp JOIN products p ON p.id = tp.product
          WHERE tp.tenant_id = $1 AND tp.enabled ORDER BY p.id",
    )
    .bind(tenant_id)
    .fetch_all(conn)
    .await
    .map(|rows| {
        rows.into_iter()
            .map(|(id, Json(manifest))| (id, manifest))
            .collect()
    })
}

/// Whether the catalog has product `id`.
pub async fn exists(pool: &PgPool, id: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM products WHERE id = $1)")
        .bind(id)
        .fetch_one(pool)
        .await
}

/// Every product, by id.
pub async fn list(pool: &PgPool) -> Result<Vec<ProductRow>, sqlx::Error> {
    sqlx::query_as("SELECT id, manifest, created_at, updated_at FROM products ORDER BY id")
        .fetch_all(pool)
        .await
}

/// A tenant's subscription to a product.
#[derive(Debug, Clone, FromRow)]
pub struct TenantProductRow {
    /// The product id.
    pub product: String,
    /// Switched on or off.
    pub enabled: bool,
    /// The tenant's config.
    pub config: Json<serde_json::Value>,
    /// Per-feature values replacing the plan's.
    pub feature_overrides: Json<serde_json::Map<String, serde_json::Value>>,
    /// First set.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

impl TenantProductRow {
    /// The subscription as the domain rules see it.
    pub fn subscription(&self) -> domain::product::Subscription {
        domain::product::Subscription {
            enabled: self.enabled,
            config: self.config.0.clone(),
            feature_overrides: self.feature_overrides.0.clone(),
        }
    }
}

const TENANT_PRODUCT_COLUMNS: &str =
    "product, enabled, config, feature_overrides, created_at, updated_at";

/// Sets a tenant's subscription to a product.
pub async fn set_for_tenant(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    product: &str,
    enabled: bool,
    config: &serde_json::Value,
    overrides: &serde_json::Map<String, serde_json::Value>,
) -> Result<TenantProductRow, sqlx::Error> {
    sqlx::query_as(&format!(
        "INSERT INTO tenant_products (tenant_id, product, enabled, config, feature_overrides)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (tenant_id, product) DO UPDATE
            SET enabled = EXCLUDED.enabled, config = EXCLUDED.config,
                feature_overrides = EXCLUDED.feature_overrides
         RETURNING {TENANT_PRODUCT_COLUMNS}"
    ))
    .bind(tenant_id)
    .bind(product)
    .bind(enabled)
    .bind(Json(config))
    .bind(Json(overrides))
    .fetch_one(conn)
    .await
}

/// Changes only the config of a tenant's existing subscription; `None` when it has none.
pub async fn set_config_for_tenant(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    product: &str,
    config: &serde_json::Value,
) -> Result<Option<TenantProductRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "UPDATE tenant_products SET config = $3 WHERE tenant_id = $1 AND product = $2
         RETURNING {TENANT_PRODUCT_COLUMNS}"
    ))
    .bind(tenant_id)
    .bind(product)
    .bind(Json(config))
    .fetch_optional(conn)
    .await
}

/// Whether tenant `tenant_id` has a subscription to `product`.
pub async fn is_subscribed(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    product: &str,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM tenant_products WHERE tenant_id = $1 AND product = $2)",
    )
    .bind(tenant_id)
    .bind(product)
    .fetch_one(conn)
    .await
}

/// Removes a tenant's subscription; whether there was one.
pub async fn remove_for_tenant(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    product: &str,
) -> Result<bool, sqlx::Error> {
    let deleted = sqlx::query("DELETE FROM tenant_products WHERE tenant_id = $1 AND product = $2")
        .bind(tenant_id)
        .bind(product)
        .execute(conn)
        .await?;
    Ok(deleted.rows_affected() == 1)
}

/// A tenant's subscriptions, by product id.
pub async fn for_tenant(
    pool: &PgPool,
    tenant_id: Uuid,
) -> Result<Vec<TenantProductRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {TENANT_PRODUCT_COLUMNS} FROM tenant_products WHERE tenant_id = $1 ORDER BY product"
    ))
    .bind(tenant_id)
    .fetch_all(pool)
    .await
}

/// Whether the tenant has an enabled product whose manifest allows projects.
pub async fn tenant_supports_projects(
    conn: &mut PgConnection,
    tenant_id: Uuid,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM tenant_products tp JOIN products p ON p.id = tp.product
                        WHERE tp.tenant_id = $1 AND tp.enabled
                          AND (p.manifest->>'supports_projects')::boolean)",
    )
    .bind(tenant_id)
    .fetch_one(conn)
    .await
}
