//! The registry as the gateway reads it: service records cached for a moment, so
//! that a busy gateway does not read the registry on every request, and so that a
//! new service is routable within [`TTL`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use micro::registry::{Registry, Service};
use micro::Error;
use tokio::time::Instant;

/// How long a registry answer is reused.
pub const TTL: Duration = Duration::from_secs(1);

/// Records read from the registry, and when.
type Read = (Instant, Arc<Vec<Service>>);

/// Cached reads of a [`Registry`].
#[derive(Debug)]
pub struct Catalog {
    registry: Arc<dyn Registry>,
    services: Mutex<HashMap<String, Read>>,
    listing: Mutex<Option<Read>>,
}

impl Catalog {
    /// A catalog over `registry`.
    pub fn new(registry: Arc<dyn Registry>) -> Self {
        Catalog {
            registry,
            services: Mutex::default(),
            listing: Mutex::default(),
        }
    }

    /// The records of service `name` (every version); empty when it is unknown.
    pub async fn service(&self, name: &str) -> Result<Arc<Vec<Service>>, Error> {
        let now = Instant::now();
        if let Some((at, found)) = lock(&self.services).get(name) {
            if now.duration_since(*at) < TTL {
                return Ok(found.clone());
            }
        }
        let found = match self.registry.get_service(name).await {
            Ok(found) => found,
            Err(e) if e.code() == 404 => Vec::new(),
            Err(e) => return Err(e),
        };
        let found = Arc::new(found);
        let mut services = lock(&self.services);
        services.retain(|_, (at, _)| now.duration_since(*at) < TTL);
        services.insert(name.to_string(), (now, found.clone()));
        Ok(found)
    }

    /// Every registered service.
    pub async fn all(&self) -> Result<Arc<Vec<Service>>, Error> {
        let now = Instant::now();
        if let Some((at, all)) = lock(&self.listing).as_ref() {
            if now.duration_since(*at) < TTL {
                return Ok(all.clone());
            }
        }
        let mut all = self.registry.list_services().await?;
        all.sort_by(|a, b| a.name.cmp(&b.name).then(a.version.cmp(&b.version)));
        let all = Arc::new(all);
        *lock(&self.listing) = Some((now, all.clone()));
        Ok(all)
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
