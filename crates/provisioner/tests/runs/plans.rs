//! A plan run for a tenant: its schema, tables, seed rows, roles and hook; a failure, and a
//! retry after the fix.

use domain::provisioning::tenant_object_name;
use serde_json::json;
use testkit::TestDb;

use crate::support::{
    events, migrations, product, runner, runner_with, settle, state, subscribed_tenant, tables,
};

fn schema_plan() -> serde_json::Value {
    json!({"steps": [
        {"kind": "database", "isolation": "schema"},
        {"kind": "migrations"},
        {"kind": "seed", "statements": [
            "INSERT INTO settings (tenant_id, slug, name) VALUES ($1, $2, $3)",
            "INSERT INTO documents (title) VALUES ('Welcome, ' || $3)"
        ]},
        {"kind": "roles", "roles": [
            {"name": "tenant-admin", "description": "Everything", "permissions": ["documents:write", "documents:read"]},
            {"name": "viewer", "permissions": ["documents:read"]}
        ]}
    ], "max_attempts": 2})
}

const SETTINGS: &str =
    "CREATE TABLE settings (tenant_id uuid PRIMARY KEY, slug text NOT NULL, name text NOT NULL)";
const DOCUMENTS: &str = "CREATE TABLE documents (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, title text NOT NULL)";

#[tokio::test]
async fn a_schema_plan_makes_the_schema_with_its_tables_seed_rows_and_roles() {
    let db = TestDb::migrated().await;
    let backups = tempdir();
    product(db.pool(), "certifai", schema_plan()).await;
    migrations(db.pool(), "certifai", &[(1, SETTINGS), (2, DOCUMENTS)]).await;
    let tenant = subscribed_tenant(db.pool(), "acme", "certifai").await;
    assert_eq!(state(db.pool(), tenant, "certifai").await.state, "pending");

    let runner = runner(db.pool(), "certifai", db.url(), backups.path());
    let pass = settle(&runner).await;
    let kinds: Vec<&str> = pass.steps.iter().map(|step| step.step).collect();
    assert_eq!(kinds, ["database", "migrations", "seed", "roles"]);

    let run = state(db.pool(), tenant, "certifai").await;
    assert_eq!(run.state, "ready");
    assert_eq!(run.migration_version, Some(2));
    let schema = tenant_object_name(tenant);
    assert_eq!(run.object_name.as_deref(), Some(schema.as_str()));
    assert_eq!(
        tables(db.pool(), &schema).await,
        [
            "documents",
            "registry_schema_history",
            "registry_seed",
            "settings"
        ]
    );
    let seeded: (String, String) = sqlx::query_as(&format!(
        "SELECT slug, name FROM \"{schema}\".settings WHERE tenant_id = $1"
    ))
    .bind(tenant)
    .fetch_one(db.pool())
    .await
    .expect("the seed row");
    assert_eq!(seeded, ("acme".to_owned(), "Acme & Co".to_owned()));
    let roles = registry::provisioning::roles_of(db.pool(), tenant, None, 50)
        .await
        .expect("roles");
    let names: Vec<(&str, Vec<String>)> = roles
        .iter()
        .map(|role| (role.name.as_str(), role.permissions.clone()))
        .collect();
    assert_eq!(
        names,
        [
            (
                "tenant-admin",
                vec!["documents:read".to_owned(), "documents:write".to_owned()]
            ),
            ("viewer", vec!["documents:read".to_owned()])
        ]
    );
    assert_eq!(
        events(db.pool(), "tenant.provisioned", tenant).await.len(),
        1
    );

    // Run again (a crash and a retry): nothing is applied or seeded twice.
    sqlx::query("UPDATE tenant_provisioning SET state = 'running', step = 0 WHERE tenant_id = $1")
        .bind(tenant)
        .execute(db.pool())
        .await
        .expect("the run is set back");
    settle(&runner).await;
    let documents: i64 =
        sqlx::query_scalar(&format!("SELECT count(*) FROM \"{schema}\".documents"))
            .fetch_one(db.pool())
            .await
            .expect("documents");
    assert_eq!(documents, 1, "the seed ran once");
}

#[tokio::test]
async fn a_failing_step_ends_failed_with_its_error_and_a_retry_after_the_fix_ends_ready() {
    let db = TestDb::migrated().await;
    let backups = tempdir();
    product(db.pool(), "certifai", schema_plan()).await;
    migrations(db.pool(), "certifai", &[(1, SETTINGS), (2, DOCUMENTS)]).await;
    let tenant = subscribed_tenant(db.pool(), "acme", "certifai").await;

    let unconfigured = runner_with(db.pool(), provisioner::Clusters::default(), backups.path());
    settle(&unconfigured).await;
    let failed = state(db.pool(), tenant, "certifai").await;
    assert_eq!(failed.state, "failed");
    assert_eq!(failed.attempts, 2);
    let error = failed.last_error.unwrap_or_default();
    assert!(
        error.contains("PRODUCT_DATABASE_CERTIFAI is not set"),
        "{error}"
    );
    let announced = events(db.pool(), "tenant.provisioning_failed", tenant).await;
    assert_eq!(announced.len(), 1);
    assert_eq!(announced[0]["step"], "database");

    let principal = crate::support::admin();
    let restarted = registry::provisioning::retry(
        db.pool(),
        &crate::support::actor(&principal),
        tenant,
        domain::TenantWrite::Administer,
    )
    .await
    .expect("retried");
    assert_eq!(restarted.len(), 1);
    settle(&runner(db.pool(), "certifai", db.url(), backups.path())).await;
    let ready = state(db.pool(), tenant, "certifai").await;
    assert_eq!(
        (ready.state.as_str(), ready.attempts, ready.last_error),
        ("ready", 0, None)
    );
}

#[tokio::test]
async fn a_default_role_whose_name_another_products_role_has_fails_the_step_naming_both() {
    let db = TestDb::migrated().await;
    let backups = tempdir();
    let roles = |permission: &str| {
        json!({"steps": [{"kind": "roles", "roles": [
            {"name": "tenant-admin", "permissions": [permission]},
            {"name": format!("{}-viewer", permission.split(':').next().unwrap_or_default()),
             "permissions": [permission]}
        ]}], "max_attempts": 1})
    };
    product(db.pool(), "certifai", roles("documents:write")).await;
    product(db.pool(), "workbench", roles("boards:write")).await;
    let tenant = subscribed_tenant(db.pool(), "acme", "certifai").await;
    settle(&runner(db.pool(), "certifai", db.url(), backups.path())).await;
    crate::support::subscribe(db.pool(), tenant, "workbench").await;
    settle(&runner(db.pool(), "workbench", db.url(), backups.path())).await;

    assert_eq!(state(db.pool(), tenant, "certifai").await.state, "ready");
    let failed = state(db.pool(), tenant, "workbench").await;
    assert_eq!(failed.state, "failed");
    let error = failed.last_error.unwrap_or_default();
    assert!(
        error.contains("\"tenant-admin\" is product certifai's"),
        "{error}"
    );
    let roles = registry::provisioning::roles_of(db.pool(), tenant, None, 50)
        .await
        .expect("roles");
    let owned: Vec<(&str, Option<&str>, Vec<String>)> = roles
        .iter()
        .map(|role| {
            (
                role.name.as_str(),
                role.product_id.as_deref(),
                role.permissions.clone(),
            )
        })
        .collect();
    assert_eq!(
        owned,
        [
            (
                "documents-viewer",
                Some("certifai"),
                vec!["documents:write".to_owned()]
            ),
            (
                "tenant-admin",
                Some("certifai"),
                vec!["documents:write".to_owned()]
            ),
        ],
        "nothing of the failed step is made, and the other product's role is untouched"
    );
}

#[tokio::test]
async fn two_products_of_one_tenant_never_run_at_once() {
    let db = TestDb::migrated().await;
    let plan =
        json!({"steps": [{"kind": "roles", "roles": [{"name": "member", "permissions": []}]}]});
    product(db.pool(), "certifai", plan.clone()).await;
    product(db.pool(), "billing", plan).await;
    let tenant = subscribed_tenant(db.pool(), "acme", "certifai").await;
    crate::support::subscribe(db.pool(), tenant, "billing").await;
    let other = subscribed_tenant(db.pool(), "globex", "billing").await;

    let now = chrono::Utc::now();
    let lease = chrono::TimeDelta::seconds(60);
    let first = registry::provisioning::runs::claim(db.pool(), now, lease, 10)
        .await
        .expect("a claim");
    let tenants: Vec<uuid::Uuid> = first.iter().map(|run| run.row.tenant_id).collect();
    assert_eq!(tenants.len(), 2, "one run of each tenant: {tenants:?}");
    assert!(tenants.contains(&tenant) && tenants.contains(&other));
    let second = registry::provisioning::runs::claim(db.pool(), now, lease, 10)
        .await
        .expect("a claim");
    assert!(
        second.is_empty(),
        "the tenant's other run waits for the first"
    );
}

#[tokio::test]
async fn a_hook_answered_202_waits_for_the_products_report_then_goes_on() {
    let db = TestDb::migrated().await;
    let backups = tempdir();
    let receiver = testkit::receiver::Receiver::start().await;
    receiver.answer(202);
    let secret = webhooks::secret::generate().expect("a secret");
    product(
        db.pool(),
        "certifai",
        json!({"steps": [
            {"kind": "hook", "url": receiver.url()},
            {"kind": "roles", "roles": [{"name": "member", "permissions": ["documents:read"]}]}
        ]}),
    )
    .await;
    let tenant = subscribed_tenant(db.pool(), "acme", "certifai").await;
    let clusters = provisioner::Clusters::with([(
        domain::provisioning::default_hook_secret_env("certifai"),
        secret.clone(),
    )]);
    let runner = runner_with(db.pool(), clusters, backups.path());
    settle(&runner).await;
    let waiting = state(db.pool(), tenant, "certifai").await;
    assert_eq!((waiting.state.as_str(), waiting.step), ("running", 0));
    assert!(waiting.hook_waiting_until.is_some());
    let received = receiver.received();
    assert_eq!(received.len(), 1);
    assert!(
        received[0].signed_by(&secret),
        "signed with the product's secret"
    );
    let body = received[0].json();
    assert_eq!(body["type"], "tenant.provisioning.requested");
    assert_eq!(body["data"]["tenant"]["slug"], "acme");

    let principal = crate::support::admin();
    registry::provisioning::report(
        db.pool(),
        &crate::support::actor(&principal),
        tenant,
        "certifai",
        &registry::provisioning::Report {
            request_id: received[0].id.clone(),
            outcome: registry::provisioning::Outcome::Complete,
        },
        chrono::TimeDelta::zero(),
    )
    .await
    .expect("reported");
    settle(&runner).await;
    let ready = state(db.pool(), tenant, "certifai").await;
    assert_eq!(ready.state, "ready");
    assert!(ready.hook_answered_at.is_some());
}

#[tokio::test]
async fn a_product_that_does_not_report_in_time_fails_that_attempt() {
    let db = TestDb::migrated().await;
    let backups = tempdir();
    let receiver = testkit::receiver::Receiver::start().await;
    receiver.answer(202);
    product(
        db.pool(),
        "certifai",
        json!({"steps": [{"kind": "hook", "url": receiver.url()}], "max_attempts": 1}),
    )
    .await;
    let tenant = subscribed_tenant(db.pool(), "acme", "certifai").await;
    let secret = webhooks::secret::generate().expect("a secret");
    let clusters = provisioner::Clusters::with([(
        domain::provisioning::default_hook_secret_env("certifai"),
        secret,
    )]);
    let runner = runner_with(db.pool(), clusters, backups.path());
    settle(&runner).await;
    sqlx::query("UPDATE tenant_provisioning SET next_attempt_at = now() - interval '1 second' WHERE tenant_id = $1")
        .bind(tenant)
        .execute(db.pool())
        .await
        .expect("the wait ends");
    settle(&runner).await;
    let failed = state(db.pool(), tenant, "certifai").await;
    assert_eq!(failed.state, "failed");
    assert_eq!(
        failed.last_error.as_deref(),
        Some("the product did not report back in time")
    );
    assert_eq!(
        receiver.received().len(),
        1,
        "the hook is not sent again on its own"
    );
}

pub fn tempdir() -> TempDir {
    TempDir::new()
}

/// A directory removed when dropped.
pub struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new() -> Self {
        let path = std::env::temp_dir().join(format!("tr-backups-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&path).expect("a directory");
        Self(path)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
