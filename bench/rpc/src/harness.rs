//! The load loop: `concurrency` tasks share one client and call `Greeter.Hello` back
//! to back, each recording its round-trip latencies in its own HDR histogram.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use hdrhistogram::Histogram;
use tokio::time::Instant;

use crate::{micro_side, tonic_side};

/// The name every call sends, and the greeting every call must get back.
pub const NAME: &str = "John";
/// The expected answer to [`NAME`].
pub const GREETING: &str = "Hello John";

/// Which stack a run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum System {
    Micro,
    Tonic,
}

impl fmt::Display for System {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            System::Micro => "micro",
            System::Tonic => "tonic",
        })
    }
}

/// A client of either stack; clones share one connection.
#[derive(Debug, Clone)]
pub enum Caller {
    Micro(micro_side::Client),
    Tonic(tonic_side::Client),
}

impl Caller {
    /// One `Greeter.Hello` round trip.
    pub async fn hello(&mut self, name: &str) -> Result<String, String> {
        match self {
            Caller::Micro(client) => micro_side::hello(client, name).await,
            Caller::Tonic(client) => tonic_side::hello(client, name).await,
        }
    }
}

/// When a run stops.
#[derive(Debug, Clone, Copy)]
pub enum Limit {
    /// No call starts after this long.
    For(Duration),
    /// This many calls in all, spread over the tasks.
    Calls(u64),
}

/// What one or more runs measured.
#[derive(Debug)]
pub struct Sample {
    /// Round-trip latencies, in nanoseconds.
    pub latency: Histogram<u64>,
    /// Wall-clock time of the runs, first call started to last call done.
    pub elapsed: Duration,
}

impl Sample {
    /// An empty sample.
    pub fn new() -> anyhow::Result<Self> {
        Ok(Sample {
            latency: new_histogram()?,
            elapsed: Duration::ZERO,
        })
    }

    /// Adds `other`'s calls and time to this sample.
    pub fn merge(&mut self, other: &Sample) -> anyhow::Result<()> {
        self.latency.add(&other.latency)?;
        self.elapsed += other.elapsed;
        Ok(())
    }

    /// Completed calls.
    pub fn calls(&self) -> u64 {
        self.latency.len()
    }

    /// Calls per second.
    pub fn throughput(&self) -> f64 {
        self.calls() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The `q` quantile (0..1) of latency, in microseconds.
    pub fn quantile_us(&self, q: f64) -> f64 {
        self.latency.value_at_quantile(q) as f64 / 1e3
    }
}

fn new_histogram() -> anyhow::Result<Histogram<u64>> {
    // 1 ns .. 60 s at 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000_000, 3).context("histogram bounds")
}

/// Runs `concurrency` looping tasks on the current runtime until `limit`; fails on
/// the first error or wrong answer.
pub async fn run(caller: &Caller, concurrency: usize, limit: Limit) -> anyhow::Result<Sample> {
    let start = Instant::now();
    let (deadline, budget) = match limit {
        Limit::For(duration) => (Some(start + duration), None),
        Limit::Calls(calls) => (None, Some(Arc::new(AtomicU64::new(calls)))),
    };
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| tokio::spawn(worker(caller.clone(), deadline, budget.clone())))
        .collect();
    let mut sample = Sample::new()?;
    for task in tasks {
        sample.latency.add(&task.await??)?;
    }
    sample.elapsed = start.elapsed();
    Ok(sample)
}

async fn worker(
    mut caller: Caller,
    deadline: Option<Instant>,
    budget: Option<Arc<AtomicU64>>,
) -> anyhow::Result<Histogram<u64>> {
    let mut latency = new_histogram()?;
    let mut started = Instant::now();
    loop {
        if let Some(budget) = &budget {
            let claim =
                budget.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
            if claim.is_err() {
                break;
            }
        }
        let answer = caller.hello(NAME).await;
        let done = Instant::now();
        match answer {
            Ok(message) if message == GREETING => {}
            Ok(message) => bail!("wrong answer {message:?}, want {GREETING:?}"),
            Err(err) => bail!("call failed: {err}"),
        }
        latency.saturating_record(u64::try_from((done - started).as_nanos()).unwrap_or(u64::MAX));
        if deadline.is_some_and(|deadline| done >= deadline) {
            break;
        }
        started = done;
    }
    Ok(latency)
}
