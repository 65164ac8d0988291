//! Failures never strand a careful client: a duplicate of a running request is told to
//! retry (not that something conflicts), and a key whose request failed while the database
//! was away is free again as soon as the database returns.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use domain::Scope;
use serde_json::json;
use testkit::outage::DbRelay;
use testkit::{TestApp, TestResponse};
use uuid::Uuid;

const FREEZE_KEY: &str = "freeze-once";

fn freeze_request<'a>(
    app: &'a TestApp,
    service: &'a api::Application,
    admin: &'a str,
    tenant: Uuid,
) -> testkit::app::TestRequest<'a> {
    app.request_on(
        service,
        Method::POST,
        &format!("/v1/tenants/{tenant}/transitions"),
    )
    .bearer(admin)
    .header("idempotency-key", FREEZE_KEY)
    .json(&json!({"to": "frozen", "reason": "unpaid"}))
}

/// Holds tenant `id`'s row until the transaction is dropped: a transition waits for it.
async fn hold_row(app: &TestApp, id: Uuid) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut holder = storage::begin(app.db.pool()).await.expect("a transaction");
    sqlx::query("SELECT 1 FROM tenants WHERE id = $1 FOR UPDATE")
        .bind(id)
        .execute(&mut *holder)
        .await
        .expect("the row is held");
    holder
}

fn assert_in_progress(response: &TestResponse) {
    assert_eq!(response.status, StatusCode::CONFLICT);
    assert_eq!(
        response.json()["type"],
        "/problems/idempotency-in-progress",
        "told apart from a real conflict"
    );
    assert_eq!(response.header("retry-after"), Some("1"));
}

#[tokio::test]
async fn a_duplicate_of_a_running_request_is_told_to_retry_and_then_gets_its_answer() {
    let app = TestApp::new().await;
    let (_, admin) = app.cheap_key(None, &[Scope::PlatformAdmin]).await;
    let tenant = app.tenant("acme").await;
    let holder = hold_row(&app, tenant).await;

    let first = freeze_request(&app, &app.app, &admin, tenant).send();
    let duplicate = async {
        app.claimed_idempotency_key(FREEZE_KEY).await;
        let duplicate = freeze_request(&app, &app.app, &admin, tenant).send().await;
        holder.rollback().await.expect("the row is let go");
        duplicate
    };
    let (first, duplicate) = tokio::join!(first, duplicate);
    assert_in_progress(&duplicate);
    assert_eq!(first.status, StatusCode::OK);
    let retried = freeze_request(&app, &app.app, &admin, tenant).send().await;
    assert_eq!(retried.status, StatusCode::OK);
    assert_eq!(retried.header("idempotent-replayed"), Some("true"));
}

#[tokio::test]
async fn a_key_whose_request_failed_while_the_database_was_away_runs_again_once_it_returns() {
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
    let tenant = app.tenant("acme").await;
    let holder = hold_row(&app, tenant).await;

    // The request claims its key, waits for the row, and the database goes away under it:
    // its answer is a 503, and its key cannot be released at that moment either.
    let failed = freeze_request(&app, &service, &admin, tenant).send();
    let outage = async {
        app.claimed_idempotency_key(FREEZE_KEY).await;
        // Cut only once the request's session waits for the row, so that ending it below
        // finds it there.
        app.until_waiting_on_a_lock(1).await;
        relay.cut().await;
        // A database that goes away ends its sessions; the relay alone would leave the
        // request's session waiting for the row, to take it once it is let go.
        let ended: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_all(app.db.pool())
        .await
        .expect("the waiting session is ended");
        assert!(ended.iter().all(|ended| *ended), "{ended:?}");
    };
    let (failed, ()) = tokio::join!(failed, outage);
    assert_eq!(failed.status, StatusCode::SERVICE_UNAVAILABLE);
    holder.rollback().await.expect("the row is let go");
    relay.resume().await;

    // Well under the 5 minutes after which an unreleased claim would count as abandoned.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let retried = loop {
        let retried = freeze_request(&app, &service, &admin, tenant).send().await;
        let still_held = retried.status == StatusCode::CONFLICT
            || retried.status == StatusCode::SERVICE_UNAVAILABLE;
        if !still_held || tokio::time::Instant::now() > deadline {
            break retried;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        retried.status,
        StatusCode::OK,
        "the retry ran: {}",
        String::from_utf8_lossy(&retried.body)
    );
    assert_eq!(retried.header("idempotent-replayed"), None);
}
