//! The brake on guessing: more than [`MAX_FAILURES_PER_SECOND`] failed authentications in a
//! second from one address, and that address is refused (429) for the rest of the second.
//! Its time comes from a [`Clock`], the system's unless a test holds it still.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Failures allowed from one address within one window.
pub const MAX_FAILURES_PER_SECOND: u32 = 10;
const WINDOW: Duration = Duration::from_secs(1);
/// Beyond this many tracked addresses, expired windows are swept on the next failure.
const SWEEP_ABOVE: usize = 10_000;

/// Where the brake reads the time: the system clock, or a clock that moves only when told.
#[derive(Debug, Clone, Default)]
pub struct Clock(Option<Arc<Mutex<Instant>>>);

impl Clock {
    /// A clock standing at the current instant that moves only by [`Clock::advance`]: a test
    /// using it decides which failures share a window, whatever the machine's speed.
    pub fn manual() -> Self {
        Self(Some(Arc::new(Mutex::new(Instant::now()))))
    }

    /// The current instant.
    pub fn now(&self) -> Instant {
        match &self.0 {
            None => Instant::now(),
            Some(held) => *held.lock().unwrap_or_else(|poisoned| poisoned.into_inner()),
        }
    }

    /// Moves a manual clock forward by `by` (the system clock moves by itself).
    pub fn advance(&self, by: Duration) {
        if let Some(held) = &self.0 {
            *held.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) += by;
        }
    }
}

#[derive(Clone, Copy)]
struct Window {
    started: Instant,
    failures: u32,
}

/// Counts failed authentications per address; shared by clones.
#[derive(Clone, Default)]
pub struct FailureLimiter {
    windows: Arc<Mutex<HashMap<IpAddr, Window>>>,
    clock: Clock,
}

impl FailureLimiter {
    /// A limiter reading the time from `clock`.
    pub fn with_clock(clock: Clock) -> Self {
        Self {
            windows: Arc::default(),
            clock,
        }
    }

    /// The instant by this limiter's clock, to pass to [`Self::is_blocked`] and
    /// [`Self::record_failure`].
    pub fn now(&self) -> Instant {
        self.clock.now()
    }

    /// Whether `address` has used up its failures for the current window.
    pub fn is_blocked(&self, address: IpAddr, now: Instant) -> bool {
        let windows = self
            .windows
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        windows.get(&address).is_some_and(|window| {
            now.duration_since(window.started) < WINDOW
                && window.failures >= MAX_FAILURES_PER_SECOND
        })
    }

    /// Counts one failure from `address`.
    pub fn record_failure(&self, address: IpAddr, now: Instant) {
        let mut windows = self
            .windows
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if windows.len() > SWEEP_ABOVE {
            windows.retain(|_, window| now.duration_since(window.started) < WINDOW);
        }
        let window = windows.entry(address).or_insert(Window {
            started: now,
            failures: 0,
        });
        if now.duration_since(window.started) >= WINDOW {
            *window = Window {
                started: now,
                failures: 0,
            };
        }
        window.failures += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CALLER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const OTHER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    #[test]
    fn ten_failures_in_a_second_are_allowed_the_eleventh_request_is_blocked() {
        let limiter = FailureLimiter::default();
        let start = Instant::now();
        for _ in 0..MAX_FAILURES_PER_SECOND - 1 {
            limiter.record_failure(CALLER, start);
        }
        assert!(!limiter.is_blocked(CALLER, start));
        limiter.record_failure(CALLER, start);
        assert!(limiter.is_blocked(CALLER, start));
        assert!(
            !limiter.is_blocked(OTHER, start),
            "other addresses are unaffected"
        );
    }

    #[test]
    fn the_block_lifts_when_the_window_ends() {
        let limiter = FailureLimiter::default();
        let start = Instant::now();
        for _ in 0..MAX_FAILURES_PER_SECOND {
            limiter.record_failure(CALLER, start);
        }
        assert!(limiter.is_blocked(CALLER, start + Duration::from_millis(999)));
        assert!(!limiter.is_blocked(CALLER, start + WINDOW));
    }

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let clock = Clock::manual();
        let limiter = FailureLimiter::with_clock(clock.clone());
        let start = limiter.now();
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(limiter.now(), start);
        clock.advance(WINDOW);
        assert_eq!(limiter.now(), start + WINDOW);
    }
}
