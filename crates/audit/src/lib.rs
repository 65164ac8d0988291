//! The one owner of tenant-registry's audit log: the Retraced-compatible event model,
//! recording inside the caller's transaction, search and export, retention, and the
//! per-tenant hash chains that make tampering evident.

mod chain;
mod event;
mod export;
mod query;
mod recorder;
mod retention;
mod retraced_hash;
mod verify;

pub use chain::{canonical_ip, hash};
pub use event::{
    Actor, CREATED_AHEAD, EARLIEST_CREATED, Event, Group, MAX_BATCH, Target, parse_batch,
};
pub use export::{EXPORT_PAGE, EventView, ExportFormat, ExportOutcome, export};
pub use query::{MAX_Q_CHARS, MAX_TERM_CHARS, MAX_TERMS, MAX_WORDS, QueryError, apply_query};
pub use recorder::{Appended, PRODUCT, RegistryEvent, append, append_identified, record};
pub use retention::{prune_expired, spawn_retention};
pub use retraced_hash::{RetracedHashInput, retraced_hash, retraced_hash_target};
pub use storage::audit::{EventFilter, EventRow};
pub use verify::{
    BrokenRange, CHECKPOINT_EVERY, FULL_PAGE, Mode, Reason, Verification, VerifyError, verify,
};

/// Events matching `filter` strictly older than the `(created, id)` position `before`,
/// newest first, at most `limit`; the query is cancelled after `statement_timeout`.
#[tracing::instrument(
    level = "info",
    name = "db.audit_search",
    skip_all,
    fields(otel.name = "db audit search", db.system.name = "postgresql")
)]
pub async fn search(
    pool: &storage::PgPool,
    filter: &EventFilter,
    before: Option<(chrono::DateTime<chrono::Utc>, i64)>,
    limit: i64,
    statement_timeout: std::time::Duration,
) -> Result<Vec<EventRow>, sqlx::Error> {
    let mut snapshot = storage::begin_bounded(pool, statement_timeout).await?;
    storage::audit::search(&mut snapshot, filter, before, limit).await
}

/// [`search`], with how many events match `filter` in all (whatever `before`), both read in
/// one snapshot so the count and the page agree.
#[tracing::instrument(
    level = "info",
    name = "db.audit_search",
    skip_all,
    fields(otel.name = "db audit search", db.system.name = "postgresql")
)]
pub async fn search_counted(
    pool: &storage::PgPool,
    filter: &EventFilter,
    before: Option<(chrono::DateTime<chrono::Utc>, i64)>,
    limit: i64,
    statement_timeout: std::time::Duration,
) -> Result<(Vec<EventRow>, i64), sqlx::Error> {
    let mut snapshot = storage::begin_bounded(pool, statement_timeout).await?;
    let total = storage::audit::count(&mut snapshot, filter).await?;
    let rows = storage::audit::search(&mut snapshot, filter, before, limit).await?;
    Ok((rows, total))
}
