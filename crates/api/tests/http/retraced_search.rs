//! The Retraced drop-in's reading side over HTTP: the GraphQL `search` as the clients send
//! it (paging back with cursors, the mask, confinement to the tenant and the project), and
//! viewer tokens (one tenant, one product, read only, expiring, dying with their key).

use axum::http::{Method, StatusCode};
use domain::Scope;
use serde_json::{Value, json};
use testkit::{TestApp, TestResponse};

use crate::retraced::publish;

const EVENT: &str = "/auditlog/publisher/v1/project/billing/event";
const GRAPHQL: &str = "/auditlog/publisher/v1/project/billing/graphql";

/// The document Retraced's Node client sends for a mask of id, action, actor, fields.
const SEARCH: &str = "query Search($query: String!, $last: Int, $before: String) {
  search(query: $query, last: $last, before: $before) {
    totalCount,
    pageInfo {
      hasPreviousPage
    }
    edges {
      cursor
      node {
        id
        action
        actor {
          id
          name
          fields {
            key
            value
          }
        }
        created
        fields {
          key
          value
        }
        external_id
      }
    }
  }
}";

async fn graphql(app: &TestApp, key: &str, query: &str, last: i32, before: &str) -> TestResponse {
    app.request(Method::POST, GRAPHQL)
        .header("authorization", &format!("Token token={key}"))
        .json(&json!({"query": SEARCH, "variables": {"query": query, "last": last, "before": before}}))
        .send()
        .await
}

fn actions(answer: &Value) -> Vec<String> {
    answer["data"]["search"]["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|edge| {
            edge["node"]["action"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn the_search_pages_back_in_time_as_the_client_pages() {
    let app = TestApp::new().await;
    let (_, writer) = app.product_key(None, &[Scope::AuditWrite], "billing").await;
    let (_, reader) = app.product_key(None, &[Scope::AuditRead], "billing").await;
    for n in 1..=5 {
        let event = json!({"action": format!("doc.n{n}"), "crud": "r",
                           "actor": {"id": "u-1", "name": "Jane", "fields": {"dept": "legal"}},
                           "fields": {"n": n.to_string()},
                           "created": format!("2026-11-01T10:00:0{n}Z")});
        assert_eq!(
            publish(&app, EVENT, &writer, event).await.status,
            StatusCode::CREATED
        );
    }
    let first = graphql(&app, &reader, "crud:r actor.id:u-1", 2, "").await;
    assert_eq!(first.status, StatusCode::OK);
    let first = first.json();
    assert_eq!(first["data"]["search"]["totalCount"], 5, "{first}");
    assert_eq!(actions(&first), vec!["doc.n5", "doc.n4"]);
    assert_eq!(first["data"]["search"]["pageInfo"]["hasPreviousPage"], true);
    let node = &first["data"]["search"]["edges"][0]["node"];
    assert_eq!(
        node["actor"]["fields"],
        json!([{"key": "dept", "value": "legal"}])
    );
    assert_eq!(node["fields"], json!([{"key": "n", "value": "5"}]));
    assert!(
        node.get("description").is_none(),
        "the mask decides: {node}"
    );
    let cursor = first["data"]["search"]["edges"][1]["cursor"]
        .as_str()
        .expect("a cursor")
        .to_owned();
    let second = graphql(&app, &reader, "crud:r actor.id:u-1", 2, &cursor)
        .await
        .json();
    assert_eq!(actions(&second), vec!["doc.n3", "doc.n2"]);
    let cursor = second["data"]["search"]["edges"][1]["cursor"]
        .as_str()
        .expect("a cursor")
        .to_owned();
    let last = graphql(&app, &reader, "crud:r actor.id:u-1", 2, &cursor)
        .await
        .json();
    assert_eq!(actions(&last), vec!["doc.n1"]);
    assert_eq!(last["data"]["search"]["pageInfo"]["hasPreviousPage"], false);
    let structured = graphql(
        &app,
        &reader,
        r#"action:"doc.n2" received:2026-01-01T00:00:00.000Z, actor.name:"Jane""#,
        10,
        "",
    )
    .await
    .json();
    assert_eq!(actions(&structured), vec!["doc.n2"]);
}

#[tokio::test]
async fn a_refused_search_is_a_graphql_error_and_a_bad_body_a_problem() {
    let app = TestApp::new().await;
    let (_, reader) = app.product_key(None, &[Scope::AuditRead], "billing").await;
    for (query, last, before) in [
        ("colour:red", 10, ""),
        ("crud:r", 0, ""),
        ("crud:r", 10, "not-a-cursor"),
    ] {
        let answer = graphql(&app, &reader, query, last, before).await;
        assert_eq!(answer.status, StatusCode::OK);
        let answer = answer.json();
        assert!(answer["data"].is_null(), "{answer}");
        assert!(answer["errors"][0]["message"].is_string(), "{answer}");
    }
    let not_graphql = app
        .request(Method::POST, GRAPHQL)
        .header("authorization", &format!("token={reader}"))
        .json(&json!({"nope": 1}))
        .send()
        .await;
    assert_eq!(not_graphql.status, StatusCode::UNPROCESSABLE_ENTITY);
    let (_, writer_only) = app.product_key(None, &[Scope::AuditWrite], "billing").await;
    let forbidden = graphql(&app, &writer_only, "crud:r", 10, "").await;
    assert_eq!(forbidden.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn the_search_sees_the_projects_events_of_the_keys_tenant_only() {
    let app = TestApp::new().await;
    let (acme, other) = two_tenants_and_two_projects(&app).await;
    let (_, acme_reader) = app
        .product_key(Some(acme), &[Scope::AuditRead], "billing")
        .await;
    let seen = graphql(&app, &acme_reader, "crud:r", 50, "").await.json();
    assert_eq!(actions(&seen), vec!["doc.acme"]);
    let (_, platform_reader) = app.product_key(None, &[Scope::AuditRead], "billing").await;
    let seen = graphql(&app, &platform_reader, "crud:r", 50, "")
        .await
        .json();
    assert_eq!(actions(&seen), vec!["doc.other", "doc.acme"]);
    let (_, other_reader) = app
        .product_key(Some(other), &[Scope::AuditRead], "billing")
        .await;
    let seen = graphql(&app, &other_reader, "crud:r", 50, "").await.json();
    assert_eq!(actions(&seen), vec!["doc.other"]);
}

/// Tenants acme and other; `doc.acme` and `doc.other` published to project billing in
/// each, `doc.crm` to project crm in acme.
async fn two_tenants_and_two_projects(app: &TestApp) -> (uuid::Uuid, uuid::Uuid) {
    let acme = app.tenant("acme").await;
    let other = app.tenant("other").await;
    let (_, writer) = app.product_key(None, &[Scope::AuditWrite], "billing").await;
    let (_, crm) = app.product_key(None, &[Scope::AuditWrite], "crm").await;
    for group in ["acme", "other"] {
        let event = json!({"action": format!("doc.{group}"), "crud": "r", "group": {"id": group}});
        assert_eq!(
            publish(app, EVENT, &writer, event).await.status,
            StatusCode::CREATED
        );
    }
    let crm_event = json!({"action": "doc.crm", "crud": "r", "group": {"id": "acme"}});
    let crm_path = "/auditlog/publisher/v1/project/crm/event";
    assert_eq!(
        publish(app, crm_path, &crm, crm_event).await.status,
        StatusCode::CREATED
    );
    (acme, other)
}

async fn viewer_token(app: &TestApp, key: &str, query: &str) -> TestResponse {
    app.request(
        Method::GET,
        &format!("/auditlog/publisher/v1/project/billing/viewertoken?{query}"),
    )
    .header("authorization", &format!("Token token={key}"))
    .send()
    .await
}

#[tokio::test]
async fn a_viewer_token_reads_its_tenants_events_of_its_product_and_nothing_else() {
    let app = TestApp::new().await;
    let (acme, other) = two_tenants_and_two_projects(&app).await;
    let (_, reader) = app.product_key(None, &[Scope::AuditRead], "billing").await;
    let issued = viewer_token(&app, &reader, "group_id=acme&actor_id=u-1&is_admin=true").await;
    assert_eq!(
        issued.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&issued.body)
    );
    assert_eq!(issued.header("cache-control"), Some("no-store"));
    let token = issued.json()["token"].as_str().expect("a token").to_owned();
    assert!(token.starts_with("trv_"), "{token}");

    let search = |path: &'static str| {
        let token = token.clone();
        let app = &app;
        async move { app.request(Method::GET, path).bearer(&token).send().await }
    };
    let page = search("/v1/audit/events?action=doc.*").await;
    assert_eq!(page.status, StatusCode::OK);
    let page = page.json();
    let actions: Vec<&str> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|item| item["action"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(actions, vec!["doc.acme"], "its tenant and product only");
    let export = search("/v1/audit/events/export?action=doc.*").await;
    assert_eq!(export.status, StatusCode::OK);
    let lines = String::from_utf8_lossy(&export.body).lines().count();
    assert_eq!(lines, 1);
    for (path, status) in [
        ("/v1/audit/events?product=crm", StatusCode::FORBIDDEN),
        ("/v1/audit/verify", StatusCode::FORBIDDEN),
        ("/v1/tenants", StatusCode::FORBIDDEN),
        ("/v1/api-keys", StatusCode::FORBIDDEN),
    ] {
        assert_eq!(search(path).await.status, status, "{path}");
    }
    let other_group = app
        .request(Method::GET, &format!("/v1/audit/events?group_id={other}"))
        .bearer(&token)
        .send()
        .await;
    assert_eq!(other_group.status, StatusCode::FORBIDDEN);
    let write = app
        .request(Method::POST, "/v1/audit/events")
        .bearer(&token)
        .json(&json!({"action": "doc.forged", "crud": "c"}))
        .send()
        .await;
    assert_eq!(write.status, StatusCode::FORBIDDEN);
    let publish_with_it = publish(&app, EVENT, &token, json!({"action": "a", "crud": "c"})).await;
    assert_eq!(publish_with_it.status, StatusCode::FORBIDDEN);
    let another = viewer_token(&app, &token, "group_id=acme&actor_id=u-1").await;
    assert_eq!(
        another.status,
        StatusCode::FORBIDDEN,
        "no token from a token"
    );
    let recorded: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_log WHERE action = 'audit.viewer_token.created' AND tenant_id = $1",
    )
    .bind(acme)
    .fetch_one(app.db.pool())
    .await
    .expect("a count");
    assert_eq!(recorded, 1);
    let stored: Vec<u8> = sqlx::query_scalar("SELECT token_hash FROM audit_viewer_tokens")
        .fetch_one(app.db.pool())
        .await
        .expect("the stored hash");
    assert_ne!(stored, token.as_bytes(), "only the hash is stored");
}

#[tokio::test]
async fn a_viewer_token_stops_at_expiry_and_with_its_key() {
    let app = TestApp::new().await;
    app.tenant("acme").await;
    let (key_id, reader) = app.product_key(None, &[Scope::AuditRead], "billing").await;
    let token_of =
        |answer: TestResponse| answer.json()["token"].as_str().expect("a token").to_owned();
    let expiring = token_of(viewer_token(&app, &reader, "group_id=acme&actor_id=u-1").await);
    let revoked = token_of(viewer_token(&app, &reader, "group_id=acme&actor_id=u-2").await);
    let reads = |token: String| {
        let app = &app;
        async move {
            app.request(Method::GET, "/v1/audit/events")
                .bearer(&token)
                .send()
                .await
                .status
        }
    };
    assert_eq!(reads(expiring.clone()).await, StatusCode::OK);
    sqlx::query(
        "UPDATE audit_viewer_tokens SET created_at = now() - interval '20 minutes',
             expires_at = now() - interval '5 minutes' WHERE actor_id = 'u-1'",
    )
    .execute(app.db.pool())
    .await
    .expect("the token is aged");
    assert_eq!(reads(expiring).await, StatusCode::UNAUTHORIZED);
    assert_eq!(reads(revoked.clone()).await, StatusCode::OK);
    app.revoke(key_id).await;
    assert_eq!(reads(revoked).await, StatusCode::UNAUTHORIZED);
    let malformed = app
        .request(Method::GET, "/v1/audit/events")
        .bearer("trv_nothex")
        .send()
        .await;
    assert_eq!(malformed.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_viewer_token_is_issued_only_for_a_tenant_the_key_may_read() {
    let app = TestApp::new().await;
    let acme = app.tenant("acme").await;
    app.tenant("other").await;
    let (_, tenant_reader) = app
        .product_key(Some(acme), &[Scope::AuditRead], "billing")
        .await;
    let own = viewer_token(
        &app,
        &tenant_reader,
        &format!("group_id={acme}&actor_id=u-1"),
    )
    .await;
    assert_eq!(own.status, StatusCode::OK);
    for query in [
        "group_id=other&actor_id=u-1",
        "group_id=nobody&actor_id=u-1",
    ] {
        let refused = viewer_token(&app, &tenant_reader, query).await;
        assert_eq!(refused.pointers(), vec!["/group_id"], "{query}");
    }
    let bad_flag = viewer_token(
        &app,
        &tenant_reader,
        "group_id=acme&actor_id=u&is_admin=yes",
    )
    .await;
    assert_eq!(bad_flag.pointers(), vec!["/is_admin"]);
    let (_, other_product) = app.product_key(None, &[Scope::AuditRead], "crm").await;
    let forbidden = viewer_token(&app, &other_product, "group_id=acme&actor_id=u-1").await;
    assert_eq!(forbidden.status, StatusCode::FORBIDDEN);
}
