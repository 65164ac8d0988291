//! The server's configuration: flags with environment fallbacks, checked before anything
//! starts so a bad deployment fails in one clear line.

use std::net::SocketAddr;
use std::time::Duration;

use axum::http::HeaderValue;
use clap::{Args, Parser, Subcommand, ValueEnum};

/// Where the server runs; decides log format and which unsafe defaults are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AppEnv {
    /// A developer's machine.
    Dev,
    /// A shared pre-production environment.
    Stage,
    /// Production.
    Prod,
}

impl AppEnv {
    /// The name, as it appears in new API keys.
    pub fn as_str(self) -> &'static str {
        match self {
            AppEnv::Dev => "dev",
            AppEnv::Stage => "stage",
            AppEnv::Prod => "prod",
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line (for log shippers).
    Json,
    /// Human-readable.
    Pretty,
}

/// The tenant-registry REST server.
#[derive(Debug, Parser)]
#[command(name = "tenant-registry", version)]
pub struct Cli {
    #[command(flatten)]
    pub config: Config,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What to do; `serve` when none is given.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API (the default).
    Serve,
    /// Create a platform key with scope platform:admin and print it alone on stdout: how a
    /// fresh install gets its first credential. Audited as `bootstrap:<name>`.
    CreateAdminKey {
        /// A label for the key.
        #[arg(long)]
        name: String,
        /// Days until the key expires.
        #[arg(
            long,
            value_name = "DAYS",
            default_value_t = BOOTSTRAP_KEY_DAYS,
            value_parser = clap::value_parser!(u32).range(1..=3650),
            conflicts_with = "no_expiry"
        )]
        expires_in: u32,
        /// A key that never expires (it can then mint keys that never expire either).
        #[arg(long)]
        no_expiry: bool,
    },
}

/// Days a bootstrap admin key lives unless `--expires-in` or `--no-expiry` says otherwise.
pub const BOOTSTRAP_KEY_DAYS: u32 = 30;

impl Command {
    /// When a `create-admin-key` key expires, counted from `now`; `None` for never.
    pub fn bootstrap_expiry(
        expires_in: u32,
        no_expiry: bool,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Option<chrono::DateTime<chrono::Utc>> {
        (!no_expiry).then(|| now + chrono::Duration::days(i64::from(expires_in)))
    }
}

/// Settings shared by every subcommand.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Deployment environment. Production unless told otherwise, so a deployment that
    /// forgets it gets prod's checks instead of dev's conveniences.
    #[arg(
        long,
        env = "APP_ENV",
        value_enum,
        default_value = "prod",
        global = true
    )]
    pub app_env: AppEnv,

    /// Address to listen on: `:PORT` (all interfaces), `HOST:PORT` or `[IPv6]:PORT`.
    #[arg(long, env = "ADDR", default_value = ":8090", value_parser = parse_addr, global = true)]
    pub addr: SocketAddr,

    /// Address of the admin listener: the probes, /health/dependencies and /metrics (the
    /// last two are not served on ADDR).
    #[arg(long, env = "ADMIN_ADDR", default_value = "127.0.0.1:8091", value_parser = parse_addr, global = true)]
    pub admin_addr: SocketAddr,

    /// Seconds a client may take to send a request's headers (1 to 300).
    #[arg(long, env = "HEADER_READ_TIMEOUT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=300), global = true)]
    pub header_read_timeout_secs: u64,

    /// Seconds a connection may move no byte in either direction before it is closed
    /// (longer than REQUEST_TIMEOUT_SECS).
    #[arg(long, env = "IDLE_TIMEOUT_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(2..=3601), global = true)]
    pub idle_timeout_secs: u64,

    /// Most connections each listener keeps open at once; more wait in the backlog.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=1_000_000), global = true)]
    pub max_connections: u64,

    /// Most connections each listener keeps open from one peer address (at most
    /// MAX_CONNECTIONS); a further one from that address is answered 429 and closed.
    #[arg(long, env = "MAX_CONNECTIONS_PER_ADDRESS", default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=1_000_000), global = true)]
    pub max_connections_per_address: u64,

    /// Proxies (addresses or CIDR networks, comma separated) whose `Forwarded` and
    /// `X-Forwarded-For` headers name the client for the failed-key brake and the audit
    /// trail's source address; from any other peer those headers are ignored.
    #[arg(long, env = "TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_proxy, global = true)]
    pub trusted_proxies: Vec<ipnet::IpNet>,

    /// PostgreSQL URL, e.g. postgres://user:password@host:5432/tenant_registry.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, global = true)]
    pub database_url: Option<String>,

    /// OIDC issuer whose access tokens are accepted (e.g. https://sso.example.com/realms/platform).
    #[arg(long, env = "KEYCLOAK_ISSUER", global = true)]
    pub keycloak_issuer: Option<String>,

    /// The audience (`aud`) OIDC access tokens must carry.
    #[arg(
        long,
        env = "OIDC_AUDIENCE",
        default_value = "tenant-registry",
        global = true
    )]
    pub oidc_audience: String,

    /// The realm role that makes an OIDC user a platform admin.
    #[arg(
        long,
        env = "OIDC_ADMIN_ROLE",
        default_value = "platform-admin",
        global = true
    )]
    pub oidc_admin_role: String,

    /// Log format; default pretty in dev, json elsewhere.
    #[arg(long, env = "LOG_FORMAT", value_enum, global = true)]
    pub log_format: Option<LogFormat>,

    /// Origins allowed to call the API from a browser, comma separated (default: none).
    #[arg(long, env = "CORS_ORIGINS", value_delimiter = ',', global = true)]
    pub cors_origins: Vec<String>,

    /// Seconds a request may take before it is answered with 408.
    #[arg(
        long,
        env = "REQUEST_TIMEOUT_SECS",
        default_value_t = 30,
        global = true
    )]
    pub request_timeout_secs: u64,

    /// Keys encrypting PII and secrets at rest: `kid:base64key,…` (32-byte keys; the first
    /// encrypts, all decrypt). Required outside dev.
    #[arg(long, env = "ENCRYPTION_KEYS", hide_env_values = true, global = true)]
    pub encryption_keys: Option<String>,

    /// In dev without ENCRYPTION_KEYS: where a generated key is kept between runs.
    #[arg(
        long,
        env = "DEV_ENCRYPTION_KEY_FILE",
        default_value = "target/dev-encryption-keys",
        global = true
    )]
    pub dev_encryption_key_file: std::path::PathBuf,

    /// Days a new trial lasts unless the request sets trial_ends_at.
    #[arg(long, env = "TRIAL_DAYS", default_value_t = 14, value_parser = clap::value_parser!(i64).range(1..=365), global = true)]
    pub trial_days: i64,

    /// Make PATCH and DELETE of tenants require If-Match (428 without it).
    #[arg(long, env = "REQUIRE_IF_MATCH", global = true)]
    pub require_if_match: bool,

    /// Where domain verification looks TXT records up: `system` (the name servers of
    /// /etc/resolv.conf), a DNS server's address (`10.0.0.53`, `127.0.0.1:5353`), or a
    /// DNS-over-HTTPS URL (RFC 8484; a host name in it is resolved once, at start, by the
    /// system's resolver). Default: system.
    #[arg(long, env = "DNS_RESOLVER", global = true)]
    pub dns_resolver: Option<String>,

    /// The former name of DNS_RESOLVER, for a DNS-over-HTTPS URL only; honoured, with a
    /// warning, when DNS_RESOLVER is unset.
    #[arg(long, env = "DNS_RESOLVER_URL", hide = true, global = true)]
    pub dns_resolver_url: Option<String>,

    /// Whether fetches of URLs that callers give (an IdP's discovery document or SAML
    /// metadata; webhook deliveries will follow the same policy) may reach loopback,
    /// private, link-local and other internal addresses: true or false. Default: true in
    /// dev, false in stage and prod. Plain http is allowed in dev only, whatever this says.
    #[arg(long, env = "OUTBOUND_ALLOW_PRIVATE", global = true)]
    pub outbound_allow_private: Option<bool>,

    /// Days audit events are kept after they arrive, 1 to 36500 (default: forever).
    /// Expired events are deleted in small batches every ten minutes.
    #[arg(long, env = "AUDIT_RETENTION_DAYS", value_parser = clap::value_parser!(i64).range(1..=36500), global = true)]
    pub audit_retention_days: Option<i64>,

    /// Days events are kept after they occur, 1 to 36500. Older ones are deleted in small
    /// batches every ten minutes.
    #[arg(long, env = "EVENTS_RETENTION_DAYS", default_value_t = 30, value_parser = clap::value_parser!(i64).range(1..=36500), global = true)]
    pub events_retention_days: i64,

    /// Seconds without an event after which an event stream sends a heartbeat comment;
    /// shorter than IDLE_TIMEOUT_SECS, or quiet streams are cut (default: 15, or half the
    /// idle timeout when that is shorter).
    #[arg(long, env = "EVENTS_HEARTBEAT_SECS", value_parser = clap::value_parser!(u64).range(1..=3600), global = true)]
    pub events_heartbeat_secs: Option<u64>,

    /// Event streams each replica serves at once; more are answered 503.
    #[arg(long, env = "EVENTS_MAX_STREAMS", default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=100_000), global = true)]
    pub events_max_streams: u64,

    /// Most tenants each replica keeps in its lookup cache; 0 turns the cache off (every
    /// lookup reads the database).
    #[arg(
        long,
        env = "TENANT_CACHE_ENTRIES",
        default_value_t = 200_000,
        global = true
    )]
    pub tenant_cache_entries: u64,

    /// Apply pending migrations at start (a development convenience; production runs
    /// tenant-registry-migrate as an init container).
    #[arg(long, env = "MIGRATE_ON_START", global = true)]
    pub migrate: bool,

    /// Run the background runner (webhook fan-out and delivery) in this process: `on`, or
    /// `off` on replicas that should only serve requests. Safe to run on every replica.
    #[arg(long, env = "WORKER", value_enum, default_value = "on", global = true)]
    pub worker: Switch,

    /// Webhook deliveries this replica's runner makes at once, over every endpoint.
    #[arg(long, env = "WEBHOOK_CONCURRENCY", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096), global = true)]
    pub webhook_concurrency: u32,

    /// Deliveries one endpoint receives at once, across every replica: the bound that keeps
    /// a receiver from being flooded, and its throughput (about this many divided by its
    /// answer time).
    #[arg(long, env = "WEBHOOK_ENDPOINT_CONCURRENCY", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024), global = true)]
    pub webhook_endpoint_concurrency: u32,

    /// Seconds a replica holds a delivery it is making. Well over an attempt's 10 s timeout:
    /// a delivery whose replica died (SIGKILL, lost node) is made by another replica once
    /// its lease runs out, so this is also how late such a delivery can be.
    #[arg(long, env = "WEBHOOK_LEASE_SECS", default_value_t = 60, value_parser = clap::value_parser!(u32).range(15..=3600), global = true)]
    pub webhook_lease_secs: u32,

    /// Days before its end that a trial is announced as ending (`tenant.trial_ending`); the
    /// worker freezes a trial once its end has passed (`tenant.trial_expired`).
    #[arg(long, env = "TRIAL_WARNING_DAYS", default_value_t = 3, value_parser = clap::value_parser!(u32).range(0..=90), global = true)]
    pub trial_warning_days: u32,

    /// The provisioning runner's settings.
    #[command(flatten)]
    pub provisioning: provisioning::ProvisioningArgs,

    /// HTTPS on ADDR.
    #[command(flatten)]
    pub tls: tls::TlsArgs,
}

/// A trusted proxy: a network (`10.0.0.0/8`) or one address (`10.0.0.7`).
fn parse_proxy(text: &str) -> Result<ipnet::IpNet, String> {
    let text = text.trim();
    text.parse::<ipnet::IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("{text:?} is neither an IP address nor a CIDR network"))
}

/// A feature turned on or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Switch {
    /// On.
    On,
    /// Off.
    Off,
}

/// An event stream's heartbeat interval unless configured (or half the idle timeout).
const DEFAULT_HEARTBEAT_SECS: u64 = 15;

/// The configuration after its checks: what the server runs with.
#[derive(Debug)]
pub struct Checked {
    /// The key ring (its keys never printed).
    pub keyring: keyring::Keyring,
    /// Set when a development key was generated or loaded from a file.
    pub keyring_warning: Option<String>,
    /// Where TXT lookups go.
    pub dns: api::dns::DnsServers,
    /// Set when the setting came from its former name, `DNS_RESOLVER_URL`.
    pub dns_warning: Option<String>,
    /// The database URL.
    pub database_url: String,
    /// CORS origins as header values.
    pub cors_origins: Vec<HeaderValue>,
    /// OIDC, when an issuer is configured.
    pub oidc: Option<auth::OidcConfig>,
    /// Request timeout.
    pub request_timeout: Duration,
    /// What each listener allows its connections.
    pub connection_limits: api::ConnectionLimits,
    /// What fetches of caller-given URLs may reach.
    pub outbound: egress::Policy,
    /// Event retention and streams.
    pub events: api::events::EventSettings,
    /// HTTPS on the API listener, when configured (loaded and checked).
    pub tls: Option<std::sync::Arc<api::tls::TlsAcceptor>>,
}

impl Config {
    /// The log format in effect.
    pub fn log_format(&self) -> LogFormat {
        self.log_format.unwrap_or(if self.app_env == AppEnv::Dev {
            LogFormat::Pretty
        } else {
            LogFormat::Json
        })
    }

    /// The outbound destination policy: dev allows plain http and private addresses; stage
    /// and prod allow https to public addresses only, unless `OUTBOUND_ALLOW_PRIVATE` says
    /// otherwise about private addresses.
    pub fn outbound_policy(&self) -> egress::Policy {
        let dev = self.app_env == AppEnv::Dev;
        egress::Policy {
            allow_http: dev,
            allow_private: self.outbound_allow_private.unwrap_or(dev),
        }
    }

    /// Refuses configurations the service cannot or must not run with, in one line.
    pub fn check(&self) -> Result<Checked, String> {
        let database_url = self
            .database_url
            .clone()
            .filter(|url| !url.trim().is_empty())
            .ok_or("no database: set DATABASE_URL or pass --database-url")?;
        let issuer = self
            .keycloak_issuer
            .clone()
            .filter(|issuer| !issuer.trim().is_empty());
        if self.app_env == AppEnv::Prod && issuer.is_none() {
            return Err(
                "APP_ENV=prod (the default) requires KEYCLOAK_ISSUER (the OIDC issuer of platform admins); set APP_ENV=dev for a local server"
                    .to_owned(),
            );
        }
        if let Some(issuer) = &issuer {
            check_issuer(issuer, self.app_env)?;
        }
        if self.oidc_audience.trim().is_empty() || self.oidc_admin_role.trim().is_empty() {
            return Err("OIDC_AUDIENCE and OIDC_ADMIN_ROLE must not be empty".to_owned());
        }
        let cors_origins = self
            .cors_origins
            .iter()
            .filter(|origin| !origin.trim().is_empty())
            .map(|origin| {
                let origin = origin.trim();
                if origin == "*" || !(origin.starts_with("https://") || origin.starts_with("http://")) {
                    return Err(format!(
                        "CORS_ORIGINS entry {origin:?} must be an origin like https://admin.example.com (no wildcard)"
                    ));
                }
                HeaderValue::from_str(origin).map_err(|_| format!("CORS_ORIGINS entry {origin:?} is not a valid header value"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if !(1..=3600).contains(&self.request_timeout_secs) {
            return Err("REQUEST_TIMEOUT_SECS must be between 1 and 3600".to_owned());
        }
        if self.idle_timeout_secs <= self.request_timeout_secs {
            return Err(format!(
                "IDLE_TIMEOUT_SECS ({}) must be longer than REQUEST_TIMEOUT_SECS ({}), or a slow request's connection is cut before it is answered",
                self.idle_timeout_secs, self.request_timeout_secs
            ));
        }
        let heartbeat_secs = match self.events_heartbeat_secs {
            Some(secs) if secs >= self.idle_timeout_secs => {
                return Err(format!(
                    "EVENTS_HEARTBEAT_SECS ({secs}) must be shorter than IDLE_TIMEOUT_SECS ({}), or quiet event streams are cut",
                    self.idle_timeout_secs
                ));
            }
            Some(secs) => secs,
            None => DEFAULT_HEARTBEAT_SECS.min(self.idle_timeout_secs / 2),
        };
        let (dns, dns_warning) = self.dns_servers()?;
        let (keyring, keyring_warning) = self.keyring()?;
        let tls = self
            .tls
            .files()?
            .map(|files| api::tls::TlsAcceptor::load(files).map(std::sync::Arc::new))
            .transpose()
            .map_err(|error| format!("TLS: {error}"))?;
        Ok(Checked {
            keyring,
            keyring_warning,
            dns,
            dns_warning,
            database_url,
            cors_origins,
            oidc: issuer.map(|issuer| auth::OidcConfig {
                issuer,
                audience: self.oidc_audience.clone(),
                admin_role: self.oidc_admin_role.clone(),
                key_refresh_interval: auth::oidc::REFRESH_INTERVAL,
                key_set_max_age: auth::oidc::KEY_SET_MAX_AGE,
            }),
            request_timeout: Duration::from_secs(self.request_timeout_secs),
            connection_limits: api::ConnectionLimits {
                header_read_timeout: Duration::from_secs(self.header_read_timeout_secs),
                idle_timeout: Duration::from_secs(self.idle_timeout_secs),
                max_connections: usize::try_from(self.max_connections).unwrap_or(usize::MAX),
                max_connections_per_address: usize::try_from(
                    self.max_connections_per_address.min(self.max_connections),
                )
                .unwrap_or(usize::MAX),
                trusted_proxies: self.trusted_proxies.clone().into(),
            },
            outbound: self.outbound_policy(),
            events: api::events::EventSettings {
                retention: chrono::Duration::days(self.events_retention_days),
                heartbeat: Duration::from_secs(heartbeat_secs),
                max_streams: usize::try_from(self.events_max_streams).unwrap_or(usize::MAX),
            },
            tls,
        })
    }

    fn keyring(&self) -> Result<(keyring::Keyring, Option<String>), String> {
        if let Some(spec) = self
            .encryption_keys
            .as_deref()
            .filter(|spec| !spec.trim().is_empty())
        {
            return keyring::Keyring::parse(spec)
                .map(|ring| (ring, None))
                .map_err(|error| error.to_string());
        }
        if self.app_env != AppEnv::Dev {
            return Err(format!(
                "APP_ENV={} requires ENCRYPTION_KEYS (kid:base64key with a 32-byte key)",
                self.app_env.as_str()
            ));
        }
        let path = &self.dev_encryption_key_file;
        let spec = match std::fs::read_to_string(path) {
            Ok(spec) => spec,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let spec =
                    keyring::Keyring::generate_spec("dev").map_err(|error| error.to_string())?;
                write_private(path, &spec).map_err(|error| {
                    format!(
                        "cannot keep the dev encryption key in {}: {error}",
                        path.display()
                    )
                })?;
                spec
            }
            Err(error) => return Err(format!("cannot read {}: {error}", path.display())),
        };
        let ring = keyring::Keyring::parse(spec.trim())
            .map_err(|error| format!("{}: {error}", path.display()))?;
        Ok((
            ring,
            Some(format!(
                "no ENCRYPTION_KEYS: using the development key in {} (never do this outside dev)",
                path.display()
            )),
        ))
    }

    /// Where TXT lookups go, from `DNS_RESOLVER` or its former name.
    fn dns_servers(&self) -> Result<(api::dns::DnsServers, Option<String>), String> {
        use api::dns::DnsServers;
        match (&self.dns_resolver, &self.dns_resolver_url) {
            (Some(_), Some(_)) => Err(
                "DNS_RESOLVER_URL is the former name of DNS_RESOLVER: set DNS_RESOLVER only"
                    .to_owned(),
            ),
            (Some(text), None) => text
                .parse()
                .map(|servers| (servers, None))
                .map_err(|rule| format!("DNS_RESOLVER {text:?} {rule}")),
            (None, Some(url)) => match url.parse() {
                Ok(servers @ DnsServers::Https(_)) => Ok((
                    servers,
                    Some(
                        "DNS_RESOLVER_URL is deprecated: set DNS_RESOLVER instead (the endpoint is now asked in the RFC 8484 wire format, no longer the JSON API)"
                            .to_owned(),
                    ),
                )),
                _ => Err(format!(
                    "DNS_RESOLVER_URL {url:?} must be an https URL of a DNS-over-HTTPS endpoint (RFC 8484); for a DNS server's address, set DNS_RESOLVER"
                )),
            },
            (None, None) => Ok((DnsServers::System, None)),
        }
    }
}

fn write_private(path: &std::path::Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(parent) = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
    {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?
        .write_all(contents.as_bytes())
}

/// An issuer must be https, except on loopback outside prod (local Keycloak, tests).
fn check_issuer(issuer: &str, app_env: AppEnv) -> Result<(), String> {
    domain::idp::check_url(issuer, app_env != AppEnv::Prod)
        .map_err(|rule| format!("KEYCLOAK_ISSUER {issuer:?} {rule}"))
}

fn parse_addr(value: &str) -> Result<SocketAddr, String> {
    let full = if value.starts_with(':') {
        format!("0.0.0.0{value}")
    } else {
        value.to_owned()
    };
    full.parse().map_err(|_| {
        format!("{value:?} is not an address like :8090, 127.0.0.1:8090 or [::1]:8090")
    })
}

mod provisioning;
#[cfg(test)]
mod tests;
mod tls;
