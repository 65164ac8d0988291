//! Viewer tokens: what Retraced's `viewertoken` hands an embedded log viewer. A token is
//! `trv_` and 64 hex digits (256 bits from the OS CSPRNG); only its SHA-256 is stored (a
//! slow hash buys nothing against 256 random bits). It authenticates as a principal that
//! reads one tenant's audit log, of one product, and nothing else, until it expires.

use chrono::{DateTime, Utc};
use domain::{Scope, Scopes};
use sha2::{Digest, Sha256};
use storage::PgPool;

use crate::{AuthError, Principal, PrincipalKind};

/// How a viewer token starts (API keys start `tr_`).
pub const PREFIX: &str = "trv_";

/// How long a viewer token works: long enough for a viewer's session, short enough that a
/// leaked one is soon useless.
pub const LIFETIME: chrono::TimeDelta = chrono::TimeDelta::minutes(15);

/// A new token and the SHA-256 to store for it.
pub fn generate() -> Result<(String, Vec<u8>), AuthError> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|error| AuthError::Unavailable(error.to_string()))?;
    let token = format!("{PREFIX}{}", hex::encode(secret));
    let hash = digest(&token);
    Ok((token, hash))
}

/// Whether `credential` has a viewer token's form (it may still be unknown).
pub fn is_viewer_token(credential: &str) -> bool {
    credential.starts_with(PREFIX)
}

fn digest(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// The principal of a viewer token: confined to its tenant, `audit:read` only, its product
/// fixed, its viewer as the subject.
pub fn principal(
    tenant_id: uuid::Uuid,
    product: String,
    actor_id: String,
    expires_at: DateTime<Utc>,
) -> Principal {
    Principal {
        kind: PrincipalKind::ViewerToken,
        tenant_id: Some(tenant_id),
        scopes: Scopes::from_iter([Scope::AuditRead]),
        key_id: None,
        subject: Some(actor_id),
        product: Some(product),
        expires_at: Some(expires_at),
        previous_secret: false,
    }
}

/// The principal behind the viewer token `credential`: 401 (`Invalid`) when it is malformed,
/// unknown, expired, or its issuing key or tenant no longer works.
pub async fn verify(pool: &PgPool, credential: &str) -> Result<Principal, AuthError> {
    let well_formed = credential
        .strip_prefix(PREFIX)
        .is_some_and(|secret| secret.len() == 64 && secret.bytes().all(|b| b.is_ascii_hexdigit()));
    if !well_formed {
        return Err(AuthError::Malformed);
    }
    let found = storage::viewer_tokens::find_active(pool, &digest(credential))
        .await
        .map_err(|error| AuthError::Unavailable(error.to_string()))?
        .ok_or(AuthError::Invalid)?;
    Ok(principal(
        found.tenant_id,
        found.product,
        found.actor_id,
        found.expires_at,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_token_has_the_viewer_form_and_its_hash_is_its_sha256() {
        let (token, hash) = generate().expect("a token");
        assert!(is_viewer_token(&token));
        assert_eq!(token.len(), PREFIX.len() + 64);
        assert_eq!(hash, Sha256::digest(token.as_bytes()).to_vec());
        let (other, _) = generate().expect("another token");
        assert_ne!(token, other);
    }

    #[test]
    fn a_viewer_principal_reads_one_tenants_audit_log_and_nothing_else() {
        let tenant = uuid::Uuid::new_v4();
        let viewer = principal(tenant, "billing".into(), "u-1".into(), Utc::now());
        assert!(viewer.allows(Scope::AuditRead));
        for scope in [Scope::AuditWrite, Scope::TenantsRead, Scope::PlatformAdmin] {
            assert!(!viewer.allows(scope), "{scope}");
        }
        assert!(viewer.can_access_tenant(Some(tenant)));
        assert!(!viewer.can_access_tenant(Some(uuid::Uuid::new_v4())));
        assert_eq!(viewer.actor_id(), "viewer:u-1");
    }
}
