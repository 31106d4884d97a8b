//! LAN discovery by mDNS: see [`MdnsRegistry`].

mod txt;

#[cfg(test)]
pub(crate) mod netns;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use futures_util::future::{BoxFuture, FutureExt};
use mdns_sd::{
    DaemonEvent, IfKind, Receiver, RecvTimeoutError, ScopedIp, ServiceDaemon, ServiceEvent,
    ServiceInfo,
};
use tokio::sync::broadcast;
use tokio::time::Instant;

use super::{
    broadcast_watcher, found_or_not_found, Event, EventKind, RegisterOptions, Registry, Service,
    Watcher,
};
use crate::Error;

pub(crate) use txt::Detail;

/// The DNS-SD service type every micro node is announced under.
pub(crate) const SERVICE_TYPE: &str = "_micro._tcp.local.";

/// The environment variable choosing the interfaces mDNS runs on: a comma-separated
/// list of interface names or addresses, or `none` to switch mDNS off.
pub(crate) const INTERFACES_ENV: &str = "MICRO_MDNS_INTERFACES";

/// How long reads wait, right after the registry is built, for the first answers.
const DEFAULT_WARMUP: Duration = Duration::from_millis(300);
/// How long after a deregistration our own echoes are ignored.
const TOMBSTONE: Duration = Duration::from_secs(5);
/// How long deregistering waits for the daemon to confirm the goodbye went out.
const GOODBYE_WAIT: Duration = Duration::from_secs(1);
const ERR_ID: &str = "micro.registry";
/// How often a command is retried while the daemon's queue is full, and the pause.
const RETRIES: usize = 100;
const RETRY_PAUSE: Duration = Duration::from_millis(10);

/// Runs a daemon command, waiting while its queue is full (at most a second).
async fn retry<T>(command: impl Fn() -> mdns_sd::Result<T>) -> mdns_sd::Result<T> {
    let mut attempt = 0;
    loop {
        match command() {
            Err(mdns_sd::Error::Again) if attempt < RETRIES => {
                attempt += 1;
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            other => return other,
        }
    }
}

/// Which interfaces mDNS uses.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Interfaces {
    /// mdns-sd's default: every interface that can join the group.
    All,
    /// Only these names or addresses.
    Only(Vec<String>),
    /// mDNS switched off.
    Off,
}

impl Interfaces {
    fn parse(value: &str) -> Interfaces {
        let value = value.trim();
        if value.is_empty() || value.eq_ignore_ascii_case("all") {
            return Interfaces::All;
        }
        if ["none", "off", "false", "0"]
            .iter()
            .any(|v| value.eq_ignore_ascii_case(v))
        {
            return Interfaces::Off;
        }
        Interfaces::Only(
            value
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
        )
    }

    fn from_env() -> Interfaces {
        std::env::var(INTERFACES_ENV).map_or(Interfaces::All, |v| Interfaces::parse(&v))
    }
}

/// Whether `MICRO_MDNS_INTERFACES` switches mDNS off (`none`, `off`).
pub(crate) fn disabled_by_env() -> bool {
    Interfaces::from_env() == Interfaces::Off
}

/// Builds an [`MdnsRegistry`].
///
/// ```no_run
/// # fn main() -> Result<(), micro::Error> {
/// use std::time::Duration;
/// use micro::registry::MdnsRegistry;
///
/// let registry = MdnsRegistry::builder()
///     .interfaces(["eth0"])
///     .warmup(Duration::from_millis(500))
///     .build()?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct MdnsBuilder {
    interfaces: Option<Interfaces>,
    scope: Option<String>,
    port: Option<u16>,
    warmup: Option<Duration>,
}

impl MdnsBuilder {
    /// Runs mDNS only on these interfaces, by name (`eth0`) or address
    /// (`192.168.1.20`). Without this, `MICRO_MDNS_INTERFACES` decides, and without
    /// that every interface that can join the multicast group is used.
    pub fn interfaces<I, S>(mut self, interfaces: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.interfaces = Some(Interfaces::Only(
            interfaces.into_iter().map(Into::into).collect(),
        ));
        self
    }

    /// Uses another UDP port than 5353; every peer must use the same one.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// How long reads made right after building wait for the first answers from the
    /// network (300 ms by default; later reads never wait).
    pub fn warmup(mut self, warmup: Duration) -> Self {
        self.warmup = Some(warmup);
        self
    }

    /// Tags this registry's announcements with `scope` (any text; it travels hashed)
    /// and ignores peers announcing the same scope: registries that see each other
    /// another way, such as through one machine's local registry directory. This is
    /// how [`DefaultRegistry`](super::DefaultRegistry) keeps the local registry, which
    /// notices a killed process at once, authoritative for its own machine.
    pub fn scope(mut self, scope: impl AsRef<str>) -> Self {
        self.scope = Some(format!("{:016x}", txt::fnv1a(scope.as_ref().as_bytes())));
        self
    }

    /// Starts the mDNS daemon and begins browsing.
    ///
    /// Fails with a 503 error when mDNS is switched off (`MICRO_MDNS_INTERFACES=none`)
    /// or the daemon cannot start. A daemon that starts but finds no multicast-capable
    /// interface still works as a registry of this process's own nodes.
    pub fn build(self) -> Result<MdnsRegistry, Error> {
        let interfaces = self.interfaces.unwrap_or_else(Interfaces::from_env);
        if interfaces == Interfaces::Off {
            return Err(Error::service_unavailable(
                ERR_ID,
                format!("mDNS is switched off ({INTERFACES_ENV}=none)"),
            ));
        }
        let unavailable =
            |e: mdns_sd::Error| Error::service_unavailable(ERR_ID, format!("mDNS: {e}"));
        let daemon = match self.port {
            Some(port) => ServiceDaemon::new_with_port(port),
            None => ServiceDaemon::new(),
        }
        .map_err(unavailable)?;
        if let Interfaces::Only(list) = &interfaces {
            let kinds: Vec<IfKind> = list
                .iter()
                .map(|s| match s.parse::<IpAddr>() {
                    Ok(ip) => IfKind::Addr(ip),
                    Err(_) => IfKind::Name(s.clone()),
                })
                .collect();
            daemon.disable_interface(IfKind::All).map_err(unavailable)?;
            daemon.enable_interface(kinds).map_err(unavailable)?;
        }
        let monitor = daemon.monitor().map_err(unavailable)?;
        let browse = daemon.browse(SERVICE_TYPE).map_err(unavailable)?;

        let (events, _) = broadcast::channel(1024);
        let inner = Arc::new(Inner {
            daemon,
            host_prefix: format!("micro-{:08x}", rand::random::<u32>()),
            interfaces,
            scope: self.scope,
            started: Instant::now(),
            warmup: self.warmup.unwrap_or(DEFAULT_WARMUP),
            state: Mutex::new(State::default()),
            events,
            reported: AtomicBool::new(false),
        });
        let weak = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("micro-mdns".into())
            .spawn(move || pump(weak, browse, monitor))
            .map_err(|e| Error::service_unavailable(ERR_ID, format!("mDNS thread: {e}")))?;
        Ok(MdnsRegistry { inner })
    }
}

/// A registry that finds services on the local network by mDNS (DNS-SD).
///
/// Every node is a DNS-SD service instance of type `_micro._tcp.local.`, named after
/// its node id, whose SRV record gives the port and whose TXT record carries the
/// registry record (see below). Each registry browses `_micro._tcp.local.` from the
/// moment it is built and keeps what it hears in a cache that answers
/// [`get_service`](Registry::get_service) and [`list_services`](Registry::list_services);
/// browse events become [`Event`]s for [`watch`](Registry::watch).
///
/// This is the LAN half of the default registry, [`DefaultRegistry`](super::DefaultRegistry),
/// which merges it with the multicast-free same-machine registry; use it alone only if
/// you want LAN discovery and nothing else.
///
/// # What travels in the TXT record
///
/// A record with JSON Schemas can be several kilobytes, and a TXT record should stay
/// under 1300 bytes (RFC 6763 §6.2) so that its packet fits one Ethernet frame: a
/// fragmented multicast packet is what Wi-Fi access points and VPNs drop first. So the
/// TXT record holds readable keys (`id`, `service`, `version`, `address`, `digest`) and
/// the record's JSON, DEFLATE-compressed and cut into 250-byte strings `r0`…`rN`, at the
/// richest level that fits: the full record (typical services with a few endpoints fit),
/// else the endpoints without their JSON Schemas, else only the service and node
/// metadata, else only the readable keys. The `record` key tells a peer which level it
/// got. Nodes on the same machine are read from the local registry instead, with their
/// schemas, and [`DefaultRegistry`](super::DefaultRegistry) fills the endpoints of a
/// service version from the fullest record it has.
///
/// # Addresses
///
/// A node that registered a loopback or wildcard address (`127.0.0.1:9090`, the default
/// of a service listening on every interface) is reported to a peer on another host at
/// the address that host's announcement came from (`192.168.1.20:9090`); peers on the
/// same network stack keep the address as registered.
///
/// # Lifetimes and latency
///
/// Registering announces the node at once (node ids are unique, so no probing): a peer
/// on the link sees it in about 10 ms (measured between two network namespaces). A
/// registry started later finds it with its first query, answered within 20–120 ms
/// (RFC 6762 §6), so reads in the first 300 ms of a registry's life wait for answers
/// ([`MdnsBuilder::warmup`]); when both start at the same instant, the repeated query
/// or announcement one second later closes the gap. Registering again with the same
/// record only extends the TTL and sends nothing. Deregistering sends goodbye packets
/// (TTL 0), and peers drop the node one second later (RFC 6762 §10.1); a node whose
/// registration is not renewed within its TTL is withdrawn the same way. A host that
/// vanishes without a goodbye disappears from its peers when its SRV record expires,
/// at most two minutes later. Interfaces that come up later are picked up within 5 s.
///
/// # Interfaces
///
/// By default every interface on which mdns-sd can join the multicast group (loopback
/// too, where it has multicast switched on). Choose others with
/// [`MdnsBuilder::interfaces`] or the `MICRO_MDNS_INTERFACES` environment variable
/// (`eth0,wlan0`, or addresses such as `192.168.1.20`); `MICRO_MDNS_INTERFACES=none`
/// switches mDNS off.
///
/// Cloning is cheap and shares one mDNS daemon. Dropping the last clone sends
/// goodbye packets for the nodes still registered and stops the daemon.
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), micro::Error> {
/// use micro::registry::{MdnsRegistry, Node, Registry, Service};
///
/// let registry = MdnsRegistry::new()?;
/// let service = Service {
///     name: "greeter".into(),
///     version: "latest".into(),
///     nodes: vec![Node { id: "greeter-1".into(), address: "192.168.1.20:9000".into(), ..Default::default() }],
///     ..Default::default()
/// };
/// registry.register(&service, Default::default()).await?;
/// // Peers on the LAN now see greeter-1; so does this registry.
/// assert_eq!(registry.get_service("greeter").await?[0].nodes.len(), 1);
/// registry.deregister(&service).await?; // goodbye packets
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct MdnsRegistry {
    inner: Arc<Inner>,
}

impl fmt::Debug for MdnsRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.inner.lock();
        f.debug_struct("MdnsRegistry")
            .field("host_prefix", &self.inner.host_prefix)
            .field("interfaces", &self.inner.interfaces)
            .field("own_nodes", &state.own.len())
            .field("peer_nodes", &state.seen.len())
            .finish()
    }
}

/// name, version, node id
type NodeKey = (String, String, String);

fn key_of(service: &Service) -> NodeKey {
    let id = service
        .nodes
        .first()
        .map(|n| n.id.clone())
        .unwrap_or_default();
    (service.name.clone(), service.version.clone(), id)
}

struct Inner {
    daemon: ServiceDaemon,
    /// Host names of own nodes start with it. Every node gets a host name of its own:
    /// a goodbye withdraws the address records of the node's host name too, which
    /// must not take other nodes' addresses along.
    host_prefix: String,
    interfaces: Interfaces,
    /// Peers announcing this scope are not reported (see [`MdnsBuilder::scope`]).
    scope: Option<String>,
    started: Instant,
    warmup: Duration,
    state: Mutex<State>,
    events: broadcast::Sender<Event>,
    /// Whether a daemon error was already reported above debug level.
    reported: AtomicBool,
}

#[derive(Default)]
struct State {
    /// Nodes this registry announces.
    own: HashMap<NodeKey, Own>,
    /// Nodes heard on the network, by lower-cased instance full name.
    seen: HashMap<String, Seen>,
    /// Own nodes lately withdrawn: their echoes are ignored until the instant.
    tombstones: HashMap<NodeKey, Instant>,
}

struct Own {
    /// The record with exactly this node.
    service: Service,
    digest: u64,
    label: String,
    fullname: String,
    expiry: Instant,
}

#[derive(Clone)]
struct Seen {
    /// The record with exactly one node.
    service: Service,
    detail: Detail,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Shutting down sends goodbye packets for every service still registered.
        let _ = self.daemon.shutdown();
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every mutation is a single insert or remove: a poisoned lock is still sound.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn emit(&self, kind: EventKind, service: Service) {
        let _ = self.events.send(Event { kind, service });
    }

    fn on_browse(&self, event: ServiceEvent) {
        match event {
            ServiceEvent::ServiceResolved(resolved) => {
                let Some(decoded) = txt::decode(resolved.get_properties()) else {
                    tracing::debug!(instance = %resolved.get_fullname(), "mDNS: not a micro node");
                    return;
                };
                if decoded.scope.is_some() && decoded.scope == self.scope {
                    return; // seen through the local registry instead
                }
                let mut service = decoded.service;
                if let Some(node) = service.nodes.first_mut() {
                    if let Some(address) =
                        reachable_address(&node.address, resolved.get_addresses())
                    {
                        node.address = address;
                    }
                }
                let key = key_of(&service);
                let fullname = resolved.get_fullname().to_lowercase();
                let mut state = self.lock();
                if state
                    .tombstones
                    .get(&key)
                    .is_some_and(|until| *until > Instant::now())
                {
                    return;
                }
                let seen = Seen {
                    service: service.clone(),
                    detail: decoded.detail,
                };
                let previous = state.seen.insert(fullname, seen);
                if state.own.contains_key(&key) {
                    return; // our own echo: announced when registered
                }
                drop(state);
                match previous {
                    None => self.emit(EventKind::Added, service),
                    Some(old) if key_of(&old.service) != key => {
                        self.emit(EventKind::Removed, old.service);
                        self.emit(EventKind::Added, service);
                    }
                    Some(old) if old.service != service => self.emit(EventKind::Updated, service),
                    Some(_) => {}
                }
            }
            ServiceEvent::ServiceRemoved(_, fullname) => {
                let mut state = self.lock();
                let Some(old) = state.seen.remove(&fullname.to_lowercase()) else {
                    return;
                };
                let key = key_of(&old.service);
                if state.own.contains_key(&key) || state.tombstones.contains_key(&key) {
                    return;
                }
                drop(state);
                self.emit(EventKind::Removed, old.service);
            }
            _ => {}
        }
    }

    fn on_daemon(&self, event: DaemonEvent) {
        if let DaemonEvent::Error(e) = event {
            if self.reported.swap(true, Ordering::Relaxed) {
                tracing::debug!(error = %e, "mDNS daemon");
            } else {
                tracing::info!(
                    error = %e,
                    "mDNS daemon reported an error; LAN discovery may be limited (same-machine discovery does not use mDNS)"
                );
            }
        }
    }

    /// Withdraws own nodes whose TTL ran out (goodbye packets, `Removed` events) and
    /// forgets old tombstones. Runs on the background thread.
    fn reap(&self) {
        let now = Instant::now();
        let mut expired = Vec::new();
        {
            let mut state = self.lock();
            state.tombstones.retain(|_, until| *until > now);
            let keys: Vec<NodeKey> = state
                .own
                .iter()
                .filter(|(_, own)| own.expiry <= now)
                .map(|(k, _)| k.clone())
                .collect();
            for key in keys {
                if let Some(own) = state.own.remove(&key) {
                    state.seen.retain(|_, seen| key_of(&seen.service) != key);
                    state.tombstones.insert(key, now + TOMBSTONE);
                    expired.push(own);
                }
            }
        }
        for own in expired {
            for _ in 0..RETRIES {
                match self.daemon.unregister(&own.fullname) {
                    Err(mdns_sd::Error::Again) => std::thread::sleep(RETRY_PAUSE),
                    _ => break,
                }
            }
            self.emit(EventKind::Removed, own.service);
        }
    }

    /// Own and heard nodes, grouped by service version; own records win.
    fn snapshot(&self, name: Option<&str>) -> Vec<Service> {
        let now = Instant::now();
        let state = self.lock();
        // (name, version) -> (rank of the record the fields came from, service)
        let mut groups: BTreeMap<(String, String), (u8, Service)> = BTreeMap::new();
        let mut add = |service: &Service, rank: u8| {
            if name.is_some_and(|n| n != service.name) {
                return;
            }
            let entry = groups
                .entry((service.name.clone(), service.version.clone()))
                .or_insert_with(|| {
                    (
                        u8::MAX,
                        Service {
                            nodes: Vec::new(),
                            ..service.clone()
                        },
                    )
                });
            if rank < entry.0 {
                let nodes = std::mem::take(&mut entry.1.nodes);
                entry.1 = Service {
                    nodes,
                    ..service.clone()
                };
                entry.0 = rank;
            }
            for node in &service.nodes {
                if !entry.1.nodes.iter().any(|n| n.id == node.id) {
                    entry.1.nodes.push(node.clone());
                }
            }
        };
        for own in state.own.values().filter(|own| own.expiry > now) {
            add(&own.service, 0);
        }
        for seen in state.seen.values() {
            if !state.own.contains_key(&key_of(&seen.service)) {
                add(&seen.service, 1 + seen.detail as u8);
            }
        }
        groups
            .into_values()
            .map(|(_, mut service)| {
                service.nodes.sort_by(|a, b| a.id.cmp(&b.id));
                service
            })
            .collect()
    }
}

/// Feeds browse events into the cache and withdraws expired registrations, until the
/// registry is dropped.
fn pump(weak: Weak<Inner>, browse: Receiver<ServiceEvent>, monitor: Receiver<DaemonEvent>) {
    loop {
        let event = browse.recv_timeout(Duration::from_millis(250));
        let Some(inner) = weak.upgrade() else { return };
        match event {
            Ok(event) => inner.on_browse(event),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        while let Ok(event) = monitor.try_recv() {
            inner.on_daemon(event);
        }
        inner.reap();
    }
}

/// The address a peer should dial for a node that registered `advertised`, given the
/// addresses its host announced; `None` to keep `advertised`.
///
/// Only a loopback or wildcard host is replaced, and only when the announcing host is
/// not this one (none of its addresses is ours).
fn reachable_address(advertised: &str, announced: &HashSet<ScopedIp>) -> Option<String> {
    let (host, port) = advertised.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let local_only = match host.parse::<IpAddr>() {
        Ok(ip) => ip.is_loopback() || ip.is_unspecified(),
        Err(_) => host.eq_ignore_ascii_case("localhost") || host.is_empty(),
    };
    if !local_only {
        return None;
    }
    let announced: Vec<IpAddr> = announced.iter().map(ScopedIp::to_ip_addr).collect();
    let mine: HashSet<IpAddr> = if_addrs::get_if_addrs()
        .map(|list| list.iter().map(if_addrs::Interface::ip).collect())
        .unwrap_or_default();
    if announced
        .iter()
        .any(|ip| ip.is_loopback() || mine.contains(ip))
    {
        return None;
    }
    let mut candidates: Vec<IpAddr> = announced
        .into_iter()
        .filter(|ip| match ip {
            IpAddr::V4(v4) => !v4.is_unspecified(),
            // A link-local IPv6 address needs a scope a peer cannot write in host:port.
            IpAddr::V6(v6) => !v6.is_unspecified() && (v6.segments()[0] & 0xffc0) != 0xfe80,
        })
        .collect();
    candidates.sort_by_key(|ip| (ip.is_ipv6(), *ip));
    let ip = candidates.into_iter().next()?;
    Some(SocketAddr::new(ip, port).to_string())
}

fn port_of(address: &str) -> u16 {
    address
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .unwrap_or(0)
}

impl MdnsRegistry {
    /// Starts an mDNS registry on the interfaces `MICRO_MDNS_INTERFACES` names, or on
    /// every multicast-capable interface.
    pub fn new() -> Result<Self, Error> {
        MdnsBuilder::default().build()
    }

    /// A builder to choose interfaces, port and warm-up.
    pub fn builder() -> MdnsBuilder {
        MdnsBuilder::default()
    }

    /// How much of the record of `node_id` arrived over the network (for tests and
    /// diagnostics); `None` for own or unknown nodes.
    #[cfg(test)]
    pub(crate) fn detail_of(&self, node_id: &str) -> Option<Detail> {
        self.inner
            .lock()
            .seen
            .values()
            .find(|s| s.service.nodes.first().is_some_and(|n| n.id == node_id))
            .map(|s| s.detail)
    }

    /// The daemon's counters and what the cache holds, for failing tests.
    #[cfg(test)]
    pub(crate) fn diagnostics(&self) -> String {
        let metrics = self
            .inner
            .daemon
            .get_metrics()
            .ok()
            .and_then(|rx| rx.recv_timeout(Duration::from_secs(1)).ok());
        let state = self.inner.lock();
        let seen: Vec<&String> = state.seen.keys().collect();
        let own: Vec<&NodeKey> = state.own.keys().collect();
        format!("metrics {metrics:?}; own {own:?}; seen {seen:?}")
    }

    /// Waits out what is left of the warm-up, or until `done` holds.
    async fn warm_up(&self, done: impl Fn(&[Service]) -> bool, name: Option<&str>) -> Vec<Service> {
        let deadline = self.inner.started + self.inner.warmup;
        loop {
            let found = self.inner.snapshot(name);
            let now = Instant::now();
            if now >= deadline || done(&found) {
                return found;
            }
            tokio::time::sleep((deadline - now).min(Duration::from_millis(20))).await;
        }
    }
}

impl Registry for MdnsRegistry {
    fn register<'a>(
        &'a self,
        service: &'a Service,
        opts: RegisterOptions,
    ) -> BoxFuture<'a, Result<(), Error>> {
        async move {
            crate::registry::validate(service)?;
            let expiry = Instant::now() + opts.ttl;
            let mut events = Vec::new();
            for node in &service.nodes {
                let one = Service {
                    nodes: vec![node.clone()],
                    ..service.clone()
                };
                let encoded = txt::encode(&one, self.inner.scope.as_deref())
                    .map_err(|e| Error::bad_request(ERR_ID, e))?;
                let key = key_of(&one);
                let (info, kind) = {
                    let mut state = self.inner.lock();
                    if let Some(own) = state.own.get_mut(&key) {
                        if own.digest == encoded.digest {
                            own.expiry = expiry;
                            continue;
                        }
                    }
                    // One instance per node id; the same id under a second version or
                    // service gets a label of its own. A changed record keeps its label.
                    let label = match state.own.get(&key) {
                        Some(own) => own.label.clone(),
                        None => {
                            let plain = txt::instance_label(&node.id);
                            if state.own.values().any(|o| o.label == plain) {
                                txt::instance_label(&format!(
                                    "{}@{}@{}",
                                    node.id, service.name, service.version
                                ))
                            } else {
                                plain
                            }
                        }
                    };
                    let mut info = ServiceInfo::new(
                        SERVICE_TYPE,
                        &label,
                        &format!(
                            "{}-{:016x}.local.",
                            self.inner.host_prefix,
                            txt::fnv1a(label.as_bytes())
                        ),
                        (),
                        port_of(&node.address),
                        encoded.props,
                    )
                    .map_err(|e| Error::bad_request(ERR_ID, format!("mDNS record: {e}")))?
                    .enable_addr_auto();
                    info.set_requires_probe(false);
                    let own = Own {
                        service: one.clone(),
                        digest: encoded.digest,
                        label,
                        fullname: info.get_fullname().to_lowercase(),
                        expiry,
                    };
                    state.tombstones.remove(&key);
                    let kind = match state.own.insert(key.clone(), own) {
                        Some(_) => EventKind::Updated,
                        None => EventKind::Added,
                    };
                    (info, kind)
                };
                if let Err(e) = retry(|| self.inner.daemon.register(info.clone())).await {
                    let mut state = self.inner.lock();
                    if state
                        .own
                        .get(&key)
                        .is_some_and(|own| own.digest == encoded.digest)
                    {
                        state.own.remove(&key);
                    }
                    return Err(Error::service_unavailable(
                        ERR_ID,
                        format!("mDNS register: {e}"),
                    ));
                }
                tracing::debug!(
                    node = %node.id,
                    detail = ?encoded.detail,
                    txt_bytes = encoded.size,
                    "mDNS: announced"
                );
                events.push((kind, one));
            }
            for (kind, one) in events {
                self.inner.emit(kind, one);
            }
            Ok(())
        }
        .boxed()
    }

    fn deregister<'a>(&'a self, service: &'a Service) -> BoxFuture<'a, Result<(), Error>> {
        async move {
            let mut removed = Vec::new();
            {
                let mut state = self.inner.lock();
                let until = Instant::now() + TOMBSTONE;
                for node in &service.nodes {
                    let key = (
                        service.name.clone(),
                        service.version.clone(),
                        node.id.clone(),
                    );
                    if let Some(own) = state.own.remove(&key) {
                        state.seen.retain(|_, seen| key_of(&seen.service) != key);
                        state.tombstones.insert(key, until);
                        removed.push(own);
                    }
                }
            }
            for own in &removed {
                match retry(|| self.inner.daemon.unregister(&own.fullname)).await {
                    Ok(rx) => {
                        let _ = tokio::time::timeout(GOODBYE_WAIT, rx.recv_async()).await;
                    }
                    Err(e) => tracing::debug!(error = %e, "mDNS unregister"),
                }
            }
            let removed: Vec<Service> = removed.into_iter().map(|own| own.service).collect();
            for one in removed {
                self.inner.emit(EventKind::Removed, one);
            }
            Ok(())
        }
        .boxed()
    }

    fn get_service<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<Service>, Error>> {
        async move { found_or_not_found(name, self.warm_up(|s| !s.is_empty(), Some(name)).await) }
            .boxed()
    }

    fn list_services(&self) -> BoxFuture<'_, Result<Vec<Service>, Error>> {
        async move { Ok(self.warm_up(|_| false, None).await) }.boxed()
    }

    fn watch(&self, service: Option<&str>) -> BoxFuture<'_, Result<Watcher, Error>> {
        let watcher = broadcast_watcher(
            self.inner.events.subscribe(),
            service.map(str::to_string),
            ERR_ID,
        );
        futures_util::future::ready(Ok(watcher)).boxed()
    }

    fn name(&self) -> &'static str {
        "mdns"
    }
}
