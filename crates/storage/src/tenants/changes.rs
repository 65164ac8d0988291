//! Changes to a tenant row: the locks a change takes (`FOR UPDATE`, `FOR KEY SHARE`), the
//! update of its editable fields, its status moves and its deletion.

use chrono::{DateTime, NaiveDate, Utc};
use domain::{Slug, TenantKind, TenantStatus};
use sqlx::{PgConnection, Postgres, QueryBuilder};
use uuid::Uuid;

use super::{RawTenant, SELECT, TenantRow, get_on};
use crate::tenant_names::{OidcOrganization, SlugMove};

/// A change to a tenant's editable fields: `None` leaves a field alone, `Some(None)` clears
/// a nullable one.
#[derive(Debug, Clone, Default)]
pub struct TenantChanges {
    /// New slug.
    pub slug: Option<Slug>,
    /// New name.
    pub name: Option<String>,
    /// New plan.
    pub plan: Option<String>,
    /// New kind.
    pub kind: Option<TenantKind>,
    /// New trial end.
    pub trial_ends_at: Option<Option<DateTime<Utc>>>,
    /// New ERP id.
    pub erp_id: Option<Option<String>>,
    /// New Stripe id.
    pub stripe_id: Option<Option<String>>,
    /// New contract start.
    pub contract_starts_on: Option<Option<NaiveDate>>,
    /// New contract end.
    pub contract_ends_on: Option<Option<NaiveDate>>,
    /// New sales owner.
    pub sales_owner: Option<Option<String>>,
    /// New encrypted contact email.
    pub contact_email_encrypted: Option<Option<Vec<u8>>>,
    /// New OIDC organization mapping.
    pub oidc_organization: Option<Option<OidcOrganization>>,
}

impl TenantChanges {
    /// The names of the fields this changes, for audit records.
    pub fn field_names(&self) -> Vec<&'static str> {
        [
            ("slug", self.slug.is_some()),
            ("name", self.name.is_some()),
            ("plan", self.plan.is_some()),
            ("kind", self.kind.is_some()),
            ("trial_ends_at", self.trial_ends_at.is_some()),
            ("erp_id", self.erp_id.is_some()),
            ("stripe_id", self.stripe_id.is_some()),
            ("contract_starts_on", self.contract_starts_on.is_some()),
            ("contract_ends_on", self.contract_ends_on.is_some()),
            ("sales_owner", self.sales_owner.is_some()),
            ("contact_email", self.contact_email_encrypted.is_some()),
            ("oidc_organization", self.oidc_organization.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, changed)| changed.then_some(name))
        .collect()
    }
}

/// What an update found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdateOutcome {
    /// Changed; the row after the change.
    Updated(Box<TenantRow>),
    /// No such tenant.
    NotFound,
    /// The tenant is at another version than the caller's `If-Match`.
    VersionMismatch {
        /// The version the tenant is at.
        current: i64,
    },
    /// The new slug is another tenant's, now or formerly.
    SlugUnavailable,
    /// The tenant would hold more former slugs than it may.
    TooManyFormerSlugs(domain::tenant::TooManyFormerSlugs),
}

/// Locks a tenant's row for the rest of the transaction and returns it.
pub async fn lock(conn: &mut PgConnection, id: Uuid) -> Result<Option<TenantRow>, sqlx::Error> {
    sqlx::query_as::<_, RawTenant>(&format!("{SELECT} WHERE t.id = $1 FOR UPDATE OF t"))
        .bind(id)
        .fetch_optional(conn)
        .await?
        .map(TenantRow::try_from)
        .transpose()
}

/// Tenant `id`, its row key-share locked until the caller's transaction ends: a status
/// change (which locks the row `FOR UPDATE`) waits for the caller's commit, and the caller
/// waits for one in flight and reads the row it committed.
pub async fn share_lock(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<TenantRow>, sqlx::Error> {
    sqlx::query_as::<_, RawTenant>(&format!("{SELECT} WHERE t.id = $1 FOR KEY SHARE OF t"))
        .bind(id)
        .fetch_optional(conn)
        .await?
        .map(TenantRow::try_from)
        .transpose()
}

/// Applies `changes` if the tenant is at `expected_version` (any version when `None`) and a
/// new slug is free for it; a slug change keeps the old slug as a former one, and taking
/// back a former slug of its own removes it from the history.
pub async fn update(
    conn: &mut PgConnection,
    id: Uuid,
    expected_version: Option<i64>,
    changes: &TenantChanges,
) -> Result<UpdateOutcome, sqlx::Error> {
    let Some(current) = lock(conn, id).await? else {
        return Ok(UpdateOutcome::NotFound);
    };
    if expected_version.is_some_and(|expected| expected != current.version) {
        return Ok(UpdateOutcome::VersionMismatch {
            current: current.version,
        });
    }
    if let Some(slug) = changes
        .slug
        .as_ref()
        .filter(|slug| slug.as_str() != current.slug)
    {
        match crate::tenant_names::move_slug(conn, id, &current.slug, slug.as_str()).await? {
            SlugMove::Moved => {}
            SlugMove::Unavailable => return Ok(UpdateOutcome::SlugUnavailable),
            SlugMove::Refused(refusal) => return Ok(UpdateOutcome::TooManyFormerSlugs(refusal)),
        }
    }
    let mut query: QueryBuilder<Postgres> =
        QueryBuilder::new("UPDATE tenants SET updated_at = now()");
    if let Some(slug) = &changes.slug {
        query.push(", slug = ").push_bind(slug.as_str().to_owned());
    }
    if let Some(name) = &changes.name {
        query.push(", name = ").push_bind(name.clone());
    }
    if let Some(plan) = &changes.plan {
        query.push(", plan = ").push_bind(plan.clone());
    }
    if let Some(kind) = changes.kind {
        query
            .push(", kind = ")
            .push_bind(kind.as_str())
            .push("::tenant_kind");
    }
    if let Some(value) = changes.trial_ends_at {
        query.push(", trial_ends_at = ").push_bind(value);
    }
    if let Some(value) = &changes.erp_id {
        query.push(", erp_id = ").push_bind(value.clone());
    }
    if let Some(value) = &changes.stripe_id {
        query.push(", stripe_id = ").push_bind(value.clone());
    }
    if let Some(value) = changes.contract_starts_on {
        query.push(", contract_starts_on = ").push_bind(value);
    }
    if let Some(value) = changes.contract_ends_on {
        query.push(", contract_ends_on = ").push_bind(value);
    }
    if let Some(value) = &changes.sales_owner {
        query.push(", sales_owner = ").push_bind(value.clone());
    }
    if let Some(value) = &changes.contact_email_encrypted {
        query
            .push(", contact_email_encrypted = ")
            .push_bind(value.clone());
    }
    if let Some(value) = &changes.oidc_organization {
        let (issuer, organization) = value
            .clone()
            .map(|mapping| (mapping.issuer, mapping.organization))
            .unzip();
        query
            .push(", oidc_issuer = ")
            .push_bind(issuer)
            .push(", oidc_organization = ")
            .push_bind(organization);
    }
    query.push(" WHERE id = ").push_bind(id);
    query.build().execute(&mut *conn).await?;
    Ok(get_on(conn, id)
        .await?
        .map_or(UpdateOutcome::NotFound, |row| {
            UpdateOutcome::Updated(Box::new(row))
        }))
}

/// Sets a locked tenant's status and records the move (who, why).
pub async fn record_transition(
    conn: &mut PgConnection,
    id: Uuid,
    from: TenantStatus,
    to: TenantStatus,
    reason: &str,
    actor_id: &str,
) -> Result<TenantRow, sqlx::Error> {
    sqlx::query("UPDATE tenants SET status = $2::tenant_status WHERE id = $1")
        .bind(id)
        .bind(to.as_str())
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "INSERT INTO tenant_status_history (tenant_id, from_status, to_status, reason, actor_id)
         VALUES ($1, $2::tenant_status, $3::tenant_status, $4, $5)",
    )
    .bind(id)
    .bind(from.as_str())
    .bind(to.as_str())
    .bind(reason)
    .bind(actor_id)
    .execute(&mut *conn)
    .await?;
    get_on(conn, id).await?.ok_or(sqlx::Error::RowNotFound)
}

/// Deletes a tenant and, by cascade, everything it owns (its audit rows stay, unlinked).
pub async fn delete(conn: &mut PgConnection, id: Uuid) -> Result<bool, sqlx::Error> {
    let deleted = sqlx::query("DELETE FROM tenants WHERE id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?
        .rows_affected()
        == 1;
    Ok(deleted)
}
