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

/// One ingested event, its group resolved to a tenant.
#[derive(Debug, Clone, Default)]
pub struct IngestedEvent {
    /// The tenant (the Retraced group), if any.
    pub tenant_id: Option<Uuid>,
    /// The group id as sent.
    pub group_id: Option<String>,
    /// The group name as sent.
    pub group_name: Option<String>,
    /// The calling product.
    pub product: String,
    /// What happened.
    pub action: String,
    /// c, r, u or d.
    pub crud: String,
    /// Actor id.
    pub actor_id: Option<String>,
    /// Actor name.
    pub actor_name: Option<String>,
    /// Actor link.
    pub actor_href: Option<String>,
    /// Actor fields.
    pub actor_fields: serde_json::Value,
    /// Target id.
    pub target_id: Option<String>,
    /// Target name.
    pub target_name: Option<String>,
    /// Target kind.
    pub target_type: Option<String>,
    /// Target link.
    pub target_href: Option<String>,
    /// Target fields.
    pub target_fields: serde_json::Value,
    /// Source address.
    pub source_ip: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Failed action.
    pub is_failure: bool,
    /// Nobody signed in.
    pub is_anonymous: bool,
    /// Extra fields.
    pub fields: serde_json::Value,
    /// The product's own id for the event.
    pub external_id: Option<String>,
    /// When it happened.
    pub created_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Reporting component.
    pub component: Option<String>,
    /// Product version.
    pub version: Option<String>,
}

/// Stores `events` on `conn` (the caller's transaction); an event whose `(product,
/// external_id)` is already stored is skipped. Returns how many were stored.
pub async fn ingest(conn: &mut PgConnection, events: &[IngestedEvent]) -> Result<u64, sqlx::Error> {
    let mut stored = 0;
    for event in events {
        stored += sqlx::query(
            "INSERT INTO audit_log (tenant_id, group_id, group_name, product, action, crud,
                 actor_id, actor_name, actor_href, actor_fields, target_id, target_name, target_type,
                 target_href, target_fields, source_ip, description, is_failure, is_anonymous, fields,
                 external_id, created_at, component, version)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16::inet, $17,
                     $18, $19, $20, $21, coalesce($22, now()), $23, $24)
             ON CONFLICT (product, external_id) WHERE external_id IS NOT NULL DO NOTHING",
        )
        .bind(event.tenant_id)
        .bind(&event.group_id)
        .bind(&event.group_name)
        .bind(&event.product)
        .bind(&event.action)
        .bind(&event.crud)
        .bind(&event.actor_id)
        .bind(&event.actor_name)
        .bind(&event.actor_href)
        .bind(Json(&event.actor_fields))
        .bind(&event.target_id)
        .bind(&event.target_name)
        .bind(&event.target_type)
        .bind(&event.target_href)
        .bind(Json(&event.target_fields))
        .bind(&event.source_ip)
        .bind(&event.description)
        .bind(event.is_failure)
        .bind(event.is_anonymous)
        .bind(Json(&event.fields))
        .bind(&event.external_id)
        .bind(event.created_at)
        .bind(&event.component)
        .bind(&event.version)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    }
    Ok(stored)
}

/// A stored event, as searches return it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredEvent {
    /// Id (also the order of arrival).
    pub id: i64,
    /// The tenant.
    pub tenant_id: Option<Uuid>,
    /// Group id as recorded.
    pub group_id: Option<String>,
    /// Group name.
    pub group_name: Option<String>,
    /// Reporting product.
    pub product: Option<String>,
    /// What happened.
    pub action: String,
    /// c, r, u or d.
    pub crud: String,
    /// Actor id.
    pub actor_id: Option<String>,
    /// Actor name.
    pub actor_name: Option<String>,
    /// Target id.
    pub target_id: Option<String>,
    /// Target name.
    pub target_name: Option<String>,
    /// Target kind.
    pub target_type: Option<String>,
    /// Source address.
    pub source_ip: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Failed action.
    pub is_failure: bool,
    /// Nobody signed in.
    pub is_anonymous: bool,
    /// Extra fields.
    pub fields: Json<serde_json::Value>,
    /// The product's id for it.
    pub external_id: Option<String>,
    /// When it happened.
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// When it was received.
    pub received_at: chrono::DateTime<chrono::Utc>,
}

/// What a search matches; every field narrows it.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// Only this tenant.
    pub tenant_id: Option<Uuid>,
    /// Exact action, or a prefix when it ends with `*`.
    pub action: Option<String>,
    /// c, r, u or d.
    pub crud: Option<String>,
    /// Actor id.
    pub actor_id: Option<String>,
    /// Target id.
    pub target_id: Option<String>,
    /// Target kind.
    pub target_type: Option<String>,
    /// Reporting product.
    pub product: Option<String>,
    /// Failed or not.
    pub is_failure: Option<bool>,
    /// Created at or after.
    pub from: Option<chrono::DateTime<chrono::Utc>>,
    /// Created before.
    pub to: Option<chrono::DateTime<chrono::Utc>>,
    /// Strictly older than this `(created_at, id)` position (newest first).
    pub before: Option<(chrono::DateTime<chrono::Utc>, i64)>,
    /// At most this many.
    pub limit: i64,
}

/// Events matching `filter`, newest first.
pub async fn search(
    pool: &sqlx::PgPool,
    filter: &EventFilter,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let mut query: sqlx::QueryBuilder<sqlx::Postgres> = sqlx::QueryBuilder::new(
        "SELECT id, tenant_id, group_id, group_name, product, action, crud, actor_id, actor_name,
                target_id, target_name, target_type, host(source_ip) AS source_ip, description,
                is_failure, is_anonymous, fields, external_id, created_at, received_at
         FROM audit_log WHERE true",
    );
    if let Some(tenant) = filter.tenant_id {
        query.push(" AND tenant_id = ").push_bind(tenant);
    }
    match filter.action.as_deref() {
        Some(prefix) if prefix.ends_with('*') => {
            let escaped = prefix
                .trim_end_matches('*')
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            query
                .push(" AND action LIKE ")
                .push_bind(format!("{escaped}%"));
        }
        Some(action) => {
            query.push(" AND action = ").push_bind(action.to_owned());
        }
        None => {}
    }
    for (column, value) in [
        ("crud", &filter.crud),
        ("actor_id", &filter.actor_id),
        ("target_id", &filter.target_id),
        ("target_type", &filter.target_type),
        ("product", &filter.product),
    ] {
        if let Some(value) = value {
            query
                .push(format!(" AND {column} = "))
                .push_bind(value.clone());
        }
    }
    if let Some(failed) = filter.is_failure {
        query.push(" AND is_failure = ").push_bind(failed);
    }
    if let Some(from) = filter.from {
        query.push(" AND created_at >= ").push_bind(from);
    }
    if let Some(to) = filter.to {
        query.push(" AND created_at < ").push_bind(to);
    }
    if let Some((time, id)) = filter.before {
        query
            .push(" AND (created_at, id) < (")
            .push_bind(time)
            .push(", ")
            .push_bind(id)
            .push(")");
    }
    query
        .push(" ORDER BY created_at DESC, id DESC LIMIT ")
        .push_bind(filter.limit);
    query.build_query_as().fetch_all(pool).await
}
