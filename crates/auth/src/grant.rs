//! The one rule for handing out credentials: a principal may grant a key (create it, or
//! rotate or revoke it, which are authorized like creating it) only when the key reaches no
//! further than the principal itself, in scopes, tenant, product and lifetime.

use std::fmt;

use chrono::{DateTime, Utc};
use domain::{Scope, Scopes};
use uuid::Uuid;

use crate::Principal;

/// What a key carries that a grant is judged on (its name does not matter).
#[derive(Debug, Clone, Copy)]
pub struct KeyReach<'a> {
    /// The tenant the key acts for; `None` for a platform key.
    pub tenant_id: Option<Uuid>,
    /// The scopes it holds.
    pub scopes: &'a Scopes,
    /// Labels it holds that this build does not know (a newer release's scopes, during a
    /// rolling deploy): nobody here can tell what they grant, so only a platform admin, who
    /// holds everything, grants them.
    pub unknown_scopes: &'a [String],
    /// The product its audit events are recorded under, if any.
    pub product: Option<&'a str>,
    /// When it stops working; `None` for never.
    pub expires_at: Option<DateTime<Utc>>,
}

/// One way a key would reach further than the principal granting it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Overreach {
    /// Scopes the principal does not hold.
    Scopes(Vec<Scope>),
    /// Scopes this build does not know.
    UnknownScopes(Vec<String>),
    /// A platform key, and the principal is no platform admin.
    PlatformKey,
    /// A key of a tenant that is not the principal's.
    OtherTenant,
    /// A product the principal may not assign: only platform principals without a product
    /// of their own assign products; anyone else grants only keys of its own product.
    Product {
        /// The key's product.
        key: Option<String>,
        /// The principal's own product.
        own: Option<String>,
    },
    /// The key would outlive the principal's own credential.
    Outlives {
        /// When the principal's credential expires.
        own: DateTime<Utc>,
        /// When the key expires; `None` for never.
        key: Option<DateTime<Utc>>,
    },
}

impl fmt::Display for Overreach {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Scopes(scopes) => {
                let labels: Vec<&str> = scopes.iter().map(|scope| scope.as_str()).collect();
                write!(f, "scopes you do not hold: {}", labels.join(", "))
            }
            Self::UnknownScopes(labels) => write!(
                f,
                "scopes this server does not know, which only a platform admin grants: {}",
                labels.join(", ")
            ),
            Self::PlatformKey => f.write_str("a platform key, which only platform admins grant"),
            Self::OtherTenant => f.write_str("a key of another tenant"),
            Self::Product {
                key,
                own: Some(own),
            } => write!(
                f,
                "product {}, while your credential grants only keys of its own product {own}",
                key.as_deref().unwrap_or("none")
            ),
            Self::Product { key, own: None } => write!(
                f,
                "product {}, which only platform principals assign",
                key.as_deref().unwrap_or("none")
            ),
            Self::Outlives { own, key: None } => write!(
                f,
                "a key that never expires, while your credential expires at {}",
                own.to_rfc3339()
            ),
            Self::Outlives {
                own,
                key: Some(key),
            } => write!(
                f,
                "a key expiring at {}, after your credential (expiring at {})",
                key.to_rfc3339(),
                own.to_rfc3339()
            ),
        }
    }
}

/// Why a grant was refused: every way the key reaches further, in the order scopes,
/// tenant, product, expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRefused(pub Vec<Overreach>);

impl fmt::Display for GrantRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let reasons: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        write!(
            f,
            "this key reaches further than your own credential: {}",
            reasons.join("; ")
        )
    }
}

impl std::error::Error for GrantRefused {}

/// Whether `principal` may grant `key`: every scope of the key is the principal's; a
/// platform key only from a platform admin, a tenant key only from a platform principal or
/// that tenant's; a product only from a platform principal without one of its own (anyone
/// else grants only keys of its own product, or of none when it has none); and no key that
/// outlives the principal's own credential.
pub fn may_grant(principal: &Principal, key: &KeyReach<'_>) -> Result<(), GrantRefused> {
    let mut overreach = Vec::new();
    let missing = principal.scopes.lacking(key.scopes);
    if !missing.is_empty() {
        overreach.push(Overreach::Scopes(missing));
    }
    if !key.unknown_scopes.is_empty() && !principal.scopes.is_platform_admin() {
        overreach.push(Overreach::UnknownScopes(key.unknown_scopes.to_vec()));
    }
    match key.tenant_id {
        None if !principal.scopes.is_platform_admin() => overreach.push(Overreach::PlatformKey),
        Some(tenant) if !principal.can_access_tenant(Some(tenant)) => {
            overreach.push(Overreach::OtherTenant);
        }
        _ => {}
    }
    let own_product = principal.product.as_deref();
    let assigns_products = principal.is_platform() && own_product.is_none();
    if key.product != own_product && !assigns_products {
        overreach.push(Overreach::Product {
            key: key.product.map(str::to_owned),
            own: principal.product.clone(),
        });
    }
    if let Some(own) = principal.expires_at
        && key.expires_at.is_none_or(|expires_at| expires_at > own)
    {
        overreach.push(Overreach::Outlives {
            own,
            key: key.expires_at,
        });
    }
    if overreach.is_empty() {
        Ok(())
    } else {
        Err(GrantRefused(overreach))
    }
}

/// Whether `principal` may revoke key `key_id`: as [`may_grant`], except that a credential
/// may always revoke itself, which takes away only its own access.
pub fn may_revoke(
    principal: &Principal,
    key_id: Uuid,
    key: &KeyReach<'_>,
) -> Result<(), GrantRefused> {
    if principal.key_id == Some(key_id) {
        return Ok(());
    }
    may_grant(principal, key)
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;
    use crate::PrincipalKind;

    const TENANT: Uuid = Uuid::from_u128(1);
    const OTHER: Uuid = Uuid::from_u128(2);

    fn principal(kind: PrincipalKind, tenant_id: Option<Uuid>, scopes: &[Scope]) -> Principal {
        Principal {
            kind,
            tenant_id,
            scopes: scopes.iter().copied().collect(),
            key_id: Some(Uuid::from_u128(9)),
            subject: None,
            product: None,
            expires_at: None,
            previous_secret: false,
        }
    }

    /// A key of `TENANT` with `scopes`, no product and no expiry, to be narrowed.
    struct Key {
        tenant_id: Option<Uuid>,
        scopes: Scopes,
        unknown_scopes: Vec<String>,
        product: Option<&'static str>,
        expires_at: Option<DateTime<Utc>>,
    }

    fn key(scopes: &[Scope]) -> Key {
        Key {
            tenant_id: Some(TENANT),
            scopes: scopes.iter().copied().collect(),
            unknown_scopes: Vec::new(),
            product: None,
            expires_at: None,
        }
    }

    impl Key {
        fn platform(self) -> Self {
            Self {
                tenant_id: None,
                ..self
            }
        }
        fn of(self, tenant: Uuid) -> Self {
            Self {
                tenant_id: Some(tenant),
                ..self
            }
        }
        fn product(self, product: &'static str) -> Self {
            Self {
                product: Some(product),
                ..self
            }
        }
        fn unknown(self, label: &str) -> Self {
            Self {
                unknown_scopes: vec![label.to_owned()],
                ..self
            }
        }
        fn expiring(self, at: DateTime<Utc>) -> Self {
            Self {
                expires_at: Some(at),
                ..self
            }
        }
        fn reach(&self) -> KeyReach<'_> {
            KeyReach {
                tenant_id: self.tenant_id,
                scopes: &self.scopes,
                unknown_scopes: &self.unknown_scopes,
                product: self.product,
                expires_at: self.expires_at,
            }
        }
    }

    fn lacks(scopes: &[Scope]) -> Overreach {
        Overreach::Scopes(scopes.to_vec())
    }

    fn product(key: Option<&str>, own: Option<&str>) -> Overreach {
        Overreach::Product {
            key: key.map(str::to_owned),
            own: own.map(str::to_owned),
        }
    }

    fn outlives(own: DateTime<Utc>, key: Option<DateTime<Utc>>) -> Overreach {
        Overreach::Outlives { own, key }
    }

    #[test]
    fn a_principal_grants_only_keys_that_reach_no_further_than_itself() {
        use Overreach::{OtherTenant, PlatformKey};
        use Scope::*;
        let now = Utc::now();
        let (soon, later) = (now + Duration::minutes(1), now + Duration::days(30));
        let admin = principal(PrincipalKind::PlatformKey, None, &[PlatformAdmin]);
        let platform_manager = principal(
            PrincipalKind::PlatformKey,
            None,
            &[ApiKeysManage, TenantsRead],
        );
        let manager_scopes = [ApiKeysManage, TenantsRead, AuditWrite];
        let tenant_manager = principal(PrincipalKind::TenantKey, Some(TENANT), &manager_scopes);
        let product_key = Principal {
            product: Some("billing".to_owned()),
            ..tenant_manager.clone()
        };
        let expiring_admin = Principal {
            key_id: None,
            subject: Some("alice".to_owned()),
            expires_at: Some(soon),
            ..principal(PrincipalKind::OidcUser, None, &[PlatformAdmin])
        };
        let reader = || key(&[TenantsRead]);
        #[rustfmt::skip]
        let cases: Vec<(&str, &Principal, Key, Vec<Overreach>)> = vec![
            ("admin: anything", &admin, key(&[PlatformAdmin]).platform().product("crm"), vec![]),
            ("admin: any expiry", &admin, reader().expiring(later), vec![]),
            ("admin: a scope of a newer release", &admin, reader().unknown("billing:admin"), vec![]),
            ("tenant manager: a scope of a newer release", &tenant_manager, reader().unknown("billing:admin"),
                vec![Overreach::UnknownScopes(vec!["billing:admin".to_owned()])]),
            ("tenant manager: a subset", &tenant_manager, reader(), vec![]),
            ("tenant manager: all it holds", &tenant_manager, key(&manager_scopes), vec![]),
            ("tenant manager: a broader key", &tenant_manager, key(&[TenantsRead, TenantsWrite, IdpWrite]),
                vec![lacks(&[TenantsWrite, IdpWrite])]),
            ("tenant manager: a platform key", &tenant_manager, reader().platform(), vec![PlatformKey]),
            ("tenant manager: another tenant", &tenant_manager, reader().of(OTHER), vec![OtherTenant]),
            ("tenant manager: sets a product", &tenant_manager, reader().product("billing"),
                vec![product(Some("billing"), None)]),
            ("tenant manager: everything at once", &tenant_manager, key(&[PlatformAdmin]).platform().product("crm"),
                vec![lacks(&[PlatformAdmin]), PlatformKey, product(Some("crm"), None)]),
            ("product key: its own product", &product_key, reader().product("billing"), vec![]),
            ("product key: drops its product", &product_key, reader(), vec![product(None, Some("billing"))]),
            ("product key: another product", &product_key, reader().product("crm"),
                vec![product(Some("crm"), Some("billing"))]),
            ("platform manager: a tenant key", &platform_manager, reader().of(OTHER), vec![]),
            ("platform manager: assigns a product", &platform_manager, reader().product("crm"), vec![]),
            ("platform manager: a platform key", &platform_manager, reader().platform(), vec![PlatformKey]),
            ("platform manager: a platform admin key", &platform_manager, key(&[PlatformAdmin]).platform(),
                vec![lacks(&[PlatformAdmin]), PlatformKey]),
            ("expiring admin: no expiry", &expiring_admin, reader(), vec![outlives(soon, None)]),
            ("expiring admin: a later expiry", &expiring_admin, reader().expiring(later),
                vec![outlives(soon, Some(later))]),
            ("expiring admin: the same expiry", &expiring_admin, reader().expiring(soon), vec![]),
            ("expiring admin: an earlier expiry", &expiring_admin, reader().expiring(now), vec![]),
        ];
        let wrong: Vec<String> = cases
            .into_iter()
            .filter_map(|(case, principal, key, want)| {
                let got = may_grant(principal, &key.reach())
                    .err()
                    .map(|refused| refused.0);
                let got = got.unwrap_or_default();
                (got != want).then(|| format!("{case}: got {got:?}, want {want:?}"))
            })
            .collect();
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn a_refusal_names_everything_that_reaches_further() {
        let manager = Principal {
            expires_at: Some(Utc::now()),
            ..principal(
                PrincipalKind::TenantKey,
                Some(TENANT),
                &[Scope::ApiKeysManage],
            )
        };
        let refused = may_grant(
            &manager,
            &key(&[Scope::TenantsWrite]).product("crm").reach(),
        )
        .expect_err("refused");
        let text = refused.to_string();
        for part in ["tenants:write", "product crm", "never expires"] {
            assert!(text.contains(part), "{part:?} missing from {text:?}");
        }
    }

    #[test]
    fn a_credential_may_always_revoke_itself_and_otherwise_only_what_it_could_grant() {
        let own_id = Uuid::from_u128(9);
        let expiring_platform_manager = Principal {
            expires_at: Some(Utc::now() + Duration::minutes(5)),
            ..principal(PrincipalKind::PlatformKey, None, &[Scope::ApiKeysManage])
        };
        let itself = key(&[Scope::ApiKeysManage]).platform();
        assert!(may_grant(&expiring_platform_manager, &itself.reach()).is_err());
        assert_eq!(
            may_revoke(&expiring_platform_manager, own_id, &itself.reach()),
            Ok(())
        );
        let other = Uuid::from_u128(10);
        assert_eq!(
            may_revoke(&expiring_platform_manager, other, &itself.reach()),
            may_grant(&expiring_platform_manager, &itself.reach())
        );
    }
}
