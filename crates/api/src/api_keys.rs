//! `/v1/api-keys`: create, list, get, revoke and rotate API keys.

use auth::keys;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use domain::{Scope, TenantWrite};
use registry::api_keys::{CreateKey, IssuedKey};
use serde::{Deserialize, Serialize};
use storage::api_keys::{ApiKeyRecord, ListFilter};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::AppState;
use crate::extract::{ApiJson, ApiQuery, Caller};
use crate::pagination::{self, PageQuery};
use crate::problem::{ApiError, FieldError, Problem};

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/api-keys", post(create).get(list))
        .route("/v1/api-keys/{id}", get(get_one))
        .route("/v1/api-keys/{id}/revoke", post(revoke))
        .route("/v1/api-keys/{id}/rotate", post(rotate))
}

/// An API key as it may be shown: never its hash or secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyView {
    /// The key's id.
    id: Uuid,
    /// The tenant the key acts for; null for a platform key.
    tenant_id: Option<Uuid>,
    /// Its label.
    #[schema(example = "billing sync")]
    name: String,
    /// The public part of the key (the third `_`-separated part).
    #[schema(example = "3f9c2a7b1d4e5f60")]
    prefix: String,
    /// The scopes granted.
    #[schema(example = json!(["tenants:read"]))]
    scopes: Vec<String>,
    /// The product the key belongs to: the `product` of the audit events it ingests.
    #[schema(example = "billing")]
    product: Option<String>,
    /// When it stops working, if ever.
    expires_at: Option<DateTime<Utc>>,
    /// When it was last used (recorded at most once a minute).
    last_used_at: Option<DateTime<Utc>>,
    /// When it was revoked, if it was.
    revoked_at: Option<DateTime<Utc>>,
    /// Until when the secret it had before its last rotation still works, if it does.
    previous_valid_until: Option<DateTime<Utc>>,
    /// Creation time.
    created_at: DateTime<Utc>,
    /// Last change.
    updated_at: DateTime<Utc>,
}

impl From<ApiKeyRecord> for ApiKeyView {
    fn from(record: ApiKeyRecord) -> Self {
        Self {
            id: record.id,
            tenant_id: record.tenant_id,
            name: record.name,
            prefix: record.prefix,
            scopes: record.scopes,
            product: record.product,
            expires_at: record.expires_at,
            last_used_at: record.last_used_at,
            revoked_at: record.revoked_at,
            previous_valid_until: record.previous_valid_until,
            created_at: record.created_at,
            updated_at: record.updated_at,
        }
    }
}

/// A key with its secret, in the one response that shows it (creation or rotation).
#[derive(Debug, Serialize, ToSchema)]
pub struct IssuedKeyView {
    /// The key's record.
    #[serde(flatten)]
    record: ApiKeyView,
    /// The whole key, `tr_<env>_<prefix>_<secret>`: store it now, it is never shown again.
    #[schema(example = "tr_prod_3f9c2a7b1d4e5f60_…")]
    key: String,
}

impl From<IssuedKey> for IssuedKeyView {
    fn from(issued: IssuedKey) -> Self {
        Self {
            key: keys::reveal(&issued.key).to_owned(),
            record: issued.record.into(),
        }
    }
}

/// A page of keys.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyPage {
    /// The keys, oldest first.
    items: Vec<ApiKeyView>,
    /// Pass as `cursor` for the next page; null on the last page.
    next_cursor: Option<String>,
}

/// The body of `POST /v1/api-keys`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKeyRequest {
    /// A label, 1 to 200 characters.
    #[schema(example = "billing sync")]
    name: String,
    /// The tenant the key acts for; omit for a platform key (platform admins only).
    tenant_id: Option<Uuid>,
    /// Scopes to grant: a subset of the caller's own.
    #[schema(example = json!(["tenants:read"]))]
    scopes: Vec<String>,
    /// When the key stops working (RFC 3339, in the future); omit for never. A caller whose
    /// own credential expires must give one no later than its own.
    expires_at: Option<DateTime<Utc>>,
    /// The product the key belongs to (a product id such as `billing`); the audit events it
    /// ingests are recorded under it. Omit and they are recorded under `api_key:<id>`. Set
    /// by platform principals only; a caller with a product of its own grants only that one.
    #[schema(example = "billing")]
    product: Option<String>,
}

/// Filters of `GET /v1/api-keys`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only this tenant's keys (tenant callers always see only their own).
    tenant_id: Option<Uuid>,
    /// Include revoked keys (default false).
    include_revoked: Option<bool>,
    /// Items per page, 1 to 200 (default 50).
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::not_found("no such API key"))
}

fn parse_scopes(scopes: &[String]) -> Result<domain::Scopes, ApiError> {
    let mut errors = Vec::new();
    let mut parsed = Vec::new();
    for (index, label) in scopes.iter().enumerate() {
        match label.parse::<Scope>() {
            Ok(scope) => parsed.push(scope),
            Err(error) => errors.push(FieldError {
                pointer: format!("/scopes/{index}"),
                detail: error.to_string(),
            }),
        }
    }
    if errors.is_empty() {
        Ok(parsed.into_iter().collect())
    } else {
        Err(ApiError::invalid(errors))
    }
}

/// Creates a key and returns it, with its secret, this once.
#[utoipa::path(post, path = "/v1/api-keys", operation_id = "create_api_key", tag = "api keys", security(("bearer" = ["api_keys:manage"])),
    request_body = CreateApiKeyRequest, responses(
    (status = 201, description = "Created; `key` is shown only now", body = IssuedKeyView,
     headers(("location" = String, description = "The key's URL"))),
    (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
    (status = 401, description = "No valid credentials", body = Problem, content_type = "application/problem+json"),
    (status = 403, description = "Missing api_keys:manage, or the key would reach further than the caller (scopes it lacks, a platform key from a non-admin, a product it may not assign, an expiry after its own); the detail names each", body = Problem, content_type = "application/problem+json"),
    (status = 409, description = "The key's tenant is frozen or archived", body = Problem, content_type = "application/problem+json"),
    (status = 415, description = "Body is not JSON", body = Problem, content_type = "application/problem+json"),
    (status = 422, description = "Invalid fields (unknown scope, past expiry, unknown tenant, a product not in the catalog)", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<CreateApiKeyRequest>,
) -> Result<impl IntoResponse, ApiError> {
    caller.require(Scope::ApiKeysManage)?;
    let scopes = parse_scopes(&request.scopes)?;
    if let Some(tenant) = request.tenant_id {
        crate::tenants::permit_if_known(&state, &caller, tenant, TenantWrite::Operate).await?;
    }
    let issued = registry::api_keys::create(
        &state.pool,
        &caller.actor(),
        &state.settings.key_env,
        CreateKey {
            name: request.name,
            tenant_id: request.tenant_id,
            scopes,
            expires_at: request.expires_at,
            product: request.product,
        },
    )
    .await?;
    let location = format!("/v1/api-keys/{}", issued.record.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(IssuedKeyView::from(issued)),
    ))
}

/// Lists the keys the caller may see, oldest first, a page at a time.
#[utoipa::path(get, path = "/v1/api-keys", operation_id = "list_api_keys", tag = "api keys", security(("bearer" = ["api_keys:manage"])),
    params(ListParams), responses(
    (status = 200, description = "A page of keys", body = ApiKeyPage),
    (status = 401, description = "No valid credentials", body = Problem, content_type = "application/problem+json"),
    (status = 403, description = "Missing api_keys:manage", body = Problem, content_type = "application/problem+json"),
    (status = 422, description = "Invalid filter, limit or cursor", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Json<ApiKeyPage>, ApiError> {
    caller.require(Scope::ApiKeysManage)?;
    let (limit, after) = PageQuery {
        limit: params.limit,
        cursor: params.cursor,
    }
    .resolve()?;
    let records = registry::api_keys::list(
        &state.pool,
        &caller.actor(),
        ListFilter {
            tenant_id: params.tenant_id,
            platform_only: false,
            include_revoked: params.include_revoked.unwrap_or(false),
            after,
            limit: limit + 1,
        },
    )
    .await?;
    let (records, next_cursor) =
        pagination::page(records, limit, |record| (record.created_at, record.id));
    Ok(Json(ApiKeyPage {
        items: records.into_iter().map(ApiKeyView::from).collect(),
        next_cursor,
    }))
}

/// One key.
#[utoipa::path(get, path = "/v1/api-keys/{id}", operation_id = "get_api_key", tag = "api keys", security(("bearer" = ["api_keys:manage"])),
    params(("id" = Uuid, Path, description = "The key's id")), responses(
    (status = 200, description = "The key", body = ApiKeyView),
    (status = 401, description = "No valid credentials", body = Problem, content_type = "application/problem+json"),
    (status = 403, description = "Missing api_keys:manage", body = Problem, content_type = "application/problem+json"),
    (status = 404, description = "No such key, or not the caller's tenant's", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn get_one(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<ApiKeyView>, ApiError> {
    caller.require(Scope::ApiKeysManage)?;
    let record = registry::api_keys::get(&state.pool, &caller.actor(), parse_id(&id)?).await?;
    Ok(Json(record.into()))
}

/// Revokes a key everywhere within a second (idempotent: a revoked key answers as it is);
/// only a caller that could have granted the key, or the key itself, may.
#[utoipa::path(post, path = "/v1/api-keys/{id}/revoke", operation_id = "revoke_api_key", tag = "api keys", security(("bearer" = ["api_keys:manage"])),
    params(("id" = Uuid, Path, description = "The key's id")), responses(
    (status = 200, description = "Revoked", body = ApiKeyView),
    (status = 401, description = "No valid credentials", body = Problem, content_type = "application/problem+json"),
    (status = 403, description = "Missing api_keys:manage, or the caller could not have granted this key (its scopes, product or expiry reach further, or it holds scopes this server does not know); the detail names each", body = Problem, content_type = "application/problem+json"),
    (status = 404, description = "No such key, or not the caller's tenant's", body = Problem, content_type = "application/problem+json"),
    (status = 409, description = "The key's tenant is frozen and the caller is no platform principal (/problems/tenant-frozen)", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<ApiKeyView>, ApiError> {
    caller.require(Scope::ApiKeysManage)?;
    let record = registry::api_keys::revoke(&state.pool, &caller.actor(), parse_id(&id)?).await?;
    state.verifier.forget_key(record.id);
    Ok(Json(record.into()))
}

/// The body of a rotation (optional).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateBody {
    /// Seconds the old secret keeps working beside the new one (0, the default, ends it at
    /// once; at most 604800, a week).
    #[serde(default)]
    #[schema(example = 3600)]
    grace_seconds: i64,
}

/// Gives a key a new secret (same id and scopes); the old secret stops working at once, or
/// after `grace_seconds`. Only a caller that could have granted the key may, as the answer
/// carries its secret.
#[utoipa::path(post, path = "/v1/api-keys/{id}/rotate", operation_id = "rotate_api_key", tag = "api keys", security(("bearer" = ["api_keys:manage"])),
    params(("id" = Uuid, Path, description = "The key's id")),
    request_body(content = Option<RotateBody>, description = "Optional: a grace period for the old secret"),
    responses(
    (status = 200, description = "Rotated; `key` is shown only now", body = IssuedKeyView),
    (status = 401, description = "No valid credentials", body = Problem, content_type = "application/problem+json"),
    (status = 403, description = "Missing api_keys:manage, or the caller could not have granted this key (its scopes, product or expiry reach further); the detail names each", body = Problem, content_type = "application/problem+json"),
    (status = 404, description = "No such key, or not the caller's tenant's", body = Problem, content_type = "application/problem+json"),
    (status = 409, description = "The key is revoked, or its tenant is frozen or archived", body = Problem, content_type = "application/problem+json"),
    (status = 422, description = "grace_seconds out of 0 to 604800", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn rotate(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    request: axum::extract::Request,
) -> Result<Json<IssuedKeyView>, ApiError> {
    caller.require(Scope::ApiKeysManage)?;
    let body: RotateBody = crate::extract::optional_json(request, &state)
        .await?
        .unwrap_or_default();
    let current = registry::api_keys::get(&state.pool, &caller.actor(), parse_id(&id)?).await?;
    if let Some(tenant) = current.tenant_id {
        crate::tenants::permit_if_known(&state, &caller, tenant, TenantWrite::Operate).await?;
    }
    let issued = registry::api_keys::rotate(
        &state.pool,
        &caller.actor(),
        &state.settings.key_env,
        current.id,
        body.grace_seconds,
    )
    .await?;
    state.verifier.forget_key(issued.record.id);
    Ok(Json(issued.into()))
}
