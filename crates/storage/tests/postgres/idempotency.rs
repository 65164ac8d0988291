//! Idempotency claims have an identity: a request settles (completes or releases) only the
//! claim it made, however late its settlement arrives.

use storage::idempotency::{self, Claim, RecordId};
use testkit::TestDb;
use uuid::Uuid;

const ID: RecordId<'static> = RecordId {
    principal: "tenant_key:t:k",
    method: "POST",
    path: "/v1/things",
    key: "k",
};

/// Claims `ID` as `token` for a request of its own (as each retry is).
async fn claim(db: &TestDb, token: Uuid) -> Claim {
    let (holder, _holding) = idempotency::Holder::start(db.pool())
        .await
        .expect("a holder");
    idempotency::claim(db.pool(), &holder.in_flight(&ID), "h1", token)
        .await
        .expect("claim")
}

async fn abandon_every_claim(db: &TestDb) {
    sqlx::query("UPDATE idempotency_records SET created_at = now() - interval '10 minutes'")
        .execute(db.pool())
        .await
        .expect("ageing the claims");
}

#[tokio::test]
async fn a_release_removes_only_the_claim_of_its_own_token() {
    let db = TestDb::migrated().await;
    let (first, retry) = (Uuid::new_v4(), Uuid::new_v4());
    assert_eq!(claim(&db, first).await, Claim::Fresh);

    idempotency::release(db.pool(), &ID, Uuid::new_v4())
        .await
        .expect("a stranger's release");
    assert_eq!(
        claim(&db, retry).await,
        Claim::InProgress,
        "another token released nothing"
    );

    idempotency::release(db.pool(), &ID, first)
        .await
        .expect("release");
    assert_eq!(claim(&db, retry).await, Claim::Fresh, "the retry runs");

    idempotency::release(db.pool(), &ID, first)
        .await
        .expect("a late second release of the first claim");
    assert_eq!(
        claim(&db, Uuid::new_v4()).await,
        Claim::InProgress,
        "the late release left the retry's claim alone"
    );
}

#[tokio::test]
async fn a_late_answer_of_an_abandoned_claim_does_not_overwrite_the_retrys_claim() {
    let db = TestDb::migrated().await;
    let (abandoned, retry) = (Uuid::new_v4(), Uuid::new_v4());
    assert_eq!(claim(&db, abandoned).await, Claim::Fresh);
    abandon_every_claim(&db).await;
    assert_eq!(claim(&db, retry).await, Claim::Fresh);

    let headers = serde_json::Map::new();
    let late = idempotency::complete(db.pool(), &ID, abandoned, 201, &headers, b"late")
        .await
        .expect("late answer");
    assert!(!late, "the abandoned claim's answer is not stored");
    assert_eq!(claim(&db, Uuid::new_v4()).await, Claim::InProgress);

    let stored = idempotency::complete(db.pool(), &ID, retry, 201, &headers, b"retry")
        .await
        .expect("answer");
    assert!(stored);
    assert_eq!(
        claim(&db, Uuid::new_v4()).await,
        Claim::Replay {
            status: 201,
            headers,
            sealed_body: b"retry".to_vec(),
        }
    );
    idempotency::release(db.pool(), &ID, retry)
        .await
        .expect("release after completion");
    assert!(
        matches!(claim(&db, Uuid::new_v4()).await, Claim::Replay { .. }),
        "a stored answer is never released"
    );
}
