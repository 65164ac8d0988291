//! Coalesced tenant lookups against a real PostgreSQL: every caller in a batch gets its own
//! answer, former slugs answer as a single lookup did, and a failure reaches every caller.

use sqlx::PgPool;
use storage::tenants::{SlugMatch, TenantLookups};
use testkit::TestDb;
use uuid::Uuid;

async fn insert_tenant(pool: &PgPool, slug: &str) -> Uuid {
    crate::schema::insert_tenant(pool, slug)
        .await
        .expect("tenant")
}

async fn rename(pool: &PgPool, id: Uuid, from: &str, to: &str) {
    sqlx::query("UPDATE tenants SET slug = $2 WHERE id = $1")
        .bind(id)
        .bind(to)
        .execute(pool)
        .await
        .expect("rename");
    sqlx::query("INSERT INTO tenant_slug_history (slug, tenant_id) VALUES ($1, $2)")
        .bind(from)
        .bind(id)
        .execute(pool)
        .await
        .expect("former slug");
}

#[tokio::test]
async fn concurrent_lookups_each_get_their_own_tenant() {
    let db = TestDb::migrated().await;
    let mut tenants = Vec::new();
    for index in 0..40 {
        let slug = format!("tenant-{index}");
        tenants.push((insert_tenant(db.pool(), &slug).await, slug));
    }
    let lookups = TenantLookups::start(db.pool().clone());
    let mut asking = tokio::task::JoinSet::new();
    for round in 0..5 {
        for (id, slug) in &tenants {
            let (lookups, id, slug) = (lookups.clone(), *id, slug.clone());
            asking.spawn(async move {
                let by_id = lookups.by_id(id).await.expect("by id").expect("found");
                assert_eq!((by_id.id, by_id.slug.as_str()), (id, slug.as_str()));
                let by_slug = lookups.by_slug(&slug).await.expect("by slug");
                assert!(
                    matches!(&by_slug, Some(SlugMatch::Current(row)) if row.id == id),
                    "{slug} in round {round}: {by_slug:?}"
                );
                let unknown = format!("nobody-{round}-{slug}");
                assert_eq!(lookups.by_slug(&unknown).await.expect("unknown"), None);
                assert_eq!(lookups.by_id(Uuid::new_v4()).await.expect("no id"), None);
            });
        }
    }
    let mut answered = 0;
    while let Some(done) = asking.join_next().await {
        done.expect("a lookup task panicked");
        answered += 1;
    }
    assert_eq!(answered, 200);
}

#[tokio::test]
async fn a_former_slug_answers_as_former_unless_a_tenant_has_it_now() {
    let db = TestDb::migrated().await;
    let renamed = insert_tenant(db.pool(), "old-name").await;
    rename(db.pool(), renamed, "old-name", "new-name").await;
    let lookups = TenantLookups::start(db.pool().clone());

    let (former, current) = tokio::join!(lookups.by_slug("old-name"), lookups.by_slug("new-name"));
    assert!(
        matches!(former.expect("former"), Some(SlugMatch::Former(row)) if row.id == renamed && row.slug == "new-name")
    );
    assert!(
        matches!(current.expect("current"), Some(SlugMatch::Current(row)) if row.id == renamed)
    );

    // Bypassing the API's rule, another tenant takes the old name: the current holder wins.
    let taker = insert_tenant(db.pool(), "old-name").await;
    let found = lookups.by_slug("old-name").await.expect("lookup");
    assert!(matches!(found, Some(SlugMatch::Current(row)) if row.id == taker));
}

#[tokio::test]
async fn a_closed_pool_fails_every_waiting_lookup_as_unavailable() {
    let db = TestDb::migrated().await;
    let id = insert_tenant(db.pool(), "closing").await;
    let pool = storage::connect(db.url(), &storage::PoolConfig::default())
        .await
        .expect("pool");
    let lookups = TenantLookups::start(pool.clone());
    assert!(lookups.by_id(id).await.expect("open pool").is_some());
    pool.close().await;
    let (first, second) = tokio::join!(lookups.by_id(id), lookups.by_slug("closing"));
    for failed in [first.map(|_| ()), second.map(|_| ())] {
        let error = failed.expect_err("a closed pool answers nothing");
        assert!(storage::is_unavailable(&error), "{error}");
    }
}
