//! `GET /v1/me`: who the caller is.

use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::AppState;
use crate::extract::Caller;
use crate::problem::Problem;

/// The authenticated caller.
#[derive(Debug, Serialize, ToSchema)]
pub struct MeView {
    /// `platform_key`, `tenant_key`, `oidc_user` or `viewer_token`.
    #[schema(example = "tenant_key")]
    kind: String,
    /// The tenant the caller is confined to; null for platform-wide callers.
    tenant_id: Option<Uuid>,
    /// What the caller may do.
    #[schema(example = json!(["tenants:read"]))]
    scopes: Vec<String>,
    /// The API key used, if any.
    key_id: Option<Uuid>,
    /// The OIDC subject, if any.
    subject: Option<String>,
    /// The product the API key belongs to, if it names one.
    product: Option<String>,
}

pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/v1/me", get(me))
}

/// The caller's principal: kind, tenant, scopes, key id, subject and product.
#[utoipa::path(get, path = "/v1/me", tag = "auth", security(("bearer" = [])), responses(
    (status = 200, description = "The caller", body = MeView),
    (status = 401, description = "No valid credentials", body = Problem, content_type = "application/problem+json"),
    (status = 429, description = "The address started too many uncached key verifications this second (Retry-After)", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn me(caller: Caller) -> Json<MeView> {
    let principal = caller.principal;
    Json(MeView {
        kind: principal.kind.as_str().to_owned(),
        tenant_id: principal.tenant_id,
        scopes: principal.scopes.labels(),
        key_id: principal.key_id,
        subject: principal.subject,
        product: principal.product,
    })
}
