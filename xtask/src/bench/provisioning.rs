//! The provisioning case of `cargo xtask bench`: a product whose plan makes a schema per
//! tenant with 10 tables (10 registered migrations) and a seed row, and tenants subscribed
//! to it as fast as the API takes them; measured from the first subscription until every
//! tenant's run is `ready`, as tenants provisioned per minute. The runner runs inside the
//! server (`WORKER=on`, `PROVISIONING_CONCURRENCY` at its default) against the bench cluster.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::runtime::Runtime;

use super::http;

/// The product the case provisions; the bench server's `PRODUCT_DATABASE_BENCH_PROVISIONED`
/// names the bench database as its cluster.
pub const PRODUCT: &str = "bench-provisioned";
/// The variable naming its cluster.
pub const CLUSTER_ENV: &str = "PRODUCT_DATABASE_BENCH_PROVISIONED";
/// Tables each tenant's schema gets.
const TABLES: u32 = 10;
/// Longest the case waits for every run to be ready.
const PATIENCE: Duration = Duration::from_secs(600);

/// What the case measured.
#[derive(Debug, Clone)]
pub struct ProvisioningMeasurement {
    /// Tenants subscribed.
    pub tenants: u32,
    /// Of those, ready at the end.
    pub ready: i64,
    /// From the first subscription to the last ready run.
    pub elapsed: Duration,
}

fn put(key: &str, path: &str, body: &serde_json::Value) -> Result<String, String> {
    match http("PUT", path, Some(key), Some(&body.to_string()))? {
        (200 | 201, answer) => Ok(answer),
        (status, answer) => Err(format!("PUT {path}: {status} {answer}")),
    }
}

fn publish(key: &str) -> Result<(), String> {
    let plan = json!({"steps": [
        {"kind": "database", "isolation": "schema"},
        {"kind": "migrations"},
        {"kind": "seed", "statements": ["INSERT INTO table_1 (tenant_id, name) VALUES ($1, $3)"]}
    ]});
    put(
        key,
        &format!("/v1/products/{PRODUCT}"),
        &json!({"name": "Provisioned", "provisioning": plan}),
    )?;
    let migrations: Vec<serde_json::Value> = (1..=TABLES)
        .map(|n| {
            json!({"version": n, "name": format!("table_{n}"), "sql": format!(
            "CREATE TABLE table_{n} (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, \
             tenant_id uuid NOT NULL, name text, created_at timestamptz NOT NULL DEFAULT now()); \
             CREATE INDEX ON table_{n} (tenant_id)")})
        })
        .collect();
    put(
        key,
        &format!("/v1/products/{PRODUCT}/migrations"),
        &json!(migrations),
    )
    .map(drop)
}

fn create_tenants(key: &str, count: u32) -> Result<Vec<String>, String> {
    (0..count)
        .map(|n| {
            let body = json!({"slug": format!("provisioned-{n:05}"), "name": format!("Provisioned {n}"), "plan": "pro"});
            match http("POST", "/v1/tenants", Some(key), Some(&body.to_string()))? {
                (201, answer) => serde_json::from_str::<serde_json::Value>(&answer)
                    .ok()
                    .and_then(|tenant| tenant["id"].as_str().map(str::to_owned))
                    .ok_or_else(|| "a created tenant without an id".to_owned()),
                (status, answer) => Err(format!("creating a tenant: {status} {answer}")),
            }
        })
        .collect()
}

async fn ready(database_url: &str) -> Result<i64, String> {
    let mut conn = super::connect(database_url).await?;
    sqlx::query_scalar(
        "SELECT count(*) FROM tenant_provisioning WHERE product_id = $1 AND state = 'ready'",
    )
    .bind(PRODUCT)
    .fetch_one(&mut conn)
    .await
    .map_err(|error| error.to_string())
}

/// Provisions `tenants` tenants and times it.
pub fn measure(
    runtime: &Runtime,
    database_url: &str,
    key: &str,
    tenants: u32,
) -> Result<ProvisioningMeasurement, String> {
    publish(key)?;
    let ids = create_tenants(key, tenants)?;
    let started = Instant::now();
    for id in &ids {
        put(
            key,
            &format!("/v1/tenants/{id}/products/{PRODUCT}"),
            &json!({}),
        )?;
    }
    let mut done = 0;
    while started.elapsed() < PATIENCE {
        done = runtime.block_on(ready(database_url))?;
        if done >= i64::from(tenants) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(ProvisioningMeasurement {
        tenants,
        ready: done,
        elapsed: started.elapsed(),
    })
}

/// The report's section.
pub fn render(measured: &ProvisioningMeasurement) -> String {
    let minutes = measured.elapsed.as_secs_f64() / 60.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n## Provisioning\n\nA product whose plan makes a schema per tenant with {TABLES} tables \
         ({TABLES} registered migrations, each a table and an index) and a seed row; \
         {} tenants subscribed one after another, timed from the first subscription until \
         every run is `ready`. The runner runs inside the server at its default concurrency, \
         the product's cluster is the bench database.\n",
        measured.tenants
    );
    let _ = writeln!(
        out,
        "| measure | value |\n|---|---:|\n| ready / subscribed | {} / {} |\n| seconds | {:.1} |\n| tenants provisioned per minute | {:.0} |",
        measured.ready,
        measured.tenants,
        measured.elapsed.as_secs_f64(),
        f64::from(measured.tenants) / minutes.max(f64::EPSILON),
    );
    out
}
