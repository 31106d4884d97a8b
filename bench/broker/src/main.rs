//! `bench-broker`: publish-to-delivery throughput and latency of 1 KiB messages
//! through micro's brokers, against raw async-nats in the same run.
//!
//! Method:
//! - One process, two tokio runtimes of one worker thread each: subscribers on
//!   one, publishers on the other (both sides get the same setup for every
//!   system). The nats-server is the bench's own, started on a free loopback
//!   port with JetStream storing in a temporary directory, and killed at the end.
//! - Each message is 1,024 bytes: its send time (ns since the bench started) and
//!   a sequence number, then padding. The subscriber records now minus send time
//!   in an HDR histogram. micro messages also carry a `micro-id` header, as every
//!   message published through micro's typed `Publisher` does.
//! - Two phases per system and round: **throughput**, publishing for `duration`
//!   with at most `window` messages in flight (a window, so no system drops or
//!   rejects messages for going faster than its subscriber), throughput =
//!   messages / (last delivery - first publish), with the latency at that load;
//!   and **latency**, one message in flight at a time, for half the duration.
//! - JetStream publishers wait for the server's ack on every message, so
//!   `--jetstream-publishers` tasks (16) publish concurrently there; the other
//!   systems publish from one task.
//! - Rounds alternate the systems, the order reversed every round; after each
//!   system is set up a short warm-up phase is discarded. Every round uses fresh
//!   topics (and JetStream streams).
//!
//! The target (micro's NATS broker >= 0.8x raw async-nats throughput) is
//! reported as a ratio, never asserted. `--smoke` is a quick correctness run
//! (CI); without nats-server it skips the NATS systems unless `CI` is set.

mod harness;
mod server;
mod systems;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use bench_common::mark;
use clap::Parser;
use hdrhistogram::Histogram;

use harness::{run_phase, Phase, Recorder, Runtimes};
use systems::System;

/// Broker benchmark: micro's NATS broker versus raw async-nats, and micro's
/// memory and HTTP brokers.
#[derive(Debug, Parser)]
#[command(name = "bench-broker")]
struct Args {
    /// Seconds of the throughput phase per system and round (the latency phase
    /// lasts half as long).
    #[arg(long, default_value_t = 2.0)]
    duration: f64,
    /// Measured rounds (the order of systems is reversed every round).
    #[arg(long, default_value_t = 5)]
    rounds: u32,
    /// Messages in flight in the throughput phase.
    #[arg(long, default_value_t = 500)]
    window: usize,
    /// Concurrent publishers for JetStream (each waits for its acks).
    #[arg(long, default_value_t = 16)]
    jetstream_publishers: usize,
    /// Only these systems (comma separated).
    #[arg(long, value_delimiter = ',', value_enum)]
    only: Vec<System>,
    /// Quick correctness run for CI: short phases, one round.
    #[arg(long)]
    smoke: bool,
    /// Also write the markdown tables to this file.
    #[arg(long)]
    markdown: Option<PathBuf>,
}

const ALL: [System; 7] = [
    System::RawNats,
    System::RawNatsHeader,
    System::MicroNats,
    System::RawJetstream,
    System::MicroJetstream,
    System::Memory,
    System::Http,
];

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// Results of one system over all rounds.
#[derive(Debug)]
struct Totals {
    throughput: Vec<Phase>,
    latency: Vec<Phase>,
}

fn main() -> Result<()> {
    let mut args = Args::parse();
    if args.smoke {
        args.duration = 0.3;
        args.rounds = 1;
    }
    let mut systems: Vec<System> = if args.only.is_empty() {
        ALL.to_vec()
    } else {
        args.only.clone()
    };
    let server = if systems.iter().any(|s| s.needs_nats()) {
        match server::binary() {
            Some(binary) => Some(server::NatsServer::start(&binary)?),
            None if in_ci() => {
                bail!("nats-server is not installed (CI is set): run scripts/nats-server.sh")
            }
            None => {
                eprintln!("SKIPPED the NATS systems: nats-server is not installed (run scripts/nats-server.sh)");
                systems.retain(|s| !s.needs_nats());
                None
            }
        }
    } else {
        None
    };
    let url = server.as_ref().map(|s| s.url()).unwrap_or_default();
    let server_pid = server.as_ref().map(|s| s.pid());
    let rts = Runtimes::new()?;
    let recorder = Recorder::new()?;
    let duration = Duration::from_secs_f64(args.duration);
    let mut totals: BTreeMap<usize, Totals> = BTreeMap::new();

    for round in 0..args.rounds {
        let mut order = systems.clone();
        if round % 2 == 1 {
            order.reverse();
        }
        for system in order {
            eprintln!("round {}/{}: {}", round + 1, args.rounds, system.label());
            let topic = format!("bench.{system:?}.r{round}").to_lowercase();
            let running = system
                .start(&rts, &url, &topic, &recorder)
                .with_context(|| format!("start {}", system.label()))?;
            let publishers = system.publishers(args.jetstream_publishers);
            let phase = |window: usize, d: Duration| {
                run_phase(
                    &rts,
                    server_pid,
                    &recorder,
                    &running.publish,
                    publishers,
                    window,
                    d,
                )
                .with_context(|| format!("{} (window {window})", system.label()))
            };
            let warmup = phase(args.window, duration / 5)?;
            ensure!(
                warmup.published > 0,
                "{}: nothing published",
                system.label()
            );
            let throughput = phase(args.window, duration)?;
            let latency = phase(1, duration / 2)?;
            ensure!(
                throughput.published > 0 && latency.published > 0,
                "{}: nothing published",
                system.label()
            );
            if throughput.publish_errors + latency.publish_errors > 0 {
                eprintln!(
                    "  {} publishes failed and were retried",
                    throughput.publish_errors + latency.publish_errors
                );
            }
            let index = ALL.iter().position(|s| *s == system).unwrap_or(0);
            let t = totals.entry(index).or_insert(Totals {
                throughput: Vec::new(),
                latency: Vec::new(),
            });
            t.throughput.push(throughput);
            t.latency.push(latency);
            running.stop(&rts);
        }
    }
    drop(server);

    let table = report(&args, &totals)?;
    println!("{table}");
    if let Some(path) = &args.markdown {
        std::fs::write(path, &table).with_context(|| format!("write {}", path.display()))?;
    }
    if args.smoke {
        eprintln!("smoke run passed: every published message was delivered, intact");
    }
    Ok(())
}

fn rate(phases: &[Phase]) -> f64 {
    let messages: u64 = phases.iter().map(|p| p.published).sum();
    let seconds: f64 = phases.iter().map(|p| p.elapsed.as_secs_f64()).sum();
    messages as f64 / seconds.max(1e-9)
}

/// CPU µs (bench process + nats-server) per message.
fn cpu_per_message(phases: &[Phase]) -> f64 {
    let messages: u64 = phases.iter().map(|p| p.published).sum();
    let cpu: f64 = phases.iter().map(|p| p.cpu.as_secs_f64()).sum();
    cpu * 1e6 / (messages.max(1) as f64)
}

fn merged(phases: &[Phase]) -> Result<Histogram<u64>> {
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for p in phases {
        h.add(&p.histogram)?;
    }
    Ok(h)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn report(args: &Args, totals: &BTreeMap<usize, Totals>) -> Result<String> {
    let mut out = String::new();
    writeln!(
        out,
        "1 KiB messages, publish -> delivery over loopback; {} round(s) of {:.1} s per system; \
         throughput with {} messages in flight, latency alone with 1 in flight.\n",
        args.rounds, args.duration, args.window
    )?;
    writeln!(
        out,
        "| system | msgs/s | p50 µs | p99 µs | CPU µs/msg | 1 in flight: p50 µs | p99 µs |"
    )?;
    writeln!(out, "|---|---:|---:|---:|---:|---:|---:|")?;
    for (index, t) in totals {
        let under_load = merged(&t.throughput)?;
        let alone = merged(&t.latency)?;
        writeln!(
            out,
            "| {} | {:.0} | {} | {} | {:.1} | {} | {} |",
            ALL[*index].label(),
            rate(&t.throughput),
            under_load.value_at_quantile(0.5),
            under_load.value_at_quantile(0.99),
            cpu_per_message(&t.throughput),
            alone.value_at_quantile(0.5),
            alone.value_at_quantile(0.99),
        )?;
    }
    let pairs = [
        ("core NATS", System::MicroNats, System::RawNats),
        (
            "core NATS, both with the micro-id header",
            System::MicroNats,
            System::RawNatsHeader,
        ),
        ("JetStream", System::MicroJetstream, System::RawJetstream),
    ];
    let index = |s: System| ALL.iter().position(|x| *x == s).unwrap_or(0);
    let mut ratios = String::new();
    for (name, micro, raw) in pairs {
        let (Some(m), Some(r)) = (totals.get(&index(micro)), totals.get(&index(raw))) else {
            continue;
        };
        let per_round: Vec<f64> = m
            .throughput
            .iter()
            .zip(&r.throughput)
            .map(|(m, r)| rate(std::slice::from_ref(m)) / rate(std::slice::from_ref(r)))
            .collect();
        let ratio = rate(&m.throughput) / rate(&r.throughput);
        let (lo, hi) = per_round
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
                (lo.min(*x), hi.max(*x))
            });
        let p99 = |phases: &[Phase]| merged(phases).map(|h| h.value_at_quantile(0.99) as f64);
        writeln!(
            ratios,
            "| {name} | {ratio:.2}x {} | {:.2}x [{lo:.2}, {hi:.2}] | {:.2}x | {:.2}x | {:.2}x |",
            mark(ratio >= 0.8),
            median(per_round.clone()),
            cpu_per_message(&m.throughput) / cpu_per_message(&r.throughput),
            p99(&m.throughput)? / p99(&r.throughput)?,
            p99(&m.latency)? / p99(&r.latency)?,
        )?;
    }
    if !ratios.is_empty() {
        writeln!(
            out,
            "\nmicro / raw async-nats (target: throughput >= 0.8x; ✓ met, ✗ missed)\n"
        )?;
        writeln!(
            out,
            "| transport | throughput | per round: median [min, max] | CPU per msg | p99 under load | p99 alone |"
        )?;
        writeln!(out, "|---|---:|---:|---:|---:|---:|")?;
        out.push_str(&ratios);
    }
    Ok(out)
}
