//! The work one audit search can cause is bounded: search strings have limits, the SQL of a
//! search ends when the request's time does, and every page cursor reads back, whatever
//! year its event claims.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use serde_json::json;
use testkit::{TestApp, TestResponse};

async fn get(app: &TestApp, key: &str, path: &str) -> TestResponse {
    app.request(Method::GET, path).bearer(key).send().await
}

fn encoded(q: &str) -> String {
    q.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => {
                char::from(byte).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn an_oversized_search_string_is_refused_at_q() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    let words = |count: usize, length: usize| {
        (0..count)
            .map(|n| format!("{n}{}", "w".repeat(length.saturating_sub(1))))
            .collect::<Vec<_>>()
            .join(" ")
    };
    for q in [
        words(200, 9),
        "x".repeat(5_000),
        words(7, 5),
        "y".repeat(101),
        format!("actor.id:{}", "z".repeat(101)),
        (0..13)
            .map(|n| format!("w{n}"))
            .collect::<Vec<_>>()
            .join(" action:a "),
    ] {
        for endpoint in ["/v1/audit/events", "/v1/audit/events/export"] {
            let response = get(&app, &admin, &format!("{endpoint}?q={}", encoded(&q))).await;
            assert_eq!(
                response.status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{endpoint} {}…",
                &q[..20]
            );
            assert_eq!(response.pointers(), vec!["/q"], "{}…", &q[..20]);
        }
    }
    let within = get(
        &app,
        &admin,
        &format!("/v1/audit/events?q={}", encoded(&words(6, 80))),
    )
    .await;
    assert_eq!(within.status, StatusCode::OK, "six words of 80 characters");
}

#[tokio::test]
async fn a_search_that_outlives_its_budget_is_cancelled_in_the_database() {
    let mut settings = testkit::settings();
    settings.request_timeout = Duration::from_secs(3);
    let app = TestApp::with_settings(settings).await;
    let admin = app.admin_key().await;
    // A search that cannot finish in time: the table it reads is held by another
    // transaction until after the answer.
    let mut hold = storage::begin(app.db.pool()).await.expect("a transaction");
    sqlx::query("LOCK TABLE audit_log IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *hold)
        .await
        .expect("locked");
    let slow = get(&app, &admin, "/v1/audit/events?q=needle").await;
    assert_eq!(slow.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(slow.json()["type"], "/problems/query-timeout");
    let still_running: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity
         WHERE datname = current_database() AND state = 'active'
           AND query ILIKE '%FROM audit_log%' AND pid <> pg_backend_pid()",
    )
    .fetch_one(&mut *hold)
    .await
    .expect("activity");
    assert_eq!(
        still_running, 0,
        "the search's statement is gone, not left running"
    );
    hold.rollback().await.expect("released");
}

#[tokio::test]
async fn events_of_any_stored_year_page_through_with_cursors() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    // Rows stored before created was bounded, in years RFC 3339 text cannot carry back.
    for created in [
        "0001-01-01 00:00:00+00 BC",
        "0002-06-01 00:00:00+00 BC",
        "262142-12-31 23:59:59.999999+00",
        "2026-01-01 00:00:00.000001+00",
    ] {
        sqlx::query(
            "INSERT INTO audit_log (action, crud, created_at, product) VALUES ('doc.old', 'r', $1::timestamptz, 'legacy')",
        )
        .bind(created)
        .execute(app.db.pool())
        .await
        .expect("a legacy row");
    }
    let mut seen = Vec::new();
    let mut path = "/v1/audit/events?product=legacy&limit=1".to_owned();
    loop {
        let page = get(&app, &admin, &path).await;
        assert_eq!(
            page.status,
            StatusCode::OK,
            "{path}: {}",
            String::from_utf8_lossy(&page.body)
        );
        let page = page.json();
        seen.extend(
            page["items"]
                .as_array()
                .expect("items")
                .iter()
                .map(|item| item["id"].clone()),
        );
        match page["next_cursor"].as_str() {
            Some(cursor) => {
                path = format!("/v1/audit/events?product=legacy&limit=1&cursor={cursor}")
            }
            None => break,
        }
    }
    assert_eq!(seen.len(), 4, "every event once: {seen:?}");
}

#[tokio::test]
async fn filter_times_outside_what_the_database_holds_are_refused() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    for (query, pointer) in [
        ("from=-5000-01-01T00:00:00Z", "/from"),
        ("to=%2B262143-01-01T00:00:00Z", "/to"),
        ("q=created:-5000-01-01,", "/q"),
    ] {
        let response = get(&app, &admin, &format!("/v1/audit/events?{query}")).await;
        assert_eq!(response.status, StatusCode::UNPROCESSABLE_ENTITY, "{query}");
        assert_eq!(response.pointers(), vec![pointer], "{query}");
    }
    let ingested = app
        .request(Method::POST, "/v1/audit/events")
        .bearer(&admin)
        .json(&json!({"action": "doc.read", "crud": "r", "created": "+262142-01-01T00:00:00Z"}))
        .send()
        .await;
    assert_eq!(ingested.pointers(), vec!["/created"]);
}
