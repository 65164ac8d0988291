//! Which due runs a runner leases: one tenant's many waiting runs do not keep other tenants'
//! runs from being leased.

use chrono::{TimeDelta, Utc};
use serde_json::json;
use testkit::TestDb;

use crate::support::{product, subscribe, subscribed_tenant};

#[tokio::test]
async fn a_tenant_with_many_runs_waiting_behind_its_running_one_does_not_starve_other_tenants() {
    let db = TestDb::migrated().await;
    let plan = json!({"steps": [{"kind": "database", "isolation": "schema"}]});
    let products: Vec<String> = (0..24).map(|n| format!("product-{n:02}")).collect();
    for id in &products {
        product(db.pool(), id, plan.clone()).await;
    }
    let busy = subscribed_tenant(db.pool(), "busy", &products[0]).await;
    for id in &products[1..] {
        subscribe(db.pool(), busy, id).await;
    }
    let waiting = subscribed_tenant(db.pool(), "waiting", &products[0]).await;
    let also_waiting = subscribed_tenant(db.pool(), "also-waiting", &products[1]).await;
    // The busy tenant's runs were due first, and one of them is running on a replica.
    sqlx::query(
        "UPDATE tenant_provisioning SET next_attempt_at = now() - interval '1 hour' WHERE tenant_id = $1",
    )
    .bind(busy)
    .execute(db.pool())
    .await
    .expect("due first");
    sqlx::query(
        "UPDATE tenant_provisioning SET lease_token = gen_random_uuid(),
             lease_expires_at = now() + interval '1 hour'
         WHERE tenant_id = $1 AND product_id = $2",
    )
    .bind(busy)
    .bind(&products[0])
    .execute(db.pool())
    .await
    .expect("one runs");

    let lease = TimeDelta::seconds(60);
    let first = registry::provisioning::runs::claim(db.pool(), Utc::now(), lease, 1)
        .await
        .expect("claimed");
    let tenants: Vec<uuid::Uuid> = first.iter().map(|run| run.row.tenant_id).collect();
    assert_eq!(
        tenants,
        [waiting],
        "the earliest other tenant's run, with one slot"
    );
    let rest = registry::provisioning::runs::claim(db.pool(), Utc::now(), lease, 8)
        .await
        .expect("claimed");
    let tenants: Vec<uuid::Uuid> = rest.iter().map(|run| run.row.tenant_id).collect();
    assert_eq!(tenants, [also_waiting], "none of the busy tenant's runs");
}
