//! Every route × every kind of caller → the status the rules promise.

use axum::http::{Method, StatusCode};
use domain::Scope;
use serde_json::json;
use testkit::TestApp;
use testkit::oidc::TestIssuer;
use uuid::Uuid;

#[derive(Clone, Copy, Debug)]
enum Route {
    Me,
    CreateKey,
    ListKeys,
    GetKey,
    RevokeKey,
    RotateKey,
    RenameTenant,
    UpgradeTenantPlan,
    SubscribeTenant,
    ListEvents,
}

const ROUTES: [Route; 10] = [
    Route::Me,
    Route::CreateKey,
    Route::ListKeys,
    Route::GetKey,
    Route::RevokeKey,
    Route::RotateKey,
    Route::RenameTenant,
    Route::UpgradeTenantPlan,
    Route::SubscribeTenant,
    Route::ListEvents,
];

/// Routes that only platform principals may take, even with the scope.
fn platform_only(route: Route) -> bool {
    matches!(route, Route::UpgradeTenantPlan | Route::SubscribeTenant)
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Caller {
    NoCredentials,
    Malformed,
    UnknownKey,
    RevokedKey,
    ExpiredKey,
    TenantKeyWithoutScope,
    OtherTenantsKey,
    TenantKeyWithScope,
    PlatformAdmin,
    OidcAdmin,
    OidcTenantUser,
}

/// The expected status of `route` for `caller`.
fn expected(route: Route, caller: Caller) -> StatusCode {
    use Caller::*;
    match caller {
        NoCredentials | Malformed | UnknownKey | RevokedKey | ExpiredKey => {
            StatusCode::UNAUTHORIZED
        }
        TenantKeyWithoutScope => match route {
            Route::Me => StatusCode::OK,
            _ => StatusCode::FORBIDDEN,
        },
        OtherTenantsKey => match route {
            Route::Me | Route::ListKeys => StatusCode::OK,
            // The target tenant is not the caller's: it does not exist for them.
            Route::CreateKey | Route::ListEvents => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::NOT_FOUND,
        },
        TenantKeyWithScope | OidcTenantUser if platform_only(route) => StatusCode::FORBIDDEN,
        TenantKeyWithScope | PlatformAdmin | OidcAdmin | OidcTenantUser => match route {
            Route::CreateKey => StatusCode::CREATED,
            _ => StatusCode::OK,
        },
    }
}

struct World {
    app: TestApp,
    issuer: TestIssuer,
    tenant: Uuid,
    credentials: Vec<(Caller, Option<String>)>,
}

async fn world() -> World {
    let issuer = TestIssuer::start().await;
    let app = TestApp::with_settings(api::Settings {
        oidc: Some(issuer.config()),
        ..testkit::settings()
    })
    .await;
    let tenant = app.tenant("acme").await;
    let other = app.tenant("globex").await;

    let manage = [
        Scope::ApiKeysManage,
        Scope::TenantsRead,
        Scope::TenantsWrite,
        Scope::ProductsWrite,
        Scope::EventsRead,
    ];
    let (revoked_id, revoked) = app.key(Some(tenant), &manage).await;
    app.revoke(revoked_id).await;
    let (expiring_id, expired) = app.key(Some(tenant), &manage).await;
    sqlx::query("UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE id = $1")
        .bind(expiring_id)
        .execute(app.db.pool())
        .await
        .expect("backdating the expiry");
    let unknown = format!("tr_test_{}_{}", "0".repeat(16), "1".repeat(64));
    let credentials =
        vec![
            (Caller::NoCredentials, None),
            (Caller::Malformed, Some("not-a-key".to_owned())),
            (Caller::UnknownKey, Some(unknown)),
            (Caller::RevokedKey, Some(revoked)),
            (Caller::ExpiredKey, Some(expired)),
            (
                Caller::TenantKeyWithoutScope,
                Some(app.key(Some(tenant), &[Scope::TenantsRead]).await.1),
            ),
            (
                Caller::OtherTenantsKey,
                Some(app.key(Some(other), &manage).await.1),
            ),
            (
                Caller::TenantKeyWithScope,
                Some(app.key(Some(tenant), &manage).await.1),
            ),
            (Caller::PlatformAdmin, Some(app.admin_key().await)),
            (
                Caller::OidcAdmin,
                Some(issuer.token(json!({"realm_access": {"roles": ["platform-admin"]}}))),
            ),
            (
                Caller::OidcTenantUser,
                Some(issuer.token(
                    json!({"tenant": tenant, "scope": "openid api_keys:manage tenants:read tenants:write products:write events:read"}),
                )),
            ),
        ];
    World {
        app,
        issuer,
        tenant,
        credentials,
    }
}

/// A product of its own for a cell, so that no cell finds another's subscription.
async fn product(world: &World) -> String {
    let id = format!("p-{}", Uuid::new_v4().simple());
    let admin = world
        .credentials
        .iter()
        .find(|(caller, _)| *caller == Caller::PlatformAdmin)
        .and_then(|(_, credential)| credential.clone())
        .expect("the platform admin's key");
    let published = world
        .app
        .request(Method::PUT, &format!("/v1/products/{id}"))
        .bearer(&admin)
        .json(&json!({"name": "A product"}))
        .send()
        .await;
    assert_eq!(published.status, StatusCode::CREATED);
    id
}

async fn call(world: &World, route: Route, credential: Option<&str>) -> testkit::TestResponse {
    // Each cell acts on a key of its own, so revoking or rotating in one cell cannot change
    // what another sees. Keys made and acted on expire before any caller's credential (the
    // tokens live 5 minutes), so the matrix checks scopes and tenants; what outlives a
    // caller is refused in credential_grants.rs.
    let expires_at = chrono::Utc::now() + chrono::Duration::minutes(1);
    let (target, _) = world
        .app
        .key_expiring(Some(world.tenant), &[Scope::TenantsRead], Some(expires_at))
        .await;
    let (method, path, body) = match route {
        Route::Me => (Method::GET, "/v1/me".to_owned(), None),
        Route::CreateKey => (
            Method::POST,
            "/v1/api-keys".to_owned(),
            Some(
                json!({"name": "made in the matrix", "tenant_id": world.tenant, "scopes": ["tenants:read"],
                       "expires_at": expires_at}),
            ),
        ),
        Route::ListKeys => (Method::GET, "/v1/api-keys".to_owned(), None),
        Route::GetKey => (Method::GET, format!("/v1/api-keys/{target}"), None),
        Route::RevokeKey => (Method::POST, format!("/v1/api-keys/{target}/revoke"), None),
        Route::RotateKey => (Method::POST, format!("/v1/api-keys/{target}/rotate"), None),
        Route::RenameTenant => (
            Method::PATCH,
            format!("/v1/tenants/{}", world.tenant),
            Some(json!({"name": "Acme Corp"})),
        ),
        Route::UpgradeTenantPlan => (
            Method::PATCH,
            format!("/v1/tenants/{}", world.tenant),
            Some(json!({"plan": "enterprise"})),
        ),
        Route::SubscribeTenant => (
            Method::PUT,
            format!(
                "/v1/tenants/{}/products/{}",
                world.tenant,
                product(world).await
            ),
            Some(json!({"enabled": true})),
        ),
        Route::ListEvents => (
            Method::GET,
            format!("/v1/events?tenant_id={}", world.tenant),
            None,
        ),
    };
    let mut request = world.app.request(method, &path);
    if let Some(credential) = credential {
        request = request.bearer(credential);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await
}

#[tokio::test]
async fn every_route_answers_every_caller_as_the_rules_say() {
    let world = world().await;
    let mut mismatches = Vec::new();
    for route in ROUTES {
        for (caller, credential) in &world.credentials {
            let response = call(&world, route, credential.as_deref()).await;
            let want = expected(route, *caller);
            if response.status != want {
                mismatches.push(format!(
                    "{route:?} as {caller:?}: got {}, want {want}: {}",
                    response.status,
                    String::from_utf8_lossy(&response.body)
                ));
            }
            if response.status == StatusCode::UNAUTHORIZED {
                assert!(
                    response
                        .header("www-authenticate")
                        .is_some_and(|value| value.starts_with("Bearer")),
                    "{route:?} as {caller:?}: 401 without WWW-Authenticate"
                );
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} mismatches:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
    drop(world.issuer);
}

#[tokio::test]
async fn another_tenants_key_lists_only_its_own_tenants_keys() {
    let world = world().await;
    let other_key = world
        .credentials
        .iter()
        .find(|(caller, _)| *caller == Caller::OtherTenantsKey)
        .and_then(|(_, credential)| credential.clone())
        .expect("the other tenant's key");
    let response = world
        .app
        .request(
            Method::GET,
            &format!("/v1/api-keys?tenant_id={}", world.tenant),
        )
        .bearer(&other_key)
        .send()
        .await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(
        response.json()["items"],
        json!([]),
        "asking for another tenant shows nothing"
    );
    let own = world
        .app
        .request(Method::GET, "/v1/api-keys")
        .bearer(&other_key)
        .send()
        .await;
    let items = own.json()["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 1, "only its own key");
    assert!(
        items
            .iter()
            .all(|item| item["tenant_id"] != json!(world.tenant))
    );
}
