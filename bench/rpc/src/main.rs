//! `bench-rpc`: unary `Greeter.Hello` round trips over loopback, micro client ->
//! micro server versus a plain tonic client -> tonic server built from the same proto.
//!
//! Method:
//! - One process, two tokio multi-thread runtimes of one worker each: the servers
//!   run on one, the clients on the other, so on a 2-core machine each side gets a
//!   core and both stacks get exactly the same runtime setup. (Separate processes
//!   would add nothing the runtimes do not already isolate, and one binary keeps the
//!   bench self-contained and bounded.)
//! - Both servers listen on 127.0.0.1 for the whole run; each client holds one
//!   HTTP/2 connection (tonic's `Channel`; micro's pool keeps one per address).
//! - For each concurrency `c`, `c` tasks share the client and call back to back.
//!   After a warm-up of each stack, rounds alternate micro and tonic, the order
//!   swapped every round, to cancel drift of a shared noisy machine.
//! - Every answer is checked to be `Hello John`; latencies go into HDR histograms,
//!   merged over rounds into throughput (calls / wall time), p50 and p99. The
//!   ratios of each round's back-to-back pair are also shown (median and range), as
//!   a measure of how much of a gap is noise.
//!
//! The targets (micro >= 0.9x tonic's throughput, p99 no worse) are reported as
//! ratios, never asserted. `--smoke` is a quick correctness run for CI; `--only`
//! loads one client -> server pair (crossed pairs too) for a profiler.

mod harness;
mod micro_side;
mod report;
mod tonic_side;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{ensure, Context as _};
use bench_common::{runtime, Limit, Ratios, Sample};
use clap::Parser;
use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use tokio::sync::watch;

use harness::{Caller, System};
use report::Row;

/// Unary RPC benchmark: micro versus tonic, same messages, same concurrency.
#[derive(Debug, Parser)]
#[command(name = "bench-rpc")]
struct Args {
    /// Seconds each measured round lasts, per system.
    #[arg(long, default_value_t = 2.0)]
    duration: f64,
    /// Measured rounds per system and concurrency (order swapped each round).
    #[arg(long, default_value_t = 6)]
    rounds: u32,
    /// Seconds of warm-up per system before the rounds of each concurrency.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Calls in flight, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,16,128")]
    concurrency: Vec<usize>,
    /// Quick correctness run: 200 checked calls per system and concurrency.
    #[arg(long)]
    smoke: bool,
    /// Also write the markdown table to this file.
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// Load only this client -> server pair, for a profiler to watch; prints no
    /// table. The crossed pairs tell whether a gap is in micro's client or server.
    #[arg(long, value_enum)]
    only: Option<Only>,
}

/// Which client calls which server under `--only`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Only {
    Micro,
    Tonic,
    MicroToTonic,
    TonicToMicro,
}

const SMOKE_CALLS: u64 = 200;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(
        args.concurrency.iter().all(|&c| c > 0),
        "concurrency must be positive"
    );
    ensure!(args.rounds > 0, "rounds must be positive");
    let server_rt = runtime("bench-server")?;
    let client_rt = runtime("bench-client")?;

    let (stop, stopped) = watch::channel(false);
    let (micro_addr, micro_server) = spawn_server(&server_rt, System::Micro, stopped.clone())?;
    let (tonic_addr, tonic_server) = spawn_server(&server_rt, System::Tonic, stopped)?;

    let result = client_rt.block_on(async {
        let micro = Caller::Micro(micro_side::connect(&micro_addr));
        let tonic = Caller::Tonic(tonic_side::connect(&tonic_addr).await?);
        if args.smoke {
            check_rejects_empty_name(&micro).await?;
            check_rejects_empty_name(&tonic).await?;
        }
        if let Some(only) = args.only {
            let caller = match only {
                Only::Micro => micro.clone(),
                Only::Tonic => tonic.clone(),
                Only::MicroToTonic => Caller::Micro(micro_side::connect(&tonic_addr)),
                Only::TonicToMicro => Caller::Tonic(tonic_side::connect(&micro_addr).await?),
            };
            for &concurrency in &args.concurrency {
                profile(&args, only, &caller, concurrency).await?;
            }
            return anyhow::Ok(Vec::new());
        }
        let mut rows = Vec::new();
        for &concurrency in &args.concurrency {
            rows.push(measure(&args, concurrency, &micro, &tonic).await?);
        }
        anyhow::Ok(rows)
    });

    let _ = stop.send(true);
    for server in [micro_server, tonic_server] {
        match server_rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(5), server).await })
        {
            Ok(joined) => joined??,
            Err(_) => eprintln!("warning: a server did not stop within 5 s"),
        }
    }
    client_rt.shutdown_timeout(Duration::from_secs(1));
    server_rt.shutdown_timeout(Duration::from_secs(1));

    let rows = result?;
    if args.only.is_some() {
        return Ok(());
    }
    let table = report::markdown(&rows, &settings(&args));
    print!("{table}");
    if let Some(path) = &args.markdown {
        std::fs::write(path, &table).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

type ServerTask = tokio::task::JoinHandle<anyhow::Result<()>>;

/// Binds 127.0.0.1 on a free port and serves `system` on `rt` until `stopped`.
fn spawn_server(
    rt: &Runtime,
    system: System,
    mut stopped: watch::Receiver<bool>,
) -> anyhow::Result<(String, ServerTask)> {
    let listener = rt.block_on(TcpListener::bind("127.0.0.1:0"))?;
    let address = listener.local_addr()?.to_string();
    let shutdown = async move {
        let _ = stopped.wait_for(|&stop| stop).await;
    };
    let task = match system {
        System::Micro => rt.spawn(micro_side::serve(listener, shutdown)),
        System::Tonic => rt.spawn(tonic_side::serve(listener, shutdown)),
    };
    Ok((address, task))
}

/// Both stacks must turn an empty name away, as the greeter does.
async fn check_rejects_empty_name(caller: &Caller) -> anyhow::Result<()> {
    let answer = caller.clone().hello("").await;
    ensure!(answer.is_err(), "an empty name was answered: {answer:?}");
    Ok(())
}

/// Warms up both stacks at `concurrency`, then alternates measured rounds.
async fn measure(
    args: &Args,
    concurrency: usize,
    micro: &Caller,
    tonic: &Caller,
) -> anyhow::Result<Row> {
    let (warmup, round, rounds) = if args.smoke {
        (Limit::Calls(20), Limit::Calls(SMOKE_CALLS), 1)
    } else {
        (
            Limit::For(Duration::from_secs_f64(args.warmup)),
            Limit::For(Duration::from_secs_f64(args.duration)),
            args.rounds,
        )
    };
    for caller in [micro, tonic] {
        bench_common::run(concurrency, warmup, caller, harness::hello).await?;
    }
    let (mut micro_total, mut tonic_total) = (Sample::new()?, Sample::new()?);
    let mut paired = Vec::new();
    for index in 0..rounds {
        let order = if index % 2 == 0 {
            [System::Micro, System::Tonic]
        } else {
            [System::Tonic, System::Micro]
        };
        let (mut micro_round, mut tonic_round) = (None, None);
        for system in order {
            let (caller, total, this_round) = match system {
                System::Micro => (micro, &mut micro_total, &mut micro_round),
                System::Tonic => (tonic, &mut tonic_total, &mut tonic_round),
            };
            let sample = bench_common::run(concurrency, round, caller, harness::hello)
                .await
                .with_context(|| format!("{system} at {concurrency} in flight"))?;
            eprintln!(
                "in flight {concurrency:>3}  round {}/{rounds}  {system}: {:>9.0} req/s  p50 {:>8.1} us  p99 {:>8.1} us",
                index + 1,
                sample.throughput(),
                sample.quantile_us(0.50),
                sample.quantile_us(0.99),
            );
            total.merge(&sample)?;
            *this_round = Some(sample);
        }
        if let (Some(m), Some(t)) = (micro_round, tonic_round) {
            paired.push(Ratios::of(&m, &t));
        }
    }
    Ok(Row {
        concurrency,
        micro: micro_total,
        tonic: tonic_total,
        paired,
    })
}

/// Loads one stack alone for `rounds x duration`, for a profiler to watch.
async fn profile(
    args: &Args,
    only: Only,
    caller: &Caller,
    concurrency: usize,
) -> anyhow::Result<()> {
    let seconds = args.duration * f64::from(args.rounds);
    let sample = bench_common::run(
        concurrency,
        Limit::For(Duration::from_secs_f64(seconds)),
        caller,
        harness::hello,
    )
    .await?;
    eprint!(
        "in flight {concurrency:>3}  {only:?} alone: {:>9.0} req/s ",
        sample.throughput()
    );
    for q in [0.5, 0.9, 0.99, 0.999, 1.0] {
        eprint!(" p{} {:.1} us", q * 100.0, sample.quantile_us(q));
    }
    eprintln!();
    Ok(())
}

fn settings(args: &Args) -> String {
    if args.smoke {
        format!("smoke run: {SMOKE_CALLS} calls per system and concurrency (not a measurement)")
    } else {
        format!(
            "{} rounds x {} s per system and concurrency, alternating, after {} s warm-up",
            args.rounds, args.duration, args.warmup
        )
    }
}
