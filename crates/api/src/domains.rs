//! `/v1/tenants/{id}/domains` (claim, verify by DNS TXT, list, delete) and
//! `/v1/sso/discover` (home-realm discovery: which tenant and IdP an email address signs in
//! with).

use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use domain::{Scope, TenantWrite, idp};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use storage::domains::{self, DomainRow};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::AppState;
use crate::extract::{ApiJson, Caller};
use crate::fields::Fields;
use crate::problem::{ApiError, Problem};
use crate::tenants::{visible_by_path, writable_by_path};
use registry::domains::{challenge_name, challenge_value};

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/tenants/{id}/domains", get(list).post(claim))
        .route("/v1/tenants/{id}/domains/{domain}", delete(remove))
        .route("/v1/tenants/{id}/domains/{domain}/verify", post(verify))
        .route("/v1/sso/discover", get(discover))
}

/// The TXT record that proves ownership.
#[derive(Debug, Serialize, ToSchema)]
pub struct Challenge {
    /// Always `dns-txt`.
    #[serde(rename = "type")]
    kind: &'static str,
    /// Where to publish it.
    #[schema(example = "_tenant-registry.acme.com")]
    name: String,
    /// What to publish.
    #[schema(example = "tr-verify=6f1c…")]
    value: String,
}

/// A claimed domain.
#[derive(Debug, Serialize, ToSchema)]
pub struct DomainView {
    /// Id.
    id: Uuid,
    /// The tenant claiming it.
    tenant_id: Uuid,
    /// The domain.
    #[schema(example = "acme.com")]
    domain: String,
    /// When ownership was proven; null until then.
    verified_at: Option<DateTime<Utc>>,
    /// The record to publish to prove it.
    verification: Challenge,
    /// Claim time.
    created_at: DateTime<Utc>,
}

impl From<DomainRow> for DomainView {
    fn from(row: DomainRow) -> Self {
        Self {
            id: row.id,
            tenant_id: row.tenant_id,
            verification: Challenge {
                kind: "dns-txt",
                name: challenge_name(&row.domain),
                value: challenge_value(&row.verification_token),
            },
            domain: row.domain,
            verified_at: row.verified_at,
            created_at: row.created_at,
        }
    }
}

/// The body of a claim.
#[derive(Debug, Deserialize, ToSchema)]
#[expect(
    dead_code,
    reason = "documents the body for OpenAPI; it is read field by field"
)]
pub struct ClaimRequest {
    /// The email domain to claim.
    #[schema(example = "acme.com")]
    domain: String,
}

/// The query of discovery.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DiscoverParams {
    /// The address of the person signing in.
    email: String,
}

/// Where an email address signs in.
#[derive(Debug, Serialize, ToSchema)]
pub struct Discovery {
    /// The tenant that verified the address's domain.
    tenant_id: Uuid,
    /// Its slug.
    tenant_slug: String,
    /// The verified domain.
    domain: String,
    /// The identity provider to send the person to.
    idp: DiscoveredIdp,
}

/// The identity provider found by discovery.
#[derive(Debug, Serialize, ToSchema)]
pub struct DiscoveredIdp {
    /// Id.
    id: Uuid,
    /// `oidc` or `saml`.
    kind: String,
    /// Display name.
    name: String,
    /// OIDC issuer.
    issuer: Option<String>,
    /// SAML single sign-on URL.
    sso_url: Option<String>,
}

fn domain_id(raw: &str) -> Result<Uuid, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::not_found("no such domain"))
}

/// Claims an email domain for the tenant; answers with the TXT record that proves it. A
/// claim says nothing about other tenants' claims: only verification, which needs control
/// of the domain's DNS, can meet another tenant's.
#[utoipa::path(post, path = "/v1/tenants/{id}/domains", operation_id = "claim_domain", tag = "sso",
    security(("bearer" = ["idp:write"])), request_body = ClaimRequest,
    params(("id" = Uuid, Path, description = "The tenant's id")),
    responses((status = 201, description = "Claimed, not yet verified", body = DomainView),
    (status = 404, description = "No such tenant", body = Problem, content_type = "application/problem+json"),
    (status = 409, description = "Already claimed by this tenant, or the tenant is frozen or archived", body = Problem, content_type = "application/problem+json"),
    (status = 422, description = "Not a domain name", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn claim(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant): Path<String>,
    ApiJson(body): ApiJson<Value>,
) -> Result<Response, ApiError> {
    caller.require(Scope::IdpWrite)?;
    let tenant = writable_by_path(&state, &caller, &tenant, TenantWrite::Operate).await?;
    let mut fields = Fields::new(body, &["domain"])?;
    let domain = fields.required("domain", idp::email_domain);
    fields.finish()?;
    let Some(domain) = domain else {
        return Err(ApiError::internal("required field passed validation unset"));
    };
    let row = registry::domains::claim(&state.pool, &caller.actor(), tenant.id, &domain).await?;
    let location = format!("/v1/tenants/{}/domains/{}", tenant.id, row.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(DomainView::from(row)),
    )
        .into_response())
}

/// The tenant's claimed domains.
#[utoipa::path(get, path = "/v1/tenants/{id}/domains", operation_id = "list_domains", tag = "sso",
    security(("bearer" = ["idp:read"])), params(("id" = Uuid, Path, description = "The tenant's id")),
    responses((status = 200, description = "Its domains", body = [DomainView]),
    (status = 404, description = "No such tenant", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant): Path<String>,
) -> Result<Json<Vec<DomainView>>, ApiError> {
    caller.require(Scope::IdpRead)?;
    let tenant = visible_by_path(&state, &caller, &tenant).await?;
    Ok(Json(
        domains::list(&state.pool, tenant.id)
            .await?
            .into_iter()
            .map(DomainView::from)
            .collect(),
    ))
}

/// Checks the TXT record and, when it holds the challenge, marks the domain verified.
#[utoipa::path(post, path = "/v1/tenants/{id}/domains/{domain}/verify", operation_id = "verify_domain", tag = "sso",
    security(("bearer" = ["idp:write"])),
    params(("id" = Uuid, Path, description = "The tenant's id"), ("domain" = Uuid, Path, description = "The claim's id")),
    responses((status = 200, description = "Verified", body = DomainView),
    (status = 404, description = "No such tenant or claim", body = Problem, content_type = "application/problem+json"),
    (status = 409, description = "The record is not there (yet), the domain is verified elsewhere (said only once the record proves control), or the tenant is frozen or archived", body = Problem, content_type = "application/problem+json"),
    (status = 503, description = "DNS could not be asked", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn verify(
    State(state): State<AppState>,
    caller: Caller,
    Path((tenant, id)): Path<(String, String)>,
) -> Result<Json<DomainView>, ApiError> {
    caller.require(Scope::IdpWrite)?;
    let tenant = writable_by_path(&state, &caller, &tenant, TenantWrite::Operate).await?;
    let verified = registry::domains::verify(
        &state.pool,
        &caller.actor(),
        state.settings.dns.as_ref(),
        tenant.id,
        domain_id(&id)?,
    )
    .await?;
    Ok(Json(verified.into()))
}

/// Withdraws a claim.
#[utoipa::path(delete, path = "/v1/tenants/{id}/domains/{domain}", operation_id = "delete_domain", tag = "sso",
    security(("bearer" = ["idp:write"])),
    params(("id" = Uuid, Path, description = "The tenant's id"), ("domain" = Uuid, Path, description = "The claim's id")),
    responses((status = 204, description = "Removed"),
    (status = 404, description = "No such tenant or claim", body = Problem, content_type = "application/problem+json"),
    (status = 409, description = "The tenant is frozen or archived", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Path((tenant, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    caller.require(Scope::IdpWrite)?;
    let tenant = writable_by_path(&state, &caller, &tenant, TenantWrite::Operate).await?;
    registry::domains::remove(&state.pool, &caller.actor(), tenant.id, domain_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Home-realm discovery: the tenant that verified the email's domain, and its enabled IdP.
#[utoipa::path(get, path = "/v1/sso/discover", operation_id = "discover", tag = "sso",
    security(("bearer" = ["idp:read"])), params(DiscoverParams),
    responses((status = 200, description = "Where this address signs in", body = Discovery),
    (status = 404, description = "No verified domain, or no enabled identity provider", body = Problem, content_type = "application/problem+json"),
    (status = 422, description = "Not an email address", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn discover(
    State(state): State<AppState>,
    caller: Caller,
    uri: Uri,
) -> Result<Json<Discovery>, ApiError> {
    caller.require(Scope::IdpRead)?;
    let params: DiscoverParams = crate::extract::query(&uri)?;
    let domain = idp::domain_of_email(&params.email).ok_or_else(|| {
        ApiError::invalid_field("/email", "must be an email address like jane@acme.com")
    })?;
    let not_found = || ApiError::not_found("no tenant has verified this email domain");
    let tenant_id = domains::verified_owner(&state.pool, &domain)
        .await?
        .ok_or_else(not_found)?;
    if !caller.principal.can_access_tenant(Some(tenant_id)) {
        return Err(not_found());
    }
    let tenant = storage::tenants::get(&state.pool, tenant_id)
        .await?
        .ok_or_else(not_found)?;
    let idp = storage::idps::list(&state.pool, tenant_id)
        .await?
        .into_iter()
        .find(|idp| idp.enabled)
        .ok_or_else(|| ApiError::not_found("the tenant has no enabled identity provider"))?;
    Ok(Json(Discovery {
        tenant_id,
        tenant_slug: tenant.slug,
        domain,
        idp: DiscoveredIdp {
            id: idp.id,
            kind: idp.kind.to_string(),
            name: idp.name,
            issuer: idp.oidc_issuer,
            sso_url: idp.saml_sso_url,
        },
    }))
}
