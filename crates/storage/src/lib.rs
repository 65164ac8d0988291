//! PostgreSQL access for tenant-registry: the connection pool and the embedded migrations.
//!
//! All SQL of the service lives in this crate. Functions that change data take
//! `&mut PgConnection`, so the caller's transaction composes across them.

pub mod api_keys;
pub mod audit;
pub mod backups;
pub mod domains;
pub mod events;
pub mod idempotency;
pub mod idps;
pub mod migrations;
pub mod operations;
pub mod product_migrations;
pub mod products;
pub mod projects;
pub mod provisioning;
pub mod retention;
pub mod retry;
pub mod roles;
pub mod tenant_names;
pub mod tenant_schemas;
pub mod tenants;
pub mod viewer_tokens;
pub mod webhooks;

use std::time::Duration;

pub use retry::{Transient, with_retries};
use sqlx::Connection as _;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
pub use sqlx::{PgConnection, PgPool};

/// Failures of the storage layer that a caller can act on.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The database URL could not be parsed.
    #[error("invalid database URL: {0}")]
    InvalidUrl(#[source] sqlx::Error),
    /// The database did not answer or refused the connection.
    #[error("cannot connect to the database: {0}")]
    Connect(#[source] sqlx::Error),
    /// A query failed.
    #[error("database error: {0}")]
    Query(#[from] sqlx::Error),
}

/// Whether `error` says the database cannot be had right now, rather than that a statement
/// was wrong: no connection within the pool's acquire timeout, a connection that broke, or a
/// server that is shutting down, restarting, refusing connections or cut this session off
/// (SQLSTATE class 08, 57P01 admin shutdown, 57P02 crash shutdown, 57P03 cannot connect now,
/// 53300 too many connections). The caller should come back later (503), not report a bug.
pub fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(database) => database
            .code()
            .is_some_and(|code| code.starts_with("08") || UNAVAILABLE_CODES.contains(&&*code)),
        _ => false,
    }
}

/// SQLSTATEs outside class 08 that mean the server, not the statement, is the trouble.
const UNAVAILABLE_CODES: [&str; 4] = ["57P01", "57P02", "57P03", "53300"];

/// A pooled connection idle longer than this is pinged before it is handed out (a
/// database restart or a proxy may have closed it meanwhile).
const PING_AFTER_IDLE: Duration = Duration::from_secs(5);

/// How the pool is sized and how long it waits.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Upper bound on open connections.
    pub max_connections: u32,
    /// How long a request waits for a free connection before failing.
    pub acquire_timeout: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

/// Opens a pool to `database_url` and checks that the database answers.
pub async fn connect(database_url: &str, config: &PoolConfig) -> Result<PgPool, StorageError> {
    let options: PgConnectOptions = database_url.parse().map_err(StorageError::InvalidUrl)?;
    PgPoolOptions::new()
        .max_connections(config.max_connections)
        .acquire_timeout(config.acquire_timeout)
        // A ping on every acquire doubles the round trips of a one-statement request; a
        // connection busy a moment ago is alive, and one that broke since fails its
        // statement, which answers 503 and closes it.
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for > PING_AFTER_IDLE {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
        .connect_with(options.application_name("tenant-registry"))
        .await
        .map_err(StorageError::Connect)
}

/// The earliest instant PostgreSQL's `timestamptz` holds (4714-11-24 BC). Binding an
/// earlier one fails in the database, so input times are checked against it first;
/// chrono's latest instant (year 262142) is within PostgreSQL's range.
pub fn earliest_timestamp() -> chrono::DateTime<chrono::Utc> {
    chrono::NaiveDate::from_ymd_opt(-4713, 11, 24)
        .and_then(|date| date.and_hms_opt(0, 0, 0))
        .map_or(chrono::DateTime::<chrono::Utc>::MIN_UTC, |midnight| {
            midnight.and_utc()
        })
}

/// Commits a change's `transaction`. Inside a request that carries an `Idempotency-Key`
/// ([`idempotency::ClaimScope`]) it first marks the request's claim, in the same
/// transaction: the change and the mark commit together or not at all, so a retry never
/// makes a committed change again. Every change a request makes commits through here.
pub async fn commit(
    mut transaction: sqlx::Transaction<'static, sqlx::Postgres>,
) -> Result<(), sqlx::Error> {
    idempotency::mark_claim_in_scope(&mut transaction).await?;
    #[allow(clippy::disallowed_methods)]
    transaction.commit().await?;
    Ok(())
}

/// Begins a transaction on a pooled connection, safe to cancel. sqlx 0.8's `Pool::begin`
/// counts the transaction as open only once BEGIN's answer is read: a future dropped during
/// that round trip (a request timing out, a client going away) leaves the session inside a
/// transaction nothing tracks, and the pool hands that connection to the next borrower, whose
/// writes then run inside it, answered but never committed. Here BEGIN runs in a task of its
/// own, which always reads the answer; a transaction nobody receives is dropped there, which
/// rolls it back before its connection is reused. Every use case begins its transactions
/// here (clippy refuses `Pool::begin` elsewhere).
pub async fn begin(
    pool: &PgPool,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    let pool = pool.clone();
    #[allow(clippy::disallowed_methods)]
    let beginning = tokio::spawn(async move { pool.begin().await });
    beginning
        .await
        .map_err(|_| sqlx::Error::Protocol("the task beginning a transaction failed".into()))?
}

/// A read-only snapshot (repeatable read) whose every statement PostgreSQL cancels after
/// `timeout` (SQLSTATE 57014), for reads whose cost depends on the caller's input: the work
/// a request causes in the database ends when its budget does, whatever happens to the
/// request. Dropping it ends it.
pub async fn begin_bounded(
    pool: &PgPool,
    timeout: Duration,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    let mut transaction = begin(pool).await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *transaction)
        .await?;
    sqlx::query("SELECT set_config('statement_timeout', $1, true)")
        .bind(format!("{}ms", timeout.as_millis().max(1)))
        .execute(&mut *transaction)
        .await?;
    Ok(transaction)
}

/// Subscribes to PostgreSQL notifications on `channels`, over a connection of its own.
pub async fn listen(
    pool: &PgPool,
    channels: &[&str],
) -> Result<sqlx::postgres::PgListener, sqlx::Error> {
    let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
    listener.listen_all(channels.iter().copied()).await?;
    Ok(listener)
}
