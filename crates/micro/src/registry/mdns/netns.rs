//! Network namespaces for the tests that multicast: private networks the test creates,
//! so no packet ever leaves on the machine's real interfaces.
//!
//! An outer `#[test]` creates the namespaces (as root, with `ip netns`), links them with
//! veth pairs when it needs two hosts, and re-runs this test binary inside each one to
//! execute an inner test, which is `#[ignore]`d and returns at once unless
//! [`inside`] says it runs in a namespace made here. The namespaces are deleted when the
//! [`Namespaces`] guard drops, also when the test fails; ones left by a killed run are
//! swept the next time.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Set in the environment of inner tests: the namespace they run in.
const MARKER: &str = "MICRO_TEST_NETNS";
const PREFIX: &str = "micro-t";

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// The namespace this inner test runs in, or `None` when it runs outside one (then it
/// must not touch the network).
pub(crate) fn inside() -> Option<String> {
    std::env::var(MARKER)
        .ok()
        .filter(|ns| ns.starts_with(PREFIX))
}

/// The path of a test as the test harness names it (`registry::mdns::tests::x`).
pub(crate) fn test_path(module: &str, name: &str) -> String {
    let module = module.split_once("::").map_or("", |(_, rest)| rest);
    format!("{module}::{name}")
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `ip`: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Deletes namespaces whose creating process is gone.
fn sweep_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let pid = rest.split('-').next().unwrap_or_default();
        if !pid.is_empty() && !PathBuf::from(format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

/// Namespaces made for one test; deleted on drop.
#[derive(Debug)]
pub(crate) struct Namespaces {
    names: Vec<String>,
    dir: PathBuf,
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = ip(&["netns", "del", name]);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// How an inner test ended.
#[derive(Debug)]
pub(crate) struct Finished {
    pub(crate) status: Option<ExitStatus>,
    pub(crate) output: String,
}

impl Finished {
    pub(crate) fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }
}

impl Namespaces {
    /// `count` namespaces with loopback up, its multicast switched on or off. An error
    /// (not root, no `ip`, no namespace support) means the test should be skipped.
    pub(crate) fn new(count: usize, lo_multicast: bool) -> Result<Namespaces, String> {
        if !Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        {
            return Err("network namespaces need root".into());
        }
        sweep_stale();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let dir = std::env::temp_dir().join(format!("{PREFIX}{pid}-{n}"));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut made = Namespaces {
            names: Vec::new(),
            dir,
        };
        for i in 0..count {
            let name = format!("{PREFIX}{pid}-{n}-{i}");
            ip(&["netns", "add", &name])?;
            made.names.push(name.clone());
            ip(&["-n", &name, "link", "set", "lo", "up"])?;
            let multicast = if lo_multicast { "on" } else { "off" };
            ip(&["-n", &name, "link", "set", "lo", "multicast", multicast])?;
        }
        Ok(made)
    }

    /// Joins namespaces `a` and `b` with a veth pair named `eth0` on both sides, at
    /// `192.0.2.{a+1}/24` and `192.0.2.{b+1}/24` (TEST-NET-1, documentation only).
    pub(crate) fn link(&self, a: usize, b: usize) -> Result<(), String> {
        let (na, nb) = (&self.names[a], &self.names[b]);
        ip(&[
            "-n", na, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", nb,
        ])?;
        for (ns, host) in [(na, a + 1), (nb, b + 1)] {
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("192.0.2.{host}/24"),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", ns, "link", "set", "eth0", "up"])?;
        }
        // mdns-sd only takes interfaces that are operationally up when it starts (it
        // rescans every 5 s): wait for the carrier, as on a host that booted long ago.
        let deadline = Instant::now() + Duration::from_secs(5);
        for ns in [na, nb] {
            loop {
                let out = Command::new("ip")
                    .args(["-n", ns, "-o", "link", "show", "dev", "eth0"])
                    .output()
                    .map_err(|e| e.to_string())?;
                if String::from_utf8_lossy(&out.stdout).contains("state UP") {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!("eth0 in {ns} never came up"));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        Ok(())
    }

    /// The address of namespace `i` on its veth link.
    pub(crate) fn address(i: usize) -> String {
        format!("192.0.2.{}", i + 1)
    }

    /// A scratch directory shared by the inner tests (and removed with the namespaces).
    pub(crate) fn dir(&self) -> &PathBuf {
        &self.dir
    }

    /// Starts the inner test `test` (its full path) in namespace `i`.
    pub(crate) fn spawn(
        &self,
        i: usize,
        test: &str,
        envs: &[(&str, String)],
    ) -> Result<Running, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let run = COUNTER.fetch_add(1, Ordering::Relaxed);
        let log = self.dir.join(format!("run{run}-ns{i}.log"));
        let file = File::create(&log).map_err(|e| e.to_string())?;
        let err = file.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new("ip")
            .args(["netns", "exec", &self.names[i]])
            .arg(exe)
            .args([
                "--exact",
                test,
                "--include-ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(MARKER, &self.names[i])
            // Inside the namespace mDNS is safe: undo a CI-wide `none`.
            .env_remove("MICRO_MDNS_INTERFACES")
            .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start the inner test: {e}"))?;
        Ok(Running { child, log })
    }
}

/// An inner test running in a namespace.
#[derive(Debug)]
pub(crate) struct Running {
    child: Child,
    log: PathBuf,
}

impl Running {
    /// Waits for the inner test at most `timeout`, killing it past that.
    pub(crate) fn wait(mut self, timeout: Duration) -> Finished {
        let deadline = Instant::now() + timeout;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break None;
                }
            }
        };
        let output = std::fs::read_to_string(&self.log).unwrap_or_default();
        Finished { status, output }
    }
}

/// Runs inner tests in parallel and asserts that all of them passed.
pub(crate) fn expect_all(runs: Vec<(&str, Running)>, timeout: Duration) {
    let finished: Vec<(&str, Finished)> = runs
        .into_iter()
        .map(|(label, run)| (label, run.wait(timeout)))
        .collect();
    let mut failed = Vec::new();
    for (label, f) in &finished {
        eprintln!("---- {label} ({:?}) ----\n{}", f.status, f.output);
        if !f.success() {
            failed.push(*label);
        }
    }
    assert!(failed.is_empty(), "inner tests failed: {failed:?}");
    for (label, f) in &finished {
        // The inner test must really have run (not been filtered out).
        assert!(
            f.output.contains("1 passed"),
            "{label}: the inner test did not run:\n{}",
            f.output
        );
    }
}
