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

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::HeaderValue;

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

/// A tenant as the cache holds it: its row and, once a lookup has rendered it, its answer.
/// The entry lives until the tenant changes, so every hit until then sends the same bytes
/// without decrypting, copying or serializing the row again.
pub struct CachedTenant {
    row: TenantRow,
    rendered: OnceLock<Rendered>,
}

/// A tenant's answer: the JSON body and its entity tag (bare, and as the header sends it).
#[derive(Debug, Clone)]
pub struct Rendered {
    /// The JSON of the tenant's view.
    pub body: Bytes,
    /// The entity tag, unquoted, as `If-None-Match` is compared with it.
    pub tag: String,
    /// The `ETag` header.
    pub etag: HeaderValue,
}

impl CachedTenant {
    fn new(row: TenantRow) -> Arc<Self> {
        Arc::new(Self {
            row,
            rendered: OnceLock::new(),
        })
    }

    /// The row.
    pub fn row(&self) -> &TenantRow {
        &self.row
    }

    /// The answer, rendered by `render` on the first call that succeeds.
    pub fn rendered<E>(
        &self,
        render: impl FnOnce(&TenantRow) -> Result<Rendered, E>,
    ) -> Result<&Rendered, E> {
        if let Some(rendered) = self.rendered.get() {
            return Ok(rendered);
        }
        let rendered = render(&self.row)?;
        Ok(self.rendered.get_or_init(|| rendered))
    }
}

/// A slug's tenant as the cache answers it: the one that has the slug now, or had it before.
#[derive(Clone)]
pub enum CachedMatch {
    /// The slug is the tenant's current one.
    Current(Arc<CachedTenant>),
    /// The tenant used to have the slug.
    Former(Arc<CachedTenant>),
}

impl CachedMatch {
    /// The tenant, whichever way the slug matched.
    pub fn tenant(&self) -> &Arc<CachedTenant> {
        let (Self::Current(tenant) | Self::Former(tenant)) = self;
        tenant
    }

    fn of(found: SlugMatch) -> Self {
        match found {
            SlugMatch::Current(row) => Self::Current(CachedTenant::new(row)),
            SlugMatch::Former(row) => Self::Former(CachedTenant::new(row)),
        }
    }
}

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
    row: Arc<CachedTenant>,
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
    rows: Cache<Uuid, Stamped<Arc<CachedTenant>>>,
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
    ) -> Result<Option<Arc<CachedTenant>>, sqlx::Error> {
        if !self.enabled {
            return Ok(source.by_id(id).await?.map(CachedTenant::new));
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
        let found = source.by_id(id).await?.map(CachedTenant::new);
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
    ) -> Result<Option<CachedMatch>, sqlx::Error> {
        if Slug::parse(slug).is_err() {
            return Ok(None);
        }
        if !self.enabled {
            return Ok(source.by_slug(slug).await?.map(CachedMatch::of));
        }
        if let Some(hit) = self.slugs.get(slug).await
            && self.current(&hit.read, [&hit.slug, &Depends::Tenant(hit.target.id())])
        {
            return Ok(Some(match hit.target {
                SlugTarget::Current(_) => CachedMatch::Current(hit.row),
                SlugTarget::Former(_) => CachedMatch::Former(hit.row),
            }));
        }
        if let Some(read) = self.missing_slugs.get(slug).await
            && self.current(&read, [&Depends::Slug(slug.to_owned())])
        {
            return Ok(None);
        }
        let read = self.invalidations.stamp();
        let found = source.by_slug(slug).await?.map(CachedMatch::of);
        match &found {
            Some(CachedMatch::Current(tenant)) => {
                self.remember(slug, SlugTarget::Current(tenant.row.id), tenant, read)
                    .await;
            }
            Some(CachedMatch::Former(tenant)) => {
                self.remember(slug, SlugTarget::Former(tenant.row.id), tenant, read)
                    .await;
            }
            None => self.missing_slugs.insert(slug.to_owned(), read).await,
        }
        Ok(found)
    }

    async fn remember(
        &self,
        slug: &str,
        target: SlugTarget,
        tenant: &Arc<CachedTenant>,
        read: Stamp,
    ) {
        let slug_entry = CachedSlug {
            target,
            row: Arc::clone(tenant),
            slug: Depends::Slug(slug.to_owned()),
            read,
        };
        let value = Arc::clone(tenant);
        self.rows
            .insert(tenant.row.id, Stamped { value, read })
            .await;
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
            first.row().name,
            "Before the change",
            "the read itself saw the old row"
        );
        assert!(
            cache.rows.get(&id).await.is_some(),
            "stored after the change was heard"
        );
        let second = cache.get(&source, id).await.expect("read").expect("found");
        assert_eq!(second.row().name, "After the change");
        assert_eq!(
            source.reads(),
            2,
            "the overtaken read was not served from memory"
        );
        let third = cache.get(&source, id).await.expect("read").expect("found");
        assert_eq!(third.row().name, "After the change");
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
        let name = |found: Option<CachedMatch>| match found.expect("found") {
            CachedMatch::Current(tenant) | CachedMatch::Former(tenant) => tenant.row().name.clone(),
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

    /// Answers whatever row it holds now.
    struct Current(Mutex<TenantRow>);

    impl TenantSource for Current {
        async fn by_id(&self, _: Uuid) -> Result<Option<TenantRow>, sqlx::Error> {
            Ok(Some(self.0.lock().expect("not poisoned").clone()))
        }

        async fn by_slug(&self, _: &str) -> Result<Option<SlugMatch>, sqlx::Error> {
            Ok(Some(SlugMatch::Current(
                self.0.lock().expect("not poisoned").clone(),
            )))
        }
    }

    #[tokio::test]
    async fn a_tenant_is_rendered_once_per_entry_and_again_after_it_changes() {
        let cache = TenantCache::new(100);
        let id = Uuid::new_v4();
        let source = Current(Mutex::new(row(id, "acme", "Before")));
        let renders = Mutex::new(0);
        let render = |row: &TenantRow| -> Result<Rendered, std::convert::Infallible> {
            *renders.lock().expect("not poisoned") += 1;
            Ok(Rendered {
                body: Bytes::from(row.name.clone()),
                tag: row.version.to_string(),
                etag: HeaderValue::from_static("\"1\""),
            })
        };
        let by_slug = cache.get_by_slug(&source, "acme").await.expect("read");
        let first = by_slug.expect("found").tenant().rendered(render).cloned();
        let by_id = cache.get(&source, id).await.expect("read").expect("found");
        let again = by_id.rendered(render).cloned();
        assert_eq!(first.expect("rendered").body, "Before");
        assert_eq!(again.expect("rendered").body, "Before");
        assert_eq!(*renders.lock().expect("not poisoned"), 1);

        *source.0.lock().expect("not poisoned") = row(id, "acme", "After");
        cache
            .forget(&TenantChange {
                id,
                slugs: vec!["acme".into()],
            })
            .await;
        let changed = cache.get(&source, id).await.expect("read").expect("found");
        let after = changed.rendered(render).cloned();
        assert_eq!(after.expect("rendered").body, "After");
        assert_eq!(*renders.lock().expect("not poisoned"), 2);
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
