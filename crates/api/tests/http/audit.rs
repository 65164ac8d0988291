//! The audit log over HTTP: ingest (single, batch, all or nothing, idempotent, tenant
//! confinement), search and the `q` syntax, export, hash-chain verification, retention and
//! the audit records of denials.

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
    assert_eq!(foreign.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(foreign.pointers(), vec!["/group/id"]);
    let unknown = ingest(
        &app,
        &key,
        json!({"action": "doc.read", "crud": "r", "group": {"id": "initech"}}),
    )
    .await;
    assert_eq!(
        (unknown.status, unknown.json()["errors"].clone()),
        (foreign.status, foreign.json()["errors"].clone()),
        "another tenant's slug answers as an unknown one does"
    );
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

#[tokio::test]
async fn the_q_search_string_narrows_like_retraced_and_matches_description_words() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    app.tenant("acme").await;
    let events = json!([
        {"action": "tenant.updated", "crud": "u", "group": {"id": "acme"}, "actor": {"id": "u-1"}, "target": {"id": "t-1", "type": "tenant"}, "description": "Jane renamed the tenant", "created": "2026-01-10T00:00:00Z"},
        {"action": "tenant.updated", "crud": "u", "group": {"id": "acme"}, "actor": {"id": "u-2"}, "target": {"id": "t-1", "type": "tenant"}, "description": "Bob changed the plan", "created": "2026-01-20T00:00:00Z"},
        {"action": "tenant.created", "crud": "c", "group": {"id": "acme"}, "actor": {"id": "u-1"}, "description": "Jane created the tenant", "created": "2026-03-01T00:00:00Z"},
        {"action": "doc.read", "crud": "r", "group": {"id": "acme"}, "actor": {"id": "u-1"}, "description": "Jane read a 100% private file", "created": "2026-01-15T00:00:00Z"}
    ]);
    assert_eq!(
        ingest(&app, &admin, events).await.status,
        StatusCode::CREATED
    );
    let cases = [
        (
            "action:tenant.* crud:u",
            vec!["Bob changed the plan", "Jane renamed the tenant"],
        ),
        (
            "action:tenant.* actor.id:u-1",
            vec!["Jane created the tenant", "Jane renamed the tenant"],
        ),
        (
            "target.type:tenant target.id:t-1 bob",
            vec!["Bob changed the plan"],
        ),
        (
            "created:2026-01-01,2026-02-01 jane",
            vec!["Jane read a 100% private file", "Jane renamed the tenant"],
        ),
        (
            "\"the tenant\" JANE",
            vec!["Jane created the tenant", "Jane renamed the tenant"],
        ),
        ("100%", vec!["Jane read a 100% private file"]),
        ("received:2026-01-01,2026-02-01", vec![]),
    ];
    for (q, expected) in cases {
        let query = format!(
            "?q={}",
            url::form_urlencoded::byte_serialize(q.as_bytes()).collect::<String>()
        );
        let page = search(&app, &admin, &query).await;
        assert_eq!(
            page.status,
            StatusCode::OK,
            "{q}: {}",
            String::from_utf8_lossy(&page.body)
        );
        let descriptions: Vec<String> = page.json()["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|item| item["description"].as_str().unwrap_or_default().to_owned())
            .collect();
        assert_eq!(descriptions, expected, "{q}");
    }
    let refused = search(&app, &admin, "?q=colour:red").await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(refused.pointers(), vec!["/q"]);
    let twice = search(&app, &admin, "?crud=u&q=crud:c").await;
    assert_eq!(
        twice.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "a filter set twice is refused"
    );
}

#[tokio::test]
async fn search_results_carry_retraceds_nested_shape() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    let tenant = app.tenant("acme").await;
    ingest(
        &app,
        &admin,
        json!({"action": "doc.shared", "crud": "u", "group": {"id": "acme", "name": "Acme"},
               "actor": {"id": "u-1", "name": "Jane", "href": "https://example.com/u-1"},
               "target": {"id": "d-9", "type": "document", "fields": {"size": "3"}},
               "external_id": "evt-1", "component": "web", "version": "1.0"}),
    )
    .await;
    let page = search(&app, &admin, "?action=doc.shared").await.json();
    let event = &page["items"][0];
    assert_eq!(event["group"], json!({"id": "acme", "name": "Acme"}));
    assert_eq!(event["actor"]["name"], "Jane");
    assert_eq!(event["target"]["type"], "document");
    assert_eq!(event["target"]["fields"], json!({"size": "3"}));
    assert_eq!(event["external_id"], "evt-1");
    assert_eq!(event["component"], "web");
    let product = event["product"].as_str().expect("a product").to_owned();
    let encoded: String = url::form_urlencoded::byte_serialize(product.as_bytes()).collect();
    let by_product = search(
        &app,
        &admin,
        &format!("?product={encoded}&action=doc.shared"),
    )
    .await;
    assert_eq!(actions(&by_product.json()), vec!["doc.shared"]);
    let other_product = search(&app, &admin, "?q=product:billing%20action:doc.shared").await;
    assert_eq!(actions(&other_product.json()), Vec::<String>::new());
    let by_tenant = search(
        &app,
        &admin,
        &format!("?group_id={tenant}&action=doc.shared"),
    )
    .await;
    assert_eq!(
        actions(&by_tenant.json()),
        vec!["doc.shared"],
        "the slug was resolved to the tenant"
    );
}

#[tokio::test]
async fn export_streams_fifty_thousand_events_a_page_at_a_time() {
    let app = TestApp::new().await;
    let tenant = app.tenant("acme").await;
    let other = app.tenant("globex").await;
    app.seed_audit_events(tenant, "bulk.read", 50_000).await;
    app.seed_audit_events(other, "bulk.read", 10).await;
    let (_, reader) = app.key(Some(tenant), &[Scope::AuditRead]).await;
    let response = app
        .request(
            Method::GET,
            "/v1/audit/events/export?format=ndjson&action=bulk.*",
        )
        .bearer(&reader)
        .send()
        .await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(
        response.header("content-type"),
        Some("application/x-ndjson")
    );
    let disposition = response
        .header("content-disposition")
        .expect("an attachment");
    assert!(
        disposition.starts_with(&format!("attachment; filename=\"audit-events-{tenant}-"))
            && disposition.ends_with(".ndjson\""),
        "{disposition}"
    );
    let text = String::from_utf8(response.body.clone()).expect("utf-8");
    let ids: Vec<i64> = text
        .lines()
        .map(|line| {
            let event: Value = serde_json::from_str(line).expect("one JSON event per line");
            assert_eq!(
                event["group"]["id"],
                tenant.to_string(),
                "only the caller's tenant"
            );
            event["id"].as_i64().expect("an id")
        })
        .collect();
    assert_eq!(ids.len(), 50_000, "every event once");
    assert!(
        ids.windows(2).all(|pair| pair[0] > pair[1]),
        "newest first, no repeats"
    );
    assert_eq!(
        response.frames.len(),
        50,
        "one frame per page of {} events, so the server never holds more than a page",
        audit::EXPORT_PAGE
    );
}

#[tokio::test]
async fn export_as_csv_has_a_header_and_quoted_defused_cells() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    ingest(
        &app,
        &admin,
        json!([{"action": "doc.shared", "crud": "u", "description": "said \"hi\", then left"},
               {"action": "doc.formula", "crud": "u", "actor": {"name": "=HYPERLINK(\"x\")"}}]),
    )
    .await;
    let response = app
        .request(
            Method::GET,
            "/v1/audit/events/export?format=csv&action=doc.*",
        )
        .bearer(&admin)
        .send()
        .await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(
        response.header("content-type"),
        Some("text/csv; charset=utf-8")
    );
    assert!(
        response
            .header("content-disposition")
            .is_some_and(|value| value.ends_with(".csv\""))
    );
    let text = String::from_utf8(response.body.clone()).expect("utf-8");
    let lines: Vec<&str> = text.split("\r\n").filter(|line| !line.is_empty()).collect();
    assert_eq!(lines.len(), 3, "a header and two events: {text}");
    assert!(lines[0].starts_with("id,created,received,product"));
    assert!(
        lines[1].contains(",'=HYPERLINK(\"\"x\"\"),")
            || lines[1].contains("\"'=HYPERLINK(\"\"x\"\")\""),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].contains("\"said \"\"hi\"\", then left\""),
        "{}",
        lines[2]
    );
}

#[tokio::test]
async fn export_refuses_unknown_formats_and_paging_parameters() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    for (query, pointer) in [
        ("?format=xml", "/format"),
        ("?limit=5", "/limit"),
        ("?cursor=abc", "/cursor"),
    ] {
        let response = app
            .request(Method::GET, &format!("/v1/audit/events/export{query}"))
            .bearer(&admin)
            .send()
            .await;
        assert_eq!(response.status, StatusCode::UNPROCESSABLE_ENTITY, "{query}");
        assert_eq!(response.pointers(), vec![pointer], "{query}");
    }
    let search_with_format = search(&app, &admin, "?format=csv").await;
    assert_eq!(search_with_format.pointers(), vec!["/format"]);
}

async fn verify(app: &TestApp, key: &str, query: &str) -> TestResponse {
    app.request(Method::GET, &format!("/v1/audit/verify{query}"))
        .bearer(key)
        .send()
        .await
}

/// A tenant with `count` ingested events plus the registry's own record of its creation.
async fn chained_tenant(app: &TestApp, admin: &str, slug: &str, count: usize) -> uuid::Uuid {
    let tenant = app
        .request(Method::POST, "/v1/tenants")
        .bearer(admin)
        .json(&json!({"slug": slug, "name": "Chained", "plan": "standard", "status": "active"}))
        .send()
        .await
        .json()["id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .expect("a tenant");
    let events: Vec<Value> = (0..count)
        .map(|n| json!({"action": "doc.read", "crud": "r", "group": {"id": slug}, "description": format!("read {n}")}))
        .collect();
    assert_eq!(
        ingest(app, admin, Value::Array(events)).await.status,
        StatusCode::CREATED
    );
    tenant
}

#[tokio::test]
async fn a_chain_verifies_until_a_row_is_changed_in_sql() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    let tenant = chained_tenant(&app, &admin, "acme", 5).await;
    let intact = verify(&app, &admin, &format!("?group_id={tenant}")).await;
    assert_eq!(intact.status, StatusCode::OK);
    assert_eq!(
        intact.json(),
        json!({"ok": true, "mode": "incremental", "from_seq": 1, "through_seq": 6,
               "events_checked": 6, "checkpoints_checked": 0, "broken": [],
               "next_after_seq": null}),
        "the tenant's creation and five ingested events"
    );
    let tampered: i64 = sqlx::query_scalar(
        "UPDATE audit_log SET description = 'nothing to see' WHERE chain_key = $1 AND chain_seq = 4 RETURNING id",
    )
    .bind(tenant)
    .fetch_one(app.db.pool())
    .await
    .expect("tampered");
    let report = verify(&app, &admin, "?group_id=acme").await.json();
    assert_eq!(report["ok"], false);
    assert_eq!(
        report["events_checked"], 6,
        "checking goes on past the break"
    );
    assert_eq!(
        report["broken"],
        json!([{"from_seq": 4, "to_seq": 4, "first_id": tampered, "reason": "content_changed"}])
    );
}

#[tokio::test]
async fn deleting_a_row_or_the_newest_rows_in_sql_breaks_the_chain() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    let middle = chained_tenant(&app, &admin, "acme", 5).await;
    let tail = chained_tenant(&app, &admin, "globex", 5).await;
    sqlx::query("DELETE FROM audit_log WHERE chain_key = $1 AND chain_seq = 3")
        .bind(middle)
        .execute(app.db.pool())
        .await
        .expect("deleted");
    let report = verify(&app, &admin, "?group_id=acme").await.json();
    assert_eq!(
        report["broken"],
        json!([{"from_seq": 3, "to_seq": 3, "first_id": null, "reason": "missing_events"}])
    );
    sqlx::query("DELETE FROM audit_log WHERE chain_key = $1 AND chain_seq >= 5")
        .bind(tail)
        .execute(app.db.pool())
        .await
        .expect("deleted");
    let report = verify(&app, &admin, "?group_id=globex").await.json();
    assert_eq!(report["ok"], false);
    assert_eq!(report["events_checked"], 4);
    assert_eq!(
        report["broken"],
        json!([{"from_seq": 5, "to_seq": 6, "first_id": null, "reason": "tail_missing"}])
    );
}

#[tokio::test]
async fn concurrent_appends_to_one_tenant_form_one_unbroken_chain() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    app.tenant("acme").await;
    app.tenant("globex").await;
    let writes = (0..16).map(|n| {
        let (app, admin) = (&app, &admin);
        async move {
            let group = if n % 2 == 0 { "acme" } else { "globex" };
            let batch: Vec<Value> = (0..10)
                .map(|_| json!({"action": "doc.read", "crud": "r", "group": {"id": group}}))
                .collect();
            ingest(app, admin, Value::Array(batch)).await.status
        }
    });
    for status in futures::future::join_all(writes).await {
        assert_eq!(status, StatusCode::CREATED);
    }
    for group in ["acme", "globex"] {
        let report = verify(&app, &admin, &format!("?group_id={group}"))
            .await
            .json();
        assert_eq!(report["ok"], true, "{group}: {report}");
        assert_eq!(report["events_checked"], 80, "{group}");
    }
}

#[tokio::test]
async fn a_tenant_verifies_only_its_own_chain() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    let own = chained_tenant(&app, &admin, "acme", 2).await;
    chained_tenant(&app, &admin, "globex", 2).await;
    let (_, reader) = app.key(Some(own), &[Scope::AuditRead]).await;
    let mine = verify(&app, &reader, "").await.json();
    assert_eq!(mine["ok"], true);
    assert!(
        mine["events_checked"]
            .as_u64()
            .is_some_and(|checked| checked >= 3)
    );
    let foreign = verify(&app, &reader, "?group_id=globex").await;
    let unknown = verify(&app, &reader, "?group_id=initech").await;
    assert_eq!(foreign.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        (foreign.status, foreign.json()["errors"].clone()),
        (unknown.status, unknown.json()["errors"].clone()),
        "another tenant's slug answers as an unknown one does"
    );
    assert_eq!(
        verify(&app, &admin, "?group_id=nobody").await.pointers(),
        vec!["/group_id"]
    );
}

#[tokio::test]
async fn retention_deletes_expired_events_in_batches_and_the_rest_still_verifies() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    let tenant = chained_tenant(&app, &admin, "acme", 5).await;
    sqlx::query(
        "UPDATE audit_log SET received_at = now() - interval '40 days' WHERE chain_key = $1 AND chain_seq <= 3",
    )
    .bind(tenant)
    .execute(app.db.pool())
    .await
    .expect("aged");
    let deleted = audit::prune_expired(app.db.pool(), chrono::Duration::days(30))
        .await
        .expect("pruned");
    assert_eq!(deleted, 3);
    let remaining: Vec<i64> = sqlx::query_scalar(
        "SELECT chain_seq FROM audit_log WHERE chain_key = $1 ORDER BY chain_seq",
    )
    .bind(tenant)
    .fetch_all(app.db.pool())
    .await
    .expect("remaining");
    assert_eq!(remaining, vec![4, 5, 6]);
    let report = verify(&app, &admin, "?group_id=acme&mode=full")
        .await
        .json();
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(
        (&report["from_seq"], &report["events_checked"]),
        (&json!(4), &json!(3))
    );
    assert_eq!(
        audit::prune_expired(app.db.pool(), chrono::Duration::days(30))
            .await
            .expect("pruned"),
        0,
        "nothing left to expire"
    );
}

#[tokio::test]
async fn authentication_and_authorization_denials_are_audited() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    let tenant = app.tenant("acme").await;
    let (key_id, weak) = app.key(Some(tenant), &[Scope::AuditRead]).await;
    let anonymous = app.request(Method::GET, "/v1/tenants").send().await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    let forged = app
        .request(Method::GET, "/v1/tenants")
        .bearer("tr_dev_0000000000000000_0000000000000000000000000000000000000000000000000000000000000000")
        .send()
        .await;
    assert_eq!(forged.status, StatusCode::UNAUTHORIZED);
    let forbidden = app
        .request(Method::POST, "/v1/tenants")
        .bearer(&weak)
        .json(&json!({"slug": "nope", "name": "Nope", "plan": "standard"}))
        .send()
        .await;
    assert_eq!(forbidden.status, StatusCode::FORBIDDEN);
    let page = search(&app, &admin, "?action=auth.*").await.json();
    let items = page["items"].as_array().expect("items");
    assert_eq!(items.len(), 3, "{page}");
    let refused = &items[0];
    assert_eq!(refused["action"], "auth.forbidden");
    assert_eq!(refused["is_failure"], true);
    assert_eq!(refused["actor"]["id"], format!("api_key:{key_id}"));
    assert_eq!(
        refused["group"]["id"],
        tenant.to_string(),
        "in the tenant's own trail"
    );
    assert_eq!(refused["target"]["id"], "POST /v1/tenants");
    for denied in &items[1..] {
        assert_eq!(denied["action"], "auth.denied");
        assert_eq!(denied["is_anonymous"], true);
        assert_eq!(denied["target"]["id"], "GET /v1/tenants");
        assert!(denied["source_ip"].as_str().is_some(), "{denied}");
    }
}

#[tokio::test]
async fn events_are_recorded_under_the_product_their_key_belongs_to() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    let tenant = app.tenant("acme").await;
    app.product("billing").await;
    let created = app
        .request(Method::POST, "/v1/api-keys")
        .bearer(&admin)
        .json(&json!({"name": "billing", "tenant_id": tenant, "scopes": ["audit:write"], "product": "billing"}))
        .send()
        .await;
    assert_eq!(
        created.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&created.body)
    );
    assert_eq!(created.json()["product"], "billing");
    let key = created.json()["key"].as_str().expect("the key").to_owned();
    ingest(&app, &key, json!({"action": "invoice.paid", "crud": "u"})).await;
    let (_, anonymous_product) = app.key(Some(tenant), &[Scope::AuditWrite]).await;
    ingest(
        &app,
        &anonymous_product,
        json!({"action": "invoice.sent", "crud": "u"}),
    )
    .await;
    let page = search(&app, &admin, "?action=invoice.*").await.json();
    let products: Vec<&str> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|item| item["product"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(products.len(), 2);
    assert!(
        products[0].starts_with("api_key:"),
        "a key without a product: {products:?}"
    );
    assert_eq!(products[1], "billing");
    let bad = app
        .request(Method::POST, "/v1/api-keys")
        .bearer(&admin)
        .json(&json!({"name": "x", "scopes": ["audit:write"], "product": "Not A Product"}))
        .send()
        .await;
    assert_eq!(bad.pointers(), vec!["/product"]);
}
