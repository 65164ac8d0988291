//! Events the runner itself emits, in the transaction of the change they describe.

use chrono::{DateTime, Utc};
use domain::event::EventType;
use sqlx::PgConnection;
use storage::events::{self, NewEvent};
use uuid::Uuid;

/// Appends `webhook.endpoint_disabled` for endpoint `endpoint` of tenant `tenant_id` (none
/// for a platform endpoint), disabled at `at` for `reason`.
pub async fn endpoint_disabled(
    conn: &mut PgConnection,
    endpoint: Uuid,
    tenant_id: Option<Uuid>,
    reason: &str,
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let data: serde_json::Map<String, serde_json::Value> = [
        ("id", serde_json::json!(endpoint)),
        ("tenant_id", serde_json::json!(tenant_id)),
        ("reason", serde_json::json!(reason)),
        ("disabled_at", serde_json::json!(at)),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value))
    .collect();
    events::append(
        conn,
        &NewEvent {
            event_type: EventType::WebhookEndpointDisabled,
            tenant_id,
            data,
        },
    )
    .await
    .map(drop)
}
