//! The conformance suite every [`Registry`] implementation passes: written once, run
//! against the memory, local and mDNS registries (and any future backend).
//!
//! Each check is an `async fn` on [`Suite`] that panics with a clear message when
//! the registry misbehaves. Checks call the suite's factory once to get a registry
//! (a fresh one, or one shared with other checks: every check uses service names of
//! its own, so backends that share state — a network, a daemon — work too).
//!
//! Expiry is real time for file and network backends, so the checks use short TTLs
//! ([`Suite::ttl`], 400 ms by default) and wait for a condition with a bound
//! ([`Suite::deadline`], 3 s by default) instead of sleeping a fixed time wherever
//! they can. Run them on a runtime with real (not paused) time.
//!
//! ```no_run
//! # async fn doc() {
//! use std::sync::Arc;
//! use micro::registry::{conformance, MemoryRegistry, Registry};
//!
//! conformance::run_all(|| Arc::new(MemoryRegistry::new()) as Arc<dyn Registry>).await;
//! # }
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::time::Instant;

use super::{Endpoint, EventKind, Node, RegisterOptions, Registry, Service, Type, Watcher};

type Factory = Box<dyn Fn() -> Arc<dyn Registry> + Send + Sync>;

/// Runs every check of the suite against registries made by `make`.
///
/// ```no_run
/// # async fn doc() {
/// use std::sync::Arc;
/// use micro::registry::{conformance, LocalRegistry, Registry};
///
/// let dir = std::env::temp_dir().join("micro-conformance");
/// conformance::run_all(move || Arc::new(LocalRegistry::at(&dir)) as Arc<dyn Registry>).await;
/// # }
/// ```
pub async fn run_all(make: impl Fn() -> Arc<dyn Registry> + Send + Sync + 'static) {
    Suite::new(make).run_all().await;
}

/// The conformance checks, with the timing they use.
///
/// ```no_run
/// # async fn doc() {
/// use std::{sync::Arc, time::Duration};
/// use micro::registry::{conformance::Suite, MemoryRegistry, Registry};
///
/// let suite = Suite::new(|| Arc::new(MemoryRegistry::new()) as Arc<dyn Registry>)
///     .ttl(Duration::from_secs(1)) // a backend with whole-second TTLs
///     .deadline(Duration::from_secs(5));
/// suite.expires_after_ttl().await;
/// suite.run_all().await;
/// # }
/// ```
pub struct Suite {
    make: Factory,
    ttl: Duration,
    deadline: Duration,
}

impl fmt::Debug for Suite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Suite")
            .field("ttl", &self.ttl)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl Suite {
    /// A suite over registries made by `make`, with a 400 ms TTL and 3 s deadlines.
    pub fn new(make: impl Fn() -> Arc<dyn Registry> + Send + Sync + 'static) -> Self {
        Suite {
            make: Box::new(make),
            ttl: Duration::from_millis(400),
            deadline: Duration::from_secs(3),
        }
    }

    /// The TTL of the registrations that are meant to expire.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// How long to wait for something that must happen (an event, an expiry) beyond
    /// the time it needs.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// Every check, one after the other.
    pub async fn run_all(&self) {
        self.register_get_list().await;
        self.versions_kept_apart().await;
        self.reregister_refreshes_ttl().await;
        self.expires_after_ttl().await;
        self.deregister_removes_at_once().await;
        self.watch_one_service().await;
        self.watch_all_services().await;
        self.rejects_bad_input().await;
        self.unknown_service_is_404().await;
        self.many_nodes_and_services().await;
        self.concurrent_registrations().await;
    }

    /// A registered service comes back whole from `get_service` and `list_services`.
    pub async fn register_get_list(&self) {
        let r = (self.make)();
        let name = unique("conf-basic");
        let mut s = service(&name, "1.0.0", &["n1", "n2"]);
        s.metadata.insert("team".into(), "core".into());
        s.endpoints = vec![Endpoint {
            name: "Greeter.Hello".into(),
            request: Type {
                name: "HelloRequest".into(),
                schema: serde_json::json!({"type": "object", "properties": {"name": {"type": "string"}}}),
            },
            response: Type {
                name: "HelloResponse".into(),
                schema: serde_json::json!({"type": "object"}),
            },
            metadata: [("stream".to_string(), "false".to_string())].into(),
        }];
        s.nodes[0]
            .metadata
            .insert("protocol".into(), "grpc+json".into());
        r.register(&s, long()).await.expect("register");

        let got = r.get_service(&name).await.expect("get_service");
        assert_eq!(got.len(), 1, "one version: {got:?}");
        let g = &got[0];
        assert_eq!(
            (g.name.as_str(), g.version.as_str()),
            (name.as_str(), "1.0.0")
        );
        assert_eq!(g.metadata, s.metadata, "service metadata");
        assert_eq!(g.endpoints, s.endpoints, "endpoints");
        assert_eq!(by_id(&g.nodes), by_id(&s.nodes), "nodes");

        let all = r.list_services().await.expect("list_services");
        let listed: Vec<_> = all.iter().filter(|l| l.name == name).collect();
        assert_eq!(listed.len(), 1, "listed once: {all:?}");
        assert_eq!(listed[0].version, "1.0.0");
        assert_eq!(by_id(&listed[0].nodes), by_id(&s.nodes), "listed nodes");

        r.deregister(&s).await.expect("deregister");
    }

    /// Versions of one service are separate records, removed separately.
    pub async fn versions_kept_apart(&self) {
        let r = (self.make)();
        let name = unique("conf-versions");
        let mut v1 = service(&name, "v1", &["a"]);
        v1.metadata.insert("v".into(), "1".into());
        let mut v2 = service(&name, "v2", &["b", "c"]);
        v2.metadata.insert("v".into(), "2".into());
        r.register(&v1, long()).await.expect("register v1");
        r.register(&v2, long()).await.expect("register v2");

        let mut got = r.get_service(&name).await.expect("get_service");
        got.sort_by(|a, b| a.version.cmp(&b.version));
        assert_eq!(got.len(), 2, "two versions: {got:?}");
        assert_eq!(got[0].version, "v1");
        assert_eq!(ids(&got[0].nodes), ["a"]);
        assert_eq!(got[0].metadata["v"], "1");
        assert_eq!(got[1].version, "v2");
        assert_eq!(ids(&got[1].nodes), ["b", "c"]);
        assert_eq!(got[1].metadata["v"], "2");

        r.deregister(&v1).await.expect("deregister v1");
        let got = r.get_service(&name).await.expect("v2 is left");
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].version, "v2");
        assert_eq!(ids(&got[0].nodes), ["b", "c"]);
        r.deregister(&v2).await.expect("deregister v2");
    }

    /// Registering again before the TTL runs out keeps the node alive.
    pub async fn reregister_refreshes_ttl(&self) {
        let r = (self.make)();
        let name = unique("conf-refresh");
        let s = service(&name, "v1", &["a"]);
        let ttl = self.opts();
        for attempt in 1..=3 {
            let start = Instant::now();
            r.register(&s, ttl).await.expect("register");
            tokio::time::sleep(self.ttl.mul_f32(0.6)).await;
            let refreshed = Instant::now();
            r.register(&s, ttl).await.expect("register again");
            tokio::time::sleep_until(start + self.ttl.mul_f32(1.2)).await;
            let got = r.get_service(&name).await;
            if refreshed.elapsed() >= self.ttl.mul_f32(0.9) {
                // The machine stalled long enough to make the check meaningless.
                assert!(
                    attempt < 3,
                    "the machine is too slow for a {:?} TTL",
                    self.ttl
                );
                continue;
            }
            let got = got
                .unwrap_or_else(|e| panic!("the refreshed node expired with its first TTL: {e}"));
            assert_eq!(ids(&got[0].nodes), ["a"]);
            break;
        }
        self.wait_gone(&*r, &name).await;
    }

    /// A node not refreshed is gone after its TTL, and watchers see it leave.
    pub async fn expires_after_ttl(&self) {
        let r = (self.make)();
        let name = unique("conf-expiry");
        let mut w = r.watch(Some(&name)).await.expect("watch");
        let s = service(&name, "v1", &["a", "b"]);
        let start = Instant::now();
        r.register(&s, self.opts()).await.expect("register");
        let got = r.get_service(&name).await.expect("alive before its TTL");
        assert_eq!(ids(&got[0].nodes), ["a", "b"]);
        self.expect(&mut w, EventKind::Added, &name, &["a", "b"], true)
            .await;

        self.wait_gone(&*r, &name).await;
        assert!(
            start.elapsed() >= self.ttl.mul_f32(0.5),
            "gone after {:?}, before its TTL of {:?}",
            start.elapsed(),
            self.ttl
        );
        let listed = r.list_services().await.expect("list_services");
        assert!(
            listed.iter().all(|l| l.name != name),
            "expired but listed: {listed:?}"
        );
        self.expect(&mut w, EventKind::Removed, &name, &["a", "b"], true)
            .await;
    }

    /// Deregistering removes nodes at once (no waiting) and watchers see `Removed`.
    pub async fn deregister_removes_at_once(&self) {
        let r = (self.make)();
        let name = unique("conf-deregister");
        let mut one = r.watch(Some(&name)).await.expect("watch one");
        let mut all = r.watch(None).await.expect("watch all");
        let s = service(&name, "v1", &["a", "b"]);
        r.register(&s, long()).await.expect("register");
        self.expect(&mut one, EventKind::Added, &name, &["a", "b"], true)
            .await;
        self.expect(&mut all, EventKind::Added, &name, &["a", "b"], false)
            .await;

        r.deregister(&service(&name, "v1", &["a"]))
            .await
            .expect("deregister a");
        let got = r.get_service(&name).await.expect("b is left");
        assert_eq!(ids(&got[0].nodes), ["b"], "a is gone at once");
        self.expect(&mut one, EventKind::Removed, &name, &["a"], true)
            .await;

        r.deregister(&service(&name, "v1", &["b"]))
            .await
            .expect("deregister b");
        let err = r.get_service(&name).await.expect_err("nothing is left");
        assert_eq!(err.code(), 404, "{err}");
        let listed = r.list_services().await.expect("list_services");
        assert!(listed.iter().all(|l| l.name != name), "{listed:?}");
        self.expect(&mut one, EventKind::Removed, &name, &["b"], true)
            .await;
        self.expect(&mut all, EventKind::Removed, &name, &["a", "b"], false)
            .await;
    }

    /// A watcher of one service sees its nodes come, change and go, and nothing of
    /// other services; re-registering unchanged data is no event.
    pub async fn watch_one_service(&self) {
        let r = (self.make)();
        let name = unique("conf-watch");
        let other = unique("conf-other");
        let mut w = r.watch(Some(&name)).await.expect("watch");

        let noise = service(&other, "v1", &["x"]);
        r.register(&noise, long()).await.expect("register other");
        let a = service(&name, "v1", &["a"]);
        r.register(&a, long()).await.expect("register a");
        let ev = self
            .expect(&mut w, EventKind::Added, &name, &["a"], true)
            .await;
        assert_eq!(ev[0].version, "v1");
        assert_eq!(ev[0].nodes[0].address, a.nodes[0].address);

        // A refresh with the same data, then a real change: the next event must be
        // the change (a spurious `Updated` would carry the old metadata).
        r.register(&a, long()).await.expect("refresh a");
        let mut changed = a.clone();
        changed.nodes[0]
            .metadata
            .insert("weight".into(), "2".into());
        r.register(&changed, long()).await.expect("update a");
        let ev = self
            .expect(&mut w, EventKind::Updated, &name, &["a"], true)
            .await;
        assert_eq!(
            ev[0].nodes[0].metadata.get("weight").map(String::as_str),
            Some("2"),
            "the first Updated event must carry the change: {ev:?}"
        );

        let b = service(&name, "v1", &["b"]);
        r.register(&b, long()).await.expect("register b");
        self.expect(&mut w, EventKind::Added, &name, &["b"], true)
            .await;
        r.deregister(&a).await.expect("deregister a");
        let ev = self
            .expect(&mut w, EventKind::Removed, &name, &["a"], true)
            .await;
        assert_eq!(ev[0].version, "v1");
        r.deregister(&b).await.expect("deregister b");
        self.expect(&mut w, EventKind::Removed, &name, &["b"], true)
            .await;
        r.deregister(&noise).await.expect("deregister other");
    }

    /// A watcher of everything sees every service.
    pub async fn watch_all_services(&self) {
        let r = (self.make)();
        let (x, y) = (unique("conf-all-x"), unique("conf-all-y"));
        // One watcher per service awaited, so that neither consumes the other's events.
        let mut wx = r.watch(None).await.expect("watch");
        let mut wy = r.watch(None).await.expect("watch again");
        let sx = service(&x, "v1", &["x1"]);
        let sy = service(&y, "v2", &["y1", "y2"]);
        r.register(&sx, long()).await.expect("register x");
        r.register(&sy, long()).await.expect("register y");
        self.expect(&mut wx, EventKind::Added, &x, &["x1"], false)
            .await;
        let ev = self
            .expect(&mut wy, EventKind::Added, &y, &["y1", "y2"], false)
            .await;
        assert_eq!(ev[0].version, "v2");
        r.deregister(&sx).await.expect("deregister x");
        r.deregister(&sy).await.expect("deregister y");
        self.expect(&mut wx, EventKind::Removed, &x, &["x1"], false)
            .await;
        self.expect(&mut wy, EventKind::Removed, &y, &["y1", "y2"], false)
            .await;
    }

    /// Bad registrations are 400 errors, and register nothing.
    pub async fn rejects_bad_input(&self) {
        let r = (self.make)();
        let name = unique("conf-bad");
        let code = |res: Result<(), crate::Error>| match res {
            Ok(()) => panic!("accepted"),
            Err(e) => e.code(),
        };
        let unnamed = service("", "v1", &["a"]);
        assert_eq!(code(r.register(&unnamed, long()).await), 400, "empty name");
        let mut no_address = service(&name, "v1", &["a"]);
        no_address.nodes[0].address.clear();
        assert_eq!(
            code(r.register(&no_address, long()).await),
            400,
            "node without address"
        );
        let mut no_id = service(&name, "v1", &["a"]);
        no_id.nodes[0].id.clear();
        assert_eq!(
            code(r.register(&no_id, long()).await),
            400,
            "node without id"
        );
        let err = r
            .get_service(&name)
            .await
            .expect_err("nothing was registered");
        assert_eq!(err.code(), 404, "{err}");
    }

    /// An unknown service is a 404 error; deregistering it is no error.
    pub async fn unknown_service_is_404(&self) {
        let r = (self.make)();
        let name = unique("conf-unknown");
        let err = r.get_service(&name).await.expect_err("unknown service");
        assert_eq!(err.code(), 404, "{err}");
        r.deregister(&service(&name, "v1", &["a"]))
            .await
            .expect("deregistering an unknown service");
        let listed = r.list_services().await.expect("list_services");
        assert!(listed.iter().all(|l| l.name != name));
    }

    /// Many services of many nodes each are all kept.
    pub async fn many_nodes_and_services(&self) {
        let r = (self.make)();
        let base = unique("conf-many");
        let node_ids: Vec<String> = (0..10).map(|i| format!("node-{i:02}")).collect();
        let node_ids: Vec<&str> = node_ids.iter().map(String::as_str).collect();
        let all: Vec<Service> = (0..10)
            .map(|i| service(&format!("{base}-{i}"), "v1", &node_ids))
            .collect();
        for s in &all {
            r.register(s, long()).await.expect("register");
        }
        for s in &all {
            let got = r.get_service(&s.name).await.expect("get_service");
            assert_eq!(got.len(), 1);
            assert_eq!(by_id(&got[0].nodes), by_id(&s.nodes), "{}", s.name);
        }
        let listed = r.list_services().await.expect("list_services");
        for s in &all {
            let l = listed
                .iter()
                .find(|l| l.name == s.name)
                .unwrap_or_else(|| panic!("{} is not listed", s.name));
            assert_eq!(l.nodes.len(), 10, "{}", s.name);
        }
        for s in &all {
            r.deregister(s).await.expect("deregister");
            let err = r.get_service(&s.name).await.expect_err("deregistered");
            assert_eq!(err.code(), 404);
        }
    }

    /// Registrations and deregistrations from many tasks at once all take effect.
    pub async fn concurrent_registrations(&self) {
        let r = (self.make)();
        let name = unique("conf-concurrent");
        let tasks = 32;
        let one = |i: usize| service(&name, "v1", &[&format!("node-{i:02}")]);
        let run = |deregister: bool| {
            let handles: Vec<_> = (0..tasks)
                .map(|i| {
                    let (r, s) = (r.clone(), one(i));
                    tokio::spawn(async move {
                        if deregister {
                            r.deregister(&s).await
                        } else {
                            r.register(&s, long()).await
                        }
                    })
                })
                .collect();
            async move {
                for h in handles {
                    h.await.expect("task").expect("registry call");
                }
            }
        };
        run(false).await;
        let got = r.get_service(&name).await.expect("get_service");
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].nodes.len(), tasks, "{:?}", ids(&got[0].nodes));
        run(true).await;
        let err = r.get_service(&name).await.expect_err("all deregistered");
        assert_eq!(err.code(), 404);
    }

    fn opts(&self) -> RegisterOptions {
        RegisterOptions { ttl: self.ttl }
    }

    /// Polls `get_service` until the service is gone (404).
    async fn wait_gone(&self, r: &dyn Registry, name: &str) {
        let deadline = Instant::now() + self.ttl + self.deadline;
        loop {
            match r.get_service(name).await {
                Err(e) if e.code() == 404 => return,
                Err(e) => panic!("get_service({name}) failed: {e}"),
                Ok(found) => assert!(
                    Instant::now() < deadline,
                    "{name} still has nodes {:?} long after its TTL",
                    found.iter().flat_map(|s| ids(&s.nodes)).collect::<Vec<_>>()
                ),
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Reads `w` until events of `kind` for service `name` have covered node `ids`;
    /// returns those events. Events about other services are skipped (a failure if
    /// `only` says the watcher is filtered to `name`); a `Removed` of an awaited node
    /// while waiting for something else is a failure.
    async fn expect(
        &self,
        w: &mut Watcher,
        kind: EventKind,
        name: &str,
        ids: &[&str],
        only: bool,
    ) -> Vec<Service> {
        let mut missing: BTreeSet<&str> = ids.iter().copied().collect();
        let mut seen = Vec::new();
        within(
            self.deadline,
            &format!("{kind:?} of {name} {ids:?}"),
            async {
                while !missing.is_empty() {
                    let ev = match w.next().await {
                        Some(Ok(ev)) => ev,
                        Some(Err(e)) => panic!("watcher error: {e}"),
                        None => panic!("the watcher ended"),
                    };
                    if ev.service.name != name {
                        assert!(!only, "a watcher of {name} got an event of {ev:?}");
                        continue;
                    }
                    if ev.kind == kind {
                        for node in &ev.service.nodes {
                            missing.remove(node.id.as_str());
                        }
                        seen.push(ev.service);
                    } else if ev.kind == EventKind::Removed {
                        assert!(
                            ev.service
                                .nodes
                                .iter()
                                .all(|n| !ids.contains(&n.id.as_str())),
                            "unexpected {ev:?} while waiting for {kind:?}"
                        );
                    }
                }
            },
        )
        .await;
        seen
    }
}

async fn within<T>(limit: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(out) => out,
        Err(_) => panic!("no {what} within {limit:?}"),
    }
}

fn long() -> RegisterOptions {
    RegisterOptions {
        ttl: Duration::from_secs(60),
    }
}

/// A service name no other check (or concurrent run) uses.
fn unique(base: &str) -> String {
    format!("{base}-{:08x}", rand::random::<u32>())
}

fn service(name: &str, version: &str, ids: &[&str]) -> Service {
    Service {
        name: name.into(),
        version: version.into(),
        nodes: ids
            .iter()
            .enumerate()
            .map(|(i, id)| Node {
                id: (*id).into(),
                address: format!("127.0.0.1:{}", 20000 + i),
                metadata: [("protocol".to_string(), "grpc+json".to_string())].into(),
            })
            .collect(),
        ..Default::default()
    }
}

fn ids(nodes: &[Node]) -> Vec<&str> {
    let mut ids: Vec<&str> = nodes.iter().map(|n| n.id.as_str()).collect();
    ids.sort_unstable();
    ids
}

fn by_id(nodes: &[Node]) -> BTreeMap<&str, &Node> {
    nodes.iter().map(|n| (n.id.as_str(), n)).collect()
}

/// Invokes `$callback!` with every check of the suite by name, after the tokens
/// given (if any): the one list of checks, so that a check added to [`Suite`]
/// runs in the tests of every backend, in this crate (memory, local) and beside
/// it (etcd).
///
/// ```ignore
/// macro_rules! etcd_checks {
///     ($($check:ident),*) => { $( #[tokio::test] async fn $check() { /* suite.$check().await */ } )* };
/// }
/// micro::registry_conformance_checks!(etcd_checks);
/// ```
#[doc(hidden)]
#[macro_export]
macro_rules! registry_conformance_checks {
    ($callback:ident $(, $($args:tt)*)?) => {
        $callback!($($($args)*)?
            register_get_list,
            versions_kept_apart,
            reregister_refreshes_ttl,
            expires_after_ttl,
            deregister_removes_at_once,
            watch_one_service,
            watch_all_services,
            rejects_bad_input,
            unknown_service_is_404,
            many_nodes_and_services,
            concurrent_registrations
        );
    };
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::registry::local::test_support::TempDir;
    use crate::registry::{LocalRegistry, MemoryRegistry};

    fn memory() -> (Suite, Option<TempDir>) {
        let suite = Suite::new(|| Arc::new(MemoryRegistry::new()) as Arc<dyn Registry>);
        (suite, None)
    }

    /// Every registry in a directory of its own.
    fn local() -> (Suite, Option<TempDir>) {
        let tmp = TempDir::new();
        let base = tmp.path().to_path_buf();
        let n = AtomicUsize::new(0);
        let suite = Suite::new(move || {
            let dir = base.join(n.fetch_add(1, Ordering::Relaxed).to_string());
            Arc::new(LocalRegistry::at(dir)) as Arc<dyn Registry>
        });
        (suite, Some(tmp))
    }

    macro_rules! checks {
        ($suite:ident: $($check:ident),* $(,)?) => {
            mod $suite {
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $check() {
                        let (suite, _dir) = super::$suite();
                        suite.$check().await;
                    }
                )*
            }
        };
    }

    crate::registry_conformance_checks!(checks, memory:);
    crate::registry_conformance_checks!(checks, local:);

    #[tokio::test]
    async fn run_all_runs_every_check() {
        let (suite, _dir) = local();
        suite.run_all().await;
    }
}
