//! The tenant lookups on every product's request path, answered from memory. Rows are
//! cached by id, slugs map to ids, and "no such tenant" is remembered briefly so unknown
//! slugs cannot hammer the database (a text that is not a slug at all is refused before
//! either is asked, and remembered unknown slugs are bounded by their weight in bytes). A trigger announces every committed change on
//! `tenants_changed`; each replica's listener forgets what the change touched, and forgets
//! everything when it reconnects, since it may have missed announcements.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use domain::Slug;
use moka::future::Cache;
use storage::PgPool;
use storage::tenants::{SlugMatch, TenantChange, TenantRow};
use uuid::Uuid;

/// Most tenants kept in memory by default (a row is well under a kilobyte).
pub const DEFAULT_ENTRIES: u64 = 200_000;
/// How long "no such tenant" is believed.
const NEGATIVE_TTL: Duration = Duration::from_secs(5);
/// What one remembered unknown slug is taken to cost besides its text (moka's entry and
/// the key's allocation), for weighing the negative cache.
const ENTRY_OVERHEAD_BYTES: u32 = 96;

/// How a slug resolves: to the tenant that has it now, or the one that had it before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlugTarget {
    Current(Uuid),
    Former(Uuid),
}

/// Tenants by id and by slug, shared by the handlers of one replica.
#[derive(Clone)]
pub struct TenantCache {
    rows: Cache<Uuid, Arc<TenantRow>>,
    slugs: Cache<String, SlugTarget>,
    missing_ids: Cache<Uuid, ()>,
    missing_slugs: Cache<String, ()>,
    /// Counts forgettings, so a row read before one is not cached after it.
    generation: Arc<AtomicU64>,
    /// False when configured with no entries: every lookup reads the database.
    enabled: bool,
}

/// A cache of at most `capacity` entries, each dropped after `ttl` when one is given.
/// Positive entries carry no TTL: PostgreSQL delivers every notification to a connected
/// listener, and a reconnect empties the cache, so a time limit would only cost memory
/// (moka keeps a write-order queue node per entry for it).
fn bounded<K, V>(capacity: u64, ttl: Option<Duration>) -> Cache<K, V>
where
    K: std::hash::Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    let builder = Cache::builder().max_capacity(capacity);
    match ttl {
        Some(ttl) => builder.time_to_live(ttl).build(),
        None => builder.build(),
    }
}

impl TenantCache {
    /// A cache of at most `entries` tenants (and as many slugs); 0 turns caching off.
    pub fn new(entries: u64) -> Self {
        Self {
            rows: bounded(entries, None),
            slugs: bounded(entries, None),
            missing_ids: bounded(entries / 10, Some(NEGATIVE_TTL)),
            missing_slugs: Cache::builder()
                .max_capacity(entries / 10 * u64::from(ENTRY_OVERHEAD_BYTES + 64))
                .weigher(|slug: &String, ()| {
                    u32::try_from(slug.len())
                        .unwrap_or(u32::MAX)
                        .saturating_add(ENTRY_OVERHEAD_BYTES)
                })
                .time_to_live(NEGATIVE_TTL)
                .build(),
            generation: Arc::new(AtomicU64::new(0)),
            enabled: entries > 0,
        }
    }

    /// The tenant with `id`.
    pub async fn get(
        &self,
        pool: &PgPool,
        id: Uuid,
    ) -> Result<Option<Arc<TenantRow>>, sqlx::Error> {
        if let Some(row) = self.rows.get(&id).await {
            return Ok(Some(row));
        }
        if self.missing_ids.contains_key(&id) {
            return Ok(None);
        }
        let generation = self.generation.load(Ordering::Acquire);
        let found = storage::tenants::get(pool, id).await?.map(Arc::new);
        if self.unchanged_since(generation) {
            match &found {
                Some(row) => self.rows.insert(id, Arc::clone(row)).await,
                None => self.missing_ids.insert(id, ()).await,
            }
        }
        Ok(found)
    }

    /// The tenant whose current or former slug is `slug`. A text that breaks the slug rule
    /// is nobody's slug: it never reaches the cache or the database.
    pub async fn get_by_slug(
        &self,
        pool: &PgPool,
        slug: &str,
    ) -> Result<Option<SlugMatch>, sqlx::Error> {
        if Slug::parse(slug).is_err() {
            return Ok(None);
        }
        if let Some(target) = self.slugs.get(slug).await {
            let (SlugTarget::Current(id) | SlugTarget::Former(id)) = target;
            if let Some(row) = self.get(pool, id).await? {
                let row = TenantRow::clone(&row);
                return Ok(Some(match target {
                    SlugTarget::Current(_) => SlugMatch::Current(row),
                    SlugTarget::Former(_) => SlugMatch::Former(row),
                }));
            }
        }
        if self.missing_slugs.contains_key(slug) {
            return Ok(None);
        }
        let generation = self.generation.load(Ordering::Acquire);
        let found = storage::tenants::get_by_slug(pool, slug).await?;
        if !self.unchanged_since(generation) {
            return Ok(found);
        }
        match &found {
            Some(SlugMatch::Current(row)) => {
                self.remember(slug, SlugTarget::Current(row.id), row).await
            }
            Some(SlugMatch::Former(row)) => {
                self.remember(slug, SlugTarget::Former(row.id), row).await
            }
            None => self.missing_slugs.insert(slug.to_owned(), ()).await,
        }
        Ok(found)
    }

    async fn remember(&self, slug: &str, target: SlugTarget, row: &TenantRow) {
        self.slugs.insert(slug.to_owned(), target).await;
        self.rows.insert(row.id, Arc::new(row.clone())).await;
    }

    fn unchanged_since(&self, generation: u64) -> bool {
        self.enabled && self.generation.load(Ordering::Acquire) == generation
    }

    /// Forgets what `change` touched: the row, and the slugs it had before and after.
    pub async fn forget(&self, change: &TenantChange) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.rows.invalidate(&change.id).await;
        self.missing_ids.invalidate(&change.id).await;
        for slug in &change.slugs {
            self.slugs.invalidate(slug).await;
            self.missing_slugs.invalidate(slug).await;
        }
    }

    /// Forgets everything.
    pub fn invalidate_all(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.rows.invalidate_all();
        self.slugs.invalidate_all();
        self.missing_ids.invalidate_all();
        self.missing_slugs.invalidate_all();
    }
}
