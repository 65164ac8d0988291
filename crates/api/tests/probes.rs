//! The probes, driven through the whole router against a real database.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use testkit::TestDb;
use tower::ServiceExt;

#[tokio::test]
async fn healthz_answers_ok() {
    let db = TestDb::migrated().await;
    let app = api::router(api::AppState {
        pool: db.pool().clone(),
    });
    let response = app
        .oneshot(
            Request::get("/healthz")
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body).expect("json body");
    assert_eq!(json, serde_json::json!({"status": "ok"}));
}
