//! The authenticated caller.

use chrono::{DateTime, Utc};
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
    /// An embedded log viewer with a viewer token: one tenant's audit log, read only.
    ViewerToken,
}

impl PrincipalKind {
    /// The kind as written in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PlatformKey => "platform_key",
            Self::TenantKey => "tenant_key",
            Self::OidcUser => "oidc_user",
            Self::ViewerToken => "viewer_token",
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
    /// When the caller's own credential stops working (the API key's `expires_at`, the
    /// token's `exp`); `None` for a key that never expires.
    pub expires_at: Option<DateTime<Utc>>,
    /// The caller used its key's previous secret, kept working by a rotation's grace
    /// period: it serves the clients still moving over, and never rotates its key again.
    #[serde(skip)]
    pub previous_secret: bool,
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

    /// Whether the caller is bound to no tenant.
    pub fn is_platform(&self) -> bool {
        self.tenant_id.is_none()
    }

    /// Who owns what this caller leaves behind across requests (idempotency records): kind,
    /// tenant and key id or OIDC subject. `None` when the credential names nobody (a token
    /// without `sub`), which must then not share anything.
    pub fn owner_id(&self) -> Option<String> {
        let holder = match self.kind {
            PrincipalKind::PlatformKey | PrincipalKind::TenantKey => self.key_id?.to_string(),
            PrincipalKind::OidcUser | PrincipalKind::ViewerToken => self.subject.clone()?,
        };
        let tenant = self
            .tenant_id
            .map_or_else(|| "platform".to_owned(), |id| id.to_string());
        Some(format!("{}:{tenant}:{holder}", self.kind.as_str()))
    }

    /// A short identifier for audit records and logs.
    pub fn actor_id(&self) -> String {
        match (&self.key_id, &self.subject) {
            (None, Some(viewer)) if self.kind == PrincipalKind::ViewerToken => {
                format!("viewer:{viewer}")
            }
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
            expires_at: None,
            previous_secret: false,
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

    #[test]
    fn owners_differ_by_kind_tenant_and_holder_and_a_token_without_subject_has_none() {
        let tenant = Uuid::new_v4();
        let key = Principal {
            key_id: Some(Uuid::new_v4()),
            ..principal(Some(tenant), &[Scope::TenantsRead])
        };
        let user = Principal {
            kind: PrincipalKind::OidcUser,
            subject: Some("alice".to_owned()),
            ..principal(Some(tenant), &[Scope::TenantsRead])
        };
        let same_user_elsewhere = Principal {
            tenant_id: Some(Uuid::new_v4()),
            ..user.clone()
        };
        let owners = [&key, &user, &same_user_elsewhere].map(|p| p.owner_id().expect("owner"));
        assert_eq!(
            owners[0],
            format!("tenant_key:{tenant}:{}", key.key_id.expect("id"))
        );
        assert_eq!(owners[1], format!("oidc_user:{tenant}:alice"));
        assert_ne!(owners[1], owners[2], "the tenant is part of the owner");
        let anonymous = Principal {
            subject: None,
            ..user
        };
        assert_eq!(anonymous.owner_id(), None);
    }
}
