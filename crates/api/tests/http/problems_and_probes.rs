//! The shape of every error, the probes, the request id, the OpenAPI document and the
//! reference page.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use axum::http::{Method, StatusCode};
use domain::Scope;
use serde_json::{Value, json};
use testkit::{TestApp, TestResponse};

fn assert_problem(response: &TestResponse, status: StatusCode, path: &str) -> Value {
    assert_eq!(
        response.status,
        status,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    assert_eq!(
        response.header("content-type"),
        Some("application/problem+json")
    );
    let problem = response.json();
    assert_eq!(problem["status"], json!(status.as_u16()));
    for member in ["type", "title", "detail"] {
        assert!(
            problem[member]
                .as_str()
                .is_some_and(|text| !text.is_empty()),
            "{member} in {problem}"
        );
    }
    assert_eq!(problem["instance"], json!(path));
    assert_eq!(
        problem["request_id"].as_str(),
        response.header("x-request-id")
    );
    problem
}

#[tokio::test]
async fn every_error_status_is_a_problem_document() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    let tenant = app.tenant("acme").await;
    let (_, reader) = app.key(Some(tenant), &[Scope::TenantsRead]).await;

    let malformed = app
        .request(Method::POST, "/v1/api-keys")
        .bearer(&admin)
        .raw("application/json", "{\"name\": ")
        .send()
        .await;
    assert_problem(&malformed, StatusCode::BAD_REQUEST, "/v1/api-keys");

    let unauthenticated = app.request(Method::GET, "/v1/me").send().await;
    assert_problem(&unauthenticated, StatusCode::UNAUTHORIZED, "/v1/me");

    let forbidden = app
        .request(Method::GET, "/v1/api-keys")
        .bearer(&reader)
        .send()
        .await;
    let problem = assert_problem(&forbidden, StatusCode::FORBIDDEN, "/v1/api-keys");
    assert!(
        problem["detail"]
            .as_str()
            .expect("detail")
            .contains("api_keys:manage")
    );

    let missing = format!("/v1/api-keys/{}", uuid::Uuid::new_v4());
    let not_found = app
        .request(Method::GET, &missing)
        .bearer(&admin)
        .send()
        .await;
    assert_problem(&not_found, StatusCode::NOT_FOUND, &missing);

    let no_route = app.request(Method::GET, "/v1/nothing-here").send().await;
    assert_problem(&no_route, StatusCode::NOT_FOUND, "/v1/nothing-here");

    let not_json = app
        .request(Method::POST, "/v1/api-keys")
        .bearer(&admin)
        .raw("text/plain", "name=x")
        .send()
        .await;
    assert_problem(
        &not_json,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "/v1/api-keys",
    );

    let unknown_field = app
        .request(Method::POST, "/v1/api-keys")
        .bearer(&admin)
        .json(&json!({"name": "x", "scopes": ["tenants:read"], "colour": "blue"}))
        .send()
        .await;
    let problem = assert_problem(
        &unknown_field,
        StatusCode::UNPROCESSABLE_ENTITY,
        "/v1/api-keys",
    );
    assert_eq!(problem["errors"][0]["pointer"], "/colour");

    let huge = app
        .request(Method::POST, "/v1/api-keys")
        .bearer(&admin)
        .raw("application/json", vec![b' '; 1024 * 1024 + 1])
        .send()
        .await;
    assert_problem(&huge, StatusCode::PAYLOAD_TOO_LARGE, "/v1/api-keys");

    let wrong_method = app.request(Method::DELETE, "/v1/me").send().await;
    assert_problem(&wrong_method, StatusCode::METHOD_NOT_ALLOWED, "/v1/me");
}

/// An app whose brake's clock stands still until told: requests share a second however
/// long their verifications take on a loaded machine.
async fn braked_app(trusted_proxies: Vec<ipnet::IpNet>) -> (TestApp, auth::Clock) {
    let clock = auth::Clock::manual();
    let app = TestApp::with_settings(api::Settings {
        brake_clock: clock.clone(),
        trusted_proxies,
        ..testkit::settings()
    })
    .await;
    (app, clock)
}

fn unknown_key() -> String {
    format!("tr_test_{}_{}", "0".repeat(16), "2".repeat(64))
}

#[tokio::test]
async fn more_than_ten_uncached_verifications_a_second_from_one_address_get_429() {
    let (app, clock) = braked_app(Vec::new()).await;
    let address = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7));
    let bad = unknown_key();
    let me = || {
        app.request(Method::GET, "/v1/me")
            .bearer(&bad)
            .from_ip(address)
            .send()
    };
    let mut statuses = Vec::new();
    for _ in 0..10 {
        statuses.push(me().await.status);
    }
    assert!(
        statuses
            .iter()
            .all(|status| *status == StatusCode::UNAUTHORIZED),
        "{statuses:?}"
    );
    let braked = me().await;
    assert_problem(&braked, StatusCode::TOO_MANY_REQUESTS, "/v1/me");
    assert_eq!(braked.header("retry-after"), Some("1"));
    let elsewhere = app.request(Method::GET, "/v1/me").bearer(&bad).send().await;
    assert_eq!(
        elsewhere.status,
        StatusCode::UNAUTHORIZED,
        "other addresses are not braked"
    );
    clock.advance(Duration::from_millis(99));
    assert_eq!(me().await.status, StatusCode::TOO_MANY_REQUESTS);
    clock.advance(Duration::from_millis(1));
    assert_eq!(
        me().await.status,
        StatusCode::UNAUTHORIZED,
        "a verification more every tenth of a second"
    );
}

#[tokio::test]
async fn a_key_already_verified_passes_while_its_address_is_braked() {
    let (app, _clock) = braked_app(Vec::new()).await;
    let shared = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 8));
    let (_, good) = app.key(None, &[Scope::TenantsRead]).await;
    let (_, never_used) = app.key(None, &[Scope::TenantsRead]).await;
    let me = |key: String| {
        app.request(Method::GET, "/v1/me")
            .bearer(&key)
            .from_ip(shared)
            .send()
    };
    assert_eq!(me(good.clone()).await.status, StatusCode::OK);
    for _ in 0..20 {
        me(unknown_key()).await;
    }
    assert_eq!(
        me(unknown_key()).await.status,
        StatusCode::TOO_MANY_REQUESTS,
        "the noisy neighbour is braked"
    );
    assert_eq!(
        me(good).await.status,
        StatusCode::OK,
        "a key verified before passes the brake"
    );
    assert_eq!(
        me(never_used).await.status,
        StatusCode::TOO_MANY_REQUESTS,
        "a key that needs hashing waits for the address's quota"
    );
}

#[tokio::test]
async fn many_requests_with_one_new_key_at_once_cost_one_verification_and_are_all_served() {
    let (app, _clock) = braked_app(Vec::new()).await;
    let address = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 9));
    let (_, fresh) = app.key(None, &[Scope::TenantsRead]).await;
    let requests = (0..40).map(|_| {
        app.request(Method::GET, "/v1/me")
            .bearer(&fresh)
            .from_ip(address)
            .send()
    });
    let statuses: Vec<StatusCode> = futures::future::join_all(requests)
        .await
        .into_iter()
        .map(|response| response.status)
        .collect();
    assert!(
        statuses.iter().all(|status| *status == StatusCode::OK),
        "{statuses:?}"
    );
}

#[tokio::test]
async fn a_key_whose_cache_entry_aged_out_is_not_braked_with_the_guesses() {
    let (app, _clock) = braked_app(Vec::new()).await;
    let shared = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 10));
    let (_, good) = app.key(None, &[Scope::TenantsRead]).await;
    let me = |key: String| {
        app.request(Method::GET, "/v1/me")
            .bearer(&key)
            .from_ip(shared)
            .send()
    };
    assert_eq!(me(good.clone()).await.status, StatusCode::OK);
    // What a minute later looks like: the cache entry is gone.
    app.app.state.verifier.invalidate_all();
    for _ in 0..20 {
        me(unknown_key()).await;
    }
    assert_eq!(
        me(unknown_key()).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        me(good).await.status,
        StatusCode::OK,
        "verified again without spending the braked address's quota"
    );
}

#[tokio::test]
async fn failed_authentications_past_the_quota_get_429_and_leave_no_record() {
    let (app, _clock) = braked_app(Vec::new()).await;
    let noisy = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 11));
    let (_, good) = app.key(None, &[Scope::TenantsRead]).await;
    let anonymous = || app.request(Method::GET, "/v1/me").from_ip(noisy).send();
    let garbage = || {
        app.request(Method::GET, "/v1/me")
            .bearer("garbage")
            .from_ip(noisy)
            .send()
    };
    for _ in 0..5 {
        assert_eq!(anonymous().await.status, StatusCode::UNAUTHORIZED);
        assert_eq!(garbage().await.status, StatusCode::UNAUTHORIZED);
    }
    let records = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM audit_log WHERE action = 'auth.denied'")
            .fetch_one(app.db.pool())
            .await
            .expect("counted")
    };
    let before = records().await;
    for _ in 0..30 {
        assert_eq!(garbage().await.status, StatusCode::TOO_MANY_REQUESTS);
    }
    assert_eq!(records().await, before, "429s are not recorded as denials");
    let served = app
        .request(Method::GET, "/v1/me")
        .bearer(&good)
        .from_ip(noisy)
        .send()
        .await;
    assert_eq!(served.status, StatusCode::OK, "a valid key still passes");
}

#[tokio::test]
async fn an_overlong_or_odd_request_id_is_replaced() {
    let app = TestApp::new().await;
    for sent in ["x".repeat(129), "a b".to_owned(), "ünïcode".to_owned()] {
        let response = app
            .request(Method::GET, "/healthz")
            .header("x-request-id", &sent)
            .send()
            .await;
        let echoed = response.header("x-request-id").expect("an id").to_owned();
        assert_ne!(echoed, sent);
        assert!(uuid::Uuid::parse_str(&echoed).is_ok(), "{echoed}");
    }
    let kept = app
        .request(Method::GET, "/healthz")
        .header("x-request-id", "trace-42.a:b_c")
        .send()
        .await;
    assert_eq!(kept.header("x-request-id"), Some("trace-42.a:b_c"));
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_quota() {
    let (app, _clock) = braked_app(vec!["10.0.0.0/24".parse().expect("a network")]).await;
    let proxy = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5));
    let bad = unknown_key();
    let me = |client: &'static str| {
        app.request(Method::GET, "/v1/me")
            .bearer(&bad)
            .header("x-forwarded-for", client)
            .from_ip(proxy)
            .send()
    };
    for _ in 0..10 {
        assert_eq!(me("203.0.113.1").await.status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        me("203.0.113.1").await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        me("203.0.113.2").await.status,
        StatusCode::UNAUTHORIZED,
        "another client behind the same proxy"
    );
    let spoofed = app
        .request(Method::GET, "/v1/me")
        .bearer(&bad)
        .header("x-forwarded-for", "203.0.113.3")
        .from_ip(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1)))
        .send()
        .await;
    assert_eq!(
        spoofed.status,
        StatusCode::TOO_MANY_REQUESTS,
        "an untrusted peer's header is ignored: it is still the braked client"
    );
    let sources: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT source_ip::text FROM audit_log WHERE action = 'auth.denied'",
    )
    .fetch_all(app.db.pool())
    .await
    .expect("denials");
    assert!(
        sources
            .iter()
            .any(|source| source.starts_with("203.0.113.2")),
        "denials name the forwarded client: {sources:?}"
    );
    assert!(
        !sources.iter().any(|source| source.starts_with("10.0.0.5")),
        "never the proxy: {sources:?}"
    );
}

#[tokio::test]
async fn an_unknown_prefix_and_a_wrong_secret_get_the_same_answer() {
    let app = TestApp::new().await;
    let (_, key) = app.key(None, &[Scope::TenantsRead]).await;
    let prefix = key.split('_').nth(2).expect("prefix");
    let wrong_secret = format!("tr_test_{prefix}_{}", "3".repeat(64));
    let unknown_prefix = format!("tr_test_{}_{}", "4".repeat(16), "3".repeat(64));
    let first = app
        .request(Method::GET, "/v1/me")
        .bearer(&wrong_secret)
        .send()
        .await
        .json();
    let second = app
        .request(Method::GET, "/v1/me")
        .bearer(&unknown_prefix)
        .send()
        .await
        .json();
    for member in ["type", "title", "status", "detail"] {
        assert_eq!(first[member], second[member], "{member}");
    }
}

#[tokio::test]
async fn the_request_id_is_echoed_or_generated() {
    let app = TestApp::new().await;
    let echoed = app
        .request(Method::GET, "/healthz")
        .header("x-request-id", "abc-123")
        .send()
        .await;
    assert_eq!(echoed.header("x-request-id"), Some("abc-123"));
    let generated = app.request(Method::GET, "/healthz").send().await;
    let id = generated.header("x-request-id").expect("a generated id");
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
}

#[tokio::test]
async fn probes_answer_and_readiness_follows_the_schema() {
    let app = TestApp::new().await;
    let health = app.request(Method::GET, "/healthz").send().await;
    assert_eq!(
        (health.status, health.json()),
        (StatusCode::OK, json!({"status": "ok"}))
    );
    let ready = app.request(Method::GET, "/readyz").send().await;
    assert_eq!(
        (ready.status, ready.json()),
        (StatusCode::OK, json!({"status": "ready"}))
    );

    sqlx::query("DELETE FROM refinery_schema_history")
        .execute(app.db.pool())
        .await
        .expect("forgetting the migrations");
    let behind = app.request(Method::GET, "/readyz").send().await;
    let problem = assert_problem(&behind, StatusCode::SERVICE_UNAVAILABLE, "/readyz");
    assert!(
        problem["detail"]
            .as_str()
            .expect("detail")
            .contains("tenant-registry-migrate up")
    );
}

#[tokio::test]
async fn metrics_count_requests_by_route_template_and_auth_failures_by_reason() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    let id = uuid::Uuid::new_v4();
    app.request(Method::GET, &format!("/v1/api-keys/{id}"))
        .bearer(&admin)
        .send()
        .await;
    app.request(Method::GET, "/v1/me")
        .bearer("tr_garbage")
        .send()
        .await;
    assert_eq!(
        app.request(Method::GET, "/metrics").send().await.status,
        StatusCode::NOT_FOUND,
        "not on the API listener"
    );
    let metrics = app.admin_request(Method::GET, "/metrics").send().await;
    assert_eq!(metrics.status, StatusCode::OK);
    let text = String::from_utf8(metrics.body.clone()).expect("utf-8");
    assert!(
        text.contains(r#"tenant_registry_http_requests_total{method="GET",route="/v1/api-keys/{id}",status="404"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"tenant_registry_http_request_duration_seconds_bucket{"#),
        "{text}"
    );
    assert!(
        text.contains(r#"tenant_registry_auth_failures_total{reason="malformed"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"tenant_registry_db_pool_connections{state="idle"}"#),
        "{text}"
    );
    assert!(
        !text.contains(&id.to_string()),
        "raw paths never become labels"
    );
}

#[tokio::test]
async fn the_openapi_document_is_3_1_and_lists_every_route() {
    let app = TestApp::new().await;
    let document = app
        .request(Method::GET, "/openapi.json")
        .send()
        .await
        .json();
    assert_eq!(document["openapi"], "3.1.0");
    let paths = document["paths"].as_object().expect("paths");
    for (path, method) in [
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/health/live", "get"),
        ("/health/ready", "get"),
        ("/health/startup", "get"),
        ("/v1/me", "get"),
        ("/v1/api-keys", "post"),
        ("/v1/api-keys", "get"),
        ("/v1/api-keys/{id}", "get"),
        ("/v1/api-keys/{id}/revoke", "post"),
        ("/v1/api-keys/{id}/rotate", "post"),
        ("/v1/tenants", "post"),
        ("/v1/tenants", "get"),
        ("/v1/tenants/{id}", "get"),
        ("/v1/tenants/{id}", "patch"),
        ("/v1/tenants/{id}", "delete"),
        ("/v1/tenants/by-slug/{slug}", "get"),
        ("/v1/tenants/{id}/transitions", "post"),
    ] {
        assert!(
            paths.get(path).and_then(|item| item.get(method)).is_some(),
            "{method} {path} missing"
        );
    }
    assert_eq!(
        document["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert!(document["components"]["schemas"]["Problem"].is_object());
}

#[tokio::test]
async fn the_reference_page_loads_the_document_without_external_assets() {
    let app = TestApp::new().await;
    let page = app.request(Method::GET, "/docs").send().await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.header("content-type")
            .is_some_and(|value| value.starts_with("text/html"))
    );
    let html = String::from_utf8(page.body.clone()).expect("utf-8");
    assert!(html.contains("fetch(\"/openapi.json\")"));
    for external in ["<script src", "<link rel=\"stylesheet\"", "cdn."] {
        assert!(!html.contains(external), "the page loads {external}");
    }
}
