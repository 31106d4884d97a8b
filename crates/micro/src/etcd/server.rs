//! etcd servers for tests: Debian's `etcd` (package `etcd-server`) on free loopback
//! ports with temporary data directories — one member ([`EtcdServer`]), optionally
//! with TLS, or a cluster of several ([`EtcdCluster`]). Dropping one kills the
//! processes it started (by their own handles, never by name) and removes the
//! directories. Hidden from the docs: for micro's own tests and examples.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::{EtcdClient, Leader};

/// The `etcd` binary, if installed.
fn binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin", "/usr/local/bin", "/usr/sbin"].map(PathBuf::from))
        .map(|dir| dir.join("etcd"))
        .find(|candidate| candidate.is_file())
}

/// The binary, or `None` (after saying why on stderr) when it is not installed,
/// outside CI; panics if it is missing in CI (`CI` set).
fn binary_or_skip() -> Option<PathBuf> {
    let found = binary();
    if found.is_none() {
        let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false");
        assert!(
            !ci,
            "etcd is not installed (CI is set, so this is a failure): run scripts/etcd-server.sh"
        );
        eprintln!(
            "SKIPPED: etcd is not installed; run scripts/etcd-server.sh \
             (apt-get install etcd-server) to run the etcd tests"
        );
    }
    found
}

/// TLS on the client port of a test etcd: its certificate and key, and the CA that
/// signed them (which the health check trusts). With `client`, etcd also demands a
/// client certificate signed by that CA (`--client-cert-auth`), and the health
/// check presents `client`.
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// The CA certificate (PEM).
    pub ca: PathBuf,
    /// etcd's certificate (PEM), valid for `127.0.0.1`.
    pub cert: PathBuf,
    /// etcd's private key (PEM).
    pub key: PathBuf,
    /// A client certificate and key to require and to check health with.
    pub client: Option<(PathBuf, PathBuf)>,
}

/// A running (or killed) etcd member owned by one test.
#[derive(Debug)]
pub struct EtcdServer {
    binary: PathBuf,
    name: String,
    client_port: u16,
    peer_port: u16,
    /// `--initial-cluster` (the members of the cluster, this one included).
    cluster: String,
    token: String,
    dir: PathBuf,
    child: Option<Child>,
    tls: Option<ServerTls>,
}

fn temp_dir(what: &str) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    std::env::temp_dir().join(format!(
        "micro-etcd-{what}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
}

impl EtcdServer {
    /// Starts a one-member etcd; `None` (after saying why on stderr) only when the
    /// binary is not installed, outside CI. Panics if it is installed but does not
    /// start, or if it is missing in CI (`CI` set).
    pub async fn start() -> Option<EtcdServer> {
        Self::start_with(None).await
    }

    /// [`start`](Self::start) with TLS on the client port (`https://`).
    pub async fn start_tls(tls: ServerTls) -> Option<EtcdServer> {
        Self::start_with(Some(tls)).await
    }

    async fn start_with(tls: Option<ServerTls>) -> Option<EtcdServer> {
        let binary = binary_or_skip()?;
        let mut server = EtcdServer {
            binary,
            name: "micro-test".into(),
            client_port: 0,
            peer_port: 0,
            cluster: String::new(),
            token: String::new(),
            dir: temp_dir("test"),
            child: None,
            tls,
        };
        // A free port can be taken by someone else before etcd binds it: try a few.
        for _ in 0..5 {
            server.client_port = free_port();
            server.peer_port = free_port();
            server.cluster = format!("{}={}", server.name, server.peer_url());
            server.token = server.dir.display().to_string();
            let _ = std::fs::remove_dir_all(&server.dir);
            server.launch();
            if server.wait_healthy(Duration::from_secs(15)).await {
                return Some(server);
            }
            server.kill();
        }
        let log = std::fs::read_to_string(server.dir.join("etcd.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(10).collect();
        panic!(
            "etcd did not start; the end of its log:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }

    /// `127.0.0.1:<client port>`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// `http://127.0.0.1:<client port>` (`https://` with TLS).
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.address())
    }

    fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }

    /// A client of this member alone (with the TLS settings of its health check).
    pub fn client(&self) -> EtcdClient {
        let mut builder = EtcdClient::builder([self.url()]).timeout(Duration::from_millis(1000));
        if let Some(tls) = &self.tls {
            builder = builder.tls_ca(&tls.ca);
            if let Some((cert, key)) = &tls.client {
                builder = builder.tls_identity(cert, key);
            }
        }
        #[allow(clippy::expect_used)] // test helper: its own TLS files
        builder.build().expect("a client of the test etcd")
    }

    /// Whether the process runs (it was not killed).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills etcd at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes etcd (SIGSTOP): its connections stay open but nothing answers, as
    /// with a hung host or a network that drops packets.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Lets a frozen etcd run again (SIGCONT).
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        if let Some(child) = &self.child {
            let status = Command::new("kill")
                .arg(signal)
                .arg(child.id().to_string())
                .status()
                .expect("run kill");
            assert!(status.success(), "kill {signal} {} failed", child.id());
        }
    }

    /// Starts etcd again on the same ports and data.
    pub async fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            self.launch();
            if self.wait_healthy(Duration::from_secs(15)).await {
                return;
            }
            self.kill();
            assert!(Instant::now() < deadline, "etcd did not restart");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Starts a one-member etcd again on the same ports with no data: a cluster
    /// restored from nothing (every key and lease gone).
    pub async fn restart_empty(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(self.dir.join("data"));
        self.token = format!("{}-{}", self.token, rand::random::<u32>());
        self.restart().await;
    }

    fn launch(&mut self) {
        std::fs::create_dir_all(&self.dir).expect("temp dir for etcd");
        let client = self.url();
        let peer = self.peer_url();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("etcd.log"))
            .expect("etcd log file");
        let mut command = Command::new(&self.binary);
        command
            .arg(format!("--name={}", self.name))
            .arg(format!("--data-dir={}", self.dir.join("data").display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster={}", self.cluster))
            .arg(format!("--initial-cluster-token={}", self.token))
            .arg("--log-level=warn");
        if let Some(tls) = &self.tls {
            command
                .arg(format!("--cert-file={}", tls.cert.display()))
                .arg(format!("--key-file={}", tls.key.display()));
            if tls.client.is_some() {
                command
                    .arg("--client-cert-auth")
                    .arg(format!("--trusted-ca-file={}", tls.ca.display()));
            }
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn etcd");
        self.child = Some(child);
    }

    /// Waits until the member answers a (linearizable) read: it runs and its
    /// cluster has a leader. False if the process exits or time runs out.
    async fn wait_healthy(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let client = self.client();
        let mut last;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(_)) = child.try_wait() {
                    self.child = None;
                    return false;
                }
            } else {
                return false;
            }
            let read = client
                .call(
                    "/v3/kv/range",
                    &serde_json::json!({"key": "AA=="}),
                    Leader::Required,
                )
                .await;
            // With authentication enabled, an answer refusing the anonymous read
            // is an answer too.
            match read {
                Ok(_) => return true,
                Err(e) if e.is_auth() => return true,
                Err(e) => last = e.to_string(),
            }
            if Instant::now() > deadline {
                eprintln!("etcd {} is not healthy: {last}", self.name);
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The member id etcd gave this member, if it answers.
    async fn member_id(&self) -> Option<(String, String)> {
        let status = self
            .client()
            .post("/v3/maintenance/status", &serde_json::json!({}))
            .await
            .ok()?;
        Some((
            status["header"]["member_id"].as_str()?.to_string(),
            status["leader"].as_str().unwrap_or("0").to_string(),
        ))
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        // A frozen process cannot die until it runs again.
        self.thaw();
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A cluster of etcd members on loopback ports, for failover tests.
#[derive(Debug)]
pub struct EtcdCluster {
    members: Vec<EtcdServer>,
    dir: PathBuf,
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        // The members remove their own directories first.
        self.members.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl EtcdCluster {
    /// Starts `n` members and waits until the cluster has a leader; `None` only
    /// when etcd is not installed, outside CI (as [`EtcdServer::start`]).
    pub async fn start(n: usize) -> Option<EtcdCluster> {
        let binary = binary_or_skip()?;
        let dir = temp_dir("cluster");
        for _ in 0..5 {
            let mut members: Vec<EtcdServer> = (0..n)
                .map(|i| EtcdServer {
                    binary: binary.clone(),
                    name: format!("m{i}"),
                    client_port: free_port(),
                    peer_port: free_port(),
                    cluster: String::new(),
                    token: dir.display().to_string(),
                    dir: dir.join(format!("m{i}")),
                    child: None,
                    tls: None,
                })
                .collect();
            let cluster = members
                .iter()
                .map(|m| format!("{}={}", m.name, m.peer_url()))
                .collect::<Vec<_>>()
                .join(",");
            for member in &mut members {
                let _ = std::fs::remove_dir_all(&member.dir);
                member.cluster = cluster.clone();
                member.launch();
            }
            let mut healthy = true;
            for member in &mut members {
                healthy &= member.wait_healthy(Duration::from_secs(20)).await;
            }
            if healthy {
                return Some(EtcdCluster { members, dir });
            }
        }
        panic!(
            "the etcd cluster did not start; see the etcd.log files under {}",
            dir.display()
        );
    }

    /// The client addresses of the members (`127.0.0.1:<port>`), in order.
    pub fn addresses(&self) -> Vec<String> {
        self.members.iter().map(EtcdServer::address).collect()
    }

    /// Member `i`, to kill or restart.
    pub fn member(&mut self, i: usize) -> &mut EtcdServer {
        &mut self.members[i]
    }

    /// How many members there are.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The index of the current leader among the running members, once one is
    /// elected (waits up to 10 s).
    pub async fn leader(&self) -> Option<usize> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut ids = Vec::new();
            for (i, member) in self.members.iter().enumerate() {
                if member.is_running() {
                    if let Some(id) = member.member_id().await {
                        ids.push((i, id));
                    }
                }
            }
            for (i, (id, _)) in &ids {
                if ids.iter().any(|(_, (_, leader))| leader == id) {
                    return Some(*i);
                }
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}
