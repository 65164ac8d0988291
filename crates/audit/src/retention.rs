//! Retention: events older than the configured number of days (counted from when the
//! registry received them) are deleted in small batches, each its own short transaction,
//! so neither ingest nor search waits on a long lock.

use chrono::Utc;
use sqlx::PgPool;
use storage::retention::{self, BATCH};

/// Deletes every event received more than `keep` ago, a batch at a time; returns how many.
pub async fn prune_expired(pool: &PgPool, keep: chrono::Duration) -> Result<u64, sqlx::Error> {
    let cutoff = Utc::now() - keep;
    retention::in_batches(|| storage::audit::prune(pool, cutoff, BATCH)).await
}

/// Runs [`prune_expired`] now and every ten minutes until the runtime stops.
pub fn spawn_retention(pool: PgPool, keep: chrono::Duration) -> tokio::task::JoinHandle<()> {
    retention::spawn_every_ten_minutes("expired audit events", move || {
        let pool = pool.clone();
        async move { prune_expired(&pool, keep).await }
    })
}
