//! Per-node bookkeeping: requests in flight (for least-outstanding selection) and
//! the failure back-off that keeps a node that failed out of selection for a while.
//!
//! A failure while a node is not backed off starts a back-off of `initial` doubled
//! for each failure in a row, at most `max`; failures reported while the back-off
//! runs (calls already under way when the node went down) do not lengthen it. The
//! next success ends it and forgets the failures.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// First back-off after a failure.
pub(crate) const DEFAULT_BACKOFF_INITIAL: Duration = Duration::from_secs(1);
/// Longest back-off.
pub(crate) const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// How long a failing node is skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Backoff {
    pub(crate) initial: Duration,
    pub(crate) max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: DEFAULT_BACKOFF_INITIAL,
            max: DEFAULT_BACKOFF_MAX,
        }
    }
}

impl Backoff {
    /// The back-off after `failures` failures in a row (at least 1).
    pub(crate) fn after(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        self.initial
            .saturating_mul(1u32 << doublings)
            .min(self.max.max(self.initial))
    }
}

/// Time as the marks see it: nanoseconds since a base, on tokio's clock (so tests
/// can pause and advance it). Never 0, which means "no back-off".
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    base: Instant,
}

impl Clock {
    pub(crate) fn new() -> Self {
        Clock {
            base: Instant::now(),
        }
    }

    pub(crate) fn now(&self) -> u64 {
        let nanos = Instant::now()
            .saturating_duration_since(self.base)
            .as_nanos();
        u64::try_from(nanos).unwrap_or(u64::MAX - 1) + 1
    }
}

/// Counters of one node, kept across registry updates of the node's record.
#[derive(Debug, Default)]
pub(crate) struct NodeStats {
    in_flight: AtomicUsize,
    failures: AtomicU32,
    /// End of the back-off on the [`Clock`]; 0 when there is none.
    until: AtomicU64,
}

impl NodeStats {
    pub(crate) fn begin(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn end(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Whether the node is backed off at `now`.
    pub(crate) fn backed_off(&self, now: u64) -> bool {
        self.until.load(Ordering::Relaxed) > now
    }

    /// Records a failure at `now`; returns the end of a newly started back-off.
    pub(crate) fn fail(&self, now: u64, backoff: &Backoff) -> Option<u64> {
        let until = self.until.load(Ordering::Acquire);
        if until > now {
            return None;
        }
        let failures = self.failures.load(Ordering::Relaxed).saturating_add(1);
        let wait = u64::try_from(backoff.after(failures).as_nanos()).unwrap_or(u64::MAX);
        let new_until = now.saturating_add(wait);
        self.until
            .compare_exchange(until, new_until, Ordering::AcqRel, Ordering::Relaxed)
            .ok()?;
        self.failures.store(failures, Ordering::Relaxed);
        Some(new_until)
    }

    /// Records a success: any back-off ends and the failures are forgotten.
    pub(crate) fn succeed(&self) {
        if self.until.load(Ordering::Relaxed) != 0 {
            self.until.store(0, Ordering::Relaxed);
            self.failures.store(0, Ordering::Relaxed);
        }
    }

    #[cfg(test)]
    pub(crate) fn failures(&self) -> u32 {
        self.failures.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn backoff_doubles_up_to_the_max() {
        let b = Backoff::default();
        let secs: Vec<u64> = (1..=7).map(|n| b.after(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(b.after(u32::MAX), Duration::from_secs(30));
    }

    #[test]
    fn failures_during_a_backoff_do_not_lengthen_it() {
        let b = Backoff::default();
        let stats = NodeStats::default();
        assert_eq!(stats.fail(10 * S, &b), Some(11 * S));
        assert_eq!(stats.fail(10 * S + 1, &b), None, "already backed off");
        assert!(stats.backed_off(11 * S - 1));
        assert!(!stats.backed_off(11 * S));
        assert_eq!(stats.fail(11 * S, &b), Some(13 * S), "doubles");
        assert_eq!(stats.failures(), 2);
        stats.succeed();
        assert!(!stats.backed_off(11 * S));
        assert_eq!(stats.failures(), 0);
        assert_eq!(stats.fail(20 * S, &b), Some(21 * S), "starts over");
    }
}
