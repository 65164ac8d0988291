//! The one table that turns named database constraints into use-case errors (a conflict for
//! a value another row holds, an invalid field for a rule the value breaks).

use crate::RegistryError;

struct Mapping {
    constraint: &'static str,
    conflict: bool,
    pointer: &'static str,
    detail: &'static str,
}

/// What a taken slug answers, whoever has it now or had it: never whose it is.
pub(crate) const SLUG_UNAVAILABLE: &str = "is not available; choose another";

const MAPPINGS: &[Mapping] = &[
    Mapping {
        constraint: "audit_viewer_tokens_tenant_id_fkey",
        conflict: false,
        pointer: "/group_id",
        detail: "no such tenant (by id or slug)",
    },
    Mapping {
        constraint: "audit_viewer_tokens_issued_by_fkey",
        conflict: true,
        pointer: "/",
        detail: "the API key issuing the token was deleted meanwhile",
    },
    Mapping {
        constraint: "audit_log_product_external_id_key",
        conflict: true,
        pointer: "/external_id",
        detail: "an event with this external_id was stored at the same moment; retry and it is skipped as a duplicate",
    },
    Mapping {
        constraint: "api_keys_product_fkey",
        conflict: false,
        pointer: "/product",
        detail: "no such product in the catalog",
    },
    Mapping {
        constraint: "tenants_slug_key",
        conflict: true,
        pointer: "/slug",
        detail: SLUG_UNAVAILABLE,
    },
    Mapping {
        constraint: "tenants_erp_id_key",
        conflict: true,
        pointer: "/erp_id",
        detail: "is already in use",
    },
    Mapping {
        constraint: "tenants_stripe_id_key",
        conflict: true,
        pointer: "/stripe_id",
        detail: "is already in use",
    },
    Mapping {
        constraint: "tenants_oidc_organization_key",
        conflict: true,
        pointer: "/oidc_organization",
        detail: "is already mapped to a tenant",
    },
    Mapping {
        constraint: "tenants_slug_format",
        conflict: false,
        pointer: "/slug",
        detail: "is not a valid slug",
    },
    Mapping {
        constraint: "tenants_name_not_blank",
        conflict: false,
        pointer: "/name",
        detail: "must not be empty",
    },
    Mapping {
        constraint: "tenants_plan_not_blank",
        conflict: false,
        pointer: "/plan",
        detail: "must not be empty",
    },
    Mapping {
        constraint: "tenant_projects_tenant_slug_key",
        conflict: true,
        pointer: "/slug",
        detail: "another project of this tenant has this slug",
    },
    Mapping {
        constraint: "tenant_projects_slug_format",
        conflict: false,
        pointer: "/slug",
        detail: "is not a valid slug",
    },
    Mapping {
        constraint: "tenant_projects_name_not_blank",
        conflict: false,
        pointer: "/name",
        detail: "must not be empty",
    },
    Mapping {
        constraint: "tenant_domains_tenant_domain_key",
        conflict: true,
        pointer: "/domain",
        detail: "this tenant has already claimed this domain",
    },
    Mapping {
        constraint: "tenant_domains_domain_format",
        conflict: false,
        pointer: "/domain",
        detail: "is not a domain name",
    },
    Mapping {
        constraint: "tenants_contract_dates_ordered",
        conflict: false,
        pointer: "/contract_ends_on",
        detail: "must not be before contract_starts_on",
    },
];

/// The error for `error`: a mapped constraint violation, or the database failure as it is.
pub(crate) fn map(error: sqlx::Error) -> RegistryError {
    let mapped = error
        .as_database_error()
        .and_then(|database| database.constraint())
        .and_then(|name| MAPPINGS.iter().find(|mapping| mapping.constraint == name));
    match mapped {
        Some(mapping) if mapping.conflict => {
            RegistryError::conflict_field(mapping.pointer, mapping.detail)
        }
        Some(mapping) => RegistryError::invalid_field(mapping.pointer, mapping.detail),
        None => RegistryError::from(error),
    }
}
