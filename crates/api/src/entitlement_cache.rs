//! Cached answers of the feature-check hot path, per replica, made stale per tenant and per
//! product by the change listener.

use std::sync::Arc;
use std::time::Duration;

use auth::Invalidations;
use auth::invalidations::Stamp;
use domain::product::FeatureCheck;
use moka::future::Cache;
use uuid::Uuid;

use crate::problem::ApiError;

/// How long a feature check is trusted without asking the database again; a change to the
/// tenant or the product on any replica makes it stale sooner (LISTEN/NOTIFY).
pub const CHECK_TTL: Duration = Duration::from_secs(60);

type CheckKey = (Uuid, String, String);

/// What a cached feature check depends on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum CheckScope {
    Tenant(Uuid),
    Product(String),
}

struct CachedCheck {
    answer: Arc<FeatureCheck>,
    read: Stamp,
}

/// Cached answers of the feature-check hot path. A change to a tenant (its row or its
/// subscriptions) makes only that tenant's answers stale, a published manifest only that
/// product's; an answer whose reads began before such a change was heard is never served,
/// even when it is stored afterwards (see [`auth::invalidations`]).
#[derive(Clone)]
pub struct EntitlementCache {
    answers: Cache<CheckKey, Arc<CachedCheck>>,
    invalidations: Arc<Invalidations<CheckScope>>,
}

impl Default for EntitlementCache {
    fn default() -> Self {
        Self {
            answers: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(CHECK_TTL)
                .build(),
            invalidations: Arc::new(Invalidations::new(CHECK_TTL)),
        }
    }
}

impl EntitlementCache {
    /// The answer for `key`: cached while current, else from `resolve` (read now) and cached.
    pub(crate) async fn answer(
        &self,
        key: CheckKey,
        resolve: impl Future<Output = Result<FeatureCheck, ApiError>>,
    ) -> Result<Arc<FeatureCheck>, ApiError> {
        let scopes = [
            CheckScope::Tenant(key.0),
            CheckScope::Product(key.1.clone()),
        ];
        if let Some(hit) = self.answers.get(&key).await
            && self.invalidations.is_current(&hit.read, &scopes)
        {
            return Ok(Arc::clone(&hit.answer));
        }
        let read = self.invalidations.stamp();
        let answer = Arc::new(resolve.await?);
        if self.invalidations.is_current(&read, &scopes) {
            let cached = CachedCheck {
                answer: Arc::clone(&answer),
                read,
            };
            self.answers.insert(key, Arc::new(cached)).await;
        }
        Ok(answer)
    }

    /// Makes tenant `id`'s answers stale: its row or its subscriptions changed.
    pub fn forget_tenant(&self, id: Uuid) {
        self.invalidations.invalidate(CheckScope::Tenant(id));
    }

    /// Makes product `id`'s answers stale: its manifest changed.
    pub fn forget_product(&self, id: &str) {
        self.invalidations
            .invalidate(CheckScope::Product(id.to_owned()));
    }

    /// Forgets every cached answer.
    pub fn invalidate_all(&self) {
        self.invalidations.invalidate_all();
        self.answers.invalidate_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(allowed: bool) -> FeatureCheck {
        FeatureCheck {
            allowed,
            limit: None,
            reason: if allowed {
                "subscribed"
            } else {
                "not subscribed"
            }
            .to_owned(),
        }
    }

    fn key(tenant: Uuid) -> CheckKey {
        (tenant, "billing".to_owned(), "invoices".to_owned())
    }

    #[tokio::test]
    async fn an_answer_read_before_a_change_that_was_heard_is_never_served_after_it() {
        let cache = EntitlementCache::default();
        let tenant = Uuid::new_v4();
        // The read sees the old subscription; the change is heard before it is stored.
        let overtaken = cache
            .answer(key(tenant), async {
                cache.forget_tenant(tenant);
                Ok(check(true))
            })
            .await
            .expect("an answer");
        assert!(overtaken.allowed);
        let fresh = cache
            .answer(key(tenant), async { Ok(check(false)) })
            .await
            .expect("an answer");
        assert!(!fresh.allowed, "the stale answer was served");
    }

    #[tokio::test]
    async fn a_tenant_change_makes_only_its_answers_stale_and_a_product_change_all_of_its() {
        let cache = EntitlementCache::default();
        let (changed, bystander) = (Uuid::new_v4(), Uuid::new_v4());
        for tenant in [changed, bystander] {
            cache
                .answer(key(tenant), async { Ok(check(true)) })
                .await
                .expect("an answer");
        }
        cache.forget_tenant(changed);
        let reread = cache
            .answer(key(changed), async { Ok(check(false)) })
            .await
            .expect("an answer");
        assert!(!reread.allowed, "the changed tenant's answer was served");
        let kept = cache
            .answer(key(bystander), async { Ok(check(false)) })
            .await
            .expect("an answer");
        assert!(kept.allowed, "the bystander's answer was read again");
        cache.forget_product("billing");
        let after_manifest = cache
            .answer(key(bystander), async { Ok(check(false)) })
            .await
            .expect("an answer");
        assert!(
            !after_manifest.allowed,
            "a published manifest left answers current"
        );
    }
}
