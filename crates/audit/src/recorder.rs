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
pub async fn append(conn: &mut PgConnection, rows: Vec<EventRow>) -> Result<u64, sqlx::Error> {
    append_identified(conn, rows)
        .await
        .map(|appended| appended.stored)
}

/// What [`append_identified`] stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// Each row's event id, in the order of the rows: a skipped duplicate's is the id of
    /// the event stored under its `(product, external_id)`.
    pub ids: Vec<i64>,
    /// How many rows were stored (the others were duplicates).
    pub stored: u64,
}

/// [`append`], answering the id of every row's event as well.
pub async fn append_identified(
    conn: &mut PgConnection,
    mut rows: Vec<EventRow>,
) -> Result<Appended, sqlx::Error> {
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
    let identities: Vec<Option<(String, String)>> = rows
        .iter()
        .map(|row| row.product.clone().zip(row.external_id.clone()))
        .collect();
    let (rows, kept) = without_duplicates(conn, rows).await?;
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
    let mut inserted = Vec::new();
    if !chained.is_empty() {
        let checkpoints: Vec<(Uuid, i64, Vec<u8>)> = chained
            .iter()
            .filter_map(|row| {
                let seq = row
                    .chain_seq
                    .filter(|seq| seq % crate::CHECKPOINT_EVERY == 0)?;
                Some((row.chain_key?, seq, row.hash.clone()?))
            })
            .collect();
        inserted = storage::audit::insert(conn, &chained).await?;
        storage::audit::insert_checkpoints(conn, &checkpoints).await?;
        let moved: Vec<(Uuid, i64, Vec<u8>)> = tails
            .into_iter()
            .map(|(key, (seq, hash))| (key, seq, hash))
            .collect();
        storage::audit::advance_chains(conn, &moved).await?;
    }
    let stored = u64::try_from(inserted.len()).unwrap_or(u64::MAX);
    let ids = ids_of(conn, &identities, &kept, inserted).await?;
    Ok(Appended { ids, stored })
}

/// The id of every row, in order: kept rows take the next of `inserted`, skipped ones the
/// id stored under their `(product, external_id)` (now including this append's).
async fn ids_of(
    conn: &mut PgConnection,
    identities: &[Option<(String, String)>],
    kept: &[bool],
    inserted: Vec<i64>,
) -> Result<Vec<i64>, sqlx::Error> {
    let mut skipped: HashMap<String, Vec<String>> = HashMap::new();
    for (identity, kept) in identities.iter().zip(kept) {
        if let (Some((product, external)), false) = (identity, kept) {
            skipped
                .entry(product.clone())
                .or_default()
                .push(external.clone());
        }
    }
    let mut stored: HashMap<(String, String), i64> = HashMap::new();
    for (product, externals) in skipped {
        for (external, id) in
            storage::audit::stored_external_ids(conn, &product, &externals).await?
        {
            stored.insert((product.clone(), external), id);
        }
    }
    let mut inserted = inserted.into_iter();
    Ok(identities
        .iter()
        .zip(kept)
        .map(|(identity, kept)| match (kept, identity) {
            (true, _) => inserted.next().unwrap_or_default(),
            (false, Some(identity)) => stored.get(identity).copied().unwrap_or_default(),
            (false, None) => 0,
        })
        .collect())
}

/// `rows` less those whose `(product, external_id)` is stored or came earlier in `rows`,
/// with whether each row was kept.
async fn without_duplicates(
    conn: &mut PgConnection,
    rows: Vec<EventRow>,
) -> Result<(Vec<EventRow>, Vec<bool>), sqlx::Error> {
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
        for external in storage::audit::stored_external_ids(conn, &product, &externals)
            .await?
            .into_keys()
        {
            seen.insert((product.clone(), external));
        }
    }
    let mut kept = Vec::with_capacity(rows.len());
    let rows = rows
        .into_iter()
        .filter(|row| {
            let keep = match (&row.product, &row.external_id) {
                (Some(product), Some(external)) => seen.insert((product.clone(), external.clone())),
                _ => true,
            };
            kept.push(keep);
            keep
        })
        .collect();
    Ok((rows, kept))
}
