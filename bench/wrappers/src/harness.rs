//! The load loop: `concurrency` tasks share one client and call `Greeter.Hello` back
//! to back, each recording its round-trip latencies in its own HDR histogram.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, ensure, Context as _};
use greeter::proto::HelloRequest;
use hdrhistogram::Histogram;
use tokio::time::Instant;

/// A greeter client pinned to one service's address; clones share its connection.
pub type Client = greeter::GreeterClient;

/// The name every call sends, and the greeting every call must get back.
const NAME: &str = "John";
const GREETING: &str = "Hello John";

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
    /// Wall-clock time of the runs.
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

    /// Calls per second.
    pub fn throughput(&self) -> f64 {
        self.latency.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The `q` quantile (0..1) of latency, in microseconds.
    pub fn quantile_us(&self, q: f64) -> f64 {
        self.latency.value_at_quantile(q) as f64 / 1e3
    }
}

fn new_histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).context("histogram bounds")
}

/// The greeter turns an empty name away, wrapped or not.
pub async fn check_rejects_empty_name(client: &Client) -> anyhow::Result<()> {
    let answer = client
        .hello(HelloRequest {
            name: String::new(),
        })
        .await;
    ensure!(answer.is_err(), "an empty name was answered: {answer:?}");
    Ok(())
}

/// Runs `concurrency` looping tasks until `limit`; fails on the first error or
/// wrong answer.
pub async fn run(client: &Client, concurrency: usize, limit: Limit) -> anyhow::Result<Sample> {
    let start = Instant::now();
    let (deadline, budget) = match limit {
        Limit::For(duration) => (Some(start + duration), None),
        Limit::Calls(calls) => (None, Some(Arc::new(AtomicU64::new(calls)))),
    };
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| tokio::spawn(worker(client.clone(), deadline, budget.clone())))
        .collect();
    let mut sample = Sample::new()?;
    for task in tasks {
        sample.latency.add(&task.await??)?;
    }
    sample.elapsed = start.elapsed();
    Ok(sample)
}

async fn worker(
    client: Client,
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
        let answer = client.hello(HelloRequest { name: NAME.into() }).await;
        let done = Instant::now();
        match answer {
            Ok(rsp) if rsp.message == GREETING => {}
            Ok(rsp) => bail!("wrong answer {:?}, want {GREETING:?}", rsp.message),
            Err(err) => bail!("call failed: {} {}", err.code(), err.detail()),
        }
        latency.saturating_record(u64::try_from((done - started).as_nanos()).unwrap_or(u64::MAX));
        if deadline.is_some_and(|deadline| done >= deadline) {
            break;
        }
        started = done;
    }
    Ok(latency)
}
