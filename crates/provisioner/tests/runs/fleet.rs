//! Fleet migrations: a migration registered later reaches every provisioned tenant, a bounded
//! number at a time, and one tenant's broken schema fails that tenant alone.

use domain::provisioning::tenant_object_name;
use serde_json::json;
use testkit::TestDb;

use crate::plans::tempdir;
use crate::support::{migrations, product, runner, settle, state, subscribed_tenant};

const TENANTS: usize = 200;

#[tokio::test]
async fn a_new_migration_reaches_every_provisioned_tenant_and_a_broken_schema_fails_alone() {
    let db = TestDb::migrated().await;
    let backups = tempdir();
    product(
        db.pool(),
        "certifai",
        json!({"steps": [
        {"kind": "database", "isolation": "schema"},
        {"kind": "migrations"}
    ], "max_attempts": 1}),
    )
    .await;
    migrations(
        db.pool(),
        "certifai",
        &[(1, "CREATE TABLE documents (id bigint PRIMARY KEY)")],
    )
    .await;
    let mut tenants = Vec::with_capacity(TENANTS);
    for number in 0..TENANTS {
        tenants
            .push(subscribed_tenant(db.pool(), &format!("tenant-{number:03}"), "certifai").await);
    }
    let runner = runner(db.pool(), "certifai", db.url(), backups.path());
    settle(&runner).await;
    let broken = tenants[17];
    sqlx::raw_sql(&format!(
        "CREATE TABLE \"{}\".labels (taken_by_hand integer)",
        tenant_object_name(broken)
    ))
    .execute(db.pool())
    .await
    .expect("a table the migration will collide with");

    let operation = migrations(
        db.pool(),
        "certifai",
        &[
            (1, "CREATE TABLE documents (id bigint PRIMARY KEY)"),
            (2, "CREATE TABLE labels (name text PRIMARY KEY)"),
        ],
    )
    .await
    .expect("a fleet migration");
    let pass = settle(&runner).await;
    assert!(pass.steps.iter().all(|step| step.step == "migrations"));

    let done = registry::provisioning::operation(db.pool(), operation)
        .await
        .expect("read")
        .expect("the operation");
    assert_eq!((done.total, done.succeeded, done.failed), (200, 199, 1));
    assert_eq!(
        done.state, "failed",
        "an operation with a failed item says so"
    );
    let failures = registry::provisioning::operation_failures(db.pool(), operation, 10)
        .await
        .expect("failures");
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].0, broken);
    assert!(
        failures[0]
            .2
            .as_deref()
            .unwrap_or_default()
            .contains("migration 2"),
        "{failures:?}"
    );
    for tenant in &tenants {
        let run = state(db.pool(), *tenant, "certifai").await;
        if *tenant == broken {
            assert_eq!(
                (run.state.as_str(), run.migration_version),
                ("failed", Some(1))
            );
        } else {
            assert_eq!(
                (run.state.as_str(), run.migration_version),
                ("ready", Some(2))
            );
        }
    }
}

#[tokio::test]
async fn a_migration_registered_while_a_tenant_is_provisioning_still_reaches_it() {
    let db = TestDb::migrated().await;
    let backups = tempdir();
    let receiver = testkit::receiver::Receiver::start().await;
    receiver.answer(202);
    product(
        db.pool(),
        "certifai",
        json!({"steps": [
            {"kind": "database", "isolation": "schema"},
            {"kind": "migrations"},
            {"kind": "hook", "url": receiver.url()}
        ]}),
    )
    .await;
    migrations(
        db.pool(),
        "certifai",
        &[(1, "CREATE TABLE documents (id bigint PRIMARY KEY)")],
    )
    .await;
    let tenant = subscribed_tenant(db.pool(), "acme", "certifai").await;
    let secret = webhooks::secret::generate().expect("a secret");
    let runner = crate::support::runner_with(
        db.pool(),
        provisioner::Clusters::with([
            (
                domain::provisioning::default_cluster_env("certifai"),
                db.url().to_owned(),
            ),
            (
                domain::provisioning::default_hook_secret_env("certifai"),
                secret,
            ),
        ]),
        backups.path(),
    );
    settle(&runner).await;
    let parked = state(db.pool(), tenant, "certifai").await;
    assert_eq!(
        (parked.state.as_str(), parked.migration_version),
        ("running", Some(1)),
        "past its migrations, waiting on the hook"
    );
    let operation = migrations(
        db.pool(),
        "certifai",
        &[
            (1, "CREATE TABLE documents (id bigint PRIMARY KEY)"),
            (2, "CREATE TABLE labels (name text PRIMARY KEY)"),
        ],
    )
    .await
    .expect("a fleet migration");
    let passed_by = registry::provisioning::operation(db.pool(), operation)
        .await
        .expect("read")
        .expect("the operation");
    assert_eq!(
        passed_by.total, 0,
        "the fleet migration sees ready runs only"
    );

    crate::reports::report(
        db.pool(),
        tenant,
        &crate::reports::last_request_id(&receiver),
        registry::provisioning::Outcome::Complete,
    )
    .await
    .expect("reported");
    settle(&runner).await;
    let caught_up = state(db.pool(), tenant, "certifai").await;
    assert_eq!(
        (caught_up.state.as_str(), caught_up.migration_version),
        ("ready", Some(2))
    );
    let labels = crate::support::tables(db.pool(), &tenant_object_name(tenant)).await;
    assert!(labels.contains(&"labels".to_owned()), "{labels:?}");
}
