//! Retention of events: those that occurred more than `EVENTS_RETENTION_DAYS` ago are
//! deleted a batch at a time (`storage::retention`), so appends and reads never wait behind
//! a long delete.

use storage::PgPool;
use storage::retention::{self, BATCH};
use tokio::task::JoinHandle;

/// Runs now and every ten minutes, deleting the events that occurred more than `keep` ago.
pub(crate) fn spawn(pool: PgPool, keep: chrono::Duration) -> JoinHandle<()> {
    retention::spawn_every_ten_minutes("expired events", move || {
        let pool = pool.clone();
        async move {
            let cutoff = chrono::Utc::now() - keep;
            retention::in_batches(|| storage::events::prune(&pool, cutoff, BATCH)).await
        }
    })
}
