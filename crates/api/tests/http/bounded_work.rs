//! Requests that try to make the server do unbounded work, or to learn about its network,
//! are refused cheaply: absurd path parameters, hostile SAML metadata, oversized outbound
//! documents, failing resolvers.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::http::{Method, StatusCode};
use serde_json::json;
use sqlx::Connection;
use testkit::TestApp;
use testkit::dns::{Behaviour, TestDns};

/// The service, a platform admin key and a tenant.
async fn app_with_tenant(settings: api::Settings) -> (TestApp, String, uuid::Uuid) {
    let app = TestApp::with_settings(settings).await;
    let admin = app.admin_key().await;
    let tenant = app.tenant("acme").await;
    (app, admin, tenant)
}

fn huge(length: usize) -> String {
    "a".repeat(length)
}

#[tokio::test]
async fn path_parameters_that_break_their_rule_are_not_found_without_a_lookup() {
    let (app, admin, tenant) = app_with_tenant(api::Settings {
        request_timeout: Duration::from_secs(2),
        ..testkit::settings()
    })
    .await;
    let me = app
        .request(Method::GET, "/v1/me")
        .bearer(&admin)
        .send()
        .await;
    assert_eq!(me.status, StatusCode::OK, "the key is verified and cached");
    // From here on a request that reads these tables waits for the lock until its time is
    // up (408): a 404 proves nobody asked.
    let mut locker = sqlx::PgConnection::connect(app.db.url())
        .await
        .expect("a connection of its own");
    sqlx::raw_sql(
        "BEGIN; LOCK TABLE tenants, tenant_slug_history, tenant_projects, products, tenant_products \
         IN ACCESS EXCLUSIVE MODE",
    )
    .execute(&mut locker)
    .await
    .expect("locks");
    let unknown = app
        .request(Method::GET, "/v1/tenants/by-slug/no-such-tenant")
        .bearer(&admin)
        .send()
        .await;
    assert_eq!(
        unknown.status,
        StatusCode::REQUEST_TIMEOUT,
        "a lookup waits"
    );
    for path in [
        format!("/v1/tenants/by-slug/{}", huge(7_000)),
        "/v1/tenants/by-slug/Not_A_Slug".to_owned(),
        format!("/v1/tenants/{tenant}/projects/by-slug/{}", huge(7_000)),
        format!("/v1/tenants/{tenant}/entitlements/{}/feature", huge(7_000)),
        format!("/v1/tenants/{tenant}/entitlements/billing/{}", huge(7_000)),
    ] {
        let response = app.request(Method::GET, &path).bearer(&admin).send().await;
        assert_eq!(response.status, StatusCode::NOT_FOUND, "{}", &path[..60]);
    }
}

fn hostile_metadata() -> String {
    let attributes: String = (0..60_000)
        .map(|index| format!(" a{index}=\"x\""))
        .collect();
    format!(
        r#"<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" entityID="https://idp.example.com"><md:IDPSSODescriptor{attributes}/></md:EntityDescriptor>"#
    )
}

#[tokio::test]
async fn saml_metadata_with_sixty_thousand_attributes_is_refused_as_invalid() {
    let (app, admin, tenant) = app_with_tenant(testkit::settings()).await;
    let response = app
        .request(Method::POST, &format!("/v1/tenants/{tenant}/idps"))
        .bearer(&admin)
        .json(&json!({"kind": "saml", "name": "ADFS", "metadata_xml": hostile_metadata()}))
        .send()
        .await;
    assert_eq!(response.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(response.pointers(), vec!["/metadata_xml"]);
    let detail = response.json()["errors"][0]["detail"].to_string();
    assert!(detail.contains("attributes"), "{detail}");
}

/// A server on loopback whose one document is `body`, sent in chunks with no length.
async fn serving(body: String) -> (String, tokio::task::JoinHandle<()>) {
    let router = axum::Router::new().route(
        "/metadata",
        axum::routing::get(move || {
            let body = body.clone();
            async move {
                let chunks = body
                    .into_bytes()
                    .chunks(64 * 1024)
                    .map(|chunk| Ok::<_, std::io::Error>(chunk.to_vec()))
                    .collect::<Vec<_>>();
                axum::body::Body::from_stream(futures::stream::iter(chunks))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let url = format!(
        "http://{}/metadata",
        listener.local_addr().expect("address")
    );
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (url, server)
}

#[tokio::test]
async fn metadata_served_past_one_mebibyte_without_a_length_is_refused() {
    let (url, server) = serving(format!("<x>{}</x>", " ".repeat(3 * 1024 * 1024))).await;
    let (app, admin, tenant) = app_with_tenant(testkit::settings()).await;
    let response = app
        .request(Method::POST, &format!("/v1/tenants/{tenant}/idps"))
        .bearer(&admin)
        .json(&json!({"kind": "saml", "name": "ADFS", "metadata_url": url}))
        .send()
        .await;
    assert_eq!(response.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(response.pointers(), vec!["/metadata_url"]);
    let detail = response.json()["errors"][0]["detail"].to_string();
    assert!(detail.contains("more than 1024 KiB"), "{detail}");
    server.abort();
}

#[tokio::test]
async fn a_failing_fetch_tells_the_caller_nothing_about_the_network() {
    let (app, admin, tenant) = app_with_tenant(testkit::settings()).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a port");
    let response = app
        .request(Method::POST, &format!("/v1/tenants/{tenant}/idps"))
        .bearer(&admin)
        .json(&json!({"kind": "saml", "name": "ADFS", "metadata_url": format!("http://{closed}/metadata")}))
        .send()
        .await;
    assert_eq!(response.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        response.json()["errors"][0]["detail"],
        "could not be fetched"
    );
    let body = String::from_utf8_lossy(&response.body).into_owned();
    assert!(
        !body.contains("refused") && !body.contains("os error"),
        "{body}"
    );
}

/// Settings whose outbound fetches follow production's policy: https only, public
/// addresses only.
fn production_outbound() -> api::Settings {
    api::Settings {
        outbound: egress::Egress::new(egress::Policy::STRICT).expect("an outbound client"),
        ..testkit::settings()
    }
}

/// A loopback port that accepts nothing: `connections` tells how many clients reached it.
fn watched_port() -> std::net::TcpListener {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    listener.set_nonblocking(true).expect("non-blocking");
    listener
}

fn connections(listener: &std::net::TcpListener) -> usize {
    std::iter::from_fn(|| listener.accept().ok()).count()
}

/// A loopback server answering every GET with SAML-looking text, counting the requests.
async fn counting_server() -> (u16, Arc<AtomicUsize>) {
    let requests = Arc::new(AtomicUsize::new(0));
    let counter = requests.clone();
    let router = axum::Router::new().fallback(move || {
        counter.fetch_add(1, Ordering::SeqCst);
        async { "<x/>" }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let port = listener.local_addr().expect("address").port();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (port, requests)
}

/// The problem detail a caller reads at `pointer` when creating an IdP from `body` fails.
async fn refused_idp(
    app: &TestApp,
    admin: &str,
    tenant: uuid::Uuid,
    query: &str,
    body: serde_json::Value,
    pointer: &str,
) -> String {
    let response = app
        .request(Method::POST, &format!("/v1/tenants/{tenant}/idps{query}"))
        .bearer(admin)
        .json(&body)
        .send()
        .await;
    assert_eq!(response.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let problem = response.json();
    problem["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .find(|error| error["pointer"] == pointer)
        .and_then(|error| error["detail"].as_str())
        .unwrap_or_else(|| panic!("no problem at {pointer}: {problem}"))
        .to_owned()
}

#[tokio::test]
async fn under_the_production_policy_a_loopback_port_reads_the_same_closed_open_or_serving() {
    let (app, admin, tenant) = app_with_tenant(production_outbound()).await;
    let open = watched_port();
    let (serving, requests) = counting_server().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a port")
        .port();
    let ports = [closed, open.local_addr().expect("address").port(), serving];
    for (template, expected) in [
        ("http://127.0.0.1:PORT/metadata", "must be an https URL"),
        (
            "https://127.0.0.1:PORT/metadata",
            "must point to a public address",
        ),
        (
            "https://[::ffff:127.0.0.1]:PORT/metadata",
            "must point to a public address",
        ),
        // A name is checked when it is resolved, just before connecting.
        ("https://localhost:PORT/metadata", "could not be fetched"),
    ] {
        for port in ports {
            let url = template.replace("PORT", &port.to_string());
            let saml = json!({"kind": "saml", "name": "ADFS", "metadata_url": url});
            let detail = refused_idp(&app, &admin, tenant, "", saml, "/metadata_url").await;
            assert_eq!(detail, expected, "{url}");
            let oidc = json!({"kind": "oidc", "name": "K", "issuer": url, "client_id": "c"});
            let detail = refused_idp(&app, &admin, tenant, "?verify=true", oidc, "/issuer").await;
            assert_eq!(detail, expected, "{url}");
        }
    }
    assert_eq!(connections(&open), 0, "nothing connected to the open port");
    assert_eq!(
        requests.load(Ordering::SeqCst),
        0,
        "the serving port was never asked"
    );
}

#[tokio::test]
async fn a_user_name_before_the_host_no_longer_passes_for_loopback() {
    let (serving, requests) = counting_server().await;
    // The old rule read this as loopback; the host is `localhost:<serving>`.
    let attack = format!("http://127.0.0.1:1@localhost:{serving}/metadata");
    for settings in [testkit::settings(), production_outbound()] {
        let (app, admin, tenant) = app_with_tenant(settings).await;
        for url in [attack.as_str(), "https://127.0.0.1:1@example.com/metadata"] {
            let saml = json!({"kind": "saml", "name": "ADFS", "metadata_url": url});
            let detail = refused_idp(&app, &admin, tenant, "", saml, "/metadata_url").await;
            assert_eq!(detail, "must not carry a user name or password", "{url}");
        }
    }
    assert_eq!(requests.load(Ordering::SeqCst), 0, "nothing was fetched");
}

#[tokio::test]
async fn a_failing_dns_resolver_is_not_named_to_the_caller() {
    // Nothing listens on a port bound and released; the silent server reads queries and
    // never answers (a timeout); the failing one answers SERVFAIL.
    let closed = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|socket| socket.local_addr())
        .expect("a port");
    let silent = TestDns::start().await;
    silent.behave(Behaviour::Silent);
    let failing = TestDns::start().await;
    failing.behave(Behaviour::ServFail);
    for (case, address) in [
        ("unreachable", closed),
        ("silent", silent.address()),
        ("SERVFAIL", failing.address()),
    ] {
        let resolver = api::dns::HickoryResolver::plain(address)
            .expect("a resolver")
            .with_deadline(Duration::from_millis(800));
        let (app, admin, tenant) = app_with_tenant(api::Settings {
            dns: Arc::new(resolver),
            ..testkit::settings()
        })
        .await;
        let claimed = app
            .request(Method::POST, &format!("/v1/tenants/{tenant}/domains"))
            .bearer(&admin)
            .json(&json!({"domain": "acme.com"}))
            .send()
            .await
            .json();
        let id = claimed["id"].as_str().expect("a claim id");
        let response = app
            .request(
                Method::POST,
                &format!("/v1/tenants/{tenant}/domains/{id}/verify"),
            )
            .bearer(&admin)
            .send()
            .await;
        assert_eq!(response.status, StatusCode::SERVICE_UNAVAILABLE, "{case}");
        let body = String::from_utf8_lossy(&response.body).into_owned();
        assert!(body.contains("try again later"), "{case}: {body}");
        let port = format!(":{}", address.port());
        for secret in ["127.0.0.1", port.as_str(), "SERVFAIL", "timed out"] {
            assert!(!body.contains(secret), "{case}: {secret} leaked: {body}");
        }
    }
}
