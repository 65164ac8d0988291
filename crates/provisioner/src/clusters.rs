//! Where products' clusters and hook secrets are: references in a plan resolved against the
//! registry process's `PRODUCT_…` environment (read once at start) or a mounted file, and
//! connections to a tenant's schema or database made from them.

use std::collections::BTreeMap;
use std::time::Duration;

use domain::provisioning::{self, Isolation, Plan, Reference};
use sqlx::ConnectOptions as _;
use sqlx::PgConnection;
use sqlx::postgres::PgConnectOptions;

use crate::StepError;

/// How long connecting to a product's cluster may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the view's reachability check of one cluster may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How many reachability checks of one view run at once.
pub const PROBES_AT_ONCE: usize = 8;
/// How long a reachability answer is reused: views asked meanwhile (a tenant polling, many
/// clients at once) share one check instead of each opening a connection to the cluster.
pub const PROBE_REUSE: Duration = Duration::from_secs(5);
/// How many reachability answers are kept.
const PROBE_ANSWERS: u64 = 10_000;

/// A tenant's schema or database to look for on its product's cluster.
#[derive(Debug, Clone, Copy)]
pub struct Probe<'a> {
    /// The product.
    pub product: &'a str,
    /// The plan its run ran (it names the cluster).
    pub plan: &'a Plan,
    /// `schema` or `database`.
    pub isolation: &'a str,
    /// The schema's or database's name.
    pub name: &'a str,
}

/// The references a plan can name, resolved.
#[derive(Clone)]
pub struct Clusters {
    env: BTreeMap<String, String>,
    /// Recent reachability answers by (product, isolation, name); concurrent checks of the
    /// same one wait for a single probe (moka's `get_with`).
    answers: moka::future::Cache<(String, String, String), bool>,
}

impl Default for Clusters {
    fn default() -> Self {
        Self::with(std::iter::empty())
    }
}

impl std::fmt::Debug for Clusters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clusters")
            .field("variables", &self.env.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Clusters {
    /// The `PRODUCT_…` variables of this process's environment.
    pub fn from_env() -> Self {
        Self::with(std::env::vars())
    }

    /// The `PRODUCT_…` variables of `variables` (tests pass their own).
    pub fn with(variables: impl IntoIterator<Item = (String, String)>) -> Self {
        Self {
            env: variables
                .into_iter()
                .filter(|(name, _)| name.starts_with(provisioning::ENV_PREFIX))
                .collect(),
            answers: moka::future::Cache::builder()
                .max_capacity(PROBE_ANSWERS)
                .time_to_live(PROBE_REUSE)
                .build(),
        }
    }

    /// How many variables were found, for the start-up log.
    pub fn len(&self) -> usize {
        self.env.len()
    }

    /// Whether none were found.
    pub fn is_empty(&self) -> bool {
        self.env.is_empty()
    }

    async fn resolve(&self, reference: &Reference, what: &str) -> Result<String, StepError> {
        match reference {
            Reference::Env(name) => self.env.get(name).cloned().ok_or_else(|| {
                StepError::Config(format!(
                    "{what}: the environment variable {name} is not set"
                ))
            }),
            Reference::File(path) => tokio::fs::read_to_string(path)
                .await
                .map(|text| text.trim().to_owned())
                .map_err(|_| StepError::Config(format!("{what}: the file {path} cannot be read"))),
        }
    }

    /// The cluster URL product `product`'s plan names (its `PRODUCT_DATABASE_…` default).
    pub async fn cluster_url(
        &self,
        product: &str,
        reference: Option<&Reference>,
    ) -> Result<String, StepError> {
        let default = Reference::Env(provisioning::default_cluster_env(product));
        self.resolve(reference.unwrap_or(&default), "the product's cluster")
            .await
    }

    /// The hook secret product `product`'s plan names (its `PRODUCT_HOOK_SECRET_…` default).
    pub async fn hook_secret(
        &self,
        product: &str,
        reference: Option<&Reference>,
    ) -> Result<String, StepError> {
        let default = Reference::Env(provisioning::default_hook_secret_env(product));
        self.resolve(reference.unwrap_or(&default), "the product's hook secret")
            .await
    }

    /// A connection to `url`'s database, or to database `database` on its cluster.
    pub async fn connect(url: &str, database: Option<&str>) -> Result<PgConnection, StepError> {
        let options: PgConnectOptions = url.parse().map_err(|_| {
            StepError::Config("the product's cluster URL is not a PostgreSQL URL".to_owned())
        })?;
        let options = match database {
            Some(name) => options.database(name),
            None => options,
        }
        .application_name("tenant-registry-provisioner");
        tokio::time::timeout(CONNECT_TIMEOUT, options.connect())
            .await
            .map_err(|_| StepError::Unreachable("no connection within 10 s".to_owned()))?
            .map_err(|error| StepError::Unreachable(connect_failure(&error)))
    }

    /// Whether the cluster of `product`'s `plan` answers and holds the tenant's schema or
    /// database `name`, asked within two seconds.
    pub async fn holds(&self, product: &str, plan: &Plan, isolation: &str, name: &str) -> bool {
        let probe = async {
            let reference = plan.database().and_then(|(_, reference)| reference);
            let url = self.cluster_url(product, reference).await.ok()?;
            if isolation == "database" {
                Self::connect(&url, Some(name)).await.ok().map(|_| true)
            } else {
                let mut conn = Self::connect(&url, None).await.ok()?;
                storage::tenant_schemas::schema_exists(&mut conn, name)
                    .await
                    .ok()
            }
        };
        tokio::time::timeout(PROBE_TIMEOUT, probe)
            .await
            .ok()
            .flatten()
            .unwrap_or(false)
    }
}

impl Clusters {
    /// [`Clusters::holds`] for each of `probes` (`None` where there is nothing to look for),
    /// in their order: at most [`PROBES_AT_ONCE`] at a time, each within its two seconds, so
    /// a cluster that does not answer delays the answer by one deadline, not one per product.
    pub async fn reachable(&self, probes: &[Option<Probe<'_>>]) -> Vec<Option<bool>> {
        let gate = tokio::sync::Semaphore::new(PROBES_AT_ONCE);
        futures::future::join_all(probes.iter().map(|probe| self.probe(&gate, probe))).await
    }

    async fn probe(
        &self,
        gate: &tokio::sync::Semaphore,
        probe: &Option<Probe<'_>>,
    ) -> Option<bool> {
        let probe = probe.as_ref()?;
        let key = (
            probe.product.to_owned(),
            probe.isolation.to_owned(),
            probe.name.to_owned(),
        );
        Some(
            self.answers
                .get_with(key, async {
                    let _turn = gate.acquire().await;
                    self.holds(probe.product, probe.plan, probe.isolation, probe.name)
                        .await
                })
                .await,
        )
    }
}

/// A connection failure in words that name no host, user or password.
fn connect_failure(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::Database(database) => format!(
            "the product's cluster refused the connection (SQLSTATE {})",
            database.code().unwrap_or_default()
        ),
        _ => "the product's cluster could not be reached".to_owned(),
    }
}

/// The isolation a plan's database step asks for, as stored.
pub fn isolation_label(isolation: Isolation) -> &'static str {
    match isolation {
        Isolation::Schema => "schema",
        Isolation::Database => "database",
    }
}
