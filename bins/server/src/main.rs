//! `tenant-registry`: parses its configuration, connects to PostgreSQL, and either serves
//! the HTTP API until SIGTERM or ctrl-c (then drains in-flight requests) or runs a one-off
//! command such as `create-admin-key`.

mod config;

/// mimalloc instead of the system allocator: on the benchmark's lookup cases it serves
/// about a quarter more requests per second (many small, short-lived allocations per
/// request, spread over the runtime's threads).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;

use clap::Parser;
use config::{Cli, Command, Config, LogFormat};
use storage::migrations::SchemaState;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let format = match cli.config.log_format() {
        LogFormat::Pretty => telemetry::LogFormat::Pretty,
        LogFormat::Json => telemetry::LogFormat::Json,
    };
    // Held to the end: dropping it exports the spans still queued.
    let telemetry = match telemetry::init(format, "info,sqlx=warn") {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    if telemetry.exports_traces() {
        tracing::info!("exporting traces over OTLP (OTEL_EXPORTER_OTLP_ENDPOINT)");
    }
    // Not `#[tokio::main]`: dropping its runtime waits for every blocking job, however long
    // a runaway one runs; this one waits a bounded time once serving has stopped.
    let outcome = api::server::run_then_shut_down(run(cli), api::server::BLOCKING_JOBS_GRACE)
        .map_err(|error| format!("cannot start the runtime: {error}"))
        .and_then(|ran| ran);
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            tracing::error!("{message}");
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    let checked = cli.config.check()?;
    for warning in [&checked.keyring_warning, &checked.dns_warning]
        .into_iter()
        .flatten()
    {
        tracing::warn!("{warning}");
    }
    if checked.outbound.allow_private && cli.config.app_env != config::AppEnv::Dev {
        tracing::warn!(
            "OUTBOUND_ALLOW_PRIVATE=true: URLs that callers give may reach this network's private addresses"
        );
    }
    if cli.config.migrate {
        let applied = storage::migrations::up(&checked.database_url, None)
            .await
            .map_err(|error| format!("--migrate: {error}"))?;
        tracing::info!(applied = applied.len(), "migrations applied at start");
    }
    let pool = storage::connect(&checked.database_url, &storage::PoolConfig::default())
        .await
        .map_err(|error| error.to_string())?;
    let schema = storage::migrations::schema_state(&pool)
        .await
        .map_err(|error| format!("cannot read the schema version: {error}"))?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(&cli.config, checked, pool, schema).await,
        Command::CreateAdminKey {
            name,
            expires_in,
            no_expiry,
        } => {
            if let SchemaState::Behind { .. } = schema {
                return Err(schema.to_string());
            }
            let expires_at = Command::bootstrap_expiry(expires_in, no_expiry, chrono::Utc::now());
            if expires_at.is_none() {
                tracing::warn!("the admin key never expires (--no-expiry): revoke it when done");
            }
            let issued = registry::api_keys::create_bootstrap_admin(
                &pool,
                cli.config.app_env.as_str(),
                &name,
                expires_at,
            )
            .await
            .map_err(|error| format!("cannot create the key: {error}"))?;
            tracing::info!(key_id = %issued.record.id, ?expires_at, "platform admin key created");
            println!("{}", auth::keys::reveal(&issued.key));
            Ok(())
        }
    }
}

async fn serve(
    config: &Config,
    checked: config::Checked,
    pool: storage::PgPool,
    schema: SchemaState,
) -> Result<(), String> {
    match schema {
        SchemaState::Current => {}
        SchemaState::Ahead { .. } => {
            tracing::warn!("{schema}; serving, as migrations are additive");
        }
        SchemaState::Behind { .. } => tracing::error!("{schema}; /readyz answers 503 until then"),
    }
    let dns = api::dns::HickoryResolver::new(&checked.dns)
        .await
        .map_err(|error| format!("DNS_RESOLVER: {error}"))?;
    tracing::info!(resolver = ?dns, "domain verification looks TXT records up here");
    let clusters = std::sync::Arc::new(provisioner::Clusters::from_env());
    tracing::info!(
        variables = clusters.len(),
        "products' clusters and hook secrets read from PRODUCT_… variables"
    );
    let settings = api::Settings {
        key_env: config.app_env.as_str().to_owned(),
        oidc: checked.oidc,
        cors_origins: checked.cors_origins,
        request_timeout: checked.request_timeout,
        keyring: std::sync::Arc::new(checked.keyring),
        trial_days: config.trial_days,
        require_if_match: config.require_if_match,
        dns: std::sync::Arc::new(dns),
        audit_retention: config.audit_retention_days.map(chrono::Duration::days),
        tenant_cache_entries: config.tenant_cache_entries,
        outbound: egress::Egress::new(checked.outbound).map_err(|error| error.to_string())?,
        events: checked.events,
        brake_clock: auth::Clock::default(),
        trusted_proxies: config.trusted_proxies.clone(),
        clusters: clusters.clone(),
        provisioning_retry_base: config.provisioning.retry_base(),
    };
    let application = api::build(pool, settings)
        .await
        .map_err(|error| error.to_string())?;
    let listener = bind(config.addr).await?;
    let admin_listener = bind(config.admin_addr).await?;
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let shutdown = shutdown_signal()?;
    let state = application.state.clone();
    tokio::spawn(async move {
        shutdown.await;
        // Event streams never finish on their own: end them, or the drain waits forever.
        state.events.close();
        let _ = stop.send(true);
    });
    let stopped = move || {
        let mut stopping = stopping.clone();
        async move {
            let _ = stopping.wait_for(|stop| *stop).await;
        }
    };
    let worker = if config.worker == config::Switch::On {
        let runner = webhooks::Runner::new(
            application.state.pool.clone(),
            std::sync::Arc::clone(&application.state.settings.keyring),
            application.state.settings.outbound.clone(),
            std::sync::Arc::new(webhooks::SystemClock),
            webhooks::RunnerConfig {
                concurrency: usize::try_from(config.webhook_concurrency).unwrap_or(64),
                per_endpoint: i64::from(config.webhook_endpoint_concurrency),
                lease: chrono::TimeDelta::seconds(i64::from(config.webhook_lease_secs)),
                ..webhooks::RunnerConfig::default()
            },
            application.state.metrics.clone(),
        );
        let trials = registry::trials::TrialConfig {
            warning: chrono::TimeDelta::days(i64::from(config.trial_warning_days)),
            ..registry::trials::TrialConfig::default()
        };
        let trial_sweep = tokio::spawn(registry::trials::run(
            application.state.pool.clone(),
            std::sync::Arc::new(webhooks::SystemClock),
            trials,
            stopped(),
        ));
        let provisioning = provisioner::Provisioner::new(
            application.state.pool.clone(),
            clusters,
            application.state.settings.outbound.clone(),
            config.provisioning.backups()?,
            config.provisioning.runner(),
        )
        .observed_by(application.state.metrics.clone());
        let provisioning = tokio::spawn(provisioning.run(stopped()));
        let webhooks = tokio::spawn(runner.run(stopped()));
        let health = &application.state.health;
        health.watch_runner("webhook-runner", &webhooks);
        health.watch_runner("provisioning-runner", &provisioning);
        health.watch_runner("trial-sweep", &trial_sweep);
        Some(webhooks)
    } else {
        None
    };
    tracing::info!(addr = %config.addr, admin_addr = %config.admin_addr, env = config.app_env.as_str(), worker = worker.is_some(), https = checked.tls.is_some(), "serving");
    let limits = checked.connection_limits;
    // The admin listener stays plain HTTP: the kubelet's probes and the scraper reach it
    // inside the pod's network, and it serves no tenant data.
    let (api, admin) = tokio::join!(
        api::serve(
            listener,
            application.router.clone(),
            limits.clone(),
            checked.tls,
            stopped()
        ),
        api::serve(
            admin_listener,
            application.admin_router.clone(),
            limits,
            None,
            stopped()
        ),
    );
    api.and(admin)
        .map_err(|error| format!("server error: {error}"))?;
    if let Some(worker) = worker {
        match worker.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::error!(%error, "the background runner stopped with an error")
            }
            Err(error) => tracing::error!(%error, "the background runner panicked"),
        }
    }
    tracing::info!("stopped after draining in-flight requests");
    Ok(())
}

async fn bind(addr: std::net::SocketAddr) -> Result<tokio::net::TcpListener, String> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|error| format!("cannot listen on {addr}: {error}"))
}

/// Waits for ctrl-c or SIGTERM. The handlers are installed before this returns (so before
/// the server says it is serving): a SIGTERM that arrives early still drains instead of
/// killing the process.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>, String> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())
        .map_err(|error| format!("cannot listen for SIGTERM: {error}"))?;
    let mut interrupt = signal(SignalKind::interrupt())
        .map_err(|error| format!("cannot listen for ctrl-c: {error}"))?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => {},
            _ = interrupt.recv() => {},
        }
        tracing::info!("shutdown requested; draining");
    })
}
