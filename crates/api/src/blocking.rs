//! CPU-heavy work of a request (parsing SAML metadata, compiling and running JSON Schemas)
//! kept off the runtime's workers, which must stay free to answer everyone else: it runs on
//! the blocking pool, at most one job per core at a time, and the request gets its answer at
//! a deadline even if the job is still running (the job keeps its slot until it ends, so
//! runaway jobs cannot pile up beyond the cores).

use std::sync::{Arc, LazyLock};
use std::thread::available_parallelism;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::{Instant, timeout_at};

use crate::problem::ApiError;

/// The longest a request waits for its CPU-heavy job, queueing included.
pub const DEADLINE: Duration = Duration::from_secs(5);

static SLOTS: LazyLock<Arc<Semaphore>> = LazyLock::new(|| {
    Arc::new(Semaphore::new(
        available_parallelism().map_or(1, usize::from),
    ))
});

/// Why a job gave no answer.
#[derive(Debug)]
pub enum Overrun {
    /// Every slot stayed taken until the deadline.
    Busy,
    /// The job itself ran past the deadline: the input is too costly to process.
    TooSlow,
    /// The job panicked or was cancelled.
    Failed(String),
}

impl From<Overrun> for ApiError {
    /// The answer when nothing better is known about the input at fault.
    fn from(overrun: Overrun) -> Self {
        match overrun {
            Overrun::Busy => ApiError::unavailable(
                "the server is busy processing other large documents; retry in a few seconds",
            ),
            Overrun::TooSlow => ApiError::invalid_field("/", too_costly()),
            Overrun::Failed(cause) => ApiError::internal(cause),
        }
    }
}

/// The problem detail for input whose job ran past the deadline.
pub fn too_costly() -> String {
    format!(
        "too costly to process (over {} s); send a smaller or simpler document",
        DEADLINE.as_secs()
    )
}

/// Runs `job` on the blocking pool within [`DEADLINE`].
pub async fn run<T: Send + 'static>(
    job: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Overrun> {
    let deadline = Instant::now() + DEADLINE;
    let slot = timeout_at(deadline, Arc::clone(&SLOTS).acquire_owned())
        .await
        .map_err(|_| Overrun::Busy)?
        .map_err(|error| Overrun::Failed(error.to_string()))?;
    let handle = tokio::task::spawn_blocking(move || {
        let _slot = slot;
        job()
    });
    match timeout_at(deadline, handle).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(Overrun::Failed(error.to_string())),
        Err(_) => Err(Overrun::TooSlow),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Mutex, mpsc};

    use super::*;

    fn cores() -> usize {
        available_parallelism().map_or(1, usize::from)
    }

    /// Blocks until every slot is free again (jobs end on their own threads, unseen by the
    /// paused clock).
    fn await_free_slots() {
        while SLOTS.available_permits() < cores() {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// `job`'s answer once the clock has moved past the deadline. A paused clock does not
    /// move by itself while blocking jobs run, so the test moves it.
    async fn answer_past_the_deadline<T: Send + 'static>(
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Overrun> {
        let pending = tokio::spawn(run(job));
        for _ in 0..10 {
            // Let the request start its deadline before the clock moves.
            tokio::task::yield_now().await;
        }
        tokio::time::advance(DEADLINE + Duration::from_millis(1)).await;
        pending.await.expect("the request ended")
    }

    #[tokio::test(start_paused = true)]
    async fn a_job_running_past_the_deadline_is_answered_too_slow_and_keeps_its_slot() {
        let (release, wait) = mpsc::channel::<()>();
        let answer = answer_past_the_deadline(move || wait.recv()).await;
        assert!(matches!(answer, Err(Overrun::TooSlow)), "{answer:?}");
        assert_eq!(SLOTS.available_permits(), cores() - 1);
        release.send(()).expect("the job still waits");
        await_free_slots();
        assert_eq!(run(|| 42).await.expect("a free slot"), 42);
    }

    #[tokio::test(start_paused = true)]
    async fn with_every_slot_taken_a_job_is_answered_busy_without_running() {
        let (release, wait) = mpsc::channel::<()>();
        let wait = Arc::new(Mutex::new(wait));
        for _ in 0..cores() {
            let wait = Arc::clone(&wait);
            let answer =
                answer_past_the_deadline(move || wait.lock().is_ok_and(|wait| wait.recv().is_ok()))
                    .await;
            assert!(matches!(answer, Err(Overrun::TooSlow)), "{answer:?}");
        }
        let ran = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&ran);
        let answer = answer_past_the_deadline(move || flag.store(true, Ordering::SeqCst)).await;
        assert!(matches!(answer, Err(Overrun::Busy)), "{answer:?}");
        assert!(!ran.load(Ordering::SeqCst));
        for _ in 0..cores() {
            release.send(()).expect("a job still waits");
        }
        await_free_slots();
    }
}
