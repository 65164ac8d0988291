//! The `audit_log` table and the heads of its hash chains. Appending runs on the caller's
//! connection (its transaction), so an event commits or rolls back with the change it
//! describes; the `audit` crate decides what goes in and computes the hashes.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

/// The previous hash of a chain's first event.
pub const GENESIS: [u8; 32] = [0; 32];

/// One event as stored, with its place in its tenant's hash chain.
#[derive(Debug, Clone, Default, PartialEq, sqlx::FromRow)]
pub struct EventRow {
    /// Id (assigned on insert; 0 before).
    pub id: i64,
    /// The tenant, while it exists.
    pub tenant_id: Option<Uuid>,
    /// Retraced group id as recorded.
    pub group_id: Option<String>,
    /// Retraced group name.
    pub group_name: Option<String>,
    /// The product that reported it.
    pub product: Option<String>,
    /// What happened.
    pub action: String,
    /// c, r, u or d.
    pub crud: String,
    /// Actor id.
    pub actor_id: Option<String>,
    /// Actor name.
    pub actor_name: Option<String>,
    /// Actor link.
    pub actor_href: Option<String>,
    /// Actor fields (a JSON object of strings).
    pub actor_fields: Json<serde_json::Value>,
    /// Target id.
    pub target_id: Option<String>,
    /// Target name.
    pub target_name: Option<String>,
    /// Target kind.
    pub target_type: Option<String>,
    /// Target link.
    pub target_href: Option<String>,
    /// Target fields.
    pub target_fields: Json<serde_json::Value>,
    /// The caller's address, canonical text.
    pub source_ip: Option<String>,
    /// A sentence for people.
    pub description: Option<String>,
    /// Whether the action failed.
    pub is_failure: bool,
    /// Whether nobody was signed in.
    pub is_anonymous: bool,
    /// Extra fields.
    pub fields: Json<serde_json::Value>,
    /// Retraced's metadata (a JSON object of strings; null is stored as `{}`).
    pub metadata: Json<serde_json::Value>,
    /// The product's own id for the event.
    pub external_id: Option<String>,
    /// Reporting component.
    pub component: Option<String>,
    /// Product version.
    pub version: Option<String>,
    /// When it happened.
    pub created_at: DateTime<Utc>,
    /// When the registry stored it.
    pub received_at: DateTime<Utc>,
    /// The chain: the tenant at write time, or the nil uuid (None only before V7).
    pub chain_key: Option<Uuid>,
    /// Position in the chain, from 1.
    pub chain_seq: Option<i64>,
    /// The previous event's hash.
    pub prev_hash: Option<Vec<u8>>,
    /// This event's hash.
    pub hash: Option<Vec<u8>>,
}

const COLUMNS: &str = "id, tenant_id, group_id, group_name, product, action, crud, actor_id,
    actor_name, actor_href, actor_fields, target_id, target_name, target_type, target_href,
    target_fields, host(source_ip) AS source_ip, description, is_failure, is_anonymous, fields,
    metadata, external_id, component, version, created_at, received_at, chain_key, chain_seq,
    prev_hash, hash";

/// Where a chain ends, and where retention has cut its beginning.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ChainHead {
    /// The tenant, or the nil uuid.
    pub chain_key: Uuid,
    /// The last event's position (0: empty).
    pub last_seq: i64,
    /// The last event's hash.
    pub last_hash: Vec<u8>,
    /// The last position retention deleted (0: none).
    pub pruned_seq: i64,
    /// The hash of that event.
    pub pruned_hash: Vec<u8>,
}

/// Key-share locks on the rows of `tenants`, in id order, until the caller's transaction
/// ends. Inserting an event that references a tenant takes this lock anyway (the foreign
/// key check), but only after the chain head is locked; taken here first, it keeps the lock
/// order of docs/security.md (tenant rows, then chain heads), so an append never holds a
/// chain head while it waits for a tenant that a writer of that tenant holds while it waits
/// for the chain head.
pub async fn lock_tenants(conn: &mut PgConnection, tenants: &[Uuid]) -> Result<(), sqlx::Error> {
    let mut tenants = tenants.to_vec();
    tenants.sort_unstable();
    tenants.dedup();
    if tenants.is_empty() {
        return Ok(());
    }
    sqlx::query("SELECT 1 FROM tenants WHERE id = ANY($1) ORDER BY id FOR KEY SHARE")
        .bind(&tenants)
        .execute(conn)
        .await
        .map(drop)
}

/// Locks the heads of `keys` until the caller's transaction ends, creating missing ones.
/// Keys are locked in order, so two appends never deadlock.
pub async fn lock_chains(
    conn: &mut PgConnection,
    keys: &[Uuid],
) -> Result<Vec<ChainHead>, sqlx::Error> {
    let mut keys = keys.to_vec();
    keys.sort_unstable();
    keys.dedup();
    sqlx::query(
        "INSERT INTO audit_chains (chain_key) SELECT unnest($1::uuid[]) ORDER BY 1
         ON CONFLICT (chain_key) DO NOTHING",
    )
    .bind(&keys)
    .execute(&mut *conn)
    .await?;
    sqlx::query_as(
        "SELECT chain_key, last_seq, last_hash, pruned_seq, pruned_hash FROM audit_chains
         WHERE chain_key = ANY($1) ORDER BY chain_key FOR UPDATE",
    )
    .bind(&keys)
    .fetch_all(conn)
    .await
}

/// The ids of the events `product` stored under any of `external_ids`, by external id.
pub async fn stored_external_ids(
    conn: &mut PgConnection,
    product: &str,
    external_ids: &[String],
) -> Result<HashMap<String, i64>, sqlx::Error> {
    let found: Vec<(String, i64)> = sqlx::query_as(
        "SELECT external_id, id FROM audit_log WHERE product = $1 AND external_id = ANY($2)",
    )
    .bind(product)
    .bind(external_ids)
    .fetch_all(conn)
    .await?;
    Ok(found.into_iter().collect())
}

fn column<T>(rows: &[EventRow], value: impl Fn(&EventRow) -> T) -> Vec<T> {
    rows.iter().map(value).collect()
}

/// Inserts `rows`, already chained, in one statement; answers each row's id, in the order
/// of `rows` (matched by chain position, which is unique).
pub async fn insert(conn: &mut PgConnection, rows: &[EventRow]) -> Result<Vec<i64>, sqlx::Error> {
    let json = |value: &Json<serde_json::Value>| value.0.to_string();
    sqlx::query(
        "INSERT INTO audit_log (tenant_id, group_id, group_name, product, action, crud, actor_id,
             actor_name, actor_href, actor_fields, target_id, target_name, target_type,
             target_href, target_fields, source_ip, description, is_failure, is_anonymous,
             fields, external_id, component, version, created_at, received_at, chain_key,
             chain_seq, prev_hash, hash, metadata)
         SELECT tenant_id, group_id, group_name, product, action, crud, actor_id, actor_name,
             actor_href, actor_fields::jsonb, target_id, target_name, target_type, target_href,
             target_fields::jsonb, source_ip::inet, description, is_failure, is_anonymous,
             fields::jsonb, external_id, component, version, created_at, received_at,
             chain_key, chain_seq, prev_hash, hash, metadata::jsonb
         FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
             $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[],
             $13::text[], $14::text[], $15::text[], $16::text[], $17::text[], $18::bool[],
             $19::bool[], $20::text[], $21::text[], $22::text[], $23::text[],
             $24::timestamptz[], $25::timestamptz[], $26::uuid[], $27::int8[], $28::bytea[],
             $29::bytea[], $30::text[])
           AS t(tenant_id, group_id, group_name, product, action, crud, actor_id, actor_name,
             actor_href, actor_fields, target_id, target_name, target_type, target_href,
             target_fields, source_ip, description, is_failure, is_anonymous, fields,
             external_id, component, version, created_at, received_at, chain_key, chain_seq,
             prev_hash, hash, metadata)
         RETURNING chain_key, chain_seq, id",
    )
    .bind(column(rows, |row| row.tenant_id))
    .bind(column(rows, |row| row.group_id.clone()))
    .bind(column(rows, |row| row.group_name.clone()))
    .bind(column(rows, |row| row.product.clone()))
    .bind(column(rows, |row| row.action.clone()))
    .bind(column(rows, |row| row.crud.clone()))
    .bind(column(rows, |row| row.actor_id.clone()))
    .bind(column(rows, |row| row.actor_name.clone()))
    .bind(column(rows, |row| row.actor_href.clone()))
    .bind(column(rows, |row| json(&row.actor_fields)))
    .bind(column(rows, |row| row.target_id.clone()))
    .bind(column(rows, |row| row.target_name.clone()))
    .bind(column(rows, |row| row.target_type.clone()))
    .bind(column(rows, |row| row.target_href.clone()))
    .bind(column(rows, |row| json(&row.target_fields)))
    .bind(column(rows, |row| row.source_ip.clone()))
    .bind(column(rows, |row| row.description.clone()))
    .bind(column(rows, |row| row.is_failure))
    .bind(column(rows, |row| row.is_anonymous))
    .bind(column(rows, |row| json(&row.fields)))
    .bind(column(rows, |row| row.external_id.clone()))
    .bind(column(rows, |row| row.component.clone()))
    .bind(column(rows, |row| row.version.clone()))
    .bind(column(rows, |row| row.created_at))
    .bind(column(rows, |row| row.received_at))
    .bind(column(rows, |row| row.chain_key))
    .bind(column(rows, |row| row.chain_seq))
    .bind(column(rows, |row| row.prev_hash.clone()))
    .bind(column(rows, |row| row.hash.clone()))
    .bind(column(rows, |row| {
        if row.metadata.0.is_null() {
            "{}".to_owned()
        } else {
            json(&row.metadata)
        }
    }))
    .fetch_all(conn)
    .await
    .map(|inserted| {
        use sqlx::Row;
        let inserted = inserted.iter().map(|row| {
            (
                row.get::<Uuid, _>(0),
                row.get::<i64, _>(1),
                row.get::<i64, _>(2),
            )
        });
        let ids: HashMap<(Uuid, i64), i64> = inserted
            .into_iter()
            .map(|(key, seq, id)| ((key, seq), id))
            .collect();
        rows.iter()
            .map(|row| {
                let position = (
                    row.chain_key.unwrap_or_default(),
                    row.chain_seq.unwrap_or_default(),
                );
                ids.get(&position).copied().unwrap_or_default()
            })
            .collect()
    })
}

/// Moves the heads of chains forward after an insert: `(key, last_seq, last_hash)`.
pub async fn advance_chains(
    conn: &mut PgConnection,
    heads: &[(Uuid, i64, Vec<u8>)],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE audit_chains c SET last_seq = t.seq, last_hash = t.hash
         FROM unnest($1::uuid[], $2::int8[], $3::bytea[]) AS t(key, seq, hash)
         WHERE c.chain_key = t.key",
    )
    .bind(heads.iter().map(|head| head.0).collect::<Vec<_>>())
    .bind(heads.iter().map(|head| head.1).collect::<Vec<_>>())
    .bind(heads.iter().map(|head| head.2.clone()).collect::<Vec<_>>())
    .execute(conn)
    .await
    .map(drop)
}

/// A chain's head, if the chain exists.
pub async fn chain_head(
    conn: &mut PgConnection,
    key: Uuid,
) -> Result<Option<ChainHead>, sqlx::Error> {
    sqlx::query_as(
        "SELECT chain_key, last_seq, last_hash, pruned_seq, pruned_hash FROM audit_chains
         WHERE chain_key = $1",
    )
    .bind(key)
    .fetch_optional(conn)
    .await
}

/// Up to `limit` events of chain `key` after position `after` and at most `through`, in
/// chain order.
pub async fn chain_page(
    conn: &mut PgConnection,
    key: Uuid,
    after: i64,
    through: i64,
    limit: i64,
) -> Result<Vec<EventRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM audit_log
         WHERE chain_key = $1 AND chain_seq > $2 AND chain_seq <= $3
         ORDER BY chain_seq LIMIT $4"
    ))
    .bind(key)
    .bind(after)
    .bind(through)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Records checkpoints: `(chain key, position, hash of the event at that position)`.
pub async fn insert_checkpoints(
    conn: &mut PgConnection,
    checkpoints: &[(Uuid, i64, Vec<u8>)],
) -> Result<(), sqlx::Error> {
    if checkpoints.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO audit_checkpoints (chain_key, chain_seq, hash)
         SELECT * FROM unnest($1::uuid[], $2::int8[], $3::bytea[])",
    )
    .bind(checkpoints.iter().map(|point| point.0).collect::<Vec<_>>())
    .bind(checkpoints.iter().map(|point| point.1).collect::<Vec<_>>())
    .bind(
        checkpoints
            .iter()
            .map(|point| point.2.clone())
            .collect::<Vec<_>>(),
    )
    .execute(conn)
    .await
    .map(drop)
}

/// A checkpoint position of a chain, with what was recorded there and what is stored there
/// now (either may be missing).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct CheckpointState {
    /// The position.
    pub chain_seq: i64,
    /// The hash the checkpoint recorded.
    pub recorded: Option<Vec<u8>>,
    /// The id of the event stored at the position.
    pub event_id: Option<i64>,
    /// That event's stored hash.
    pub stored: Option<Vec<u8>>,
}

/// The checkpoints of chain `key` at every `every`-th position after `after` through
/// `through`, each with the event stored there, in order; every position appears, so a
/// deleted checkpoint or event shows as a missing side.
pub async fn checkpoints(
    conn: &mut PgConnection,
    key: Uuid,
    every: i64,
    after: i64,
    through: i64,
) -> Result<Vec<CheckpointState>, sqlx::Error> {
    sqlx::query_as(
        "SELECT position AS chain_seq, c.hash AS recorded, l.id AS event_id, l.hash AS stored
         FROM generate_series(($3 / $2 + 1) * $2, $4, $2) AS position
         LEFT JOIN audit_checkpoints c ON c.chain_key = $1 AND c.chain_seq = position
         LEFT JOIN audit_log l ON l.chain_key = $1 AND l.chain_seq = position
         ORDER BY position",
    )
    .bind(key)
    .bind(every)
    .bind(after)
    .bind(through)
    .fetch_all(conn)
    .await
}

/// Deletes up to about `batch` events received before `cutoff`, oldest first, in one short
/// transaction; returns how many went. Each chain loses a prefix only, and its anchor moves
/// to the last deleted event (its checkpoints up to there go too), so what remains still
/// verifies.
pub async fn prune(pool: &PgPool, cutoff: DateTime<Utc>, batch: i64) -> Result<u64, sqlx::Error> {
    let mut transaction = crate::begin(pool).await?;
    let ends: Vec<(Uuid, i64)> = sqlx::query_as(
        "SELECT chain_key, max(chain_seq) FROM (
             SELECT chain_key, chain_seq FROM audit_log
             WHERE received_at < $1 AND chain_key IS NOT NULL
             ORDER BY received_at LIMIT $2) oldest
         GROUP BY chain_key",
    )
    .bind(cutoff)
    .bind(batch)
    .fetch_all(&mut *transaction)
    .await?;
    let keys: Vec<Uuid> = ends.iter().map(|end| end.0).collect();
    lock_chains(&mut transaction, &keys).await?;
    let mut deleted = 0;
    for (key, through) in ends {
        let gone: i64 = sqlx::query_scalar(
            "WITH gone AS (
                 DELETE FROM audit_log WHERE chain_key = $1 AND chain_seq <= $2
                 RETURNING chain_seq, hash),
             last AS (SELECT chain_seq, hash FROM gone ORDER BY chain_seq DESC LIMIT 1),
             anchored AS (
                 UPDATE audit_chains c SET pruned_seq = last.chain_seq, pruned_hash = last.hash
                 FROM last WHERE c.chain_key = $1 AND last.chain_seq > c.pruned_seq
                 RETURNING 1),
             outdated AS (
                 DELETE FROM audit_checkpoints WHERE chain_key = $1 AND chain_seq <= $2
                 RETURNING 1)
             SELECT count(*) FROM gone",
        )
        .bind(key)
        .bind(through)
        .fetch_one(&mut *transaction)
        .await?;
        deleted += u64::try_from(gone).unwrap_or_default();
    }
    let legacy = sqlx::query(
        "DELETE FROM audit_log WHERE id IN (
             SELECT id FROM audit_log WHERE received_at < $1 AND chain_key IS NULL LIMIT $2)",
    )
    .bind(cutoff)
    .bind(batch)
    .execute(&mut *transaction)
    .await?
    .rows_affected();
    crate::commit(transaction).await?;
    Ok(deleted + legacy)
}

/// What a search matches; every field narrows it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventFilter {
    /// Only this tenant.
    pub tenant_id: Option<Uuid>,
    /// Exact action, or a prefix when it ends with `*`.
    pub action: Option<String>,
    /// c, r, u or d.
    pub crud: Option<String>,
    /// Actor id.
    pub actor_id: Option<String>,
    /// Actor name (exact).
    pub actor_name: Option<String>,
    /// Target id.
    pub target_id: Option<String>,
    /// Target kind.
    pub target_type: Option<String>,
    /// Reporting product.
    pub product: Option<String>,
    /// Failed or not.
    pub is_failure: Option<bool>,
    /// Created at or after.
    pub from: Option<DateTime<Utc>>,
    /// Created before.
    pub to: Option<DateTime<Utc>>,
    /// Received at or after.
    pub received_from: Option<DateTime<Utc>>,
    /// Received before.
    pub received_to: Option<DateTime<Utc>>,
    /// Words that must all occur in the description (case-insensitive).
    pub text: Vec<String>,
}

fn like_escaped(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

/// Events matching `filter` strictly older than the `(created_at, id)` position `before`,
/// newest first, at most `limit`.
pub async fn search(
    conn: &mut PgConnection,
    filter: &EventFilter,
    before: Option<(DateTime<Utc>, i64)>,
    limit: i64,
) -> Result<Vec<EventRow>, sqlx::Error> {
    let mut query = matching(&format!("SELECT {COLUMNS} FROM audit_log"), filter);
    if let Some((time, id)) = before {
        query
            .push(" AND (created_at, id) < (")
            .push_bind(time)
            .push(", ")
            .push_bind(id)
            .push(")");
    }
    query
        .push(" ORDER BY created_at DESC, id DESC LIMIT ")
        .push_bind(limit);
    query.build_query_as().fetch_all(conn).await
}

/// How many events match `filter`.
pub async fn count(conn: &mut PgConnection, filter: &EventFilter) -> Result<i64, sqlx::Error> {
    matching("SELECT count(*) FROM audit_log", filter)
        .build_query_scalar()
        .fetch_one(conn)
        .await
}

/// `select` with the conditions of `filter`, ready for more.
fn matching<'a>(select: &str, filter: &'a EventFilter) -> QueryBuilder<'a, Postgres> {
    let mut query: QueryBuilder<Postgres> = QueryBuilder::new(format!("{select} WHERE true"));
    if let Some(tenant) = filter.tenant_id {
        query.push(" AND tenant_id = ").push_bind(tenant);
    }
    match filter.action.as_deref() {
        Some(prefix) if prefix.ends_with('*') => {
            let escaped = like_escaped(prefix.trim_end_matches('*'));
            query
                .push(" AND action LIKE ")
                .push_bind(format!("{escaped}%"));
        }
        Some(action) => {
            query.push(" AND action = ").push_bind(action.to_owned());
        }
        None => {}
    }
    for (column, value) in [
        ("crud", &filter.crud),
        ("actor_id", &filter.actor_id),
        ("actor_name", &filter.actor_name),
        ("target_id", &filter.target_id),
        ("target_type", &filter.target_type),
        ("product", &filter.product),
    ] {
        if let Some(value) = value {
            query
                .push(format!(" AND {column} = "))
                .push_bind(value.clone());
        }
    }
    if let Some(failed) = filter.is_failure {
        query.push(" AND is_failure = ").push_bind(failed);
    }
    for (column, bound, value) in [
        ("created_at", ">=", filter.from),
        ("created_at", "<", filter.to),
        ("received_at", ">=", filter.received_from),
        ("received_at", "<", filter.received_to),
    ] {
        if let Some(value) = value {
            query
                .push(format!(" AND {column} {bound} "))
                .push_bind(value);
        }
    }
    for word in &filter.text {
        query
            .push(" AND description ILIKE ")
            .push_bind(format!("%{}%", like_escaped(word)));
    }
    query
}
