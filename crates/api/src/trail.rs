//! The registry's own audit records: every use case writes one, inside its transaction, in
//! the Retraced shape (group = tenant, actor = principal, target = what changed).

use auth::keys::Actor;
use serde_json::{Map, Value};
use storage::PgConnection;
use uuid::Uuid;

use crate::problem::ApiError;

/// What an audited change was made to.
pub(crate) struct Target {
    /// The tenant it belongs to (the Retraced group), if any.
    pub tenant_id: Option<Uuid>,
    /// Its id.
    pub id: String,
    /// Its kind (`tenant`, `project`, `idp`, …).
    pub kind: &'static str,
    /// A name people recognise.
    pub name: String,
}

/// Appends the record of `action` on `target` by `actor` to the caller's transaction.
pub(crate) async fn record(
    conn: &mut PgConnection,
    actor: &Actor<'_>,
    target: Target,
    action: &str,
    crud: char,
    fields: Map<String, Value>,
) -> Result<(), ApiError> {
    audit::record(
        conn,
        audit::RegistryEvent {
            tenant_id: target.tenant_id,
            action: action.to_owned(),
            crud,
            actor_id: Some(actor.principal.actor_id()),
            source_ip: actor.source_ip.clone(),
            target_id: Some(target.id),
            target_type: Some(target.kind.to_owned()),
            target_name: Some(target.name),
            fields,
            ..audit::RegistryEvent::default()
        },
    )
    .await
    .map_err(ApiError::from)
}
