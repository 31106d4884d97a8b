//! The etcd registry against real etcd (Debian's etcd-server) on loopback: the
//! registry conformance suite, leases that expire when a process dies, services
//! that register again by themselves after an etcd outage, failover in a 3-member
//! cluster, TLS (mutual), username/password, and the selector cache fed by the
//! etcd watch. Each test starts its own etcd; without etcd installed (and CI unset)
//! the tests say so and pass.
#![cfg(feature = "etcd")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use micro::etcd::server::{EtcdCluster, EtcdServer, ServerTls};
use micro::etcd::{b64, range_end, EtcdClient};
use micro::options::{Secret, ServiceOptions};
use micro::registry::conformance::Suite;
use micro::registry::{
    self, EtcdRegistry, Event, EventKind, Node, Ownership, RegisterOptions, Registry, Service,
    Watcher,
};
use micro::selector::{CacheSelector, SelectOptions, Selector, Strategy};
use serde_json::json;

/// etcd's shortest lease with its default timing (1.5 election timeouts, rounded
/// up to whole seconds): shorter TTLs are raised to it.
const ETCD_MIN_TTL: Duration = Duration::from_secs(2);

fn ttl(d: Duration) -> RegisterOptions {
    RegisterOptions { ttl: d }
}

fn service(name: &str, ids: &[&str]) -> Service {
    Service {
        name: name.into(),
        version: "v1".into(),
        nodes: ids
            .iter()
            .enumerate()
            .map(|(i, id)| Node {
                id: (*id).into(),
                address: format!("127.0.0.1:{}", 30000 + i),
                metadata: [("protocol".to_string(), "grpc+json".to_string())].into(),
            })
            .collect(),
        ..Default::default()
    }
}

fn etcd_registry(addresses: &[String]) -> Arc<dyn Registry> {
    registry::from_name("etcd", addresses, Ownership::Process).expect("an etcd registry")
}

async fn within<T>(limit: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, fut)
        .await
        .unwrap_or_else(|_| panic!("no {what} within {limit:?}"))
}

/// Waits (10 s at most) for `w` to end; an error it ends with must be a 503.
async fn watch_ends(w: &mut Watcher, what: &str) {
    let ended = within(Duration::from_secs(10), what, async {
        loop {
            match w.next().await {
                Some(Ok(_)) => {}
                Some(Err(e)) => return Some(e),
                None => return None,
            }
        }
    })
    .await;
    if let Some(e) = ended {
        assert_eq!(e.code(), 503, "{e}");
    }
}

/// The next event of `w` for `name`, skipping others.
async fn next_event(w: &mut Watcher, name: &str, limit: Duration) -> Event {
    within(limit, &format!("event of {name}"), async {
        loop {
            match w.next().await {
                Some(Ok(ev)) if ev.service.name == name => return ev,
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("watch error: {e}"),
                None => panic!("the watch ended"),
            }
        }
    })
    .await
}

/// Retries `f` until it succeeds or `limit` passes.
async fn eventually<T, E: std::fmt::Display, F, Fut>(limit: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = Instant::now() + limit;
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "{what}: still failing after {limit:?}: {e}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The conformance suite, each check against an etcd of its own.

macro_rules! conformance {
    ($($check:ident),* $(,)?) => {
        mod conformance {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let Some(etcd) = EtcdServer::start().await else { return };
                    let address = vec![etcd.address()];
                    let suite = Suite::new(move || etcd_registry(&address))
                        .ttl(ETCD_MIN_TTL)
                        .deadline(Duration::from_secs(4));
                    suite.$check().await;
                }
            )*
        }
    };
}

micro::registry_conformance_checks!(conformance);

// ---------------------------------------------------------------------------
// Dead processes: their nodes go when their leases run out.

/// Run as a child process by `kill_9_removes_the_node_within_its_ttl`: registers
/// a node and waits to be killed.
#[tokio::test]
#[ignore = "run by kill_9_removes_the_node_within_its_ttl in a child process"]
async fn child_registers_and_waits() {
    let Ok(address) = std::env::var("MICRO_TEST_ETCD") else {
        return;
    };
    let r = etcd_registry(&[address]);
    r.register(&service("doomed", &["doomed-1"]), ttl(ETCD_MIN_TTL))
        .await
        .unwrap();
    println!("registered");
    tokio::time::sleep(Duration::from_secs(120)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_removes_the_node_within_its_ttl() {
    let Some(etcd) = EtcdServer::start().await else {
        return;
    };
    let r = etcd_registry(&[etcd.address()]);
    let mut w = r.watch(Some("doomed")).await.unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "child_registers_and_waits",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env("MICRO_TEST_ETCD", etcd.address())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let ev = next_event(&mut w, "doomed", Duration::from_secs(20)).await;
    assert_eq!(ev.kind, EventKind::Added);
    assert_eq!(ev.service.nodes[0].id, "doomed-1");

    child.kill().unwrap(); // SIGKILL: no deregistration
    child.wait().unwrap();
    let killed = Instant::now();
    let ev = next_event(&mut w, "doomed", ETCD_MIN_TTL + Duration::from_secs(3)).await;
    assert_eq!(ev.kind, EventKind::Removed);
    assert_eq!(ev.service.nodes[0].id, "doomed-1");
    assert_eq!(
        ev.service.nodes[0].address, "127.0.0.1:30000",
        "a Removed event carries the node"
    );
    let gone_after = killed.elapsed();
    assert!(
        gone_after <= ETCD_MIN_TTL + Duration::from_secs(2),
        "gone {gone_after:?} after the kill; the TTL is {ETCD_MIN_TTL:?}"
    );
    assert_eq!(r.get_service("doomed").await.unwrap_err().code(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_registry_leaves_within_its_ttl_and_ttls_are_whole_seconds() {
    let Some(etcd) = EtcdServer::start().await else {
        return;
    };
    let watcher = etcd_registry(&[etcd.address()]);
    let mut w = watcher.watch(Some("dropped")).await.unwrap();
    {
        let r = etcd_registry(&[etcd.address()]);
        // 300 ms is rounded up to a whole second, then raised to etcd's minimum.
        r.register(
            &service("dropped", &["d1"]),
            ttl(Duration::from_millis(300)),
        )
        .await
        .unwrap();
    }
    let start = Instant::now();
    assert_eq!(
        next_event(&mut w, "dropped", Duration::from_secs(5))
            .await
            .kind,
        EventKind::Added
    );
    let ev = next_event(&mut w, "dropped", Duration::from_secs(6)).await;
    assert_eq!(ev.kind, EventKind::Removed);
    let after = start.elapsed();
    assert!(
        after >= Duration::from_millis(1500) && after <= Duration::from_secs(4),
        "gone after {after:?}"
    );
}

// ---------------------------------------------------------------------------
// etcd outages: services register again by themselves.

/// A registry that counts reads, to tell a watch-fed cache from a polling one.
#[derive(Debug)]
struct Counting {
    inner: Arc<dyn Registry>,
    reads: AtomicUsize,
}

impl Registry for Counting {
    fn register<'a>(
        &'a self,
        service: &'a Service,
        opts: RegisterOptions,
    ) -> BoxFuture<'a, Result<(), micro::Error>> {
        self.inner.register(service, opts)
    }
    fn deregister<'a>(&'a self, service: &'a Service) -> BoxFuture<'a, Result<(), micro::Error>> {
        self.inner.deregister(service)
    }
    fn get_service<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Service>, micro::Error>> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.get_service(name)
    }
    fn list_services(&self) -> BoxFuture<'_, Result<Vec<Service>, micro::Error>> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.list_services()
    }
    fn watch(&self, service: Option<&str>) -> BoxFuture<'_, Result<Watcher, micro::Error>> {
        self.inner.watch(service)
    }
    fn name(&self) -> &'static str {
        "counting"
    }
}

/// The node ids a selector can pick for `name` right now (from its cache).
async fn selectable(selector: &CacheSelector, name: &str) -> Vec<String> {
    let mut ids = std::collections::BTreeSet::new();
    for _ in 0..64 {
        match selector.select(name, SelectOptions::new()).await {
            Ok(selected) => {
                ids.insert(selected.node().id.clone());
            }
            Err(_) => break,
        }
    }
    ids.into_iter().collect()
}

/// Starts a real micro service registered in etcd at `address` (options as a user
/// gives them), registering every 300 ms with etcd's shortest TTL.
async fn start_service(
    address: &str,
    name: &str,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let service = micro::Service::builder()
        .name(name)
        .id(format!("{name}-1"))
        .broker(Arc::new(micro::broker::MemoryBroker::new()))
        .register_ttl(ETCD_MIN_TTL)
        .register_interval(Duration::from_millis(300))
        .args(["svc", "--registry", "etcd", "--registry_address", address])
        .build()
        .unwrap();
    assert_eq!(service.registry().name(), "etcd");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        service
            .serve(listener, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    (stop, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_register_again_after_etcd_outages() {
    let Some(mut etcd) = EtcdServer::start().await else {
        return;
    };
    let (stop, task) = start_service(&etcd.address(), "phoenix").await;
    let registry = etcd_registry(&[etcd.address()]);
    let selector = CacheSelector::new(registry.clone(), Strategy::Random);
    eventually(Duration::from_secs(10), "the service registers", || async {
        let ids = selectable(&selector, "phoenix").await;
        if ids == ["phoenix-1"] {
            Ok(())
        } else {
            Err(format!("{ids:?}"))
        }
    })
    .await;

    // Down longer than the TTL, back with its data: the lease was frozen while etcd
    // was down and the register loop keeps it alive again.
    etcd.kill();
    tokio::time::sleep(ETCD_MIN_TTL + Duration::from_secs(1)).await;
    assert_eq!(
        selectable(&selector, "phoenix").await,
        ["phoenix-1"],
        "the selector keeps its nodes while etcd is down"
    );
    etcd.restart().await;
    tokio::time::sleep(ETCD_MIN_TTL + Duration::from_secs(1)).await;
    let found = registry.get_service("phoenix").await.unwrap();
    assert_eq!(found[0].nodes[0].id, "phoenix-1");

    // Back with nothing (a rebuilt cluster): the lease is gone; the service grants
    // a new one and writes its record again, and the selector sees it.
    let mut w = eventually(Duration::from_secs(5), "a watch", || {
        registry.watch(Some("phoenix"))
    })
    .await;
    etcd.restart_empty().await;
    let back = Instant::now();
    eventually(
        Duration::from_secs(10),
        "the service registers again",
        || async { registry.get_service("phoenix").await.map(|_| ()) },
    )
    .await;
    assert!(
        back.elapsed() < Duration::from_secs(5),
        "re-registered after {:?}",
        back.elapsed()
    );
    // The old watch ended with an error when etcd went away.
    watch_ends(&mut w, "the end of the old watch").await;
    eventually(
        Duration::from_secs(15),
        "the selector sees the service again",
        || async {
            let ids = selectable(&selector, "phoenix").await;
            if ids == ["phoenix-1"] {
                Ok(())
            } else {
                Err(format!("{ids:?}"))
            }
        },
    )
    .await;

    // A clean stop deregisters at once.
    stop.send(()).unwrap();
    task.await.unwrap();
    assert_eq!(
        registry.get_service("phoenix").await.unwrap_err().code(),
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_selector_cache_sees_new_nodes_through_the_watch() {
    let Some(etcd) = EtcdServer::start().await else {
        return;
    };
    let counting = Arc::new(Counting {
        inner: etcd_registry(&[etcd.address()]),
        reads: AtomicUsize::new(0),
    });
    let writer = etcd_registry(&[etcd.address()]);
    writer
        .register(&service("cached", &["c1"]), ttl(Duration::from_secs(30)))
        .await
        .unwrap();
    let selector = CacheSelector::new(counting.clone(), Strategy::RoundRobin);
    assert_eq!(selectable(&selector, "cached").await, ["c1"]);
    let reads = counting.reads.load(Ordering::SeqCst);

    let mut slowest = Duration::ZERO;
    for i in 2..=6 {
        let id = format!("c{i}");
        let mut s = service("cached", &[&id]);
        s.nodes[0].address = format!("127.0.0.1:{}", 31000 + i);
        let start = Instant::now();
        writer
            .register(&s, ttl(Duration::from_secs(30)))
            .await
            .unwrap();
        loop {
            if selectable(&selector, "cached").await.contains(&id) {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(2),
                "{id} not selectable"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        slowest = slowest.max(start.elapsed());
    }
    assert!(
        slowest < Duration::from_millis(500),
        "a new node took {slowest:?}"
    );
    // And one that leaves is no longer picked.
    writer
        .deregister(&service("cached", &["c1"]))
        .await
        .unwrap();
    let start = Instant::now();
    while selectable(&selector, "cached")
        .await
        .contains(&"c1".to_string())
    {
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "c1 still selectable"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(
        counting.reads.load(Ordering::SeqCst),
        reads,
        "the cache was kept current by the watch alone, without reading the registry"
    );
}

// ---------------------------------------------------------------------------
// A 3-member cluster: losing the member the client talks to, and the leader.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_keeps_working_when_the_leader_the_client_talks_to_dies() {
    let Some(mut cluster) = EtcdCluster::start(3).await else {
        return;
    };
    let leader = cluster.leader().await.expect("a leader");
    // The client talks to the leader first.
    let mut addresses = cluster.addresses();
    addresses.rotate_left(leader);
    let r = etcd_registry(&addresses);
    let node_ttl = ttl(Duration::from_secs(10));
    r.register(&service("clustered", &["a"]), node_ttl)
        .await
        .unwrap();
    let mut w = r.watch(Some("clustered")).await.unwrap();
    let selector = CacheSelector::new(r.clone(), Strategy::Random);
    assert_eq!(selectable(&selector, "clustered").await, ["a"]);

    cluster.member(leader).kill();
    let killed = Instant::now();
    // The watch on the dead member ends with an error, at once.
    watch_ends(&mut w, "the end of the watch").await;
    // Reads go on from the other members, even while they elect a leader.
    let found = r.get_service("clustered").await.unwrap();
    assert_eq!(found[0].nodes[0].id, "a");
    // Writes and watches work again once a new leader is elected.
    let mut w = eventually(Duration::from_secs(15), "a new watch", || {
        r.watch(Some("clustered"))
    })
    .await;
    let b = service("clustered", &["b"]);
    eventually(Duration::from_secs(15), "registering b", || {
        r.register(&b, node_ttl)
    })
    .await;
    let ev = next_event(&mut w, "clustered", Duration::from_secs(5)).await;
    assert_eq!(
        (ev.kind, ev.service.nodes[0].id.as_str()),
        (EventKind::Added, "b")
    );
    println!(
        "writes work again {:?} after the leader died",
        killed.elapsed()
    );
    // The lease of a, granted by the old leader, is renewed by the new one.
    r.register(&service("clustered", &["a"]), node_ttl)
        .await
        .unwrap();
    let found = r.get_service("clustered").await.unwrap();
    let mut ids: Vec<&str> = found[0].nodes.iter().map(|n| n.id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["a", "b"]);
    // The selector re-opened its watch on a live member and follows it.
    eventually(Duration::from_secs(15), "the selector sees b", || async {
        let ids = selectable(&selector, "clustered").await;
        if ids == ["a", "b"] {
            Ok(())
        } else {
            Err(format!("{ids:?}"))
        }
    })
    .await;
    r.register(&service("clustered", &["c"]), node_ttl)
        .await
        .unwrap();
    eventually(Duration::from_secs(2), "the selector sees c", || async {
        let ids = selectable(&selector, "clustered").await;
        if ids == ["a", "b", "c"] {
            Ok(())
        } else {
            Err(format!("{ids:?}"))
        }
    })
    .await;
    // A deregistration reaches the watchers.
    r.deregister(&service("clustered", &["b"])).await.unwrap();
    let ev = next_event(&mut w, "clustered", Duration::from_secs(5)).await;
    let ev = if ev.kind == EventKind::Added {
        next_event(&mut w, "clustered", Duration::from_secs(5)).await
    } else {
        ev
    };
    assert_eq!(
        (ev.kind, ev.service.nodes[0].id.as_str()),
        (EventKind::Removed, "b")
    );

    // The old leader comes back as a follower; nothing is lost.
    cluster.member(leader).restart().await;
    let found = r.get_service("clustered").await.unwrap();
    assert_eq!(found[0].nodes.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_member_that_is_down_is_skipped() {
    let Some(mut cluster) = EtcdCluster::start(3).await else {
        return;
    };
    let addresses = cluster.addresses();
    // A follower is down before the client starts: every call fails over past it.
    let leader = cluster.leader().await.expect("a leader");
    let follower = (leader + 1) % cluster.len();
    cluster.member(follower).kill();
    let mut ordered = addresses.clone();
    ordered.rotate_left(follower);
    let r = etcd_registry(&ordered);
    r.register(&service("skipper", &["s1"]), ttl(Duration::from_secs(10)))
        .await
        .unwrap();
    let mut w = r.watch(Some("skipper")).await.unwrap();
    r.register(&service("skipper", &["s2"]), ttl(Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(
        next_event(&mut w, "skipper", Duration::from_secs(5))
            .await
            .service
            .nodes[0]
            .id,
        "s2"
    );
    assert_eq!(r.get_service("skipper").await.unwrap()[0].nodes.len(), 2);
    // With every member down, the error names each one and says what to check.
    for i in 0..cluster.len() {
        cluster.member(i).kill();
    }
    let err = r.get_service("skipper").await.unwrap_err();
    assert_eq!(err.code(), 503, "{err}");
    for address in &addresses {
        assert!(
            err.detail().contains(address.as_str()),
            "{address} not named: {err}"
        );
    }
    assert!(err.detail().contains("MICRO_REGISTRY_ADDRESS"), "{err}");
}

/// Reads `w` until it fails or ends; the error, if any.
async fn end_of(w: &mut Watcher, limit: Duration) -> Option<micro::Error> {
    within(limit, "the end of the watch", async {
        loop {
            match w.next().await {
                Some(Ok(_)) => {}
                Some(Err(e)) => return Some(e),
                None => return None,
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_ends_when_its_member_loses_the_quorum() {
    let Some(mut cluster) = EtcdCluster::start(3).await else {
        return;
    };
    let leader = cluster.leader().await.expect("a leader");
    let lonely = (leader + 1) % cluster.len();
    let r = etcd_registry(&[cluster.addresses()[lonely].clone()]);
    r.register(&service("quorum", &["q1"]), ttl(Duration::from_secs(30)))
        .await
        .unwrap();
    let mut w = r.watch(Some("quorum")).await.unwrap();
    for i in 0..cluster.len() {
        if i != lonely {
            cluster.member(i).kill();
        }
    }
    // The member answers, but has no leader: etcd ends the watch (require-leader)
    // instead of leaving it open and silent.
    let start = Instant::now();
    let e = end_of(&mut w, Duration::from_secs(20))
        .await
        .expect("an error");
    assert_eq!(e.code(), 503, "{e}");
    println!(
        "the watch ended {:?} after the quorum was lost: {e}",
        start.elapsed()
    );
    // Reads are served from the member's data all the same (serializable).
    assert_eq!(r.get_service("quorum").await.unwrap()[0].nodes[0].id, "q1");
    // Writes fail at once rather than wait for a leader that will not come.
    let start = Instant::now();
    let err = r
        .register(&service("quorum", &["q2"]), ttl(Duration::from_secs(30)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), 503, "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "took {:?}: {err}",
        start.elapsed()
    );
    assert!(err.detail().contains("leader"), "{err}");
    // And no watch opens there.
    let err = r.watch(None).await.err().expect("no watch");
    assert_eq!(err.code(), 503, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_on_a_frozen_member_ends_within_seconds() {
    let Some(etcd) = EtcdServer::start().await else {
        return;
    };
    let r = etcd_registry(&[etcd.address()]);
    let mut w = r.watch(None).await.unwrap();
    // The connection stays open, but nothing answers any more.
    etcd.freeze();
    let start = Instant::now();
    let e = end_of(&mut w, Duration::from_secs(15))
        .await
        .expect("an error");
    let after = start.elapsed();
    etcd.thaw();
    assert_eq!(e.code(), 503, "{e}");
    assert!(e.detail().contains("stopped answering"), "{e}");
    assert!(after <= Duration::from_secs(10), "noticed after {after:?}");
    // Once it runs again, a new watch works.
    let mut w = r.watch(Some("thawed")).await.unwrap();
    r.register(&service("thawed", &["t1"]), ttl(Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(
        next_event(&mut w, "thawed", Duration::from_secs(5))
            .await
            .kind,
        EventKind::Added
    );
}

// ---------------------------------------------------------------------------
// TLS and username/password.

struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    /// A CA, a server certificate for 127.0.0.1 and a client certificate.
    fn new() -> Pki {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair,
        };
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: String| std::fs::write(dir.path().join(name), text).unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "micro test CA");
        write("ca.pem", ca.self_signed(&ca_key).unwrap().pem());
        let issuer = Issuer::new(ca, ca_key);
        let leaf = |name: &str, sans: Vec<String>, usages: Vec<ExtendedKeyUsagePurpose>| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(sans).unwrap();
            params.distinguished_name.push(DnType::CommonName, name);
            params.extended_key_usages = usages;
            let cert = params.signed_by(&key, &issuer).unwrap();
            write(&format!("{name}.pem"), cert.pem());
            write(&format!("{name}-key.pem"), key.serialize_pem());
        };
        // etcd's JSON gateway connects to etcd's gRPC side with etcd's own
        // certificate, so with client-cert-auth it must allow client auth too.
        leaf(
            "server",
            vec!["127.0.0.1".into(), "localhost".into()],
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        );
        leaf("client", vec![], vec![ExtendedKeyUsagePurpose::ClientAuth]);
        // Another CA, which did not sign etcd's certificate.
        let other_key = KeyPair::generate().unwrap();
        let mut other = CertificateParams::new(Vec::<String>::new()).unwrap();
        other.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        write("other-ca.pem", other.self_signed(&other_key).unwrap().pem());
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn options(registry: &str, address: &str) -> ServiceOptions {
    ServiceOptions {
        registry: registry.into(),
        registry_address: vec![address.into()],
        ..ServiceOptions::default()
    }
}

/// Register, read and watch through `r`.
async fn round_trip(r: &Arc<dyn Registry>, name: &str) {
    let mut w = r.watch(Some(name)).await.unwrap();
    r.register(&service(name, &["n1"]), ttl(Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(
        next_event(&mut w, name, Duration::from_secs(5)).await.kind,
        EventKind::Added
    );
    assert_eq!(r.get_service(name).await.unwrap()[0].nodes[0].id, "n1");
    r.deregister(&service(name, &["n1"])).await.unwrap();
    assert_eq!(
        next_event(&mut w, name, Duration::from_secs(5)).await.kind,
        EventKind::Removed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_client_certificates() {
    let pki = Pki::new();
    let tls = ServerTls {
        ca: pki.path("ca.pem"),
        cert: pki.path("server.pem"),
        key: pki.path("server-key.pem"),
        client: Some((pki.path("client.pem"), pki.path("client-key.pem"))),
    };
    let Some(etcd) = EtcdServer::start_tls(tls).await else {
        return;
    };
    // host:port with a CA means https.
    let mut o = options("etcd", &etcd.address());
    o.registry_tls_ca = Some(pki.path("ca.pem"));
    o.registry_tls_cert = Some(pki.path("client.pem"));
    o.registry_tls_key = Some(pki.path("client-key.pem"));
    let r = registry::from_options(&o, Ownership::Process).unwrap();
    round_trip(&r, "secure").await;

    // Without the client certificate, etcd refuses the connection: a clear error.
    let mut no_cert = o.clone();
    no_cert.registry_tls_cert = None;
    no_cert.registry_tls_key = None;
    let r = registry::from_options(&no_cert, Ownership::Process).unwrap();
    let err = r.get_service("secure").await.unwrap_err();
    assert_eq!(err.code(), 503, "{err}");
    assert!(err.detail().contains(&etcd.address()), "{err}");
    // Trusting another CA: the handshake fails, and says so.
    let mut wrong_ca = o.clone();
    wrong_ca.registry_tls_ca = Some(pki.path("other-ca.pem"));
    let r = registry::from_options(&wrong_ca, Ownership::Process).unwrap();
    let err = r.get_service("secure").await.unwrap_err();
    assert!(err.detail().contains("TLS handshake failed"), "{err}");
    assert!(err.detail().contains("certificate"), "{err}");
    // A plain-http client of a TLS port gets an answer it cannot use.
    let r = etcd_registry(&[format!("http://{}", etcd.address())]);
    assert!(r.get_service("secure").await.is_err());

    // Bad settings are 400s naming the file or the missing half.
    let mut half = o.clone();
    half.registry_tls_key = None;
    let err = registry::from_options(&half, Ownership::Process).unwrap_err();
    assert_eq!(err.code(), 400);
    assert!(err.detail().contains("--registry_tls_key"), "{err}");
    let mut missing = o.clone();
    missing.registry_tls_ca = Some(pki.path("nope.pem"));
    let err = registry::from_options(&missing, Ownership::Process).unwrap_err();
    assert_eq!(err.code(), 400);
    assert!(err.detail().contains("nope.pem"), "{err}");
}

/// Enables authentication: a root user and a `micro` user that may use the
/// registry prefix only.
async fn enable_auth(client: &EtcdClient) {
    let post = |path: &'static str, body: serde_json::Value| async move {
        client
            .post(path, &body)
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
    };
    post(
        "/v3/auth/user/add",
        json!({"name": "root", "password": "rootpw"}),
    )
    .await;
    post("/v3/auth/role/add", json!({"name": "root"})).await;
    post(
        "/v3/auth/user/grant",
        json!({"user": "root", "role": "root"}),
    )
    .await;
    post(
        "/v3/auth/user/add",
        json!({"name": "micro", "password": "s3cret pw"}),
    )
    .await;
    post("/v3/auth/role/add", json!({"name": "registry"})).await;
    let prefix = "/micro/registry/";
    post(
        "/v3/auth/role/grant",
        json!({"name": "registry", "perm": {
            "permType": "READWRITE", "key": b64(prefix), "range_end": b64(range_end(prefix)),
        }}),
    )
    .await;
    post(
        "/v3/auth/user/grant",
        json!({"user": "micro", "role": "registry"}),
    )
    .await;
    post(
        "/v3/auth/user/add",
        json!({"name": "nobody", "password": "pw"}),
    )
    .await;
    post("/v3/auth/enable", json!({})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn username_and_password() {
    let Some(mut etcd) = EtcdServer::start().await else {
        return;
    };
    enable_auth(&etcd.client()).await;
    let mut o = options("etcd", &etcd.address());
    o.registry_username = Some("micro".into());
    o.registry_password = Some(Secret::new("s3cret pw"));
    let r = registry::from_options(&o, Ownership::Process).unwrap();
    assert!(!format!("{r:?}").contains("s3cret"), "{r:?}");
    round_trip(&r, "authed").await;

    // etcd forgets its tokens when it restarts: the client authenticates again.
    r.register(&service("authed", &["n2"]), ttl(Duration::from_secs(30)))
        .await
        .unwrap();
    etcd.restart().await;
    let found = eventually(Duration::from_secs(10), "a read after the restart", || {
        r.get_service("authed")
    })
    .await;
    assert_eq!(found[0].nodes[0].id, "n2");
    r.register(&service("authed", &["n2"]), ttl(Duration::from_secs(30)))
        .await
        .unwrap();
    round_trip(&r, "authed-again").await;

    // Without credentials, with a wrong password, or without permission: clear errors.
    let anonymous = etcd_registry(&[etcd.address()]);
    let err = anonymous.get_service("authed").await.unwrap_err();
    assert_eq!(err.code(), 401, "{err}");
    assert!(err.detail().contains("username"), "{err}");
    let mut wrong = o.clone();
    wrong.registry_password = Some(Secret::new("wrong"));
    let err = registry::from_options(&wrong, Ownership::Process)
        .unwrap()
        .get_service("authed")
        .await
        .unwrap_err();
    assert_eq!(err.code(), 401, "{err}");
    assert!(
        err.detail().contains("check the username and password"),
        "{err}"
    );
    assert!(!err.detail().contains("wrong"), "{err}");
    let mut nobody = o.clone();
    nobody.registry_username = Some("nobody".into());
    nobody.registry_password = Some(Secret::new("pw"));
    let err = registry::from_options(&nobody, Ownership::Process)
        .unwrap()
        .register(&service("authed", &["x"]), ttl(Duration::from_secs(5)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), 401, "{err}");
    assert!(err.detail().contains("permission"), "{err}");
    // A user without a password is a settings error.
    let mut no_password = o.clone();
    no_password.registry_password = None;
    let err = registry::from_options(&no_password, Ownership::Process).unwrap_err();
    assert!(err.detail().contains("MICRO_REGISTRY_PASSWORD"), "{err}");
}

#[tokio::test]
async fn unreachable_etcd_is_a_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let r = etcd_registry(&[format!("127.0.0.1:{port}")]);
    let err = r.get_service("x").await.unwrap_err();
    assert_eq!(err.code(), 503);
    assert!(
        err.detail()
            .contains(&format!("cannot connect to 127.0.0.1:{port}")),
        "{err}"
    );
    assert!(err.detail().contains("--registry_address"), "{err}");
    let err = r.watch(None).await.err().expect("no watch");
    assert_eq!(err.code(), 503, "{err}");
    let err = registry::from_name("etcd", &["ftp://x:1".into()], Ownership::Process).unwrap_err();
    assert_eq!(err.code(), 400, "{err}");
    assert!(registry::NAMES.contains(&"etcd"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_are_one_key_per_node_under_the_prefix() {
    let Some(etcd) = EtcdServer::start().await else {
        return;
    };
    let client = etcd.client();
    let r = EtcdRegistry::new(client.clone());
    let mut s = service("layout/odd", &["n/1", "n2"]);
    s.version = "1.0".into();
    r.register(&s, ttl(Duration::from_secs(60))).await.unwrap();
    let prefix = "/micro/registry/";
    let kvs = client
        .post(
            "/v3/kv/range",
            &json!({"key": b64(prefix), "range_end": b64(range_end(prefix))}),
        )
        .await
        .unwrap();
    let mut keys: Vec<String> = kvs["kvs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|kv| micro::etcd::unb64(kv["key"].as_str().unwrap()))
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "/micro/registry/layout%2Fodd/1.0/n%2F1",
            "/micro/registry/layout%2Fodd/1.0/n2"
        ]
    );
    let leases: std::collections::BTreeSet<&str> = kvs["kvs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|kv| kv["lease"].as_str().unwrap())
        .collect();
    assert_eq!(leases.len(), 2, "one lease per node");
    let record: Service = serde_json::from_str(&micro::etcd::unb64(
        kvs["kvs"][0]["value"].as_str().unwrap(),
    ))
    .unwrap();
    assert_eq!(record.name, "layout/odd");
    assert_eq!(record.nodes.len(), 1);
    assert_eq!(r.get_service("layout/odd").await.unwrap()[0].nodes.len(), 2);
    // Someone deleting the key by hand: the next registration writes it again.
    client
        .post("/v3/kv/deleterange", &json!({"key": b64(&keys[1])}))
        .await
        .unwrap();
    r.register(&s, ttl(Duration::from_secs(60))).await.unwrap();
    assert_eq!(r.get_service("layout/odd").await.unwrap()[0].nodes.len(), 2);
    // Another prefix sees none of it.
    let other = EtcdRegistry::new(client.clone()).prefix("/staging/registry");
    assert!(other.list_services().await.unwrap().is_empty());
}
