//! The `tenant-registry` binary as operators run it: bootstrap key, refusals, and a clean
//! exit on SIGTERM.

use std::process::{Command, Output, Stdio};

use testkit::TestDb;

fn server() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tenant-registry"));
    for variable in [
        "DATABASE_URL",
        "APP_ENV",
        "KEYCLOAK_ISSUER",
        "ADDR",
        "LOG_FORMAT",
        "CORS_ORIGINS",
    ] {
        command.env_remove(variable);
    }
    command.env(
        "ENCRYPTION_KEYS",
        "test:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
    );
    // Without APP_ENV the server is prod; these tests run it as a developer would.
    command
        .env("APP_ENV", "dev")
        .env("ADMIN_ADDR", "127.0.0.1:0");
    command
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

#[tokio::test]
async fn sigterm_drains_and_exits_zero() {
    let db = TestDb::migrated().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let mut child = server()
        .env("DATABASE_URL", db.url())
        .env("ADDR", format!("127.0.0.1:{port}"))
        .env("LOG_FORMAT", "json")
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    let lines = testkit::await_serving(&mut child);
    let health = tokio::net::TcpStream::connect(("127.0.0.1", port)).await;
    assert!(health.is_ok(), "it listens on ADDR");

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let status = child.wait().expect("it exits");
    assert_eq!(status.code(), Some(0));
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(
        rest.iter()
            .any(|line| line.contains("stopped after draining")),
        "{rest:?}"
    );
}
