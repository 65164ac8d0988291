//! The brake on guessing: an API key the verification cache does not hold costs an argon2
//! verification, so each client address may start at most [`VERIFICATIONS_PER_SECOND`] of
//! them a second (a burst of as many, then one every tenth of a second); beyond that the
//! request is refused (429) before any work. A second brake of the same shape counts failed
//! authentications, so that the records of denials stay bounded too. Keys already verified
//! (or verified in the last hour) never meet the brake, so
//! one noisy client behind a shared address (a NAT, a load balancer) cannot lock out the
//! others there. A keyed GCRA limiter from the `governor` crate keeps the counts: no lock
//! shared by every request, and memory swept as addresses go quiet. Its time comes from a
//! [`Clock`], the system's unless a test holds it still.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};

/// Uncached verifications one address may start per second (and at once).
pub const VERIFICATIONS_PER_SECOND: u32 = 10;
/// Beyond this many tracked addresses, those whose quota is whole again are forgotten.
const SWEEP_ABOVE: usize = 10_000;

/// Where the brake reads the time: the system clock, or a clock that moves only when told.
#[derive(Debug, Clone, Default)]
pub struct Clock(Option<Arc<Mutex<Instant>>>);

impl Clock {
    /// A clock standing at the current instant that moves only by [`Clock::advance`]: a test
    /// using it decides which verifications share a second, whatever the machine's speed.
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

impl governor::clock::Clock for Clock {
    type Instant = Instant;

    fn now(&self) -> Instant {
        Clock::now(self)
    }
}

/// The key an address is counted under: itself, or its /64 for IPv6.
fn client_of(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
    }
}

type Limiter = RateLimiter<IpAddr, DashMapStateStore<IpAddr>, Clock, NoOpMiddleware<Instant>>;

/// Counts the uncached verifications each address starts; shared by clones.
#[derive(Clone)]
pub struct VerificationBrake {
    limiter: Arc<Limiter>,
}

impl Default for VerificationBrake {
    fn default() -> Self {
        Self::with_clock(Clock::default())
    }
}

impl VerificationBrake {
    /// A brake reading the time from `clock`.
    pub fn with_clock(clock: Clock) -> Self {
        let rate = NonZeroU32::new(VERIFICATIONS_PER_SECOND).unwrap_or(NonZeroU32::MIN);
        Self {
            limiter: Arc::new(RateLimiter::dashmap_with_clock(
                Quota::per_second(rate),
                clock,
            )),
        }
    }

    /// Takes one unit from `address`'s quota (an IPv6 address counts by its /64, which one
    /// client usually holds whole): `false` when it has none left, and the work must not run.
    pub fn admit(&self, address: IpAddr) -> bool {
        if self.limiter.len() > SWEEP_ABOVE {
            self.limiter.retain_recent();
        }
        self.limiter.check_key(&client_of(address)).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CALLER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const OTHER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    fn spend_the_burst(brake: &VerificationBrake) {
        for _ in 0..VERIFICATIONS_PER_SECOND {
            assert!(brake.admit(CALLER));
        }
    }

    #[test]
    fn ten_verifications_at_once_are_admitted_the_eleventh_is_refused() {
        let brake = VerificationBrake::with_clock(Clock::manual());
        spend_the_burst(&brake);
        assert!(!brake.admit(CALLER));
        assert!(brake.admit(OTHER), "other addresses are unaffected");
    }

    #[test]
    fn the_quota_refills_one_verification_every_tenth_of_a_second() {
        let clock = Clock::manual();
        let brake = VerificationBrake::with_clock(clock.clone());
        spend_the_burst(&brake);
        clock.advance(Duration::from_millis(99));
        assert!(!brake.admit(CALLER));
        clock.advance(Duration::from_millis(1));
        assert!(brake.admit(CALLER));
        assert!(!brake.admit(CALLER));
        clock.advance(Duration::from_secs(1));
        spend_the_burst(&brake);
    }

    #[test]
    fn quiet_addresses_are_forgotten_once_many_are_tracked() {
        let clock = Clock::manual();
        let brake = VerificationBrake::with_clock(clock.clone());
        for n in 0..=u32::try_from(SWEEP_ABOVE).unwrap_or(u32::MAX) {
            assert!(brake.admit(IpAddr::V4(n.into())));
        }
        clock.advance(Duration::from_secs(1));
        assert!(brake.admit(CALLER));
        assert!(
            brake.limiter.len() <= 2,
            "{} addresses still tracked",
            brake.limiter.len()
        );
    }

    #[test]
    fn an_ipv6_client_is_counted_by_its_slash_64() {
        let brake = VerificationBrake::with_clock(Clock::manual());
        let within = |n: u16| IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, n));
        for n in 0..u16::try_from(VERIFICATIONS_PER_SECOND).unwrap_or(u16::MAX) {
            assert!(brake.admit(within(n)));
        }
        assert!(!brake.admit(within(999)), "another address of the same /64");
        let next_net = IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 1));
        assert!(brake.admit(next_net));
    }

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let clock = Clock::manual();
        let start = clock.now();
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(clock.now(), start);
        clock.advance(Duration::from_secs(1));
        assert_eq!(clock.now(), start + Duration::from_secs(1));
    }
}
