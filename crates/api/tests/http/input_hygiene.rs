//! Text PostgreSQL cannot store (a NUL character, bytes that are not UTF-8 once
//! percent-decoded), and a malformed percent escape, get a 4xx problem wherever they are
//! sent, before the database is asked: never a 500, never a stream cut in the middle.

use axum::http::{Method, StatusCode};
use serde_json::json;
use testkit::{TestApp, TestResponse};

fn assert_refused(response: &TestResponse, status: StatusCode, pointer: Option<&str>, what: &str) {
    assert_eq!(
        response.status,
        status,
        "{what}: {}",
        String::from_utf8_lossy(&response.body)
    );
    assert_eq!(
        response.header("content-type"),
        Some("application/problem+json"),
        "{what}"
    );
    if let Some(pointer) = pointer {
        assert_eq!(response.pointers(), vec![pointer.to_owned()], "{what}");
    }
}

#[tokio::test]
async fn a_nul_or_broken_utf8_in_any_query_parameter_is_a_422_naming_it() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    for (path, pointer) in [
        ("/v1/audit/events?q=a%00b", "/q"),
        ("/v1/audit/events?action=doc.%00", "/action"),
        ("/v1/audit/events/export?q=%00", "/q"),
        (
            "/v1/audit/events/export?format=csv&actor_id=%FF",
            "/actor_id",
        ),
        ("/v1/tenants?q=%00", "/q"),
        ("/v1/events?types=tenant.%00", "/types"),
        ("/v1/tenants?q=%C3%28", "/q"),
    ] {
        let response = app.request(Method::GET, path).bearer(&admin).send().await;
        assert_refused(
            &response,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some(pointer),
            path,
        );
    }
}

#[tokio::test]
async fn a_nul_or_broken_utf8_in_the_path_is_a_400() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    for path in [
        "/v1/tenants/by-slug/acme%00",
        "/v1/products/bench%FF",
        "/v1/tenants/by-slug/%C0%AF/former-slugs",
    ] {
        let response = app.request(Method::GET, path).bearer(&admin).send().await;
        assert_refused(&response, StatusCode::BAD_REQUEST, None, path);
    }
}

#[tokio::test]
async fn a_malformed_percent_escape_is_refused_and_a_wellformed_one_reads_as_its_character() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    app.tenant("acme").await;
    let get = async |path: &str| app.request(Method::GET, path).bearer(&admin).send().await;
    let malformed = get("/v1/tenants/by-slug/acme%zz").await;
    assert_refused(&malformed, StatusCode::BAD_REQUEST, None, "a % in the path");
    let malformed = get("/v1/tenants?q=100%").await;
    assert_refused(
        &malformed,
        StatusCode::UNPROCESSABLE_ENTITY,
        Some("/q"),
        "a % in the query",
    );
    let escaped = get("/v1/tenants/by-slug/%61cme").await;
    assert_eq!(escaped.status, StatusCode::OK, "%61 is a");
}

#[tokio::test]
async fn a_nul_in_any_string_of_a_json_body_is_a_422_pointing_at_it() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    let tenant = app.tenant("acme").await;
    let cases = [
        (
            Method::POST,
            "/v1/tenants".to_owned(),
            json!({"slug": "nul", "name": "a\u{0}b", "plan": "free"}),
            "/name",
        ),
        (
            Method::PATCH,
            format!("/v1/tenants/{tenant}"),
            json!({"sales_owner": "\u{0}"}),
            "/sales_owner",
        ),
        (
            Method::PUT,
            "/v1/products/nul".to_owned(),
            json!({"name": "Nul", "config_schema": {"type": "object"}, "default_config": {"k\u{0}": 1},
                   "features": {}, "plans": {}}),
            "/default_config/k\\u0000",
        ),
        (
            Method::POST,
            "/v1/audit/events".to_owned(),
            json!({"action": "doc.read", "crud": "r", "description": "x\u{0}"}),
            "/description",
        ),
    ];
    for (method, path, body, pointer) in cases {
        let response = app
            .request(method.clone(), &path)
            .bearer(&admin)
            .json(&body)
            .send()
            .await;
        assert_refused(
            &response,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some(pointer),
            &format!("{method} {path}"),
        );
    }
    let names: Vec<String> = sqlx::query_scalar("SELECT name FROM tenants")
        .fetch_all(app.db.pool())
        .await
        .expect("tenants");
    assert_eq!(names.len(), 1, "nothing was written: {names:?}");
}
