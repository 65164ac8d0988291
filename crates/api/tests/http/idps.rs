//! Enterprise SSO configuration: OIDC secrets encrypted and never shown, SAML metadata
//! parsed safely.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};
use testkit::oidc::TestIssuer;
use testkit::{TestApp, TestResponse};
use uuid::Uuid;

const CERT: &str = include_str!("../../../domain/fixtures/idp-signing-cert.b64");

fn metadata(with_certificate: bool) -> String {
    let key = if with_certificate {
        format!(
            r#"<md:KeyDescriptor use="signing"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{CERT}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>"#
        )
    } else {
        String::new()
    };
    format!(
        r#"<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" xmlns:ds="http://www.w3.org/2000/09/xmldsig#" entityID="https://idp.acme.com/saml"><md:IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">{key}<md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="https://idp.acme.com/sso"/></md:IDPSSODescriptor></md:EntityDescriptor>"#
    )
}

async fn create(app: &TestApp, key: &str, tenant: Uuid, query: &str, body: Value) -> TestResponse {
    app.request(Method::POST, &format!("/v1/tenants/{tenant}/idps{query}"))
        .bearer(key)
        .json(&body)
        .send()
        .await
}

#[tokio::test]
async fn an_oidc_secret_is_encrypted_in_the_table_and_never_returned() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    let tenant = app.tenant("acme").await;
    let secret = "s3cr3t-client-value";
    let created = create(
        &app,
        &admin,
        tenant,
        "",
        json!({"kind": "oidc", "name": "Acme Okta", "issuer": "https://acme.okta.com", "client_id": "registry", "client_secret": secret}),
    )
    .await;
    assert_eq!(
        created.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&created.body)
    );
    let body = created.json();
    assert_eq!(body["client_secret_set"], true);
    assert_eq!(body["scopes"], json!(["openid", "email", "profile"]));
    assert!(!String::from_utf8_lossy(&created.body).contains(secret));
    let listed = app
        .request(Method::GET, &format!("/v1/tenants/{tenant}/idps"))
        .bearer(&admin)
        .send()
        .await;
    assert!(!String::from_utf8_lossy(&listed.body).contains(secret));
    let row: String = sqlx::query_scalar("SELECT row_to_json(i)::text FROM tenant_idp_config i")
        .fetch_one(app.db.pool())
        .await
        .expect("row");
    assert!(!row.contains(secret), "the secret is stored encrypted");
    let cleared = app
        .request(
            Method::PATCH,
            &format!(
                "/v1/tenants/{tenant}/idps/{}",
                body["id"].as_str().unwrap_or_default()
            ),
        )
        .bearer(&admin)
        .json(&json!({"client_secret": null, "enabled": false}))
        .send()
        .await
        .json();
    assert_eq!(
        (
            cleared["client_secret_set"].clone(),
            cleared["enabled"].clone()
        ),
        (json!(false), json!(false))
    );
}

#[tokio::test]
async fn oidc_settings_are_validated_and_verify_checks_the_discovery_document() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    let tenant = app.tenant("acme").await;
    let invalid = create(
        &app,
        &admin,
        tenant,
        "",
        json!({"kind": "oidc", "name": "X", "issuer": "https://admin:pw@sso.acme.com", "metadata_xml": "<x/>"}),
    )
    .await;
    assert_eq!(invalid.status, StatusCode::UNPROCESSABLE_ENTITY);
    let mut pointers = invalid.pointers();
    pointers.sort();
    assert_eq!(pointers, vec!["/client_id", "/issuer", "/metadata_xml"]);

    let issuer = TestIssuer::start().await;
    let verified = create(
        &app,
        &admin,
        tenant,
        "?verify=true",
        json!({"kind": "oidc", "name": "Keycloak", "issuer": issuer.url, "client_id": "c"}),
    )
    .await;
    assert_eq!(
        verified.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&verified.body)
    );
    let wrong = format!("{}/other-realm", issuer.url);
    let mismatch = create(
        &app,
        &admin,
        tenant,
        "?verify=true",
        json!({"kind": "oidc", "name": "K", "issuer": wrong, "client_id": "c"}),
    )
    .await;
    assert_eq!(mismatch.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(mismatch.json()["errors"][0]["pointer"], "/issuer");
}

#[tokio::test]
async fn saml_metadata_good_missing_certificate_and_not_xml() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    let tenant = app.tenant("acme").await;
    let good = create(
        &app,
        &admin,
        tenant,
        "",
        json!({"kind": "saml", "name": "ADFS", "metadata_xml": metadata(true)}),
    )
    .await;
    assert_eq!(
        good.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&good.body)
    );
    let body = good.json();
    assert_eq!(body["entity_id"], "https://idp.acme.com/saml");
    assert_eq!(body["sso_url"], "https://idp.acme.com/sso");
    assert!(
        body["certificate_expires_at"]
            .as_str()
            .unwrap_or_default()
            .starts_with("2036-11-20")
    );

    let no_cert = create(
        &app,
        &admin,
        tenant,
        "",
        json!({"kind": "saml", "name": "ADFS", "metadata_xml": metadata(false)}),
    )
    .await;
    assert_eq!(no_cert.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        no_cert.json()["errors"][0]["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("signing certificate")
    );

    let not_xml = create(
        &app,
        &admin,
        tenant,
        "",
        json!({"kind": "saml", "name": "ADFS", "metadata_xml": "{\"json\": true}"}),
    )
    .await;
    assert_eq!(not_xml.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        not_xml.json()["errors"][0]["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("XML")
    );
}

#[tokio::test]
async fn saml_metadata_with_an_external_entity_is_refused_and_nothing_is_fetched() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    let tenant = app.tenant("acme").await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let address = listener.local_addr().expect("address");
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = connections.clone();
    let watcher = tokio::spawn(async move {
        while listener.accept().await.is_ok() {
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });
    let xxe = format!(
        "<?xml version=\"1.0\"?><!DOCTYPE md [<!ENTITY leak SYSTEM \"http://{address}/steal\">]>{}",
        metadata(true).replace("https://idp.acme.com/sso", "&leak;")
    );
    let refused = create(
        &app,
        &admin,
        tenant,
        "",
        json!({"kind": "saml", "name": "Evil", "metadata_xml": xxe}),
    )
    .await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        refused.json()["errors"][0]["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("DTD")
    );
    tokio::task::yield_now().await;
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "the entity's URL was never fetched"
    );
    watcher.abort();
}

#[tokio::test]
async fn saml_metadata_can_come_from_a_url() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    let tenant = app.tenant("acme").await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let address = listener.local_addr().expect("address");
    let document = metadata(true);
    let server = tokio::spawn(async move {
        let router = axum::Router::new().route(
            "/metadata",
            axum::routing::get(move || async move { document }),
        );
        let _ = axum::serve(listener, router).await;
    });
    let created = create(
        &app,
        &admin,
        tenant,
        "",
        json!({"kind": "saml", "name": "ADFS", "metadata_url": format!("http://{address}/metadata")}),
    )
    .await;
    assert_eq!(
        created.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&created.body)
    );
    assert_eq!(created.json()["entity_id"], "https://idp.acme.com/saml");
    server.abort();
}
