//! `/v1/tenants/{id}/former-slugs`: the slugs a tenant moved away from. Each still leads to
//! the tenant (`GET /v1/tenants/by-slug/{former}` answers with a canonical link) and no other
//! tenant can take it, until a platform principal releases it.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use domain::Scope;
use serde::Serialize;
use utoipa::ToSchema;

use super::{require_platform, visible_by_path};
use crate::AppState;
use crate::extract::Caller;
use crate::problem::{ApiError, Problem};

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/tenants/{id}/former-slugs", get(list))
        .route("/v1/tenants/{id}/former-slugs/{slug}", delete(release))
}

/// A slug the tenant used to have.
#[derive(Debug, Serialize, ToSchema)]
pub struct FormerSlugView {
    /// The slug.
    #[schema(example = "acme")]
    slug: String,
    /// When the tenant moved away from it.
    retired_at: DateTime<Utc>,
}

/// The tenant's former slugs, newest first.
#[utoipa::path(get, path = "/v1/tenants/{id}/former-slugs", operation_id = "list_former_slugs", tag = "tenants",
    security(("bearer" = ["tenants:read"])),
    params(("id" = Uuid, Path, description = "The tenant's id")),
    responses((status = 200, description = "Its former slugs", body = [FormerSlugView]),
    (status = 404, description = "No such tenant, or not the caller's", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Vec<FormerSlugView>>, ApiError> {
    caller.require(Scope::TenantsRead)?;
    let tenant = visible_by_path(&state, &caller, &id).await?;
    Ok(Json(
        storage::tenant_names::former(&state.pool, tenant.id)
            .await?
            .into_iter()
            .map(|former| FormerSlugView {
                slug: former.slug,
                retired_at: former.retired_at,
            })
            .collect(),
    ))
}

/// Releases a former slug (platform principals only): it stops leading to the tenant and
/// any tenant may take it.
#[utoipa::path(delete, path = "/v1/tenants/{id}/former-slugs/{slug}", operation_id = "release_former_slug", tag = "tenants",
    security(("bearer" = ["tenants:write"])),
    params(("id" = Uuid, Path, description = "The tenant's id"), ("slug" = String, Path, description = "The former slug")),
    responses((status = 204, description = "Released"),
    (status = 403, description = "A tenant principal, or missing tenants:write", body = Problem, content_type = "application/problem+json"),
    (status = 404, description = "No such tenant, or no such former slug", body = Problem, content_type = "application/problem+json"),
    (status = 409, description = "The tenant is archived", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn release(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, slug)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    caller.require(Scope::TenantsWrite)?;
    let tenant = visible_by_path(&state, &caller, &id).await?;
    require_platform(&caller, "releasing a former slug")?;
    registry::tenants::release_former_slug(&state.pool, &caller.actor(), tenant.id, &slug).await?;
    state.tenant_changed(tenant.id, &[&slug]).await;
    Ok(StatusCode::NO_CONTENT)
}
