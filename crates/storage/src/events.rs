//! The `events` table: domain events appended on the caller's connection (its transaction),
//! so an event commits or rolls back with the change it describes, and the feed that reads
//! them in an order no later commit can break.
//!
//! Feed order is [`Position`]: the writing transaction's id, then the insertion number. A
//! read returns only events of transactions below the oldest one still running (the
//! snapshot's `xmin`): those transactions have all ended, so every event at or before the
//! last position returned is already visible, and any event written later sorts after it.
//! Ordering by the insertion number alone would not do, even with that filter: a
//! transaction that got its id early can take a larger number and commit while one with a
//! later id still holds a smaller number, so a reader would pass the smaller number by.

use chrono::{DateTime, Utc};
use domain::event::{Event, EventType, Position, TypeFilter};
use serde_json::{Map, Value};
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

/// The channel a notification is sent on (at commit) whenever events were appended.
pub const CHANNEL: &str = "tenant_registry_events";

/// An event to append.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// What happened.
    pub event_type: EventType,
    /// The tenant it concerns; `None` for a platform-level event.
    pub tenant_id: Option<Uuid>,
    /// The resource as the API shows it, or what changed. Never a secret, never a plain
    /// contact email: every holder of `events:read` on the tenant (or the platform) reads it.
    pub data: Map<String, Value>,
}

/// An event as stored, with its place in the feed.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    /// Where it sits in the feed.
    pub position: Position,
    /// The event itself.
    pub event: Event,
}

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    xact_id: i64,
    seq: i64,
    r#type: String,
    tenant_id: Option<Uuid>,
    data: Json<Map<String, Value>>,
    occurred_at: DateTime<Utc>,
}

impl From<Row> for StoredEvent {
    fn from(row: Row) -> Self {
        Self {
            position: Position {
                xact: row.xact_id,
                seq: row.seq,
            },
            event: Event {
                id: row.id,
                event_type: row.r#type,
                occurred_at: row.occurred_at,
                tenant_id: row.tenant_id,
                data: row.data.0,
            },
        }
    }
}

const COLUMNS: &str = "id, xact_id, seq, type, tenant_id, data, occurred_at";

/// Appends `event` on `conn`, inside the caller's transaction: it neither opens nor commits
/// one. Listeners on [`CHANNEL`] hear of it when (and only if) that transaction commits.
pub async fn append(conn: &mut PgConnection, event: &NewEvent) -> Result<StoredEvent, sqlx::Error> {
    sqlx::query_as::<_, Row>(&format!(
        "INSERT INTO events (type, tenant_id, data) VALUES ($1, $2, $3) RETURNING {COLUMNS}"
    ))
    .bind(event.event_type.as_str())
    .bind(event.tenant_id)
    .bind(Json(&event.data))
    .fetch_one(conn)
    .await
    .map(StoredEvent::from)
}

/// Which events a feed read returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeedFilter {
    /// Their types.
    pub types: TypeFilter,
    /// Only this tenant's.
    pub tenant_id: Option<Uuid>,
}

impl FeedFilter {
    /// Whether `event` passes.
    pub fn matches(&self, event: &Event) -> bool {
        self.tenant_id
            .is_none_or(|tenant| event.tenant_id == Some(tenant))
            && self.types.matches(&event.event_type)
    }
}

/// A page of the feed.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedPage {
    /// Matching events after the position asked for, in feed order.
    pub events: Vec<StoredEvent>,
    /// Where the next read resumes: the last event's position when the page is full, else
    /// the horizon (everything before it was read), so a filtered reader does not scan the
    /// same foreign events again.
    pub next: Position,
    /// Whether committed events wait above the horizon, behind a transaction still running
    /// (which may write no event, so its end is not announced): read again shortly.
    pub held_back: bool,
}

/// The id of the oldest transaction that may still write events here, as `below`: the
/// oldest running in the current snapshot, leaving out those a session of another database
/// holds (they cannot write this table, and a long report query there must not hold back
/// this feed), or the next id to be assigned when none is left. A transaction that ends
/// between the snapshot and the look at the sessions, or a session whose transaction id
/// this role may not see, counts as this database's: the horizon only errs towards
/// waiting. Session ids are 32-bit, snapshot ids 64-bit: their low halves are compared.
const BELOW: &str = "SELECT coalesce(
        (SELECT min(running::text::bigint)
         FROM pg_snapshot_xip(s.snap) AS running
         WHERE (running::text::bigint & 4294967295) NOT IN (
             SELECT backend_xid::text::bigint FROM pg_stat_activity
             WHERE backend_xid IS NOT NULL AND datname IS DISTINCT FROM current_database())),
        pg_snapshot_xmax(s.snap)::text::bigint) AS below
    FROM (SELECT pg_current_snapshot() AS snap) s";

/// The position before which every event is committed and readable, and whether committed
/// events already wait after it.
async fn horizon_and_backlog(conn: &mut PgConnection) -> Result<(Position, bool), sqlx::Error> {
    let (below, held_back): (i64, bool) = sqlx::query_as(&format!(
        "SELECT h.below, EXISTS (SELECT 1 FROM events WHERE xact_id >= h.below) FROM ({BELOW}) h"
    ))
    .fetch_one(conn)
    .await?;
    Ok((before_transaction(below), held_back))
}

fn before_transaction(xact: i64) -> Position {
    Position {
        xact: xact - 1,
        seq: i64::MAX,
    }
}

/// The horizon: every event before it is committed and readable; every event yet to be
/// read comes after it. Where a reader that wants only new events starts.
pub async fn horizon(pool: &PgPool) -> Result<Position, sqlx::Error> {
    let below: i64 = sqlx::query_scalar(BELOW).fetch_one(pool).await?;
    Ok(before_transaction(below))
}

/// Up to `limit` events matching `filter` after `after`, in feed order, from transactions
/// that have all ended. On a plain connection or in a read-only snapshot alike (the caller
/// may bound it with a statement timeout).
pub async fn feed(
    conn: &mut PgConnection,
    filter: &FeedFilter,
    after: Position,
    limit: i64,
) -> Result<FeedPage, sqlx::Error> {
    // Read first: every transaction below it has ended by then, so the page's snapshot (the
    // same one, or a later one) sees all of their events.
    let (horizon, held_back) = horizon_and_backlog(&mut *conn).await?;
    let mut query =
        QueryBuilder::<Postgres>::new(format!("SELECT {COLUMNS} FROM events WHERE xact_id <= "));
    query
        .push_bind(horizon.xact)
        .push(" AND (xact_id, seq) > (")
        .push_bind(after.xact)
        .push(", ")
        .push_bind(after.seq)
        .push(")");
    if let Some(tenant) = filter.tenant_id {
        query.push(" AND tenant_id = ").push_bind(tenant);
    }
    if !filter.types.is_all() {
        query
            .push(" AND (type = ANY(")
            .push_bind(filter.types.names())
            .push(") OR type ^@ ANY(")
            .push_bind(filter.types.prefixes())
            .push("))");
    }
    query.push(" ORDER BY xact_id, seq LIMIT ").push_bind(limit);
    let events: Vec<StoredEvent> = query
        .build_query_as::<Row>()
        .fetch_all(conn)
        .await?
        .into_iter()
        .map(StoredEvent::from)
        .collect();
    let full = i64::try_from(events.len()).is_ok_and(|read| read >= limit);
    let next = match events.last() {
        Some(last) if full => last.position,
        _ => after.max(horizon),
    };
    Ok(FeedPage {
        events,
        next,
        held_back,
    })
}

/// Deletes up to `batch` of the oldest events that occurred before `cutoff`, in one short
/// statement; returns how many.
pub async fn prune(pool: &PgPool, cutoff: DateTime<Utc>, batch: i64) -> Result<u64, sqlx::Error> {
    sqlx::query(
        "DELETE FROM events WHERE id IN (
             SELECT id FROM events WHERE occurred_at < $1 ORDER BY occurred_at LIMIT $2)",
    )
    .bind(cutoff)
    .bind(batch)
    .execute(pool)
    .await
    .map(|done| done.rows_affected())
}
