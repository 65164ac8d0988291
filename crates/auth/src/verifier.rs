//! API key verification with an in-process cache.
//!
//! A successful verification is cached for at most [`CACHE_TTL`], keyed by a SHA-256 of the
//! presented key (never the key itself). Whoever hears that a key changed (the api crate's
//! change listener, or the handler that revoked or rotated it) calls
//! [`ApiKeyVerifier::forget_key`]; that a tenant's status changed or it was deleted,
//! [`ApiKeyVerifier::forget_tenant`]; that notifications may have been missed,
//! [`ApiKeyVerifier::invalidate_all`]. An archived tenant's keys authenticate nothing (it can
//! only be restored, by a platform principal), so a verification reads the tenant's status
//! along with the key.
//!
//! Forgetting is exact. A verification that read the key before a revocation committed may
//! still be hashing when the revocation is heard; if it stored its result afterwards, the
//! revoked key would be accepted until the entry expired. So each entry carries a
//! [`Stamp`] taken before its database read, and an entry is served only while no
//! invalidation of its key, its tenant or everything has been heard since that stamp
//! ([`Invalidations`]). A stale entry is dropped and the key verified again, by the request
//! that found it, with a read of its own. Other keys' entries are untouched, so revoking keys
//! costs no bystander an argon2 hash.
//!
//! Concurrent requests with the same uncached key share one verification, and at most one
//! argon2 hash per core runs at a time: each takes 19 MiB and a few milliseconds of CPU, so
//! a burst of new (or forged) keys queues instead of growing memory without bound.

use std::sync::{Arc, LazyLock};
use std::thread::available_parallelism;
use std::time::Duration;

use chrono::{DateTime, Utc};
use domain::{Scopes, TenantStatus};
use moka::future::Cache;
use sha2::{Digest, Sha256};
use storage::PgPool;
use storage::api_keys;
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::invalidations::{Invalidations, Stamp};
use crate::keys::{self, PresentedKey};
use crate::{AuthError, Principal, PrincipalKind};

/// How long a successful verification is trusted without asking the database again.
pub const CACHE_TTL: Duration = Duration::from_secs(60);

/// A hash of a key nobody holds, checked against unknown prefixes so that an unknown prefix
/// costs as much time as a wrong secret.
static DECOY_HASH: LazyLock<String> = LazyLock::new(|| keys::decoy_hash().unwrap_or_default());

/// Argon2 verifications allowed to run at once in this process: one per core.
static HASHING: LazyLock<Semaphore> =
    LazyLock::new(|| Semaphore::new(available_parallelism().map_or(1, usize::from)));

/// What a cached verification depends on: the key itself and, for a tenant key, its tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum KeyScope {
    Key(Uuid),
    Tenant(Uuid),
}

struct Verified {
    principal: Principal,
    expires_at: Option<DateTime<Utc>>,
    read: Stamp,
}

impl Verified {
    fn scopes(&self) -> [Option<KeyScope>; 2] {
        [
            self.principal.key_id.map(KeyScope::Key),
            self.principal.tenant_id.map(KeyScope::Tenant),
        ]
    }
}

/// Verifies presented API keys; clone it freely (the cache is shared).
#[derive(Clone)]
pub struct ApiKeyVerifier {
    pool: PgPool,
    cache: Cache<[u8; 32], Arc<Verified>>,
    /// Digests of keys that verified within [`KNOWN_GOOD_TTL`]: exempt from the brake.
    known_good: Cache<[u8; 32], ()>,
    invalidations: Arc<Invalidations<KeyScope>>,
}

/// How long a key that verified stays exempt from the verification brake.
const KNOWN_GOOD_TTL: std::time::Duration = std::time::Duration::from_secs(3600);

impl ApiKeyVerifier {
    /// A verifier over `pool` with an empty cache.
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            cache: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(CACHE_TTL)
                .build(),
            known_good: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(KNOWN_GOOD_TTL)
                .build(),
            invalidations: Arc::new(Invalidations::new(CACHE_TTL)),
        }
    }

    /// The principal behind `presented`, or why there is none.
    pub async fn verify(&self, presented: &str) -> Result<Principal, AuthError> {
        self.verify_admitted(presented, || true).await
    }

    /// Like [`ApiKeyVerifier::verify`], asking `admit` first whenever the key must be
    /// hashed (it is not cached, and no other request is verifying it already):
    /// [`AuthError::Braked`] when it says no. A cached key never asks.
    pub async fn verify_admitted(
        &self,
        presented: &str,
        admit: impl Fn() -> bool,
    ) -> Result<Principal, AuthError> {
        let parsed = PresentedKey::parse(presented).ok_or(AuthError::Malformed)?;
        let digest: [u8; 32] = Sha256::digest(parsed.whole.as_bytes()).into();
        let verify_uncached = async || {
            // A key that verified in the last hour is a known client's, whose cache entry
            // merely aged out: it does not compete with guesses for the address's quota.
            if !self.known_good.contains_key(&digest) && !admit() {
                return Err(AuthError::Braked);
            }
            let verified = self.verify_uncached(&parsed).await;
            if verified.is_ok() {
                self.known_good.insert(digest, ()).await;
            } else {
                self.known_good.invalidate(&digest).await;
            }
            verified
        };
        // Concurrent requests with one uncached key wait for a single verification, and
        // only that one asks `admit`.
        let mut verified = self
            .cache
            .try_get_with(digest, async { verify_uncached().await.map(Arc::new) })
            .await
            .map_err(|error| AuthError::clone(&error))?;
        if !self.is_current(&verified) {
            // Read before a change this replica has heard of since (possibly by another
            // request's verification that was still running): never served.
            self.cache.invalidate(&digest).await;
            verified = Arc::new(verify_uncached().await?);
            if self.is_current(&verified) {
                self.cache.insert(digest, Arc::clone(&verified)).await;
            }
        }
        if verified.expires_at.is_some_and(|at| at <= Utc::now()) {
            self.cache.invalidate(&digest).await;
            return Err(AuthError::Expired);
        }
        Ok(verified.principal.clone())
    }

    fn is_current(&self, verified: &Verified) -> bool {
        self.invalidations
            .is_current(&verified.read, verified.scopes().iter().flatten())
    }

    async fn verify_uncached(&self, parsed: &PresentedKey<'_>) -> Result<Verified, AuthError> {
        let read = self.invalidations.stamp();
        let credential = api_keys::credential_by_prefix(&self.pool, parsed.prefix)
            .await
            .map_err(|error| AuthError::Unavailable(error.to_string()))?;
        let hash = credential
            .as_ref()
            .map_or_else(|| DECOY_HASH.clone(), |credential| credential.hash.clone());
        let whole = parsed.whole.to_owned();
        let _permit = HASHING
            .acquire()
            .await
            .map_err(|error| AuthError::Unavailable(error.to_string()))?;
        let matches = tokio::task::spawn_blocking(move || keys::verify(&hash, &whole))
            .await
            .map_err(|error| AuthError::Unavailable(error.to_string()))?;
        let credential = match credential {
            Some(credential) if matches => credential,
            _ => return Err(AuthError::Invalid),
        };
        if credential.revoked_at.is_some() {
            return Err(AuthError::Revoked);
        }
        if credential.expires_at.is_some_and(|at| at <= Utc::now()) {
            return Err(AuthError::Expired);
        }
        if credential.tenant_status.as_deref() == Some(TenantStatus::Archived.as_str()) {
            return Err(AuthError::TenantArchived);
        }
        self.record_use(credential.id);
        Ok(Verified {
            principal: Principal {
                kind: if credential.tenant_id.is_some() {
                    PrincipalKind::TenantKey
                } else {
                    PrincipalKind::PlatformKey
                },
                tenant_id: credential.tenant_id,
                scopes: Scopes::known_from(credential.scopes.iter().map(String::as_str)),
                key_id: Some(credential.id),
                subject: None,
                product: credential.product,
                expires_at: credential.expires_at,
                previous_secret: !credential.current_secret,
            },
            expires_at: credential.expires_at,
            read,
        })
    }

    /// Records the use off the request path; a cache miss happens at most once a
    /// [`CACHE_TTL`] per key and replica, and the update itself skips recent uses.
    fn record_use(&self, id: Uuid) {
        let pool = self.pool.clone();
        tokio::spawn(async move {
            if let Err(error) = api_keys::record_use(&pool, id).await {
                tracing::warn!(%error, key_id = %id, "could not record API key use");
            }
        });
    }

    /// Forgets key `id`'s cached verifications: it was revoked, rotated, changed or deleted.
    pub fn forget_key(&self, id: Uuid) {
        self.invalidations.invalidate(KeyScope::Key(id));
    }

    /// Forgets the cached verifications of tenant `id`'s keys: its status changed or it is gone.
    pub fn forget_tenant(&self, id: Uuid) {
        self.invalidations.invalidate(KeyScope::Tenant(id));
    }

    /// Forgets every cached verification.
    pub fn invalidate_all(&self) {
        self.invalidations.invalidate_all();
        self.cache.invalidate_all();
    }
}
