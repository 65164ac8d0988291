//! `cargo xtask bench`: release binaries against their own local cluster, data seeded in
//! bulk with SQL, load from a second process (`wrk`, installed from Debian when missing),
//! and a report with the framework and database ceilings measured in the same run.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use devcluster::Cluster;
use sqlx::{Connection, PgConnection};

use crate::{db, project_root};

mod ceilings;
mod hostile;
mod load;
mod peer;
mod provisioning;
mod report;
pub(crate) mod server;
mod webhooks;

use ceilings::{Profile, pgbench};
use load::{Load, Measurement};
use report::render;
use server::{Server, http};

/// The bench cluster's port, away from the development (54329) and test clusters.
const BENCH_PG_PORT: u16 = 54339;
/// The server's pool size (storage::PoolConfig's default), which pgbench mirrors.
const POOL_CONNECTIONS: u32 = 16;
/// Tenants in the hot set of the "hot" lookup case.
const HOT_SET: usize = 100;
/// Events per ingest request.
const INGEST_BATCH: u32 = 100;
const DATABASE: &str = "tenant_registry_bench";

/// Knobs of a benchmark run.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Seconds each case runs.
    #[arg(long, default_value_t = 15)]
    duration: u64,
    /// Concurrent connections of the load generator.
    #[arg(long, default_value_t = 64)]
    connections: u32,
    /// Tenant counts the lookup cases run at, comma separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1_000_u32, 100_000])]
    tenants: Vec<u32>,
    /// Audit events stored before the audit query case.
    #[arg(long, default_value_t = 1_000_000)]
    audit_events: u32,
    /// A one-minute smoke run (3 s per case, the first tenant count only, 100,000 audit
    /// events), reported to target/bench/benchmarks-quick.md instead of docs/benchmarks.md.
    #[arg(long)]
    quick: bool,
    /// Only the webhook case (and no ceilings), reported to
    /// target/bench/benchmarks-webhooks.md: for working on the runner.
    #[arg(long)]
    webhooks_only: bool,
    /// Only the provisioning case, reported to target/bench/benchmarks-provisioning.md: for
    /// working on the runner.
    #[arg(long)]
    provisioning_only: bool,
    /// Tenants the provisioning case provisions.
    #[arg(long, default_value_t = 300)]
    provisioned_tenants: u32,
    /// Only the miss path at the first tenant count (cache off by slug and by id, cached by
    /// slug, the plain Go peer; no ceilings), reported to target/bench/benchmarks-miss-path.md:
    /// for working on the lookup.
    #[arg(long)]
    miss_path_only: bool,
}

impl Options {
    fn effective(mut self) -> Result<Self, String> {
        if self.quick {
            self.duration = 3;
            self.tenants.truncate(1);
            self.audit_events = self.audit_events.min(100_000);
        }
        if self.duration == 0 || self.connections == 0 || self.tenants.is_empty() {
            return Err("--duration, --connections and --tenants must be positive".to_owned());
        }
        if self.tenants.iter().any(|&count| count < HOT_SET as u32) {
            return Err(format!("--tenants: each count must be at least {HOT_SET}"));
        }
        Ok(self)
    }
}

pub fn run(options: Options) -> Result<ExitCode, String> {
    let options = options.effective()?;
    let root = project_root();
    let work = root.join("target").join("bench");
    std::fs::create_dir_all(&work)
        .map_err(|error| format!("creating {}: {error}", work.display()))?;
    ensure_wrk()?;
    build_release(&root)?;
    let port = db::port_from_env("TR_BENCH_PG_PORT", BENCH_PG_PORT)?;
    let cluster =
        Cluster::named(&root, "bench-postgres", port).map_err(|error| error.to_string())?;
    cluster
        .ensure_running()
        .map_err(|error| error.to_string())?;
    let runtime = tokio::runtime::Runtime::new().map_err(|error| error.to_string())?;
    let started = Instant::now();
    let mut results = Vec::new();
    let mut profile = None;
    if options.webhooks_only {
        return webhooks_only(&root, &cluster, &runtime, &options, &work);
    }
    if options.miss_path_only {
        return miss_path_only(&root, &cluster, &runtime, &options, &work);
    }
    if options.provisioning_only {
        return provisioning_only(&root, &cluster, &runtime, &options, &work);
    }
    let mut webhook = None;
    let mut provisioned = None;
    let mut hostile_cases = Vec::new();
    let peer_binary = peer::build(&root, &work)?;
    let pgbench_tps = pgbench(&cluster, &runtime, &options)?;
    for (index, &tenants) in options.tenants.iter().enumerate() {
        let (database_url, key, files) = seeded(&root, &cluster, &runtime, tenants, &work)?;
        let mut server = Server::start(&root, &database_url, None)?;
        let load = Load {
            work: &work,
            key: &key,
            options: &options,
            connections: None,
        };
        let scale = Some(tenants);
        results.push(load.get(
            &server,
            "GET /healthz (framework ceiling)",
            scale,
            &files.healthz,
        )?);
        results.push(load.get(&server, "GET /v1/me (API key check only)", scale, &files.me)?);
        load.warm_up(tenants, &files.slugs)?;
        results.push(load.get(&server, "by slug, hot set of 100", scale, &files.slugs_hot)?);
        results.push(load.get(&server, "by slug, uniform", scale, &files.slugs)?);
        results.push(load.get(&server, "by id, uniform", scale, &files.ids)?);
        if index == 0 {
            publish_bench_product(&key)?;
            runtime.block_on(subscribe_all(&database_url))?;
            results.push(load.get(
                &server,
                "entitlement check, uniform",
                scale,
                &files.entitlements,
            )?);
            results.push(load.create_tenants(&server, scale)?);
            webhook = Some(webhooks::measure(&runtime, &key, options.duration)?);
            provisioned = Some(provisioning::measure(
                &runtime,
                &database_url,
                &key,
                options.provisioned_tenants,
            )?);
            results.push(load.ingest(&server, scale, &files.slug_list)?);
            runtime.block_on(seed_audit_events(&database_url, options.audit_events))?;
            results.push(load.get(
                &server,
                &format!("audit query over {} events", options.audit_events),
                scale,
                &files.audit_queries,
            )?);
            let hostile_files = runtime.block_on(hostile::prepare(
                &database_url,
                &key,
                &work,
                options.audit_events,
            ))?;
            hostile_cases =
                hostile::measure(&load, &server, &hostile_files, &files.ids, &files.healthz)?;
        }
        server.stop();
        server = Server::start(&root, &database_url, Some(0))?;
        results.push(load.get(
            &server,
            "by id, uniform, cache off (uncached)",
            scale,
            &files.ids,
        )?);
        results.push(load.get(
            &server,
            "by slug, uniform, cache off (uncached)",
            scale,
            &files.slugs,
        )?);
        if Some(&tenants) == options.tenants.last() {
            // A second, unrecorded pass under perf: sampling would slow the measured one.
            let recording = Profile::start(&server, options.duration, &work);
            load.get(&server, "profiling the uncached lookup", scale, &files.ids)?;
            profile = recording.map(|recording| recording.finish(tenants));
        }
        server.stop();
        let mut plain = peer::start(&peer_binary, &database_url)?;
        let case = format!("{}: by slug, uniform", peer::CASE);
        results.push(load.get(&plain, &case, scale, &files.slugs)?);
        plain.stop();
    }
    let mut report = render(&options, &results, Some(pgbench_tps), started.elapsed());
    if let Some(webhook) = &webhook {
        report.push_str(&webhooks::render(webhook));
    }
    if let Some(provisioned) = &provisioned {
        report.push_str(&provisioning::render(provisioned));
    }
    if !hostile_cases.is_empty() {
        report.push_str(&hostile::render(&hostile_cases));
    }
    if let Some(profile) = profile {
        report.push_str(&profile);
    }
    let target = if options.quick {
        work.join("benchmarks-quick.md")
    } else {
        root.join("docs").join("benchmarks.md")
    };
    std::fs::write(&target, report)
        .map_err(|error| format!("writing {}: {error}", target.display()))?;
    eprintln!("wrote {}", target.display());
    Ok(ExitCode::SUCCESS)
}

/// The webhook case alone, on a fresh database.
fn webhooks_only(
    root: &Path,
    cluster: &Cluster,
    runtime: &tokio::runtime::Runtime,
    options: &Options,
    work: &Path,
) -> Result<ExitCode, String> {
    let database_url = runtime.block_on(fresh_database(cluster))?;
    run_binary(root, "tenant-registry-migrate", &["up"], &database_url)?;
    let key = create_admin_key(root, &database_url)?;
    let mut server = Server::start(root, &database_url, None)?;
    let measured = webhooks::measure(runtime, &key, options.duration);
    server.stop();
    print_report(
        work,
        "benchmarks-webhooks.md",
        &webhooks::render(&measured?),
    )
}

/// The provisioning case alone, on a fresh database.
fn provisioning_only(
    root: &Path,
    cluster: &Cluster,
    runtime: &tokio::runtime::Runtime,
    options: &Options,
    work: &Path,
) -> Result<ExitCode, String> {
    let database_url = runtime.block_on(fresh_database(cluster))?;
    run_binary(root, "tenant-registry-migrate", &["up"], &database_url)?;
    let key = create_admin_key(root, &database_url)?;
    let mut server = Server::start(root, &database_url, None)?;
    let measured = provisioning::measure(runtime, &database_url, &key, options.provisioned_tenants);
    server.stop();
    print_report(
        work,
        "benchmarks-provisioning.md",
        &provisioning::render(&measured?),
    )
}

/// The miss path's cases alone, on a fresh database at the first tenant count.
fn miss_path_only(
    root: &Path,
    cluster: &Cluster,
    runtime: &tokio::runtime::Runtime,
    options: &Options,
    work: &Path,
) -> Result<ExitCode, String> {
    let started = Instant::now();
    let tenants = options.tenants[0];
    let peer_binary = peer::build(root, work)?;
    let (database_url, key, files) = seeded(root, cluster, runtime, tenants, work)?;
    let load = Load {
        work,
        key: &key,
        options,
        connections: None,
    };
    let scale = Some(tenants);
    let mut results = Vec::new();
    let mut server = Server::start(root, &database_url, Some(0))?;
    for (case, paths) in [
        ("by slug, uniform, cache off (uncached)", &files.slugs),
        ("by id, uniform, cache off (uncached)", &files.ids),
    ] {
        results.push(load.get(&server, case, scale, paths)?);
    }
    server.stop();
    let mut plain = peer::start(&peer_binary, &database_url)?;
    let case = format!("{}: by slug, uniform", peer::CASE);
    results.push(load.get(&plain, &case, scale, &files.slugs)?);
    plain.stop();
    let mut server = Server::start(root, &database_url, None)?;
    load.warm_up(tenants, &files.slugs)?;
    results.push(load.get(&server, "by slug, uniform", scale, &files.slugs)?);
    server.stop();
    let report = render(options, &results, None, started.elapsed());
    print_report(work, "benchmarks-miss-path.md", &report)
}

/// Writes a partial run's report under `work` and prints it.
fn print_report(work: &Path, name: &str, report: &str) -> Result<ExitCode, String> {
    let target = work.join(name);
    std::fs::write(&target, report)
        .map_err(|error| format!("writing {}: {error}", target.display()))?;
    println!("{report}");
    Ok(ExitCode::SUCCESS)
}

/// A fresh, migrated database with `tenants` tenants, a platform admin key and the path
/// files the load reads.
fn seeded(
    root: &Path,
    cluster: &Cluster,
    runtime: &tokio::runtime::Runtime,
    tenants: u32,
    work: &Path,
) -> Result<(String, String, PathFiles), String> {
    let database_url = runtime.block_on(fresh_database(cluster))?;
    run_binary(root, "tenant-registry-migrate", &["up"], &database_url)?;
    runtime.block_on(seed_tenants(&database_url, tenants))?;
    let key = create_admin_key(root, &database_url)?;
    let files = runtime.block_on(write_path_files(&database_url, work))?;
    Ok((database_url, key, files))
}

fn ensure_wrk() -> Result<(), String> {
    if Command::new("wrk").arg("--version").output().is_ok() {
        return Ok(());
    }
    eprintln!("installing wrk from Debian (apt-get)…");
    let installed = Command::new("sh")
        .args([
            "-c",
            "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk",
        ])
        .status()
        .map_err(|error| format!("cannot run apt-get: {error}"))?;
    if installed.success() {
        Ok(())
    } else {
        Err(
            "wrk is missing and apt-get could not install it (run as root, or install wrk)"
                .to_owned(),
        )
    }
}

fn build_release(root: &Path) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--locked",
            "--bin",
            "tenant-registry",
            "--bin",
            "tenant-registry-migrate",
        ])
        .current_dir(root)
        .status()
        .map_err(|error| format!("cannot run cargo: {error}"))?;
    if status.success() {
        Ok(())
    } else {
        Err("the release build failed; see above".to_owned())
    }
}

async fn fresh_database(cluster: &Cluster) -> Result<String, String> {
    let mut admin = PgConnection::connect(&cluster.url())
        .await
        .map_err(|error| format!("connecting to the bench cluster: {error}"))?;
    for statement in [
        format!("DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"),
        format!("CREATE DATABASE {DATABASE}"),
    ] {
        sqlx::raw_sql(&statement)
            .execute(&mut admin)
            .await
            .map_err(|error| format!("{statement}: {error}"))?;
    }
    Ok(cluster.database_url(DATABASE))
}

fn run_binary(
    root: &Path,
    binary: &str,
    args: &[&str],
    database_url: &str,
) -> Result<String, String> {
    let output = Command::new(root.join("target/release").join(binary))
        .args(args)
        .env("DATABASE_URL", database_url)
        .env("APP_ENV", "dev")
        .current_dir(root)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|error| format!("cannot run {binary}: {error}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    } else {
        Err(format!("{binary} {} failed", args.join(" ")))
    }
}

fn create_admin_key(root: &Path, database_url: &str) -> Result<String, String> {
    run_binary(
        root,
        "tenant-registry",
        &["create-admin-key", "--name", "bench"],
        database_url,
    )
}

async fn connect(database_url: &str) -> Result<PgConnection, String> {
    PgConnection::connect(database_url)
        .await
        .map_err(|error| format!("connecting to {DATABASE}: {error}"))
}

async fn execute(conn: &mut PgConnection, sql: &str) -> Result<(), String> {
    sqlx::raw_sql(sql)
        .execute(conn)
        .await
        .map(drop)
        .map_err(|error| format!("seeding: {error}"))
}

/// Tenants `t000001`… inserted in one statement, triggers off (nobody listens yet).
async fn seed_tenants(database_url: &str, count: u32) -> Result<(), String> {
    let started = Instant::now();
    let mut conn = connect(database_url).await?;
    execute(
        &mut conn,
        &format!(
            "SET session_replication_role = replica;
             INSERT INTO tenants (slug, name, plan, status)
             SELECT 't' || lpad(n::text, 6, '0'), 'Tenant ' || n, 'standard', 'active'
             FROM generate_series(1, {count}) AS n;
             ANALYZE tenants;"
        ),
    )
    .await?;
    eprintln!(
        "seeded {count} tenants in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Every tenant subscribed to the bench product, in one statement.
async fn subscribe_all(database_url: &str) -> Result<(), String> {
    let mut conn = connect(database_url).await?;
    execute(
        &mut conn,
        "SET session_replication_role = replica;
         INSERT INTO tenant_products (tenant_id, product) SELECT id, 'bench' FROM tenants;
         ANALYZE tenant_products;",
    )
    .await
}

/// `count` audit events spread over the tenants, actions, actors and the last days.
async fn seed_audit_events(database_url: &str, count: u32) -> Result<(), String> {
    let started = Instant::now();
    let mut conn = connect(database_url).await?;
    execute(
        &mut conn,
        &format!(
            "INSERT INTO audit_log (tenant_id, group_id, product, action, crud, actor_id,
                                    target_id, target_type, description, created_at, received_at)
             SELECT ids[1 + n % cardinality(ids)], ids[1 + n % cardinality(ids)]::text, 'bench',
                    (ARRAY['doc.read', 'doc.shared', 'tenant.updated', 'user.login'])[1 + (n / 7) % 4],
                    'r', 'u-' || n % 5000, 'd-' || n % 20000, 'document', 'bench event ' || n,
                    now() - n * interval '1 second', now() - n * interval '1 second'
             FROM generate_series(1, {count}) AS n,
                  (SELECT array_agg(id ORDER BY slug) AS ids FROM tenants) AS t;
             ANALYZE audit_log;"
        ),
    )
    .await?;
    eprintln!(
        "seeded {count} audit events in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The request paths each case picks from, one per line.
struct PathFiles {
    healthz: PathBuf,
    me: PathBuf,
    slugs_hot: PathBuf,
    slugs: PathBuf,
    ids: PathBuf,
    entitlements: PathBuf,
    audit_queries: PathBuf,
    slug_list: PathBuf,
}

async fn write_path_files(database_url: &str, work: &Path) -> Result<PathFiles, String> {
    let mut conn = connect(database_url).await?;
    let tenants: Vec<(uuid::Uuid, String)> =
        sqlx::query_as("SELECT id, slug FROM tenants ORDER BY slug")
            .fetch_all(&mut conn)
            .await
            .map_err(|error| format!("reading the tenants: {error}"))?;
    let write = |name: &str, lines: Vec<String>| -> Result<PathBuf, String> {
        let path = work.join(name);
        std::fs::write(&path, lines.join("\n") + "\n")
            .map_err(|error| format!("writing {}: {error}", path.display()))?;
        Ok(path)
    };
    let by_slug = |(_, slug): &(uuid::Uuid, String)| format!("/v1/tenants/by-slug/{slug}");
    Ok(PathFiles {
        healthz: write("healthz.txt", vec!["/healthz".to_owned()])?,
        me: write("me.txt", vec!["/v1/me".to_owned()])?,
        slugs_hot: write(
            "slugs-hot.txt",
            tenants.iter().take(HOT_SET).map(by_slug).collect(),
        )?,
        slugs: write("slugs.txt", tenants.iter().map(by_slug).collect())?,
        ids: write(
            "ids.txt",
            tenants
                .iter()
                .map(|(id, _)| format!("/v1/tenants/{id}"))
                .collect(),
        )?,
        entitlements: write(
            "entitlements.txt",
            tenants
                .iter()
                .map(|(id, _)| format!("/v1/tenants/{id}/entitlements/bench/sso"))
                .collect(),
        )?,
        audit_queries: write(
            "audit-queries.txt",
            tenants
                .iter()
                .take(1000)
                .map(|(id, _)| format!("/v1/audit/events?group_id={id}&action=doc.*&limit=50"))
                .collect(),
        )?,
        slug_list: write(
            "slug-list.txt",
            tenants.iter().map(|(_, slug)| slug.clone()).collect(),
        )?,
    })
}

fn publish_bench_product(key: &str) -> Result<(), String> {
    let manifest = r#"{"name": "Bench", "config_schema": {"type": "object"}, "default_config": {},
        "features": {"sso": {"type": "bool"}}, "plans": {"standard": {"sso": true}}}"#;
    let (status, body) = http("PUT", "/v1/products/bench", Some(key), Some(manifest))?;
    if status == 200 || status == 201 {
        Ok(())
    } else {
        Err(format!("publishing the bench product: {status} {body}"))
    }
}
