//! OIDC bearer tokens from the configured issuer (Keycloak): discovery, a JWKS cache that
//! refreshes on an unknown `kid` (at most once per [`REFRESH_INTERVAL`]), and validation of
//! `iss`, `aud`, `exp` and `nbf` with RS256 or ES256 only.

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

/// The shortest time between two JWKS fetches triggered by unknown key ids.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(10);

/// Where tokens come from and what makes a platform admin.
#[derive(Debug, Clone)]
pub struct OidcConfig {
    /// The issuer URL, exactly as in the tokens' `iss`.
    pub issuer: String,
    /// The audience the tokens must carry in `aud`.
    pub audience: String,
    /// The realm role that makes a platform admin.
    pub admin_role: String,
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

struct KeySet {
    keys: HashMap<String, (DecodingKey, Algorithm)>,
    fetched: Instant,
}

/// Validates bearer tokens; shared by clones of the app state through an `Arc`.
pub struct OidcVerifier {
    config: OidcConfig,
    http: reqwest::Client,
    keys: RwLock<Option<KeySet>>,
    refresh: Mutex<()>,
}

fn unavailable(what: &str) -> impl FnOnce(reqwest::Error) -> AuthError + '_ {
    move |error| AuthError::Unavailable(format!("{what}: {error}"))
}

impl OidcVerifier {
    /// A verifier for `config`; nothing is fetched until the first token arrives.
    pub fn new(config: OidcConfig) -> Result<Self, AuthError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|error| AuthError::Unavailable(format!("HTTP client: {error}")))?;
        Ok(Self {
            config,
            http,
            keys: RwLock::new(None),
            refresh: Mutex::new(()),
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
        })
    }

    async fn key(&self, kid: &str) -> Result<(DecodingKey, Algorithm), AuthError> {
        if let Some(found) = self.cached_key(kid).await {
            return Ok(found);
        }
        let _single_flight = self.refresh.lock().await;
        let recently_fetched = self
            .keys
            .read()
            .await
            .as_ref()
            .is_some_and(|set| set.fetched.elapsed() < REFRESH_INTERVAL);
        if !recently_fetched {
            let fetched = self.fetch_keys().await?;
            *self.keys.write().await = Some(fetched);
        }
        self.cached_key(kid)
            .await
            .ok_or_else(|| AuthError::Token(format!("unknown signing key {kid:?}")))
    }

    async fn cached_key(&self, kid: &str) -> Option<(DecodingKey, Algorithm)> {
        self.keys.read().await.as_ref()?.keys.get(kid).cloned()
    }

    async fn fetch_keys(&self) -> Result<KeySet, AuthError> {
        let discovery_url = format!(
            "{}/.well-known/openid-configuration",
            self.config.issuer.trim_end_matches('/')
        );
        let discovery: Discovery = self
            .http
            .get(&discovery_url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(unavailable("OIDC discovery"))?
            .json()
            .await
            .map_err(unavailable("OIDC discovery document"))?;
        if discovery.issuer != self.config.issuer {
            return Err(AuthError::Unavailable(format!(
                "the discovery document names issuer {:?}, not {:?}",
                discovery.issuer, self.config.issuer
            )));
        }
        let set: JwkSet = self
            .http
            .get(&discovery.jwks_uri)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(unavailable("JWKS"))?
            .json()
            .await
            .map_err(unavailable("JWKS document"))?;
        let keys = set
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
            .collect();
        Ok(KeySet {
            keys,
            fetched: Instant::now(),
        })
    }
}
