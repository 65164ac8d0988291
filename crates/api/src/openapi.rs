//! The OpenAPI 3.1 document, generated from the handlers and types, and a reference page
//! that renders it in the browser with no external assets.

use axum::Json;
use axum::response::Html;
use axum::routing::get;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
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
        components.add_security_scheme(
            "retraced_token",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Authorization",
                "Retraced's forms: `token=<API key>` or `Token token=<API key>` (routes under /auditlog only)",
            ))),
        );
    }
}

/// Adds the answers every operation of a kind can give, where its own annotation names none:
/// so a generated client and a conformance checker know every status the server sends.
struct StandardResponses;

/// What every operation can answer, whatever it does.
const EVERY_OPERATION: [(&str, &str); 6] = [
    (
        "400",
        "The path holds a NUL character, bytes that are not UTF-8, or a malformed percent-escape",
    ),
    ("408", "The request took longer than REQUEST_TIMEOUT_SECS"),
    ("414", "The URI is over 8 KiB"),
    (
        "431",
        "The header fields are over 32 KiB in all, or more than 64",
    ),
    (
        "422",
        "A query parameter is invalid, holds a NUL character or a malformed percent-escape, or is not UTF-8 (errors names each)",
    ),
    (
        "503",
        "The database, or authentication, is unavailable, or the server is busy (see Retry-After)",
    ),
];
/// What an authenticated operation can answer too.
const AUTHENTICATED: [(&str, &str); 3] = [
    (
        "401",
        "No credentials, or not valid ones (WWW-Authenticate: Bearer)",
    ),
    ("403", "The credential lacks a scope this operation needs"),
    (
        "429",
        "The address started too many uncached key verifications, or failed to authenticate too often, this second (Retry-After)",
    ),
];
/// What a PATCH or DELETE can answer too: the resource may carry an ETag.
const CONDITIONAL: [(&str, &str); 2] = [
    ("412", "If-Match names another version"),
    ("428", "If-Match is required (REQUIRE_IF_MATCH) and missing"),
];
/// What an operation on a resource named in its path can answer too.
const ON_A_RESOURCE: [(&str, &str); 1] = [(
    "404",
    "No such resource, or one the caller may not see (never told apart)",
)];
/// What an operation with a JSON body can answer too.
const WITH_BODY: [(&str, &str); 3] = [
    ("413", "The body is over 1 MiB"),
    ("415", "The body is not sent as JSON"),
    ("422", "A field of the body is invalid (errors names each)"),
];
/// What a POST can answer too: any may carry an Idempotency-Key.
const POST: [(&str, &str); 1] = [(
    "409",
    "A request with this Idempotency-Key is still running (idempotency-in-progress, Retry-After), made its change but lost its answer (idempotency-answer-lost), or the change conflicts with the current state",
)];

fn add_problems<'a>(
    operation: &mut Operation,
    answers: impl IntoIterator<Item = &'a (&'a str, &'a str)>,
) {
    for (status, description) in answers {
        operation
            .responses
            .responses
            .entry((*status).to_owned())
            .or_insert_with(|| {
                ResponseBuilder::new()
                    .description(*description)
                    .content(
                        "application/problem+json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name("Problem")))
                            .build(),
                    )
                    .into()
            });
    }
}

impl Modify for StandardResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                (&mut item.get, false, false),
                (&mut item.put, false, false),
                (&mut item.post, true, false),
                (&mut item.patch, false, true),
                (&mut item.delete, false, true),
            ];
            for (operation, is_post, is_conditional) in operations {
                let Some(operation) = operation.as_mut() else {
                    continue;
                };
                add_problems(operation, &EVERY_OPERATION);
                if operation
                    .security
                    .as_ref()
                    .is_some_and(|security| !security.is_empty())
                {
                    add_problems(operation, &AUTHENTICATED);
                }
                let names_a_resource = operation
                    .parameters
                    .iter()
                    .flatten()
                    .any(|parameter| matches!(parameter.parameter_in, ParameterIn::Path));
                if names_a_resource {
                    add_problems(operation, &ON_A_RESOURCE);
                }
                if operation.request_body.is_some() {
                    add_problems(operation, &WITH_BODY);
                }
                if is_post {
                    add_problems(operation, &POST);
                }
                if is_conditional {
                    add_problems(operation, &CONDITIONAL);
                }
            }
        }
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
        crate::probes::live,
        crate::probes::ready,
        crate::probes::startup,
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
        crate::product_migrations::register,
        crate::product_migrations::list,
        crate::provisioning::show,
        crate::provisioning::retry,
        crate::provisioning::complete,
        crate::provisioning::fail,
        crate::provisioning::roles,
        crate::provisioning::backups,
        crate::operations::show,
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
        crate::retraced::publish::event,
        crate::retraced::publish::bulk,
        crate::retraced::graphql::search,
        crate::retraced::viewer::issue,
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
    modifiers(&BearerScheme, &StandardResponses),
    tags(
        (name = "probes", description = "Liveness, readiness and start-up"),
        (name = "auth", description = "The caller's identity"),
        (name = "api keys", description = "Create, list, revoke and rotate API keys"),
        (name = "tenants", description = "Tenants and their lifecycle"),
        (name = "products", description = "Products catalog, tenants' subscriptions and entitlements"),
        (name = "provisioning", description = "Products' provisioning plans run for each tenant: state, retries, hook reports, roles, backups, long-running operations"),
        (name = "projects", description = "Projects inside a tenant (sub-tenancy)"),
        (name = "sso", description = "Enterprise identity providers (OIDC, SAML)"),
        (name = "audit", description = "The Retraced-compatible audit log"),
        (name = "retraced", description = "A drop-in for Retraced's publisher API (its clients' endpoint is the registry's /auditlog): publishing with Retraced's event hash, the GraphQL search, viewer tokens"),
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
