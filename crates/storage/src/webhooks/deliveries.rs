//! The delivery queue (`webhook_deliveries`) and its attempt history (`webhook_attempts`).
//!
//! A runner leases due deliveries by setting `leased_until`; a second replica's lease query
//! re-checks that column under the row lock, so a delivery is leased by one runner at a
//! time, and a runner that dies leaves a lease that runs out and is taken again
//! (at-least-once). Every time here comes from the caller's clock, so tests move time
//! instead of sleeping.

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{FromRow, PgConnection, PgPool};
use uuid::Uuid;

/// A delivery to be made: one message for one endpoint.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    /// The endpoint.
    pub endpoint_id: Uuid,
    /// The event it carries; `None` for a test message.
    pub event_id: Option<Uuid>,
    /// The `webhook-id` header.
    pub message_id: String,
    /// The event type.
    pub event_type: String,
    /// The body, `{type, timestamp, data}`.
    pub payload: serde_json::Value,
}

/// Queues `deliveries`, due at `due_at`; a (endpoint, event) pair already queued is left
/// alone. Returns how many were queued.
pub async fn enqueue(
    conn: &mut PgConnection,
    deliveries: &[NewDelivery],
    due_at: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    if deliveries.is_empty() {
        return Ok(0);
    }
    let endpoints: Vec<Uuid> = deliveries.iter().map(|d| d.endpoint_id).collect();
    let events: Vec<Option<Uuid>> = deliveries.iter().map(|d| d.event_id).collect();
    let messages: Vec<&str> = deliveries.iter().map(|d| d.message_id.as_str()).collect();
    let types: Vec<&str> = deliveries.iter().map(|d| d.event_type.as_str()).collect();
    let payloads: Vec<Json<&serde_json::Value>> =
        deliveries.iter().map(|d| Json(&d.payload)).collect();
    sqlx::query(
        "INSERT INTO webhook_deliveries
             (id, endpoint_id, event_id, message_id, event_type, payload, next_attempt_at)
         SELECT gen_random_uuid(), endpoint_id, event_id, message_id, event_type, payload, $6
         FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::jsonb[])
              AS queued (endpoint_id, event_id, message_id, event_type, payload)
         ON CONFLICT ON CONSTRAINT webhook_deliveries_once_per_event DO NOTHING",
    )
    .bind(endpoints)
    .bind(events)
    .bind(messages)
    .bind(types)
    .bind(payloads)
    .bind(due_at)
    .execute(conn)
    .await
    .map(|done| done.rows_affected())
}

/// Queues one delivery due at `due_at` (a test message, which no other delivery can
/// duplicate); returns its id.
pub async fn enqueue_one(
    conn: &mut PgConnection,
    delivery: &NewDelivery,
    due_at: DateTime<Utc>,
) -> Result<Uuid, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO webhook_deliveries
             (id, endpoint_id, event_id, message_id, event_type, payload, next_attempt_at)
         VALUES (gen_random_uuid(), $1, $2, $3, $4, $5, $6) RETURNING id",
    )
    .bind(delivery.endpoint_id)
    .bind(delivery.event_id)
    .bind(&delivery.message_id)
    .bind(&delivery.event_type)
    .bind(Json(&delivery.payload))
    .bind(due_at)
    .fetch_one(conn)
    .await
}

/// A leased delivery with what sending it needs.
#[derive(Debug, Clone, FromRow)]
pub struct Leased {
    /// The delivery.
    pub id: Uuid,
    /// The endpoint.
    pub endpoint_id: Uuid,
    /// The `webhook-id` header.
    pub message_id: String,
    /// The body.
    pub payload: Json<serde_json::Value>,
    /// Attempts made before this one.
    pub attempts: i32,
    /// Where to send it.
    pub url: String,
    /// The endpoint's secret, sealed.
    pub secret_sealed: Vec<u8>,
    /// The previous secret, sealed, if it still signs at lease time.
    pub previous_secret_sealed: Option<Vec<u8>>,
}

/// How many deliveries to lease and for how long.
#[derive(Debug, Clone, Copy)]
pub struct LeaseRequest {
    /// The runner's current time.
    pub now: DateTime<Utc>,
    /// When the lease runs out (well after an attempt's timeout).
    pub until: DateTime<Utc>,
    /// Most deliveries leased at once.
    pub batch: i64,
    /// Most deliveries of one endpoint in flight at once, across runners, so that a slow
    /// receiver cannot take every slot.
    pub per_endpoint: i64,
}

/// Leases due deliveries of enabled endpoints, oldest due first.
pub async fn lease_due(pool: &PgPool, request: LeaseRequest) -> Result<Vec<Leased>, sqlx::Error> {
    sqlx::query_as(
        // Cost grows with the endpoints that have pending deliveries, not with the backlog:
        // a loose index scan finds those endpoints, then each gives at most its free share.
        "WITH RECURSIVE pending_endpoints (endpoint_id) AS (
             (SELECT endpoint_id FROM webhook_deliveries WHERE status = 'pending'
              ORDER BY endpoint_id LIMIT 1)
             UNION ALL
             SELECT (SELECT d.endpoint_id FROM webhook_deliveries d
                     WHERE d.status = 'pending' AND d.endpoint_id > p.endpoint_id
                     ORDER BY d.endpoint_id LIMIT 1)
             FROM pending_endpoints p WHERE p.endpoint_id IS NOT NULL
         ), candidates AS (
             SELECT due.id, due.next_attempt_at
             FROM pending_endpoints p
             JOIN webhook_endpoints e ON e.id = p.endpoint_id AND e.enabled
             CROSS JOIN LATERAL (
                 SELECT count(*) AS leased FROM webhook_deliveries l
                 WHERE l.endpoint_id = p.endpoint_id AND l.status = 'pending'
                   AND l.leased_until > $1
             ) in_flight
             CROSS JOIN LATERAL (
                 SELECT d.id, d.next_attempt_at FROM webhook_deliveries d
                 WHERE d.endpoint_id = p.endpoint_id AND d.status = 'pending'
                   AND d.next_attempt_at <= $1
                   AND (d.leased_until IS NULL OR d.leased_until <= $1)
                 ORDER BY d.next_attempt_at, d.id
                 LIMIT greatest($4 - in_flight.leased, 0)
             ) due
         ), chosen AS (
             SELECT id FROM candidates ORDER BY next_attempt_at, id LIMIT $3
         )
         UPDATE webhook_deliveries d SET leased_until = $2
         FROM webhook_endpoints e
         WHERE d.id IN (SELECT id FROM chosen) AND e.id = d.endpoint_id
           AND d.status = 'pending' AND (d.leased_until IS NULL OR d.leased_until <= $1)
         RETURNING d.id, d.endpoint_id, d.message_id, d.payload, d.attempts, e.url,
                   e.secret_sealed,
                   CASE WHEN e.previous_secret_expires_at > $1 THEN e.previous_secret_sealed END
                       AS previous_secret_sealed",
    )
    .bind(request.now)
    .bind(request.until)
    .bind(request.batch)
    .bind(request.per_endpoint)
    .fetch_all(pool)
    .await
}

/// What an attempt came to, as recorded.
#[derive(Debug, Clone)]
pub struct AttemptRecord<'a> {
    /// When it started.
    pub attempted_at: DateTime<Utc>,
    /// How long it took.
    pub duration_ms: i32,
    /// `delivered`, `gone` or `failed`.
    pub outcome: &'a str,
    /// The receiver's status, if it answered.
    pub status_code: Option<i16>,
    /// Why no answer came.
    pub error: Option<&'a str>,
    /// The first KiB of the answer.
    pub response_excerpt: Option<&'a str>,
}

/// What becomes of the delivery after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterAttempt {
    /// Delivered: done.
    Delivered,
    /// Try again at this time.
    RetryAt(DateTime<Utc>),
    /// The schedule is spent or the endpoint is gone: failed for good.
    Failed,
}

/// Records an attempt of leased delivery `id` and settles the delivery. Returns `false`
/// when the delivery was no longer pending (deleted, or settled by a retry request).
pub async fn record_attempt(
    conn: &mut PgConnection,
    id: Uuid,
    attempt: &AttemptRecord<'_>,
    after: AfterAttempt,
) -> Result<bool, sqlx::Error> {
    let (status, next_attempt_at) = match after {
        AfterAttempt::Delivered => ("delivered", None),
        AfterAttempt::RetryAt(at) => ("pending", Some(at)),
        AfterAttempt::Failed => ("failed", None),
    };
    let settled = sqlx::query(
        "UPDATE webhook_deliveries SET status = $2, next_attempt_at = $3, leased_until = NULL,
             attempts = attempts + 1, last_attempt_at = $4, last_status_code = $5
         WHERE id = $1 AND status = 'pending'",
    )
    .bind(id)
    .bind(status)
    .bind(next_attempt_at)
    .bind(attempt.attempted_at)
    .bind(attempt.status_code)
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1;
    if settled {
        sqlx::query(
            "INSERT INTO webhook_attempts
                 (delivery_id, attempted_at, duration_ms, outcome, status_code, error, response_excerpt)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(id)
        .bind(attempt.attempted_at)
        .bind(attempt.duration_ms)
        .bind(attempt.outcome)
        .bind(attempt.status_code)
        .bind(attempt.error)
        .bind(attempt.response_excerpt)
        .execute(conn)
        .await?;
    }
    Ok(settled)
}

/// Records a successful attempt of leased delivery `id` of endpoint `endpoint_id`, settles
/// it as delivered and marks the endpoint healthy, in one statement: the common case, made on
/// every delivery, so it costs one round trip. Returns `false` when the delivery was no
/// longer pending (deleted, or settled by a retry request).
pub async fn settle_delivered(
    pool: &PgPool,
    id: Uuid,
    endpoint_id: Uuid,
    attempt: &AttemptRecord<'_>,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "WITH settled AS (
             UPDATE webhook_deliveries SET status = 'delivered', next_attempt_at = NULL,
                 leased_until = NULL, attempts = attempts + 1, last_attempt_at = $3,
                 last_status_code = $6
             WHERE id = $1 AND status = 'pending'
             RETURNING id
         ), recorded AS (
             INSERT INTO webhook_attempts
                 (delivery_id, attempted_at, duration_ms, outcome, status_code, error, response_excerpt)
             SELECT id, $3, $4, $5, $6, $7, $8 FROM settled
         ), healthy AS (
             UPDATE webhook_endpoints SET failing_since = NULL
             WHERE id = $2 AND failing_since IS NOT NULL AND EXISTS (SELECT 1 FROM settled)
         )
         SELECT EXISTS (SELECT 1 FROM settled)",
    )
    .bind(id)
    .bind(endpoint_id)
    .bind(attempt.attempted_at)
    .bind(attempt.duration_ms)
    .bind(attempt.outcome)
    .bind(attempt.status_code)
    .bind(attempt.error)
    .bind(attempt.response_excerpt)
    .fetch_one(pool)
    .await
}

/// Records a failure of endpoint `id` at `now`; returns since when it has been failing.
pub async fn endpoint_failed(
    conn: &mut PgConnection,
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE webhook_endpoints SET failing_since = coalesce(failing_since, $2)
         WHERE id = $1 RETURNING failing_since",
    )
    .bind(id)
    .bind(now)
    .fetch_optional(conn)
    .await
    .map(Option::flatten)
}

/// Disables endpoint `id` for `reason`. Returns `Some(tenant filter)` when it was enabled
/// until now, `None` when it already was disabled or is gone.
pub async fn disable_endpoint(
    conn: &mut PgConnection,
    id: Uuid,
    reason: &str,
) -> Result<Option<Option<Uuid>>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE webhook_endpoints SET enabled = false, disabled_reason = $2,
             version = version + 1, updated_at = now()
         WHERE id = $1 AND enabled RETURNING tenant_id",
    )
    .bind(id)
    .bind(reason)
    .fetch_optional(conn)
    .await
}

/// When, after `now`, a pending delivery of an enabled endpoint next falls due or its lease
/// runs out; deliveries already due but held back (by the per-endpoint bound or a lease)
/// wake the runner through a notification or a finished delivery instead.
pub async fn next_due_after(
    pool: &PgPool,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT min(greatest(d.next_attempt_at, coalesce(d.leased_until, d.next_attempt_at)))
         FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id AND e.enabled
         WHERE d.status = 'pending'
           AND greatest(d.next_attempt_at, coalesce(d.leased_until, d.next_attempt_at)) > $1",
    )
    .bind(now)
    .fetch_one(pool)
    .await
}

/// The queue as metrics show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromRow)]
pub struct QueueDepth {
    /// Pending deliveries of enabled endpoints.
    pub pending: i64,
    /// When the oldest of them was queued.
    pub oldest_created_at: Option<DateTime<Utc>>,
}

/// Pending deliveries and the oldest among them.
pub async fn queue_depth(pool: &PgPool) -> Result<QueueDepth, sqlx::Error> {
    sqlx::query_as(
        "SELECT count(*) AS pending, min(d.created_at) AS oldest_created_at
         FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id AND e.enabled
         WHERE d.status = 'pending'",
    )
    .fetch_one(pool)
    .await
}

/// A delivery as its endpoint's owner sees it.
#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct DeliveryRow {
    /// Id.
    pub id: Uuid,
    /// The event, if it carries one.
    pub event_id: Option<Uuid>,
    /// The event type.
    pub event_type: String,
    /// pending, delivered, failed or cancelled.
    pub status: String,
    /// Attempts made.
    pub attempts: i32,
    /// When the next attempt is due, while pending.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The last attempt.
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// The status the receiver last answered.
    pub last_status_code: Option<i16>,
    /// When it was queued.
    pub created_at: DateTime<Utc>,
}

const DELIVERY_COLUMNS: &str = "id, event_id, event_type, status, attempts, next_attempt_at, \
    last_attempt_at, last_status_code, created_at";

/// A page of endpoint `endpoint_id`'s deliveries, newest first.
pub async fn list(
    pool: &PgPool,
    endpoint_id: Uuid,
    status: Option<&str>,
    before: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<DeliveryRow>, sqlx::Error> {
    let (before_time, before_id) = before.unzip();
    sqlx::query_as(&format!(
        "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries
         WHERE endpoint_id = $1 AND ($2::text IS NULL OR status = $2)
           AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4))
         ORDER BY created_at DESC, id DESC LIMIT $5"
    ))
    .bind(endpoint_id)
    .bind(status)
    .bind(before_time)
    .bind(before_id)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// One attempt of a delivery.
#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct AttemptRow {
    /// The delivery.
    pub delivery_id: Uuid,
    /// When it started.
    pub attempted_at: DateTime<Utc>,
    /// How long it took.
    pub duration_ms: i32,
    /// delivered, gone or failed.
    pub outcome: String,
    /// The receiver's status, if it answered.
    pub status_code: Option<i16>,
    /// Why no answer came.
    pub error: Option<String>,
    /// The first KiB of the answer.
    pub response_excerpt: Option<String>,
}

/// The attempts of `deliveries`, oldest first within each delivery.
pub async fn attempts_of(
    pool: &PgPool,
    deliveries: &[Uuid],
) -> Result<Vec<AttemptRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT delivery_id, attempted_at, duration_ms, outcome, status_code, error, response_excerpt
         FROM webhook_attempts WHERE delivery_id = ANY($1) ORDER BY delivery_id, id",
    )
    .bind(deliveries)
    .fetch_all(pool)
    .await
}

/// Queues delivery `id` of endpoint `endpoint_id` again at `now`, whatever its state, with
/// a fresh schedule; `false` if there is no such delivery.
pub async fn requeue(
    conn: &mut PgConnection,
    endpoint_id: Uuid,
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    sqlx::query(
        "UPDATE webhook_deliveries SET status = 'pending', attempts = 0, next_attempt_at = $3,
             leased_until = NULL
         WHERE endpoint_id = $1 AND id = $2",
    )
    .bind(endpoint_id)
    .bind(id)
    .bind(now)
    .execute(conn)
    .await
    .map(|done| done.rows_affected() == 1)
}

/// Queues again, at `now`, every delivery of endpoint `endpoint_id` whose event is in
/// `events`; returns how many.
pub async fn requeue_events(
    conn: &mut PgConnection,
    endpoint_id: Uuid,
    events: &[Uuid],
    now: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    sqlx::query(
        "UPDATE webhook_deliveries SET status = 'pending', attempts = 0, next_attempt_at = $3,
             leased_until = NULL
         WHERE endpoint_id = $1 AND event_id = ANY($2)",
    )
    .bind(endpoint_id)
    .bind(events)
    .bind(now)
    .execute(conn)
    .await
    .map(|done| done.rows_affected())
}

/// Takes the fan-out position for the caller's transaction; `None` when another replica
/// holds it (it is fanning out right now).
pub async fn lock_fanout_position(
    conn: &mut PgConnection,
) -> Result<Option<Option<String>>, sqlx::Error> {
    sqlx::query_scalar("SELECT position FROM webhook_fanout_position FOR UPDATE SKIP LOCKED")
        .fetch_optional(conn)
        .await
}

/// Moves the fan-out position (under the lock of [`lock_fanout_position`]).
pub async fn set_fanout_position(
    conn: &mut PgConnection,
    position: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE webhook_fanout_position SET position = $1, updated_at = now()")
        .bind(position)
        .execute(conn)
        .await
        .map(drop)
}

/// An enabled endpoint as fan-out matches events against it.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct Subscriber {
    /// The endpoint.
    pub id: Uuid,
    /// Its tenant filter.
    pub tenant_id: Option<Uuid>,
    /// Its type filters.
    pub event_types: Option<Vec<String>>,
    /// When it was made: events before that are not sent to it (a replay sends them).
    pub created_at: DateTime<Utc>,
}

/// Every enabled endpoint.
pub async fn subscribers(conn: &mut PgConnection) -> Result<Vec<Subscriber>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, tenant_id, event_types, created_at FROM webhook_endpoints WHERE enabled",
    )
    .fetch_all(conn)
    .await
}
