//! Keeping a run's lease while a step runs: renewed at a third of its length. A renewal
//! that finds the lease taken (the run re-queued, or another replica holding it) stops the
//! step at once; one that fails (the registry's database did not answer) is tried again,
//! a few times, as long as another try can end before the lease runs out.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

/// How a renewal answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// The lease is extended.
    Renewed,
    /// The lease is no longer the runner's.
    NotHeld,
    /// The registry's database failed, or did not answer in time.
    Failed,
}

/// What the renewing loop does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Renew again after `after`; the lease holds until `held_until`.
    RenewAfter {
        /// The wait before the next renewal.
        after: Duration,
        /// Until when the lease is known to hold.
        held_until: DateTime<Utc>,
    },
    /// Stop the step, for this reason.
    Abandon(&'static str),
}

/// How long the loop waits between renewals of a lease of `lease`.
pub fn every(lease: TimeDelta) -> Duration {
    (lease / 3)
        .to_std()
        .unwrap_or(Duration::from_secs(20))
        .max(Duration::from_millis(100))
}

/// How long one renewal may take, and how long after a failed one the next is tried: a
/// quarter of the wait between renewals, so a few tries fit in what is left of the lease.
pub fn retry_after(every: Duration) -> Duration {
    every / 4
}

/// What follows `renewal`, asked at `now` to extend the lease to `asked_until`, when the
/// lease was known to hold until `held_until`, renewals `every` apart.
pub fn next(
    renewal: Renewal,
    asked_until: DateTime<Utc>,
    held_until: DateTime<Utc>,
    now: DateTime<Utc>,
    every: Duration,
) -> Next {
    match renewal {
        Renewal::Renewed => Next::RenewAfter {
            after: every,
            held_until: asked_until,
        },
        Renewal::NotHeld => Next::Abandon("the lease was lost; the step is abandoned"),
        Renewal::Failed => {
            let retry = retry_after(every);
            // The next try waits `retry` and may take `retry`: it must end before the lease does.
            let ends = TimeDelta::from_std(retry * 2).unwrap_or(TimeDelta::MAX);
            if now
                .checked_add_signed(ends)
                .is_some_and(|at| at < held_until)
            {
                Next::RenewAfter {
                    after: retry,
                    held_until,
                }
            } else {
                Next::Abandon(
                    "the lease could not be renewed before it ran out; the step is abandoned",
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVERY: Duration = Duration::from_secs(20);

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::UNIX_EPOCH + TimeDelta::seconds(seconds)
    }

    #[test]
    fn a_renewal_extends_the_lease_and_waits_a_third_of_it() {
        assert_eq!(every(TimeDelta::seconds(60)), EVERY);
        assert_eq!(
            next(Renewal::Renewed, at(80), at(60), at(20), EVERY),
            Next::RenewAfter {
                after: EVERY,
                held_until: at(80)
            }
        );
    }

    #[test]
    fn a_lease_found_taken_abandons_the_step_at_once_however_long_it_would_hold() {
        assert!(matches!(
            next(Renewal::NotHeld, at(80), at(60), at(20), EVERY),
            Next::Abandon(reason) if reason.contains("lost")
        ));
    }

    #[test]
    fn a_failed_renewal_is_tried_again_while_a_try_can_end_before_the_lease_runs_out() {
        // Claimed at 0 for 60 s; the renewal at 20 s and every one after it fails.
        let held_until = at(60);
        let mut now = at(20);
        let mut tries = 0;
        loop {
            tries += 1;
            match next(
                Renewal::Failed,
                now + TimeDelta::seconds(60),
                held_until,
                now,
                EVERY,
            ) {
                Next::RenewAfter {
                    after,
                    held_until: still,
                } => {
                    assert_eq!(still, held_until, "a failure extends nothing");
                    assert_eq!(after, Duration::from_secs(5));
                    now += TimeDelta::from_std(after).expect("a delay");
                }
                Next::Abandon(reason) => {
                    assert!(reason.contains("ran out"), "{reason}");
                    break;
                }
            }
        }
        assert_eq!(
            tries, 7,
            "tried at 20, 25, … 50 s; one at 55 s could end after 60 s"
        );
        assert!(now < held_until, "given up before the lease ran out");
    }

    #[test]
    fn a_renewal_that_succeeds_after_failures_keeps_the_step() {
        let held_until = at(60);
        let failed = next(Renewal::Failed, at(85), held_until, at(25), EVERY);
        assert!(
            matches!(failed, Next::RenewAfter { held_until: still, .. } if still == held_until)
        );
        assert_eq!(
            next(Renewal::Renewed, at(90), held_until, at(30), EVERY),
            Next::RenewAfter {
                after: EVERY,
                held_until: at(90)
            }
        );
    }
}
