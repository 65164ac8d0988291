//! Webhook endpoints and the delivery schedule of Standard Webhooks: when a failed delivery
//! is tried again, what an answer means, and the limits of an endpoint's settings. (Which
//! URLs an endpoint may have is the outbound policy's rule, in the `egress` crate.)

use chrono::{DateTime, TimeDelta, Utc};

/// Longest description accepted.
pub const MAX_DESCRIPTION_CHARS: usize = 500;
/// Most endpoints one tenant (or the platform, for its own) may have: each takes delivery
/// slots of the runner, so a tenant cannot crowd out the others by making many.
pub const MAX_ENDPOINTS_PER_TENANT: i64 = 20;
/// Most event type filters one endpoint may hold.
pub const MAX_EVENT_TYPES: usize = 64;
/// How long a rotated-out secret keeps signing next to the new one, so receivers can switch
/// without dropping a delivery.
pub const PREVIOUS_SECRET_GRACE: TimeDelta = TimeDelta::hours(24);
/// How long an endpoint may fail without a single success before it is disabled.
pub const DISABLE_AFTER_FAILING_FOR: TimeDelta = TimeDelta::days(5);
/// How long one delivery attempt may take, connection included.
pub const ATTEMPT_TIMEOUT_SECS: u64 = 10;
/// How much of a receiver's answer is kept with the attempt.
pub const KEPT_RESPONSE_BYTES: usize = 1024;

/// The wait before each attempt: the first at once, then after 5 s, 5 min, 30 min, 2 h, 5 h,
/// 10 h and 10 h (the schedule Standard Webhooks senders such as Svix use); eight attempts
/// over about 27.6 hours in all.
pub const RETRY_SCHEDULE: [TimeDelta; 8] = [
    TimeDelta::zero(),
    TimeDelta::seconds(5),
    TimeDelta::minutes(5),
    TimeDelta::minutes(30),
    TimeDelta::hours(2),
    TimeDelta::hours(5),
    TimeDelta::hours(10),
    TimeDelta::hours(10),
];

/// When to try again after `attempts_made` attempts, the last of which failed at
/// `failed_at`; `None` once the schedule is spent.
pub fn next_attempt_at(attempts_made: u32, failed_at: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let index = usize::try_from(attempts_made).ok()?;
    RETRY_SCHEDULE.get(index).map(|wait| failed_at + *wait)
}

/// What one attempt came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// The receiver answered 2xx: delivered.
    Delivered,
    /// The receiver answered `410 Gone`: it wants no more deliveries; the endpoint is disabled.
    Gone,
    /// Any other answer, a timeout or no connection: try again on schedule.
    Failed,
}

impl AttemptOutcome {
    /// The outcome of an answer with HTTP status `status`.
    pub fn of_status(status: u16) -> Self {
        match status {
            200..=299 => Self::Delivered,
            410 => Self::Gone,
            _ => Self::Failed,
        }
    }

    /// The label used in metrics and in the attempt history.
    pub fn label(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Gone => "gone",
            Self::Failed => "failed",
        }
    }
}

/// Whether an endpoint that has failed without success since `failing_since` should be
/// disabled at `now`.
pub fn failing_too_long(failing_since: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    now - failing_since >= DISABLE_AFTER_FAILING_FOR
}

/// A description: trimmed, at most [`MAX_DESCRIPTION_CHARS`] characters, no control
/// characters other than line breaks.
pub fn description(input: &str) -> Result<String, String> {
    let trimmed = input.trim();
    if trimmed.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(format!(
            "must be at most {MAX_DESCRIPTION_CHARS} characters"
        ));
    }
    if trimmed.chars().any(|c| c.is_control() && c != '\n') {
        return Err("must not contain control characters".to_owned());
    }
    Ok(trimmed.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(seconds, 0).expect("in range")
    }

    #[test]
    fn the_schedule_retries_after_5_s_5_min_30_min_2_h_5_h_10_h_10_h_then_stops() {
        let failed = at(1_000_000);
        let waits: Vec<i64> = (1..=7)
            .map(|made| (next_attempt_at(made, failed).expect("scheduled") - failed).num_seconds())
            .collect();
        assert_eq!(waits, [5, 300, 1800, 7200, 18000, 36000, 36000]);
        assert_eq!(next_attempt_at(8, failed), None);
        assert_eq!(next_attempt_at(0, failed), Some(failed));
    }

    #[test]
    fn only_2xx_delivers_and_410_means_gone() {
        assert_eq!(AttemptOutcome::of_status(200), AttemptOutcome::Delivered);
        assert_eq!(AttemptOutcome::of_status(204), AttemptOutcome::Delivered);
        assert_eq!(AttemptOutcome::of_status(299), AttemptOutcome::Delivered);
        assert_eq!(AttemptOutcome::of_status(410), AttemptOutcome::Gone);
        for status in [100, 301, 302, 400, 404, 429, 500, 503] {
            assert_eq!(
                AttemptOutcome::of_status(status),
                AttemptOutcome::Failed,
                "{status}"
            );
        }
    }

    #[test]
    fn an_endpoint_failing_for_five_days_is_disabled() {
        let since = at(0);
        assert!(!failing_too_long(
            since,
            since + TimeDelta::days(5) - TimeDelta::seconds(1)
        ));
        assert!(failing_too_long(since, since + TimeDelta::days(5)));
    }

    #[test]
    fn descriptions_are_trimmed_and_bounded() {
        assert_eq!(
            description("  billing sync \n").as_deref(),
            Ok("billing sync")
        );
        assert!(description(&"x".repeat(MAX_DESCRIPTION_CHARS + 1)).is_err());
        assert!(description("bell\u{7}").is_err());
    }
}
