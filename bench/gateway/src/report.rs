//! The markdown report: per target the throughput, latency percentiles, what
//! each proxy adds over the direct call and the CPU each process spent per
//! request; then the two targets of the issue, met (✓) or missed (✗).
//!
//! Aggregation over rounds: throughput is all requests over all measured time;
//! wrk's percentiles cannot be merged, so p50/p99 are the medians of the
//! rounds' values; what a proxy adds is taken within each round (against the
//! direct run of the same round, which ran minutes apart at most) and the
//! median of those is shown, with the range over rounds for the ratios.

use std::fmt::Write as _;

use bench_common::{mark, Spread};

use crate::wrk::Outcome;
use crate::Target;

/// One measured wrk run and the CPU the processes spent during it.
#[derive(Debug, Clone, Copy)]
pub struct Run {
    /// What was loaded.
    pub target: Target,
    /// What wrk measured.
    pub outcome: Outcome,
    /// CPU seconds of the greeter during the run.
    pub greeter_cpu: f64,
    /// CPU seconds of the proxy of `target` (nginx: master and workers), 0 for direct.
    pub hop_cpu: f64,
}

/// How the runs were made, for the caption.
#[derive(Debug, Clone)]
pub struct Setup {
    /// wrk threads and connections.
    pub threads: usize,
    /// wrk connections.
    pub connections: usize,
    /// Rounds.
    pub rounds: usize,
    /// Seconds per run.
    pub seconds: u64,
    /// Warm-up seconds per target before the first round.
    pub warmup: u64,
    /// nginx worker processes and micro api worker threads.
    pub workers: usize,
    /// Cores of the machine.
    pub cores: usize,
}

/// `rounds[r]` holds the runs of round `r`, one per target.
pub fn markdown(setup: &Setup, rounds: &[Vec<Run>]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "JSON `POST /greeter/hello` (`{{\"name\":\"John\"}}`) over loopback HTTP/1.1 keep-alive; \
         wrk `-t{} -c{}`, {} round(s) x {} s per target, order rotated each round{}; \
         nginx {} worker process(es), micro api {} worker thread(s), {} cores.\n",
        setup.threads,
        setup.connections,
        setup.rounds,
        setup.seconds,
        if setup.warmup > 0 {
            format!(", after {} s warm-up of each", setup.warmup)
        } else {
            String::new()
        },
        setup.workers,
        setup.workers,
        setup.cores,
    );
    let _ = writeln!(
        out,
        "| target | req/s | p50 µs | p99 µs | added p50 µs | added p99 µs | hop CPU µs/req | greeter CPU µs/req |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|");
    for target in Target::ALL {
        let runs = runs_of(rounds, target);
        let requests: u64 = runs.iter().map(|r| r.outcome.requests).sum();
        let seconds: f64 = runs
            .iter()
            .map(|r| r.outcome.duration_us as f64 / 1e6)
            .sum();
        let per_req = |cpu: f64| cpu / requests as f64 * 1e6;
        let (added_p50, added_p99, hop_cpu) = if target == Target::Direct {
            ("-".to_string(), "-".to_string(), "-".to_string())
        } else {
            (
                format!("{:+.0}", median(&added(rounds, target, |o| o.p50_us))),
                format!("{:+.0}", median(&added(rounds, target, |o| o.p99_us))),
                format!("{:.1}", per_req(runs.iter().map(|r| r.hop_cpu).sum())),
            )
        };
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.0} | {:.0} | {added_p50} | {added_p99} | {hop_cpu} | {:.1} |",
            target.label(),
            requests as f64 / seconds,
            median(&values(&runs, |o| o.p50_us as f64)),
            median(&values(&runs, |o| o.p99_us as f64)),
            per_req(runs.iter().map(|r| r.greeter_cpu).sum()),
        );
    }

    // The targets, from per-round pairs.
    let ratios: Vec<f64> = rounds
        .iter()
        .map(|round| find(round, Target::MicroApi).rate() / find(round, Target::Nginx).rate())
        .collect();
    let micro_p99 = added(rounds, Target::MicroApi, |o| o.p99_us);
    let nginx_p99 = added(rounds, Target::Nginx, |o| o.p99_us);
    let ratio = spread(&ratios);
    let (micro_added, nginx_added) = (spread(&micro_p99), spread(&nginx_p99));
    let _ = writeln!(
        out,
        "\n| target | median over rounds [min, max] | |\n|---|---|---|"
    );
    // How many rounds went micro api's way: with a median over few rounds, this
    // tells a steady lead from a coin toss.
    let rounds_ahead = ratios.iter().filter(|r| **r >= 1.0).count();
    let p99_rounds_ahead = micro_p99
        .iter()
        .zip(&nginx_p99)
        .filter(|(micro, nginx)| micro <= nginx)
        .count();
    let _ = writeln!(
        out,
        "| micro api throughput ≥ nginx's (micro api / nginx) | {ratio}; ≥ in {rounds_ahead} of {} rounds | {} |",
        ratios.len(),
        mark(ratio.median >= 1.0)
    );
    let _ = writeln!(
        out,
        "| micro api added p99 ≤ nginx's | micro api {:+.0} µs [{:+.0}, {:+.0}], \
         nginx {:+.0} µs [{:+.0}, {:+.0}]; ≤ in {p99_rounds_ahead} of {} rounds | {} |",
        micro_added.median,
        micro_added.min,
        micro_added.max,
        nginx_added.median,
        nginx_added.min,
        nginx_added.max,
        micro_p99.len(),
        mark(micro_added.median <= nginx_added.median)
    );
    let _ = writeln!(
        out,
        "\nThroughput: all requests / all measured time. p50/p99: median over rounds of wrk's \
         percentiles. Added: a proxy's percentile minus the direct call's in the same round \
         (median over rounds); with more than one connection the targets run at different rates on a \
         saturated machine, so their latencies include different queueing. CPU µs/req: CPU time (user + system, from /proc) of the proxy \
         (nginx: master and workers) and of the greeter during the target's runs, per request."
    );
    out
}

fn runs_of(rounds: &[Vec<Run>], target: Target) -> Vec<Run> {
    rounds
        .iter()
        .flat_map(|round| round.iter().filter(|r| r.target == target).copied())
        .collect()
}

fn find(round: &[Run], target: Target) -> Outcome {
    round
        .iter()
        .find(|r| r.target == target)
        .map(|r| r.outcome)
        .unwrap_or(Outcome {
            requests: 0,
            duration_us: 1,
            p50_us: 0,
            p90_us: 0,
            p99_us: 0,
            max_us: 0,
        })
}

/// Per round, `value` of `target` minus `value` of the direct call, in µs.
fn added(rounds: &[Vec<Run>], target: Target, value: fn(&Outcome) -> u64) -> Vec<f64> {
    rounds
        .iter()
        .map(|round| {
            value(&find(round, target)) as f64 - value(&find(round, Target::Direct)) as f64
        })
        .collect()
}

fn values(runs: &[Run], value: fn(&Outcome) -> f64) -> Vec<f64> {
    runs.iter().map(|r| value(&r.outcome)).collect()
}

/// Median, min and max of `values` (NaN when there are none).
fn spread(values: &[f64]) -> Spread {
    Spread::of(values.iter().copied()).unwrap_or(Spread {
        median: f64::NAN,
        min: f64::NAN,
        max: f64::NAN,
    })
}

fn median(values: &[f64]) -> f64 {
    spread(values).median
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(target: Target, requests: u64, p99_us: u64) -> Run {
        Run {
            target,
            outcome: Outcome {
                requests,
                duration_us: 1_000_000,
                p50_us: p99_us / 2,
                p90_us: p99_us,
                p99_us,
                max_us: p99_us,
            },
            greeter_cpu: 0.1,
            hop_cpu: 0.1,
        }
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }

    #[test]
    fn targets_are_judged_per_round() {
        let rounds = vec![vec![
            run(Target::Direct, 3000, 100),
            run(Target::Nginx, 1000, 300),
            run(Target::MicroApi, 1500, 250),
        ]];
        let setup = Setup {
            threads: 1,
            connections: 2,
            rounds: 1,
            seconds: 1,
            warmup: 0,
            workers: 2,
            cores: 2,
        };
        let table = markdown(&setup, &rounds);
        assert!(
            table.contains("| 1.50x [1.50, 1.50]; ≥ in 1 of 1 rounds | ✓ |"),
            "{table}"
        );
        assert!(
            table.contains(
                "| micro api +150 µs [+150, +150], nginx +200 µs [+200, +200]; ≤ in 1 of 1 rounds | ✓ |"
            ),
            "{table}"
        );
        assert!(!table.contains('✗'), "{table}");
    }
}
