//! API keys: the `tr_<env>_<prefix>_<secret>` format, argon2id hashing, and the management
//! use cases (create, list, get, revoke, rotate), each authorized by [`crate::grant`].
//!
//! The prefix (16 hex digits, 64 bits) is stored in clear for lookup; the secret (32 bytes
//! from the OS CSPRNG, 256 bits, as hex) is never stored: only an argon2id hash of the whole
//! key is. A new or rotated key is returned once and cannot be recovered.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use chrono::{DateTime, Utc};
use domain::{Scope, Scopes};
use secrecy::{ExposeSecret, SecretString};
use storage::api_keys::{self, ApiKeyRecord, ListFilter, NewApiKey};
use storage::{PgConnection, PgPool};
use uuid::Uuid;

use crate::Principal;
use crate::grant::{self, GrantRefused, KeyReach};

const PREFIX_BYTES: usize = 8;
const SECRET_BYTES: usize = 32;

/// Argon2id with OWASP's minimum recommendation: 19 MiB of memory, 2 passes, 1 lane.
fn hasher() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).expect("constant argon2 parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// A key as presented by a caller, split into its parts.
#[derive(Debug)]
pub struct PresentedKey<'a> {
    /// The public lookup prefix.
    pub prefix: &'a str,
    /// The whole key, as hashed.
    pub whole: &'a str,
}

impl<'a> PresentedKey<'a> {
    /// Splits `tr_<env>_<prefix>_<secret>`; `None` when the text is not in that form.
    pub fn parse(whole: &'a str) -> Option<Self> {
        let mut parts = whole.splitn(4, '_');
        let (tag, env, prefix, secret) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let is_hex = |text: &str, bytes: usize| {
            text.len() == bytes * 2
                && text
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        };
        let valid = tag == "tr"
            && !env.is_empty()
            && env.bytes().all(|b| b.is_ascii_lowercase())
            && is_hex(prefix, PREFIX_BYTES)
            && is_hex(secret, SECRET_BYTES);
        valid.then_some(Self { prefix, whole })
    }
}

/// A freshly generated key: the prefix to store and the whole key to show once.
pub struct GeneratedKey {
    /// The public lookup prefix.
    pub prefix: String,
    /// The whole key; shown to its owner once, never stored or logged.
    pub key: SecretString,
    /// The argon2id PHC string to store.
    pub hash: String,
}

fn random_hex(bytes: usize) -> Result<String, KeyError> {
    let mut buffer = vec![0u8; bytes];
    getrandom::fill(&mut buffer)
        .map_err(|error| KeyError::Internal(format!("OS random source: {error}")))?;
    Ok(hex::encode(buffer))
}

/// Generates a key for environment `env` (`dev`, `stage`, `prod`) and hashes it.
///
/// Hashing costs tens of milliseconds of CPU: call it off the async runtime.
pub fn generate(env: &str) -> Result<GeneratedKey, KeyError> {
    let prefix = random_hex(PREFIX_BYTES)?;
    let key = format!("tr_{env}_{prefix}_{}", random_hex(SECRET_BYTES)?);
    let hash = hash(&key)?;
    Ok(GeneratedKey {
        prefix,
        key: SecretString::from(key),
        hash,
    })
}

fn hash(key: &str) -> Result<String, KeyError> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt)
        .map_err(|error| KeyError::Internal(format!("OS random source: {error}")))?;
    let salt =
        SaltString::encode_b64(&salt).map_err(|error| KeyError::Internal(error.to_string()))?;
    hasher()
        .hash_password(key.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|error| KeyError::Internal(format!("hashing: {error}")))
}

/// The hash of a random key that is thrown away, for equalising verification time.
pub(crate) fn decoy_hash() -> Result<String, KeyError> {
    hash(&random_hex(SECRET_BYTES)?)
}

/// Whether `key` matches the PHC string `hash` (in constant time for the comparison).
///
/// Costs as much as hashing: call it off the async runtime.
pub fn verify(hash: &str, key: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| hasher().verify_password(key.as_bytes(), &parsed).is_ok())
        .unwrap_or(false)
}

/// Why a key management request was refused.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The caller lacks `api_keys:manage`.
    #[error("this requires the {0} scope")]
    MissingScope(Scope),
    /// No such key, or not one the caller may see.
    #[error("no such API key")]
    NotFound,
    /// The key reaches further than the caller (scopes, tenant, product or expiry).
    #[error("{0}")]
    Refused(#[from] GrantRefused),
    /// The named tenant does not exist (or is not the caller's).
    #[error("no such tenant")]
    UnknownTenant,
    /// A field is invalid.
    #[error("{detail}")]
    Invalid {
        /// JSON pointer of the field.
        pointer: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// The key was revoked, so it cannot be rotated.
    #[error("a revoked key cannot be rotated")]
    RevokedKey,
    /// The database cannot be had right now ([`storage::is_unavailable`]).
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A storage or runtime failure.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<sqlx::Error> for KeyError {
    fn from(error: sqlx::Error) -> Self {
        let constraint = error
            .as_database_error()
            .and_then(|database| database.constraint());
        if storage::is_unavailable(&error) {
            return KeyError::Unavailable(error.to_string());
        }
        if constraint == Some("api_keys_product_fkey") {
            return KeyError::Invalid {
                pointer: "/product",
                detail: "no such product in the catalog".to_owned(),
            };
        }
        KeyError::Internal(error.to_string())
    }
}

/// A request to create a key.
#[derive(Debug, Clone)]
pub struct CreateKey {
    /// A label.
    pub name: String,
    /// The tenant the key acts for; `None` for a platform key.
    pub tenant_id: Option<Uuid>,
    /// The scopes to grant.
    pub scopes: Scopes,
    /// When it stops working, if ever.
    pub expires_at: Option<DateTime<Utc>>,
    /// The product the key belongs to (slug rules), recorded on the audit events it ingests.
    pub product: Option<String>,
}

/// A key record together with its secret, returned once on creation or rotation.
pub struct IssuedKey {
    /// The stored record.
    pub record: ApiKeyRecord,
    /// The whole key.
    pub key: SecretString,
}

/// Who performs a use case, for authorization and the audit record.
pub struct Actor<'a> {
    /// The caller.
    pub principal: &'a Principal,
    /// The caller's address, if known.
    pub source_ip: Option<String>,
}

/// Who a key change is recorded under in the audit log.
struct Recorded<'a> {
    actor_id: String,
    source_ip: Option<&'a str>,
}

impl<'a> From<&'a Actor<'_>> for Recorded<'a> {
    fn from(actor: &'a Actor<'_>) -> Self {
        Self {
            actor_id: actor.principal.actor_id(),
            source_ip: actor.source_ip.as_deref(),
        }
    }
}

fn require_manage(actor: &Actor<'_>) -> Result<(), KeyError> {
    if actor.principal.allows(Scope::ApiKeysManage) {
        Ok(())
    } else {
        Err(KeyError::MissingScope(Scope::ApiKeysManage))
    }
}

fn validate_create(request: &CreateKey, now: DateTime<Utc>) -> Result<(), KeyError> {
    let name = request.name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(KeyError::Invalid {
            pointer: "/name",
            detail: "must be 1 to 200 characters, not only spaces".to_owned(),
        });
    }
    if request.scopes.is_empty() {
        return Err(KeyError::Invalid {
            pointer: "/scopes",
            detail: "must grant at least one scope".to_owned(),
        });
    }
    if let Some(Err(detail)) = request.product.as_deref().map(domain::product::catalog_id) {
        return Err(KeyError::Invalid {
            pointer: "/product",
            detail: format!("must be a product id of the catalog: {detail}"),
        });
    }
    if request
        .expires_at
        .is_some_and(|expires_at| expires_at <= now)
    {
        return Err(KeyError::Invalid {
            pointer: "/expires_at",
            detail: "must be in the future".to_owned(),
        });
    }
    Ok(())
}

/// Creates a key after checking the caller may: `api_keys:manage`, a tenant it can see, and
/// a key that reaches no further than itself ([`grant::may_grant`]).
pub async fn create(
    pool: &PgPool,
    actor: &Actor<'_>,
    env: &str,
    request: CreateKey,
) -> Result<IssuedKey, KeyError> {
    require_manage(actor)?;
    validate_create(&request, Utc::now())?;
    let principal = actor.principal;
    // Another tenant answers like an unknown one, so its existence does not leak.
    if request.tenant_id.is_some() && !principal.can_access_tenant(request.tenant_id) {
        return Err(KeyError::UnknownTenant);
    }
    if request.scopes.is_platform_admin() && request.tenant_id.is_some() {
        return Err(KeyError::Invalid {
            pointer: "/scopes",
            detail: "platform:admin can only be granted to a platform key (no tenant_id)"
                .to_owned(),
        });
    }
    grant::may_grant(
        principal,
        &KeyReach {
            tenant_id: request.tenant_id,
            scopes: &request.scopes,
            product: request.product.as_deref(),
            expires_at: request.expires_at,
        },
    )?;
    if let Some(tenant) = request.tenant_id
        && !storage::tenants::exists(pool, tenant).await?
    {
        return Err(KeyError::UnknownTenant);
    }
    // The events the key ingests are recorded under its product: it must be a real one.
    if let Some(product) = &request.product
        && !storage::products::exists(pool, product).await?
    {
        return Err(KeyError::Invalid {
            pointer: "/product",
            detail: "no such product in the catalog; publish it first (PUT /v1/products/{id})"
                .to_owned(),
        });
    }
    issue(pool, &actor.into(), env, request).await
}

/// Stores a new key already authorized, with its audit record, and returns its secret.
async fn issue(
    pool: &PgPool,
    recorded: &Recorded<'_>,
    env: &str,
    request: CreateKey,
) -> Result<IssuedKey, KeyError> {
    let env = env.to_owned();
    let generated = tokio::task::spawn_blocking(move || generate(&env))
        .await
        .map_err(|error| KeyError::Internal(error.to_string()))??;
    let scopes = request.scopes.labels();
    let mut transaction = pool.begin().await?;
    let record = api_keys::insert(
        &mut transaction,
        &NewApiKey {
            tenant_id: request.tenant_id,
            name: request.name.trim(),
            prefix: &generated.prefix,
            hash: &generated.hash,
            scopes: &scopes,
            expires_at: request.expires_at,
            product: request.product.as_deref(),
        },
    )
    .await?;
    audit(&mut transaction, recorded, &record, "api_key.created", 'c').await?;
    transaction.commit().await?;
    Ok(IssuedKey {
        record,
        key: generated.key,
    })
}

/// The actor id the bootstrap command is audited under: a kind of its own, which no API
/// key (`api_key:…`) or OIDC user (`oidc:…`) can take.
pub fn bootstrap_actor_id(name: &str) -> String {
    format!("bootstrap:{}", name.trim())
}

/// Creates a platform admin key with no caller: the bootstrap of a fresh install, by
/// whoever can reach the database. Audited as [`bootstrap_actor_id`] of `name`.
pub async fn create_bootstrap_admin(
    pool: &PgPool,
    env: &str,
    name: &str,
    expires_at: Option<DateTime<Utc>>,
) -> Result<IssuedKey, KeyError> {
    let request = CreateKey {
        name: name.to_owned(),
        tenant_id: None,
        scopes: [Scope::PlatformAdmin].into_iter().collect(),
        expires_at,
        product: None,
    };
    validate_create(&request, Utc::now())?;
    let recorded = Recorded {
        actor_id: bootstrap_actor_id(name),
        source_ip: None,
    };
    issue(pool, &recorded, env, request).await
}

async fn audit(
    conn: &mut PgConnection,
    recorded: &Recorded<'_>,
    record: &ApiKeyRecord,
    action: &str,
    crud: char,
) -> Result<(), sqlx::Error> {
    let mut fields = serde_json::Map::new();
    fields.insert("scopes".to_owned(), record.scopes.join(" ").into());
    audit::record(
        conn,
        audit::RegistryEvent {
            tenant_id: record.tenant_id,
            action: action.to_owned(),
            crud,
            actor_id: Some(recorded.actor_id.clone()),
            source_ip: recorded.source_ip.map(str::to_owned),
            target_id: Some(record.id.to_string()),
            target_type: Some("api_key".to_owned()),
            target_name: Some(record.name.clone()),
            fields,
            ..audit::RegistryEvent::default()
        },
    )
    .await
}

/// One key, if it exists and the caller may see it.
pub async fn get(pool: &PgPool, actor: &Actor<'_>, id: Uuid) -> Result<ApiKeyRecord, KeyError> {
    require_manage(actor)?;
    api_keys::get(pool, id)
        .await?
        .filter(|record| actor.principal.can_access_tenant(record.tenant_id))
        .ok_or(KeyError::NotFound)
}

/// A page of the keys the caller may see; `tenant_id` narrows it for platform callers.
pub async fn list(
    pool: &PgPool,
    actor: &Actor<'_>,
    mut filter: ListFilter,
) -> Result<Vec<ApiKeyRecord>, KeyError> {
    require_manage(actor)?;
    if let Some(own) = actor.principal.tenant_id {
        if filter.tenant_id.is_some_and(|asked| asked != own) {
            return Ok(Vec::new());
        }
        filter.tenant_id = Some(own);
        filter.platform_only = false;
    }
    Ok(api_keys::list(pool, &filter).await?)
}

/// A key the caller may see and that `rule` lets it act on ([`grant::may_grant`] to rotate,
/// [`grant::may_revoke`] to revoke).
async fn get_grantable(
    pool: &PgPool,
    actor: &Actor<'_>,
    id: Uuid,
    rule: fn(&Principal, &KeyReach<'_>) -> Result<(), grant::GrantRefused>,
) -> Result<ApiKeyRecord, KeyError> {
    let record = get(pool, actor, id).await?;
    let scopes = Scopes::known_from(record.scopes.iter().map(String::as_str));
    rule(
        actor.principal,
        &KeyReach {
            tenant_id: record.tenant_id,
            scopes: &scopes,
            product: record.product.as_deref(),
            expires_at: record.expires_at,
        },
    )?;
    Ok(record)
}

/// Revokes a key the caller may see and could have granted (idempotent).
pub async fn revoke(pool: &PgPool, actor: &Actor<'_>, id: Uuid) -> Result<ApiKeyRecord, KeyError> {
    get_grantable(pool, actor, id, grant::may_revoke).await?;
    let mut transaction = pool.begin().await?;
    let record = api_keys::revoke(&mut transaction, id)
        .await?
        .ok_or(KeyError::NotFound)?;
    audit(
        &mut transaction,
        &actor.into(),
        &record,
        "api_key.revoked",
        'u',
    )
    .await?;
    transaction.commit().await?;
    Ok(record)
}

/// Gives a live key the caller could have granted a new secret; the old one stops working
/// everywhere at commit.
pub async fn rotate(
    pool: &PgPool,
    actor: &Actor<'_>,
    env: &str,
    id: Uuid,
) -> Result<IssuedKey, KeyError> {
    let current = get_grantable(pool, actor, id, grant::may_grant).await?;
    if current.revoked_at.is_some() {
        return Err(KeyError::RevokedKey);
    }
    let env = env.to_owned();
    let generated = tokio::task::spawn_blocking(move || generate(&env))
        .await
        .map_err(|error| KeyError::Internal(error.to_string()))??;
    let mut transaction = pool.begin().await?;
    let record = api_keys::rotate(&mut transaction, id, &generated.prefix, &generated.hash)
        .await?
        .ok_or(KeyError::NotFound)?;
    audit(
        &mut transaction,
        &actor.into(),
        &record,
        "api_key.rotated",
        'u',
    )
    .await?;
    transaction.commit().await?;
    Ok(IssuedKey {
        record,
        key: generated.key,
    })
}

/// The whole key as text, for the one response that shows it.
pub fn reveal(key: &SecretString) -> &str {
    key.expose_secret()
}

#[cfg(test)]
mod tests;
