//! Credentials never grow: each test tries to obtain, through create, rotate or revoke, a key
//! that reaches further than the caller's own (scopes, platform, product, lifetime), and
//! checks that it is refused and that the target key is untouched.

use axum::http::{Method, StatusCode};
use chrono::{Duration, Utc};
use domain::Scope;
use serde_json::{Value, json};
use testkit::oidc::TestIssuer;
use testkit::{TestApp, TestResponse};
use uuid::Uuid;

async fn post(app: &TestApp, credential: &str, path: &str, body: Option<Value>) -> TestResponse {
    let request = app.request(Method::POST, path).bearer(credential);
    match body {
        Some(body) => request.json(&body).send().await,
        None => request.send().await,
    }
}

async fn rotate(app: &TestApp, credential: &str, id: Uuid) -> TestResponse {
    post(app, credential, &format!("/v1/api-keys/{id}/rotate"), None).await
}

async fn revoke(app: &TestApp, credential: &str, id: Uuid) -> TestResponse {
    post(app, credential, &format!("/v1/api-keys/{id}/revoke"), None).await
}

fn assert_refused(response: &TestResponse, naming: &[&str]) {
    assert_eq!(
        response.status,
        StatusCode::FORBIDDEN,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    let detail = response.json()["detail"]
        .as_str()
        .expect("a detail")
        .to_owned();
    for part in naming {
        assert!(detail.contains(part), "{part:?} missing from {detail:?}");
    }
}

/// The status of a read that needs `tenants:read` on `tenant`, made with `key`.
async fn reads_tenant(app: &TestApp, key: &str, tenant: Uuid) -> StatusCode {
    app.request(Method::GET, &format!("/v1/tenants/{tenant}"))
        .bearer(key)
        .send()
        .await
        .status
}

#[tokio::test]
async fn a_tenant_key_cannot_rotate_or_revoke_a_broader_key_of_its_tenant() {
    let app = TestApp::new().await;
    let tenant = app.tenant("acme").await;
    let (_, manager) = app.key(Some(tenant), &[Scope::ApiKeysManage]).await;
    let broad_scopes = [Scope::TenantsRead, Scope::TenantsWrite, Scope::IdpWrite];
    let (broad_id, broad) = app.key(Some(tenant), &broad_scopes).await;

    let rotated = rotate(&app, &manager, broad_id).await;
    assert_refused(&rotated, &["tenants:read", "tenants:write", "idp:write"]);
    assert!(
        rotated.json().get("key").is_none(),
        "no secret in a refusal"
    );
    assert_refused(&revoke(&app, &manager, broad_id).await, &["tenants:write"]);

    assert_eq!(
        reads_tenant(&app, &broad, tenant).await,
        StatusCode::OK,
        "the broader key still works with its old secret"
    );
}

#[tokio::test]
async fn a_platform_key_with_only_api_keys_manage_cannot_rotate_or_revoke_an_admin_key() {
    let app = TestApp::new().await;
    let (_, manager) = app.key(None, &[Scope::ApiKeysManage]).await;
    let (admin_id, admin) = app.key(None, &[Scope::PlatformAdmin]).await;

    assert_refused(
        &rotate(&app, &manager, admin_id).await,
        &["platform:admin", "platform key"],
    );
    assert_refused(
        &revoke(&app, &manager, admin_id).await,
        &["platform:admin", "platform key"],
    );

    let listing = app
        .request(Method::GET, "/v1/api-keys")
        .bearer(&admin)
        .send()
        .await;
    assert_eq!(listing.status, StatusCode::OK, "the admin key still works");
}

#[tokio::test]
async fn a_key_expiring_in_a_minute_cannot_mint_rotate_or_revoke_a_key_that_outlives_it() {
    let app = TestApp::new().await;
    let tenant = app.tenant("acme").await;
    let expires_at = Utc::now() + Duration::minutes(1);
    let manage = [Scope::ApiKeysManage, Scope::TenantsRead];
    let (_, short_lived) = app
        .key_expiring(Some(tenant), &manage, Some(expires_at))
        .await;
    let create = |expiry: Option<chrono::DateTime<Utc>>| {
        let body = json!({"name": "heir", "tenant_id": tenant, "scopes": ["tenants:read"],
                          "expires_at": expiry});
        post(&app, &short_lived, "/v1/api-keys", Some(body))
    };

    assert_refused(&create(None).await, &["never expires"]);
    assert_refused(
        &create(Some(expires_at + Duration::days(1))).await,
        &["after your credential"],
    );
    let (forever_id, forever) = app.key(Some(tenant), &[Scope::TenantsRead]).await;
    assert_refused(
        &rotate(&app, &short_lived, forever_id).await,
        &["never expires"],
    );
    assert_eq!(reads_tenant(&app, &forever, tenant).await, StatusCode::OK);

    let within = create(Some(expires_at - Duration::seconds(1))).await;
    assert_eq!(
        within.status,
        StatusCode::CREATED,
        "a key that dies first is fine"
    );
    let keys: i64 = sqlx::query_scalar("SELECT count(*) FROM api_keys WHERE expires_at IS NULL")
        .fetch_one(app.db.pool())
        .await
        .expect("count");
    assert_eq!(keys, 1, "no key without expiry was made but the test's own");

    // Revoking is authorized like creating: a short-lived credential cannot end a key
    // that outlives it, only one that dies first.
    assert_refused(
        &revoke(&app, &short_lived, forever_id).await,
        &["never expires"],
    );
    assert_eq!(reads_tenant(&app, &forever, tenant).await, StatusCode::OK);
    let within_id: Uuid = within.json()["id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .expect("the new key's id");
    assert_eq!(
        revoke(&app, &short_lived, within_id).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_tenant_key_cannot_set_or_change_a_keys_product() {
    let app = TestApp::new().await;
    let tenant = app.tenant("acme").await;
    app.product("billing").await;
    let admin = app.admin_key().await;
    let (_, manager) = app
        .key(Some(tenant), &[Scope::ApiKeysManage, Scope::AuditWrite])
        .await;
    let body = |product: &str| json!({"name": "ingest", "tenant_id": tenant, "scopes": ["audit:write"], "product": product});

    let set = post(&app, &manager, "/v1/api-keys", Some(body("billing"))).await;
    assert_refused(&set, &["product billing", "platform principals"]);

    let by_admin = post(&app, &admin, "/v1/api-keys", Some(body("billing"))).await;
    assert_eq!(
        by_admin.status,
        StatusCode::CREATED,
        "platform admins set it"
    );
    let product_key: Uuid = serde_json::from_value(by_admin.json()["id"].clone()).expect("id");
    assert_refused(
        &rotate(&app, &manager, product_key).await,
        &["product billing"],
    );
    assert_refused(
        &revoke(&app, &manager, product_key).await,
        &["product billing"],
    );
}

#[tokio::test]
async fn a_key_may_still_rotate_and_revoke_itself_and_narrower_keys() {
    let app = TestApp::new().await;
    let tenant = app.tenant("acme").await;
    let manage = [Scope::ApiKeysManage, Scope::TenantsRead];
    let (manager_id, manager) = app.key(Some(tenant), &manage).await;
    let (narrow_id, _) = app.key(Some(tenant), &[Scope::TenantsRead]).await;
    assert_eq!(
        rotate(&app, &manager, narrow_id).await.status,
        StatusCode::OK
    );
    assert_eq!(
        revoke(&app, &manager, narrow_id).await.status,
        StatusCode::OK
    );
    let rotated = rotate(&app, &manager, manager_id).await;
    assert_eq!(rotated.status, StatusCode::OK);
    let new_secret = rotated.json()["key"].as_str().expect("key").to_owned();
    assert_eq!(
        revoke(&app, &new_secret, manager_id).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn an_oidc_user_grants_nothing_that_outlives_its_token() {
    let issuer = TestIssuer::start().await;
    let app = TestApp::with_settings(api::Settings {
        oidc: Some(issuer.config()),
        ..testkit::settings()
    })
    .await;
    let token_expires = Utc::now().timestamp() + 120;
    let token = issuer.token(
        json!({"sub": "alice", "exp": token_expires, "realm_access": {"roles": ["platform-admin"]}}),
    );
    let body = |expires_at: Option<i64>| {
        let expires_at = expires_at.and_then(|at| chrono::DateTime::from_timestamp(at, 0));
        json!({"name": "from a session", "scopes": ["tenants:read"], "expires_at": expires_at})
    };

    let forever = post(&app, &token, "/v1/api-keys", Some(body(None))).await;
    assert_refused(&forever, &["never expires"]);
    let later = post(
        &app,
        &token,
        "/v1/api-keys",
        Some(body(Some(token_expires + 1))),
    )
    .await;
    assert_refused(&later, &["after your credential"]);
    let within = post(
        &app,
        &token,
        "/v1/api-keys",
        Some(body(Some(token_expires))),
    )
    .await;
    assert_eq!(within.status, StatusCode::CREATED);
}

#[tokio::test]
async fn a_key_cannot_pass_its_events_off_as_the_registrys_own() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    let tenant = app.tenant("acme").await;
    let body = |product: &str| json!({"name": "ingest", "tenant_id": tenant, "scopes": ["audit:write"], "product": product});
    for product in ["tenant-registry", "not-in-the-catalog"] {
        let minted = post(&app, &admin, "/v1/api-keys", Some(body(product))).await;
        assert_eq!(minted.status, StatusCode::UNPROCESSABLE_ENTITY, "{product}");
        assert_eq!(minted.pointers(), vec!["/product"], "{product}");
    }
    let published = app
        .request(Method::PUT, "/v1/products/tenant-registry")
        .bearer(&admin)
        .json(&json!({"name": "The registry, as anyone"}))
        .send()
        .await;
    assert_eq!(published.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(published.pointers(), vec!["/product"]);

    // A key minted before the catalog check may still carry the name.
    let (legacy_id, legacy) = app.key(Some(tenant), &[Scope::AuditWrite]).await;
    app.change_silently(
        "UPDATE api_keys SET product = 'tenant-registry' WHERE id = $1",
        legacy_id,
    )
    .await;
    let forged = json!({"action": "api_key.revoked", "crud": "u", "description": "nothing to see"});
    assert_refused(
        &post(&app, &legacy, "/v1/audit/events", Some(forged)).await,
        &["the registry's own name"],
    );
    let page = app
        .request(Method::GET, "/v1/audit/events?q=product:tenant-registry")
        .bearer(&admin)
        .send()
        .await
        .json();
    let items = page["items"].as_array().expect("items");
    assert!(!items.is_empty(), "the registry's own records: {page}");
    assert!(
        items
            .iter()
            .all(|event| event["description"] != "nothing to see"),
        "{page}"
    );
}
