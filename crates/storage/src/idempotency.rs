//! Stored first responses to POSTs that carried an `Idempotency-Key`, one record per
//! principal, method, path and key, replayed for 24 h and then swept. The body arrives here
//! already sealed: this module never sees a response in clear.

use sqlx::PgPool;
use sqlx::types::Json;
use uuid::Uuid;

/// How long a stored response is replayed.
pub const RETENTION_HOURS: i32 = 24;
/// How long a claim may stay without a response before it counts as abandoned (well over
/// any request timeout).
pub const ABANDONED_AFTER_SECS: f64 = 300.0;

/// Which record a request claims: the same key from another principal, or on another
/// method or path, is another record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordId<'a> {
    /// The owner (`Principal::owner_id`): kind, tenant and key id or OIDC subject.
    pub principal: &'a str,
    /// The HTTP method.
    pub method: &'a str,
    /// The request path, without the query (which is part of the request digest).
    pub path: &'a str,
    /// The `Idempotency-Key` header.
    pub key: &'a str,
}

/// What a new request with a key finds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Nobody used the key (or its record expired): run the request, then [`complete`].
    Fresh,
    /// The same request ran before: replay this response.
    Replay {
        /// Status code.
        status: u16,
        /// Headers worth replaying (name → value).
        headers: serde_json::Map<String, serde_json::Value>,
        /// The body as [`complete`] stored it (sealed).
        sealed_body: Vec<u8>,
    },
    /// The key was used for a different request.
    Mismatch,
    /// The first request with this key is still running.
    InProgress,
}

#[derive(sqlx::FromRow)]
struct StoredResponse {
    request_hash: String,
    status: Option<i16>,
    headers: Json<serde_json::Map<String, serde_json::Value>>,
    sealed_body: Option<Vec<u8>>,
}

const WHERE_RECORD: &str = "principal = $1 AND method = $2 AND path = $3 AND key = $4";
/// A claim still running, and `$5`'s.
const WHERE_OWN_CLAIM: &str = "status IS NULL AND claim_token = $5";

fn bind_id<'q>(
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    id: &RecordId<'q>,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    query
        .bind(id.principal)
        .bind(id.method)
        .bind(id.path)
        .bind(id.key)
}

/// Claims record `id` for the request digest `request_hash`; a fresh claim is `token`'s, and
/// only `token` completes or releases it.
pub async fn claim(
    pool: &PgPool,
    id: &RecordId<'_>,
    request_hash: &str,
    token: Uuid,
) -> Result<Claim, sqlx::Error> {
    let mut transaction = crate::begin(pool).await?;
    // An expired record not swept yet, or a claim whose request died without completing (a
    // crashed replica), frees the key.
    bind_id(
        sqlx::query(&format!(
            "DELETE FROM idempotency_records WHERE {WHERE_RECORD}
               AND (created_at < now() - make_interval(hours => $5)
                    OR (status IS NULL AND created_at < now() - make_interval(secs => $6)))"
        )),
        id,
    )
    .bind(RETENTION_HOURS)
    .bind(ABANDONED_AFTER_SECS)
    .execute(&mut *transaction)
    .await?;
    let inserted = bind_id(
        sqlx::query(
            "INSERT INTO idempotency_records
                 (principal, method, path, key, request_hash, claim_token)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT ON CONSTRAINT idempotency_records_pkey DO NOTHING",
        ),
        id,
    )
    .bind(request_hash)
    .bind(token)
    .execute(&mut *transaction)
    .await?
    .rows_affected();
    let claim = if inserted == 1 {
        Claim::Fresh
    } else {
        let stored: StoredResponse = sqlx::query_as(&format!(
            "SELECT request_hash, status, headers, sealed_body FROM idempotency_records
             WHERE {WHERE_RECORD}"
        ))
        .bind(id.principal)
        .bind(id.method)
        .bind(id.path)
        .bind(id.key)
        .fetch_one(&mut *transaction)
        .await?;
        match (stored.status, stored.sealed_body) {
            _ if stored.request_hash != request_hash => Claim::Mismatch,
            (Some(status), Some(sealed_body)) => Claim::Replay {
                status: u16::try_from(status).unwrap_or(500),
                headers: stored.headers.0,
                sealed_body,
            },
            _ => Claim::InProgress,
        }
    };
    transaction.commit().await?;
    Ok(claim)
}

/// Stores the response of the request whose claim of `id` is `token`'s, its body sealed by
/// the caller; `false` when that claim is gone (abandoned and taken by a retry), whose
/// record is then left alone.
pub async fn complete(
    pool: &PgPool,
    id: &RecordId<'_>,
    token: Uuid,
    status: u16,
    headers: &serde_json::Map<String, serde_json::Value>,
    sealed_body: &[u8],
) -> Result<bool, sqlx::Error> {
    bind_id(
        sqlx::query(&format!(
            "UPDATE idempotency_records SET status = $6, headers = $7, sealed_body = $8
             WHERE {WHERE_RECORD} AND {WHERE_OWN_CLAIM}"
        )),
        id,
    )
    .bind(token)
    .bind(i16::try_from(status).unwrap_or(500))
    .bind(Json(headers))
    .bind(sealed_body)
    .execute(pool)
    .await
    .map(|done| done.rows_affected() == 1)
}

/// Forgets `token`'s claim of `id`, whose request ended without an answer worth keeping (a
/// 5xx, a 408 or 429, or none at all), so that a retry runs. Anyone else's claim, and any
/// stored response, stays.
pub async fn release(pool: &PgPool, id: &RecordId<'_>, token: Uuid) -> Result<(), sqlx::Error> {
    bind_id(
        sqlx::query(&format!(
            "DELETE FROM idempotency_records WHERE {WHERE_RECORD} AND {WHERE_OWN_CLAIM}"
        )),
        id,
    )
    .bind(token)
    .execute(pool)
    .await
    .map(drop)
}

/// Deletes at most `batch` records made more than [`RETENTION_HOURS`] ago; returns how many.
pub async fn prune_expired(pool: &PgPool, batch: i64) -> Result<u64, sqlx::Error> {
    sqlx::query(
        "DELETE FROM idempotency_records WHERE ctid = ANY (ARRAY(
             SELECT ctid FROM idempotency_records
             WHERE created_at < now() - make_interval(hours => $1)
             LIMIT $2))",
    )
    .bind(RETENTION_HOURS)
    .bind(batch)
    .execute(pool)
    .await
    .map(|done| done.rows_affected())
}
