//! Faults under load, against the real binary: PostgreSQL stopped and started under writers
//! that retry with their `Idempotency-Key`s, and the server killed with SIGKILL mid-load and
//! started again on the same database. Each logical write carries one key over all its
//! attempts; afterwards the database holds it exactly once and the audit chains verify.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};
use testkit::outage::OwnServer;
use testkit::serving::{self, Answer};
use testkit::{Running, TestDb};
use tokio::task::JoinHandle;
use tokio::time::Instant;

const BINARY: &str = env!("CARGO_BIN_EXE_tenant-registry");
const WRITERS: usize = 8;
const WRITES_EACH: usize = 8;
/// One attempt's patience: longer than the server waits for a pooled connection (5 s), so
/// an attempt during an outage ends in the server's 503, not here.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(8);
const RETRY_FIRST: Duration = Duration::from_millis(20);
const RETRY_MAX: Duration = Duration::from_millis(400);
/// Every logical write has its final answer within this, faults included: far less than
/// the five minutes after which a claim counts as abandoned by age alone.
const CONVERGENCE: Duration = Duration::from_secs(45);
/// How long the test waits for the load to reach a point (so many writes acknowledged).
const PATIENCE: Duration = Duration::from_secs(30);

/// One logical write: a POST, and the key all its attempts carry.
#[derive(Debug, Clone)]
struct Write {
    key: String,
    path: &'static str,
    body: Value,
}

/// A logical write and its final answer (any answer but a 503 or an in-progress 409).
#[derive(Debug)]
struct Outcome {
    write: Write,
    answer: Answer,
}

/// What the writers have seen so far.
#[derive(Default)]
struct Progress {
    /// Keys answered 2xx, as they were answered.
    acknowledged: Mutex<Vec<String>>,
    /// Attempts that met a fault (no answer, a 503, an in-progress 409).
    refused: AtomicUsize,
}

impl Progress {
    fn acknowledged(&self) -> Vec<String> {
        self.acknowledged.lock().expect("not poisoned").clone()
    }
}

/// A tenant per write, for `writer`; and, when `with_audit`, an ingested event into it.
fn plan(writer: usize, with_audit: bool) -> Vec<Write> {
    (0..WRITES_EACH)
        .flat_map(|n| {
            let slug = format!("writer-{writer}-{n}");
            let tenant = Write {
                key: format!("tenant-{writer}-{n}"),
                path: "/v1/tenants",
                body: json!({"slug": slug, "name": format!("Writer {writer} no. {n}"), "plan": "free"}),
            };
            let key = format!("audit-{writer}-{n}");
            let event = Write {
                body: json!({"action": "fault.test", "crud": "c", "group": {"id": slug},
                             "description": key}),
                key,
                path: "/v1/audit/events",
            };
            std::iter::once(tenant).chain(with_audit.then_some(event))
        })
        .collect()
}

/// A key whose first request made its change, then died before its answer was kept: final,
/// and the change is made once.
fn is_answer_lost(answer: &Answer) -> bool {
    answer.status == 409
        && answer.json()["type"]
            .as_str()
            .is_some_and(|kind| kind.ends_with("/problems/idempotency-answer-lost"))
}

fn is_fault(answer: &Answer) -> bool {
    answer.status == 503
        || (answer.status == 409
            && answer.json()["type"]
                .as_str()
                .is_some_and(|kind| kind.ends_with("/problems/idempotency-in-progress")))
}

/// Sends `write` with its key until an answer that is not a fault, backing off between
/// attempts; panics when there is none within [`CONVERGENCE`].
async fn until_final(port: u16, admin: &str, write: Write, progress: &Progress) -> Outcome {
    let deadline = Instant::now() + CONVERGENCE;
    let mut wait = RETRY_FIRST;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let sent = tokio::time::timeout(
            ATTEMPT_TIMEOUT,
            serving::send(
                port,
                "POST",
                write.path,
                admin,
                &[("Idempotency-Key", &write.key)],
                Some(&write.body),
            ),
        )
        .await;
        match sent {
            Ok(Ok(answer)) if !is_fault(&answer) => {
                if (200..300).contains(&answer.status) {
                    progress
                        .acknowledged
                        .lock()
                        .expect("not poisoned")
                        .push(write.key.clone());
                }
                return Outcome { write, answer };
            }
            last => {
                progress.refused.fetch_add(1, Ordering::Relaxed);
                assert!(
                    Instant::now() < deadline,
                    "{} has no final answer after {attempt} attempts; the last: {last:?}",
                    write.key
                );
            }
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(RETRY_MAX);
    }
}

/// [`WRITERS`] clients, each sending its writes one after the other.
struct Load {
    progress: Arc<Progress>,
    writers: Vec<JoinHandle<Vec<Outcome>>>,
}

impl Load {
    fn start(port: u16, admin: &str, with_audit: bool) -> Self {
        let progress = Arc::new(Progress::default());
        let writers = (0..WRITERS)
            .map(|writer| {
                let (admin, progress) = (admin.to_owned(), progress.clone());
                tokio::spawn(async move {
                    let mut outcomes = Vec::new();
                    for write in plan(writer, with_audit) {
                        outcomes.push(until_final(port, &admin, write, &progress).await);
                    }
                    outcomes
                })
            })
            .collect();
        Self { progress, writers }
    }

    /// Waits (at most [`PATIENCE`]) until `reached` holds of the progress.
    async fn until(&self, what: &str, reached: impl Fn(&Progress) -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !reached(&self.progress) {
            assert!(Instant::now() < deadline, "the load never reached: {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn finish(self) -> Vec<Outcome> {
        let mut outcomes = Vec::new();
        for writer in self.writers {
            outcomes.extend(writer.await.expect("a writer finished"));
        }
        outcomes
    }
}

fn drain(log: std::io::Lines<std::io::BufReader<std::process::ChildStderr>>) {
    std::thread::spawn(move || {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open("/tmp/faults-server.log")
            .unwrap();
        for line in log.map_while(Result::ok) {
            let _ = writeln!(f, "{line}");
        }
    });
}

fn start_server(database_url: &str, port: u16) -> Running {
    let (server, log) = serving::serve(serving::command(BINARY), database_url, port);
    drain(log);
    server
}

/// Every tenant's id by slug, and how many rows each slug has.
async fn tenants(database: &mut PgConnection) -> BTreeMap<String, (String, i64)> {
    let rows: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT slug, min(id::text), count(*) FROM tenants GROUP BY slug")
            .fetch_all(database)
            .await
            .expect("the tenants");
    rows.into_iter()
        .map(|(slug, id, rows)| (slug, (id, rows)))
        .collect()
}

/// Every planned write is stored exactly once: each tenant once, with the id its 201 named,
/// and each ingested event once.
async fn assert_each_write_stored_once(
    database: &mut PgConnection,
    outcomes: &[Outcome],
    stored: &BTreeMap<String, (String, i64)>,
) {
    let tenant_writes: Vec<&Outcome> = outcomes
        .iter()
        .filter(|outcome| outcome.write.path == "/v1/tenants")
        .collect();
    assert_eq!(tenant_writes.len(), WRITERS * WRITES_EACH);
    assert_eq!(
        stored.len(),
        tenant_writes.len(),
        "no tenant lost: {stored:?}"
    );
    for Outcome { write, answer } in tenant_writes {
        let slug = write.body["slug"].as_str().expect("a slug");
        let (id, rows) = &stored[slug];
        assert_eq!(*rows, 1, "{slug} stored once");
        if answer.status == 201 {
            assert_eq!(
                answer.json()["id"].as_str(),
                Some(id.as_str()),
                "{}",
                write.key
            );
        }
    }
    let events: Vec<(String, i64)> = sqlx::query_as(
        "SELECT description, count(*) FROM audit_log WHERE action = 'fault.test'
         GROUP BY description ORDER BY description",
    )
    .fetch_all(&mut *database)
    .await
    .expect("the ingested events");
    let mut sent: Vec<(String, i64)> = outcomes
        .iter()
        .filter(|outcome| outcome.write.path == "/v1/audit/events")
        .map(|outcome| (outcome.write.key.clone(), 1))
        .collect();
    sent.sort();
    assert_eq!(events, sent, "one event per ingest written");
}

/// Soon no key is claimed without an answer: an answer the outage kept the server from
/// storing is stored once the database is back. A key whose change committed but whose
/// answer is lost is settled too: it answers `idempotency-answer-lost`, never "in progress".
async fn assert_no_claim_stays_in_progress(database: &mut PgConnection) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let in_progress: Vec<String> = sqlx::query_scalar(
            "SELECT key FROM idempotency_records
                 WHERE status IS NULL AND change_committed_at IS NULL",
        )
        .fetch_all(&mut *database)
        .await
        .expect("the idempotency records");
        if in_progress.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "keys still in progress: {in_progress:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sending each key that was answered 2xx again replays that answer: same status and body
/// (the same tenant id), marked as a replay.
async fn assert_replays(port: u16, admin: &str, outcomes: &[Outcome]) {
    for Outcome { write, answer } in outcomes.iter().filter(|o| o.answer.status < 300) {
        let replay = serving::send(
            port,
            "POST",
            write.path,
            admin,
            &[("Idempotency-Key", &write.key)],
            Some(&write.body),
        )
        .await
        .expect("the replay is answered");
        assert_eq!(
            (replay.status, replay.header("idempotent-replayed")),
            (answer.status, Some("true")),
            "{}: {replay:?}",
            write.key
        );
        assert_eq!(replay.json(), answer.json(), "{}", write.key);
    }
}

/// The chain of every tenant in `slugs`, and the chain of no tenant, verify in full.
async fn assert_chains_verify(port: u16, admin: &str, slugs: impl Iterator<Item = String>) {
    let queries = slugs
        .map(|slug| format!("?group_id={slug}&mode=full"))
        .chain(["?mode=full".to_owned()]);
    for query in queries {
        let path = format!("/v1/audit/verify{query}");
        let report = serving::send(port, "GET", &path, admin, &[], None)
            .await
            .expect("the verification is answered");
        assert_eq!(report.status, 200, "{path}: {report:?}");
        let report = report.json();
        assert_eq!(
            (&report["ok"], &report["broken"]),
            (&json!(true), &json!([])),
            "{path}: {report}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_retrying_with_their_keys_through_a_database_restart_converge_without_duplicates_or_losses()
 {
    let postgres = OwnServer::start("faults-postgres-restart").await;
    let db = TestDb::migrated_on(&postgres.url()).await;
    let admin = serving::admin_key(BINARY, db.url());
    let port = serving::free_port();
    let _server = start_server(db.url(), port);

    let load = Load::start(port, &admin, true);
    load.until("two writes acknowledged per writer", |progress| {
        progress.acknowledged().len() >= 2 * WRITERS
    })
    .await;
    postgres.stop().await;
    let refused = load.progress.refused.load(Ordering::Relaxed);
    // Down until the writers have met it, at least as many times as there are writers.
    load.until("the writers meeting the outage", |progress| {
        progress.refused.load(Ordering::Relaxed) >= refused + WRITERS
    })
    .await;
    postgres.start_again().await;
    let outcomes = load.finish().await;

    // A commit whose acknowledgement the restart cut off answers as made, never twice.
    for Outcome { write, answer } in &outcomes {
        assert!(
            answer.status == 201 || is_answer_lost(answer),
            "{}: {answer:?}",
            write.key
        );
    }
    let mut database = PgConnection::connect(db.url()).await.expect("connects");
    let stored = tenants(&mut database).await;
    assert_each_write_stored_once(&mut database, &outcomes, &stored).await;
    assert_no_claim_stays_in_progress(&mut database).await;
    assert_replays(port, &admin, &outcomes).await;
    assert_chains_verify(port, &admin, stored.into_keys()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_load_loses_no_acknowledged_write_and_strands_no_key() {
    let db = TestDb::migrated().await;
    let admin = serving::admin_key(BINARY, db.url());
    let port = serving::free_port();
    let mut first = start_server(db.url(), port);

    // Tenants and ingested events: an event has no natural key, so only the claim's mark,
    // committed with the change, keeps a retry from storing it twice when the kill falls
    // between the commit and the stored answer.
    let load = Load::start(port, &admin, true);
    load.until("two writes acknowledged per writer", |progress| {
        progress.acknowledged().len() >= 2 * WRITERS
    })
    .await;
    first.0.kill().expect("SIGKILL");
    first.0.wait().expect("the first server is gone");
    let acknowledged = load.progress.acknowledged();

    let mut database = PgConnection::connect(db.url()).await.expect("connects");
    let stored = tenants(&mut database).await;
    let ingested: Vec<String> =
        sqlx::query_scalar("SELECT description FROM audit_log WHERE action = 'fault.test'")
            .fetch_all(&mut database)
            .await
            .expect("the ingested events");
    for key in &acknowledged {
        let kept = match key.strip_prefix("tenant-") {
            Some(writer) => stored.contains_key(&format!("writer-{writer}")),
            None => ingested.contains(key),
        };
        assert!(kept, "{key} was acknowledged, then lost");
    }

    let _second = start_server(db.url(), port);
    let outcomes = load.finish().await;
    let stored = tenants(&mut database).await;
    for Outcome { write, answer } in &outcomes {
        assert!(
            answer.status == 201 || (is_answer_lost(answer) && !acknowledged.contains(&write.key)),
            "{}: {answer:?}",
            write.key
        );
    }
    assert_each_write_stored_once(&mut database, &outcomes, &stored).await;
    assert_no_claim_stays_in_progress(&mut database).await;
    assert_replays(port, &admin, &outcomes).await;
    assert_chains_verify(port, &admin, stored.into_keys()).await;
}
