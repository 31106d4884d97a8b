//! A `nats-server` for tests: Debian's binary on a free loopback port, with
//! JetStream storing in a temporary directory; it can be killed and started
//! again on the same port and store. Dropping it kills the process it started
//! (by its own handle, never by name) and removes the directory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;

/// The `nats-server` binary, if installed (Debian puts it in /usr/sbin).
fn binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/usr/bin"].map(PathBuf::from))
        .map(|dir| dir.join("nats-server"))
        .find(|candidate| candidate.is_file())
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// A running (or killed) nats-server owned by one test.
#[derive(Debug)]
pub(crate) struct NatsServer {
    binary: PathBuf,
    port: u16,
    jetstream: bool,
    dir: PathBuf,
    child: Option<Child>,
}

impl NatsServer {
    /// Starts a server; `None` (after saying why) when the binary is missing
    /// outside CI. In CI a missing binary fails the test.
    pub(crate) async fn start(jetstream: bool) -> Option<NatsServer> {
        let Some(binary) = binary() else {
            assert!(
                !in_ci(),
                "nats-server is not installed (CI is set, so this is a failure): run scripts/nats-server.sh"
            );
            eprintln!("SKIPPED: nats-server is not installed; run scripts/nats-server.sh to run the NATS tests");
            return None;
        };
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "micro-nats-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir for nats-server");
        let mut server = NatsServer {
            binary,
            port: 0,
            jetstream,
            dir,
            child: None,
        };
        // A free port can be taken by someone else before the server binds it:
        // try a few.
        for _ in 0..5 {
            server.port = free_port();
            if server.spawn().await {
                return Some(server);
            }
        }
        panic!(
            "nats-server did not start; see {}",
            server.dir.join("server.log").display()
        );
    }

    /// The client URL.
    pub(crate) fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server at once (SIGKILL), as a crash would.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and store directory.
    pub(crate) async fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(15);
        while !self.spawn().await {
            assert!(
                Instant::now() < deadline,
                "nats-server did not restart on port {}",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Spawns the process and waits until it greets clients; false if it exited.
    async fn spawn(&mut self) -> bool {
        // Room for the conformance suite's 1 MiB messages plus headers (the
        // default limit is 1 MiB in all).
        let config = self.dir.join("nats.conf");
        std::fs::write(&config, "max_payload: 8388608\n").expect("write nats.conf");
        let mut command = Command::new(&self.binary);
        command
            .arg("-c")
            .arg(&config)
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .arg("-l")
            .arg(self.dir.join("server.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if self.jetstream {
            command.arg("-js").arg("-sd").arg(self.dir.join("store"));
        }
        let mut child = command.spawn().expect("spawn nats-server");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                return false;
            }
            if greets(self.port).await {
                self.child = Some(child);
                return true;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The directory holding the store and the server log.
    #[allow(dead_code)]
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Whether a NATS server on `port` sends its `INFO` greeting.
async fn greets(port: u16) -> bool {
    let Ok(Ok(mut stream)) = tokio::time::timeout(
        Duration::from_millis(500),
        tokio::net::TcpStream::connect(("127.0.0.1", port)),
    )
    .await
    else {
        return false;
    };
    let mut buf = [0u8; 4];
    matches!(
        tokio::time::timeout(Duration::from_millis(500), stream.read_exact(&mut buf)).await,
        Ok(Ok(_)) if &buf == b"INFO"
    )
}
