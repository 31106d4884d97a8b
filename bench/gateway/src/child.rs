//! The processes the bench starts (greeter, `micro api`, nginx): started with a
//! clean `MICRO_*` environment and their output in log files, their CPU time read
//! from `/proc`, and stopped by PID (SIGTERM, then SIGKILL) when dropped.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;

/// How long a child gets to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// A running child process, stopped when dropped.
#[derive(Debug)]
pub struct Proc {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Proc {
    /// Starts `cmd` as `name`, its stdout and stderr appended to `log`.
    ///
    /// Inherited `MICRO_*` variables are removed first, so a user's settings
    /// (a registry, wrappers, a proxy) cannot leak into the measured setup;
    /// the caller sets the ones the bench wants afterwards.
    pub fn spawn(name: &'static str, mut cmd: Command, log: &Path) -> anyhow::Result<Proc> {
        let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {name}: {cmd:?}"))?;
        Ok(Proc {
            name,
            child,
            log: log.to_path_buf(),
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails, with the end of the log, if the process has exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            anyhow::bail!("{} exited ({status}); {}", self.name, self.log_tail());
        }
        Ok(())
    }

    /// The last lines of the process's log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(15)..].join("\n");
        format!("its log ({}):\n{tail}", self.log.display())
    }

    /// CPU time (user + system) of the process and its children alive now
    /// (nginx's workers), in clock ticks.
    pub fn cpu_ticks(&self) -> u64 {
        let pid = self.pid();
        let mut total = stat(pid).map_or(0, |s| s.ticks);
        for child in children_of(pid) {
            total += stat(child).map_or(0, |s| s.ticks);
        }
        total
    }

    /// Stops the process: SIGTERM (graceful for all three), then SIGKILL if it
    /// is still there after [`STOP_GRACE`]. Children it leaves behind (nginx
    /// workers whose master was killed) are killed by their own PIDs.
    pub fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let pid = self.pid();
        let orphans: Vec<(u32, Option<Stat>)> =
            children_of(pid).into_iter().map(|c| (c, stat(c))).collect();
        signal("TERM", pid);
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if !matches!(self.child.try_wait(), Ok(Some(_))) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        for (orphan, seen) in orphans {
            // Only if it is still the process we saw: same start time (a PID can
            // be reused), re-parented since its master is gone.
            let now = stat(orphan);
            if let (Some(seen), Some(now)) = (seen, now) {
                if now.started == seen.started && now.ppid != pid {
                    signal("KILL", orphan);
                }
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sends `SIG<name>` to `pid` with kill(1): the workspace forbids `unsafe`, which
/// a direct `libc::kill` would need.
fn signal(name: &str, pid: u32) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// What the bench reads from `/proc/<pid>/stat`.
#[derive(Debug, Clone, Copy)]
struct Stat {
    ppid: u32,
    ticks: u64,
    /// Start time after boot, in ticks: with the PID, names one process.
    started: u64,
}

fn stat(pid: u32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let fields: Vec<&str> = text
        .get(text.rfind(')')? + 1..)?
        .split_whitespace()
        .collect();
    // After the name: state, ppid, ..., utime (14th field overall), stime (15th),
    // starttime (22nd).
    let ppid = fields.get(1)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let started = fields.get(19)?.parse().ok()?;
    Some(Stat {
        ppid,
        ticks: utime + stime,
        started,
    })
}

/// The PIDs whose parent is `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| stat(p).is_some_and(|s| s.ppid == pid))
        .collect()
}

/// Clock ticks per second of the `/proc` CPU times (`getconf CLK_TCK`; 100 on
/// every common Linux).
pub fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// A command with every inherited `MICRO_*` variable removed.
pub fn clean_command(program: &Path) -> Command {
    let mut cmd = Command::new(program);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("MICRO_") {
            cmd.env_remove(key);
        }
    }
    cmd
}
