//! The probes under their Kubernetes names (`/health/live`, `/health/ready`,
//! `/health/startup`) and the operators' dependency report (`/health/dependencies`).

use std::sync::Arc;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};
use testkit::TestApp;
use testkit::dns::TestDns;
use testkit::oidc::TestIssuer;

/// Forgets the applied migrations (so the schema looks behind), keeping a copy to restore.
async fn forget_migrations(app: &TestApp) {
    for statement in [
        "CREATE TABLE saved_history AS SELECT * FROM refinery_schema_history",
        "DELETE FROM refinery_schema_history",
    ] {
        sqlx::query(statement)
            .execute(app.db.pool())
            .await
            .expect(statement);
    }
}

async fn restore_migrations(app: &TestApp) {
    sqlx::query("INSERT INTO refinery_schema_history SELECT * FROM saved_history")
        .execute(app.db.pool())
        .await
        .expect("restoring the migrations");
}

#[tokio::test]
async fn the_kubernetes_probe_names_answer_as_the_short_ones_do() {
    let app = TestApp::new().await;
    for (path, status) in [
        ("/health/live", "ok"),
        ("/health/ready", "ready"),
        ("/health/startup", "started"),
    ] {
        for response in [
            app.request(Method::GET, path).send().await,
            app.admin_request(Method::GET, path).send().await,
        ] {
            assert_eq!(
                (response.status, response.json()),
                (StatusCode::OK, json!({"status": status})),
                "{path}"
            );
        }
    }
    forget_migrations(&app).await;
    let behind = app.request(Method::GET, "/health/ready").send().await;
    assert_eq!(behind.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        behind.json()["detail"]
            .as_str()
            .expect("a detail")
            .contains("tenant-registry-migrate up")
    );
}

#[tokio::test]
async fn startup_answers_503_until_the_schema_is_current_then_stays_started_through_an_outage() {
    let app = TestApp::new().await;
    forget_migrations(&app).await;
    let starting = app.request(Method::GET, "/health/startup").send().await;
    assert_eq!(starting.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        starting.header("content-type"),
        Some("application/problem+json")
    );
    restore_migrations(&app).await;
    let started = app.request(Method::GET, "/health/startup").send().await;
    assert_eq!(started.status, StatusCode::OK);
    // Once started, the schema going behind (or the database going) is readiness's
    // business: a restart would not help, so the start-up probe does not ask again.
    sqlx::query("DELETE FROM refinery_schema_history")
        .execute(app.db.pool())
        .await
        .expect("forgetting the migrations again");
    assert_eq!(
        app.request(Method::GET, "/health/startup")
            .send()
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        app.request(Method::GET, "/health/ready")
            .send()
            .await
            .status,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

/// The dependency report, which is a 200 whatever it says.
async fn report(app: &TestApp) -> Value {
    let response = app
        .admin_request(Method::GET, "/health/dependencies")
        .send()
        .await;
    let report = response.json();
    assert_eq!(response.status, StatusCode::OK, "{report}");
    report
}

fn dependency<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["dependencies"]
        .as_array()
        .expect("dependencies")
        .iter()
        .find(|dependency| dependency["name"] == name)
        .unwrap_or_else(|| panic!("{name} in {report}"))
}

#[tokio::test]
async fn the_dependency_report_is_on_the_admin_listener_only_and_times_each_check() {
    let dns = TestDns::start().await;
    let issuer = TestIssuer::start().await;
    let app = TestApp::with_settings(api::Settings {
        dns: Arc::new(
            api::dns::HickoryResolver::plain(dns.address())
                .expect("a resolver")
                .with_deadline(Duration::from_secs(2)),
        ),
        oidc: Some(issuer.config()),
        ..testkit::settings()
    })
    .await;
    assert_eq!(
        app.request(Method::GET, "/health/dependencies")
            .send()
            .await
            .status,
        StatusCode::NOT_FOUND,
        "not on the API listener"
    );
    let report = report(&app).await;
    assert_eq!(report["status"], "up");
    for checked in ["postgresql", "oidc-jwks", "dns"] {
        let line = dependency(&report, checked);
        assert_eq!(line["state"], "up", "{line}");
        assert!(line["latency_ms"].as_f64().is_some(), "{line}");
    }
    assert_eq!(dependency(&report, "notification-listener")["state"], "up");
    assert_eq!(
        dependency(&report, "background-runner")["state"],
        "off",
        "no runner was started in this process"
    );
    assert!(
        dns.queries().0 + dns.queries().1 > 0,
        "the resolver was asked"
    );
}

#[tokio::test]
async fn an_unreachable_issuer_is_reported_down_with_the_reason() {
    let issuer = TestIssuer::start().await;
    let config = issuer.config();
    drop(issuer);
    let app = TestApp::with_settings(api::Settings {
        oidc: Some(config),
        ..testkit::settings()
    })
    .await;
    let report = report(&app).await;
    assert_eq!(report["status"], "down");
    let oidc = dependency(&report, "oidc-jwks");
    assert_eq!(oidc["state"], "down");
    assert!(
        oidc["detail"]
            .as_str()
            .is_some_and(|detail| detail.contains("OIDC discovery")),
        "{oidc}"
    );
    assert_eq!(dependency(&report, "postgresql")["state"], "up");
}
