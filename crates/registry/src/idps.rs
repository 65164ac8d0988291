//! The identity provider use cases: add, change and remove a tenant's enterprise IdP (OIDC
//! or SAML). OIDC client secrets are sealed with the key ring, bound to their IdP.

use domain::TenantWrite;
use keyring::Keyring;
use serde_json::{Map, Value};
use storage::idps::{self, IdpRow, IdpValues};
use storage::{PgConnection, PgPool};
use uuid::Uuid;

use crate::trail::{self, Target};
use crate::{Actor, RegistryError, events, lifecycle};
use domain::event::EventType;

fn secret_context(id: Uuid) -> String {
    format!("tenant_idp_config.oidc_client_secret:{id}")
}

/// The OIDC client `secret` of IdP `id`, sealed for storage.
pub fn seal_client_secret(
    keyring: &Keyring,
    id: Uuid,
    secret: &str,
) -> Result<Vec<u8>, RegistryError> {
    keyring
        .seal_str(&secret_context(id), secret)
        .map_err(RegistryError::internal)
}

async fn audit(
    conn: &mut PgConnection,
    actor: &Actor<'_>,
    row: &IdpRow,
    action: &str,
    crud: char,
) -> Result<(), RegistryError> {
    let mut fields = Map::new();
    fields.insert("kind".to_owned(), Value::from(row.kind.to_string()));
    let target = Target {
        tenant_id: Some(row.tenant_id),
        id: row.id.to_string(),
        kind: "idp",
        name: row.name.clone(),
    };
    trail::record(conn, actor, target, action, crud, fields).await?;
    // The audit action is the event's name: idp.created, idp.updated, idp.deleted.
    let event_type: EventType = action.parse().map_err(RegistryError::internal)?;
    events::emit(conn, event_type, Some(row.tenant_id), events::idp(row)).await
}

async fn save(
    pool: &PgPool,
    actor: &Actor<'_>,
    tenant_id: Uuid,
    values: &IdpValues,
    action: &str,
    crud: char,
) -> Result<IdpRow, RegistryError> {
    storage::with_retries(move || async move {
        let mut transaction = storage::begin(pool).await?;
        lifecycle::permit(&mut transaction, tenant_id, TenantWrite::Operate).await?;
        let row = idps::save(&mut transaction, tenant_id, values).await?;
        audit(&mut transaction, actor, &row, action, crud).await?;
        storage::commit(transaction).await?;
        Ok(row)
    })
    .await
}

/// Adds the identity provider `values` (validated, its metadata parsed, its secret sealed)
/// to tenant `tenant_id`.
pub async fn create(
    pool: &PgPool,
    actor: &Actor<'_>,
    tenant_id: Uuid,
    values: &IdpValues,
) -> Result<IdpRow, RegistryError> {
    save(pool, actor, tenant_id, values, "idp.created", 'c').await
}

/// Replaces every setting of tenant `tenant_id`'s identity provider `values.id`.
pub async fn update(
    pool: &PgPool,
    actor: &Actor<'_>,
    tenant_id: Uuid,
    values: &IdpValues,
) -> Result<IdpRow, RegistryError> {
    save(pool, actor, tenant_id, values, "idp.updated", 'u').await
}

/// Removes tenant `tenant_id`'s identity provider `id`.
pub async fn delete(
    pool: &PgPool,
    actor: &Actor<'_>,
    tenant_id: Uuid,
    id: Uuid,
) -> Result<(), RegistryError> {
    storage::with_retries(move || async move {
        let mut transaction = storage::begin(pool).await?;
        lifecycle::permit(&mut transaction, tenant_id, TenantWrite::Operate).await?;
        let removed = idps::delete(&mut transaction, tenant_id, id)
            .await?
            .ok_or_else(|| RegistryError::not_found("no such identity provider"))?;
        audit(&mut transaction, actor, &removed, "idp.deleted", 'd').await?;
        storage::commit(transaction).await?;
        Ok(())
    })
    .await
}
