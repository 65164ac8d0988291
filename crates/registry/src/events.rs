//! The event each use case appends in its own transaction, next to its audit record, and the
//! resources as events carry them: the fields the API shows, less what a reader of the
//! tenant's feed may not see (a contact email, a domain's verification token, an IdP's
//! metadata document or client secret).

use chrono::{DateTime, Utc};
use domain::event::EventType;
use serde_json::{Map, Value, json};
use storage::PgConnection;
use storage::api_keys::ApiKeyRecord;
use storage::domains::DomainRow;
use storage::events::{self, NewEvent};
use storage::idps::IdpRow;
use storage::products::TenantProductRow;
use storage::projects::ProjectRow;
use storage::tenants::TenantRow;
use uuid::Uuid;

use crate::RegistryError;

/// Appends event `event_type` about tenant `tenant_id` (none: platform-level) carrying
/// `data`, in the caller's transaction.
pub(crate) async fn emit(
    conn: &mut PgConnection,
    event_type: EventType,
    tenant_id: Option<Uuid>,
    data: Value,
) -> Result<(), RegistryError> {
    let data = match data {
        Value::Object(map) => map,
        other => Map::from_iter([("value".to_owned(), other)]),
    };
    events::append(
        conn,
        &NewEvent {
            event_type,
            tenant_id,
            data,
        },
    )
    .await?;
    Ok(())
}

/// A tenant as events carry it.
pub(crate) fn tenant(row: &TenantRow) -> Value {
    json!({
        "id": row.id,
        "slug": row.slug,
        "name": row.name,
        "status": row.status.to_string(),
        "kind": row.kind.to_string(),
        "plan": row.plan,
        "erp_id": row.erp_id,
        "stripe_id": row.stripe_id,
        "trial_ends_at": row.trial_ends_at,
        "contract_starts_on": row.contract_starts_on,
        "contract_ends_on": row.contract_ends_on,
        "sales_owner": row.sales_owner,
        "oidc_organization": row.oidc_organization,
        "products": row.products,
        "version": row.version,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    })
}

/// The fields of a tenant that differ between `before` and `after`, and their values before;
/// a changed contact email is named, its values never shown.
pub(crate) fn tenant_changes(before: &TenantRow, after: &TenantRow) -> (Vec<String>, Value) {
    let (old, new) = (tenant(before), tenant(after));
    let mut changed = Vec::new();
    let mut previous = Map::new();
    if let (Value::Object(old), Value::Object(new)) = (&old, &new) {
        for (field, value) in old {
            if matches!(field.as_str(), "version" | "updated_at") {
                continue;
            }
            if new.get(field) != Some(value) {
                changed.push(field.clone());
                previous.insert(field.clone(), value.clone());
            }
        }
    }
    if before.contact_email_encrypted != after.contact_email_encrypted {
        changed.push("contact_email".to_owned());
    }
    (changed, Value::Object(previous))
}

/// An API key as events carry it: never its secret or hash.
pub(crate) fn api_key(record: &ApiKeyRecord) -> Value {
    json!({
        "id": record.id,
        "tenant_id": record.tenant_id,
        "name": record.name,
        "prefix": record.prefix,
        "scopes": record.scopes,
        "product": record.product,
        "expires_at": record.expires_at,
        "revoked_at": record.revoked_at,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
    })
}

/// A project as events carry it.
pub(crate) fn project(row: &ProjectRow) -> Value {
    json!({
        "id": row.id,
        "tenant_id": row.tenant_id,
        "slug": row.slug,
        "name": row.name,
        "status": row.status.to_string(),
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    })
}

/// An identity provider as events carry it: no client secret, no metadata document.
pub(crate) fn idp(row: &IdpRow) -> Value {
    json!({
        "id": row.id,
        "tenant_id": row.tenant_id,
        "kind": row.kind.to_string(),
        "name": row.name,
        "enabled": row.enabled,
        "issuer": row.oidc_issuer,
        "client_id": row.oidc_client_id,
        "metadata_url": row.saml_metadata_url,
        "entity_id": row.saml_entity_id,
        "sso_url": row.saml_sso_url,
        "certificate_expires_at": row.saml_certificate_expires_at,
        "created_at": row.created_at,
    })
}

/// A claimed domain as events carry it: no verification token.
pub(crate) fn domain(row: &DomainRow) -> Value {
    json!({
        "id": row.id,
        "tenant_id": row.tenant_id,
        "domain": row.domain,
        "verified_at": row.verified_at,
        "created_at": row.created_at,
    })
}

/// A tenant's subscription to a product as events carry it.
pub(crate) fn subscription(tenant_id: Uuid, row: &TenantProductRow) -> Value {
    json!({
        "tenant_id": tenant_id,
        "product": row.product,
        "enabled": row.enabled,
        "config": row.config.0,
        "feature_overrides": row.feature_overrides.0,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    })
}

/// `tenant.entitlements_changed`: what a product should read again, and why.
pub(crate) fn entitlements_changed(tenant_id: Uuid, cause: &str, product: Option<&str>) -> Value {
    json!({"tenant_id": tenant_id, "cause": cause, "product": product})
}

/// `tenant.status_changed`: the tenant, the move and its reason.
pub(crate) fn status_changed(row: &TenantRow, from: &str, reason: &str) -> Value {
    json!({
        "tenant": tenant(row),
        "from": from,
        "to": row.status.to_string(),
        "reason": reason,
    })
}

/// `tenant.purged`: what is left to say about a tenant that no longer exists.
pub(crate) fn purged(row: &TenantRow, at: DateTime<Utc>) -> Value {
    json!({"id": row.id, "slug": row.slug, "purged_at": at})
}
