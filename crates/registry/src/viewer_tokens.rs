//! Viewer tokens for an embedded audit log viewer (Retraced's `viewertoken`): issued by a
//! product's API key for one tenant, recorded in that tenant's audit trail.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use storage::PgPool;
use storage::viewer_tokens::NewViewerToken;
use uuid::Uuid;

use crate::trail::{self, Target};
use crate::{Actor, RegistryError};

/// What to issue a token for.
#[derive(Debug, Clone)]
pub struct IssueViewerToken {
    /// The tenant whose log it reads (already resolved and visible to the caller).
    pub tenant_id: Uuid,
    /// Who will view, in the product's words.
    pub actor_id: String,
    /// Retraced's `is_admin`: recorded; it grants nothing more here.
    pub is_admin: bool,
}

/// An issued token: shown once, stored only as its SHA-256.
#[derive(Debug, Clone)]
pub struct IssuedViewerToken {
    /// The token, for `Authorization: Bearer`.
    pub token: String,
    /// When it stops working.
    pub expires_at: DateTime<Utc>,
}

/// Issues a viewer token of the caller's product for `input.tenant_id`. Only an API key
/// with a product may issue one (a viewer token may not issue another, so none outlives
/// its lifetime); the token dies with that key. Recorded as `audit.viewer_token.created`.
pub async fn issue(
    pool: &PgPool,
    actor: &Actor<'_>,
    input: IssueViewerToken,
) -> Result<IssuedViewerToken, RegistryError> {
    let principal = actor.principal;
    let (Some(key_id), Some(product)) = (principal.key_id, principal.product.clone()) else {
        return Err(RegistryError::Forbidden {
            detail: "only an API key that belongs to a product issues viewer tokens".to_owned(),
            pointers: Vec::new(),
        });
    };
    let (token, token_hash) =
        auth::viewer::generate().map_err(|error| RegistryError::Internal(error.to_string()))?;
    let expires_at = Utc::now() + auth::viewer::LIFETIME;
    let new = NewViewerToken {
        token_hash,
        tenant_id: input.tenant_id,
        product,
        actor_id: input.actor_id,
        is_admin: input.is_admin,
        issued_by: key_id,
        expires_at,
    };
    let new = &new;
    storage::with_retries(move || async move {
        let mut transaction = storage::begin(pool).await?;
        let id = storage::viewer_tokens::insert(&mut transaction, new).await?;
        let mut fields = Map::new();
        fields.insert("product".into(), Value::from(new.product.clone()));
        fields.insert("viewer".into(), Value::from(new.actor_id.clone()));
        fields.insert("is_admin".into(), Value::from(new.is_admin.to_string()));
        fields.insert("expires_at".into(), Value::from(expires_at.to_rfc3339()));
        trail::record(
            &mut transaction,
            actor,
            Target {
                tenant_id: Some(new.tenant_id),
                id: id.to_string(),
                kind: "viewer_token",
                name: format!("viewer token for {}", new.actor_id),
            },
            "audit.viewer_token.created",
            'c',
            fields,
        )
        .await?;
        storage::commit(transaction).await?;
        Ok::<_, RegistryError>(())
    })
    .await?;
    Ok(IssuedViewerToken { token, expires_at })
}
