//! The webhook endpoint use cases: create (the secret is shown once), change, delete, rotate
//! the secret (the old one keeps signing for 24 h), and the delivery requests (retry one,
//! replay since a time, send a test message). A tenant principal manages only endpoints
//! filtered to its own tenant; another's answers as if it did not exist.

use chrono::{DateTime, Utc};
use domain::TenantWrite;
use domain::event::{Position, TypeFilter};
use domain::webhook::{self, PREVIOUS_SECRET_GRACE};
use egress::Policy;
use keyring::Keyring;
use serde_json::{Map, Value, json};
use storage::events::{self, FeedFilter};
use storage::webhooks::deliveries::{self, NewDelivery};
use storage::webhooks::{self as endpoints, EndpointChanges, EndpointRow};
use storage::{PgConnection, PgPool};
use uuid::Uuid;

use crate::trail::{self, Target};
use crate::{Actor, FieldProblem, RegistryError, lifecycle};

/// The type of the message [`send_test`] sends; it is no event of the feed.
pub const TEST_MESSAGE_TYPE: &str = "webhook.test";

/// A new endpoint, as the caller asked for it.
#[derive(Debug, Clone, Default)]
pub struct EndpointInput {
    /// Where deliveries go.
    pub url: String,
    /// Event type filters; `None` for every type.
    pub event_types: Option<Vec<String>>,
    /// The tenant whose events it receives; `None` for every tenant (platform only).
    pub tenant_id: Option<Uuid>,
    /// Free text.
    pub description: Option<String>,
    /// Whether deliveries are made (default yes).
    pub enabled: Option<bool>,
}

/// A change to an endpoint: `None` fields stay.
#[derive(Debug, Clone, Default)]
pub struct EndpointPatch {
    /// New URL.
    pub url: Option<String>,
    /// New filters; `Some(None)` for every type.
    pub event_types: Option<Option<Vec<String>>>,
    /// New description.
    pub description: Option<String>,
    /// Enable or disable.
    pub enabled: Option<bool>,
}

/// An endpoint with its plain secret, answered once.
#[derive(Debug, Clone)]
pub struct WithSecret {
    /// The endpoint.
    pub endpoint: EndpointRow,
    /// `whsec_…`.
    pub secret: String,
}

fn no_such_endpoint() -> RegistryError {
    RegistryError::not_found("no such webhook endpoint")
}

/// `url` if the outbound policy's URL rules allow it and it has no fragment (a fragment is
/// never sent, so it would only mislead whoever reads the endpoint).
fn checked_url(url: &str, policy: &Policy) -> Result<String, FieldProblem> {
    let problem = |detail: String| FieldProblem::new("/url", detail);
    let parsed = policy
        .check_url(url)
        .map_err(|rule| problem(rule.to_string()))?;
    if parsed.fragment().is_some() {
        return Err(problem("must not have a fragment".to_owned()));
    }
    Ok(url.to_owned())
}

fn checked_types(types: &[String]) -> Result<Vec<String>, FieldProblem> {
    if types.is_empty() {
        // An empty list reads as "nothing" to some and "everything" to others: refuse it.
        return Err(FieldProblem::new(
            "/event_types",
            "must name at least one filter; use null (or omit it) for every type",
        ));
    }
    if types.len() > webhook::MAX_EVENT_TYPES {
        return Err(FieldProblem::new(
            "/event_types",
            format!("at most {} filters", webhook::MAX_EVENT_TYPES),
        ));
    }
    TypeFilter::parse(types.iter().map(String::as_str))
        .map(|_| types.to_vec())
        .map_err(|(index, error)| {
            FieldProblem::new(format!("/event_types/{index}"), error.to_string())
        })
}

fn checked_description(text: &str) -> Result<String, FieldProblem> {
    webhook::description(text).map_err(|detail| FieldProblem::new("/description", detail))
}

/// The tenant an endpoint made by `actor` is filtered to: a tenant principal's own, always.
fn tenant_for(actor: &Actor<'_>, asked: Option<Uuid>) -> Result<Option<Uuid>, RegistryError> {
    match (actor.principal.tenant_id, asked) {
        (Some(own), None) => Ok(Some(own)),
        (Some(own), Some(asked)) if asked == own => Ok(Some(own)),
        // Another tenant answers as an unknown one would.
        (Some(_), Some(_)) => Err(RegistryError::invalid_field("/tenant_id", "no such tenant")),
        (None, asked) => Ok(asked),
    }
}

fn lifecycle_write(actor: &Actor<'_>) -> TenantWrite {
    if actor.principal.is_platform() {
        TenantWrite::Administer
    } else {
        TenantWrite::Operate
    }
}

/// Holds the endpoint's tenant (if any) against status changes and checks its lifecycle.
async fn permit_tenant(
    conn: &mut PgConnection,
    actor: &Actor<'_>,
    tenant_id: Option<Uuid>,
) -> Result<(), RegistryError> {
    if let Some(tenant) = tenant_id {
        lifecycle::permit_if_exists(conn, tenant, lifecycle_write(actor))
            .await?
            .ok_or_else(|| RegistryError::invalid_field("/tenant_id", "no such tenant"))?;
    }
    Ok(())
}

/// Whether `actor` may see endpoint `endpoint`.
pub fn visible(actor: &Actor<'_>, endpoint: &EndpointRow) -> bool {
    actor.principal.is_platform() || actor.principal.tenant_id == endpoint.tenant_id
}

async fn audit(
    conn: &mut PgConnection,
    actor: &Actor<'_>,
    endpoint: &EndpointRow,
    action: &str,
    crud: char,
    fields: Map<String, Value>,
) -> Result<(), RegistryError> {
    let target = Target {
        tenant_id: endpoint.tenant_id,
        id: endpoint.id.to_string(),
        kind: "webhook_endpoint",
        name: endpoint.url.clone(),
    };
    trail::record(conn, actor, target, action, crud, fields).await
}

fn fields(pairs: &[(&str, Value)]) -> Map<String, Value> {
    pairs
        .iter()
        .map(|(name, value)| ((*name).to_owned(), value.clone()))
        .collect()
}

fn sealed_secret(keyring: &Keyring, endpoint: Uuid) -> Result<(String, Vec<u8>), RegistryError> {
    let secret = webhooks::secret::generate().map_err(RegistryError::internal)?;
    let sealed = keyring
        .seal_str(&webhooks::secret::context(endpoint), &secret)
        .map_err(RegistryError::internal)?;
    Ok((secret, sealed))
}

/// Creates an endpoint and answers its secret, once.
pub async fn create(
    pool: &PgPool,
    keyring: &Keyring,
    actor: &Actor<'_>,
    input: &EndpointInput,
    policy: &Policy,
) -> Result<WithSecret, RegistryError> {
    let tenant_id = tenant_for(actor, input.tenant_id)?;
    let url = checked_url(&input.url, policy);
    let types = input.event_types.as_deref().map(checked_types).transpose();
    let description = checked_description(input.description.as_deref().unwrap_or_default());
    let mut problems = Vec::new();
    let url = url.map_err(|problem| problems.push(problem)).ok();
    let types = types.map_err(|problem| problems.push(problem)).ok();
    let description = description.map_err(|problem| problems.push(problem)).ok();
    let (Some(url), Some(types), Some(description)) = (url, types, description) else {
        return Err(RegistryError::Invalid(problems));
    };
    let id = Uuid::new_v4();
    let (secret, sealed) = sealed_secret(keyring, id)?;
    let (url, types, description, sealed) = (&url, &types, &description, &sealed);
    let endpoint = storage::with_retries(move || async move {
        let mut transaction = storage::begin(pool).await?;
        permit_tenant(&mut transaction, actor, tenant_id).await?;
        if endpoints::count_for(&mut transaction, tenant_id).await?
            >= webhook::MAX_ENDPOINTS_PER_TENANT
        {
            return Err(RegistryError::conflict(format!(
                "a tenant has at most {} webhook endpoints; delete one first",
                webhook::MAX_ENDPOINTS_PER_TENANT
            )));
        }
        let row = endpoints::insert(
            &mut transaction,
            &endpoints::NewEndpoint {
                id,
                tenant_id,
                url,
                event_types: types.as_deref(),
                description,
                enabled: input.enabled.unwrap_or(true),
                secret_sealed: sealed,
            },
        )
        .await?;
        let recorded = fields(&[
            ("url", json!(row.url)),
            ("event_types", json!(row.event_types)),
        ]);
        audit(
            &mut transaction,
            actor,
            &row,
            "webhook.created",
            'c',
            recorded,
        )
        .await?;
        storage::commit(transaction).await?;
        Ok::<_, RegistryError>(row)
    })
    .await?;
    Ok(WithSecret { endpoint, secret })
}

/// Endpoint `id` if `actor` may see it.
pub async fn get(pool: &PgPool, actor: &Actor<'_>, id: Uuid) -> Result<EndpointRow, RegistryError> {
    endpoints::get(pool, id)
        .await?
        .filter(|endpoint| visible(actor, endpoint))
        .ok_or_else(no_such_endpoint)
}

/// Endpoint `id` locked in the caller's transaction, if `actor` may see it, with its
/// tenant's lifecycle checked.
async fn lock_visible(
    conn: &mut PgConnection,
    actor: &Actor<'_>,
    id: Uuid,
) -> Result<EndpointRow, RegistryError> {
    let tenant_id = endpoints::get_tenant(conn, id)
        .await?
        .filter(|tenant| actor.principal.is_platform() || actor.principal.tenant_id == *tenant)
        .ok_or_else(no_such_endpoint)?;
    // The tenant's row first, then the endpoint's: the lock order of every use case.
    permit_tenant(conn, actor, tenant_id).await?;
    endpoints::lock(conn, id)
        .await?
        .filter(|endpoint| visible(actor, endpoint))
        .ok_or_else(no_such_endpoint)
}

/// Changes endpoint `id`; `expected_version` (from `If-Match`) must match when given.
pub async fn update(
    pool: &PgPool,
    actor: &Actor<'_>,
    id: Uuid,
    patch: &EndpointPatch,
    expected_version: Option<i64>,
    policy: &Policy,
) -> Result<EndpointRow, RegistryError> {
    let url = patch
        .url
        .as_deref()
        .map(|url| checked_url(url, policy))
        .transpose();
    let types = patch
        .event_types
        .as_ref()
        .map(|types| types.as_deref().map(checked_types).transpose())
        .transpose();
    let description = patch
        .description
        .as_deref()
        .map(checked_description)
        .transpose();
    let mut problems = Vec::new();
    let url = url.map_err(|problem| problems.push(problem)).ok().flatten();
    let types = types
        .map_err(|problem| problems.push(problem))
        .ok()
        .flatten();
    let description = description
        .map_err(|problem| problems.push(problem))
        .ok()
        .flatten();
    if !problems.is_empty() {
        return Err(RegistryError::Invalid(problems));
    }
    let (url, types, description) = (&url, &types, &description);
    storage::with_retries(move || async move {
        let mut transaction = storage::begin(pool).await?;
        let current = lock_visible(&mut transaction, actor, id).await?;
        if expected_version.is_some_and(|version| version != current.version) {
            return Err(RegistryError::PreconditionFailed(format!(
                "the endpoint is at version {}, not the version given in If-Match",
                current.version
            )));
        }
        let changes = EndpointChanges {
            url: url.as_deref(),
            event_types: types.as_ref().map(Option::as_deref),
            description: description.as_deref(),
            enabled: patch.enabled,
        };
        let row = endpoints::update(&mut transaction, id, &changes).await?;
        let changed: Vec<Value> = [
            url.is_some().then_some("url"),
            types.is_some().then_some("event_types"),
            description.is_some().then_some("description"),
            patch.enabled.is_some().then_some("enabled"),
        ]
        .into_iter()
        .flatten()
        .map(Value::from)
        .collect();
        let recorded = fields(&[("changed", Value::Array(changed))]);
        audit(
            &mut transaction,
            actor,
            &row,
            "webhook.updated",
            'u',
            recorded,
        )
        .await?;
        storage::commit(transaction).await?;
        Ok(row)
    })
    .await
}

/// Deletes endpoint `id` with its deliveries.
pub async fn delete(pool: &PgPool, actor: &Actor<'_>, id: Uuid) -> Result<(), RegistryError> {
    storage::with_retries(move || async move {
        let mut transaction = storage::begin(pool).await?;
        let current = lock_visible(&mut transaction, actor, id).await?;
        endpoints::delete(&mut transaction, id).await?;
        audit(
            &mut transaction,
            actor,
            &current,
            "webhook.deleted",
            'd',
            Map::new(),
        )
        .await?;
        storage::commit(transaction).await?;
        Ok(())
    })
    .await
}

/// Gives endpoint `id` a new secret, answered once; the old one keeps signing next to it
/// for [`PREVIOUS_SECRET_GRACE`] from `now`.
pub async fn rotate_secret(
    pool: &PgPool,
    keyring: &Keyring,
    actor: &Actor<'_>,
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<WithSecret, RegistryError> {
    let (secret, sealed) = sealed_secret(keyring, id)?;
    let sealed = &sealed;
    let endpoint = storage::with_retries(move || async move {
        let mut transaction = storage::begin(pool).await?;
        lock_visible(&mut transaction, actor, id).await?;
        let row =
            endpoints::rotate_secret(&mut transaction, id, sealed, now + PREVIOUS_SECRET_GRACE)
                .await?;
        audit(
            &mut transaction,
            actor,
            &row,
            "webhook.secret_rotated",
            'u',
            Map::new(),
        )
        .await?;
        storage::commit(transaction).await?;
        Ok::<_, RegistryError>(row)
    })
    .await?;
    Ok(WithSecret { endpoint, secret })
}

/// Queues delivery `delivery` of endpoint `id` again at `now`, with a fresh schedule.
pub async fn retry_delivery(
    pool: &PgPool,
    actor: &Actor<'_>,
    id: Uuid,
    delivery: Uuid,
    now: DateTime<Utc>,
) -> Result<(), RegistryError> {
    storage::with_retries(move || async move {
        let mut transaction = storage::begin(pool).await?;
        let endpoint = lock_visible(&mut transaction, actor, id).await?;
        if !deliveries::requeue(&mut transaction, id, delivery, now).await? {
            return Err(RegistryError::not_found("no such delivery"));
        }
        let recorded = fields(&[("delivery_id", json!(delivery))]);
        audit(
            &mut transaction,
            actor,
            &endpoint,
            "webhook.delivery_retried",
            'u',
            recorded,
        )
        .await?;
        storage::commit(transaction).await?;
        Ok(())
    })
    .await
}

/// Most events one replay reads.
pub const MAX_REPLAY_EVENTS: usize = 10_000;

/// Queues again, at `now`, every retained event since `since` that endpoint `id` wants
/// (its tenant and type filters), delivered before or not; returns how many. A replay
/// reaches back at most to the events' retention and at most [`MAX_REPLAY_EVENTS`].
pub async fn replay(
    pool: &PgPool,
    actor: &Actor<'_>,
    id: Uuid,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<u64, RegistryError> {
    if since > now {
        return Err(RegistryError::invalid_field(
            "/since",
            "must not be in the future",
        ));
    }
    let endpoint = get(pool, actor, id).await?;
    let types = TypeFilter::parse(endpoint.event_types.iter().flatten().map(String::as_str))
        .map_err(|_| RegistryError::internal("stored event types no longer parse"))?;
    let filter = FeedFilter {
        types,
        tenant_id: endpoint.tenant_id,
    };
    let wanted = events_since(pool, &filter, since).await?;
    let wanted = &wanted;
    storage::with_retries(move || async move {
        let mut transaction = storage::begin(pool).await?;
        let endpoint = lock_visible(&mut transaction, actor, id).await?;
        let ids: Vec<Uuid> = wanted
            .iter()
            .filter_map(|delivery| delivery.event_id)
            .collect();
        let requeued = deliveries::requeue_events(&mut transaction, id, &ids, now).await?;
        let fresh: Vec<NewDelivery> = wanted
            .iter()
            .map(|delivery| NewDelivery {
                endpoint_id: id,
                ..delivery.clone()
            })
            .collect();
        let queued = deliveries::enqueue(&mut transaction, &fresh, now).await?;
        let recorded = fields(&[
            ("since", json!(since)),
            ("events", json!(requeued + queued)),
        ]);
        audit(
            &mut transaction,
            actor,
            &endpoint,
            "webhook.replayed",
            'u',
            recorded,
        )
        .await?;
        storage::commit(transaction).await?;
        Ok(requeued + queued)
    })
    .await
}

/// The deliveries (endpoint not yet set) of every retained event matching `filter` that
/// occurred at or after `since`.
async fn events_since(
    pool: &PgPool,
    filter: &FeedFilter,
    since: DateTime<Utc>,
) -> Result<Vec<NewDelivery>, RegistryError> {
    let mut wanted = Vec::new();
    let mut after = Position::START;
    loop {
        let page = events::feed(&mut *pool.acquire().await?, filter, after, 500).await?;
        let read = page.events.len();
        wanted.extend(
            page.events
                .iter()
                .filter(|stored| stored.event.occurred_at >= since)
                .map(|stored| NewDelivery {
                    endpoint_id: Uuid::nil(),
                    event_id: Some(stored.event.id),
                    message_id: stored.event.id.to_string(),
                    event_type: stored.event.event_type.clone(),
                    payload: webhooks::fanout::payload(&stored.event),
                }),
        );
        if wanted.len() > MAX_REPLAY_EVENTS {
            return Err(RegistryError::invalid_field(
                "/since",
                format!("reaches more than {MAX_REPLAY_EVENTS} events; replay a later time"),
            ));
        }
        if read < 500 {
            return Ok(wanted);
        }
        after = page.next;
    }
}

/// Queues a `webhook.test` message to endpoint `id` at `now`; returns the delivery's id.
pub async fn send_test(
    pool: &PgPool,
    actor: &Actor<'_>,
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<Uuid, RegistryError> {
    storage::with_retries(move || async move {
        let mut transaction = storage::begin(pool).await?;
        let endpoint = lock_visible(&mut transaction, actor, id).await?;
        let message_id = format!("test_{}", Uuid::new_v4().simple());
        let payload = json!({
            "type": TEST_MESSAGE_TYPE,
            "timestamp": now,
            "data": {"endpoint_id": id, "message": "a test message from tenant-registry"},
        });
        let delivery = deliveries::enqueue_one(
            &mut transaction,
            &NewDelivery {
                endpoint_id: id,
                event_id: None,
                message_id,
                event_type: TEST_MESSAGE_TYPE.to_owned(),
                payload,
            },
            now,
        )
        .await?;
        audit(
            &mut transaction,
            actor,
            &endpoint,
            "webhook.tested",
            'u',
            Map::new(),
        )
        .await?;
        storage::commit(transaction).await?;
        Ok(delivery)
    })
    .await
}
