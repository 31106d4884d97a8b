//! [`CacheSelector`]: the nodes of each service in a cache fed by a registry watch.
//!
//! Layout, chosen so a selection takes no lock and allocates nothing:
//!
//! - a fixed number of shards, each an atomically swapped map `name -> Entry`
//!   (copied on the rare insert or eviction);
//! - per service an [`Entry`] whose [`Snapshot`] of nodes is an `Arc` swapped
//!   atomically whenever an event changes the service; readers load it without
//!   locking. A mutex guards only the writers' side (the watch task, a loader).
//!
//! One background task per selector owns the registry watch (of all services). It
//! is started by the first selection and subscribes before that selection reads
//! the registry, so no event falls between the read and the watch. Events for a
//! service still being read are queued and replayed on top of the read (replaying
//! is harmless: each event sets the state of the nodes it names). A watch error or
//! lag re-reads every cached service; a broken watch is re-opened with a back-off,
//! the cached services re-read each time, which doubles as polling for registries
//! whose watch does not work. Services not selected for `idle_timeout` are evicted.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use futures_util::future::{self, BoxFuture, FutureExt};
use futures_util::StreamExt;
use rand::Rng;
use tokio::sync::oneshot;
use tokio::task::AbortHandle;

use super::filter;
use super::mark::{Backoff, Clock, NodeStats};
use super::{strategy, Outcome, SelectOptions, Selected, Selector, Strategy};
use crate::registry::{self, Event, EventKind, Node, Registry, Service};
use crate::Error;

/// Number of shards of the service map (a power of two).
const SHARDS: usize = 64;
/// Default time after which a service nobody selects leaves the cache.
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// Shortest and longest wait before re-opening a broken watch.
const WATCH_RETRY_MIN: Duration = Duration::from_millis(100);
const WATCH_RETRY_MAX: Duration = Duration::from_secs(10);

/// Selects among the nodes of a service, from a cache that one registry watch
/// keeps current: no registry round trip per call.
///
/// Cheap to clone; clones share the cache. The first selection of a service reads
/// the registry once; later ones are answered from memory (the future returned by
/// [`Selector::select`] is then ready at once).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), micro::Error> {
/// use std::sync::Arc;
/// use std::time::Duration;
/// use micro::registry::{MemoryRegistry, Node, Registry, Service};
/// use micro::selector::{CacheSelector, Outcome, SelectOptions, Selector, Strategy};
///
/// let registry = Arc::new(MemoryRegistry::new());
/// let nodes = ["a", "b"].map(|id| Node { id: id.into(), address: format!("{id}:9000"), ..Default::default() });
/// let service = Service { name: "greeter".into(), version: "v1".into(), nodes: nodes.to_vec(), ..Default::default() };
/// registry.register(&service, Default::default()).await?;
///
/// let selector = CacheSelector::new(registry, Strategy::LeastOutstanding)
///     .backoff(Duration::from_millis(500), Duration::from_secs(10));
/// let first = selector.select("greeter", SelectOptions::new().version("v1")).await?;
/// // A node that failed is skipped during its back-off.
/// selector.mark("greeter", &first, Outcome::Failure);
/// let second = selector.select("greeter", SelectOptions::new()).await?;
/// assert_ne!(first.node().id, second.node().id);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct CacheSelector {
    shared: Arc<Shared>,
}

impl fmt::Debug for CacheSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheSelector")
            .field("registry", &self.shared.registry.name())
            .field("strategy", &self.shared.config.strategy)
            .field("backoff", &self.shared.config.backoff)
            .field("idle_timeout", &self.shared.config.idle_timeout)
            .finish()
    }
}

#[derive(Debug, Clone, Copy)]
struct Config {
    strategy: Strategy,
    backoff: Backoff,
    idle_timeout: Duration,
}

struct Shared {
    registry: Arc<dyn Registry>,
    config: Config,
    clock: Clock,
    hasher: foldhash::fast::RandomState,
    shards: Box<[Shard]>,
    /// Whether a watch task is running (set false by the task as it ends).
    watching: AtomicBool,
    /// Serializes starting the watch task.
    starting: tokio::sync::Mutex<()>,
    task: Mutex<Option<AbortHandle>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Some(task) = lock(&self.task).take() {
            task.abort();
        }
    }
}

/// Cached services by name (looked up on every selection: a fast seeded hash).
type EntryMap = HashMap<Box<str>, Arc<Entry>, foldhash::fast::RandomState>;

#[derive(Default)]
struct Shard {
    map: ArcSwap<EntryMap>,
    /// Serializes writers of `map`.
    write: Mutex<()>,
}

/// One cached service.
struct Entry {
    snapshot: ArcSwap<Snapshot>,
    round_robin: AtomicUsize,
    /// Selected since the last eviction sweep.
    used: AtomicBool,
    /// The latest end of a back-off among the nodes (0: none), so selections skip
    /// reading the clock while no node is marked.
    backoff_until: AtomicU64,
    /// Set once the first registry read is in.
    loaded: tokio::sync::OnceCell<()>,
    state: Mutex<EntryState>,
}

/// The writers' side of an entry: the records the snapshot is built from.
#[derive(Default)]
struct EntryState {
    loaded: bool,
    /// Events that arrived while the first read was under way.
    pending: Vec<Event>,
    /// version -> record
    versions: BTreeMap<String, VersionRecord>,
}

#[derive(Default)]
struct VersionRecord {
    endpoints: Vec<String>,
    /// node id -> node and its counters
    nodes: BTreeMap<String, (Arc<Node>, Arc<NodeStats>)>,
}

/// What selections read: the nodes of a service at one moment.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    pub(super) versions: Vec<VersionInfo>,
    pub(super) slots: Vec<Slot>,
}

/// A service version as the filters need it.
#[derive(Debug)]
pub(crate) struct VersionInfo {
    pub(super) version: String,
    /// Sorted endpoint names.
    pub(super) endpoints: Vec<String>,
}

/// One node in a snapshot.
#[derive(Debug)]
pub(crate) struct Slot {
    pub(super) node: Arc<Node>,
    /// Index into `Snapshot::versions`.
    pub(super) version: usize,
    pub(super) stats: Arc<NodeStats>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves its data consistent, so a poisoned lock is usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl CacheSelector {
    /// A selector over `registry` spreading calls by `strategy`.
    pub fn new(registry: Arc<dyn Registry>, strategy: Strategy) -> Self {
        Self::with_config(
            registry,
            Config {
                strategy,
                backoff: Backoff::default(),
                idle_timeout: DEFAULT_IDLE_TIMEOUT,
            },
        )
    }

    fn with_config(registry: Arc<dyn Registry>, config: Config) -> Self {
        CacheSelector {
            shared: Arc::new(Shared {
                registry,
                config,
                clock: Clock::new(),
                hasher: foldhash::fast::RandomState::default(),
                shards: (0..SHARDS).map(|_| Shard::default()).collect(),
                watching: AtomicBool::new(false),
                starting: tokio::sync::Mutex::new(()),
                task: Mutex::new(None),
            }),
        }
    }

    /// How long a node that failed is skipped: `initial` after the first failure,
    /// doubling with each failure in a row up to `max` (default 1 s and 30 s). Set
    /// it before the first selection: it starts an empty cache.
    pub fn backoff(self, initial: Duration, max: Duration) -> Self {
        let mut config = self.shared.config;
        config.backoff = Backoff { initial, max };
        Self::with_config(self.shared.registry.clone(), config)
    }

    /// Time after which a service nobody selected leaves the cache (default 10
    /// minutes; it is then read from the registry again when next selected). Set it
    /// before the first selection: it starts an empty cache.
    pub fn idle_timeout(self, idle: Duration) -> Self {
        let mut config = self.shared.config;
        config.idle_timeout = idle.max(Duration::from_millis(1));
        Self::with_config(self.shared.registry.clone(), config)
    }

    /// The strategy.
    pub fn strategy(&self) -> Strategy {
        self.shared.config.strategy
    }

    /// A selection answered from the cache alone, without awaiting; `None` when the
    /// service is not cached yet (or the watch must be restarted): then
    /// [`Selector::select`] reads the registry.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), micro::Error> {
    /// # use std::sync::Arc;
    /// # use micro::registry::{MemoryRegistry, Node, Registry, Service};
    /// use micro::selector::{CacheSelector, SelectOptions, Selector, Strategy};
    /// # let registry = Arc::new(MemoryRegistry::new());
    /// # let node = Node { id: "a".into(), address: "a:1".into(), ..Default::default() };
    /// # registry.register(&Service { name: "greeter".into(), nodes: vec![node], ..Default::default() }, Default::default()).await?;
    /// let selector = CacheSelector::new(registry, Strategy::Random);
    /// assert!(selector.try_select("greeter", SelectOptions::new()).is_none());
    /// selector.select("greeter", SelectOptions::new()).await?;
    /// assert!(selector.try_select("greeter", SelectOptions::new()).is_some());
    /// # Ok(()) }
    /// ```
    pub fn try_select(
        &self,
        service: &str,
        opts: SelectOptions<'_>,
    ) -> Option<Result<Selected, Error>> {
        let shared = &*self.shared;
        if !shared.watching.load(Ordering::Acquire) {
            return None;
        }
        let map = shared.shard(service).map.load();
        let entry = map.get(service)?;
        entry.loaded.initialized().then(|| {
            entry.touch();
            shared.pick(entry, service, &opts)
        })
    }

    async fn select_slow(&self, service: &str, opts: SelectOptions<'_>) -> Result<Selected, Error> {
        Shared::ensure_watch(&self.shared).await;
        let entry = self.shared.load(service).await?;
        entry.touch();
        self.shared.pick(&entry, service, &opts)
    }
}

impl Selector for CacheSelector {
    fn select<'a>(
        &'a self,
        service: &'a str,
        opts: SelectOptions<'a>,
    ) -> BoxFuture<'a, Result<Selected, Error>> {
        match self.try_select(service, opts) {
            Some(done) => future::ready(done).boxed(),
            None => self.select_slow(service, opts).boxed(),
        }
    }

    fn select_now(
        &self,
        service: &str,
        opts: SelectOptions<'_>,
    ) -> Option<Result<Selected, Error>> {
        self.try_select(service, opts)
    }

    fn mark(&self, service: &str, selected: &Selected, outcome: Outcome) {
        let shared = &*self.shared;
        let found;
        let stats = match selected.stats() {
            Some(stats) => stats,
            None => {
                // A selection made elsewhere: find the node by id.
                let Some(entry) = shared.entry(service) else {
                    return;
                };
                let snap = entry.snapshot.load();
                let Some(slot) = snap.slots.iter().find(|s| s.node.id == selected.node().id) else {
                    return;
                };
                found = slot.stats.clone();
                &*found
            }
        };
        match outcome {
            Outcome::Success => stats.succeed(),
            Outcome::Failure => {
                if let Some(until) = stats.fail(shared.clock.now(), &shared.config.backoff) {
                    tracing::debug!(
                        service,
                        node = %selected.node().id,
                        "node failed; skipping it for a while"
                    );
                    if let Some(entry) = shared.entry(service) {
                        entry.backoff_until.fetch_max(until, Ordering::AcqRel);
                    }
                }
            }
        }
    }
}

impl Entry {
    fn new() -> Self {
        Entry {
            snapshot: ArcSwap::from_pointee(Snapshot::default()),
            round_robin: AtomicUsize::new(rand::rng().random::<u32>() as usize),
            used: AtomicBool::new(true),
            backoff_until: AtomicU64::new(0),
            loaded: tokio::sync::OnceCell::new(),
            state: Mutex::new(EntryState::default()),
        }
    }

    fn touch(&self) {
        if !self.used.load(Ordering::Relaxed) {
            self.used.store(true, Ordering::Relaxed);
        }
    }

    /// Publishes the state as the new snapshot.
    fn publish(&self, state: &EntryState) {
        let mut snap = Snapshot {
            versions: Vec::with_capacity(state.versions.len()),
            slots: Vec::with_capacity(state.versions.values().map(|v| v.nodes.len()).sum()),
        };
        for (i, (version, record)) in state.versions.iter().enumerate() {
            snap.versions.push(VersionInfo {
                version: version.clone(),
                endpoints: record.endpoints.clone(),
            });
            snap.slots
                .extend(record.nodes.values().map(|(node, stats)| Slot {
                    node: node.clone(),
                    version: i,
                    stats: stats.clone(),
                }));
        }
        self.snapshot.store(Arc::new(snap));
    }
}

impl EntryState {
    /// Replaces the records with a fresh registry read, keeping the counters of
    /// nodes that stay.
    fn reset(&mut self, services: Vec<Service>) {
        let mut old = std::mem::take(&mut self.versions);
        for service in services {
            let mut previous = old.remove(&service.version).unwrap_or_default().nodes;
            let record = self.versions.entry(service.version.clone()).or_default();
            record.endpoints = sorted_endpoints(&service);
            for node in service.nodes {
                let stats = previous
                    .remove(&node.id)
                    .map(|(_, stats)| stats)
                    .unwrap_or_default();
                record
                    .nodes
                    .insert(node.id.clone(), (Arc::new(node), stats));
            }
        }
    }

    fn apply(&mut self, event: Event) {
        let Event { kind, service } = event;
        match kind {
            EventKind::Added | EventKind::Updated => {
                let record = self.versions.entry(service.version.clone()).or_default();
                record.endpoints = sorted_endpoints(&service);
                for node in service.nodes {
                    let stats = record
                        .nodes
                        .remove(&node.id)
                        .map(|(_, stats)| stats)
                        .unwrap_or_default();
                    record
                        .nodes
                        .insert(node.id.clone(), (Arc::new(node), stats));
                }
            }
            EventKind::Removed => {
                if let Some(record) = self.versions.get_mut(&service.version) {
                    for node in &service.nodes {
                        record.nodes.remove(&node.id);
                    }
                    if record.nodes.is_empty() {
                        self.versions.remove(&service.version);
                    }
                }
            }
        }
    }
}

fn sorted_endpoints(service: &Service) -> Vec<String> {
    let mut names: Vec<String> = service.endpoints.iter().map(|e| e.name.clone()).collect();
    names.sort_unstable();
    names.dedup();
    names
}

impl Shared {
    fn shard(&self, name: &str) -> &Shard {
        let hash = self.hasher.hash_one(name) as usize;
        &self.shards[hash & (SHARDS - 1)]
    }

    fn entry(&self, name: &str) -> Option<Arc<Entry>> {
        self.shard(name).map.load().get(name).cloned()
    }

    fn entry_or_insert(&self, name: &str) -> Arc<Entry> {
        let shard = self.shard(name);
        if let Some(entry) = shard.map.load().get(name) {
            return entry.clone();
        }
        let _write = lock(&shard.write);
        let current = shard.map.load_full();
        if let Some(entry) = current.get(name) {
            return entry.clone();
        }
        let entry = Arc::new(Entry::new());
        let mut map = EntryMap::clone(&current);
        map.insert(name.into(), entry.clone());
        shard.map.store(Arc::new(map));
        entry
    }

    /// Every cached entry with its name.
    fn entries(&self) -> Vec<(Box<str>, Arc<Entry>)> {
        self.shards
            .iter()
            .flat_map(|shard| {
                let map = shard.map.load();
                map.iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// The registry's record of `name`: empty when it has none.
    async fn fetch(&self, name: &str) -> Result<Vec<Service>, Error> {
        match self.registry.get_service(name).await {
            Ok(services) => Ok(services),
            Err(e) if e.code() == 404 => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// The entry of `name`, read from the registry once if it is new.
    async fn load(&self, name: &str) -> Result<Arc<Entry>, Error> {
        let entry = self.entry_or_insert(name);
        entry
            .loaded
            .get_or_try_init(|| async {
                // Events queued so far are in the read below.
                lock(&entry.state).pending.clear();
                let services = self.fetch(name).await?;
                let mut state = lock(&entry.state);
                state.reset(services);
                for event in std::mem::take(&mut state.pending) {
                    state.apply(event);
                }
                state.loaded = true;
                entry.publish(&state);
                Ok::<(), Error>(())
            })
            .await?;
        Ok(entry)
    }

    /// Applies a watch event to the entry it concerns, if cached.
    fn apply(&self, event: Event) {
        let Some(entry) = self.entry(&event.service.name) else {
            return;
        };
        let mut state = lock(&entry.state);
        if state.loaded {
            state.apply(event);
            entry.publish(&state);
        } else {
            state.pending.push(event);
        }
    }

    /// Reads every loaded entry from the registry again.
    async fn relist(&self) {
        for (name, entry) in self.entries() {
            if !entry.loaded.initialized() {
                continue;
            }
            match self.fetch(&name).await {
                Ok(services) => {
                    let mut state = lock(&entry.state);
                    state.reset(services);
                    entry.publish(&state);
                }
                Err(e) => {
                    tracing::warn!(service = %name, error = %e, "re-reading a service failed; keeping the cached nodes");
                }
            }
        }
    }

    /// Evicts entries not selected since the last sweep.
    fn sweep(&self) {
        for shard in self.shards.iter() {
            let idle: Vec<Box<str>> = shard
                .map
                .load()
                .iter()
                .filter(|(_, e)| !e.used.swap(false, Ordering::Relaxed))
                .map(|(k, _)| k.clone())
                .collect();
            if idle.is_empty() {
                continue;
            }
            let _write = lock(&shard.write);
            let mut map = EntryMap::clone(&shard.map.load_full());
            for name in &idle {
                map.remove(name);
            }
            shard.map.store(Arc::new(map));
            tracing::debug!(services = ?idle, "evicted idle services from the selector cache");
        }
    }

    /// Starts the watch task unless it runs; returns once it has subscribed (or
    /// failed to).
    async fn ensure_watch(this: &Arc<Self>) {
        if this.watching.load(Ordering::Acquire) {
            return;
        }
        let _starting = this.starting.lock().await;
        if this.watching.load(Ordering::Acquire) {
            return;
        }
        let (ready_tx, ready_rx) = oneshot::channel();
        this.watching.store(true, Ordering::Release);
        let task = tokio::spawn(watch_task(Arc::downgrade(this), ready_tx));
        if let Some(old) = lock(&this.task).replace(task.abort_handle()) {
            old.abort();
        }
        let _ = ready_rx.await;
    }

    /// Picks a node of a loaded entry.
    fn pick(
        &self,
        entry: &Entry,
        service: &str,
        opts: &SelectOptions<'_>,
    ) -> Result<Selected, Error> {
        let snap = entry.snapshot.load_full();
        let slots = &snap.slots[..];
        if slots.is_empty() {
            return Err(registry::service_not_found(service));
        }
        let mask = filter::version_mask(&snap, service, opts)?;
        let now = self.marks_now(entry);
        let strategy = self.config.strategy;
        let in_flight = strategy == Strategy::LeastOutstanding;
        let tried = opts.tried;
        if mask.is_all()
            && opts.metadata.is_empty()
            && opts.address.is_none()
            && tried.is_empty()
            && now.is_none()
        {
            let i = strategy::pick(strategy, &entry.round_robin, slots, slots.len(), |_| true);
            return Ok(Selected::cached(snap, i, in_flight));
        }
        // Tiers of preference: untried and not backed off, then untried, then any
        // node that passes the filters.
        let tier = |slot: &Slot, tier: u8| {
            mask.allows(slot.version)
                && filter::metadata_matches(&slot.node, opts.metadata)
                && opts.address.is_none_or(|a| slot.node.address == a)
                && (tier >= 3 || !tried.iter().any(|t| *t == slot.node.id))
                && (tier >= 2 || now.is_none_or(|now| !slot.stats.backed_off(now)))
        };
        let mut counts = [0usize; 3];
        for slot in slots {
            if tier(slot, 3) {
                counts[2] += 1;
                if tier(slot, 2) {
                    counts[1] += 1;
                    if tier(slot, 1) {
                        counts[0] += 1;
                    }
                }
            }
        }
        if counts[2] == 0 {
            return Err(filter::metadata_excluded(service, opts));
        }
        let level = if counts[0] > 0 {
            1
        } else if counts[1] > 0 {
            2
        } else {
            3
        };
        let count = counts[usize::from(level) - 1];
        let i = strategy::pick(strategy, &entry.round_robin, slots, count, |s| {
            tier(s, level)
        });
        Ok(Selected::cached(snap, i, in_flight))
    }

    /// The clock reading to judge back-offs by, or `None` while no node of the entry
    /// is backed off.
    fn marks_now(&self, entry: &Entry) -> Option<u64> {
        let until = entry.backoff_until.load(Ordering::Acquire);
        if until == 0 {
            return None;
        }
        let now = self.clock.now();
        if now >= until {
            let _ =
                entry
                    .backoff_until
                    .compare_exchange(until, 0, Ordering::AcqRel, Ordering::Relaxed);
            return None;
        }
        Some(now)
    }
}

/// Marks the watch as stopped when the task ends, however it ends.
struct TaskGuard(Weak<Shared>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        if let Some(shared) = self.0.upgrade() {
            shared.watching.store(false, Ordering::Release);
        }
    }
}

/// Follows the registry watch for as long as the selector lives.
async fn watch_task(weak: Weak<Shared>, ready: oneshot::Sender<()>) {
    let _guard = TaskGuard(weak.clone());
    let mut ready = Some(ready);
    let mut retry = WATCH_RETRY_MIN;
    loop {
        let Some(shared) = weak.upgrade() else {
            return;
        };
        let watched = shared.registry.watch(None).await;
        match ready.take() {
            // The first watch: selections wait for it before they read, so
            // nothing cached can have missed an event. (Re-reading here would
            // race with the first selection's own read and read it twice.)
            Some(ready) => {
                let _ = ready.send(());
            }
            // Whatever happened while no watch ran is read again.
            None => shared.relist().await,
        }
        let idle = shared.config.idle_timeout;
        drop(shared);
        match watched {
            Ok(mut stream) => {
                retry = WATCH_RETRY_MIN;
                let start = tokio::time::Instant::now() + idle;
                let mut sweep = tokio::time::interval_at(start, idle);
                sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        item = stream.next() => {
                            let Some(shared) = weak.upgrade() else { return };
                            match item {
                                Some(Ok(event)) => shared.apply(event),
                                Some(Err(e)) => {
                                    tracing::debug!(error = %e, "registry watch lagged or failed; re-reading cached services");
                                    shared.relist().await;
                                }
                                None => break,
                            }
                        }
                        _ = sweep.tick() => {
                            let Some(shared) = weak.upgrade() else { return };
                            shared.sweep();
                        }
                    }
                }
                tracing::debug!("registry watch ended; re-opening it");
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?retry, "cannot watch the registry; the selector cache polls it meanwhile");
            }
        }
        tokio::time::sleep(retry).await;
        retry = (retry * 2).min(WATCH_RETRY_MAX);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::atomic::AtomicUsize;

    use futures_util::stream::BoxStream;
    use tokio::sync::mpsc;
    use tokio_stream::wrappers::UnboundedReceiverStream;

    use super::*;
    use crate::registry::{Endpoint, MemoryRegistry, RegisterOptions, Watcher};

    /// A memory registry that counts reads and watches, can drop its events (as a
    /// lagging watcher would) and can inject watch errors.
    #[derive(Debug)]
    struct Counting {
        inner: MemoryRegistry,
        get_service: AtomicUsize,
        watches: AtomicUsize,
        mute: Arc<AtomicBool>,
        inject: Mutex<Option<mpsc::UnboundedReceiver<Result<Event, Error>>>>,
    }

    impl Counting {
        fn new() -> (Arc<Self>, mpsc::UnboundedSender<Result<Event, Error>>) {
            let (tx, rx) = mpsc::unbounded_channel();
            let r = Counting {
                inner: MemoryRegistry::new(),
                get_service: AtomicUsize::new(0),
                watches: AtomicUsize::new(0),
                mute: Arc::default(),
                inject: Mutex::new(Some(rx)),
            };
            (Arc::new(r), tx)
        }

        fn reads(&self) -> usize {
            self.get_service.load(Ordering::SeqCst)
        }
    }

    impl Registry for Counting {
        fn register<'a>(
            &'a self,
            service: &'a Service,
            opts: RegisterOptions,
        ) -> BoxFuture<'a, Result<(), Error>> {
            self.inner.register(service, opts)
        }
        fn deregister<'a>(&'a self, service: &'a Service) -> BoxFuture<'a, Result<(), Error>> {
            self.inner.deregister(service)
        }
        fn get_service<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<Service>, Error>> {
            self.get_service.fetch_add(1, Ordering::SeqCst);
            self.inner.get_service(name)
        }
        fn list_services(&self) -> BoxFuture<'_, Result<Vec<Service>, Error>> {
            self.inner.list_services()
        }
        fn watch(&self, service: Option<&str>) -> BoxFuture<'_, Result<Watcher, Error>> {
            self.watches.fetch_add(1, Ordering::SeqCst);
            let inner = self.inner.watch(service);
            let injected = lock(&self.inject).take();
            let mute = self.mute.clone();
            async move {
                let events = inner
                    .await?
                    .filter(move |_| future::ready(!mute.load(Ordering::SeqCst)));
                let stream: BoxStream<'static, _> = match injected {
                    Some(rx) => {
                        futures_util::stream::select(events, UnboundedReceiverStream::new(rx))
                            .boxed()
                    }
                    None => events.boxed(),
                };
                Ok(stream)
            }
            .boxed()
        }
        fn name(&self) -> &'static str {
            "counting"
        }
    }

    fn node(id: &str, meta: &[(&str, &str)]) -> Node {
        Node {
            id: id.into(),
            address: format!("{id}:1"),
            metadata: meta
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn service(name: &str, version: &str, endpoints: &[&str], nodes: Vec<Node>) -> Service {
        Service {
            name: name.into(),
            version: version.into(),
            endpoints: endpoints
                .iter()
                .map(|e| Endpoint {
                    name: e.to_string(),
                    ..Default::default()
                })
                .collect(),
            nodes,
            ..Default::default()
        }
    }

    async fn register(r: &dyn Registry, name: &str, ids: &[&str]) {
        let nodes = ids.iter().map(|id| node(id, &[])).collect();
        r.register(&service(name, "latest", &[], nodes), Default::default())
            .await
            .unwrap();
    }

    async fn pick(sel: &CacheSelector, name: &str) -> String {
        sel.select(name, SelectOptions::new())
            .await
            .unwrap()
            .node()
            .id
            .clone()
    }

    impl CacheSelector {
        fn cached_ids(&self, name: &str) -> Vec<String> {
            self.shared.entry(name).map_or_else(Vec::new, |e| {
                e.snapshot
                    .load()
                    .slots
                    .iter()
                    .map(|s| s.node.id.clone())
                    .collect()
            })
        }
    }

    /// Lets the watch task run until `done` holds.
    async fn until(mut done: impl FnMut() -> bool) {
        for _ in 0..10_000 {
            if done() {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("condition not reached");
    }

    #[tokio::test]
    async fn one_registry_read_per_service_then_the_watch() {
        let (r, _inject) = Counting::new();
        register(&*r, "a", &["a1", "a2"]).await;
        register(&*r, "b", &["b1"]).await;
        let sel = CacheSelector::new(r.clone(), Strategy::RoundRobin);
        for _ in 0..50 {
            pick(&sel, "a").await;
            pick(&sel, "b").await;
        }
        assert_eq!(r.reads(), 2, "one get_service per service");
        assert_eq!(r.watches.load(Ordering::SeqCst), 1, "one watch for all");
        // Cache hits are answered without awaiting.
        assert!(sel
            .select("a", SelectOptions::new())
            .now_or_never()
            .is_some());

        // A new node is followed through the watch, with no new read.
        register(&*r, "a", &["a3"]).await;
        until(|| sel.cached_ids("a").len() == 3).await;
        let mut seen = BTreeSet::new();
        for _ in 0..3 {
            seen.insert(pick(&sel, "a").await);
        }
        assert!(seen.contains("a3"), "{seen:?}");
        assert_eq!(r.reads(), 2);
    }

    #[tokio::test]
    async fn a_removed_node_is_never_selected_after_its_removed_event() {
        let (r, _inject) = Counting::new();
        register(&*r, "s", &["a", "b", "c"]).await;
        let sel = CacheSelector::new(r.clone(), Strategy::Random);
        pick(&sel, "s").await;
        r.deregister(&service("s", "latest", &[], vec![node("b", &[])]))
            .await
            .unwrap();
        until(|| sel.cached_ids("s").len() == 2).await;
        for _ in 0..200 {
            assert_ne!(pick(&sel, "s").await, "b");
        }
        // The last node leaving makes the service unknown; its return is seen.
        r.deregister(&service(
            "s",
            "latest",
            &[],
            vec![node("a", &[]), node("c", &[])],
        ))
        .await
        .unwrap();
        until(|| sel.cached_ids("s").is_empty()).await;
        let err = sel.select("s", SelectOptions::new()).await.unwrap_err();
        assert_eq!(err.code(), 404);
        register(&*r, "s", &["d"]).await;
        until(|| !sel.cached_ids("s").is_empty()).await;
        assert_eq!(pick(&sel, "s").await, "d");
        assert_eq!(r.reads(), 1);
    }

    #[tokio::test]
    async fn an_unknown_service_is_a_404_and_is_followed_once_it_registers() {
        let (r, _inject) = Counting::new();
        let sel = CacheSelector::new(r.clone(), Strategy::Random);
        let err = sel.select("later", SelectOptions::new()).await.unwrap_err();
        assert_eq!(err.code(), 404);
        assert!(err.detail().contains("later"), "{err}");
        register(&*r, "later", &["x"]).await;
        until(|| !sel.cached_ids("later").is_empty()).await;
        assert_eq!(pick(&sel, "later").await, "x");
        assert_eq!(r.reads(), 1);
    }

    #[tokio::test]
    async fn a_watch_error_rereads_the_cached_services() {
        let (r, inject) = Counting::new();
        register(&*r, "s", &["a"]).await;
        let sel = CacheSelector::new(r.clone(), Strategy::Random);
        pick(&sel, "s").await;
        // The event of b is lost, then the watch reports it fell behind.
        r.mute.store(true, Ordering::SeqCst);
        register(&*r, "s", &["b"]).await;
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(sel.cached_ids("s"), ["a"]);
        inject
            .send(Err(Error::internal_server_error("test", "lagged")))
            .unwrap();
        until(|| sel.cached_ids("s").len() == 2).await;
        assert_eq!(r.reads(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_services_are_evicted_and_read_again() {
        let (r, _inject) = Counting::new();
        register(&*r, "s", &["a"]).await;
        let sel =
            CacheSelector::new(r.clone(), Strategy::Random).idle_timeout(Duration::from_secs(10));
        pick(&sel, "s").await;
        // Used during the first period: kept by the first sweep, evicted by the second.
        for _ in 0..2 {
            tokio::time::advance(Duration::from_secs(11)).await;
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
        }
        assert!(sel.shared.entry("s").is_none());
        assert_eq!(pick(&sel, "s").await, "a");
        assert_eq!(r.reads(), 2);
    }

    #[tokio::test]
    async fn round_robin_spreads_evenly_and_retries_avoid_tried_nodes() {
        let r = Arc::new(MemoryRegistry::new());
        register(&*r, "s", &["a", "b", "c", "d"]).await;
        let sel = CacheSelector::new(r, Strategy::RoundRobin);
        let mut counts = BTreeMap::<String, usize>::new();
        for _ in 0..400 {
            *counts.entry(pick(&sel, "s").await).or_default() += 1;
        }
        assert_eq!(counts.values().copied().collect::<Vec<_>>(), [100; 4]);
        let tried = ["a".to_string(), "b".to_string()];
        for _ in 0..20 {
            let got = sel
                .select("s", SelectOptions::new().tried(&tried))
                .await
                .unwrap();
            assert!(["c", "d"].contains(&got.node().id.as_str()));
        }
        // When every node was tried, any node may be picked again.
        let all = ["a", "b", "c", "d"].map(String::from);
        assert!(sel
            .select("s", SelectOptions::new().tried(&all))
            .await
            .is_ok());
    }

    #[tokio::test]
    async fn random_covers_every_node() {
        let r = Arc::new(MemoryRegistry::new());
        register(&*r, "s", &["a", "b", "c", "d", "e"]).await;
        let sel = CacheSelector::new(r, Strategy::Random);
        let mut seen = BTreeSet::new();
        for _ in 0..500 {
            seen.insert(pick(&sel, "s").await);
        }
        assert_eq!(seen.len(), 5);
    }

    #[tokio::test]
    async fn least_outstanding_prefers_the_less_loaded_node() {
        let r = Arc::new(MemoryRegistry::new());
        let nodes = ["a", "b", "c"]
            .iter()
            .map(|id| node(id, &[("name", id)]))
            .collect();
        r.register(&service("s", "latest", &[], nodes), Default::default())
            .await
            .unwrap();
        let sel = CacheSelector::new(r, Strategy::LeastOutstanding);
        // Ten requests in flight on a.
        let on_a = [("name".to_string(), "a".to_string())];
        let mut held = Vec::new();
        for _ in 0..10 {
            let s = sel
                .select("s", SelectOptions::new().node_metadata(&on_a))
                .await
                .unwrap();
            assert_eq!(s.node().id, "a");
            held.push(s);
        }
        let mut seen = BTreeSet::new();
        for _ in 0..300 {
            let id = pick(&sel, "s").await;
            assert_ne!(id, "a", "a is the busiest of any pair");
            seen.insert(id);
        }
        assert_eq!(seen.len(), 2);
        // Ten more held open: while b and c have fewer than a, a is never picked.
        let mut more = Vec::new();
        for _ in 0..10 {
            more.push(sel.select("s", SelectOptions::new()).await.unwrap());
        }
        let on = |id: &str| more.iter().filter(|s| s.node().id == id).count();
        assert_eq!((on("a"), on("b") + on("c")), (0, 10));
        // Dropping the selections ends their requests: a is picked again.
        drop(held);
        drop(more);
        let mut seen = BTreeSet::new();
        for _ in 0..300 {
            seen.insert(pick(&sel, "s").await);
        }
        assert!(seen.contains("a"));
    }

    #[tokio::test]
    async fn least_outstanding_keeps_two_nodes_level() {
        let r = Arc::new(MemoryRegistry::new());
        register(&*r, "s", &["a", "b"]).await;
        let sel = CacheSelector::new(r, Strategy::LeastOutstanding);
        let mut held = Vec::new();
        for i in 1..=20 {
            held.push(sel.select("s", SelectOptions::new()).await.unwrap());
            let on_a = held.iter().filter(|s| s.node().id == "a").count();
            assert!(on_a.abs_diff(i - on_a) <= 1, "{on_a} of {i}");
        }
    }

    async fn filtered_registry() -> CacheSelector {
        let r = Arc::new(MemoryRegistry::new());
        let hello = "Greeter.Hello";
        let v1 = service(
            "g",
            "v1",
            &[hello],
            vec![node("a", &[("zone", "eu")]), node("b", &[("zone", "us")])],
        );
        let v2 = service(
            "g",
            "v2",
            &[hello, "Greeter.Bye"],
            vec![node("c", &[("zone", "us")])],
        );
        // A node in another language that lists no endpoints.
        let v3 = service("g", "v3", &[], vec![node("d", &[("zone", "eu")])]);
        for s in [v1, v2, v3] {
            r.register(&s, Default::default()).await.unwrap();
        }
        CacheSelector::new(r, Strategy::Random)
    }

    async fn ids(sel: &CacheSelector, opts: SelectOptions<'_>) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        for _ in 0..200 {
            seen.insert(sel.select("g", opts).await.unwrap().node().id.clone());
        }
        seen
    }

    fn set(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test]
    async fn filters_alone_and_combined() {
        let sel = filtered_registry().await;
        let eu = [("zone".to_string(), "eu".to_string())];
        let us = [("zone".to_string(), "us".to_string())];
        let o = SelectOptions::new;
        assert_eq!(ids(&sel, o()).await, set(&["a", "b", "c", "d"]));
        assert_eq!(ids(&sel, o().version("v1")).await, set(&["a", "b"]));
        assert_eq!(ids(&sel, o().node_metadata(&eu)).await, set(&["a", "d"]));
        assert_eq!(
            ids(&sel, o().endpoint("Greeter.Bye")).await,
            set(&["c", "d"])
        );
        assert_eq!(
            ids(&sel, o().endpoint("Greeter.Hello")).await,
            set(&["a", "b", "c", "d"])
        );
        // Built-in endpoints are served by every node, listed or not.
        assert_eq!(
            ids(&sel, o().version("v1").endpoint("Debug.Stats")).await,
            set(&["a", "b"])
        );
        assert_eq!(
            ids(&sel, o().version("v2").node_metadata(&us)).await,
            set(&["c"])
        );
        assert_eq!(
            ids(&sel, o().endpoint("Greeter.Hello").node_metadata(&us)).await,
            set(&["b", "c"])
        );

        let sel = &sel;
        let err = |opts| async move { sel.select("g", opts).await.unwrap_err() };
        let e = err(o().version("v9")).await;
        assert_eq!(e.code(), 404);
        assert!(e.detail().starts_with("version filter"), "{e}");
        assert!(e.detail().contains("v1, v2, v3"), "{e}");
        let e = err(o().version("v1").endpoint("Greeter.Bye")).await;
        assert_eq!(e.code(), 404);
        assert!(e.detail().starts_with("endpoint filter"), "{e}");
        assert!(e.detail().contains("Greeter.Bye"), "{e}");
        let e = err(o().version("v2").node_metadata(&eu)).await;
        assert_eq!(e.code(), 404);
        assert!(e.detail().starts_with("node metadata filter"), "{e}");
        assert!(e.detail().contains("zone=eu"), "{e}");
        assert!(e.detail().contains("v2"), "{e}");
    }

    #[tokio::test]
    async fn the_endpoint_filter_applies_only_where_endpoints_are_listed() {
        let r = Arc::new(MemoryRegistry::new());
        r.register(
            &service("g", "v1", &["Greeter.Hello"], vec![node("a", &[])]),
            Default::default(),
        )
        .await
        .unwrap();
        let sel = CacheSelector::new(r, Strategy::Random);
        let e = sel
            .select("g", SelectOptions::new().endpoint("Greeter.Nope"))
            .await
            .unwrap_err();
        assert_eq!(e.code(), 404);
        assert!(e.detail().starts_with("endpoint filter"), "{e}");
        assert!(e.detail().contains("Greeter.Hello"), "{e}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_node_is_skipped_for_a_growing_backoff() {
        let r = Arc::new(MemoryRegistry::new());
        register(&*r, "s", &["a", "b", "c"]).await;
        let sel = CacheSelector::new(r, Strategy::RoundRobin);
        let picks = |n: usize| {
            let sel = sel.clone();
            async move {
                let mut seen = BTreeMap::<String, usize>::new();
                for _ in 0..n {
                    *seen.entry(pick(&sel, "s").await).or_default() += 1;
                }
                seen
            }
        };
        let fail = |id: &'static str| {
            let sel = sel.clone();
            async move {
                let node = Arc::new(node(id, &[]));
                sel.mark("s", &Selected::new(node), Outcome::Failure);
            }
        };
        assert_eq!(picks(30).await.len(), 3);

        // First failure: skipped for 1 s.
        fail("a").await;
        assert!(!picks(30).await.contains_key("a"));
        tokio::time::advance(Duration::from_millis(999)).await;
        assert!(!picks(30).await.contains_key("a"));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(picks(30).await.get("a"), Some(&10));

        // Second failure in a row: 2 s.
        fail("a").await;
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert!(!picks(30).await.contains_key("a"));
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(picks(30).await.contains_key("a"));

        // A success forgets the failures: the next back-off is 1 s again, and a
        // success during a back-off ends it.
        let got = sel.select("s", SelectOptions::new()).await.unwrap();
        let a = sel
            .select(
                "s",
                SelectOptions::new().tried(&["b".to_string(), "c".to_string()]),
            )
            .await
            .unwrap();
        assert_eq!(a.node().id, "a");
        drop(got);
        sel.mark("s", &a, Outcome::Success);
        fail("a").await;
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(picks(30).await.contains_key("a"));
        fail("a").await;
        sel.mark("s", &a, Outcome::Success);
        assert!(picks(30).await.contains_key("a"));
    }

    #[tokio::test(start_paused = true)]
    async fn with_every_node_backed_off_one_is_still_selected() {
        let r = Arc::new(MemoryRegistry::new());
        register(&*r, "s", &["a", "b"]).await;
        for strategy in [
            Strategy::Random,
            Strategy::RoundRobin,
            Strategy::LeastOutstanding,
        ] {
            let sel = CacheSelector::new(r.clone(), strategy);
            for id in ["a", "b"] {
                let n = Selected::new(Arc::new(node(id, &[])));
                sel.mark("s", &n, Outcome::Failure);
            }
            let mut seen = BTreeSet::new();
            for _ in 0..100 {
                seen.insert(pick(&sel, "s").await);
            }
            assert_eq!(seen.len(), 2, "{strategy}");
            // An untried node is still preferred over a tried one.
            let tried = ["a".to_string()];
            let got = sel
                .select("s", SelectOptions::new().tried(&tried))
                .await
                .unwrap();
            assert_eq!(got.node().id, "b");
        }
    }

    #[tokio::test]
    async fn counters_survive_updates_of_a_node() {
        let r = Arc::new(MemoryRegistry::new());
        register(&*r, "s", &["a", "b"]).await;
        let sel = CacheSelector::new(r.clone(), Strategy::LeastOutstanding);
        let only_a = ["a".to_string()];
        // Hold a request on b (prefer b by trying a).
        let on_b = sel
            .select("s", SelectOptions::new().tried(&only_a))
            .await
            .unwrap();
        assert_eq!(on_b.node().id, "b");
        // b's record changes; its in-flight count must stay.
        let changed = node("b", &[("weight", "2")]);
        r.register(
            &service("s", "latest", &[], vec![changed]),
            Default::default(),
        )
        .await
        .unwrap();
        until(|| {
            sel.shared.entry("s").is_some_and(|e| {
                e.snapshot
                    .load()
                    .slots
                    .iter()
                    .any(|s| !s.node.metadata.is_empty())
            })
        })
        .await;
        for _ in 0..50 {
            assert_eq!(pick(&sel, "s").await, "a");
        }
        drop(on_b);
    }
}
