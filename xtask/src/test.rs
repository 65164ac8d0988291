//! `test`: a real PostgreSQL for the suite, then cargo-nextest over the whole workspace.

use std::process::{Command, ExitCode};

use testcontainers_modules::postgres::Postgres;
use testcontainers_modules::testcontainers::ContainerAsync;
use testcontainers_modules::testcontainers::runners::AsyncRunner;

use crate::{db, project_root};

/// Where the tests' PostgreSQL comes from; kept alive until the run ends.
pub(crate) enum Server {
    Given(String),
    Container {
        url: String,
        _container: Box<ContainerAsync<Postgres>>,
        _runtime: tokio::runtime::Runtime,
    },
    LocalCluster {
        url: String,
        started_here: bool,
    },
}

impl Server {
    pub(crate) fn url(&self) -> &str {
        match self {
            Self::Given(url) | Self::Container { url, .. } | Self::LocalCluster { url, .. } => url,
        }
    }

    /// Stops the local cluster if this run had to start it.
    pub(crate) fn stop_if_started_here(self) -> Result<(), String> {
        if let Self::LocalCluster {
            started_here: true, ..
        } = self
        {
            db::cluster()?.stop().map_err(|error| error.to_string())?;
        }
        Ok(())
    }
}

/// A PostgreSQL server: `TEST_DATABASE_URL`, else a Docker container, else the local cluster.
pub(crate) fn provide() -> Result<Server, String> {
    if let Ok(url) = std::env::var("TEST_DATABASE_URL") {
        eprintln!("tests use TEST_DATABASE_URL");
        return Ok(Server::Given(url));
    }
    if docker_configured() {
        match start_container() {
            Ok(server) => return Ok(server),
            Err(error) => eprintln!(
                "Docker did not give a PostgreSQL container ({error}); using the local cluster"
            ),
        }
    }
    let cluster = db::cluster()?;
    let started_here = cluster
        .ensure_running()
        .map_err(|error| error.to_string())?;
    eprintln!(
        "tests use the local cluster in {}",
        cluster.base_dir().display()
    );
    Ok(Server::LocalCluster {
        url: cluster.url(),
        started_here,
    })
}

fn docker_configured() -> bool {
    std::env::var_os("DOCKER_HOST").is_some()
        || std::path::Path::new("/var/run/docker.sock").exists()
}

fn start_container() -> Result<Server, String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|error| error.to_string())?;
    let (container, url) = runtime.block_on(async {
        let container = Postgres::default()
            .start()
            .await
            .map_err(|error| error.to_string())?;
        let host = container
            .get_host()
            .await
            .map_err(|error| error.to_string())?;
        let port = container
            .get_host_port_ipv4(5432)
            .await
            .map_err(|error| error.to_string())?;
        Ok::<_, String>((
            container,
            format!("postgres://postgres:postgres@{host}:{port}/postgres"),
        ))
    })?;
    eprintln!("tests use a PostgreSQL container at {url}");
    Ok(Server::Container {
        url,
        _container: Box::new(container),
        _runtime: runtime,
    })
}

/// Provides the database, runs the suite, and stops a cluster it had to start.
pub fn run(nextest_args: &[String]) -> Result<ExitCode, String> {
    let server = provide()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = Command::new(cargo)
        .args(["nextest", "run", "--workspace", "--no-fail-fast"])
        .args(nextest_args)
        .env("TEST_DATABASE_URL", server.url())
        .current_dir(project_root())
        .status()
        .map_err(|error| {
            format!("cannot run cargo nextest (is cargo-nextest installed?): {error}")
        })?;
    server.stop_if_started_here()?;
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
