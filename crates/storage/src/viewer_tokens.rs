//! `audit_viewer_tokens`: short-lived read-only tokens for an embedded audit log viewer,
//! stored as the SHA-256 of the token only.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// A token to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewViewerToken {
    /// SHA-256 of the token.
    pub token_hash: Vec<u8>,
    /// The one tenant it reads.
    pub tenant_id: Uuid,
    /// The one product whose events it reads.
    pub product: String,
    /// Who views, in the product's words.
    pub actor_id: String,
    /// Retraced's `is_admin`, kept for the record.
    pub is_admin: bool,
    /// The API key that issued it.
    pub issued_by: Uuid,
    /// When it stops working.
    pub expires_at: DateTime<Utc>,
}

/// A token that still works.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ActiveViewerToken {
    /// Its id.
    pub id: Uuid,
    /// The tenant it reads.
    pub tenant_id: Uuid,
    /// The product whose events it reads.
    pub product: String,
    /// Who views.
    pub actor_id: String,
    /// When it stops working.
    pub expires_at: DateTime<Utc>,
}

/// Stores `token` on `conn` and removes up to 100 expired ones, so the table holds little
/// more than the tokens still working. Returns the new token's id.
pub async fn insert(conn: &mut PgConnection, token: &NewViewerToken) -> Result<Uuid, sqlx::Error> {
    sqlx::query(
        "DELETE FROM audit_viewer_tokens WHERE id IN (
             SELECT id FROM audit_viewer_tokens WHERE expires_at <= now() LIMIT 100)",
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query_scalar(
        "INSERT INTO audit_viewer_tokens
             (token_hash, tenant_id, product, actor_id, is_admin, issued_by, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
    )
    .bind(&token.token_hash)
    .bind(token.tenant_id)
    .bind(&token.product)
    .bind(&token.actor_id)
    .bind(token.is_admin)
    .bind(token.issued_by)
    .bind(token.expires_at)
    .fetch_one(conn)
    .await
}

/// The token whose SHA-256 is `token_hash`, if it still works: not expired, its issuing key
/// neither revoked nor expired, its tenant not archived.
pub async fn find_active(
    pool: &PgPool,
    token_hash: &[u8],
) -> Result<Option<ActiveViewerToken>, sqlx::Error> {
    sqlx::query_as(
        "SELECT v.id, v.tenant_id, v.product, v.actor_id, v.expires_at
         FROM audit_viewer_tokens v
         JOIN api_keys k ON k.id = v.issued_by
         JOIN tenants t ON t.id = v.tenant_id
         WHERE v.token_hash = $1 AND v.expires_at > now()
           AND k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > now())
           AND t.status <> 'archived'",
    )
    .bind(token_hash)
    .fetch_optional(pool)
    .await
}
