//! The products catalog (`/v1/products`), tenants' subscriptions
//! (`/v1/tenants/{id}/products`) and what they resolve to (`/v1/tenants/{id}/entitlements`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use domain::product::{self, FeatureCheck, Manifest, Subscription};
use domain::{Scope, Slug};
use serde::Serialize;
use serde_json::{Map, Value};
use storage::products::{ProductRow, TenantProductRow};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::AppState;
use crate::config_schema::{SchemaVerdict, check_against_schema};
use crate::extract::{ApiJson, Caller, from_json_value};
use crate::problem::{ApiError, FieldError, Problem};
use crate::subscriptions::SubscriptionRequest;

pub use crate::entitlement_cache::{CHECK_TTL, EntitlementCache};

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/products", get(list_products))
        .route("/v1/products/{product}", get(get_product).put(put_product))
        .route("/v1/tenants/{id}/products", get(list_tenant_products))
        .route(
            "/v1/tenants/{id}/products/{product}",
            get(get_tenant_product)
                .put(put_tenant_product)
                .delete(delete_tenant_product),
        )
        .route("/v1/tenants/{id}/entitlements", get(entitlements))
        .route(
            "/v1/tenants/{id}/entitlements/{product}/{feature}",
            get(check),
        )
}

/// A published product.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProductView {
    /// The product id (slug rule).
    #[schema(example = "certifai")]
    id: String,
    /// The manifest: name, supports_projects, config_schema, default_config, features, plans.
    #[schema(value_type = Object, example = json!({"name": "Certifai", "supports_projects": true,
        "config_schema": {"type": "object", "properties": {"region": {"enum": ["eu", "us"]}}},
        "default_config": {"region": "eu"},
        "features": {"sso": {"type": "bool"}, "max_projects": {"type": "limit"}},
        "plans": {"free": {"sso": false, "max_projects": 1}, "enterprise": {"sso": true, "max_projects": null}}}))]
    manifest: Value,
    /// First published.
    created_at: DateTime<Utc>,
    /// Last published.
    updated_at: DateTime<Utc>,
}

impl From<ProductRow> for ProductView {
    fn from(row: ProductRow) -> Self {
        Self {
            id: row.id,
            manifest: row.manifest.0,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// A tenant's subscription to a product.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantProductView {
    /// The product id.
    product: String,
    /// Switched on or off.
    enabled: bool,
    /// The tenant's own config (the platform default is merged under it in entitlements).
    #[schema(value_type = Object)]
    config: Value,
    /// Feature values replacing the plan's.
    #[schema(value_type = Object)]
    feature_overrides: Map<String, Value>,
    /// First set.
    created_at: DateTime<Utc>,
    /// Last changed.
    updated_at: DateTime<Utc>,
}

impl From<TenantProductRow> for TenantProductView {
    fn from(row: TenantProductRow) -> Self {
        Self {
            product: row.product,
            enabled: row.enabled,
            config: row.config.0,
            feature_overrides: row.feature_overrides.0,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// One product's entitlement for a tenant.
#[derive(Debug, Serialize, ToSchema)]
pub struct EntitlementView {
    /// The product id.
    product: String,
    /// Whether the tenant may use it.
    enabled: bool,
    /// Why not, when not.
    reason: Option<String>,
    /// Default config with the tenant's merged over it.
    #[schema(value_type = Object)]
    config: Value,
    /// For each top-level config key: `tenant` or `default`.
    #[schema(value_type = Object)]
    config_sources: Value,
    /// Every feature's value: plan default, then the tenant's override.
    #[schema(value_type = Object)]
    features: Value,
}

/// The answer to a feature check.
#[derive(Debug, Serialize, ToSchema)]
pub struct FeatureCheckView {
    /// Whether the tenant may use the feature now.
    allowed: bool,
    /// For a limit feature: the number; null when unlimited or not a limit.
    limit: Option<i64>,
    /// Why, in words.
    reason: String,
}

fn product_id(raw: &str) -> Result<String, ApiError> {
    Slug::parse(raw)
        .map(String::from)
        .map_err(|_| ApiError::not_found("no such product"))
}

pub(crate) fn manifest_of(row: &ProductRow) -> Result<Manifest, ApiError> {
    serde_json::from_value(row.manifest.0.clone()).map_err(ApiError::internal)
}

/// Publishes a product manifest (creates or replaces it).
#[utoipa::path(put, path = "/v1/products/{product}", operation_id = "put_product", tag = "products",
    security(("bearer" = ["platform:admin"])), request_body(content = Object, description = "The manifest"),
    params(("product" = String, Path, description = "Product id (slug rule)")),
    responses(
    (status = 200, description = "Replaced", body = ProductView),
    (status = 201, description = "Created", body = ProductView),
    (status = 403, description = "Not a platform admin", body = Problem, content_type = "application/problem+json"),
    (status = 422, description = "Invalid manifest (pointer per problem)", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn put_product(
    State(state): State<AppState>,
    caller: Caller,
    Path(product): Path<String>,
    ApiJson(body): ApiJson<Value>,
) -> Result<Response, ApiError> {
    caller.require(Scope::PlatformAdmin)?;
    let id = product::catalog_id(&product)
        .map_err(|detail| ApiError::invalid_field("/product", detail))?;
    let manifest: Manifest = from_json_value(body.clone())?;
    let scope = manifest
        .provisioning
        .as_ref()
        .map(|plan| plan.scope_problems(id.as_str()))
        .unwrap_or_default();
    let mut errors: Vec<FieldError> = manifest
        .problems()
        .into_iter()
        .chain(scope)
        .map(|(pointer, detail)| FieldError { pointer, detail })
        .collect();
    let verdict = check_against_schema(
        manifest.config_schema.clone(),
        manifest.default_config.clone(),
        "/default_config",
    )
    .await?;
    match verdict {
        SchemaVerdict::NotASchema(error) => errors.push(FieldError {
            pointer: "/config_schema".to_owned(),
            detail: format!("is not a valid JSON Schema (draft 2020-12): {error}"),
        }),
        SchemaVerdict::Problems(problems) if errors.is_empty() => errors.extend(problems),
        SchemaVerdict::Problems(_) => {}
    }
    if !errors.is_empty() {
        return Err(ApiError::invalid(errors));
    }
    let (row, created) =
        registry::products::publish(&state.pool, &caller.actor(), &id, &manifest).await?;
    // This replica forgets at once; the others when the notification reaches them.
    state.entitlements.forget_product(&row.id);
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(ProductView::from(row))).into_response())
}

/// Lists the catalog.
#[utoipa::path(get, path = "/v1/products", operation_id = "list_products", tag = "products",
    security(("bearer" = ["products:read"])),
    responses((status = 200, description = "Every product", body = [ProductView])))]
pub(crate) async fn list_products(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<ProductView>>, ApiError> {
    caller.require(Scope::ProductsRead)?;
    Ok(Json(
        storage::products::list(&state.pool)
            .await?
            .into_iter()
            .map(ProductView::from)
            .collect(),
    ))
}

/// One product.
#[utoipa::path(get, path = "/v1/products/{product}", operation_id = "get_product", tag = "products",
    security(("bearer" = ["products:read"])), params(("product" = String, Path, description = "Product id")),
    responses((status = 200, description = "The product", body = ProductView),
    (status = 404, description = "No such product", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn get_product(
    State(state): State<AppState>,
    caller: Caller,
    Path(product): Path<String>,
) -> Result<Json<ProductView>, ApiError> {
    caller.require(Scope::ProductsRead)?;
    let row = storage::products::get(&state.pool, &product_id(&product)?)
        .await?
        .ok_or_else(|| ApiError::not_found("no such product"))?;
    Ok(Json(row.into()))
}

async fn product_row(state: &AppState, raw: &str) -> Result<ProductRow, ApiError> {
    storage::products::get(&state.pool, &product_id(raw)?)
        .await?
        .ok_or_else(|| ApiError::not_found("no such product"))
}

/// What is wrong with `subscription` to the product of `manifest`, pointers under `prefix`:
/// its config (merged over the default) against the product's schema, its overrides against
/// the declared features.
pub(crate) async fn subscription_problems(
    manifest: &Manifest,
    subscription: &Subscription,
    prefix: &str,
) -> Result<Vec<FieldError>, ApiError> {
    let mut errors: Vec<FieldError> = Vec::new();
    let config_pointer = format!("{prefix}/config");
    if subscription.config.is_object() {
        let merged = product::merge_patch(&manifest.default_config, &subscription.config);
        match check_against_schema(manifest.config_schema.clone(), merged, &config_pointer).await? {
            SchemaVerdict::NotASchema(error) => {
                return Err(ApiError::internal(format!(
                    "a stored config schema does not compile: {error}"
                )));
            }
            SchemaVerdict::Problems(problems) => errors.extend(problems),
        }
    } else {
        errors.push(FieldError {
            pointer: config_pointer,
            detail: "must be a JSON object".to_owned(),
        });
    }
    errors.extend(
        manifest
            .override_problems(&subscription.feature_overrides)
            .into_iter()
            .map(|(pointer, detail)| FieldError {
                pointer: format!("{prefix}{pointer}"),
                detail,
            }),
    );
    Ok(errors)
}

/// Sets a tenant's subscription to a product: enabled, config and feature overrides.
#[utoipa::path(put, path = "/v1/tenants/{id}/products/{product}", operation_id = "put_tenant_product", tag = "products",
    security(("bearer" = ["products:write"])), request_body = SubscriptionRequest,
    params(("id" = Uuid, Path, description = "The tenant's id"), ("product" = String, Path, description = "Product id")),
    responses((status = 200, description = "Set", body = TenantProductView),
    (status = 403, description = "A tenant principal subscribing, switching or overriding (errors names each part)", body = Problem, content_type = "application/problem+json"),
    (status = 404, description = "No such tenant or product", body = Problem, content_type = "application/problem+json"),
    (status = 409, description = "The tenant is archived, or frozen (tenant principals)", body = Problem, content_type = "application/problem+json"),
    (status = 422, description = "Config violates the product's schema, or unknown/mistyped overrides; a pointer each", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn put_tenant_product(
    State(state): State<AppState>,
    caller: Caller,
    Path((tenant, product)): Path<(String, String)>,
    ApiJson(body): ApiJson<Value>,
) -> Result<Json<TenantProductView>, ApiError> {
    caller.require(Scope::ProductsWrite)?;
    let write = crate::tenants::write_by(&caller);
    let tenant = crate::tenants::writable_by_path(&state, &caller, &tenant, write).await?;
    let product = product_row(&state, &product).await?;
    let manifest = manifest_of(&product)?;
    let request: SubscriptionRequest = from_json_value(body)?;
    let request =
        registry::products::to_set(&state.pool, tenant.id, &product.id, request.into(), write)
            .await?;
    let errors = subscription_problems(&manifest, &request, "").await?;
    if !errors.is_empty() {
        return Err(ApiError::invalid(errors));
    }
    let row = registry::products::subscribe(
        &state.pool,
        &caller.actor(),
        tenant.id,
        &product.id,
        write,
        &request,
    )
    .await?;
    state.tenant_changed(tenant.id, &[]).await;
    Ok(Json(row.into()))
}

/// A tenant's subscriptions.
#[utoipa::path(get, path = "/v1/tenants/{id}/products", operation_id = "list_tenant_products", tag = "products",
    security(("bearer" = ["products:read"])), params(("id" = Uuid, Path, description = "The tenant's id")),
    responses((status = 200, description = "Its subscriptions", body = [TenantProductView]),
    (status = 404, description = "No such tenant", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn list_tenant_products(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant): Path<String>,
) -> Result<Json<Vec<TenantProductView>>, ApiError> {
    caller.require(Scope::ProductsRead)?;
    let tenant = crate::tenants::visible_by_path(&state, &caller, &tenant).await?;
    let rows = storage::products::for_tenant(&state.pool, tenant.id).await?;
    Ok(Json(
        rows.into_iter().map(TenantProductView::from).collect(),
    ))
}

/// One of a tenant's subscriptions.
#[utoipa::path(get, path = "/v1/tenants/{id}/products/{product}", operation_id = "get_tenant_product", tag = "products",
    security(("bearer" = ["products:read"])),
    params(("id" = Uuid, Path, description = "The tenant's id"), ("product" = String, Path, description = "Product id")),
    responses((status = 200, description = "The subscription", body = TenantProductView),
    (status = 404, description = "No such tenant or subscription", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn get_tenant_product(
    State(state): State<AppState>,
    caller: Caller,
    Path((tenant, product)): Path<(String, String)>,
) -> Result<Json<TenantProductView>, ApiError> {
    caller.require(Scope::ProductsRead)?;
    let tenant = crate::tenants::visible_by_path(&state, &caller, &tenant).await?;
    storage::products::for_tenant(&state.pool, tenant.id)
        .await?
        .into_iter()
        .find(|row| row.product == product)
        .map(|row| Json(row.into()))
        .ok_or_else(|| ApiError::not_found("the tenant has no such product"))
}

/// Removes a tenant's subscription.
#[utoipa::path(delete, path = "/v1/tenants/{id}/products/{product}", operation_id = "delete_tenant_product", tag = "products",
    security(("bearer" = ["products:write"])),
    params(("id" = Uuid, Path, description = "The tenant's id"), ("product" = String, Path, description = "Product id")),
    responses((status = 204, description = "Removed"),
    (status = 403, description = "A tenant principal (subscriptions are platform decisions)", body = Problem, content_type = "application/problem+json"),
    (status = 404, description = "No such tenant or subscription", body = Problem, content_type = "application/problem+json"),
    (status = 409, description = "The tenant is archived", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn delete_tenant_product(
    State(state): State<AppState>,
    caller: Caller,
    Path((tenant, product)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    caller.require(Scope::ProductsWrite)?;
    let write = crate::tenants::write_by(&caller);
    let tenant = crate::tenants::writable_by_path(&state, &caller, &tenant, write).await?;
    registry::products::unsubscribe(&state.pool, &caller.actor(), tenant.id, &product, write)
        .await?;
    state.tenant_changed(tenant.id, &[]).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Every product of the catalog, resolved for the tenant: plan defaults, overrides, default
/// config merged under the tenant's, and nothing at all for a frozen or archived tenant.
#[utoipa::path(get, path = "/v1/tenants/{id}/entitlements", operation_id = "list_entitlements", tag = "products",
    security(("bearer" = ["products:read"])), params(("id" = Uuid, Path, description = "The tenant's id")),
    responses((status = 200, description = "One entry per product", body = [EntitlementView]),
    (status = 404, description = "No such tenant", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn entitlements(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant): Path<String>,
) -> Result<Json<Vec<EntitlementView>>, ApiError> {
    caller.require(Scope::ProductsRead)?;
    let tenant = crate::tenants::visible_by_path(&state, &caller, &tenant).await?;
    let subscriptions = storage::products::for_tenant(&state.pool, tenant.id).await?;
    let mut views = Vec::new();
    for row in storage::products::list(&state.pool).await? {
        let manifest = manifest_of(&row)?;
        let own = subscriptions
            .iter()
            .find(|subscription| subscription.product == row.id)
            .map(TenantProductRow::subscription);
        let resolved = product::resolve(&manifest, &tenant.plan, tenant.status, own.as_ref());
        views.push(EntitlementView {
            product: row.id,
            enabled: resolved.enabled,
            reason: resolved.reason,
            config: resolved.config,
            config_sources: serde_json::to_value(resolved.config_sources)
                .map_err(ApiError::internal)?,
            features: serde_json::to_value(resolved.features).map_err(ApiError::internal)?,
        });
    }
    Ok(Json(views))
}

async fn resolve_check(
    state: &AppState,
    tenant: Uuid,
    product: &str,
    feature: &str,
) -> Result<FeatureCheck, ApiError> {
    let tenant = storage::tenants::get(&state.pool, tenant)
        .await?
        .ok_or_else(|| ApiError::not_found("no such tenant"))?;
    let row = product_row(state, product).await?;
    let manifest = manifest_of(&row)?;
    let subscriptions = storage::products::for_tenant(&state.pool, tenant.id).await?;
    let own = subscriptions
        .iter()
        .find(|subscription| subscription.product == row.id)
        .map(TenantProductRow::subscription);
    let resolved = product::resolve(&manifest, &tenant.plan, tenant.status, own.as_ref());
    product::check_feature(&manifest, &resolved, feature)
        .ok_or_else(|| ApiError::not_found("the product has no such feature"))
}

/// The hot path for products: may this tenant use this feature, and how much? Cached per
/// replica until the tenant or the product changes, on any replica.
#[utoipa::path(get, path = "/v1/tenants/{id}/entitlements/{product}/{feature}", operation_id = "check_feature", tag = "products",
    security(("bearer" = ["products:read"])),
    params(("id" = Uuid, Path, description = "The tenant's id"), ("product" = String, Path, description = "Product id"),
           ("feature" = String, Path, description = "Feature name")),
    responses((status = 200, description = "The answer", body = FeatureCheckView),
    (status = 404, description = "No such tenant, product or feature", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn check(
    State(state): State<AppState>,
    caller: Caller,
    Path((tenant, product, feature)): Path<(String, String, String)>,
) -> Result<Json<FeatureCheckView>, ApiError> {
    caller.require(Scope::ProductsRead)?;
    let tenant: Uuid = tenant
        .parse()
        .map_err(|_| ApiError::not_found("no such tenant"))?;
    if !caller.principal.can_access_tenant(Some(tenant)) {
        return Err(ApiError::not_found("no such tenant"));
    }
    // Names that break the rules cannot exist: they never reach the cache or the database.
    if Slug::parse(&product).is_err() {
        return Err(ApiError::not_found("no such product"));
    }
    if !product::is_feature_name(&feature) {
        return Err(ApiError::not_found("the product has no such feature"));
    }
    let key = (tenant, product.clone(), feature.clone());
    let answer = state
        .entitlements
        .answer(key, resolve_check(&state, tenant, &product, &feature))
        .await?;
    Ok(Json(FeatureCheckView {
        allowed: answer.allowed,
        limit: answer.limit,
        reason: answer.reason.clone(),
    }))
}
