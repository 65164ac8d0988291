//! Revocation is authorized like granting, with one allowance (a credential may always end
//! itself), and changes a key once: a repeat, a racing rotation and an archived tenant's keys
//! are each settled by the key's row, not by what a caller read earlier.

use axum::http::{Method, StatusCode};
use domain::Scope;
use serde_json::json;
use testkit::{TestApp, TestResponse};
use uuid::Uuid;

async fn act(app: &TestApp, credential: &str, id: Uuid, action: &str) -> TestResponse {
    app.request(Method::POST, &format!("/v1/api-keys/{id}/{action}"))
        .bearer(credential)
        .send()
        .await
}

async fn count(app: &TestApp, sql: &str, id: Uuid) -> i64 {
    sqlx::query_scalar(sql)
        .bind(id.to_string())
        .fetch_one(app.db.pool())
        .await
        .expect("count")
}

async fn revocations_recorded(app: &TestApp, id: Uuid) -> (i64, i64) {
    let audited = count(
        app,
        "SELECT count(*) FROM audit_log WHERE action = 'api_key.revoked' AND target_id = $1",
        id,
    )
    .await;
    let announced = count(
        app,
        "SELECT count(*) FROM events WHERE type = 'api_key.revoked' AND data->>'id' = $1",
        id,
    )
    .await;
    (audited, announced)
}

#[tokio::test]
async fn a_credential_may_always_revoke_itself_even_when_it_could_not_grant_itself() {
    let app = TestApp::new().await;
    // A platform key without platform:admin could not grant a platform key, itself included.
    let (manager_id, manager) = app.key(None, &[Scope::ApiKeysManage]).await;
    assert_eq!(
        act(&app, &manager, manager_id, "rotate").await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        act(&app, &manager, manager_id, "revoke").await.status,
        StatusCode::OK
    );
    assert_eq!(
        app.request(Method::GET, "/v1/me")
            .bearer(&manager)
            .send()
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );

    // The old secret of a rotation's grace expires before its key: it still ends the key.
    let tenant = app.tenant("acme").await;
    let (key_id, old_secret) = app.key(Some(tenant), &[Scope::ApiKeysManage]).await;
    let rotated = app
        .request(Method::POST, &format!("/v1/api-keys/{key_id}/rotate"))
        .bearer(&old_secret)
        .json(&json!({"grace_seconds": 600}))
        .send()
        .await;
    assert_eq!(rotated.status, StatusCode::OK);
    assert_eq!(
        act(&app, &old_secret, key_id, "revoke").await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn revoking_a_revoked_key_changes_records_and_announces_nothing() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    let tenant = app.tenant("acme").await;
    let (id, _) = app.key(Some(tenant), &[Scope::TenantsRead]).await;
    let first = act(&app, &admin, id, "revoke").await;
    assert_eq!(first.status, StatusCode::OK);
    let second = act(&app, &admin, id, "revoke").await;
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!(second.json()["revoked_at"], first.json()["revoked_at"]);
    assert_eq!(second.json()["updated_at"], first.json()["updated_at"]);
    assert_eq!(revocations_recorded(&app, id).await, (1, 1));
}

#[tokio::test]
async fn a_rotation_racing_a_revocation_never_rotates_the_revoked_key() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    let tenant = app.tenant("acme").await;
    for _ in 0..10 {
        let (id, _) = app.key(Some(tenant), &[Scope::TenantsRead]).await;
        let (rotated, revoked) = tokio::join!(
            act(&app, &admin, id, "rotate"),
            act(&app, &admin, id, "revoke")
        );
        assert_eq!(revoked.status, StatusCode::OK);
        match rotated.status {
            StatusCode::OK => assert!(
                rotated.json()["revoked_at"].is_null(),
                "a rotation answered with a revoked key: {}",
                String::from_utf8_lossy(&rotated.body)
            ),
            StatusCode::CONFLICT => {}
            other => panic!("rotate answered {other}"),
        }
        let rotated_after_revocation = count(
            &app,
            "SELECT count(*) FROM audit_log rotated JOIN audit_log revoked
               ON rotated.target_id = revoked.target_id
             WHERE rotated.action = 'api_key.rotated' AND revoked.action = 'api_key.revoked'
               AND rotated.id > revoked.id AND rotated.target_id = $1",
            id,
        )
        .await;
        assert_eq!(
            rotated_after_revocation, 0,
            "no rotation recorded after the revocation"
        );
    }
}

#[tokio::test]
async fn archiving_ends_a_tenants_keys_for_good_so_a_restore_brings_none_back() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    let tenant = app.tenant("acme").await;
    let (id, key) = app.key(Some(tenant), &[Scope::TenantsRead]).await;
    let archived = app
        .request(Method::DELETE, &format!("/v1/tenants/{tenant}"))
        .bearer(&admin)
        .send()
        .await;
    assert_eq!(archived.status, StatusCode::OK);
    let view = app
        .request(Method::GET, &format!("/v1/api-keys/{id}"))
        .bearer(&admin)
        .send()
        .await;
    assert!(
        view.json()["revoked_at"].is_string(),
        "revoked by the archive"
    );
    assert_eq!(revocations_recorded(&app, id).await, (1, 1));
    assert_eq!(
        act(&app, &admin, id, "revoke").await.status,
        StatusCode::OK,
        "revoking it again is the same no-op as for any revoked key"
    );

    let restored = app
        .request(Method::POST, &format!("/v1/tenants/{tenant}/transitions"))
        .bearer(&admin)
        .json(&json!({"to": "frozen", "reason": "came back"}))
        .send()
        .await;
    assert_eq!(
        restored.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&restored.body)
    );
    assert_eq!(
        app.request(Method::GET, &format!("/v1/tenants/{tenant}"))
            .bearer(&key)
            .send()
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn only_an_admin_rotates_or_revokes_a_key_holding_a_scope_this_build_does_not_know() {
    let app = TestApp::new().await;
    let tenant = app.tenant("acme").await;
    let (_, manager) = app
        .key(Some(tenant), &[Scope::ApiKeysManage, Scope::TenantsRead])
        .await;
    let (newer_id, _) = app.key(Some(tenant), &[Scope::TenantsRead]).await;
    // A scope of a newer release, as a rolling deploy would leave it.
    sqlx::query("UPDATE api_keys SET scopes = scopes || '{billing:admin}' WHERE id = $1")
        .bind(newer_id)
        .execute(app.db.pool())
        .await
        .expect("a newer scope");
    for action in ["rotate", "revoke"] {
        let refused = act(&app, &manager, newer_id, action).await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{action}");
        let detail = refused.json()["detail"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(detail.contains("billing:admin"), "{action}: {detail}");
    }
    let admin = app.admin_key().await;
    for action in ["rotate", "revoke"] {
        assert_eq!(
            act(&app, &admin, newer_id, action).await.status,
            StatusCode::OK,
            "{action}"
        );
    }
}
