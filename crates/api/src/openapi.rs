//! The OpenAPI 3.1 document, generated from the handlers and types, and a reference page
//! that renders it in the browser with no external assets.

use axum::Json;
use axum::response::Html;
use axum::routing::get;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::AppState;

/// Adds the bearer scheme every `/v1` route uses (API key or OIDC access token).
struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key (`tr_<env>_<prefix>_<secret>`) or an OIDC access token from the configured issuer",
                    ))
                    .build(),
            ),
        );
    }
}

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "tenant-registry",
        description = "The control plane of a multi-tenant SaaS platform: tenants, entitlements, SSO configuration, API keys, the audit log and the events feed. Errors are RFC 9457 problem+json.",
        license(name = "MIT OR Apache-2.0")
    ),
    paths(
        crate::probes::healthz,
        crate::probes::readyz,
        crate::me::me,
        crate::api_keys::create,
        crate::api_keys::list,
        crate::api_keys::get_one,
        crate::api_keys::revoke,
        crate::api_keys::rotate,
        crate::tenants::create,
        crate::tenants::list,
        crate::tenants::get_one,
        crate::tenants::get_by_slug,
        crate::tenants::patch,
        crate::tenants::transition,
        crate::tenants::delete,
        crate::tenants::former_slugs::list,
        crate::tenants::former_slugs::release,
        crate::products::put_product,
        crate::products::list_products,
        crate::products::get_product,
        crate::products::put_tenant_product,
        crate::products::list_tenant_products,
        crate::products::get_tenant_product,
        crate::products::delete_tenant_product,
        crate::products::entitlements,
        crate::products::check,
        crate::projects::create,
        crate::projects::list,
        crate::projects::get_one,
        crate::projects::get_by_slug,
        crate::projects::patch,
        crate::projects::archive,
        crate::projects::restore,
        crate::idps::create,
        crate::idps::list,
        crate::idps::get_one,
        crate::idps::patch,
        crate::idps::delete,
        crate::domains::claim,
        crate::domains::list,
        crate::domains::verify,
        crate::domains::remove,
        crate::domains::discover,
        crate::audit_events::ingest,
        crate::audit_events::search,
        crate::audit_events::export,
        crate::audit_events::verify,
        crate::events::feed,
        crate::events::stream,
        crate::webhooks::create,
        crate::webhooks::list,
        crate::webhooks::get_one,
        crate::webhooks::patch,
        crate::webhooks::delete,
        crate::webhooks::rotate_secret,
        crate::webhooks::deliveries::list_deliveries,
        crate::webhooks::deliveries::retry_delivery,
        crate::webhooks::deliveries::replay,
        crate::webhooks::deliveries::send_test,
    ),
    components(schemas(crate::problem::Problem, crate::problem::FieldError)),
    modifiers(&BearerScheme),
    tags(
        (name = "probes", description = "Liveness, readiness and metrics"),
        (name = "auth", description = "The caller's identity"),
        (name = "api keys", description = "Create, list, revoke and rotate API keys"),
        (name = "tenants", description = "Tenants and their lifecycle"),
        (name = "products", description = "Products catalog, tenants' subscriptions and entitlements"),
        (name = "projects", description = "Projects inside a tenant (sub-tenancy)"),
        (name = "sso", description = "Enterprise identity providers (OIDC, SAML)"),
        (name = "audit", description = "The Retraced-compatible audit log"),
        (name = "events", description = "Domain events: the feed and the stream"),
        (name = "webhooks", description = "Signed Standard Webhooks deliveries of the registry's events"),
    )
)]
pub struct ApiDoc;

pub(crate) fn router() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/openapi.json", get(|| async { Json(ApiDoc::openapi()) }))
        .route("/docs", get(|| async { Html(include_str!("docs.html")) }))
}
