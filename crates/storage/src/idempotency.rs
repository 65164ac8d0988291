//! Stored first responses to POSTs that carried an `Idempotency-Key`, replayed for 24 h.

use sqlx::PgPool;
use sqlx::types::Json;

/// How long a stored response is replayed.
pub const RETENTION_HOURS: i32 = 24;
/// How long a claim may stay without a response before it counts as abandoned (well over
/// any request timeout).
pub const ABANDONED_AFTER_SECS: f64 = 300.0;

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
        /// Body.
        body: Vec<u8>,
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
    body: Option<Vec<u8>>,
}

/// Claims `key` for `principal` and the request digest `request_hash`.
pub async fn claim(
    pool: &PgPool,
    principal: &str,
    key: &str,
    request_hash: &str,
) -> Result<Claim, sqlx::Error> {
    let mut transaction = pool.begin().await?;
    // An expired record, or a claim whose request died without completing (a crashed
    // replica), frees the key.
    sqlx::query(
        "DELETE FROM idempotency_keys WHERE principal = $1 AND key = $2
           AND (created_at < now() - make_interval(hours => $3)
                OR (status IS NULL AND created_at < now() - make_interval(secs => $4)))",
    )
    .bind(principal)
    .bind(key)
    .bind(RETENTION_HOURS)
    .bind(ABANDONED_AFTER_SECS)
    .execute(&mut *transaction)
    .await?;
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (principal, key, request_hash) VALUES ($1, $2, $3)
         ON CONFLICT (principal, key) DO NOTHING",
    )
    .bind(principal)
    .bind(key)
    .bind(request_hash)
    .execute(&mut *transaction)
    .await?
    .rows_affected();
    let claim = if inserted == 1 {
        Claim::Fresh
    } else {
        let stored: StoredResponse = sqlx::query_as(
            "SELECT request_hash, status, headers, body FROM idempotency_keys
                 WHERE principal = $1 AND key = $2",
        )
        .bind(principal)
        .bind(key)
        .fetch_one(&mut *transaction)
        .await?;
        let StoredResponse {
            request_hash: stored_hash,
            status,
            headers,
            body,
        } = stored;
        match status {
            _ if stored_hash != request_hash => Claim::Mismatch,
            None => Claim::InProgress,
            Some(status) => Claim::Replay {
                status: u16::try_from(status).unwrap_or(500),
                headers: headers.0,
                body: body.unwrap_or_default(),
            },
        }
    };
    transaction.commit().await?;
    Ok(claim)
}

/// Stores the response of the request that claimed `key`.
pub async fn complete(
    pool: &PgPool,
    principal: &str,
    key: &str,
    status: u16,
    headers: &serde_json::Map<String, serde_json::Value>,
    body: &[u8],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE idempotency_keys SET status = $3, headers = $4, body = $5 WHERE principal = $1 AND key = $2",
    )
    .bind(principal)
    .bind(key)
    .bind(i16::try_from(status).unwrap_or(500))
    .bind(Json(headers))
    .bind(body)
    .execute(pool)
    .await
    .map(drop)
}

/// Forgets a claim whose request failed in a way worth retrying (a 5xx).
pub async fn release(pool: &PgPool, principal: &str, key: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM idempotency_keys WHERE principal = $1 AND key = $2 AND status IS NULL")
        .bind(principal)
        .bind(key)
        .execute(pool)
        .await
        .map(drop)
}
