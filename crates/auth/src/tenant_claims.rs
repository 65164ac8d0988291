//! Which tenant an OIDC token's user belongs to, by an identifier that never moves to another
//! tenant: the tenant's id (`tenant_id`, or a `tenant` claim holding a UUID), or the Keycloak
//! organization in the `organization` claim that a platform principal mapped to the tenant
//! (`tenants.oidc_issuer`, `tenants.oidc_organization`). A `tenant` claim holding a slug maps
//! nothing: slugs are renamed, and a former slug could pass to another tenant.

use domain::TenantStatus;
use serde::Deserialize;
use serde_json::Value;
use storage::PgPool;
use uuid::Uuid;

use crate::AuthError;

/// The claims that say which tenant a user belongs to.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct TenantClaims {
    /// A tenant id (a slug here is ignored).
    tenant: Option<String>,
    /// A tenant id.
    tenant_id: Option<String>,
    /// Keycloak 26's organization claim: `["alias"]`, or `{"alias": {"id": "…", …}}` when the
    /// mapper adds the organization's id or attributes.
    organization: Option<Value>,
}

impl TenantClaims {
    /// The tenant id the token states, if any.
    fn stated_id(&self) -> Result<Option<Uuid>, String> {
        let by_tenant_id = self
            .tenant_id
            .as_deref()
            .map(|text| {
                text.parse::<Uuid>()
                    .map_err(|_| "the tenant_id claim is not a tenant id (a UUID)".to_owned())
            })
            .transpose()?;
        let by_tenant = self.tenant.as_deref().and_then(|text| text.parse().ok());
        match (by_tenant_id, by_tenant) {
            (Some(one), Some(other)) if one != other => {
                Err("the tenant and tenant_id claims name different tenants".to_owned())
            }
            (stated, other) => Ok(stated.or(other)),
        }
    }

    /// The names (alias, and id when given) of the one organization the token names; `None`
    /// without one. Several organizations are refused: which tenant would be meant? (Ask
    /// for the `organization:<alias>` scope to get one.)
    fn organization_names(&self) -> Result<Option<Vec<String>>, String> {
        let several = || {
            "the organization claim names several organizations; request the organization:<alias> scope".to_owned()
        };
        match &self.organization {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(alias)) => Ok(Some(vec![alias.clone()])),
            Some(Value::Array(aliases)) => match aliases.as_slice() {
                [] => Ok(None),
                [Value::String(alias)] => Ok(Some(vec![alias.clone()])),
                [_] => Err("the organization claim holds something other than an alias".to_owned()),
                _ => Err(several()),
            },
            Some(Value::Object(organizations)) => {
                let mut entries = organizations.iter();
                match (entries.next(), entries.next()) {
                    (None, _) => Ok(None),
                    (Some((alias, details)), None) => {
                        let mut names = vec![alias.clone()];
                        if let Some(id) = details.get("id").and_then(Value::as_str) {
                            names.push(id.to_owned());
                        }
                        Ok(Some(names))
                    }
                    (Some(_), Some(_)) => Err(several()),
                }
            }
            Some(_) => Err("the organization claim is neither a list nor an object".to_owned()),
        }
    }

    /// Why no tenant was found, for the log.
    fn nothing_maps(&self) -> String {
        if self.organization_names().ok().flatten().is_some() {
            "the token's organization is not mapped to a tenant".to_owned()
        } else if self.tenant.is_some() {
            "a tenant claim holding a slug is not trusted (a slug can pass to another tenant); name the tenant by id or map its organization".to_owned()
        } else {
            "the token has neither the admin role nor a tenant id or mapped organization".to_owned()
        }
    }
}

/// The tenant a token of `issuer` belongs to, or why it belongs to none.
pub(crate) async fn resolve(
    claims: &TenantClaims,
    issuer: &str,
    pool: &PgPool,
) -> Result<Uuid, AuthError> {
    let unavailable = |error: sqlx::Error| AuthError::Unavailable(error.to_string());
    let stated = claims.stated_id().map_err(AuthError::Token)?;
    let mapped = match claims.organization_names().map_err(AuthError::Token)? {
        None => None,
        Some(names) => {
            match storage::tenant_names::ids_by_oidc_organization(pool, issuer, &names)
                .await
                .map_err(unavailable)?
                .as_slice()
            {
                [] => None,
                [one] => Some(*one),
                _ => {
                    return Err(AuthError::Token(
                        "the organization's id and alias are mapped to different tenants"
                            .to_owned(),
                    ));
                }
            }
        }
    };
    let tenant = match (stated, mapped) {
        (Some(stated), Some(mapped)) if stated != mapped => {
            return Err(AuthError::Token(
                "the token's tenant id and its organization's tenant differ".to_owned(),
            ));
        }
        (Some(tenant), _) | (None, Some(tenant)) => tenant,
        (None, None) => return Err(AuthError::Token(claims.nothing_maps())),
    };
    // An archived tenant's users end with it, as its API keys do.
    match storage::tenants::get(pool, tenant)
        .await
        .map_err(unavailable)?
        .map(|row| row.status)
    {
        None => Err(AuthError::Token(format!(
            "the token's tenant {tenant} does not exist"
        ))),
        Some(TenantStatus::Archived) => Err(AuthError::TenantArchived),
        Some(_) => Ok(tenant),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(value: Value) -> TenantClaims {
        serde_json::from_value(value).expect("claims")
    }

    #[test]
    fn a_tenant_is_named_by_id_and_a_slug_names_nothing() {
        let id = Uuid::new_v4();
        assert_eq!(claims(json!({"tenant": id})).stated_id(), Ok(Some(id)));
        assert_eq!(claims(json!({"tenant_id": id})).stated_id(), Ok(Some(id)));
        assert_eq!(
            claims(json!({"tenant": id, "tenant_id": id})).stated_id(),
            Ok(Some(id))
        );
        assert_eq!(claims(json!({"tenant": "acme"})).stated_id(), Ok(None));
        assert!(claims(json!({"tenant_id": "acme"})).stated_id().is_err());
        assert!(
            claims(json!({"tenant": Uuid::new_v4(), "tenant_id": id}))
                .stated_id()
                .is_err()
        );
    }

    #[test]
    fn keycloak_organization_claims_name_one_organization_by_alias_and_id() {
        assert_eq!(claims(json!({})).organization_names(), Ok(None));
        assert_eq!(
            claims(json!({"organization": ["acme"]})).organization_names(),
            Ok(Some(vec!["acme".to_owned()]))
        );
        assert_eq!(
            claims(json!({"organization": "acme"})).organization_names(),
            Ok(Some(vec!["acme".to_owned()]))
        );
        assert_eq!(
            claims(json!({"organization": {"acme": {"id": "42c3e46f", "region": ["eu"]}}}))
                .organization_names(),
            Ok(Some(vec!["acme".to_owned(), "42c3e46f".to_owned()]))
        );
        assert_eq!(
            claims(json!({"organization": {"acme": {}}})).organization_names(),
            Ok(Some(vec!["acme".to_owned()]))
        );
        for ambiguous in [
            json!({"organization": ["acme", "globex"]}),
            json!({"organization": {"acme": {}, "globex": {}}}),
            json!({"organization": 7}),
            json!({"organization": [7]}),
        ] {
            assert!(
                claims(ambiguous.clone()).organization_names().is_err(),
                "{ambiguous}"
            );
        }
    }

    #[test]
    fn the_log_says_why_a_slug_claim_maps_nothing() {
        assert!(
            claims(json!({"tenant": "acme"}))
                .nothing_maps()
                .contains("slug")
        );
        assert!(
            claims(json!({"organization": ["acme"]}))
                .nothing_maps()
                .contains("not mapped")
        );
    }
}
