//! Products, their manifests, and how a tenant's entitlements are resolved from its plan,
//! its own overrides and the platform's default configuration.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{Slug, TenantStatus};

/// The product name of the registry's own audit records. No catalog product, and so no API
/// key, may take it: events ingested under it could not be told from the registry's own.
pub const REGISTRY: &str = "tenant-registry";

/// A catalog product's id: the slug rule, and never [`REGISTRY`].
pub fn catalog_id(input: &str) -> Result<Slug, String> {
    let id = Slug::parse(input).map_err(|error| error.to_string())?;
    if id.as_str() == REGISTRY {
        return Err(format!(
            "\"{REGISTRY}\" is the registry's own name (its audit records carry it); choose another"
        ));
    }
    Ok(id)
}

/// What kind of value a feature takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeatureType {
    /// On or off.
    Bool,
    /// A whole number; `null` means unlimited.
    Limit,
}

/// A declared feature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureSpec {
    /// Its kind of value.
    #[serde(rename = "type")]
    pub kind: FeatureType,
}

/// A product's manifest, as platform admins publish it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Display name.
    pub name: String,
    /// Whether tenants of this product may have projects.
    #[serde(default)]
    pub supports_projects: bool,
    /// JSON Schema (draft 2020-12) for a tenant's config of this product.
    #[serde(default = "empty_object")]
    pub config_schema: Value,
    /// Platform-wide default config, merged under each tenant's (JSON merge patch).
    #[serde(default = "empty_object")]
    pub default_config: Value,
    /// The features and their types.
    #[serde(default)]
    pub features: BTreeMap<String, FeatureSpec>,
    /// Plan name → feature values.
    #[serde(default)]
    pub plans: BTreeMap<String, Map<String, Value>>,
    /// What is done for each tenant that subscribes, and undone when it leaves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning: Option<crate::provisioning::Plan>,
}

fn empty_object() -> Value {
    Value::Object(Map::new())
}

/// Whether `value` fits a feature of type `kind`.
fn fits(kind: FeatureType, value: &Value) -> bool {
    match kind {
        FeatureType::Bool => value.is_boolean(),
        FeatureType::Limit => value.is_null() || value.as_i64().is_some_and(|limit| limit >= 0),
    }
}

fn type_hint(kind: FeatureType) -> &'static str {
    match kind {
        FeatureType::Bool => "true or false",
        FeatureType::Limit => "a whole number ≥ 0, or null for unlimited",
    }
}

impl Manifest {
    /// Problems with the manifest's own consistency, as `(pointer, detail)`; the JSON Schema
    /// itself is checked by the caller, who has a validator.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        if self.name.trim().is_empty() || self.name.chars().count() > 200 {
            problems.push(("/name".to_owned(), "must be 1 to 200 characters".to_owned()));
        }
        if !self.default_config.is_object() {
            problems.push((
                "/default_config".to_owned(),
                "must be a JSON object".to_owned(),
            ));
        }
        if !self.config_schema.is_object() && !self.config_schema.is_boolean() {
            problems.push((
                "/config_schema".to_owned(),
                "must be a JSON Schema (an object or a boolean)".to_owned(),
            ));
        }
        for name in self.features.keys() {
            if !is_feature_name(name) {
                problems.push((
                    format!("/features/{name}"),
                    "feature names are 3–63 of [a-z0-9_-]".to_owned(),
                ));
            }
        }
        for (plan, values) in &self.plans {
            for (feature, value) in values {
                let pointer = format!("/plans/{plan}/{feature}");
                match self.features.get(feature) {
                    None => problems.push((pointer, "is not a declared feature".to_owned())),
                    Some(spec) if !fits(spec.kind, value) => {
                        problems.push((pointer, format!("must be {}", type_hint(spec.kind))));
                    }
                    Some(_) => {}
                }
            }
        }
        if let Some(plan) = &self.provisioning {
            problems.extend(plan.problems());
        }
        problems
    }

    /// Problems with a tenant's feature overrides, as `(pointer, detail)`.
    pub fn override_problems(&self, overrides: &Map<String, Value>) -> Vec<(String, String)> {
        overrides
            .iter()
            .filter_map(|(feature, value)| {
                let pointer = format!("/feature_overrides/{feature}");
                match self.features.get(feature) {
                    None => Some((pointer, "is not a feature of this product".to_owned())),
                    Some(spec) if !fits(spec.kind, value) => {
                        Some((pointer, format!("must be {}", type_hint(spec.kind))))
                    }
                    Some(_) => None,
                }
            })
            .collect()
    }
}

/// RFC 7386 JSON merge patch: `patch` applied to `target`.
pub fn merge_patch(target: &Value, patch: &Value) -> Value {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            let mut merged = target.clone();
            for (key, value) in patch {
                if value.is_null() {
                    merged.remove(key);
                } else {
                    let base = merged.get(key).cloned().unwrap_or(Value::Null);
                    merged.insert(key.clone(), merge_patch(&base, value));
                }
            }
            Value::Object(merged)
        }
        (_, Value::Object(patch)) => {
            merge_patch(&Value::Object(Map::new()), &Value::Object(patch.clone()))
        }
        (_, patch) => patch.clone(),
    }
}

/// A feature's resolved value for one tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FeatureCheck {
    /// Whether the tenant may use it.
    pub allowed: bool,
    /// For a limit: the number (`None` = unlimited, or not a limit).
    pub limit: Option<i64>,
    /// Why, in words.
    pub reason: String,
}

/// A tenant's subscription to a product, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Subscription {
    /// Whether it is switched on.
    pub enabled: bool,
    /// The tenant's own config.
    pub config: Value,
    /// Per-feature values replacing the plan's.
    pub feature_overrides: Map<String, Value>,
}

/// What a tenant may use of a product, all rules applied.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Entitlement {
    /// Whether the tenant may use the product at all.
    pub enabled: bool,
    /// Why not, when not.
    pub reason: Option<String>,
    /// The platform default config with the tenant's merged over it.
    pub config: Value,
    /// For each top-level config key: `tenant` or `default`.
    pub config_sources: BTreeMap<String, String>,
    /// Every declared feature's value: plan default, then tenant override.
    pub features: BTreeMap<String, Value>,
}

fn status_blocks(status: TenantStatus) -> Option<String> {
    matches!(status, TenantStatus::Frozen | TenantStatus::Archived)
        .then(|| format!("the tenant is {status}, so it is entitled to nothing"))
}

/// Resolves one product for a tenant on `plan` in `status`.
pub fn resolve(
    manifest: &Manifest,
    plan: &str,
    status: TenantStatus,
    subscription: Option<&Subscription>,
) -> Entitlement {
    let own_config =
        subscription.map_or_else(empty_object, |subscription| subscription.config.clone());
    let config = merge_patch(&manifest.default_config, &own_config);
    let config_sources = config
        .as_object()
        .map(|merged| {
            merged
                .keys()
                .map(|key| {
                    let source = if own_config.get(key).is_some() {
                        "tenant"
                    } else {
                        "default"
                    };
                    (key.clone(), source.to_owned())
                })
                .collect()
        })
        .unwrap_or_default();
    let plan_values = manifest.plans.get(plan);
    let features = manifest
        .features
        .iter()
        .map(|(name, spec)| {
            let value = subscription
                .and_then(|subscription| subscription.feature_overrides.get(name))
                .or_else(|| plan_values.and_then(|values| values.get(name)))
                .cloned()
                .unwrap_or(match spec.kind {
                    FeatureType::Bool => Value::Bool(false),
                    FeatureType::Limit => Value::from(0),
                });
            (name.clone(), value)
        })
        .collect();
    let reason = status_blocks(status).or_else(|| match subscription {
        None => Some("the tenant does not have this product".to_owned()),
        Some(subscription) if !subscription.enabled => {
            Some("the product is disabled for this tenant".to_owned())
        }
        Some(_) => None,
    });
    Entitlement {
        enabled: reason.is_none(),
        reason,
        config,
        config_sources,
        features,
    }
}

/// Whether `name` follows the rule for feature names: 3–63 of `[a-z0-9_-]`, no leading or
/// trailing `-` or `_`.
pub fn is_feature_name(name: &str) -> bool {
    crate::Slug::parse(&name.replace('_', "-")).is_ok()
}

/// The answer to "may this tenant use this feature, and how much?".
pub fn check_feature(
    manifest: &Manifest,
    entitlement: &Entitlement,
    feature: &str,
) -> Option<FeatureCheck> {
    let spec = manifest.features.get(feature)?;
    let value = entitlement.features.get(feature)?;
    if let Some(reason) = &entitlement.reason {
        return Some(FeatureCheck {
            allowed: false,
            limit: if spec.kind == FeatureType::Limit {
                Some(0)
            } else {
                None
            },
            reason: reason.clone(),
        });
    }
    Some(match spec.kind {
        FeatureType::Bool => {
            let allowed = value.as_bool().unwrap_or(false);
            FeatureCheck {
                allowed,
                limit: None,
                reason: if allowed {
                    "enabled by plan or override"
                } else {
                    "not included in the plan"
                }
                .to_owned(),
            }
        }
        FeatureType::Limit => {
            let limit = value.as_i64();
            FeatureCheck {
                allowed: limit != Some(0),
                limit,
                reason: match limit {
                    None => "unlimited".to_owned(),
                    Some(0) => "not included in the plan".to_owned(),
                    Some(limit) => format!("up to {limit}"),
                },
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registrys_own_name_is_no_catalog_id() {
        assert!(catalog_id("billing").is_ok());
        assert!(catalog_id(REGISTRY).is_err());
        assert!(catalog_id("Billing Sync").is_err());
    }
    use serde_json::json;

    fn manifest() -> Manifest {
        serde_json::from_value(json!({
            "name": "Certifai",
            "supports_projects": true,
            "default_config": {"region": "eu", "retention_days": 30},
            "features": {"sso": {"type": "bool"}, "max_projects": {"type": "limit"}},
            "plans": {
                "free": {"sso": false, "max_projects": 1},
                "enterprise": {"sso": true, "max_projects": null}
            }
        }))
        .expect("a manifest")
    }

    fn subscription(config: Value, overrides: Value) -> Subscription {
        Subscription {
            enabled: true,
            config,
            feature_overrides: overrides.as_object().cloned().unwrap_or_default(),
        }
    }

    #[test]
    fn plan_defaults_apply_then_tenant_overrides() {
        let manifest = manifest();
        let plain = resolve(
            &manifest,
            "free",
            TenantStatus::Active,
            Some(&subscription(json!({}), json!({}))),
        );
        assert_eq!(plain.features["sso"], json!(false));
        assert_eq!(plain.features["max_projects"], json!(1));
        let overridden = resolve(
            &manifest,
            "free",
            TenantStatus::Active,
            Some(&subscription(json!({}), json!({"max_projects": 5}))),
        );
        assert_eq!(overridden.features["max_projects"], json!(5));
        let check = check_feature(&manifest, &overridden, "max_projects").expect("declared");
        assert_eq!((check.allowed, check.limit), (true, Some(5)));
        let enterprise = resolve(
            &manifest,
            "enterprise",
            TenantStatus::Active,
            Some(&subscription(json!({}), json!({}))),
        );
        let unlimited = check_feature(&manifest, &enterprise, "max_projects").expect("declared");
        assert_eq!(
            (
                unlimited.allowed,
                unlimited.limit,
                unlimited.reason.as_str()
            ),
            (true, None, "unlimited")
        );
    }

    #[test]
    fn a_frozen_tenant_is_entitled_to_nothing_and_told_why() {
        let manifest = manifest();
        let frozen = resolve(
            &manifest,
            "enterprise",
            TenantStatus::Frozen,
            Some(&subscription(json!({}), json!({}))),
        );
        assert!(!frozen.enabled);
        let check = check_feature(&manifest, &frozen, "sso").expect("declared");
        assert!(!check.allowed);
        assert!(check.reason.contains("frozen"), "{}", check.reason);
    }

    #[test]
    fn the_tenant_config_merges_over_the_default_and_says_where_each_key_came_from() {
        let manifest = manifest();
        let entitlement = resolve(
            &manifest,
            "free",
            TenantStatus::Active,
            Some(&subscription(
                json!({"region": "us", "theme": "dark"}),
                json!({}),
            )),
        );
        assert_eq!(
            entitlement.config,
            json!({"region": "us", "retention_days": 30, "theme": "dark"})
        );
        assert_eq!(entitlement.config_sources["region"], "tenant");
        assert_eq!(entitlement.config_sources["retention_days"], "default");
    }

    #[test]
    fn merge_patch_follows_rfc_7386() {
        assert_eq!(
            merge_patch(
                &json!({"a": "b", "c": {"d": "e", "f": "g"}}),
                &json!({"a": "z", "c": {"f": null}})
            ),
            json!({"a": "z", "c": {"d": "e"}})
        );
        assert_eq!(
            merge_patch(&json!({"a": [1]}), &json!({"a": [2]})),
            json!({"a": [2]})
        );
    }

    #[test]
    fn plans_and_overrides_must_use_declared_features_with_the_right_types() {
        let mut bad = manifest();
        bad.plans.insert(
            "pro".to_owned(),
            json!({"sso": 3, "unknown": true})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        );
        let pointers: Vec<String> = bad
            .problems()
            .into_iter()
            .map(|(pointer, _)| pointer)
            .collect();
        assert_eq!(pointers, vec!["/plans/pro/sso", "/plans/pro/unknown"]);
        let overrides = json!({"max_projects": -1, "nope": 1});
        let pointers: Vec<String> = manifest()
            .override_problems(overrides.as_object().expect("object"))
            .into_iter()
            .map(|(pointer, _)| pointer)
            .collect();
        assert_eq!(
            pointers,
            vec!["/feature_overrides/max_projects", "/feature_overrides/nope"]
        );
    }

    #[test]
    fn a_product_the_tenant_lacks_is_not_enabled() {
        let entitlement = resolve(&manifest(), "free", TenantStatus::Active, None);
        assert!(!entitlement.enabled);
        assert_eq!(
            entitlement.reason.as_deref(),
            Some("the tenant does not have this product")
        );
    }
}
