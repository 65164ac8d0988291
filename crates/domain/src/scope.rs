//! The closed list of permissions a principal can hold.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::UnknownLabel;

/// One permission. `platform:admin` implies every other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Scope {
    /// Everything, on every tenant.
    PlatformAdmin,
    /// Read tenants.
    TenantsRead,
    /// Create and change tenants.
    TenantsWrite,
    /// Read projects.
    ProjectsRead,
    /// Create and change projects.
    ProjectsWrite,
    /// Read products and entitlements.
    ProductsRead,
    /// Change products and entitlements.
    ProductsWrite,
    /// Read identity provider configuration.
    IdpRead,
    /// Change identity provider configuration.
    IdpWrite,
    /// Create, list, revoke and rotate API keys.
    ApiKeysManage,
    /// Read the audit log.
    AuditRead,
    /// Write audit events.
    AuditWrite,
    /// Read the event feed.
    EventsRead,
    /// Create, change and delete webhook endpoints; read and retry their deliveries.
    WebhooksManage,
}

impl Scope {
    /// Every scope, in documentation order.
    pub const ALL: &'static [Scope] = &[
        Scope::PlatformAdmin,
        Scope::TenantsRead,
        Scope::TenantsWrite,
        Scope::ProjectsRead,
        Scope::ProjectsWrite,
        Scope::ProductsRead,
        Scope::ProductsWrite,
        Scope::IdpRead,
        Scope::IdpWrite,
        Scope::ApiKeysManage,
        Scope::AuditRead,
        Scope::AuditWrite,
        Scope::EventsRead,
        Scope::WebhooksManage,
    ];

    /// The scope as written in keys, tokens and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::PlatformAdmin => "platform:admin",
            Scope::TenantsRead => "tenants:read",
            Scope::TenantsWrite => "tenants:write",
            Scope::ProjectsRead => "projects:read",
            Scope::ProjectsWrite => "projects:write",
            Scope::ProductsRead => "products:read",
            Scope::ProductsWrite => "products:write",
            Scope::IdpRead => "idp:read",
            Scope::IdpWrite => "idp:write",
            Scope::ApiKeysManage => "api_keys:manage",
            Scope::AuditRead => "audit:read",
            Scope::AuditWrite => "audit:write",
            Scope::EventsRead => "events:read",
            Scope::WebhooksManage => "webhooks:manage",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = UnknownLabel;

    fn from_str(label: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .iter()
            .copied()
            .find(|scope| scope.as_str() == label)
            .ok_or_else(|| UnknownLabel {
                kind: "scope",
                label: label.to_owned(),
                expected: Self::ALL
                    .iter()
                    .map(|scope| scope.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

impl TryFrom<String> for Scope {
    type Error = UnknownLabel;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<Scope> for String {
    fn from(scope: Scope) -> Self {
        scope.as_str().to_owned()
    }
}

/// A set of scopes, as a principal holds them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Scopes(BTreeSet<Scope>);

impl Scopes {
    /// Whether the holder may act under `scope` (`platform:admin` implies all).
    pub fn allows(&self, scope: Scope) -> bool {
        self.0.contains(&Scope::PlatformAdmin) || self.0.contains(&scope)
    }

    /// The scopes of `wanted` that `self` does not allow: what granting them would add.
    pub fn lacking(&self, wanted: &Scopes) -> Vec<Scope> {
        wanted.iter().filter(|scope| !self.allows(*scope)).collect()
    }

    /// Whether this set includes `platform:admin`.
    pub fn is_platform_admin(&self) -> bool {
        self.0.contains(&Scope::PlatformAdmin)
    }

    /// The scopes in documentation order.
    pub fn iter(&self) -> impl Iterator<Item = Scope> + '_ {
        self.0.iter().copied()
    }

    /// The scopes as text, for storage.
    pub fn labels(&self) -> Vec<String> {
        self.iter().map(String::from).collect()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Keeps the known scopes among `labels` and drops the rest: for tokens issued by an
    /// identity provider, which may carry scopes of other services.
    pub fn known_from<'a>(labels: impl IntoIterator<Item = &'a str>) -> Self {
        labels
            .into_iter()
            .filter_map(|label| label.parse().ok())
            .collect()
    }
}

impl FromIterator<Scope> for Scopes {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scope_round_trips_through_its_label() {
        for &scope in Scope::ALL {
            assert_eq!(scope.as_str().parse::<Scope>(), Ok(scope));
        }
        assert_eq!(Scope::ALL.len(), 14);
    }

    #[test]
    fn an_unknown_scope_is_rejected_with_the_list() {
        let error = "tenants:delete".parse::<Scope>().expect_err("unknown");
        assert!(error.to_string().starts_with(
            "unknown scope \"tenants:delete\"; expected one of: platform:admin, tenants:read"
        ));
        assert!(serde_json::from_str::<Scopes>("[\"nope\"]").is_err());
    }

    #[test]
    fn platform_admin_implies_every_scope() {
        let admin: Scopes = [Scope::PlatformAdmin].into_iter().collect();
        assert!(Scope::ALL.iter().all(|scope| admin.allows(*scope)));
        let all: Scopes = Scope::ALL.iter().copied().collect();
        assert_eq!(admin.lacking(&all), []);
    }

    #[test]
    fn a_holder_lacks_every_scope_it_does_not_have() {
        let holder: Scopes = [Scope::TenantsRead, Scope::ApiKeysManage]
            .into_iter()
            .collect();
        let subset: Scopes = [Scope::TenantsRead].into_iter().collect();
        let escalation: Scopes = [Scope::TenantsRead, Scope::TenantsWrite, Scope::IdpWrite]
            .into_iter()
            .collect();
        assert_eq!(holder.lacking(&subset), []);
        assert_eq!(
            holder.lacking(&escalation),
            [Scope::TenantsWrite, Scope::IdpWrite]
        );
        assert!(!holder.allows(Scope::PlatformAdmin));
    }

    #[test]
    fn foreign_scopes_in_a_token_are_ignored() {
        let scopes = Scopes::known_from("openid profile tenants:read email".split(' '));
        assert_eq!(scopes.labels(), vec!["tenants:read".to_owned()]);
    }
}
