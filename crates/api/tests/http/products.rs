//! Products catalog, subscriptions, entitlements and the feature check.

use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use domain::Scope;
use serde_json::{Value, json};
use testkit::{TestApp, TestResponse};

fn manifest() -> Value {
    json!({
        "name": "Certifai",
        "supports_projects": true,
        "config_schema": {
            "type": "object",
            "properties": {
                "region": {"enum": ["eu", "us"]},
                "retention_days": {"type": "integer", "minimum": 1},
                "theme": {"type": "string"}
            },
            "required": ["region"],
            "additionalProperties": false
        },
        "default_config": {"region": "eu", "retention_days": 30},
        "features": {"sso": {"type": "bool"}, "max_projects": {"type": "limit"}},
        "plans": {
            "free": {"sso": false, "max_projects": 1},
            "enterprise": {"sso": true, "max_projects": null}
        }
    })
}

async fn publish(app: &TestApp, admin: &str) {
    let response = app
        .request(Method::PUT, "/v1/products/certifai")
        .bearer(admin)
        .json(&manifest())
        .send()
        .await;
    assert_eq!(
        response.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
}

async fn subscribe(app: &TestApp, admin: &str, tenant: uuid::Uuid, body: Value) -> TestResponse {
    app.request(
        Method::PUT,
        &format!("/v1/tenants/{tenant}/products/certifai"),
    )
    .bearer(admin)
    .json(&body)
    .send()
    .await
}

async fn feature(app: &TestApp, key: &str, tenant: uuid::Uuid, name: &str) -> Value {
    let response = app
        .request(
            Method::GET,
            &format!("/v1/tenants/{tenant}/entitlements/certifai/{name}"),
        )
        .bearer(key)
        .send()
        .await;
    assert_eq!(
        response.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    response.json()
}

#[tokio::test]
async fn publishing_validates_the_manifest() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    publish(&app, &admin).await;
    let republished = app
        .request(Method::PUT, "/v1/products/certifai")
        .bearer(&admin)
        .json(&manifest())
        .send()
        .await;
    assert_eq!(republished.status, StatusCode::OK, "republishing replaces");

    let mut bad = manifest();
    bad["plans"]["pro"] = json!({"sso": "yes", "seats": 3});
    bad["default_config"] = json!({"region": "mars"});
    let refused = app
        .request(Method::PUT, "/v1/products/certifai")
        .bearer(&admin)
        .json(&bad)
        .send()
        .await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        refused.pointers(),
        vec!["/plans/pro/seats", "/plans/pro/sso"]
    );

    let mut bad_default = manifest();
    bad_default["default_config"] = json!({"region": "mars"});
    let refused = app
        .request(Method::PUT, "/v1/products/certifai")
        .bearer(&admin)
        .json(&bad_default)
        .send()
        .await;
    assert_eq!(refused.pointers(), vec!["/default_config/region"]);

    let mut bad_schema = manifest();
    bad_schema["config_schema"] = json!({"type": "no-such-type"});
    let refused = app
        .request(Method::PUT, "/v1/products/certifai")
        .bearer(&admin)
        .json(&bad_schema)
        .send()
        .await;
    assert_eq!(refused.pointers(), vec!["/config_schema"]);

    let (_, reader) = app
        .key(None, &[Scope::ProductsRead, Scope::ProductsWrite])
        .await;
    let not_admin = app
        .request(Method::PUT, "/v1/products/other")
        .bearer(&reader)
        .json(&manifest())
        .send()
        .await;
    assert_eq!(not_admin.status, StatusCode::FORBIDDEN);
    let listed = app
        .request(Method::GET, "/v1/products")
        .bearer(&reader)
        .send()
        .await
        .json();
    assert_eq!(listed.as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn config_violations_are_reported_with_pointers() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    publish(&app, &admin).await;
    let tenant = app.tenant("acme").await;
    let refused = subscribe(
        &app,
        &admin,
        tenant,
        json!({"config": {"region": "mars", "retention_days": 0, "colour": "red"}, "feature_overrides": {"sso": 1, "nope": true}}),
    )
    .await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    let mut found = refused.pointers();
    found.sort();
    assert_eq!(
        found,
        vec![
            "/config",
            "/config/region",
            "/config/retention_days",
            "/feature_overrides/nope",
            "/feature_overrides/sso"
        ]
    );
    let unknown = app
        .request(
            Method::PUT,
            &format!("/v1/tenants/{tenant}/products/unknown-product"),
        )
        .bearer(&admin)
        .json(&json!({}))
        .send()
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn plan_defaults_overrides_and_a_frozen_tenant() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    publish(&app, &admin).await;
    let tenant = app.tenant("acme").await;
    assert_eq!(
        feature(&app, &admin, tenant, "sso").await,
        json!({"allowed": false, "limit": null, "reason": "the tenant does not have this product"})
    );

    let set = subscribe(&app, &admin, tenant, json!({"config": {"theme": "dark"}})).await;
    assert_eq!(
        set.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&set.body)
    );
    let recorded: Value =
        sqlx::query_scalar("SELECT fields FROM audit_log WHERE action = 'tenant_product.set'")
            .fetch_one(app.db.pool())
            .await
            .expect("the subscription is audited");
    assert_eq!(recorded, json!({"product": "certifai", "enabled": "true"}));
    assert_eq!(
        feature(&app, &admin, tenant, "max_projects").await,
        json!({"allowed": true, "limit": 1, "reason": "up to 1"})
    );
    assert_eq!(feature(&app, &admin, tenant, "sso").await["allowed"], false);

    subscribe(&app, &admin, tenant, json!({"config": {"theme": "dark"}, "feature_overrides": {"sso": true, "max_projects": 10}})).await;
    assert_eq!(
        feature(&app, &admin, tenant, "sso").await["allowed"],
        true,
        "the override wins over the plan"
    );
    assert_eq!(
        feature(&app, &admin, tenant, "max_projects").await["limit"],
        10
    );

    let all = app
        .request(Method::GET, &format!("/v1/tenants/{tenant}/entitlements"))
        .bearer(&admin)
        .send()
        .await
        .json();
    assert_eq!(
        all[0]["config"],
        json!({"region": "eu", "retention_days": 30, "theme": "dark"})
    );
    assert_eq!(
        all[0]["config_sources"],
        json!({"region": "default", "retention_days": "default", "theme": "tenant"})
    );

    let products = app
        .request(Method::GET, &format!("/v1/tenants/{tenant}"))
        .bearer(&admin)
        .send()
        .await
        .json();
    assert_eq!(products["products"], json!(["certifai"]));

    app.request(Method::POST, &format!("/v1/tenants/{tenant}/transitions"))
        .bearer(&admin)
        .json(&json!({"to": "frozen", "reason": "unpaid"}))
        .send()
        .await;
    let frozen = feature(&app, &admin, tenant, "sso").await;
    assert_eq!(frozen["allowed"], false);
    assert!(
        frozen["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("frozen"),
        "{frozen}"
    );
    let all = app
        .request(Method::GET, &format!("/v1/tenants/{tenant}/entitlements"))
        .bearer(&admin)
        .send()
        .await
        .json();
    assert_eq!(all[0]["enabled"], false);
}

#[tokio::test]
async fn a_change_through_one_replica_reaches_the_others_cached_check_within_a_second() {
    let app = TestApp::new().await;
    let replica = app.replica().await;
    let admin = app.admin_key().await;
    publish(&app, &admin).await;
    let tenant = app.tenant("acme").await;
    subscribe(&app, &admin, tenant, json!({})).await;
    let path = format!("/v1/tenants/{tenant}/entitlements/certifai/sso");
    let ask_replica = || async {
        app.request_on(&replica, Method::GET, &path)
            .bearer(&admin)
            .send()
            .await
            .json()["allowed"]
            .clone()
    };
    assert_eq!(ask_replica().await, json!(false), "cached on the replica");
    subscribe(
        &app,
        &admin,
        tenant,
        json!({"feature_overrides": {"sso": true}}),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut seen = false;
    while Instant::now() < deadline {
        if ask_replica().await == json!(true) {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        seen,
        "the replica still answered from its stale cache after 1 s"
    );
}

#[tokio::test]
async fn a_tenant_key_reads_only_its_own_entitlements() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    publish(&app, &admin).await;
    let own = app.tenant("acme").await;
    let other = app.tenant("globex").await;
    let (_, key) = app.key(Some(own), &[Scope::ProductsRead]).await;
    let mine = app
        .request(
            Method::GET,
            &format!("/v1/tenants/{own}/entitlements/certifai/sso"),
        )
        .bearer(&key)
        .send()
        .await;
    assert_eq!(mine.status, StatusCode::OK);
    let theirs = app
        .request(
            Method::GET,
            &format!("/v1/tenants/{other}/entitlements/certifai/sso"),
        )
        .bearer(&key)
        .send()
        .await;
    assert_eq!(theirs.status, StatusCode::NOT_FOUND);
    let write = subscribe(&app, &key, own, json!({})).await;
    assert_eq!(
        write.status,
        StatusCode::FORBIDDEN,
        "products:write is needed"
    );
    let removed = app
        .request(
            Method::DELETE,
            &format!("/v1/tenants/{own}/products/certifai"),
        )
        .bearer(&admin)
        .send()
        .await;
    assert_eq!(
        removed.status,
        StatusCode::NOT_FOUND,
        "nothing to remove yet"
    );
}
