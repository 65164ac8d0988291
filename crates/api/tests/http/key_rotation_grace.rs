//! Rotating an API key with a grace period: the old secret keeps working beside the new one
//! until the grace ends (shown in the key's view), revoking ends both at once, and without
//! a grace the old secret stops at once.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use domain::Scope;
use serde_json::{Value, json};
use testkit::{TestApp, TestResponse};
use uuid::Uuid;

async fn rotate(app: &TestApp, admin: &str, id: Uuid, body: Option<Value>) -> TestResponse {
    let request = app
        .request(Method::POST, &format!("/v1/api-keys/{id}/rotate"))
        .bearer(admin);
    match body {
        Some(body) => request.json(&body),
        None => request,
    }
    .send()
    .await
}

async fn me(app: &TestApp, key: &str) -> StatusCode {
    app.request(Method::GET, "/v1/me")
        .bearer(key)
        .send()
        .await
        .status
}

fn new_secret(response: &TestResponse) -> String {
    assert_eq!(
        response.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    response.json()["key"]
        .as_str()
        .expect("the new secret")
        .to_owned()
}

#[tokio::test]
async fn during_the_grace_both_secrets_work_and_revoking_ends_both() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    let (id, old) = app.cheap_key(None, &[Scope::TenantsRead]).await;
    assert_eq!(me(&app, &old).await, StatusCode::OK);

    let rotated = rotate(&app, &admin, id, Some(json!({"grace_seconds": 3600}))).await;
    let new = new_secret(&rotated);
    let until = rotated.json()["previous_valid_until"]
        .as_str()
        .expect("the grace's end in the view")
        .parse::<chrono::DateTime<chrono::Utc>>()
        .expect("a time");
    let hour_from_now = chrono::Utc::now() + chrono::TimeDelta::hours(1);
    assert!((hour_from_now - until).num_seconds().abs() < 60, "{until}");
    assert_eq!(
        me(&app, &old).await,
        StatusCode::OK,
        "the old secret, in its grace"
    );
    assert_eq!(me(&app, &new).await, StatusCode::OK, "the new secret");
    let view = app
        .request(Method::GET, &format!("/v1/api-keys/{id}"))
        .bearer(&admin)
        .send()
        .await
        .json();
    assert_eq!(
        view["previous_valid_until"],
        rotated.json()["previous_valid_until"]
    );

    app.revoke(id).await;
    testkit::within_a_second("both secrets refused once revoked", async || {
        me(&app, &old).await == StatusCode::UNAUTHORIZED
            && me(&app, &new).await == StatusCode::UNAUTHORIZED
    })
    .await;
}

#[tokio::test]
async fn the_old_secret_stops_when_its_grace_ends() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    let (id, old) = app.cheap_key(None, &[Scope::TenantsRead]).await;
    let new = new_secret(&rotate(&app, &admin, id, Some(json!({"grace_seconds": 1}))).await);
    assert_eq!(
        me(&app, &old).await,
        StatusCode::OK,
        "cached with the grace's end"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(me(&app, &old).await, StatusCode::UNAUTHORIZED);
    assert_eq!(me(&app, &new).await, StatusCode::OK);
}

#[tokio::test]
async fn without_a_grace_the_old_secret_stops_at_once_and_rotating_again_ends_a_grace() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    let (id, first) = app.cheap_key(None, &[Scope::TenantsRead]).await;
    let second = new_secret(&rotate(&app, &admin, id, None).await);
    assert_eq!(
        me(&app, &first).await,
        StatusCode::UNAUTHORIZED,
        "no body: no grace"
    );
    let graced = rotate(&app, &admin, id, Some(json!({"grace_seconds": 600}))).await;
    let third = new_secret(&graced);
    assert_eq!(me(&app, &second).await, StatusCode::OK);
    let fourth = new_secret(&rotate(&app, &admin, id, Some(json!({}))).await);
    assert_eq!(me(&app, &second).await, StatusCode::UNAUTHORIZED);
    assert_eq!(me(&app, &third).await, StatusCode::UNAUTHORIZED);
    assert_eq!(me(&app, &fourth).await, StatusCode::OK);
}

#[tokio::test]
async fn a_grace_outside_a_week_or_an_unknown_field_is_refused() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    let (id, key) = app.cheap_key(None, &[Scope::TenantsRead]).await;
    for body in [
        json!({"grace_seconds": -1}),
        json!({"grace_seconds": 604_801}),
        json!({"grace_seconds": "3600"}),
        json!({"grace": 60}),
    ] {
        let refused = rotate(&app, &admin, id, Some(body.clone())).await;
        assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    }
    assert_eq!(me(&app, &key).await, StatusCode::OK, "nothing rotated");
}

#[tokio::test]
async fn the_previous_secret_cannot_rotate_its_key_and_take_it_over() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    let tenant = app.tenant("acme").await;
    // A key that expires before the grace ends: its old secret then expires with the key,
    // no sooner than the new one, so only knowing which secret was used can stop it.
    let expires_at = chrono::Utc::now() + chrono::Duration::days(2);
    let (id, old) = app
        .key_expiring(
            Some(tenant),
            &[Scope::ApiKeysManage, Scope::TenantsRead],
            Some(expires_at),
        )
        .await;
    let new = new_secret(&rotate(&app, &admin, id, Some(json!({"grace_seconds": 604_800}))).await);

    let takeover = rotate(&app, &old, id, None).await;
    assert_eq!(takeover.status, StatusCode::FORBIDDEN);
    assert!(
        takeover.json()["detail"]
            .as_str()
            .is_some_and(|detail| detail.contains("new secret")),
        "{}",
        String::from_utf8_lossy(&takeover.body)
    );
    assert_eq!(
        me(&app, &new).await,
        StatusCode::OK,
        "the new secret still works"
    );
    let again = rotate(&app, &new, id, None).await;
    assert_eq!(again.status, StatusCode::OK, "the new secret may rotate");
}
