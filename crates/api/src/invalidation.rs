//! One listener per replica for every cache-invalidating notification, each forgetting only
//! what it names: a key change that key's verifications (a tenant's status change all its
//! keys'), a tenant change that tenant's lookups and entitlement answers, a published product
//! that product's entitlement answers. A reconnect empties everything, since notifications
//! sent while the listener was away are lost; so does a payload this build cannot read.

use std::time::Duration;

use storage::PgPool;
use storage::api_keys::{CHANGES_CHANNEL as KEYS_CHANNEL, KeyChange};
use storage::products::ENTITLEMENTS_CHANNEL;
use storage::tenants::{CHANGES_CHANNEL as TENANTS_CHANNEL, TenantChange};
use tokio::task::JoinHandle;

use crate::AppState;

fn empty_everything(state: &AppState) {
    state.verifier.invalidate_all();
    state.entitlements.invalidate_all();
    state.tenants.invalidate_all();
}

async fn forget(state: &AppState, channel: &str, payload: &str) {
    match channel {
        KEYS_CHANNEL => match KeyChange::parse(payload) {
            Some(KeyChange::KeyId(id)) => state.verifier.forget_key(id),
            Some(KeyChange::TenantId(id)) => state.verifier.forget_tenant(id),
            None => state.verifier.invalidate_all(),
        },
        TENANTS_CHANNEL => match TenantChange::parse(payload) {
            Some(change) => {
                state.entitlements.forget_tenant(change.id);
                state.tenants.forget(&change).await;
            }
            None => {
                state.entitlements.invalidate_all();
                state.tenants.invalidate_all();
            }
        },
        _ if payload.is_empty() => state.entitlements.invalidate_all(),
        _ => state.entitlements.forget_product(payload),
    }
}

const CHANNELS: [&str; 3] = [KEYS_CHANNEL, ENTITLEMENTS_CHANNEL, TENANTS_CHANNEL];

/// Subscribes before returning (so no change made afterwards is missed), then listens.
/// When the connection drops, it subscribes again on a new one and only then empties the
/// caches: whatever is cached afterwards is either read after the subscription or will be
/// announced.
pub async fn spawn(pool: &PgPool, state: AppState) -> Result<JoinHandle<()>, sqlx::Error> {
    let mut listener = storage::listen(pool, &CHANNELS).await?;
    state.health.set_listening(true);
    let pool = pool.clone();
    Ok(tokio::spawn(async move {
        loop {
            match listener.try_recv().await {
                Ok(Some(notification)) => {
                    forget(&state, notification.channel(), notification.payload()).await;
                }
                Ok(None) | Err(_) => {
                    tracing::warn!("change listener lost its connection; resubscribing");
                    state.health.set_listening(false);
                    empty_everything(&state);
                    listener = resubscribe(&pool).await;
                    state.health.set_listening(true);
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
