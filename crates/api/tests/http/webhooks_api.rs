//! `/v1/webhooks` over HTTP: the secret is shown once, tenants manage only their own
//! endpoints, input is checked field by field, and the delivery requests (history, retry,
//! replay, test, secret rotation) reach a real receiver through the runner.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use chrono::Utc;
use domain::Scope;
use domain::event::EventType;
use serde_json::{Value, json};
use storage::events::{self, NewEvent};
use testkit::receiver::{Received, Receiver};
use testkit::{TestApp, TestResponse};
use uuid::Uuid;
use webhooks::deliver::Delivered;
use webhooks::{Observer, Pass, Runner, RunnerConfig, SystemClock};

struct Quiet;

impl Observer for Quiet {
    fn delivered(&self, _: &Delivered) {}
}

fn runner(app: &TestApp) -> Runner {
    Runner::new(
        app.db.pool().clone(),
        Arc::clone(&app.app.state.settings.keyring),
        app.app.state.settings.outbound.clone(),
        Arc::new(SystemClock),
        RunnerConfig::default(),
        Arc::new(Quiet),
    )
}

/// Runs the runner until the receiver got `count` messages.
async fn delivered(app: &TestApp, receiver: &Receiver, count: usize) -> Vec<Received> {
    let runner = runner(app);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let Pass { .. } = runner.run_once().await.expect("a pass");
        if receiver.received().len() >= count {
            return receiver.received();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the receiver got {} of {count} messages",
            receiver.received().len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn create(app: &TestApp, key: &str, body: Value) -> TestResponse {
    app.request(Method::POST, "/v1/webhooks")
        .bearer(key)
        .json(&body)
        .send()
        .await
}

async fn append(app: &TestApp, event_type: EventType, tenant_id: Option<Uuid>) -> Uuid {
    let mut transaction = storage::begin(app.db.pool()).await.expect("a transaction");
    let stored = events::append(
        &mut transaction,
        &NewEvent {
            event_type,
            tenant_id,
            data: serde_json::Map::new(),
        },
    )
    .await
    .expect("appended");
    storage::commit(transaction).await.expect("committed");
    stored.event.id
}

#[tokio::test]
async fn the_secret_is_shown_once_and_never_read_back() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    let created = create(&app, &admin, json!({"url": "https://hooks.example.com/in"})).await;
    assert_eq!(created.status, StatusCode::CREATED);
    let body = created.json();
    let secret = body["secret"].as_str().expect("a secret");
    assert!(secret.starts_with("whsec_"));
    assert_eq!(body["enabled"], true);
    assert_eq!(body["event_types"], Value::Null);
    let location = created.header("location").expect("a location").to_owned();

    let read = app
        .request(Method::GET, &location)
        .bearer(&admin)
        .send()
        .await;
    assert_eq!(read.status, StatusCode::OK);
    assert!(read.json().get("secret").is_none());
    let listed = app
        .request(Method::GET, "/v1/webhooks")
        .bearer(&admin)
        .send()
        .await;
    assert!(!String::from_utf8_lossy(&listed.body).contains(secret));
    let stored: Vec<u8> = sqlx::query_scalar("SELECT secret_sealed FROM webhook_endpoints")
        .fetch_one(app.db.pool())
        .await
        .expect("stored");
    assert!(
        !String::from_utf8_lossy(&stored).contains(&secret[6..]),
        "sealed at rest"
    );
}

#[tokio::test]
async fn a_tenant_manages_only_its_own_endpoints() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    let acme = app.tenant("acme").await;
    let globex = app.tenant("globex").await;
    let (_, acme_key) = app
        .cheap_key(Some(acme), &[Scope::WebhooksManage, Scope::EventsRead])
        .await;
    let (_, globex_key) = app
        .cheap_key(Some(globex), &[Scope::WebhooksManage, Scope::EventsRead])
        .await;

    let own = create(
        &app,
        &acme_key,
        json!({"url": "https://acme.example.com/in"}),
    )
    .await;
    assert_eq!(own.status, StatusCode::CREATED);
    assert_eq!(
        own.json()["tenant_id"],
        acme.to_string(),
        "filtered to its tenant"
    );
    let id = own.json()["id"].as_str().expect("id").to_owned();

    let foreign = create(
        &app,
        &acme_key,
        json!({"url": "https://acme.example.com/in", "tenant_id": globex}),
    )
    .await;
    let unknown = create(
        &app,
        &acme_key,
        json!({"url": "https://acme.example.com/in", "tenant_id": Uuid::new_v4()}),
    )
    .await;
    assert_eq!(foreign.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        foreign.json()["errors"],
        unknown.json()["errors"],
        "foreign reads as unknown"
    );

    let platform = create(
        &app,
        &admin,
        json!({"url": "https://platform.example.com/in"}),
    )
    .await;
    let platform_id = platform.json()["id"].as_str().expect("id").to_owned();
    for path in [
        format!("/v1/webhooks/{id}"),
        format!("/v1/webhooks/{platform_id}"),
    ] {
        let read = app
            .request(Method::GET, &path)
            .bearer(&globex_key)
            .send()
            .await;
        assert_eq!(read.status, StatusCode::NOT_FOUND, "{path}");
        let deleted = app
            .request(Method::DELETE, &path)
            .bearer(&globex_key)
            .send()
            .await;
        assert_eq!(deleted.status, StatusCode::NOT_FOUND, "{path}");
        let rotated = app
            .request(Method::POST, &format!("{path}/rotate-secret"))
            .bearer(&globex_key)
            .send()
            .await;
        assert_eq!(rotated.status, StatusCode::NOT_FOUND, "{path}");
    }
    let listed = app
        .request(Method::GET, "/v1/webhooks")
        .bearer(&globex_key)
        .send()
        .await;
    assert_eq!(listed.json()["items"], json!([]));
    let listed = app
        .request(Method::GET, "/v1/webhooks")
        .bearer(&acme_key)
        .send()
        .await;
    assert_eq!(listed.json()["items"].as_array().map(Vec::len), Some(1));
    let all = app
        .request(Method::GET, "/v1/webhooks")
        .bearer(&admin)
        .send()
        .await;
    assert_eq!(all.json()["items"].as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn managing_webhooks_needs_the_webhooks_manage_scope() {
    let app = TestApp::new().await;
    let (_, reader) = app
        .cheap_key(None, &[Scope::EventsRead, Scope::TenantsWrite])
        .await;
    let refused = create(
        &app,
        &reader,
        json!({"url": "https://hooks.example.com/in"}),
    )
    .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let listed = app
        .request(Method::GET, "/v1/webhooks")
        .bearer(&reader)
        .send()
        .await;
    assert_eq!(listed.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn every_invalid_field_is_reported_at_once() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    let refused = create(
        &app,
        &admin,
        json!({
            "url": "https://user:pw@hooks.example.com/in",
            "event_types": ["tenant.created", "tenant.nope", "Tenant.*"],
            "description": "x".repeat(501),
        }),
    )
    .await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    let mut pointers = refused.pointers();
    pointers.sort();
    assert_eq!(pointers, ["/description", "/event_types/1", "/url"]);
    let unknown_field = create(
        &app,
        &admin,
        json!({"url": "https://a.example", "secret": "x"}),
    )
    .await;
    assert_eq!(unknown_field.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(unknown_field.pointers(), ["/secret"]);
}

#[tokio::test]
async fn plain_http_endpoints_are_refused_outside_development() {
    let mut settings = testkit::settings();
    settings.outbound = egress::Egress::new(egress::Policy::STRICT).expect("a client");
    let app = TestApp::with_settings(settings).await;
    let admin = app.admin_key().await;
    let refused = create(&app, &admin, json!({"url": "http://hooks.example.com/in"})).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(refused.pointers(), ["/url"]);
    let patched_to_http = {
        let created = create(&app, &admin, json!({"url": "https://hooks.example.com/in"})).await;
        let id = created.json()["id"].as_str().expect("id").to_owned();
        app.request(Method::PATCH, &format!("/v1/webhooks/{id}"))
            .bearer(&admin)
            .json(&json!({"url": "http://hooks.example.com/in"}))
            .send()
            .await
    };
    assert_eq!(patched_to_http.status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn a_patch_changes_filters_and_a_stale_if_match_is_refused() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    let created = create(&app, &admin, json!({"url": "https://hooks.example.com/in"})).await;
    let id = created.json()["id"].as_str().expect("id").to_owned();
    let etag = created.header("etag").expect("an etag").to_owned();
    let patched = app
        .request(Method::PATCH, &format!("/v1/webhooks/{id}"))
        .bearer(&admin)
        .header("if-match", &etag)
        .json(&json!({"event_types": ["tenant.*"], "enabled": false}))
        .send()
        .await;
    assert_eq!(patched.status, StatusCode::OK);
    assert_eq!(patched.json()["event_types"], json!(["tenant.*"]));
    assert_eq!(patched.json()["enabled"], false);
    assert_eq!(patched.json()["disabled_reason"], "disabled by its owner");
    let stale = app
        .request(Method::PATCH, &format!("/v1/webhooks/{id}"))
        .bearer(&admin)
        .header("if-match", &etag)
        .json(&json!({"event_types": null}))
        .send()
        .await;
    assert_eq!(stale.status, StatusCode::PRECONDITION_FAILED);
}

#[tokio::test]
async fn deliveries_show_their_attempts_and_can_be_retried_replayed_and_tested() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    let receiver = Receiver::start().await;
    receiver.answer(500);
    let created = create(
        &app,
        &admin,
        json!({"url": receiver.url(), "event_types": ["tenant.*"]}),
    )
    .await;
    let id = created.json()["id"].as_str().expect("id").to_owned();
    let event = append(&app, EventType::TenantCreated, None).await;
    delivered(&app, &receiver, 1).await;

    let history = app
        .request(Method::GET, &format!("/v1/webhooks/{id}/deliveries"))
        .bearer(&admin)
        .send()
        .await;
    assert_eq!(history.status, StatusCode::OK);
    let delivery = &history.json()["items"][0];
    assert_eq!(delivery["event_id"], event.to_string());
    assert_eq!(delivery["status"], "pending", "waiting for its retry");
    assert_eq!(delivery["attempts"][0]["status_code"], 500);
    assert_eq!(delivery["attempts"][0]["outcome"], "failed");
    let delivery_id = delivery["id"].as_str().expect("id").to_owned();

    receiver.answer(200);
    let retried = app
        .request(
            Method::POST,
            &format!("/v1/webhooks/{id}/deliveries/{delivery_id}/retry"),
        )
        .bearer(&admin)
        .send()
        .await;
    assert_eq!(retried.status, StatusCode::ACCEPTED);
    delivered(&app, &receiver, 2).await;

    let replayed = app
        .request(Method::POST, &format!("/v1/webhooks/{id}/replay"))
        .bearer(&admin)
        .json(&json!({"since": Utc::now() - chrono::TimeDelta::hours(1)}))
        .send()
        .await;
    assert_eq!(replayed.status, StatusCode::ACCEPTED);
    assert_eq!(replayed.json()["queued"], 1);
    delivered(&app, &receiver, 3).await;

    let tested = app
        .request(Method::POST, &format!("/v1/webhooks/{id}/test"))
        .bearer(&admin)
        .send()
        .await;
    assert_eq!(tested.status, StatusCode::ACCEPTED);
    let received = delivered(&app, &receiver, 4).await;
    assert_eq!(received[3].json()["type"], "webhook.test");
    let ids: Vec<&str> = received[..3].iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        ids,
        vec![event.to_string(); 3],
        "the same webhook-id every time"
    );

    let future = app
        .request(Method::POST, &format!("/v1/webhooks/{id}/replay"))
        .bearer(&admin)
        .json(&json!({"since": Utc::now() + chrono::TimeDelta::hours(1)}))
        .send()
        .await;
    assert_eq!(future.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(future.pointers(), ["/since"]);
}

#[tokio::test]
async fn after_a_rotation_both_secrets_sign_for_a_day() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    let receiver = Receiver::start().await;
    let created = create(&app, &admin, json!({"url": receiver.url()})).await;
    let old_secret = created.json()["secret"]
        .as_str()
        .expect("secret")
        .to_owned();
    let id = created.json()["id"].as_str().expect("id").to_owned();
    let rotated = app
        .request(Method::POST, &format!("/v1/webhooks/{id}/rotate-secret"))
        .bearer(&admin)
        .send()
        .await;
    assert_eq!(rotated.status, StatusCode::OK);
    let new_secret = rotated.json()["secret"]
        .as_str()
        .expect("secret")
        .to_owned();
    assert_ne!(new_secret, old_secret);
    assert!(rotated.json()["previous_secret_expires_at"].is_string());

    append(&app, EventType::TenantUpdated, None).await;
    let received = delivered(&app, &receiver, 1).await;
    assert!(received[0].signed_by(&new_secret));
    assert!(received[0].signed_by(&old_secret));
    assert_eq!(received[0].signature.split(' ').count(), 2);
}

#[tokio::test]
async fn outside_development_a_delivery_to_a_private_address_is_refused_when_connecting() {
    let mut settings = testkit::settings();
    settings.outbound = egress::Egress::new(egress::Policy::STRICT).expect("a client");
    let app = TestApp::with_settings(settings).await;
    let admin = app.admin_key().await;
    let receiver = Receiver::start().await;
    // A host name that resolves to loopback passes the URL rules; the address it resolves
    // to is refused when the runner connects.
    let url = receiver
        .url()
        .replace("http://127.0.0.1", "https://localhost");
    let created = create(
        &app,
        &admin,
        json!({"url": url, "event_types": ["tenant.*"]}),
    )
    .await;
    assert_eq!(
        created.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&created.body)
    );
    let id = created.json()["id"].as_str().expect("id").to_owned();
    let literal = create(
        &app,
        &admin,
        json!({"url": "https://169.254.169.254/latest"}),
    )
    .await;
    assert_eq!(
        literal.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "a metadata address literal"
    );
    append(&app, EventType::TenantCreated, None).await;
    let runner = runner(&app);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let attempt = loop {
        runner.run_once().await.expect("a pass");
        let history = app
            .request(Method::GET, &format!("/v1/webhooks/{id}/deliveries"))
            .bearer(&admin)
            .send()
            .await;
        let attempt = history.json()["items"][0]["attempts"][0].clone();
        if !attempt.is_null() {
            break attempt;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no attempt was made"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(attempt["outcome"], "failed");
    assert_eq!(attempt["error"], "no connection could be made");
    assert!(
        receiver.received().is_empty(),
        "nothing reached the receiver"
    );
}

#[tokio::test]
async fn a_key_without_events_read_cannot_make_an_endpoint_receive_events() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    let acme = app.tenant("acme").await;
    let (_, manage_only) = app.cheap_key(Some(acme), &[Scope::WebhooksManage]).await;
    let refused = create(
        &app,
        &manage_only,
        json!({"url": "https://acme.example.com/in"}),
    )
    .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(
        refused.json()["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("events:read")
    );

    let made = create(
        &app,
        &admin,
        json!({"url": "https://acme.example.com/in", "tenant_id": acme}),
    )
    .await;
    let id = made.json()["id"].as_str().expect("id").to_owned();
    let replay = app
        .request(Method::POST, &format!("/v1/webhooks/{id}/replay"))
        .bearer(&manage_only)
        .json(&json!({"since": "2000-01-01T00:00:00Z"}))
        .send()
        .await;
    assert_eq!(
        replay.status,
        StatusCode::FORBIDDEN,
        "replaying sends events"
    );
    let redirected = app
        .request(Method::PATCH, &format!("/v1/webhooks/{id}"))
        .bearer(&manage_only)
        .json(&json!({"url": "https://attacker.example.com/in"}))
        .send()
        .await;
    assert_eq!(
        redirected.status,
        StatusCode::FORBIDDEN,
        "pointing it elsewhere sends events"
    );
    let listed = app
        .request(Method::GET, "/v1/webhooks")
        .bearer(&manage_only)
        .send()
        .await;
    assert_eq!(
        listed.status,
        StatusCode::OK,
        "managing without delivering is allowed"
    );
}

#[tokio::test]
async fn an_empty_filter_list_is_refused_rather_than_read_as_everything() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    let refused = create(
        &app,
        &admin,
        json!({"url": "https://hooks.example.com/in", "event_types": []}),
    )
    .await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(refused.pointers(), ["/event_types"]);
}

#[tokio::test]
async fn a_tenant_has_at_most_twenty_endpoints() {
    let app = TestApp::new().await;
    let acme = app.tenant("acme").await;
    let (_, key) = app
        .cheap_key(Some(acme), &[Scope::WebhooksManage, Scope::EventsRead])
        .await;
    for n in 0..domain::webhook::MAX_ENDPOINTS_PER_TENANT {
        let made = create(
            &app,
            &key,
            json!({"url": format!("https://acme.example.com/{n}")}),
        )
        .await;
        assert_eq!(made.status, StatusCode::CREATED, "endpoint {n}");
    }
    let one_more = create(&app, &key, json!({"url": "https://acme.example.com/more"})).await;
    assert_eq!(one_more.status, StatusCode::CONFLICT);
    let admin = app.admin_key().await;
    let platform = create(
        &app,
        &admin,
        json!({"url": "https://platform.example.com/in"}),
    )
    .await;
    assert_eq!(
        platform.status,
        StatusCode::CREATED,
        "other owners are not affected"
    );
}
