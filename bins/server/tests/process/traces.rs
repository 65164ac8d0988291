//! Traces as a collector receives them: with `OTEL_EXPORTER_OTLP_ENDPOINT` pointing at an
//! OTLP receiver on loopback, a request becomes a server span named by its route template, in
//! the trace its caller's `traceparent` names, with a span for its database transaction and a
//! client span for its outgoing call, which carries the trace on; problem+json and the JSON
//! log lines name the trace.

use std::io::{BufReader, Lines};
use std::process::ChildStderr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use testkit::TestDb;
use testkit::oidc::TestIssuer;
use testkit::otlp::{CLIENT, OtlpReceiver, ReceivedSpan, SERVER};
use testkit::serving;

/// Far longer than the batch delay the server runs with here (50 ms).
const PATIENCE: Duration = Duration::from_secs(20);
const BINARY: &str = env!("CARGO_BIN_EXE_tenant-registry");

/// Keeps every log line the server writes, reading on a thread so the pipe never fills.
fn keep(lines: Lines<BufReader<ChildStderr>>) -> Arc<Mutex<Vec<String>>> {
    let kept = Arc::new(Mutex::new(Vec::new()));
    let writer = Arc::clone(&kept);
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            writer.lock().expect("the log").push(line);
        }
    });
    kept
}

fn traceparent(trace: &str, parent: &str) -> String {
    format!("00-{trace}-{parent}-01")
}

/// A GET of `path` with `key`, as a caller in `trace`.
async fn get_in_trace(port: u16, path: &str, key: &str, trace: &str) -> serving::Answer {
    serving::send(
        port,
        "GET",
        path,
        key,
        &[("traceparent", &traceparent(trace, "00f067aa0ba902b7"))],
        None,
    )
    .await
    .expect("answered")
}

async fn span_of(
    collector: &OtlpReceiver,
    what: &str,
    wanted: impl Fn(&ReceivedSpan) -> bool,
) -> ReceivedSpan {
    collector
        .wait_for(PATIENCE, wanted)
        .await
        .unwrap_or_else(|| panic!("no {what} among {:#?}", collector.spans()))
}

/// A server with its own database, its log kept, an admin key; exporting to `collector` (every
/// 50 ms) when given, with `settings` added.
struct Traced {
    _running: serving::Running,
    _db: TestDb,
    log: Arc<Mutex<Vec<String>>>,
    key: String,
    port: u16,
}

async fn start(collector: Option<&OtlpReceiver>, settings: &[(&str, &str)]) -> Traced {
    let db = TestDb::migrated().await;
    let key = serving::admin_key(BINARY, db.url());
    let port = serving::free_port();
    let mut server = serving::command(BINARY);
    if let Some(collector) = collector {
        server
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint())
            .env("OTEL_BSP_SCHEDULE_DELAY", "50");
    }
    server.envs(settings.iter().copied());
    let (running, lines) = serving::serve(server, db.url(), port);
    Traced {
        _running: running,
        _db: db,
        log: keep(lines),
        key,
        port,
    }
}

#[tokio::test]
async fn a_request_is_a_server_span_in_its_callers_trace_with_its_transaction_and_outgoing_call() {
    let collector = OtlpReceiver::start().await;
    let issuer = TestIssuer::start().await;
    let server = start(
        Some(&collector),
        &[
            ("OTEL_SERVICE_NAME", "registry-under-test"),
            ("OUTBOUND_ALLOW_PRIVATE", "true"),
        ],
    )
    .await;
    let (port, key) = (server.port, server.key.as_str());
    let created = serving::send(
        port,
        "POST",
        "/v1/tenants",
        key,
        &[],
        Some(&json!({"slug": "acme", "name": "Acme", "plan": "free"})),
    )
    .await
    .expect("answered");
    assert_eq!(created.status, 201, "{}", created.body);
    let tenant = created.json()["id"].as_str().expect("an id").to_owned();

    let trace = "0af7651916cd43dd8448eb211c80319c";
    let caller_span = "b7ad6b7169203331";
    let answer = serving::send(
        port,
        "POST",
        &format!("/v1/tenants/{tenant}/idps?verify=true"),
        key,
        &[("traceparent", &traceparent(trace, caller_span))],
        Some(&json!({"kind": "oidc", "name": "Keycloak", "issuer": issuer.url, "client_id": "c"})),
    )
    .await
    .expect("answered");
    assert_eq!(answer.status, 201, "{}", answer.body);

    let request = span_of(&collector, "server span of the request", |span| {
        span.trace_id == trace && span.kind == SERVER
    })
    .await;
    assert_eq!(request.name, "POST /v1/tenants/{id}/idps");
    assert_eq!(request.parent_span_id, caller_span);
    assert_eq!(request.attributes["http.route"], "/v1/tenants/{id}/idps");
    assert_eq!(request.attributes["http.response.status_code"], "201");
    assert_eq!(request.service_name.as_deref(), Some("registry-under-test"));

    let transaction = span_of(&collector, "database transaction span", |span| {
        span.trace_id == trace && span.name == "db transaction"
    })
    .await;
    assert_eq!(transaction.attributes["db.system.name"], "postgresql");

    let outgoing = span_of(&collector, "client span of the discovery fetch", |span| {
        span.trace_id == trace && span.kind == CLIENT
    })
    .await;
    assert_eq!(outgoing.name, "GET");
    let sent: Vec<Option<String>> = issuer
        .discovery_fetches()
        .into_iter()
        .map(|fetch| fetch.traceparent)
        .collect();
    assert_eq!(
        sent,
        vec![Some(traceparent(trace, &outgoing.span_id))],
        "the issuer saw the request's trace, as a child of the client span"
    );
}

#[tokio::test]
async fn problems_and_log_lines_name_the_trace() {
    let collector = OtlpReceiver::start().await;
    let server = start(Some(&collector), &[]).await;
    let (port, key, log) = (server.port, server.key.as_str(), &server.log);
    let missing = format!("/v1/tenants/{}", uuid::Uuid::new_v4());

    let joined = "4bf92f3577b34da6a3ce929d0e0e4736";
    let answer = get_in_trace(port, &missing, key, joined).await;
    assert_eq!(answer.status, 404);
    assert_eq!(answer.json()["trace_id"], joined);

    let own = serving::send(port, "GET", &missing, key, &[], None)
        .await
        .expect("answered")
        .json()["trace_id"]
        .as_str()
        .expect("a trace id without a caller's trace")
        .to_owned();
    assert_eq!(own.len(), 32);
    assert_ne!(own, joined);
    let root = span_of(&collector, "the server's own trace", |span| {
        span.trace_id == own && span.kind == SERVER
    })
    .await;
    assert_eq!(root.name, "GET /v1/tenants/{id}");
    assert_eq!(root.parent_span_id, "", "a new trace starts at the request");

    let refused = "a3ce929d0e0e47364bf92f3577b34da6";
    let answer = serving::send(
        port,
        "GET",
        "/v1/me",
        "tr_dev_not_a_real_key",
        &[("traceparent", &traceparent(refused, "00f067aa0ba902b7"))],
        None,
    )
    .await
    .expect("answered");
    assert_eq!(answer.status, 401);
    let logged = || {
        log.lock().expect("the log").iter().any(|line| {
            let line: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
            line["fields"]["message"] == "authentication failed"
                && line["span"]["trace_id"] == refused
        })
    };
    let deadline = std::time::Instant::now() + PATIENCE;
    while !logged() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        logged(),
        "no log line of the refused request names its trace: {:#?}",
        log.lock().expect("the log")
    );
}

#[tokio::test]
async fn without_an_endpoint_a_problem_still_names_the_callers_trace() {
    let server = start(None, &[]).await;
    let (port, key) = (server.port, server.key.as_str());
    let missing = format!("/v1/tenants/{}", uuid::Uuid::new_v4());
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let answer = get_in_trace(port, &missing, key, trace).await;
    assert_eq!(answer.json()["trace_id"], trace);
    let untraced = serving::send(port, "GET", &missing, key, &[], None)
        .await
        .expect("answered");
    assert_eq!(untraced.json().get("trace_id"), None);
}

#[test]
fn a_protocol_this_build_cannot_export_stops_the_start() {
    let refused = serving::command(BINARY)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        .env("DATABASE_URL", "postgres://127.0.0.1:1/none")
        .output()
        .expect("runs");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.starts_with("error: OTEL_EXPORTER_OTLP_PROTOCOL=grpc:"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}
