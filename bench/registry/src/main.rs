//! Selector benchmark.
//!
//! 1. Selection cost per call: a [`CacheSelector`] over a `MemoryRegistry` of 1, 100
//!    and 10,000 services x 10 nodes, for each strategy, in ns per selection (the
//!    median of several runs, each many selections after a warm-up). Selections go
//!    through the `Selector` trait with the options a client call passes (the
//!    endpoint filter on), cycling over every service.
//! 2. Time from a node's registration to its first selection by a running selector,
//!    p50 / p99, with the memory registry and with the local registry (a directory
//!    of node files, watched by polling) in a temporary directory, the new node
//!    registered through a second handle as another process would.
//!
//! Results print as markdown tables on stdout; progress goes to stderr.
//! `--smoke` runs a tiny version of everything (seconds, even in a debug build).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use clap::Parser;
use futures_util::FutureExt;
use micro::registry::{
    Endpoint, LocalRegistry, MemoryRegistry, Node, RegisterOptions, Registry, Service,
};
use micro::selector::{CacheSelector, SelectOptions, Selector, Strategy};

const ENDPOINT: &str = "Bench.Call";
const NODES_PER_SERVICE: usize = 10;
/// Services the skewed traffic pattern calls (of however many are cached).
const HOT: usize = 100;
const STRATEGIES: [Strategy; 3] = [
    Strategy::Random,
    Strategy::RoundRobin,
    Strategy::LeastOutstanding,
];

#[derive(Parser, Debug)]
#[command(about = "Selector benchmark: selection cost and time to select a new node")]
struct Args {
    /// A tiny run that checks the harness (CI), not a measurement.
    #[arg(long)]
    smoke: bool,
    /// Service counts to measure selection cost at.
    #[arg(long, value_delimiter = ',', default_value = "1,100,10000")]
    services: Vec<usize>,
    /// Selections per run.
    #[arg(long, default_value_t = 2_000_000)]
    iterations: u64,
    /// Runs per cell (the median is reported).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Trials of the time-to-select measurement per registry.
    #[arg(long, default_value_t = 50)]
    trials: usize,
}

fn main() -> Result<()> {
    let mut args = Args::parse();
    if args.smoke {
        args.services = vec![1, 100, 1000];
        args.iterations = 20_000;
        args.runs = 2;
        args.trials = 5;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

async fn run(args: Args) -> Result<()> {
    let mut cost = Vec::new();
    for &n in &args.services {
        let mut row = Vec::new();
        for strategy in STRATEGIES {
            eprintln!("selection cost: {n} services x {NODES_PER_SERVICE} nodes, {strategy}");
            row.push(selection_cost(n, strategy, n, args.iterations, args.runs).await?);
        }
        eprintln!("selection cost: {n} services x {NODES_PER_SERVICE} nodes, random, {HOT} hot");
        row.push(selection_cost(n, Strategy::Random, HOT, args.iterations, args.runs).await?);
        cost.push((n, row));
    }

    let mut visible = Vec::new();
    eprintln!("time to select a new node: memory registry");
    let memory: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    visible.push((
        "memory",
        time_to_select(memory.clone(), memory, args.trials).await?,
    ));
    eprintln!("time to select a new node: local registry (files, polled)");
    let dir = TempDir::new()?;
    let watcher: Arc<dyn Registry> = Arc::new(LocalRegistry::at(dir.path()));
    let other_process: Arc<dyn Registry> = Arc::new(LocalRegistry::at(dir.path()));
    visible.push((
        "local (temp dir)",
        time_to_select(watcher, other_process, args.trials).await?,
    ));

    println!(
        "### Selection cost per call (ns, median of {} runs)\n",
        args.runs
    );
    println!(
        "| services x 10 nodes | random | roundrobin | leastconn | random, calls to {HOT} of them |"
    );
    println!("|---:|---:|---:|---:|---:|");
    for (n, row) in &cost {
        let cells: Vec<String> = row.iter().map(|ns| format!("{ns:.0}")).collect();
        println!("| {n} | {} |", cells.join(" | "));
    }
    println!(
        "\n### Registration to first selection ({} trials)\n",
        args.trials
    );
    println!("| registry | p50 | p99 | max |");
    println!("|---|---:|---:|---:|");
    for (name, mut samples) in visible {
        samples.sort();
        println!(
            "| {name} | {} | {} | {} |",
            fmt(percentile(&samples, 0.50)),
            fmt(percentile(&samples, 0.99)),
            fmt(samples.last().copied().unwrap_or_default()),
        );
    }
    Ok(())
}

fn service(name: String, nodes: Vec<Node>) -> Service {
    Service {
        name,
        version: "latest".into(),
        endpoints: vec![Endpoint {
            name: ENDPOINT.into(),
            ..Default::default()
        }],
        nodes,
        ..Default::default()
    }
}

fn node(id: String, metadata: &[(&str, &str)]) -> Node {
    Node {
        address: format!("127.0.0.1:{}", 10_000 + id.len()),
        id,
        metadata: metadata
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

/// Median ns per selection over `runs` runs of `iterations` selections, with
/// `services` services cached and the calls cycling over `called` of them.
async fn selection_cost(
    services: usize,
    strategy: Strategy,
    called: usize,
    iterations: u64,
    runs: usize,
) -> Result<f64> {
    let registry = Arc::new(MemoryRegistry::new());
    let names: Vec<String> = (0..services).map(|i| format!("svc-{i}")).collect();
    for name in &names {
        let nodes = (0..NODES_PER_SERVICE)
            .map(|j| node(format!("{name}-{j}"), &[]))
            .collect();
        registry
            .register(&service(name.clone(), nodes), Default::default())
            .await?;
    }
    let selector = CacheSelector::new(registry, strategy);
    let opts = SelectOptions::new().endpoint(ENDPOINT);
    // Warm-up: the first selection of each service reads the registry.
    for name in &names {
        selector.select(name, opts).await?;
    }
    // Spread the called services over the whole set.
    let step = (services / called.clamp(1, services)).max(1);
    let called: Vec<&String> = names.iter().step_by(step).take(called).collect();
    let mut results = Vec::with_capacity(runs);
    for _ in 0..runs {
        let mut i = 0usize;
        let start = Instant::now();
        for _ in 0..iterations {
            let name = called[i];
            i += 1;
            if i == called.len() {
                i = 0;
            }
            let picked = selector
                .select(std::hint::black_box(name), opts)
                .now_or_never()
                .context("a cached selection had to wait")??;
            std::hint::black_box(&picked);
        }
        results.push(start.elapsed().as_nanos() as f64 / iterations as f64);
        // Let the watch task run between runs.
        tokio::task::yield_now().await;
    }
    results.sort_by(f64::total_cmp);
    Ok(results[results.len() / 2])
}

/// Times from registering a new node through `register_via` to its first
/// selection by a selector over `watch_via` that already follows the service.
async fn time_to_select(
    watch_via: Arc<dyn Registry>,
    register_via: Arc<dyn Registry>,
    trials: usize,
) -> Result<Vec<Duration>> {
    let base = service("fresh".into(), vec![node("fresh-base".into(), &[])]);
    register_via.register(&base, Default::default()).await?;
    let selector = CacheSelector::new(watch_via, Strategy::Random);
    selector.select("fresh", SelectOptions::new()).await?;
    // Give the watch (a poller, for the local registry) time to settle.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ttl = RegisterOptions {
        ttl: Duration::from_secs(60),
    };
    let mut samples = Vec::with_capacity(trials);
    for trial in 0..trials {
        let tag = trial.to_string();
        let filter = [("trial".to_string(), tag.clone())];
        let fresh = service(
            "fresh".into(),
            vec![node(format!("fresh-{trial}"), &[("trial", &tag)])],
        );
        let start = Instant::now();
        register_via.register(&fresh, ttl).await?;
        loop {
            match selector
                .select("fresh", SelectOptions::new().node_metadata(&filter))
                .await
            {
                Ok(_) => break,
                Err(e) if e.code() == 404 => {}
                Err(e) => bail!("selecting the new node: {e}"),
            }
            ensure!(
                start.elapsed() < Duration::from_secs(10),
                "the new node was not selected within 10 s"
            );
            if start.elapsed() < Duration::from_millis(2) {
                tokio::task::yield_now().await;
            } else {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        samples.push(start.elapsed());
        register_via.deregister(&fresh).await?;
        // Start the next trial at a random point of the poll cycle.
        tokio::time::sleep(Duration::from_millis(7 + (trial as u64 * 37) % 50)).await;
    }
    register_via.deregister(&base).await?;
    Ok(samples)
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn fmt(d: Duration) -> String {
    if d < Duration::from_millis(1) {
        format!("{:.0} µs", d.as_secs_f64() * 1e6)
    } else {
        format!("{:.1} ms", d.as_secs_f64() * 1e3)
    }
}

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let path = std::env::temp_dir().join(format!(
            "micro-bench-registry-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(TempDir(path))
    }

    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
