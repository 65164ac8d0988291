//! The backends a step opens on a product's cluster, so that a step abandoned because its
//! lease was lost stops what it was running there. Dropping the step's connection is not
//! enough: PostgreSQL notices a client gone only when it next reads or writes, so a
//! migration waiting on a lock or running a long statement would go on (holding its locks)
//! while another replica takes the run up.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sqlx::PgConnection;
use storage::tenant_schemas::{self, Backend};

use crate::StepError;
use crate::clusters::Clusters;

/// How long stopping one cluster's backends may take in all.
const STOP_WITHIN: Duration = Duration::from_secs(10);
/// How often a backend asked to end is looked for again.
const LOOK_EVERY: Duration = Duration::from_millis(50);

/// The backends one step opened, by cluster URL.
#[derive(Clone, Default)]
pub struct Backends(Arc<Mutex<Vec<(String, Backend)>>>);

impl Backends {
    /// A connection to `url`'s database, or to database `database` on its cluster, whose
    /// backend is recorded.
    pub async fn connect(
        &self,
        url: &str,
        database: Option<&str>,
    ) -> Result<PgConnection, StepError> {
        let mut conn = Clusters::connect(url, database).await?;
        let backend = tenant_schemas::backend(&mut conn).await?;
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((url.to_owned(), backend));
        Ok(conn)
    }

    /// Ends every recorded backend that still runs, each from a connection of its own to its
    /// cluster, and waits (at most ten seconds a cluster) until they are gone. Failures are
    /// logged: the statement timeout still bounds what is left.
    pub async fn stop(&self) {
        let recorded = std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner));
        let mut urls: Vec<&str> = recorded.iter().map(|(url, _)| url.as_str()).collect();
        urls.sort_unstable();
        urls.dedup();
        for url in urls {
            let backends: Vec<Backend> = recorded
                .iter()
                .filter(|(of, _)| of == url)
                .map(|(_, backend)| *backend)
                .collect();
            match tokio::time::timeout(STOP_WITHIN, end(url, &backends)).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    tracing::warn!(%error, "provisioning: cannot stop an abandoned step's backends")
                }
                Err(_) => tracing::warn!(
                    "provisioning: an abandoned step's backends did not end within 10 s"
                ),
            }
        }
    }
}

async fn end(url: &str, backends: &[Backend]) -> Result<(), StepError> {
    let mut conn = Clusters::connect(url, None).await?;
    for backend in backends {
        while tenant_schemas::terminate(&mut conn, *backend).await? {
            tokio::time::sleep(LOOK_EVERY).await;
        }
    }
    Ok(())
}
