//! Provisioning over HTTP: a plan in the manifest, each product's state of a tenant, the
//! product's report on its hook (its own key only), the tenant's roles, backups and
//! operations, each behind the right scope and confined to the tenant.

use axum::http::{Method, StatusCode};
use domain::Scope;
use serde_json::{Value, json};
use testkit::{TestApp, TestResponse};

async fn send(
    app: &TestApp,
    credential: &str,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> TestResponse {
    let request = app.request(method, path).bearer(credential);
    match body {
        Some(body) => request.json(body).send().await,
        None => request.send().await,
    }
}

async fn get(app: &TestApp, credential: &str, path: &str) -> TestResponse {
    send(app, credential, Method::GET, path, None).await
}

fn manifest(plan: Value) -> Value {
    json!({"name": "Certifai", "provisioning": plan})
}

fn roles_plan() -> Value {
    json!({"steps": [
        {"kind": "database", "isolation": "schema"},
        {"kind": "roles", "roles": [{"name": "tenant-admin", "permissions": ["documents:write"]}]}
    ]})
}

/// A product key of `product` with `scopes` (a platform key unless `tenant`).
async fn product_key(
    app: &TestApp,
    admin: &str,
    product: &str,
    tenant: Option<uuid::Uuid>,
) -> String {
    let created = send(
        app,
        admin,
        Method::POST,
        "/v1/api-keys",
        Some(&json!({
            "name": "product back end", "tenant_id": tenant,
            "scopes": ["products:write", "products:read"], "product": product
        })),
    )
    .await;
    assert_eq!(
        created.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&created.body)
    );
    created.json()["key"].as_str().expect("a key").to_owned()
}

#[tokio::test]
async fn rejects_a_plan_with_misplaced_steps_naming_each_pointer() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    let bad = manifest(json!({"steps": [
        {"kind": "migrations"},
        {"kind": "database", "isolation": "schema", "cluster": {"env": "DATABASE_URL"}}
    ]}));
    let refused = send(
        &app,
        &admin,
        Method::PUT,
        "/v1/products/certifai",
        Some(&bad),
    )
    .await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        refused.pointers(),
        ["/provisioning/steps/0", "/provisioning/steps/1/cluster/env"]
    );
    let borrowing = manifest(json!({"steps": [
        {"kind": "database", "isolation": "schema", "cluster": {"env": "PRODUCT_DATABASE_BILLING"}}
    ]}));
    let refused = send(
        &app,
        &admin,
        Method::PUT,
        "/v1/products/certifai",
        Some(&borrowing),
    )
    .await;
    assert_eq!(refused.pointers(), ["/provisioning/steps/0/cluster/env"]);
    let unknown = manifest(json!({"steps": [{"kind": "shell", "command": "rm -rf /"}]}));
    let refused = send(
        &app,
        &admin,
        Method::PUT,
        "/v1/products/certifai",
        Some(&unknown),
    )
    .await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn subscribing_queues_the_plan_and_the_tenant_sees_only_its_own_provisioning() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    let published = send(
        &app,
        &admin,
        Method::PUT,
        "/v1/products/certifai",
        Some(&manifest(roles_plan())),
    )
    .await;
    assert!(
        published.status.is_success(),
        "{}",
        String::from_utf8_lossy(&published.body)
    );
    let acme = app.tenant("acme").await;
    let globex = app.tenant("globex").await;
    let subscribed = send(
        &app,
        &admin,
        Method::PUT,
        &format!("/v1/tenants/{acme}/products/certifai"),
        Some(&json!({})),
    )
    .await;
    assert_eq!(
        subscribed.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&subscribed.body)
    );

    let (_, reader) = app.key(Some(acme), &[Scope::TenantsRead]).await;
    let shown = get(&app, &reader, &format!("/v1/tenants/{acme}/provisioning")).await;
    assert_eq!(shown.status, StatusCode::OK);
    let item = &shown.json()["items"][0];
    assert_eq!(
        (
            item["product"].as_str(),
            item["state"].as_str(),
            item["step"].as_str()
        ),
        (Some("certifai"), Some("pending"), Some("database"))
    );
    assert_eq!(item["database"]["provisioned"], false);
    assert_eq!(item["max_attempts"], 5);

    let elsewhere = get(&app, &reader, &format!("/v1/tenants/{globex}/provisioning")).await;
    assert_eq!(elsewhere.status, StatusCode::NOT_FOUND);
    let roles = get(&app, &reader, &format!("/v1/tenants/{acme}/roles")).await;
    assert_eq!(
        (roles.status, roles.json()["items"].as_array().map(Vec::len)),
        (StatusCode::OK, Some(0))
    );
    let backups = get(&app, &reader, &format!("/v1/tenants/{acme}/backups")).await;
    assert_eq!(
        backups.status,
        StatusCode::FORBIDDEN,
        "backups outlive tenants: the platform's"
    );
    let bad_cursor = get(
        &app,
        &reader,
        &format!("/v1/tenants/{acme}/roles?cursor=%25%25"),
    )
    .await;
    assert_eq!(bad_cursor.status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn only_the_products_own_platform_key_reports_on_its_hook() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    send(
        &app,
        &admin,
        Method::PUT,
        "/v1/products/certifai",
        Some(&manifest(roles_plan())),
    )
    .await;
    send(
        &app,
        &admin,
        Method::PUT,
        "/v1/products/billing",
        Some(&json!({"name": "Billing"})),
    )
    .await;
    let acme = app.tenant("acme").await;
    send(
        &app,
        &admin,
        Method::PUT,
        &format!("/v1/tenants/{acme}/products/certifai"),
        Some(&json!({})),
    )
    .await;
    let own = product_key(&app, &admin, "certifai", None).await;
    let other = product_key(&app, &admin, "billing", None).await;
    let tenants_own = product_key(&app, &admin, "certifai", Some(acme)).await;
    let complete = format!("/v1/tenants/{acme}/provisioning/certifai/complete");

    let some_request = json!({"request_id": "prov_x"});
    for refused in [&other, &tenants_own] {
        let answer = send(&app, refused, Method::POST, &complete, Some(&some_request)).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN);
    }
    let unnamed = send(&app, &own, Method::POST, &complete, Some(&json!({}))).await;
    assert_eq!(unnamed.status, StatusCode::UNPROCESSABLE_ENTITY);
    let not_waiting = send(&app, &own, Method::POST, &complete, Some(&some_request)).await;
    assert_eq!(
        not_waiting.status,
        StatusCode::CONFLICT,
        "{}",
        String::from_utf8_lossy(&not_waiting.body)
    );
    let fail = format!("/v1/tenants/{acme}/provisioning/certifai/fail");
    let empty = send(
        &app,
        &own,
        Method::POST,
        &fail,
        Some(&json!({"request_id": "prov_x", "error": "  "})),
    )
    .await;
    assert_eq!(
        (empty.status, empty.pointers()),
        (StatusCode::UNPROCESSABLE_ENTITY, vec!["/error".to_owned()])
    );
    let nobody = send(
        &app,
        &own,
        Method::POST,
        &format!(
            "/v1/tenants/{}/provisioning/certifai/complete",
            uuid::Uuid::new_v4()
        ),
        Some(&some_request),
    )
    .await;
    assert_eq!(nobody.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_purge_is_an_operation_a_tenant_reads_only_for_itself() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    let acme = app.tenant("acme").await;
    let archived = send(
        &app,
        &admin,
        Method::DELETE,
        &format!("/v1/tenants/{acme}"),
        None,
    )
    .await;
    assert_eq!(archived.status, StatusCode::OK);
    let purge = send(
        &app,
        &admin,
        Method::DELETE,
        &format!("/v1/tenants/{acme}?purge=true"),
        None,
    )
    .await;
    assert_eq!(purge.status, StatusCode::ACCEPTED);
    let id = purge.json()["id"]
        .as_str()
        .expect("an operation id")
        .to_owned();

    let globex = app.tenant("globex").await;
    let (_, other) = app.key(Some(globex), &[Scope::TenantsRead]).await;
    let hidden = get(&app, &other, &format!("/v1/operations/{id}")).await;
    assert_eq!(hidden.status, StatusCode::NOT_FOUND);
    let shown = get(&app, &admin, &format!("/v1/operations/{id}")).await;
    assert_eq!(
        shown.json()["progress"],
        json!({"total": 0, "succeeded": 0, "failed": 0})
    );
    let malformed = get(&app, &admin, "/v1/operations/not-an-id").await;
    assert_eq!(malformed.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_frozen_tenant_cannot_retry_its_provisioning_but_the_platform_can() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    let acme = app.tenant("acme").await;
    let (_, own) = app.key(Some(acme), &[Scope::TenantsWrite]).await;
    let frozen = send(
        &app,
        &admin,
        Method::POST,
        &format!("/v1/tenants/{acme}/transitions"),
        Some(&json!({"to": "frozen", "reason": "non_payment"})),
    )
    .await;
    assert_eq!(
        frozen.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&frozen.body)
    );
    let retry = format!("/v1/tenants/{acme}/provisioning/retry");
    let refused = send(&app, &own, Method::POST, &retry, None).await;
    assert_eq!(refused.status, StatusCode::CONFLICT);
    assert_eq!(refused.json()["type"], "/problems/tenant-frozen");
    let platform = send(&app, &admin, Method::POST, &retry, None).await;
    assert_eq!(platform.status, StatusCode::OK);
}
