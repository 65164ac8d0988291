//! A product's tenant-schema migrations: registered append-only and checksummed, by a
//! platform admin or the product's own platform key.

use axum::http::{Method, StatusCode};
use domain::Scope;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use testkit::{TestApp, TestResponse};

async fn put(app: &TestApp, credential: &str, product: &str, body: &Value) -> TestResponse {
    app.request(Method::PUT, &format!("/v1/products/{product}/migrations"))
        .bearer(credential)
        .json(body)
        .send()
        .await
}

async fn get_list(app: &TestApp, credential: &str, product: &str) -> TestResponse {
    app.request(Method::GET, &format!("/v1/products/{product}/migrations"))
        .bearer(credential)
        .send()
        .await
}

fn migration(version: i64, sql: &str) -> Value {
    json!({"version": version, "name": format!("step_{version}"), "sql": sql})
}

const FIRST: &str = "CREATE TABLE documents (id uuid PRIMARY KEY)";
const SECOND: &str = "ALTER TABLE documents ADD COLUMN title text";

#[tokio::test]
async fn registers_migrations_append_only_with_the_sha256_of_each() {
    let app = TestApp::new().await;
    app.product("workbench").await;
    let admin = app.admin_key().await;
    let both = json!([migration(1, FIRST), migration(2, SECOND)]);

    let registered = put(&app, &admin, "workbench", &both).await;
    assert_eq!(
        registered.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&registered.body)
    );
    let body = registered.json();
    assert_eq!(body["added"], 2);
    assert_eq!(
        body["items"][0]["checksum"],
        hex::encode(Sha256::digest(FIRST))
    );
    assert_eq!(body["items"][1]["version"], 2);

    let again = put(&app, &admin, "workbench", &both).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.json()["added"], 0, "the same list again adds nothing");

    let third = put(
        &app,
        &admin,
        "workbench",
        &json!([
            migration(1, FIRST),
            migration(2, SECOND),
            migration(5, "SELECT 1")
        ]),
    )
    .await;
    assert_eq!(third.json()["added"], 1);

    let changed = put(
        &app,
        &admin,
        "workbench",
        &json!([
            migration(1, FIRST),
            migration(2, "DROP TABLE documents"),
            migration(5, "SELECT 1")
        ]),
    )
    .await;
    assert_eq!(changed.status, StatusCode::CONFLICT);
    assert_eq!(changed.pointers(), ["/1/sql"]);
    let removed = put(
        &app,
        &admin,
        "workbench",
        &json!([migration(2, SECOND), migration(5, "SELECT 1")]),
    )
    .await;
    assert_eq!(removed.status, StatusCode::CONFLICT);
    let before_the_last = put(
        &app,
        &admin,
        "workbench",
        &json!([
            migration(1, FIRST),
            migration(2, SECOND),
            migration(3, "SELECT 3"),
            migration(5, "SELECT 1")
        ]),
    )
    .await;
    assert_eq!(before_the_last.status, StatusCode::CONFLICT);
    assert_eq!(before_the_last.pointers(), ["/2/version"]);

    let listed = get_list(&app, &admin, "workbench").await;
    assert_eq!(listed.status, StatusCode::OK);
    let versions: Vec<i64> = listed.json()["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|item| item["version"].as_i64().expect("a version"))
        .collect();
    assert_eq!(
        versions,
        [1, 2, 5],
        "nothing the refused requests sent was stored"
    );
}

#[tokio::test]
async fn refuses_an_invalid_list_naming_each_problem() {
    let app = TestApp::new().await;
    app.product("workbench").await;
    let admin = app.admin_key().await;
    let refused = put(
        &app,
        &admin,
        "workbench",
        &json!([
            migration(2, FIRST),
            migration(2, SECOND),
            {"version": 3, "name": "", "sql": "  "}
        ]),
    )
    .await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(refused.pointers(), ["/1/version", "/2/name", "/2/sql"]);
    let empty = put(&app, &admin, "workbench", &json!([])).await;
    assert_eq!(empty.status, StatusCode::UNPROCESSABLE_ENTITY);
    let unknown_field = put(
        &app,
        &admin,
        "workbench",
        &json!([{"version": 1, "name": "a", "sql": "SELECT 1", "down": "x"}]),
    )
    .await;
    assert_eq!(unknown_field.status, StatusCode::UNPROCESSABLE_ENTITY);
    let no_product = put(&app, &admin, "nothing-here", &json!([migration(1, FIRST)])).await;
    assert_eq!(no_product.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn refuses_a_migration_that_controls_the_transaction_or_cannot_run_in_one_but_not_the_words_in_a_body()
 {
    let app = TestApp::new().await;
    app.product("workbench").await;
    let admin = app.admin_key().await;
    let refused = put(
        &app,
        &admin,
        "workbench",
        &json!([
            migration(1, FIRST),
            migration(2, "ALTER TABLE documents ADD COLUMN body text; COMMIT"),
            migration(
                3,
                "CREATE INDEX CONCURRENTLY documents_body ON documents (body)"
            ),
        ]),
    )
    .await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(refused.pointers(), ["/1/sql", "/2/sql"]);
    let body = refused.json().to_string();
    assert!(body.contains("statement 2 (COMMIT)"), "{body}");
    assert!(body.contains("CREATE INDEX CONCURRENTLY"), "{body}");
    let in_a_body = "CREATE PROCEDURE tidy() LANGUAGE plpgsql AS $$ BEGIN DELETE FROM documents; COMMIT; END $$; -- COMMIT\nCOMMENT ON TABLE documents IS 'BEGIN; VACUUM'";
    let registered = put(
        &app,
        &admin,
        "workbench",
        &json!([migration(1, FIRST), migration(2, in_a_body)]),
    )
    .await;
    assert_eq!(registered.status, StatusCode::OK, "{}", registered.json());
}

#[tokio::test]
async fn only_a_platform_admin_or_the_products_own_platform_key_manages_its_migrations() {
    let app = TestApp::new().await;
    app.product("workbench").await;
    app.product("billing").await;
    let admin = app.admin_key().await;
    let key_of = |product: &'static str, tenant: Option<uuid::Uuid>| {
        let admin = admin.clone();
        let app = &app;
        async move {
            let created = app
                .request(Method::POST, "/v1/api-keys")
                .bearer(&admin)
                .json(&json!({"name": "deployer", "tenant_id": tenant,
                              "scopes": ["products:write", "products:read"], "product": product}))
                .send()
                .await;
            assert_eq!(
                created.status,
                StatusCode::CREATED,
                "{}",
                String::from_utf8_lossy(&created.body)
            );
            created.json()["key"].as_str().expect("a key").to_owned()
        }
    };
    let own = key_of("workbench", None).await;
    let other = key_of("billing", None).await;
    let tenant = app.tenant("acme").await;
    let tenants_own = key_of("workbench", Some(tenant)).await;
    let (_, plain) = app.key(None, &[Scope::ProductsWrite]).await;

    let list = json!([migration(1, FIRST)]);
    assert_eq!(
        put(&app, &other, "workbench", &list).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        put(&app, &tenants_own, "workbench", &list).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        put(&app, &plain, "workbench", &list).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        put(&app, &own, "workbench", &list).await.status,
        StatusCode::OK
    );
    let read_by_other = get_list(&app, &other, "workbench").await;
    assert_eq!(read_by_other.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_history_past_the_service_wide_body_limit_still_takes_new_migrations() {
    let app = TestApp::new().await;
    app.product("workbench").await;
    let admin = app.admin_key().await;
    let padded = |version: i64| {
        migration(
            version,
            &format!(
                "CREATE TABLE t{version} (x int); -- {}",
                "x".repeat(250_000)
            ),
        )
    };
    let history: Vec<Value> = (1..=5).map(padded).collect();
    assert!(
        history
            .iter()
            .map(|entry| entry.to_string().len())
            .sum::<usize>()
            > 1024 * 1024
    );
    let registered = put(&app, &admin, "workbench", &Value::Array(history)).await;
    assert_eq!(
        registered.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&registered.body)
    );
    let oversized = json!([{"version": 1, "name": "huge", "sql": "x".repeat(33 * 1024 * 1024)}]);
    let refused = put(&app, &admin, "workbench", &oversized).await;
    assert_eq!(refused.status, StatusCode::PAYLOAD_TOO_LARGE);
}
