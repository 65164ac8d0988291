//! `storage::events` against a real PostgreSQL: events commit and roll back with their
//! transaction, listeners hear of them only at commit, the feed filters, and its order holds
//! while many transactions commit out of the order they took their numbers in.

use std::collections::HashSet;
use std::time::Duration;

use domain::event::{EventType, Position, TypeFilter};
use serde_json::{Map, json};
use sqlx::PgPool;
use storage::events::{self, FeedFilter, FeedPage, NewEvent, StoredEvent};
use testkit::TestDb;
use uuid::Uuid;

fn new_event(event_type: EventType, tenant_id: Option<Uuid>) -> NewEvent {
    let mut data = Map::new();
    data.insert("n".to_owned(), json!(1));
    NewEvent {
        event_type,
        tenant_id,
        data,
    }
}

/// A page read once no committed event waits behind a transaction still running. The
/// horizon is the whole cluster's: other tests' transactions, in other databases, hold it
/// back for as long as they run.
async fn settled(pool: &PgPool, filter: &FeedFilter, after: Position, limit: i64) -> FeedPage {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut conn = pool.acquire().await.expect("a connection");
        let page = events::feed(&mut conn, filter, after, limit)
            .await
            .expect("the feed reads");
        if !page.held_back {
            return page;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "events stayed held back for ten seconds"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn all_events(pool: &PgPool) -> Vec<StoredEvent> {
    settled(pool, &FeedFilter::default(), Position::START, 20_000)
        .await
        .events
}

/// Waits for the next notification on `listener`, failing the test after ten seconds.
async fn next_payload(listener: &mut sqlx::postgres::PgListener) -> String {
    tokio::time::timeout(Duration::from_secs(10), listener.recv())
        .await
        .expect("a notification arrives")
        .expect("the listener works")
        .payload()
        .to_owned()
}

async fn mark(pool: &PgPool, payload: &str) {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(events::CHANNEL)
        .bind(payload)
        .execute(pool)
        .await
        .expect("a marker is sent");
}

#[tokio::test]
async fn an_appended_event_reads_back_with_its_payload() {
    let db = TestDb::migrated().await;
    let tenant = Uuid::new_v4();
    let mut transaction = storage::begin(db.pool()).await.expect("a transaction");
    let appended = events::append(
        &mut transaction,
        &new_event(EventType::TenantCreated, Some(tenant)),
    )
    .await
    .expect("appended");
    let started: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT now()")
        .fetch_one(&mut *transaction)
        .await
        .expect("the transaction's time");
    storage::commit(transaction).await.expect("committed");

    assert_eq!(appended.event.event_type, "tenant.created");
    assert_eq!(appended.event.tenant_id, Some(tenant));
    assert_eq!(
        appended.event.data,
        new_event(EventType::TenantCreated, None).data
    );
    assert_eq!(appended.event.occurred_at, started);
    assert_eq!(all_events(db.pool()).await, [appended]);
}

#[tokio::test]
async fn an_event_appended_in_a_rolled_back_transaction_leaves_nothing() {
    let db = TestDb::migrated().await;
    let mut listener = storage::listen(db.pool(), &[events::CHANNEL])
        .await
        .expect("listening");
    let mut transaction = storage::begin(db.pool()).await.expect("a transaction");
    events::append(&mut transaction, &new_event(EventType::TenantCreated, None))
        .await
        .expect("appended");
    transaction.rollback().await.expect("rolled back");
    mark(db.pool(), "after the rollback").await;

    assert_eq!(next_payload(&mut listener).await, "after the rollback");
    assert_eq!(all_events(db.pool()).await, []);
}

#[tokio::test]
async fn listeners_hear_of_events_when_their_transaction_commits_not_before() {
    let db = TestDb::migrated().await;
    let mut listener = storage::listen(db.pool(), &[events::CHANNEL])
        .await
        .expect("listening");
    let mut transaction = storage::begin(db.pool()).await.expect("a transaction");
    for _ in 0..3 {
        events::append(&mut transaction, &new_event(EventType::IdpCreated, None))
            .await
            .expect("appended");
    }
    mark(db.pool(), "while it runs").await;
    assert_eq!(next_payload(&mut listener).await, "while it runs");

    storage::commit(transaction).await.expect("committed");
    mark(db.pool(), "after the commit").await;
    // Three appends in one transaction are announced once.
    assert_eq!(next_payload(&mut listener).await, "");
    assert_eq!(next_payload(&mut listener).await, "after the commit");
}

#[tokio::test]
async fn the_feed_filters_by_type_patterns_and_tenant() {
    let db = TestDb::migrated().await;
    let (acme, globex) = (Uuid::new_v4(), Uuid::new_v4());
    let mut conn = db.pool().acquire().await.expect("a connection");
    for (event_type, tenant) in [
        (EventType::TenantCreated, Some(acme)),
        (EventType::TenantProductSubscribed, Some(acme)),
        (EventType::ProjectCreated, Some(globex)),
        (EventType::ApiKeyRevoked, Some(acme)),
        (EventType::WebhookEndpointDisabled, None),
    ] {
        events::append(&mut conn, &new_event(event_type, tenant))
            .await
            .expect("appended");
    }
    let read = async |patterns: &[&str], tenant_id| {
        let filter = FeedFilter {
            types: TypeFilter::parse(patterns.iter().copied()).expect("valid patterns"),
            tenant_id,
        };
        settled(db.pool(), &filter, Position::START, 100)
            .await
            .events
            .into_iter()
            .map(|stored| stored.event.event_type)
            .collect::<Vec<_>>()
    };

    assert_eq!(
        read(&["tenant.*"], None).await,
        ["tenant.created", "tenant.product.subscribed"]
    );
    assert_eq!(
        read(&["project.created", "api_key.*"], None).await,
        ["project.created", "api_key.revoked"]
    );
    assert_eq!(
        read(&[], Some(acme)).await,
        [
            "tenant.created",
            "tenant.product.subscribed",
            "api_key.revoked"
        ]
    );
    assert_eq!(
        read(&["tenant.created"], Some(globex)).await,
        Vec::<String>::new()
    );
    assert_eq!(read(&["*"], None).await.len(), 5);
}

#[tokio::test]
async fn a_page_resumes_where_the_last_one_ended_and_an_empty_one_keeps_its_place() {
    let db = TestDb::migrated().await;
    let mut conn = db.pool().acquire().await.expect("a connection");
    let mut appended = Vec::new();
    for _ in 0..5 {
        appended.push(
            events::append(&mut conn, &new_event(EventType::TenantUpdated, None))
                .await
                .expect("appended")
                .event
                .id,
        );
    }
    let all = FeedFilter::default();
    let first = settled(db.pool(), &all, Position::START, 3).await;
    assert_eq!(first.next, first.events[2].position);
    let second = settled(db.pool(), &all, first.next, 3).await;
    let read: Vec<Uuid> = first
        .events
        .iter()
        .chain(&second.events)
        .map(|stored| stored.event.id)
        .collect();
    assert_eq!(read, appended);

    let last = settled(db.pool(), &all, second.next, 3).await;
    assert_eq!(last.events, []);
    assert!(last.next >= second.next);
    let later = events::append(&mut conn, &new_event(EventType::TenantUpdated, None))
        .await
        .expect("appended");
    let resumed = settled(db.pool(), &all, last.next, 3).await;
    assert_eq!(resumed.events, [later]);
}

/// The naive reader's failure: a number taken inside a transaction commits after a larger
/// one. Here the first transaction holds the smaller number while the second commits; the
/// feed returns nothing until the first ends, then both, smaller number first.
#[tokio::test]
async fn an_event_that_commits_after_a_later_numbered_one_is_not_skipped() {
    let db = TestDb::migrated().await;
    let all = FeedFilter::default();
    let mut slow = storage::begin(db.pool()).await.expect("a transaction");
    let held = events::append(&mut slow, &new_event(EventType::TenantCreated, None))
        .await
        .expect("appended");
    let mut fast = storage::begin(db.pool()).await.expect("a transaction");
    let quick = events::append(&mut fast, &new_event(EventType::TenantUpdated, None))
        .await
        .expect("appended");
    storage::commit(fast).await.expect("committed");
    assert!(held.position.seq < quick.position.seq);

    let mut conn = db.pool().acquire().await.expect("a connection");
    let waiting = events::feed(&mut conn, &all, Position::START, 100)
        .await
        .expect("reads");
    assert_eq!(waiting.events, []);
    assert!(
        waiting.held_back,
        "a committed event waits behind the running transaction"
    );

    storage::commit(slow).await.expect("committed");
    let page = settled(db.pool(), &all, waiting.next, 100).await;
    assert_eq!(page.events, [held, quick]);
}

/// Why the order is (transaction, number) and not the number alone, even below the oldest
/// running transaction: a transaction that got its id first may take a larger number and
/// commit while a younger one still holds a smaller number.
#[tokio::test]
async fn an_older_transaction_with_a_larger_number_does_not_hide_a_younger_one() {
    let db = TestDb::migrated().await;
    let all = FeedFilter::default();
    let mut older = storage::begin(db.pool()).await.expect("a transaction");
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *older)
        .await
        .expect("the older transaction takes its id");
    let mut younger = storage::begin(db.pool()).await.expect("a transaction");
    let small = events::append(&mut younger, &new_event(EventType::TenantCreated, None))
        .await
        .expect("appended");
    let large = events::append(&mut older, &new_event(EventType::TenantUpdated, None))
        .await
        .expect("appended");
    storage::commit(older).await.expect("committed");
    assert!(small.position.seq < large.position.seq);

    let first = settled(db.pool(), &all, Position::START, 100).await;
    assert_eq!(first.events, [large]);

    storage::commit(younger).await.expect("committed");
    let second = settled(db.pool(), &all, first.next, 100).await;
    // A reader resuming after number `large.seq` would never return `small`.
    assert_eq!(second.events, [small]);
}

#[tokio::test]
async fn pruning_deletes_events_older_than_the_cutoff_a_batch_at_a_time() {
    let db = TestDb::migrated().await;
    let mut conn = db.pool().acquire().await.expect("a connection");
    for _ in 0..5 {
        events::append(&mut conn, &new_event(EventType::TenantUpdated, None))
            .await
            .expect("appended");
    }
    sqlx::query("UPDATE events SET occurred_at = now() - interval '40 days'")
        .execute(db.pool())
        .await
        .expect("aged");
    let fresh = events::append(&mut conn, &new_event(EventType::TenantUpdated, None))
        .await
        .expect("appended");
    let cutoff = chrono::Utc::now() - chrono::Duration::days(30);

    assert_eq!(
        events::prune(db.pool(), cutoff, 3).await.expect("prunes"),
        3
    );
    assert_eq!(
        events::prune(db.pool(), cutoff, 3).await.expect("prunes"),
        2
    );
    assert_eq!(
        events::prune(db.pool(), cutoff, 3).await.expect("prunes"),
        0
    );
    assert_eq!(all_events(db.pool()).await, [fresh]);
}

#[tokio::test]
async fn the_table_refuses_a_malformed_type_and_data_that_is_no_object() {
    let db = TestDb::migrated().await;
    for (event_type, data, constraint) in [
        ("Tenant.Created", "{}", "events_type_format"),
        ("tenant", "{}", "events_type_format"),
        ("tenant.created", "[]", "events_data_is_object"),
    ] {
        let error = sqlx::query("INSERT INTO events (type, data) VALUES ($1, $2::jsonb)")
            .bind(event_type)
            .bind(data)
            .execute(db.pool())
            .await
            .expect_err("refused");
        let refused_by = error
            .as_database_error()
            .and_then(|error| error.constraint())
            .map(str::to_owned);
        assert_eq!(
            refused_by.as_deref(),
            Some(constraint),
            "{event_type} {data}"
        );
    }
}

const WRITERS: usize = 8;
const EVENTS: usize = 10_000;

/// One writer: `count` events in small transactions of one to four, shaped to commit out of
/// the order they took their numbers in. Returns the ids it committed.
async fn write(
    pool: PgPool,
    writer: usize,
    count: usize,
    halfway: tokio::sync::watch::Receiver<usize>,
) -> Vec<Uuid> {
    let mut committed = Vec::with_capacity(count);
    let mut round = 0;
    let mut halfway = halfway;
    while committed.len() < count {
        round += 1;
        if committed.len() >= count / 2 && round % 2 == 0 {
            // Wait once, halfway, until the reader has read something: the reads overlap
            // the writes whatever the scheduler does.
            let _ = halfway.wait_for(|read| *read > 0).await;
        }
        let size = (1 + (round + writer) % 4).min(count - committed.len());
        let mut transaction = storage::begin(&pool).await.expect("a transaction");
        if round % 5 == 0 {
            // Take the transaction id before any number, then let the others run.
            sqlx::query("SELECT pg_current_xact_id()")
                .execute(&mut *transaction)
                .await
                .expect("an id");
            tokio::task::yield_now().await;
        }
        let mut ids = Vec::with_capacity(size);
        for _ in 0..size {
            let tenant = Uuid::from_u128(u128::try_from(writer).expect("small"));
            ids.push(
                events::append(
                    &mut transaction,
                    &new_event(EventType::TenantUpdated, Some(tenant)),
                )
                .await
                .expect("appended")
                .event
                .id,
            );
        }
        match round % 7 {
            // Hold the numbers while the others commit larger ones (the workload's shape,
            // not a wait for a condition).
            0 => tokio::time::sleep(Duration::from_millis(3)).await,
            3 => {
                transaction.rollback().await.expect("rolled back");
                continue;
            }
            _ => {}
        }
        storage::commit(transaction).await.expect("committed");
        committed.extend(ids);
    }
    committed
}

/// The test: 8 concurrent writers produce 10,000 events while a reader pages the
/// feed continuously; the reader sees every event exactly once, in feed order.
///
/// How we know it catches a naive reader: the same writers with a reader resuming after
/// the last insertion number (`seq > $cursor ORDER BY seq`) missed 1,600 to 1,900 of the
/// 10,000 events in each of three runs; with the horizon filter added but still ordered and
/// resumed by number alone, 900 to 1,300. (The insertion number is drawn before the
/// transaction id is assigned, and every fifth transaction takes its id early.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_writers_and_a_paging_reader_every_event_once_in_feed_order() {
    let db = TestDb::migrated().await;
    let (read_count, halfway) = tokio::sync::watch::channel(0usize);
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            tokio::spawn(write(
                db.pool().clone(),
                writer,
                EVENTS / WRITERS,
                halfway.clone(),
            ))
        })
        .collect();
    let (done, mut finished) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut ids = Vec::with_capacity(EVENTS);
        for writer in writers {
            ids.extend(writer.await.expect("a writer finished"));
        }
        let _ = done.send(ids);
    });

    let mut seen = Vec::with_capacity(EVENTS);
    let mut unique = HashSet::with_capacity(EVENTS);
    let mut cursor = Position::START;
    let mut last = Position::START;
    let mut written: Option<Vec<Uuid>> = None;
    loop {
        let mut conn = db.pool().acquire().await.expect("a connection");
        let page = events::feed(&mut conn, &FeedFilter::default(), cursor, 200)
            .await
            .expect("the feed reads");
        for stored in &page.events {
            assert!(
                stored.position > last,
                "feed order broken at {:?}",
                stored.position
            );
            last = stored.position;
            assert!(
                unique.insert(stored.event.id),
                "{} read twice",
                stored.event.id
            );
            seen.push(stored.event.id);
        }
        read_count.send_replace(seen.len());
        cursor = page.next;
        if page.events.is_empty() {
            if written.is_some() && !page.held_back {
                break;
            }
            // Polling is this reader's job; a pause keeps it from starving the writers.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        if written.is_none() {
            written = finished.try_recv().ok();
        }
    }

    let written: HashSet<Uuid> = written.expect("the writers finished").into_iter().collect();
    assert_eq!(written.len(), EVENTS);
    assert_eq!(
        unique, written,
        "the reader saw exactly the committed events"
    );
    let stored: Vec<Uuid> = all_events(db.pool())
        .await
        .into_iter()
        .map(|s| s.event.id)
        .collect();
    assert_eq!(seen, stored, "in feed order");
}
