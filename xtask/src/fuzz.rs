//! `fuzz`: Schemathesis, driven by docs/openapi.json, against the real server binary on a
//! database of its own, with real ids seeded so requests get past 404. It fails on any 5xx
//! and on any status the document does not list for the operation.

use std::path::Path;
use std::process::{Command, ExitCode, Stdio};

use serde_json::{Value, json};

use crate::bench::server::{Server, http_at};
use crate::{project_root, test};

/// The same seed every run, so a failure found once is found again.
const SEED: &str = "20261207";

/// Options of `cargo xtask fuzz`.
#[derive(Debug, clap::Args)]
pub struct Options {
    /// Seconds Schemathesis may spend generating and sending requests.
    #[arg(long, default_value_t = 60)]
    max_time: u32,
}

/// The ids the seeded requests created, for the operations' path parameters.
struct Seeded {
    tenant: String,
    tenant_slug: String,
    project: String,
    project_slug: String,
    domain: String,
    idp: String,
    webhook: String,
    victim_key: String,
}

pub fn run(options: &Options) -> Result<ExitCode, String> {
    let root = project_root();
    let database = test::provide()?;
    build_binaries(&root)?;
    let name = format!("tr_fuzz_{}", uuid::Uuid::new_v4().simple());
    let url = database_url(database.url(), &name)?;
    admin_sql(database.url(), &format!("CREATE DATABASE {name}"))?;
    let outcome = fuzz_database(&root, &url, options);
    admin_sql(
        database.url(),
        &format!("DROP DATABASE {name} WITH (FORCE)"),
    )?;
    database.stop_if_started_here()?;
    outcome
}

fn fuzz_database(root: &Path, url: &str, options: &Options) -> Result<ExitCode, String> {
    let binaries = root.join("target/debug");
    let migrated = Command::new(binaries.join("tenant-registry-migrate"))
        .arg("up")
        .env("DATABASE_URL", url)
        .stdout(Stdio::null())
        .status()
        .map_err(|error| format!("cannot run the migrate binary: {error}"))?;
    if !migrated.success() {
        return Err("migrating the fuzz database failed".to_owned());
    }
    let key = admin_key(&binaries, url)?;
    // Ports free now, so that runs on one machine at once (two worktrees, say) each have
    // their own; the server binds them a moment later, which leaves a window small enough
    // for a developer's machine.
    let (address, admin_address) = (free_address()?, free_address()?);
    let mut command = Command::new(binaries.join("tenant-registry"));
    command
        .env("DATABASE_URL", url)
        .env("ADDR", &address)
        .env("ADMIN_ADDR", &admin_address)
        .env("APP_ENV", "dev")
        .env("WEBHOOK_ALLOW_PRIVATE", "true")
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "warn")
        .current_dir(root)
        .stdout(Stdio::null());
    let mut server = Server::spawn(command, &address, "/healthz")?;
    let seeded = seed(&address, &key)?;
    let config = root.join("target/fuzz/schemathesis.toml");
    std::fs::create_dir_all(config.parent().unwrap_or(root))
        .and_then(|()| std::fs::write(&config, config_text(&seeded)))
        .map_err(|error| format!("cannot write {}: {error}", config.display()))?;
    let status = Command::new("python3")
        .args(["-m", "schemathesis.cli", "--config-file"])
        .arg(&config)
        .arg("run")
        .arg(root.join("docs/openapi.json"))
        .args(["--url", &format!("http://{address}")])
        .args(["--header", &format!("Authorization: Bearer {key}")])
        .args(["--checks", "not_a_server_error,status_code_conformance"])
        .args(["--phases", "examples,coverage,fuzzing"])
        // One worker: CPython 3.11 before 3.11.8 races in `ast.parse` when threads call it
        // at once (Hypothesis does, describing filters), and the run dies with "AST
        // constructor recursion depth mismatch"; one worker also keeps a seed's run the same.
        .args(["--seed", SEED, "--workers", "1", "--continue-on-failure"])
        .args(["--max-time", &options.max_time.to_string()])
        .args(["--warnings", "missing_test_data"])
        // Schemathesis keeps its cache in the working directory.
        .current_dir(root.join("target/fuzz"))
        .status()
        .map_err(|error| {
            format!(
                "cannot run schemathesis (python3 -m pip install schemathesis==4.32.5): {error}"
            )
        })?;
    server.stop();
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// A loopback address with a port nobody listens on at the moment.
fn free_address() -> Result<String, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.to_string())
        .map_err(|error| format!("no free loopback port: {error}"))
}

fn build_binaries(root: &Path) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let built = Command::new(cargo)
        .args(["build", "--locked", "--quiet", "--bin", "tenant-registry"])
        .args(["--bin", "tenant-registry-migrate"])
        .current_dir(root)
        .status()
        .map_err(|error| format!("cannot run cargo build: {error}"))?;
    if built.success() {
        Ok(())
    } else {
        Err("building the server binaries failed".to_owned())
    }
}

/// `server`'s URL with its database replaced by `name`.
fn database_url(server: &str, name: &str) -> Result<String, String> {
    let (base, _) = server
        .rsplit_once('/')
        .ok_or_else(|| format!("not a database URL: {server}"))?;
    Ok(format!("{base}/{name}"))
}

pub(crate) fn admin_sql(server: &str, statement: &str) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| error.to_string())?;
    runtime.block_on(async {
        let mut connection = <sqlx::PgConnection as sqlx::Connection>::connect(server)
            .await
            .map_err(|error| format!("cannot reach {server}: {error}"))?;
        sqlx::raw_sql(statement)
            .execute(&mut connection)
            .await
            .map(drop)
            .map_err(|error| format!("{statement}: {error}"))
    })
}

fn admin_key(binaries: &Path, url: &str) -> Result<String, String> {
    let mut command = Command::new(binaries.join("tenant-registry"));
    command
        .args(["create-admin-key", "--name", "fuzz", "--no-expiry"])
        .env("DATABASE_URL", url)
        .env("APP_ENV", "dev");
    printed_key(command)
}

/// Runs a `create-admin-key` command; the key it printed, alone, on stdout.
pub(crate) fn printed_key(mut command: Command) -> Result<String, String> {
    let output = command
        .output()
        .map_err(|error| format!("cannot run create-admin-key: {error}"))?;
    let key = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if output.status.success() && !key.is_empty() {
        Ok(key)
    } else {
        Err(format!(
            "create-admin-key failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Sends one seeding request and returns its JSON answer; anything but 2xx stops the run.
fn create_at(
    address: &str,
    key: &str,
    method: &str,
    path: &str,
    body: &Value,
) -> Result<Value, String> {
    let (status, answer) = http_at(address, method, path, Some(key), Some(&body.to_string()))?;
    if !(200..300).contains(&status) {
        return Err(format!(
            "seeding {method} {path} answered {status}: {answer}"
        ));
    }
    serde_json::from_str(&answer).map_err(|error| format!("{method} {path}: {error}"))
}

fn id_of(answer: &Value) -> Result<String, String> {
    answer["id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("no id in {answer}"))
}

/// A tenant with a product that supports projects, a project, a claimed domain, an
/// identity provider, a webhook endpoint and a key for the key operations to act on (so
/// that they never revoke or rotate the fuzzer's own).
fn seed(address: &str, key: &str) -> Result<Seeded, String> {
    let create =
        |method: &str, path: &str, body: &Value| create_at(address, key, method, path, body);
    let manifest = json!({
        "name": "Fuzzed", "supports_projects": true,
        "features": {"sso": {"type": "bool"}, "max_projects": {"type": "limit"}},
        "plans": {"free": {"sso": false, "max_projects": 5}}
    });
    create("PUT", "/v1/products/fuzzed", &manifest)?;
    let tenant = create(
        "POST",
        "/v1/tenants",
        &json!({"slug": "fuzz-acme", "name": "Fuzz Acme", "plan": "free"}),
    )?;
    let tenant_id = id_of(&tenant)?;
    let under = |path: &str| format!("/v1/tenants/{tenant_id}/{path}");
    create("PUT", &under("products/fuzzed"), &json!({}))?;
    let project = create(
        "POST",
        &under("projects"),
        &json!({"slug": "web", "name": "Web"}),
    )?;
    let domain = create(
        "POST",
        &under("domains"),
        &json!({"domain": "fuzz-acme.example"}),
    )?;
    let idp = create(
        "POST",
        &under("idps"),
        &json!({"kind": "oidc", "name": "Fuzz IdP", "issuer": "https://sso.fuzz-acme.example",
                "client_id": "registry"}),
    )?;
    let webhook = create(
        "POST",
        "/v1/webhooks",
        &json!({"url": "http://127.0.0.1:9/hook", "event_types": ["tenant.*"]}),
    )?;
    let victim = create(
        "POST",
        "/v1/api-keys",
        &json!({"name": "victim", "tenant_id": tenant_id, "scopes": ["tenants:read"]}),
    )?;
    Ok(Seeded {
        tenant: tenant_id,
        tenant_slug: "fuzz-acme".to_owned(),
        project: id_of(&project)?,
        project_slug: "web".to_owned(),
        domain: id_of(&domain)?,
        idp: id_of(&idp)?,
        webhook: id_of(&webhook)?,
        victim_key: id_of(&victim)?,
    })
}

/// One `[[operations]]` block per family of paths, each naming the seeded ids its path
/// parameters take (a path's `{slug}` means another thing in each family) and, for domain
/// verification, that its 503 is expected: it asks DNS, which this sandbox cannot reach, and
/// answers "try again later" (a documented 503) when the lookup fails.
fn config_text(seeded: &Seeded) -> String {
    let (product, feature) = ("fuzzed".to_owned(), "sso".to_owned());
    let dns_may_fail = "checks.not_a_server_error.expected-statuses = [\"2XX\", \"4XX\", 503]\n";
    let blocks = [
        (
            r"^/v1/api-keys/\\{id\\}",
            vec![("id", &seeded.victim_key)],
            "",
        ),
        (r"^/v1/products/", vec![("product", &product)], ""),
        (
            r"^/v1/tenants/by-slug/",
            vec![("slug", &seeded.tenant_slug)],
            "",
        ),
        (
            r"^/v1/tenants/\\{id\\}/projects/by-slug/",
            vec![("id", &seeded.tenant), ("slug", &seeded.project_slug)],
            "",
        ),
        (
            r"^/v1/tenants/\\{id\\}/domains/\\{domain\\}/verify$",
            vec![("id", &seeded.tenant), ("domain", &seeded.domain)],
            dns_may_fail,
        ),
        (
            r"^/v1/tenants/\\{id\\}(?!/projects/by-slug/)(?!/domains/\\{domain\\}/verify$)(/.*)?$",
            vec![
                ("id", &seeded.tenant),
                ("project", &seeded.project),
                ("domain", &seeded.domain),
                ("idp", &seeded.idp),
                ("product", &product),
                ("feature", &feature),
                ("slug", &seeded.tenant_slug),
            ],
            "",
        ),
        (r"^/v1/webhooks/\\{id\\}", vec![("id", &seeded.webhook)], ""),
    ];
    let mut text = String::from("# Written by cargo xtask fuzz for one run; see README.md.\n");
    for (regex, parameters, extra) in blocks {
        text.push_str(&format!(
            "\n[[operations]]\ninclude-path-regex = \"{regex}\"\n{extra}"
        ));
        for (name, value) in parameters {
            text.push_str(&format!("parameters.\"path.{name}\" = \"{value}\"\n"));
        }
    }
    text
}
