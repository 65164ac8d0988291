//! The `tenants` table and its status history (former slugs and OIDC organizations:
//! [`crate::tenant_names`]).

use chrono::{DateTime, NaiveDate, Utc};
use domain::{Slug, TenantKind, TenantStatus};
use sqlx::{FromRow, PgConnection, PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::tenant_names::OidcOrganization;

/// The LISTEN/NOTIFY channel on which a trigger announces every committed change to a
/// tenant or its products (V8).
pub const CHANGES_CHANNEL: &str = "tenants_changed";

/// What a [`CHANGES_CHANNEL`] notification names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantChange {
    /// The tenant.
    pub id: Uuid,
    /// Its slugs before and after the change (none when only its products changed).
    pub slugs: Vec<String>,
}

impl TenantChange {
    /// Reads a notification's payload; `None` when it is not one of ours.
    pub fn parse(payload: &str) -> Option<Self> {
        #[derive(serde::Deserialize)]
        struct Payload {
            id: Uuid,
            slugs: Vec<Option<String>>,
        }
        let payload: Payload = serde_json::from_str(payload).ok()?;
        Some(Self {
            id: payload.id,
            slugs: payload.slugs.into_iter().flatten().collect(),
        })
    }
}

/// Where one product's provisioning of a tenant stands, as a tenant's views show it (the
/// whole run: [`crate::provisioning::RunRow`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct ProvisioningSummary {
    /// The product.
    pub product: String,
    /// `provision`, `deprovision` or `migrate`.
    pub goal: String,
    /// `pending`, `running`, `ready`, `failed`, `deprovisioning` or `deprovisioned`.
    pub state: String,
    /// The index of the step it is on.
    pub step: i32,
    /// The kinds of the plan's steps, in order (to name the step it is on).
    pub kinds: Vec<String>,
    /// Failed attempts of this run.
    pub attempts: i32,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
}

/// A tenant as stored, with the ids of its enabled products.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantRow {
    /// Id.
    pub id: Uuid,
    /// Current slug.
    pub slug: String,
    /// Display name.
    pub name: String,
    /// Lifecycle status.
    pub status: TenantStatus,
    /// Customer or demo.
    pub kind: TenantKind,
    /// Commercial plan.
    pub plan: String,
    /// ERP customer id.
    pub erp_id: Option<String>,
    /// Stripe customer id.
    pub stripe_id: Option<String>,
    /// End of the trial.
    pub trial_ends_at: Option<DateTime<Utc>>,
    /// First day of the contract.
    pub contract_starts_on: Option<NaiveDate>,
    /// Last day of the contract.
    pub contract_ends_on: Option<NaiveDate>,
    /// Who sells to this tenant.
    pub sales_owner: Option<String>,
    /// The contact email, encrypted (see the keyring crate).
    pub contact_email_encrypted: Option<Vec<u8>>,
    /// The OIDC issuer whose organization's users belong to this tenant.
    pub oidc_issuer: Option<String>,
    /// That issuer's organization (its id or alias, as tokens name it).
    pub oidc_organization: Option<String>,
    /// Bumped by every update: the ETag.
    pub version: i64,
    /// Enabled products, sorted.
    pub products: Vec<String>,
    /// Each product's provisioning, by product (products with a plan only).
    pub provisioning: Vec<ProvisioningSummary>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

#[derive(FromRow)]
struct RawTenant {
    id: Uuid,
    slug: String,
    name: String,
    status: String,
    kind: String,
    plan: String,
    erp_id: Option<String>,
    stripe_id: Option<String>,
    trial_ends_at: Option<DateTime<Utc>>,
    contract_starts_on: Option<NaiveDate>,
    contract_ends_on: Option<NaiveDate>,
    sales_owner: Option<String>,
    contact_email_encrypted: Option<Vec<u8>>,
    oidc_issuer: Option<String>,
    oidc_organization: Option<String>,
    version: i64,
    products: Vec<String>,
    provisioning: sqlx::types::Json<Vec<ProvisioningSummary>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<RawTenant> for TenantRow {
    type Error = sqlx::Error;

    fn try_from(raw: RawTenant) -> Result<Self, Self::Error> {
        let decode = |error: domain::UnknownLabel| sqlx::Error::Decode(Box::new(error));
        Ok(Self {
            id: raw.id,
            slug: raw.slug,
            name: raw.name,
            status: raw.status.parse().map_err(decode)?,
            kind: raw.kind.parse().map_err(decode)?,
            plan: raw.plan,
            erp_id: raw.erp_id,
            stripe_id: raw.stripe_id,
            trial_ends_at: raw.trial_ends_at,
            contract_starts_on: raw.contract_starts_on,
            contract_ends_on: raw.contract_ends_on,
            sales_owner: raw.sales_owner,
            contact_email_encrypted: raw.contact_email_encrypted,
            oidc_issuer: raw.oidc_issuer,
            oidc_organization: raw.oidc_organization,
            version: raw.version,
            products: raw.products,
            provisioning: raw.provisioning.0,
            created_at: raw.created_at,
            updated_at: raw.updated_at,
        })
    }
}

/// A tenant's columns as [`RawTenant`] reads them, over `tenants t`.
macro_rules! tenant_columns {
    () => {
        "t.id, t.slug, t.name, t.status::text AS status, t.kind::text AS kind, t.plan,
       t.erp_id, t.stripe_id, t.trial_ends_at, t.contract_starts_on, t.contract_ends_on,
       t.sales_owner, t.contact_email_encrypted, t.oidc_issuer, t.oidc_organization, t.version,
       ARRAY(SELECT p.product FROM tenant_products p
             WHERE p.tenant_id = t.id AND p.enabled ORDER BY p.product) AS products,
       COALESCE((SELECT json_agg(json_build_object(
                    'product', r.product_id, 'goal', r.goal, 'state', r.state, 'step', r.step,
                    'kinds', jsonb_path_query_array(r.plan, '$.steps[*].kind'),
                    'attempts', r.attempts, 'last_error', r.last_error) ORDER BY r.product_id)
                 FROM tenant_provisioning r WHERE r.tenant_id = t.id), '[]') AS provisioning,
       t.created_at, t.updated_at"
    };
}

const SELECT: &str = concat!("SELECT ", tenant_columns!(), " FROM tenants t");

fn rows(raw: Vec<RawTenant>) -> Result<Vec<TenantRow>, sqlx::Error> {
    raw.into_iter().map(TenantRow::try_from).collect()
}

/// A tenant to insert, every field already validated.
#[derive(Debug, Clone)]
pub struct NewTenant {
    /// Id, chosen by the caller (the contact email's encryption is bound to it).
    pub id: Uuid,
    /// Slug.
    pub slug: Slug,
    /// Display name.
    pub name: String,
    /// Initial status.
    pub status: TenantStatus,
    /// Customer or demo.
    pub kind: TenantKind,
    /// Plan.
    pub plan: String,
    /// ERP id.
    pub erp_id: Option<String>,
    /// Stripe id.
    pub stripe_id: Option<String>,
    /// End of the trial.
    pub trial_ends_at: Option<DateTime<Utc>>,
    /// Contract start.
    pub contract_starts_on: Option<NaiveDate>,
    /// Contract end.
    pub contract_ends_on: Option<NaiveDate>,
    /// Sales owner.
    pub sales_owner: Option<String>,
    /// Encrypted contact email.
    pub contact_email_encrypted: Option<Vec<u8>>,
    /// The OIDC issuer and organization whose users belong to the tenant.
    pub oidc_organization: Option<OidcOrganization>,
}

impl NewTenant {
    /// A customer tenant on `plan` in trial, with nothing else set: for tests and fixtures.
    pub fn minimal(slug: Slug, name: &str, plan: &str) -> Self {
        Self {
            id: Uuid::new_v4(),
            slug,
            name: name.to_owned(),
            status: TenantStatus::Trial,
            kind: TenantKind::Customer,
            plan: plan.to_owned(),
            erp_id: None,
            stripe_id: None,
            trial_ends_at: None,
            contract_starts_on: None,
            contract_ends_on: None,
            sales_owner: None,
            contact_email_encrypted: None,
            oidc_organization: None,
        }
    }
}

/// Inserts a tenant (after [`crate::tenant_names::reserve`], which a fixture may skip).
pub async fn insert(conn: &mut PgConnection, tenant: &NewTenant) -> Result<TenantRow, sqlx::Error> {
    let (oidc_issuer, oidc_organization) = tenant
        .oidc_organization
        .as_ref()
        .map(|mapping| (mapping.issuer.as_str(), mapping.organization.as_str()))
        .unzip();
    sqlx::query(
        "INSERT INTO tenants (id, slug, name, status, kind, plan, erp_id, stripe_id, trial_ends_at,
                              contract_starts_on, contract_ends_on, sales_owner, contact_email_encrypted,
                              oidc_issuer, oidc_organization)
         VALUES ($1, $2, $3, $4::tenant_status, $5::tenant_kind, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
    )
    .bind(tenant.id)
    .bind(tenant.slug.as_str())
    .bind(&tenant.name)
    .bind(tenant.status.as_str())
    .bind(tenant.kind.as_str())
    .bind(&tenant.plan)
    .bind(&tenant.erp_id)
    .bind(&tenant.stripe_id)
    .bind(tenant.trial_ends_at)
    .bind(tenant.contract_starts_on)
    .bind(tenant.contract_ends_on)
    .bind(&tenant.sales_owner)
    .bind(&tenant.contact_email_encrypted)
    .bind(oidc_issuer)
    .bind(oidc_organization)
    .execute(&mut *conn)
    .await?;
    get_on(conn, tenant.id)
        .await?
        .ok_or_else(|| sqlx::Error::RowNotFound)
}

/// One tenant by id, read on `conn` (a transaction sees its own changes).
pub async fn get_on(conn: &mut PgConnection, id: Uuid) -> Result<Option<TenantRow>, sqlx::Error> {
    sqlx::query_as::<_, RawTenant>(&format!("{SELECT} WHERE t.id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await?
        .map(TenantRow::try_from)
        .transpose()
}

/// One tenant by id.
pub async fn get(pool: &PgPool, id: Uuid) -> Result<Option<TenantRow>, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    get_on(&mut conn, id).await
}

/// How a slug lookup matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlugMatch {
    /// The tenant's current slug.
    Current(TenantRow),
    /// A slug the tenant used to have; the row carries the current one.
    Former(TenantRow),
}

/// The id of the tenant with `slug`, if there is one.
pub async fn id_by_slug(pool: &PgPool, slug: &str) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar("SELECT id FROM tenants WHERE slug = $1")
        .bind(slug)
        .fetch_optional(pool)
        .await
}

/// Whether a tenant with `id` exists.
pub async fn exists(pool: &PgPool, id: Uuid) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM tenants WHERE id = $1)")
        .bind(id)
        .fetch_one(pool)
        .await
}

/// Which tenants a listing returns.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Only these statuses (any, when empty).
    pub statuses: Vec<TenantStatus>,
    /// Only this kind.
    pub kind: Option<TenantKind>,
    /// Only this plan.
    pub plan: Option<String>,
    /// Slug or name contains this, case-insensitively.
    pub query: Option<String>,
    /// Created at or after.
    pub created_after: Option<DateTime<Utc>>,
    /// Created before.
    pub created_before: Option<DateTime<Utc>>,
    /// Only this tenant (a tenant principal's view).
    pub only: Option<Uuid>,
    /// Strictly after this `(created_at, id)` position.
    pub after: Option<(DateTime<Utc>, Uuid)>,
    /// At most this many.
    pub limit: i64,
}

fn escape_like(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

/// A page of tenants in `(created_at, id)` order.
pub async fn list(pool: &PgPool, filter: &ListFilter) -> Result<Vec<TenantRow>, sqlx::Error> {
    let mut query: QueryBuilder<Postgres> = QueryBuilder::new(SELECT);
    query.push(" WHERE true");
    if !filter.statuses.is_empty() {
        let labels: Vec<&str> = filter
            .statuses
            .iter()
            .map(|status| status.as_str())
            .collect();
        query
            .push(" AND t.status::text = ANY(")
            .push_bind(labels)
            .push(")");
    }
    if let Some(kind) = filter.kind {
        query.push(" AND t.kind::text = ").push_bind(kind.as_str());
    }
    if let Some(plan) = &filter.plan {
        query.push(" AND t.plan = ").push_bind(plan.clone());
    }
    if let Some(text) = &filter.query {
        let pattern = format!("%{}%", escape_like(text));
        query
            .push(" AND (t.slug ILIKE ")
            .push_bind(pattern.clone())
            .push(" OR t.name ILIKE ")
            .push_bind(pattern)
            .push(")");
    }
    if let Some(after) = filter.created_after {
        query.push(" AND t.created_at >= ").push_bind(after);
    }
    if let Some(before) = filter.created_before {
        query.push(" AND t.created_at < ").push_bind(before);
    }
    if let Some(only) = filter.only {
        query.push(" AND t.id = ").push_bind(only);
    }
    if let Some((time, id)) = filter.after {
        query
            .push(" AND (t.created_at, t.id) > (")
            .push_bind(time)
            .push(", ")
            .push_bind(id)
            .push(")");
    }
    query
        .push(" ORDER BY t.created_at, t.id LIMIT ")
        .push_bind(filter.limit);
    rows(query.build_query_as::<RawTenant>().fetch_all(pool).await?)
}

mod changes;
mod lookups;
pub mod trials;
pub use changes::{
    TenantChanges, UpdateOutcome, delete, lock, record_transition, share_lock, update,
};
pub use lookups::TenantLookups;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_notification_names_the_tenant_and_its_slugs() {
        let id = Uuid::new_v4();
        let change = TenantChange::parse(&format!(r#"{{"id":"{id}","slugs":[null,"acme"]}}"#));
        assert_eq!(
            change,
            Some(TenantChange {
                id,
                slugs: vec!["acme".to_owned()]
            })
        );
        assert_eq!(TenantChange::parse("not json"), None);
        assert_eq!(TenantChange::parse(r#"{"id":"nope","slugs":[]}"#), None);
    }
}
