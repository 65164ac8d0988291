//! A drop-in for Retraced's publisher API under `/auditlog` (Retraced's default endpoint
//! path), so Retraced's official clients work by changing their endpoint: publishing
//! (`event`, `event/bulk`) with the hash the clients check, the GraphQL `search` they send,
//! and viewer tokens. The Retraced project is the registry's product: the caller's API key
//! must belong to the product named in the path. Events are the native audit log's.

pub(crate) mod graphql;
pub(crate) mod publish;
pub(crate) mod viewer;

use axum::Router;
use axum::routing::{get, post};
use domain::Scope;

use crate::AppState;
use crate::extract::Caller;
use crate::problem::ApiError;

/// Where Retraced's API lives; requests under it may authenticate Retraced's way
/// (`Authorization: token=<key>`, `Token token=<key>`) as well as with Bearer.
pub(crate) const PREFIX: &str = "/auditlog/";

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/auditlog/publisher/v1/project/{projectId}/event",
            post(publish::event),
        )
        .route(
            "/auditlog/publisher/v1/project/{projectId}/event/bulk",
            post(publish::bulk),
        )
        .route(
            "/auditlog/publisher/v1/project/{projectId}/graphql",
            post(graphql::search),
        )
        .route(
            "/auditlog/publisher/v1/project/{projectId}/viewertoken",
            get(viewer::issue),
        )
}

/// 403 unless `caller` holds `scope` and belongs to the product `project_id` names.
fn for_project(caller: &Caller, project_id: &str, scope: Scope) -> Result<(), ApiError> {
    caller.require(scope)?;
    if caller.principal.product.as_deref() == Some(project_id) {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!(
            "this credential does not belong to project (product) \"{project_id}\"; use an \
             API key made with product \"{project_id}\""
        )))
    }
}
