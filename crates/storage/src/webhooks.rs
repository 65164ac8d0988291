//! Webhook endpoints (`webhook_endpoints`), their endpoint-management SQL; the delivery queue
//! lives in [`deliveries`].

pub mod deliveries;

use chrono::{DateTime, Utc};
use sqlx::{FromRow, PgConnection, PgPool};
use uuid::Uuid;

/// An endpoint as stored; its secrets are sealed.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct EndpointRow {
    /// Id.
    pub id: Uuid,
    /// The tenant whose events it receives; `None` for a platform endpoint.
    pub tenant_id: Option<Uuid>,
    /// Where deliveries go.
    pub url: String,
    /// Event type filters; `None` for every type.
    pub event_types: Option<Vec<String>>,
    /// Free text.
    pub description: String,
    /// Whether deliveries are made.
    pub enabled: bool,
    /// Why it was disabled, when it is.
    pub disabled_reason: Option<String>,
    /// The signing secret, sealed.
    pub secret_sealed: Vec<u8>,
    /// The secret before the last rotation, sealed, while it still signs.
    pub previous_secret_sealed: Option<Vec<u8>>,
    /// Until when the previous secret signs.
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    /// Since when it has failed without a success.
    pub failing_since: Option<DateTime<Utc>>,
    /// Optimistic-concurrency version.
    pub version: i64,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, tenant_id, url, event_types, description, enabled, disabled_reason, \
    secret_sealed, previous_secret_sealed, previous_secret_expires_at, failing_since, version, \
    created_at, updated_at";

/// A new endpoint.
#[derive(Debug, Clone)]
pub struct NewEndpoint<'a> {
    /// Its id (chosen by the caller, since the sealed secret is bound to it).
    pub id: Uuid,
    /// The tenant filter.
    pub tenant_id: Option<Uuid>,
    /// Where deliveries go.
    pub url: &'a str,
    /// Event type filters; `None` for every type.
    pub event_types: Option<&'a [String]>,
    /// Free text.
    pub description: &'a str,
    /// Whether deliveries are made from the start.
    pub enabled: bool,
    /// The signing secret, sealed.
    pub secret_sealed: &'a [u8],
}

/// Creates an endpoint.
pub async fn insert(
    conn: &mut PgConnection,
    endpoint: &NewEndpoint<'_>,
) -> Result<EndpointRow, sqlx::Error> {
    sqlx::query_as(&format!(
        "INSERT INTO webhook_endpoints
             (id, tenant_id, url, event_types, description, enabled, disabled_reason, secret_sealed)
         VALUES ($1, $2, $3, $4, $5, $6, CASE WHEN $6 THEN NULL ELSE 'disabled by its owner' END, $7)
         RETURNING {COLUMNS}"
    ))
    .bind(endpoint.id)
    .bind(endpoint.tenant_id)
    .bind(endpoint.url)
    .bind(endpoint.event_types)
    .bind(endpoint.description)
    .bind(endpoint.enabled)
    .bind(endpoint.secret_sealed)
    .fetch_one(conn)
    .await
}

/// How many endpoints are filtered to `tenant_id` (`None`: platform endpoints).
pub async fn count_for(
    conn: &mut PgConnection,
    tenant_id: Option<Uuid>,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FROM webhook_endpoints WHERE tenant_id IS NOT DISTINCT FROM $1",
    )
    .bind(tenant_id)
    .fetch_one(conn)
    .await
}

/// One endpoint, if it exists.
pub async fn get(pool: &PgPool, id: Uuid) -> Result<Option<EndpointRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM webhook_endpoints WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// The tenant filter of endpoint `id` (`Some(None)` for a platform endpoint), or `None`
/// when there is no such endpoint; read before locking the tenant's row, then the endpoint's.
pub async fn get_tenant(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<Option<Uuid>>, sqlx::Error> {
    sqlx::query_scalar("SELECT tenant_id FROM webhook_endpoints WHERE id = $1")
        .bind(id)
        .fetch_optional(conn)
        .await
}

/// One endpoint, locked for a change in the caller's transaction.
pub async fn lock(conn: &mut PgConnection, id: Uuid) -> Result<Option<EndpointRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM webhook_endpoints WHERE id = $1 FOR UPDATE"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// Which endpoints a listing shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// Every endpoint (platform principals).
    Everyone,
    /// Only the endpoints filtered to this tenant.
    Tenant(Uuid),
}

/// A page of endpoints in `(created_at, id)` order.
pub async fn list(
    pool: &PgPool,
    owner: Owner,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<EndpointRow>, sqlx::Error> {
    let tenant = match owner {
        Owner::Everyone => None,
        Owner::Tenant(id) => Some(id),
    };
    let (after_time, after_id) = after.unzip();
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM webhook_endpoints
         WHERE ($1::uuid IS NULL OR tenant_id = $1)
           AND ($2::timestamptz IS NULL OR (created_at, id) > ($2, $3))
         ORDER BY created_at, id LIMIT $4"
    ))
    .bind(tenant)
    .bind(after_time)
    .bind(after_id)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// A change to an endpoint's settings; `None` fields stay.
#[derive(Debug, Clone, Default)]
pub struct EndpointChanges<'a> {
    /// New URL.
    pub url: Option<&'a str>,
    /// New filters: `Some(None)` for every type.
    pub event_types: Option<Option<&'a [String]>>,
    /// New description.
    pub description: Option<&'a str>,
    /// Enable (clearing the failure record) or disable by the owner.
    pub enabled: Option<bool>,
}

/// Applies `changes` to endpoint `id` and bumps its version.
pub async fn update(
    conn: &mut PgConnection,
    id: Uuid,
    changes: &EndpointChanges<'_>,
) -> Result<EndpointRow, sqlx::Error> {
    sqlx::query_as(&format!(
        "UPDATE webhook_endpoints SET
             url = coalesce($2, url),
             event_types = CASE WHEN $3 THEN $4 ELSE event_types END,
             description = coalesce($5, description),
             enabled = coalesce($6, enabled),
             disabled_reason = CASE WHEN $6 IS NULL THEN disabled_reason
                                    WHEN $6 THEN NULL
                                    ELSE 'disabled by its owner' END,
             failing_since = CASE WHEN $6 THEN NULL ELSE failing_since END,
             version = version + 1,
             updated_at = now()
         WHERE id = $1 RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(changes.url)
    .bind(changes.event_types.is_some())
    .bind(changes.event_types.flatten())
    .bind(changes.description)
    .bind(changes.enabled)
    .fetch_one(conn)
    .await
}

/// Replaces the signing secret; the old one keeps signing until `previous_expires_at`.
pub async fn rotate_secret(
    conn: &mut PgConnection,
    id: Uuid,
    secret_sealed: &[u8],
    previous_expires_at: DateTime<Utc>,
) -> Result<EndpointRow, sqlx::Error> {
    sqlx::query_as(&format!(
        "UPDATE webhook_endpoints SET
             previous_secret_sealed = secret_sealed,
             previous_secret_expires_at = $3,
             secret_sealed = $2,
             version = version + 1,
             updated_at = now()
         WHERE id = $1 RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(secret_sealed)
    .bind(previous_expires_at)
    .fetch_one(conn)
    .await
}

/// Deletes an endpoint with its deliveries; whether it existed.
pub async fn delete(conn: &mut PgConnection, id: Uuid) -> Result<bool, sqlx::Error> {
    sqlx::query("DELETE FROM webhook_endpoints WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await
        .map(|done| done.rows_affected() == 1)
}
