//! The markdown table of results.

use std::fmt::Write as _;

use crate::harness::Sample;

/// Both stacks' aggregate at one concurrency.
#[derive(Debug)]
pub struct Row {
    pub concurrency: usize,
    pub micro: Sample,
    pub tonic: Sample,
}

/// Throughput ratio micro/tonic that meets the target.
const MIN_THROUGHPUT_RATIO: f64 = 0.9;
/// p99 ratio micro/tonic that meets the target.
const MAX_P99_RATIO: f64 = 1.0;

/// A markdown table: one line per concurrency, then the targets.
pub fn markdown(rows: &[Row], settings: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Unary `Greeter.Hello` over loopback; {settings}.\n");
    out.push_str(
        "| in flight | micro req/s | tonic req/s | throughput ratio | micro p50 µs | tonic p50 µs \
         | micro p99 µs | tonic p99 µs | p99 ratio | calls micro / tonic |\n",
    );
    out.push_str("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for row in rows {
        let throughput_ratio = row.micro.throughput() / row.tonic.throughput();
        let p99_ratio = row.micro.quantile_us(0.99) / row.tonic.quantile_us(0.99);
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.0} | {:.2}x {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2}x {} | {} / {} |",
            row.concurrency,
            row.micro.throughput(),
            row.tonic.throughput(),
            throughput_ratio,
            mark(throughput_ratio >= MIN_THROUGHPUT_RATIO),
            row.micro.quantile_us(0.50),
            row.tonic.quantile_us(0.50),
            row.micro.quantile_us(0.99),
            row.tonic.quantile_us(0.99),
            p99_ratio,
            mark(p99_ratio <= MAX_P99_RATIO),
            row.micro.calls(),
            row.tonic.calls(),
        );
    }
    let _ = writeln!(
        out,
        "\nTargets: throughput ratio >= {MIN_THROUGHPUT_RATIO:.1}x, p99 ratio <= {MAX_P99_RATIO:.1}x \
         (micro / tonic; ✓ met, ✗ missed)."
    );
    out
}

fn mark(met: bool) -> &'static str {
    if met {
        "✓"
    } else {
        "✗"
    }
}
