//! Retraced's official Node client against the server binary: the products' way in once
//! they change the client's endpoint to the registry's `/auditlog`. The client
//! (`@retracedhq/retraced`, pinned with its lock file in tests/retraced-client, installed
//! there by `npm ci`, which .ci/run runs) publishes one event and a bulk, checking the hash
//! of each itself, queries with a structured query and a mask, pages with `nextPage`, and
//! takes a viewer token, which then reads the registry's audit search.

use std::path::{Path, PathBuf};
use std::process::Command;

use testkit::TestDb;
use testkit::serving;

const BINARY: &str = env!("CARGO_BIN_EXE_tenant-registry");

fn client_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/retraced-client")
}

fn node_is_installed() -> bool {
    Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success())
}

#[tokio::test]
async fn retraceds_node_client_publishes_checks_hashes_queries_pages_and_views() {
    if !node_is_installed() {
        eprintln!(
            "\n\n!!! SKIPPED: `node` is not installed, so Retraced's Node client was NOT run \
             against the server. Install Node.js (and run `npm ci` in tests/retraced-client) \
             to run this test. !!!\n\n"
        );
        return;
    }
    let dir = client_dir();
    assert!(
        dir.join("node_modules/@retracedhq/retraced").is_dir(),
        "Retraced's client is not installed: run `npm ci` in {} (.ci/run does)",
        dir.display()
    );
    let db = TestDb::migrated().await;
    let admin = serving::admin_key(BINARY, db.url());
    let port = serving::free_port();
    let (_server, log) = serving::serve(serving::command(BINARY), db.url(), port);
    // Keep the server's pipe drained while the client runs.
    std::thread::spawn(move || for _ in log.map_while(Result::ok) {});
    let output = tokio::process::Command::new("node")
        .arg("client.js")
        .current_dir(&dir)
        .env("REGISTRY_URL", format!("http://127.0.0.1:{port}"))
        .env("ADMIN_KEY", &admin)
        .output()
        .await
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "the client failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("retraced client: all checks passed"),
        "{stdout}"
    );
    let hashed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_log WHERE product = 'billing' AND hash IS NOT NULL",
    )
    .fetch_one(db.pool())
    .await
    .expect("a count");
    assert_eq!(
        hashed, 8,
        "every published event is in the chained audit log"
    );
}
