//! The background runner: fans new events out to endpoints and makes due deliveries, woken
//! by PostgreSQL notifications (a new event, a delivery made due) and by the next retry
//! falling due, never by a tight poll. Safe with several replicas: fan-out takes one locked
//! position row, deliveries are leased.

use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use keyring::Keyring;
use storage::PgPool;
use storage::webhooks::deliveries::{self, LeaseRequest};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinSet;

use crate::clock::Clock;
use crate::deliver::{self, Delivered};
use crate::fanout::{self, FanOut};

/// The channel deliveries made due are announced on.
const DUE_CHANNEL: &str = "webhook_deliveries_due";

/// How soon fan-out looks again at events held back behind a running transaction.
const HELD_BACK_RECHECK: Duration = Duration::from_millis(10);

/// How long the runner waits after its listener lost the database.
const LISTENER_BACKOFF: Duration = Duration::from_secs(1);

/// How the runner paces itself.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// Deliveries in flight at once in this process.
    pub concurrency: usize,
    /// Deliveries of one endpoint in flight at once across replicas.
    pub per_endpoint: i64,
    /// How long a lease lasts (well over an attempt's timeout).
    pub lease: TimeDelta,
    /// The longest the runner sleeps without a notification: it re-checks the queue then,
    /// in case a notification was lost with a dropped connection.
    pub idle_check: Duration,
    /// How long shutdown waits for deliveries in flight; unfinished ones are taken again
    /// by any replica once their lease runs out.
    pub drain: Duration,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        Self {
            concurrency: 64,
            per_endpoint: 16,
            lease: TimeDelta::seconds(60),
            idle_check: Duration::from_secs(30),
            drain: Duration::from_secs(12),
        }
    }
}

/// What the runner reports as it works (metrics, and tests that wait for an outcome).
pub trait Observer: Send + Sync + 'static {
    /// A delivery attempt finished.
    fn delivered(&self, delivered: &Delivered);
}

/// What one pass of [`Runner::run_once`] did.
#[derive(Debug, Clone, Default)]
pub struct Pass {
    /// The fan-out.
    pub fanned: FanOut,
    /// The deliveries attempted, in the order they finished.
    pub delivered: Vec<Delivered>,
}

/// The runner's shared parts.
#[derive(Clone)]
pub struct Runner {
    pool: PgPool,
    keyring: Arc<Keyring>,
    egress: egress::Egress,
    clock: Arc<dyn Clock>,
    config: RunnerConfig,
    observer: Arc<dyn Observer>,
}

/// Why the runner stopped working.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// The database failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

impl Runner {
    /// A runner over `pool`, opening secrets with `keyring`, sending through `egress`.
    pub fn new(
        pool: PgPool,
        keyring: Arc<Keyring>,
        egress: egress::Egress,
        clock: Arc<dyn Clock>,
        config: RunnerConfig,
        observer: Arc<dyn Observer>,
    ) -> Self {
        Self {
            pool,
            keyring,
            egress,
            clock,
            config,
            observer,
        }
    }

    /// Fans out every new event, then makes every due delivery, waiting for each to settle.
    /// Tests call this with a hand-moved clock; the service loop is [`Runner::run`].
    pub async fn run_once(&self) -> Result<Pass, RunnerError> {
        let fanned = fanout::fan_out(&self.pool, self.clock.now()).await?;
        let mut finished = Vec::new();
        loop {
            let leased = self
                .lease(i64::try_from(self.config.concurrency).unwrap_or(64))
                .await?;
            if leased.is_empty() {
                return Ok(Pass {
                    fanned,
                    delivered: finished,
                });
            }
            let mut in_flight = JoinSet::new();
            for delivery in leased {
                in_flight.spawn(self.clone().deliver(delivery));
            }
            while let Some(done) = in_flight.join_next().await {
                finished.extend(done.ok().flatten());
            }
        }
    }

    async fn lease(&self, batch: i64) -> Result<Vec<deliveries::Leased>, sqlx::Error> {
        let now = self.clock.now();
        deliveries::lease_due(
            &self.pool,
            LeaseRequest {
                now,
                until: now + self.config.lease,
                batch,
                per_endpoint: self.config.per_endpoint,
            },
        )
        .await
    }

    async fn deliver(self, leased: deliveries::Leased) -> Option<Delivered> {
        let delivery = leased.id;
        match deliver::deliver(
            &self.pool,
            &self.keyring,
            &self.egress,
            leased,
            self.clock.now(),
        )
        .await
        {
            Ok(delivered) => {
                self.observer.delivered(&delivered);
                Some(delivered)
            }
            Err(error) => {
                // The lease runs out and the delivery is tried again.
                tracing::warn!(%delivery, %error, "webhook delivery could not be settled");
                None
            }
        }
    }

    /// Runs until `shutdown` resolves, then waits up to the drain bound for deliveries in
    /// flight. Fan-out and delivery run as two loops, so a fan-out pass never delays
    /// refilling a freed delivery slot.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), RunnerError> {
        let (stop, stopped) = watch::channel(false);
        let queued = Notify::new();
        let stopping = async {
            shutdown.await;
            let _ = stop.send(true);
            Ok::<(), RunnerError>(())
        };
        tokio::try_join!(
            stopping,
            self.fan_out_loop(&queued, stopped.clone()),
            self.delivery_loop(&queued, stopped),
        )?;
        Ok(())
    }

    /// Fans out new events as they are announced, and again shortly after a pass found
    /// events held back behind a running transaction.
    async fn fan_out_loop(
        &self,
        queued: &Notify,
        mut stopped: watch::Receiver<bool>,
    ) -> Result<(), RunnerError> {
        let mut listener = sqlx::postgres::PgListener::connect_with(&self.pool).await?;
        listener.listen(fanout::EVENTS_CHANNEL).await?;
        loop {
            let mut sleep = self.config.idle_check;
            match fanout::fan_out(&self.pool, self.clock.now()).await {
                Ok(fanned) => {
                    if fanned.queued > 0 {
                        queued.notify_one();
                    }
                    if fanned.held_back {
                        // Events committed behind a transaction still running, which
                        // announces nothing if it writes no event of its own.
                        sleep = HELD_BACK_RECHECK;
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "webhook fan-out failed; trying again on the next wake-up");
                }
            }
            tokio::select! {
                _ = stopped.changed() => return Ok(()),
                notification = listener.try_recv() => {
                    if let Err(error) = notification {
                        tracing::warn!(%error, "the webhook fan-out listener failed; reconnecting");
                        // The database is away: wait before asking it again.
                        tokio::time::sleep(LISTENER_BACKOFF).await;
                    }
                }
                () = tokio::time::sleep(sleep) => {}
            }
            // Under load, many announcements arrive while one pass runs: one pass reads them all.
            while listener.next_buffered().is_some() {}
        }
    }

    /// Leases due deliveries into free slots whenever one frees up, deliveries are queued
    /// (here or by another replica) or a retry falls due.
    async fn delivery_loop(
        &self,
        queued: &Notify,
        mut stopped: watch::Receiver<bool>,
    ) -> Result<(), RunnerError> {
        let mut listener = sqlx::postgres::PgListener::connect_with(&self.pool).await?;
        listener.listen(DUE_CHANNEL).await?;
        let slots = Arc::new(Semaphore::new(self.config.concurrency));
        let mut in_flight = JoinSet::new();
        loop {
            self.fill(&slots, &mut in_flight).await;
            // While deliveries are in flight, each one finishing wakes the loop to lease
            // again (which takes retries fallen due); only an idle loop needs the time of
            // the next one.
            let sleep = if in_flight.is_empty() {
                self.until_next_due().await
            } else {
                self.config.idle_check
            };
            tokio::select! {
                _ = stopped.changed() => break,
                notification = listener.try_recv() => {
                    if let Err(error) = notification {
                        tracing::warn!(%error, "the webhook delivery listener failed; reconnecting");
                        tokio::time::sleep(LISTENER_BACKOFF).await;
                    }
                }
                () = queued.notified() => {}
                Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
                () = tokio::time::sleep(sleep) => {}
            }
            while listener.next_buffered().is_some() {}
            while in_flight.try_join_next().is_some() {}
        }
        let drained = tokio::time::timeout(self.config.drain, async {
            while in_flight.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                left = in_flight.len(),
                "webhook deliveries still in flight at shutdown; their leases run out and any replica takes them again"
            );
            in_flight.abort_all();
        }
        Ok(())
    }

    /// Leases due deliveries into the free slots and starts them.
    async fn fill(&self, slots: &Arc<Semaphore>, in_flight: &mut JoinSet<Option<Delivered>>) {
        let free = slots.available_permits();
        if free == 0 {
            return;
        }
        match self.lease(i64::try_from(free).unwrap_or(1)).await {
            Ok(leased) => {
                for delivery in leased {
                    let Ok(permit) = Arc::clone(slots).try_acquire_owned() else {
                        break;
                    };
                    let runner = self.clone();
                    in_flight.spawn(async move {
                        let _slot = permit;
                        runner.deliver(delivery).await
                    });
                }
            }
            Err(error) => tracing::warn!(%error, "leasing webhook deliveries failed"),
        }
    }

    async fn until_next_due(&self) -> Duration {
        let now = self.clock.now();
        let next = deliveries::next_due_after(&self.pool, now)
            .await
            .ok()
            .flatten();
        next.map_or(self.config.idle_check, |due| {
            (due - now)
                .to_std()
                .unwrap_or(Duration::ZERO)
                .min(self.config.idle_check)
        })
    }
}
