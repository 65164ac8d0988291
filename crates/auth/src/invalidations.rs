//! Which cached answers an invalidation has overtaken: the guard that keeps a result read
//! before a change from being served after the change was heard.
//!
//! A cache fills itself by reading the database; a change commits and its notification
//! reaches this replica while such a read may still be in flight. Emptying the cache when the
//! notification arrives cannot help against a read that finishes afterwards and stores what
//! it saw before the change. So every invalidation takes the next number of a counter, and
//! every cached answer carries a [`Stamp`]: the counter's value taken *before* its database
//! read. An answer is served only while no invalidation of anything it depends on (its
//! scopes) carries a larger number. A read stamped after an invalidation started after the
//! notification arrived, hence after the change committed, and saw the change.
//!
//! Invalidations are remembered per scope (a key, a tenant, a product), so invalidating one
//! leaves every other cached answer current: a tenant revoking its own keys in a loop costs
//! nobody else a database read. They are remembered for the trust window only: an answer
//! stamped longer ago than that is never current anyway, so older invalidations cannot
//! matter. Past [`MAX_REMEMBERED`] scopes inside one window (far more than the argon2 cost of
//! making keys lets anyone cause), everything is invalidated instead, which is always safe.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Most scopes remembered at once; beyond that, everything is invalidated.
pub const MAX_REMEMBERED: usize = 100_000;

/// Remembered scopes at which old entries are first pruned (the threshold then doubles).
const FIRST_PRUNE: usize = 1_024;

/// When a cached answer's database read started, in invalidation numbers and in time.
#[derive(Debug, Clone, Copy)]
pub struct Stamp {
    seq: u64,
    at: Instant,
}

struct Remembered<K> {
    last: HashMap<K, (u64, Instant)>,
    prune_at: usize,
}

/// The invalidations a cache has heard, by scope; shared by every user of that cache.
pub struct Invalidations<K> {
    clock: AtomicU64,
    everything: AtomicU64,
    remembered: RwLock<Remembered<K>>,
    trust: Duration,
}

impl<K: Hash + Eq> Invalidations<K> {
    /// A guard for answers trusted at most `trust` after their read started.
    pub fn new(trust: Duration) -> Self {
        Self {
            clock: AtomicU64::new(0),
            everything: AtomicU64::new(0),
            remembered: RwLock::new(Remembered {
                last: HashMap::new(),
                prune_at: FIRST_PRUNE,
            }),
            trust,
        }
    }

    /// Take this before the database read whose answer will be cached.
    pub fn stamp(&self) -> Stamp {
        // The time first: a stamp is never younger than an invalidation numbered after it,
        // which is what makes forgetting old invalidations safe.
        let at = Instant::now();
        Stamp {
            seq: self.clock.load(Ordering::SeqCst),
            at,
        }
    }

    /// Every answer depending on `scope` and stamped before now stops being current.
    pub fn invalidate(&self, scope: K) {
        let mut remembered = self
            .remembered
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let seq = self.clock.fetch_add(1, Ordering::SeqCst) + 1;
        remembered.last.insert(scope, (seq, Instant::now()));
        if remembered.last.len() >= remembered.prune_at {
            let trust = self.trust;
            remembered.last.retain(|_, (_, at)| at.elapsed() < trust);
            if remembered.last.len() > MAX_REMEMBERED {
                remembered.last.clear();
                self.everything.fetch_max(seq, Ordering::SeqCst);
            }
            remembered.prune_at =
                (remembered.last.len() * 2).clamp(FIRST_PRUNE, MAX_REMEMBERED + 1);
        }
    }

    /// Every answer stamped before now stops being current.
    pub fn invalidate_all(&self) {
        let mut remembered = self
            .remembered
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let seq = self.clock.fetch_add(1, Ordering::SeqCst) + 1;
        self.everything.fetch_max(seq, Ordering::SeqCst);
        remembered.last.clear();
    }

    /// Whether an answer read under `stamp` may still be served: it is inside the trust
    /// window and nothing it depends on (`scopes`) was invalidated since its read began.
    pub fn is_current<'a>(&self, stamp: &Stamp, scopes: impl IntoIterator<Item = &'a K>) -> bool
    where
        K: 'a,
    {
        if stamp.at.elapsed() >= self.trust {
            return false;
        }
        if self.clock.load(Ordering::SeqCst) == stamp.seq {
            return true;
        }
        if self.everything.load(Ordering::SeqCst) > stamp.seq {
            return false;
        }
        let remembered = self
            .remembered
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        scopes.into_iter().all(|scope| {
            remembered
                .last
                .get(scope)
                .is_none_or(|(seq, _)| *seq <= stamp.seq)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn an_answer_read_before_its_scope_was_invalidated_is_never_current_again() {
        let guard = Invalidations::new(HOUR);
        let read = guard.stamp();
        guard.invalidate("key-1");
        assert!(!guard.is_current(&read, &["key-1"]));
        assert!(!guard.is_current(&read, &["tenant-1", "key-1"]));
    }

    #[test]
    fn an_answer_read_after_the_invalidation_is_current() {
        let guard = Invalidations::new(HOUR);
        guard.invalidate("key-1");
        let read = guard.stamp();
        assert!(guard.is_current(&read, &["key-1"]));
    }

    #[test]
    fn invalidating_one_scope_leaves_the_others_current() {
        let guard = Invalidations::new(HOUR);
        let read = guard.stamp();
        for n in 0..5_000 {
            guard.invalidate(format!("attacker-key-{n}"));
        }
        assert!(guard.is_current(&read, &["bystander-key".to_owned()]));
    }

    #[test]
    fn invalidating_everything_overtakes_every_earlier_answer() {
        let guard = Invalidations::<&str>::new(HOUR);
        let before = guard.stamp();
        guard.invalidate_all();
        let after = guard.stamp();
        assert!(!guard.is_current(&before, &["key-1"]));
        assert!(guard.is_current(&after, &["key-1"]));
    }

    #[test]
    fn an_answer_older_than_the_trust_window_is_not_current() {
        let guard = Invalidations::<&str>::new(Duration::ZERO);
        let read = guard.stamp();
        assert!(!guard.is_current(&read, &["key-1"]));
    }

    #[test]
    fn pruning_forgets_only_invalidations_no_trusted_answer_can_predate() {
        let guard = Invalidations::new(HOUR);
        let read = guard.stamp();
        guard.invalidate(0);
        for n in 1..=FIRST_PRUNE * 4 {
            guard.invalidate(n);
        }
        assert!(!guard.is_current(&read, &[0]), "still within the window");
    }

    #[test]
    fn too_many_remembered_scopes_invalidate_everything_instead() {
        let guard = Invalidations::new(HOUR);
        let read = guard.stamp();
        for n in 0..=MAX_REMEMBERED {
            guard.invalidate(n);
        }
        let after = guard.stamp();
        assert!(!guard.is_current(&read, &[usize::MAX]));
        assert!(guard.is_current(&after, &[0]));
    }
}
