//! OIDC bearer tokens from the configured issuer (Keycloak): discovery, a JWKS cache that
//! refreshes on an unknown `kid`, and validation of `iss`, `aud`, `exp` and `nbf` (with
//! [`LEEWAY`] for clock skew) with RS256 or ES256 only.
//!
//! Tokens naming an unknown `kid` cost at most one fetch at a time, whoever sends them: one
//! fetch is in flight at once (the others wait for its outcome), none follows a successful
//! one for [`REFRESH_INTERVAL`], and after a failure none follows for a backoff that starts
//! at [`FIRST_BACKOFF`] and doubles with each further failure up to [`MAX_BACKOFF`]. Tokens
//! with a known `kid` wait for a fetch only when the key set is older than
//! [`KEY_SET_MAX_AGE`]: so a key the issuer retired stops working within that time, and a
//! failing issuer leaves the last keys it served in use.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::DateTime;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use storage::PgPool;
use tokio::sync::{Mutex, RwLock};

use crate::tenant_claims::{self, TenantClaims};
use crate::{AuthError, Principal, PrincipalKind};
use domain::{Scope, Scopes};

/// The shortest time between a successful JWKS fetch and the next one.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(10);

/// The oldest a fetched key set may be before the next token makes it be fetched again.
pub const KEY_SET_MAX_AGE: Duration = Duration::from_secs(300);

/// After a failed fetch, how long until the next may be tried.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);

/// The longest wait after repeated failed fetches.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// How far past `exp` (or before `nbf`) a token is still accepted: clock skew between the
/// issuer and this server, not a grace period.
pub const LEEWAY: Duration = Duration::from_secs(5);

/// Where tokens come from and what makes a platform admin.
#[derive(Debug, Clone)]
pub struct OidcConfig {
    /// The issuer URL, exactly as in the tokens' `iss`.
    pub issuer: String,
    /// The audience the tokens must carry in `aud`.
    pub audience: String,
    /// The realm role that makes a platform admin.
    pub admin_role: String,
    /// The shortest time between successful key fetches ([`REFRESH_INTERVAL`]).
    pub key_refresh_interval: Duration,
    /// How long fetched keys are trusted before they are fetched again ([`KEY_SET_MAX_AGE`]).
    pub key_set_max_age: Duration,
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

#[derive(Deserialize)]
struct RealmAccess {
    #[serde(default)]
    roles: Vec<String>,
}

#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    exp: i64,
    realm_access: Option<RealmAccess>,
    #[serde(flatten)]
    tenancy: TenantClaims,
    scope: Option<String>,
}

type KeySet = HashMap<String, (DecodingKey, Algorithm)>;

/// The issuer's keys as last fetched.
struct FetchedKeys {
    keys: KeySet,
    fetched: Instant,
}

/// When the next key fetch may happen, after the outcomes of the previous ones.
#[derive(Debug, Default)]
struct FetchSchedule {
    failures: u32,
    next: Option<Instant>,
}

impl FetchSchedule {
    fn is_due(&self, now: Instant) -> bool {
        self.next.is_none_or(|next| now >= next)
    }

    fn succeeded(&mut self, now: Instant, interval: Duration) {
        self.failures = 0;
        self.next = Some(now + interval);
    }

    fn failed(&mut self, now: Instant) {
        self.failures = self.failures.saturating_add(1);
        self.next = Some(now + backoff(self.failures));
    }
}

/// The wait after `failures` consecutive failed fetches (at least one).
fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    FIRST_BACKOFF
        .saturating_mul(1 << doublings)
        .min(MAX_BACKOFF)
}

/// Whether a cached key set must be younger than its maximum age to be used.
#[derive(Clone, Copy)]
enum Freshness {
    Fresh,
    Any,
}

/// How long the discovery document or the key set may take to arrive.
const FETCH_DEADLINE: Duration = Duration::from_secs(5);

/// The largest discovery document or key set read; an issuer's are a few KiB.
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

/// Validates bearer tokens; shared by clones of the app state through an `Arc`.
pub struct OidcVerifier {
    config: OidcConfig,
    http: egress::Egress,
    keys: RwLock<Option<FetchedKeys>>,
    /// Held while fetching, so one fetch is in flight at a time.
    schedule: Mutex<FetchSchedule>,
}

impl OidcVerifier {
    /// A verifier for `config`; nothing is fetched until the first token arrives.
    pub fn new(config: OidcConfig) -> Result<Self, AuthError> {
        // The issuer is the operator's, checked at start (https, or http on loopback outside
        // prod), and usually on the platform's own network (an in-cluster Keycloak).
        let policy = egress::Policy::operator(config.issuer.starts_with("http://"));
        let http = egress::Egress::new(policy)
            .map_err(|error| AuthError::Unavailable(error.to_string()))?;
        Ok(Self {
            config,
            http,
            keys: RwLock::new(None),
            schedule: Mutex::new(FetchSchedule::default()),
        })
    }

    /// The principal a token stands for, or why it is refused.
    pub async fn verify(&self, token: &str, pool: &PgPool) -> Result<Principal, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
            return Err(AuthError::Token(format!(
                "algorithm {:?} is not accepted",
                header.alg
            )));
        }
        let kid = header
            .kid
            .ok_or_else(|| AuthError::Token("the token names no key (kid)".to_owned()))?;
        let (key, algorithm) = self.key(&kid).await?;
        if algorithm != header.alg {
            return Err(AuthError::Token(
                "the token's algorithm does not match its key".to_owned(),
            ));
        }
        let mut validation = Validation::new(algorithm);
        validation.leeway = LEEWAY.as_secs();
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.config.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_nbf = true;
        let claims = jsonwebtoken::decode::<Claims>(token, &key, &validation)
            .map_err(|error| AuthError::Token(error.to_string()))?
            .claims;
        self.principal(claims, pool).await
    }

    async fn principal(&self, claims: Claims, pool: &PgPool) -> Result<Principal, AuthError> {
        // Every principal is someone: idempotency records, audit trails and denials are
        // keyed by the subject, so a token without one is no one's.
        let subject = claims
            .sub
            .filter(|sub| !sub.trim().is_empty())
            .ok_or_else(|| AuthError::Token("the token has no subject (sub)".to_owned()))?;
        // `exp` is required and checked by the validation; the principal carries it so that
        // nothing it grants outlives the token.
        let expires_at = DateTime::from_timestamp(claims.exp, 0)
            .ok_or_else(|| AuthError::Token("the token's exp is out of range".to_owned()))?;
        let is_admin = claims
            .realm_access
            .as_ref()
            .is_some_and(|access| access.roles.contains(&self.config.admin_role));
        if is_admin {
            return Ok(Principal {
                kind: PrincipalKind::OidcUser,
                tenant_id: None,
                scopes: [Scope::PlatformAdmin].into_iter().collect(),
                key_id: None,
                subject: Some(subject),
                product: None,
                expires_at: Some(expires_at),
                previous_secret: false,
            });
        }
        let tenant_id = tenant_claims::resolve(&claims.tenancy, &self.config.issuer, pool).await?;
        let scopes = Scopes::known_from(
            claims
                .scope
                .as_deref()
                .unwrap_or_default()
                .split_whitespace(),
        );
        if scopes.is_platform_admin() {
            return Err(AuthError::Token(
                "a tenant user cannot hold platform:admin".to_owned(),
            ));
        }
        Ok(Principal {
            kind: PrincipalKind::OidcUser,
            tenant_id: Some(tenant_id),
            scopes,
            key_id: None,
            subject: Some(subject),
            product: None,
            expires_at: Some(expires_at),
            previous_secret: false,
        })
    }

    /// Fetches the issuer's discovery document and key set now, for the dependency
    /// report; the cached set is left as it is (verification keeps its own schedule).
    pub async fn check_keys(&self) -> Result<(), AuthError> {
        self.fetch_keys().await.map(drop)
    }

    async fn key(&self, kid: &str) -> Result<(DecodingKey, Algorithm), AuthError> {
        if let Some(found) = self.cached_key(kid, Freshness::Fresh).await {
            return Ok(found);
        }
        let mut schedule = self.schedule.lock().await;
        if let Some(found) = self.cached_key(kid, Freshness::Fresh).await {
            return Ok(found);
        }
        let mut failure = None;
        if schedule.is_due(Instant::now()) {
            match self.fetch_keys().await {
                Ok(keys) => {
                    let fetched = Instant::now();
                    *self.keys.write().await = Some(FetchedKeys { keys, fetched });
                    schedule.succeeded(fetched, self.config.key_refresh_interval);
                }
                Err(error) => {
                    schedule.failed(Instant::now());
                    failure = Some(error);
                }
            }
        }
        // A set too old to trust without asking still serves while the issuer cannot be
        // asked: a failing issuer locks nobody out.
        if let Some(found) = self.cached_key(kid, Freshness::Any).await {
            return Ok(found);
        }
        if let Some(error) = failure {
            return Err(error);
        }
        if self.keys.read().await.is_none() {
            return Err(AuthError::Unavailable(
                "the issuer's keys could not be fetched; the next try waits for a backoff"
                    .to_owned(),
            ));
        }
        Err(AuthError::Token(format!("unknown signing key {kid:?}")))
    }

    async fn cached_key(
        &self,
        kid: &str,
        freshness: Freshness,
    ) -> Option<(DecodingKey, Algorithm)> {
        let keys = self.keys.read().await;
        let fetched = keys.as_ref()?;
        let trusted = match freshness {
            Freshness::Fresh => fetched.fetched.elapsed() <= self.config.key_set_max_age,
            Freshness::Any => true,
        };
        trusted.then(|| fetched.keys.get(kid).cloned()).flatten()
    }

    /// The JSON document at `url`; a failure names `what` and its cause, for the log.
    async fn fetch_json<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        url: &str,
    ) -> Result<T, AuthError> {
        let text = self
            .http
            .fetch_text(url, FETCH_DEADLINE, MAX_DOCUMENT_BYTES)
            .await
            .map_err(|error| AuthError::Unavailable(format!("{what} {url}: {error:?}")))?;
        serde_json::from_str(&text).map_err(|error| {
            AuthError::Unavailable(format!("{what} document at {url} unreadable: {error}"))
        })
    }

    async fn fetch_keys(&self) -> Result<KeySet, AuthError> {
        let discovery_url = format!(
            "{}/.well-known/openid-configuration",
            self.config.issuer.trim_end_matches('/')
        );
        let discovery: Discovery = self.fetch_json("OIDC discovery", &discovery_url).await?;
        if discovery.issuer != self.config.issuer {
            return Err(AuthError::Unavailable(format!(
                "the discovery document names issuer {:?}, not {:?}",
                discovery.issuer, self.config.issuer
            )));
        }
        let set: JwkSet = self.fetch_json("JWKS", &discovery.jwks_uri).await?;
        Ok(set
            .keys
            .iter()
            .filter_map(|jwk| {
                let kid = jwk.common.key_id.clone()?;
                let algorithm = match &jwk.algorithm {
                    jsonwebtoken::jwk::AlgorithmParameters::RSA(_) => Algorithm::RS256,
                    jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(params)
                        if params.curve == jsonwebtoken::jwk::EllipticCurve::P256 =>
                    {
                        Algorithm::ES256
                    }
                    _ => return None,
                };
                let key = DecodingKey::from_jwk(jwk).ok()?;
                Some((kid, (key, algorithm)))
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_from_the_first_wait_up_to_the_cap() {
        assert_eq!(backoff(1), FIRST_BACKOFF);
        assert_eq!(backoff(2), FIRST_BACKOFF * 2);
        assert_eq!(backoff(3), FIRST_BACKOFF * 4);
        assert_eq!(backoff(7), MAX_BACKOFF);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }

    #[test]
    fn no_fetch_is_due_during_a_backoff_and_success_resets_it() {
        let start = Instant::now();
        let mut schedule = FetchSchedule::default();
        assert!(schedule.is_due(start));
        schedule.failed(start);
        schedule.failed(start);
        assert!(!schedule.is_due(start + FIRST_BACKOFF));
        assert!(schedule.is_due(start + FIRST_BACKOFF * 2));
        schedule.succeeded(start, REFRESH_INTERVAL);
        assert!(!schedule.is_due(start + REFRESH_INTERVAL / 2));
        schedule.failed(start);
        assert!(schedule.is_due(start + FIRST_BACKOFF));
    }
}
