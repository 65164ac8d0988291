//! The provisioning runner: leases due runs (one tenant's runs one at a time, different
//! tenants in parallel, never one run on two replicas), runs each step of the product's plan
//! on the product's own cluster (a schema or database per tenant, the registered migrations,
//! the seed, the default roles, the hook), and undoes it on the way out with a `pg_dump`
//! backup before any drop. Its records go through `registry::provisioning::runs`, each in
//! one transaction guarded by the run's lease.

mod backends;
pub mod backup;
pub mod bucket;
pub mod clusters;
mod lease;
mod runner;
mod steps;

use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use storage::PgPool;

pub use backup::BackupStore;
pub use bucket::Bucket;
pub use clusters::{Clusters, Probe};
pub use runner::{Observer, Pass, StepReport};

/// Why a step failed, in words for the tenant's operators (no host, user or password).
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// The plan names something this process does not have (a variable, a file).
    #[error("{0}")]
    Config(String),
    /// The product's cluster did not answer.
    #[error("{0}")]
    Unreachable(String),
    /// A migration failed.
    #[error("{0}")]
    Migration(String),
    /// The product's hook failed.
    #[error("{0}")]
    Hook(String),
    /// A default role's name is the tenant's already, from elsewhere.
    #[error("{0}")]
    Roles(String),
    /// A backup could not be taken or checked.
    #[error("{0}")]
    Backup(String),
    /// A statement on the product's cluster failed.
    #[error("the product's cluster: {0}")]
    Cluster(String),
    /// The registry's own database failed.
    #[error("the registry's database: {0}")]
    Registry(String),
}

impl From<sqlx::Error> for StepError {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::Database(database) => StepError::Cluster(format!(
                "{} (SQLSTATE {})",
                database.message(),
                database.code().unwrap_or_default()
            )),
            _ => {
                StepError::Unreachable("the connection to the product's cluster failed".to_owned())
            }
        }
    }
}

impl From<registry::RegistryError> for StepError {
    fn from(error: registry::RegistryError) -> Self {
        StepError::Registry(error.to_string())
    }
}

/// How the runner runs.
#[derive(Debug, Clone)]
pub struct ProvisionerConfig {
    /// Runs in flight at once on this replica.
    pub concurrency: usize,
    /// How long a lease holds; renewed at a third of it while a step runs.
    pub lease: TimeDelta,
    /// The first retry's delay, doubled at each failure (at most an hour).
    pub retry_base: TimeDelta,
    /// How long a product has to report back after answering its hook with 202.
    pub report_within: TimeDelta,
    /// How often the queue is looked at when idle.
    pub poll: Duration,
    /// How long a migration or seed waits for a lock in the tenant's schema, and runs.
    pub limits: storage::tenant_schemas::Limits,
}

impl Default for ProvisionerConfig {
    fn default() -> Self {
        Self {
            concurrency: 8,
            lease: TimeDelta::seconds(60),
            retry_base: TimeDelta::seconds(10),
            report_within: TimeDelta::hours(24),
            poll: Duration::from_secs(1),
            limits: storage::tenant_schemas::Limits {
                lock_timeout_ms: 30_000,
                statement_timeout_ms: 15 * 60 * 1000,
            },
        }
    }
}

/// The runner's shared parts.
#[derive(Clone)]
pub struct Provisioner {
    pool: PgPool,
    clusters: Arc<Clusters>,
    egress: egress::Egress,
    backups: Arc<BackupStore>,
    config: ProvisionerConfig,
    observer: Option<Arc<dyn Observer>>,
}

impl Provisioner {
    /// A runner over the registry's `pool`, reaching products' clusters through `clusters`,
    /// their hooks through `egress`, keeping backups in `backups`.
    pub fn new(
        pool: PgPool,
        clusters: Arc<Clusters>,
        egress: egress::Egress,
        backups: BackupStore,
        config: ProvisionerConfig,
    ) -> Self {
        Self {
            pool,
            clusters,
            egress,
            backups: Arc::new(backups),
            config,
            observer: None,
        }
    }

    /// Reports each step to `observer` (metrics).
    pub fn observed_by(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observer = Some(observer);
        self
    }
}
