//! `bench-gateway`: JSON `POST /greeter/hello` through `micro api`, versus nginx
//! reverse-proxying to the greeter's own JSON endpoint, versus the greeter
//! called directly — all three in one run, loaded by wrk.
//!
//! Method:
//! - The real binaries: `greeter` and `micro` from this binary's own
//!   `target/<profile>/`, Debian's `nginx` and `wrk`. The greeter and `micro
//!   api` share a registry in the run's temp dir (`MICRO_REGISTRY_ADDRESS`, mDNS
//!   off), so nothing else on the machine is seen or disturbed.
//! - Three targets on 127.0.0.1: the greeter (`POST /greeter.Greeter/Hello`,
//!   `Content-Type: application/json`), nginx (`POST /greeter/hello` rewritten to
//!   that path, see `nginx.rs`) and `micro api` (`POST /greeter/hello`, routed to
//!   `Greeter.Hello` of the registered `greeter`).
//! - Each target is first checked with one call; then, per connection count
//!   (`--connections`, default 1 and 16), a warm-up of each and the rounds: in
//!   each, every target runs once for `--duration` s with the same wrk threads
//!   and connections, the order rotated each round to spread drift.
//!   Every answer must be `200 {"message":"Hello John"}`; any other answer or a
//!   socket error fails the run.
//!
//! Targets (reported, never asserted): micro api's throughput at least nginx's,
//! and its added p99 (over the direct call) no worse than nginx's.

mod child;
mod nginx;
mod probe;
mod report;
mod wrk;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;

use child::Proc;

/// API gateway benchmark: micro api versus nginx versus direct, with wrk.
#[derive(Debug, Parser)]
#[command(name = "bench-gateway")]
struct Args {
    /// Seconds of each measured wrk run (per target, per round).
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Rounds; each runs every target once.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// wrk connections, each with one request in flight; a comma-separated list
    /// gives one table per count. 1: the latency of the path alone; 16: the
    /// machine saturated, throughput.
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    connections: Vec<usize>,
    /// wrk threads (at most the connection count).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Seconds of warm-up per target before the first round (0: none).
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Parallelism of both proxies: nginx's worker processes and micro api's
    /// worker threads (`--api_workers`). Default: one per core, the default of
    /// both.
    #[arg(long)]
    workers: Option<usize>,
    /// CI: one short round at low load; checks every target answers right.
    #[arg(long)]
    smoke: bool,
    /// The `micro` binary (default: next to this one, in target/<profile>/).
    #[arg(long)]
    micro: Option<PathBuf>,
    /// The `greeter` binary (default: next to this one).
    #[arg(long)]
    greeter: Option<PathBuf>,
    /// The nginx binary (default: `nginx` on PATH, else /usr/sbin/nginx).
    #[arg(long)]
    nginx: Option<PathBuf>,
    /// The wrk binary.
    #[arg(long, default_value = "wrk")]
    wrk: PathBuf,
}

/// What is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The greeter's own JSON endpoint.
    Direct,
    /// nginx -> greeter.
    Nginx,
    /// micro api -> greeter.
    MicroApi,
}

impl Target {
    /// Every target, in the order of the first round and of the table.
    pub const ALL: [Target; 3] = [Target::Direct, Target::Nginx, Target::MicroApi];

    /// Its row in the table.
    pub fn label(self) -> &'static str {
        match self {
            Target::Direct => "greeter direct",
            Target::Nginx => "nginx → greeter",
            Target::MicroApi => "micro api → greeter",
        }
    }
}

fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if args.smoke {
        args.duration = 1;
        args.rounds = 1;
        args.connections = vec![2];
        args.threads = 1;
        args.warmup = 0;
    }
    anyhow::ensure!(args.rounds > 0, "--rounds must be at least 1");
    anyhow::ensure!(args.duration > 0, "--duration must be at least 1 s");
    anyhow::ensure!(args.threads > 0, "--threads must be at least 1");
    anyhow::ensure!(
        !args.connections.is_empty() && !args.connections.contains(&0),
        "--connections must name counts of at least 1"
    );
    let tables = bench(&args)?;
    println!("{tables}");
    if args.smoke {
        eprintln!("smoke: every target answered 200 with the greeting (the numbers mean nothing)");
    }
    Ok(())
}

/// The three targets up and checked; their processes stop when this is dropped
/// (nginx first, the greeter last).
#[derive(Debug)]
struct Servers {
    nginx: Proc,
    api: Proc,
    greeter: Proc,
    greeter_port: u16,
    nginx_port: u16,
    api_port: u16,
}

impl Servers {
    fn url(&self, target: Target) -> String {
        match target {
            Target::Direct => format!(
                "http://127.0.0.1:{}/greeter.Greeter/Hello",
                self.greeter_port
            ),
            Target::Nginx => format!("http://127.0.0.1:{}/greeter/hello", self.nginx_port),
            Target::MicroApi => format!("http://127.0.0.1:{}/greeter/hello", self.api_port),
        }
    }

    fn hop(&self, target: Target) -> Option<&Proc> {
        match target {
            Target::Direct => None,
            Target::Nginx => Some(&self.nginx),
            Target::MicroApi => Some(&self.api),
        }
    }

    fn check_running(&mut self) -> anyhow::Result<()> {
        self.greeter.check_running()?;
        self.api.check_running()?;
        self.nginx.check_running()
    }
}

fn bench(args: &Args) -> anyhow::Result<String> {
    let bin_dir = std::env::current_exe()?
        .parent()
        .context("this binary's directory")?
        .to_path_buf();
    let micro = binary(args.micro.as_deref(), &bin_dir, "micro", "micro-cli")?;
    let greeter = binary(args.greeter.as_deref(), &bin_dir, "greeter", "greeter")?;
    let nginx_bin = nginx::binary(args.nginx.as_deref())?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = args.workers.unwrap_or(cores).max(1);

    let tmp = tempfile::Builder::new()
        .prefix("bench-gateway-")
        .tempdir()?;
    let dir = tmp.path();
    let registry = dir.join("registry");
    std::fs::create_dir_all(&registry)?;
    let script = wrk::write_script(dir)?;
    let most = args.connections.iter().copied().max().unwrap_or(1);
    let mut servers = start(&micro, &greeter, &nginx_bin, workers, most, &registry, dir)?;
    eprintln!(
        "pids: greeter {}, micro api {}, nginx master {} (for perf -p)",
        servers.greeter.pid(),
        servers.api.pid(),
        servers.nginx.pid()
    );
    let load_before = load_average();
    let mut tables = String::new();
    for &connections in &args.connections {
        let load = wrk::Load {
            wrk: args.wrk.clone(),
            script: script.clone(),
            // wrk wants at least one connection per thread.
            threads: args.threads.min(connections),
            connections,
            seconds: args.duration,
        };
        let rounds = measure(args, &mut servers, &load)?;
        let setup = report::Setup {
            threads: load.threads,
            connections,
            rounds: args.rounds,
            seconds: args.duration,
            warmup: args.warmup,
            workers,
            cores,
        };
        tables.push_str(&report::markdown(&setup, &rounds));
        tables.push('\n');
    }
    servers.check_running()?;
    let load_after = load_average();
    drop(servers);
    tables.push_str(&format!(
        "Load average (1, 5, 15 min) before the runs: {load_before}; after: {load_after}.\n"
    ));
    Ok(tables)
}

/// Warm-up, then the rounds of `load` against every target: `rounds[r]` holds
/// round `r`'s runs.
fn measure(
    args: &Args,
    servers: &mut Servers,
    load: &wrk::Load,
) -> anyhow::Result<Vec<Vec<report::Run>>> {
    let ticks = child::clock_ticks_per_second();
    let c = load.connections;
    if args.warmup > 0 {
        let warm = wrk::Load {
            seconds: args.warmup,
            ..load.clone()
        };
        for target in Target::ALL {
            eprintln!("c={c} warm-up {} ({} s)", target.label(), args.warmup);
            wrk::run(&warm, &servers.url(target))?;
        }
    }
    let mut rounds = Vec::with_capacity(args.rounds);
    for round in 0..args.rounds {
        let mut runs = Vec::with_capacity(Target::ALL.len());
        for i in 0..Target::ALL.len() {
            let target = Target::ALL[(i + round) % Target::ALL.len()];
            servers.check_running()?;
            let greeter_before = servers.greeter.cpu_ticks();
            let hop_before = servers.hop(target).map_or(0, Proc::cpu_ticks);
            let outcome = wrk::run(load, &servers.url(target))?;
            let greeter_cpu = (servers.greeter.cpu_ticks() - greeter_before) as f64 / ticks;
            let hop_cpu = servers
                .hop(target)
                .map_or(0, |p| p.cpu_ticks().saturating_sub(hop_before))
                as f64
                / ticks;
            eprintln!(
                "c={c} round {}/{} {:<20} {:>8.0} req/s  p50 {:>6} µs  p90 {:>6} µs  p99 {:>6} µs  max {:>7} µs",
                round + 1,
                args.rounds,
                target.label(),
                outcome.rate(),
                outcome.p50_us,
                outcome.p90_us,
                outcome.p99_us,
                outcome.max_us
            );
            runs.push(report::Run {
                target,
                outcome,
                greeter_cpu,
                hop_cpu,
            });
        }
        rounds.push(runs);
    }
    Ok(rounds)
}

/// Starts the greeter, `micro api` and nginx, each checked with one call.
fn start(
    micro: &Path,
    greeter: &Path,
    nginx_bin: &Path,
    workers: usize,
    connections: usize,
    registry: &Path,
    dir: &Path,
) -> anyhow::Result<Servers> {
    let ready_within = Duration::from_secs(20);
    // Both micro processes share the run's own registry; mDNS off, logs at
    // warn: no access log line per request (nginx has `access_log off`).
    let micro_env = |cmd: &mut std::process::Command| {
        cmd.env("MICRO_REGISTRY_ADDRESS", registry)
            .env("MICRO_MDNS_INTERFACES", "none")
            .env("MICRO_LOG", "warn")
            .env("RUST_LOG", "warn");
    };

    let greeter_port = probe::free_port()?;
    let mut cmd = child::clean_command(greeter);
    cmd.arg("--server_address")
        .arg(format!("127.0.0.1:{greeter_port}"));
    micro_env(&mut cmd);
    eprintln!("starting greeter on 127.0.0.1:{greeter_port}");
    let mut greeter = Proc::spawn("greeter", cmd, &dir.join("greeter.log"))?;
    probe::wait_ready(
        &mut greeter,
        greeter_port,
        "/greeter.Greeter/Hello",
        ready_within,
    )?;

    let api_port = probe::free_port()?;
    let mut cmd = child::clean_command(micro);
    cmd.arg("api")
        .arg("--address")
        .arg(format!("127.0.0.1:{api_port}"));
    micro_env(&mut cmd);
    cmd.arg("--api_workers").arg(workers.to_string());
    eprintln!("starting micro api ({workers} worker threads) on 127.0.0.1:{api_port}");
    let mut api = Proc::spawn("micro api", cmd, &dir.join("micro-api.log"))?;
    // Ready once it has found the greeter in the registry and called it.
    probe::wait_ready(&mut api, api_port, "/greeter/hello", ready_within)?;

    let nginx_port = probe::free_port()?;
    let setup = nginx::Setup {
        workers,
        port: nginx_port,
        greeter_port,
        keepalive: connections.max(32),
    };
    eprintln!("starting nginx ({workers} worker processes) on 127.0.0.1:{nginx_port}");
    let nginx = nginx::start(nginx_bin, &setup, &dir.join("nginx"))?;

    Ok(Servers {
        nginx,
        api,
        greeter,
        greeter_port,
        nginx_port,
        api_port,
    })
}

/// `given`, or `name` in `bin_dir` (the bench's own target/<profile>/).
fn binary(
    given: Option<&Path>,
    bin_dir: &Path,
    name: &str,
    package: &str,
) -> anyhow::Result<PathBuf> {
    let path = given.map_or_else(|| bin_dir.join(name), Path::to_path_buf);
    anyhow::ensure!(
        path.is_file(),
        "{} not found: build it first (`cargo build{} -p {package}`) or pass --{name}",
        path.display(),
        if bin_dir.ends_with("release") {
            " --release"
        } else {
            ""
        },
    );
    Ok(path)
}

/// The 1, 5 and 15 minute load averages.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}
