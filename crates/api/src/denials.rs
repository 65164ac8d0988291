//! Every refused request leaves an audit record: 401 (`auth.denied`, nobody identified)
//! and 403 (`auth.forbidden`, with the principal that was refused). Repeated failures from
//! one address are throttled before they get here (429), which also bounds these records.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use uuid::Uuid;

use crate::AppState;
use crate::problem::Problem;

/// Where the `Caller` extractor leaves the authenticated principal, so a 403 can name it.
#[derive(Clone, Default)]
pub(crate) struct CallerSlot(Arc<OnceLock<(String, Option<Uuid>)>>);

impl CallerSlot {
    /// Remembers who the request was authenticated as.
    pub(crate) fn fill(&self, actor_id: String, tenant_id: Option<Uuid>) {
        let _ = self.0.set((actor_id, tenant_id));
    }
}

/// Records 401 and 403 responses of routed requests in the audit log.
pub(crate) async fn record(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let slot = CallerSlot::default();
    request.extensions_mut().insert(slot.clone());
    // Cheap copies only; the text is built for denials alone, not on every request.
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().cloned();
    // The client as a trusted proxy names it, like every other audit record's source.
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(address)| {
            crate::forwarded::client(
                address.ip(),
                request.headers(),
                &state.settings.trusted_proxies,
            )
        });
    let response = next.run(request).await;
    let action = match response.status() {
        StatusCode::UNAUTHORIZED => "auth.denied",
        StatusCode::FORBIDDEN => "auth.forbidden",
        _ => return response,
    };
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    let principal = slot.0.get().cloned();
    let event = audit::RegistryEvent {
        tenant_id: principal.as_ref().and_then(|(_, tenant)| *tenant),
        action: action.to_owned(),
        crud: 'r',
        is_anonymous: principal.is_none(),
        actor_id: principal.map(|(actor, _)| actor),
        source_ip: peer.map(|ip| ip.to_string()),
        target_id: Some(format!("{method} {route}")),
        target_type: Some("endpoint".to_owned()),
        description: response
            .extensions()
            .get::<Problem>()
            .map(|problem| problem.detail.clone()),
        is_failure: true,
        ..audit::RegistryEvent::default()
    };
    if let Err(error) = append(&state, event).await {
        tracing::warn!(%error, "could not record an authentication denial in the audit log");
    }
    response
}

async fn append(state: &AppState, event: audit::RegistryEvent) -> Result<(), sqlx::Error> {
    let (pool, event) = (&state.pool, &event);
    storage::with_retries(move || async move {
        let mut transaction = storage::begin(pool).await?;
        audit::record(&mut transaction, event.clone()).await?;
        // A denial's record is not the request's change: it never marks the request's
        // idempotency claim as having made one.
        #[allow(clippy::disallowed_methods)]
        transaction.commit().await?;
        Ok(())
    })
    .await
}
