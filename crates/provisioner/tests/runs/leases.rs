//! A run whose lease is lost while a step runs: the step is abandoned, and what it was running
//! on the product's cluster is stopped, not left to run beside the replica that takes over.

use chrono::TimeDelta;
use serde_json::json;
use testkit::TestDb;

use crate::plans::tempdir;
use crate::support::{
    cluster_of, migrations, product, runner_leasing, state, store, subscribed_tenant,
};

/// The migration that runs until it is stopped.
const SLEEPING: &str = "SELECT pg_sleep(600) /* abandoned-step */";

/// The backends of the test's database running [`SLEEPING`].
async fn sleeping(pool: &storage::PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid()
           AND query LIKE '%abandoned-step%' AND query NOT LIKE '%pg_stat_activity%'",
    )
    .fetch_one(pool)
    .await
    .expect("the backends")
}

#[tokio::test]
async fn a_step_abandoned_for_a_lost_lease_leaves_no_statement_of_it_running_on_the_cluster() {
    let db = TestDb::migrated().await;
    let backups = tempdir();
    product(
        db.pool(),
        "certifai",
        json!({"steps": [{"kind": "database", "isolation": "schema"}, {"kind": "migrations"}]}),
    )
    .await;
    migrations(db.pool(), "certifai", &[(1, SLEEPING)]).await;
    let tenant = subscribed_tenant(db.pool(), "acme", "certifai").await;
    let runner = runner_leasing(
        db.pool(),
        cluster_of("certifai", db.url()),
        store(backups.path()),
        TimeDelta::milliseconds(900),
    );
    let pass = tokio::spawn(async move { runner.run_once().await });
    let mut waited = 0;
    while sleeping(db.pool()).await == 0 {
        waited += 1;
        assert!(waited < 2_000, "the migration never started");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // Another replica takes the run: the lease is no longer the runner's.
    sqlx::query(
        "UPDATE tenant_provisioning SET lease_token = gen_random_uuid() WHERE tenant_id = $1",
    )
    .bind(tenant)
    .execute(db.pool())
    .await
    .expect("the lease is taken");
    let pass = pass.await.expect("the pass ran").expect("a pass");
    let ended: Vec<(&str, &str)> = pass
        .steps
        .iter()
        .map(|step| (step.step, step.outcome))
        .collect();
    assert_eq!(
        ended,
        [("database", "succeeded")],
        "the migration was abandoned, not reported"
    );
    assert_eq!(
        sleeping(db.pool()).await,
        0,
        "the abandoned migration still runs"
    );
    let run = state(db.pool(), tenant, "certifai").await;
    assert_eq!((run.step, run.migration_version), (1, None));
}
