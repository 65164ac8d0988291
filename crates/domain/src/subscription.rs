//! Who may change a tenant's subscription to a product. Subscribing, switching a product on
//! or off and overriding its features are platform decisions (they decide what the tenant
//! may use); a tenant may change only its own config of a product it already has, and the
//! product's schema still bounds that config.

use serde_json::{Map, Value};

use crate::product::Subscription;

/// A subscription as a request asks for it: `None` for each part the request leaves out.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SubscriptionRequest {
    /// Switched on or off.
    pub enabled: Option<bool>,
    /// The tenant's config.
    pub config: Option<Value>,
    /// Feature values replacing the plan's.
    pub feature_overrides: Option<Map<String, Value>>,
}

/// Why a tenant principal's subscription request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscriptionRefusal {
    /// The tenant has no subscription to the product: subscribing is the platform's call.
    #[error("subscribing a tenant to a product is a platform decision")]
    NotSubscribed,
    /// The request changes parts only the platform changes (their JSON pointers).
    #[error(
        "switching a product on or off and overriding its features are platform decisions; a tenant changes only its config"
    )]
    PlatformParts(Vec<&'static str>),
}

impl SubscriptionRequest {
    /// The subscription a platform principal sets: a part left out takes its default (on,
    /// empty config, no overrides), since a PUT replaces the whole subscription.
    pub fn by_platform(self) -> Subscription {
        Subscription {
            enabled: self.enabled.unwrap_or(true),
            config: self.config.unwrap_or_else(|| Value::Object(Map::new())),
            feature_overrides: self.feature_overrides.unwrap_or_default(),
        }
    }

    /// The subscription a tenant principal sets on its `current` one: only the config may
    /// change; `enabled` and `feature_overrides` keep their values and may be sent only
    /// unchanged (so a client can send back what it read).
    pub fn by_tenant(
        self,
        current: Option<&Subscription>,
    ) -> Result<Subscription, SubscriptionRefusal> {
        let current = current.ok_or(SubscriptionRefusal::NotSubscribed)?;
        let mut refused = Vec::new();
        if self
            .enabled
            .is_some_and(|enabled| enabled != current.enabled)
        {
            refused.push("/enabled");
        }
        if self
            .feature_overrides
            .as_ref()
            .is_some_and(|overrides| *overrides != current.feature_overrides)
        {
            refused.push("/feature_overrides");
        }
        if !refused.is_empty() {
            return Err(SubscriptionRefusal::PlatformParts(refused));
        }
        Ok(Subscription {
            enabled: current.enabled,
            config: self.config.unwrap_or_else(|| current.config.clone()),
            feature_overrides: current.feature_overrides.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn current() -> Subscription {
        Subscription {
            enabled: true,
            config: json!({"region": "eu"}),
            feature_overrides: json!({"max_projects": 3})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        }
    }

    #[test]
    fn a_tenant_changes_only_the_config_of_a_product_it_has() {
        let request = SubscriptionRequest {
            config: Some(json!({"region": "us"})),
            ..SubscriptionRequest::default()
        };
        let set = request
            .by_tenant(Some(&current()))
            .expect("config is the tenant's");
        assert_eq!(set.config, json!({"region": "us"}));
        assert_eq!(set.feature_overrides, current().feature_overrides);
        assert!(set.enabled);
    }

    #[test]
    fn a_tenant_may_repeat_what_it_read_but_not_change_it() {
        let echo = SubscriptionRequest {
            enabled: Some(true),
            config: Some(json!({"region": "us"})),
            feature_overrides: Some(current().feature_overrides),
        };
        assert!(echo.by_tenant(Some(&current())).is_ok());
        let upgrade = SubscriptionRequest {
            enabled: Some(false),
            config: None,
            feature_overrides: json!({"max_projects": null}).as_object().cloned(),
        };
        assert_eq!(
            upgrade.by_tenant(Some(&current())),
            Err(SubscriptionRefusal::PlatformParts(vec![
                "/enabled",
                "/feature_overrides"
            ]))
        );
    }

    #[test]
    fn a_tenant_cannot_subscribe_itself() {
        let request = SubscriptionRequest {
            config: Some(json!({})),
            ..SubscriptionRequest::default()
        };
        assert_eq!(
            request.by_tenant(None),
            Err(SubscriptionRefusal::NotSubscribed)
        );
    }

    #[test]
    fn the_platform_replaces_the_whole_subscription() {
        let set = SubscriptionRequest::default().by_platform();
        assert!(set.enabled);
        assert_eq!(set.config, json!({}));
        assert!(set.feature_overrides.is_empty());
    }
}
