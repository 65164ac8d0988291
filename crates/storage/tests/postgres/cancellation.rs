//! A transaction cancelled while it begins leaves its connection as it found it: the next
//! borrower's writes commit as they are answered.

use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use testkit::TestDb;

#[tokio::test]
async fn a_transaction_cancelled_while_beginning_leaks_no_open_transaction_into_the_pool() {
    let db = TestDb::migrated().await;
    // One connection, so every borrower gets the one each cancelled begin used.
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(db.url())
        .await
        .expect("a pool of one");
    sqlx::query("CREATE TABLE answered_writes (n int NOT NULL)")
        .execute(&pool)
        .await
        .expect("a table");
    // Cancels spread over the BEGIN round trip: before it is sent, while it is on the wire
    // and after its answer came.
    let steps: i32 = 200;
    for step in 0..steps {
        let delay = Duration::from_micros(u64::from(step.unsigned_abs()) * 5);
        let _ = tokio::time::timeout(delay, storage::begin(&pool)).await;
        sqlx::query("INSERT INTO answered_writes (n) VALUES ($1)")
            .bind(step)
            .execute(&pool)
            .await
            .expect("an answered write");
    }
    // Read from another session: only committed rows count.
    let committed: i64 = sqlx::query_scalar("SELECT count(*) FROM answered_writes")
        .fetch_one(db.pool())
        .await
        .expect("count");
    assert_eq!(
        committed,
        i64::from(steps),
        "every answered write committed"
    );
    let leaked: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity
         WHERE datname = current_database() AND state LIKE 'idle in transaction%'",
    )
    .fetch_one(db.pool())
    .await
    .expect("sessions");
    assert_eq!(leaked, 0, "no session was left inside a transaction");
}
