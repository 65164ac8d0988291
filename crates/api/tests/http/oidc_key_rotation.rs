//! An issuer rotating its signing keys, as Keycloak does: a new key is picked up from its
//! JWKS without a restart, and a retired key stops working once the key set the server
//! holds has been fetched again.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use serde_json::json;
use testkit::TestApp;
use testkit::oidc::TestIssuer;

/// Short enough for a test to wait out; the server's defaults are 10 s and 5 min.
const REFRESH_INTERVAL: Duration = Duration::from_millis(200);
const KEY_SET_MAX_AGE: Duration = Duration::from_millis(600);

/// An app trusting an issuer whose keys it fetches again after [`KEY_SET_MAX_AGE`].
async fn quickly_rotating() -> (TestApp, TestIssuer) {
    let issuer = TestIssuer::start().await;
    let app = TestApp::with_settings(api::Settings {
        oidc: Some(auth::OidcConfig {
            key_refresh_interval: REFRESH_INTERVAL,
            key_set_max_age: KEY_SET_MAX_AGE,
            ..issuer.config()
        }),
        ..testkit::settings()
    })
    .await;
    (app, issuer)
}

async fn me(app: &TestApp, token: &str) -> StatusCode {
    app.request(Method::GET, "/v1/me")
        .bearer(token)
        .send()
        .await
        .status
}

#[tokio::test]
async fn a_new_key_is_picked_up_and_a_retired_one_stops_working_without_a_restart() {
    let (app, issuer) = quickly_rotating().await;
    let claims = || json!({"realm_access": {"roles": ["platform-admin"]}});
    let old = issuer.current_kid();
    assert_eq!(me(&app, &issuer.token(claims())).await, StatusCode::OK);

    let new = issuer.rotate();
    tokio::time::sleep(REFRESH_INTERVAL).await;
    assert_eq!(
        me(&app, &issuer.token_signed_by(&new, claims())).await,
        StatusCode::OK,
        "the new key is fetched when a token first names it"
    );
    assert_eq!(
        me(&app, &issuer.token_signed_by(&old, claims())).await,
        StatusCode::OK,
        "the old key still works while the issuer serves it"
    );

    issuer.retire(&old);
    let old_token = issuer.token_signed_by(&old, claims());
    assert_eq!(
        me(&app, &old_token).await,
        StatusCode::OK,
        "until the key set is fetched again, the server cannot know"
    );
    tokio::time::sleep(KEY_SET_MAX_AGE).await;
    assert_eq!(
        me(&app, &old_token).await,
        StatusCode::UNAUTHORIZED,
        "a retired key stops working once the key set is older than its maximum age"
    );
    assert_eq!(
        me(&app, &issuer.token_signed_by(&new, claims())).await,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_failing_issuer_leaves_the_last_keys_it_served_in_use() {
    let (app, issuer) = quickly_rotating().await;
    let token = issuer.token(json!({"realm_access": {"roles": ["platform-admin"]}}));
    assert_eq!(me(&app, &token).await, StatusCode::OK);
    issuer.fail_discovery(true);
    tokio::time::sleep(KEY_SET_MAX_AGE).await;
    assert_eq!(me(&app, &token).await, StatusCode::OK);
}
