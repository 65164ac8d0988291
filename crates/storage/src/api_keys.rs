//! The `api_keys` table: records, credentials for verification, revocation and rotation.
//!
//! Triggers (V11) announce on [`CHANGES_CHANNEL`] every committed change that can end a key's
//! validity, whatever code or person made it: a key revoked, rotated, narrowed or deleted (a
//! purge deletes its tenant's keys by cascade) names that key; a tenant whose status changed
//! or that was deleted names that tenant. Every replica's verification cache hears it when
//! the change commits.

use chrono::{DateTime, Utc};
use sqlx::{FromRow, PgConnection, PgPool};
use uuid::Uuid;

/// The LISTEN/NOTIFY channel that names a changed key, or a tenant whose keys' standing
/// changed (V11).
pub const CHANGES_CHANNEL: &str = "api_keys_changed";

/// What a [`CHANGES_CHANNEL`] notification names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyChange {
    /// One key was revoked, rotated, changed or deleted.
    KeyId(Uuid),
    /// A tenant's status changed or it was deleted: all its keys are concerned.
    TenantId(Uuid),
}

impl KeyChange {
    /// Reads a notification's payload; `None` when it is not one of ours.
    pub fn parse(payload: &str) -> Option<Self> {
        serde_json::from_str(payload).ok()
    }
}

/// What may be shown of a key: everything but its hash.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct ApiKeyRecord {
    /// The key's id.
    pub id: Uuid,
    /// The tenant the key acts for; `None` for a platform key.
    pub tenant_id: Option<Uuid>,
    /// A label chosen by its creator.
    pub name: String,
    /// The public part of the key, stored in clear for lookup.
    pub prefix: String,
    /// The scopes granted.
    pub scopes: Vec<String>,
    /// The product the key belongs to (recorded on the audit events it ingests).
    pub product: Option<String>,
    /// When the key stops working, if ever.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was last used (recorded at most once a minute).
    pub last_used_at: Option<DateTime<Utc>>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
    /// Until when the secret it had before its last rotation still works, if it does.
    pub previous_valid_until: Option<DateTime<Utc>>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// What verification needs: the hash and the key's standing.
#[derive(Debug, Clone, FromRow)]
pub struct ApiKeyCredential {
    /// The key's id.
    pub id: Uuid,
    /// The tenant the key acts for; `None` for a platform key.
    pub tenant_id: Option<Uuid>,
    /// The argon2id PHC string of the whole key.
    pub hash: String,
    /// The scopes granted.
    pub scopes: Vec<String>,
    /// The product the key belongs to, if any.
    pub product: Option<String>,
    /// When the key stops working, if ever.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
    /// The status of the key's tenant (`None` for a platform key).
    pub tenant_status: Option<String>,
    /// Whether the prefix is the key's current one (not the secret a rotation's grace keeps).
    pub current_secret: bool,
}

/// A key to insert; the secret itself never reaches this crate, only its hash.
#[derive(Debug, Clone)]
pub struct NewApiKey<'a> {
    /// The tenant the key acts for; `None` for a platform key.
    pub tenant_id: Option<Uuid>,
    /// A label.
    pub name: &'a str,
    /// The public lookup prefix.
    pub prefix: &'a str,
    /// The argon2id PHC string.
    pub hash: &'a str,
    /// The scopes granted.
    pub scopes: &'a [String],
    /// When the key stops working, if ever.
    pub expires_at: Option<DateTime<Utc>>,
    /// The product the key belongs to, if any.
    pub product: Option<&'a str>,
}

/// Which keys a listing returns, and from where.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Only this tenant's keys.
    pub tenant_id: Option<Uuid>,
    /// Only platform keys (no tenant).
    pub platform_only: bool,
    /// Include revoked keys.
    pub include_revoked: bool,
    /// Keys strictly after this `(created_at, id)` position in the listing order.
    pub after: Option<(DateTime<Utc>, Uuid)>,
    /// At most this many.
    pub limit: i64,
}

const RECORD_COLUMNS: &str = "id, tenant_id, name, prefix, scopes, product, expires_at, \
                              last_used_at, revoked_at, previous_valid_until, created_at, \
                              updated_at";

/// Inserts a key.
pub async fn insert(
    conn: &mut PgConnection,
    key: &NewApiKey<'_>,
) -> Result<ApiKeyRecord, sqlx::Error> {
    sqlx::query_as(&format!(
        "INSERT INTO api_keys (tenant_id, name, prefix, hash, scopes, expires_at, product)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {RECORD_COLUMNS}"
    ))
    .bind(key.tenant_id)
    .bind(key.name)
    .bind(key.prefix)
    .bind(key.hash)
    .bind(key.scopes)
    .bind(key.expires_at)
    .bind(key.product)
    .fetch_one(conn)
    .await
}

/// One key by id.
pub async fn get(pool: &PgPool, id: Uuid) -> Result<Option<ApiKeyRecord>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {RECORD_COLUMNS} FROM api_keys WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// A page of keys, newest last, in `(created_at, id)` order.
pub async fn list(pool: &PgPool, filter: &ListFilter) -> Result<Vec<ApiKeyRecord>, sqlx::Error> {
    let (after_time, after_id) = filter.after.unzip();
    sqlx::query_as(&format!(
        "SELECT {RECORD_COLUMNS} FROM api_keys
         WHERE ($1::uuid IS NULL OR tenant_id = $1)
           AND (NOT $2 OR tenant_id IS NULL)
           AND ($3 OR revoked_at IS NULL)
           AND ($4::timestamptz IS NULL OR (created_at, id) > ($4, $5))
         ORDER BY created_at, id
         LIMIT $6"
    ))
    .bind(filter.tenant_id)
    .bind(filter.platform_only)
    .bind(filter.include_revoked)
    .bind(after_time)
    .bind(after_id)
    .bind(filter.limit)
    .fetch_all(pool)
    .await
}

/// The credential behind a prefix, with its tenant's status, for verification.
pub async fn credential_by_prefix(
    pool: &PgPool,
    prefix: &str,
) -> Result<Option<ApiKeyCredential>, sqlx::Error> {
    // The secret a key had before a rotation with a grace period answers too, until the
    // grace ends: its own hash, and an expiry no later than the grace's end.
    sqlx::query_as(
        "SELECT k.id, k.tenant_id,
                CASE WHEN k.prefix = $1 THEN k.hash ELSE k.previous_hash END AS hash,
                k.scopes, k.product,
                CASE WHEN k.prefix = $1 THEN k.expires_at
                     ELSE least(k.expires_at, k.previous_valid_until) END AS expires_at,
                k.revoked_at, t.status::text AS tenant_status, k.prefix = $1 AS current_secret
         FROM api_keys k LEFT JOIN tenants t ON t.id = k.tenant_id
         WHERE k.prefix = $1 OR (k.previous_prefix = $1 AND k.previous_valid_until > now())",
    )
    .bind(prefix)
    .fetch_optional(pool)
    .await
}

/// Revokes a live key; `None` if there is no such key or it was revoked already (a repeat
/// changes nothing, so nothing is announced twice).
pub async fn revoke(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<ApiKeyRecord>, sqlx::Error> {
    sqlx::query_as(&format!(
        "UPDATE api_keys SET revoked_at = now()
         WHERE id = $1 AND revoked_at IS NULL RETURNING {RECORD_COLUMNS}"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// Revokes every live key of `tenant_id` (archiving ends them for good); returns them.
pub async fn revoke_all_of_tenant(
    conn: &mut PgConnection,
    tenant_id: Uuid,
) -> Result<Vec<ApiKeyRecord>, sqlx::Error> {
    sqlx::query_as(&format!(
        "UPDATE api_keys SET revoked_at = now()
         WHERE tenant_id = $1 AND revoked_at IS NULL RETURNING {RECORD_COLUMNS}"
    ))
    .bind(tenant_id)
    .fetch_all(conn)
    .await
}

/// Replaces a live key's prefix and hash (its secret); `None` if there is no such key or it
/// was revoked (checked on the row the update locks, so a racing revocation wins).
pub async fn rotate(
    conn: &mut PgConnection,
    id: Uuid,
    prefix: &str,
    hash: &str,
    previous_valid_until: Option<DateTime<Utc>>,
) -> Result<Option<ApiKeyRecord>, sqlx::Error> {
    // The right-hand sides read the row as it was: the old secret moves aside.
    sqlx::query_as(&format!(
        "UPDATE api_keys SET prefix = $2, hash = $3, last_used_at = NULL,
             previous_prefix = CASE WHEN $4::timestamptz IS NULL THEN NULL ELSE prefix END,
             previous_hash = CASE WHEN $4::timestamptz IS NULL THEN NULL ELSE hash END,
             previous_valid_until = $4
         WHERE id = $1 AND revoked_at IS NULL RETURNING {RECORD_COLUMNS}"
    ))
    .bind(id)
    .bind(prefix)
    .bind(hash)
    .bind(previous_valid_until)
    .fetch_optional(conn)
    .await
}

/// Records a use, unless one was recorded less than a minute ago (by any replica).
pub async fn record_use(pool: &PgPool, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE api_keys SET last_used_at = now()
         WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')",
    )
    .bind(id)
    .execute(pool)
    .await
    .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_notification_names_a_key_or_a_tenant() {
        let id = Uuid::new_v4();
        assert_eq!(
            KeyChange::parse(&format!(r#"{{"key_id":"{id}"}}"#)),
            Some(KeyChange::KeyId(id))
        );
        assert_eq!(
            KeyChange::parse(&format!(r#"{{"tenant_id":"{id}"}}"#)),
            Some(KeyChange::TenantId(id))
        );
        assert_eq!(KeyChange::parse(&id.to_string()), None);
        assert_eq!(KeyChange::parse(r#"{"key_id":"nope"}"#), None);
    }
}
