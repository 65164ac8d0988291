//! One listener per replica for every cache-invalidating notification: API key changes
//! empty the key verification cache, entitlement changes the entitlement cache. A reconnect
//! empties both, since notifications sent while the listener was away are lost.

use std::time::Duration;

use storage::PgPool;
use storage::api_keys::CHANGES_CHANNEL as KEYS_CHANNEL;
use storage::products::ENTITLEMENTS_CHANNEL;
use tokio::task::JoinHandle;

use crate::AppState;

fn empty_everything(state: &AppState) {
    state.verifier.invalidate_all();
    state.entitlements.invalidate_all();
}

/// Subscribes before returning (so no change made afterwards is missed), then listens.
pub async fn spawn(pool: &PgPool, state: AppState) -> Result<JoinHandle<()>, sqlx::Error> {
    let mut listener = storage::listen(pool, &[KEYS_CHANNEL, ENTITLEMENTS_CHANNEL]).await?;
    Ok(tokio::spawn(async move {
        loop {
            match listener.try_recv().await {
                Ok(Some(notification)) => match notification.channel() {
                    KEYS_CHANNEL => state.verifier.invalidate_all(),
                    _ => state.entitlements.invalidate_all(),
                },
                Ok(None) => {
                    tracing::warn!("change listener reconnected; caches emptied");
                    empty_everything(&state);
                }
                Err(error) => {
                    tracing::warn!(%error, "change listener lost its connection; caches emptied, retrying");
                    empty_everything(&state);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }))
}
