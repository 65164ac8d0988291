//! Making leased deliveries: open the endpoint's secrets, sign, send, and settle the delivery
//! and its endpoint's health in one transaction.

use chrono::{DateTime, Utc};
use domain::webhook::{self, AttemptOutcome};
use keyring::Keyring;
use storage::PgPool;
use storage::webhooks::deliveries::{self, AfterAttempt, AttemptRecord, Leased};
use uuid::Uuid;

use crate::send::{self, AttemptResult, Message};
use crate::{secret, sign};

/// Why a delivery could not be made or settled.
#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    /// The database failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The endpoint's secret could not be opened (key ring changed without the old key).
    #[error("the endpoint's secret cannot be opened: {0}")]
    Secret(String),
}

/// Why an endpoint was disabled by the runner, in words for its owner.
pub const GONE_REASON: &str = "the receiver answered 410 Gone";
/// Why an endpoint that kept failing was disabled.
pub const FAILING_REASON: &str = "every delivery failed for 5 days";

/// What one delivery came to, for metrics and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// The delivery.
    pub delivery: Uuid,
    /// The endpoint.
    pub endpoint: Uuid,
    /// What the attempt came to.
    pub attempt: AttemptResult,
    /// Whether the endpoint was disabled because of it.
    pub disabled_endpoint: bool,
}

fn open_secret(keyring: &Keyring, endpoint: Uuid, sealed: &[u8]) -> Result<String, DeliverError> {
    keyring
        .open_str(&secret::context(endpoint), sealed)
        .map_err(|error| DeliverError::Secret(error.to_string()))
}

/// Signs and sends leased delivery `leased` once at `now`, then settles it.
pub async fn deliver(
    pool: &PgPool,
    keyring: &Keyring,
    egress: &egress::Egress,
    leased: Leased,
    now: DateTime<Utc>,
) -> Result<Delivered, DeliverError> {
    let mut secrets = vec![open_secret(
        keyring,
        leased.endpoint_id,
        &leased.secret_sealed,
    )?];
    if let Some(previous) = &leased.previous_secret_sealed {
        secrets.push(open_secret(keyring, leased.endpoint_id, previous)?);
    }
    let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
    let body = leased.payload.0.to_string();
    let timestamp = now.timestamp();
    let signature =
        sign::signature_header(&secrets, &leased.message_id, timestamp, body.as_bytes())
            .map_err(|error| DeliverError::Secret(error.to_string()))?;
    let attempt = send::attempt(
        egress,
        Message {
            url: &leased.url,
            id: &leased.message_id,
            timestamp,
            signature: &signature,
            body: body.as_bytes(),
        },
    )
    .await;
    let disabled_endpoint = settle(pool, &leased, &attempt, now).await?;
    Ok(Delivered {
        delivery: leased.id,
        endpoint: leased.endpoint_id,
        attempt,
        disabled_endpoint,
    })
}

/// Records `attempt` of `leased`, made at `now`; returns whether the endpoint was disabled.
async fn settle(
    pool: &PgPool,
    leased: &Leased,
    attempt: &AttemptResult,
    now: DateTime<Utc>,
) -> Result<bool, DeliverError> {
    let attempts_made = u32::try_from(leased.attempts).unwrap_or(0) + 1;
    let after = match attempt.outcome {
        AttemptOutcome::Delivered => AfterAttempt::Delivered,
        AttemptOutcome::Gone => AfterAttempt::Failed,
        AttemptOutcome::Failed => webhook::next_attempt_at(attempts_made, now)
            .map_or(AfterAttempt::Failed, AfterAttempt::RetryAt),
    };
    let record = AttemptRecord {
        attempted_at: now,
        duration_ms: i32::try_from(attempt.duration.as_millis()).unwrap_or(i32::MAX),
        outcome: attempt.outcome.label(),
        status_code: attempt.status.and_then(|status| i16::try_from(status).ok()),
        error: attempt.error.as_deref(),
        response_excerpt: attempt.excerpt.as_deref(),
    };
    if attempt.outcome == AttemptOutcome::Delivered {
        deliveries::settle_delivered(pool, leased.id, leased.endpoint_id, &record).await?;
        return Ok(false);
    }
    let mut transaction = storage::begin(pool).await?;
    if !deliveries::record_attempt(&mut transaction, leased.id, &record, after).await? {
        // Deleted with its endpoint, or queued afresh by a retry request meanwhile.
        storage::commit(transaction).await?;
        return Ok(false);
    }
    let disable_for = match attempt.outcome {
        AttemptOutcome::Delivered => None,
        AttemptOutcome::Gone => Some(GONE_REASON),
        AttemptOutcome::Failed => {
            deliveries::endpoint_failed(&mut transaction, leased.endpoint_id, now)
                .await?
                .filter(|since| webhook::failing_too_long(*since, now))
                .map(|_| FAILING_REASON)
        }
    };
    let disabled = match disable_for {
        Some(reason) => {
            let disabled =
                deliveries::disable_endpoint(&mut transaction, leased.endpoint_id, reason).await?;
            if let Some(tenant_id) = disabled {
                crate::announce::endpoint_disabled(
                    &mut transaction,
                    leased.endpoint_id,
                    tenant_id,
                    reason,
                    now,
                )
                .await?;
            }
            disabled.is_some()
        }
        None => false,
    };
    storage::commit(transaction).await?;
    Ok(disabled)
}
