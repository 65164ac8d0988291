//! The HTTP client's only way from a host name to addresses: resolve, then keep the
//! addresses the policy permits. The client connects to what this returns, so an answer
//! that changes between a check and the connection (DNS rebinding) changes nothing.

use std::net::{IpAddr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::Policy;

/// Resolves with the system resolver and drops the addresses `policy` refuses.
#[derive(Debug)]
pub(crate) struct PolicyResolver {
    pub(crate) policy: Policy,
}

/// Every address a host name resolved to is outside the policy.
#[derive(Debug, thiserror::Error)]
#[error("every address of {host} is outside the outbound policy: {addresses:?}")]
pub(crate) struct AllRefused {
    pub(crate) host: String,
    pub(crate) addresses: Vec<IpAddr>,
}

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(permitted_addresses(self.policy, name.as_str().to_owned()))
    }
}

async fn permitted_addresses(
    policy: Policy,
    host: String,
) -> Result<Addrs, Box<dyn std::error::Error + Send + Sync>> {
    let (permitted, refused): (Vec<SocketAddr>, Vec<SocketAddr>) =
        tokio::net::lookup_host((host.as_str(), 0))
            .await?
            .partition(|address| policy.permits(address.ip()));
    if permitted.is_empty() && refused.is_empty() {
        return Err(format!("{host} resolved to no address").into());
    }
    if permitted.is_empty() {
        let addresses = refused.iter().map(SocketAddr::ip).collect();
        return Err(Box::new(AllRefused { host, addresses }));
    }
    if !refused.is_empty() {
        tracing::info!(%host, ?refused, "outbound: addresses outside the policy skipped");
    }
    Ok(Box::new(permitted.into_iter()))
}
