//! `bench-proxy`: the latency one micro proxy hop adds, caller -> proxy ->
//! greeter versus caller -> greeter in the same run, and the proxy's memory.
//!
//! Method:
//! - The proxy runs in a child process (this binary with `--serve-proxy`): the
//!   proxy assembly of `micro proxy` (`micro_cli::proxy::Proxy`) over a memory
//!   registry, broker and config store, on a default multi-thread runtime as
//!   `micro proxy` uses. Its RSS is read from `/proc/<pid>/status` (`VmRSS` after
//!   the run, `VmHWM` the peak).
//! - In this process, two tokio runtimes of one worker each: the greeter
//!   (`micro::server::Server` with the generated `GreeterServer`) on one, the
//!   callers on the other. The greeter is registered in the proxy's registry
//!   through its Registry API (`MICRO_REGISTRY=service` at the proxy).
//! - Direct: a `GreeterClient` pinned to the greeter's address. Through the proxy:
//!   a `GreeterClient` over a client in proxy mode (`ClientBuilder::proxy`, what
//!   `MICRO_PROXY` sets), which sends every call to the proxy with
//!   `micro-service: greeter`.
//! - Two loads: paced (one call started every 1/rate s, each in its own task, so
//!   a slow answer does not delay the next start) and saturated (`concurrency`
//!   tasks calling back to back). Rounds alternate direct and proxy, the order
//!   swapped each round; the p50 and p99 of all rounds are compared.
//!
//! Targets (reported, never asserted): p50 added < 100 µs, p99 added < 1 ms,
//! proxy RSS < 30 MiB.

use std::io::BufRead as _;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use bench_common::{mark, new_histogram, runtime, us};
use clap::Parser;
use greeter::proto::HelloRequest;
use hdrhistogram::Histogram;
use tokio::time::Instant;

type Client = greeter::GreeterClient;

/// Proxy-hop benchmark.
#[derive(Debug, Parser)]
#[command(name = "bench-proxy")]
struct Args {
    /// Seconds of each measured run (per path, per round).
    #[arg(long, default_value_t = 2.0)]
    duration: f64,
    /// Rounds per load (each runs direct and proxy once).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Calls started per second in the paced load.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Calls in flight in the saturated load.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// CI: a few hundred checked calls per path and load, no table.
    #[arg(long)]
    smoke: bool,
    /// Internal: serve the proxy on a free loopback port, print it, run until
    /// stdin closes.
    #[arg(long, hide = true)]
    serve_proxy: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.serve_proxy {
        return serve_proxy();
    }
    let (mut child, proxy) = spawn_proxy()?;
    let result = bench(&args, &proxy, child.id());
    let _ = child.kill();
    let _ = child.wait();
    result
}

/// The child: the proxy over memory engines until its stdin closes.
fn serve_proxy() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let proxy = micro_cli::proxy::Proxy::new(
            Arc::new(micro::registry::MemoryRegistry::new()),
            Arc::new(micro::broker::MemoryBroker::new()),
            Arc::new(micro::config::MemorySource::new("store")),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("{}", listener.local_addr()?);
        // The parent holds our stdin; when it goes, so do we.
        let parent_gone = tokio::task::spawn_blocking(|| {
            let _ = std::io::stdin().lines().count();
        });
        proxy
            .serve(listener, async {
                let _ = parent_gone.await;
            })
            .await?;
        anyhow::Ok(())
    })
}

fn spawn_proxy() -> anyhow::Result<(Child, String)> {
    let mut child = Command::new(std::env::current_exe()?)
        .arg("--serve-proxy")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the proxy child")?;
    let stdout = child.stdout.take().context("the child's stdout")?;
    let mut line = String::new();
    std::io::BufReader::new(stdout).read_line(&mut line)?;
    let address = line.trim().to_string();
    if address.is_empty() {
        let _ = child.kill();
        bail!("the proxy child printed no address");
    }
    Ok((child, address))
}

/// `VmRSS` and `VmHWM` of `pid`, in MiB.
fn rss_mib(pid: u32) -> anyhow::Result<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> anyhow::Result<f64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .with_context(|| format!("no {name} in /proc/{pid}/status"))?;
        let kib: f64 = line
            .split_whitespace()
            .nth(1)
            .context("VmRSS value")?
            .parse()?;
        Ok(kib / 1024.0)
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

fn bench(args: &Args, proxy: &str, pid: u32) -> anyhow::Result<()> {
    let servers = runtime("greeter")?;
    let callers = runtime("callers")?;
    let greeter = servers.block_on(async {
        let server = micro::server::Server::new(greeter::SERVICE_NAME)
            .handler(greeter::GreeterServer::new(greeter::Greeter::default()));
        let endpoints = server.endpoints()?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?.to_string();
        tokio::spawn(server.serve(listener, std::future::pending::<()>()));
        anyhow::Ok((address, endpoints))
    })?;
    let (address, endpoints) = greeter;
    let (direct, via_proxy) = callers.block_on(async {
        let registry = micro::registry::from_name(
            "service",
            &[proxy.to_string()],
            micro::registry::Ownership::Detached,
        )?;
        let record = micro::registry::Service {
            name: greeter::SERVICE_NAME.into(),
            version: "latest".into(),
            endpoints,
            nodes: vec![micro::registry::Node {
                id: "greeter-1".into(),
                address: address.clone(),
                ..Default::default()
            }],
            ..Default::default()
        };
        registry.register(&record, Default::default()).await?;
        let direct = Client::new(greeter::SERVICE_NAME, micro::Client::builder().build())
            .with_options(micro::client::CallOptions::default().address(address));
        let via_proxy = Client::new(
            greeter::SERVICE_NAME,
            micro::Client::builder().proxy(proxy).build(),
        );
        anyhow::Ok((direct, via_proxy))
    })?;
    let (rss_idle, _) = rss_mib(pid)?;

    let (duration, rounds) = if args.smoke {
        (Duration::from_millis(200), 1)
    } else {
        (Duration::from_secs_f64(args.duration), args.rounds)
    };
    let loads = [Load::Paced(args.rate), Load::Saturated(args.concurrency)];
    let mut rows = Vec::new();
    for load in loads {
        // Warm-up: connections open, the proxy's endpoint cache filled.
        for client in [&direct, &via_proxy] {
            callers.block_on(load.run(client, duration.min(Duration::from_millis(500))))?;
        }
        let mut sums = [new_histogram()?, new_histogram()?];
        for round in 0..rounds {
            let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for i in order {
                let client = if i == 0 { &direct } else { &via_proxy };
                let h = callers.block_on(load.run(client, duration))?;
                eprintln!(
                    "{} {} round {}: {} calls, p50 {:.1} µs",
                    load.name(),
                    ["direct", "proxy"][i],
                    round + 1,
                    h.len(),
                    us(&h, 0.5)
                );
                sums[i].add(&h)?;
            }
        }
        rows.push((load, sums));
    }
    let (rss, hwm) = rss_mib(pid)?;
    if args.smoke {
        println!(
            "bench-proxy smoke: ok ({} checked calls, proxy RSS {rss:.1} MiB)",
            rows.iter()
                .map(|(_, s)| s[0].len() + s[1].len())
                .sum::<u64>()
        );
        return Ok(());
    }
    println!(
        "Unary `Greeter.Hello` over loopback; {rounds} rounds x {:.0} s per path and load, alternating, after a warm-up.\n",
        duration.as_secs_f64()
    );
    println!("| load | direct p50 µs | proxy p50 µs | p50 added µs | direct p99 µs | proxy p99 µs | p99 added µs |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (load, [d, p]) in &rows {
        let p50 = us(p, 0.5) - us(d, 0.5);
        let p99 = us(p, 0.99) - us(d, 0.99);
        println!(
            "| {} | {:.1} | {:.1} | {p50:.1} {} | {:.1} | {:.1} | {p99:.1} {} |",
            load.name(),
            us(d, 0.5),
            us(p, 0.5),
            mark(p50 < 100.0),
            us(d, 0.99),
            us(p, 0.99),
            mark(p99 < 1000.0),
        );
    }
    println!(
        "\nProxy RSS (child process, /proc/<pid>/status): {rss_idle:.1} MiB before the load, {rss:.1} MiB after, peak (VmHWM) {hwm:.1} MiB {}.",
        mark(hwm < 30.0)
    );
    println!("\nTargets: p50 added < 100 µs, p99 added < 1000 µs, RSS < 30 MiB (✓ met, ✗ missed).");
    Ok(())
}

#[derive(Debug, Clone, Copy)]
enum Load {
    /// This many calls started per second.
    Paced(u64),
    /// This many calls in flight.
    Saturated(usize),
}

impl Load {
    fn name(&self) -> String {
        match self {
            Load::Paced(rate) => format!("{rate} req/s paced"),
            Load::Saturated(n) => format!("saturated, {n} in flight"),
        }
    }

    async fn run(&self, client: &Client, duration: Duration) -> anyhow::Result<Histogram<u64>> {
        let start = Instant::now();
        let mut tasks = Vec::new();
        match *self {
            Load::Paced(rate) => {
                let gap = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
                let mut next = start;
                while next < start + duration {
                    tokio::time::sleep_until(next).await;
                    let client = client.clone();
                    tasks.push(tokio::spawn(async move {
                        let mut h = new_histogram()?;
                        call(&client, &mut h).await?;
                        anyhow::Ok(h)
                    }));
                    next += gap;
                }
            }
            Load::Saturated(n) => {
                for _ in 0..n {
                    let client = client.clone();
                    tasks.push(tokio::spawn(async move {
                        let mut h = new_histogram()?;
                        while start.elapsed() < duration {
                            call(&client, &mut h).await?;
                        }
                        anyhow::Ok(h)
                    }));
                }
            }
        }
        let mut sum = new_histogram()?;
        for task in tasks {
            sum.add(&task.await??)?;
        }
        Ok(sum)
    }
}

/// One checked call, its latency recorded.
async fn call(client: &Client, h: &mut Histogram<u64>) -> anyhow::Result<()> {
    let started = Instant::now();
    let answer = client
        .hello(HelloRequest {
            name: "John".into(),
        })
        .await;
    let took = started.elapsed();
    match answer {
        Ok(rsp) if rsp.message == "Hello John" => {}
        Ok(rsp) => bail!("wrong answer {:?}", rsp.message),
        Err(err) => bail!("call failed: {} {}", err.code(), err.detail()),
    }
    h.saturating_record(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX));
    Ok(())
}
