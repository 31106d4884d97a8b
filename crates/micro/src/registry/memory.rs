use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use futures_util::future::{BoxFuture, FutureExt};
use tokio::sync::broadcast;
use tokio::time::Instant;

use super::{
    broadcast_watcher, found_or_not_found, Event, EventKind, Node, RegisterOptions, Registry,
    Service, Watcher,
};
use crate::Error;

/// An in-process registry: tests, single-process programs, or a static node list.
///
/// Records expire after their TTL (on `tokio`'s clock, so tests can pause time).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), micro::Error> {
/// use micro::registry::{MemoryRegistry, Node, Registry, Service};
///
/// let registry = MemoryRegistry::new();
/// let service = Service {
///     name: "greeter".into(),
///     version: "latest".into(),
///     nodes: vec![Node { id: "greeter-1".into(), address: "127.0.0.1:9000".into(), ..Default::default() }],
///     ..Default::default()
/// };
/// registry.register(&service, Default::default()).await?;
/// assert_eq!(registry.get_service("greeter").await?[0].nodes.len(), 1);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct MemoryRegistry {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// name -> version -> record
    services: Mutex<HashMap<String, BTreeMap<String, Record>>>,
    events: broadcast::Sender<Event>,
}

#[derive(Debug, Clone)]
struct Record {
    service: Service,
    /// node id -> (node, expiry)
    nodes: BTreeMap<String, (Node, Instant)>,
}

impl Default for MemoryRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        let (events, _) = broadcast::channel(1024);
        MemoryRegistry {
            inner: Arc::new(Inner {
                services: Mutex::new(HashMap::new()),
                events,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, BTreeMap<String, Record>>> {
        // A panic while holding the lock cannot leave a record half-written (every
        // mutation is a single insert/remove), so a poisoned lock is still usable.
        self.inner
            .services
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn emit(&self, kind: EventKind, service: &Service, nodes: Vec<Node>) {
        if nodes.is_empty() {
            return;
        }
        let mut service = service.clone();
        service.nodes = nodes;
        let _ = self.inner.events.send(Event { kind, service });
    }

    /// Drops expired nodes (emitting `Removed`) and returns the live records.
    fn live(&self, name: Option<&str>) -> Vec<Service> {
        let now = Instant::now();
        let mut expired = Vec::new();
        let mut out = Vec::new();
        {
            let mut services = self.lock();
            let names: Vec<String> = match name {
                Some(n) => vec![n.to_string()],
                None => services.keys().cloned().collect(),
            };
            for n in names {
                let Some(versions) = services.get_mut(&n) else {
                    continue;
                };
                versions.retain(|_, record| {
                    let gone: Vec<Node> = record
                        .nodes
                        .iter()
                        .filter(|(_, (_, exp))| *exp <= now)
                        .map(|(_, (node, _))| node.clone())
                        .collect();
                    record.nodes.retain(|_, (_, exp)| *exp > now);
                    if !gone.is_empty() {
                        expired.push((record.service.clone(), gone));
                    }
                    !record.nodes.is_empty()
                });
                if versions.is_empty() {
                    services.remove(&n);
                    continue;
                }
                for record in versions.values() {
                    let mut s = record.service.clone();
                    s.nodes = record
                        .nodes
                        .values()
                        .map(|(node, _)| node.clone())
                        .collect();
                    out.push(s);
                }
            }
        }
        for (service, gone) in expired {
            self.emit(EventKind::Removed, &service, gone);
        }
        out.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
        out
    }
}

impl Registry for MemoryRegistry {
    fn register<'a>(
        &'a self,
        service: &'a Service,
        opts: RegisterOptions,
    ) -> BoxFuture<'a, Result<(), Error>> {
        async move {
            super::validate(service)?;
            let expiry = Instant::now() + opts.ttl;
            let (mut added, mut updated) = (Vec::new(), Vec::new());
            {
                let mut services = self.lock();
                let record = services
                    .entry(service.name.clone())
                    .or_default()
                    .entry(service.version.clone())
                    .or_insert_with(|| Record {
                        service: service.clone(),
                        nodes: BTreeMap::new(),
                    });
                // The newest registration's endpoints and metadata win.
                record.service = Service {
                    nodes: Vec::new(),
                    ..service.clone()
                };
                for node in &service.nodes {
                    match record.nodes.insert(node.id.clone(), (node.clone(), expiry)) {
                        None => added.push(node.clone()),
                        Some((old, _)) if old != *node => updated.push(node.clone()),
                        Some(_) => {}
                    }
                }
            }
            self.emit(EventKind::Added, service, added);
            self.emit(EventKind::Updated, service, updated);
            Ok(())
        }
        .boxed()
    }

    fn deregister<'a>(&'a self, service: &'a Service) -> BoxFuture<'a, Result<(), Error>> {
        async move {
            let mut removed = Vec::new();
            {
                let mut services = self.lock();
                if let Some(versions) = services.get_mut(&service.name) {
                    if let Some(record) = versions.get_mut(&service.version) {
                        for node in &service.nodes {
                            if let Some((old, _)) = record.nodes.remove(&node.id) {
                                removed.push(old);
                            }
                        }
                        if record.nodes.is_empty() {
                            versions.remove(&service.version);
                        }
                    }
                    if versions.is_empty() {
                        services.remove(&service.name);
                    }
                }
            }
            self.emit(EventKind::Removed, service, removed);
            Ok(())
        }
        .boxed()
    }

    fn get_service<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<Service>, Error>> {
        async move { found_or_not_found(name, self.live(Some(name))) }.boxed()
    }

    fn list_services(&self) -> BoxFuture<'_, Result<Vec<Service>, Error>> {
        async move { Ok(self.live(None)) }.boxed()
    }

    fn watch(&self, service: Option<&str>) -> BoxFuture<'_, Result<Watcher, Error>> {
        let watcher = broadcast_watcher(
            self.inner.events.subscribe(),
            service.map(str::to_string),
            "micro.registry",
        );
        futures_util::future::ready(Ok(watcher)).boxed()
    }

    fn name(&self) -> &'static str {
        "memory"
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures_util::StreamExt;

    use super::*;

    fn svc(version: &str, ids: &[&str]) -> Service {
        Service {
            name: "greeter".into(),
            version: version.into(),
            nodes: ids
                .iter()
                .map(|id| Node {
                    id: id.to_string(),
                    address: format!("127.0.0.1:{}", 9000 + id.len()),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn nodes_expire_after_ttl_and_watchers_see_it() {
        let r = MemoryRegistry::new();
        let mut w = r.watch(Some("greeter")).await.unwrap();
        let ttl = RegisterOptions {
            ttl: Duration::from_secs(10),
        };
        r.register(&svc("v1", &["a", "bb"]), ttl).await.unwrap();
        let ev = w.next().await.unwrap().unwrap();
        assert_eq!(ev.kind, EventKind::Added);
        assert_eq!(ev.service.nodes.len(), 2);

        tokio::time::advance(Duration::from_secs(5)).await;
        r.register(&svc("v1", &["a"]), ttl).await.unwrap(); // refresh a only
        tokio::time::advance(Duration::from_secs(6)).await;
        let live = r.get_service("greeter").await.unwrap();
        assert_eq!(live[0].nodes.len(), 1);
        assert_eq!(live[0].nodes[0].id, "a");
        let ev = w.next().await.unwrap().unwrap();
        assert_eq!(ev.kind, EventKind::Removed);
        assert_eq!(ev.service.nodes[0].id, "bb");

        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(r.get_service("greeter").await.unwrap_err().code(), 404);
        assert!(r.list_services().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn versions_are_separate_and_deregister_removes_nodes() {
        let r = MemoryRegistry::new();
        r.register(&svc("v1", &["a"]), Default::default())
            .await
            .unwrap();
        r.register(&svc("v2", &["b"]), Default::default())
            .await
            .unwrap();
        assert_eq!(r.get_service("greeter").await.unwrap().len(), 2);
        r.deregister(&svc("v1", &["a"])).await.unwrap();
        let left = r.get_service("greeter").await.unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].version, "v2");
    }

    #[tokio::test]
    async fn rejects_nodes_without_address() {
        let r = MemoryRegistry::new();
        let mut s = svc("v1", &["a"]);
        s.nodes[0].address.clear();
        assert_eq!(
            r.register(&s, Default::default()).await.unwrap_err().code(),
            400
        );
    }
}
