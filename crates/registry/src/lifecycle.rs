//! The lifecycle gate every write on a tenant's behalf passes, inside the write's own
//! transaction: the tenant's row is key-share locked and its status read there, so a write
//! racing a freeze either commits before the freeze can, or waits for it and is refused.
//! (A check against a cached or earlier read would let the write land after the freeze.)

use domain::TenantWrite;
use storage::PgConnection;
use storage::tenants::TenantRow;
use uuid::Uuid;

use crate::RegistryError;

/// Tenant `id` if its lifecycle permits `write` (a lifecycle refusal otherwise), its row
/// held against status changes until the transaction ends; `None` when there is no such
/// tenant, for the caller to answer in its own words.
pub(crate) async fn permit_if_exists(
    conn: &mut PgConnection,
    id: Uuid,
    write: TenantWrite,
) -> Result<Option<TenantRow>, RegistryError> {
    let Some(tenant) = storage::tenants::share_lock(conn, id).await? else {
        return Ok(None);
    };
    tenant.status.permits(write)?;
    Ok(Some(tenant))
}

/// [`permit_if_exists`] for a tenant the caller has found: not found when it has gone since.
pub(crate) async fn permit(
    conn: &mut PgConnection,
    id: Uuid,
    write: TenantWrite,
) -> Result<TenantRow, RegistryError> {
    permit_if_exists(conn, id, write)
        .await?
        .ok_or_else(|| RegistryError::not_found("no such tenant"))
}
