//! The lifecycle gate holds inside the use case's transaction: a write on a tenant's behalf
//! that races a status change cannot commit after it.

use auth::{Principal, PrincipalKind};
use domain::{LifecycleRefusal, Scope, Slug, TenantStatus};
use registry::projects::NewProject;
use registry::{Actor, RegistryError};
use serde_json::json;
use storage::PgPool;
use testkit::TestDb;
use uuid::Uuid;

/// An active-enough tenant (a trial) with a product that supports projects.
async fn tenant_with_projects(pool: &PgPool) -> Uuid {
    let mut conn = pool.acquire().await.expect("a connection");
    let slug = Slug::parse("racing").expect("a slug");
    let tenant = storage::tenants::NewTenant::minimal(slug, "Racing", "free");
    let id = storage::tenants::insert(&mut conn, &tenant)
        .await
        .expect("the tenant is inserted")
        .id;
    storage::products::upsert(&mut conn, "workbench", &json!({"supports_projects": true}))
        .await
        .expect("the product is published");
    storage::products::set_for_tenant(
        &mut conn,
        id,
        "workbench",
        true,
        &json!({}),
        &serde_json::Map::new(),
    )
    .await
    .expect("the tenant is subscribed");
    id
}

fn tenant_principal(tenant_id: Uuid) -> Principal {
    Principal {
        kind: PrincipalKind::TenantKey,
        tenant_id: Some(tenant_id),
        scopes: [Scope::ProjectsWrite].into_iter().collect(),
        key_id: Some(Uuid::new_v4()),
        subject: None,
        product: None,
        expires_at: None,
        previous_secret: false,
    }
}

async fn sessions_waiting_for_a_lock(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity
         WHERE datname = current_database() AND wait_event_type = 'Lock'",
    )
    .fetch_one(pool)
    .await
    .expect("pg_stat_activity answers")
}

#[tokio::test]
async fn a_write_racing_a_freeze_cannot_land_after_the_freeze_committed() {
    let db = TestDb::migrated().await;
    let pool = db.pool().clone();
    let tenant = tenant_with_projects(&pool).await;

    // The freeze is in flight: the tenant's row is locked and its status changed, not yet
    // committed. Any check made now (a cache, a plain read) still sees a trial.
    let mut freeze = storage::begin(&pool).await.expect("a transaction");
    storage::tenants::lock(&mut freeze, tenant)
        .await
        .expect("the row is locked")
        .expect("the tenant exists");
    storage::tenants::record_transition(
        &mut freeze,
        tenant,
        TenantStatus::Trial,
        TenantStatus::Frozen,
        "invoice overdue",
        "test",
    )
    .await
    .expect("the status changes");

    let write = tokio::spawn({
        let pool = pool.clone();
        async move {
            let principal = tenant_principal(tenant);
            let actor = Actor {
                principal: &principal,
                source_ip: None,
            };
            let project = NewProject {
                slug: Slug::parse("web-shop").expect("a slug"),
                name: "Web shop".to_owned(),
            };
            registry::projects::create(&pool, &actor, tenant, &project).await
        }
    });
    testkit::within_a_second("the write waits for the freeze", async || {
        sessions_waiting_for_a_lock(&pool).await == 1
    })
    .await;
    storage::commit(freeze).await.expect("the freeze commits");

    let outcome = write.await.expect("the write ran");
    assert!(
        matches!(
            outcome,
            Err(RegistryError::Lifecycle(LifecycleRefusal::Frozen))
        ),
        "the write is refused by the status the freeze committed: {outcome:?}"
    );
    let projects: i64 = sqlx::query_scalar("SELECT count(*) FROM tenant_projects")
        .fetch_one(&pool)
        .await
        .expect("projects counted");
    assert_eq!(projects, 0, "no project landed after the freeze");
}
