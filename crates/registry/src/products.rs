//! The products catalog and tenants' subscriptions: publishing a manifest, setting and
//! removing a subscription, and who may set which part of one.

use domain::product::{Manifest, Subscription};
use domain::subscription::{SubscriptionRefusal, SubscriptionRequest};
use domain::{Slug, TenantWrite};
use serde_json::{Map, Value};
use storage::PgPool;
use storage::products::{self, ProductRow, TenantProductRow};
use uuid::Uuid;

use crate::trail::{self, Target};
use crate::{Actor, RegistryError, events, lifecycle, provisioning};
use domain::event::EventType;

/// Publishes the manifest of product `id` (already validated against the manifest rules
/// and its own config schema); answers the stored row and whether it is new.
pub async fn publish(
    pool: &PgPool,
    actor: &Actor<'_>,
    id: &Slug,
    manifest: &Manifest,
) -> Result<(ProductRow, bool), RegistryError> {
    let stored = serde_json::to_value(manifest).map_err(RegistryError::internal)?;
    let stored = &stored;
    storage::with_retries(move || async move {
        let mut transaction = storage::begin(pool).await?;
        let (row, created) = products::upsert(&mut transaction, id.as_str(), stored).await?;
        let target = Target {
            tenant_id: None,
            id: row.id.clone(),
            kind: "product",
            name: manifest.name.clone(),
        };
        let crud = if created { 'c' } else { 'u' };
        let action = "product.published";
        trail::record(&mut transaction, actor, target, action, crud, Map::new()).await?;
        storage::commit(transaction).await?;
        Ok((row, created))
    })
    .await
}

fn not_subscribed() -> RegistryError {
    RegistryError::forbidden(SubscriptionRefusal::NotSubscribed.to_string())
}

/// The subscription a `write` may set on tenant `tenant_id` from `asked`: a platform
/// decision replaces it; a tenant's own changes only the config of one it has (forbidden
/// otherwise, naming each part it may not change).
pub async fn to_set(
    pool: &PgPool,
    tenant_id: Uuid,
    product: &str,
    asked: SubscriptionRequest,
    write: TenantWrite,
) -> Result<Subscription, RegistryError> {
    if write == TenantWrite::Administer {
        return Ok(asked.by_platform());
    }
    let current = products::for_tenant(pool, tenant_id)
        .await?
        .iter()
        .find(|row| row.product == product)
        .map(TenantProductRow::subscription);
    asked
        .by_tenant(current.as_ref())
        .map_err(|refusal| match refusal {
            SubscriptionRefusal::PlatformParts(ref pointers) => RegistryError::Forbidden {
                detail: refusal.to_string(),
                pointers: pointers
                    .iter()
                    .map(|pointer| (*pointer).to_owned())
                    .collect(),
            },
            SubscriptionRefusal::NotSubscribed => not_subscribed(),
        })
}

async fn audit(
    conn: &mut storage::PgConnection,
    actor: &Actor<'_>,
    tenant_id: Uuid,
    product: &str,
    action: &str,
    crud: char,
    fields: Map<String, Value>,
) -> Result<(), RegistryError> {
    let target = Target {
        tenant_id: Some(tenant_id),
        id: format!("{tenant_id}/{product}"),
        kind: "tenant_product",
        name: product.to_owned(),
    };
    trail::record(conn, actor, target, action, crud, fields).await
}

/// Sets tenant `tenant_id`'s subscription to `product` (from [`to_set`], its config checked
/// against the product's schema): a platform decision replaces it, a tenant's own write
/// changes only its config, so a platform change made meanwhile to the rest stays.
pub async fn subscribe(
    pool: &PgPool,
    actor: &Actor<'_>,
    tenant_id: Uuid,
    product: &str,
    write: TenantWrite,
    subscription: &Subscription,
) -> Result<TenantProductRow, RegistryError> {
    storage::with_retries(move || async move {
        let mut transaction = storage::begin(pool).await?;
        lifecycle::permit(&mut transaction, tenant_id, write).await?;
        let row = subscribe_in(
            &mut transaction,
            actor,
            tenant_id,
            product,
            write,
            subscription,
        )
        .await?;
        storage::commit(transaction).await?;
        Ok(row)
    })
    .await
}

/// [`subscribe`]'s change, audit record, events and queued plan, in the caller's
/// transaction (which has checked that `write` is permitted).
pub(crate) async fn subscribe_in(
    transaction: &mut storage::PgConnection,
    actor: &Actor<'_>,
    tenant_id: Uuid,
    product: &str,
    write: TenantWrite,
    subscription: &Subscription,
) -> Result<TenantProductRow, RegistryError> {
    let existed = products::is_subscribed(&mut *transaction, tenant_id, product).await?;
    let row = if write == TenantWrite::Administer {
        products::set_for_tenant(
            &mut *transaction,
            tenant_id,
            product,
            subscription.enabled,
            &subscription.config,
            &subscription.feature_overrides,
        )
        .await?
    } else {
        products::set_config_for_tenant(&mut *transaction, tenant_id, product, &subscription.config)
            .await?
            .ok_or_else(not_subscribed)?
    };
    let mut fields = Map::new();
    fields.insert("product".to_owned(), Value::from(product));
    fields.insert(
        "enabled".to_owned(),
        Value::from(subscription.enabled.to_string()),
    );
    let action = "tenant_product.set";
    audit(
        &mut *transaction,
        actor,
        tenant_id,
        product,
        action,
        'u',
        fields,
    )
    .await?;
    let event_type = if existed {
        EventType::TenantProductUpdated
    } else {
        EventType::TenantProductSubscribed
    };
    let manifest = if row.enabled {
        products::manifest_in(&mut *transaction, product).await?
    } else {
        None
    };
    if let Some(manifest) = manifest {
        let manifest: Manifest =
            serde_json::from_value(manifest).map_err(RegistryError::internal)?;
        provisioning::queue_plan(&mut *transaction, tenant_id, product, &manifest).await?;
    }
    let data = events::subscription(tenant_id, &row);
    events::emit(&mut *transaction, event_type, Some(tenant_id), data).await?;
    let data = events::entitlements_changed(tenant_id, "subscription", Some(product));
    events::emit(
        &mut *transaction,
        EventType::TenantEntitlementsChanged,
        Some(tenant_id),
        data,
    )
    .await?;
    Ok(row)
}

/// Removes tenant `tenant_id`'s subscription to `product`: a platform decision only.
pub async fn unsubscribe(
    pool: &PgPool,
    actor: &Actor<'_>,
    tenant_id: Uuid,
    product: &str,
    write: TenantWrite,
) -> Result<(), RegistryError> {
    if write != TenantWrite::Administer {
        return Err(RegistryError::forbidden(
            "removing a subscription is a platform decision",
        ));
    }
    storage::with_retries(move || async move {
        let mut transaction = storage::begin(pool).await?;
        lifecycle::permit(&mut transaction, tenant_id, write).await?;
        if !products::remove_for_tenant(&mut transaction, tenant_id, product).await? {
            return Err(RegistryError::not_found("the tenant has no such product"));
        }
        provisioning::queue_teardown(&mut transaction, tenant_id, product, None).await?;
        let action = "tenant_product.removed";
        audit(
            &mut transaction,
            actor,
            tenant_id,
            product,
            action,
            'd',
            Map::new(),
        )
        .await?;
        let data = serde_json::json!({"tenant_id": tenant_id, "product": product});
        events::emit(
            &mut transaction,
            EventType::TenantProductUnsubscribed,
            Some(tenant_id),
            data,
        )
        .await?;
        let data = events::entitlements_changed(tenant_id, "subscription", Some(product));
        events::emit(
            &mut transaction,
            EventType::TenantEntitlementsChanged,
            Some(tenant_id),
            data,
        )
        .await?;
        storage::commit(transaction).await?;
        Ok(())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use auth::{Principal, PrincipalKind};
    use domain::Scope;

    #[tokio::test]
    async fn removing_a_subscription_is_refused_to_a_tenants_own_write_before_the_database_is_asked()
     {
        let unreachable = storage::PgPool::connect_lazy("postgres://nobody@unreachable.invalid/db")
            .expect("a lazy pool");
        let tenant_id = Uuid::new_v4();
        let principal = Principal {
            kind: PrincipalKind::TenantKey,
            tenant_id: Some(tenant_id),
            scopes: [Scope::ProductsWrite].into_iter().collect(),
            key_id: Some(Uuid::new_v4()),
            subject: None,
            product: None,
            expires_at: None,
            previous_secret: false,
        };
        let actor = Actor {
            principal: &principal,
            source_ip: None,
        };
        let outcome = unsubscribe(
            &unreachable,
            &actor,
            tenant_id,
            "certifai",
            TenantWrite::Operate,
        )
        .await;
        assert!(
            matches!(outcome, Err(RegistryError::Forbidden { ref pointers, .. }) if pointers.is_empty()),
            "{outcome:?}"
        );
    }
}
