//! The audit log under attack and under load: writers that would deadlock each other,
//! events whose stored form differs from their sent form, tampering around checkpoints,
//! and verifications that would occupy the server.

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

async fn verify(app: &TestApp, key: &str, query: &str) -> TestResponse {
    app.request(Method::GET, &format!("/v1/audit/verify{query}"))
        .bearer(key)
        .send()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ingesting_and_patching_one_tenant_at_once_never_deadlocks() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    let tenant = app.tenant("acme").await;
    let (_, writer) = app.key(Some(tenant), &[Scope::AuditWrite]).await;
    for round in 0..3 {
        let ingests = (0..8).map(|client| {
            let (app, writer) = (&app, &writer);
            async move {
                let batch: Vec<Value> = (0..10)
                    .map(|n| json!({"action": "doc.read", "crud": "r", "group": {"id": "acme"},
                                    "description": format!("round {round} client {client} read {n}")}))
                    .collect();
                ingest(app, writer, Value::Array(batch)).await
            }
        });
        let patches = (0..8).map(|client| {
            let (app, admin) = (&app, &admin);
            async move {
                app.request(Method::PATCH, &format!("/v1/tenants/{tenant}"))
                    .bearer(admin)
                    .raw(
                        "application/merge-patch+json",
                        json!({"name": format!("Acme {round}-{client}")}).to_string(),
                    )
                    .send()
                    .await
            }
        });
        let (ingested, patched) = futures::future::join(
            futures::future::join_all(ingests),
            futures::future::join_all(patches),
        )
        .await;
        for response in ingested {
            assert_eq!(
                response.status,
                StatusCode::CREATED,
                "round {round}: {}",
                String::from_utf8_lossy(&response.body)
            );
        }
        for response in patched {
            assert_eq!(
                response.status,
                StatusCode::OK,
                "round {round}: {}",
                String::from_utf8_lossy(&response.body)
            );
        }
    }
    let report = verify(&app, &admin, "?group_id=acme").await.json();
    assert_eq!(report["ok"], true, "{report}");
}
