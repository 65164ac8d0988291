//! The loop: lease due runs up to the free slots, run each to its end, its wait for a
//! report or its failed attempt, renewing its lease meanwhile; delete expired backups.

use std::time::{Duration, Instant};

use chrono::Utc;
use domain::provisioning::{Step, Teardown};
use registry::provisioning::Goal;
use registry::provisioning::runs::{self, Run};
use tokio::task::JoinSet;

use crate::backends::Backends;
use crate::lease::{self, Next, Renewal};
use crate::steps::{self, Outcome};
use crate::{Provisioner, StepError};

/// One step as it ended, for metrics and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepReport {
    /// The tenant.
    pub tenant_id: uuid::Uuid,
    /// The product.
    pub product: String,
    /// The step's kind.
    pub step: &'static str,
    /// `succeeded`, `waiting` or `failed`.
    pub outcome: &'static str,
    /// Why it failed.
    pub error: Option<String>,
    /// How long it took.
    pub duration: Duration,
}

/// What the runner reports as it works.
pub trait Observer: Send + Sync + 'static {
    /// A step ended.
    fn step(&self, report: &StepReport);
    /// Runs with work to do, counted at each pass.
    fn queue_depth(&self, depth: i64);
}

/// What one pass of [`Provisioner::run_once`] did.
#[derive(Debug, Clone, Default)]
pub struct Pass {
    /// The steps run, in the order they ended.
    pub steps: Vec<StepReport>,
    /// Runs leased.
    pub leased: usize,
}

enum AnyStep<'a> {
    Plan(&'a Step),
    Teardown(&'a Teardown),
}

impl AnyStep<'_> {
    fn kind(&self) -> &'static str {
        match self {
            AnyStep::Plan(step) => step.kind(),
            AnyStep::Teardown(step) => step.kind(),
        }
    }
}

/// How often the queue-depth gauge is read.
const DEPTH_EVERY: Duration = Duration::from_secs(15);

/// Backups deleted per pass of the expiry sweep.
const EXPIRED_PER_PASS: i64 = 100;

impl Provisioner {
    /// Leases the due runs (up to the configured concurrency) and runs each as far as it
    /// goes now; answers what happened.
    pub async fn run_once(&self) -> Result<Pass, StepError> {
        let limit = i64::try_from(self.config.concurrency).unwrap_or(8);
        let leased = runs::claim(&self.pool, Utc::now(), self.config.lease, limit).await?;
        let mut pass = Pass {
            leased: leased.len(),
            ..Pass::default()
        };
        let mut running = JoinSet::new();
        for run in leased {
            let provisioner = self.clone();
            running.spawn(async move { provisioner.drive(run).await });
        }
        while let Some(done) = running.join_next().await {
            if let Ok(reports) = done {
                pass.steps.extend(reports);
            }
        }
        Ok(pass)
    }

    /// Runs until `shutdown` resolves: leases runs into free slots, looks again every
    /// `poll`, sweeps expired backups every few minutes. A failing database is logged and
    /// tried again.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut running: JoinSet<Vec<StepReport>> = JoinSet::new();
        let mut last_sweep: Option<Instant> = None;
        let mut last_depth: Option<Instant> = None;
        loop {
            while running.try_join_next().is_some() {}
            let free = self.config.concurrency.saturating_sub(running.len());
            if free > 0 {
                let limit = i64::try_from(free).unwrap_or(1);
                match runs::claim(&self.pool, Utc::now(), self.config.lease, limit).await {
                    Ok(leased) => {
                        for run in leased {
                            let provisioner = self.clone();
                            running.spawn(async move { provisioner.drive(run).await });
                        }
                    }
                    Err(error) => tracing::warn!(%error, "provisioning: cannot lease runs"),
                }
            }
            if last_sweep.is_none_or(|at| at.elapsed() > Duration::from_secs(300)) {
                last_sweep = Some(Instant::now());
                self.sweep_expired_backups().await;
            }
            let depth_due = last_depth.is_none_or(|at| at.elapsed() > DEPTH_EVERY);
            if let (Some(observer), true) = (&self.observer, depth_due) {
                last_depth = Some(Instant::now());
                if let Ok(depth) = runs::queue_depth(&self.pool).await {
                    observer.queue_depth(depth);
                }
            }
            tokio::select! {
                () = &mut shutdown => break,
                () = tokio::time::sleep(self.config.poll) => {}
            }
        }
        // Steps cut off here roll back on the product's cluster when their connection
        // closes; their leases lapse and another replica takes them up.
        running.abort_all();
        while running.join_next().await.is_some() {}
    }

    /// Deletes the backups whose retention ended, file first, then the record.
    pub async fn sweep_expired_backups(&self) -> usize {
        match self.delete_expired().await {
            Ok(deleted) => deleted,
            Err(error) => {
                tracing::warn!(%error, "provisioning: cannot delete expired backups");
                0
            }
        }
    }

    async fn delete_expired(&self) -> Result<usize, StepError> {
        let now = Utc::now();
        let expired =
            registry::provisioning::expired_backups(&self.pool, now, EXPIRED_PER_PASS).await?;
        let mut deleted = 0;
        for backup in expired {
            self.backups.delete(&backup).await?;
            registry::provisioning::backup_deleted(&self.pool, &backup, now).await?;
            deleted += 1;
        }
        Ok(deleted)
    }

    fn report(
        &self,
        run: &Run,
        step: &'static str,
        outcome: &'static str,
        error: Option<String>,
        started: Instant,
    ) -> StepReport {
        let report = StepReport {
            tenant_id: run.row.tenant_id,
            product: run.row.product_id.clone(),
            step,
            outcome,
            error,
            duration: started.elapsed(),
        };
        if let Some(observer) = &self.observer {
            observer.step(&report);
        }
        report
    }

    /// Records a failed attempt of `run` at step `kind`, and reports it.
    async fn failed(
        &self,
        run: &Run,
        kind: &'static str,
        error: String,
        started: Instant,
    ) -> StepReport {
        tracing::warn!(tenant_id = %run.row.tenant_id, product = %run.row.product_id, step = kind, %error, "provisioning step failed");
        let now = Utc::now();
        if let Err(cause) =
            runs::fail(&self.pool, run, kind, &error, now, self.config.retry_base).await
        {
            tracing::warn!(error = %cause, "provisioning: cannot record a failed attempt");
        }
        self.report(run, kind, "failed", Some(error), started)
    }

    /// Runs `run` from its current step until it ends, waits or fails.
    async fn drive(&self, run: Run) -> Vec<StepReport> {
        let mut reports = Vec::new();
        let teardown = run.plan.teardown();
        let mut index = usize::try_from(run.row.step).unwrap_or(0);
        let mut backup_id = run.row.backup_id;
        if run.row.hook_waiting_until.is_some() {
            // Leased again while parked on its hook: the product's time to report ran out.
            let text = "the product did not report back in time".to_owned();
            reports.push(self.failed(&run, "hook", text, Instant::now()).await);
            return reports;
        }
        loop {
            let step = match run.goal {
                Goal::Provision => run.plan.steps.get(index).map(AnyStep::Plan),
                Goal::Deprovision => teardown.get(index).map(AnyStep::Teardown),
                Goal::Migrate if index == usize::try_from(run.row.step).unwrap_or(0) => {
                    Some(AnyStep::Plan(&Step::Migrations))
                }
                Goal::Migrate => None,
            };
            let Some(step) = step else {
                if let Err(error) = runs::finish(&self.pool, &run, Utc::now()).await {
                    tracing::warn!(%error, tenant_id = %run.row.tenant_id, "provisioning: cannot record the end of a run");
                }
                return reports;
            };
            let started = Instant::now();
            let kind = step.kind();
            let backends = Backends::default();
            let outcome = self
                .with_lease(&run, self.execute(&run, &step, backup_id, &backends))
                .await;
            match outcome {
                None => {
                    // Another replica may take the run up: what this step was running on
                    // the product's cluster is stopped first, not left to run beside it.
                    backends.stop().await;
                    return reports;
                }
                Some(Ok(Outcome::Done(done, effect))) => {
                    if done.backup_id.is_some() {
                        backup_id = done.backup_id;
                    }
                    let step_number = i32::try_from(index).unwrap_or(i32::MAX);
                    match runs::step_done(&self.pool, &run, step_number, done, effect).await {
                        Ok(true) => {
                            reports.push(self.report(&run, kind, "succeeded", None, started))
                        }
                        Ok(false) => return reports,
                        Err(error) => {
                            tracing::warn!(%error, "provisioning: cannot record a step");
                            return reports;
                        }
                    }
                    index += 1;
                }
                Some(Ok(Outcome::WaitForReport)) => {
                    let until = Utc::now() + self.config.report_within;
                    if let Err(error) = runs::wait_for_report(&self.pool, &run, until).await {
                        tracing::warn!(%error, "provisioning: cannot park a run on its hook");
                    }
                    reports.push(self.report(&run, kind, "waiting", None, started));
                    return reports;
                }
                Some(Err(error)) => {
                    reports.push(self.failed(&run, kind, error.to_string(), started).await);
                    return reports;
                }
            }
        }
    }

    async fn execute(
        &self,
        run: &Run,
        step: &AnyStep<'_>,
        backup_id: Option<uuid::Uuid>,
        backends: &Backends,
    ) -> Result<Outcome, StepError> {
        let now = Utc::now();
        match step {
            AnyStep::Plan(Step::Migrations) => steps::migrate(self, run, backends).await,
            AnyStep::Plan(step) => steps::provision(self, run, step, now, backends).await,
            AnyStep::Teardown(step) => {
                steps::teardown(self, run, step, backup_id, now, backends).await
            }
        }
    }

    /// Runs `work` while renewing `run`'s lease; `None` when the lease was lost (another
    /// replica may hold the run now), or could not be renewed before it ran out, and the work
    /// is dropped.
    async fn with_lease<T>(&self, run: &Run, work: impl Future<Output = T>) -> Option<T> {
        let every = lease::every(self.config.lease);
        let renewing = async {
            let mut held_until = run.row.lease_expires_at.unwrap_or_else(Utc::now);
            let mut wait = every;
            loop {
                tokio::time::sleep(wait).await;
                let until = Utc::now() + self.config.lease;
                let asked = runs::renew(&self.pool, run, until);
                let renewal = match tokio::time::timeout(lease::retry_after(every), asked).await {
                    Ok(Ok(true)) => Renewal::Renewed,
                    Ok(Ok(false)) => Renewal::NotHeld,
                    Ok(Err(error)) => {
                        tracing::warn!(%error, tenant_id = %run.row.tenant_id, "provisioning: cannot renew a lease; trying again");
                        Renewal::Failed
                    }
                    Err(_) => Renewal::Failed,
                };
                match lease::next(renewal, until, held_until, Utc::now(), every) {
                    Next::RenewAfter {
                        after,
                        held_until: known,
                    } => {
                        wait = after;
                        held_until = known;
                    }
                    Next::Abandon(reason) => return reason,
                }
            }
        };
        tokio::select! {
            done = work => Some(done),
            reason = renewing => {
                tracing::warn!(tenant_id = %run.row.tenant_id, product = %run.row.product_id, "provisioning: {reason}");
                None
            }
        }
    }
}
