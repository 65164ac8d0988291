//! Former slugs: they keep leading to their tenant, no other tenant can take one, and only
//! platform principals release one.

use axum::http::{Method, StatusCode};
use domain::Scope;
use serde_json::json;
use testkit::{TestApp, TestResponse};

/// Creates a tenant with `slug` through the API.
async fn create(app: &TestApp, key: &str, slug: &str) -> TestResponse {
    app.request(Method::POST, "/v1/tenants")
        .bearer(key)
        .json(&json!({"slug": slug, "name": slug, "plan": "pro"}))
        .send()
        .await
}

/// Renames tenant `id` to `slug` with `key`.
async fn rename(app: &TestApp, key: &str, id: uuid::Uuid, slug: &str) -> TestResponse {
    app.request(Method::PATCH, &format!("/v1/tenants/{id}"))
        .bearer(key)
        .json(&json!({"slug": slug}))
        .send()
        .await
}

#[tokio::test]
async fn a_former_slug_leads_to_its_tenant_until_the_platform_releases_it() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    let id = app.tenant("acme").await;
    rename(&app, &admin, id, "acme-corp").await;
    let old = app
        .request(Method::GET, "/v1/tenants/by-slug/acme")
        .bearer(&admin)
        .send()
        .await;
    assert_eq!(old.status, StatusCode::OK);
    assert_eq!(old.json()["slug"], "acme-corp");
    assert_eq!(
        old.header("link"),
        Some("</v1/tenants/by-slug/acme-corp>; rel=\"canonical\"")
    );
    let former = app
        .request(Method::GET, &format!("/v1/tenants/{id}/former-slugs"))
        .bearer(&admin)
        .send()
        .await
        .json();
    assert_eq!(former[0]["slug"], "acme");

    let taken = create(&app, &admin, "acme").await;
    assert_eq!(taken.status, StatusCode::CONFLICT, "reserved to its tenant");
    assert_eq!(taken.pointers(), vec!["/slug"]);

    let (_, own_key) = app
        .key(Some(id), &[Scope::TenantsRead, Scope::TenantsWrite])
        .await;
    let release = |key: String| {
        let app = &app;
        async move {
            app.request(
                Method::DELETE,
                &format!("/v1/tenants/{id}/former-slugs/acme"),
            )
            .bearer(&key)
            .send()
            .await
            .status
        }
    };
    assert_eq!(
        release(own_key).await,
        StatusCode::FORBIDDEN,
        "only platform principals release a former slug"
    );
    assert_eq!(release(admin.clone()).await, StatusCode::NO_CONTENT);
    assert_eq!(release(admin.clone()).await, StatusCode::NOT_FOUND);

    let newcomer = create(&app, &admin, "acme").await;
    assert_eq!(newcomer.status, StatusCode::CREATED);
    let newcomer = newcomer.json()["id"].clone();
    let now = app
        .request(Method::GET, "/v1/tenants/by-slug/acme")
        .bearer(&admin)
        .send()
        .await;
    assert_eq!(now.json()["id"], newcomer);
    assert_eq!(now.header("link"), None);
}

#[tokio::test]
async fn a_tenant_takes_back_its_own_former_slug() {
    let app = TestApp::new().await;
    let tenant = app.tenant("acme").await;
    let (_, key) = app
        .key(Some(tenant), &[Scope::TenantsRead, Scope::TenantsWrite])
        .await;
    for slug in ["acme-corp", "acme"] {
        let renamed = rename(&app, &key, tenant, slug).await;
        assert_eq!(renamed.status, StatusCode::OK, "{slug}");
    }
    let former = app
        .request(Method::GET, &format!("/v1/tenants/{tenant}/former-slugs"))
        .bearer(&key)
        .send()
        .await
        .json();
    assert_eq!(
        former,
        json!([{"slug": "acme-corp", "retired_at": former[0]["retired_at"]}])
    );
}

#[tokio::test]
async fn a_released_former_slug_stops_leading_to_its_tenant_on_every_replica() {
    let app = TestApp::new().await;
    let replica = app.replica().await;
    let admin = app.admin_key().await;
    let id = app.tenant("acme").await;
    assert_eq!(
        rename(&app, &admin, id, "acme-corp").await.status,
        StatusCode::OK
    );
    let on_replica = async || {
        app.request_on(&replica, Method::GET, "/v1/tenants/by-slug/acme")
            .bearer(&admin)
            .send()
            .await
            .status
    };
    testkit::within_a_second(
        "the replica leading the former slug to its tenant",
        async || on_replica().await == StatusCode::OK,
    )
    .await;
    let released = app
        .request(
            Method::DELETE,
            &format!("/v1/tenants/{id}/former-slugs/acme"),
        )
        .bearer(&admin)
        .send()
        .await;
    assert_eq!(released.status, StatusCode::NO_CONTENT);
    testkit::within_a_second("the replica forgetting the released slug", async || {
        on_replica().await == StatusCode::NOT_FOUND
    })
    .await;
}

#[tokio::test]
async fn a_tenant_renaming_itself_in_a_loop_holds_at_most_five_former_slugs() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    let id = app.tenant("squatter").await;
    let (_, key) = app
        .key(Some(id), &[Scope::TenantsRead, Scope::TenantsWrite])
        .await;
    for n in 1..=5 {
        let renamed = rename(&app, &key, id, &format!("grab-{n}")).await;
        assert_eq!(renamed.status, StatusCode::OK, "rename {n}");
    }
    let refused = rename(&app, &key, id, "grab-6").await;
    assert_eq!(refused.status, StatusCode::CONFLICT);
    assert_eq!(refused.json()["type"], "/problems/former-slug-limit");
    assert_eq!(refused.pointers(), vec!["/slug"]);
    let former = app
        .request(Method::GET, &format!("/v1/tenants/{id}/former-slugs"))
        .bearer(&key)
        .send()
        .await
        .json();
    assert_eq!(former.as_array().map(Vec::len), Some(5), "{former}");
    assert_eq!(
        create(&app, &admin, "grab-6").await.status,
        StatusCode::CREATED,
        "the refused rename reserved nothing"
    );

    assert_eq!(
        rename(&app, &key, id, "squatter").await.status,
        StatusCode::OK,
        "taking back a former slug holds no more than before"
    );
    let release = app
        .request(
            Method::DELETE,
            &format!("/v1/tenants/{id}/former-slugs/grab-1"),
        )
        .bearer(&admin)
        .send()
        .await;
    assert_eq!(release.status, StatusCode::NO_CONTENT);
    assert_eq!(
        rename(&app, &key, id, "grab-7").await.status,
        StatusCode::OK,
        "a released slug makes room"
    );
}
