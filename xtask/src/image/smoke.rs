//! `image --test`: the image as a deployment runs it, on a cluster of its own. The migrate
//! container migrates a fresh database, the server container serves it, both on a read-only
//! root with no writable /tmp (so the image writes nothing anywhere), then an authenticated
//! call, SIGTERM, and exit code 0. Containers share the host's network, which keeps the
//! cluster on loopback.

use std::path::Path;
use std::process::Stdio;

use devcluster::Cluster;
use serde_json::{Value, json};

use super::Podman;
use crate::bench::server::{Server, http_at};
use crate::{db, fuzz};

/// The cluster's port, apart from the development (54329), bench (54339) and test clusters.
const PG_PORT: u16 = 54349;
const DATABASE: &str = "tr_image_test";
const ADDR: &str = "127.0.0.1:18390";
const ADMIN_ADDR: &str = "127.0.0.1:18391";
/// An issuer is required in prod; the test authenticates with an API key, so it is never
/// asked (`.invalid` names resolve nowhere).
const ISSUER: &str = "https://keycloak.image-test.invalid/realms/platform";

pub fn run(root: &Path, podman: &Podman, image: &str) -> Result<(), String> {
    let port = db::port_from_env("TR_IMAGE_PG_PORT", PG_PORT)?;
    let cluster =
        Cluster::named(root, "image-postgres", port).map_err(|error| error.to_string())?;
    let started_here = cluster
        .ensure_running()
        .map_err(|error| error.to_string())?;
    let server = cluster.url();
    let outcome = fuzz::admin_sql(
        &server,
        &format!("DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"),
    )
    .and_then(|()| fuzz::admin_sql(&server, &format!("CREATE DATABASE {DATABASE}")))
    .and_then(|()| exercise(podman, image, &cluster.database_url(DATABASE)));
    if started_here {
        cluster.stop().map_err(|error| error.to_string())?;
    }
    outcome
}

fn exercise(podman: &Podman, image: &str, database_url: &str) -> Result<(), String> {
    let encryption_keys = keyring::Keyring::generate_spec("image-test")
        .map_err(|error| format!("cannot generate an encryption key: {error}"))?;
    let settings = [
        ("DATABASE_URL", database_url),
        ("APP_ENV", "prod"),
        ("ENCRYPTION_KEYS", &encryption_keys),
        ("KEYCLOAK_ISSUER", ISSUER),
        ("ADDR", ADDR),
        ("ADMIN_ADDR", ADMIN_ADDR),
    ];
    let container = |name: &str, command: &[&str]| {
        let mut run = podman.command();
        run.args(["run", "--rm", "--name", name, "--network", "host"])
            .args(["--read-only", "--read-only-tmpfs=false"]);
        // Named here, valued in podman's environment: no secret on a command line.
        for (variable, value) in settings {
            run.args(["--env", variable]).env(variable, value);
        }
        run.arg(image).args(command);
        run
    };
    let prefix = format!("tr-image-test-{}", std::process::id());

    let mut migrate = container(
        &format!("{prefix}-migrate"),
        &["tenant-registry-migrate", "up"],
    );
    migrate.stdout(Stdio::null());
    super::run_to_end(migrate, "the migrate container")?;
    eprintln!("migrate container: tenant-registry-migrate up exited 0");

    let key = fuzz::printed_key(container(
        &format!("{prefix}-key"),
        &[
            "tenant-registry",
            "create-admin-key",
            "--name",
            "image-test",
            "--expires-in",
            "1",
        ],
    ))?;

    // The image's default command, as the chart's main container runs it.
    let mut server_container = container(&format!("{prefix}-server"), &[]);
    server_container.stdout(Stdio::null());
    let mut server = Server::spawn(server_container, ADDR, "/readyz")?;
    eprintln!("server container: /readyz answers 200");
    let calls = authenticated_calls(&key);
    let ended = server.terminate()?;
    calls?;
    // podman run proxies the signal to the server and exits with the container's code.
    if ended.success() {
        eprintln!("server container: exit code 0 after SIGTERM");
        Ok(())
    } else {
        Err(format!(
            "the server container ended with {ended} after SIGTERM, not 0"
        ))
    }
}

/// Who the key is, then a write that the key ring encrypts (the contact email) read back.
fn authenticated_calls(key: &str) -> Result<(), String> {
    let me = expect(
        http_at(ADDR, "GET", "/v1/me", Some(key), None),
        200,
        "GET /v1/me",
    )?;
    if me["scopes"] != json!(["platform:admin"]) {
        return Err(format!(
            "GET /v1/me answered {me}, not the platform admin key"
        ));
    }
    let body = json!({"slug": "image-test", "name": "Image Test", "plan": "free", "contact_email": "ops@image-test.example"});
    let created = expect(
        http_at(
            ADDR,
            "POST",
            "/v1/tenants",
            Some(key),
            Some(&body.to_string()),
        ),
        201,
        "POST /v1/tenants",
    )?;
    let path = format!("/v1/tenants/{}", created["id"].as_str().unwrap_or_default());
    let read = expect(
        http_at(ADDR, "GET", &path, Some(key), None),
        200,
        "GET the tenant",
    )?;
    if read["contact_email"] != body["contact_email"] {
        return Err(format!("the tenant read back is {read}"));
    }
    let (metrics, _) = http_at(ADMIN_ADDR, "GET", "/metrics", None, None)?;
    if metrics != 200 {
        return Err(format!(
            "GET /metrics on the admin listener answered {metrics}"
        ));
    }
    eprintln!("server container: /v1/me, a tenant created and read back, /metrics answered");
    Ok(())
}

fn expect(answer: Result<(u16, String), String>, status: u16, what: &str) -> Result<Value, String> {
    let (got, body) = answer.map_err(|error| format!("{what}: {error}"))?;
    if got != status {
        return Err(format!("{what} answered {got}, not {status}: {body}"));
    }
    serde_json::from_str(&body).map_err(|error| format!("{what}: {error} in {body}"))
}
