//! A product's report on a hook it answered with 202: it names the hook request it answers,
//! so a late report meant for an earlier run cannot move a later one; a failure on the last
//! attempt ends the run, and the purge it is part of, as failed.

use registry::provisioning::{Outcome, Report};
use serde_json::json;
use storage::PgPool;
use testkit::TestDb;
use testkit::receiver::Receiver;
use uuid::Uuid;

use crate::plans::tempdir;
use crate::support::{actor, admin, events, product, settle, state, subscribed_tenant};
use crate::teardown::archived;

/// Tenant `acme` subscribed to `certifai`, whose plan is only a hook to `receiver` (which
/// answers 202) with `max_attempts`; and a runner holding the hook's secret.
async fn hook_only(
    db: &TestDb,
    receiver: &Receiver,
    max_attempts: u32,
    backups: &std::path::Path,
) -> (Uuid, provisioner::Provisioner) {
    receiver.answer(202);
    product(
        db.pool(),
        "certifai",
        json!({"steps": [{"kind": "hook", "url": receiver.url()}], "max_attempts": max_attempts}),
    )
    .await;
    let tenant = subscribed_tenant(db.pool(), "acme", "certifai").await;
    let secret = webhooks::secret::generate().expect("a secret");
    let runner = crate::support::runner_with(
        db.pool(),
        provisioner::Clusters::with([(
            domain::provisioning::default_hook_secret_env("certifai"),
            secret,
        )]),
        backups,
    );
    (tenant, runner)
}

pub async fn report(
    pool: &PgPool,
    tenant: Uuid,
    request_id: &str,
    outcome: Outcome,
) -> Result<storage::provisioning::RunRow, registry::RegistryError> {
    let principal = admin();
    let report = Report {
        request_id: request_id.to_owned(),
        outcome,
    };
    registry::provisioning::report(
        pool,
        &actor(&principal),
        tenant,
        "certifai",
        &report,
        chrono::TimeDelta::zero(),
    )
    .await
}

/// The `webhook-id` of the last hook request `receiver` got, also in its body.
pub fn last_request_id(receiver: &Receiver) -> String {
    let received = receiver.received();
    let last = received.last().expect("a hook request");
    assert_eq!(
        last.json()["data"]["report"]["request_id"],
        last.id.as_str()
    );
    last.id.clone()
}

/// Provisions the tenant through the hook, then starts its purge: the teardown hook waits.
async fn purging(
    db: &TestDb,
    receiver: &Receiver,
    tenant: Uuid,
    runner: &provisioner::Provisioner,
) -> (String, Uuid) {
    settle(runner).await;
    let provisioning_request = last_request_id(receiver);
    report(db.pool(), tenant, &provisioning_request, Outcome::Complete)
        .await
        .expect("reported");
    settle(runner).await;
    assert_eq!(state(db.pool(), tenant, "certifai").await.state, "ready");
    archived(db.pool(), tenant).await;
    let principal = admin();
    let operation = registry::tenants::purge(db.pool(), &actor(&principal), tenant, None)
        .await
        .expect("a purge");
    settle(runner).await;
    (provisioning_request, operation.id)
}

#[tokio::test]
async fn a_late_report_on_the_provisioning_hook_cannot_move_the_teardown() {
    let db = TestDb::migrated().await;
    let backups = tempdir();
    let receiver = Receiver::start().await;
    let (tenant, runner) = hook_only(&db, &receiver, 3, backups.path()).await;
    let (provisioning_request, _) = purging(&db, &receiver, tenant, &runner).await;
    let teardown_request = last_request_id(&receiver);
    assert_ne!(teardown_request, provisioning_request);
    for outcome in [Outcome::Complete, Outcome::Fail("late".to_owned())] {
        let refused = report(db.pool(), tenant, &provisioning_request, outcome).await;
        assert!(
            matches!(refused, Err(registry::RegistryError::Conflict { .. })),
            "{refused:?}"
        );
    }
    let waiting = state(db.pool(), tenant, "certifai").await;
    assert_eq!(
        (waiting.state.as_str(), waiting.step, waiting.attempts),
        ("deprovisioning", 0, 0)
    );
    assert!(waiting.hook_waiting_until.is_some(), "still waiting");
    let done = report(db.pool(), tenant, &teardown_request, Outcome::Complete)
        .await
        .expect("the teardown's own report");
    assert_eq!(done.step, 1);
}

#[tokio::test]
async fn a_products_failure_report_on_the_last_attempt_ends_the_purge_as_failed() {
    let db = TestDb::migrated().await;
    let backups = tempdir();
    let receiver = Receiver::start().await;
    let (tenant, runner) = hook_only(&db, &receiver, 1, backups.path()).await;
    let (_, operation) = purging(&db, &receiver, tenant, &runner).await;
    report(
        db.pool(),
        tenant,
        &last_request_id(&receiver),
        Outcome::Fail("the index is still in use".to_owned()),
    )
    .await
    .expect("reported");
    let ended = registry::provisioning::operation(db.pool(), operation)
        .await
        .expect("read")
        .expect("the operation");
    assert_eq!((ended.state.as_str(), ended.failed), ("failed", 1));
    assert!(
        storage::tenants::get(db.pool(), tenant)
            .await
            .expect("read")
            .is_some(),
        "not purged"
    );
    assert_eq!(
        events(db.pool(), "tenant.provisioning_failed", tenant)
            .await
            .len(),
        1
    );
}

#[tokio::test]
async fn a_tenant_restored_after_a_failed_purge_is_provisioned_again() {
    let db = TestDb::migrated().await;
    let backups = tempdir();
    let receiver = Receiver::start().await;
    let (tenant, runner) = hook_only(&db, &receiver, 1, backups.path()).await;
    purging(&db, &receiver, tenant, &runner).await;
    report(
        db.pool(),
        tenant,
        &last_request_id(&receiver),
        Outcome::Fail("the index is still in use".to_owned()),
    )
    .await
    .expect("reported");
    let torn = state(db.pool(), tenant, "certifai").await;
    assert_eq!(
        (torn.goal.as_str(), torn.state.as_str()),
        ("deprovision", "failed")
    );

    let principal = admin();
    let restore = registry::tenants::Transition {
        to: domain::TenantStatus::Frozen,
        reason: "came back".to_owned(),
    };
    registry::tenants::transition(db.pool(), &actor(&principal), tenant, restore)
        .await
        .expect("restored");
    let queued = state(db.pool(), tenant, "certifai").await;
    assert_eq!(
        (queued.goal.as_str(), queued.state.as_str()),
        ("provision", "pending")
    );
    settle(&runner).await;
    report(
        db.pool(),
        tenant,
        &last_request_id(&receiver),
        Outcome::Complete,
    )
    .await
    .expect("reported");
    settle(&runner).await;
    assert_eq!(state(db.pool(), tenant, "certifai").await.state, "ready");
}
