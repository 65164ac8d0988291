//! SQL on a product's own cluster, for provisioning: a tenant's schema or database made and
//! dropped, the product's migrations applied inside it with a history table there, and its
//! seed run once. Each migration commits with its history row, and the seed with its marker,
//! so a run cut off anywhere and run again applies nothing twice.
//!
//! Names come from `domain::provisioning::tenant_object_name` (hex from the tenant's id);
//! they are quoted as identifiers all the same. Statements go through `Executor::execute`
//! rather than `RawSql::execute`, whose generic `async fn` keeps callers' futures from being
//! proven `Send` when a runner spawns them.

use sqlx::{Connection as _, Executor as _, PgConnection};
use uuid::Uuid;

/// The history table in each tenant schema.
pub const HISTORY_TABLE: &str = "registry_schema_history";
/// The table whose one row says the seed ran.
pub const SEED_TABLE: &str = "registry_seed";

/// `name` quoted as an SQL identifier.
pub fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Makes schema `name` if it is missing.
pub async fn create_schema(conn: &mut PgConnection, name: &str) -> Result<(), sqlx::Error> {
    conn.execute(sqlx::raw_sql(&format!(
        "CREATE SCHEMA IF NOT EXISTS {}",
        quoted(name)
    )))
    .await
    .map(drop)
}

/// Whether schema `name` exists.
pub async fn schema_exists(conn: &mut PgConnection, name: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
        .bind(name)
        .fetch_one(conn)
        .await
}

/// Drops schema `name` and everything in it, if it exists.
pub async fn drop_schema(conn: &mut PgConnection, name: &str) -> Result<(), sqlx::Error> {
    conn.execute(sqlx::raw_sql(&format!(
        "DROP SCHEMA IF EXISTS {} CASCADE",
        quoted(name)
    )))
    .await
    .map(drop)
}

/// Whether database `name` exists on the cluster.
pub async fn database_exists(conn: &mut PgConnection, name: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(name)
        .fetch_one(conn)
        .await
}

/// Makes database `name` if it is missing (two runners racing both succeed).
pub async fn create_database(conn: &mut PgConnection, name: &str) -> Result<(), sqlx::Error> {
    if database_exists(conn, name).await? {
        return Ok(());
    }
    match (&mut *conn)
        .execute(sqlx::raw_sql(&format!("CREATE DATABASE {}", quoted(name))))
        .await
    {
        Ok(_) => Ok(()),
        // 42P04 duplicate_database, 23505 the catalog's unique index in a race.
        Err(sqlx::Error::Database(error))
            if matches!(error.code().as_deref(), Some("42P04" | "23505")) =>
        {
            Ok(())
        }
        Err(error) => Err(error),
    }
}

/// Drops database `name` if it exists, ending its sessions.
pub async fn drop_database(conn: &mut PgConnection, name: &str) -> Result<(), sqlx::Error> {
    conn.execute(sqlx::raw_sql(&format!(
        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
        quoted(name)
    )))
    .await
    .map(drop)
}

/// Makes the history and seed tables in schema `schema` if they are missing.
pub async fn ensure_history(conn: &mut PgConnection, schema: &str) -> Result<(), sqlx::Error> {
    let schema = quoted(schema);
    conn.execute(sqlx::raw_sql(&format!(
        "CREATE TABLE IF NOT EXISTS {schema}.{HISTORY_TABLE} (
             version    integer     PRIMARY KEY,
             name       text        NOT NULL,
             checksum   text        NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now());
         CREATE TABLE IF NOT EXISTS {schema}.{SEED_TABLE} (
             seeded     boolean     PRIMARY KEY DEFAULT true CHECK (seeded),
             seeded_at  timestamptz NOT NULL DEFAULT now())"
    )))
    .await
    .map(drop)
}

/// The migrations applied in schema `schema`: version and checksum, in version order.
pub async fn applied(
    conn: &mut PgConnection,
    schema: &str,
) -> Result<Vec<(i32, String)>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT version, checksum FROM {}.{HISTORY_TABLE} ORDER BY version",
        quoted(schema)
    ))
    .fetch_all(conn)
    .await
}

/// A migration to apply.
#[derive(Debug, Clone, Copy)]
pub struct Migration<'a> {
    /// Its version.
    pub version: i32,
    /// Its name.
    pub name: &'a str,
    /// The SHA-256 of its SQL.
    pub checksum: &'a str,
    /// Its SQL.
    pub sql: &'a str,
}

/// How long a statement on a product's cluster may wait for a lock, and run.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// `lock_timeout`, milliseconds.
    pub lock_timeout_ms: u32,
    /// `statement_timeout`, milliseconds: a migration or seed that hangs fails its attempt
    /// instead of holding a runner's slot for ever.
    pub statement_timeout_ms: u32,
}

/// Applies `migration` inside schema `schema` (its search path), with its history row, in
/// one transaction, within `limits`.
pub async fn apply(
    conn: &mut PgConnection,
    schema: &str,
    migration: Migration<'_>,
    limits: Limits,
) -> Result<(), sqlx::Error> {
    let mut transaction = conn.begin().await?;
    (&mut *transaction)
        .execute(sqlx::raw_sql(&format!(
            "SET LOCAL search_path TO {}; SET LOCAL lock_timeout = {}; SET LOCAL statement_timeout = {}",
            quoted(schema),
            limits.lock_timeout_ms,
            limits.statement_timeout_ms
        )))
        .await?;
    (&mut *transaction)
        .execute(sqlx::raw_sql(migration.sql))
        .await?;
    sqlx::query(&format!(
        "INSERT INTO {}.{HISTORY_TABLE} (version, name, checksum) VALUES ($1, $2, $3)",
        quoted(schema)
    ))
    .bind(migration.version)
    .bind(migration.name)
    .bind(migration.checksum)
    .execute(&mut *transaction)
    .await?;
    // The product's cluster: no registry change, no idempotency claim to mark.
    #[allow(clippy::disallowed_methods)]
    transaction.commit().await
}

/// The tenant a seed is run for, bound as `$1` (id), `$2` (slug), `$3` (name).
#[derive(Debug, Clone, Copy)]
pub struct SeedTenant<'a> {
    /// Its id.
    pub id: Uuid,
    /// Its slug.
    pub slug: &'a str,
    /// Its name.
    pub name: &'a str,
}

/// Runs `statements` inside schema `schema` with the tenant bound as parameters, once: with
/// the seed marker in the same transaction. `false` when the seed had run already.
pub async fn seed_once(
    conn: &mut PgConnection,
    schema: &str,
    statements: &[String],
    tenant: SeedTenant<'_>,
    limits: Limits,
) -> Result<bool, sqlx::Error> {
    let mut transaction = conn.begin().await?;
    (&mut *transaction)
        .execute(sqlx::raw_sql(&format!(
            "SET LOCAL search_path TO {}; SET LOCAL lock_timeout = {}; SET LOCAL statement_timeout = {}",
            quoted(schema),
            limits.lock_timeout_ms,
            limits.statement_timeout_ms
        )))
        .await?;
    let marked = sqlx::query(&format!(
        "INSERT INTO {}.{SEED_TABLE} DEFAULT VALUES ON CONFLICT DO NOTHING",
        quoted(schema)
    ))
    .execute(&mut *transaction)
    .await?
    .rows_affected();
    if marked == 0 {
        return Ok(false);
    }
    for statement in statements {
        sqlx::query(statement)
            .bind(tenant.id)
            .bind(tenant.slug)
            .bind(tenant.name)
            .execute(&mut *transaction)
            .await?;
    }
    #[allow(clippy::disallowed_methods)]
    transaction.commit().await?;
    Ok(true)
}

/// Rows in each table of schema `schema`, by table name (for checking a restored backup).
pub async fn row_counts(
    conn: &mut PgConnection,
    schema: &str,
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT tablename::text FROM pg_tables WHERE schemaname = $1 ORDER BY tablename",
    )
    .bind(schema)
    .fetch_all(&mut *conn)
    .await?;
    let mut counts = Vec::with_capacity(tables.len());
    for table in tables {
        let count: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM {}.{}",
            quoted(schema),
            quoted(&table)
        ))
        .fetch_one(&mut *conn)
        .await?;
        counts.push((table, count));
    }
    Ok(counts)
}

/// A backend of a cluster, named by its process id and its start (a process id alone can be
/// reused once the backend has exited).
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct Backend {
    /// `pg_backend_pid()`.
    pub pid: i32,
    /// `pg_stat_activity.backend_start`.
    pub backend_start: chrono::DateTime<chrono::Utc>,
}

/// The backend serving `conn`.
pub async fn backend(conn: &mut PgConnection) -> Result<Backend, sqlx::Error> {
    sqlx::query_as("SELECT pid, backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()")
        .fetch_one(conn)
        .await
}

/// Asks `backend` to end (what it runs is rolled back), from another connection `conn` to
/// its cluster; answers whether it was still there (`false`: it has ended).
pub async fn terminate(conn: &mut PgConnection, backend: Backend) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar::<_, bool>(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE pid = $1 AND backend_start = $2",
    )
    .bind(backend.pid)
    .bind(backend.backend_start)
    .fetch_optional(conn)
    .await
    .map(|signalled| signalled.is_some())
}
