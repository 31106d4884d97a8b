//! `bench-registry-etcd`: how fast the etcd registry tells a client on one host
//! about nodes that come and go on another.
//!
//! 1. **Appearance**: time from the start of a node's `register` on host `a`
//!    (through etcd member 1) to the first selection of that node by a
//!    `CacheSelector` on host `b` (through etcd member 2), which follows the
//!    service by its registry watch. Target: p99 under 100 ms.
//! 2. **Removal**: time from `kill -9` of a node process on host `a` (which
//!    registered with `--ttl` and renewed every `--interval`, as a service does)
//!    to the moment the selector on host `b` no longer selects it. Target: within
//!    TTL + 1 s.
//!
//! Split: one binary, four roles. The **driver** (no `--role`) runs the trials and
//! prints the tables; it starts the other roles as child processes on the hosts
//! and talks to them over their stdin/stdout, one line per command or event, each
//! event stamped with the wall clock (`SystemTime`, the same clock for every
//! process of the machine, whatever its network namespace). The **watcher** (host
//! `b`) holds the selector and reports when a node appears in or leaves its
//! selection (polling the cache every millisecond: a selection from the cache
//! costs ~100 ns); the **registrar** (host `a`) registers and deregisters nodes on
//! command; a **node** (host `a`, one process per removal trial) registers one node
//! and renews it until it is killed.
//!
//! Hosts and etcd: the cluster harness of the tests (`tests/cluster/harness.py`)
//! builds them — network namespaces joined by a bridge where allowed (root),
//! distinct loopback addresses otherwise — with a 3-member etcd cluster, and runs
//! the driver with `MICRO_CLUSTER_TOPOLOGY` describing them. Started without that
//! variable, the driver runs itself under the harness (`python3`), so there is
//! one copy of the host plumbing, shared with the tests.

mod driver;
mod roles;

use std::time::Duration;

use clap::{Parser, ValueEnum};

/// etcd registry benchmark: registration-to-selection and death-to-removal
/// times across hosts.
#[derive(Debug, Parser)]
#[command(name = "bench-registry-etcd")]
pub struct Args {
    /// CI: a few trials of each kind with a 2 s TTL; checks the harness.
    #[arg(long)]
    pub smoke: bool,
    /// Appearance trials (registration to first selection).
    #[arg(long, default_value_t = 200)]
    pub trials: usize,
    /// Removal trials (kill -9 to removal from the selection).
    #[arg(long, default_value_t = 50)]
    pub removal_trials: usize,
    /// Node processes alive at once in the removal trials; they are killed one
    /// after another, spread over one renewal interval.
    #[arg(long, default_value_t = 10)]
    pub batch: usize,
    /// The nodes' registration TTL in seconds (etcd leases are whole seconds;
    /// etcd raises a TTL below 2 s to 2 s).
    #[arg(long, default_value_t = 5)]
    pub ttl: u64,
    /// How often a node renews its registration, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub interval_ms: u64,
    /// Hosts as loopback addresses even where network namespaces are allowed.
    #[arg(long)]
    pub loopback: bool,
    /// Internal: the role of this process (the driver starts the others).
    #[arg(long, value_enum, hide = true)]
    pub role: Option<Role>,
    /// Internal: the etcd member a role talks to.
    #[arg(long, hide = true)]
    pub etcd: Option<String>,
    /// Internal: the trial number of a `node` role.
    #[arg(long, hide = true)]
    pub trial: Option<u64>,
}

impl Args {
    pub fn ttl(&self) -> Duration {
        Duration::from_secs(self.ttl)
    }

    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }
}

/// What a process of the bench does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// Follows the service with a selector; reports nodes appearing and leaving.
    Watcher,
    /// Registers and deregisters nodes on command.
    Registrar,
    /// Registers one node and renews it until killed.
    Node,
}

fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if args.smoke {
        args.trials = 5;
        args.removal_trials = 3;
        args.batch = 3;
        args.ttl = 2;
        args.interval_ms = 500;
    }
    anyhow::ensure!(args.ttl >= 1, "--ttl must be at least 1 s");
    anyhow::ensure!(
        args.interval() < args.ttl() && args.interval_ms > 0,
        "--interval-ms must be above zero and below the TTL"
    );
    anyhow::ensure!(args.batch >= 1, "--batch must be at least 1");
    match args.role {
        Some(role) => {
            let etcd = args
                .etcd
                .clone()
                .ok_or_else(|| anyhow::anyhow!("--role needs --etcd"))?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()?;
            rt.block_on(roles::run(role, &etcd, &args))
        }
        None => driver::main(&args),
    }
}
