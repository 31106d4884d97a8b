//! The registry as the gateway reads it: service records cached, so that a busy
//! gateway does not read the registry on every request, a new service is
//! routable about [`TTL`] after it registers, and an unreachable registry does
//! not stop the gateway.
//!
//! A record older than [`TTL`] is still served while one background read
//! refreshes it (stale-while-revalidate), and kept when that read fails
//! (stale-if-error): a gateway cut off from etcd goes on routing to the
//! services it knew, and requests never wait on the registry for a service
//! already seen. Only a service not seen yet (or seen as absent) is read while
//! the request waits.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use micro::registry::{Registry, Service};
use micro::Error;
use tokio::time::Instant;

/// How long a registry answer is taken as current.
pub const TTL: Duration = Duration::from_secs(1);

/// Entries kept before those not asked for within [`TTL`] are dropped: random
/// paths must not grow the cache without bound.
const MAX_ENTRIES: usize = 4096;

/// One cached answer.
#[derive(Debug)]
struct Entry {
    records: Arc<Vec<Service>>,
    /// When the registry gave `records`.
    read_at: Instant,
    /// When a request last asked for them.
    used_at: Instant,
    /// A background read is under way.
    refreshing: bool,
}

/// Cached reads by service name (looked up on every request: a fast seeded hash;
/// unknown names are kept too, bounded by `MAX_ENTRIES`).
type Entries = HashMap<String, Entry, foldhash::fast::RandomState>;

/// What a cache says about a key right now.
enum Cached {
    /// Current: serve it.
    Fresh(Arc<Vec<Service>>),
    /// Old: serve it, and refresh in the background (`true`: this caller starts
    /// the refresh).
    Stale(Arc<Vec<Service>>, bool),
    /// Nothing worth serving: read while the request waits.
    Missing,
}

/// Cached reads of a [`Registry`], per service and of the whole listing.
#[derive(Debug)]
pub struct Catalog {
    registry: Arc<dyn Registry>,
    services: Arc<Mutex<Entries>>,
    listing: Arc<Mutex<Entries>>,
}

/// The key of the listing in its one-entry map.
const ALL: &str = "";

impl Catalog {
    /// A catalog over `registry`.
    pub fn new(registry: Arc<dyn Registry>) -> Self {
        Catalog {
            registry,
            services: Arc::default(),
            listing: Arc::default(),
        }
    }

    /// The records of service `name` (every version); empty when it is unknown.
    pub async fn service(&self, name: &str) -> Result<Arc<Vec<Service>>, Error> {
        let read = |name: String| {
            let registry = self.registry.clone();
            async move { get_service(&*registry, &name).await }
        };
        cached(&self.services, name, read).await
    }

    /// [`Catalog::service`] when it needs no registry read while the caller
    /// waits (the records are cached, current or being refreshed): `None` sends
    /// the caller to [`Catalog::service`].
    pub fn service_now(&self, name: &str) -> Option<Arc<Vec<Service>>> {
        let read = |name: String| {
            let registry = self.registry.clone();
            async move { get_service(&*registry, &name).await }
        };
        cached_now(&self.services, name, read).ok()
    }

    /// Every registered service, sorted by name and version.
    pub async fn all(&self) -> Result<Arc<Vec<Service>>, Error> {
        let registry = self.registry.clone();
        let read = move |_: String| async move {
            let mut all = registry.list_services().await?;
            all.sort_by(|a, b| a.name.cmp(&b.name).then(a.version.cmp(&b.version)));
            Ok(all)
        };
        cached(&self.listing, ALL, read).await
    }

    /// The names of every registered service, sorted, once each.
    pub async fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .all()
            .await
            .map(|all| all.iter().map(|s| s.name.clone()).collect())
            .unwrap_or_default();
        names.dedup();
        names
    }
}

/// A service's records (none when it is not registered).
async fn get_service(registry: &dyn Registry, name: &str) -> Result<Vec<Service>, Error> {
    match registry.get_service(name).await {
        Ok(found) => Ok(found),
        Err(e) if e.code() == 404 => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// The answer for `key` from `cache`, reading it with `read` as the module
/// comment says.
async fn cached<R, F>(
    cache: &Arc<Mutex<Entries>>,
    key: &str,
    read: R,
) -> Result<Arc<Vec<Service>>, Error>
where
    R: FnOnce(String) -> F,
    F: std::future::Future<Output = Result<Vec<Service>, Error>> + Send + 'static,
{
    match cached_now(cache, key, read) {
        Ok(records) => Ok(records),
        Err(read) => {
            let now = Instant::now();
            let records = read(key.to_string()).await?;
            Ok(store(cache, key.to_string(), Some(records), now).unwrap_or_default())
        }
    }
}

/// What is cached for `key`, refreshed in the background when old; `read` is
/// given back when nothing is worth serving and the caller must wait for a read.
fn cached_now<R, F>(cache: &Arc<Mutex<Entries>>, key: &str, read: R) -> Result<Arc<Vec<Service>>, R>
where
    R: FnOnce(String) -> F,
    F: std::future::Future<Output = Result<Vec<Service>, Error>> + Send + 'static,
{
    match look_up(cache, key, Instant::now()) {
        Cached::Fresh(records) | Cached::Stale(records, false) => Ok(records),
        Cached::Stale(records, true) => {
            let (cache, key) = (cache.clone(), key.to_string());
            let refresh = read(key.clone());
            tokio::spawn(async move {
                let result = refresh.await;
                if let Err(e) = &result {
                    tracing::warn!(service = %key, error = %e, "reading the registry failed; routing with what was read before");
                }
                store(&cache, key, result.ok(), Instant::now());
            });
            Ok(records)
        }
        Cached::Missing => Err(read),
    }
}

fn look_up(cache: &Mutex<Entries>, key: &str, now: Instant) -> Cached {
    let mut cache = lock(cache);
    let Some(entry) = cache.get_mut(key) else {
        return Cached::Missing;
    };
    entry.used_at = now;
    if now.duration_since(entry.read_at) < TTL {
        return Cached::Fresh(entry.records.clone());
    }
    // An old "absent" is not worth serving: the service may have come since.
    if entry.records.is_empty() {
        return Cached::Missing;
    }
    let start = !entry.refreshing;
    entry.refreshing = true;
    Cached::Stale(entry.records.clone(), start)
}

/// Records what a read gave (`None`: it failed, keep what was there); the
/// records now cached for `key`.
fn store(
    cache: &Mutex<Entries>,
    key: String,
    read: Option<Vec<Service>>,
    now: Instant,
) -> Option<Arc<Vec<Service>>> {
    let mut cache = lock(cache);
    if cache.len() >= MAX_ENTRIES && !cache.contains_key(&key) {
        cache.retain(|_, e| now.duration_since(e.used_at) < TTL);
    }
    match (cache.get_mut(&key), read) {
        (Some(entry), None) => {
            entry.refreshing = false;
            Some(entry.records.clone())
        }
        (None, None) => None,
        (_, Some(records)) => {
            let records = Arc::new(records);
            cache.insert(
                key,
                Entry {
                    records: records.clone(),
                    read_at: now,
                    used_at: now,
                    refreshing: false,
                },
            );
            Some(records)
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use futures_util::future::BoxFuture;
    use micro::registry::{MemoryRegistry, Node, RegisterOptions, Watcher};

    use super::*;

    /// A registry that can be made to fail, counting reads.
    #[derive(Debug, Default)]
    struct Flaky {
        inner: MemoryRegistry,
        down: AtomicBool,
        reads: AtomicUsize,
    }

    impl Flaky {
        fn check(&self) -> Result<(), Error> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            if self.down.load(Ordering::SeqCst) {
                Err(Error::service_unavailable("test", "registry down"))
            } else {
                Ok(())
            }
        }
    }

    impl Registry for Flaky {
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
            Box::pin(async move {
                self.check()?;
                self.inner.get_service(name).await
            })
        }
        fn list_services(&self) -> BoxFuture<'_, Result<Vec<Service>, Error>> {
            Box::pin(async move {
                self.check()?;
                self.inner.list_services().await
            })
        }
        fn watch(&self, service: Option<&str>) -> BoxFuture<'_, Result<Watcher, Error>> {
            self.inner.watch(service)
        }
        fn name(&self) -> &'static str {
            "flaky"
        }
    }

    fn greeter(id: &str) -> Service {
        Service {
            name: "greeter".into(),
            version: "latest".into(),
            nodes: vec![Node {
                id: id.into(),
                address: "127.0.0.1:1".into(),
                ..Node::default()
            }],
            ..Service::default()
        }
    }

    fn ids(records: &[Service]) -> Vec<String> {
        records
            .iter()
            .flat_map(|s| s.nodes.iter().map(|n| n.id.clone()))
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn serves_what_it_read_while_the_registry_is_down() {
        let registry = Arc::new(Flaky::default());
        registry
            .register(&greeter("a"), RegisterOptions::default())
            .await
            .unwrap();
        let catalog = Catalog::new(registry.clone());
        assert_eq!(ids(&catalog.service("greeter").await.unwrap()), ["a"]);
        assert!(catalog.service("nope").await.unwrap().is_empty());

        registry.down.store(true, Ordering::SeqCst);
        tokio::time::advance(TTL * 2).await;
        for _ in 0..3 {
            // Stale, but served at once; the failed refresh keeps it.
            assert_eq!(ids(&catalog.service("greeter").await.unwrap()), ["a"]);
            tokio::task::yield_now().await;
        }
        // A service never seen, or seen as absent, has nothing to fall back on.
        assert_eq!(catalog.service("nope").await.unwrap_err().code(), 503);
        assert_eq!(catalog.service("other").await.unwrap_err().code(), 503);
    }

    #[tokio::test(start_paused = true)]
    async fn an_old_answer_is_refreshed_in_the_background_once() {
        let registry = Arc::new(Flaky::default());
        registry
            .register(&greeter("a"), RegisterOptions::default())
            .await
            .unwrap();
        let catalog = Catalog::new(registry.clone());
        catalog.service("greeter").await.unwrap();
        catalog.all().await.unwrap();
        registry
            .register(&greeter("b"), RegisterOptions::default())
            .await
            .unwrap();
        let reads = registry.reads.load(Ordering::SeqCst);

        // Within the TTL: no read at all.
        assert_eq!(ids(&catalog.service("greeter").await.unwrap()), ["a"]);
        assert_eq!(registry.reads.load(Ordering::SeqCst), reads);

        // Past it: many requests start one read, and are answered meanwhile.
        tokio::time::advance(TTL * 2).await;
        for _ in 0..5 {
            assert_eq!(ids(&catalog.service("greeter").await.unwrap()), ["a"]);
        }
        tokio::task::yield_now().await;
        assert_eq!(registry.reads.load(Ordering::SeqCst), reads + 1);
        let mut now = ids(&catalog.service("greeter").await.unwrap());
        now.sort();
        assert_eq!(now, ["a", "b"]);
    }

    #[tokio::test(start_paused = true)]
    async fn random_names_do_not_grow_the_cache_without_bound() {
        let catalog = Catalog::new(Arc::new(MemoryRegistry::new()));
        for i in 0..MAX_ENTRIES {
            catalog.service(&format!("s{i}")).await.unwrap();
        }
        tokio::time::advance(TTL * 2).await;
        catalog.service("one-more").await.unwrap();
        assert_eq!(lock(&catalog.services).len(), 1);
    }
}
