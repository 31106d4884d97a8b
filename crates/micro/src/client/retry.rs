//! When a failed attempt is tried again: how many times, after what pause, and
//! within a retry budget so that retries cannot multiply the load on a service that
//! is already failing.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

/// How a client retries failed attempts (the `retry` wrapper's settings).
///
/// ```
/// use std::time::Duration;
/// use micro::client::{RetryBudget, RetryPolicy};
///
/// let policy = RetryPolicy::new(3)
///     .backoff(Duration::from_millis(20), Duration::from_secs(1))
///     .budget(RetryBudget::new(0.1, 5));
/// let client = micro::Client::builder().retry(policy).build();
/// # let _ = client;
/// ```
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub(crate) retries: u32,
    pub(crate) backoff_base: Duration,
    pub(crate) backoff_max: Duration,
    pub(crate) budget: Option<Arc<RetryBudget>>,
}

impl Default for RetryPolicy {
    /// One retry, 10 ms–1 s back-off, a budget of 20% of calls plus 10 per second.
    fn default() -> Self {
        RetryPolicy::new(super::DEFAULT_RETRIES)
    }
}

impl RetryPolicy {
    /// `retries` retries per call, the default back-off and budget.
    pub fn new(retries: u32) -> Self {
        RetryPolicy {
            retries,
            backoff_base: Duration::from_millis(10),
            backoff_max: Duration::from_secs(1),
            budget: Some(Arc::new(RetryBudget::default())),
        }
    }

    /// Retries per call.
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// Exponential back-off with full jitter: the n-th retry waits a random time up
    /// to `base * 4^(n-1)`, at most `max`.
    pub fn backoff(mut self, base: Duration, max: Duration) -> Self {
        self.backoff_base = base;
        self.backoff_max = max;
        self
    }

    /// Limits retries to a budget shared by every call of the client.
    pub fn budget(mut self, budget: RetryBudget) -> Self {
        self.budget = Some(Arc::new(budget));
        self
    }

    /// No budget: every call may use all its retries (as go-micro did).
    pub fn unbudgeted(mut self) -> Self {
        self.budget = None;
        self
    }

    /// The retries of this policy.
    pub fn get_retries(&self) -> u32 {
        self.retries
    }

    /// A call starts: it earns the budget its share.
    pub(crate) fn on_call(&self) {
        if let Some(budget) = &self.budget {
            budget.deposit();
        }
    }

    /// Whether a retry may be made now (and if so, it is paid for).
    pub(crate) fn allow_retry(&self) -> bool {
        self.budget.as_ref().is_none_or(|b| b.withdraw())
    }

    /// Waits before retry number `retry` (1 for the first), never past `deadline`.
    pub(crate) async fn wait(&self, retry: u32, deadline: Instant) {
        let cap = self
            .backoff_base
            .saturating_mul(4u32.saturating_pow(retry.saturating_sub(1)))
            .min(self.backoff_max);
        let wait = rand::rng().random_range(Duration::ZERO..=cap);
        tokio::time::sleep_until((Instant::now() + wait).min(deadline)).await;
    }
}

/// A retry budget: each call earns `ratio` of a retry, and `min_per_sec` retries are
/// allowed every second whatever the traffic; a retry spends one. When a service
/// fails every call, its callers add at most `ratio` more load (plus the minimum)
/// instead of multiplying it by their retry count.
pub struct RetryBudget {
    ratio: f64,
    min_per_sec: f64,
    /// Most retries that can be saved up for a burst.
    cap: f64,
    state: Mutex<BudgetState>,
}

struct BudgetState {
    balance: f64,
    refilled: Instant,
}

impl fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryBudget")
            .field("ratio", &self.ratio)
            .field("min_per_sec", &self.min_per_sec)
            .finish()
    }
}

impl Default for RetryBudget {
    /// 20% of calls plus 10 retries a second (Finagle's defaults).
    fn default() -> Self {
        RetryBudget::new(0.2, 10)
    }
}

impl RetryBudget {
    /// A budget of `ratio` retries per call plus `min_per_sec` a second.
    pub fn new(ratio: f64, min_per_sec: u32) -> Self {
        let ratio = if ratio.is_finite() {
            ratio.max(0.0)
        } else {
            0.0
        };
        let min_per_sec = f64::from(min_per_sec);
        RetryBudget {
            ratio,
            min_per_sec,
            // Ten seconds' worth of the minimum, and never less than one retry.
            cap: (min_per_sec * 10.0).max(1.0).max(ratio * 100.0),
            state: Mutex::new(BudgetState {
                balance: min_per_sec,
                refilled: Instant::now(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BudgetState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every call earns its share. The time-based minimum is added when a retry
    /// asks (both only add, up to the cap, so the order does not matter): no clock
    /// is read on a call that does not retry.
    pub(crate) fn deposit(&self) {
        let mut state = self.lock();
        state.balance = (state.balance + self.ratio).min(self.cap);
    }

    pub(crate) fn withdraw(&self) -> bool {
        let mut state = self.lock();
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(state.refilled).as_secs_f64();
        state.balance = (state.balance + elapsed * self.min_per_sec).min(self.cap);
        state.refilled = now;
        if state.balance >= 1.0 {
            state.balance -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_budget_bounds_retries_to_its_ratio() {
        let budget = RetryBudget::new(0.1, 0);
        let mut retries = 0;
        for _ in 0..1000 {
            budget.deposit();
            if budget.withdraw() {
                retries += 1;
            }
        }
        // 10% of 1000 calls, give or take the rounding of the first.
        assert!((99..=100).contains(&retries), "{retries}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_minimum_refills_with_time() {
        let budget = RetryBudget::new(0.0, 2);
        assert!(budget.withdraw() && budget.withdraw());
        assert!(!budget.withdraw(), "the first second's two are spent");
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(budget.withdraw(), "one more after half a second");
        assert!(!budget.withdraw());
        tokio::time::advance(Duration::from_secs(60)).await;
        let saved = (0..100).take_while(|_| budget.withdraw()).count();
        assert_eq!(saved, 20, "at most ten seconds' worth is saved up");
    }
}
