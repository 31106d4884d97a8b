//! Several real greeter processes discovered through the local registry: calls
//! spread over the nodes, `kill -9` of a node under a steady call loop loses no
//! call and the node leaves the registry within its TTL, and a clean stop
//! deregisters at once. Each test uses its own registry directory, so tests (and
//! anything else on the machine) do not see each other's nodes.

// Test helpers outside #[test] functions unwrap too: a panic is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use greeter::proto::HelloRequest;
use greeter::GreeterClient;
use micro::registry::{LocalRegistry, Registry};

const TTL: &str = "3s";
const INTERVAL: &str = "1s";

struct Node {
    child: Child,
}

impl Node {
    fn start(dir: &Path) -> Node {
        let child = Command::new(env!("CARGO_BIN_EXE_greeter"))
            .args(["--server_address", "127.0.0.1:0"])
            .env("MICRO_REGISTRY", "local")
            .env("MICRO_REGISTRY_ADDRESS", dir)
            .env("MICRO_REGISTER_TTL", TTL)
            .env("MICRO_REGISTER_INTERVAL", INTERVAL)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        Node { child }
    }

    fn terminate(&mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let exit = self.child.wait().unwrap();
        assert!(exit.success(), "a clean stop exits 0, got {exit}");
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn wait_for_nodes(registry: &dyn Registry, count: usize, within: Duration) -> Vec<String> {
    let started = Instant::now();
    loop {
        let nodes: Vec<String> = match registry.get_service("greeter").await {
            Ok(services) => services
                .into_iter()
                .flat_map(|s| s.nodes)
                .map(|n| n.id)
                .collect(),
            Err(_) => Vec::new(),
        };
        if nodes.len() == count {
            return nodes;
        }
        assert!(
            started.elapsed() < within,
            "expected {count} greeter node(s) within {within:?}, have {nodes:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_spread_and_kill_9_loses_no_call() {
    let dir = tempfile::tempdir().unwrap();
    let registry: Arc<dyn Registry> = Arc::new(LocalRegistry::at(dir.path()));
    let mut a = Node::start(dir.path());
    let _b = Node::start(dir.path());
    let nodes = wait_for_nodes(registry.as_ref(), 2, Duration::from_secs(20)).await;

    let client = GreeterClient::new(
        "greeter",
        micro::Client::builder()
            .registry(registry.clone())
            .strategy(micro::selector::Strategy::RoundRobin)
            .build(),
    );
    // Calls spread over both nodes (served_by is not in the greeting, so count
    // through Debug.Stats of each node afterwards).
    for _ in 0..40 {
        assert_eq!(
            client
                .hello(HelloRequest {
                    name: "John".into()
                })
                .await
                .unwrap()
                .message,
            "Hello John"
        );
    }
    let services = registry.get_service("greeter").await.unwrap();
    let mut served = BTreeMap::new();
    for node in services.iter().flat_map(|s| &s.nodes) {
        let stats = micro::Client::default()
            .call_json(
                "greeter",
                "Debug.Stats",
                &serde_json::json!({}),
                &micro::client::CallOptions::default().address(node.address.clone()),
            )
            .await
            .unwrap();
        let requests: u64 = stats["requests"].as_str().unwrap().parse().unwrap();
        served.insert(node.id.clone(), requests);
    }
    assert_eq!(served.len(), 2, "{nodes:?}");
    assert!(
        served.values().all(|&n| n >= 10),
        "calls spread over both nodes: {served:?}"
    );

    // A steady call loop while one node is killed with SIGKILL: no call fails.
    let caller = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut calls = 0u32;
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(4) {
                let rsp = client
                    .hello(HelloRequest {
                        name: "Loop".into(),
                    })
                    .await;
                assert!(rsp.is_ok(), "call {calls} failed: {rsp:?}");
                calls += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            calls
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    a.child.kill().unwrap(); // SIGKILL: no deregistration
    a.child.wait().unwrap();
    let killed_at = Instant::now();
    let calls = caller.await.unwrap();
    assert!(calls > 50, "the loop made {calls} calls");
    // The dead node leaves discovery within its TTL (the local registry notices the
    // dead process even sooner).
    wait_for_nodes(
        registry.as_ref(),
        1,
        Duration::from_secs(3) + Duration::from_secs(1),
    )
    .await;
    assert!(killed_at.elapsed() <= Duration::from_secs(4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_deregisters_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let registry = LocalRegistry::at(dir.path());
    let mut a = Node::start(dir.path());
    let _b = Node::start(dir.path());
    wait_for_nodes(&registry, 2, Duration::from_secs(20)).await;
    a.terminate();
    // Gone right after the process exits, long before the 3 s TTL.
    wait_for_nodes(&registry, 1, Duration::from_millis(500)).await;
}
