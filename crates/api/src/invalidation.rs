//! One listener per replica for every cache-invalidating notification: API key changes
//! empty the key verification cache, entitlement changes the entitlement cache, tenant
//! changes drop the tenant from the tenant cache. A reconnect empties them all, since
//! notifications sent while the listener was away are lost.

use std::time::Duration;

use storage::PgPool;
use storage::api_keys::CHANGES_CHANNEL as KEYS_CHANNEL;
use storage::products::ENTITLEMENTS_CHANNEL;
use storage::tenants::{CHANGES_CHANNEL as TENANTS_CHANNEL, TenantChange};
use tokio::task::JoinHandle;

use crate::AppState;

fn empty_everything(state: &AppState) {
    state.verifier.invalidate_all();
    state.entitlements.invalidate_all();
    state.tenants.invalidate_all();
}

const CHANNELS: [&str; 3] = [KEYS_CHANNEL, ENTITLEMENTS_CHANNEL, TENANTS_CHANNEL];

/// Subscribes before returning (so no change made afterwards is missed), then listens.
/// When the connection drops, it subscribes again on a new one and only then empties the
/// caches: whatever is cached afterwards is either read after the subscription or will be
/// announced.
pub async fn spawn(pool: &PgPool, state: AppState) -> Result<JoinHandle<()>, sqlx::Error> {
    let mut listener = storage::listen(pool, &CHANNELS).await?;
    let pool = pool.clone();
    Ok(tokio::spawn(async move {
        loop {
            match listener.try_recv().await {
                Ok(Some(notification)) => match notification.channel() {
                    KEYS_CHANNEL => state.verifier.invalidate_all(),
                    TENANTS_CHANNEL => match TenantChange::parse(notification.payload()) {
                        Some(change) => state.tenants.forget(&change).await,
                        None => state.tenants.invalidate_all(),
                    },
                    _ => state.entitlements.invalidate_all(),
                },
                Ok(None) | Err(_) => {
                    tracing::warn!("change listener lost its connection; resubscribing");
                    empty_everything(&state);
                    listener = resubscribe(&pool).await;
                    empty_everything(&state);
                    tracing::info!("change listener resubscribed; caches emptied");
                }
            }
        }
    }))
}

async fn resubscribe(pool: &PgPool) -> sqlx::postgres::PgListener {
    loop {
        match storage::listen(pool, &CHANNELS).await {
            Ok(listener) => return listener,
            Err(error) => {
                tracing::warn!(%error, "change listener cannot resubscribe yet; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}
