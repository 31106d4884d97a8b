//! The driver: finds the hosts and etcd members the cluster harness made, starts
//! the roles on them, runs the trials and prints the tables.

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use bench_common::{mark, new_histogram, us};
use hdrhistogram::Histogram;
use serde_json::Value;

use crate::roles::now_ns;
use crate::Args;

/// Appearance target: p99 under this.
const APPEAR_TARGET: Duration = Duration::from_millis(100);
/// Removal target: within the TTL plus this.
const REMOVAL_SLACK: Duration = Duration::from_secs(1);

pub fn main(args: &Args) -> anyhow::Result<()> {
    let Some(topology) = Topology::from_env()? else {
        return under_harness(args);
    };
    let exe = std::env::current_exe().context("this binary's path")?;
    eprintln!(
        "hosts: {} ({}); registrar and nodes on {} via etcd {}, watcher on {} via etcd {}",
        topology.mode,
        topology.why,
        topology.a.name,
        topology.a_etcd,
        topology.b.name,
        topology.b_etcd
    );
    let role = |role: &str, host: &Host, etcd: &str, extra: &[String]| {
        let mut argv = vec![
            "--role".to_string(),
            role.to_string(),
            "--etcd".to_string(),
            etcd.to_string(),
            "--ttl".to_string(),
            args.ttl.to_string(),
            "--interval-ms".to_string(),
            args.interval_ms.to_string(),
        ];
        argv.extend_from_slice(extra);
        RoleProc::spawn(role, host, &exe, &argv)
    };
    let mut registrar = role("registrar", &topology.a, &topology.a_etcd, &[])?;
    registrar.wait_for(Duration::from_secs(30), |l| l == "ready")?;
    let mut watcher = role("watcher", &topology.b, &topology.b_etcd, &[])?;
    watcher.wait_for(Duration::from_secs(30), |l| l == "ready")?;

    // 1. Registration to first selection.
    let mut appear = new_histogram()?;
    let mut call = new_histogram()?;
    for k in 0..args.trials as u64 {
        watcher.send(&format!("expect {k}"))?;
        watcher.wait_for(Duration::from_secs(10), |l| l == format!("ready {k}"))?;
        registrar.send(&format!("register {k}"))?;
        let line = registrar.wait_for(Duration::from_secs(15), |l| {
            l.starts_with(&format!("registered {k} "))
        })?;
        let (t0, took) = match line.split_whitespace().collect::<Vec<_>>()[..] {
            [_, _, t0, took] => (t0.parse::<u128>()?, took.parse::<u64>()?),
            _ => bail!("bad answer {line:?}"),
        };
        let seen = watcher.wait_for(Duration::from_secs(15), |l| {
            l.starts_with(&format!("seen {k} "))
        })?;
        let t1 = stamp(&seen)?;
        appear.saturating_record(clamp_ns(t1.saturating_sub(t0)));
        call.saturating_record(took.max(1));
        registrar.send(&format!("deregister {k}"))?;
        registrar.wait_for(Duration::from_secs(15), |l| {
            l == format!("deregistered {k}")
        })?;
        if (k + 1) % 25 == 0 {
            eprintln!(
                "appearance: {}/{} trials, p50 {:.1} ms so far",
                k + 1,
                args.trials,
                us(&appear, 0.5) / 1e3
            );
        }
        // Start the next trial at another point of etcd's and the watch's cycles.
        std::thread::sleep(Duration::from_millis(5 + (k * 37) % 50));
    }

    // 2. Death to removal: batches of node processes, killed one after another.
    let mut removal = new_histogram()?;
    let mut next = 1_000_000u64;
    let mut done = 0;
    while done < args.removal_trials {
        let n = args.batch.min(args.removal_trials - done);
        let trials: Vec<u64> = (next..next + n as u64).collect();
        next += n as u64;
        let mut nodes = Vec::with_capacity(n);
        for &k in &trials {
            watcher.send(&format!("expect {k}"))?;
            watcher.wait_for(Duration::from_secs(10), |l| l == format!("ready {k}"))?;
            let mut node = role(
                "node",
                &topology.a,
                &topology.a_etcd,
                &["--trial".into(), k.to_string()],
            )?;
            node.wait_for(Duration::from_secs(30), |l| l == format!("registered {k}"))?;
            nodes.push((k, node));
        }
        for &k in &trials {
            watcher.wait_for(Duration::from_secs(15), |l| {
                l.starts_with(&format!("seen {k} "))
            })?;
        }
        // Let each node renew a few times, then kill them spread over one
        // interval, so the kills fall at different points of the renewal cycle.
        std::thread::sleep(args.interval() * 2);
        let gap = args.interval() / n as u32;
        let mut killed = BTreeMap::new();
        for (k, mut node) in nodes {
            watcher.send(&format!("expect-gone {k}"))?;
            watcher.wait_for(Duration::from_secs(10), |l| {
                l == format!("watching-gone {k}")
            })?;
            killed.insert(k, now_ns());
            node.kill();
            std::thread::sleep(gap);
        }
        for (k, t0) in killed {
            let gone = watcher.wait_for(args.ttl() + Duration::from_secs(20), |l| {
                l.starts_with(&format!("gone {k} "))
            })?;
            removal.saturating_record(clamp_ns(stamp(&gone)?.saturating_sub(t0)));
        }
        done += n;
        eprintln!("removal: {done}/{} trials", args.removal_trials);
    }
    drop(watcher);
    drop(registrar);

    print!("{}", report(args, &topology, &appear, &call, &removal));
    if args.smoke {
        eprintln!(
            "smoke: every node was seen and every killed node removed (the numbers mean little)"
        );
    }
    Ok(())
}

fn stamp(line: &str) -> anyhow::Result<u128> {
    line.split_whitespace()
        .nth(2)
        .context("no time stamp")?
        .parse()
        .with_context(|| format!("bad time stamp in {line:?}"))
}

fn clamp_ns(ns: u128) -> u64 {
    u64::try_from(ns).unwrap_or(u64::MAX).max(1)
}

fn ms(histogram: &Histogram<u64>, q: f64) -> f64 {
    us(histogram, q) / 1e3
}

fn report(
    args: &Args,
    topology: &Topology,
    appear: &Histogram<u64>,
    call: &Histogram<u64>,
    removal: &Histogram<u64>,
) -> String {
    let ttl = args.ttl();
    let appear_met = ms(appear, 0.99) < APPEAR_TARGET.as_secs_f64() * 1e3;
    let limit = ttl + REMOVAL_SLACK;
    let removal_met = ms(removal, 1.0) <= limit.as_secs_f64() * 1e3;
    let mut out = String::new();
    out.push_str(&format!(
        "### etcd registry across hosts\n\nHosts: {} ({}). A 3-member etcd cluster; \
         registrar and nodes on host {} through etcd {}, the selector on host {} through \
         etcd {}. Nodes registered with TTL {} s, renewed every {} ms.\n\n",
        topology.mode,
        topology.why,
        topology.a.name,
        topology.a_etcd,
        topology.b.name,
        topology.b_etcd,
        args.ttl,
        args.interval_ms,
    ));
    out.push_str("| measure | trials | p50 | p99 | max | target |\n");
    out.push_str("|---|---:|---:|---:|---:|---|\n");
    out.push_str(&format!(
        "| registration → first selection on the other host | {} | {:.1} ms | {:.1} ms | {:.1} ms | p99 < {} ms {} |\n",
        appear.len(),
        ms(appear, 0.5),
        ms(appear, 0.99),
        ms(appear, 1.0),
        APPEAR_TARGET.as_millis(),
        mark(appear_met),
    ));
    out.push_str(&format!(
        "| the `register` call alone, for comparison | {} | {:.1} ms | {:.1} ms | {:.1} ms | |\n",
        call.len(),
        ms(call, 0.5),
        ms(call, 0.99),
        ms(call, 1.0),
    ));
    out.push_str(&format!(
        "| kill -9 → removed from the selection | {} | {:.2} s | {:.2} s | {:.2} s | every one ≤ TTL + 1 s = {} s {} |\n",
        removal.len(),
        ms(removal, 0.5) / 1e3,
        ms(removal, 0.99) / 1e3,
        ms(removal, 1.0) / 1e3,
        limit.as_secs(),
        mark(removal_met),
    ));
    out
}

/// Runs this same command under the cluster harness, which builds the hosts and
/// the etcd cluster, runs it with `MICRO_CLUSTER_TOPOLOGY` set, and tears down.
fn under_harness(args: &Args) -> anyhow::Result<()> {
    let harness = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/cluster/harness.py");
    ensure!(
        harness.is_file(),
        "{} is missing: the bench needs the cluster harness of the repository",
        harness.display()
    );
    let mut cmd = Command::new("python3");
    cmd.arg(&harness).args(["run", "--hosts", "a,b"]);
    if args.loopback {
        cmd.arg("--loopback");
    }
    cmd.arg("--")
        .arg(std::env::current_exe()?)
        .args(std::env::args_os().skip(1));
    let status = cmd
        .status()
        .with_context(|| format!("running python3 {}", harness.display()))?;
    std::process::exit(status.code().unwrap_or(1));
}

#[derive(Debug)]
struct Host {
    name: String,
    /// What runs a command on the host (`ip netns exec NS`), empty on loopback.
    exec: Vec<String>,
}

#[derive(Debug)]
struct Topology {
    mode: String,
    why: String,
    a: Host,
    b: Host,
    /// The etcd member host `a` talks to, and the one host `b` talks to.
    a_etcd: String,
    b_etcd: String,
}

impl Topology {
    fn from_env() -> anyhow::Result<Option<Topology>> {
        let Ok(text) = std::env::var("MICRO_CLUSTER_TOPOLOGY") else {
            return Ok(None);
        };
        let v: Value = serde_json::from_str(&text).context("MICRO_CLUSTER_TOPOLOGY is not JSON")?;
        let host = |name: &str| -> anyhow::Result<Host> {
            let h = &v["hosts"][name];
            ensure!(h.is_object(), "MICRO_CLUSTER_TOPOLOGY has no host {name:?}");
            Ok(Host {
                name: name.to_string(),
                exec: h["exec"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|s| s.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        };
        let etcd: Vec<String> = v["etcd"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|m| m["address"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        ensure!(
            etcd.len() >= 2,
            "the cluster needs at least 2 etcd members, has {etcd:?}"
        );
        Ok(Some(Topology {
            mode: v["mode"].as_str().unwrap_or("?").to_string(),
            why: v["why"].as_str().unwrap_or("").to_string(),
            a: host("a")?,
            b: host("b")?,
            a_etcd: etcd[0].clone(),
            b_etcd: etcd[1].clone(),
        }))
    }
}

/// A role running as a child process, talked to over its stdin and stdout;
/// killed (by its own handle) when dropped.
struct RoleProc {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    /// Lines read while waiting for another one.
    pending: VecDeque<String>,
}

impl RoleProc {
    fn spawn(name: &str, host: &Host, exe: &PathBuf, argv: &[String]) -> anyhow::Result<RoleProc> {
        let mut cmd = match host.exec.split_first() {
            Some((program, rest)) => {
                let mut cmd = Command::new(program);
                cmd.args(rest).arg(exe);
                cmd
            }
            None => Command::new(exe),
        };
        cmd.args(argv);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("MICRO_") {
                cmd.env_remove(&key);
            }
        }
        cmd.env("MICRO_MDNS_INTERFACES", "none")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting the {name} role: {cmd:?}"))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(RoleProc {
            name: format!("{name} on {}", host.name),
            stdin: child.stdin.take(),
            child,
            lines,
            pending: VecDeque::new(),
        })
    }

    fn send(&mut self, line: &str) -> anyhow::Result<()> {
        let stdin = self.stdin.as_mut().context("stdin closed")?;
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .with_context(|| format!("writing to the {}", self.name))
    }

    /// The first line (already read or still to come) that `matches`.
    fn wait_for(
        &mut self,
        within: Duration,
        matches: impl Fn(&str) -> bool,
    ) -> anyhow::Result<String> {
        if let Some(i) = self.pending.iter().position(|l| matches(l)) {
            return Ok(self.pending.remove(i).unwrap_or_default());
        }
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if matches(&line) => return Ok(line),
                Ok(line) => self.pending.push_back(line),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    bail!("the {} did not answer within {within:?}", self.name)
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().map(|s| s.to_string()).unwrap_or_default();
                    bail!("the {} exited ({status}); see its errors above", self.name)
                }
            }
        }
    }

    /// kill -9, and reap it.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RoleProc {
    fn drop(&mut self) {
        // Closing stdin asks a role to leave cleanly (deregistering); then kill.
        self.stdin = None;
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
    }
}
