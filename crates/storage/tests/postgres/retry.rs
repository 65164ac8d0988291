//! `storage::with_retries` against a real deadlock: PostgreSQL aborts one of two
//! transactions that lock the same rows in opposite orders, and the aborted one runs again.

use std::sync::atomic::{AtomicU32, Ordering};

use sqlx::PgPool;
use testkit::TestDb;
use tokio::sync::Barrier;

async fn row(pool: &PgPool, slug: &str) -> uuid::Uuid {
    sqlx::query_scalar(
        "INSERT INTO tenants (slug, name, plan) VALUES ($1, $1, 'free') RETURNING id",
    )
    .bind(slug)
    .fetch_one(pool)
    .await
    .expect("a tenant row")
}

/// One transaction that locks `first`, waits (on its first attempt) until the other
/// transaction holds its own first row, then locks `second`.
async fn crossing(
    pool: &PgPool,
    first: uuid::Uuid,
    second: uuid::Uuid,
    both_hold_one: &Barrier,
    attempts: &AtomicU32,
) -> Result<(), sqlx::Error> {
    storage::with_retries(move || async move {
        let attempt = attempts.fetch_add(1, Ordering::SeqCst);
        let mut transaction = storage::begin(pool).await?;
        for (index, id) in [first, second].into_iter().enumerate() {
            sqlx::query("UPDATE tenants SET name = name || '.' WHERE id = $1")
                .bind(id)
                .execute(&mut *transaction)
                .await?;
            if index == 0 && attempt < 2 {
                both_hold_one.wait().await;
            }
        }
        storage::commit(transaction).await
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_aborted_by_a_deadlock_runs_again_and_commits() {
    let db = TestDb::migrated().await;
    let (a, b) = (row(db.pool(), "left").await, row(db.pool(), "right").await);
    let both_hold_one = Barrier::new(2);
    let attempts = AtomicU32::new(0);
    let (left, right) = tokio::join!(
        crossing(db.pool(), a, b, &both_hold_one, &attempts),
        crossing(db.pool(), b, a, &both_hold_one, &attempts),
    );
    assert!(left.is_ok(), "{left:?}");
    assert!(right.is_ok(), "{right:?}");
    assert_eq!(
        attempts.load(Ordering::SeqCst),
        3,
        "PostgreSQL aborted one of the two, which ran a second time"
    );
    let names: Vec<String> = sqlx::query_scalar("SELECT name FROM tenants ORDER BY slug")
        .fetch_all(db.pool())
        .await
        .expect("names");
    assert_eq!(
        names,
        vec!["left..", "right.."],
        "both committed, each once"
    );
}
