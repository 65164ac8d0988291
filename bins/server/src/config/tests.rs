//! The configuration's checks, without a database or a running server.

use super::*;

fn config(args: &[&str]) -> Config {
    let mut argv = vec!["tenant-registry"];
    argv.extend_from_slice(args);
    Cli::try_parse_from(argv).expect("arguments parse").config
}

const TEST_KEYS: &str = "k1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

/// A configuration with a database and keys, in dev unless `args` name an environment.
fn with_database(args: &[&str]) -> Config {
    let mut all = vec![
        "--database-url",
        "postgres://localhost/x",
        "--encryption-keys",
        TEST_KEYS,
    ];
    if !args.contains(&"--app-env") {
        all.extend_from_slice(&["--app-env", "dev"]);
    }
    all.extend_from_slice(args);
    config(&all)
}

#[test]
fn without_app_env_the_server_is_prod() {
    let config = config(&["--database-url", "postgres://localhost/x"]);
    assert_eq!(config.app_env, AppEnv::Prod);
    let error = config.check().expect_err("prod needs an issuer and keys");
    assert!(error.contains("APP_ENV=prod (the default)"), "{error}");
}

#[test]
fn connection_limits_default_to_10_s_headers_60_s_idle() {
    let limits = with_database(&[]).check().expect("valid").connection_limits;
    assert_eq!(limits.header_read_timeout, Duration::from_secs(10));
    assert_eq!(limits.idle_timeout, Duration::from_secs(60));
    assert_eq!(limits.max_connections, 1024);
    assert_eq!(limits.max_connections_per_address, 256);
}

#[test]
fn the_per_address_cap_never_exceeds_the_listeners() {
    let limits = with_database(&["--max-connections", "100"])
        .check()
        .expect("valid")
        .connection_limits;
    assert_eq!(limits.max_connections_per_address, 100);
}

#[test]
fn an_idle_timeout_not_longer_than_the_request_timeout_is_refused() {
    let error = with_database(&["--idle-timeout-secs", "30"])
        .check()
        .expect_err("refused");
    assert!(error.contains("IDLE_TIMEOUT_SECS"), "{error}");
    assert!(
        with_database(&["--idle-timeout-secs", "31"])
            .check()
            .is_ok()
    );
}

#[test]
fn a_bare_port_listens_on_all_interfaces() {
    assert_eq!(
        parse_addr(":8090"),
        Ok("0.0.0.0:8090".parse().expect("address"))
    );
}

#[test]
fn host_and_ipv6_addresses_are_accepted() {
    assert_eq!(
        parse_addr("127.0.0.1:1"),
        Ok("127.0.0.1:1".parse().expect("address"))
    );
    assert_eq!(
        parse_addr("[::1]:80"),
        Ok("[::1]:80".parse().expect("address"))
    );
}

#[test]
fn a_malformed_address_is_rejected_with_examples() {
    let error = parse_addr("localhost").expect_err("not an address");
    assert!(error.contains(":8090"), "{error}");
}

#[test]
fn a_missing_database_url_is_refused() {
    let mut config = with_database(&[]);
    config.database_url = None;
    assert_eq!(
        config.check().expect_err("refused"),
        "no database: set DATABASE_URL or pass --database-url"
    );
}

#[test]
fn prod_refuses_to_start_without_an_issuer() {
    let error = with_database(&["--app-env", "prod"])
        .check()
        .expect_err("refused");
    assert!(error.contains("KEYCLOAK_ISSUER"), "{error}");
    assert!(
        with_database(&[
            "--app-env",
            "prod",
            "--keycloak-issuer",
            "https://sso.example.com/realms/p"
        ])
        .check()
        .is_ok()
    );
}

#[test]
fn plain_http_issuers_are_allowed_only_on_loopback_outside_prod() {
    assert!(
        with_database(&["--keycloak-issuer", "http://127.0.0.1:8080/realms/p"])
            .check()
            .is_ok()
    );
    assert!(
        with_database(&["--keycloak-issuer", "http://sso.example.com"])
            .check()
            .is_err()
    );
    assert!(
        with_database(&[
            "--app-env",
            "prod",
            "--keycloak-issuer",
            "http://127.0.0.1:8080"
        ])
        .check()
        .is_err()
    );
    assert!(
        with_database(&["--keycloak-issuer", "http://localhost.evil.com"])
            .check()
            .is_err()
    );
}

#[test]
fn cors_origins_are_a_comma_separated_list_without_wildcards() {
    let checked = with_database(&[
        "--cors-origins",
        "https://a.example.com,https://b.example.com",
    ])
    .check()
    .expect("valid");
    assert_eq!(checked.cors_origins.len(), 2);
    assert!(with_database(&["--cors-origins", "*"]).check().is_err());
}

#[test]
fn logs_are_pretty_in_dev_and_json_elsewhere() {
    assert_eq!(with_database(&[]).log_format(), LogFormat::Pretty);
    assert_eq!(
        with_database(&["--app-env", "stage"]).log_format(),
        LogFormat::Json
    );
    assert_eq!(
        with_database(&["--log-format", "json"]).log_format(),
        LogFormat::Json
    );
}

#[test]
fn outside_dev_encryption_keys_are_required_and_must_parse() {
    let mut config = with_database(&[
        "--app-env",
        "stage",
        "--keycloak-issuer",
        "https://sso.example.com",
    ]);
    config.encryption_keys = None;
    let error = config.check().expect_err("refused");
    assert!(error.contains("ENCRYPTION_KEYS"), "{error}");
    config.encryption_keys = Some("k1:short".to_owned());
    assert!(
        config
            .check()
            .expect_err("refused")
            .contains("ENCRYPTION_KEYS")
    );
}

#[test]
fn dev_generates_a_key_once_and_reuses_it() {
    let dir = std::env::temp_dir().join(format!("tr-config-test-{}", std::process::id()));
    let file = dir.join("keys");
    let mut config = with_database(&[]);
    config.encryption_keys = None;
    config.dev_encryption_key_file = file.clone();
    let first = config.check().expect("generated");
    assert!(
        first
            .keyring_warning
            .is_some_and(|warning| warning.contains("development key"))
    );
    let sealed = first.keyring.seal_str("c", "kept").expect("seal");
    let second = config.check().expect("reloaded");
    assert_eq!(
        second.keyring.open_str("c", &sealed).expect("same key"),
        "kept"
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&file).expect("file").permissions(),
    );
    assert_eq!(mode & 0o077, 0, "only the owner may read the key");
    std::fs::remove_dir_all(dir).expect("clean up");
}

fn admin_key_command(args: &[&str]) -> Result<(u32, bool), clap::Error> {
    let argv = ["tenant-registry", "create-admin-key", "--name", "root"];
    match Cli::try_parse_from(argv.iter().chain(args))?.command {
        Some(Command::CreateAdminKey {
            expires_in,
            no_expiry,
            ..
        }) => Ok((expires_in, no_expiry)),
        other => panic!("not create-admin-key: {other:?}"),
    }
}

#[test]
fn the_bootstrap_key_expires_in_30_days_unless_told_otherwise() {
    let now = chrono::Utc::now();
    let expiry = |args: &[&str]| {
        let (days, no_expiry) = admin_key_command(args).expect("parses");
        Command::bootstrap_expiry(days, no_expiry, now)
    };
    assert_eq!(expiry(&[]), Some(now + chrono::Duration::days(30)));
    assert_eq!(
        expiry(&["--expires-in", "7"]),
        Some(now + chrono::Duration::days(7))
    );
    assert_eq!(expiry(&["--no-expiry"]), None, "only when asked for");
    for refused in [
        &["--no-expiry", "--expires-in", "7"][..],
        &["--expires-in", "0"],
        &["--expires-in", "3651"],
    ] {
        assert!(admin_key_command(refused).is_err(), "{refused:?}");
    }
    assert!(
        Cli::try_parse_from(["tenant-registry", "create-admin-key"]).is_err(),
        "a name is required"
    );
}

#[test]
fn audit_retention_is_forever_unless_a_day_count_is_given() {
    assert_eq!(with_database(&[]).audit_retention_days, None);
    assert_eq!(
        with_database(&["--audit-retention-days", "90"]).audit_retention_days,
        Some(90)
    );
    let refused = Cli::try_parse_from(["tenant-registry", "--audit-retention-days", "0"]);
    assert!(refused.is_err());
}

#[test]
fn outbound_fetches_reach_private_addresses_and_plain_http_only_in_dev_unless_told() {
    let prod = |extra: &[&str]| {
        let mut args = vec![
            "--app-env",
            "prod",
            "--keycloak-issuer",
            "https://sso.example.com/realms/p",
        ];
        args.extend_from_slice(extra);
        with_database(&args).check().expect("valid").outbound
    };
    assert_eq!(prod(&[]), egress::Policy::STRICT);
    assert_eq!(
        prod(&["--outbound-allow-private", "true"]),
        egress::Policy {
            allow_http: false,
            allow_private: true
        }
    );
    let dev = |extra: &[&str]| with_database(extra).check().expect("valid").outbound;
    assert_eq!(dev(&[]), egress::Policy::DEVELOPMENT);
    assert_eq!(
        dev(&["--outbound-allow-private", "false"]),
        egress::Policy {
            allow_http: true,
            allow_private: false
        }
    );
    assert!(Cli::try_parse_from(["tenant-registry", "--outbound-allow-private", "maybe"]).is_err());
}

#[test]
fn events_are_kept_30_days_with_a_15_s_heartbeat_unless_told() {
    let events = with_database(&[]).check().expect("valid").events;
    assert_eq!(events.retention, chrono::Duration::days(30));
    assert_eq!(events.heartbeat, Duration::from_secs(15));
    assert_eq!(events.max_streams, 256);
    let tuned = with_database(&[
        "--events-retention-days",
        "7",
        "--events-heartbeat-secs",
        "5",
        "--events-max-streams",
        "10",
    ])
    .check()
    .expect("valid")
    .events;
    assert_eq!(tuned.retention, chrono::Duration::days(7));
    assert_eq!(tuned.heartbeat, Duration::from_secs(5));
    assert_eq!(tuned.max_streams, 10);
    let argv = ["tenant-registry", "--events-retention-days", "0"];
    assert!(Cli::try_parse_from(argv).is_err());
}

#[test]
fn the_default_heartbeat_stays_within_a_short_idle_timeout() {
    let events = with_database(&["--request-timeout-secs", "1", "--idle-timeout-secs", "4"])
        .check()
        .expect("valid")
        .events;
    assert_eq!(events.heartbeat, Duration::from_secs(2));
}

#[test]
fn a_heartbeat_not_shorter_than_the_idle_timeout_is_refused() {
    let error = with_database(&["--events-heartbeat-secs", "60"])
        .check()
        .expect_err("quiet streams would be cut");
    assert!(error.contains("EVENTS_HEARTBEAT_SECS"), "{error}");
}

#[test]
fn txt_lookups_use_the_system_configuration_unless_a_server_or_doh_endpoint_is_named() {
    use api::dns::DnsServers;
    let checked = with_database(&[]).check().expect("valid");
    assert_eq!(checked.dns, DnsServers::System);
    assert_eq!(checked.dns_warning, None);
    let server = with_database(&["--dns-resolver", "127.0.0.1:5353"])
        .check()
        .expect("valid");
    assert_eq!(
        server.dns,
        DnsServers::Plain("127.0.0.1:5353".parse().expect("an address"))
    );
    let doh = with_database(&["--dns-resolver", "https://dns.internal/dns-query"])
        .check()
        .expect("valid");
    assert!(matches!(doh.dns, DnsServers::Https(_)), "{:?}", doh.dns);
    let error = with_database(&["--dns-resolver", "http://127.0.0.1:8053/dns-query"])
        .check()
        .expect_err("plain http is not DNS over HTTPS");
    assert!(error.starts_with("DNS_RESOLVER "), "{error}");
    assert!(error.contains("a DNS server's address"), "{error}");
}

#[test]
fn the_former_dns_resolver_url_is_honoured_for_an_https_endpoint_with_a_warning() {
    use api::dns::DnsServers;
    let former = with_database(&["--dns-resolver-url", "https://dns.internal/dns-query"])
        .check()
        .expect("valid");
    assert!(
        matches!(former.dns, DnsServers::Https(_)),
        "{:?}",
        former.dns
    );
    let warning = former.dns_warning.expect("a warning");
    assert!(warning.contains("set DNS_RESOLVER instead"), "{warning}");
    let error = with_database(&["--dns-resolver-url", "http://127.0.0.1:8053/dns-query"])
        .check()
        .expect_err("refused");
    assert!(error.contains("set DNS_RESOLVER"), "{error}");
    let both = with_database(&[
        "--dns-resolver",
        "system",
        "--dns-resolver-url",
        "https://dns.internal/dns-query",
    ])
    .check()
    .expect_err("refused");
    assert!(both.contains("set DNS_RESOLVER only"), "{both}");
}

#[test]
fn a_tls_certificate_without_its_key_or_a_client_ca_alone_is_refused_by_name() {
    for (args, expected) in [
        (
            &["--tls-cert-file", "/tls/tls.crt"][..],
            "TLS_CERT_FILE is set but TLS_KEY_FILE is not",
        ),
        (
            &["--tls-key-file", "/tls/tls.key"][..],
            "TLS_KEY_FILE is set but TLS_CERT_FILE is not",
        ),
        (
            &["--tls-client-ca-file", "/tls/ca.crt"][..],
            "TLS_CLIENT_CA_FILE needs TLS_CERT_FILE and TLS_KEY_FILE",
        ),
    ] {
        let error = with_database(args).check().expect_err("refused");
        assert!(error.contains(expected), "{error}");
    }
    assert!(
        with_database(&[])
            .check()
            .expect("plain HTTP")
            .tls
            .is_none()
    );
}

#[test]
fn unreadable_tls_files_are_refused_at_start_naming_the_file() {
    let error = with_database(&[
        "--tls-cert-file",
        "/nonexistent/tls.crt",
        "--tls-key-file",
        "/nonexistent/tls.key",
    ])
    .check()
    .expect_err("refused");
    assert!(error.starts_with("TLS: /nonexistent/tls.crt"), "{error}");
}
