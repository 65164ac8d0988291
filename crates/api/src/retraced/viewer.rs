//! Retraced's `viewertoken`: a short-lived token for an embedded log viewer, reading one
//! tenant's audit log (of the caller's product) as a Bearer on the registry's audit search.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, Uri, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use domain::Scope;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::audit_events::{NO_SUCH_TENANT, visible_tenant};
use crate::extract::Caller;
use crate::problem::{ApiError, Problem};

/// Parameters of `viewertoken`, as Retraced's clients send them.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ViewerQuery {
    /// The tenant whose log the viewer reads, by id or slug.
    group_id: String,
    /// Who views, in the product's words (recorded; the token's subject).
    actor_id: String,
    /// `true` or `false` (Retraced's; recorded, grants nothing more).
    is_admin: Option<String>,
    /// Retraced's action for viewing the log; accepted, not used.
    view_log_action: Option<String>,
}

/// What `viewertoken` answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct ViewerToken {
    /// A Bearer token for `GET /v1/audit/events` and its export, reading this tenant's
    /// events of this product only.
    token: String,
    /// When it stops working (15 minutes after issue).
    expires_at: DateTime<Utc>,
}

/// Issues a viewer token: read only, one tenant (`group_id`), the caller's product, 15
/// minutes. Only an API key of project `projectId` with `audit:read` may ask; the token
/// stops working with that key and is recorded in the tenant's audit trail.
#[utoipa::path(get, path = "/auditlog/publisher/v1/project/{projectId}/viewertoken",
    operation_id = "retraced_viewer_token", tag = "retraced",
    security(("retraced_token" = ["audit:read"]), ("bearer" = ["audit:read"])),
    params(("projectId" = String, Path, description = "The Retraced project: the product of the caller's API key"), ViewerQuery),
    responses((status = 200, description = "The token (shown once)", body = ViewerToken),
    (status = 403, description = "Missing audit:read, the key's product is not projectId, or the caller is not an API key", body = Problem, content_type = "application/problem+json"),
    (status = 422, description = "No such tenant among those the key may read (another tenant's answers alike), or is_admin not true or false", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn issue(
    State(state): State<AppState>,
    Path(project_id): Path<String>,
    caller: Caller,
    uri: Uri,
) -> Result<Response, ApiError> {
    super::for_project(&caller, &project_id, Scope::AuditRead)?;
    let params: ViewerQuery = crate::extract::query(&uri)?;
    let _ = params.view_log_action;
    let is_admin = match params.is_admin.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => {
            return Err(ApiError::invalid_field(
                "/is_admin",
                "must be true or false",
            ));
        }
    };
    if params.actor_id.trim().is_empty() || params.actor_id.chars().count() > 255 {
        return Err(ApiError::invalid_field(
            "/actor_id",
            "must be 1 to 255 characters",
        ));
    }
    let tenant_id = visible_tenant(&state, &caller, &params.group_id)
        .await?
        .ok_or_else(|| ApiError::invalid_field("/group_id", NO_SUCH_TENANT))?;
    let issued = registry::viewer_tokens::issue(
        &state.pool,
        &caller.actor(),
        registry::viewer_tokens::IssueViewerToken {
            tenant_id,
            actor_id: params.actor_id,
            is_admin,
        },
    )
    .await?;
    let mut response = Json(ViewerToken {
        token: issued.token,
        expires_at: issued.expires_at,
    })
    .into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}
