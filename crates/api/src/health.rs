//! What the probes read besides the database: whether the start-up checks have passed
//! once, whether the change listener holds its subscription, which background runners
//! are still running; and the operators' report of every dependency (`/health/dependencies`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::task::AbortHandle;

/// The longest one dependency's check may take; the checks run side by side, so the
/// report takes about as long as its slowest dependency, at most this.
pub const CHECK_BUDGET: Duration = Duration::from_millis(800);

/// The name a domain-resolver check asks for: the root, which every resolver can answer
/// from what it holds ("no TXT record" is an answer), so the check tells the resolver is
/// reachable without depending on anyone's zone. (A `.invalid` name would be answered by
/// hickory itself, RFC 6761, without asking the server.)
const DNS_CHECK_NAME: &str = ".";

/// Shared by the probes, the change listener and the server binary.
#[derive(Default)]
pub struct Health {
    /// Set once, when the schema was at this build's version and the listener subscribed.
    started: OnceLock<()>,
    /// The change listener holds a subscription (false while it resubscribes).
    listening: AtomicBool,
    /// The background runners the server started, by name.
    runners: Mutex<Vec<(&'static str, AbortHandle)>>,
}

impl Health {
    /// The background runner `name` runs as `task`; the report says whether it still does.
    pub fn watch_runner<T>(&self, name: &'static str, task: &tokio::task::JoinHandle<T>) {
        self.runners
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push((name, task.abort_handle()));
    }

    pub(crate) fn set_listening(&self, listening: bool) {
        self.listening.store(listening, Ordering::Relaxed);
    }

    pub(crate) fn listening(&self) -> bool {
        self.listening.load(Ordering::Relaxed)
    }

    pub(crate) fn has_started(&self) -> bool {
        self.started.get().is_some()
    }

    pub(crate) fn mark_started(&self) {
        let _ = self.started.set(());
    }

    fn runners(&self) -> Vec<(&'static str, bool)> {
        self.runners
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .map(|(name, task)| (*name, !task.is_finished()))
            .collect()
    }
}

/// A dependency's state in the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// It answered (or runs).
    Up,
    /// It failed, did not answer within the budget, or stopped.
    Down,
    /// Not configured here (no OIDC issuer, `WORKER=off`).
    Off,
}

/// One dependency's line in the report.
#[derive(Debug, Serialize)]
pub struct Dependency {
    /// `postgresql`, `notification-listener`, `oidc-jwks`, `dns`, or a background runner's
    /// name (`webhook-runner`, ...).
    pub name: String,
    /// Whether it is usable.
    pub state: State,
    /// How long the check took, when one was made (milliseconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    /// Why it is down, for the operator.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Dependency {
    fn held(name: &str, up: bool, detail: &str) -> Self {
        Self {
            name: name.to_owned(),
            state: if up { State::Up } else { State::Down },
            latency_ms: None,
            detail: (!up).then(|| detail.to_owned()),
        }
    }

    fn off(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            state: State::Off,
            latency_ms: None,
            detail: None,
        }
    }

    /// Runs `check` under [`CHECK_BUDGET`] and times it.
    async fn timed<E: std::fmt::Display>(
        name: &str,
        check: impl Future<Output = Result<(), E>>,
    ) -> Self {
        let started = Instant::now();
        let outcome = tokio::time::timeout(CHECK_BUDGET, check).await;
        let latency_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
        let detail = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(error)) => Some(error.to_string()),
            Err(_) => Some(format!("no answer within {} ms", CHECK_BUDGET.as_millis())),
        };
        Self {
            name: name.to_owned(),
            state: if detail.is_none() {
                State::Up
            } else {
                State::Down
            },
            latency_ms,
            detail,
        }
    }
}

/// The operators' report: every dependency, checked now, side by side.
pub(crate) async fn dependencies(state: &crate::AppState) -> Vec<Dependency> {
    let postgresql = Dependency::timed("postgresql", async {
        storage::migrations::schema_state(&state.pool)
            .await
            .map(drop)
    });
    let oidc = async {
        match &state.oidc {
            Some(verifier) => Dependency::timed("oidc-jwks", verifier.check_keys()).await,
            None => Dependency::off("oidc-jwks"),
        }
    };
    let dns = Dependency::timed("dns", async {
        state.settings.dns.txt(DNS_CHECK_NAME).await.map(drop)
    });
    let (postgresql, oidc, dns) = tokio::join!(postgresql, oidc, dns);
    let mut report = vec![
        postgresql,
        Dependency::held(
            "notification-listener",
            state.health.listening(),
            "resubscribing after losing its connection",
        ),
        oidc,
        dns,
    ];
    let runners = state.health.runners();
    if runners.is_empty() {
        report.push(Dependency::off("background-runner"));
    }
    report.extend(
        runners
            .into_iter()
            .map(|(name, running)| Dependency::held(name, running, "stopped")),
    );
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_runner_is_reported_running_until_its_task_ends() {
        let health = Health::default();
        let (finish, finished) = tokio::sync::oneshot::channel::<()>();
        let runner = tokio::spawn(async move {
            let _ = finished.await;
        });
        health.watch_runner("webhook-runner", &runner);
        assert_eq!(health.runners(), vec![("webhook-runner", true)]);
        let _ = finish.send(());
        runner.await.expect("the runner ends");
        assert_eq!(health.runners(), vec![("webhook-runner", false)]);
    }
}
