//! The authenticated caller.

use domain::{Scope, Scopes};
use serde::Serialize;
use uuid::Uuid;

/// How the caller authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PrincipalKind {
    /// An API key bound to no tenant (its scopes say what it may do on every tenant).
    PlatformKey,
    /// An API key bound to one tenant.
    TenantKey,
    /// A person with an OIDC access token.
    OidcUser,
}

impl PrincipalKind {
    /// The kind as written in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PlatformKey => "platform_key",
            Self::TenantKey => "tenant_key",
            Self::OidcUser => "oidc_user",
        }
    }
}

/// The caller of a request, as `GET /v1/me` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Principal {
    /// How the caller authenticated.
    pub kind: PrincipalKind,
    /// The tenant the caller is confined to; `None` for platform-wide callers.
    pub tenant_id: Option<Uuid>,
    /// What the caller may do.
    pub scopes: Scopes,
    /// The API key used, if any.
    pub key_id: Option<Uuid>,
    /// The OIDC subject, if any.
    pub subject: Option<String>,
    /// The product the API key belongs to, if it names one.
    pub product: Option<String>,
}

impl Principal {
    /// Whether the caller holds `scope` (directly or through `platform:admin`).
    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes.allows(scope)
    }

    /// Whether the caller may see rows of `tenant_id`: platform-wide callers see every
    /// tenant, tenant principals only their own.
    pub fn can_access_tenant(&self, tenant_id: Option<Uuid>) -> bool {
        match self.tenant_id {
            None => true,
            Some(own) => tenant_id == Some(own),
        }
    }

    /// The `product` of the audit events this caller ingests: its key's product, or else
    /// its own id.
    pub fn product(&self) -> String {
        self.product.clone().unwrap_or_else(|| self.actor_id())
    }

    /// A short identifier for audit records and logs.
    pub fn actor_id(&self) -> String {
        match (&self.key_id, &self.subject) {
            (Some(key), _) => format!("api_key:{key}"),
            (None, Some(subject)) => format!("oidc:{subject}"),
            (None, None) => "anonymous".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(tenant_id: Option<Uuid>, scopes: &[Scope]) -> Principal {
        Principal {
            kind: PrincipalKind::TenantKey,
            tenant_id,
            scopes: scopes.iter().copied().collect(),
            key_id: None,
            subject: None,
            product: None,
        }
    }

    #[test]
    fn a_tenant_principal_sees_only_its_own_tenant() {
        let own = Uuid::new_v4();
        let caller = principal(Some(own), &[Scope::TenantsRead]);
        assert!(caller.can_access_tenant(Some(own)));
        assert!(!caller.can_access_tenant(Some(Uuid::new_v4())));
        assert!(
            !caller.can_access_tenant(None),
            "platform rows are not a tenant's"
        );
    }

    #[test]
    fn a_platform_principal_sees_every_tenant() {
        let caller = principal(None, &[Scope::PlatformAdmin]);
        assert!(caller.can_access_tenant(Some(Uuid::new_v4())));
        assert!(caller.allows(Scope::AuditWrite));
    }
}
