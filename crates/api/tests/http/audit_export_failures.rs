//! An export that fails: before its first page it is an answer with a status; after the
//! answer has begun it ends after its last whole page, so an NDJSON or CSV reader sees a
//! short but well-formed body, never a broken line.

use std::time::Duration;

use futures::StreamExt;
use storage::audit::EventFilter;
use testkit::TestApp;
use testkit::outage::DbRelay;

const EVENTS: i32 = 2_500;

/// A pool of one connection that reaches the test database through `relay`.
async fn pool_through(relay: &DbRelay) -> storage::PgPool {
    storage::connect(
        relay.url(),
        &storage::PoolConfig {
            max_connections: 1,
            acquire_timeout: Duration::from_secs(2),
        },
    )
    .await
    .expect("connected through the relay")
}

#[tokio::test]
async fn an_export_whose_database_goes_away_mid_stream_ends_after_its_last_whole_page() {
    let app = TestApp::new().await;
    let tenant = app.tenant("acme").await;
    app.seed_audit_events(tenant, "bulk.read", EVENTS).await;
    let mut relay = DbRelay::start(app.db.url()).await;
    let pool = pool_through(&relay).await;
    let filter = EventFilter {
        tenant_id: Some(tenant),
        ..EventFilter::default()
    };
    let (chunks, outcome) = audit::export(
        pool,
        filter,
        audit::ExportFormat::Ndjson,
        Duration::from_secs(5),
    )
    .await
    .expect("the first page is read before the answer starts");
    let mut chunks = Box::pin(chunks);
    let first = chunks.next().await.expect("the first page");
    relay.cut().await;
    let mut text = first;
    while let Some(chunk) = chunks.next().await {
        text.push_str(&chunk);
    }

    let lines: Vec<&str> = text.lines().collect();
    assert!(text.ends_with('\n'), "the body ends with a whole line");
    assert!(
        lines
            .iter()
            .all(|line| serde_json::from_str::<serde_json::Value>(line).is_ok()),
        "every line is a whole event"
    );
    assert_eq!(
        i64::try_from(lines.len()).expect("a count"),
        audit::EXPORT_PAGE,
        "the stream ended after the page read before the database went away"
    );
    assert!(
        outcome.cut_short(),
        "the outcome says the export was cut short"
    );
}

#[tokio::test]
async fn a_complete_export_ends_with_a_trailer_saying_so() {
    let app = TestApp::new().await;
    let tenant = app.tenant("acme").await;
    app.seed_audit_events(tenant, "bulk.read", 1_200).await;
    let (_, reader) = app.key(Some(tenant), &[domain::Scope::AuditRead]).await;
    let exported = app
        .request(
            axum::http::Method::GET,
            "/v1/audit/events/export?action=bulk.*",
        )
        .bearer(&reader)
        .send()
        .await;
    assert_eq!(exported.status, axum::http::StatusCode::OK);
    assert_eq!(
        exported.header("trailer"),
        Some("x-export-status"),
        "announced before the body"
    );
    assert_eq!(
        String::from_utf8_lossy(&exported.body).lines().count(),
        1_200
    );
    assert_eq!(
        exported
            .trailers
            .get("x-export-status")
            .and_then(|value| value.to_str().ok()),
        Some("complete")
    );
}

#[tokio::test]
async fn an_export_that_cannot_read_its_first_page_is_an_error_before_any_answer() {
    let app = TestApp::new().await;
    let tenant = app.tenant("acme").await;
    app.seed_audit_events(tenant, "bulk.read", 10).await;
    let mut relay = DbRelay::start(app.db.url()).await;
    let pool = pool_through(&relay).await;
    relay.cut().await;
    let filter = EventFilter {
        tenant_id: Some(tenant),
        ..EventFilter::default()
    };
    let outcome = audit::export(
        pool,
        filter,
        audit::ExportFormat::Csv,
        Duration::from_secs(5),
    )
    .await;
    let error = outcome.err().expect("no stream when the first page fails");
    assert!(storage::is_unavailable(&error), "{error}");
}
