//! Requests to the tenants API, read into validated values with every problem reported at once.

use chrono::{DateTime, Duration, Utc};
use domain::{Slug, TenantKind, TenantStatus, tenant};
use registry::tenants::{CreateTenant, Patch, Transition};
use serde_json::Value;
use storage::tenant_names::OidcOrganization;
use storage::tenants::{ListFilter, TenantChanges};
use uuid::Uuid;

use crate::fields::{self, Fields};
use crate::pagination::{self, DEFAULT_LIMIT, MAX_LIMIT};
use crate::problem::{ApiError, FieldError};

fn slug_rule(text: &str) -> Result<Slug, String> {
    Slug::parse(text).map_err(|error| error.to_string())
}

/// The rule for `oidc_organization`: an organization of `issuer`, the configured one.
fn oidc_organization_rule(
    issuer: Option<&str>,
) -> impl FnOnce(&str) -> Result<OidcOrganization, String> + '_ {
    move |text| {
        let issuer = issuer.ok_or_else(|| {
            "no OIDC issuer is configured (KEYCLOAK_ISSUER), so no organization can be mapped"
                .to_owned()
        })?;
        Ok(OidcOrganization {
            issuer: issuer.to_owned(),
            organization: tenant::oidc_organization(text)?,
        })
    }
}

/// Reads a create body; `trial_days` sets the default trial end, `issuer` is the OIDC issuer
/// whose organization `oidc_organization` names.
pub fn create(
    body: Value,
    trial_days: i64,
    now: DateTime<Utc>,
    issuer: Option<&str>,
) -> Result<CreateTenant, ApiError> {
    let mut fields = Fields::new(body, tenant::FIELDS)?;
    let slug = fields.required("slug", slug_rule);
    let name = fields.required("name", tenant::name);
    let plan = fields.required("plan", tenant::plan);
    let kind = fields.optional_not_null("kind", fields::label::<TenantKind>);
    let status = fields
        .optional_not_null("status", fields::label::<TenantStatus>)
        .unwrap_or(TenantStatus::Trial);
    if !tenant::CREATABLE_STATUSES.contains(&status) {
        fields.error(
            "status",
            "a tenant is created demo, trial or active; other statuses are reached by transitions",
        );
    }
    let trial_ends_at = fields
        .optional("trial_ends_at", fields::timestamp)
        .flatten();
    if let Some(Err(detail)) = trial_ends_at.map(|at| tenant::trial_end(status, at, now)) {
        fields.error("trial_ends_at", detail);
    }
    let erp_id = fields.optional("erp_id", tenant::short_text).flatten();
    let stripe_id = fields.optional("stripe_id", tenant::short_text).flatten();
    let contract_starts_on = fields
        .optional("contract_starts_on", fields::date)
        .flatten();
    let contract_ends_on = fields.optional("contract_ends_on", fields::date).flatten();
    if let (Some(start), Some(end)) = (contract_starts_on, contract_ends_on)
        && end < start
    {
        fields.error("contract_ends_on", "must not be before contract_starts_on");
    }
    let sales_owner = fields.optional("sales_owner", tenant::short_text).flatten();
    let contact_email = fields.optional("contact_email", tenant::email).flatten();
    let oidc_organization = fields
        .optional("oidc_organization", oidc_organization_rule(issuer))
        .flatten();
    fields.finish()?;
    let (Some(slug), Some(name), Some(plan)) = (slug, name, plan) else {
        return Err(ApiError::internal(
            "required fields passed validation unset",
        ));
    };
    Ok(CreateTenant {
        tenant: storage::tenants::NewTenant {
            id: Uuid::new_v4(),
            slug,
            name,
            status,
            kind: kind.unwrap_or(TenantKind::Customer),
            plan,
            erp_id,
            stripe_id,
            trial_ends_at: match status {
                TenantStatus::Trial => {
                    Some(trial_ends_at.unwrap_or(now + Duration::days(trial_days)))
                }
                _ => None,
            },
            contract_starts_on,
            contract_ends_on,
            sales_owner,
            contact_email_encrypted: None,
            oidc_organization,
        },
        contact_email,
        products: Vec::new(),
    })
}

/// Reads a merge patch of the editable fields (`status` moves only by transitions); `issuer`
/// is the OIDC issuer whose organization `oidc_organization` names.
pub fn patch(body: Value, issuer: Option<&str>) -> Result<Patch, ApiError> {
    let mut fields = Fields::new(body, tenant::FIELDS)?;
    if fields.has("status") {
        fields.error(
            "status",
            "status changes through POST /v1/tenants/{id}/transitions",
        );
    }
    let changes = TenantChanges {
        slug: fields.optional_not_null("slug", slug_rule),
        name: fields.optional_not_null("name", tenant::name),
        plan: fields.optional_not_null("plan", tenant::plan),
        kind: fields.optional_not_null("kind", fields::label::<TenantKind>),
        trial_ends_at: fields.optional("trial_ends_at", fields::timestamp),
        erp_id: fields.optional("erp_id", tenant::short_text),
        stripe_id: fields.optional("stripe_id", tenant::short_text),
        contract_starts_on: fields.optional("contract_starts_on", fields::date),
        contract_ends_on: fields.optional("contract_ends_on", fields::date),
        sales_owner: fields.optional("sales_owner", tenant::short_text),
        contact_email_encrypted: None,
        oidc_organization: fields.optional("oidc_organization", oidc_organization_rule(issuer)),
    };
    let contact_email = fields.optional("contact_email", tenant::email);
    fields.finish()?;
    Ok(Patch {
        changes,
        contact_email,
    })
}

/// Reads `{to, reason}`.
pub fn transition(body: Value) -> Result<Transition, ApiError> {
    let mut fields = Fields::new(body, &["to", "reason"])?;
    let to = fields.required("to", fields::label::<TenantStatus>);
    let reason = fields.required("reason", tenant::transition_reason);
    fields.finish()?;
    match (to, reason) {
        (Some(to), Some(reason)) => Ok(Transition { to, reason }),
        _ => Err(ApiError::internal(
            "required fields passed validation unset",
        )),
    }
}

/// Reads the list query (`status` may repeat); every bad parameter is reported at once.
pub fn list(query: Option<&str>) -> Result<ListFilter, ApiError> {
    let mut filter = ListFilter {
        limit: DEFAULT_LIMIT,
        ..ListFilter::default()
    };
    let mut errors = Vec::new();
    let mut problem = |name: &str, detail: String| {
        errors.push(FieldError {
            pointer: format!("/{name}"),
            detail,
        });
    };
    for (name, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match name.as_ref() {
            "status" => match fields::label::<TenantStatus>(&value) {
                Ok(status) => filter.statuses.push(status),
                Err(detail) => problem("status", detail),
            },
            "kind" => match fields::label::<TenantKind>(&value) {
                Ok(kind) => filter.kind = Some(kind),
                Err(detail) => problem("kind", detail),
            },
            "plan" => filter.plan = Some(value.into_owned()),
            "q" => {
                if value.chars().count() > 200 {
                    problem("q", "must be at most 200 characters".to_owned());
                } else if !value.is_empty() {
                    filter.query = Some(value.into_owned());
                }
            }
            "created_after" => match fields::timestamp(&value) {
                Ok(at) => filter.created_after = Some(at),
                Err(detail) => problem("created_after", detail),
            },
            "created_before" => match fields::timestamp(&value) {
                Ok(at) => filter.created_before = Some(at),
                Err(detail) => problem("created_before", detail),
            },
            "limit" => match value.parse::<i64>() {
                Ok(limit) if (1..=MAX_LIMIT).contains(&limit) => filter.limit = limit,
                _ => problem(
                    "limit",
                    format!("must be a whole number from 1 to {MAX_LIMIT}"),
                ),
            },
            "cursor" => match pagination::decode(&value) {
                Ok(position) => filter.after = Some(position),
                Err(_) => problem("cursor", "not a cursor this service issued".to_owned()),
            },
            other => problem(other, "unknown query parameter".to_owned()),
        }
    }
    if errors.is_empty() {
        Ok(filter)
    } else {
        Err(ApiError::invalid(errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_trial_tenant_gets_the_default_trial_end() {
        let now = Utc::now();
        let created = create(
            json!({"slug": "acme", "name": "Acme", "plan": "pro"}),
            14,
            now,
            None,
        )
        .expect("valid");
        assert_eq!(created.tenant.status, TenantStatus::Trial);
        assert_eq!(created.tenant.trial_ends_at, Some(now + Duration::days(14)));
        let active = create(
            json!({"slug": "acme", "name": "Acme", "plan": "pro", "status": "active"}),
            14,
            now,
            None,
        )
        .expect("valid");
        assert_eq!(active.tenant.trial_ends_at, None);
    }

    #[test]
    fn every_invalid_create_field_is_reported() {
        let error = create(
            json!({"slug": "Bad_Slug", "name": " ", "status": "frozen", "contract_starts_on": "2026-02-01",
                   "contract_ends_on": "2026-01-01", "contact_email": "nope", "colour": "red"}),
            14,
            Utc::now(),
            None,
        )
        .err()
        .expect("invalid");
        assert_eq!(
            error.pointers(),
            vec![
                "/colour",
                "/slug",
                "/name",
                "/plan",
                "/status",
                "/contract_ends_on",
                "/contact_email"
            ]
        );
    }

    #[test]
    fn a_patch_cannot_change_status_or_clear_required_fields() {
        let error = patch(
            json!({"status": "active", "name": null, "erp_id": null}),
            None,
        )
        .err()
        .expect("invalid");
        assert_eq!(error.pointers(), vec!["/status", "/name"]);
        let Ok(cleared) = patch(json!({"erp_id": null}), None) else {
            panic!("clearing an optional field is valid");
        };
        assert_eq!(cleared.changes.erp_id, Some(None));
    }

    #[test]
    fn list_parameters_are_validated_together() {
        let filter = list(Some("status=trial&status=active&q=ac&limit=10")).expect("valid");
        assert_eq!(
            filter.statuses,
            vec![TenantStatus::Trial, TenantStatus::Active]
        );
        assert_eq!(filter.limit, 10);
        let error = list(Some("status=paused&limit=500&sort=name")).expect_err("invalid");
        assert_eq!(error.pointers(), vec!["/status", "/limit", "/sort"]);
    }
}
