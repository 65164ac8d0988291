//! Writing to `audit_log` inside the caller's transaction, so an event commits or rolls back
//! with the change it describes.

use sqlx::PgConnection;
use sqlx::types::Json;
use uuid::Uuid;

/// One Retraced-shaped event, as the registry records its own mutations.
#[derive(Debug, Clone, Default)]
pub struct NewAuditEvent {
    /// The tenant the event is about, if any.
    pub tenant_id: Option<Uuid>,
    /// The Retraced group id (the tenant id as text).
    pub group_id: Option<String>,
    /// The product that reports the event.
    pub product: String,
    /// What happened, e.g. `api_key.created`.
    pub action: String,
    /// c, r, u or d.
    pub crud: char,
    /// Who did it.
    pub actor_id: Option<String>,
    /// The actor's display name.
    pub actor_name: Option<String>,
    /// What it was done to.
    pub target_id: Option<String>,
    /// The target's kind, e.g. `api_key`.
    pub target_type: Option<String>,
    /// The target's display name.
    pub target_name: Option<String>,
    /// The caller's address, as text.
    pub source_ip: Option<String>,
    /// A sentence for people.
    pub description: Option<String>,
    /// Whether the action failed.
    pub is_failure: bool,
    /// Extra string fields (names of changed fields, never secrets or PII values).
    pub fields: serde_json::Map<String, serde_json::Value>,
}

/// Appends `event` to the audit log on `conn`; returns its id.
pub async fn record(conn: &mut PgConnection, event: &NewAuditEvent) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO audit_log (tenant_id, group_id, product, action, crud, actor_id, actor_name,
                                target_id, target_type, target_name, source_ip, description,
                                is_failure, fields)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::inet, $12, $13, $14)
         RETURNING id",
    )
    .bind(event.tenant_id)
    .bind(&event.group_id)
    .bind(&event.product)
    .bind(&event.action)
    .bind(event.crud.to_string())
    .bind(&event.actor_id)
    .bind(&event.actor_name)
    .bind(&event.target_id)
    .bind(&event.target_type)
    .bind(&event.target_name)
    .bind(&event.source_ip)
    .bind(&event.description)
    .bind(event.is_failure)
    .bind(Json(&event.fields))
    .fetch_one(conn)
    .await
}
