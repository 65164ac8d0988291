//! Looking up DNS TXT records, for domain verification, with `hickory-resolver`. The lookup is
//! an interface (`registry::domains::TxtResolver`) so tests (and air-gapped installs) can put
//! their own resolver behind it; the one shipped asks the name servers of the system's
//! configuration (`/etc/resolv.conf`) unless the operator names a DNS server or a
//! DNS-over-HTTPS endpoint (RFC 8484).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::system_conf::parse_resolv_conf;
use hickory_resolver::{Resolver, TokioResolver};
pub use registry::domains::{Lookup, LookupError, TxtResolver};
use url::Url;

/// The longest one TXT lookup may take, all name servers and retries included: well inside
/// the default request timeout (30 s), so the caller hears "try again later" rather than a
/// 408 however many servers the configuration lists.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(5);

/// The system's resolver configuration.
pub const SYSTEM_CONFIG: &str = "/etc/resolv.conf";

/// Where TXT lookups are sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsServers {
    /// The name servers of the system's configuration ([`SYSTEM_CONFIG`]).
    System,
    /// One DNS server, over UDP, and TCP for answers too long for UDP.
    Plain(SocketAddr),
    /// A DNS-over-HTTPS endpoint (RFC 8484, HTTP/2); a host name in it is resolved once,
    /// when the resolver is built, by the system's resolver.
    Https(Url),
}

/// What a DNS resolver setting may say, for the message when it says something else.
pub const SETTING_FORMS: &str = "must be `system`, a DNS server's address (`10.0.0.53` or `10.0.0.53:5353`, `[fd00::53]:53`) or a DNS-over-HTTPS URL (`https://dns.internal/dns-query`)";

/// A DNS resolver setting that is none of [`SETTING_FORMS`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{SETTING_FORMS}")]
pub struct BadSetting;

impl FromStr for DnsServers {
    type Err = BadSetting;

    fn from_str(text: &str) -> Result<Self, BadSetting> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("system") {
            return Ok(Self::System);
        }
        if let Ok(address) = text.parse::<SocketAddr>() {
            return Ok(Self::Plain(address));
        }
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Ok(Self::Plain(SocketAddr::new(ip, 53)));
        }
        let url = Url::parse(text).map_err(|_| BadSetting)?;
        let acceptable = url.scheme() == "https"
            && url.host_str().is_some_and(|host| !host.is_empty())
            && url.username().is_empty()
            && url.password().is_none()
            && url.query().is_none()
            && url.fragment().is_none();
        if acceptable {
            Ok(Self::Https(url))
        } else {
            Err(BadSetting)
        }
    }
}

/// Why the resolver could not be built; said at start, so the details are the operator's.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The system's resolver configuration is missing, unreadable or names no server.
    #[error(
        "the system's DNS configuration ({}) could not be read: {cause}; set DNS_RESOLVER to a DNS server's address instead",
        .path.display()
    )]
    SystemConfig {
        /// The file read.
        path: PathBuf,
        /// Why it could not be used.
        cause: String,
    },
    /// The DNS-over-HTTPS endpoint's host name could not be resolved.
    #[error(
        "the DNS-over-HTTPS host {host} could not be resolved: {cause}; write an address in the URL instead"
    )]
    Bootstrap {
        /// The host name.
        host: String,
        /// What the system's resolver said.
        cause: String,
    },
    /// hickory refused the configuration (its TLS set-up, for instance).
    #[error("the DNS resolver could not be built: {0}")]
    Build(#[source] NetError),
}

/// TXT lookups through `hickory-resolver`.
#[derive(Clone)]
pub struct HickoryResolver {
    resolver: Arc<TokioResolver>,
    servers: String,
    deadline: Duration,
}

impl fmt::Debug for HickoryResolver {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("HickoryResolver")
            .field("servers", &self.servers)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl HickoryResolver {
    /// A resolver asking the system's name servers ([`SYSTEM_CONFIG`]).
    pub fn system() -> Result<Self, SetupError> {
        Self::from_resolv_conf(Path::new(SYSTEM_CONFIG))
    }

    /// A resolver asking the name servers of the resolv.conf file at `path`, with its
    /// options (timeout, attempts).
    pub fn from_resolv_conf(path: &Path) -> Result<Self, SetupError> {
        let failed = |cause: String| SetupError::SystemConfig {
            path: path.to_owned(),
            cause,
        };
        let text = std::fs::read(path).map_err(|error| failed(error.to_string()))?;
        let (config, options) =
            parse_resolv_conf(text).map_err(|error| failed(error.to_string()))?;
        let mut builder = Resolver::builder_with_config(config, TokioRuntimeProvider::default())
            .with_options(options);
        tune(builder.options_mut());
        Self::finish(builder, format!("the name servers of {}", path.display()))
    }

    /// A resolver asking the DNS server at `address`.
    pub fn plain(address: SocketAddr) -> Result<Self, SetupError> {
        let connections = [ConnectionConfig::udp(), ConnectionConfig::tcp()]
            .into_iter()
            .map(|mut connection| {
                connection.port = address.port();
                connection
            })
            .collect();
        let server = NameServerConfig::new(address.ip(), true, connections);
        Self::with_servers(vec![server], address.to_string(), None)
    }

    /// A resolver asking the DNS-over-HTTPS endpoint at `url`, trusting the webpki roots.
    pub async fn https(url: &Url) -> Result<Self, SetupError> {
        Self::doh(url, None).await
    }

    /// A resolver asking the DNS-over-HTTPS endpoint at `url` over `tls` (its roots, in
    /// place of the webpki roots): an endpoint whose certificate a private CA signed, such
    /// as the tests' loopback endpoint (`testkit::dns`).
    pub async fn https_with_tls(url: &Url, tls: rustls::ClientConfig) -> Result<Self, SetupError> {
        Self::doh(url, Some(tls)).await
    }

    async fn doh(url: &Url, tls: Option<rustls::ClientConfig>) -> Result<Self, SetupError> {
        let port = url.port_or_known_default().unwrap_or(443);
        let host = url.host_str().unwrap_or_default();
        let addresses = match host.trim_matches(['[', ']']).parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => bootstrap(host, port).await?,
        };
        let server_name: Arc<str> = Arc::from(host.trim_matches(['[', ']']));
        let path: Arc<str> = Arc::from(url.path());
        let servers = addresses
            .into_iter()
            .map(|ip| {
                let mut connection =
                    ConnectionConfig::https(server_name.clone(), Some(path.clone()));
                connection.port = port;
                NameServerConfig::new(ip, true, vec![connection])
            })
            .collect();
        Self::with_servers(servers, origin(url), tls)
    }

    /// A resolver for `servers`.
    pub async fn new(servers: &DnsServers) -> Result<Self, SetupError> {
        match servers {
            DnsServers::System => Self::system(),
            DnsServers::Plain(address) => Self::plain(*address),
            DnsServers::Https(url) => Self::https(url).await,
        }
    }

    /// The same resolver with a lookup deadline other than [`DEFAULT_DEADLINE`].
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    fn with_servers(
        servers: Vec<NameServerConfig>,
        described: String,
        tls: Option<rustls::ClientConfig>,
    ) -> Result<Self, SetupError> {
        let config = ResolverConfig::from_name_servers(servers);
        let mut builder = Resolver::builder_with_config(config, TokioRuntimeProvider::default());
        if let Some(tls) = tls {
            builder = builder.with_tls_config(tls);
        }
        tune(builder.options_mut());
        Self::finish(builder, described)
    }

    fn finish(
        builder: hickory_resolver::ResolverBuilder<TokioRuntimeProvider>,
        servers: String,
    ) -> Result<Self, SetupError> {
        let resolver = builder.build().map_err(SetupError::Build)?;
        Ok(Self {
            resolver: Arc::new(resolver),
            servers,
            deadline: DEFAULT_DEADLINE,
        })
    }

    /// A client span in the request's trace. DNS servers take no part in traces, and
    /// hickory sends DNS-over-HTTPS requests from its connection's own task, where the
    /// request's context is not current: no `traceparent` goes out with them.
    #[tracing::instrument(
        name = "dns.txt",
        skip_all,
        fields(otel.name = "dns TXT", otel.kind = "client")
    )]
    async fn lookup(&self, name: &str) -> Result<Vec<String>, LookupError> {
        // The trailing dot makes the name absolute, so the configuration's search domains
        // (a cluster's `svc.cluster.local`) are never tried in its place.
        let absolute = format!("{}.", name.trim_end_matches('.'));
        let answer = tokio::time::timeout(self.deadline, self.resolver.txt_lookup(absolute))
            .await
            .map_err(|_| LookupError::Timeout(self.deadline))?;
        match answer {
            Ok(lookup) => Ok(lookup
                .answers()
                .iter()
                .filter_map(|record| match &record.data {
                    RData::TXT(txt) => Some(
                        txt.txt_data
                            .iter()
                            .map(|part| String::from_utf8_lossy(part))
                            .collect::<String>(),
                    ),
                    _ => None,
                })
                .collect()),
            Err(error) if error.is_no_records_found() => Ok(Vec::new()),
            Err(error) => Err(lookup_error(&self.servers, error)),
        }
    }
}

/// The resolver's own settings are tuned for address lookups; verification needs these.
fn tune(options: &mut ResolverOpts) {
    // An admin who publishes the record after a failed check must not wait out a cached
    // "no such name" (nor a cached old value): every check asks the servers again.
    options.cache_size = 0;
    options.positive_max_ttl = Some(Duration::ZERO);
    options.negative_max_ttl = Some(Duration::ZERO);
    // Hosts files hold addresses, never TXT records.
    options.use_hosts_file = ResolveHosts::Never;
}

fn lookup_error(servers: &str, error: NetError) -> LookupError {
    use hickory_resolver::net::DnsError;
    match error {
        NetError::Timeout => LookupError::Unreachable(format!("{servers}: request timed out")),
        NetError::Dns(DnsError::ResponseCode(code)) => {
            LookupError::Refused(format!("{servers}: {code}"))
        }
        other => LookupError::Unreachable(format!("{servers}: {other}")),
    }
}

/// Resolves the endpoint's host with the system's resolver, which the DoH endpoint stands in
/// for in TXT lookups only.
async fn bootstrap(host: &str, port: u16) -> Result<Vec<IpAddr>, SetupError> {
    let failed = |cause: String| SetupError::Bootstrap {
        host: host.to_owned(),
        cause,
    };
    let mut addresses: Vec<IpAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|error| failed(error.to_string()))?
        .map(|address| address.ip())
        .collect();
    addresses.sort_unstable();
    addresses.dedup();
    if addresses.is_empty() {
        return Err(failed("no address".to_owned()));
    }
    Ok(addresses)
}

/// Scheme, host and port: what the log needs to tell endpoints apart.
fn origin(url: &Url) -> String {
    url.origin().ascii_serialization()
}

impl TxtResolver for HickoryResolver {
    fn txt<'a>(&'a self, name: &'a str) -> Lookup<'a> {
        Box::pin(self.lookup(name))
    }
}

/// No resolver: every lookup fails as unreachable. What [`crate::Settings::with_keyring`]
/// starts with, so settings built in code (tests, above all) never depend on the machine's
/// resolver configuration; a deployment's settings name their resolver.
#[derive(Debug, Clone, Copy, Default)]
pub struct Unconfigured;

impl TxtResolver for Unconfigured {
    fn txt<'a>(&'a self, _name: &'a str) -> Lookup<'a> {
        Box::pin(std::future::ready(Err(LookupError::Unreachable(
            "no DNS resolver is configured".to_owned(),
        ))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unconfigured_resolver_answers_unreachable_without_asking_anyone() {
        let error = Unconfigured
            .txt("_tenant-registry.example.com")
            .await
            .expect_err("no resolver");
        assert!(matches!(error, LookupError::Unreachable(_)), "{error:?}");
    }

    #[test]
    fn settings_name_the_system_a_server_or_a_doh_endpoint() {
        let parse = |text: &str| text.parse::<DnsServers>();
        assert_eq!(parse("system"), Ok(DnsServers::System));
        assert_eq!(parse(" System "), Ok(DnsServers::System));
        assert_eq!(
            parse("10.0.0.53"),
            Ok(DnsServers::Plain("10.0.0.53:53".parse().expect("address")))
        );
        assert_eq!(
            parse("127.0.0.1:5353"),
            Ok(DnsServers::Plain(
                "127.0.0.1:5353".parse().expect("address")
            ))
        );
        assert_eq!(
            parse("[fd00::53]:53"),
            Ok(DnsServers::Plain("[fd00::53]:53".parse().expect("address")))
        );
        assert_eq!(
            parse("https://dns.internal/dns-query"),
            Ok(DnsServers::Https(
                Url::parse("https://dns.internal/dns-query").expect("url")
            ))
        );
        for refused in [
            "",
            "dns.internal",
            "dns.internal:53",
            "http://127.0.0.1:8053/dns-query",
            "https://user:secret@dns.internal/dns-query",
            "https://dns.internal/dns-query?name=x",
            "udp://10.0.0.53",
        ] {
            assert_eq!(parse(refused), Err(BadSetting), "{refused}");
        }
    }

    fn resolv_conf(text: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!("resolv-{}.conf", uuid::Uuid::new_v4()));
        std::fs::write(&path, text).expect("a temporary file");
        path
    }

    #[tokio::test]
    async fn a_missing_or_serverless_system_configuration_is_a_setup_error_naming_the_file() {
        let missing = std::env::temp_dir().join(format!("missing-{}.conf", uuid::Uuid::new_v4()));
        let serverless = resolv_conf("search example.internal\n");
        for path in [&missing, &serverless] {
            let error = HickoryResolver::from_resolv_conf(path).expect_err("refused");
            let text = error.to_string();
            assert!(matches!(error, SetupError::SystemConfig { .. }), "{text}");
            assert!(text.contains(&path.display().to_string()), "{text}");
            assert!(text.contains("DNS_RESOLVER"), "{text}");
        }
        let _ = std::fs::remove_file(serverless);
    }

    #[tokio::test]
    async fn a_system_configuration_naming_a_server_builds_a_resolver() {
        let path = resolv_conf("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n");
        let resolver = HickoryResolver::from_resolv_conf(&path).expect("a resolver");
        assert!(format!("{resolver:?}").contains(&path.display().to_string()));
        let _ = std::fs::remove_file(path);
    }

    #[tokio::test]
    async fn a_doh_endpoint_builds_from_a_host_or_an_address_but_not_an_unknown_host() {
        // Nothing listens on port 1: the lookup fails, as an error and not a panic. Lookups
        // that succeed over DNS over HTTPS are tested against `testkit::dns`'s endpoint.
        for url in [
            "https://localhost:1/dns-query",
            "https://127.0.0.1:1/dns-query",
        ] {
            let servers = url.parse::<DnsServers>().expect("a DoH setting");
            let resolver = HickoryResolver::new(&servers)
                .await
                .expect("a resolver")
                .with_deadline(Duration::from_secs(2));
            let error = resolver
                .txt("_tenant-registry.example.com")
                .await
                .expect_err("nothing answers");
            assert!(
                matches!(error, LookupError::Unreachable(_) | LookupError::Timeout(_)),
                "{url}: {error:?}"
            );
        }
        let unknown = "https://no-such-host.invalid/dns-query"
            .parse::<DnsServers>()
            .expect("a DoH setting");
        let error = HickoryResolver::new(&unknown)
            .await
            .expect_err("no address");
        assert!(matches!(error, SetupError::Bootstrap { .. }), "{error}");
    }
}
