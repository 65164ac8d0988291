//! Trials end on their own: the sweep freezes a trial whose end has passed and announces one
//! that ends soon, once each, even with two replicas sweeping at the same moment. Time is the
//! caller's (an injectable clock in service), so nothing here waits for a trial to end.

use chrono::{DateTime, TimeDelta, Utc};
use domain::{Slug, TenantStatus};
use registry::trials::{self, TrialConfig};
use storage::PgPool;
use testkit::TestDb;
use uuid::Uuid;

/// A trial tenant whose trial ends at `ends_at` (`None`: a tenant that is no trial).
async fn tenant(pool: &PgPool, slug: &str, ends_at: Option<DateTime<Utc>>) -> Uuid {
    let mut conn = pool.acquire().await.expect("a connection");
    let mut tenant =
        storage::tenants::NewTenant::minimal(Slug::parse(slug).expect("a slug"), "Trying", "free");
    if ends_at.is_none() {
        tenant.status = TenantStatus::Active;
    }
    tenant.trial_ends_at = ends_at;
    storage::tenants::insert(&mut conn, &tenant)
        .await
        .expect("the tenant is inserted")
        .id
}

async fn status(pool: &PgPool, id: Uuid) -> String {
    sqlx::query_scalar("SELECT status::text FROM tenants WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .expect("the tenant")
}

/// The events of `event_type` about `id`.
async fn events(pool: &PgPool, event_type: &str, id: Uuid) -> Vec<serde_json::Value> {
    sqlx::query_scalar("SELECT data FROM events WHERE type = $1 AND tenant_id = $2")
        .bind(event_type)
        .bind(id)
        .fetch_all(pool)
        .await
        .expect("the events")
}

#[tokio::test]
async fn an_ended_trial_is_frozen_once_with_its_transition_audit_record_and_events() {
    let db = TestDb::migrated().await;
    let now = Utc::now();
    let ended = tenant(db.pool(), "ended", Some(now - TimeDelta::minutes(1))).await;
    let running = tenant(db.pool(), "running", Some(now + TimeDelta::days(10))).await;
    let no_trial = tenant(db.pool(), "paying", None).await;

    let swept = trials::sweep(db.pool(), now, &TrialConfig::default())
        .await
        .expect("the sweep");
    assert_eq!(swept.expired, vec![ended]);
    assert_eq!(status(db.pool(), ended).await, "frozen");
    assert_eq!(status(db.pool(), running).await, "trial");
    assert_eq!(status(db.pool(), no_trial).await, "active");

    let (reason, actor): (String, String) =
        sqlx::query_as("SELECT reason, actor_id FROM tenant_status_history WHERE tenant_id = $1")
            .bind(ended)
            .fetch_one(db.pool())
            .await
            .expect("the recorded transition");
    assert_eq!(
        (reason.as_str(), actor.as_str()),
        ("trial_expired", trials::ACTOR_ID)
    );
    let audited: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_log WHERE target_id = $1 AND action = 'tenant.transitioned'",
    )
    .bind(ended.to_string())
    .fetch_one(db.pool())
    .await
    .expect("the audit records");
    assert_eq!(audited, 1);
    let expired = events(db.pool(), "tenant.trial_expired", ended).await;
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0]["tenant"]["status"], "frozen");
    let moved = events(db.pool(), "tenant.status_changed", ended).await;
    assert_eq!(moved.len(), 1);
    assert_eq!(moved[0]["reason"], "trial_expired");

    let again = trials::sweep(
        db.pool(),
        now + TimeDelta::hours(1),
        &TrialConfig::default(),
    )
    .await
    .expect("a later sweep");
    assert!(
        again.expired.is_empty(),
        "a frozen trial is not frozen again"
    );
    assert_eq!(
        events(db.pool(), "tenant.trial_expired", ended).await.len(),
        1
    );
}

#[tokio::test]
async fn a_trial_ending_soon_is_announced_once_and_again_after_its_end_moves() {
    let db = TestDb::migrated().await;
    let now = Utc::now();
    let config = TrialConfig {
        warning: TimeDelta::days(3),
        ..TrialConfig::default()
    };
    let soon = tenant(db.pool(), "soon", Some(now + TimeDelta::days(2))).await;
    let later = tenant(db.pool(), "later", Some(now + TimeDelta::days(5))).await;

    let swept = trials::sweep(db.pool(), now, &config)
        .await
        .expect("the sweep");
    assert_eq!(swept.warned, vec![soon]);
    assert!(swept.expired.is_empty());
    let warning = events(db.pool(), "tenant.trial_ending", soon).await;
    assert_eq!(warning.len(), 1);
    assert_eq!(warning[0]["tenant"]["slug"], "soon");

    let next_day = now + TimeDelta::days(1);
    let swept = trials::sweep(db.pool(), next_day, &config)
        .await
        .expect("the next sweep");
    assert!(!swept.warned.contains(&soon), "warned once per trial end");
    assert_eq!(swept.warned, Vec::<Uuid>::new());

    // The trial is extended: its new end is announced when it comes near.
    sqlx::query("UPDATE tenants SET trial_ends_at = $2 WHERE id = $1")
        .bind(soon)
        .bind(now + TimeDelta::days(4))
        .execute(db.pool())
        .await
        .expect("extending the trial");
    let swept = trials::sweep(db.pool(), next_day + TimeDelta::days(1), &config)
        .await
        .expect("a sweep after the extension");
    assert_eq!(
        swept.warned.len(),
        2,
        "the extended trial and the later one"
    );
    assert!(swept.warned.contains(&soon) && swept.warned.contains(&later));
    assert_eq!(
        events(db.pool(), "tenant.trial_ending", soon).await.len(),
        2
    );
}

/// Sweeps from `replicas` replicas at the same moment; returns every tenant each froze and
/// each warned, together.
async fn sweep_concurrently(
    pool: &PgPool,
    now: DateTime<Utc>,
    replicas: usize,
) -> (Vec<Uuid>, Vec<Uuid>) {
    let config = TrialConfig::default();
    let sweeps = (0..replicas).map(|_| trials::sweep(pool, now, &config));
    let (mut expired, mut warned) = (Vec::new(), Vec::new());
    for swept in futures::future::join_all(sweeps).await {
        let swept = swept.expect("a replica's sweep");
        expired.extend(swept.expired);
        warned.extend(swept.warned);
    }
    expired.sort();
    warned.sort();
    (expired, warned)
}

#[tokio::test]
async fn replicas_sweeping_at_once_freeze_each_ended_trial_once() {
    let db = TestDb::migrated().await;
    let now = Utc::now();
    let mut ended = Vec::new();
    for n in 0..250 {
        ended.push(
            tenant(
                db.pool(),
                &format!("ended-{n}"),
                Some(now - TimeDelta::seconds(n)),
            )
            .await,
        );
    }
    ended.sort();
    let (expired, warned) = sweep_concurrently(db.pool(), now, 4).await;
    assert_eq!(
        expired, ended,
        "each ended trial frozen by exactly one replica"
    );
    assert!(warned.is_empty());
    let frozen_events: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE type = 'tenant.trial_expired'")
            .fetch_one(db.pool())
            .await
            .expect("the events");
    assert_eq!(frozen_events, 250);
}

#[tokio::test]
async fn replicas_sweeping_at_once_warn_of_each_ending_trial_once() {
    let db = TestDb::migrated().await;
    let now = Utc::now();
    let mut ending = Vec::new();
    for n in 0..250 {
        ending.push(
            tenant(
                db.pool(),
                &format!("ending-{n}"),
                Some(now + TimeDelta::minutes(n + 1)),
            )
            .await,
        );
    }
    ending.sort();
    let (expired, warned) = sweep_concurrently(db.pool(), now, 4).await;
    assert!(expired.is_empty());
    assert_eq!(
        warned, ending,
        "each trial ending soon warned by exactly one replica"
    );
    let warnings: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE type = 'tenant.trial_ending'")
            .fetch_one(db.pool())
            .await
            .expect("the events");
    assert_eq!(warnings, 250);
}
