//! A dying database: a session an administrator cuts off, and a database that goes away
//! altogether, are answered 503 with `Retry-After` (come back later), never 500 (a bug).

use std::time::Duration;

use axum::http::{Method, StatusCode};
use domain::Scope;
use serde_json::json;
use testkit::outage::DbRelay;
use testkit::{TestApp, TestResponse};

fn assert_unavailable(response: &TestResponse, what: &str) {
    assert_eq!(
        response.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{what}: {}",
        String::from_utf8_lossy(&response.body)
    );
    assert_eq!(
        response.header("content-type"),
        Some("application/problem+json"),
        "{what}"
    );
    assert_eq!(response.json()["type"], "/problems/unavailable", "{what}");
    assert!(
        response
            .header("retry-after")
            .is_some_and(|seconds| seconds.parse::<u32>().is_ok_and(|seconds| seconds > 0)),
        "{what}: {:?}",
        response.headers
    );
}

#[tokio::test]
async fn a_session_an_administrator_terminates_mid_request_answers_503_with_retry_after() {
    let app = TestApp::new().await;
    let (_, admin) = app.cheap_key(None, &[Scope::PlatformAdmin]).await;
    let tenant = app.tenant("acme").await;
    // Hold the tenant's row so that the PATCH's session waits, mid-request, to be cut off.
    let mut holder = storage::begin(app.db.pool()).await.expect("a transaction");
    let holder_pid: i32 =
        sqlx::query_scalar("SELECT pg_backend_pid() FROM tenants WHERE id = $1 FOR UPDATE")
            .bind(tenant)
            .fetch_one(&mut *holder)
            .await
            .expect("the row is held");
    let terminate_the_waiting_session = async {
        loop {
            let terminated: Vec<bool> = sqlx::query_scalar(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE datname = current_database() AND wait_event_type = 'Lock' AND pid <> $1",
            )
            .bind(holder_pid)
            .fetch_all(app.db.pool())
            .await
            .expect("the sessions are listed");
            if terminated.contains(&true) {
                return;
            }
            tokio::task::yield_now().await;
        }
    };
    let patch = app
        .request(Method::PATCH, &format!("/v1/tenants/{tenant}"))
        .bearer(&admin)
        .json(&json!({"name": "Never written"}))
        .send();
    let (patched, ()) = tokio::join!(patch, terminate_the_waiting_session);
    assert_unavailable(&patched, "a terminated session (57P01)");
    holder.rollback().await.expect("the row is let go");
}

#[tokio::test]
async fn requests_while_the_database_is_gone_answer_503_with_retry_after() {
    let app = TestApp::new().await;
    let mut relay = DbRelay::start(app.db.url()).await;
    let pool = storage::connect(
        relay.url(),
        &storage::PoolConfig {
            max_connections: 4,
            acquire_timeout: Duration::from_secs(1),
        },
    )
    .await
    .expect("a pool through the relay");
    let service = api::build(pool, testkit::settings())
        .await
        .expect("the service builds");
    let (_, admin) = app.cheap_key(None, &[Scope::PlatformAdmin]).await;
    let (_, unused) = app.cheap_key(None, &[Scope::TenantsRead]).await;
    let tenant = app.tenant("acme").await;
    let me = app
        .request_on(&service, Method::GET, "/v1/me")
        .bearer(&admin)
        .send()
        .await;
    assert_eq!(
        me.status,
        StatusCode::OK,
        "the key is verified while it can be"
    );

    relay.cut().await;

    let read = app
        .request_on(&service, Method::GET, &format!("/v1/tenants/{tenant}"))
        .bearer(&admin)
        .send()
        .await;
    assert_unavailable(&read, "a read");
    let write = app
        .request_on(&service, Method::POST, "/v1/tenants")
        .bearer(&admin)
        .json(&json!({"slug": "newco", "name": "Newco", "plan": "pro"}))
        .send()
        .await;
    assert_unavailable(&write, "a write");
    let key = app
        .request_on(&service, Method::POST, "/v1/api-keys")
        .bearer(&admin)
        .json(&json!({"name": "x", "scopes": ["tenants:read"]}))
        .send()
        .await;
    assert_unavailable(&key, "a key made");
    let unverified = app
        .request_on(&service, Method::GET, "/v1/me")
        .bearer(&unused)
        .send()
        .await;
    assert_unavailable(&unverified, "a key not verified yet");
}

#[tokio::test]
async fn readiness_turns_503_within_a_second_of_the_database_going_and_200_of_its_return() {
    let app = TestApp::new().await;
    let mut relay = DbRelay::start(app.db.url()).await;
    // The default acquire timeout (5 s): readiness must not wait for it.
    let pool = storage::connect(relay.url(), &storage::PoolConfig::default())
        .await
        .expect("a pool through the relay");
    let service = api::build(pool, testkit::settings())
        .await
        .expect("the service builds");
    let ready = async || {
        app.request_on(&service, Method::GET, "/readyz")
            .send()
            .await
            .status
    };
    assert_eq!(ready().await, StatusCode::OK);

    relay.cut().await;
    testkit::within_a_second("readiness failing once the database is gone", async || {
        ready().await == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    relay.resume().await;
    testkit::within_a_second("readiness passing once the database is back", async || {
        ready().await == StatusCode::OK
    })
    .await;
}
