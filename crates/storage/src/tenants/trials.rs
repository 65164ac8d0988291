//! Trials that end: the trial tenants whose end has passed, locked for the transition that
//! freezes them, and those whose end is near, with the warning each is owed recorded once.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{RawTenant, SELECT, TenantRow, rows};

/// Up to `limit` trial tenants whose trial ended at or before `now`, earliest first, locked
/// until the caller's transaction ends; rows another transaction holds are skipped (another
/// replica is freezing them).
pub async fn lock_expired(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<TenantRow>, sqlx::Error> {
    sqlx::query_as::<_, RawTenant>(&format!(
        "{SELECT} WHERE t.status = 'trial' AND t.trial_ends_at <= $1
         ORDER BY t.trial_ends_at, t.id LIMIT $2 FOR UPDATE OF t SKIP LOCKED"
    ))
    .bind(now)
    .bind(limit)
    .fetch_all(conn)
    .await
    .and_then(rows)
}

/// Up to `limit` trial tenants whose trial ends after `now` and at or before `until` and
/// who were not yet warned of that end, earliest first.
pub async fn unwarned_ending(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<TenantRow>, sqlx::Error> {
    sqlx::query_as::<_, RawTenant>(&format!(
        "{SELECT} WHERE t.status = 'trial' AND t.trial_ends_at > $1 AND t.trial_ends_at <= $2
           AND NOT EXISTS (SELECT 1 FROM tenant_trial_warnings w
                           WHERE w.tenant_id = t.id AND w.trial_ends_at = t.trial_ends_at)
         ORDER BY t.trial_ends_at, t.id LIMIT $3"
    ))
    .bind(now)
    .bind(until)
    .bind(limit)
    .fetch_all(conn)
    .await
    .and_then(rows)
}

/// Records that tenant `id` is warned, at `now`, of its trial ending at `ends_at`; `false`
/// when it already was (another replica warned it first, its insert committed or waited
/// for), so exactly one caller announces each warning.
pub async fn record_warning(
    conn: &mut PgConnection,
    id: Uuid,
    ends_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar::<_, Uuid>(
        "INSERT INTO tenant_trial_warnings (tenant_id, trial_ends_at, warned_at)
         VALUES ($1, $2, $3)
         ON CONFLICT ON CONSTRAINT tenant_trial_warnings_pkey DO UPDATE
             SET trial_ends_at = excluded.trial_ends_at, warned_at = excluded.warned_at
             WHERE tenant_trial_warnings.trial_ends_at IS DISTINCT FROM excluded.trial_ends_at
         RETURNING tenant_id",
    )
    .bind(id)
    .bind(ends_at)
    .bind(now)
    .fetch_optional(conn)
    .await
    .map(|inserted| inserted.is_some())
}
