//! `breaker`: a circuit breaker per node and endpoint, at the client's call point
//! (each attempt on a node).
//!
//! A circuit starts *closed*: attempts go through. After `failures` failures in a
//! row (or, with `failure_ratio` set, when that share of the last `window` attempts
//! failed) it *opens*: attempts on that node's endpoint fail fast with a 503 before
//! anything is sent, so the client retries on another node (503 is retryable, and
//! the selector excludes nodes already tried). After `open_for` it is *half-open*:
//! `half_open_max` trial attempts go through; a success closes the circuit, a
//! failure opens it again.
//!
//! A failure is an error with a 5xx code (500, 503 — connection errors are 503 —
//! 504, …) or a 408 (the attempt timed out). A 4xx is the node answering: it counts
//! as a success. For a streamed answer, the head decides. An attempt dropped before
//! it is answered (the call's deadline passed) counts as nothing.
//!
//! Put `breaker` before `timeout` in `MICRO_WRAPPERS` (or leave `timeout` out: the
//! always-on wrappers come after the named ones) so that attempts abandoned by the
//! attempt timeout count as failures.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::{BoxFuture, FutureExt};
use serde::Deserialize;
use tokio::time::Instant;
use tower::Service;

use super::builtin::{settings_of, Builtin, WrapperContext};
use super::settings::{de, Key, Settings};
use super::{CallWrapper, Wrappers};
use crate::client::Attempt;
use crate::server::RawReply;
use crate::Error;

const ID: &str = "micro.client";

const KEYS: &[Key] = &[
    Key {
        name: "failures",
        default: "5",
        about:
            "failures in a row (5xx, 408, connection errors; not 4xx) that open a node's circuit",
    },
    Key {
        name: "open_for",
        default: "30s",
        about: "time an open circuit fails fast before it lets trial calls through",
    },
    Key {
        name: "half_open_max",
        default: "1",
        about:
            "trial calls let through at once when half-open; a success closes, a failure re-opens",
    },
    Key {
        name: "failure_ratio",
        default: "",
        about:
            "also open when this share (0.5) of the last `window` attempts failed (default: off)",
    },
    Key {
        name: "window",
        default: "20",
        about: "attempts the failure ratio looks back on",
    },
];

/// More circuits than this and the idle, healthy ones are forgotten.
const MAX_CIRCUITS: usize = 4096;

#[derive(Deserialize)]
struct BreakerSettings {
    #[serde(deserialize_with = "de::number")]
    failures: u32,
    #[serde(deserialize_with = "de::duration")]
    open_for: Duration,
    #[serde(deserialize_with = "de::number")]
    half_open_max: u32,
    #[serde(default, deserialize_with = "opt_ratio")]
    failure_ratio: Option<f64>,
    #[serde(deserialize_with = "de::number")]
    window: usize,
}

fn opt_ratio<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::String(s) if s.trim().is_empty() => Ok(None),
        other => de::number(other)
            .map_err(serde::de::Error::custom)
            .map(|r: f64| (r > 0.0).then_some(r)),
    }
}

pub(super) const BUILTIN: Builtin = Builtin {
    name: "breaker",
    about: "a circuit breaker per node and endpoint: fail fast (503, retried elsewhere) on a failing node",
    keys: KEYS,
    always_on: false,
    build,
};

fn build(settings: &Settings, _ctx: &WrapperContext) -> Result<Wrappers, Error> {
    let s: BreakerSettings = settings_of(settings, "breaker", KEYS)?;
    let invalid = |e: &str| Error::bad_request("micro.wrapper", format!("wrapper breaker: {e}"));
    if s.failures == 0 {
        return Err(invalid("failures must be at least 1"));
    }
    if s.half_open_max == 0 {
        return Err(invalid("half_open_max must be at least 1"));
    }
    if s.open_for.is_zero() {
        return Err(invalid("open_for must be above 0"));
    }
    let mut breaker = Breaker::new()
        .failures(s.failures)
        .open_for(s.open_for)
        .half_open_max(s.half_open_max);
    if let Some(ratio) = s.failure_ratio {
        if !(ratio <= 1.0 && s.window > 0) {
            return Err(invalid(
                "failure_ratio must be a share between 0 and 1, with a window of at least 1",
            ));
        }
        breaker = breaker.failure_ratio(ratio, s.window);
    }
    Ok(Wrappers::new().call(breaker.wrapper()))
}

/// The state of one circuit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreakerState {
    /// Attempts go through.
    Closed,
    /// Attempts fail fast with a 503.
    Open,
    /// Trial attempts go through; the first answer closes or re-opens the circuit.
    HalfOpen,
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half-open",
        })
    }
}

/// When a circuit opens and how it recovers.
#[derive(Debug, Clone)]
struct Policy {
    failures: u32,
    open_for: Duration,
    half_open_max: u32,
    /// The share of failures over the last `window` attempts that opens.
    ratio: Option<(f64, usize)>,
}

/// A circuit breaker per node and endpoint, as a call wrapper, whose circuits can
/// be looked at (for tests and metrics). The `breaker` built-in makes one from
/// its settings; make one in code to keep a handle on it.
///
/// ```
/// use std::time::Duration;
/// use micro::wrapper::breaker::{Breaker, BreakerState};
///
/// let breaker = Breaker::new().failures(3).open_for(Duration::from_secs(10));
/// let client = micro::Client::builder().wrap(breaker.wrapper()).build();
/// assert_eq!(breaker.state("127.0.0.1:9090", "Greeter.Hello"), BreakerState::Closed);
/// # let _ = client;
/// ```
#[derive(Debug, Clone)]
pub struct Breaker {
    policy: Policy,
    circuits: Arc<Circuits>,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker::new()
    }
}

impl Breaker {
    /// A breaker with the defaults: opens after 5 failures in a row, for 30 s,
    /// then lets 1 trial attempt through.
    pub fn new() -> Self {
        Breaker {
            policy: Policy {
                failures: 5,
                open_for: Duration::from_secs(30),
                half_open_max: 1,
                ratio: None,
            },
            circuits: Arc::default(),
        }
    }

    /// Failures in a row that open a circuit (at least 1).
    pub fn failures(mut self, failures: u32) -> Self {
        self.policy.failures = failures.max(1);
        self
    }

    /// Time an open circuit fails fast before it half-opens.
    pub fn open_for(mut self, open_for: Duration) -> Self {
        self.policy.open_for = open_for;
        self
    }

    /// Trial attempts let through at once while half-open (at least 1).
    pub fn half_open_max(mut self, trials: u32) -> Self {
        self.policy.half_open_max = trials.max(1);
        self
    }

    /// Also opens a circuit when at least `ratio` (0.0–1.0) of its last `window`
    /// attempts failed, once it has seen `window` attempts.
    pub fn failure_ratio(mut self, ratio: f64, window: usize) -> Self {
        self.policy.ratio = Some((ratio, window.max(1)));
        self
    }

    /// The call wrapper; every wrapper made from this breaker (and its clones)
    /// shares its circuits, with the policy set so far.
    pub fn wrapper(&self) -> CallWrapper {
        let policy = Arc::new(self.policy.clone());
        let circuits = self.circuits.clone();
        CallWrapper::new(
            "breaker",
            tower::layer::layer_fn(move |inner| BreakerService {
                inner,
                policy: policy.clone(),
                circuits: circuits.clone(),
            }),
        )
    }

    /// The state of the circuit of `endpoint` on the node at `node_address`; an
    /// open circuit whose time is up is reported half-open, as the next attempt
    /// finds it. A circuit never used is closed.
    pub fn state(&self, node_address: &str, endpoint: &str) -> BreakerState {
        self.circuits
            .find(&key(node_address, endpoint))
            .map_or(BreakerState::Closed, |c| lock(&c).state_at(Instant::now()))
    }

    /// Every circuit that is not closed: node address, endpoint and state.
    pub fn tripped(&self) -> Vec<(String, String, BreakerState)> {
        let now = Instant::now();
        let all: Vec<_> = self
            .circuits
            .map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        let mut tripped: Vec<_> = all
            .iter()
            .filter_map(|c| {
                let c = lock(c);
                let state = c.state_at(now);
                (state != BreakerState::Closed).then(|| (c.node.clone(), c.endpoint.clone(), state))
            })
            .collect();
        tripped.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        tripped
    }
}

fn key(node_address: &str, endpoint: &str) -> String {
    format!("{node_address}\n{endpoint}")
}

fn lock(circuit: &Mutex<Circuit>) -> std::sync::MutexGuard<'_, Circuit> {
    circuit.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whether an attempt's error says the node is failing.
fn is_failure(error: &Error) -> bool {
    error.code() >= 500 || error.code() == 408
}

/// The circuits of one breaker, by node address and endpoint.
#[derive(Debug, Default)]
struct Circuits {
    map: RwLock<HashMap<String, Arc<Mutex<Circuit>>>>,
}

impl Circuits {
    fn find(&self, key: &str) -> Option<Arc<Mutex<Circuit>>> {
        self.map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .cloned()
    }

    fn get(&self, node: &str, endpoint: &str) -> Arc<Mutex<Circuit>> {
        let key = key(node, endpoint);
        if let Some(circuit) = self.find(&key) {
            return circuit;
        }
        let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= MAX_CIRCUITS && !map.contains_key(&key) {
            // A closed circuit with no failures and no attempt under way is as
            // good as a new one.
            map.retain(|_, c| {
                Arc::strong_count(c) > 1
                    || !matches!(lock(c).state, State::Closed { consecutive: 0 })
            });
        }
        map.entry(key)
            .or_insert_with(|| {
                Arc::new(Mutex::new(Circuit {
                    node: node.to_string(),
                    endpoint: endpoint.to_string(),
                    state: State::Closed { consecutive: 0 },
                    generation: 0,
                    recent: VecDeque::new(),
                }))
            })
            .clone()
    }
}

#[derive(Debug, Clone, Copy)]
enum State {
    Closed { consecutive: u32 },
    Open { until: Instant },
    HalfOpen { trials: u32 },
}

/// One node's endpoint.
#[derive(Debug)]
struct Circuit {
    node: String,
    endpoint: String,
    state: State,
    /// Bumped on every change of state, so that answers to attempts let through
    /// before it are not counted after it.
    generation: u64,
    /// Outcomes of the last attempts while closed (true: failed), for the ratio.
    recent: VecDeque<bool>,
}

/// Why an attempt is refused.
enum Refusal {
    Open { left: Duration },
    Trying,
}

impl Circuit {
    fn state_at(&self, now: Instant) -> BreakerState {
        match self.state {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { until } if now < until => BreakerState::Open,
            State::Open { .. } | State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    fn change(&mut self, state: State) {
        self.state = state;
        self.generation += 1;
        self.recent.clear();
    }

    fn open(&mut self, policy: &Policy, now: Instant, why: &str) {
        self.change(State::Open {
            until: now + policy.open_for,
        });
        tracing::warn!(
            node = %self.node,
            endpoint = %self.endpoint,
            open_for = ?policy.open_for,
            "circuit breaker opened: {why}; failing fast on this node for {:?}",
            policy.open_for
        );
    }

    /// Lets an attempt through (with the generation it belongs to and whether it
    /// is a trial), or says why not.
    fn admit(&mut self, policy: &Policy, now: Instant) -> Result<(u64, bool), Refusal> {
        if let State::Open { until } = self.state {
            if now < until {
                return Err(Refusal::Open { left: until - now });
            }
            self.change(State::HalfOpen { trials: 0 });
            tracing::info!(node = %self.node, endpoint = %self.endpoint, "circuit breaker half-open: letting a trial call through");
        }
        match &mut self.state {
            State::Closed { .. } => Ok((self.generation, false)),
            State::HalfOpen { trials } if *trials < policy.half_open_max => {
                *trials += 1;
                Ok((self.generation, true))
            }
            _ => Err(Refusal::Trying),
        }
    }

    /// Counts the answer to an attempt of `generation`.
    fn record(&mut self, policy: &Policy, generation: u64, failed: bool, now: Instant) {
        if generation != self.generation {
            return;
        }
        match &mut self.state {
            State::Closed { consecutive } => {
                *consecutive = if failed { *consecutive + 1 } else { 0 };
                let in_a_row = *consecutive;
                if let Some((ratio, window)) = policy.ratio {
                    self.recent.push_back(failed);
                    while self.recent.len() > window {
                        self.recent.pop_front();
                    }
                    let failures = self.recent.iter().filter(|f| **f).count();
                    if failed
                        && self.recent.len() >= window
                        && failures as f64 >= ratio * window as f64
                    {
                        let why = format!("{failures} of the last {window} calls failed");
                        self.open(policy, now, &why);
                        return;
                    }
                }
                if in_a_row >= policy.failures {
                    self.open(policy, now, &format!("{in_a_row} failures in a row"));
                }
            }
            State::HalfOpen { .. } if failed => self.open(policy, now, "the trial call failed"),
            State::HalfOpen { .. } => {
                self.change(State::Closed { consecutive: 0 });
                tracing::info!(node = %self.node, endpoint = %self.endpoint, "circuit breaker closed: the trial call succeeded");
            }
            State::Open { .. } => {}
        }
    }

    /// Gives back the place of a trial that was dropped unanswered.
    fn release(&mut self, generation: u64) {
        if generation == self.generation {
            if let State::HalfOpen { trials } = &mut self.state {
                *trials = trials.saturating_sub(1);
            }
        }
    }
}

/// An attempt let through; counts its answer, or gives back a trial's place if
/// it is dropped unanswered.
struct Ticket {
    circuit: Arc<Mutex<Circuit>>,
    policy: Arc<Policy>,
    generation: u64,
    trial: bool,
    done: bool,
}

impl Ticket {
    fn finish(mut self, failed: bool) {
        self.done = true;
        lock(&self.circuit).record(&self.policy, self.generation, failed, Instant::now());
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.done && self.trial {
            lock(&self.circuit).release(self.generation);
        }
    }
}

/// The call service of the breaker.
#[derive(Clone)]
struct BreakerService<S> {
    inner: S,
    policy: Arc<Policy>,
    circuits: Arc<Circuits>,
}

impl<S> Service<Attempt> for BreakerService<S>
where
    S: Service<Attempt, Response = RawReply, Error = Error>,
    S::Future: Send + 'static,
{
    type Response = RawReply;
    type Error = Error;
    type Future = BoxFuture<'static, Result<RawReply, Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, attempt: Attempt) -> Self::Future {
        let circuit = self
            .circuits
            .get(&attempt.node().address, attempt.endpoint());
        let admitted = lock(&circuit).admit(&self.policy, Instant::now());
        let (generation, trial) = match admitted {
            Ok(pass) => pass,
            Err(refusal) => {
                let why = match refusal {
                    Refusal::Open { left } => format!(
                        "the circuit breaker is open after failures, for {}s more",
                        left.as_secs_f64().ceil()
                    ),
                    Refusal::Trying => {
                        "the circuit breaker is half-open and its trial calls are under way"
                            .to_string()
                    }
                };
                let err = Error::service_unavailable(
                    ID,
                    format!(
                        "{} {} on {}: {why}",
                        attempt.service(),
                        attempt.endpoint(),
                        attempt.node().address
                    ),
                );
                return futures_util::future::ready(Err(err)).boxed();
            }
        };
        let ticket = Ticket {
            circuit,
            policy: self.policy.clone(),
            generation,
            trial,
            done: false,
        };
        let answer = self.inner.call(attempt);
        async move {
            let result = answer.await;
            ticket.finish(matches!(&result, Err(e) if is_failure(e)));
            result
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Format;
    use crate::registry::Node;
    use crate::wire::Body;
    use crate::wrapper::CallService;
    use crate::Metadata;
    use bytes::Bytes;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tower::ServiceExt;

    const A: &str = "10.0.0.1:1";
    const B: &str = "10.0.0.2:1";
    const HELLO: &str = "Greeter.Hello";

    fn attempt(address: &str, endpoint: &str) -> Attempt {
        Attempt {
            service: "greeter".into(),
            endpoint: endpoint.into(),
            node: Arc::new(Node {
                id: address.into(),
                address: address.into(),
                metadata: Default::default(),
            }),
            metadata: Metadata::new(),
            deadline: Instant::now() + Duration::from_secs(5),
            number: 0,
            path: None,
            format: Format::Proto,
            body: Body::Empty,
            streams: false,
        }
    }

    /// A fake transport: each node answers with the code set for it (0: success),
    /// counting the attempts that reach it.
    #[derive(Clone, Default)]
    struct Nodes {
        codes: Arc<Mutex<HashMap<String, u16>>>,
        reached: Arc<Mutex<HashMap<String, usize>>>,
    }

    impl Nodes {
        fn answer(&self, address: &str, code: u16) {
            self.codes.lock().unwrap().insert(address.into(), code);
        }
        fn reached(&self, address: &str) -> usize {
            self.reached
                .lock()
                .unwrap()
                .get(address)
                .copied()
                .unwrap_or(0)
        }
        fn wrapped(&self, breaker: &Breaker) -> CallService {
            let nodes = self.clone();
            let inner = tower::service_fn(move |attempt: Attempt| {
                let address = attempt.node().address.clone();
                *nodes
                    .reached
                    .lock()
                    .unwrap()
                    .entry(address.clone())
                    .or_default() += 1;
                let code = nodes
                    .codes
                    .lock()
                    .unwrap()
                    .get(&address)
                    .copied()
                    .unwrap_or(0);
                async move {
                    match code {
                        0 => Ok(RawReply::One(Bytes::from_static(b"ok"))),
                        code => Err(Error::new("node", "failing", code)),
                    }
                }
            });
            breaker
                .wrapper()
                .wrap(tower::util::BoxCloneSyncService::new(inner))
        }
    }

    async fn call(svc: &CallService, address: &str) -> Result<(), Error> {
        svc.clone()
            .oneshot(attempt(address, HELLO))
            .await
            .map(|_| ())
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_failures_fails_fast_half_opens_and_closes() {
        let nodes = Nodes::default();
        let breaker = Breaker::new().failures(3).open_for(Duration::from_secs(30));
        let svc = nodes.wrapped(&breaker);
        nodes.answer(A, 503);
        for _ in 0..3 {
            assert_eq!(call(&svc, A).await.unwrap_err().id(), "node");
        }
        assert_eq!(breaker.state(A, HELLO), BreakerState::Open);
        assert_eq!(
            breaker.tripped(),
            [(A.to_string(), HELLO.to_string(), BreakerState::Open)]
        );

        // Open: fail fast with a 503 (retryable), without reaching the node.
        for _ in 0..5 {
            let e = call(&svc, A).await.unwrap_err();
            assert_eq!((e.code(), e.id()), (503, ID));
            assert!(e.is_retryable(false));
            assert!(
                e.detail().contains("Greeter.Hello on 10.0.0.1:1")
                    && e.detail().contains("open after failures, for 30s more"),
                "{e}"
            );
        }
        assert_eq!(nodes.reached(A), 3);

        // Still open just before its time is up.
        tokio::time::advance(Duration::from_secs(29)).await;
        assert_eq!(call(&svc, A).await.unwrap_err().id(), ID);
        assert_eq!(nodes.reached(A), 3);

        // Half-open after open_for; the node has recovered: the trial closes it.
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(breaker.state(A, HELLO), BreakerState::HalfOpen);
        nodes.answer(A, 0);
        call(&svc, A).await.unwrap();
        assert_eq!(nodes.reached(A), 4);
        assert_eq!(breaker.state(A, HELLO), BreakerState::Closed);
        assert!(breaker.tripped().is_empty());
        call(&svc, A).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_trial_opens_the_circuit_again() {
        let nodes = Nodes::default();
        let breaker = Breaker::new().failures(2).open_for(Duration::from_secs(10));
        let svc = nodes.wrapped(&breaker);
        nodes.answer(A, 500);
        call(&svc, A).await.unwrap_err();
        call(&svc, A).await.unwrap_err();
        assert_eq!(breaker.state(A, HELLO), BreakerState::Open);
        tokio::time::advance(Duration::from_secs(10)).await;
        // The trial reaches the node, fails, and opens the circuit for another 10s.
        assert_eq!(call(&svc, A).await.unwrap_err().id(), "node");
        assert_eq!(nodes.reached(A), 3);
        assert_eq!(breaker.state(A, HELLO), BreakerState::Open);
        assert_eq!(call(&svc, A).await.unwrap_err().id(), ID);
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(call(&svc, A).await.unwrap_err().id(), ID);
        assert_eq!(nodes.reached(A), 3);
        tokio::time::advance(Duration::from_secs(1)).await;
        nodes.answer(A, 0);
        call(&svc, A).await.unwrap();
        assert_eq!(breaker.state(A, HELLO), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn circuits_are_per_node_and_per_endpoint() {
        let nodes = Nodes::default();
        let breaker = Breaker::new().failures(2);
        let svc = nodes.wrapped(&breaker);
        nodes.answer(A, 503);
        call(&svc, A).await.unwrap_err();
        call(&svc, A).await.unwrap_err();
        assert_eq!(breaker.state(A, HELLO), BreakerState::Open);
        // Node B is untouched and goes on answering.
        assert_eq!(breaker.state(B, HELLO), BreakerState::Closed);
        for _ in 0..3 {
            call(&svc, B).await.unwrap();
        }
        assert_eq!(nodes.reached(B), 3);
        // Another endpoint on node A has a circuit of its own.
        nodes.answer(A, 0);
        svc.clone()
            .oneshot(attempt(A, "Greeter.Other"))
            .await
            .unwrap();
        assert_eq!(breaker.state(A, "Greeter.Other"), BreakerState::Closed);
        assert_eq!(breaker.state(A, HELLO), BreakerState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn only_failures_in_a_row_count_and_4xx_is_no_failure() {
        let nodes = Nodes::default();
        let breaker = Breaker::new().failures(3);
        let svc = nodes.wrapped(&breaker);
        for code in [503, 408, 0, 500, 504, 400, 404, 429, 503, 503] {
            nodes.answer(A, code);
            let _ = call(&svc, A).await;
            assert_eq!(
                breaker.state(A, HELLO),
                BreakerState::Closed,
                "after {code}"
            );
        }
        nodes.answer(A, 408);
        let _ = call(&svc, A).await;
        assert_eq!(breaker.state(A, HELLO), BreakerState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_lets_only_so_many_trials_through_and_a_dropped_trial_frees_its_place() {
        let reached = Arc::new(AtomicUsize::new(0));
        let fail = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let inner = tower::service_fn({
            let (reached, fail) = (reached.clone(), fail.clone());
            move |_attempt: Attempt| {
                reached.fetch_add(1, Ordering::SeqCst);
                let fail = fail.load(Ordering::SeqCst);
                async move {
                    if fail {
                        return Err(Error::service_unavailable("node", "down"));
                    }
                    // A trial that hangs until dropped.
                    std::future::pending::<()>().await;
                    Ok(RawReply::One(Bytes::new()))
                }
            }
        });
        let breaker = Breaker::new().failures(1).open_for(Duration::from_secs(1));
        let svc = breaker
            .wrapper()
            .wrap(tower::util::BoxCloneSyncService::new(inner));
        call(&svc, A).await.unwrap_err();
        assert_eq!(breaker.state(A, HELLO), BreakerState::Open);
        tokio::time::advance(Duration::from_secs(1)).await;
        fail.store(false, Ordering::SeqCst);
        let trial = tokio::spawn(svc.clone().oneshot(attempt(A, HELLO)));
        tokio::task::yield_now().await;
        assert_eq!(reached.load(Ordering::SeqCst), 2);
        // One trial at a time (half_open_max = 1): the next is refused.
        let e = call(&svc, A).await.unwrap_err();
        assert!(e.detail().contains("trial calls are under way"), "{e}");
        assert_eq!(reached.load(Ordering::SeqCst), 2);
        // The trial is dropped unanswered (its call's deadline passed): another may try.
        trial.abort();
        let _ = trial.await;
        assert_eq!(breaker.state(A, HELLO), BreakerState::HalfOpen);
        let again = tokio::spawn(svc.clone().oneshot(attempt(A, HELLO)));
        tokio::task::yield_now().await;
        assert_eq!(reached.load(Ordering::SeqCst), 3);
        again.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn late_answers_from_before_a_change_do_not_count() {
        let breaker = Breaker::new().failures(1);
        let circuit = breaker.circuits.get(A, HELLO);
        let policy = breaker.policy.clone();
        let now = Instant::now();
        let mut c = lock(&circuit);
        let (old, _) = c.admit(&policy, now).ok().unwrap();
        let (same, _) = c.admit(&policy, now).ok().unwrap();
        c.record(&policy, same, true, now);
        assert_eq!(c.state_at(now), BreakerState::Open);
        // An attempt let through while closed answers after the circuit opened.
        c.record(&policy, old, false, now);
        assert_eq!(c.state_at(now), BreakerState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_ratio_opens_on_scattered_failures() {
        let nodes = Nodes::default();
        let breaker = Breaker::new().failures(100).failure_ratio(0.5, 4);
        let svc = nodes.wrapped(&breaker);
        for code in [503, 0, 503] {
            nodes.answer(A, code);
            let _ = call(&svc, A).await;
        }
        assert_eq!(
            breaker.state(A, HELLO),
            BreakerState::Closed,
            "fewer than `window` calls seen"
        );
        nodes.answer(A, 0);
        call(&svc, A).await.unwrap();
        assert_eq!(
            breaker.state(A, HELLO),
            BreakerState::Closed,
            "a success never opens"
        );
        nodes.answer(A, 500);
        let _ = call(&svc, A).await;
        // Last 4: 0, 503, 0, 500 — half of them failed.
        assert_eq!(breaker.state(A, HELLO), BreakerState::Open);
    }

    #[test]
    fn settings_build_a_breaker_and_bad_ones_are_400s() {
        let ctx = WrapperContext::new("svc");
        let w = build(&Settings::default(), &ctx).unwrap();
        assert_eq!(w.call_names(), ["breaker"]);
        assert!(w.handler_names().is_empty());
        let s = Settings::from_flags([
            "breaker.failures=2",
            "breaker.open_for=500ms",
            "breaker.failure_ratio=0.5",
            "breaker.window=10",
        ])
        .unwrap();
        build(&s, &ctx).unwrap();
        for (flag, says) in [
            ("breaker.failures=0", "failures must be at least 1"),
            ("breaker.half_open_max=0", "half_open_max"),
            ("breaker.open_for=0", "open_for"),
            ("breaker.failure_ratio=2", "failure_ratio"),
            ("breaker.open_for=soon", "wrapper breaker"),
        ] {
            let e = build(&Settings::from_flags([flag]).unwrap(), &ctx).unwrap_err();
            assert_eq!(e.code(), 400, "{flag}");
            assert!(e.detail().contains(says), "{flag}: {e}");
        }
    }
}
