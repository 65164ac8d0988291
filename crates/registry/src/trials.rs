//! Trials end: a scheduled sweep freezes each trial tenant whose `trial_ends_at` has passed
//! (a recorded transition with reason `trial_expired`, its audit record, `tenant.status_changed`
//! and `tenant.trial_expired`), and announces `tenant.trial_ending` once per trial end, a few
//! days before. Safe with several replicas sweeping at once: a frozen tenant is locked and
//! moved in one transaction (others skip the locked row, then no longer find a trial), and
//! each warning is recorded by an upsert only one transaction can make.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use domain::TenantStatus;
use domain::event::EventType;
use serde_json::json;
use storage::PgPool;
use storage::tenants::trials;
use uuid::Uuid;
use webhooks::Clock;

use crate::tenants::Transition;
use crate::trail::Recorded;
use crate::{RegistryError, events, tenants};

/// The reason recorded on the transition of an ended trial.
pub const EXPIRED_REASON: &str = "trial_expired";
/// Who the audit records and the status history name as having acted.
pub const ACTOR_ID: &str = "system:trial_expiry";
/// Tenants handled per transaction.
const BATCH: i64 = 100;

/// How the sweep runs.
#[derive(Debug, Clone, Copy)]
pub struct TrialConfig {
    /// How long before its end a trial is announced as ending (`TRIAL_WARNING_DAYS`).
    pub warning: TimeDelta,
    /// How often the scheduled sweep runs.
    pub every: Duration,
}

impl Default for TrialConfig {
    fn default() -> Self {
        Self {
            warning: TimeDelta::days(3),
            every: Duration::from_secs(60),
        }
    }
}

/// What one sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrialSweep {
    /// Tenants frozen because their trial ended.
    pub expired: Vec<Uuid>,
    /// Tenants announced as ending their trial soon.
    pub warned: Vec<Uuid>,
}

/// Freezes every trial that ended by `now` and warns of every trial ending within
/// `config.warning` of it that was not warned of yet.
pub async fn sweep(
    pool: &PgPool,
    now: DateTime<Utc>,
    config: &TrialConfig,
) -> Result<TrialSweep, RegistryError> {
    let mut done = TrialSweep::default();
    loop {
        let frozen = expire_batch(pool, now).await?;
        let full = i64::try_from(frozen.len()).is_ok_and(|count| count >= BATCH);
        done.expired.extend(frozen);
        if !full {
            break;
        }
    }
    loop {
        let (looked_at, warned) = warn_batch(pool, now, now + config.warning).await?;
        done.warned.extend(warned);
        if looked_at < BATCH {
            break;
        }
    }
    Ok(done)
}

async fn expire_batch(pool: &PgPool, now: DateTime<Utc>) -> Result<Vec<Uuid>, RegistryError> {
    let recorded = Recorded {
        actor_id: ACTOR_ID.to_owned(),
        source_ip: None,
    };
    let request = Transition {
        to: TenantStatus::Frozen,
        reason: EXPIRED_REASON.to_owned(),
    };
    let (recorded, request) = (&recorded, &request);
    storage::with_retries(move || async move {
        let mut transaction = storage::begin(pool).await?;
        let due = trials::lock_expired(&mut transaction, now, BATCH).await?;
        let mut frozen = Vec::with_capacity(due.len());
        for current in &due {
            let row = tenants::move_locked(&mut transaction, recorded, current, request).await?;
            let data =
                json!({"tenant": events::tenant(&row), "trial_ended_at": current.trial_ends_at});
            events::emit(
                &mut transaction,
                EventType::TenantTrialExpired,
                Some(row.id),
                data,
            )
            .await?;
            frozen.push(row.id);
        }
        storage::commit(transaction).await?;
        Ok::<_, RegistryError>(frozen)
    })
    .await
}

/// Warns the trials ending in `(now, until]` not warned of yet; returns how many it looked
/// at and which it warned (another replica may have warned the rest).
async fn warn_batch(
    pool: &PgPool,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<(i64, Vec<Uuid>), RegistryError> {
    storage::with_retries(move || async move {
        let mut transaction = storage::begin(pool).await?;
        let ending = trials::unwarned_ending(&mut transaction, now, until, BATCH).await?;
        let mut warned = Vec::new();
        for row in &ending {
            let Some(ends_at) = row.trial_ends_at else {
                continue;
            };
            if trials::record_warning(&mut transaction, row.id, ends_at, now).await? {
                let data = json!({"tenant": events::tenant(row), "trial_ends_at": ends_at});
                events::emit(
                    &mut transaction,
                    EventType::TenantTrialEnding,
                    Some(row.id),
                    data,
                )
                .await?;
                warned.push(row.id);
            }
        }
        storage::commit(transaction).await?;
        Ok::<_, RegistryError>((i64::try_from(ending.len()).unwrap_or(i64::MAX), warned))
    })
    .await
}

/// Sweeps now and every `config.every` on `clock`'s time until `shutdown` resolves; a failed
/// sweep (the database away) is logged and tried again on the next tick.
pub async fn run(
    pool: PgPool,
    clock: Arc<dyn Clock>,
    config: TrialConfig,
    shutdown: impl Future<Output = ()>,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        match sweep(&pool, clock.now(), &config).await {
            Ok(swept) if swept.expired.is_empty() && swept.warned.is_empty() => {}
            Ok(swept) => tracing::info!(
                expired = swept.expired.len(),
                warned = swept.warned.len(),
                "trials swept"
            ),
            Err(error) => {
                tracing::warn!(%error, "the trial sweep failed; trying again on the next tick")
            }
        }
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(config.every) => {}
        }
    }
}
