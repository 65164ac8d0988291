//! The `products` of `POST /v1/tenants`: the subscriptions a tenant starts with, each read and
//! checked as `PUT /v1/tenants/{id}/products/{product}` checks one, so the tenant, its
//! subscriptions and their queued plans are made together or not at all.

use std::collections::HashSet;

use domain::Slug;
use domain::product::Subscription;
use domain::subscription::SubscriptionRequest;
use serde::Deserialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::AppState;
use crate::problem::{ApiError, FieldError};
use crate::products::{manifest_of, subscription_problems};

/// The most products a tenant can be created with.
pub(super) const MAX_PRODUCTS: usize = 50;

/// A product a tenant is created with: its id alone, or the id with the subscription's parts.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
#[expect(
    dead_code,
    reason = "documents the body for OpenAPI; read() takes each entry apart to report every problem at once"
)]
pub enum InitialProduct {
    /// The product's id, subscribed with the defaults.
    #[schema(example = "certifai")]
    Id(String),
    /// The product's id with the subscription's parts.
    Subscription(InitialSubscription),
}

/// A product a tenant is created with, and how.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InitialSubscription {
    /// The product's id.
    #[schema(example = "certifai")]
    product: String,
    /// Switched on (default true).
    enabled: Option<bool>,
    /// The tenant's config, merged over the default and checked against the product's
    /// schema (default `{}`).
    #[schema(value_type = Object)]
    config: Option<Value>,
    /// Feature values replacing the plan's, checked against the declared features.
    #[schema(value_type = Object)]
    feature_overrides: Option<Map<String, Value>>,
}

/// Takes `products` out of a create body, so the tenant's own fields are read without it.
pub(super) fn take(body: &mut Value) -> Option<Value> {
    body.as_object_mut()?.remove("products")
}

/// The subscriptions `products` asks for, and what is wrong with them (a pointer each under
/// `/products`).
pub(super) async fn read(
    state: &AppState,
    products: Option<Value>,
) -> Result<(Vec<(String, Subscription)>, Vec<FieldError>), ApiError> {
    let mut subscriptions = Vec::new();
    let mut problems = Vec::new();
    let entries = match products {
        None | Some(Value::Null) => return Ok((subscriptions, problems)),
        Some(Value::Array(entries)) if entries.len() <= MAX_PRODUCTS => entries,
        Some(Value::Array(_)) => {
            problems.push(problem(
                "/products".to_owned(),
                format!("at most {MAX_PRODUCTS} products"),
            ));
            return Ok((subscriptions, problems));
        }
        Some(_) => {
            problems.push(problem(
                "/products".to_owned(),
                "must be a list of product ids or {product, enabled, config, feature_overrides} objects"
                    .to_owned(),
            ));
            return Ok((subscriptions, problems));
        }
    };
    let mut seen = HashSet::new();
    for (index, entry) in entries.into_iter().enumerate() {
        let pointer = format!("/products/{index}");
        let (id, asked) = match entry_parts(entry) {
            Ok(parts) => parts,
            Err(detail) => {
                problems.push(problem(pointer, detail));
                continue;
            }
        };
        let Some(row) = catalog_product(state, &id).await? else {
            problems.push(problem(
                pointer,
                format!("no product {id:?} in the catalog"),
            ));
            continue;
        };
        if !seen.insert(row.id.clone()) {
            problems.push(problem(pointer, format!("{id:?} is listed twice")));
            continue;
        }
        let subscription = asked.by_platform();
        problems.extend(subscription_problems(&manifest_of(&row)?, &subscription, &pointer).await?);
        subscriptions.push((row.id, subscription));
    }
    Ok((subscriptions, problems))
}

fn entry_parts(entry: Value) -> Result<(String, SubscriptionRequest), String> {
    match entry {
        Value::String(id) => Ok((id, SubscriptionRequest::default())),
        Value::Object(_) => {
            let parts: InitialSubscription = serde_json::from_value(entry)
                .map_err(|error| format!("is not a subscription: {error}"))?;
            Ok((
                parts.product,
                SubscriptionRequest {
                    enabled: parts.enabled,
                    config: parts.config,
                    feature_overrides: parts.feature_overrides,
                },
            ))
        }
        _ => Err("must be a product id or a {product, …} object".to_owned()),
    }
}

async fn catalog_product(
    state: &AppState,
    id: &str,
) -> Result<Option<storage::products::ProductRow>, ApiError> {
    if Slug::parse(id).is_err() {
        return Ok(None);
    }
    Ok(storage::products::get(&state.pool, id).await?)
}

fn problem(pointer: String, detail: String) -> FieldError {
    FieldError { pointer, detail }
}
