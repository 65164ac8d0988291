//! Who may set a tenant's subscription to a product: the body of
//! `PUT /v1/tenants/{id}/products/{product}` and the domain rule applied to it per caller.

use domain::TenantWrite;
use domain::product::Subscription;
use domain::subscription::{SubscriptionRefusal, SubscriptionRequest as Asked};
use serde::Deserialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::AppState;
use crate::extract::Caller;
use crate::problem::ApiError;
use crate::products::subscription;

/// 403: the tenant has no subscription to the product, and subscribing is the platform's.
pub(crate) fn not_subscribed() -> ApiError {
    ApiError::forbidden(SubscriptionRefusal::NotSubscribed.to_string())
}

/// The body of `PUT /v1/tenants/{id}/products/{product}`. From a platform principal it
/// replaces the subscription (a part left out takes its default); a tenant principal may
/// change only `config` of a subscription it has, and send the other parts only unchanged.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionRequest {
    /// Switched on (platform default true).
    enabled: Option<bool>,
    /// The tenant's config: validated, merged over the default, against the product's schema
    /// (platform default `{}`).
    #[schema(value_type = Object)]
    config: Option<Value>,
    /// Feature values replacing the plan's, checked against the declared features (platform
    /// default `{}`).
    #[schema(value_type = Object)]
    feature_overrides: Option<Map<String, Value>>,
}

/// The subscription `caller` may set on `tenant` from `request`: a platform principal
/// replaces it; a tenant principal changes only its config (403 otherwise).
pub(crate) async fn to_set(
    state: &AppState,
    caller: &Caller,
    tenant: Uuid,
    product: &str,
    request: SubscriptionRequest,
) -> Result<Subscription, ApiError> {
    let asked = Asked {
        enabled: request.enabled,
        config: request.config,
        feature_overrides: request.feature_overrides,
    };
    if crate::tenants::write_by(caller) == TenantWrite::Administer {
        return Ok(asked.by_platform());
    }
    let current = storage::products::for_tenant(&state.pool, tenant)
        .await?
        .iter()
        .find(|row| row.product == product)
        .map(subscription);
    asked
        .by_tenant(current.as_ref())
        .map_err(|refusal| match refusal {
            SubscriptionRefusal::PlatformParts(ref pointers) => {
                ApiError::forbidden_fields(refusal.to_string(), pointers)
            }
            SubscriptionRefusal::NotSubscribed => not_subscribed(),
        })
}
