//! The Retraced drop-in's publisher side over HTTP: the hash the clients check (fixtures are
//! the canonical strings the Node client `@retracedhq/retraced` 0.7.23 builds), Retraced's
//! authorization forms, the project as the key's product, tenant confinement, duplicates,
//! and that published events are the native audit log's.

use axum::http::{Method, StatusCode};
use domain::Scope;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use testkit::{TestApp, TestResponse};

const EVENT: &str = "/auditlog/publisher/v1/project/billing/event";
const BULK: &str = "/auditlog/publisher/v1/project/billing/event/bulk";

pub(crate) async fn publish(app: &TestApp, path: &str, key: &str, body: Value) -> TestResponse {
    app.request(Method::POST, path)
        .header("authorization", &format!("token={key}"))
        .json(&body)
        .send()
        .await
}

/// The hash of the client's canonical string `template` with `{id}` replaced by `id`.
fn client_hash(template: &str, id: &str) -> String {
    let digest = Sha256::digest(template.replace("{id}", id).as_bytes());
    digest.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn id_and_hash(answer: &Value) -> (String, String) {
    (
        answer["id"].as_str().expect("an id").to_owned(),
        answer["hash"].as_str().expect("a hash").to_owned(),
    )
}

#[tokio::test]
async fn a_published_event_answers_the_hash_the_client_computes() {
    let app = TestApp::new().await;
    app.tenant("acme").await;
    let (_, key) = app.product_key(None, &[Scope::AuditWrite], "billing").await;
    let response = publish(
        &app,
        EVENT,
        &key,
        json!({"action": "doc:shared", "crud": "u", "group": {"id": "acme", "name": "Acme"},
               "actor": {"id": "u=1;x", "name": "Jane"}, "target": {"id": "t%1"},
               "source_ip": "10.0.0.1", "is_failure": true,
               "fields": {"b": "2:=;%", "a": "é✓"}}),
    )
    .await;
    assert_eq!(
        response.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    let (id, hash) = id_and_hash(&response.json());
    assert_eq!(
        hash,
        client_hash(
            "{id}:doc%3Ashared:t%251:u=1;x:acme:10.0.0.1:1:0:a=é✓;b=2%3A%3D%3B%25;",
            &id
        )
    );
}

#[tokio::test]
async fn absent_optional_parts_empty_fields_and_external_ids_hash_as_in_the_client() {
    let app = TestApp::new().await;
    let (_, key) = app.product_key(None, &[Scope::AuditWrite], "billing").await;
    let bare = publish(&app, EVENT, &key, json!({"action": "a.b", "crud": "c"})).await;
    let (id, hash) = id_and_hash(&bare.json());
    assert_eq!(hash, client_hash("{id}:a.b:::::0:0::", &id));
    let external = publish(
        &app,
        EVENT,
        &key,
        json!({"action": "x", "crud": "r", "fields": {}, "external_id": "ext:1%",
               "is_anonymous": true, "actor": {}, "target": null}),
    )
    .await;
    let (id, hash) = id_and_hash(&external.json());
    assert_eq!(hash, client_hash("{id}:x:::::0:1::ext%3A1%25", &id));
}

#[tokio::test]
async fn metadata_is_hashed_as_the_client_hashes_it_and_stored() {
    let app = TestApp::new().await;
    let (_, key) = app.product_key(None, &[Scope::AuditWrite], "billing").await;
    let response = publish(
        &app,
        EVENT,
        &key,
        json!({"action": "x", "crud": "c", "metadata": {"z": "1", "k=": "v;"}}),
    )
    .await;
    assert_eq!(response.status, StatusCode::CREATED);
    let (id, hash) = id_and_hash(&response.json());
    assert_eq!(hash, client_hash("{id}:x:::::0:0:::k%3D=v%3B;z=1;", &id));
    let stored: Value = sqlx::query_scalar("SELECT metadata FROM audit_log WHERE action = 'x'")
        .fetch_one(app.db.pool())
        .await
        .expect("the row");
    assert_eq!(stored, json!({"z": "1", "k=": "v;"}));
}

#[tokio::test]
async fn a_bulk_answers_each_event_in_the_order_sent() {
    let app = TestApp::new().await;
    let (_, key) = app.product_key(None, &[Scope::AuditWrite], "billing").await;
    let response = publish(
        &app,
        BULK,
        &key,
        json!({"events": [
            {"action": "a.one", "crud": "c"},
            {"action": "a.two", "crud": "u", "fields": {"k": "v"}},
            {"action": "a.three", "crud": "d", "external_id": "e-3"}
        ]}),
    )
    .await;
    assert_eq!(response.status, StatusCode::CREATED);
    let answers = response.json();
    let answers = answers.as_array().expect("a list");
    let templates = [
        "{id}:a.one:::::0:0::",
        "{id}:a.two:::::0:0:k=v;",
        "{id}:a.three:::::0:0:::e-3",
    ];
    let mut ids = Vec::new();
    for (answer, template) in answers.iter().zip(templates) {
        let (id, hash) = id_and_hash(answer);
        assert_eq!(hash, client_hash(template, &id), "{template}");
        ids.push(id.parse::<i64>().expect("a numeric id"));
    }
    assert_eq!(ids.len(), 3);
    assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "{ids:?}");
    let invalid = publish(
        &app,
        BULK,
        &key,
        json!({"events": [{"action": "ok", "crud": "c"}, {"action": "bad", "crud": "z"},
                          {"action": "x", "crud": "c", "target": {"name": "no id"}}]}),
    )
    .await;
    assert_eq!(
        invalid.pointers(),
        vec!["/events/1/crud", "/events/2/target/id"]
    );
    let empty = publish(&app, BULK, &key, json!({"events": []})).await;
    assert_eq!(empty.pointers(), vec!["/events"]);
}

#[tokio::test]
async fn retraceds_authorization_forms_and_bearer_are_accepted() {
    let app = TestApp::new().await;
    let (_, key) = app.product_key(None, &[Scope::AuditWrite], "billing").await;
    for authorization in [
        format!("token={key}"),
        format!("Token token={key}"),
        format!("Bearer {key}"),
    ] {
        let response = app
            .request(Method::POST, EVENT)
            .header("authorization", &authorization)
            .json(&json!({"action": "a.b", "crud": "c"}))
            .send()
            .await;
        assert_eq!(response.status, StatusCode::CREATED, "{authorization}");
    }
    for refused in ["token=nope", "Token token=", "Basic abc", "token"] {
        let response = app
            .request(Method::POST, EVENT)
            .header("authorization", refused)
            .json(&json!({"action": "a.b", "crud": "c"}))
            .send()
            .await;
        assert_eq!(response.status, StatusCode::UNAUTHORIZED, "{refused}");
    }
    let native = app
        .request(Method::GET, "/v1/me")
        .header("authorization", &format!("token={key}"))
        .send()
        .await;
    assert_eq!(
        native.status,
        StatusCode::UNAUTHORIZED,
        "Retraced's forms are for /auditlog only"
    );
}

#[tokio::test]
async fn the_project_must_be_the_keys_product() {
    let app = TestApp::new().await;
    let (_, billing) = app.product_key(None, &[Scope::AuditWrite], "billing").await;
    let (_, no_product) = app.key(None, &[Scope::AuditWrite]).await;
    let (_, read_only) = app.product_key(None, &[Scope::AuditRead], "billing").await;
    let event = json!({"action": "a.b", "crud": "c"});
    let other_project = "/auditlog/publisher/v1/project/crm/event";
    for (path, key) in [
        (other_project, &billing),
        (EVENT, &no_product),
        (EVENT, &read_only),
    ] {
        let response = publish(&app, path, key, event.clone()).await;
        assert_eq!(response.status, StatusCode::FORBIDDEN, "{path}");
        assert_eq!(
            response.header("content-type"),
            Some("application/problem+json")
        );
    }
}

#[tokio::test]
async fn a_tenant_key_publishes_into_its_own_tenant_only() {
    let app = TestApp::new().await;
    let acme = app.tenant("acme").await;
    let other = app.tenant("other").await;
    let (_, key) = app
        .product_key(Some(acme), &[Scope::AuditWrite], "billing")
        .await;
    let own = publish(&app, EVENT, &key, json!({"action": "a.own", "crud": "c"})).await;
    assert_eq!(own.status, StatusCode::CREATED);
    let by_slug = publish(
        &app,
        EVENT,
        &key,
        json!({"action": "a.slug", "crud": "c", "group": {"id": "acme"}}),
    )
    .await;
    assert_eq!(by_slug.status, StatusCode::CREATED);
    for group in [other.to_string(), "other".to_owned(), "nobody".to_owned()] {
        let refused = publish(
            &app,
            EVENT,
            &key,
            json!({"action": "a.other", "crud": "c", "group": {"id": group}}),
        )
        .await;
        assert_eq!(refused.pointers(), vec!["/group/id"], "{group}");
    }
    let tenants: Vec<Option<uuid::Uuid>> =
        sqlx::query_scalar("SELECT tenant_id FROM audit_log WHERE action LIKE 'a.%' ORDER BY id")
            .fetch_all(app.db.pool())
            .await
            .expect("the rows");
    assert_eq!(tenants, vec![Some(acme), Some(acme)]);
}

#[tokio::test]
async fn a_repeated_external_id_answers_the_stored_events_id_and_stores_once() {
    let app = TestApp::new().await;
    let (_, key) = app.product_key(None, &[Scope::AuditWrite], "billing").await;
    let event = json!({"action": "a.once", "crud": "c", "external_id": "x-1"});
    let first = id_and_hash(&publish(&app, EVENT, &key, event.clone()).await.json());
    let again = id_and_hash(&publish(&app, EVENT, &key, event.clone()).await.json());
    assert_eq!(first, again);
    let in_bulk = publish(&app, BULK, &key, json!({"events": [event.clone(), event]})).await;
    let ids: Vec<String> = in_bulk
        .json()
        .as_array()
        .expect("a list")
        .iter()
        .map(|answer| id_and_hash(answer).0)
        .collect();
    assert_eq!(ids, vec![first.0.clone(), first.0]);
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE action = 'a.once'")
        .fetch_one(app.db.pool())
        .await
        .expect("a count");
    assert_eq!(stored, 1);
}

#[tokio::test]
async fn published_events_are_the_native_audit_logs_events() {
    let app = TestApp::new().await;
    let acme = app.tenant("acme").await;
    let admin = app.admin_key().await;
    let (_, key) = app
        .product_key(Some(acme), &[Scope::AuditWrite], "billing")
        .await;
    let published = publish(
        &app,
        EVENT,
        &key,
        json!({"action": "doc.shared", "crud": "u", "actor": {"id": "u-1", "name": "Jane"},
               "description": "Jane shared it", "created": "2026-11-01T10:00:00Z"}),
    )
    .await;
    let (id, _) = id_and_hash(&published.json());
    let page = app
        .request(
            Method::GET,
            &format!("/v1/audit/events?group_id={acme}&product=billing"),
        )
        .bearer(&admin)
        .send()
        .await
        .json();
    assert_eq!(page["items"][0]["id"].to_string(), id);
    assert_eq!(page["items"][0]["actor"]["name"], "Jane");
    let verified = app
        .request(Method::GET, &format!("/v1/audit/verify?group_id={acme}"))
        .bearer(&admin)
        .send()
        .await
        .json();
    assert_eq!(verified["ok"], true, "{verified}");
    assert!(verified["events_checked"].as_i64().unwrap_or_default() >= 1);
}
