//! The email domain use cases: claim a domain for a tenant, prove it with a DNS TXT record,
//! withdraw the claim. TXT records are looked up through [`TxtResolver`], so each transport
//! (and each test) puts the resolver it wants behind it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use domain::TenantWrite;
use serde_json::Map;
use storage::domains::{self, DomainRow};
use storage::{PgConnection, PgPool};
use uuid::Uuid;

use crate::trail::{self, Target};
use crate::{Actor, RegistryError, constraints, events, lifecycle};
use domain::event::EventType;

/// The label under the claimed domain where the TXT record goes.
pub const CHALLENGE_LABEL: &str = "_tenant-registry";

/// The future a lookup returns.
pub type Lookup<'a> = Pin<Box<dyn Future<Output = Result<Vec<String>, LookupError>> + Send + 'a>>;

/// Why the TXT records of a name could not be learnt. A name that does not exist, or has no
/// TXT record, is not an error: its lookup answers no records. The texts are for the log
/// (they may name the resolver's address); callers are told only to try again later.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// No answer within the lookup's deadline.
    #[error("no answer from the DNS resolver within {0:?}")]
    Timeout(std::time::Duration),
    /// The resolver answered with an error code (SERVFAIL, REFUSED, …).
    #[error("the DNS resolver answered {0}")]
    Refused(String),
    /// The resolver could not be reached or its answer could not be read.
    #[error("the DNS resolver could not be asked: {0}")]
    Unreachable(String),
}

/// Finds the TXT records of a name.
pub trait TxtResolver: Send + Sync + fmt::Debug {
    /// The TXT strings published at `name` (each record's strings joined); none when the
    /// name does not exist or has no TXT record.
    fn txt<'a>(&'a self, name: &'a str) -> Lookup<'a>;
}

/// Where the TXT record proving `domain` goes.
pub fn challenge_name(domain: &str) -> String {
    format!("{CHALLENGE_LABEL}.{domain}")
}

/// What the TXT record proving a claim with `token` holds.
pub fn challenge_value(token: &str) -> String {
    format!("tr-verify={token}")
}

async fn audit(
    conn: &mut PgConnection,
    actor: &Actor<'_>,
    row: &DomainRow,
    action: &str,
    crud: char,
) -> Result<(), RegistryError> {
    let target = Target {
        tenant_id: Some(row.tenant_id),
        id: row.id.to_string(),
        kind: "domain",
        name: row.domain.clone(),
    };
    trail::record(conn, actor, target, action, crud, Map::new()).await
}

fn no_such_domain() -> RegistryError {
    RegistryError::not_found("no such domain")
}

/// Claims `domain` (already checked by `domain::idp::email_domain`) for tenant
/// `tenant_id`. A claim says nothing about other tenants' claims: only verification, which
/// needs control of the domain's DNS, can meet another tenant's.
pub async fn claim(
    pool: &PgPool,
    actor: &Actor<'_>,
    tenant_id: Uuid,
    domain: &str,
) -> Result<DomainRow, RegistryError> {
    let token = &Uuid::new_v4().simple().to_string();
    storage::with_retries(move || async move {
        let mut transaction = storage::begin(pool).await?;
        lifecycle::permit(&mut transaction, tenant_id, TenantWrite::Operate).await?;
        let row = domains::insert(&mut transaction, tenant_id, domain, token)
            .await
            .map_err(constraints::map)?;
        audit(&mut transaction, actor, &row, "domain.claimed", 'c').await?;
        storage::commit(transaction).await?;
        Ok(row)
    })
    .await
}

/// Checks the TXT record of tenant `tenant_id`'s claim `id` and, when it holds the
/// challenge, marks the domain verified (a verified claim is answered as it is).
pub async fn verify(
    pool: &PgPool,
    actor: &Actor<'_>,
    dns: &dyn TxtResolver,
    tenant_id: Uuid,
    id: Uuid,
) -> Result<DomainRow, RegistryError> {
    let row = domains::get(pool, tenant_id, id)
        .await?
        .ok_or_else(no_such_domain)?;
    if row.verified_at.is_some() {
        return Ok(row);
    }
    let name = challenge_name(&row.domain);
    let expected = challenge_value(&row.verification_token);
    let records = dns.txt(&name).await.map_err(|cause| {
        // The resolver's address and its error stay in the log.
        tracing::warn!(%cause, %name, "TXT lookup failed");
        RegistryError::Unavailable(format!(
            "could not look up the TXT records of {name}; try again later"
        ))
    })?;
    if !records.iter().any(|record| record.trim() == expected) {
        let detail = format!(
            "no TXT record {expected:?} at {name} yet; publish it and try again (DNS changes can take minutes)"
        );
        // The event names where the record was looked for, not the challenge itself.
        let reason = format!("no TXT record with the challenge at {name}");
        announce_failed_verification(pool, &row, &reason).await?;
        return Err(RegistryError::conflict(detail));
    }
    storage::with_retries(move || async move {
        let mut transaction = storage::begin(pool).await?;
        lifecycle::permit(&mut transaction, tenant_id, TenantWrite::Operate).await?;
        let verified = domains::mark_verified(&mut transaction, id)
            .await
            .map_err(|error| {
                if error
                    .as_database_error()
                    .and_then(|database| database.constraint())
                    == Some("tenant_domains_verified_domain_key")
                {
                    // Said only to whoever just proved control of the domain's DNS.
                    RegistryError::conflict(
                        "the record proves control of this domain, but it is already verified for another tenant; ask the platform to move it",
                    )
                } else {
                    RegistryError::from(error)
                }
            })?;
        audit(&mut transaction, actor, &verified, "domain.verified", 'u').await?;
        let data = events::domain(&verified);
        events::emit(&mut transaction, EventType::DomainVerified, Some(tenant_id), data).await?;
        storage::commit(transaction).await?;
        Ok(verified)
    })
    .await
}

/// `domain.verification_failed` for `row`, in a transaction of its own: the verification
/// changed nothing, but the tenant's products may want to tell its admins.
async fn announce_failed_verification(
    pool: &PgPool,
    row: &DomainRow,
    reason: &str,
) -> Result<(), RegistryError> {
    storage::with_retries(move || async move {
        let mut transaction = storage::begin(pool).await?;
        let mut data = events::domain(row);
        data["reason"] = serde_json::Value::from(reason);
        events::emit(
            &mut transaction,
            EventType::DomainVerificationFailed,
            Some(row.tenant_id),
            data,
        )
        .await?;
        storage::commit(transaction).await?;
        Ok(())
    })
    .await
}

/// Withdraws tenant `tenant_id`'s claim `id`.
pub async fn remove(
    pool: &PgPool,
    actor: &Actor<'_>,
    tenant_id: Uuid,
    id: Uuid,
) -> Result<(), RegistryError> {
    storage::with_retries(move || async move {
        let mut transaction = storage::begin(pool).await?;
        lifecycle::permit(&mut transaction, tenant_id, TenantWrite::Operate).await?;
        let removed = domains::delete(&mut transaction, tenant_id, id)
            .await?
            .ok_or_else(no_such_domain)?;
        audit(&mut transaction, actor, &removed, "domain.removed", 'd').await?;
        let data = events::domain(&removed);
        events::emit(
            &mut transaction,
            EventType::DomainRemoved,
            Some(tenant_id),
            data,
        )
        .await?;
        storage::commit(transaction).await?;
        Ok(())
    })
    .await
}
