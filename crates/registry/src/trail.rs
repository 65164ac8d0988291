//! The registry's own audit records: every use case writes one, inside its transaction, in
//! the Retraced shape (group = tenant, actor = principal, target = what changed).

use serde_json::{Map, Value};
use storage::PgConnection;
use uuid::Uuid;

use crate::{Actor, RegistryError};

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

/// Whom an audit record names as having acted.
pub(crate) struct Recorded<'a> {
    /// The actor id (`api_key:…`, `oidc:…`, `bootstrap:…`).
    pub actor_id: String,
    /// The actor's address, if known.
    pub source_ip: Option<&'a str>,
}

impl<'a> From<&'a Actor<'_>> for Recorded<'a> {
    fn from(actor: &'a Actor<'_>) -> Self {
        Self {
            actor_id: actor.principal.actor_id(),
            source_ip: actor.source_ip.as_deref(),
        }
    }
}

/// Appends the record of `action` on `target` by `actor` to the caller's transaction.
pub(crate) async fn record(
    conn: &mut PgConnection,
    actor: &Actor<'_>,
    target: Target,
    action: &str,
    crud: char,
    fields: Map<String, Value>,
) -> Result<(), RegistryError> {
    record_as(conn, &actor.into(), target, action, crud, fields).await
}

/// Like [`record`], naming the actor as `recorded` (the bootstrap key has no principal).
pub(crate) async fn record_as(
    conn: &mut PgConnection,
    recorded: &Recorded<'_>,
    target: Target,
    action: &str,
    crud: char,
    fields: Map<String, Value>,
) -> Result<(), RegistryError> {
    audit::record(
        conn,
        audit::RegistryEvent {
            tenant_id: target.tenant_id,
            action: action.to_owned(),
            crud,
            actor_id: Some(recorded.actor_id.clone()),
            source_ip: recorded.source_ip.map(str::to_owned),
            target_id: Some(target.id),
            target_type: Some(target.kind.to_owned()),
            target_name: Some(target.name),
            fields,
            ..audit::RegistryEvent::default()
        },
    )
    .await
    .map_err(RegistryError::from)
}
