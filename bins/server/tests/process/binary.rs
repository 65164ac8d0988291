//! The `tenant-registry` binary as operators run it: bootstrap key, refusals, and a clean
//! exit on SIGTERM.

use std::io::{BufReader, Lines};
use std::process::{ChildStderr, Command, Output};
use std::time::{Duration, Instant};

use testkit::serving::{self, post};
use testkit::{Running, TestDb};

const BINARY: &str = env!("CARGO_BIN_EXE_tenant-registry");

fn server() -> Command {
    serving::command(BINARY)
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn create_admin_key_prints_the_key_alone_and_it_authenticates() {
    let db = TestDb::migrated().await;
    let output = server()
        .args([
            "create-admin-key",
            "--name",
            "bootstrap",
            "--expires-in",
            "1",
        ])
        .env("DATABASE_URL", db.url())
        .output()
        .expect("runs");
    assert!(output.status.success(), "{}", stderr(&output));
    let stdout = String::from_utf8(output.stdout).expect("utf-8");
    let key = stdout.trim_end_matches('\n');
    assert_eq!(
        stdout.lines().count(),
        1,
        "only the key on stdout: {stdout:?}"
    );
    assert!(key.starts_with("tr_dev_"), "{key}");

    let app = api::build(db.pool().clone(), testkit::settings())
        .await
        .expect("app");
    let principal = app
        .state
        .verifier
        .verify(key)
        .await
        .expect("the printed key verifies");
    assert!(principal.scopes.is_platform_admin());
    let (scopes, expires_in_hours): (Vec<String>, f64) = sqlx::query_as(
        "SELECT scopes, (extract(epoch FROM expires_at - now()) / 3600)::float8 FROM api_keys WHERE tenant_id IS NULL",
    )
    .fetch_one(db.pool())
    .await
    .expect("the key row");
    assert_eq!(scopes, vec!["platform:admin".to_owned()]);
    assert!(
        (23.0..=24.0).contains(&expires_in_hours),
        "{expires_in_hours}"
    );
}

#[tokio::test]
async fn the_bootstrap_key_is_audited_as_bootstrap_and_expires_in_30_days_unless_told() {
    let db = TestDb::migrated().await;
    let create = |name: &str, extra: &[&str]| {
        let output = server()
            .args(["create-admin-key", "--name", name])
            .args(extra)
            .env("DATABASE_URL", db.url())
            .output()
            .expect("runs");
        assert!(output.status.success(), "{}", stderr(&output));
    };
    create("ops-root", &[]);
    create("forever", &["--no-expiry"]);

    let rows: Vec<(String, Option<f64>, String)> = sqlx::query_as(
        "SELECT k.name, (extract(epoch FROM k.expires_at - now()) / 86400)::float8, a.actor_id
         FROM api_keys k JOIN audit_log a ON a.target_id = k.id::text
         WHERE a.action = 'api_key.created' ORDER BY k.created_at",
    )
    .fetch_all(db.pool())
    .await
    .expect("keys and their audit records");
    let [(first, days, first_actor), (second, never, second_actor)] = rows.as_slice() else {
        panic!("two keys, each audited once: {rows:?}");
    };
    assert_eq!(first, "ops-root");
    assert!(
        days.is_some_and(|days| (29.9..=30.0).contains(&days)),
        "{days:?}"
    );
    assert_eq!(first_actor, "bootstrap:ops-root", "not an OIDC subject");
    assert_eq!((second.as_str(), *never), ("forever", None));
    assert_eq!(second_actor, "bootstrap:forever");
}

#[test]
fn prod_without_an_issuer_is_refused_in_one_line() {
    let output = server()
        .env("APP_ENV", "prod")
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/x")
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(1));
    let stderr = stderr(&output);
    let refusal: Vec<&str> = stderr
        .lines()
        .filter(|line| line.starts_with("error: "))
        .collect();
    assert_eq!(refusal.len(), 1, "{stderr}");
    assert!(refusal[0].contains("KEYCLOAK_ISSUER"), "{stderr}");
}

#[test]
fn an_unreachable_database_is_an_error_not_a_panic() {
    let output = server()
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/x")
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(1));
    let stderr = stderr(&output);
    assert!(
        stderr.contains("error: cannot connect to the database"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

fn admin_key(db: &TestDb) -> String {
    serving::admin_key(BINARY, db.url())
}

/// A server on a free port of its own over `db`, with `settings` (environment variables),
/// once it says it is serving; and the rest of its log, as it comes.
fn serving(
    db: &TestDb,
    settings: &[(&str, &str)],
) -> (Running, u16, Lines<BufReader<ChildStderr>>) {
    let port = serving::free_port();
    let mut command = server();
    command.envs(settings.iter().copied());
    let (running, lines) = serving::serve(command, db.url(), port);
    (running, port, lines)
}

/// Sends SIGTERM.
fn sigterm(server: &Running) {
    let killed = Command::new("kill")
        .args(["-TERM", &server.0.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
}

/// Waits (at most 30 s) for the process to exit, and expects 0.
fn exits_zero(server: &mut Running) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = server.0.try_wait().expect("waits") {
            break status;
        }
        assert!(Instant::now() < deadline, "the server did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
}

/// The log says the server drained before it stopped.
fn assert_drained(log: &[String]) {
    assert!(
        log.iter()
            .any(|line| line.contains("stopped after draining")),
        "{log:?}"
    );
}

#[tokio::test]
async fn sigterm_drains_and_exits_zero() {
    let db = TestDb::migrated().await;
    let (mut server, port, lines) = serving(&db, &[]);
    let health = tokio::net::TcpStream::connect(("127.0.0.1", port)).await;
    assert!(health.is_ok(), "it listens on ADDR");
    sigterm(&server);
    exits_zero(&mut server);
    assert_drained(&lines.map_while(Result::ok).collect::<Vec<_>>());
}

#[tokio::test]
async fn sigterm_ends_open_event_streams_and_still_drains_and_exits_zero() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let db = TestDb::migrated().await;
    let key = admin_key(&db);
    let (mut server, port, lines) = serving(&db, &[("EVENTS_HEARTBEAT_SECS", "1")]);
    // Read on, so that the log's pipe never fills while the stream is open.
    let log = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>());

    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connects");
    stream
        .write_all(
            format!("GET /v1/events/stream HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {key}\r\n\r\n")
                .as_bytes(),
        )
        .await
        .expect("sends");
    let mut received = Vec::new();
    let mut buffer = [0; 4096];
    while !String::from_utf8_lossy(&received).contains(": heartbeat") {
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buffer))
            .await
            .expect("the stream sends within ten seconds")
            .expect("reads");
        assert!(
            read > 0,
            "closed early: {}",
            String::from_utf8_lossy(&received)
        );
        received.extend_from_slice(&buffer[..read]);
    }
    assert!(String::from_utf8_lossy(&received).starts_with("HTTP/1.1 200"));

    sigterm(&server);
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut received))
        .await
        .expect("the stream ends within ten seconds of SIGTERM")
        .expect("reads");
    assert!(
        String::from_utf8_lossy(&received).ends_with("0\r\n\r\n"),
        "the stream's body is ended, not cut: {}",
        String::from_utf8_lossy(&received)
    );
    exits_zero(&mut server);
    assert_drained(&log.join().expect("the log is read"));
}

#[tokio::test]
async fn a_delivery_cut_off_by_sigkill_is_made_after_a_restart() {
    let db = TestDb::migrated().await;
    let key = admin_key(&db);
    let receiver = testkit::receiver::Receiver::start().await;
    // The receiver holds the first request until the process making it is gone.
    receiver.delay(Duration::from_secs(3600));
    let settings = [
        ("WEBHOOK_ALLOW_PRIVATE", "true"),
        ("WEBHOOK_LEASE_SECS", "15"),
    ];
    let (mut first, port, lines) = serving(&db, &settings);
    std::thread::spawn(move || lines.for_each(drop));
    let endpoint = serde_json::json!({"url": receiver.url(), "event_types": ["tenant.created"]});
    let (status, answer) = post(port, &key, "/v1/webhooks", &endpoint).await;
    assert_eq!(status, 201, "{answer}");
    let tenant = serde_json::json!({"slug": "acme", "name": "Acme", "plan": "free"});
    let (status, answer) = post(port, &key, "/v1/tenants", &tenant).await;
    assert_eq!(status, 201, "{answer}");
    receiver.wait_for_arrivals(1, Duration::from_secs(10)).await;

    first.0.kill().expect("SIGKILL");
    first.0.wait().expect("the first server is gone");
    receiver.delay(Duration::ZERO);
    let (_second, _, lines) = serving(&db, &settings);
    std::thread::spawn(move || lines.for_each(drop));

    let received = receiver.wait_for(1, Duration::from_secs(45)).await;
    let delivered = received[0].json();
    assert_eq!(delivered["type"], "tenant.created");
    assert_eq!(delivered["data"]["data"]["slug"], "acme");
    // The receiver answered; the restarted server records it as delivered.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status: String = sqlx::query_scalar("SELECT status FROM webhook_deliveries")
            .fetch_one(db.pool())
            .await
            .expect("one delivery");
        if status == "delivered" {
            break;
        }
        assert!(Instant::now() < deadline, "still {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
