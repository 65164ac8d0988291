//! A run's lease while a step runs: lost, the step is abandoned and what it was running on
//! the product's cluster is stopped, not left to run beside the replica that takes over; a
//! renewal failing on a database error is tried again, and the step goes on.

use chrono::TimeDelta;
use provisioner::Pass;
use serde_json::json;
use testkit::TestDb;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::plans::tempdir;
use crate::support::{
    cluster_of, migrations, product, runner_leasing, state, store, subscribed_tenant,
};

/// How many backends of the test's database run the statement marked `marker` (and, with
/// `waiting`, wait for a lock).
fn running(marker: &str, waiting: bool) -> String {
    let lock = if waiting {
        "AND wait_event_type = 'Lock'"
    } else {
        ""
    };
    format!(
        "SELECT count(*) FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid() {lock}
           AND query LIKE '%{marker}%' AND query NOT LIKE '%pg_stat_activity%'"
    )
}

async fn count(pool: &storage::PgPool, query: &str) -> i64 {
    sqlx::query_scalar(query)
        .fetch_one(pool)
        .await
        .expect("a count")
}

/// Waits until `query` (one count) answers more than zero.
async fn await_count(pool: &storage::PgPool, query: &str) {
    for _ in 0..3_000 {
        if count(pool, query).await > 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("never came: {query}");
}

/// A tenant whose plan makes a schema and applies the one migration `sql`, and a pass of a
/// runner leasing for `lease` under way.
async fn migrating(
    db: &TestDb,
    sql: &str,
    lease: TimeDelta,
) -> (Uuid, JoinHandle<Result<Pass, provisioner::StepError>>) {
    let backups = tempdir();
    product(
        db.pool(),
        "certifai",
        json!({"steps": [{"kind": "database", "isolation": "schema"}, {"kind": "migrations"}]}),
    )
    .await;
    migrations(db.pool(), "certifai", &[(1, sql)]).await;
    let tenant = subscribed_tenant(db.pool(), "acme", "certifai").await;
    let runner = runner_leasing(
        db.pool(),
        cluster_of("certifai", db.url()),
        store(backups.path()),
        lease,
    );
    // The backups directory is not used by this plan.
    drop(backups);
    (tenant, tokio::spawn(async move { runner.run_once().await }))
}

/// The steps a pass ended, with their outcome.
async fn ended(
    pass: JoinHandle<Result<Pass, provisioner::StepError>>,
) -> Vec<(&'static str, &'static str)> {
    let pass = pass.await.expect("the pass ran").expect("a pass");
    pass.steps
        .iter()
        .map(|step| (step.step, step.outcome))
        .collect()
}

#[tokio::test]
async fn a_step_abandoned_for_a_lost_lease_leaves_no_statement_of_it_running_on_the_cluster() {
    let db = TestDb::migrated().await;
    let sleeping = running("abandoned-step", false);
    let (tenant, pass) = migrating(
        &db,
        "SELECT pg_sleep(600) /* abandoned-step */",
        TimeDelta::seconds(3),
    )
    .await;
    await_count(db.pool(), &sleeping).await;
    // Another replica takes the run: the lease is no longer the runner's.
    sqlx::query(
        "UPDATE tenant_provisioning SET lease_token = gen_random_uuid() WHERE tenant_id = $1",
    )
    .bind(tenant)
    .execute(db.pool())
    .await
    .expect("the lease is taken");
    assert_eq!(
        ended(pass).await,
        [("database", "succeeded")],
        "the migration was abandoned, not reported"
    );
    assert_eq!(
        count(db.pool(), &sleeping).await,
        0,
        "the abandoned migration still runs"
    );
    let run = state(db.pool(), tenant, "certifai").await;
    assert_eq!((run.step, run.migration_version), (1, None));
}

/// Makes every renewal of a lease fail with a database error while `fail_renewals` has a
/// row, counting the failures in a sequence (which a rollback does not undo).
const FAILING_RENEWALS: &str = "
CREATE TABLE fail_renewals (failing boolean);
CREATE SEQUENCE renewal_failures;
CREATE FUNCTION fail_renewal() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF EXISTS (SELECT 1 FROM fail_renewals) THEN
    PERFORM nextval('renewal_failures');
    RAISE EXCEPTION 'the registry''s database is failing';
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER fail_renewal BEFORE UPDATE OF lease_expires_at ON tenant_provisioning
  FOR EACH ROW EXECUTE FUNCTION fail_renewal();
";

#[tokio::test]
async fn a_renewal_failing_on_a_database_error_is_tried_again_and_the_step_goes_on() {
    let db = TestDb::migrated().await;
    sqlx::raw_sql(FAILING_RENEWALS)
        .execute(db.pool())
        .await
        .expect("renewals can be made to fail");
    let mut holder = db.pool().acquire().await.expect("a connection");
    sqlx::query("SELECT pg_advisory_lock(4242)")
        .execute(&mut *holder)
        .await
        .expect("the lock the migration waits for");
    // Renewed every 3 s; after a failure, tried again every 0.75 s until 1.5 s before the
    // lease's end.
    let (tenant, pass) = migrating(
        &db,
        "SELECT pg_advisory_xact_lock(4242) /* waits-for-the-test */",
        TimeDelta::seconds(9),
    )
    .await;
    await_count(db.pool(), &running("waits-for-the-test", true)).await;
    sqlx::query("INSERT INTO fail_renewals VALUES (true)")
        .execute(db.pool())
        .await
        .expect("renewals fail");
    await_count(
        db.pool(),
        "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM renewal_failures",
    )
    .await;
    sqlx::query("DELETE FROM fail_renewals")
        .execute(db.pool())
        .await
        .expect("renewals succeed again");
    sqlx::query("SELECT pg_advisory_unlock(4242)")
        .execute(&mut *holder)
        .await
        .expect("the migration goes on");
    assert_eq!(
        ended(pass).await,
        [("database", "succeeded"), ("migrations", "succeeded")]
    );
    let run = state(db.pool(), tenant, "certifai").await;
    assert_eq!(
        (run.state.as_str(), run.migration_version),
        ("ready", Some(1))
    );
}
