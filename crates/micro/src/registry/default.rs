//! The default registry: see [`DefaultRegistry`].

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures_util::future::{self, BoxFuture, FutureExt};
use futures_util::stream::{self, StreamExt};

use super::{
    found_or_not_found, Event, EventKind, Node, RegisterOptions, Registry, Service, Watcher,
};
use crate::Error;

/// The default registry: the same-machine registry merged with mDNS on the LAN.
///
/// go-micro's and Dapr's most reported discovery failure is mDNS that does not work:
/// in Docker, on macOS behind the application firewall, behind VPNs, or on Linux
/// loopback, which has no multicast by default. So the default registry is two
/// registries in one, and finding a service on the same machine never depends on
/// multicast:
///
/// - **Same machine: the local registry.** Every node is written to a per-machine
///   directory of node files ([`LocalRegistry`](super::LocalRegistry)); every process on
///   the machine reads it. No sockets, no multicast, so it works with no network at all,
///   behind any firewall or VPN, and across containers that share the directory as a
///   volume (containers that do not share it are separate machines as far as it goes).
/// - **Local network: mDNS (DNS-SD).** When the `mdns` feature is on (the default) and a
///   multicast-capable interface exists, every node is also announced as a
///   `_micro._tcp.local.` service instance ([`MdnsRegistry`](super::MdnsRegistry)), and
///   nodes announced by other hosts are merged in.
///
/// Reads ask both and merge: nodes are united by node id, and where both know a node,
/// or both know a service version, the local record wins (it is the complete one, with
/// JSON Schemas; see [`MdnsRegistry`](super::MdnsRegistry) for what travels over mDNS).
/// Watchers see one event per node change, however many halves report it. The mDNS
/// half is tagged with the identity of this machine's registry directory and ignores
/// announcements carrying the same tag: for those nodes the directory is the truth.
///
/// # When multicast does not work
///
/// If the mDNS daemon cannot start (no usable interface, no permission, mDNS switched
/// off with `MICRO_MDNS_INTERFACES=none`), the registry logs it once at info level and
/// runs local-only: everything on this machine still finds everything else on it. If
/// the daemon starts but multicast is filtered on the way (Wi-Fi isolation, VPN, Docker
/// bridge), the same happens silently: LAN peers are just not seen. Choose the
/// interfaces with `MICRO_MDNS_INTERFACES=eth0` (names or addresses).
///
/// # Latency
///
/// On the same machine a registered node is visible to the other processes as soon as
/// its file is written (a watcher sees it within the local registry's 200 ms poll),
/// a deregistered one is gone at once, and so is the node of a process killed with
/// `kill -9` (on Linux; elsewhere after its TTL). mDNS copies of this machine's nodes
/// are ignored, so they never bring such a node back. Across the LAN a new node is
/// seen in about 10 ms, a cleanly stopped one disappears one second after its
/// goodbye packet, and one whose host vanished within two minutes (the mDNS SRV
/// TTL). The first read of a fresh registry waits up to 300 ms for LAN answers.
///
/// # Outgrowing it
///
/// Across subnets, clouds or Kubernetes, multicast is not the tool: point services at
/// a registry server instead. An etcd registry is planned for a later release; it
/// will be chosen with `MICRO_REGISTRY` and `MICRO_REGISTRY_ADDRESS` alone, with no
/// other change to a service.
///
/// `MICRO_REGISTRY=mdns` selects it; [`DefaultRegistry::at`] puts the same-machine
/// half in a directory of your choice (what `MICRO_REGISTRY_ADDRESS` names).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), micro::Error> {
/// use std::sync::Arc;
/// use micro::registry::{DefaultRegistry, MemoryRegistry, Node, Registry, Service};
///
/// // Two in-memory halves stand in for the machine's directory and the LAN.
/// let (local, lan) = (Arc::new(MemoryRegistry::new()), Arc::new(MemoryRegistry::new()));
/// let registry = DefaultRegistry::with_parts(local.clone(), Some(lan.clone()));
///
/// let node = |id: &str, address: &str| Service {
///     name: "greeter".into(),
///     version: "latest".into(),
///     nodes: vec![Node { id: id.into(), address: address.into(), ..Default::default() }],
///     ..Default::default()
/// };
/// registry.register(&node("here", "127.0.0.1:9000"), Default::default()).await?;
/// lan.register(&node("there", "192.168.1.7:9000"), Default::default()).await?;
///
/// let nodes = &registry.get_service("greeter").await?[0].nodes;
/// assert_eq!(nodes.len(), 2);
/// assert_eq!(local.get_service("greeter").await?[0].nodes.len(), 1);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct DefaultRegistry {
    local: Arc<dyn Registry>,
    lan: Option<Arc<dyn Registry>>,
}

/// Whether "mDNS unavailable" was already logged by this process.
static LAN_REPORTED: AtomicBool = AtomicBool::new(false);

impl DefaultRegistry {
    /// The machine's local registry merged with mDNS when it can start.
    ///
    /// Never fails because of the network: without mDNS it is local-only (logged once).
    pub fn new() -> Self {
        DefaultRegistry::with_local(super::LocalRegistry::new())
    }

    /// Like [`new`](Self::new), with the same-machine half in directory `dir` (what
    /// `MICRO_REGISTRY_ADDRESS` names): processes sharing `dir` see each other.
    pub fn at(dir: impl Into<std::path::PathBuf>) -> Self {
        DefaultRegistry::with_local(super::LocalRegistry::at(dir))
    }

    /// The given same-machine registry merged with mDNS when it can start (how
    /// `registry::from_name` builds it, choosing the local half's ownership).
    pub fn with_local(local: super::LocalRegistry) -> Self {
        let lan = start_lan(&machine_scope(local.dir()));
        DefaultRegistry::with_parts(Arc::new(local), lan)
    }

    /// A registry built from explicit halves: `local` answers for this machine and
    /// always receives registrations; `lan`, when present, too.
    pub fn with_parts(local: Arc<dyn Registry>, lan: Option<Arc<dyn Registry>>) -> Self {
        DefaultRegistry { local, lan }
    }

    /// The same-machine half.
    pub fn local(&self) -> &Arc<dyn Registry> {
        &self.local
    }

    /// The LAN half, if mDNS is running.
    pub fn lan(&self) -> Option<&Arc<dyn Registry>> {
        self.lan.as_ref()
    }
}

impl Default for DefaultRegistry {
    fn default() -> Self {
        DefaultRegistry::new()
    }
}

fn report_lan(message: impl FnOnce() -> String) {
    if !LAN_REPORTED.swap(true, Ordering::Relaxed) {
        tracing::info!("{}", message());
    }
}

/// Names one machine's local registry directory: mDNS peers announcing the same
/// name are found through that directory, which also notices a killed process at
/// once, so their mDNS copies are ignored.
fn machine_scope(dir: &std::path::Path) -> String {
    let read = |path: &str| {
        std::fs::read_to_string(path)
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    let mut machine = read("/etc/machine-id");
    if machine.is_empty() {
        machine = read("/var/lib/dbus/machine-id");
    }
    let mut host = read("/proc/sys/kernel/hostname");
    if host.is_empty() {
        host = std::env::var("HOSTNAME")
            .or_else(|_| std::env::var("COMPUTERNAME"))
            .unwrap_or_default();
    }
    format!("{machine}\0{host}\0{}", dir.display())
}

#[cfg(feature = "mdns")]
fn start_lan(scope: &str) -> Option<Arc<dyn Registry>> {
    if super::mdns::disabled_by_env() {
        report_lan(|| {
            format!(
                "mDNS is switched off ({}=none): only services on this machine are found",
                super::mdns::INTERFACES_ENV
            )
        });
        return None;
    }
    match super::MdnsRegistry::builder().scope(scope).build() {
        Ok(registry) => Some(Arc::new(registry)),
        Err(e) => {
            report_lan(|| {
                format!(
                    "mDNS unavailable ({}): only services on this machine are found",
                    e.detail()
                )
            });
            None
        }
    }
}

#[cfg(not(feature = "mdns"))]
fn start_lan(_scope: &str) -> Option<Arc<dyn Registry>> {
    report_lan(|| {
        "built without the `mdns` feature: only services on this machine are found".into()
    });
    None
}

/// Services from the local half, then nodes of the LAN half they do not have.
fn merge(local: Vec<Service>, lan: Vec<Service>) -> Vec<Service> {
    let mut groups: BTreeMap<(String, String), Service> = BTreeMap::new();
    for service in local.into_iter().chain(lan) {
        match groups.entry((service.name.clone(), service.version.clone())) {
            std::collections::btree_map::Entry::Vacant(slot) => {
                slot.insert(service);
            }
            std::collections::btree_map::Entry::Occupied(mut slot) => {
                let merged = slot.get_mut();
                for node in service.nodes {
                    if !merged.nodes.iter().any(|n| n.id == node.id) {
                        merged.nodes.push(node);
                    }
                }
            }
        }
    }
    groups.into_values().collect()
}

/// A read's services, with "not found" as none.
fn found(result: Result<Vec<Service>, Error>, half: &str) -> Result<Vec<Service>, Error> {
    match result {
        Ok(services) => Ok(services),
        Err(e) if e.code() == 404 => Ok(Vec::new()),
        Err(e) => {
            tracing::debug!(error = %e, half, "registry read failed");
            Err(e)
        }
    }
}

impl DefaultRegistry {
    async fn read<'a, F>(&'a self, read: F) -> Result<Vec<Service>, Error>
    where
        F: Fn(&'a dyn Registry) -> BoxFuture<'a, Result<Vec<Service>, Error>>,
    {
        let lan = async {
            match &self.lan {
                Some(lan) => found(read(lan.as_ref()).await, "lan"),
                None => Ok(Vec::new()),
            }
        };
        let (local, lan) = future::join(read(self.local.as_ref()), lan).await;
        match (found(local, "local"), lan) {
            (Ok(local), Ok(lan)) => Ok(merge(local, lan)),
            (Ok(local), Err(_)) => Ok(local),
            (Err(e), Ok(lan)) if lan.is_empty() => Err(e),
            (Err(_), Ok(lan)) => Ok(lan),
            (Err(e), Err(_)) => Err(e),
        }
    }
}

impl Registry for DefaultRegistry {
    fn register<'a>(
        &'a self,
        service: &'a Service,
        opts: RegisterOptions,
    ) -> BoxFuture<'a, Result<(), Error>> {
        async move {
            let local = self.local.register(service, opts).await;
            if let (Some(lan), true) = (&self.lan, local.is_ok()) {
                if let Err(e) = lan.register(service, opts).await {
                    // The node is still found on this machine; the LAN is best effort.
                    tracing::warn!(error = %e, service = %service.name, "announcing on mDNS failed");
                }
            }
            local
        }
        .boxed()
    }

    fn deregister<'a>(&'a self, service: &'a Service) -> BoxFuture<'a, Result<(), Error>> {
        async move {
            let lan = async {
                if let Some(lan) = &self.lan {
                    if let Err(e) = lan.deregister(service).await {
                        tracing::debug!(error = %e, "mDNS deregister failed");
                    }
                }
            };
            let (local, ()) = future::join(self.local.deregister(service), lan).await;
            local
        }
        .boxed()
    }

    fn get_service<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<Service>, Error>> {
        async move { found_or_not_found(name, self.read(|r| r.get_service(name)).await?) }.boxed()
    }

    fn list_services(&self) -> BoxFuture<'_, Result<Vec<Service>, Error>> {
        async move { self.read(|r| r.list_services()).await }.boxed()
    }

    fn watch(&self, service: Option<&str>) -> BoxFuture<'_, Result<Watcher, Error>> {
        let filter = service.map(str::to_string);
        async move {
            let local = self.local.watch(filter.as_deref()).await?;
            let lan = match &self.lan {
                Some(lan) => match lan.watch(filter.as_deref()).await {
                    Ok(w) => Some(w),
                    Err(e) => {
                        tracing::debug!(error = %e, "mDNS watch failed; watching this machine only");
                        None
                    }
                },
                None => None,
            };
            // Seed with what each half knows now, so that a node both know and one of
            // them drops is not reported as gone.
            let mut merger = Merger::default();
            let snapshot = |r: &Arc<dyn Registry>| {
                let r = r.clone();
                let filter = filter.clone();
                async move {
                    let read = match &filter {
                        Some(name) => r.get_service(name).await,
                        None => r.list_services().await,
                    };
                    found(read, "seed").unwrap_or_default()
                }
            };
            for service in snapshot(&self.local).await {
                merger.seed(Half::Local, service);
            }
            if let (Some(lan_registry), Some(_)) = (&self.lan, &lan) {
                for service in snapshot(lan_registry).await {
                    merger.seed(Half::Lan, service);
                }
            }
            let local = local.map(|item| (Half::Local, item));
            let merged: stream::BoxStream<'static, (Half, Result<Event, Error>)> = match lan {
                Some(lan) => stream::select(local, lan.map(|item| (Half::Lan, item))).boxed(),
                None => local.boxed(),
            };
            Ok(merged
                .flat_map(move |(half, item)| stream::iter(merger.apply(half, item)))
                .boxed())
        }
        .boxed()
    }

    fn name(&self) -> &'static str {
        "mdns"
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Half {
    Local,
    Lan,
}

/// name, version, node id
type NodeKey = (String, String, String);

/// What each half says about one node.
#[derive(Debug, Default)]
struct Sides {
    local: Option<Service>,
    lan: Option<Service>,
}

impl Sides {
    /// The record a reader sees: the local one when there is one.
    fn effective(&self) -> Option<&Service> {
        self.local.as_ref().or(self.lan.as_ref())
    }

    fn side(&mut self, half: Half) -> &mut Option<Service> {
        match half {
            Half::Local => &mut self.local,
            Half::Lan => &mut self.lan,
        }
    }
}

/// Turns the two halves' events into one stream of per-node changes.
#[derive(Debug, Default)]
struct Merger {
    nodes: HashMap<NodeKey, Sides>,
}

fn single(service: &Service, node: Node) -> (NodeKey, Service) {
    let key = (
        service.name.clone(),
        service.version.clone(),
        node.id.clone(),
    );
    let one = Service {
        nodes: vec![node],
        ..service.clone()
    };
    (key, one)
}

impl Merger {
    fn seed(&mut self, half: Half, service: Service) {
        for node in service.nodes.clone() {
            let (key, one) = single(&service, node);
            *self.nodes.entry(key).or_default().side(half) = Some(one);
        }
    }

    fn apply(&mut self, half: Half, item: Result<Event, Error>) -> Vec<Result<Event, Error>> {
        let event = match item {
            Ok(event) => event,
            Err(e) => return vec![Err(e)],
        };
        let mut out = Vec::new();
        for node in event.service.nodes.clone() {
            let (key, one) = single(&event.service, node);
            let sides = self.nodes.entry(key.clone()).or_default();
            let before = sides.effective().cloned();
            *sides.side(half) = match event.kind {
                EventKind::Added | EventKind::Updated => Some(one),
                EventKind::Removed => None,
            };
            let after = sides.effective().cloned();
            if after.is_none() {
                self.nodes.remove(&key);
            }
            let change = match (before, after) {
                (None, Some(now)) => Some((EventKind::Added, now)),
                (Some(was), None) => Some((EventKind::Removed, was)),
                (Some(was), Some(now)) if was != now => Some((EventKind::Updated, now)),
                _ => None,
            };
            if let Some((kind, service)) = change {
                out.push(Ok(Event { kind, service }));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::registry::{Endpoint, MemoryRegistry, Type};

    fn svc(version: &str, id: &str, address: &str) -> Service {
        Service {
            name: "greeter".into(),
            version: version.into(),
            nodes: vec![Node {
                id: id.into(),
                address: address.into(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn parts() -> (Arc<MemoryRegistry>, Arc<MemoryRegistry>, DefaultRegistry) {
        let local = Arc::new(MemoryRegistry::new());
        let lan = Arc::new(MemoryRegistry::new());
        let registry = DefaultRegistry::with_parts(local.clone(), Some(lan.clone()));
        (local, lan, registry)
    }

    async fn next(w: &mut Watcher) -> Event {
        tokio::time::timeout(Duration::from_secs(2), w.next())
            .await
            .expect("an event in time")
            .expect("stream open")
            .expect("not an error")
    }

    async fn quiet(w: &mut Watcher) {
        let got = tokio::time::timeout(Duration::from_millis(100), w.next()).await;
        assert!(got.is_err(), "unexpected event: {got:?}");
    }

    #[tokio::test]
    async fn registers_in_both_halves_and_reads_merge_by_node_id() {
        let (local, lan, registry) = parts();
        let mut full = svc("v1", "a", "127.0.0.1:9000");
        full.endpoints = vec![Endpoint {
            name: "Greeter.Hello".into(),
            request: Type {
                name: "HelloRequest".into(),
                schema: serde_json::json!({"type": "object"}),
            },
            ..Default::default()
        }];
        registry.register(&full, Default::default()).await.unwrap();
        assert_eq!(
            local.get_service("greeter").await.unwrap(),
            vec![full.clone()]
        );
        assert_eq!(
            lan.get_service("greeter").await.unwrap(),
            vec![full.clone()]
        );

        // The LAN's view of the same node (rewritten address, no schema) loses to the
        // local record; a node only the LAN knows is added; so is another version.
        let mut summary = svc("v1", "a", "192.0.2.1:9000");
        summary.endpoints = vec![Endpoint {
            name: "Greeter.Hello".into(),
            ..Default::default()
        }];
        lan.register(&summary, Default::default()).await.unwrap();
        let mut remote = summary.clone();
        remote.nodes[0].id = "b".into();
        remote.nodes[0].address = "192.0.2.2:9000".into();
        lan.register(&remote, Default::default()).await.unwrap();
        lan.register(&svc("v2", "c", "192.0.2.3:9000"), Default::default())
            .await
            .unwrap();

        let got = registry.get_service("greeter").await.unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].version, "v1");
        assert_eq!(got[0].endpoints, full.endpoints, "local fields win");
        let nodes: Vec<(&str, &str)> = got[0]
            .nodes
            .iter()
            .map(|n| (n.id.as_str(), n.address.as_str()))
            .collect();
        assert_eq!(nodes, [("a", "127.0.0.1:9000"), ("b", "192.0.2.2:9000")]);
        assert_eq!(got[1].nodes[0].id, "c");
        assert_eq!(registry.list_services().await.unwrap(), got);

        registry.deregister(&full).await.unwrap();
        assert!(local.get_service("greeter").await.is_err());
        assert_eq!(
            registry.get_service("missing").await.unwrap_err().code(),
            404
        );
    }

    #[tokio::test]
    async fn works_without_a_lan_half() {
        let local = Arc::new(MemoryRegistry::new());
        let registry = DefaultRegistry::with_parts(local, None);
        assert!(registry.lan().is_none());
        let mut w = registry.watch(None).await.unwrap();
        registry
            .register(&svc("v1", "a", "127.0.0.1:1"), Default::default())
            .await
            .unwrap();
        assert_eq!(next(&mut w).await.kind, EventKind::Added);
        assert_eq!(registry.get_service("greeter").await.unwrap().len(), 1);
        assert_eq!(registry.name(), "mdns");
    }

    #[derive(Debug)]
    struct Broken;

    impl Registry for Broken {
        fn register<'a>(
            &'a self,
            _: &'a Service,
            _: RegisterOptions,
        ) -> BoxFuture<'a, Result<(), Error>> {
            async { Err(Error::service_unavailable("t", "down")) }.boxed()
        }
        fn deregister<'a>(&'a self, _: &'a Service) -> BoxFuture<'a, Result<(), Error>> {
            async { Err(Error::service_unavailable("t", "down")) }.boxed()
        }
        fn get_service<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<Vec<Service>, Error>> {
            async { Err(Error::service_unavailable("t", "down")) }.boxed()
        }
        fn list_services(&self) -> BoxFuture<'_, Result<Vec<Service>, Error>> {
            async { Err(Error::service_unavailable("t", "down")) }.boxed()
        }
        fn watch(&self, _: Option<&str>) -> BoxFuture<'_, Result<Watcher, Error>> {
            async { Err(Error::service_unavailable("t", "down")) }.boxed()
        }
        fn name(&self) -> &'static str {
            "broken"
        }
    }

    #[tokio::test]
    async fn a_failing_lan_half_never_breaks_the_machine() {
        let local = Arc::new(MemoryRegistry::new());
        let registry = DefaultRegistry::with_parts(local, Some(Arc::new(Broken)));
        let mut w = registry.watch(Some("greeter")).await.unwrap();
        let s = svc("v1", "a", "127.0.0.1:1");
        registry.register(&s, Default::default()).await.unwrap();
        assert_eq!(next(&mut w).await.kind, EventKind::Added);
        assert_eq!(
            registry.get_service("greeter").await.unwrap(),
            vec![s.clone()]
        );
        assert_eq!(registry.list_services().await.unwrap(), vec![s.clone()]);
        registry.deregister(&s).await.unwrap();
        assert_eq!(
            registry.get_service("greeter").await.unwrap_err().code(),
            404
        );

        // A failing local half is reported, unless the LAN has the answer.
        let registry =
            DefaultRegistry::with_parts(Arc::new(Broken), Some(Arc::new(MemoryRegistry::new())));
        assert_eq!(
            registry
                .register(&s, Default::default())
                .await
                .unwrap_err()
                .code(),
            503
        );
        assert_eq!(
            registry.get_service("greeter").await.unwrap_err().code(),
            503
        );
        registry
            .lan()
            .unwrap()
            .register(&s, Default::default())
            .await
            .unwrap();
        assert_eq!(registry.get_service("greeter").await.unwrap(), vec![s]);
    }

    #[tokio::test]
    async fn watch_reports_each_node_change_once() {
        let (local, lan, registry) = parts();
        // Known to both halves before the watch starts.
        let early = svc("v1", "early", "127.0.0.1:1");
        registry.register(&early, Default::default()).await.unwrap();

        let mut w = registry.watch(Some("greeter")).await.unwrap();
        // Registering through the merged registry reaches both halves: one Added.
        let a = svc("v1", "a", "127.0.0.1:2");
        registry.register(&a, Default::default()).await.unwrap();
        let ev = next(&mut w).await;
        assert_eq!(
            (ev.kind, ev.service.nodes[0].id.as_str()),
            (EventKind::Added, "a")
        );
        quiet(&mut w).await;

        // The LAN's different view of a local node changes nothing a reader sees.
        let mut seen_remotely = a.clone();
        seen_remotely.nodes[0].address = "192.0.2.1:2".into();
        lan.register(&seen_remotely, Default::default())
            .await
            .unwrap();
        quiet(&mut w).await;

        // A local change is an update.
        let mut moved = a.clone();
        moved.nodes[0].address = "127.0.0.1:3".into();
        local.register(&moved, Default::default()).await.unwrap();
        let ev = next(&mut w).await;
        assert_eq!(ev.kind, EventKind::Updated);
        assert_eq!(ev.service.nodes[0].address, "127.0.0.1:3");

        // The local record going away while the LAN still has the node: the reader
        // now sees the LAN's record, an update, not a removal.
        local.deregister(&moved).await.unwrap();
        let ev = next(&mut w).await;
        assert_eq!(ev.kind, EventKind::Updated);
        assert_eq!(ev.service.nodes[0].address, "192.0.2.1:2");
        lan.deregister(&a).await.unwrap();
        let ev = next(&mut w).await;
        assert_eq!(ev.kind, EventKind::Removed);
        assert_eq!(ev.service.nodes[0].id, "a");

        // A seeded node leaves one half: nothing; the other: removed.
        local.deregister(&early).await.unwrap();
        quiet(&mut w).await;
        lan.deregister(&early).await.unwrap();
        let ev = next(&mut w).await;
        assert_eq!(
            (ev.kind, ev.service.nodes[0].id.as_str()),
            (EventKind::Removed, "early")
        );

        // A LAN-only node comes and goes; other services are filtered out.
        let remote = svc("v1", "r", "192.0.2.9:1");
        lan.register(&remote, Default::default()).await.unwrap();
        let mut other = svc("v1", "x", "192.0.2.9:2");
        other.name = "other".into();
        lan.register(&other, Default::default()).await.unwrap();
        assert_eq!(next(&mut w).await.kind, EventKind::Added);
        registry.deregister(&remote).await.unwrap();
        let ev = next(&mut w).await;
        assert_eq!(
            (ev.kind, ev.service.nodes[0].id.as_str()),
            (EventKind::Removed, "r")
        );
        quiet(&mut w).await;
    }
}

/// The real halves, in network namespaces the tests create (never on this machine's
/// interfaces): see `registry::mdns::netns`.
#[cfg(all(test, feature = "mdns"))]
mod netns_tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use super::*;
    use crate::registry::mdns::netns::{self, Namespaces};
    use crate::registry::{Endpoint, LocalRegistry, MdnsRegistry, Type};

    const OUTSIDE: &str = "not inside a network namespace made by its outer test: skipped";

    fn record(name: &str, id: &str, address: &str) -> Service {
        Service {
            name: name.into(),
            version: "1.0.0".into(),
            metadata: BTreeMap::from([("owner".into(), "team-a".into())]),
            endpoints: vec![Endpoint {
                name: "Greeter.Hello".into(),
                request: Type {
                    name: "HelloRequest".into(),
                    schema: serde_json::json!({"type": "object", "properties": {"name": {"type": "string"}}}),
                },
                response: Type {
                    name: "HelloResponse".into(),
                    schema: serde_json::json!({"type": "object"}),
                },
                metadata: BTreeMap::from([("stream".into(), "false".into())]),
            }],
            nodes: vec![Node {
                id: id.into(),
                address: address.into(),
                metadata: BTreeMap::from([("protocol".into(), "grpc+json".into())]),
            }],
        }
    }

    async fn found_within(r: &DefaultRegistry, name: &str, within: Duration) -> Vec<Service> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Ok(found) = r.get_service(name).await {
                return found;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name} not found in {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn next_kind(w: &mut Watcher, kind: EventKind, within: Duration) -> Event {
        tokio::time::timeout(within, async {
            loop {
                match w.next().await {
                    Some(Ok(ev)) if ev.kind == kind => return ev,
                    Some(Ok(_)) => {}
                    other => panic!("watch ended: {other:?}"),
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no {kind:?} within {within:?}"))
    }

    /// The conformance suite against the default registry (a local directory per
    /// registry, mDNS on loopback with multicast on).
    #[test]
    fn conformance_with_both_halves() {
        let ns = match Namespaces::new(1, true) {
            Ok(ns) => ns,
            Err(e) => {
                eprintln!("skipping conformance_with_both_halves: {e}");
                return;
            }
        };
        let dir = ns.dir().display().to_string();
        let run = ns
            .spawn(
                0,
                &netns::test_path(module_path!(), "conformance_inner"),
                &[("MICRO_TEST_DIR", dir)],
            )
            .unwrap();
        netns::expect_all(vec![("conformance", run)], Duration::from_secs(120));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "run by conformance_with_both_halves inside a network namespace"]
    async fn conformance_inner() {
        if netns::inside().is_none() {
            eprintln!("{OUTSIDE}");
            return;
        }
        let base = PathBuf::from(std::env::var("MICRO_TEST_DIR").unwrap());
        let n = std::sync::atomic::AtomicUsize::new(0);
        crate::registry::conformance::run_all(move || {
            let dir = base.join(format!("local-{}", n.fetch_add(1, Ordering::Relaxed)));
            let lan = MdnsRegistry::new().expect("mDNS starts");
            Arc::new(DefaultRegistry::with_parts(
                Arc::new(LocalRegistry::at(dir)),
                Some(Arc::new(lan)),
            )) as Arc<dyn Registry>
        })
        .await;
    }

    /// No multicast anywhere (loopback without it, no other interface): two handles —
    /// as two processes would — still find each other through the machine's directory,
    /// whether mDNS starts for nothing or is switched off.
    #[test]
    fn same_machine_without_multicast() {
        let ns = match Namespaces::new(1, false) {
            Ok(ns) => ns,
            Err(e) => {
                eprintln!("skipping same_machine_without_multicast: {e}");
                return;
            }
        };
        let test = netns::test_path(module_path!(), "without_multicast_inner");
        let runs = [("mdns idle", "all"), ("mdns off", "none")]
            .into_iter()
            .map(|(label, interfaces)| {
                let xdg = ns.dir().join(interfaces);
                let env = [
                    ("XDG_RUNTIME_DIR", xdg.display().to_string()),
                    ("MICRO_MDNS_INTERFACES", interfaces.to_string()),
                ];
                (label, ns.spawn(0, &test, &env).unwrap())
            })
            .collect();
        netns::expect_all(runs, Duration::from_secs(30));
    }

    #[tokio::test]
    #[ignore = "run by same_machine_without_multicast inside a network namespace"]
    async fn without_multicast_inner() {
        if netns::inside().is_none() {
            eprintln!("{OUTSIDE}");
            return;
        }
        let xdg = std::env::var("XDG_RUNTIME_DIR").unwrap();
        std::fs::create_dir_all(&xdg).unwrap();
        let mdns_on = std::env::var("MICRO_MDNS_INTERFACES").unwrap() != "none";
        let started = tokio::time::Instant::now();
        let (one, two) = (DefaultRegistry::new(), DefaultRegistry::new());
        assert_eq!(one.lan().is_some(), mdns_on);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "building never waits"
        );

        let mut watch = two.watch(Some("greeter")).await.unwrap();
        let service = record("greeter", "greeter-1", "127.0.0.1:9000");
        one.register(&service, Default::default()).await.unwrap();
        let t = tokio::time::Instant::now();
        assert_eq!(
            two.get_service("greeter").await.unwrap(),
            vec![service.clone()]
        );
        eprintln!("found by the other handle in {:?}", t.elapsed());
        assert_eq!(
            next_kind(&mut watch, EventKind::Added, Duration::from_secs(2))
                .await
                .service,
            service
        );
        one.deregister(&service).await.unwrap();
        assert_eq!(two.get_service("greeter").await.unwrap_err().code(), 404);
        next_kind(&mut watch, EventKind::Removed, Duration::from_secs(2)).await;
    }

    /// Two hosts on a LAN (two namespaces, one veth link), each with its own machine
    /// directory: the default registry finds the other host's node over mDNS with its
    /// full record at a reachable address, and sees it leave.
    #[test]
    fn two_hosts_on_a_lan() {
        let ns = match Namespaces::new(2, false).and_then(|ns| ns.link(0, 1).map(|()| ns)) {
            Ok(ns) => ns,
            Err(e) => {
                eprintln!("skipping two_hosts_on_a_lan: {e}");
                return;
            }
        };
        let test = netns::test_path(module_path!(), "lan_host_inner");
        let dir = ns.dir().display().to_string();
        let runs = ["a", "b"]
            .into_iter()
            .enumerate()
            .map(|(i, role)| {
                let env = [
                    ("MICRO_TEST_ROLE", role.to_string()),
                    ("MICRO_TEST_DIR", dir.clone()),
                    ("XDG_RUNTIME_DIR", format!("{dir}/xdg-{role}")),
                ];
                (role, ns.spawn(i, &test, &env).unwrap())
            })
            .collect();
        netns::expect_all(runs, Duration::from_secs(45));
    }

    #[tokio::test]
    #[ignore = "run by two_hosts_on_a_lan inside a network namespace"]
    async fn lan_host_inner() {
        if netns::inside().is_none() {
            eprintln!("{OUTSIDE}");
            return;
        }
        let role = std::env::var("MICRO_TEST_ROLE").unwrap();
        let dir = PathBuf::from(std::env::var("MICRO_TEST_DIR").unwrap());
        std::fs::create_dir_all(std::env::var("XDG_RUNTIME_DIR").unwrap()).unwrap();
        let registry = DefaultRegistry::new();
        assert!(registry.lan().is_some(), "mDNS runs on the veth link");
        let service = record("alpha", "alpha-1", "127.0.0.1:9001");
        let wait_file = |name: &'static str| {
            let path = dir.join(name);
            async move {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
                while !path.exists() {
                    assert!(tokio::time::Instant::now() < deadline, "{name} never came");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        };
        if role == "a" {
            registry
                .register(&service, Default::default())
                .await
                .unwrap();
            wait_file("b-saw").await;
            registry.deregister(&service).await.unwrap();
            wait_file("b-done").await;
        } else {
            let mut watch = registry.watch(Some("alpha")).await.unwrap();
            let got = found_within(&registry, "alpha", Duration::from_secs(10)).await;
            let mut expected = service.clone();
            expected.nodes[0].address = format!("{}:9001", Namespaces::address(0));
            assert_eq!(got, vec![expected], "the full record, at host a's address");
            assert!(registry.local().get_service("alpha").await.is_err());
            std::fs::write(dir.join("b-saw"), "1").unwrap();
            next_kind(&mut watch, EventKind::Removed, Duration::from_secs(10)).await;
            assert_eq!(registry.get_service("alpha").await.unwrap_err().code(), 404);
            std::fs::write(dir.join("b-done"), "1").unwrap();
        }
    }

    /// A process killed without deregistering (no goodbye packet either) vanishes for
    /// the other processes of its machine at once, through the local registry: the
    /// copy their mDNS halves heard (multicast is on here) does not bring it back.
    #[test]
    fn a_killed_process_is_not_resurrected_by_mdns() {
        let ns = match Namespaces::new(1, true) {
            Ok(ns) => ns,
            Err(e) => {
                eprintln!("skipping a_killed_process_is_not_resurrected_by_mdns: {e}");
                return;
            }
        };
        let dir = ns.dir().display().to_string();
        let env = [
            ("MICRO_TEST_DIR", dir.clone()),
            ("XDG_RUNTIME_DIR", format!("{dir}/xdg")),
        ];
        let victim = ns
            .spawn(0, &netns::test_path(module_path!(), "victim_inner"), &env)
            .unwrap();
        let observer = ns
            .spawn(0, &netns::test_path(module_path!(), "observer_inner"), &env)
            .unwrap();
        netns::expect_all(vec![("observer", observer)], Duration::from_secs(30));
        let _ = victim.wait(Duration::from_secs(5));
    }

    #[tokio::test]
    #[ignore = "run by a_killed_process_is_not_resurrected_by_mdns in a network namespace"]
    async fn victim_inner() {
        if netns::inside().is_none() {
            eprintln!("{OUTSIDE}");
            return;
        }
        let dir = PathBuf::from(std::env::var("MICRO_TEST_DIR").unwrap());
        std::fs::create_dir_all(std::env::var("XDG_RUNTIME_DIR").unwrap()).unwrap();
        let registry = DefaultRegistry::new();
        let service = record("victim", "victim-1", "127.0.0.1:9100");
        registry
            .register(&service, Default::default())
            .await
            .unwrap();
        std::fs::write(dir.join("victim-pid"), std::process::id().to_string()).unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !dir.join("observer-saw").exists() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Die like `kill -9`: no deregistration, no destructors, no goodbye packets.
        std::process::exit(0);
    }

    #[tokio::test]
    #[ignore = "run by a_killed_process_is_not_resurrected_by_mdns in a network namespace"]
    async fn observer_inner() {
        if netns::inside().is_none() {
            eprintln!("{OUTSIDE}");
            return;
        }
        let dir = PathBuf::from(std::env::var("MICRO_TEST_DIR").unwrap());
        std::fs::create_dir_all(std::env::var("XDG_RUNTIME_DIR").unwrap()).unwrap();
        let registry = DefaultRegistry::new();
        assert!(registry.lan().is_some(), "mDNS runs on loopback here");
        found_within(&registry, "victim", Duration::from_secs(10)).await;
        let pid = std::fs::read_to_string(dir.join("victim-pid")).unwrap();
        // Time for the victim's mDNS announcement to reach this process's cache.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        std::fs::write(dir.join("observer-saw"), "1").unwrap();
        // Dead: gone, or a zombie its parent (the outer test) has not reaped yet.
        let stat = PathBuf::from(format!("/proc/{}/stat", pid.trim()));
        let alive = || {
            std::fs::read_to_string(&stat).is_ok_and(|s| {
                let state = s.rsplit_once(") ").map(|(_, rest)| rest.chars().next());
                !matches!(state, Some(Some('Z' | 'X')))
            })
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while alive() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the victim lives on"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let err = registry.get_service("victim").await.unwrap_err();
        assert_eq!(err.code(), 404, "a dead process's node is gone at once");
    }
}
