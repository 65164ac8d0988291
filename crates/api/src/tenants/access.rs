//! Who may see and write a tenant: the 404 that hides another tenant's rows, the fields a
//! tenant principal may not change, and the early lifecycle check of every write on a
//! tenant's behalf ([`writable_by_path`], [`permit_if_known`]). The check here reads this
//! replica's cache, to refuse before any work is done; the use case checks again on the
//! tenant's row, locked in its transaction, which is what a racing status change cannot
//! slip past.

use domain::{TenantStatus, TenantWrite};
use storage::tenants::TenantRow;
use uuid::Uuid;

use super::parse_id;
use crate::AppState;
use crate::extract::Caller;
use crate::problem::ApiError;

/// 403 naming each field of `body` a tenant principal may not change about its tenant.
pub(super) fn require_editable_by(
    caller: &Caller,
    body: &serde_json::Value,
) -> Result<(), ApiError> {
    if caller.principal.tenant_id.is_none() {
        return Ok(());
    }
    let requested = body
        .as_object()
        .map(|object| object.keys().map(String::as_str).collect::<Vec<_>>())
        .unwrap_or_default();
    let reserved = domain::tenant::reserved_to_platform(requested);
    if reserved.is_empty() {
        return Ok(());
    }
    let pointers: Vec<String> = reserved.iter().map(|field| format!("/{field}")).collect();
    let pointers: Vec<&str> = pointers.iter().map(String::as_str).collect();
    Err(ApiError::forbidden_fields(
        format!(
            "a tenant changes only its {}; {} are the platform's to change",
            domain::tenant::EDITABLE_BY_TENANT.join(", "),
            pointers.join(", ")
        ),
        &pointers,
    ))
}

/// The tenant named by a raw path segment, if it exists and the caller may see it; 404
/// otherwise (another tenant's rows are never revealed).
pub(crate) async fn visible_by_path(
    state: &AppState,
    caller: &Caller,
    raw: &str,
) -> Result<TenantRow, ApiError> {
    visible(state, caller, parse_id(raw)?).await
}

/// The tenant `id` if it exists and the caller may see it; 404 otherwise.
pub(super) async fn visible(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
) -> Result<TenantRow, ApiError> {
    state
        .tenants
        .get(&state.tenant_lookups, id)
        .await?
        .filter(|row| caller.principal.can_access_tenant(Some(row.id)))
        .map(|row| TenantRow::clone(&row))
        .ok_or_else(|| ApiError::not_found("no such tenant"))
}

/// 409 (`tenant-frozen`, `tenant-archived`) unless a tenant in `status` may take `write`.
fn permit(status: TenantStatus, write: TenantWrite) -> Result<(), ApiError> {
    status.permits(write).map_err(ApiError::lifecycle)
}

/// What a write by `caller` decides: a platform principal's is a platform decision, a tenant
/// principal's is the tenant's own.
pub(crate) fn write_by(caller: &Caller) -> TenantWrite {
    if caller.principal.tenant_id.is_none() {
        TenantWrite::Administer
    } else {
        TenantWrite::Operate
    }
}

/// The tenant named by a raw path segment, if the caller may see it (404 otherwise) and its
/// lifecycle, as cached, permits `write` (409 otherwise; the use case checks again).
pub(crate) async fn writable_by_path(
    state: &AppState,
    caller: &Caller,
    raw: &str,
    write: TenantWrite,
) -> Result<TenantRow, ApiError> {
    let row = visible_by_path(state, caller, raw).await?;
    permit(row.status, write)?;
    Ok(row)
}

/// For a use case that names its tenant in the body (API keys): the early lifecycle check
/// when the tenant exists and the caller may see it; the use case itself answers for an
/// unknown one, and checks the lifecycle again on the locked row.
pub(crate) async fn permit_if_known(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
    write: TenantWrite,
) -> Result<(), ApiError> {
    match visible(state, caller, id).await {
        Ok(row) => permit(row.status, write),
        Err(_) => Ok(()),
    }
}

pub(super) fn require_platform(caller: &Caller, what: &str) -> Result<(), ApiError> {
    if caller.principal.tenant_id.is_none() {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!(
            "{what} is for platform principals, not tenant ones"
        )))
    }
}
