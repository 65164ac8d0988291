//! Retention: events older than the configured number of days (counted from when the
//! registry received them) are deleted in small batches, each its own short transaction,
//! so neither ingest nor search waits on a long lock.

use std::time::Duration;

use chrono::Utc;
use sqlx::PgPool;

/// Events deleted per transaction.
const BATCH: i64 = 5000;
/// How often the background task looks for expired events.
const EVERY: Duration = Duration::from_secs(600);
/// The pause between two batches, leaving room to other work.
const BREATHER: Duration = Duration::from_millis(50);

/// Deletes every event received more than `keep` ago, a batch at a time; returns how many.
pub async fn prune_expired(pool: &PgPool, keep: chrono::Duration) -> Result<u64, sqlx::Error> {
    let cutoff = Utc::now() - keep;
    let mut total = 0;
    loop {
        let deleted = storage::audit::prune(pool, cutoff, BATCH).await?;
        total += deleted;
        if deleted == 0 {
            return Ok(total);
        }
        tokio::time::sleep(BREATHER).await;
    }
}

/// Runs [`prune_expired`] now and every ten minutes until the runtime stops.
pub fn spawn_retention(pool: PgPool, keep: chrono::Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(EVERY);
        loop {
            ticks.tick().await;
            match prune_expired(&pool, keep).await {
                Ok(0) => {}
                Ok(deleted) => tracing::info!(deleted, "expired audit events deleted"),
                Err(error) => tracing::warn!(%error, "audit retention failed; retrying later"),
            }
        }
    })
}
