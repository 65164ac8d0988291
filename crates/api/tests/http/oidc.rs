//! OIDC bearer tokens from a real issuer on loopback: who they make, and what is refused.

use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};
use testkit::TestApp;
use testkit::oidc::TestIssuer;

async fn setup() -> (TestApp, TestIssuer) {
    let issuer = TestIssuer::start().await;
    let app = TestApp::with_settings(api::Settings {
        oidc: Some(issuer.config()),
        ..testkit::settings()
    })
    .await;
    (app, issuer)
}

async fn me(app: &TestApp, token: &str) -> (StatusCode, Value) {
    let response = app
        .request(Method::GET, "/v1/me")
        .bearer(token)
        .send()
        .await;
    (response.status, response.json())
}

#[tokio::test]
async fn the_admin_role_makes_a_platform_admin() {
    let (app, issuer) = setup().await;
    let token = issuer.token(
        json!({"sub": "alice", "realm_access": {"roles": ["offline_access", "platform-admin"]}}),
    );
    let (status, body) = me(&app, &token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"kind": "oidc_user", "tenant_id": null, "scopes": ["platform:admin"], "key_id": null, "subject": "alice", "product": null})
    );
}

#[tokio::test]
async fn rs256_tokens_are_accepted_too() {
    let (app, issuer) = setup().await;
    let token = issuer.rs256_token(json!({"realm_access": {"roles": ["platform-admin"]}}));
    let (status, body) = me(&app, &token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["scopes"], json!(["platform:admin"]));
}

#[tokio::test]
async fn a_tenant_id_claim_makes_a_tenant_principal_with_known_scopes() {
    let (app, issuer) = setup().await;
    let tenant = app.tenant("acme").await;
    for claim in [json!({"tenant": tenant}), json!({"tenant_id": tenant})] {
        let mut claims = json!({"scope": "openid email tenants:read audit:read"});
        if let (Some(all), Some(extra)) = (claims.as_object_mut(), claim.as_object()) {
            all.extend(extra.clone());
        }
        let token = issuer.token(claims);
        let (status, body) = me(&app, &token).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["tenant_id"], json!(tenant));
        assert_eq!(body["scopes"], json!(["tenants:read", "audit:read"]));
    }
}

#[tokio::test]
async fn an_archived_tenants_users_are_refused_until_it_is_restored() {
    let (app, issuer) = setup().await;
    let admin = app.admin_key().await;
    let tenant = app.tenant("acme").await;
    let user = issuer.token(json!({"sub": "jane", "tenant_id": tenant, "scope": "tenants:read"}));
    assert_eq!(me(&app, &user).await.0, StatusCode::OK);
    let move_to = |status: &'static str| {
        app.request(Method::POST, &format!("/v1/tenants/{tenant}/transitions"))
            .bearer(&admin)
            .json(&json!({"to": status, "reason": "test"}))
            .send()
    };
    assert_eq!(move_to("archived").await.status, StatusCode::OK);
    let (status, body) = me(&app, &user).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(body["detail"].to_string().contains("archived"), "{body}");
    assert_eq!(move_to("frozen").await.status, StatusCode::OK, "restored");
    assert_eq!(me(&app, &user).await.0, StatusCode::OK);
}

#[tokio::test]
async fn invalid_tokens_are_refused() {
    let (app, issuer) = setup().await;
    let acme = app.tenant("acme").await;
    let now = chrono::Utc::now().timestamp();
    let cases = [
        (
            "expired",
            issuer.token(json!({"tenant": acme, "exp": now - 120})),
        ),
        (
            "not yet valid",
            issuer.token(json!({"tenant": acme, "nbf": now + 600})),
        ),
        (
            "wrong audience",
            issuer.token(json!({"tenant": acme, "aud": "someone-else"})),
        ),
        (
            "wrong issuer",
            issuer.token(json!({"tenant": acme, "iss": "https://evil.example.com"})),
        ),
        (
            "unknown tenant",
            issuer.token(json!({"tenant": uuid::Uuid::new_v4()})),
        ),
        ("no role and no tenant", issuer.token(json!({}))),
        (
            "unknown key id",
            issuer.token_with_kid("rotated-away", json!({"tenant": acme})),
        ),
        (
            "not a JWT",
            "eyJhbGciOiJFUzI1NiJ9.bm90IGpzb24.c2ln".to_owned(),
        ),
    ];
    for (case, token) in cases {
        let (status, body) = me(&app, &token).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{case}: {body}");
    }
}

#[tokio::test]
async fn symmetric_algorithms_are_refused() {
    let (app, issuer) = setup().await;
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some("any".to_owned());
    let now = chrono::Utc::now().timestamp();
    let claims = json!({"iss": issuer.url, "aud": "tenant-registry", "exp": now + 60,
                        "realm_access": {"roles": ["platform-admin"]}});
    let token = jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(b"guessable"),
    )
    .expect("token");
    let (status, _) = me(&app, &token).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn bearer_tokens_are_refused_when_no_issuer_is_configured() {
    let app = TestApp::new().await;
    let issuer = TestIssuer::start().await;
    let token = issuer.token(json!({"realm_access": {"roles": ["platform-admin"]}}));
    let (status, body) = me(&app, &token).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        body["detail"]
            .as_str()
            .expect("detail")
            .contains("no OIDC issuer")
    );
}

#[tokio::test]
async fn tokens_without_a_subject_are_refused() {
    let (app, issuer) = setup().await;
    let tenant = app.tenant("acme").await;
    for claims in [
        json!({"sub": null, "realm_access": {"roles": ["platform-admin"]}}),
        json!({"sub": "", "realm_access": {"roles": ["platform-admin"]}}),
        json!({"sub": null, "tenant": tenant, "scope": "tenants:read"}),
    ] {
        let (status, body) = me(&app, &issuer.token(claims.clone())).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{claims}: {body}");
    }
}

async fn patch_tenant(app: &TestApp, key: &str, tenant: uuid::Uuid, body: Value) -> StatusCode {
    app.request(Method::PATCH, &format!("/v1/tenants/{tenant}"))
        .bearer(key)
        .json(&body)
        .send()
        .await
        .status
}

#[tokio::test]
async fn a_renamed_tenants_users_stay_its_own_and_its_former_slug_cannot_be_taken() {
    let (app, issuer) = setup().await;
    let acme = app.tenant("acme").await;
    let globex = app.tenant("globex").await;
    let writer = [domain::Scope::TenantsRead, domain::Scope::TenantsWrite];
    let (_, acme_key) = app.key(Some(acme), &writer).await;
    let (_, globex_key) = app.key(Some(globex), &writer).await;
    let user = issuer.token(json!({"sub": "jane", "tenant": acme, "scope": "tenants:read"}));

    assert_eq!(
        patch_tenant(&app, &acme_key, acme, json!({"slug": "acme-corp"})).await,
        StatusCode::OK
    );
    assert_eq!(
        patch_tenant(&app, &globex_key, globex, json!({"slug": "acme"})).await,
        StatusCode::CONFLICT,
        "a former slug stays its tenant's"
    );
    let (status, body) = me(&app, &user).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["tenant_id"],
        json!(acme),
        "still a user of the renamed tenant"
    );

    // A token naming its tenant by slug maps to nobody, so it cannot follow the slug.
    let by_slug = issuer.token(json!({"tenant": "acme", "scope": "tenants:read"}));
    assert_eq!(me(&app, &by_slug).await.0, StatusCode::UNAUTHORIZED);
    let by_current_slug = issuer.token(json!({"tenant": "globex", "scope": "tenants:read"}));
    assert_eq!(me(&app, &by_current_slug).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_mapped_keycloak_organization_makes_its_users_the_tenants() {
    let (app, issuer) = setup().await;
    let admin = app.admin_key().await;
    let acme = app.tenant("acme").await;
    let globex = app.tenant("globex").await;
    let org_id = "42c3e46f-8b1d-4a52-9a0e-6a1f0c2d7e11";
    assert_eq!(
        patch_tenant(&app, &admin, acme, json!({"oidc_organization": org_id})).await,
        StatusCode::OK
    );
    assert_eq!(
        patch_tenant(&app, &admin, globex, json!({"oidc_organization": "globex"})).await,
        StatusCode::OK
    );
    assert_eq!(
        patch_tenant(&app, &admin, globex, json!({"oidc_organization": org_id})).await,
        StatusCode::CONFLICT,
        "an organization belongs to one tenant"
    );

    let scoped = |organization: Value| {
        issuer.token(json!({"organization": organization, "scope": "tenants:read"}))
    };
    for (organization, tenant) in [
        (json!({"acme-alias": {"id": org_id}}), acme),
        (json!(["globex"]), globex),
        (json!({"globex": {"region": ["eu"]}}), globex),
    ] {
        let (status, body) = me(&app, &scoped(organization.clone())).await;
        assert_eq!(status, StatusCode::OK, "{organization}: {body}");
        assert_eq!(body["tenant_id"], json!(tenant), "{organization}");
    }
    for organization in [
        json!(["initech"]),
        json!(["globex", "initech"]),
        json!({"acme-alias": {"id": org_id}, "globex": {}}),
    ] {
        let (status, _) = me(&app, &scoped(organization.clone())).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{organization}");
    }
    let disagreeing = issuer.token(json!({"organization": ["globex"], "tenant_id": acme}));
    assert_eq!(me(&app, &disagreeing).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_token_expired_longer_ago_than_the_leeway_is_refused() {
    let (app, issuer) = setup().await;
    let admin = json!({"realm_access": {"roles": ["platform-admin"]}});
    let now = chrono::Utc::now().timestamp();
    let leeway = i64::try_from(auth::oidc::LEEWAY.as_secs()).expect("a few seconds");
    let mut skewed = admin.clone();
    skewed["exp"] = json!(now - 1);
    assert!(leeway >= 2, "a second of clock skew is tolerated");
    assert_eq!(me(&app, &issuer.token(skewed)).await.0, StatusCode::OK);
    let mut expired = admin;
    expired["exp"] = json!(now - 30);
    let (status, body) = me(&app, &issuer.token(expired)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
}

#[tokio::test]
async fn unknown_key_ids_cost_a_failing_issuer_one_fetch_at_a_time_with_backoff() {
    let (app, issuer) = setup().await;
    issuer.fail_discovery(true);
    let forged = issuer.token_with_kid(
        "rotated-away",
        json!({"realm_access": {"roles": ["platform-admin"]}}),
    );
    let started = Instant::now();
    let mut requests = 0;
    while started.elapsed() < Duration::from_millis(3_500) {
        let wave = futures::future::join_all((0..50).map(|_| me(&app, &forged))).await;
        for (status, body) in wave {
            assert!(
                [StatusCode::SERVICE_UNAVAILABLE, StatusCode::UNAUTHORIZED].contains(&status),
                "{status}: {body}"
            );
        }
        requests += 50;
        // Paces the waves; the backoff is measured by the issuer, not by this loop.
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let fetches = issuer.discovery_fetches();
    assert_eq!(issuer.most_concurrent_discovery_fetches(), 1);
    assert!(
        (2..=4).contains(&fetches.len()),
        "{} fetches for {requests} requests over 3.5 s",
        fetches.len()
    );
    let mut backoff = auth::oidc::FIRST_BACKOFF;
    for pair in fetches.windows(2) {
        let waited = pair[1].started.duration_since(pair[0].ended);
        assert!(
            waited >= backoff,
            "the issuer was asked again {waited:?} after a failure; the backoff was {backoff:?}"
        );
        backoff = (backoff * 2).min(auth::oidc::MAX_BACKOFF);
    }

    issuer.fail_discovery(false);
    let valid = issuer.token(json!({"realm_access": {"roles": ["platform-admin"]}}));
    let deadline = Instant::now() + backoff + Duration::from_secs(2);
    loop {
        let (status, body) = me(&app, &valid).await;
        if status == StatusCode::OK {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still refused after the backoff: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A server on loopback that counts the requests it receives and answers each with `{}`.
async fn counting_server() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let count = Arc::new(AtomicUsize::new(0));
    let counted = count.clone();
    let router = axum::Router::new().fallback(move || {
        counted.fetch_add(1, Ordering::SeqCst);
        async { "{}" }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let base = format!("http://{}", listener.local_addr().expect("an address"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (base, count)
}

#[tokio::test]
async fn the_issuers_key_set_is_fetched_without_following_a_redirect() {
    use axum::response::Redirect;
    use std::sync::atomic::Ordering;
    let (elsewhere, requests) = counting_server().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let base = format!("http://{}", listener.local_addr().expect("an address"));
    let discovery = json!({"issuer": base, "jwks_uri": format!("{base}/certs")});
    let router = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            axum::routing::get(move || async move { axum::Json(discovery) }),
        )
        .route(
            "/certs",
            axum::routing::get(move || async move {
                Redirect::temporary(&format!("{elsewhere}/certs"))
            }),
        );
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    // The test issuer only signs the token; the app asks the redirecting one for keys.
    let signer = TestIssuer::start().await;
    let app = TestApp::with_settings(api::Settings {
        oidc: Some(auth::OidcConfig {
            issuer: base.clone(),
            ..signer.config()
        }),
        ..testkit::settings()
    })
    .await;
    let token = signer.token(json!({"iss": base, "realm_access": {"roles": ["platform-admin"]}}));
    let (status, body) = me(&app, &token).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(
        requests.load(Ordering::SeqCst),
        0,
        "the redirect was not followed"
    );
}
