//! API key management over HTTP: issuing, listing, revoking, rotating, and what never leaks.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use domain::Scope;
use serde_json::json;
use testkit::TestApp;

async fn create(app: &TestApp, credential: &str, body: serde_json::Value) -> testkit::TestResponse {
    app.request(Method::POST, "/v1/api-keys")
        .bearer(credential)
        .json(&body)
        .send()
        .await
}

#[tokio::test]
async fn a_created_key_is_shown_once_and_works_at_once() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    let tenant = app.tenant("acme").await;
    let created = create(
        &app,
        &admin,
        json!({"name": "billing sync", "tenant_id": tenant, "scopes": ["tenants:read", "audit:write"]}),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let body = created.json();
    let key = body["key"]
        .as_str()
        .expect("the key is returned")
        .to_owned();
    assert!(key.starts_with(&format!(
        "tr_dev_{}_",
        body["prefix"].as_str().expect("prefix")
    )));
    assert_eq!(
        created.header("location"),
        Some(format!("/v1/api-keys/{}", body["id"].as_str().expect("id")).as_str())
    );
    assert_eq!(body["scopes"], json!(["tenants:read", "audit:write"]));

    let me = app.request(Method::GET, "/v1/me").bearer(&key).send().await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(
        me.json(),
        json!({"kind": "tenant_key", "tenant_id": tenant, "scopes": ["tenants:read", "audit:write"],
               "key_id": body["id"], "subject": null, "product": null})
    );

    let fetched = app
        .request(
            Method::GET,
            &format!("/v1/api-keys/{}", body["id"].as_str().expect("id")),
        )
        .bearer(&admin)
        .send()
        .await
        .json();
    assert!(
        fetched.get("key").is_none(),
        "the secret is never shown again"
    );
    assert!(fetched.get("hash").is_none());
}

#[tokio::test]
async fn a_tenant_key_cannot_grant_scopes_it_lacks_nor_create_platform_keys() {
    let app = TestApp::new().await;
    let tenant = app.tenant("acme").await;
    let (_, manager) = app
        .key(Some(tenant), &[Scope::ApiKeysManage, Scope::TenantsRead])
        .await;
    let cases = [
        (
            "escalation",
            json!({"name": "x", "tenant_id": tenant, "scopes": ["tenants:write"]}),
            StatusCode::FORBIDDEN,
        ),
        (
            "platform key",
            json!({"name": "x", "scopes": ["tenants:read"]}),
            StatusCode::FORBIDDEN,
        ),
        (
            "admin scope on a tenant key",
            json!({"name": "x", "tenant_id": tenant, "scopes": ["platform:admin"]}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "a subset of its own",
            json!({"name": "reader", "tenant_id": tenant, "scopes": ["tenants:read"]}),
            StatusCode::CREATED,
        ),
    ];
    for (case, body, status) in cases {
        let response = create(&app, &manager, body).await;
        assert_eq!(
            response.status,
            status,
            "{case}: {}",
            String::from_utf8_lossy(&response.body)
        );
        if case == "escalation" {
            assert!(
                response.json()["detail"]
                    .as_str()
                    .expect("detail")
                    .contains("tenants:write")
            );
        }
    }
}

#[tokio::test]
async fn invalid_fields_are_all_reported_with_pointers() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    let response = create(
        &app,
        &admin,
        json!({"name": "x", "scopes": ["tenants:read", "nope", "also:nope"]}),
    )
    .await;
    assert_eq!(response.status, StatusCode::UNPROCESSABLE_ENTITY);
    let pointers = response.pointers();
    assert_eq!(pointers, vec!["/scopes/1", "/scopes/2"]);

    let past = create(
        &app,
        &admin,
        json!({"name": "x", "scopes": ["tenants:read"], "expires_at": "2020-01-01T00:00:00Z"}),
    )
    .await;
    assert_eq!(past.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(past.json()["errors"][0]["pointer"], "/expires_at");

    let unknown_tenant = create(
        &app,
        &admin,
        json!({"name": "x", "tenant_id": uuid::Uuid::new_v4(), "scopes": ["tenants:read"]}),
    )
    .await;
    assert_eq!(unknown_tenant.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(unknown_tenant.json()["errors"][0]["pointer"], "/tenant_id");
}

#[tokio::test]
async fn rotation_keeps_id_and_scopes_and_kills_the_old_secret() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    let tenant = app.tenant("acme").await;
    let (id, old) = app.key(Some(tenant), &[Scope::TenantsRead]).await;
    assert_eq!(
        app.request(Method::GET, "/v1/me")
            .bearer(&old)
            .send()
            .await
            .status,
        StatusCode::OK
    );

    let rotated = app
        .request(Method::POST, &format!("/v1/api-keys/{id}/rotate"))
        .bearer(&admin)
        .send()
        .await;
    assert_eq!(rotated.status, StatusCode::OK);
    let body = rotated.json();
    assert_eq!(body["id"], json!(id));
    assert_eq!(body["scopes"], json!(["tenants:read"]));
    let new = body["key"].as_str().expect("new key").to_owned();
    assert_ne!(new, old);

    let refused = wait_for_status(&app, &old, StatusCode::UNAUTHORIZED).await;
    assert!(refused, "the old secret is refused after rotation");
    assert_eq!(
        app.request(Method::GET, "/v1/me")
            .bearer(&new)
            .send()
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn revoking_is_idempotent_and_a_revoked_key_cannot_be_rotated() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    let (id, _) = app.key(None, &[Scope::AuditWrite]).await;
    let path = format!("/v1/api-keys/{id}/revoke");
    let first = app
        .request(Method::POST, &path)
        .bearer(&admin)
        .send()
        .await
        .json();
    let second = app
        .request(Method::POST, &path)
        .bearer(&admin)
        .send()
        .await
        .json();
    assert!(first["revoked_at"].is_string());
    assert_eq!(
        first["revoked_at"], second["revoked_at"],
        "the first revocation time stays"
    );
    let rotate = app
        .request(Method::POST, &format!("/v1/api-keys/{id}/rotate"))
        .bearer(&admin)
        .send()
        .await;
    assert_eq!(rotate.status, StatusCode::CONFLICT);
}

#[tokio::test]
async fn listing_pages_through_every_key_once_and_hides_revoked_by_default() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    let tenant = app.tenant("acme").await;
    let mut made = Vec::new();
    for _ in 0..7 {
        made.push(app.key(Some(tenant), &[Scope::TenantsRead]).await.0);
    }
    app.revoke(made[3]).await;

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(cursor) => format!("/v1/api-keys?tenant_id={tenant}&limit=2&cursor={cursor}"),
            None => format!("/v1/api-keys?tenant_id={tenant}&limit=2"),
        };
        let page = app
            .request(Method::GET, &path)
            .bearer(&admin)
            .send()
            .await
            .json();
        for item in page["items"].as_array().expect("items") {
            seen.push(
                item["id"]
                    .as_str()
                    .expect("id")
                    .parse::<uuid::Uuid>()
                    .expect("uuid"),
            );
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let mut expected = made.clone();
    expected.remove(3);
    assert_eq!(seen, expected, "every live key once, in creation order");

    let with_revoked = app
        .request(
            Method::GET,
            &format!("/v1/api-keys?tenant_id={tenant}&include_revoked=true&limit=200"),
        )
        .bearer(&admin)
        .send()
        .await
        .json();
    assert_eq!(with_revoked["items"].as_array().expect("items").len(), 7);

    let bad_limit = app
        .request(Method::GET, "/v1/api-keys?limit=0")
        .bearer(&admin)
        .send()
        .await;
    assert_eq!(bad_limit.status, StatusCode::UNPROCESSABLE_ENTITY);
    let bad_cursor = app
        .request(Method::GET, "/v1/api-keys?cursor=xyz")
        .bearer(&admin)
        .send()
        .await;
    assert_eq!(bad_cursor.status, StatusCode::UNPROCESSABLE_ENTITY);
}

async fn wait_for_status(app: &TestApp, key: &str, status: StatusCode) -> bool {
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        if app
            .request(Method::GET, "/v1/me")
            .bearer(key)
            .send()
            .await
            .status
            == status
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn a_key_revoked_through_one_server_is_refused_by_another_within_a_second() {
    let app = TestApp::new().await;
    let replica = app.replica().await;
    let admin = app.admin_key().await;
    let (id, key) = app.key(None, &[Scope::TenantsRead]).await;

    let ask_replica = || async {
        app.request_on(&replica, Method::GET, "/v1/me")
            .bearer(&key)
            .send()
            .await
            .status
    };
    assert_eq!(
        ask_replica().await,
        StatusCode::OK,
        "the replica caches the verification"
    );

    let revoked = app
        .request(Method::POST, &format!("/v1/api-keys/{id}/revoke"))
        .bearer(&admin)
        .send()
        .await;
    assert_eq!(revoked.status, StatusCode::OK);
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut refused = false;
    while Instant::now() < deadline {
        if ask_replica().await == StatusCode::UNAUTHORIZED {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        refused,
        "the replica still accepted the revoked key after 1 s"
    );
}

#[derive(Clone, Default)]
struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for CapturedLogs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn the_secret_is_in_no_table_and_no_log_line() {
    let logs = CapturedLogs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    let tenant = app.tenant("acme").await;
    let created = create(
        &app,
        &admin,
        json!({"name": "leak check", "tenant_id": tenant, "scopes": ["tenants:read"]}),
    )
    .await;
    let body = created.json();
    let first = body["key"].as_str().expect("key").to_owned();
    let id = body["id"].as_str().expect("id").to_owned();
    app.request(Method::GET, "/v1/me")
        .bearer(&first)
        .send()
        .await;
    let rotated = app
        .request(Method::POST, &format!("/v1/api-keys/{id}/rotate"))
        .bearer(&admin)
        .send()
        .await
        .json();
    let second = rotated["key"].as_str().expect("rotated key").to_owned();
    app.request(Method::GET, "/v1/me")
        .bearer(&second)
        .send()
        .await;
    app.request(Method::GET, "/v1/me")
        .bearer(&first)
        .send()
        .await;

    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = current_schema()",
    )
    .fetch_all(app.db.pool())
    .await
    .expect("tables");
    let mut dump = String::new();
    for table in tables {
        let rows: Vec<String> =
            sqlx::query_scalar(&format!("SELECT row_to_json(t)::text FROM {table} t"))
                .fetch_all(app.db.pool())
                .await
                .expect("rows");
        dump.push_str(&rows.join("\n"));
    }
    assert!(dump.contains("leak check"), "the dump holds the key's row");
    let logs = String::from_utf8(logs.0.lock().expect("log buffer").clone()).expect("utf-8 logs");
    assert!(
        logs.contains("authentication failed"),
        "the logs were captured"
    );
    for key in [&first, &second, &admin] {
        let secret = key.rsplit('_').next().expect("secret part");
        assert!(!dump.contains(secret), "a secret is stored in the database");
        assert!(!logs.contains(secret), "a secret is in the logs");
    }
}
