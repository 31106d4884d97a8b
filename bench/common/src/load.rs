//! Closed-loop load: `concurrency` tasks each call back to back, so the load is
//! what the system under test sustains, and each task records its round trips
//! in its own histogram (no shared state on the measured path).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::time::Instant;

use crate::histogram::new_histogram;
use crate::sample::Sample;

/// When a run stops.
#[derive(Debug, Clone, Copy)]
pub enum Limit {
    /// No call starts after this long.
    For(Duration),
    /// This many calls in all, spread over the tasks.
    Calls(u64),
}

/// One call in flight: the bench's request and its check of the answer. It
/// borrows the task's own client, so no call has to clone a client (which costs
/// more for some systems than others and would tilt a comparison).
pub type CallFuture<'c> = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send + 'c>>;

/// Runs `concurrency` tasks on the current runtime until `limit`, each with its
/// own clone of `client`, calling `call` back to back; fails on the first error
/// `call` returns (a failed call or a wrong answer).
///
/// A call's latency runs from the end of the task's previous call to the end of
/// this one, so the loop's own overhead is counted, never lost between calls.
pub async fn run<C, F>(
    concurrency: usize,
    limit: Limit,
    client: &C,
    call: F,
) -> anyhow::Result<Sample>
where
    C: Clone + Send + 'static,
    F: for<'c> Fn(&'c mut C) -> CallFuture<'c> + Clone + Send + 'static,
{
    let start = Instant::now();
    let (deadline, budget) = match limit {
        Limit::For(duration) => (Some(start + duration), None),
        Limit::Calls(calls) => (None, Some(Arc::new(AtomicU64::new(calls)))),
    };
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            tokio::spawn(worker(
                client.clone(),
                call.clone(),
                deadline,
                budget.clone(),
            ))
        })
        .collect();
    let mut sample = Sample::new()?;
    for task in tasks {
        sample.latency.add(&task.await??)?;
    }
    sample.elapsed = start.elapsed();
    Ok(sample)
}

async fn worker<C, F>(
    mut client: C,
    call: F,
    deadline: Option<Instant>,
    budget: Option<Arc<AtomicU64>>,
) -> anyhow::Result<Histogram<u64>>
where
    F: for<'c> Fn(&'c mut C) -> CallFuture<'c>,
{
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
        call(&mut client).await?;
        let done = Instant::now();
        latency.saturating_record(u64::try_from((done - started).as_nanos()).unwrap_or(u64::MAX));
        if deadline.is_some_and(|deadline| done >= deadline) {
            break;
        }
        started = done;
    }
    Ok(latency)
}
