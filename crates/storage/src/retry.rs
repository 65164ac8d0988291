//! Transactions that survive the failures PostgreSQL asks a client to retry: a
//! serialization failure (40001) or a deadlock (40P01) rolls the whole transaction back, so
//! running the unit of work again from its start is safe and usually succeeds.
//!
//! Use cases that write run their transaction inside [`with_retries`]; the lock order in
//! `docs/security.md` keeps deadlocks rare, and this keeps the rare one from reaching the
//! caller.

use std::time::Duration;

use tracing::Instrument as _;

/// How many times a unit of work runs at most before its transient failure is returned.
pub const ATTEMPTS: u32 = 4;

/// The pause before the second attempt; it doubles for each further attempt, with jitter,
/// so colliding transactions do not collide again in lockstep.
const FIRST_PAUSE: Duration = Duration::from_millis(10);

/// An error that may go away when the same transaction runs again.
pub trait Transient {
    /// Whether running the whole transaction again may succeed.
    fn is_transient(&self) -> bool;
}

/// The SQLSTATEs PostgreSQL documents as "retry the transaction".
pub fn is_transient_code(code: &str) -> bool {
    matches!(code, "40001" | "40P01")
}

impl Transient for sqlx::Error {
    fn is_transient(&self) -> bool {
        self.as_database_error()
            .and_then(|error| error.code())
            .is_some_and(|code| is_transient_code(&code))
    }
}

/// Runs `attempt` until it succeeds, fails for good, or has run [`ATTEMPTS`] times. Each
/// attempt is one whole transaction: it begins it, does the work and commits, so a
/// deadlock or serialization failure at any statement or at commit runs all of it again
/// (an attempt that fails has rolled back by dropping its transaction).
///
/// ```ignore
/// let row = storage::with_retries(move || async move {
///     let mut transaction = crate::begin(pool).await?;
///     let row = tenants::update(&mut transaction, id, None, changes).await?;
///     audit::record(&mut transaction, event.clone()).await?;
///     storage::commit(transaction).await?;
///     Ok::<_, ApiError>(row)
/// })
/// .await?;
/// ```
pub async fn with_retries<T, E, Attempt>(mut attempt: impl FnMut() -> Attempt) -> Result<T, E>
where
    E: Transient,
    Attempt: Future<Output = Result<T, E>>,
{
    let mut pause = FIRST_PAUSE;
    let mut tries = 1;
    loop {
        // One span per attempt: a trace shows each run of a transaction that collided.
        let span = tracing::info_span!(
            "db.transaction",
            otel.name = "db transaction",
            db.system.name = "postgresql",
            attempt = tries,
        );
        match attempt().instrument(span).await {
            Err(error) if error.is_transient() && tries < ATTEMPTS => {
                tracing::debug!(
                    tries,
                    "deadlock or serialization failure; running the transaction again"
                );
                tokio::time::sleep(jittered(pause)).await;
                pause *= 2;
                tries += 1;
            }
            Err(error) => {
                if error.is_transient() {
                    tracing::warn!(
                        tries,
                        "transaction still colliding after every attempt; giving up"
                    );
                }
                return Err(error);
            }
            done => return done,
        }
    }
}

/// `pause` plus up to half of it again, from the clock's low bits (good enough to break
/// lockstep; nothing here needs real randomness).
fn jittered(pause: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.subsec_nanos());
    pause + pause.mul_f64(f64::from(nanos % 1000) / 2000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct Failure(bool);

    impl Transient for Failure {
        fn is_transient(&self) -> bool {
            self.0
        }
    }

    #[tokio::test]
    async fn a_transient_failure_is_retried_until_it_succeeds() {
        let mut calls = 0;
        let outcome = with_retries(|| {
            calls += 1;
            std::future::ready(if calls < ATTEMPTS {
                Err(Failure(true))
            } else {
                Ok(calls)
            })
        })
        .await;
        assert_eq!(outcome, Ok(ATTEMPTS));
    }

    #[tokio::test]
    async fn retries_are_bounded_and_other_failures_are_not_retried() {
        let mut calls = 0;
        let outcome: Result<(), _> = with_retries(|| {
            calls += 1;
            std::future::ready(Err(Failure(true)))
        })
        .await;
        assert_eq!((outcome, calls), (Err(Failure(true)), ATTEMPTS));
        let mut calls = 0;
        let outcome: Result<(), _> = with_retries(|| {
            calls += 1;
            std::future::ready(Err(Failure(false)))
        })
        .await;
        assert_eq!((outcome, calls), (Err(Failure(false)), 1));
    }

    #[test]
    fn only_deadlocks_and_serialization_failures_are_transient() {
        assert!(is_transient_code("40001"));
        assert!(is_transient_code("40P01"));
        assert!(!is_transient_code("23505"));
        assert!(!is_transient_code("57014"));
    }
}
