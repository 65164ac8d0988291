//! Every change to the registry, each in one transaction with its audit record: the use
//! cases (tenants, products and subscriptions, projects, identity providers, domains, API
//! keys) that the REST API calls today, and a gRPC service or a background runner can call
//! tomorrow without depending on a web framework.
//!
//! Each use case runs its transaction in [`storage::with_retries`], takes its locks in the
//! order of `docs/security.md` (the tenant's row, then the tenant's rows, then the audit
//! chain heads), checks the tenant's lifecycle on the row it has locked, and answers with a
//! [`RegistryError`] that the transport maps once.

pub mod api_keys;
mod constraints;
pub mod domains;
mod error;
mod events;
pub mod idps;
mod lifecycle;
pub mod product_migrations;
pub mod products;
pub mod projects;
pub mod provisioning;
pub mod tenants;
mod trail;
pub mod trials;
pub mod viewer_tokens;
pub mod webhooks;

use auth::Principal;

pub use error::{FieldProblem, RegistryError};

/// Who performs a use case, for its authorization and its audit record.
#[derive(Debug, Clone)]
pub struct Actor<'a> {
    /// The caller.
    pub principal: &'a Principal,
    /// The caller's address, if known.
    pub source_ip: Option<String>,
}
