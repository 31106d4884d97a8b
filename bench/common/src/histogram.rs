//! Latency histograms: one shape for every bench, so that histograms from
//! different tasks and rounds can be added together.

use anyhow::Context as _;
use hdrhistogram::Histogram;

/// An empty latency histogram in nanoseconds: 1 ns .. 60 s at 3 significant
/// digits, wide enough for any round trip a bench sees.
pub fn new_histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).context("histogram bounds")
}

/// The `q` quantile (0..1) of a nanosecond histogram, in microseconds, the unit
/// the tables show.
pub fn us(histogram: &Histogram<u64>, q: f64) -> f64 {
    histogram.value_at_quantile(q) as f64 / 1e3
}
