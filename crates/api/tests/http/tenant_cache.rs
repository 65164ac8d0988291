//! The tenant lookup cache: every replica serves lookups from memory, forgets a tenant
//! within a second of a change made anywhere, and drops everything when its change
//! listener reconnects.

use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use domain::Scope;
use serde_json::{Value, json};
use testkit::TestApp;

async fn name_on(
    app: &TestApp,
    replica: &api::Application,
    key: &str,
    path: &str,
) -> (StatusCode, Value) {
    let response = app
        .request_on(replica, Method::GET, path)
        .bearer(key)
        .send()
        .await;
    let name = serde_json::from_slice::<Value>(&response.body)
        .ok()
        .and_then(|body| body.get("name").cloned())
        .unwrap_or(Value::Null);
    (response.status, name)
}

/// Changes the tenant's name in SQL with triggers off, so no notification is sent: what a
/// replica answers afterwards shows whether it reads its cache or the database.
async fn rename_silently(app: &TestApp, slug: &str, name: &str) {
    let mut transaction = storage::begin(app.db.pool()).await.expect("transaction");
    sqlx::query("SET LOCAL session_replication_role = replica")
        .execute(&mut *transaction)
        .await
        .expect("triggers off");
    sqlx::query("UPDATE tenants SET name = $2 WHERE slug = $1")
        .bind(slug)
        .bind(name)
        .execute(&mut *transaction)
        .await
        .expect("renamed");
    storage::commit(transaction).await.expect("committed");
}

async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what} did not happen within 1 s");
}

#[tokio::test]
async fn lookups_are_served_from_memory_until_the_tenant_changes() {
    let app = TestApp::new().await;
    let replica = app.replica().await;
    let tenant = app.tenant("acme").await;
    let (_, key) = app.key(None, &[Scope::TenantsRead]).await;
    let by_id = format!("/v1/tenants/{tenant}");
    assert_eq!(
        name_on(&app, &replica, &key, &by_id).await.0,
        StatusCode::OK
    );
    assert_eq!(
        name_on(&app, &replica, &key, "/v1/tenants/by-slug/acme")
            .await
            .0,
        StatusCode::OK
    );
    rename_silently(&app, "acme", "Renamed behind the cache").await;
    let cached = name_on(&app, &replica, &key, &by_id).await.1;
    assert_ne!(
        cached,
        json!("Renamed behind the cache"),
        "served from memory"
    );
    assert_ne!(
        name_on(&app, &replica, &key, "/v1/tenants/by-slug/acme")
            .await
            .1,
        json!("Renamed behind the cache"),
        "the slug is served from memory too"
    );
}

#[tokio::test]
async fn a_change_through_one_replica_is_seen_through_another_within_a_second() {
    let app = TestApp::new().await;
    let replica = app.replica().await;
    let admin = app.admin_key().await;
    let tenant = app.tenant("acme").await;
    let (_, key) = app.key(None, &[Scope::TenantsRead]).await;
    let by_id = format!("/v1/tenants/{tenant}");
    name_on(&app, &replica, &key, &by_id).await;
    name_on(&app, &replica, &key, "/v1/tenants/by-slug/acme").await;
    let patched = app
        .request(Method::PATCH, &by_id)
        .bearer(&admin)
        .header("content-type", "application/merge-patch+json")
        .json(&json!({"name": "Acme Renamed", "slug": "acme-renamed"}))
        .send()
        .await;
    assert_eq!(
        patched.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&patched.body)
    );
    eventually("the replica seeing the new name by id", async || {
        name_on(&app, &replica, &key, &by_id).await.1 == json!("Acme Renamed")
    })
    .await;
    eventually("the replica finding the new slug", async || {
        name_on(&app, &replica, &key, "/v1/tenants/by-slug/acme-renamed").await
            == (StatusCode::OK, json!("Acme Renamed"))
    })
    .await;
    assert_eq!(
        name_on(&app, &replica, &key, "/v1/tenants/by-slug/acme").await,
        (StatusCode::OK, json!("Acme Renamed")),
        "the former slug answers with the current row"
    );
}

#[tokio::test]
async fn an_unknown_slug_is_remembered_briefly_and_forgotten_when_it_is_created() {
    let app = TestApp::new().await;
    let replica = app.replica().await;
    let (_, key) = app.key(None, &[Scope::TenantsRead]).await;
    assert_eq!(
        name_on(&app, &replica, &key, "/v1/tenants/by-slug/newco")
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    app.tenant("newco").await;
    eventually("the replica finding the created tenant", async || {
        name_on(&app, &replica, &key, "/v1/tenants/by-slug/newco")
            .await
            .0
            == StatusCode::OK
    })
    .await;
}

#[tokio::test]
async fn a_listener_reconnect_drops_what_might_be_stale() {
    let app = TestApp::new().await;
    let replica = app.replica().await;
    let tenant = app.tenant("acme").await;
    let (_, key) = app.key(None, &[Scope::TenantsRead]).await;
    let by_id = format!("/v1/tenants/{tenant}");
    name_on(&app, &replica, &key, &by_id).await;
    rename_silently(&app, "acme", "Changed while nobody listened").await;
    assert_ne!(
        name_on(&app, &replica, &key, &by_id).await.1,
        json!("Changed while nobody listened")
    );
    let listeners: Vec<i32> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid)::int FROM pg_stat_activity
         WHERE datname = current_database() AND query ILIKE 'LISTEN%'",
    )
    .fetch_all(app.db.pool())
    .await
    .expect("listeners terminated");
    assert!(listeners.len() >= 2, "both replicas listen: {listeners:?}");
    eventually(
        "the replica rereading after its listener reconnected",
        async || {
            name_on(&app, &replica, &key, &by_id).await.1 == json!("Changed while nobody listened")
        },
    )
    .await;
}

#[tokio::test]
async fn with_no_entries_every_lookup_reads_the_database() {
    let settings = api::Settings {
        tenant_cache_entries: 0,
        ..testkit::settings()
    };
    let app = TestApp::with_settings(settings).await;
    let tenant = app.tenant("acme").await;
    let (_, key) = app.key(None, &[Scope::TenantsRead]).await;
    let by_id = format!("/v1/tenants/{tenant}");
    assert_eq!(
        name_on(&app, &app.app, &key, &by_id).await.0,
        StatusCode::OK
    );
    rename_silently(&app, "acme", "Read fresh").await;
    assert_eq!(
        name_on(&app, &app.app, &key, &by_id).await.1,
        json!("Read fresh")
    );
    assert_eq!(
        name_on(&app, &app.app, &key, "/v1/tenants/by-slug/acme")
            .await
            .1,
        json!("Read fresh")
    );
}
