//! Summaries for the results tables: how one system compares to another, how
//! much the per-round comparisons vary, and whether a target is met.

use std::fmt;

use crate::sample::Sample;

/// A system's throughput and p99 latency as ratios to a baseline's: what the
/// tables compare, since absolute numbers vary from machine to machine.
#[derive(Debug, Clone, Copy)]
pub struct Ratios {
    pub throughput: f64,
    pub p99: f64,
}

impl Ratios {
    /// The ratios of `sample` to `base`.
    pub fn of(sample: &Sample, base: &Sample) -> Self {
        Ratios {
            throughput: sample.throughput() / base.throughput(),
            p99: sample.quantile_us(0.99) / base.quantile_us(0.99),
        }
    }
}

/// Median, min and max of per-round ratios: the median is the result, the
/// range shows how much of a gap is noise.
#[derive(Debug, Clone, Copy)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    /// The spread of `values`; `None` when there are none.
    pub fn of(values: impl Iterator<Item = f64>) -> Option<Self> {
        let mut values: Vec<f64> = values.collect();
        if values.is_empty() {
            return None;
        }
        values.sort_by(f64::total_cmp);
        let n = values.len();
        let median = if n % 2 == 1 {
            values[n / 2]
        } else {
            (values[n / 2 - 1] + values[n / 2]) / 2.0
        };
        Some(Spread {
            median,
            min: values[0],
            max: values[n - 1],
        })
    }
}

/// `median [min, max]` of ratios, as `1.02x [0.97, 1.05]`.
impl fmt::Display for Spread {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.2}x [{:.2}, {:.2}]", self.median, self.min, self.max)
    }
}

/// The mark of a target in a table: met or missed. Targets are reported, never
/// asserted: the machines are shared and noisy.
pub fn mark(met: bool) -> &'static str {
    if met {
        "✓"
    } else {
        "✗"
    }
}
