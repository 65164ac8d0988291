//! Domain claims proven by DNS TXT records (a DNS-over-HTTPS resolver on loopback stands in
//! for DNS) and home-realm discovery.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::Query;
use axum::http::{Method, StatusCode};
use serde_json::{Value, json};
use testkit::{TestApp, TestResponse};
use uuid::Uuid;

type Records = Arc<Mutex<HashMap<String, Vec<String>>>>;

/// A DoH server on loopback answering TXT queries from `records`.
async fn test_resolver() -> (String, Records, tokio::task::JoinHandle<()>) {
    let records: Records = Arc::default();
    let served = records.clone();
    let router = axum::Router::new().route(
        "/dns-query",
        axum::routing::get(move |Query(query): Query<HashMap<String, String>>| {
            let served = served.clone();
            async move {
                let name = query.get("name").cloned().unwrap_or_default();
                let answers: Vec<Value> = served
                    .lock()
                    .expect("records")
                    .get(&name)
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|text| json!({"name": name, "type": 16, "TTL": 60, "data": format!("\"{text}\"")}))
                    .collect();
                let status = if answers.is_empty() { 3 } else { 0 };
                axum::Json(json!({"Status": status, "Answer": answers}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let url = format!(
        "http://{}/dns-query",
        listener.local_addr().expect("address")
    );
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (url, records, server)
}

async fn app_with_resolver() -> (TestApp, Records, tokio::task::JoinHandle<()>) {
    let (url, records, server) = test_resolver().await;
    let app = TestApp::with_settings(api::Settings {
        dns: Arc::new(api::dns::DohResolver::new(&url).expect("resolver")),
        ..testkit::settings()
    })
    .await;
    (app, records, server)
}

async fn claim(app: &TestApp, key: &str, tenant: Uuid, domain: &str) -> TestResponse {
    app.request(Method::POST, &format!("/v1/tenants/{tenant}/domains"))
        .bearer(key)
        .json(&json!({"domain": domain}))
        .send()
        .await
}

async fn verify(app: &TestApp, key: &str, tenant: Uuid, claim: &Value) -> TestResponse {
    let id = claim["id"].as_str().unwrap_or_default();
    app.request(
        Method::POST,
        &format!("/v1/tenants/{tenant}/domains/{id}/verify"),
    )
    .bearer(key)
    .send()
    .await
}

fn publish(records: &Records, claim: &Value) {
    let name = claim["verification"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let value = claim["verification"]["value"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    records
        .lock()
        .expect("records")
        .entry(name)
        .or_default()
        .push(value);
}

async fn discover(app: &TestApp, key: &str, email: &str) -> TestResponse {
    app.request(Method::GET, &format!("/v1/sso/discover?email={email}"))
        .bearer(key)
        .send()
        .await
}

#[tokio::test]
async fn a_domain_is_verified_by_its_txt_record_and_then_discovered() {
    let (app, records, server) = app_with_resolver().await;
    let admin = app.admin_key().await;
    let tenant = app.tenant("acme").await;
    let idp = app
        .request(Method::POST, &format!("/v1/tenants/{tenant}/idps"))
        .bearer(&admin)
        .json(&json!({"kind": "oidc", "name": "Acme Okta", "issuer": "https://acme.okta.com", "client_id": "c"}))
        .send()
        .await
        .json();

    let claimed = claim(&app, &admin, tenant, "Acme.com").await;
    assert_eq!(
        claimed.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&claimed.body)
    );
    let claimed = claimed.json();
    assert_eq!(claimed["domain"], "acme.com");
    assert_eq!(claimed["verification"]["name"], "_tenant-registry.acme.com");
    assert_eq!(claimed["verified_at"], Value::Null);

    assert_eq!(
        discover(&app, &admin, "jane@acme.com").await.status,
        StatusCode::NOT_FOUND,
        "unverified"
    );
    let early = verify(&app, &admin, tenant, &claimed).await;
    assert_eq!(
        early.status,
        StatusCode::CONFLICT,
        "no record published yet"
    );

    publish(&records, &claimed);
    let verified = verify(&app, &admin, tenant, &claimed).await;
    assert_eq!(
        verified.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&verified.body)
    );
    assert!(verified.json()["verified_at"].is_string());

    let found = discover(&app, &admin, "Jane@ACME.com").await;
    assert_eq!(found.status, StatusCode::OK);
    assert_eq!(
        found.json(),
        json!({"tenant_id": tenant, "tenant_slug": "acme", "domain": "acme.com",
               "idp": {"id": idp["id"], "kind": "oidc", "name": "Acme Okta", "issuer": "https://acme.okta.com", "sso_url": null}})
    );
    assert_eq!(
        discover(&app, &admin, "joe@unknown.example").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        discover(&app, &admin, "not-an-email").await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    server.abort();
}

#[tokio::test]
async fn a_domain_is_verified_for_at_most_one_tenant() {
    let (app, records, server) = app_with_resolver().await;
    let admin = app.admin_key().await;
    let first = app.tenant("acme").await;
    let second = app.tenant("impostor").await;
    let first_claim = claim(&app, &admin, first, "acme.com").await.json();
    let second_claim = claim(&app, &admin, second, "acme.com").await.json();
    publish(&records, &first_claim);
    publish(&records, &second_claim);
    assert_eq!(
        verify(&app, &admin, first, &first_claim).await.status,
        StatusCode::OK
    );
    let loser = verify(&app, &admin, second, &second_claim).await;
    assert_eq!(loser.status, StatusCode::CONFLICT);
    let latecomer = app.tenant("latecomer").await;
    let late = claim(&app, &admin, latecomer, "acme.com").await.json();
    publish(&records, &late);
    assert_eq!(
        verify(&app, &admin, latecomer, &late).await.status,
        StatusCode::CONFLICT,
        "a verified domain is not verified again, even with its record published"
    );
    let again = claim(&app, &admin, first, "acme.com").await;
    assert_eq!(
        again.status,
        StatusCode::CONFLICT,
        "one claim per tenant and domain"
    );
    let invalid = claim(&app, &admin, first, "not a domain").await;
    assert_eq!(invalid.status, StatusCode::UNPROCESSABLE_ENTITY);
    server.abort();
}

#[tokio::test]
async fn discovery_needs_an_enabled_identity_provider() {
    let (app, records, server) = app_with_resolver().await;
    let admin = app.admin_key().await;
    let tenant = app.tenant("acme").await;
    let claimed = claim(&app, &admin, tenant, "acme.com").await.json();
    publish(&records, &claimed);
    verify(&app, &admin, tenant, &claimed).await;
    let none = discover(&app, &admin, "jane@acme.com").await;
    assert_eq!(none.status, StatusCode::NOT_FOUND);
    assert!(
        none.json()["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("identity provider")
    );
    server.abort();
}

#[tokio::test]
async fn claiming_a_domain_does_not_tell_a_competitor_another_tenant_verified_it() {
    let (app, records, server) = app_with_resolver().await;
    let admin = app.admin_key().await;
    let acme = app.tenant("acme").await;
    let acme_claim = claim(&app, &admin, acme, "acme.com").await.json();
    publish(&records, &acme_claim);
    assert_eq!(
        verify(&app, &admin, acme, &acme_claim).await.status,
        StatusCode::OK
    );

    let rival = app.tenant("rival").await;
    let (_, key) = app.key(Some(rival), &[domain::Scope::IdpWrite]).await;
    let verified_elsewhere = claim(&app, &key, rival, "acme.com").await;
    let unknown = claim(&app, &key, rival, "nobody-has-this.example").await;
    assert_eq!(verified_elsewhere.status, StatusCode::CREATED);
    assert_eq!(unknown.status, StatusCode::CREATED);
    let answers = [
        verify(&app, &key, rival, &verified_elsewhere.json()).await,
        verify(&app, &key, rival, &unknown.json()).await,
    ];
    for answer in &answers {
        assert_eq!(answer.status, StatusCode::CONFLICT);
        let text = String::from_utf8_lossy(&answer.body).to_lowercase();
        assert!(!text.contains("another tenant"), "{text}");
        assert!(text.contains("no txt record"), "{text}");
    }
    server.abort();
}
