//! A product with a plan, tenants subscribed to it, and a runner driven pass by pass.

use std::sync::Arc;

use auth::{Principal, PrincipalKind};
use chrono::TimeDelta;
use domain::product::Manifest;
use domain::{Scope, Slug, TenantWrite};
use provisioner::{BackupStore, Clusters, Pass, Provisioner, ProvisionerConfig};
use registry::Actor;
use registry::product_migrations::{self, Listed};
use serde_json::{Value, json};
use storage::PgPool;
use uuid::Uuid;

/// A platform admin, as the use cases' caller.
pub fn admin() -> Principal {
    Principal {
        kind: PrincipalKind::PlatformKey,
        tenant_id: None,
        scopes: [Scope::PlatformAdmin].into_iter().collect(),
        key_id: Some(Uuid::new_v4()),
        subject: None,
        product: None,
        expires_at: None,
        previous_secret: false,
    }
}

pub fn actor(principal: &Principal) -> Actor<'_> {
    Actor {
        principal,
        source_ip: None,
    }
}

/// Publishes product `id` with `plan` as its provisioning plan.
pub async fn product(pool: &PgPool, id: &str, plan: Value) {
    let manifest: Manifest =
        serde_json::from_value(json!({"name": id, "provisioning": plan})).expect("a manifest");
    assert!(manifest.problems().is_empty(), "{:?}", manifest.problems());
    let principal = admin();
    registry::products::publish(
        pool,
        &actor(&principal),
        &Slug::parse(id).expect("an id"),
        &manifest,
    )
    .await
    .expect("published");
}

/// Registers `migrations` (`(version, sql)`) for product `id`; answers the fleet operation.
pub async fn migrations(pool: &PgPool, id: &str, migrations: &[(i64, &str)]) -> Option<Uuid> {
    let listed = migrations
        .iter()
        .map(|(version, sql)| Listed {
            version: *version,
            name: format!("m{version}"),
            sql: (*sql).to_owned(),
        })
        .collect();
    let checked = product_migrations::check(listed).expect("a list");
    let principal = admin();
    product_migrations::register(
        pool,
        &actor(&principal),
        &Slug::parse(id).expect("an id"),
        &checked,
    )
    .await
    .expect("registered")
    .operation_id
}

/// A tenant, subscribed to `product`.
pub async fn subscribed_tenant(pool: &PgPool, slug: &str, product: &str) -> Uuid {
    let mut conn = pool.acquire().await.expect("a connection");
    let tenant = storage::tenants::NewTenant::minimal(
        Slug::parse(slug).expect("a slug"),
        "Acme & Co",
        "free",
    );
    let id = storage::tenants::insert(&mut conn, &tenant)
        .await
        .expect("inserted")
        .id;
    drop(conn);
    subscribe(pool, id, product).await;
    id
}

pub async fn subscribe(pool: &PgPool, tenant: Uuid, product: &str) {
    let principal = admin();
    let subscription = domain::product::Subscription {
        enabled: true,
        config: json!({}),
        feature_overrides: serde_json::Map::new(),
    };
    registry::products::subscribe(
        pool,
        &actor(&principal),
        tenant,
        product,
        TenantWrite::Administer,
        &subscription,
    )
    .await
    .expect("subscribed");
}

/// A runner whose `PRODUCT_DATABASE_<PRODUCT>` is `cluster`, failed steps retried at once,
/// backups under `backups`.
pub fn runner(
    pool: &PgPool,
    product: &str,
    cluster: &str,
    backups: &std::path::Path,
) -> Provisioner {
    runner_with(pool, cluster_of(product, cluster), backups)
}

pub fn runner_with(pool: &PgPool, clusters: Clusters, backups: &std::path::Path) -> Provisioner {
    runner_with_store(pool, clusters, store(backups))
}

/// A runner over `clusters` that keeps its backups in `store`.
pub fn runner_with_store(pool: &PgPool, clusters: Clusters, store: BackupStore) -> Provisioner {
    runner_leasing(pool, clusters, store, TimeDelta::seconds(60))
}

/// A runner over `clusters` that keeps its backups in `store` and leases runs for `lease`.
pub fn runner_leasing(
    pool: &PgPool,
    clusters: Clusters,
    store: BackupStore,
    lease: TimeDelta,
) -> Provisioner {
    Provisioner::new(
        pool.clone(),
        Arc::new(clusters),
        egress::Egress::new(egress::Policy::DEVELOPMENT).expect("an outbound client"),
        store,
        ProvisionerConfig {
            retry_base: TimeDelta::zero(),
            lease,
            ..ProvisionerConfig::default()
        },
    )
}

/// The backups of a test kept under `dir`.
pub fn store(dir: &std::path::Path) -> BackupStore {
    BackupStore {
        dir: dir.to_path_buf(),
        retention: TimeDelta::days(90),
        pg_dump: "pg_dump".into(),
        bucket: None,
    }
}

/// The clusters of a runner whose `PRODUCT_DATABASE_<PRODUCT>` is `cluster`.
pub fn cluster_of(product: &str, cluster: &str) -> Clusters {
    Clusters::with([(
        domain::provisioning::default_cluster_env(product),
        cluster.to_owned(),
    )])
}

/// Runs passes until one leases nothing; answers every step run.
pub async fn settle(runner: &Provisioner) -> Pass {
    let mut all = Pass::default();
    for _ in 0..10_000 {
        let pass = runner.run_once().await.expect("a pass");
        if pass.leased == 0 {
            return all;
        }
        all.leased += pass.leased;
        all.steps.extend(pass.steps);
    }
    panic!("the runs did not settle");
}

/// The state of (`tenant`, `product`).
pub async fn state(pool: &PgPool, tenant: Uuid, product: &str) -> storage::provisioning::RunRow {
    registry::provisioning::runs_of(pool, tenant)
        .await
        .expect("runs")
        .into_iter()
        .find(|run| run.product_id == product)
        .expect("a run of the product")
}

/// The events of `event_type` about `tenant`.
pub async fn events(pool: &PgPool, event_type: &str, tenant: Uuid) -> Vec<Value> {
    sqlx::query_scalar("SELECT data FROM events WHERE type = $1 AND tenant_id = $2")
        .bind(event_type)
        .bind(tenant)
        .fetch_all(pool)
        .await
        .expect("the events")
}

/// The tables of schema `schema`.
pub async fn tables(pool: &PgPool, schema: &str) -> Vec<String> {
    sqlx::query_scalar("SELECT tablename::text FROM pg_tables WHERE schemaname = $1 ORDER BY 1")
        .bind(schema)
        .fetch_all(pool)
        .await
        .expect("the tables")
}

/// Removes `tenant`'s subscription to `product`, as a platform admin.
pub async fn unsubscribe(pool: &PgPool, tenant: Uuid, product: &str) {
    let principal = admin();
    registry::products::unsubscribe(
        pool,
        &actor(&principal),
        tenant,
        product,
        TenantWrite::Administer,
    )
    .await
    .expect("unsubscribed");
}
