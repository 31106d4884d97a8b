//! An etcd server for tests: Debian's `etcd` (package `etcd-server`) on free
//! loopback ports with a temporary data directory. Dropping it kills the process
//! it started (by its own handle, never by name) and removes the directory.
//! Hidden from the docs: for micro's own tests and examples.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The `etcd` binary, if installed.
fn binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin", "/usr/local/bin", "/usr/sbin"].map(PathBuf::from))
        .map(|dir| dir.join("etcd"))
        .find(|candidate| candidate.is_file())
}

/// A running (or killed) etcd owned by one test.
#[derive(Debug)]
pub struct EtcdServer {
    binary: PathBuf,
    client_port: u16,
    peer_port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl EtcdServer {
    /// Starts etcd; `None` (after saying why on stderr) only when the binary is not
    /// installed, outside CI. Panics if it is installed but does not start, or if
    /// it is missing in CI (`CI` set).
    pub async fn start() -> Option<EtcdServer> {
        let Some(binary) = binary() else {
            let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false");
            assert!(
                !ci,
                "etcd is not installed (CI is set, so this is a failure): run scripts/etcd-server.sh"
            );
            eprintln!(
                "SKIPPED: etcd is not installed; run scripts/etcd-server.sh \
                 (apt-get install etcd-server) to run the etcd tests"
            );
            return None;
        };
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "micro-etcd-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let mut server = EtcdServer {
            binary,
            client_port: 0,
            peer_port: 0,
            dir,
            child: None,
        };
        // A free port can be taken by someone else before etcd binds it: try a few.
        for _ in 0..5 {
            server.client_port = free_port();
            server.peer_port = free_port();
            let _ = std::fs::remove_dir_all(&server.dir);
            if server.spawn().await {
                return Some(server);
            }
        }
        panic!(
            "etcd did not start; see {}",
            server.dir.join("etcd.log").display()
        );
    }

    /// `127.0.0.1:<client port>`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// Kills etcd at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts etcd again on the same ports and data.
    pub async fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.spawn().await {
            assert!(Instant::now() < deadline, "etcd did not restart");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn spawn(&mut self) -> bool {
        std::fs::create_dir_all(&self.dir).expect("temp dir for etcd");
        let client = format!("http://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::File::create(self.dir.join("etcd.log")).expect("etcd log file");
        let mut child = Command::new(&self.binary)
            .arg("--name=micro-test")
            .arg(format!("--data-dir={}", self.dir.join("data").display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=micro-test={peer}"))
            .arg("--log-level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn etcd");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                return false;
            }
            if healthy(&self.address()).await {
                self.child = Some(child);
                return true;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for EtcdServer {
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

/// Whether etcd answers a range request.
async fn healthy(address: &str) -> bool {
    matches!(
        super::http::call(
            address,
            http::Method::POST,
            "/v3/kv/range",
            &[],
            Some(br#"{"key":"AA=="}"#.to_vec()),
            Duration::from_millis(500),
        )
        .await,
        Ok((http::StatusCode::OK, _))
    )
}
