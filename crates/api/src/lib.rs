//! The HTTP API of tenant-registry: one router per resource, merged here, the service-wide
//! middleware, and the serve loop. A library so that tests drive the whole router
//! in-process.

mod api_keys;
mod audit_events;
mod blocking;
mod config_schema;
mod denials;
pub mod dns;
mod domains;
mod entitlement_cache;
pub mod events;
pub mod extract;
mod fields;
mod forwarded;
pub mod head_limits;
pub mod health;
mod hygiene;
pub mod idempotency;
mod idps;
mod invalidation;
mod me;
pub mod metrics;
mod middleware;
pub mod openapi;
mod operations;
mod outbound;
pub mod pagination;
mod probes;
pub mod problem;
mod product_migrations;
pub mod products;
mod projects;
mod provisioning;
mod retraced;
pub mod server;
mod subscriptions;
mod tenant_cache;
mod tenants;
pub mod tls;
mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use auth::{ApiKeyVerifier, OidcConfig, OidcVerifier, VerificationBrake};
use axum::Router;
use axum::http::HeaderValue;
use keyring::Keyring;
use storage::PgPool;
use tokio::task::JoinHandle;

/// How the API behaves; parsed by the server binary from its flags and environment.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The `<env>` part of new API keys (`dev`, `stage`, `prod`).
    pub key_env: String,
    /// Where OIDC tokens come from; `None` accepts API keys only.
    pub oidc: Option<OidcConfig>,
    /// Origins allowed by CORS; empty allows none.
    pub cors_origins: Vec<HeaderValue>,
    /// The longest a request may take.
    pub request_timeout: Duration,
    /// Encrypts PII and secrets at rest.
    pub keyring: Arc<Keyring>,
    /// Days a new trial lasts unless the request says otherwise.
    pub trial_days: i64,
    /// Whether PATCH and DELETE must carry `If-Match` (428 without).
    pub require_if_match: bool,
    /// Looks up TXT records for domain verification.
    pub dns: Arc<dyn dns::TxtResolver>,
    /// How long audit events are kept after they arrive; `None` keeps them forever.
    pub audit_retention: Option<chrono::Duration>,
    /// Most tenants the lookup cache holds; 0 turns it off.
    pub tenant_cache_entries: u64,
    /// Fetches documents from URLs callers give, under the outbound destination policy.
    pub outbound: egress::Egress,
    /// Event retention and streams.
    pub events: events::EventSettings,
    /// The time source of the key verification brake (the system's; tests hold it still).
    pub brake_clock: auth::Clock,
    /// Proxies whose `Forwarded` / `X-Forwarded-For` headers name the client; from any
    /// other peer those headers are ignored and the peer is the client.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Products' clusters and hook secrets (`PRODUCT_…`), for provisioning views.
    pub clusters: Arc<provisioner::Clusters>,
    /// The first retry's delay of a failed provisioning step, doubled at each failure.
    pub provisioning_retry_base: chrono::TimeDelta,
}

impl Settings {
    /// Development settings around `keyring`: API keys only, no CORS, 30 s timeout, 14-day
    /// trials, `If-Match` honoured but optional, no TXT lookups (each answers "unreachable"
    /// until `dns` is set; nothing here reads the machine's resolver configuration),
    /// outbound fetches under the development policy (plain http, private addresses).
    pub fn with_keyring(keyring: Keyring) -> Result<Self, String> {
        Ok(Self {
            key_env: "dev".to_owned(),
            oidc: None,
            cors_origins: Vec::new(),
            request_timeout: Duration::from_secs(30),
            keyring: Arc::new(keyring),
            trial_days: 14,
            require_if_match: false,
            dns: Arc::new(dns::Unconfigured),
            audit_retention: None,
            tenant_cache_entries: tenant_cache::DEFAULT_ENTRIES,
            outbound: egress::Egress::new(egress::Policy::DEVELOPMENT)
                .map_err(|error| error.to_string())?,
            events: events::EventSettings::default(),
            brake_clock: auth::Clock::default(),
            trusted_proxies: Vec::new(),
            clusters: Arc::new(provisioner::Clusters::default()),
            provisioning_retry_base: provisioner::ProvisionerConfig::default().retry_base,
        })
    }

    /// The longest one SQL statement of a search, an export page or a verification may run:
    /// a second less than the request timeout (half of it when that is shorter), so the
    /// database cancels it, and the caller hears why, before the request itself times out.
    pub fn statement_timeout(&self) -> Duration {
        self.request_timeout
            .saturating_sub(Duration::from_secs(1))
            .max(self.request_timeout / 2)
    }
}

/// Chain verifications one replica runs at once; more are answered 503 with `Retry-After`.
pub const CONCURRENT_VERIFICATIONS: usize = 2;

/// What every handler can reach; every middleware and handler holds a clone, so cloning is
/// one reference count.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The parts of [`AppState`].
pub struct Shared {
    /// The database pool.
    pub pool: PgPool,
    /// API key verification with its cache.
    pub verifier: ApiKeyVerifier,
    /// Bearer token validation, when an issuer is configured.
    pub oidc: Option<Arc<OidcVerifier>>,
    /// The brake on uncached key verifications per client address.
    pub brake: VerificationBrake,
    /// The same quota on failed authentications per client address (each 401 is recorded).
    pub failure_brake: VerificationBrake,
    /// Prometheus metrics.
    pub metrics: Arc<metrics::Metrics>,
    /// The settings it was built with.
    pub settings: Arc<Settings>,
    /// Answers of the feature-check hot path.
    pub entitlements: products::EntitlementCache,
    /// Tenants by id and slug, for the lookup hot path.
    pub tenants: tenant_cache::TenantCache,
    /// Where the cache reads tenants from: lookups coalesced into batches.
    pub tenant_lookups: storage::tenants::TenantLookups,
    /// Permits for audit chain verifications ([`CONCURRENT_VERIFICATIONS`]).
    pub verifications: tokio::sync::Semaphore,
    /// The event relay, stream admission, and the switch that ends streams on shutdown.
    pub events: events::EventHub,
    /// This process's name on its idempotency claims, held while it lives.
    pub claim_holder: storage::idempotency::Holder,
    /// What the start-up probe and the dependency report read.
    pub health: health::Health,
}

impl AppState {
    /// After a committed change to tenant `id` (its row or products): this replica forgets
    /// it at once, the others when the notification reaches them. `slugs` are the slugs the
    /// tenant had before and after the change.
    pub(crate) async fn tenant_changed(&self, id: uuid::Uuid, slugs: &[&str]) {
        self.entitlements.forget_tenant(id);
        self.tenants
            .forget(&storage::tenants::TenantChange {
                id,
                slugs: slugs.iter().map(|slug| (*slug).to_owned()).collect(),
            })
            .await;
    }
}

/// Why the application could not be assembled.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The OIDC client could not be created.
    #[error("OIDC: {0}")]
    Oidc(#[from] auth::AuthError),
    /// The change or event listener could not subscribe.
    #[error("cannot listen for changes or events: {0}")]
    Listen(#[from] sqlx::Error),
    /// The idempotency holder lock could not be taken.
    #[error("cannot take the idempotency holder lock: {0}")]
    ClaimHolder(#[source] sqlx::Error),
}

/// The assembled service: its router and the background task that keeps caches fresh.
pub struct Application {
    /// The complete router with every layer.
    pub router: Router,
    /// The probes and metrics, for the admin listener (`ADMIN_ADDR`).
    pub admin_router: Router,
    /// The state behind it.
    pub state: AppState,
    /// Background tasks (cache invalidation, the idempotency sweep, audit and event
    /// retention, the event relay); aborted on drop.
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Application {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Assembles the service over `pool`, subscribed to key changes and events before it
/// returns, with the idempotency sweep and event retention running, and audit retention
/// when it is configured.
pub async fn build(pool: PgPool, settings: Settings) -> Result<Application, BuildError> {
    let oidc = settings
        .oidc
        .clone()
        .map(OidcVerifier::new)
        .transpose()?
        .map(Arc::new);
    let verifier = ApiKeyVerifier::new(pool.clone());
    let tenants = tenant_cache::TenantCache::new(settings.tenant_cache_entries);
    let tenant_lookups = storage::tenants::TenantLookups::start(pool.clone());
    let events = events::EventHub::new(settings.events.max_streams);
    let (claim_holder, holding) = storage::idempotency::Holder::start(&pool)
        .await
        .map_err(BuildError::ClaimHolder)?;
    let state = AppState(Arc::new(Shared {
        pool,
        verifier,
        oidc,
        brake: VerificationBrake::with_clock(settings.brake_clock.clone()),
        failure_brake: VerificationBrake::with_clock(settings.brake_clock.clone()),
        metrics: Arc::new(metrics::Metrics::default()),
        settings: Arc::new(settings),
        entitlements: products::EntitlementCache::default(),
        tenants,
        tenant_lookups,
        verifications: tokio::sync::Semaphore::new(CONCURRENT_VERIFICATIONS),
        events,
        claim_holder,
        health: health::Health::default(),
    }));
    let mut tasks = vec![
        holding,
        invalidation::spawn(&state.pool, state.clone()).await?,
        idempotency::spawn_sweeper(state.pool.clone()),
    ];
    if let Some(keep) = state.settings.audit_retention {
        tasks.push(audit::spawn_retention(state.pool.clone(), keep));
    }
    tasks.extend(events::spawn(&state).await?);
    Ok(Application {
        router: router(state.clone()),
        admin_router: admin_router(state.clone()),
        state,
        tasks,
    })
}

/// The complete router over `state`, with every layer.
pub fn router(state: AppState) -> Router {
    let routes = Router::new()
        .merge(probes::router())
        .merge(me::router())
        .merge(api_keys::router())
        .merge(tenants::router())
        .merge(products::router())
        .merge(product_migrations::router())
        .merge(provisioning::router())
        .merge(operations::router())
        .merge(projects::router())
        .merge(idps::router())
        .merge(domains::router())
        .merge(audit_events::router())
        .merge(retraced::router())
        .merge(events::router())
        .merge(webhooks::router())
        .merge(openapi::router())
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            denials::record,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::record,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            idempotency::idempotent_posts,
        ))
        .with_state(state.clone());
    middleware::apply(
        routes,
        &state.settings.cors_origins,
        state.settings.request_timeout,
    )
}

/// The admin listener's router: liveness, readiness and Prometheus metrics. Kept off the
/// API listener so that the traffic figures are not public to whoever can reach the API.
pub fn admin_router(state: AppState) -> Router {
    let routes = probes::admin_router().with_state(state.clone());
    middleware::apply(routes, &[], state.settings.request_timeout)
}

pub use server::{ConnectionLimits, serve};
