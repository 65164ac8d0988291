//! A tenant created with products: subscribed and their plans queued in the same change, or
//! nothing made; and the tenant's views showing where each plan stands, with an ETag that
//! moves when it does.

use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};
use testkit::{TestApp, TestResponse};

async fn send(
    app: &TestApp,
    admin: &str,
    method: Method,
    path: &str,
    body: &Value,
) -> TestResponse {
    app.request(method, path)
        .bearer(admin)
        .json(body)
        .send()
        .await
}

async fn get(app: &TestApp, admin: &str, path: &str) -> TestResponse {
    app.request(Method::GET, path).bearer(admin).send().await
}

async fn create(app: &TestApp, admin: &str, body: &Value) -> TestResponse {
    send(app, admin, Method::POST, "/v1/tenants", body).await
}

async fn patch_name(
    app: &TestApp,
    admin: &str,
    id: uuid::Uuid,
    tag: &str,
    name: &str,
) -> StatusCode {
    app.request(Method::PATCH, &format!("/v1/tenants/{id}"))
        .bearer(admin)
        .header("if-match", tag)
        .json(&json!({ "name": name }))
        .send()
        .await
        .status
}

/// Publishes `certifai` with a roles plan and `billing` with a config schema and a feature.
async fn catalog(app: &TestApp, admin: &str) {
    let certifai = json!({"name": "Certifai", "provisioning": {"steps": [
        {"kind": "roles", "roles": [{"name": "tenant-admin", "permissions": ["documents:write"]}]}
    ]}});
    let billing = json!({
        "name": "Billing",
        "config_schema": {"type": "object", "properties": {"currency": {"type": "string"}}},
        "features": {"invoices": {"type": "bool"}}
    });
    for (id, manifest) in [("certifai", certifai), ("billing", billing)] {
        let published = send(
            app,
            admin,
            Method::PUT,
            &format!("/v1/products/{id}"),
            &manifest,
        )
        .await;
        assert!(
            published.status.is_success(),
            "{id}: {}",
            String::from_utf8_lossy(&published.body)
        );
    }
}

/// A service whose catalog has `certifai` and `billing` ([`catalog`]), and an admin key.
async fn with_catalog() -> (TestApp, String) {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    catalog(&app, &admin).await;
    (app, admin)
}

#[tokio::test]
async fn creating_a_tenant_with_products_subscribes_them_and_queues_their_plans() {
    let (app, admin) = with_catalog().await;
    let created = create(
        &app,
        &admin,
        &json!({"slug": "acme", "name": "Acme", "plan": "pro", "products": [
            "certifai",
            {"product": "billing", "config": {"currency": "EUR"}, "feature_overrides": {"invoices": true}}
        ]}),
    )
    .await;
    assert_eq!(
        created.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&created.body)
    );
    let tenant = created.json();
    assert_eq!(tenant["products"], json!(["billing", "certifai"]));
    assert_eq!(
        tenant["provisioning"],
        json!([{"product": "certifai", "goal": "provision", "state": "pending",
                "step": "roles", "attempts": 0, "last_error": null}])
    );
    let id = tenant["id"].as_str().expect("an id");
    let billing = get(&app, &admin, &format!("/v1/tenants/{id}/products"))
        .await
        .json();
    let billing = billing
        .as_array()
        .expect("items")
        .iter()
        .find(|item| item["product"] == "billing")
        .cloned()
        .expect("billing subscribed");
    assert_eq!(billing["config"]["currency"], "EUR");
    assert_eq!(billing["feature_overrides"]["invoices"], true);
    let runs = get(&app, &admin, &format!("/v1/tenants/{id}/provisioning"))
        .await
        .json();
    assert_eq!(runs["items"][0]["product"], "certifai");
    assert_eq!(runs["items"][0]["state"], "pending");
}

#[tokio::test]
async fn rejects_unknown_repeated_or_misconfigured_products_with_the_tenants_own_problems_and_makes_nothing()
 {
    let (app, admin) = with_catalog().await;
    let refused = create(
        &app,
        &admin,
        &json!({"slug": "Acme", "name": "Acme", "plan": "pro", "products": [
            "nope",
            "certifai",
            "certifai",
            {"product": "billing", "config": {"currency": 3}, "feature_overrides": {"ghost": 1}},
            {"product": "billing", "colour": "red"},
            7
        ]}),
    )
    .await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        refused.pointers(),
        [
            "/slug",
            "/products/0",
            "/products/2",
            "/products/3/config/currency",
            "/products/3/feature_overrides/ghost",
            "/products/4",
            "/products/5"
        ]
    );
    let not_a_list = create(
        &app,
        &admin,
        &json!({"slug": "acme", "name": "Acme", "plan": "pro", "products": "certifai"}),
    )
    .await;
    assert_eq!(not_a_list.pointers(), ["/products"]);
    let listed = get(&app, &admin, "/v1/tenants").await.json();
    assert_eq!(listed["items"], json!([]), "nothing was made");
}

#[tokio::test]
async fn a_tenants_etag_moves_with_its_provisioning_and_its_cached_view_follows() {
    let (app, admin) = with_catalog().await;
    let created = create(
        &app,
        &admin,
        &json!({"slug": "acme", "name": "Acme", "plan": "pro", "products": ["certifai"]}),
    )
    .await;
    let id: uuid::Uuid = created.json()["id"]
        .as_str()
        .expect("an id")
        .parse()
        .expect("a uuid");
    let before = get(&app, &admin, "/v1/tenants/by-slug/acme").await;
    let tag = before.header("etag").expect("an etag").to_owned();
    assert!(tag.starts_with("\"1-"), "{tag}");
    sqlx::query(
        "UPDATE tenant_provisioning SET state = 'failed', attempts = 5, last_error = 'boom'
          WHERE tenant_id = $1",
    )
    .bind(id)
    .execute(app.db.pool())
    .await
    .expect("the run failed");
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        let read = app
            .request(Method::GET, "/v1/tenants/by-slug/acme")
            .bearer(&admin)
            .header("if-none-match", &tag)
            .send()
            .await;
        if read.status == StatusCode::OK || Instant::now() > deadline {
            break read;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        after.status,
        StatusCode::OK,
        "the cached view forgot the tenant"
    );
    assert_ne!(after.header("etag"), Some(tag.as_str()));
    assert_eq!(after.json()["provisioning"][0]["state"], "failed");
    assert_eq!(after.json()["provisioning"][0]["last_error"], "boom");
    assert_eq!(
        patch_name(&app, &admin, id, &tag, "Acme Corp").await,
        StatusCode::OK,
        "If-Match compares the tenant's own version"
    );
    assert_eq!(
        patch_name(&app, &admin, id, &tag, "Acme Inc").await,
        StatusCode::PRECONDITION_FAILED
    );
}
