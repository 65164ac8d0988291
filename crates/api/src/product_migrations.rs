//! A product's tenant-schema migrations (`/v1/products/{product}/migrations`): registered
//! append-only and checksummed, managed by a platform admin or by the product's own
//! platform key.

use axum::extract::{DefaultBodyLimit, Path, State};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use domain::Scope;
use domain::product;
use registry::product_migrations::{self, Listed};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use storage::product_migrations::MigrationRow;
use utoipa::ToSchema;

use crate::AppState;
use crate::extract::{ApiJson, Caller, from_json_value};
use crate::problem::{ApiError, FieldError, Problem};

/// The largest list accepted. The list is append-only and sent whole each time, so the
/// service-wide 1 MiB would end a product's history at its first MiB of SQL for good.
pub const MIGRATIONS_BODY_LIMIT: usize = 32 * 1024 * 1024;

pub(crate) fn router() -> Router<AppState> {
    Router::new().route(
        "/v1/products/{product}/migrations",
        get(list)
            .put(register)
            .layer(DefaultBodyLimit::max(MIGRATIONS_BODY_LIMIT)),
    )
}

/// A migration to register.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MigrationInput {
    /// Its version: 1 to 2147483647, increasing along the list.
    #[schema(example = 1)]
    version: i64,
    /// A name people recognise (1 to 200 characters).
    #[schema(example = "create_documents")]
    name: String,
    /// The SQL, run inside the tenant's schema (up to 256 KiB).
    #[schema(example = "CREATE TABLE documents (id uuid PRIMARY KEY, title text NOT NULL)")]
    sql: String,
}

/// A registered migration.
#[derive(Debug, Serialize, ToSchema)]
pub struct MigrationView {
    /// Its version.
    version: i32,
    /// Its name.
    name: String,
    /// The SHA-256 of its SQL, hex.
    checksum: String,
    /// Its SQL.
    sql: String,
    /// When it was registered.
    registered_at: DateTime<Utc>,
}

/// Every registered migration of a product, in version order.
#[derive(Debug, Serialize, ToSchema)]
pub struct MigrationList {
    /// The migrations.
    items: Vec<MigrationView>,
    /// How many this request registered (0 for a read, or the same list sent again).
    added: usize,
    /// The fleet migration taking the new ones to every tenant the product has provisioned
    /// (`GET /v1/operations/{id}`), when some were added and the plan has a migrations step.
    #[serde(skip_serializing_if = "Option::is_none")]
    operation_id: Option<uuid::Uuid>,
}

fn list_of(
    rows: Vec<MigrationRow>,
    added: usize,
    operation_id: Option<uuid::Uuid>,
) -> MigrationList {
    MigrationList {
        items: rows
            .into_iter()
            .map(|row| MigrationView {
                version: row.version,
                name: row.name,
                checksum: row.checksum,
                sql: row.sql,
                registered_at: row.registered_at,
            })
            .collect(),
        added,
        operation_id,
    }
}

/// 403 unless the caller is a platform admin, or a platform principal holding `scope` whose
/// key belongs to `product`.
pub(crate) fn require_product_manager(
    caller: &Caller,
    product: &str,
    scope: Scope,
) -> Result<(), ApiError> {
    let principal = &caller.principal;
    let own_product = principal.tenant_id.is_none()
        && principal.allows(scope)
        && principal.product.as_deref() == Some(product);
    if principal.allows(Scope::PlatformAdmin) && principal.tenant_id.is_none() || own_product {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!(
            "this requires platform:admin, or {scope} on a platform key of product {product}"
        )))
    }
}

fn product_id(raw: &str) -> Result<domain::Slug, ApiError> {
    product::catalog_id(raw).map_err(|_| ApiError::not_found("no such product"))
}

/// Registers a product's tenant-schema migrations: the whole list, registered ones
/// unchanged, new ones after them.
#[utoipa::path(put, path = "/v1/products/{product}/migrations", operation_id = "register_product_migrations", tag = "products",
    security(("bearer" = ["platform:admin"]), ("bearer" = ["products:write"])),
    params(("product" = String, Path, description = "Product id")),
    request_body = [MigrationInput],
    responses((status = 200, description = "Every registered migration, and how many this request added", body = MigrationList),
    (status = 403, description = "Neither a platform admin nor the product's own platform key", body = Problem, content_type = "application/problem+json"),
    (status = 404, description = "No such product", body = Problem, content_type = "application/problem+json"),
    (status = 409, description = "A registered migration is changed, missing, or a new one comes before it (errors names it)", body = Problem, content_type = "application/problem+json"),
    (status = 422, description = "Invalid list (pointer per problem)", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn register(
    State(state): State<AppState>,
    caller: Caller,
    Path(product): Path<String>,
    ApiJson(body): ApiJson<Value>,
) -> Result<Json<MigrationList>, ApiError> {
    let id = product_id(&product)?;
    require_product_manager(&caller, id.as_str(), Scope::ProductsWrite)?;
    let inputs: Vec<MigrationInput> = from_json_value(body)?;
    let listed: Vec<Listed> = inputs
        .into_iter()
        .map(|input| Listed {
            version: input.version,
            name: input.name,
            sql: input.sql,
        })
        .collect();
    let listed = product_migrations::check(listed).map_err(|problems| {
        ApiError::invalid(
            problems
                .into_iter()
                .map(|(pointer, detail)| FieldError { pointer, detail })
                .collect(),
        )
    })?;
    let registration =
        product_migrations::register(&state.pool, &caller.actor(), &id, &listed).await?;
    Ok(Json(list_of(
        registration.migrations,
        registration.added,
        registration.operation_id,
    )))
}

/// Every registered migration of a product, in version order.
#[utoipa::path(get, path = "/v1/products/{product}/migrations", operation_id = "list_product_migrations", tag = "products",
    security(("bearer" = ["platform:admin"]), ("bearer" = ["products:read"])),
    params(("product" = String, Path, description = "Product id")),
    responses((status = 200, description = "The migrations", body = MigrationList),
    (status = 403, description = "Neither a platform admin nor the product's own platform key", body = Problem, content_type = "application/problem+json"),
    (status = 404, description = "No such product", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(product): Path<String>,
) -> Result<Json<MigrationList>, ApiError> {
    let id = product_id(&product)?;
    require_product_manager(&caller, id.as_str(), Scope::ProductsRead)?;
    if storage::products::get(&state.pool, id.as_str())
        .await?
        .is_none()
    {
        return Err(ApiError::not_found("no such product"));
    }
    let rows = storage::product_migrations::list_on_pool(&state.pool, id.as_str()).await?;
    Ok(Json(list_of(rows, 0, None)))
}
