//! Tests of the mDNS registry. Everything that multicasts runs in network namespaces
//! the test creates (see [`netns`](super::netns)): never on the machine's interfaces.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use mdns_sd::ScopedIp;

use super::netns::{self, Namespaces};
use super::*;
use crate::registry::{Endpoint, Node, Type};

const OUTSIDE: &str = "not inside a network namespace made by its outer test: skipped (it would multicast on this machine's interfaces)";

fn record(name: &str, id: &str, address: &str, schema_fields: usize) -> Service {
    let schema = serde_json::json!({
        "type": "object",
        "properties": (0..schema_fields)
            .map(|i| (format!("field_{i}"), serde_json::json!({"type": "string", "description": format!("field number {i}, {}", i * 7919 % 1009)})))
            .collect::<serde_json::Map<_, _>>(),
    });
    Service {
        name: name.into(),
        version: "1.0.0".into(),
        metadata: BTreeMap::from([("owner".into(), "team-a".into())]),
        endpoints: ["Hello", "Stream"]
            .iter()
            .map(|m| Endpoint {
                name: format!("Greeter.{m}"),
                request: Type {
                    name: "HelloRequest".into(),
                    schema: schema.clone(),
                },
                response: Type {
                    name: "HelloResponse".into(),
                    schema: schema.clone(),
                },
                metadata: BTreeMap::from([(
                    "stream".into(),
                    if *m == "Stream" { "server" } else { "false" }.into(),
                )]),
            })
            .collect(),
        nodes: vec![Node {
            id: id.into(),
            address: address.into(),
            metadata: BTreeMap::from([
                ("protocol".into(), "grpc+json".into()),
                ("registry".into(), "mdns".into()),
            ]),
        }],
    }
}

fn ttl(secs: u64) -> RegisterOptions {
    RegisterOptions {
        ttl: Duration::from_secs(secs),
    }
}

async fn event_where(
    w: &mut Watcher,
    within: Duration,
    what: &str,
    pred: impl Fn(&Event) -> bool,
) -> Event {
    tokio::time::timeout(within, async {
        loop {
            match w.next().await {
                Some(Ok(ev)) if pred(&ev) => return ev,
                Some(Ok(ev)) => eprintln!("(other event: {:?} {})", ev.kind, ev.service.name),
                Some(Err(e)) => panic!("watch error: {e}"),
                None => panic!("watch ended"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {what} within {within:?}"))
}

async fn wait_file(path: &Path, within: Duration) -> String {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            if !text.is_empty() {
                return text;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} did not appear within {within:?}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The named service as soon as the registry knows it.
async fn found_within(registry: &MdnsRegistry, name: &str, within: Duration) -> Vec<Service> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Ok(found) = registry.get_service(name).await {
            return found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} not found within {within:?}: {}",
            registry.diagnostics()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn unix_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default()
}

// ---- no network ---------------------------------------------------------------

#[test]
fn interface_lists_parse() {
    assert_eq!(Interfaces::parse(""), Interfaces::All);
    assert_eq!(Interfaces::parse("none"), Interfaces::Off);
    assert_eq!(Interfaces::parse("OFF"), Interfaces::Off);
    assert_eq!(
        Interfaces::parse(" eth0, 192.168.1.20 ,"),
        Interfaces::Only(vec!["eth0".into(), "192.168.1.20".into()])
    );
}

#[test]
fn loopback_addresses_of_other_hosts_are_replaced() {
    let remote: HashSet<ScopedIp> = [
        "192.0.2.77".parse::<IpAddr>().unwrap(),
        "fe80::1".parse().unwrap(),
    ]
    .into_iter()
    .map(ScopedIp::from)
    .collect();
    assert_eq!(
        reachable_address("127.0.0.1:9000", &remote).as_deref(),
        Some("192.0.2.77:9000")
    );
    assert_eq!(
        reachable_address("[::]:9000", &remote).as_deref(),
        Some("192.0.2.77:9000")
    );
    assert_eq!(
        reachable_address("localhost:9000", &remote).as_deref(),
        Some("192.0.2.77:9000")
    );
    // A specific address or a host name is what the node asked for.
    assert_eq!(reachable_address("10.1.2.3:9000", &remote), None);
    assert_eq!(reachable_address("greeter.internal:9000", &remote), None);
    // Announced from this very network stack: loopback works as it is.
    let here: HashSet<ScopedIp> = [ScopedIp::from("127.0.0.1".parse::<IpAddr>().unwrap())]
        .into_iter()
        .collect();
    assert_eq!(reachable_address("127.0.0.1:9000", &here), None);
    // Only a link-local IPv6 address: nothing usable to put in host:port.
    let v6: HashSet<ScopedIp> = [ScopedIp::from("fe80::2".parse::<IpAddr>().unwrap())]
        .into_iter()
        .collect();
    assert_eq!(reachable_address("127.0.0.1:9000", &v6), None);
    assert_eq!(port_of("10.0.0.1:80"), 80);
    assert_eq!(port_of("nonsense"), 0);
}

// ---- two hosts on a LAN: two namespaces joined by a veth pair ---------------------

/// Two hosts, each running an [`MdnsRegistry`], find each other's nodes with the
/// full record, see a deregistration at once, and keep a node that did not go.
#[test]
fn lan_hosts_discover_each_other() {
    let ns = match Namespaces::new(2, false).and_then(|ns| ns.link(0, 1).map(|()| ns)) {
        Ok(ns) => ns,
        Err(e) => {
            eprintln!("skipping lan_hosts_discover_each_other: {e}");
            return;
        }
    };
    let test = netns::test_path(module_path!(), "lan_peer");
    let dir = ns.dir().display().to_string();
    let env = |role: &str| {
        vec![
            ("MICRO_TEST_ROLE", role.to_string()),
            ("MICRO_TEST_DIR", dir.clone()),
        ]
    };
    let a = ns.spawn(0, &test, &env("a")).unwrap();
    let b = ns.spawn(1, &test, &env("b")).unwrap();
    netns::expect_all(vec![("host a", a), ("host b", b)], Duration::from_secs(45));
}

#[tokio::test]
#[ignore = "run by lan_hosts_discover_each_other inside a network namespace"]
async fn lan_peer() {
    if netns::inside().is_none() {
        eprintln!("{OUTSIDE}");
        return;
    }
    let role = std::env::var("MICRO_TEST_ROLE").unwrap();
    let dir = PathBuf::from(std::env::var("MICRO_TEST_DIR").unwrap());
    let (me, other, other_ip) = if role == "a" {
        ("alpha", "beta", Namespaces::address(1))
    } else {
        ("beta", "alpha", Namespaces::address(0))
    };
    let registry = MdnsRegistry::new().unwrap();
    let mut watch = registry.watch(Some(other)).await.unwrap();
    let started = std::time::Instant::now();

    // A wildcard-bound service registers a loopback address; peers must get ours.
    let mine = record(me, &format!("{me}-1"), "127.0.0.1:9001", 3);
    registry.register(&mine, ttl(60)).await.unwrap();
    let bulky = record("bulky", "bulky-1", "192.0.2.1:9003", 150);
    if role == "a" {
        registry.register(&bulky, ttl(60)).await.unwrap();
    }

    // The other host may have been found before the watch began: poll the cache.
    let expected = record(other, &format!("{other}-1"), &format!("{other_ip}:9001"), 3);
    let got = found_within(&registry, other, Duration::from_secs(10)).await;
    eprintln!("{me}: saw {other} {:?} after starting", started.elapsed());
    assert_eq!(
        got,
        vec![expected],
        "the full record, at a reachable address"
    );
    assert_eq!(
        registry.detail_of(&format!("{other}-1")),
        Some(Detail::Full)
    );
    // Own nodes are answered as registered.
    assert_eq!(
        registry.get_service(me).await.unwrap()[0].nodes[0].address,
        "127.0.0.1:9001"
    );

    if role == "b" {
        // Too big for one packet: endpoint names and types, no schemas.
        let got = found_within(&registry, "bulky", Duration::from_secs(10)).await;
        assert_eq!(registry.detail_of("bulky-1"), Some(Detail::Summary));
        assert_eq!(got[0].nodes, bulky.nodes, "a specific address is kept");
        assert_eq!(got[0].metadata, bulky.metadata);
        let names: Vec<&str> = got[0].endpoints.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["Greeter.Hello", "Greeter.Stream"]);
        assert_eq!(got[0].endpoints[1].metadata["stream"], "server");
        assert_eq!(got[0].endpoints[0].request.name, "HelloRequest");
        assert_eq!(got[0].endpoints[0].request.schema, serde_json::Value::Null);
        std::fs::write(dir.join("b-saw"), "1").unwrap();

        let ev = event_where(&mut watch, Duration::from_secs(10), "Removed", |e| {
            e.kind == EventKind::Removed
        })
        .await;
        let sent: u128 = wait_file(&dir.join("a-deregistered"), Duration::from_secs(1))
            .await
            .trim()
            .parse()
            .unwrap();
        eprintln!(
            "beta: goodbye for alpha seen {} ms after deregister",
            unix_ms().saturating_sub(sent)
        );
        assert_eq!(ev.service.nodes[0].id, "alpha-1");
        assert_eq!(registry.get_service("alpha").await.unwrap_err().code(), 404);
        // Withdrawing alpha must not take bulky (same host) along, also once the
        // goodbye's one-second grace has run out.
        // (Host names are per node for this: a goodbye also withdraws the addresses
        // of its host name.)
        let until = tokio::time::Instant::now() + Duration::from_millis(1500);
        while tokio::time::Instant::now() < until {
            assert!(registry.get_service("bulky").await.is_ok(), "bulky stays");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let names: Vec<String> = registry
            .list_services()
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(names, ["beta", "bulky"]);
        std::fs::write(dir.join("b-done"), "1").unwrap();
    } else {
        wait_file(&dir.join("b-saw"), Duration::from_secs(20)).await;
        std::fs::write(dir.join("a-deregistered"), unix_ms().to_string()).unwrap();
        registry.deregister(&mine).await.unwrap();
        assert_eq!(registry.get_service("alpha").await.unwrap_err().code(), 404);
        wait_file(&dir.join("b-done"), Duration::from_secs(20)).await;
    }
}

// ---- one host: loopback with multicast on, and with it off ------------------------

/// Two registries on loopback (multicast switched on by the test) see each other,
/// and keep the loopback address since both share one network stack.
#[test]
fn loopback_with_multicast() {
    let ns = match Namespaces::new(1, true) {
        Ok(ns) => ns,
        Err(e) => {
            eprintln!("skipping loopback_with_multicast: {e}");
            return;
        }
    };
    let run = ns
        .spawn(0, &netns::test_path(module_path!(), "loopback_pair"), &[])
        .unwrap();
    netns::expect_all(vec![("loopback", run)], Duration::from_secs(30));
}

#[tokio::test]
#[ignore = "run by loopback_with_multicast inside a network namespace"]
async fn loopback_pair() {
    if netns::inside().is_none() {
        eprintln!("{OUTSIDE}");
        return;
    }
    let announcer = MdnsRegistry::new().unwrap();
    let listener = MdnsRegistry::new().unwrap();
    let mut watch = listener.watch(None).await.unwrap();
    let service = record("gamma", "gamma-1", "127.0.0.1:9100", 2);
    announcer.register(&service, ttl(60)).await.unwrap();
    let ev = event_where(&mut watch, Duration::from_secs(10), "Added", |e| {
        e.kind == EventKind::Added
    })
    .await;
    assert_eq!(ev.service, service);
    // Registering the same record again sends nothing and changes nothing.
    announcer.register(&service, ttl(60)).await.unwrap();
    // A changed record is an update.
    let mut changed = service.clone();
    changed.nodes[0].metadata.insert("zone".into(), "b".into());
    announcer.register(&changed, ttl(60)).await.unwrap();
    let ev = event_where(&mut watch, Duration::from_secs(10), "Updated", |e| {
        e.kind == EventKind::Updated
    })
    .await;
    assert_eq!(ev.service, changed);
    announcer.deregister(&changed).await.unwrap();
    let ev = event_where(&mut watch, Duration::from_secs(10), "Removed", |e| {
        e.kind == EventKind::Removed
    })
    .await;
    assert_eq!(ev.service.nodes[0].id, "gamma-1");
    assert_eq!(listener.get_service("gamma").await.unwrap_err().code(), 404);
}

/// With no multicast at all, the registry still answers for its own nodes, expires
/// them after their TTL and tells watchers.
#[test]
fn no_multicast_at_all() {
    let ns = match Namespaces::new(1, false) {
        Ok(ns) => ns,
        Err(e) => {
            eprintln!("skipping no_multicast_at_all: {e}");
            return;
        }
    };
    let run = ns
        .spawn(0, &netns::test_path(module_path!(), "alone"), &[])
        .unwrap();
    netns::expect_all(vec![("alone", run)], Duration::from_secs(30));
}

#[tokio::test]
#[ignore = "run by no_multicast_at_all inside a network namespace"]
async fn alone() {
    if netns::inside().is_none() {
        eprintln!("{OUTSIDE}");
        return;
    }
    let registry = MdnsRegistry::builder()
        .warmup(Duration::from_millis(50))
        .build()
        .unwrap();
    assert_eq!(registry.name(), "mdns");
    let mut watch = registry.watch(Some("delta")).await.unwrap();
    let service = record("delta", "delta-1", "127.0.0.1:9200", 1);
    registry.register(&service, ttl(1)).await.unwrap();
    assert_eq!(
        event_where(&mut watch, Duration::from_secs(1), "Added", |_| true)
            .await
            .kind,
        EventKind::Added
    );
    assert_eq!(
        registry.get_service("delta").await.unwrap(),
        vec![service.clone()]
    );
    // Not renewed: withdrawn after the TTL, by the background thread.
    let ev = event_where(&mut watch, Duration::from_secs(3), "Removed", |_| true).await;
    assert_eq!(ev.kind, EventKind::Removed);
    assert_eq!(registry.get_service("delta").await.unwrap_err().code(), 404);
    assert!(registry.list_services().await.unwrap().is_empty());
    assert!(format!("{registry:?}").contains("MdnsRegistry"));
}

// ---- the conformance suite, on loopback with multicast on -------------------------

/// The registry conformance suite against [`MdnsRegistry`], with every registry's
/// multicast echoed back on loopback (switched on by the test).
#[test]
fn conformance_on_loopback() {
    let ns = match Namespaces::new(1, true) {
        Ok(ns) => ns,
        Err(e) => {
            eprintln!("skipping conformance_on_loopback: {e}");
            return;
        }
    };
    let run = ns
        .spawn(
            0,
            &netns::test_path(module_path!(), "conformance_inner"),
            &[],
        )
        .unwrap();
    netns::expect_all(vec![("conformance", run)], Duration::from_secs(120));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by conformance_on_loopback inside a network namespace"]
async fn conformance_inner() {
    if netns::inside().is_none() {
        eprintln!("{OUTSIDE}");
        return;
    }
    crate::registry::conformance::run_all(|| {
        Arc::new(MdnsRegistry::new().expect("mDNS starts")) as Arc<dyn Registry>
    })
    .await;
}
