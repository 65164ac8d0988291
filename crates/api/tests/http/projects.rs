//! Projects: only for tenants with a product that supports them; slugs unique per tenant.

use axum::http::{Method, StatusCode};
use domain::Scope;
use serde_json::{Value, json};
use testkit::{TestApp, TestResponse};
use uuid::Uuid;

async fn enable_product(app: &TestApp, admin: &str, tenant: Uuid, supports_projects: bool) {
    let published = app
        .request(Method::PUT, "/v1/products/workbench")
        .bearer(admin)
        .json(&json!({"name": "Workbench", "supports_projects": supports_projects}))
        .send()
        .await;
    assert!(
        published.status.is_success(),
        "{}",
        String::from_utf8_lossy(&published.body)
    );
    let subscribed = app
        .request(
            Method::PUT,
            &format!("/v1/tenants/{tenant}/products/workbench"),
        )
        .bearer(admin)
        .json(&json!({"enabled": true}))
        .send()
        .await;
    assert_eq!(subscribed.status, StatusCode::OK);
}

async fn create(app: &TestApp, key: &str, tenant: Uuid, body: Value) -> TestResponse {
    app.request(Method::POST, &format!("/v1/tenants/{tenant}/projects"))
        .bearer(key)
        .json(&body)
        .send()
        .await
}

#[tokio::test]
async fn projects_are_refused_without_a_product_that_supports_them() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    let tenant = app.tenant("acme").await;
    let none = create(&app, &admin, tenant, json!({"slug": "web", "name": "Web"})).await;
    assert_eq!(none.status, StatusCode::CONFLICT);
    assert!(
        none.json()["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("supports_projects")
    );

    enable_product(&app, &admin, tenant, false).await;
    let unsupported = create(&app, &admin, tenant, json!({"slug": "web", "name": "Web"})).await;
    assert_eq!(unsupported.status, StatusCode::CONFLICT);

    enable_product(&app, &admin, tenant, true).await;
    let created = create(&app, &admin, tenant, json!({"slug": "web", "name": "Web"})).await;
    assert_eq!(
        created.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&created.body)
    );
}

#[tokio::test]
async fn a_project_is_created_found_renamed_archived_and_restored() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    let tenant = app.tenant("acme").await;
    enable_product(&app, &admin, tenant, true).await;
    let created = create(&app, &admin, tenant, json!({"slug": "web", "name": "Web"})).await;
    let id = created.json()["id"].as_str().expect("id").to_owned();
    assert_eq!(
        created.header("location"),
        Some(format!("/v1/tenants/{tenant}/projects/{id}").as_str())
    );

    let duplicate = create(
        &app,
        &admin,
        tenant,
        json!({"slug": "web", "name": "Other"}),
    )
    .await;
    assert_eq!(duplicate.status, StatusCode::CONFLICT);
    assert_eq!(duplicate.json()["errors"][0]["pointer"], "/slug");
    let invalid = create(&app, &admin, tenant, json!({"slug": "Web_1", "name": " "})).await;
    assert_eq!(invalid.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(invalid.json()["errors"].as_array().map(Vec::len), Some(2));

    let other_tenant = app.tenant("globex").await;
    enable_product(&app, &admin, other_tenant, true).await;
    let same_slug_elsewhere = create(
        &app,
        &admin,
        other_tenant,
        json!({"slug": "web", "name": "Web"}),
    )
    .await;
    assert_eq!(
        same_slug_elsewhere.status,
        StatusCode::CREATED,
        "slugs are unique per tenant only"
    );

    let by_slug = app
        .request(
            Method::GET,
            &format!("/v1/tenants/{tenant}/projects/by-slug/web"),
        )
        .bearer(&admin)
        .send()
        .await;
    assert_eq!(by_slug.json()["id"], json!(id));

    let renamed = app
        .request(
            Method::PATCH,
            &format!("/v1/tenants/{tenant}/projects/{id}"),
        )
        .bearer(&admin)
        .json(&json!({"name": "Web shop", "slug": "web-shop"}))
        .send()
        .await
        .json();
    assert_eq!(
        (renamed["name"].clone(), renamed["slug"].clone()),
        (json!("Web shop"), json!("web-shop"))
    );

    let archived = app
        .request(
            Method::POST,
            &format!("/v1/tenants/{tenant}/projects/{id}/archive"),
        )
        .bearer(&admin)
        .send()
        .await
        .json();
    assert_eq!(archived["status"], "archived");
    let active = app
        .request(
            Method::GET,
            &format!("/v1/tenants/{tenant}/projects?status=active"),
        )
        .bearer(&admin)
        .send()
        .await
        .json();
    assert_eq!(active["items"], json!([]));
    let restored = app
        .request(
            Method::POST,
            &format!("/v1/tenants/{tenant}/projects/{id}/restore"),
        )
        .bearer(&admin)
        .send()
        .await
        .json();
    assert_eq!(restored["status"], "active");

    let actions: Vec<String> = sqlx::query_scalar(
        "SELECT action FROM audit_log WHERE target_type = 'project' AND tenant_id = $1 ORDER BY id",
    )
    .bind(tenant)
    .fetch_all(app.db.pool())
    .await
    .expect("audit");
    assert_eq!(
        actions,
        vec![
            "project.created",
            "project.updated",
            "project.archived",
            "project.restored"
        ]
    );
}

#[tokio::test]
async fn project_lists_page_and_other_tenants_projects_are_hidden() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    let tenant = app.tenant("acme").await;
    enable_product(&app, &admin, tenant, true).await;
    for n in 0..5 {
        create(
            &app,
            &admin,
            tenant,
            json!({"slug": format!("project-{n}"), "name": "P"}),
        )
        .await;
    }
    let first = app
        .request(
            Method::GET,
            &format!("/v1/tenants/{tenant}/projects?limit=3"),
        )
        .bearer(&admin)
        .send()
        .await
        .json();
    let cursor = first["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let second = app
        .request(
            Method::GET,
            &format!("/v1/tenants/{tenant}/projects?limit=3&cursor={cursor}"),
        )
        .bearer(&admin)
        .send()
        .await
        .json();
    assert_eq!(first["items"].as_array().map(Vec::len), Some(3));
    assert_eq!(second["items"].as_array().map(Vec::len), Some(2));
    assert_eq!(second["next_cursor"], Value::Null);

    let other = app.tenant("globex").await;
    let (_, outsider) = app
        .key(Some(other), &[Scope::ProjectsRead, Scope::ProjectsWrite])
        .await;
    let hidden = app
        .request(Method::GET, &format!("/v1/tenants/{tenant}/projects"))
        .bearer(&outsider)
        .send()
        .await;
    assert_eq!(hidden.status, StatusCode::NOT_FOUND);
    let (_, reader) = app.key(Some(tenant), &[Scope::ProjectsRead]).await;
    let refused = create(&app, &reader, tenant, json!({"slug": "x-y-z", "name": "X"})).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn no_project_is_created_for_a_frozen_or_an_archived_tenant() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    for (slug, status, problem) in [
        ("frosty", "frozen", "/problems/tenant-frozen"),
        ("gone", "archived", "/problems/tenant-archived"),
    ] {
        let tenant = app.tenant(slug).await;
        enable_product(&app, &admin, tenant, true).await;
        let (_, key) = app.key(Some(tenant), &[Scope::ProjectsWrite]).await;
        let moved = app
            .request(Method::POST, &format!("/v1/tenants/{tenant}/transitions"))
            .bearer(&admin)
            .json(&json!({"to": status, "reason": "test"}))
            .send()
            .await;
        assert_eq!(moved.status, StatusCode::OK);
        for credential in [&key, &admin] {
            let refused = create(
                &app,
                credential,
                tenant,
                json!({"slug": "web-shop", "name": "Web shop"}),
            )
            .await;
            if status == "archived" && credential == &key {
                assert_eq!(
                    refused.status,
                    StatusCode::UNAUTHORIZED,
                    "an archived tenant's own keys end with it"
                );
                continue;
            }
            assert_eq!(refused.status, StatusCode::CONFLICT, "{status}");
            assert_eq!(refused.json()["type"], problem);
        }
        let stored: i64 =
            sqlx::query_scalar("SELECT count(*) FROM tenant_projects WHERE tenant_id = $1")
                .bind(tenant)
                .fetch_one(app.db.pool())
                .await
                .expect("count");
        assert_eq!(stored, 0, "{status}");
    }
}
