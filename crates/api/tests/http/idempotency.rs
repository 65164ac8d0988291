//! Idempotency records belong to their principal, method and path; stored responses are
//! sealed; unauthenticated requests never reach the store; records expire after a day.

use axum::http::{Method, StatusCode};
use chrono::{Duration, Utc};
use domain::Scope;
use serde_json::{Value, json};
use testkit::oidc::TestIssuer;
use testkit::{TestApp, TestResponse};
use uuid::Uuid;

async fn post_with_key(
    app: &TestApp,
    credential: &str,
    path: &str,
    idempotency_key: &str,
    body: &Value,
) -> TestResponse {
    app.request(Method::POST, path)
        .bearer(credential)
        .header("idempotency-key", idempotency_key)
        .json(body)
        .send()
        .await
}

async fn records(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM idempotency_records")
        .fetch_one(app.db.pool())
        .await
        .expect("count")
}

fn tenant(slug: &str) -> Value {
    json!({"slug": slug, "name": "Dropped", "plan": "standard"})
}

fn secret(response: &TestResponse) -> String {
    response.json()["key"]
        .as_str()
        .expect("a key in the response")
        .to_owned()
}

#[tokio::test]
async fn another_tenants_user_replaying_the_same_key_gets_a_fresh_response_not_the_secret() {
    let issuer = TestIssuer::start().await;
    let app = TestApp::with_settings(api::Settings {
        oidc: Some(issuer.config()),
        ..testkit::settings()
    })
    .await;
    let x = app.tenant("xco").await;
    let y = app.tenant("yco").await;
    let z = app.tenant("zco").await;
    // Same subject in both tenants: the tenant is part of who owns a record.
    let user = |tenant: Uuid| {
        issuer.token(json!({"sub": "same-sub", "tenant_id": tenant,
                            "scope": "api_keys:manage tenants:read"}))
    };
    let (user_x, user_y, user_z) = (user(x), user(y), user(z));
    let expires_at = Utc::now() + Duration::minutes(1);
    let body = |tenant: Uuid| json!({"name": "sync", "tenant_id": tenant, "scopes": ["tenants:read"], "expires_at": expires_at});

    let first = post_with_key(&app, &user_x, "/v1/api-keys", "k-1", &body(x)).await;
    assert_eq!(first.status, StatusCode::CREATED);
    let x_secret = secret(&first);

    let same_request = post_with_key(&app, &user_y, "/v1/api-keys", "k-1", &body(x)).await;
    assert_eq!(
        same_request.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "tenant x does not exist for y: {}",
        String::from_utf8_lossy(&same_request.body)
    );
    assert!(!String::from_utf8_lossy(&same_request.body).contains(&x_secret));

    let own_request = post_with_key(&app, &user_z, "/v1/api-keys", "k-1", &body(z)).await;
    assert_eq!(own_request.status, StatusCode::CREATED);
    assert_eq!(own_request.header("idempotent-replayed"), None);
    assert_ne!(secret(&own_request), x_secret);

    let replay = post_with_key(&app, &user_x, "/v1/api-keys", "k-1", &body(x)).await;
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    assert_eq!(secret(&replay), x_secret, "the owner still gets its replay");
}

#[tokio::test]
async fn a_stored_response_is_sealed_and_opens_only_for_its_own_record() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    let (other_id, other_admin) = app.key(None, &[Scope::PlatformAdmin]).await;
    let body = json!({"name": "sealed", "scopes": ["tenants:read"]});
    let created = post_with_key(&app, &admin, "/v1/api-keys", "seal-1", &body).await;
    assert_eq!(created.status, StatusCode::CREATED);
    let plain = secret(&created);

    let sealed: Vec<u8> = sqlx::query_scalar("SELECT sealed_body FROM idempotency_records")
        .fetch_one(app.db.pool())
        .await
        .expect("one record");
    let secret_part = plain.rsplit('_').next().expect("secret part").as_bytes();
    assert!(
        !sealed
            .windows(secret_part.len())
            .any(|window| window == secret_part),
        "the stored body holds the plain secret"
    );
    assert!(
        !sealed.windows(6).any(|window| window == b"sealed"),
        "the stored body is not in clear at all"
    );
    let replay = post_with_key(&app, &admin, "/v1/api-keys", "seal-1", &body).await;
    assert_eq!(secret(&replay), plain, "its owner's replay opens it");

    // Someone with write access to the table moves the record to another principal.
    sqlx::query("UPDATE idempotency_records SET principal = $1")
        .bind(format!("platform_key:platform:{other_id}"))
        .execute(app.db.pool())
        .await
        .expect("moved");
    let stolen = post_with_key(&app, &other_admin, "/v1/api-keys", "seal-1", &body).await;
    assert_eq!(stolen.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(!String::from_utf8_lossy(&stolen.body).contains(&plain));
}

fn credential_checks(app: &TestApp) -> u64 {
    let text = app.app.state.metrics.render(app.db.pool());
    text.lines()
        .find_map(|line| line.strip_prefix("tenant_registry_auth_credential_checks_total "))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no credential check counter in:\n{text}"))
}

#[tokio::test]
async fn a_bad_key_with_an_idempotency_key_leaves_no_record_and_is_checked_once() {
    let app = TestApp::new().await;
    let body = json!({"name": "x", "scopes": ["tenants:read"]});
    let forged = format!("tr_dev_{}_{}", "0".repeat(16), "1".repeat(64));
    let before = credential_checks(&app);
    let refused = post_with_key(&app, &forged, "/v1/api-keys", "k-1", &body).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        credential_checks(&app),
        before + 1,
        "one check for the whole request"
    );

    let anonymous = app
        .request(Method::POST, "/v1/api-keys")
        .header("idempotency-key", "k-2")
        .json(&body)
        .send()
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert_eq!(credential_checks(&app), before + 1, "nothing to check");
    assert_eq!(records(&app).await, 0, "the store was never touched");
}

#[tokio::test]
async fn the_same_key_on_another_path_is_another_record() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    let tenant_body = json!({"slug": "acme", "name": "Acme", "plan": "pro"});
    let key_body = json!({"name": "x", "scopes": ["tenants:read"]});
    let tenant = post_with_key(&app, &admin, "/v1/tenants", "shared", &tenant_body).await;
    let key = post_with_key(&app, &admin, "/v1/api-keys", "shared", &key_body).await;
    assert_eq!(tenant.status, StatusCode::CREATED);
    assert_eq!(
        key.status,
        StatusCode::CREATED,
        "not a mismatch with the tenant request: {}",
        String::from_utf8_lossy(&key.body)
    );
    let key_replay = post_with_key(&app, &admin, "/v1/api-keys", "shared", &key_body).await;
    assert_eq!(key_replay.body, key.body);
    let tenant_replay = post_with_key(&app, &admin, "/v1/tenants", "shared", &tenant_body).await;
    assert_eq!(tenant_replay.body, tenant.body);
    assert_eq!(records(&app).await, 2);
}

#[tokio::test]
async fn records_expire_after_a_day_and_are_swept() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    let body = json!({"name": "x", "scopes": ["tenants:read"]});
    let old = post_with_key(&app, &admin, "/v1/api-keys", "old", &body).await;
    post_with_key(&app, &admin, "/v1/api-keys", "older", &body).await;
    post_with_key(&app, &admin, "/v1/api-keys", "recent", &body).await;
    sqlx::query(
        "UPDATE idempotency_records SET created_at = now() - interval '25 hours'
         WHERE key IN ('old', 'older')",
    )
    .execute(app.db.pool())
    .await
    .expect("aged");

    let again = post_with_key(&app, &admin, "/v1/api-keys", "old", &body).await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert_eq!(
        again.header("idempotent-replayed"),
        None,
        "expired: not replayed"
    );
    assert_ne!(secret(&again), secret(&old));

    let swept = api::idempotency::sweep_expired(app.db.pool())
        .await
        .expect("sweep");
    assert_eq!(swept, 1, "only 'older' was left expired");
    let left: Vec<String> = sqlx::query_scalar("SELECT key FROM idempotency_records ORDER BY key")
        .fetch_all(app.db.pool())
        .await
        .expect("keys");
    assert_eq!(left, ["old", "recent"]);
}

#[tokio::test]
async fn a_timed_out_or_abandoned_request_releases_its_key_so_the_retry_runs() {
    let app = TestApp::with_settings(api::Settings {
        request_timeout: std::time::Duration::from_secs(2),
        ..testkit::settings()
    })
    .await;
    let (_, admin) = app.cheap_key(None, &[Scope::PlatformAdmin]).await;
    let tenant = app.tenant("acme").await;
    let path = format!("/v1/tenants/{tenant}/transitions");
    let freeze = json!({"to": "frozen", "reason": "unpaid"});
    // Someone holds the tenant's row: the transition waits for it past the request timeout.
    let mut holder = storage::begin(app.db.pool()).await.expect("a transaction");
    sqlx::query("SELECT 1 FROM tenants WHERE id = $1 FOR UPDATE")
        .bind(tenant)
        .execute(&mut *holder)
        .await
        .expect("the row is held");

    let timed_out = post_with_key(&app, &admin, &path, "freeze-1", &freeze).await;
    assert_eq!(timed_out.status, StatusCode::REQUEST_TIMEOUT);
    testkit::within_a_second("the timed-out request releasing its key", async || {
        records(&app).await == 0
    })
    .await;

    // A client that goes away while its request waits: the request's future is dropped.
    tokio::select! {
        abandoned = post_with_key(&app, &admin, &path, "freeze-2", &freeze) => {
            panic!("answered while the row is held: {}", abandoned.status);
        }
        () = async {
            app.claimed_idempotency_key("freeze-2").await;
            // Dropped once it waits for the row (beside the timed-out request's session, still
            // waiting too); drops while claiming are the next test's.
            app.until_waiting_on_a_lock(2).await;
        } => {}
    }
    // Released by a task once the dropped request's guard runs; on a loaded machine that
    // can take a moment, but never the 5 minutes after which a claim counts as abandoned.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while records(&app).await != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the abandoned request's key was not released"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    holder.rollback().await.expect("the row is let go");

    for key in ["freeze-1", "freeze-2"] {
        let retried = post_with_key(&app, &admin, &path, key, &freeze).await;
        assert_eq!(retried.header("idempotent-replayed"), None, "{key} runs");
        let expected = if key == "freeze-1" {
            StatusCode::OK
        } else {
            StatusCode::CONFLICT
        };
        assert_eq!(
            retried.status,
            expected,
            "{key}: {}",
            String::from_utf8_lossy(&retried.body)
        );
    }
    let replayed = post_with_key(&app, &admin, &path, "freeze-1", &freeze).await;
    assert_eq!(replayed.header("idempotent-replayed"), Some("true"));
    assert_eq!(replayed.status, StatusCode::OK);
}

#[tokio::test]
async fn a_replayed_refusal_is_byte_identical_to_the_original() {
    let app = TestApp::new().await;
    let (_, admin) = app.cheap_key(None, &[Scope::PlatformAdmin]).await;
    let (revoked, _) = app.cheap_key(None, &[Scope::TenantsRead]).await;
    app.revoke(revoked).await;
    let invalid = json!({"name": "x", "scopes": ["tenants:read", "nope"]});
    let rotate = format!("/v1/api-keys/{revoked}/rotate");
    for (path, key, body, status) in [
        (
            "/v1/api-keys",
            "bad-scope",
            &invalid,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            rotate.as_str(),
            "rotate-revoked",
            &json!({}),
            StatusCode::CONFLICT,
        ),
    ] {
        let first = post_with_key(&app, &admin, path, key, body).await;
        assert_eq!(first.status, status, "{path}");
        assert_eq!(
            first.header("content-type"),
            Some("application/problem+json")
        );
        assert!(
            first.json()["detail"]
                .as_str()
                .is_some_and(|detail| !detail.is_empty())
        );
        let replay = post_with_key(&app, &admin, path, key, body).await;
        assert_eq!(replay.header("idempotent-replayed"), Some("true"), "{path}");
        assert_eq!(
            (
                replay.status,
                replay.header("content-type"),
                replay.body.as_slice()
            ),
            (
                first.status,
                first.header("content-type"),
                first.body.as_slice()
            ),
            "{path}: {}",
            String::from_utf8_lossy(&replay.body)
        );
    }
    let first_errors = post_with_key(&app, &admin, "/v1/api-keys", "bad-scope", &invalid).await;
    assert_eq!(
        first_errors.pointers(),
        vec!["/scopes/1"],
        "errors survive the replay"
    );
}

#[tokio::test]
async fn a_request_dropped_at_any_instant_of_its_claim_leaves_no_key_in_progress() {
    let app = TestApp::new().await;
    let (_, admin) = app.cheap_key(None, &[Scope::PlatformAdmin]).await;
    let in_progress = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM idempotency_records WHERE status IS NULL",
        )
        .fetch_one(app.db.pool())
        .await
        .expect("count")
    };
    // Drops spread over the first few milliseconds of a request: before, during and after
    // its claim commits, and while it runs.
    for step in 0..60u64 {
        let slug = format!("dropped-{step}");
        let body = tenant(&slug);
        let request = post_with_key(&app, &admin, "/v1/tenants", &slug, &body);
        let _ = tokio::time::timeout(std::time::Duration::from_micros(step * 50), request).await;
    }
    // Released by tasks once the dropped requests' guards run, which can take a moment on a
    // loaded machine, but never the 5 minutes after which a claim counts as abandoned.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while in_progress().await != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a dropped request's key stayed in progress"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    for step in 0..60u64 {
        let slug = format!("dropped-{step}");
        let retried = post_with_key(&app, &admin, "/v1/tenants", &slug, &tenant(&slug)).await;
        assert_ne!(
            retried.json()["type"],
            "/problems/idempotency-in-progress",
            "{slug}"
        );
    }
}

#[tokio::test]
async fn the_same_request_through_another_spelling_of_an_id_is_replayed_not_run_again() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    let tenant = app.tenant("acme").await;
    let (id, _) = app.key(Some(tenant), &[Scope::TenantsRead]).await;
    let rotate = async |spelling: String| {
        let path = format!("/v1/api-keys/{spelling}/rotate");
        post_with_key(&app, &admin, &path, "rotate-once", &json!({})).await
    };
    let first = rotate(id.to_string().to_uppercase()).await;
    assert_eq!(first.status, StatusCode::OK);
    let again = rotate(id.simple().to_string()).await;
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(secret(&again), secret(&first), "one rotation, one secret");
    // The handler reads a percent-escaped id as the id itself, and so does the record.
    let text = id.to_string();
    let escaped = format!("%{:02X}{}", text.as_bytes()[0], &text[1..]);
    let escaped = rotate(escaped).await;
    assert_eq!(escaped.header("idempotent-replayed"), Some("true"));
    assert_eq!(secret(&escaped), secret(&first), "one rotation, one secret");
}

async fn change_committed(app: &TestApp, key: &str) -> bool {
    sqlx::query_scalar(
        "SELECT change_committed_at IS NOT NULL FROM idempotency_records WHERE key = $1",
    )
    .bind(key)
    .fetch_one(app.db.pool())
    .await
    .expect("the record")
}

#[tokio::test]
async fn a_change_made_but_whose_answer_was_lost_is_not_made_again_by_its_retry() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    let refused = post_with_key(
        &app,
        &admin,
        "/v1/tenants",
        "k-bad",
        &json!({"slug": "Bad"}),
    )
    .await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        !change_committed(&app, "k-bad").await,
        "a refusal changes nothing"
    );

    let created = post_with_key(&app, &admin, "/v1/tenants", "k-1", &tenant("lostco")).await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert!(
        change_committed(&app, "k-1").await,
        "the change marked its claim in its own transaction"
    );
    // The server stopped after the commit, before it kept the answer (and released nothing
    // to a retry: the claim is nobody's).
    sqlx::query(
        "UPDATE idempotency_records SET status = NULL, sealed_body = NULL, claim_token = NULL
         WHERE key = 'k-1'",
    )
    .execute(app.db.pool())
    .await
    .expect("losing the answer");

    for _ in 0..2 {
        let retry = post_with_key(&app, &admin, "/v1/tenants", "k-1", &tenant("lostco")).await;
        assert_eq!(retry.status, StatusCode::CONFLICT);
        assert!(
            retry.json()["type"]
                .as_str()
                .is_some_and(|kind| kind.ends_with("/problems/idempotency-answer-lost")),
            "{}",
            String::from_utf8_lossy(&retry.body)
        );
        assert_eq!(retry.header("retry-after"), None, "retrying does not help");
    }
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM tenants WHERE slug = 'lostco'")
        .fetch_one(app.db.pool())
        .await
        .expect("count");
    assert_eq!(rows, 1, "the tenant was created once");
}
