//! `/v1/tenants`: create, read (by id, by slug, listed), patch, transition, archive, purge,
//! former slugs; and the early lifecycle check of every write on a tenant's behalf
//! ([`writable_by_path`]). The use cases themselves are `registry::tenants`.

mod access;
mod etags;
pub(crate) mod former_slugs;
mod initial_products;
mod input;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, NaiveDate, Utc};
use domain::Scope;
use serde::{Deserialize, Serialize};
use storage::tenants::{self, ProvisioningSummary, SlugMatch, TenantRow};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

pub(crate) use access::{permit_if_known, visible_by_path, writable_by_path, write_by};
use access::{require_editable_by, require_platform, visible};
pub(crate) use etags::{etag, if_match};
use etags::{matches_if_none_match, tenant_etag, tenant_tag};

use crate::AppState;
use crate::extract::{ApiJson, ApiQuery, Caller};
use crate::pagination;
use crate::problem::{ApiError, Problem};

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/tenants", post(create).get(list))
        .route("/v1/tenants/by-slug/{slug}", get(get_by_slug))
        .route("/v1/tenants/{id}", get(get_one).patch(patch).delete(delete))
        .route("/v1/tenants/{id}/transitions", post(transition))
        .merge(former_slugs::router())
}

/// A tenant as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantView {
    /// Id.
    id: Uuid,
    /// Current slug: 3–63 of `[a-z0-9-]`, no leading or trailing dash.
    #[schema(example = "acme")]
    slug: String,
    /// Display name.
    #[schema(example = "Acme Corp")]
    name: String,
    /// demo, trial, active, frozen or archived.
    #[schema(example = "trial")]
    status: String,
    /// customer or demo.
    #[schema(example = "customer")]
    kind: String,
    /// Commercial plan.
    #[schema(example = "pro")]
    plan: String,
    /// ERP customer id.
    erp_id: Option<String>,
    /// Stripe customer id.
    stripe_id: Option<String>,
    /// End of the trial (trial tenants).
    trial_ends_at: Option<DateTime<Utc>>,
    /// First day of the contract.
    contract_starts_on: Option<NaiveDate>,
    /// Last day of the contract.
    contract_ends_on: Option<NaiveDate>,
    /// Who sells to this tenant.
    sales_owner: Option<String>,
    /// Contact email (PII: encrypted at rest, shown to holders of tenants:read).
    contact_email: Option<String>,
    /// The OIDC issuer whose organization's users belong to this tenant.
    oidc_issuer: Option<String>,
    /// That issuer's organization (its id or alias), mapped to this tenant.
    #[schema(example = "acme-corp")]
    oidc_organization: Option<String>,
    /// Ids of the enabled products.
    #[schema(example = json!(["certifai", "compliance"]))]
    products: Vec<String>,
    /// Where each product's provisioning plan stands (products with a plan only; the whole
    /// run: `GET /v1/tenants/{id}/provisioning`).
    provisioning: Vec<TenantProvisioningView>,
    /// Bumped by every change of the tenant's own fields. The ETag is this number in quotes,
    /// followed by a digest of the products and their provisioning when it has any
    /// (`"3-9f2c41d07a5be613"`); `If-Match` compares the number.
    version: i64,
    /// Creation time.
    created_at: DateTime<Utc>,
    /// Last change.
    updated_at: DateTime<Utc>,
}

/// One product's provisioning of a tenant, in the tenant's views.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantProvisioningView {
    /// The product.
    #[schema(example = "certifai")]
    product: String,
    /// `provision`, `deprovision` or `migrate`.
    goal: String,
    /// `pending`, `running`, `ready`, `failed`, `deprovisioning` or `deprovisioned`.
    #[schema(example = "ready")]
    state: String,
    /// The kind of the step it is on (`null` once past the last).
    step: Option<String>,
    /// Failed attempts of this run.
    attempts: i32,
    /// Why the last attempt failed.
    last_error: Option<String>,
}

impl From<ProvisioningSummary> for TenantProvisioningView {
    fn from(summary: ProvisioningSummary) -> Self {
        Self {
            step: registry::provisioning::step_at(&summary.goal, &summary.kinds, summary.step)
                .map(str::to_owned),
            product: summary.product,
            goal: summary.goal,
            state: summary.state,
            attempts: summary.attempts,
            last_error: summary.last_error,
        }
    }
}

/// A page of tenants.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantPage {
    /// The tenants, oldest first.
    items: Vec<TenantView>,
    /// Pass as `cursor` for the next page; null on the last page.
    next_cursor: Option<String>,
}

/// The body of `POST /v1/tenants/{id}/transitions`.
#[derive(Debug, Deserialize, ToSchema)]
#[expect(
    dead_code,
    reason = "documents the body for OpenAPI; input.rs reads it field by field to report every problem at once"
)]
pub struct TransitionRequest {
    /// The status to move to.
    #[schema(example = "active")]
    to: String,
    /// Why (recorded with who and when).
    #[schema(example = "contract signed")]
    reason: String,
}

/// The body of `POST /v1/tenants` (and, every field optional, of `PATCH`).
#[derive(Debug, Deserialize, ToSchema)]
#[expect(
    dead_code,
    reason = "documents the body for OpenAPI; input.rs reads it field by field to report every problem at once"
)]
pub struct TenantInput {
    /// Unique slug.
    #[schema(example = "acme")]
    slug: String,
    /// Display name (1–200 characters).
    #[schema(example = "Acme Corp")]
    name: String,
    /// Plan (`[a-z0-9_-]`, 1–128).
    #[schema(example = "pro")]
    plan: String,
    /// customer (default) or demo.
    kind: Option<String>,
    /// demo, trial (default) or active.
    status: Option<String>,
    /// Trial end (trial only; default now + TRIAL_DAYS).
    trial_ends_at: Option<DateTime<Utc>>,
    /// ERP customer id (unique).
    erp_id: Option<String>,
    /// Stripe customer id (unique).
    stripe_id: Option<String>,
    /// Contract start.
    contract_starts_on: Option<NaiveDate>,
    /// Contract end (not before the start).
    contract_ends_on: Option<NaiveDate>,
    /// Sales owner.
    sales_owner: Option<String>,
    /// Contact email (encrypted at rest).
    contact_email: Option<String>,
    /// The Keycloak organization (id or alias, as tokens' `organization` claim names it)
    /// whose users belong to this tenant, under the configured issuer; unique.
    oidc_organization: Option<String>,
    /// Create only: the products it starts subscribed to (at most 50), each an id or
    /// `{product, enabled, config, feature_overrides}`, checked as `PUT
    /// /v1/tenants/{id}/products/{product}` checks them; their provisioning plans are queued
    /// with the tenant.
    products: Option<Vec<initial_products::InitialProduct>>,
}

/// Filters of `GET /v1/tenants`.
#[derive(Debug, Deserialize, IntoParams)]
#[expect(
    dead_code,
    reason = "documents the query for OpenAPI; input.rs reads it, repeated status included"
)]
#[into_params(parameter_in = Query)]
pub struct TenantListParams {
    /// Only these statuses (repeat the parameter for several).
    status: Option<Vec<String>>,
    /// Only this kind.
    kind: Option<String>,
    /// Only this plan.
    plan: Option<String>,
    /// Slug or name contains this (case-insensitive).
    q: Option<String>,
    /// Created at or after (RFC 3339).
    created_after: Option<DateTime<Utc>>,
    /// Created before (RFC 3339).
    created_before: Option<DateTime<Utc>>,
    /// Items per page, 1 to 200 (default 50).
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// Options of `DELETE /v1/tenants/{id}`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeleteParams {
    /// Hard-delete an archived tenant and everything it owns (platform admins only).
    purge: Option<bool>,
}

fn view(state: &AppState, row: TenantRow) -> Result<TenantView, ApiError> {
    let contact_email = row
        .contact_email_encrypted
        .as_deref()
        .map(|sealed| {
            state
                .settings
                .keyring
                .open_str(&registry::tenants::contact_email_context(row.id), sealed)
                .map_err(ApiError::internal)
        })
        .transpose()?;
    Ok(TenantView {
        id: row.id,
        slug: row.slug,
        name: row.name,
        status: row.status.to_string(),
        kind: row.kind.to_string(),
        plan: row.plan,
        erp_id: row.erp_id,
        stripe_id: row.stripe_id,
        trial_ends_at: row.trial_ends_at,
        contract_starts_on: row.contract_starts_on,
        contract_ends_on: row.contract_ends_on,
        sales_owner: row.sales_owner,
        contact_email,
        oidc_issuer: row.oidc_issuer,
        oidc_organization: row.oidc_organization,
        products: row.products,
        provisioning: row.provisioning.into_iter().map(Into::into).collect(),
        version: row.version,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

fn oidc_issuer(state: &AppState) -> Option<&str> {
    state
        .settings
        .oidc
        .as_ref()
        .map(|config| config.issuer.as_str())
}

pub(crate) fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::not_found("no such tenant"))
}

fn tenant_response(
    state: &AppState,
    status: StatusCode,
    row: TenantRow,
    extra: &[(header::HeaderName, String)],
) -> Result<Response, ApiError> {
    let tag = tenant_etag(&row);
    let mut response = (status, Json(view(state, row)?)).into_response();
    response.headers_mut().insert(header::ETAG, tag);
    for (name, value) in extra {
        if let Ok(value) = HeaderValue::from_str(value) {
            response.headers_mut().insert(name.clone(), value);
        }
    }
    Ok(response)
}

fn read_response(
    state: &AppState,
    headers: &HeaderMap,
    row: TenantRow,
    extra: &[(header::HeaderName, String)],
) -> Result<Response, ApiError> {
    if matches_if_none_match(headers, &tenant_tag(&row)) {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        response
            .headers_mut()
            .insert(header::ETAG, tenant_etag(&row));
        return Ok(response);
    }
    tenant_response(state, StatusCode::OK, row, extra)
}

/// Creates a tenant.
#[utoipa::path(post, path = "/v1/tenants", operation_id = "create_tenant", tag = "tenants", security(("bearer" = ["tenants:write"])),
    request_body = TenantInput,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for 24 h")),
    responses(
    (status = 201, description = "Created", body = TenantView,
     headers(("location" = String, description = "The tenant's URL"), ("etag" = String, description = "Its version"))),
    (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
    (status = 401, description = "No valid credentials", body = Problem, content_type = "application/problem+json"),
    (status = 403, description = "Missing tenants:write, or a tenant principal", body = Problem, content_type = "application/problem+json"),
    (status = 409, description = "slug, erp_id or stripe_id taken (errors names the field)", body = Problem, content_type = "application/problem+json"),
    (status = 422, description = "Invalid fields, all listed (a product not in the catalog, listed twice, or with a config or overrides its product refuses: pointers under /products)", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> Result<Response, ApiError> {
    caller.require(Scope::TenantsWrite)?;
    require_platform(&caller, "creating tenants")?;
    let mut body = body;
    let products = initial_products::take(&mut body);
    let (subscriptions, product_problems) = initial_products::read(&state, products).await?;
    let read = input::create(
        body,
        state.settings.trial_days,
        Utc::now(),
        oidc_issuer(&state),
    );
    let mut request = match read {
        Ok(request) if product_problems.is_empty() => request,
        Ok(_) => return Err(ApiError::invalid(product_problems)),
        Err(error) => {
            let mut problems = error.into_field_errors()?;
            problems.extend(product_problems);
            return Err(ApiError::invalid(problems));
        }
    };
    request.products = subscriptions;
    let row = registry::tenants::create(
        &state.pool,
        &state.settings.keyring,
        &caller.actor(),
        request,
    )
    .await?;
    state.tenant_changed(row.id, &[&row.slug]).await;
    let location = format!("/v1/tenants/{}", row.id);
    tenant_response(
        &state,
        StatusCode::CREATED,
        row,
        &[(header::LOCATION, location)],
    )
}

/// One tenant by id, with the ids of its enabled products.
#[utoipa::path(get, path = "/v1/tenants/{id}", operation_id = "get_tenant", tag = "tenants", security(("bearer" = ["tenants:read"])),
    params(("id" = Uuid, Path, description = "The tenant's id"),
           ("If-None-Match" = Option<String>, Header, description = "304 when the ETag matches")),
    responses(
    (status = 200, description = "The tenant", body = TenantView, headers(("etag" = String, description = "Its version"))),
    (status = 304, description = "Not modified"),
    (status = 404, description = "No such tenant, or not the caller's", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn get_one(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(Scope::TenantsRead)?;
    let row = visible(&state, &caller, parse_id(&id)?).await?;
    read_response(&state, &headers, row, &[])
}

/// One tenant by slug; a former slug still answers, with `Link: rel="canonical"`.
#[utoipa::path(get, path = "/v1/tenants/by-slug/{slug}", operation_id = "get_tenant_by_slug", tag = "tenants", security(("bearer" = ["tenants:read"])),
    params(("slug" = String, Path, description = "Current or former slug"),
           ("If-None-Match" = Option<String>, Header, description = "304 when the ETag matches")),
    responses(
    (status = 200, description = "The tenant", body = TenantView,
     headers(("etag" = String, description = "Its version"), ("link" = String, description = "Canonical URL, when a former slug was used"))),
    (status = 304, description = "Not modified"),
    (status = 404, description = "No such tenant, or not the caller's", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn get_by_slug(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(slug): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(Scope::TenantsRead)?;
    let found = state
        .tenants
        .get_by_slug(&state.tenant_lookups, &slug)
        .await?
        .filter(|found| {
            let (SlugMatch::Current(row) | SlugMatch::Former(row)) = found;
            caller.principal.can_access_tenant(Some(row.id))
        })
        .ok_or_else(|| ApiError::not_found("no such tenant"))?;
    match found {
        SlugMatch::Current(row) => read_response(&state, &headers, row, &[]),
        SlugMatch::Former(row) => {
            let link = format!("</v1/tenants/by-slug/{}>; rel=\"canonical\"", row.slug);
            read_response(&state, &headers, row, &[(header::LINK, link)])
        }
    }
}

/// Lists tenants (a tenant principal sees only its own), oldest first, a page at a time.
#[utoipa::path(get, path = "/v1/tenants", operation_id = "list_tenants", tag = "tenants", security(("bearer" = ["tenants:read"])),
    params(TenantListParams), responses(
    (status = 200, description = "A page of tenants", body = TenantPage),
    (status = 422, description = "Invalid filters, all listed", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    uri: Uri,
) -> Result<Json<TenantPage>, ApiError> {
    caller.require(Scope::TenantsRead)?;
    let mut filter = input::list(uri.query())?;
    filter.only = caller.principal.tenant_id;
    let limit = filter.limit;
    filter.limit += 1;
    let rows = tenants::list(&state.pool, &filter).await?;
    let (rows, next_cursor) = pagination::page(rows, limit, |row| (row.created_at, row.id));
    let items = rows
        .into_iter()
        .map(|row| view(&state, row))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(TenantPage { items, next_cursor }))
}

/// Changes editable fields (JSON merge patch; status excluded). Honours `If-Match`. A
/// tenant principal changes only its slug, name and contact email.
#[utoipa::path(patch, path = "/v1/tenants/{id}", operation_id = "patch_tenant", tag = "tenants", security(("bearer" = ["tenants:write"])),
    request_body(content = TenantInput, content_type = "application/merge-patch+json", description = "Any subset of the fields; null clears an optional one"),
    params(("id" = Uuid, Path, description = "The tenant's id"),
           ("If-Match" = Option<String>, Header, description = "The ETag read; required when REQUIRE_IF_MATCH=true")),
    responses(
    (status = 200, description = "Changed", body = TenantView, headers(("etag" = String, description = "The new version"))),
    (status = 403, description = "A tenant principal changing a platform field (errors names each)", body = Problem, content_type = "application/problem+json"),
    (status = 404, description = "No such tenant, or not the caller's", body = Problem, content_type = "application/problem+json"),
    (status = 409, description = "slug, erp_id, stripe_id or oidc_organization not available; a new slug while the tenant holds 5 former slugs (former-slug-limit); or the tenant is frozen (tenant principals) or archived", body = Problem, content_type = "application/problem+json"),
    (status = 412, description = "If-Match is stale", body = Problem, content_type = "application/problem+json"),
    (status = 422, description = "Invalid fields, all listed", body = Problem, content_type = "application/problem+json"),
    (status = 428, description = "If-Match required and missing", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn patch(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> Result<Response, ApiError> {
    caller.require(Scope::TenantsWrite)?;
    let before = visible(&state, &caller, parse_id(&id)?).await?;
    let id = before.id;
    require_editable_by(&caller, &body)?;
    let expected = if_match(&headers, state.settings.require_if_match)?;
    let patch = input::patch(body, oidc_issuer(&state))?;
    let row = registry::tenants::update(
        &state.pool,
        &state.settings.keyring,
        &caller.actor(),
        registry::tenants::Update {
            id,
            expected_version: expected,
            patch,
            write: write_by(&caller),
        },
    )
    .await?;
    state.tenant_changed(id, &[&before.slug, &row.slug]).await;
    tenant_response(&state, StatusCode::OK, row, &[])
}

/// Moves a tenant along its lifecycle (platform principals only).
#[utoipa::path(post, path = "/v1/tenants/{id}/transitions", operation_id = "transition_tenant", tag = "tenants", security(("bearer" = ["tenants:write"])),
    request_body = TransitionRequest,
    params(("id" = Uuid, Path, description = "The tenant's id")),
    responses(
    (status = 200, description = "Moved", body = TenantView),
    (status = 403, description = "A tenant principal, or missing tenants:write", body = Problem, content_type = "application/problem+json"),
    (status = 404, description = "No such tenant", body = Problem, content_type = "application/problem+json"),
    (status = 409, description = "Not allowed from the current status; `allowed` lists the targets", body = Problem, content_type = "application/problem+json"),
    (status = 422, description = "Unknown status or missing reason", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn transition(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> Result<Response, ApiError> {
    caller.require(Scope::TenantsWrite)?;
    let id = visible(&state, &caller, parse_id(&id)?).await?.id;
    require_platform(&caller, "changing a tenant's status")?;
    let request = input::transition(body)?;
    let row = registry::tenants::transition(&state.pool, &caller.actor(), id, request).await?;
    state.tenant_changed(id, &[&row.slug]).await;
    tenant_response(&state, StatusCode::OK, row, &[])
}

/// Archives a tenant (soft delete, idempotent); `?purge=true` hard-deletes an archived one.
#[utoipa::path(delete, path = "/v1/tenants/{id}", operation_id = "delete_tenant", tag = "tenants", security(("bearer" = ["tenants:write"])),
    params(("id" = Uuid, Path, description = "The tenant's id"), DeleteParams,
           ("If-Match" = Option<String>, Header, description = "The ETag read; required when REQUIRE_IF_MATCH=true")),
    responses(
    (status = 200, description = "Archived (or already archived)", body = TenantView),
    (status = 202, description = "Purge started as an operation (Location: /v1/operations/{id}); already succeeded when the tenant had no product data to tear down", body = crate::operations::OperationView),
    (status = 403, description = "Purge without platform:admin", body = Problem, content_type = "application/problem+json"),
    (status = 404, description = "No such tenant, or not the caller's", body = Problem, content_type = "application/problem+json"),
    (status = 409, description = "Purge of a tenant that is not archived", body = Problem, content_type = "application/problem+json"),
    (status = 412, description = "If-Match is stale", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    ApiQuery(params): ApiQuery<DeleteParams>,
) -> Result<Response, ApiError> {
    caller.require(Scope::TenantsWrite)?;
    let before = visible(&state, &caller, parse_id(&id)?).await?;
    let id = before.id;
    let expected = if_match(&headers, state.settings.require_if_match)?;
    if params.purge.unwrap_or(false) {
        caller.require(Scope::PlatformAdmin)?;
        let operation =
            registry::tenants::purge(&state.pool, &caller.actor(), id, expected).await?;
        state.tenant_changed(id, &[&before.slug]).await;
        return crate::operations::accepted(&state, operation).await;
    }
    require_platform(&caller, "archiving a tenant")?;
    let row = registry::tenants::archive(&state.pool, &caller.actor(), id, expected).await?;
    state.tenant_changed(id, &[&row.slug]).await;
    tenant_response(&state, StatusCode::OK, row, &[])
}
