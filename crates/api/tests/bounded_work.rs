//! Requests that try to make the server do unbounded work, or to learn about its network,
//! are refused cheaply: absurd path parameters, hostile SAML metadata, oversized outbound
//! documents, failing resolvers.

use std::sync::Arc;

use axum::http::{Method, StatusCode};
use serde_json::json;
use testkit::TestApp;

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
    let (app, admin, tenant) = app_with_tenant(testkit::settings()).await;
    let me = app
        .request(Method::GET, "/v1/me")
        .bearer(&admin)
        .send()
        .await;
    assert_eq!(me.status, StatusCode::OK, "the key is verified and cached");
    // From here on any request that asks the database fails: a 404 proves nobody asked.
    app.app.state.pool.close().await;
    let unknown = app
        .request(Method::GET, "/v1/tenants/by-slug/no-such-tenant")
        .bearer(&admin)
        .send()
        .await;
    assert!(unknown.status.is_server_error(), "{}", unknown.status);
    for path in [
        format!("/v1/tenants/by-slug/{}", huge(60_000)),
        "/v1/tenants/by-slug/Not_A_Slug".to_owned(),
        format!("/v1/tenants/{tenant}/projects/by-slug/{}", huge(60_000)),
        format!("/v1/tenants/{tenant}/entitlements/{}/feature", huge(60_000)),
        format!("/v1/tenants/{tenant}/entitlements/billing/{}", huge(60_000)),
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
    let body = String::from_utf8_lossy(&response.body).into_owned();
    assert!(body.contains("no connection could be made"), "{body}");
    assert!(
        !body.contains("refused") && !body.contains("os error"),
        "{body}"
    );
}

#[tokio::test]
async fn a_failing_dns_resolver_is_not_named_to_the_caller() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a port");
    let resolver_url = format!("http://{closed}/internal-dns-query");
    let (app, admin, tenant) = app_with_tenant(api::Settings {
        dns: Arc::new(api::dns::DohResolver::new(&resolver_url).expect("resolver")),
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
    assert_eq!(response.status, StatusCode::SERVICE_UNAVAILABLE);
    let body = String::from_utf8_lossy(&response.body).into_owned();
    assert!(body.contains("try again later"), "{body}");
    for secret in [resolver_url.as_str(), "internal-dns-query", "127.0.0.1"] {
        assert!(!body.contains(secret), "{secret} leaked: {body}");
    }
}
