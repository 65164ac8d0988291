//! The `product_migrations` table: each product's registered tenant-schema migrations, in
//! version order.

use chrono::{DateTime, Utc};
use sqlx::{FromRow, PgConnection, PgPool};

/// A registered migration.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct MigrationRow {
    /// Its version.
    pub version: i32,
    /// Its name.
    pub name: String,
    /// Its SQL.
    pub sql: String,
    /// The SHA-256 of its SQL, hex.
    pub checksum: String,
    /// When it was registered.
    pub registered_at: DateTime<Utc>,
}

/// A migration to register.
#[derive(Debug, Clone)]
pub struct NewMigration<'a> {
    /// Its version.
    pub version: i32,
    /// Its name.
    pub name: &'a str,
    /// Its SQL.
    pub sql: &'a str,
    /// The SHA-256 of its SQL, hex.
    pub checksum: &'a str,
}

/// Locks product `id` until the caller's transaction ends (registrations of one product
/// take turns); `false` when there is no such product.
pub async fn lock_product(conn: &mut PgConnection, id: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar::<_, String>("SELECT id FROM products WHERE id = $1 FOR UPDATE")
        .bind(id)
        .fetch_optional(conn)
        .await
        .map(|found| found.is_some())
}

/// The latest version registered for product `id`, read under a share lock of the product,
/// so a registration under way ([`lock_product`]) is either seen here or sees what the
/// caller's transaction writes.
pub async fn latest_version_shared(
    conn: &mut PgConnection,
    id: &str,
) -> Result<Option<i32>, sqlx::Error> {
    sqlx::query("SELECT 1 FROM products WHERE id = $1 FOR SHARE")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    sqlx::query_scalar("SELECT max(version) FROM product_migrations WHERE product_id = $1")
        .bind(id)
        .fetch_one(conn)
        .await
}

/// Every migration of product `id`, in version order.
pub async fn list(conn: &mut PgConnection, id: &str) -> Result<Vec<MigrationRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT version, name, sql, checksum, registered_at FROM product_migrations
         WHERE product_id = $1 ORDER BY version",
    )
    .bind(id)
    .fetch_all(conn)
    .await
}

/// Every migration of product `id`, in version order, read from the pool.
pub async fn list_on_pool(pool: &PgPool, id: &str) -> Result<Vec<MigrationRow>, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    list(&mut conn, id).await
}

/// Registers `migrations` for product `id`.
pub async fn insert(
    conn: &mut PgConnection,
    id: &str,
    migrations: &[NewMigration<'_>],
) -> Result<(), sqlx::Error> {
    if migrations.is_empty() {
        return Ok(());
    }
    let versions: Vec<i32> = migrations.iter().map(|m| m.version).collect();
    let names: Vec<&str> = migrations.iter().map(|m| m.name).collect();
    let sqls: Vec<&str> = migrations.iter().map(|m| m.sql).collect();
    let checksums: Vec<&str> = migrations.iter().map(|m| m.checksum).collect();
    sqlx::query(
        "INSERT INTO product_migrations (product_id, version, name, sql, checksum)
         SELECT $1, version, name, sql, checksum
         FROM unnest($2::integer[], $3::text[], $4::text[], $5::text[])
              AS listed (version, name, sql, checksum)",
    )
    .bind(id)
    .bind(versions)
    .bind(names)
    .bind(sqls)
    .bind(checksums)
    .execute(conn)
    .await
    .map(drop)
}
