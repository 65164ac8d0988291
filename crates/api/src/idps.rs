//! `/v1/tenants/{id}/idps`: a tenant's enterprise identity providers (OIDC or SAML).
//!
//! OIDC client secrets are encrypted with the key ring, bound to their row, and never
//! returned (`client_secret_set` says whether there is one). SAML metadata is parsed with
//! DTDs refused, so no entity is expanded and nothing is fetched on its behalf.

use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use domain::{IdpKind, Scope, TenantWrite, idp, tenant};
use keyring::Keyring;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use storage::idps::{self, IdpRow, IdpValues};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::AppState;
use crate::blocking::{self, Overrun};
use crate::extract::{ApiJson, Caller};
use crate::fields::{self, Fields};
use crate::outbound;
use crate::problem::{ApiError, Problem};
use crate::tenants::{visible_by_path, writable_by_path};

const FIELDS: &[&str] = &[
    "kind",
    "name",
    "enabled",
    "issuer",
    "client_id",
    "client_secret",
    "scopes",
    "metadata_xml",
    "metadata_url",
];
const OIDC_ONLY: &[&str] = &["issuer", "client_id", "client_secret", "scopes"];
const SAML_ONLY: &[&str] = &["metadata_xml", "metadata_url"];
const DEFAULT_SCOPES: [&str; 3] = ["openid", "email", "profile"];

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/tenants/{id}/idps", get(list).post(create))
        .route(
            "/v1/tenants/{id}/idps/{idp}",
            get(get_one).patch(patch).delete(delete),
        )
}

/// An identity provider as the API shows it (never the client secret).
#[derive(Debug, Serialize, ToSchema)]
pub struct IdpView {
    /// Id.
    id: Uuid,
    /// The tenant it signs in.
    tenant_id: Uuid,
    /// `oidc` or `saml`.
    #[schema(example = "oidc")]
    kind: String,
    /// Display name.
    #[schema(example = "Acme Okta")]
    name: String,
    /// Offered at sign-in.
    enabled: bool,
    /// OIDC: the issuer.
    issuer: Option<String>,
    /// OIDC: the client id.
    client_id: Option<String>,
    /// OIDC: whether a client secret is stored (it is never returned).
    client_secret_set: bool,
    /// OIDC: scopes requested.
    scopes: Vec<String>,
    /// SAML: the metadata document, when given inline.
    metadata_xml: Option<String>,
    /// SAML: where the metadata is published, when given by URL.
    metadata_url: Option<String>,
    /// SAML: the IdP's entity id, from the metadata.
    entity_id: Option<String>,
    /// SAML: the single sign-on URL, from the metadata.
    sso_url: Option<String>,
    /// SAML: when the signing certificate expires.
    certificate_expires_at: Option<DateTime<Utc>>,
    /// Creation time.
    created_at: DateTime<Utc>,
    /// Last change.
    updated_at: DateTime<Utc>,
}

impl From<IdpRow> for IdpView {
    fn from(row: IdpRow) -> Self {
        Self {
            id: row.id,
            tenant_id: row.tenant_id,
            kind: row.kind.to_string(),
            name: row.name,
            enabled: row.enabled,
            issuer: row.oidc_issuer,
            client_id: row.oidc_client_id,
            client_secret_set: row.oidc_client_secret.is_some(),
            scopes: row.oidc_scopes,
            metadata_xml: row.saml_metadata_xml,
            metadata_url: row.saml_metadata_url,
            entity_id: row.saml_entity_id,
            sso_url: row.saml_sso_url,
            certificate_expires_at: row.saml_certificate_expires_at,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// The body of `POST` (and, any subset, `PATCH`) of an IdP.
#[derive(Debug, Deserialize, ToSchema)]
#[expect(
    dead_code,
    reason = "documents the body for OpenAPI; it is read field by field to report every problem at once"
)]
pub struct IdpInput {
    /// `oidc` or `saml` (not changeable).
    kind: String,
    /// Display name.
    name: String,
    /// Offered at sign-in (default true).
    enabled: Option<bool>,
    /// OIDC: issuer URL (https; plain http only where the server's outbound policy allows it).
    issuer: Option<String>,
    /// OIDC: client id.
    client_id: Option<String>,
    /// OIDC: client secret (stored encrypted, never returned; null clears it).
    client_secret: Option<String>,
    /// OIDC: scopes (default openid, email, profile).
    scopes: Option<Vec<String>>,
    /// SAML: the IdP metadata document (no DTDs).
    metadata_xml: Option<String>,
    /// SAML: where to fetch the metadata (https).
    metadata_url: Option<String>,
}

/// Options of create and patch.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct VerifyParams {
    /// OIDC: fetch the issuer's discovery document and check it names the same issuer.
    verify: Option<bool>,
}

async fn verify_issuer(egress: &egress::Egress, issuer: &str) -> Result<(), String> {
    let discovery = outbound::fetch_text(
        egress,
        &format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        ),
    )
    .await?;
    let named = serde_json::from_str::<Value>(&discovery)
        .ok()
        .and_then(|document| {
            document
                .get("issuer")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .ok_or("the discovery document names no issuer")?;
    if named == issuer {
        Ok(())
    } else {
        Err(format!(
            "the discovery document names issuer {named:?}, not this one"
        ))
    }
}

/// Applies a create or patch body to `values`, checking everything at once.
async fn apply(
    state: &AppState,
    values: &mut IdpValues,
    body: Value,
    creating: bool,
    verify: bool,
) -> Result<(), ApiError> {
    let keyring: &Keyring = &state.settings.keyring;
    let egress = &state.settings.outbound;
    let mut fields = Fields::new(body, FIELDS)?;
    if creating {
        if let Some(kind) = fields.required("kind", fields::label::<IdpKind>) {
            values.kind = kind;
        }
    } else if fields.has("kind") {
        fields.error("kind", "cannot change; create another identity provider");
    }
    let name = if creating {
        fields.required("name", tenant::name)
    } else {
        fields.optional_not_null("name", tenant::name)
    };
    if let Some(name) = name {
        values.name = name;
    }
    if let Some(enabled) = fields.boolean("enabled") {
        values.enabled = enabled;
    }
    let foreign = match values.kind {
        IdpKind::Oidc => SAML_ONLY,
        IdpKind::Saml => OIDC_ONLY,
    };
    for field in foreign {
        if fields.has(field) {
            fields.error(
                field,
                format!("is not a setting of a {} identity provider", values.kind),
            );
        }
    }
    match values.kind {
        IdpKind::Oidc => {
            let url_rule = |text: &str| {
                outbound::check_url(egress, text).map(|()| text.trim_end_matches('/').to_owned())
            };
            let issuer = if creating {
                fields.required("issuer", url_rule)
            } else {
                fields.optional_not_null("issuer", url_rule)
            };
            if let Some(issuer) = issuer {
                values.oidc_issuer = Some(issuer);
            }
            let client_id = if creating {
                fields.required("client_id", tenant::short_text)
            } else {
                fields.optional_not_null("client_id", tenant::short_text)
            };
            if let Some(client_id) = client_id {
                values.oidc_client_id = Some(client_id);
            }
            let secret_rule = |text: &str| {
                if text.is_empty() || text.len() > 1024 {
                    Err("must be 1 to 1024 characters".to_owned())
                } else {
                    Ok(text.to_owned())
                }
            };
            if let Some(secret) = fields.optional("client_secret", secret_rule) {
                values.oidc_client_secret = secret
                    .map(|secret| registry::idps::seal_client_secret(keyring, values.id, &secret))
                    .transpose()?;
            }
            match fields.strings("scopes") {
                Some(scopes)
                    if scopes
                        .iter()
                        .any(|scope| scope.is_empty() || scope.contains(char::is_whitespace)) =>
                {
                    fields.error("scopes", "each scope is one word");
                }
                Some(scopes) => values.oidc_scopes = scopes,
                None if creating => values.oidc_scopes = DEFAULT_SCOPES.map(str::to_owned).to_vec(),
                None => {}
            }
            if verify
                && let Some(issuer) = values.oidc_issuer.clone()
                && let Err(problem) = verify_issuer(egress, &issuer).await
            {
                fields.error("issuer", problem);
            }
        }
        IdpKind::Saml => {
            let xml = fields
                .optional("metadata_xml", |text| Ok(text.to_owned()))
                .flatten();
            let url = fields
                .optional("metadata_url", |text| {
                    outbound::check_url(egress, text).map(|()| text.to_owned())
                })
                .flatten();
            let source = match (xml, url) {
                (Some(_), Some(_)) => {
                    fields.error(
                        "metadata_url",
                        "give metadata_xml or metadata_url, not both",
                    );
                    None
                }
                (Some(xml), None) => Some(("metadata_xml", xml, None)),
                (None, Some(url)) => match outbound::fetch_text(egress, &url).await {
                    Ok(xml) => Some(("metadata_url", xml, Some(url))),
                    Err(problem) => {
                        fields.error("metadata_url", problem);
                        None
                    }
                },
                (None, None) => {
                    if creating {
                        fields.error("metadata_xml", "give metadata_xml or metadata_url");
                    }
                    None
                }
            };
            if let Some((field, xml, url)) = source {
                let parsing = blocking::run(move || {
                    let parsed = idp::parse_saml_metadata(&xml);
                    (xml, parsed)
                });
                match parsing.await {
                    Ok((xml, Ok(parsed))) => {
                        values.saml_entity_id = Some(parsed.entity_id);
                        values.saml_sso_url = Some(parsed.sso_url);
                        values.saml_certificate_expires_at = Some(parsed.certificate_expires_at);
                        values.saml_metadata_xml = url.is_none().then_some(xml);
                        values.saml_metadata_url = url;
                    }
                    Ok((_, Err(problem))) => fields.error(field, problem),
                    Err(Overrun::TooSlow) => fields.error(field, blocking::too_costly()),
                    Err(overrun) => return Err(overrun.into()),
                }
            }
        }
    }
    fields.finish()
}

fn blank(kind: IdpKind) -> IdpValues {
    IdpValues {
        id: Uuid::new_v4(),
        kind,
        name: String::new(),
        enabled: true,
        oidc_issuer: None,
        oidc_client_id: None,
        oidc_client_secret: None,
        oidc_scopes: Vec::new(),
        saml_metadata_xml: None,
        saml_metadata_url: None,
        saml_entity_id: None,
        saml_sso_url: None,
        saml_certificate_expires_at: None,
    }
}

fn idp_id(raw: &str) -> Result<Uuid, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::not_found("no such identity provider"))
}

/// Adds an identity provider to a tenant.
#[utoipa::path(post, path = "/v1/tenants/{id}/idps", operation_id = "create_idp", tag = "sso",
    security(("bearer" = ["idp:write"])), request_body = IdpInput,
    params(("id" = Uuid, Path, description = "The tenant's id"), VerifyParams),
    responses((status = 201, description = "Created", body = IdpView, headers(("location" = String, description = "Its URL"))),
    (status = 404, description = "No such tenant", body = Problem, content_type = "application/problem+json"),
    (status = 422, description = "Invalid settings or metadata, all listed", body = Problem, content_type = "application/problem+json"),
    (status = 409, description = "The tenant is frozen or archived", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant): Path<String>,
    uri: Uri,
    ApiJson(body): ApiJson<Value>,
) -> Result<Response, ApiError> {
    caller.require(Scope::IdpWrite)?;
    let tenant = writable_by_path(&state, &caller, &tenant, TenantWrite::Operate).await?;
    let params: VerifyParams = crate::extract::query(&uri)?;
    let mut values = blank(IdpKind::Oidc);
    apply(
        &state,
        &mut values,
        body,
        true,
        params.verify.unwrap_or(false),
    )
    .await?;
    let row = registry::idps::create(&state.pool, &caller.actor(), tenant.id, &values).await?;
    let location = format!("/v1/tenants/{}/idps/{}", tenant.id, row.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(IdpView::from(row)),
    )
        .into_response())
}

/// A tenant's identity providers.
#[utoipa::path(get, path = "/v1/tenants/{id}/idps", operation_id = "list_idps", tag = "sso",
    security(("bearer" = ["idp:read"])), params(("id" = Uuid, Path, description = "The tenant's id")),
    responses((status = 200, description = "Its identity providers", body = [IdpView]),
    (status = 404, description = "No such tenant", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant): Path<String>,
) -> Result<Json<Vec<IdpView>>, ApiError> {
    caller.require(Scope::IdpRead)?;
    let tenant = visible_by_path(&state, &caller, &tenant).await?;
    Ok(Json(
        idps::list(&state.pool, tenant.id)
            .await?
            .into_iter()
            .map(IdpView::from)
            .collect(),
    ))
}

/// One identity provider.
#[utoipa::path(get, path = "/v1/tenants/{id}/idps/{idp}", operation_id = "get_idp", tag = "sso",
    security(("bearer" = ["idp:read"])),
    params(("id" = Uuid, Path, description = "The tenant's id"), ("idp" = Uuid, Path, description = "The IdP's id")),
    responses((status = 200, description = "The identity provider", body = IdpView),
    (status = 404, description = "No such tenant or IdP", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn get_one(
    State(state): State<AppState>,
    caller: Caller,
    Path((tenant, id)): Path<(String, String)>,
) -> Result<Json<IdpView>, ApiError> {
    caller.require(Scope::IdpRead)?;
    let tenant = visible_by_path(&state, &caller, &tenant).await?;
    idps::get(&state.pool, tenant.id, idp_id(&id)?)
        .await?
        .map(|row| Json(row.into()))
        .ok_or_else(|| ApiError::not_found("no such identity provider"))
}

/// Changes an identity provider (any subset of its settings).
#[utoipa::path(patch, path = "/v1/tenants/{id}/idps/{idp}", operation_id = "patch_idp", tag = "sso",
    security(("bearer" = ["idp:write"])), request_body = IdpInput,
    params(("id" = Uuid, Path, description = "The tenant's id"), ("idp" = Uuid, Path, description = "The IdP's id"), VerifyParams),
    responses((status = 200, description = "Changed", body = IdpView),
    (status = 404, description = "No such tenant or IdP", body = Problem, content_type = "application/problem+json"),
    (status = 422, description = "Invalid settings or metadata, all listed", body = Problem, content_type = "application/problem+json"),
    (status = 409, description = "The tenant is frozen or archived", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn patch(
    State(state): State<AppState>,
    caller: Caller,
    Path((tenant, id)): Path<(String, String)>,
    uri: Uri,
    ApiJson(body): ApiJson<Value>,
) -> Result<Json<IdpView>, ApiError> {
    caller.require(Scope::IdpWrite)?;
    let tenant = writable_by_path(&state, &caller, &tenant, TenantWrite::Operate).await?;
    let params: VerifyParams = crate::extract::query(&uri)?;
    let current = idps::get(&state.pool, tenant.id, idp_id(&id)?)
        .await?
        .ok_or_else(|| ApiError::not_found("no such identity provider"))?;
    let mut values = IdpValues::from(current);
    apply(
        &state,
        &mut values,
        body,
        false,
        params.verify.unwrap_or(false),
    )
    .await?;
    let row = registry::idps::update(&state.pool, &caller.actor(), tenant.id, &values).await?;
    Ok(Json(row.into()))
}

/// Removes an identity provider.
#[utoipa::path(delete, path = "/v1/tenants/{id}/idps/{idp}", operation_id = "delete_idp", tag = "sso",
    security(("bearer" = ["idp:write"])),
    params(("id" = Uuid, Path, description = "The tenant's id"), ("idp" = Uuid, Path, description = "The IdP's id")),
    responses((status = 204, description = "Removed"),
    (status = 404, description = "No such tenant or IdP", body = Problem, content_type = "application/problem+json"),
    (status = 409, description = "The tenant is frozen or archived", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path((tenant, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    caller.require(Scope::IdpWrite)?;
    let tenant = writable_by_path(&state, &caller, &tenant, TenantWrite::Operate).await?;
    registry::idps::delete(&state.pool, &caller.actor(), tenant.id, idp_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}
