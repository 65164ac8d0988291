//! Idempotency claims have an identity: a request settles (completes or releases) only the
//! claim it made, however late its settlement arrives.

use storage::idempotency::{self, Claim, ClaimScope, RecordId};
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

/// Makes every claim look like one from before holders were recorded, made long ago: the
/// only claims age alone frees.
async fn abandon_every_claim(db: &TestDb) {
    sqlx::query(
        "UPDATE idempotency_records SET created_at = now() - interval '10 minutes', holder = NULL",
    )
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

/// Commits a change (a row of its own) as the request whose claim of `ID` is `token`'s.
async fn commit_a_change_as(db: &TestDb, token: Uuid) {
    ClaimScope::new(&ID, token)
        .run(async {
            let mut transaction = storage::begin(db.pool()).await.expect("begins");
            sqlx::query("CREATE TABLE IF NOT EXISTS changes (n int)")
                .execute(&mut *transaction)
                .await
                .expect("a table");
            sqlx::query("INSERT INTO changes VALUES (1)")
                .execute(&mut *transaction)
                .await
                .expect("the change");
            storage::commit(transaction).await.expect("commits");
        })
        .await;
}

/// A process (its holder, and the task keeping its lock) whose request claimed `ID` fresh
/// and committed its change, its answer not stored yet.
async fn committed_request(
    db: &TestDb,
) -> (
    idempotency::Holder,
    tokio::task::JoinHandle<()>,
    idempotency::InFlight,
) {
    let (holder, holding) = idempotency::Holder::start(db.pool())
        .await
        .expect("a holder");
    let token = Uuid::new_v4();
    let request = holder.in_flight(&ID);
    assert_eq!(
        idempotency::claim(db.pool(), &request, "h1", token)
            .await
            .expect("claim"),
        Claim::Fresh
    );
    commit_a_change_as(db, token).await;
    (holder, holding, request)
}

#[tokio::test]
async fn a_claim_whose_change_committed_is_never_run_again_once_its_request_is_gone() {
    let db = TestDb::migrated().await;
    let (holder, _holding, request) = committed_request(&db).await;
    assert_eq!(
        claim(&db, Uuid::new_v4()).await,
        Claim::InProgress,
        "another process waits while the request still works on its answer"
    );

    // The request dies between its commit and storing its answer.
    drop(request);
    let retry = holder.in_flight(&ID);
    assert_eq!(
        idempotency::claim(db.pool(), &retry, "h1", Uuid::new_v4())
            .await
            .expect("claim"),
        Claim::AnswerLost,
        "the retry is told the change was made, and does not make it again"
    );
    assert_eq!(
        idempotency::claim(db.pool(), &retry, "h2", Uuid::new_v4())
            .await
            .expect("claim"),
        Claim::Mismatch,
        "another request with the key is still refused"
    );
}

#[tokio::test]
async fn a_released_claim_whose_change_committed_answers_lost_in_every_process() {
    let db = TestDb::migrated().await;
    let first = Uuid::new_v4();
    assert_eq!(claim(&db, first).await, Claim::Fresh);
    commit_a_change_as(&db, first).await;
    idempotency::release(db.pool(), &ID, first)
        .await
        .expect("release");
    assert_eq!(
        claim(&db, Uuid::new_v4()).await,
        Claim::AnswerLost,
        "a claim whose change is made is not freed by its release"
    );
    abandon_every_claim(&db).await;
    assert_eq!(
        claim(&db, Uuid::new_v4()).await,
        Claim::AnswerLost,
        "nor by its age"
    );
}

#[tokio::test]
async fn a_claim_whose_process_is_gone_after_its_commit_answers_lost() {
    let db = TestDb::migrated().await;
    let (_holder, holding, request) = committed_request(&db).await;
    // The process dies: its holder's session goes with it.
    holding.abort();
    let _ = holding.await;
    // Its backend ends (and frees the lock) a moment after the socket closes.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match claim(&db, Uuid::new_v4()).await {
            Claim::AnswerLost => break,
            Claim::InProgress if std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            other => panic!("the retry of a committed change got {other:?}"),
        }
    }
    drop(request);
}

#[tokio::test]
async fn a_change_rolled_back_leaves_the_key_to_a_retry() {
    let db = TestDb::migrated().await;
    let first = Uuid::new_v4();
    assert_eq!(claim(&db, first).await, Claim::Fresh);
    ClaimScope::new(&ID, first)
        .run(async {
            let mut transaction = storage::begin(db.pool()).await.expect("begins");
            sqlx::query("SELECT 1")
                .execute(&mut *transaction)
                .await
                .expect("a read");
            drop(transaction);
        })
        .await;
    idempotency::release(db.pool(), &ID, first)
        .await
        .expect("release");
    assert_eq!(claim(&db, Uuid::new_v4()).await, Claim::Fresh);
}

#[tokio::test]
async fn a_commit_outside_any_request_marks_no_claim() {
    let db = TestDb::migrated().await;
    let first = Uuid::new_v4();
    assert_eq!(claim(&db, first).await, Claim::Fresh);
    let transaction = storage::begin(db.pool()).await.expect("begins");
    storage::commit(transaction).await.expect("commits");
    idempotency::release(db.pool(), &ID, first)
        .await
        .expect("release");
    assert_eq!(claim(&db, Uuid::new_v4()).await, Claim::Fresh);
}

#[tokio::test]
async fn a_change_whose_claim_a_retry_took_over_rolls_back_instead_of_committing() {
    let db = TestDb::migrated().await;
    let first = Uuid::new_v4();
    assert_eq!(claim(&db, first).await, Claim::Fresh);
    // The first request's claim counted as abandoned (its holder's session was cut, say)
    // and a retry took the key over while the first request was still running.
    abandon_every_claim(&db).await;
    let retry = Uuid::new_v4();
    assert_eq!(claim(&db, retry).await, Claim::Fresh);

    let committed = ClaimScope::new(&ID, first)
        .run(async {
            let mut transaction = storage::begin(db.pool()).await.expect("begins");
            sqlx::query("CREATE TABLE late_changes (n int)")
                .execute(&mut *transaction)
                .await
                .expect("the change");
            storage::commit(transaction).await
        })
        .await;
    let error = committed.expect_err("the first request's change does not commit");
    assert!(storage::is_unavailable(&error), "{error}");
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('late_changes') IS NOT NULL")
        .fetch_one(db.pool())
        .await
        .expect("the catalog");
    assert!(!exists, "the change rolled back");
    assert_eq!(
        claim(&db, Uuid::new_v4()).await,
        Claim::InProgress,
        "the retry still owns the key"
    );
}
