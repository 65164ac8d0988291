//! The one owner of tenant-registry's audit log: the Retraced-compatible event model,
//! recording inside the caller's transaction, search and export, retention, and the
//! per-tenant hash chains that make tampering evident.

mod chain;
mod event;
mod export;
mod query;
mod recorder;
mod retention;

pub use chain::{Break, Verification, hash, verify};
pub use event::{Actor, Event, Group, MAX_BATCH, Target, parse_batch};
pub use export::{EXPORT_PAGE, EventView, ExportFormat, export};
pub use query::{QueryError, apply_query};
pub use recorder::{PRODUCT, RegistryEvent, append, record};
pub use retention::{prune_expired, spawn_retention};
pub use storage::audit::{EventFilter, EventRow};

/// Events matching `filter` strictly older than the `(created, id)` position `before`,
/// newest first, at most `limit`.
pub async fn search(
    pool: &storage::PgPool,
    filter: &EventFilter,
    before: Option<(chrono::DateTime<chrono::Utc>, i64)>,
    limit: i64,
) -> Result<Vec<EventRow>, sqlx::Error> {
    storage::audit::search(pool, filter, before, limit).await
}
