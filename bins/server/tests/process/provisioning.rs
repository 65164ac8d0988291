//! A server killed (SIGKILL) in the middle of a tenant's plan: after a restart the plan
//! finishes, and nothing ran twice in effect (each migration once in the history, the seed
//! once).

use std::time::Duration;

use serde_json::{Value, json};
use sqlx::{Connection as _, PgConnection};
use testkit::TestDb;
use testkit::serving::{self, Running};

const BINARY: &str = env!("CARGO_BIN_EXE_tenant-registry");

fn start(database_url: &str, port: u16, backups: &std::path::Path) -> Running {
    let mut command = serving::command(BINARY);
    command
        .env("PRODUCT_DATABASE_CERTIFAI", database_url)
        .env("PROVISIONING_LEASE_SECS", "5")
        .env("PROVISIONING_RETRY_SECS", "1")
        .env("BACKUP_DIR", backups);
    let (server, log) = serving::serve(command, database_url, port);
    std::thread::spawn(move || log.map_while(Result::ok).for_each(drop));
    server
}

async fn call(
    port: u16,
    admin: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> serving::Answer {
    let answer = serving::send(port, method, path, admin, &[], body)
        .await
        .expect("an answer");
    assert!(answer.status < 300, "{method} {path}: {answer:?}");
    answer
}

async fn history(database: &mut PgConnection, schema: &str) -> Vec<i32> {
    sqlx::query_scalar(&format!(
        "SELECT version FROM \"{schema}\".registry_schema_history ORDER BY version"
    ))
    .fetch_all(database)
    .await
    .unwrap_or_default()
}

#[tokio::test]
async fn a_plan_cut_off_by_sigkill_finishes_after_the_restart_and_nothing_runs_twice() {
    let db = TestDb::migrated().await;
    let backups = std::env::temp_dir().join(format!("tr-kill-{}", uuid::Uuid::new_v4()));
    let admin = serving::admin_key(BINARY, db.url());
    let port = serving::free_port();
    let first = start(db.url(), port, &backups);

    let plan = json!({"steps": [
        {"kind": "database", "isolation": "schema"},
        {"kind": "migrations"},
        {"kind": "seed", "statements": ["INSERT INTO visits (tenant_id) VALUES ($1)"]}
    ]});
    call(
        port,
        &admin,
        "PUT",
        "/v1/products/certifai",
        Some(&json!({"name": "Certifai", "provisioning": plan})),
    )
    .await;
    let migrations = json!([
        {"version": 1, "name": "visits", "sql": "CREATE TABLE visits (id bigint GENERATED ALWAYS AS IDENTITY, tenant_id uuid NOT NULL)"},
        {"version": 2, "name": "slow", "sql": "SELECT pg_sleep(4); CREATE TABLE slow (id int)"},
        {"version": 3, "name": "labels", "sql": "CREATE TABLE labels (name text)"}
    ]);
    call(
        port,
        &admin,
        "PUT",
        "/v1/products/certifai/migrations",
        Some(&migrations),
    )
    .await;
    let created = call(
        port,
        &admin,
        "POST",
        "/v1/tenants",
        Some(&json!({"slug": "acme", "name": "Acme", "plan": "pro"})),
    )
    .await;
    let tenant = created.json()["id"].as_str().expect("an id").to_owned();
    call(
        port,
        &admin,
        "PUT",
        &format!("/v1/tenants/{tenant}/products/certifai"),
        Some(&json!({})),
    )
    .await;

    let schema = format!("tenant_{}", tenant.replace('-', ""));
    let mut database = PgConnection::connect(db.url()).await.expect("connects");
    let mut waited = 0;
    while history(&mut database, &schema).await != [1] {
        assert!(waited < 200, "migration 1 was never applied");
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += 1;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut first = first;
    first.0.kill().expect("SIGKILL while migration 2 sleeps");
    first.0.wait().expect("gone");
    assert_eq!(
        history(&mut database, &schema).await,
        [1],
        "migration 2 was cut off, not half applied"
    );

    let _second = start(db.url(), port, &backups);
    let mut state = Value::Null;
    for _ in 0..300 {
        let shown = call(
            port,
            &admin,
            "GET",
            &format!("/v1/tenants/{tenant}/provisioning"),
            None,
        )
        .await;
        state = shown.json()["items"][0].clone();
        if state["state"] == "ready" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(state["state"], "ready", "{state}");
    assert_eq!(state["migration_version"], 3);
    assert_eq!(state["database"]["reachable"], true);
    assert_eq!(
        history(&mut database, &schema).await,
        [1, 2, 3],
        "each migration once"
    );
    let visits: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM \"{schema}\".visits"))
        .fetch_one(&mut database)
        .await
        .expect("the seed's rows");
    assert_eq!(visits, 1, "the seed ran once");
    let _ = std::fs::remove_dir_all(&backups);
}
