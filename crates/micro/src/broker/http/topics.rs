//! The subscribers of each topic, in a cache fed by one registry watch: a publish
//! costs no registry round trip once its topic is known.
//!
//! The first publish on a topic reads `topic:<topic>` from the registry; the watch
//! (of every service, opened before that read) keeps it current from then on.
//! Events for a topic still being read are replayed on top of the read. A watch
//! error clears the cache (the next publish reads again); a watch that cannot be
//! opened leaves publishes reading the registry each time until it can (retried at
//! most once a second).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::outbox::DestKey;
use super::wire;
use crate::registry::{Event, EventKind, Node, Registry, Service};
use crate::Error;

/// The registry service a topic's subscribers register under.
pub(super) const SERVICE_PREFIX: &str = "topic:";
/// The version of broadcast (no queue group) subscribers.
pub(super) const BROADCAST: &str = "broadcast";
/// Wait before opening a watch again after it failed.
const WATCH_RETRY: Duration = Duration::from_secs(1);

pub(super) fn service_name(topic: &str) -> String {
    format!("{SERVICE_PREFIX}{topic}")
}

/// One subscriber a message can be delivered to.
#[derive(Debug)]
pub(super) struct Target {
    pub(super) node_id: String,
    pub(super) key: DestKey,
    /// The queue group; `None` for a broadcast subscriber.
    pub(super) queue: Option<String>,
}

impl Target {
    /// The target a registry node stands for; `None` for nodes another kind of
    /// broker registered or whose address cannot be used.
    fn from_node(version: &str, node: &Node) -> Option<Self> {
        let meta = &node.metadata;
        if meta.get("broker").is_some_and(|b| b != "http") {
            return None;
        }
        let path = meta
            .get("path")
            .cloned()
            .unwrap_or_else(|| wire::sub_path(&node.id));
        if !path.starts_with('/')
            || format!("http://{}{path}", node.address)
                .parse::<http::Uri>()
                .is_err()
        {
            tracing::debug!(node = %node.id, address = %node.address, %path, "skipping a subscriber with an unusable address");
            return None;
        }
        let queue = match meta.get("queue").filter(|q| !q.is_empty()) {
            Some(q) => Some(q.clone()),
            None if version != BROADCAST && !version.is_empty() && !meta.contains_key("queue") => {
                Some(version.to_string())
            }
            None => None,
        };
        Some(Target {
            node_id: node.id.clone(),
            key: DestKey {
                address: node.address.clone(),
                path,
            },
            queue,
        })
    }
}

pub(super) type Targets = Arc<[Arc<Target>]>;

#[derive(Debug)]
pub(super) struct Topics {
    registry: Arc<dyn Registry>,
    entries: Mutex<HashMap<String, Arc<Entry>>>,
    watching: AtomicBool,
    /// Serializes opening the watch; holds when to try again after a failure.
    opening: tokio::sync::Mutex<Option<Instant>>,
    task: Mutex<Option<AbortHandle>>,
}

#[derive(Debug, Default)]
struct Entry {
    loaded: tokio::sync::OnceCell<()>,
    data: Mutex<EntryData>,
}

#[derive(Debug, Default)]
struct EntryData {
    loaded: bool,
    /// Events that came while the first read was under way.
    pending: Vec<Event>,
    /// (version, node id) -> target
    nodes: BTreeMap<(String, String), Arc<Target>>,
    snapshot: Option<Targets>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl EntryData {
    fn apply(&mut self, event: &Event) {
        let version = &event.service.version;
        for node in &event.service.nodes {
            let key = (version.clone(), node.id.clone());
            match event.kind {
                EventKind::Added | EventKind::Updated => match Target::from_node(version, node) {
                    Some(t) => {
                        self.nodes.insert(key, Arc::new(t));
                    }
                    None => {
                        self.nodes.remove(&key);
                    }
                },
                EventKind::Removed => {
                    self.nodes.remove(&key);
                }
            }
        }
        self.snapshot = None;
    }

    fn snapshot(&mut self) -> Targets {
        self.snapshot
            .get_or_insert_with(|| self.nodes.values().cloned().collect())
            .clone()
    }
}

fn targets_of(services: &[Service]) -> BTreeMap<(String, String), Arc<Target>> {
    let mut out = BTreeMap::new();
    for s in services {
        for node in &s.nodes {
            if let Some(t) = Target::from_node(&s.version, node) {
                out.insert((s.version.clone(), node.id.clone()), Arc::new(t));
            }
        }
    }
    out
}

impl Topics {
    pub(super) fn new(registry: Arc<dyn Registry>) -> Self {
        Topics {
            registry,
            entries: Mutex::default(),
            watching: AtomicBool::new(false),
            opening: tokio::sync::Mutex::new(None),
            task: Mutex::new(None),
        }
    }

    /// Reads the subscribers of `topic` from the registry (none is not an error).
    async fn read(&self, topic: &str) -> Result<BTreeMap<(String, String), Arc<Target>>, Error> {
        match self.registry.get_service(&service_name(topic)).await {
            Ok(services) => Ok(targets_of(&services)),
            Err(e) if e.code() == 404 => Ok(BTreeMap::new()),
            Err(e) => Err(e),
        }
    }

    /// Every subscriber of `topic`.
    pub(super) async fn lookup(self: &Arc<Self>, topic: &str) -> Result<Targets, Error> {
        if !self.ensure_watch().await {
            let nodes = self.read(topic).await?;
            return Ok(nodes.into_values().collect());
        }
        let entry = lock(&self.entries)
            .entry(topic.to_string())
            .or_default()
            .clone();
        {
            let mut data = lock(&entry.data);
            if data.loaded {
                return Ok(data.snapshot());
            }
        }
        entry
            .loaded
            .get_or_try_init(|| async {
                let nodes = self.read(topic).await?;
                let mut data = lock(&entry.data);
                data.nodes = nodes;
                for event in std::mem::take(&mut data.pending) {
                    data.apply(&event);
                }
                data.loaded = true;
                data.snapshot = None;
                Ok::<_, Error>(())
            })
            .await?;
        let snapshot = lock(&entry.data).snapshot();
        Ok(snapshot)
    }

    /// Whether the cache lists the subscriber at `key` on `topic`; `None` when the
    /// topic is not cached (so nothing is known).
    pub(super) fn is_registered(&self, topic: &str, key: &DestKey) -> Option<bool> {
        let entry = lock(&self.entries).get(topic)?.clone();
        let data = lock(&entry.data);
        data.loaded
            .then(|| data.nodes.values().any(|t| &t.key == key))
    }

    /// Applies a registry event (from the watch, or one this broker caused itself
    /// and so knows before the watch tells it).
    pub(super) fn apply(&self, event: &Event) {
        let Some(topic) = event.service.name.strip_prefix(SERVICE_PREFIX) else {
            return;
        };
        let Some(entry) = lock(&self.entries).get(topic).cloned() else {
            return;
        };
        let mut data = lock(&entry.data);
        if data.loaded {
            data.apply(event);
        } else {
            data.pending.push(event.clone());
        }
    }

    /// Opens the registry watch unless it is open; `false` if it cannot be.
    async fn ensure_watch(self: &Arc<Self>) -> bool {
        if self.watching.load(Ordering::Acquire) {
            return true;
        }
        let mut retry_at = self.opening.lock().await;
        if self.watching.load(Ordering::Acquire) {
            return true;
        }
        if retry_at.is_some_and(|at| Instant::now() < at) {
            return false;
        }
        match self.registry.watch(None).await {
            Ok(mut watcher) => {
                *retry_at = None;
                lock(&self.entries).clear();
                self.watching.store(true, Ordering::Release);
                let weak: Weak<Topics> = Arc::downgrade(self);
                let task = tokio::spawn(async move {
                    while let Some(item) = watcher.next().await {
                        let Some(topics) = weak.upgrade() else { return };
                        match item {
                            Ok(event) => topics.apply(&event),
                            Err(e) => {
                                // Events may have been missed: read afresh.
                                tracing::debug!(error = %e, "registry watch error; re-reading topics");
                                lock(&topics.entries).clear();
                            }
                        }
                    }
                    if let Some(topics) = weak.upgrade() {
                        topics.watching.store(false, Ordering::Release);
                        lock(&topics.entries).clear();
                    }
                });
                if let Some(old) = lock(&self.task).replace(task.abort_handle()) {
                    old.abort();
                }
                true
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot watch the registry; reading it per publish");
                *retry_at = Some(Instant::now() + WATCH_RETRY);
                false
            }
        }
    }

    /// Stops the watch and forgets every topic.
    pub(super) fn stop(&self) {
        if let Some(task) = lock(&self.task).take() {
            task.abort();
        }
        self.watching.store(false, Ordering::Release);
        lock(&self.entries).clear();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn node(id: &str, meta: &[(&str, &str)]) -> Node {
        Node {
            id: id.into(),
            address: "127.0.0.1:1".into(),
            metadata: meta
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn nodes_become_targets() {
        let t = Target::from_node("broadcast", &node("a", &[("broker", "http")])).unwrap();
        assert_eq!(t.queue, None);
        assert_eq!(t.key.path, "/_sub?id=a");
        let t = Target::from_node("broadcast", &node("a", &[("queue", "w")])).unwrap();
        assert_eq!(t.queue.as_deref(), Some("w"));
        let t = Target::from_node("w", &node("a", &[])).unwrap();
        assert_eq!(t.queue.as_deref(), Some("w"));
        assert!(Target::from_node("w", &node("a", &[("broker", "nats")])).is_none());
        assert!(Target::from_node("w", &node("a", &[("path", "nope")])).is_none());
        let mut bad = node("a", &[]);
        bad.address = "no spaces allowed".into();
        assert!(Target::from_node("broadcast", &bad).is_none());
    }
}
