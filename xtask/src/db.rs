//! `db up|down|status|url` and `run`: the local cluster and the service on top of it.

use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};

use clap::Subcommand;
use devcluster::{Cluster, ClusterStatus};
use sqlx::{Connection, PgConnection};

use crate::project_root;

/// The database the service uses inside the local cluster.
const DEV_DATABASE: &str = "tenant_registry";

/// What to do with the local cluster.
#[derive(Debug, Subcommand)]
pub enum Action {
    /// Initialise (first time) and start the cluster; print its DATABASE_URL.
    Up,
    /// Stop the cluster; its data stays for the next `up`.
    Down,
    /// Say whether the cluster runs, and where it keeps its files.
    Status,
    /// Print the DATABASE_URL of the service's database in the cluster.
    Url,
}

/// The port `variable` names, or `default` when it is unset.
pub fn port_from_env(variable: &str, default: u16) -> Result<u16, String> {
    match std::env::var(variable) {
        Ok(value) => value
            .parse()
            .map_err(|_| format!("{variable}={value:?} is not a port")),
        Err(_) => Ok(default),
    }
}

pub fn cluster() -> Result<Cluster, String> {
    Cluster::for_project(&project_root()).map_err(|error| error.to_string())
}

/// Starts the cluster and creates the service's database; returns its URL.
pub fn up() -> Result<String, String> {
    let cluster = cluster()?;
    cluster
        .ensure_running()
        .map_err(|error| error.to_string())?;
    runtime()?.block_on(create_database_if_missing(&cluster.url()))?;
    Ok(cluster.database_url(DEV_DATABASE))
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| format!("cannot start a runtime: {error}"))
}

async fn create_database_if_missing(server_url: &str) -> Result<(), String> {
    let mut admin = PgConnection::connect(server_url)
        .await
        .map_err(|error| format!("cannot connect to the local cluster: {error}"))?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(DEV_DATABASE)
            .fetch_one(&mut admin)
            .await
            .map_err(|error| error.to_string())?;
    if !exists {
        sqlx::raw_sql(&format!("CREATE DATABASE {DEV_DATABASE}"))
            .execute(&mut admin)
            .await
            .map_err(|error| format!("cannot create database {DEV_DATABASE}: {error}"))?;
    }
    Ok(())
}

pub fn run(action: Action) -> Result<ExitCode, String> {
    match action {
        Action::Up => println!("{}", up()?),
        Action::Down => {
            cluster()?.stop().map_err(|error| error.to_string())?;
            eprintln!("local cluster stopped");
        }
        Action::Status => {
            let cluster = cluster()?;
            let status = cluster.status().map_err(|error| error.to_string())?;
            println!(
                "{} (port {}, files in {})",
                match status {
                    ClusterStatus::Running => "running",
                    ClusterStatus::Stopped => "stopped",
                    ClusterStatus::Absent => "not initialised",
                },
                cluster.port(),
                cluster.base_dir().display()
            );
        }
        Action::Url => println!("{}", cluster()?.database_url(DEV_DATABASE)),
    }
    Ok(ExitCode::SUCCESS)
}

/// `make run`: the local cluster unless DATABASE_URL is set, then migrations, then the
/// server in place of this process (so signals reach it directly).
pub fn run_service() -> Result<ExitCode, String> {
    let database_url = match std::env::var("DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => url,
        _ => {
            let url = up()?;
            eprintln!("using the local cluster: DATABASE_URL={url}");
            url
        }
    };
    // The binaries default to prod; `make run` is a developer's server unless told otherwise.
    let app_env = std::env::var("APP_ENV").unwrap_or_else(|_| "dev".to_owned());
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let root = project_root();
    let migrated = Command::new(&cargo)
        .args([
            "run",
            "--quiet",
            "--bin",
            "tenant-registry-migrate",
            "--",
            "up",
        ])
        .env("DATABASE_URL", &database_url)
        .env("APP_ENV", &app_env)
        .current_dir(&root)
        .status()
        .map_err(|error| format!("cannot run cargo: {error}"))?;
    if !migrated.success() {
        return Err("migrations failed; see above".to_owned());
    }
    eprintln!(
        "serving on :8090 (metrics on 127.0.0.1:8091). Create the first platform admin key with:\n  \
         APP_ENV={app_env} DATABASE_URL={database_url} cargo run --quiet --bin tenant-registry -- create-admin-key --name admin"
    );
    let error = Command::new(&cargo)
        .args(["run", "--quiet", "--bin", "tenant-registry", "--"])
        .env("DATABASE_URL", &database_url)
        .env("APP_ENV", &app_env)
        .current_dir(&root)
        .exec();
    Err(format!("cannot start the server: {error}"))
}
