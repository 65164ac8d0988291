//! The audit log under attack and under load: writers that would deadlock each other,
//! events whose stored form differs from their sent form, tampering around checkpoints,
//! and verifications that would occupy the server.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU32, Ordering};

use axum::http::{Method, StatusCode};
use chrono::{DateTime, FixedOffset, SecondsFormat, Utc};
use domain::Scope;
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use serde_json::{Value, json};
use testkit::{TestApp, TestResponse};

async fn ingest(app: &TestApp, key: &str, body: Value) -> TestResponse {
    app.request(Method::POST, "/v1/audit/events")
        .bearer(key)
        .json(&body)
        .send()
        .await
}

async fn verify(app: &TestApp, key: &str, query: &str) -> TestResponse {
    app.request(Method::GET, &format!("/v1/audit/verify{query}"))
        .bearer(key)
        .send()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ingesting_and_patching_one_tenant_at_once_never_deadlocks() {
    // The mix that deadlocked: 8 clients ingesting for a tenant while 8 others PATCH it,
    // 30 requests each, every client sending its next as soon as its last is answered.
    const CLIENTS: usize = 8;
    const REQUESTS: usize = 30;
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    let tenant = app.tenant("acme").await;
    let (_, writer) = app.key(Some(tenant), &[Scope::AuditWrite]).await;
    let ingests = (0..CLIENTS).map(|client| {
        let (app, writer) = (&app, &writer);
        async move {
            let mut failures = Vec::new();
            for request in 0..REQUESTS {
                let batch: Vec<Value> = (0..10)
                    .map(|n| json!({"action": "doc.read", "crud": "r", "group": {"id": "acme"},
                                    "description": format!("client {client} request {request} read {n}")}))
                    .collect();
                let response = ingest(app, writer, Value::Array(batch)).await;
                if response.status != StatusCode::CREATED {
                    failures.push(format!(
                        "ingest {client}/{request}: {} {}",
                        response.status,
                        String::from_utf8_lossy(&response.body)
                    ));
                }
            }
            failures
        }
    });
    let patches = (0..CLIENTS).map(|client| {
        let (app, admin) = (&app, &admin);
        async move {
            let mut failures = Vec::new();
            for request in 0..REQUESTS {
                let response = app
                    .request(Method::PATCH, &format!("/v1/tenants/{tenant}"))
                    .bearer(admin)
                    .raw(
                        "application/merge-patch+json",
                        json!({"name": format!("Acme {client}-{request}")}).to_string(),
                    )
                    .send()
                    .await;
                if response.status != StatusCode::OK {
                    failures.push(format!(
                        "patch {client}/{request}: {} {}",
                        response.status,
                        String::from_utf8_lossy(&response.body)
                    ));
                }
            }
            failures
        }
    });
    let (ingested, patched) = futures::future::join(
        futures::future::join_all(ingests),
        futures::future::join_all(patches),
    )
    .await;
    let failures: Vec<String> = ingested.into_iter().chain(patched).flatten().collect();
    assert!(
        failures.is_empty(),
        "{} failed: {failures:#?}",
        failures.len()
    );
    let report = verify(&app, &admin, "?group_id=acme").await.json();
    assert_eq!(report["ok"], true, "{report}");
}

#[tokio::test]
async fn events_stored_in_another_notation_than_sent_still_verify() {
    let app = TestApp::new().await;
    let tenant = app.tenant("acme").await;
    let (_, writer) = app.key(Some(tenant), &[Scope::AuditWrite]).await;
    let (_, reader) = app.key(Some(tenant), &[Scope::AuditRead]).await;
    let tricky = [
        json!({"source_ip": "::1.2.3.4"}),
        json!({"source_ip": "::ffff:1.2.3.4"}),
        json!({"source_ip": "2001:DB8::A"}),
        json!({"source_ip": "0000:0000:0000:0000:0000:0000:0102:0304"}),
        json!({"source_ip": "::2"}),
        json!({"created": "2026-01-02T03:04:05.123456789Z"}),
        json!({"created": "2026-01-02T03:04:05.999999999+05:30"}),
        json!({"description": "Zoë 🎉 \u{202e}txt.exe ﷽ e\u{301}", "fields": {"ключ": "值", "e\u{301}": "é"}}),
        json!({"description": "tab\there\r\nnew line \u{1} \u{7f}", "actor": {"id": "\u{2028}", "fields": {"": ""}}}),
        json!({"group": {"id": "acme", "name": "Ａｃｍｅ"}, "target": {"id": "t", "type": "\"quoted\"", "fields": {"z": "1", "a": "2", "é": "3"}}}),
    ];
    let batch: Vec<Value> = tricky
        .iter()
        .map(|fields| {
            let mut event = json!({"action": "doc.read", "crud": "r"});
            event
                .as_object_mut()
                .expect("an object")
                .extend(fields.as_object().expect("an object").clone());
            event
        })
        .collect();
    let stored = ingest(&app, &writer, Value::Array(batch)).await;
    assert_eq!(
        stored.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&stored.body)
    );
    let printed: String = sqlx::query_scalar(
        "SELECT host(source_ip) FROM audit_log WHERE source_ip = '::1.2.3.4'::inet",
    )
    .fetch_one(app.db.pool())
    .await
    .expect("the stored address");
    assert_eq!(
        printed, "::1.2.3.4",
        "PostgreSQL prints it unlike Rust (::102:304)"
    );
    let report = verify(&app, &reader, "?mode=full").await.json();
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(
        report["events_checked"], 12,
        "the ten events and the records of the two keys' creation"
    );
}

/// Text of any characters but NUL (which PostgreSQL cannot store, and ingest refuses).
fn any_text(most: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(
        any::<char>().prop_filter("not NUL", |c| *c != '\0'),
        0..most,
    )
    .prop_map(|chars| chars.into_iter().collect())
}

/// An address in one of the notations clients use.
fn any_address() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<u32>().prop_map(|ip| Ipv4Addr::from(ip).to_string()),
        any::<u32>().prop_map(|ip| format!("::{}", Ipv4Addr::from(ip))),
        any::<u32>().prop_map(|ip| format!("::FFFF:{}", Ipv4Addr::from(ip))),
        any::<u128>().prop_map(|ip| Ipv6Addr::from(ip).to_string().to_uppercase()),
        any::<u128>().prop_map(|ip| {
            let groups = Ipv6Addr::from(ip).segments();
            groups.map(|group| format!("{group:04x}")).join(":")
        }),
    ]
}

/// Any time in the accepted window, to the nanosecond, in any offset.
fn any_created() -> impl Strategy<Value = String> {
    (0..Utc::now().timestamp(), 0u32..1_000_000_000, -14i32..=14).prop_map(
        |(seconds, nanos, hours)| {
            let offset = FixedOffset::east_opt(hours * 3600).expect("a valid offset");
            DateTime::from_timestamp(seconds, nanos)
                .expect("in range")
                .with_timezone(&offset)
                .to_rfc3339_opts(SecondsFormat::Nanos, false)
        },
    )
}

fn any_fields() -> impl Strategy<Value = BTreeMap<String, String>> {
    proptest::collection::btree_map(any_text(12), any_text(24), 0..4)
}

fn any_party() -> impl Strategy<Value = Value> {
    (
        proptest::option::of(any_text(24)),
        proptest::option::of(any_text(24)),
        proptest::option::of(any_text(24)),
        any_fields(),
    )
        .prop_map(|(id, name, href, fields)| {
            json!({"id": id, "name": name, "href": href, "fields": fields})
        })
}

/// Any event the ingest rules accept (the group is added per case).
fn any_event() -> impl Strategy<Value = Value> {
    (
        (
            any_text(40).prop_filter("not blank", |action| !action.trim().is_empty()),
            prop::sample::select(vec!["c", "r", "u", "d"]),
            proptest::option::of(any_address()),
            proptest::option::of(any_text(200)),
            proptest::option::of(any_created()),
            any::<(bool, bool)>(),
        ),
        (
            any_party(),
            any_party(),
            any_fields(),
            proptest::option::of(any_text(12)),
            proptest::option::of(any_text(12)),
            proptest::option::of(any_text(24)),
        ),
    )
        .prop_map(
            |((action, crud, source_ip, description, created, flags), rest)| {
                let (actor, target, fields, component, version, group_name) = rest;
                json!({"action": action, "crud": crud, "source_ip": source_ip,
                       "description": description, "created": created,
                       "is_failure": flags.0, "is_anonymous": flags.1, "actor": actor,
                       "target": target, "fields": fields, "component": component,
                       "version": version, "group": {"name": group_name}})
            },
        )
}

#[test]
fn any_event_the_api_accepts_verifies_once_stored() {
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let app = runtime.block_on(TestApp::new());
    let admin = runtime.block_on(app.admin_key());
    let tenants = AtomicU32::new(0);
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 48,
        ..ProptestConfig::default()
    });
    let outcome = runner.run(&any_event(), |mut event| {
        runtime.block_on(async {
            let slug = format!("tenant-{}", tenants.fetch_add(1, Ordering::Relaxed));
            app.tenant(&slug).await;
            event["group"]["id"] = json!(slug);
            let stored = ingest(&app, &admin, event.clone()).await;
            prop_assert_eq!(stored.status, StatusCode::CREATED, "refused: {}", event);
            let report = verify(&app, &admin, &format!("?group_id={slug}&mode=full"))
                .await
                .json();
            prop_assert_eq!(
                &report["ok"],
                &json!(true),
                "{} does not verify: {}",
                event,
                report
            );
            Ok(())
        })
    });
    runtime.block_on(async move { drop(app) });
    if let Err(failure) = outcome {
        panic!("{failure}");
    }
}

/// A tenant whose chain holds `count` ingested events (no other records), checkpoints at
/// every 1,000th.
async fn long_chain(app: &TestApp, admin: &str, slug: &str, count: usize) -> uuid::Uuid {
    let tenant = app.tenant(slug).await;
    let events: Vec<Value> = (0..count)
        .map(|n| json!({"action": "doc.read", "crud": "r", "group": {"id": slug}, "description": format!("read {n}")}))
        .collect();
    for batch in events.chunks(1000) {
        let stored = ingest(app, admin, Value::Array(batch.to_vec())).await;
        assert_eq!(stored.status, StatusCode::CREATED);
    }
    tenant
}

async fn edit_description(app: &TestApp, tenant: uuid::Uuid, seq: i64) -> i64 {
    sqlx::query_scalar(
        "UPDATE audit_log SET description = 'nothing to see' WHERE chain_key = $1 AND chain_seq = $2 RETURNING id",
    )
    .bind(tenant)
    .bind(seq)
    .fetch_one(app.db.pool())
    .await
    .expect("tampered")
}

fn reasons_at(report: &Value) -> Vec<(i64, String)> {
    report["broken"]
        .as_array()
        .expect("broken ranges")
        .iter()
        .map(|range| {
            (
                range["from_seq"].as_i64().unwrap_or_default(),
                range["reason"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn tampering_before_and_after_a_checkpoint_is_found() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    let tenant = long_chain(&app, &admin, "acme", 2500).await;
    let checkpoints: Vec<i64> = sqlx::query_scalar(
        "SELECT chain_seq FROM audit_checkpoints WHERE chain_key = $1 ORDER BY chain_seq",
    )
    .bind(tenant)
    .fetch_all(app.db.pool())
    .await
    .expect("checkpoints");
    assert_eq!(checkpoints, vec![1000, 2000]);
    let intact = verify(&app, &admin, "?group_id=acme").await.json();
    assert_eq!(
        (
            &intact["ok"],
            &intact["from_seq"],
            &intact["events_checked"],
            &intact["checkpoints_checked"]
        ),
        (&json!(true), &json!(2001), &json!(500), &json!(2)),
        "incremental: the checkpoints, then what follows the newest: {intact}"
    );

    edit_description(&app, tenant, 2300).await;
    let after = verify(&app, &admin, "?group_id=acme").await.json();
    assert_eq!(
        reasons_at(&after),
        vec![(2300, "content_changed".to_owned())]
    );

    edit_description(&app, tenant, 500).await;
    let full = verify(&app, &admin, "?group_id=acme&mode=full")
        .await
        .json();
    assert_eq!(
        reasons_at(&full),
        vec![
            (500, "content_changed".to_owned()),
            (2300, "content_changed".to_owned())
        ],
        "a full check finds the edit before the checkpoint too: {full}"
    );
    assert_eq!(
        (
            &full["from_seq"],
            &full["events_checked"],
            &full["next_after_seq"]
        ),
        (&json!(1), &json!(2500), &json!(null))
    );
    let resumed = verify(&app, &admin, "?group_id=acme&mode=full&after_seq=2000")
        .await
        .json();
    assert_eq!(
        (&resumed["from_seq"], &resumed["events_checked"]),
        (&json!(2001), &json!(500))
    );
    assert_eq!(
        reasons_at(&resumed),
        vec![(2300, "content_changed".to_owned())]
    );
}

#[tokio::test]
async fn a_chain_rewritten_with_fresh_hashes_before_a_checkpoint_is_found_without_a_full_check() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    let tenant = long_chain(&app, &admin, "acme", 2100).await;
    // The attacker edits event 700 and recomputes every later hash and the chain head, as
    // someone who knows the algorithm and can write audit_log and audit_chains would.
    let mut conn = app.db.pool().acquire().await.expect("a connection");
    let mut rows = storage::audit::chain_page(&mut conn, tenant, 699, 2100, 5000)
        .await
        .expect("the rows");
    let mut previous = rows[0].prev_hash.clone().expect("a link");
    for row in &mut rows {
        if row.chain_seq == Some(700) {
            row.description = Some("nothing to see".to_owned());
        }
        row.prev_hash = Some(previous.clone());
        previous = audit::hash(&previous, row);
        row.hash = Some(previous.clone());
    }
    sqlx::query(
        "UPDATE audit_log l SET prev_hash = t.prev_hash, hash = t.hash,
             description = CASE WHEN l.chain_seq = 700 THEN 'nothing to see' ELSE l.description END
         FROM unnest($1::int8[], $2::bytea[], $3::bytea[]) AS t(id, prev_hash, hash)
         WHERE l.id = t.id",
    )
    .bind(rows.iter().map(|row| row.id).collect::<Vec<_>>())
    .bind(
        rows.iter()
            .map(|row| row.prev_hash.clone())
            .collect::<Vec<_>>(),
    )
    .bind(rows.iter().map(|row| row.hash.clone()).collect::<Vec<_>>())
    .execute(&mut *conn)
    .await
    .expect("rewritten");
    sqlx::query("UPDATE audit_chains SET last_hash = $2 WHERE chain_key = $1")
        .bind(tenant)
        .bind(&previous)
        .execute(&mut *conn)
        .await
        .expect("head rewritten");
    let report = verify(&app, &admin, "?group_id=acme").await.json();
    assert_eq!(report["ok"], false);
    let reasons = reasons_at(&report);
    for checkpoint in [1000, 2000] {
        assert!(
            reasons.contains(&(checkpoint, "checkpoint_mismatch".to_owned())),
            "{checkpoint}: {report}"
        );
    }
}

#[tokio::test]
async fn a_full_check_goes_on_only_from_a_checkpoint_and_incremental_takes_no_position() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    long_chain(&app, &admin, "acme", 1200).await;
    for query in [
        "?group_id=acme&mode=full&after_seq=1234",
        "?group_id=acme&mode=full&after_seq=3000",
        "?group_id=acme&after_seq=1000",
    ] {
        assert_eq!(
            verify(&app, &admin, query).await.pointers(),
            vec!["/after_seq"],
            "{query}"
        );
    }
    assert_eq!(
        verify(&app, &admin, "?group_id=acme&mode=all")
            .await
            .pointers(),
        vec!["/mode"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_third_verification_at_once_is_told_to_come_back_later() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    long_chain(&app, &admin, "acme", 10).await;
    // Holding the table makes the first two verifications wait in the database, holding
    // their permits, for as long as this transaction lasts.
    let mut hold = storage::begin(app.db.pool()).await.expect("a transaction");
    sqlx::query("LOCK TABLE audit_log IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *hold)
        .await
        .expect("locked");
    let running =
        futures::future::join_all((0..2).map(|_| verify(&app, &admin, "?group_id=acme&mode=full")));
    let third = async {
        app.until_waiting_on_a_lock(2).await;
        let third = verify(&app, &admin, "?group_id=acme").await;
        hold.rollback().await.expect("released");
        third
    };
    let (running, third) = tokio::join!(running, third);
    assert_eq!(third.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(third.header("retry-after"), Some("2"));
    for response in running {
        assert_eq!(response.status, StatusCode::OK);
        assert_eq!(response.json()["ok"], true);
    }
    assert_eq!(
        verify(&app, &admin, "?group_id=acme").await.status,
        StatusCode::OK,
        "the permits are back once the first two are done"
    );
}
