//! `cargo xtask <command>`: the developer's one entry point (local database, migrations,
//! tests, running the service). Every path is taken from the project root, never from the
//! working directory.

mod bench;
mod db;
mod deploy_check;
mod fuzz;
mod image;
mod migration_file;
mod openapi;
mod test;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Developer commands for tenant-registry.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Manage the local PostgreSQL cluster (under target/, on port 54329 or TR_DEV_PG_PORT).
    Db {
        #[command(subcommand)]
        action: db::Action,
    },
    /// Write the next migration file, migrations/V{n}__{name}.sql.
    MigrateCreate {
        /// What the migration does, in lowercase snake_case (e.g. add_tenant_version).
        name: String,
    },
    /// Run every test against a real PostgreSQL (TEST_DATABASE_URL, else Docker, else the
    /// local cluster). Extra arguments go to cargo-nextest.
    Test {
        /// Arguments passed through to `cargo nextest run`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        nextest_args: Vec<String>,
    },
    /// Write docs/openapi.json from the code (or, with --check, fail if it is stale) and
    /// validate it as OpenAPI 3.1.
    Openapi {
        /// Compare with the committed document instead of writing it.
        #[arg(long)]
        check: bool,
    },
    /// Migrate and serve on :8090, starting the local cluster when DATABASE_URL is unset.
    Run,
    /// Benchmark release builds on their own cluster and write docs/benchmarks.md.
    Bench(bench::Options),
    /// Fuzz the running server from docs/openapi.json with Schemathesis (seeded ids, a fixed
    /// seed); fails on any 5xx or undocumented status.
    Fuzz(fuzz::Options),
    /// Build the container image with podman (local base images unless --public-bases);
    /// with --test, run it against a local cluster.
    Image(image::Options),
    /// Lint the Dockerfiles (hadolint); render the Helm chart, validate every object against
    /// the Kubernetes schemas and check the chart's rules (the migrate init container, …).
    DeployCheck,
}

/// The workspace root, from where this crate sits in it.
pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Db { action } => db::run(action),
        Command::MigrateCreate { name } => migration_file::create(&project_root(), &name),
        Command::Test { nextest_args } => test::run(&nextest_args),
        Command::Openapi { check } => openapi::run(check),
        Command::Run => db::run_service(),
        Command::Bench(options) => bench::run(options),
        Command::Fuzz(options) => fuzz::run(&options),
        Command::Image(options) => image::run(&options),
        Command::DeployCheck => deploy_check::run(),
    };
    match outcome {
        Ok(code) => code,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}
