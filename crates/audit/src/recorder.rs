//! Appending events: the registry's own records and the products' ingested events go
//! through [`append`], on the caller's connection, so they commit with the caller's change.

use std::collections::{HashMap, HashSet};

use chrono::{SubsecRound, Utc};
use serde_json::{Map, Value};
use sqlx::PgConnection;
use sqlx::types::Json;
use storage::audit::EventRow;
use uuid::Uuid;

/// The product name of the registry's own events, which no catalog product or key may take.
pub const PRODUCT: &str = domain::product::REGISTRY;

/// Something the registry did or refused, as its own audit record.
#[derive(Debug, Clone, Default)]
pub struct RegistryEvent {
    /// The tenant it concerns, if any.
    pub tenant_id: Option<Uuid>,
    /// What happened, e.g. `api_key.created`.
    pub action: String,
    /// c, r, u or d.
    pub crud: char,
    /// Who did it.
    pub actor_id: Option<String>,
    /// From where.
    pub source_ip: Option<String>,
    /// What it was done to.
    pub target_id: Option<String>,
    /// Its kind.
    pub target_type: Option<String>,
    /// A name people recognise.
    pub target_name: Option<String>,
    /// A sentence for people.
    pub description: Option<String>,
    /// Whether the action was refused or failed.
    pub is_failure: bool,
    /// Whether nobody was identified.
    pub is_anonymous: bool,
    /// Extra fields (names of what changed, never secrets).
    pub fields: Map<String, Value>,
}

/// Appends the registry's own `event` on `conn`.
pub async fn record(conn: &mut PgConnection, event: RegistryEvent) -> Result<(), sqlx::Error> {
    let row = EventRow {
        tenant_id: event.tenant_id,
        group_id: event.tenant_id.map(|id| id.to_string()),
        product: Some(PRODUCT.to_owned()),
        action: event.action,
        crud: event.crud.to_string(),
        actor_id: event.actor_id,
        target_id: event.target_id,
        target_type: event.target_type,
        target_name: event.target_name,
        source_ip: event.source_ip,
        description: event.description,
        is_failure: event.is_failure,
        is_anonymous: event.is_anonymous,
        fields: Json(Value::Object(event.fields)),
        actor_fields: Json(Value::Object(Map::new())),
        target_fields: Json(Value::Object(Map::new())),
        created_at: Utc::now(),
        ..EventRow::default()
    };
    append(conn, vec![row]).await.map(drop)
}

/// Stores `rows` on `conn`, chaining each after the last event of its tenant's chain.
/// An event whose `(product, external_id)` is already stored (or repeated within `rows`)
/// is skipped. Times are kept to the microsecond, as PostgreSQL stores them. Returns how
/// many were stored.
///
/// Every [`crate::CHECKPOINT_EVERY`]th event of a chain is also recorded as a checkpoint.
/// Locks in the documented order: the events' tenant rows (key share), then their chain
/// heads, both until the caller's transaction ends. Appends to one tenant are chained in
/// commit order; appends to different tenants do not wait for each other.
pub async fn append(conn: &mut PgConnection, mut rows: Vec<EventRow>) -> Result<u64, sqlx::Error> {
    let received = Utc::now().trunc_subsecs(6);
    for row in &mut rows {
        row.received_at = received;
        row.created_at = row.created_at.trunc_subsecs(6);
        row.source_ip = row.source_ip.as_deref().and_then(crate::canonical_ip);
        row.chain_key = Some(row.tenant_id.unwrap_or_else(Uuid::nil));
    }
    let tenants: Vec<Uuid> = rows.iter().filter_map(|row| row.tenant_id).collect();
    storage::audit::lock_tenants(conn, &tenants).await?;
    let keys: Vec<Uuid> = rows.iter().filter_map(|row| row.chain_key).collect();
    let heads = storage::audit::lock_chains(conn, &keys).await?;
    let rows = without_duplicates(conn, rows).await?;
    let mut tails: HashMap<Uuid, (i64, Vec<u8>)> = heads
        .into_iter()
        .map(|head| (head.chain_key, (head.last_seq, head.last_hash)))
        .collect();
    let mut chained = Vec::with_capacity(rows.len());
    for mut row in rows {
        let key = row.chain_key.unwrap_or_default();
        let (seq, previous) = tails
            .entry(key)
            .or_insert((0, storage::audit::GENESIS.to_vec()));
        *seq += 1;
        row.chain_seq = Some(*seq);
        row.prev_hash = Some(previous.clone());
        let hash = crate::hash(previous, &row);
        previous.clone_from(&hash);
        row.hash = Some(hash);
        chained.push(row);
    }
    if chained.is_empty() {
        return Ok(0);
    }
    let checkpoints: Vec<(Uuid, i64, Vec<u8>)> = chained
        .iter()
        .filter_map(|row| {
            let seq = row
                .chain_seq
                .filter(|seq| seq % crate::CHECKPOINT_EVERY == 0)?;
            Some((row.chain_key?, seq, row.hash.clone()?))
        })
        .collect();
    storage::audit::insert(conn, &chained).await?;
    storage::audit::insert_checkpoints(conn, &checkpoints).await?;
    let moved: Vec<(Uuid, i64, Vec<u8>)> = tails
        .into_iter()
        .map(|(key, (seq, hash))| (key, seq, hash))
        .collect();
    storage::audit::advance_chains(conn, &moved).await?;
    Ok(u64::try_from(chained.len()).unwrap_or(u64::MAX))
}

/// `rows` less those whose `(product, external_id)` is stored or came earlier in `rows`.
async fn without_duplicates(
    conn: &mut PgConnection,
    rows: Vec<EventRow>,
) -> Result<Vec<EventRow>, sqlx::Error> {
    let mut by_product: HashMap<String, Vec<String>> = HashMap::new();
    for row in &rows {
        if let (Some(product), Some(external)) = (&row.product, &row.external_id) {
            by_product
                .entry(product.clone())
                .or_default()
                .push(external.clone());
        }
    }
    let mut seen: HashSet<(String, String)> = HashSet::new();
    for (product, externals) in by_product {
        for external in storage::audit::stored_external_ids(conn, &product, &externals).await? {
            seen.insert((product.clone(), external));
        }
    }
    Ok(rows
        .into_iter()
        .filter(|row| match (&row.product, &row.external_id) {
            (Some(product), Some(external)) => seen.insert((product.clone(), external.clone())),
            _ => true,
        })
        .collect())
}
