//! The body of `PUT /v1/tenants/{id}/products/{product}`; who may set which part of it is
//! `registry::products::to_set`.

use domain::subscription::SubscriptionRequest as Asked;
use serde::Deserialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

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

impl From<SubscriptionRequest> for Asked {
    fn from(request: SubscriptionRequest) -> Self {
        Self {
            enabled: request.enabled,
            config: request.config,
            feature_overrides: request.feature_overrides,
        }
    }
}
