//! What a tenant may change about itself, performed as attacks: a tenant principal cannot
//! upgrade its plan, trial, contract or subscriptions, cannot learn other tenants' billing
//! ids or slugs from the answers it gets, and nothing is written for a frozen or archived
//! tenant but what its lifecycle allows.

use std::collections::BTreeSet;

use axum::http::{Method, StatusCode};
use domain::Scope;
use serde_json::{Value, json};
use testkit::{TestApp, TestResponse};
use uuid::Uuid;

async fn patch(app: &TestApp, key: &str, tenant: Uuid, body: Value) -> TestResponse {
    app.request(Method::PATCH, &format!("/v1/tenants/{tenant}"))
        .bearer(key)
        .json(&body)
        .send()
        .await
}

async fn get(app: &TestApp, key: &str, path: &str) -> TestResponse {
    app.request(Method::GET, path).bearer(key).send().await
}

async fn transition(app: &TestApp, admin: &str, tenant: Uuid, to: &str) {
    let moved = app
        .request(Method::POST, &format!("/v1/tenants/{tenant}/transitions"))
        .bearer(admin)
        .json(&json!({"to": to, "reason": "test"}))
        .send()
        .await;
    assert_eq!(
        moved.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&moved.body)
    );
}

fn pointers(response: &TestResponse) -> BTreeSet<String> {
    response.pointers().into_iter().collect()
}

#[tokio::test]
async fn a_tenant_key_cannot_upgrade_its_own_plan_trial_contract_or_status() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    let tenant = app.tenant("acme").await;
    let (_, key) = app
        .key(Some(tenant), &[Scope::TenantsRead, Scope::TenantsWrite])
        .await;
    let before = get(&app, &admin, &format!("/v1/tenants/{tenant}"))
        .await
        .json();

    let upgrade = json!({
        "plan": "enterprise", "trial_ends_at": "2099-01-01T00:00:00Z", "kind": "demo",
        "contract_starts_on": "2026-01-01", "contract_ends_on": "2099-12-31",
        "erp_id": "ERP-1", "stripe_id": "cus_1", "sales_owner": "me", "status": "active",
        "oidc_organization": "acme", "name": "Acme (upgraded)"
    });
    let refused = patch(&app, &key, tenant, upgrade).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(refused.json()["type"], "/problems/forbidden");
    let expected: BTreeSet<String> = [
        "/plan",
        "/trial_ends_at",
        "/kind",
        "/contract_starts_on",
        "/contract_ends_on",
        "/erp_id",
        "/stripe_id",
        "/sales_owner",
        "/status",
        "/oidc_organization",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(
        pointers(&refused),
        expected,
        "each offending field is named"
    );

    let after = get(&app, &admin, &format!("/v1/tenants/{tenant}"))
        .await
        .json();
    assert_eq!(after, before, "nothing changed, not even the allowed name");

    let own = patch(
        &app,
        &key,
        tenant,
        json!({"name": "Acme Inc", "slug": "acme-inc", "contact_email": "it@acme.com"}),
    )
    .await;
    assert_eq!(
        own.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&own.body)
    );
    assert_eq!(own.json()["plan"], "free");
}

#[tokio::test]
async fn an_oidc_tenant_user_cannot_upgrade_its_tenant_either() {
    let issuer = testkit::oidc::TestIssuer::start().await;
    let app = TestApp::with_settings(api::Settings {
        oidc: Some(issuer.config()),
        ..testkit::settings()
    })
    .await;
    let tenant = app.tenant("acme").await;
    let token = issuer.token(json!({"tenant": tenant, "scope": "tenants:write"}));
    let refused = patch(&app, &token, tenant, json!({"plan": "enterprise"})).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(refused.pointers(), vec!["/plan"]);
}

#[tokio::test]
async fn trial_ends_at_is_checked_on_patch_as_on_create() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    let trial = app.tenant("acme").await;
    for (body, case) in [
        (
            json!({"trial_ends_at": "2001-01-01T00:00:00Z"}),
            "in the past",
        ),
        (json!({"trial_ends_at": null}), "a trial without an end"),
    ] {
        let refused = patch(&app, &admin, trial, body).await;
        assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{case}");
        assert_eq!(refused.pointers(), vec!["/trial_ends_at"], "{case}");
    }
    let later = (chrono::Utc::now() + chrono::Duration::days(30)).to_rfc3339();
    let extended = patch(&app, &admin, trial, json!({"trial_ends_at": later})).await;
    assert_eq!(extended.status, StatusCode::OK);

    let active = app.tenant("globex").await;
    transition(&app, &admin, active, "active").await;
    let refused = patch(&app, &admin, active, json!({"trial_ends_at": later})).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        refused.json()["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("only a trial tenant")
    );
}

#[tokio::test]
async fn another_tenants_billing_ids_and_slugs_answer_like_any_unavailable_value() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    let own = app.tenant("acme").await;
    let other = app.tenant("globex").await;
    patch(
        &app,
        &admin,
        other,
        json!({"erp_id": "ERP-7", "stripe_id": "cus_7"}),
    )
    .await;
    patch(&app, &admin, other, json!({"slug": "globex-corp"})).await;
    let (_, key) = app
        .key(Some(own), &[Scope::TenantsRead, Scope::TenantsWrite])
        .await;

    // Billing ids are the platform's: the answer is the same 403 whether the id is taken.
    let taken = patch(&app, &key, own, json!({"erp_id": "ERP-7"})).await;
    let free = patch(&app, &key, own, json!({"erp_id": "ERP-unused"})).await;
    assert_eq!(taken.status, StatusCode::FORBIDDEN);
    assert_eq!(
        (taken.json()["detail"].clone(), taken.pointers()),
        (free.json()["detail"].clone(), free.pointers())
    );

    // A slug is a public name: it is unavailable, never "another tenant's", current or former.
    let current = patch(&app, &key, own, json!({"slug": "globex-corp"})).await;
    let former = patch(&app, &key, own, json!({"slug": "globex"})).await;
    for answer in [&current, &former] {
        assert_eq!(answer.status, StatusCode::CONFLICT);
        assert_eq!(answer.pointers(), vec!["/slug"]);
        let text = String::from_utf8_lossy(&answer.body).to_lowercase();
        assert!(!text.contains("another tenant"), "{text}");
        assert!(!text.contains("globex-corp") && !text.contains(&other.to_string()));
    }
    assert_eq!(current.json()["detail"], former.json()["detail"]);
}

fn manifest() -> Value {
    json!({
        "name": "Certifai",
        "supports_projects": true,
        "config_schema": {"type": "object", "properties": {"region": {"enum": ["eu", "us"]}},
                          "additionalProperties": false},
        "default_config": {"region": "eu"},
        "features": {"max_projects": {"type": "limit"}},
        "plans": {"free": {"max_projects": 1}}
    })
}

/// The service with the certifai product published, and a platform admin's key.
async fn with_certifai() -> (TestApp, String) {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    let published = app
        .request(Method::PUT, "/v1/products/certifai")
        .bearer(&admin)
        .json(&manifest())
        .send()
        .await;
    assert_eq!(published.status, StatusCode::CREATED);
    (app, admin)
}

async fn put_subscription(app: &TestApp, key: &str, tenant: Uuid, body: Value) -> TestResponse {
    app.request(
        Method::PUT,
        &format!("/v1/tenants/{tenant}/products/certifai"),
    )
    .bearer(key)
    .json(&body)
    .send()
    .await
}

#[tokio::test]
async fn a_tenant_key_cannot_subscribe_itself_or_lift_its_own_limits() {
    let (app, admin) = with_certifai().await;
    let tenant = app.tenant("acme").await;
    let (_, key) = app
        .key(Some(tenant), &[Scope::ProductsRead, Scope::ProductsWrite])
        .await;

    let subscribe = put_subscription(&app, &key, tenant, json!({"enabled": true})).await;
    assert_eq!(
        subscribe.status,
        StatusCode::FORBIDDEN,
        "no self-subscription"
    );
    let config_only = put_subscription(&app, &key, tenant, json!({"config": {}})).await;
    assert_eq!(
        config_only.status,
        StatusCode::FORBIDDEN,
        "not even by config"
    );

    let granted = put_subscription(
        &app,
        &admin,
        tenant,
        json!({"feature_overrides": {"max_projects": 3}}),
    )
    .await;
    assert_eq!(granted.status, StatusCode::OK);
    let unlimited = put_subscription(
        &app,
        &key,
        tenant,
        json!({"enabled": false, "feature_overrides": {"max_projects": null}}),
    )
    .await;
    assert_eq!(unlimited.status, StatusCode::FORBIDDEN);
    assert_eq!(unlimited.pointers(), vec!["/enabled", "/feature_overrides"]);
    let removed = app
        .request(
            Method::DELETE,
            &format!("/v1/tenants/{tenant}/products/certifai"),
        )
        .bearer(&key)
        .send()
        .await;
    assert_eq!(removed.status, StatusCode::FORBIDDEN);

    let outside_schema =
        put_subscription(&app, &key, tenant, json!({"config": {"region": "mars"}})).await;
    assert_eq!(outside_schema.status, StatusCode::UNPROCESSABLE_ENTITY);
    let own_config = put_subscription(
        &app,
        &key,
        tenant,
        json!({"enabled": true, "config": {"region": "us"}, "feature_overrides": {"max_projects": 3}}),
    )
    .await;
    assert_eq!(
        own_config.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&own_config.body)
    );
    assert_eq!(own_config.json()["config"], json!({"region": "us"}));

    let limit = get(
        &app,
        &key,
        &format!("/v1/tenants/{tenant}/entitlements/certifai/max_projects"),
    )
    .await
    .json();
    assert_eq!(limit["limit"], 3, "the platform's override stands");
}

/// The status and problem type of each kind of write for `tenant`: the tenant's own edits
/// sent with `tenant_writer`, the others with `platform_writer`.
async fn write_answers(
    app: &TestApp,
    platform_writer: &str,
    tenant_writer: &str,
    tenant: Uuid,
) -> Vec<(String, u16, String)> {
    let (admin, key) = (platform_writer, tenant_writer);
    let writes = [
        (
            "tenant PATCH by the tenant",
            Method::PATCH,
            format!("/v1/tenants/{tenant}"),
            key,
            json!({"name": "Renamed"}),
        ),
        (
            "identity provider",
            Method::POST,
            format!("/v1/tenants/{tenant}/idps"),
            admin,
            json!({"kind": "oidc", "name": "Okta", "issuer": "https://acme.okta.com", "client_id": "c"}),
        ),
        (
            "domain claim",
            Method::POST,
            format!("/v1/tenants/{tenant}/domains"),
            key,
            json!({"domain": "acme.com"}),
        ),
        (
            "subscription config",
            Method::PUT,
            format!("/v1/tenants/{tenant}/products/certifai"),
            key,
            json!({"config": {"region": "us"}}),
        ),
        (
            "API key",
            Method::POST,
            "/v1/api-keys".to_owned(),
            admin,
            json!({"name": "k", "tenant_id": tenant, "scopes": ["tenants:read"]}),
        ),
    ];
    let mut answers = Vec::new();
    for (what, method, path, credential, body) in writes {
        let response = app
            .request(method, &path)
            .bearer(credential)
            .json(&body)
            .send()
            .await;
        let kind = response.json()["type"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        answers.push((what.to_owned(), response.status.as_u16(), kind));
    }
    answers
}

#[tokio::test]
async fn a_frozen_tenant_is_read_only_and_an_archived_one_changes_only_by_restore() {
    let (app, admin) = with_certifai().await;
    let tenant = app.tenant("acme").await;
    put_subscription(&app, &admin, tenant, json!({})).await;
    let (key_id, key) = app
        .key(
            Some(tenant),
            &[
                Scope::TenantsRead,
                Scope::TenantsWrite,
                Scope::IdpWrite,
                Scope::ProductsWrite,
                Scope::ApiKeysManage,
            ],
        )
        .await;
    let (spare_id, _) = app.key(Some(tenant), &[Scope::TenantsRead]).await;

    transition(&app, &admin, tenant, "frozen").await;
    for (what, status, kind) in write_answers(&app, &admin, &key, tenant).await {
        assert_eq!(
            (status, kind.as_str()),
            (409, "/problems/tenant-frozen"),
            "{what}"
        );
    }
    assert_eq!(
        get(&app, &key, &format!("/v1/tenants/{tenant}"))
            .await
            .status,
        StatusCode::OK
    );
    let billing = patch(
        &app,
        &admin,
        tenant,
        json!({"plan": "pro", "stripe_id": "cus_9"}),
    )
    .await;
    assert_eq!(
        billing.status,
        StatusCode::OK,
        "the platform puts the account right while frozen"
    );
    let revoke = |credential: &str| {
        app.request(Method::POST, &format!("/v1/api-keys/{spare_id}/revoke"))
            .bearer(credential)
            .send()
    };
    assert_eq!(
        revoke(&key).await.json()["type"],
        "/problems/tenant-frozen",
        "a frozen tenant revokes nothing itself"
    );
    assert_eq!(
        revoke(&admin).await.status,
        StatusCode::OK,
        "the platform ends a frozen tenant's keys"
    );

    // Archiving may end the tenant's own keys, so the platform tries every write here.
    transition(&app, &admin, tenant, "archived").await;
    for (what, status, kind) in write_answers(&app, &admin, &admin, tenant).await {
        assert_eq!(
            (status, kind.as_str()),
            (409, "/problems/tenant-archived"),
            "{what}"
        );
    }
    let billing = patch(&app, &admin, tenant, json!({"plan": "enterprise"})).await;
    assert_eq!(billing.json()["type"], "/problems/tenant-archived");
    let subscription = put_subscription(&app, &admin, tenant, json!({"enabled": false})).await;
    assert_eq!(subscription.json()["type"], "/problems/tenant-archived");
    let rotated = app
        .request(Method::POST, &format!("/v1/api-keys/{key_id}/rotate"))
        .bearer(&admin)
        .send()
        .await;
    assert_eq!(
        rotated.status,
        StatusCode::CONFLICT,
        "archiving revoked the tenant's keys"
    );

    transition(&app, &admin, tenant, "frozen").await;
    let plan = get(&app, &admin, &format!("/v1/tenants/{tenant}"))
        .await
        .json()["plan"]
        .clone();
    assert_eq!(plan, "pro", "restored as it was archived");
}

#[tokio::test]
async fn a_purge_with_a_stale_if_match_is_refused_and_purges_nothing() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    let tenant = app.tenant("leaving").await;
    let path = format!("/v1/tenants/{tenant}");
    let archived = app
        .request(Method::DELETE, &path)
        .bearer(&admin)
        .send()
        .await;
    assert_eq!(archived.status, StatusCode::OK);
    let current = archived.header("etag").expect("an etag").to_owned();

    let stale = app
        .request(Method::DELETE, &format!("{path}?purge=true"))
        .bearer(&admin)
        .header("if-match", "\"999\"")
        .send()
        .await;
    assert_eq!(stale.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(
        app.request(Method::GET, &path)
            .bearer(&admin)
            .send()
            .await
            .status,
        StatusCode::OK,
        "still there"
    );
    let purged = app
        .request(Method::DELETE, &format!("{path}?purge=true"))
        .bearer(&admin)
        .header("if-match", &current)
        .send()
        .await;
    assert_eq!(purged.status, StatusCode::ACCEPTED);
    assert_eq!(purged.json()["state"], "succeeded");
}
