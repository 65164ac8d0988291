//! The server's configuration: flags with environment fallbacks.

use std::net::SocketAddr;

use clap::{Parser, ValueEnum};

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

/// The tenant-registry REST server.
#[derive(Debug, Parser)]
#[command(name = "tenant-registry", version)]
pub struct Config {
    /// Deployment environment.
    #[arg(long, env = "APP_ENV", value_enum, default_value = "dev")]
    pub app_env: AppEnv,

    /// Address to listen on: `:PORT` (all interfaces), `HOST:PORT` or `[IPv6]:PORT`.
    #[arg(long, env = "ADDR", default_value = ":8090", value_parser = parse_addr)]
    pub addr: SocketAddr,

    /// PostgreSQL URL, e.g. postgres://user:password@host:5432/tenant_registry.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
}

impl Config {
    /// Refuses configurations the service cannot run with, in one line.
    pub fn check(&self) -> Result<(), String> {
        match self.database_url.as_deref() {
            Some(url) if !url.trim().is_empty() => Ok(()),
            _ => Err("no database: set DATABASE_URL or pass --database-url".to_owned()),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
        let config = Config {
            app_env: AppEnv::Dev,
            addr: "127.0.0.1:8090".parse().expect("address"),
            database_url: None,
        };
        assert_eq!(
            config.check(),
            Err("no database: set DATABASE_URL or pass --database-url".to_owned())
        );
    }
}
