//! The markdown tables of results.

use std::fmt::Write as _;

use bench_common::{mark, Ratios, Sample, Spread};

/// Throughput ratio micro/tonic that meets the target.
const MIN_THROUGHPUT_RATIO: f64 = 0.9;
/// p99 ratio micro/tonic that meets the target.
const MAX_P99_RATIO: f64 = 1.0;

/// Both stacks' aggregate at one concurrency.
#[derive(Debug)]
pub struct Row {
    pub concurrency: usize,
    pub micro: Sample,
    pub tonic: Sample,
    /// The micro / tonic ratios of each round's back-to-back runs.
    pub paired: Vec<Ratios>,
}

/// The main table (one line per concurrency, aggregate of all rounds), the spread of
/// the per-round ratios, then the targets.
pub fn markdown(rows: &[Row], settings: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Unary `Greeter.Hello` over loopback; {settings}.\n");
    out.push_str(
        "| in flight | micro req/s | tonic req/s | throughput ratio | micro p50 µs | tonic p50 µs \
         | micro p99 µs | tonic p99 µs | p99 ratio |\n",
    );
    out.push_str("|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for row in rows {
        let ratios = Ratios::of(&row.micro, &row.tonic);
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.0} | {:.2}x {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2}x {} |",
            row.concurrency,
            row.micro.throughput(),
            row.tonic.throughput(),
            ratios.throughput,
            mark(ratios.throughput >= MIN_THROUGHPUT_RATIO),
            row.micro.quantile_us(0.50),
            row.tonic.quantile_us(0.50),
            row.micro.quantile_us(0.99),
            row.tonic.quantile_us(0.99),
            ratios.p99,
            mark(ratios.p99 <= MAX_P99_RATIO),
        );
    }
    if rows.iter().any(|row| row.paired.len() > 1) {
        out.push_str(
            "\nPer-round ratios (each round's micro and tonic runs are back to back): \
             median [min, max]\n\n\
             | in flight | throughput ratio | p99 ratio |\n|---:|---:|---:|\n",
        );
        for row in rows {
            let _ = writeln!(
                out,
                "| {} | {} | {} |",
                row.concurrency,
                spread(row.paired.iter().map(|r| r.throughput)),
                spread(row.paired.iter().map(|r| r.p99)),
            );
        }
    }
    let _ = writeln!(
        out,
        "\nTargets: throughput ratio >= {MIN_THROUGHPUT_RATIO:.1}x, p99 ratio <= \
         {MAX_P99_RATIO:.1}x (micro / tonic; ✓ met, ✗ missed)."
    );
    out
}

/// `median [min, max]` of `values`, `-` when there are none.
fn spread(values: impl Iterator<Item = f64>) -> String {
    Spread::of(values).map_or_else(|| "-".into(), |spread| spread.to_string())
}
