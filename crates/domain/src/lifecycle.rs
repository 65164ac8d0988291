//! What a tenant's lifecycle status lets be written on its behalf: the one rule every
//! tenant-scoped write passes through.
//!
//! Frozen means reads only; archived means nothing but the transitions that restore or purge
//! it. Audit ingest is deliberately outside this rule: an event records what happened
//! (including to a frozen tenant) and refusing it would lose that record. Lifecycle
//! transitions follow the state machine of [`TenantStatus::allowed_transitions`] instead.

use crate::TenantStatus;

/// A write on behalf of a tenant, by who decides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantWrite {
    /// The tenant's own data, whoever asks: its profile (as edited by the tenant), projects,
    /// identity providers, domains, product config and API keys.
    Operate,
    /// A platform decision about the tenant: commercial fields, subscriptions and feature
    /// overrides, former slugs. A frozen tenant's account is put right this way before it is
    /// made active again.
    Administer,
}

/// Why the lifecycle refuses a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LifecycleRefusal {
    /// The tenant is frozen.
    #[error("the tenant is frozen: it can be read but not changed until it is active again")]
    Frozen,
    /// The tenant is archived.
    #[error("the tenant is archived: nothing about it changes until it is restored")]
    Archived,
}

impl TenantStatus {
    /// Whether a tenant in this status may be written to by `write`.
    pub fn permits(self, write: TenantWrite) -> Result<(), LifecycleRefusal> {
        match (self, write) {
            (TenantStatus::Archived, _) => Err(LifecycleRefusal::Archived),
            (TenantStatus::Frozen, TenantWrite::Operate) => Err(LifecycleRefusal::Frozen),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frozen_is_read_only_for_the_tenant_and_archived_for_everyone() {
        use TenantStatus::*;
        use TenantWrite::*;
        let table = [
            (Demo, Operate, Ok(())),
            (Demo, Administer, Ok(())),
            (Trial, Operate, Ok(())),
            (Trial, Administer, Ok(())),
            (Active, Operate, Ok(())),
            (Active, Administer, Ok(())),
            (Frozen, Operate, Err(LifecycleRefusal::Frozen)),
            (Frozen, Administer, Ok(())),
            (Archived, Operate, Err(LifecycleRefusal::Archived)),
            (Archived, Administer, Err(LifecycleRefusal::Archived)),
        ];
        assert_eq!(
            table.len(),
            TenantStatus::ALL.len() * 2,
            "every status twice"
        );
        for (status, write, expected) in table {
            assert_eq!(status.permits(write), expected, "{status} {write:?}");
        }
    }
}
