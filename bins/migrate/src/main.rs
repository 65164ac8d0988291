//! `tenant-registry-migrate`: applies and inspects the database migrations embedded in this
//! build. Runs as a Kubernetes init container before the server starts.
//!
//! Exit codes: 0 done, 1 failed (database unreachable, a migration failed, validation found a
//! problem), 2 refused (bad arguments, or `reset` without its safeguards met).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use storage::migrations::{self, Entry};

/// Applies and inspects tenant-registry's database migrations (forward-only).
#[derive(Debug, Parser)]
#[command(name = "tenant-registry-migrate", version)]
struct Cli {
    /// PostgreSQL URL, e.g. postgres://user:password@host:5432/tenant_registry.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, global = true)]
    database_url: Option<String>,

    /// Deployment environment (dev, stage, prod; prod when unset); `reset` refuses to run
    /// in prod.
    #[arg(long, env = "APP_ENV", default_value = "prod", global = true)]
    app_env: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Apply pending migrations (idempotent: a second run applies nothing).
    Up {
        /// Stop after this version instead of applying all.
        #[arg(long)]
        target: Option<i32>,
    },
    /// List applied migrations with checksums, and pending ones.
    #[command(visible_alias = "version")]
    Status,
    /// Fail if an applied migration differs from this build or is missing from it.
    Validate,
    /// Record migration N as applied without running it (repair after a manual change).
    #[command(visible_alias = "force")]
    MarkApplied {
        /// The migration's version number.
        version: i32,
    },
    /// Drop every object the migrations made, and the migration history (dev and tests only).
    Reset {
        /// Confirms that all data in the database is to be destroyed.
        #[arg(long)]
        yes_really: bool,
    },
}

enum Failure {
    Failed(String),
    Refused(String),
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Failed(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(1)
        }
        Err(Failure::Refused(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let url = cli
        .database_url
        .filter(|url| !url.trim().is_empty())
        .ok_or_else(|| {
            Failure::Refused("no database: set DATABASE_URL or pass --database-url".to_owned())
        })?;
    let failed = |error: migrations::MigrationError| Failure::Failed(one_line(&error));
    match cli.command {
        Command::Up { target } => {
            let applied = migrations::up(&url, target).await.map_err(failed)?;
            if applied.is_empty() {
                println!("nothing to apply: the database is up to date");
            }
            for entry in applied {
                println!("applied V{} {}", entry.version, entry.name);
            }
        }
        Command::Status => print_entries(&migrations::status(&url).await.map_err(failed)?),
        Command::Validate => {
            let entries = migrations::validate(&url).await.map_err(failed)?;
            let applied = entries
                .iter()
                .filter(|entry| entry.state == migrations::EntryState::Applied)
                .count();
            println!(
                "valid: {applied} applied migration(s) match this build, {} pending",
                entries.len() - applied
            );
        }
        Command::MarkApplied { version } => {
            let entry = migrations::mark_applied(&url, version)
                .await
                .map_err(failed)?;
            println!(
                "marked V{} {} as applied (not run)",
                entry.version, entry.name
            );
        }
        Command::Reset { yes_really } => {
            if cli.app_env.eq_ignore_ascii_case("prod") {
                return Err(Failure::Refused(
                    "reset is refused when APP_ENV=prod".to_owned(),
                ));
            }
            if !yes_really {
                return Err(Failure::Refused(
                    "reset destroys every table and all data; pass --yes-really to confirm"
                        .to_owned(),
                ));
            }
            migrations::reset(&url).await.map_err(failed)?;
            println!("reset: every migrated object and the migration history were dropped");
        }
    }
    Ok(())
}

/// The error and each cause that adds something, on one line.
fn one_line(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

fn print_entries(entries: &[Entry]) {
    println!(
        "{:<8} {:<10} {:<30} {:<22} applied_on",
        "version", "state", "name", "checksum"
    );
    for entry in entries {
        println!(
            "{:<8} {:<10} {:<30} {:<22} {}",
            format!("V{}", entry.version),
            entry.state.as_str(),
            entry.name,
            entry.checksum,
            entry.applied_on.as_deref().unwrap_or("-")
        );
    }
}
