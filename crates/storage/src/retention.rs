//! Deleting expired rows without getting in anyone's way: a batch per short statement, a
//! pause between batches, a run every ten minutes. Audit retention, the idempotency sweep
//! and event retention all run this way.

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinHandle;

/// Rows deleted per statement.
pub const BATCH: i64 = 5000;
/// How often a background run looks for expired rows.
const EVERY: Duration = Duration::from_secs(600);
/// The pause between two batches, leaving room to other work.
const BREATHER: Duration = Duration::from_millis(50);

/// Calls `delete_batch` (which deletes up to [`BATCH`] rows and says how many) until it
/// deletes nothing; returns how many rows went.
pub async fn in_batches<F, Fut>(mut delete_batch: F) -> Result<u64, sqlx::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<u64, sqlx::Error>>,
{
    let mut total = 0;
    loop {
        let deleted = delete_batch().await?;
        total += deleted;
        if deleted == 0 {
            return Ok(total);
        }
        tokio::time::sleep(BREATHER).await;
    }
}

/// Runs `run` (one pass over the expired rows, saying how many it deleted) now and every
/// ten minutes until the runtime stops; `what` names the rows in the log.
pub fn spawn_every_ten_minutes<F, Fut>(what: &'static str, mut run: F) -> JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = Result<u64, sqlx::Error>> + Send,
{
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(EVERY);
        loop {
            ticks.tick().await;
            match run().await {
                Ok(0) => {}
                Ok(deleted) => tracing::info!(deleted, "{what} deleted"),
                Err(error) => tracing::warn!(%error, "deleting {what} failed; retrying later"),
            }
        }
    })
}
