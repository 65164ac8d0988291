//! Tenant lookups by id and by slug on the request path, coalesced: lookups that arrive while
//! earlier ones are being answered wait together and are answered by one statement per kind
//! (`= ANY($1)`; former slugs in a second one, only for slugs no tenant has now), so under
//! load the database sees one round trip per batch instead of one per request. A lone lookup still goes out at once, as a batch of one.
//!
//! At most [`BATCHES_IN_FLIGHT`] batches run at a time; what arrives meanwhile queues and
//! leaves as the next batch (at most [`MAX_BATCH`] lookups). A lookup whose caller gave up
//! is still answered, to nobody: the statement is shared with the others in its batch. The
//! queue is not bounded here: its callers are requests, which the listener's connection
//! limits bound.

use std::collections::HashMap;
use std::sync::Arc;

use sqlx::{FromRow, PgPool};
use tokio::sync::{Semaphore, mpsc, oneshot};
use uuid::Uuid;

use super::{RawTenant, SlugMatch, TenantRow};

/// Batches answered at once. Measured on 2 cores at 64 concurrent lookups (`cargo xtask
/// bench --miss-path-only`): 1 or 2 in flight answer about 26,000 lookups/s, 4 about 18,000
/// (smaller batches, more round trips and wake-ups). Two, so that one slow statement does
/// not hold every lookup.
pub const BATCHES_IN_FLIGHT: usize = 2;
/// Most lookups one statement answers.
pub const MAX_BATCH: usize = 128;

/// The tenants with one of the ids.
const BY_IDS: &str = concat!(
    "SELECT ",
    tenant_columns!(),
    " FROM tenants t WHERE t.id = ANY($1)"
);
/// The tenants whose current slug is one of the slugs.
const BY_SLUGS: &str = concat!(
    "SELECT ",
    tenant_columns!(),
    " FROM tenants t WHERE t.slug = ANY($1)"
);
/// Tenants that once had one of the slugs, for the slugs no tenant has now.
const BY_FORMER_SLUGS: &str = concat!(
    "SELECT ",
    tenant_columns!(),
    ", h.slug AS former FROM tenants t JOIN tenant_slug_history h ON h.tenant_id = t.id
      WHERE h.slug = ANY($1)"
);

/// What a caller asks for.
#[derive(Debug)]
enum Wanted {
    Id(Uuid),
    Slug(String),
}

type Answer = Result<Option<SlugMatch>, Arc<sqlx::Error>>;

struct Lookup {
    wanted: Wanted,
    reply: oneshot::Sender<Answer>,
}

/// The coalescing reader; cheap to clone, one per process.
#[derive(Clone)]
pub struct TenantLookups {
    requests: mpsc::UnboundedSender<Lookup>,
}

impl TenantLookups {
    /// Starts the task that batches lookups over `pool`; it ends when the last clone is
    /// dropped. Needs a Tokio runtime.
    pub fn start(pool: PgPool) -> Self {
        let (requests, queue) = mpsc::unbounded_channel();
        tokio::spawn(dispatch(pool, queue));
        Self { requests }
    }

    /// The tenant with `id`.
    pub async fn by_id(&self, id: Uuid) -> Result<Option<TenantRow>, sqlx::Error> {
        Ok(self.ask(Wanted::Id(id)).await?.map(|found| {
            let (SlugMatch::Current(row) | SlugMatch::Former(row)) = found;
            row
        }))
    }

    /// The tenant whose current slug is `slug`, or else the one that used to have it.
    pub async fn by_slug(&self, slug: &str) -> Result<Option<SlugMatch>, sqlx::Error> {
        self.ask(Wanted::Slug(slug.to_owned())).await
    }

    #[tracing::instrument(
        level = "info",
        name = "db.tenant_lookup",
        skip_all,
        fields(otel.name = "db tenant lookup", db.system.name = "postgresql")
    )]
    async fn ask(&self, wanted: Wanted) -> Result<Option<SlugMatch>, sqlx::Error> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Lookup { wanted, reply })
            .map_err(|_| sqlx::Error::WorkerCrashed)?;
        match answer.await {
            Ok(Ok(found)) => Ok(found),
            Ok(Err(shared)) => Err(shared_error(&shared)),
            Err(_) => Err(sqlx::Error::WorkerCrashed),
        }
    }
}

/// One batch's failure, as each of its callers receives it. sqlx's errors cannot be cloned,
/// so each caller gets one of the same class: unavailable stays unavailable (503), anything
/// else stays an internal error with the original message.
fn shared_error(error: &sqlx::Error) -> sqlx::Error {
    match error {
        sqlx::Error::PoolTimedOut => sqlx::Error::PoolTimedOut,
        sqlx::Error::PoolClosed => sqlx::Error::PoolClosed,
        sqlx::Error::WorkerCrashed => sqlx::Error::WorkerCrashed,
        _ if crate::is_unavailable(error) => sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            error.to_string(),
        )),
        _ => sqlx::Error::Protocol(error.to_string()),
    }
}

async fn dispatch(pool: PgPool, mut queue: mpsc::UnboundedReceiver<Lookup>) {
    let in_flight = Arc::new(Semaphore::new(BATCHES_IN_FLIGHT));
    // A permit first, then the lookups: while every batch is busy, arrivals queue and
    // leave together.
    while let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await {
        let Some(first) = queue.recv().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let pool = pool.clone();
        tokio::spawn(async move {
            answer(&pool, batch).await;
            drop(permit);
        });
    }
}

async fn answer(pool: &PgPool, batch: Vec<Lookup>) {
    let mut ids = Vec::new();
    let mut slugs = Vec::new();
    for lookup in &batch {
        match &lookup.wanted {
            Wanted::Id(id) => ids.push(*id),
            Wanted::Slug(slug) => slugs.push(slug.as_str()),
        }
    }
    match fetch(pool, &ids, &slugs).await {
        Ok(found) => {
            for lookup in batch {
                let answer = match &lookup.wanted {
                    Wanted::Id(id) => found.by_id.get(id).cloned().map(SlugMatch::Current),
                    Wanted::Slug(slug) => found.by_slug.get(slug).cloned(),
                };
                let _ = lookup.reply.send(Ok(answer));
            }
        }
        Err(error) => {
            let shared = Arc::new(error);
            for lookup in batch {
                let _ = lookup.reply.send(Err(Arc::clone(&shared)));
            }
        }
    }
}

/// A tenant with the former slug that found it.
#[derive(FromRow)]
struct RawFormerMatch {
    #[sqlx(flatten)]
    tenant: RawTenant,
    former: String,
}

/// What one batch found.
#[derive(Default)]
struct Found {
    by_id: HashMap<Uuid, TenantRow>,
    by_slug: HashMap<String, SlugMatch>,
}

/// Every tenant the batch names. A former slug answers only when no tenant has it as its
/// current slug, as a single lookup does.
async fn fetch(pool: &PgPool, ids: &[Uuid], slugs: &[&str]) -> Result<Found, sqlx::Error> {
    let mut found = Found::default();
    let mut conn = pool.acquire().await?;
    if !ids.is_empty() {
        let rows = sqlx::query_as::<_, RawTenant>(BY_IDS)
            .bind(ids)
            .fetch_all(&mut *conn)
            .await?;
        for raw in rows {
            let row = TenantRow::try_from(raw)?;
            found.by_id.insert(row.id, row);
        }
    }
    if !slugs.is_empty() {
        let rows = sqlx::query_as::<_, RawTenant>(BY_SLUGS)
            .bind(slugs)
            .fetch_all(&mut *conn)
            .await?;
        for raw in rows {
            let row = TenantRow::try_from(raw)?;
            found
                .by_slug
                .insert(row.slug.clone(), SlugMatch::Current(row));
        }
        // A second round trip only for slugs nobody has now (unknown or renamed).
        let missing: Vec<&str> = slugs
            .iter()
            .copied()
            .filter(|slug| !found.by_slug.contains_key(*slug))
            .collect();
        if !missing.is_empty() {
            let rows = sqlx::query_as::<_, RawFormerMatch>(BY_FORMER_SLUGS)
                .bind(missing)
                .fetch_all(&mut *conn)
                .await?;
            for raw in rows {
                let row = TenantRow::try_from(raw.tenant)?;
                found.by_slug.insert(raw.former, SlugMatch::Former(row));
            }
        }
    }
    Ok(found)
}
