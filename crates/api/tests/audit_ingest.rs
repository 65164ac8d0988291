//! Audit ingest: single events, batches, all-or-nothing validation, idempotency and tenant
//! confinement.

use axum::http::{Method, StatusCode};
use domain::Scope;
use serde_json::{Value, json};
use testkit::{TestApp, TestResponse};

async fn ingest(app: &TestApp, key: &str, body: Value) -> TestResponse {
    app.request(Method::POST, "/v1/audit/events")
        .bearer(key)
        .json(&body)
        .send()
        .await
}

async fn stored(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE action LIKE 'doc.%'")
        .fetch_one(app.db.pool())
        .await
        .expect("count")
}

#[tokio::test]
async fn a_single_event_and_a_batch_are_stored_in_retraced_shape() {
    let app = TestApp::new().await;
    let tenant = app.tenant("acme").await;
    let (_, key) = app.key(Some(tenant), &[Scope::AuditWrite]).await;
    let single = ingest(
        &app,
        &key,
        json!({"action": "doc.shared", "crud": "u", "group": {"id": "acme", "name": "Acme"},
               "actor": {"id": "u-1", "name": "Jane", "fields": {"department": "legal"}},
               "target": {"id": "d-9", "type": "document", "name": "Q3 plan"},
               "source_ip": "203.0.113.7", "description": "Jane shared Q3 plan", "fields": {"with": "bob"},
               "component": "web", "version": "1.2.3", "created": "2026-11-01T10:00:00Z"}),
    )
    .await;
    assert_eq!(
        single.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&single.body)
    );
    assert_eq!(single.json(), json!({"stored": 1, "duplicates": 0}));
    let row: (Option<uuid::Uuid>, String, String, Value, String, Value) = sqlx::query_as(
        "SELECT tenant_id, actor_name, host(source_ip), actor_fields, to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD'), fields
         FROM audit_log WHERE action = 'doc.shared'",
    )
    .fetch_one(app.db.pool())
    .await
    .expect("the row");
    assert_eq!(row.0, Some(tenant), "the slug resolved to the tenant");
    assert_eq!((row.1.as_str(), row.2.as_str()), ("Jane", "203.0.113.7"));
    assert_eq!(row.3, json!({"department": "legal"}));
    assert_eq!(row.4, "2026-11-01");
    assert_eq!(row.5, json!({"with": "bob"}));

    let batch: Vec<Value> = (0..50)
        .map(|n| json!({"action": "doc.read", "crud": "r", "target": {"id": format!("d-{n}")}}))
        .collect();
    let response = ingest(&app, &key, Value::Array(batch)).await;
    assert_eq!(response.json(), json!({"stored": 50, "duplicates": 0}));
    assert_eq!(stored(&app).await, 51);
}

#[tokio::test]
async fn an_invalid_batch_stores_nothing_and_points_at_each_bad_event() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    let response = ingest(
        &app,
        &admin,
        json!([
            {"action": "doc.ok", "crud": "c"},
            {"action": "doc.bad", "crud": "z"},
            {"action": "doc.bad", "crud": "c", "group": {"id": "no-such-tenant"}}
        ]),
    )
    .await;
    assert_eq!(response.status, StatusCode::UNPROCESSABLE_ENTITY);
    let pointers = response.pointers();
    assert_eq!(pointers, vec!["/1/crud"]);
    let unknown_group = ingest(&app, &admin, json!([{"action": "doc.ok", "crud": "c"}, {"action": "doc.x", "crud": "c", "group": {"id": "nobody"}}])).await;
    assert_eq!(unknown_group.json()["errors"][0]["pointer"], "/1/group/id");
    assert_eq!(
        stored(&app).await,
        0,
        "nothing of an invalid batch is stored"
    );
}

#[tokio::test]
async fn an_event_sent_twice_with_the_same_external_id_is_stored_once() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    let event = json!({"action": "doc.deleted", "crud": "d", "external_id": "evt-42"});
    assert_eq!(
        ingest(&app, &admin, event.clone()).await.json(),
        json!({"stored": 1, "duplicates": 0})
    );
    assert_eq!(
        ingest(&app, &admin, event).await.json(),
        json!({"stored": 0, "duplicates": 1})
    );
    assert_eq!(stored(&app).await, 1);
}

#[tokio::test]
async fn a_tenant_key_writes_only_its_own_tenants_events() {
    let app = TestApp::new().await;
    let own = app.tenant("acme").await;
    app.tenant("globex").await;
    let (_, key) = app.key(Some(own), &[Scope::AuditWrite]).await;
    let foreign = ingest(
        &app,
        &key,
        json!({"action": "doc.read", "crud": "r", "group": {"id": "globex"}}),
    )
    .await;
    assert_eq!(foreign.status, StatusCode::FORBIDDEN);
    let implicit = ingest(&app, &key, json!({"action": "doc.read", "crud": "r"})).await;
    assert_eq!(implicit.status, StatusCode::CREATED);
    let tenant: Option<uuid::Uuid> =
        sqlx::query_scalar("SELECT tenant_id FROM audit_log WHERE action = 'doc.read'")
            .fetch_one(app.db.pool())
            .await
            .expect("row");
    assert_eq!(
        tenant,
        Some(own),
        "an event without a group belongs to the key's tenant"
    );
    let (_, reader) = app.key(Some(own), &[Scope::AuditRead]).await;
    assert_eq!(
        ingest(&app, &reader, json!({"action": "doc.read", "crud": "r"}))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
}

async fn search(app: &TestApp, key: &str, query: &str) -> TestResponse {
    app.request(Method::GET, &format!("/v1/audit/events{query}"))
        .bearer(key)
        .send()
        .await
}

fn actions(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|item| item["action"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn every_search_filter_narrows_the_result_newest_first() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    let tenant = app.tenant("acme").await;
    let events = json!([
        {"action": "doc.created", "crud": "c", "group": {"id": "acme"}, "actor": {"id": "u-1"}, "target": {"id": "d-1", "type": "document"}, "created": "2026-01-01T00:00:00Z"},
        {"action": "doc.shared", "crud": "u", "group": {"id": "acme"}, "actor": {"id": "u-2"}, "target": {"id": "d-1", "type": "document"}, "created": "2026-02-01T00:00:00Z"},
        {"action": "doc.deleted", "crud": "d", "group": {"id": "acme"}, "actor": {"id": "u-1"}, "target": {"id": "d-2", "type": "folder"}, "is_failure": true, "created": "2026-03-01T00:00:00Z"}
    ]);
    assert_eq!(
        ingest(&app, &admin, events).await.status,
        StatusCode::CREATED
    );
    let group = format!("&group_id={tenant}");
    let cases = [
        ("?action=doc.shared", vec!["doc.shared"]),
        (
            "?action=doc.*",
            vec!["doc.deleted", "doc.shared", "doc.created"],
        ),
        ("?crud=c", vec!["doc.created"]),
        ("?actor_id=u-1", vec!["doc.deleted", "doc.created"]),
        ("?target_id=d-1", vec!["doc.shared", "doc.created"]),
        ("?target_type=folder", vec!["doc.deleted"]),
        ("?is_failure=true", vec!["doc.deleted"]),
        (
            "?from=2026-01-15T00:00:00Z&to=2026-02-15T00:00:00Z",
            vec!["doc.shared"],
        ),
    ];
    for (query, expected) in cases {
        let page = search(&app, &admin, &format!("{query}{group}")).await;
        assert_eq!(
            page.status,
            StatusCode::OK,
            "{query}: {}",
            String::from_utf8_lossy(&page.body)
        );
        assert_eq!(actions(&page.json()), expected, "{query}");
    }
    assert_eq!(
        search(&app, &admin, "?crud=x").await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
}

#[tokio::test]
async fn search_pages_stay_correct_while_events_arrive() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    for n in 0..25 {
        ingest(
            &app,
            &admin,
            json!({"action": format!("doc.n{n:02}"), "crud": "r"}),
        )
        .await;
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let query = match &cursor {
            Some(cursor) => format!("?action=doc.*&limit=10&cursor={cursor}"),
            None => "?action=doc.*&limit=10".to_owned(),
        };
        let page = search(&app, &admin, &query).await.json();
        seen.extend(actions(&page));
        // A newer event arrives between pages; it belongs before the first page, so it never
        // shows up in later ones.
        ingest(&app, &admin, json!({"action": "doc.late", "crud": "r"})).await;
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let expected: Vec<String> = (0..25).rev().map(|n| format!("doc.n{n:02}")).collect();
    assert_eq!(
        seen, expected,
        "every event once, newest first, none of the late ones"
    );
}

#[tokio::test]
async fn a_tenant_principal_reads_only_its_own_trail() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    let own = app.tenant("acme").await;
    let other = app.tenant("globex").await;
    ingest(&app, &admin, json!([{"action": "doc.mine", "crud": "r", "group": {"id": "acme"}}, {"action": "doc.theirs", "crud": "r", "group": {"id": "globex"}}])).await;
    let (_, reader) = app.key(Some(own), &[Scope::AuditRead]).await;
    assert_eq!(
        actions(&search(&app, &reader, "?action=doc.*").await.json()),
        vec!["doc.mine"]
    );
    let across = search(&app, &reader, &format!("?group_id={other}")).await;
    assert_eq!(across.status, StatusCode::FORBIDDEN);
    let (_, writer) = app.key(Some(own), &[Scope::AuditWrite]).await;
    assert_eq!(
        search(&app, &writer, "").await.status,
        StatusCode::FORBIDDEN,
        "audit:read is needed"
    );
}
