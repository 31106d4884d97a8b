//! The result of routing a request ([`Resolved`]), and the zero-config results
//! kept by path ([`ByPath`]): working out that `POST /greeter/hello` is
//! `Greeter.Hello` of `greeter` (parsing the path, matching the endpoint against
//! the service's registry records, naming the metrics series) is done once per
//! path and reused for as long as the service's records are the same ones.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use micro::registry::Service;

use super::target::Target;

/// Where a request goes: its target, the records of the target's service, and
/// the name of its metrics series.
#[derive(Debug)]
pub struct Resolved {
    /// Handler, service, endpoint, …
    pub target: Target,
    /// The service's registry records when the target was worked out.
    pub records: Arc<Vec<Service>>,
    /// The route (`/users/{id}`), or the zero-config service and endpoint
    /// (`greeter Greeter.Hello`).
    pub label: Arc<str>,
}

impl Resolved {
    /// Whether this was worked out from `records` (the service's records as they
    /// are now): a kept result from older records is stale.
    pub fn is_from(&self, records: &Arc<Vec<Service>>) -> bool {
        Arc::ptr_eq(&self.records, records)
    }
}

/// Paths kept: far more than a gateway's endpoints, few enough that random paths
/// cannot grow the map without bound (only paths that resolved are kept).
const CAPACITY: usize = 4096;

/// Results by path, looked up on every request: a fast seeded hash.
type KeptByPath = HashMap<Box<str>, Arc<Resolved>, foldhash::fast::RandomState>;

/// Zero-config routing results by request path.
#[derive(Debug, Default)]
pub struct ByPath {
    by_path: Mutex<KeptByPath>,
}

impl ByPath {
    /// The result kept for `path` (check [`Resolved::is_from`] before using it).
    pub fn get(&self, path: &str) -> Option<Arc<Resolved>> {
        self.lock().get(path).cloned()
    }

    /// Keeps `resolved` for `path`; when full, the map starts over.
    pub fn put(&self, path: &str, resolved: Arc<Resolved>) {
        let mut map = self.lock();
        if map.len() >= CAPACITY && !map.contains_key(path) {
            map.clear();
        }
        map.insert(path.into(), resolved);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, KeptByPath> {
        self.by_path.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolved(service: &str, records: &Arc<Vec<Service>>) -> Arc<Resolved> {
        Arc::new(Resolved {
            target: Target {
                service: service.into(),
                ..Target::default()
            },
            records: records.clone(),
            label: service.into(),
        })
    }

    #[test]
    fn a_result_holds_while_the_records_are_the_same() {
        let cache = ByPath::default();
        let records = Arc::new(vec![Service {
            name: "greeter".into(),
            ..Service::default()
        }]);
        cache.put("/greeter/hello", resolved("greeter", &records));
        let hit = cache.get("/greeter/hello").expect("kept");
        assert_eq!(hit.target.service, "greeter");
        assert!(hit.is_from(&records));
        // The same records read again (a node came or went): stale.
        let newer = Arc::new(records.as_ref().clone());
        assert!(!hit.is_from(&newer));
        assert!(cache.get("/greeter/other").is_none());
    }

    #[test]
    fn random_paths_do_not_grow_it_without_bound() {
        let cache = ByPath::default();
        let records = Arc::new(Vec::new());
        for i in 0..CAPACITY * 3 {
            cache.put(&format!("/s{i}/m"), resolved("s", &records));
        }
        assert!(cache.lock().len() <= CAPACITY);
        assert!(cache.get(&format!("/s{}/m", CAPACITY * 3 - 1)).is_some());
    }
}
