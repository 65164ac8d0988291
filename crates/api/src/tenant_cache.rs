//! The tenant lookups on every product's request path, answered from memory. Rows are
//! cached by id, slugs map to ids, and "no such tenant" is remembered briefly so unknown
//! slugs cannot hammer the database (a text that is not a slug at all is refused before
//! either is asked, and remembered unknown slugs are bounded by their weight in bytes).
//!
//! Triggers announce every committed change on `tenants_changed` (a tenant's row or
//! products, and its former slugs); each replica's listener forgets what the change named,
//! and forgets everything when it reconnects, since it may have missed announcements. Every
//! entry carries the [`Stamp`] taken before the read that filled it and is served only
//! while no change to its tenant or slug was heard since (`auth::invalidations`), so a read
//! that was in flight when a change was heard never serves what it saw before the change,
//! however late it stores it.

use std::sync::Arc;
use std::time::Duration;

use auth::Invalidations;
use auth::invalidations::Stamp;
use domain::Slug;
use moka::future::Cache;
use storage::tenants::{SlugMatch, TenantChange, TenantLookups, TenantRow};
use uuid::Uuid;

/// Most tenants kept in memory by default (a row is well under a kilobyte).
pub const DEFAULT_ENTRIES: u64 = 200_000;
/// How long a cached tenant or slug is served without reading it again, even when no
/// change was heard (a bound for a notification lost without a reconnect).
pub const TRUST: Duration = Duration::from_secs(300);
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

impl SlugTarget {
    fn id(self) -> Uuid {
        let (Self::Current(id) | Self::Former(id)) = self;
        id
    }
}

/// What a cached answer depends on: a change names the tenant and the slugs it touched.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Depends {
    Tenant(Uuid),
    Slug(String),
}

/// A cached answer with the stamp taken before the read that produced it.
#[derive(Clone)]
struct Stamped<V> {
    value: V,
    read: Stamp,
}

/// A slug's target and the row read with it (so a hit costs one cache lookup, not two),
/// with the scope it depends on kept ready for the check on every hit.
#[derive(Clone)]
struct CachedSlug {
    target: SlugTarget,
    row: Arc<TenantRow>,
    slug: Depends,
    read: Stamp,
}

/// Where the cache reads tenants from: the database, or in a unit test a stand-in that lets
/// a change land while a read is in flight.
pub trait TenantSource: Sync {
    /// The tenant with `id`.
    fn by_id(
        &self,
        id: Uuid,
    ) -> impl Future<Output = Result<Option<TenantRow>, sqlx::Error>> + Send;
    /// The tenant whose current or former slug is `slug`.
    fn by_slug(
        &self,
        slug: &str,
    ) -> impl Future<Output = Result<Option<SlugMatch>, sqlx::Error>> + Send;
}

impl TenantSource for TenantLookups {
    fn by_id(
        &self,
        id: Uuid,
    ) -> impl Future<Output = Result<Option<TenantRow>, sqlx::Error>> + Send {
        TenantLookups::by_id(self, id)
    }

    fn by_slug(
        &self,
        slug: &str,
    ) -> impl Future<Output = Result<Option<SlugMatch>, sqlx::Error>> + Send {
        TenantLookups::by_slug(self, slug)
    }
}

/// Tenants by id and by slug, shared by the handlers of one replica.
#[derive(Clone)]
pub struct TenantCache {
    rows: Cache<Uuid, Stamped<Arc<TenantRow>>>,
    slugs: Cache<String, CachedSlug>,
    missing_ids: Cache<Uuid, Stamp>,
    missing_slugs: Cache<String, Stamp>,
    invalidations: Arc<Invalidations<Depends>>,
    /// False when configured with no entries: every lookup reads the database.
    enabled: bool,
}

/// A cache of at most `capacity` entries, each dropped after `ttl` when one is given.
/// Positive entries carry no TTL of moka's (which would keep a write-order queue node per
/// entry): an entry past [`TRUST`] is simply not served, and replaced by the next read.
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
                .weigher(|slug: &String, _: &Stamp| {
                    u32::try_from(slug.len())
                        .unwrap_or(u32::MAX)
                        .saturating_add(ENTRY_OVERHEAD_BYTES)
                })
                .time_to_live(NEGATIVE_TTL)
                .build(),
            invalidations: Arc::new(Invalidations::new(TRUST)),
            enabled: entries > 0,
        }
    }

    fn current<'a>(&self, read: &Stamp, depends: impl IntoIterator<Item = &'a Depends>) -> bool {
        self.enabled && self.invalidations.is_current(read, depends)
    }

    /// The tenant with `id`.
    pub async fn get(
        &self,
        source: &impl TenantSource,
        id: Uuid,
    ) -> Result<Option<Arc<TenantRow>>, sqlx::Error> {
        if !self.enabled {
            return Ok(source.by_id(id).await?.map(Arc::new));
        }
        let tenant = Depends::Tenant(id);
        if let Some(hit) = self.rows.get(&id).await
            && self.current(&hit.read, [&tenant])
        {
            return Ok(Some(hit.value));
        }
        if let Some(read) = self.missing_ids.get(&id).await
            && self.current(&read, [&tenant])
        {
            return Ok(None);
        }
        let read = self.invalidations.stamp();
        let found = source.by_id(id).await?.map(Arc::new);
        // Stored even if a change was heard meanwhile: every hit checks its stamp, so what
        // was stale when stored is never served, whenever the change landed.
        match &found {
            Some(row) => {
                let value = Arc::clone(row);
                self.rows.insert(id, Stamped { value, read }).await;
            }
            None => self.missing_ids.insert(id, read).await,
        }
        Ok(found)
    }

    /// The tenant whose current or former slug is `slug`. A text that breaks the slug rule
    /// is nobody's slug: it never reaches the cache or the database.
    pub async fn get_by_slug(
        &self,
        source: &impl TenantSource,
        slug: &str,
    ) -> Result<Option<SlugMatch>, sqlx::Error> {
        if Slug::parse(slug).is_err() {
            return Ok(None);
        }
        if !self.enabled {
            return source.by_slug(slug).await;
        }
        if let Some(hit) = self.slugs.get(slug).await
            && self.current(&hit.read, [&hit.slug, &Depends::Tenant(hit.target.id())])
        {
            let row = TenantRow::clone(&hit.row);
            return Ok(Some(match hit.target {
                SlugTarget::Current(_) => SlugMatch::Current(row),
                SlugTarget::Former(_) => SlugMatch::Former(row),
            }));
        }
        if let Some(read) = self.missing_slugs.get(slug).await
            && self.current(&read, [&Depends::Slug(slug.to_owned())])
        {
            return Ok(None);
        }
        let read = self.invalidations.stamp();
        let found = source.by_slug(slug).await?;
        match &found {
            Some(SlugMatch::Current(row)) => {
                self.remember(slug, SlugTarget::Current(row.id), row, read)
                    .await;
            }
            Some(SlugMatch::Former(row)) => {
                self.remember(slug, SlugTarget::Former(row.id), row, read)
                    .await;
            }
            None => self.missing_slugs.insert(slug.to_owned(), read).await,
        }
        Ok(found)
    }

    async fn remember(&self, slug: &str, target: SlugTarget, row: &TenantRow, read: Stamp) {
        let value = Arc::new(row.clone());
        let slug_entry = CachedSlug {
            target,
            row: Arc::clone(&value),
            slug: Depends::Slug(slug.to_owned()),
            read,
        };
        self.rows.insert(row.id, Stamped { value, read }).await;
        self.slugs.insert(slug.to_owned(), slug_entry).await;
    }

    /// Forgets what `change` touched: the tenant, and the slugs it had before and after.
    pub async fn forget(&self, change: &TenantChange) {
        self.invalidations.invalidate(Depends::Tenant(change.id));
        for slug in &change.slugs {
            self.invalidations.invalidate(Depends::Slug(slug.clone()));
        }
        // Not needed for correctness (stale entries are never served), but frees them.
        self.rows.invalidate(&change.id).await;
        self.missing_ids.invalidate(&change.id).await;
        for slug in &change.slugs {
            self.slugs.invalidate(slug).await;
            self.missing_slugs.invalidate(slug).await;
        }
    }

    /// Forgets everything.
    pub fn invalidate_all(&self) {
        self.invalidations.invalidate_all();
        self.rows.invalidate_all();
        self.slugs.invalidate_all();
        self.missing_ids.invalidate_all();
        self.missing_slugs.invalidate_all();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    fn row(id: Uuid, slug: &str, name: &str) -> TenantRow {
        let now = chrono::Utc::now();
        TenantRow {
            id,
            slug: slug.to_owned(),
            name: name.to_owned(),
            status: domain::TenantStatus::Active,
            kind: domain::TenantKind::Customer,
            plan: "free".to_owned(),
            erp_id: None,
            stripe_id: None,
            trial_ends_at: None,
            contract_starts_on: None,
            contract_ends_on: None,
            sales_owner: None,
            contact_email_encrypted: None,
            oidc_issuer: None,
            oidc_organization: None,
            version: 1,
            products: Vec::new(),
            provisioning: Vec::new(),
            created_at: now,
            updated_at: now,
        }
    }

    /// A database stand-in whose first read is overtaken by a change: the change is heard
    /// (the cache forgets) after the read saw the old row and before the cache stores it.
    /// A counter checked between the read and the store missed a change heard after the
    /// check; here the store always comes after the change.
    struct OvertakenRead {
        cache: TenantCache,
        before: TenantRow,
        after: TenantRow,
        reads: Mutex<usize>,
    }

    impl OvertakenRead {
        async fn read(&self, slug: Option<&str>) -> TenantRow {
            let first = {
                let mut reads = self.reads.lock().expect("not poisoned");
                *reads += 1;
                *reads == 1
            };
            if !first {
                return self.after.clone();
            }
            let mut slugs = vec![self.before.slug.clone(), self.after.slug.clone()];
            slugs.extend(slug.map(str::to_owned));
            let change = TenantChange {
                id: self.before.id,
                slugs,
            };
            self.cache.forget(&change).await;
            self.before.clone()
        }

        fn reads(&self) -> usize {
            *self.reads.lock().expect("not poisoned")
        }
    }

    impl TenantSource for OvertakenRead {
        async fn by_id(&self, _: Uuid) -> Result<Option<TenantRow>, sqlx::Error> {
            Ok(Some(self.read(None).await))
        }

        async fn by_slug(&self, slug: &str) -> Result<Option<SlugMatch>, sqlx::Error> {
            Ok(Some(SlugMatch::Current(self.read(Some(slug)).await)))
        }
    }

    fn overtaken(cache: &TenantCache) -> OvertakenRead {
        let id = Uuid::new_v4();
        OvertakenRead {
            cache: cache.clone(),
            before: row(id, "acme", "Before the change"),
            after: row(id, "acme", "After the change"),
            reads: Mutex::new(0),
        }
    }

    #[tokio::test]
    async fn a_row_read_before_a_change_that_was_heard_is_never_served_after_it() {
        let cache = TenantCache::new(100);
        let source = overtaken(&cache);
        let id = source.before.id;
        let first = cache.get(&source, id).await.expect("read").expect("found");
        assert_eq!(
            first.name, "Before the change",
            "the read itself saw the old row"
        );
        assert!(
            cache.rows.get(&id).await.is_some(),
            "stored after the change was heard"
        );
        let second = cache.get(&source, id).await.expect("read").expect("found");
        assert_eq!(second.name, "After the change");
        assert_eq!(
            source.reads(),
            2,
            "the overtaken read was not served from memory"
        );
        let third = cache.get(&source, id).await.expect("read").expect("found");
        assert_eq!(third.name, "After the change");
        assert_eq!(
            source.reads(),
            2,
            "a read after the change is served from memory"
        );
    }

    #[tokio::test]
    async fn a_slug_read_before_a_change_that_was_heard_is_never_served_after_it() {
        let cache = TenantCache::new(100);
        let source = overtaken(&cache);
        let name = |found: Option<SlugMatch>| match found.expect("found") {
            SlugMatch::Current(row) | SlugMatch::Former(row) => row.name,
        };
        let first = cache.get_by_slug(&source, "acme").await.expect("read");
        assert_eq!(name(first), "Before the change");
        assert!(
            cache.slugs.get("acme").await.is_some(),
            "stored after the change was heard"
        );
        let second = cache.get_by_slug(&source, "acme").await.expect("read");
        assert_eq!(name(second), "After the change");
        assert_eq!(
            source.reads(),
            2,
            "the overtaken read was not served from memory"
        );
        let third = cache.get_by_slug(&source, "acme").await.expect("read");
        assert_eq!(name(third), "After the change");
        assert_eq!(
            source.reads(),
            2,
            "a read after the change is served from memory"
        );
    }

    /// A database that knows no tenant.
    struct Nowhere;

    impl TenantSource for Nowhere {
        async fn by_id(&self, _: Uuid) -> Result<Option<TenantRow>, sqlx::Error> {
            Ok(None)
        }

        async fn by_slug(&self, _: &str) -> Result<Option<SlugMatch>, sqlx::Error> {
            Ok(None)
        }
    }

    #[tokio::test]
    async fn unknown_slugs_are_remembered_within_a_bounded_weight() {
        let entries = 1_000;
        let cache = TenantCache::new(entries);
        for n in 0..20_000 {
            let slug = format!("unknown-{n:05}-{}", "a".repeat(40));
            let found = cache.get_by_slug(&Nowhere, &slug).await.expect("no error");
            assert!(found.is_none());
        }
        cache.missing_slugs.run_pending_tasks().await;
        let bound = entries / 10 * u64::from(ENTRY_OVERHEAD_BYTES + 64);
        assert!(cache.missing_slugs.entry_count() > 0, "nothing remembered");
        assert!(
            cache.missing_slugs.weighted_size() <= bound,
            "{} > {bound}",
            cache.missing_slugs.weighted_size()
        );
    }
}
