//! Domain claims proven by DNS TXT records, looked up by the shipped resolver (hickory)
//! from a DNS server on loopback (`testkit::dns`: UDP, TCP, and DNS over HTTPS with a
//! certificate the test's resolver trusts), and home-realm discovery.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};
use testkit::dns::{Behaviour, TestDns};
use testkit::{TestApp, TestResponse};
use uuid::Uuid;

/// The app, its TXT lookups going to a DNS server on loopback over UDP and TCP.
async fn app_with_dns_server() -> (TestApp, TestDns) {
    let server = TestDns::start().await;
    let resolver = api::dns::HickoryResolver::plain(server.address())
        .expect("a resolver")
        .with_deadline(Duration::from_secs(2));
    let app = TestApp::with_settings(api::Settings {
        dns: Arc::new(resolver),
        ..testkit::settings()
    })
    .await;
    (app, server)
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

fn publish(server: &TestDns, claim: &Value) {
    server.publish(
        claim["verification"]["name"].as_str().unwrap_or_default(),
        claim["verification"]["value"].as_str().unwrap_or_default(),
    );
}

async fn discover(app: &TestApp, key: &str, email: &str) -> TestResponse {
    app.request(Method::GET, &format!("/v1/sso/discover?email={email}"))
        .bearer(key)
        .send()
        .await
}

#[tokio::test]
async fn a_domain_is_verified_by_its_txt_record_and_then_discovered() {
    let (app, server) = app_with_dns_server().await;
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

    publish(&server, &claimed);
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
}

#[tokio::test]
async fn a_domain_is_verified_for_at_most_one_tenant() {
    let (app, server) = app_with_dns_server().await;
    let admin = app.admin_key().await;
    let first = app.tenant("acme").await;
    let second = app.tenant("impostor").await;
    let first_claim = claim(&app, &admin, first, "acme.com").await.json();
    let second_claim = claim(&app, &admin, second, "acme.com").await.json();
    publish(&server, &first_claim);
    publish(&server, &second_claim);
    assert_eq!(
        verify(&app, &admin, first, &first_claim).await.status,
        StatusCode::OK
    );
    let loser = verify(&app, &admin, second, &second_claim).await;
    assert_eq!(loser.status, StatusCode::CONFLICT);
    let latecomer = app.tenant("latecomer").await;
    let late = claim(&app, &admin, latecomer, "acme.com").await.json();
    publish(&server, &late);
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
}

#[tokio::test]
async fn discovery_needs_an_enabled_identity_provider() {
    let (app, server) = app_with_dns_server().await;
    let admin = app.admin_key().await;
    let tenant = app.tenant("acme").await;
    let claimed = claim(&app, &admin, tenant, "acme.com").await.json();
    publish(&server, &claimed);
    verify(&app, &admin, tenant, &claimed).await;
    let none = discover(&app, &admin, "jane@acme.com").await;
    assert_eq!(none.status, StatusCode::NOT_FOUND);
    assert!(
        none.json()["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("identity provider")
    );
}

#[tokio::test]
async fn claiming_a_domain_does_not_tell_a_competitor_another_tenant_verified_it() {
    let (app, server) = app_with_dns_server().await;
    let admin = app.admin_key().await;
    let acme = app.tenant("acme").await;
    let acme_claim = claim(&app, &admin, acme, "acme.com").await.json();
    publish(&server, &acme_claim);
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
}

#[tokio::test]
async fn a_txt_record_served_by_a_dns_server_verifies_the_domain() {
    let (app, server) = app_with_dns_server().await;
    let admin = app.admin_key().await;
    let tenant = app.tenant("acme").await;
    let claimed = claim(&app, &admin, tenant, "acme.com").await.json();
    publish(&server, &claimed);
    let verified = verify(&app, &admin, tenant, &claimed).await;
    assert_eq!(
        verified.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&verified.body)
    );
    assert!(verified.json()["verified_at"].is_string());
    let (udp, _) = server.queries();
    assert!(udp >= 1, "the DNS server was asked over UDP");
}

#[tokio::test]
async fn no_such_name_or_another_record_answers_409_and_a_published_record_counts_at_once() {
    let (app, server) = app_with_dns_server().await;
    let admin = app.admin_key().await;
    let tenant = app.tenant("acme").await;
    let claimed = claim(&app, &admin, tenant, "acme.com").await.json();
    let name = claimed["verification"]["name"].as_str().unwrap_or_default();

    let nxdomain = verify(&app, &admin, tenant, &claimed).await;
    server.publish(name, "v=spf1 -all");
    let other_record = verify(&app, &admin, tenant, &claimed).await;
    for (case, answer) in [("no such name", nxdomain), ("another record", other_record)] {
        assert_eq!(answer.status, StatusCode::CONFLICT, "{case}");
        let detail = answer.json()["detail"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(detail.contains("no TXT record"), "{case}: {detail}");
        assert!(detail.contains("yet"), "{case}: {detail}");
    }

    // Neither answer was cached: the record counts as soon as it is published.
    publish(&server, &claimed);
    assert_eq!(
        verify(&app, &admin, tenant, &claimed).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_txt_answer_too_long_for_udp_is_read_over_tcp() {
    let (app, server) = app_with_dns_server().await;
    let admin = app.admin_key().await;
    let tenant = app.tenant("acme").await;
    let claimed = claim(&app, &admin, tenant, "acme.com").await.json();
    let name = claimed["verification"]["name"].as_str().unwrap_or_default();
    // 700 bytes, in three strings of at most 255: the UDP answer is truncated.
    server.publish(name, &"k".repeat(700));
    publish(&server, &claimed);
    let verified = verify(&app, &admin, tenant, &claimed).await;
    assert_eq!(
        verified.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&verified.body)
    );
    let (udp, tcp) = server.queries();
    assert!(
        udp >= 1 && tcp >= 1,
        "asked over UDP {udp}, TCP {tcp} times"
    );
}

#[tokio::test]
async fn a_dns_server_that_fails_answers_503_until_it_answers_again() {
    let (app, server) = app_with_dns_server().await;
    let admin = app.admin_key().await;
    let tenant = app.tenant("acme").await;
    let claimed = claim(&app, &admin, tenant, "acme.com").await.json();
    publish(&server, &claimed);
    server.behave(Behaviour::ServFail);
    let failed = verify(&app, &admin, tenant, &claimed).await;
    assert_eq!(failed.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        String::from_utf8_lossy(&failed.body).contains("try again later"),
        "{}",
        String::from_utf8_lossy(&failed.body)
    );
    server.behave(Behaviour::Answer);
    assert_eq!(
        verify(&app, &admin, tenant, &claimed).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_txt_record_served_over_dns_over_https_verifies_the_domain_and_only_https_is_asked() {
    let mut server = TestDns::start().await;
    let endpoint = server.serve_https().await;
    let servers = endpoint
        .url()
        .as_str()
        .parse::<api::dns::DnsServers>()
        .expect("a DNS_RESOLVER setting");
    assert!(matches!(servers, api::dns::DnsServers::Https(_)));
    let resolver = api::dns::HickoryResolver::https_with_tls(endpoint.url(), endpoint.client_tls())
        .await
        .expect("a resolver")
        .with_deadline(Duration::from_secs(5));
    let app = TestApp::with_settings(api::Settings {
        dns: Arc::new(resolver),
        ..testkit::settings()
    })
    .await;
    let admin = app.admin_key().await;
    let tenant = app.tenant("acme").await;
    let claimed = claim(&app, &admin, tenant, "acme.com").await.json();
    let before = verify(&app, &admin, tenant, &claimed).await;
    assert_eq!(
        before.status,
        StatusCode::CONFLICT,
        "no record published yet"
    );
    publish(&server, &claimed);
    let verified = verify(&app, &admin, tenant, &claimed).await;
    assert_eq!(
        verified.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&verified.body)
    );
    assert!(server.https_queries() >= 2, "asked over DNS over HTTPS");
    assert_eq!(server.queries(), (0, 0), "never over plain DNS");
}

#[tokio::test]
async fn a_dns_over_https_endpoint_whose_certificate_is_not_trusted_is_never_believed() {
    let mut server = TestDns::start().await;
    let endpoint = server.serve_https().await;
    // The shipped roots (webpki) do not include the endpoint's own certificate.
    let resolver = api::dns::HickoryResolver::https(endpoint.url())
        .await
        .expect("a resolver")
        .with_deadline(Duration::from_secs(5));
    let app = TestApp::with_settings(api::Settings {
        dns: Arc::new(resolver),
        ..testkit::settings()
    })
    .await;
    let admin = app.admin_key().await;
    let tenant = app.tenant("acme").await;
    let claimed = claim(&app, &admin, tenant, "acme.com").await.json();
    publish(&server, &claimed);
    let refused = verify(&app, &admin, tenant, &claimed).await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        server.https_queries(),
        0,
        "no query crossed an untrusted TLS session"
    );
}
