//! The API key use cases: create, list, get, revoke and rotate, each authorized by
//! `auth::grant` (a key never reaches further than the credential that grants it), and the
//! bootstrap admin key of a fresh install. The key format and hashing are `auth::keys`.

use auth::grant::{self, GrantRefused, KeyReach};
use auth::keys::{self, GeneratedKey};
use chrono::{DateTime, Utc};
use domain::{Scope, Scopes, TenantWrite};
use secrecy::SecretString;
use storage::api_keys::{self, ApiKeyRecord, ListFilter, NewApiKey};
use storage::{PgConnection, PgPool};
use uuid::Uuid;

use crate::trail::{self, Recorded, Target};
use crate::{Actor, RegistryError, constraints, events, lifecycle};
use domain::event::EventType;

/// A key to create.
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
    /// The whole key (`auth::keys::reveal` shows it).
    pub key: SecretString,
}

fn no_such_key() -> RegistryError {
    RegistryError::not_found("no such API key")
}

fn unknown_tenant() -> RegistryError {
    RegistryError::invalid_field("/tenant_id", "no such tenant")
}

fn refused(refusal: GrantRefused) -> RegistryError {
    RegistryError::forbidden(refusal.to_string())
}

fn require_manage(actor: &Actor<'_>) -> Result<(), RegistryError> {
    if actor.principal.allows(Scope::ApiKeysManage) {
        Ok(())
    } else {
        Err(RegistryError::forbidden(format!(
            "this requires the {} scope",
            Scope::ApiKeysManage
        )))
    }
}

fn validate_create(request: &CreateKey, now: DateTime<Utc>) -> Result<(), RegistryError> {
    let name = request.name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(RegistryError::invalid_field(
            "/name",
            "must be 1 to 200 characters, not only spaces",
        ));
    }
    if request.scopes.is_empty() {
        return Err(RegistryError::invalid_field(
            "/scopes",
            "must grant at least one scope",
        ));
    }
    if let Some(Err(detail)) = request.product.as_deref().map(domain::product::catalog_id) {
        return Err(RegistryError::invalid_field(
            "/product",
            format!("must be a product id of the catalog: {detail}"),
        ));
    }
    if request
        .expires_at
        .is_some_and(|expires_at| expires_at <= now)
    {
        return Err(RegistryError::invalid_field(
            "/expires_at",
            "must be in the future",
        ));
    }
    Ok(())
}

/// Generates a key for `env` on the blocking pool: hashing costs tens of milliseconds.
async fn generate(env: &str) -> Result<GeneratedKey, RegistryError> {
    let env = env.to_owned();
    tokio::task::spawn_blocking(move || keys::generate(&env))
        .await
        .map_err(RegistryError::internal)?
        .map_err(RegistryError::internal)
}

/// The lifecycle gate for a write on key `tenant_id`'s behalf (none for a platform key),
/// in the transaction; `missing` answers a tenant that is not there.
async fn permit_key_tenant(
    conn: &mut PgConnection,
    tenant_id: Option<Uuid>,
    write: TenantWrite,
    missing: fn() -> RegistryError,
) -> Result<(), RegistryError> {
    match tenant_id {
        Some(tenant) => lifecycle::permit_if_exists(conn, tenant, write)
            .await?
            .map(drop)
            .ok_or_else(missing),
        None => Ok(()),
    }
}

async fn audit(
    conn: &mut PgConnection,
    recorded: &Recorded<'_>,
    record: &ApiKeyRecord,
    action: &str,
    crud: char,
) -> Result<(), RegistryError> {
    let mut fields = serde_json::Map::new();
    fields.insert("scopes".to_owned(), record.scopes.join(" ").into());
    let target = Target {
        tenant_id: record.tenant_id,
        id: record.id.to_string(),
        kind: "api_key",
        name: record.name.clone(),
    };
    trail::record_as(conn, recorded, target, action, crud, fields).await?;
    // The audit action is the event's name: api_key.created, api_key.rotated, api_key.revoked.
    let event_type: EventType = action.parse().map_err(RegistryError::internal)?;
    events::emit(conn, event_type, record.tenant_id, events::api_key(record)).await
}

/// Creates a key after checking the caller may: `api_keys:manage`, a tenant it can see
/// whose lifecycle permits it, and a key that reaches no further than itself
/// ([`grant::may_grant`]).
pub async fn create(
    pool: &PgPool,
    actor: &Actor<'_>,
    env: &str,
    request: CreateKey,
) -> Result<IssuedKey, RegistryError> {
    require_manage(actor)?;
    validate_create(&request, Utc::now())?;
    let principal = actor.principal;
    // Another tenant answers like an unknown one, so its existence does not leak.
    if request.tenant_id.is_some() && !principal.can_access_tenant(request.tenant_id) {
        return Err(unknown_tenant());
    }
    if request.scopes.is_platform_admin() && request.tenant_id.is_some() {
        return Err(RegistryError::invalid_field(
            "/scopes",
            "platform:admin can only be granted to a platform key (no tenant_id)",
        ));
    }
    grant::may_grant(
        principal,
        &KeyReach {
            tenant_id: request.tenant_id,
            scopes: &request.scopes,
            // A request names only scopes this build parsed.
            unknown_scopes: &[],
            product: request.product.as_deref(),
            expires_at: request.expires_at,
        },
    )
    .map_err(refused)?;
    // Asked before the costly hashing; the transaction asks again, under lock.
    if let Some(tenant) = request.tenant_id
        && !storage::tenants::exists(pool, tenant).await?
    {
        return Err(unknown_tenant());
    }
    // The events the key ingests are recorded under its product: it must be a real one (the
    // foreign key api_keys_product_fkey holds it under concurrency).
    if let Some(product) = &request.product
        && !storage::products::exists(pool, product).await?
    {
        return Err(RegistryError::invalid_field(
            "/product",
            "no such product in the catalog; publish it first (PUT /v1/products/{id})",
        ));
    }
    issue(pool, actor.into(), env, request).await
}

/// Stores a new key already authorized, with its audit record, and returns its secret.
async fn issue(
    pool: &PgPool,
    recorded: Recorded<'_>,
    env: &str,
    request: CreateKey,
) -> Result<IssuedKey, RegistryError> {
    let generated = generate(env).await?;
    let scopes = request.scopes.labels();
    let (prefix, hash) = (&generated.prefix, &generated.hash);
    let (request, scopes, recorded) = (&request, &scopes, &recorded);
    let record = storage::with_retries(move || async move {
        let mut transaction = storage::begin(pool).await?;
        permit_key_tenant(
            &mut transaction,
            request.tenant_id,
            TenantWrite::Operate,
            unknown_tenant,
        )
        .await?;
        let record = api_keys::insert(
            &mut transaction,
            &NewApiKey {
                tenant_id: request.tenant_id,
                name: request.name.trim(),
                prefix,
                hash,
                scopes,
                expires_at: request.expires_at,
                product: request.product.as_deref(),
            },
        )
        .await
        .map_err(constraints::map)?;
        audit(&mut transaction, recorded, &record, "api_key.created", 'c').await?;
        storage::commit(transaction).await?;
        Ok::<_, RegistryError>(record)
    })
    .await?;
    Ok(IssuedKey {
        record,
        key: generated.key,
    })
}

/// Creates a platform admin key with no caller: the bootstrap of a fresh install, by
/// whoever can reach the database. Audited as `auth::keys::bootstrap_actor_id` of `name`.
pub async fn create_bootstrap_admin(
    pool: &PgPool,
    env: &str,
    name: &str,
    expires_at: Option<DateTime<Utc>>,
) -> Result<IssuedKey, RegistryError> {
    let request = CreateKey {
        name: name.to_owned(),
        tenant_id: None,
        scopes: [Scope::PlatformAdmin].into_iter().collect(),
        expires_at,
        product: None,
    };
    validate_create(&request, Utc::now())?;
    let recorded = Recorded {
        actor_id: keys::bootstrap_actor_id(name),
        source_ip: None,
    };
    issue(pool, recorded, env, request).await
}

/// One key, if it exists and the caller may see it.
pub async fn get(
    pool: &PgPool,
    actor: &Actor<'_>,
    id: Uuid,
) -> Result<ApiKeyRecord, RegistryError> {
    require_manage(actor)?;
    api_keys::get(pool, id)
        .await?
        .filter(|record| actor.principal.can_access_tenant(record.tenant_id))
        .ok_or_else(no_such_key)
}

/// A page of the keys the caller may see; `tenant_id` narrows it for platform callers.
pub async fn list(
    pool: &PgPool,
    actor: &Actor<'_>,
    mut filter: ListFilter,
) -> Result<Vec<ApiKeyRecord>, RegistryError> {
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

/// What a caller does to an existing key.
#[derive(Clone, Copy)]
enum KeyAction {
    Rotate,
    Revoke,
}

/// A key the caller may see and may act on: rotating hands out its secret and revoking takes
/// it away, so both are authorized like creating it ([`grant::may_grant`]), except that a
/// credential may always revoke itself ([`grant::may_revoke`]).
async fn get_grantable(
    pool: &PgPool,
    actor: &Actor<'_>,
    id: Uuid,
    action: KeyAction,
) -> Result<ApiKeyRecord, RegistryError> {
    let record = get(pool, actor, id).await?;
    let scopes = Scopes::known_from(record.scopes.iter().map(String::as_str));
    let unknown_scopes: Vec<String> = record
        .scopes
        .iter()
        .filter(|label| label.parse::<Scope>().is_err())
        .cloned()
        .collect();
    let reach = KeyReach {
        tenant_id: record.tenant_id,
        scopes: &scopes,
        unknown_scopes: &unknown_scopes,
        product: record.product.as_deref(),
        expires_at: record.expires_at,
    };
    match action {
        KeyAction::Rotate => grant::may_grant(actor.principal, &reach),
        KeyAction::Revoke => grant::may_revoke(actor.principal, record.id, &reach),
    }
    .map_err(refused)?;
    Ok(record)
}

/// Revokes every live key of tenant `tenant_id`, which is being archived in the caller's
/// transaction: an archived tenant's keys end for good, so restoring it brings none back
/// (a restored tenant is given new keys). Each is recorded and announced like a revocation.
pub(crate) async fn revoke_all_of_archived_tenant(
    conn: &mut PgConnection,
    recorded: &Recorded<'_>,
    tenant_id: Uuid,
) -> Result<(), RegistryError> {
    for record in api_keys::revoke_all_of_tenant(conn, tenant_id).await? {
        audit(conn, recorded, &record, "api_key.revoked", 'u').await?;
    }
    Ok(())
}

/// Revokes a key the caller may see and may revoke, if its tenant's lifecycle permits: a
/// frozen tenant's keys are revoked by the platform (a platform decision); an archived
/// tenant's were revoked when it was archived. Idempotent: revoking a revoked key changes,
/// records and announces nothing, and answers the key as it is.
pub async fn revoke(
    pool: &PgPool,
    actor: &Actor<'_>,
    id: Uuid,
) -> Result<ApiKeyRecord, RegistryError> {
    let key = get_grantable(pool, actor, id, KeyAction::Revoke).await?;
    if key.revoked_at.is_some() {
        return Ok(key);
    }
    let write = if actor.principal.is_platform() {
        TenantWrite::Administer
    } else {
        TenantWrite::Operate
    };
    storage::with_retries(move || async move {
        let mut transaction = storage::begin(pool).await?;
        permit_key_tenant(&mut transaction, key.tenant_id, write, no_such_key).await?;
        let Some(record) = api_keys::revoke(&mut transaction, id).await? else {
            // Revoked meanwhile, by a racing revocation (or gone): answer it as it is now.
            drop(transaction);
            return api_keys::get(pool, id).await?.ok_or_else(no_such_key);
        };
        audit(
            &mut transaction,
            &actor.into(),
            &record,
            "api_key.revoked",
            'u',
        )
        .await?;
        storage::commit(transaction).await?;
        Ok(record)
    })
    .await
}

/// The longest a rotated key's old secret may keep working: a week.
pub const MAX_GRACE_SECONDS: i64 = 604_800;

/// Gives a live key the caller could have granted a new secret. The old one stops working
/// everywhere at commit, or, with `grace_seconds` (0 to [`MAX_GRACE_SECONDS`]), that many
/// seconds later (revoking ends both at once; rotating again ends the old one at once).
pub async fn rotate(
    pool: &PgPool,
    actor: &Actor<'_>,
    env: &str,
    id: Uuid,
    grace_seconds: i64,
) -> Result<IssuedKey, RegistryError> {
    if !(0..=MAX_GRACE_SECONDS).contains(&grace_seconds) {
        return Err(RegistryError::invalid_field(
            "/grace_seconds",
            format!("must be 0 to {MAX_GRACE_SECONDS} (a week)"),
        ));
    }
    if actor.principal.key_id == Some(id) && actor.principal.previous_secret {
        return Err(RegistryError::forbidden(
            "the previous secret a rotation keeps working cannot rotate its key again: use the new secret",
        ));
    }
    let current = get_grantable(pool, actor, id, KeyAction::Rotate).await?;
    if current.revoked_at.is_some() {
        return Err(RegistryError::conflict("a revoked key cannot be rotated"));
    }
    let generated = generate(env).await?;
    let (prefix, hash, tenant_id) = (&generated.prefix, &generated.hash, current.tenant_id);
    let grace_until =
        (grace_seconds > 0).then(|| chrono::Utc::now() + chrono::TimeDelta::seconds(grace_seconds));
    let record = storage::with_retries(move || async move {
        let mut transaction = storage::begin(pool).await?;
        permit_key_tenant(
            &mut transaction,
            tenant_id,
            TenantWrite::Operate,
            no_such_key,
        )
        .await?;
        // The key was live a moment ago and only a purge (which the gate above waits for)
        // deletes keys: a missing row here is a revocation that won the race.
        let record = api_keys::rotate(&mut transaction, id, prefix, hash, grace_until)
            .await?
            .ok_or_else(|| RegistryError::conflict("a revoked key cannot be rotated"))?;
        audit(
            &mut transaction,
            &actor.into(),
            &record,
            "api_key.rotated",
            'u',
        )
        .await?;
        storage::commit(transaction).await?;
        Ok::<_, RegistryError>(record)
    })
    .await?;
    Ok(IssuedKey {
        record,
        key: generated.key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused_field(result: Result<(), RegistryError>) -> String {
        match result {
            Err(RegistryError::Invalid(problems)) => problems[0].pointer.clone(),
            other => panic!("expected an invalid field, got {other:?}"),
        }
    }

    #[test]
    fn an_invalid_key_request_names_its_field() {
        let now = Utc::now();
        let request = CreateKey {
            name: "  ".to_owned(),
            tenant_id: None,
            scopes: [Scope::TenantsRead].into_iter().collect(),
            expires_at: None,
            product: None,
        };
        assert_eq!(refused_field(validate_create(&request, now)), "/name");
        let expired = CreateKey {
            name: "ci".to_owned(),
            expires_at: Some(now - chrono::Duration::seconds(1)),
            ..request.clone()
        };
        assert_eq!(refused_field(validate_create(&expired, now)), "/expires_at");
        let no_scopes = CreateKey {
            name: "ci".to_owned(),
            scopes: Scopes::default(),
            ..request.clone()
        };
        assert_eq!(refused_field(validate_create(&no_scopes, now)), "/scopes");
        let bad_product = CreateKey {
            name: "ci".to_owned(),
            product: Some("Billing Sync".to_owned()),
            ..request
        };
        assert_eq!(
            refused_field(validate_create(&bad_product, now)),
            "/product"
        );
    }
}
