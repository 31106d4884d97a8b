//! What a run measured.

use std::time::Duration;

use hdrhistogram::Histogram;

use crate::histogram::{new_histogram, us};

/// The latencies and wall-clock time of one or more runs; rounds merge into one
/// sample, so a table row is the aggregate of all its rounds.
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
        us(&self.latency, q)
    }
}
