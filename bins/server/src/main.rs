//! `tenant-registry`: parses its configuration, connects to PostgreSQL, checks the schema
//! version and serves the HTTP API until SIGTERM or ctrl-c, then drains in-flight requests.

mod config;

use std::process::ExitCode;

use clap::Parser;
use config::{AppEnv, Config};
use storage::migrations::SchemaState;

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    init_tracing(config.app_env);
    match run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            tracing::error!("{message}");
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(app_env: AppEnv) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,sqlx=warn".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if app_env == AppEnv::Dev {
        builder.init();
    } else {
        builder.json().init();
    }
}

async fn run(config: Config) -> Result<(), String> {
    config.check()?;
    let database_url = config.database_url.as_deref().unwrap_or_default();
    let pool = storage::connect(database_url, &storage::PoolConfig::default())
        .await
        .map_err(|error| error.to_string())?;
    match storage::migrations::schema_state(&pool)
        .await
        .map_err(|error| format!("cannot read the schema version: {error}"))?
    {
        SchemaState::Current => {}
        SchemaState::Ahead { applied, expected } => tracing::warn!(
            applied,
            expected,
            "the database schema is newer than this build; serving, as migrations are additive"
        ),
        SchemaState::Behind { applied, expected } => {
            return Err(format!(
                "the database schema is at {}, this build needs V{expected}: run `tenant-registry-migrate up`",
                applied.map_or("no version".to_owned(), |version| format!("V{version}"))
            ));
        }
    }
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .map_err(|error| format!("cannot listen on {}: {error}", config.addr))?;
    tracing::info!(addr = %config.addr, env = ?config.app_env, "serving");
    api::serve(
        listener,
        api::router(api::AppState { pool }),
        shutdown_signal(),
    )
    .await
    .map_err(|error| format!("server error: {error}"))?;
    tracing::info!("stopped after draining in-flight requests");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown requested; draining");
}
