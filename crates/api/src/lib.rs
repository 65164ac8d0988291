//! The HTTP API of tenant-registry: one router per resource, merged here, and the server loop.
//!
//! A library so that tests drive the whole router in-process.

mod probes;

use axum::Router;
use storage::PgPool;
use tokio::net::TcpListener;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The database pool.
    pub pool: PgPool,
}

/// The complete router of the service.
pub fn router(state: AppState) -> Router {
    Router::new().merge(probes::router()).with_state(state)
}

/// Serves `router` on `listener` until `shutdown` resolves, then lets in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}
