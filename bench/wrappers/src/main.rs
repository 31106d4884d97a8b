//! `bench-wrappers`: what the built-in wrappers cost on the greeter's unary
//! `Greeter.Hello` call, as ratios to the same call with no wrappers.
//!
//! Method:
//! - One process, two tokio multi-thread runtimes of one worker each (servers on
//!   one, clients on the other), as `bench-rpc` does.
//! - One greeter service per variant, each a full `micro::Service` (memory
//!   registry and broker) on its own 127.0.0.1 port for the whole run, its own
//!   `Service::client()` pinned to that port: the baseline with no wrappers, and
//!   one per wrapper stack (default `metrics,trace`, then `metrics` and `trace`
//!   alone). A stack is applied on both sides, as in a call between two services:
//!   its handler wrappers on the server, its call wrappers on the client.
//! - For each concurrency, a warm-up of every variant, then rounds in which every
//!   variant runs once, the order rotated each round; each stack's throughput and
//!   p99 are divided by the baseline's of the same round, and the median of those
//!   ratios over the rounds is reported with their range.
//! - A stack naming a wrapper that is not built in is skipped with a message.
//!
//! The target (the default stack `metrics,trace` costs under 15% throughput) is
//! reported, never asserted.

mod harness;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context as _};
use bench_common::{mark, runtime, Limit, Ratios, Sample, Spread};
use clap::Parser;
use tokio::runtime::Runtime;
use tokio::sync::watch;

/// Wrapper-cost benchmark: the Hello call without and with wrapper stacks.
#[derive(Debug, Parser)]
#[command(name = "bench-wrappers")]
struct Args {
    /// Seconds each measured run lasts, per variant.
    #[arg(long, default_value_t = 2.0)]
    duration: f64,
    /// Measured rounds; every variant runs once per round, order rotated.
    #[arg(long, default_value_t = 6)]
    rounds: u32,
    /// Seconds of warm-up per variant before the rounds of each concurrency.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Calls in flight, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,16,128")]
    concurrency: Vec<usize>,
    /// A wrapper stack to compare with no wrappers (names as in MICRO_WRAPPERS,
    /// comma separated); repeatable. Default: metrics,trace then metrics and trace.
    #[arg(long = "stack")]
    stacks: Vec<String>,
    /// Quick correctness run: 200 checked calls per variant and concurrency.
    #[arg(long)]
    smoke: bool,
    /// Also write the markdown table to this file.
    #[arg(long)]
    markdown: Option<PathBuf>,
}

const DEFAULT_STACKS: [&str; 3] = ["metrics,trace", "metrics", "trace"];
const SMOKE_CALLS: u64 = 200;
/// Throughput cost of the default stack that meets the target.
const MAX_COST: f64 = 0.15;

/// One service under test.
struct Variant {
    /// `none`, or the stack's names.
    name: String,
    client: harness::Client,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(
        args.concurrency.iter().all(|&c| c > 0),
        "concurrency must be positive"
    );
    ensure!(args.rounds > 0, "rounds must be positive");
    let stacks = known_stacks(&args.stacks);

    let server_rt = runtime("bench-server")?;
    let client_rt = runtime("bench-client")?;
    let (stop, stopped) = watch::channel(false);
    let mut variants = Vec::new();
    let mut servers = Vec::new();
    for stack in std::iter::once(Vec::new()).chain(stacks) {
        let (variant, task) = start(&server_rt, &stack, stopped.clone())?;
        variants.push(variant);
        servers.push(task);
    }

    let result = client_rt.block_on(async {
        let mut rows = Vec::new();
        for variant in &variants {
            harness::check_rejects_empty_name(&variant.client)
                .await
                .with_context(|| variant.name.clone())?;
        }
        for &concurrency in &args.concurrency {
            rows.push(measure(&args, concurrency, &variants).await?);
        }
        anyhow::Ok(rows)
    });

    let _ = stop.send(true);
    for server in servers {
        match server_rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(5), server).await })
        {
            Ok(joined) => joined?.map_err(|e| anyhow::anyhow!("serving: {e}"))?,
            Err(_) => eprintln!("warning: a server did not stop within 5 s"),
        }
    }
    client_rt.shutdown_timeout(Duration::from_secs(1));
    server_rt.shutdown_timeout(Duration::from_secs(1));

    let rows = result?;
    let table = markdown(&rows, &args);
    print!("{table}");
    if let Some(path) = &args.markdown {
        std::fs::write(path, &table).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// The stacks to measure whose wrappers all exist; the others are skipped with a
/// message naming the missing wrappers.
fn known_stacks(asked: &[String]) -> Vec<Vec<String>> {
    let asked: Vec<String> = if asked.is_empty() {
        DEFAULT_STACKS.iter().map(|s| s.to_string()).collect()
    } else {
        asked.to_vec()
    };
    let mut stacks = Vec::new();
    for stack in asked {
        let names: Vec<String> = stack
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(String::from)
            .collect();
        let missing: Vec<&str> = names
            .iter()
            .map(String::as_str)
            .filter(|n| !micro::wrapper::BUILTINS.iter().any(|b| b.name == *n))
            .collect();
        if names.is_empty() {
            continue;
        }
        if missing.is_empty() {
            stacks.push(names);
        } else {
            let known: Vec<_> = micro::wrapper::BUILTINS.iter().map(|b| b.name).collect();
            eprintln!(
                "skipping stack {stack:?}: no built-in wrapper {} (the built-ins are: {})",
                missing.join(", "),
                known.join(", ")
            );
        }
    }
    stacks
}

type ServerTask = tokio::task::JoinHandle<Result<(), micro::BoxError>>;

/// Serves a greeter wrapped in `stack` on a free 127.0.0.1 port until `stopped`;
/// its client carries the stack's call wrappers.
fn start(
    rt: &Runtime,
    stack: &[String],
    mut stopped: watch::Receiver<bool>,
) -> anyhow::Result<(Variant, ServerTask)> {
    let ctx = micro::wrapper::WrapperContext::new(greeter::SERVICE_NAME);
    let wrappers = micro::wrapper::from_names(stack, &micro::wrapper::Settings::default(), &ctx)?;
    let service = micro::Service::builder()
        .name(greeter::SERVICE_NAME)
        .registry(Arc::new(micro::registry::MemoryRegistry::new()))
        .broker(Arc::new(micro::broker::MemoryBroker::new()))
        .handler(greeter::GreeterServer::new(greeter::Greeter::default()))
        .wrap(wrappers)
        .build()?;
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let address = listener.local_addr()?.to_string();
    let client = greeter::GreeterClient::new(greeter::SERVICE_NAME, service.client())
        .with_options(micro::client::CallOptions::default().address(address));
    let task = rt.spawn(service.serve(listener, async move {
        let _ = stopped.wait_for(|&stop| stop).await;
    }));
    let name = if stack.is_empty() {
        "none".to_string()
    } else {
        stack.join(",")
    };
    Ok((Variant { name, client }, task))
}

/// Every variant at one concurrency: the aggregate of its runs and, for each
/// stack, its ratios to the baseline run of the same round.
#[derive(Debug)]
struct Row {
    concurrency: usize,
    /// Per variant (the baseline first): name, aggregate, per-round ratios.
    variants: Vec<(String, Sample, Vec<Ratios>)>,
}

async fn measure(args: &Args, concurrency: usize, variants: &[Variant]) -> anyhow::Result<Row> {
    let (warmup, run, rounds) = if args.smoke {
        (Limit::Calls(20), Limit::Calls(SMOKE_CALLS), 1)
    } else {
        (
            Limit::For(Duration::from_secs_f64(args.warmup)),
            Limit::For(Duration::from_secs_f64(args.duration)),
            args.rounds,
        )
    };
    for variant in variants {
        bench_common::run(concurrency, warmup, &variant.client, harness::hello).await?;
    }
    let mut totals = Vec::new();
    for _ in variants {
        totals.push((Sample::new()?, Vec::new()));
    }
    for round in 0..rounds as usize {
        let mut this_round: Vec<Option<Sample>> = variants.iter().map(|_| None).collect();
        for step in 0..variants.len() {
            let index = (step + round) % variants.len();
            let variant = &variants[index];
            let sample = bench_common::run(concurrency, run, &variant.client, harness::hello)
                .await
                .with_context(|| format!("{} at {concurrency} in flight", variant.name))?;
            eprintln!(
                "in flight {concurrency:>3}  round {}/{rounds}  {:<14} {:>9.0} req/s  p50 {:>8.1} us  p99 {:>8.1} us",
                round + 1,
                variant.name,
                sample.throughput(),
                sample.quantile_us(0.50),
                sample.quantile_us(0.99),
            );
            totals[index].0.merge(&sample)?;
            this_round[index] = Some(sample);
        }
        if let Some(Some(base)) = this_round.first() {
            for (index, sample) in this_round.iter().enumerate().skip(1) {
                if let Some(sample) = sample {
                    totals[index].1.push(Ratios::of(sample, base));
                }
            }
        }
    }
    Ok(Row {
        concurrency,
        variants: variants
            .iter()
            .zip(totals)
            .map(|(v, (sample, ratios))| (v.name.clone(), sample, ratios))
            .collect(),
    })
}

fn markdown(rows: &[Row], args: &Args) -> String {
    let mut out = String::new();
    let settings = if args.smoke {
        format!("smoke run: {SMOKE_CALLS} calls per variant and concurrency (not a measurement)")
    } else {
        format!(
            "{} rounds x {} s per variant and concurrency, order rotated each round, after {} s warm-up",
            args.rounds, args.duration, args.warmup
        )
    };
    let _ = writeln!(
        out,
        "Unary `Greeter.Hello` over loopback, wrappers on server and client; {settings}.\n"
    );
    out.push_str(
        "| in flight | wrappers | req/s | p50 µs | p99 µs | throughput ratio | throughput cost | p99 ratio |\n\
         |---:|---|---:|---:|---:|---:|---:|---:|\n",
    );
    for row in rows {
        for (name, sample, ratios) in &row.variants {
            let spreads = (
                Spread::of(ratios.iter().map(|r| r.throughput)),
                Spread::of(ratios.iter().map(|r| r.p99)),
            );
            let (throughput, cost, p99) = if let (Some(tp), Some(p99)) = spreads {
                let target = if name == DEFAULT_STACKS[0] && !args.smoke {
                    format!(" {}", mark(1.0 - tp.median < MAX_COST))
                } else {
                    String::new()
                };
                (
                    format!("{:.3}x [{:.2}, {:.2}]", tp.median, tp.min, tp.max),
                    format!("{:.1}%{target}", (1.0 - tp.median) * 100.0),
                    p99.to_string(),
                )
            } else {
                ("1".to_string(), "-".to_string(), "1".to_string())
            };
            let _ = writeln!(
                out,
                "| {} | {name} | {:.0} | {:.1} | {:.1} | {throughput} | {cost} | {p99} |",
                row.concurrency,
                sample.throughput(),
                sample.quantile_us(0.50),
                sample.quantile_us(0.99),
            );
        }
    }
    let _ = writeln!(
        out,
        "\nRatios are wrapped / none: the median over rounds of each round's pair \
         [min, max]. Target: `{}` costs under {:.0}% of throughput (✓ met, ✗ missed).",
        DEFAULT_STACKS[0],
        MAX_COST * 100.0
    );
    out
}
