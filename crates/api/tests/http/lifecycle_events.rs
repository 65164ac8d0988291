//! Every change made through the API writes its event in the change's own transaction:
//! the types a tenant's life produces, each with its payload (never a secret or the contact
//! email), none for a change that was refused, and a REST change reaching a webhook receiver.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{Method, StatusCode};
use domain::event::{Event, Position};
use registry::domains::{Lookup, TxtResolver, challenge_name, challenge_value};
use serde_json::{Value, json};
use storage::events::{self, FeedFilter};
use testkit::receiver::Receiver;
use testkit::{TestApp, TestResponse};
use uuid::Uuid;
use webhooks::deliver::Delivered;
use webhooks::{Observer, Runner, RunnerConfig, SystemClock};

/// TXT records a test publishes.
#[derive(Debug, Default)]
struct Published(Mutex<HashMap<String, Vec<String>>>);

impl TxtResolver for Published {
    fn txt<'a>(&'a self, name: &'a str) -> Lookup<'a> {
        let records = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(name)
            .cloned()
            .unwrap_or_default();
        Box::pin(async move { Ok(records) })
    }
}

async fn call(
    app: &TestApp,
    key: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> TestResponse {
    let request = app.request(method, path).bearer(key);
    match body {
        Some(body) => request.json(&body).send().await,
        None => request.send().await,
    }
}

async fn ok(app: &TestApp, key: &str, method: Method, path: &str, body: Option<Value>) -> Value {
    let answer = call(app, key, method.clone(), path, body).await;
    assert!(
        answer.status.is_success(),
        "{method} {path}: {} {}",
        answer.status,
        String::from_utf8_lossy(&answer.body)
    );
    if answer.body.is_empty() {
        Value::Null
    } else {
        answer.json()
    }
}

/// Every event committed so far, waiting out transactions of other tests that hold the feed.
async fn all_events(app: &TestApp) -> Vec<Event> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut conn = app.db.pool().acquire().await.expect("a connection");
        let page = events::feed(&mut conn, &FeedFilter::default(), Position::START, 1000)
            .await
            .expect("the feed reads");
        if !page.held_back {
            return page.events.into_iter().map(|stored| stored.event).collect();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "events stayed held back"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn of_type<'a>(events: &'a [Event], event_type: &str) -> Vec<&'a Event> {
    events
        .iter()
        .filter(|event| event.event_type == event_type)
        .collect()
}

#[tokio::test]
async fn a_tenants_life_writes_every_event_type_with_its_payload() {
    let published = Arc::new(Published::default());
    let app = TestApp::with_settings(api::Settings {
        dns: published.clone(),
        ..testkit::settings()
    })
    .await;
    let admin = app.admin_key().await;
    let tenant = ok(
        &app,
        &admin,
        Method::POST,
        "/v1/tenants",
        Some(json!({"slug": "acme", "name": "Acme", "plan": "pro", "contact_email": "ceo@acme.example"})),
    )
    .await;
    let id = tenant["id"].as_str().expect("id").to_owned();
    let t = format!("/v1/tenants/{id}");
    ok(
        &app,
        &admin,
        Method::PATCH,
        &t,
        Some(
            json!({"name": "Acme Corp", "plan": "enterprise", "contact_email": "cfo@acme.example"}),
        ),
    )
    .await;
    ok(
        &app,
        &admin,
        Method::POST,
        &format!("{t}/transitions"),
        Some(json!({"to": "active", "reason": "paid"})),
    )
    .await;
    ok(
        &app,
        &admin,
        Method::PUT,
        "/v1/products/workbench",
        Some(json!({"name": "Workbench", "supports_projects": true})),
    )
    .await;
    ok(
        &app,
        &admin,
        Method::PUT,
        &format!("{t}/products/workbench"),
        Some(json!({"enabled": true})),
    )
    .await;
    ok(
        &app,
        &admin,
        Method::PUT,
        &format!("{t}/products/workbench"),
        Some(json!({"enabled": true, "config": {}})),
    )
    .await;
    let project = ok(
        &app,
        &admin,
        Method::POST,
        &format!("{t}/projects"),
        Some(json!({"slug": "web", "name": "Web"})),
    )
    .await;
    let p = format!("{t}/projects/{}", project["id"].as_str().expect("id"));
    ok(
        &app,
        &admin,
        Method::PATCH,
        &p,
        Some(json!({"name": "Web shop"})),
    )
    .await;
    ok(&app, &admin, Method::POST, &format!("{p}/archive"), None).await;
    ok(&app, &admin, Method::POST, &format!("{p}/restore"), None).await;
    let idp = ok(
        &app,
        &admin,
        Method::POST,
        &format!("{t}/idps"),
        Some(json!({"kind": "oidc", "name": "Okta", "issuer": "https://acme.okta.com", "client_id": "registry", "client_secret": "s3cret-value"})),
    )
    .await;
    let i = format!("{t}/idps/{}", idp["id"].as_str().expect("id"));
    ok(
        &app,
        &admin,
        Method::PATCH,
        &i,
        Some(json!({"enabled": false})),
    )
    .await;
    ok(&app, &admin, Method::DELETE, &i, None).await;
    let claimed = ok(
        &app,
        &admin,
        Method::POST,
        &format!("{t}/domains"),
        Some(json!({"domain": "acme.example"})),
    )
    .await;
    let d = format!("{t}/domains/{}", claimed["id"].as_str().expect("id"));
    let refused = call(&app, &admin, Method::POST, &format!("{d}/verify"), None).await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "no TXT record yet");
    let token = claimed["verification"]["value"]
        .as_str()
        .expect("challenge")
        .to_owned();
    published
        .0
        .lock()
        .expect("records")
        .insert(challenge_name("acme.example"), vec![token.clone()]);
    assert_eq!(
        token,
        challenge_value(token.trim_start_matches("tr-verify="))
    );
    ok(&app, &admin, Method::POST, &format!("{d}/verify"), None).await;
    ok(&app, &admin, Method::DELETE, &d, None).await;
    let key = ok(
        &app,
        &admin,
        Method::POST,
        "/v1/api-keys",
        Some(json!({"name": "ci", "tenant_id": id, "scopes": ["tenants:read"]})),
    )
    .await;
    let k = format!("/v1/api-keys/{}", key["id"].as_str().expect("key id"));
    let rotated = ok(&app, &admin, Method::POST, &format!("{k}/rotate"), None).await;
    ok(&app, &admin, Method::POST, &format!("{k}/revoke"), None).await;
    let key_secrets = [
        key["key"].as_str().expect("key").to_owned(),
        rotated["key"].as_str().expect("key").to_owned(),
    ];
    ok(
        &app,
        &admin,
        Method::DELETE,
        &format!("{t}/products/workbench"),
        None,
    )
    .await;
    ok(&app, &admin, Method::DELETE, &t, None).await;
    ok(
        &app,
        &admin,
        Method::POST,
        &format!("{t}/transitions"),
        Some(json!({"to": "frozen", "reason": "restored for a look"})),
    )
    .await;
    ok(
        &app,
        &admin,
        Method::POST,
        &format!("{t}/transitions"),
        Some(json!({"to": "archived", "reason": "done"})),
    )
    .await;
    ok(
        &app,
        &admin,
        Method::DELETE,
        &format!("{t}?purge=true"),
        None,
    )
    .await;

    let events = all_events(&app).await;
    for expected in [
        "tenant.created",
        "tenant.updated",
        "tenant.status_changed",
        "tenant.archived",
        "tenant.restored",
        "tenant.purged",
        "tenant.product.subscribed",
        "tenant.product.updated",
        "tenant.product.unsubscribed",
        "tenant.entitlements_changed",
        "project.created",
        "project.updated",
        "project.archived",
        "project.restored",
        "idp.created",
        "idp.updated",
        "idp.deleted",
        "domain.verified",
        "domain.verification_failed",
        "domain.removed",
        "api_key.created",
        "api_key.rotated",
        "api_key.revoked",
    ] {
        assert!(
            !of_type(&events, expected).is_empty(),
            "no {expected} among {:?}",
            events
                .iter()
                .map(|event| event.event_type.as_str())
                .collect::<Vec<_>>()
        );
    }
    // The first event is the test's own admin key, a platform-level one.
    assert_eq!(events[0].event_type, "api_key.created");
    assert_eq!(events[0].tenant_id, None);
    for event in &events[1..] {
        assert_eq!(
            event.tenant_id.map(|id| id.to_string()),
            Some(id.clone()),
            "{}",
            event.event_type
        );
    }
    let everything = serde_json::to_string(&events).expect("serialisable");
    // A key's secret is its last part (`tr_<env>_<prefix>_<secret>`).
    let key_secret_parts = key_secrets.iter().filter_map(|key| key.rsplit('_').next());
    for secret in [
        "ceo@acme.example",
        "cfo@acme.example",
        "s3cret-value",
        token.as_str(),
    ]
    .into_iter()
    .chain(key_secret_parts)
    {
        assert!(!everything.contains(secret), "an event carries {secret}");
    }

    let created = of_type(&events, "tenant.created")[0];
    assert_eq!(created.data["slug"], "acme");
    assert_eq!(created.data["plan"], "pro");
    let updated = of_type(&events, "tenant.updated")[0];
    let mut changed: Vec<&str> = updated.data["changed"]
        .as_array()
        .expect("changed")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    changed.sort_unstable();
    assert_eq!(changed, ["contact_email", "name", "plan"]);
    assert_eq!(
        updated.data["previous"],
        json!({"name": "Acme", "plan": "pro"})
    );
    assert_eq!(updated.data["tenant"]["name"], "Acme Corp");
    let moved = of_type(&events, "tenant.status_changed")[0];
    assert_eq!(
        (
            &moved.data["from"],
            &moved.data["to"],
            &moved.data["reason"]
        ),
        (&json!("trial"), &json!("active"), &json!("paid"))
    );
    let purged = of_type(&events, "tenant.purged")[0];
    assert_eq!(purged.data["slug"], "acme");
    assert_eq!(
        events.last().map(|event| event.event_type.as_str()),
        Some("tenant.purged")
    );
    let project_updated = of_type(&events, "project.updated")[0];
    assert_eq!(project_updated.data["changed"], json!(["name"]));
    assert_eq!(project_updated.data["name"], "Web shop");
    assert_eq!(
        of_type(&events, "idp.created")[0].data["client_id"],
        "registry"
    );
    assert_eq!(
        of_type(&events, "domain.verified")[0].data["domain"],
        "acme.example"
    );
}

#[tokio::test]
async fn a_refused_change_writes_no_event() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    ok(
        &app,
        &admin,
        Method::POST,
        "/v1/tenants",
        Some(json!({"slug": "acme", "name": "Acme", "plan": "pro"})),
    )
    .await;
    let before = all_events(&app).await.len();
    let taken = call(
        &app,
        &admin,
        Method::POST,
        "/v1/tenants",
        Some(json!({"slug": "acme", "name": "Again", "plan": "pro"})),
    )
    .await;
    assert_eq!(taken.status, StatusCode::CONFLICT);
    let id = app.tenant("globex").await;
    let illegal = call(
        &app,
        &admin,
        Method::POST,
        &format!("/v1/tenants/{id}/transitions"),
        Some(json!({"to": "trial", "reason": "x"})),
    )
    .await;
    assert!(illegal.status.is_client_error());
    assert_eq!(all_events(&app).await.len(), before);
}

struct Quiet;

impl Observer for Quiet {
    fn delivered(&self, _: &Delivered) {}
}

#[tokio::test]
async fn a_rest_change_reaches_a_webhook_receiver() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    let receiver = Receiver::start().await;
    ok(
        &app,
        &admin,
        Method::POST,
        "/v1/webhooks",
        Some(json!({"url": receiver.url(), "event_types": ["tenant.*"]})),
    )
    .await;
    let runner = Runner::new(
        app.db.pool().clone(),
        Arc::clone(&app.app.state.settings.keyring),
        app.app.state.settings.outbound.clone(),
        Arc::new(SystemClock),
        RunnerConfig::default(),
        Arc::new(Quiet),
    );
    let service = tokio::spawn(runner.run(std::future::pending()));
    let tenant = ok(
        &app,
        &admin,
        Method::POST,
        "/v1/tenants",
        Some(json!({"slug": "acme", "name": "Acme", "plan": "pro"})),
    )
    .await;
    let received = receiver.wait_for(1, Duration::from_secs(10)).await;
    service.abort();
    let body = received[0].json();
    assert_eq!(body["type"], "tenant.created");
    assert_eq!(body["data"]["data"]["id"], tenant["id"]);
    assert_eq!(
        received[0].id,
        body["data"]["id"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_default()
    );
    let _ = Uuid::parse_str(&received[0].id).expect("the webhook-id is the event id");
}
