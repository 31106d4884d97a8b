//! [`EtcdRegistry`]: service discovery in etcd, one key and one lease per node.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::future::{BoxFuture, FutureExt};
use futures_util::stream;
use futures_util::StreamExt;
use serde_json::{json, Value};

use super::{
    found_or_not_found, Event, EventKind, Node, RegisterOptions, Registry, Service, Watcher,
};
use crate::etcd::{b64, range_end, unb64, EtcdClient, EtcdError, Leader};
use crate::Error;

/// The key prefix records live under unless told otherwise (go-micro's).
pub const DEFAULT_PREFIX: &str = "/micro/registry/";
const ID: &str = "micro.registry";

/// A registry in etcd: what services use across machines, with
/// `MICRO_REGISTRY=etcd MICRO_REGISTRY_ADDRESS=10.0.0.1:2379,10.0.0.2:2379`.
///
/// **Layout.** One key per node, `<prefix><service>/<version>/<node id>` (prefix
/// `/micro/registry/` by default; a `/` or `%` inside a name is written `%2F` /
/// `%25`), whose value is the JSON registry record of the service with that one
/// node. Reading a service reads the keys under `<prefix><service>/`; a version's
/// metadata and endpoints are those of its newest registration.
///
/// **Leases.** Each node's key is attached to a lease of its own whose TTL is the
/// registration's TTL rounded up to whole seconds (etcd raises TTLs below its
/// minimum, 2 s with etcd's default timing, to that minimum). When the process
/// dies — even by `kill -9` — the lease runs out and etcd deletes the key: the
/// node is gone within its TTL (plus up to half a second for etcd's expiry check).
/// Registering again (a service does so every `register_interval`, which must stay
/// below `register_ttl`, as with every registry) renews the lease and writes the
/// record only if it changed or went missing; if the lease is gone (etcd was down
/// longer than the TTL, the lease was revoked, the cluster was rebuilt from
/// nothing), a new lease is granted and the record written again, so a service
/// comes back by itself after an outage. Deregistering deletes the key and
/// revokes the lease.
///
/// **Reads** (`get_service`, `list_services`) are serializable: the member asked
/// answers from its own copy of the data, without a round trip to the leader, so
/// a member cut off from the quorum (or a cluster electing a leader) still
/// answers. Writes and lease renewals require a leader: a member without one is
/// skipped for the next endpoint at once.
///
/// **Watches** use etcd's watch with previous values, so a deletion or an expiry
/// becomes a `Removed` event with the node that left. A watch ends with an error
/// when its member goes away, stops answering (checked every 5 s) or loses its
/// leader, so a watcher (the selector cache) re-reads and watches again.
///
/// ```no_run
/// # async fn demo() -> Result<(), micro::Error> {
/// use micro::etcd::EtcdClient;
/// use micro::registry::{EtcdRegistry, Node, Registry, Service};
///
/// let registry = EtcdRegistry::new(EtcdClient::new(["10.0.0.1:2379", "10.0.0.2:2379"]));
/// let service = Service {
///     name: "greeter".into(),
///     version: "latest".into(),
///     nodes: vec![Node { id: "greeter-1".into(), address: "10.0.0.7:9000".into(), ..Default::default() }],
///     ..Default::default()
/// };
/// registry.register(&service, Default::default()).await?;
/// assert_eq!(registry.get_service("greeter").await?[0].nodes[0].id, "greeter-1");
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct EtcdRegistry {
    client: EtcdClient,
    prefix: String,
    /// key -> the lease this handle holds for it.
    leases: Arc<Mutex<HashMap<String, Held>>>,
}

/// A node registered through this handle.
#[derive(Debug, Clone)]
struct Held {
    lease: i64,
    ttl: i64,
    /// When the lease was last granted or renewed through this handle.
    renewed: Instant,
}

impl EtcdRegistry {
    /// A registry in the etcd that `client` reaches, under `/micro/registry/`.
    ///
    /// ```
    /// use micro::etcd::EtcdClient;
    /// use micro::registry::{EtcdRegistry, Registry};
    ///
    /// let registry = EtcdRegistry::new(EtcdClient::new(["127.0.0.1:2379"]));
    /// assert_eq!(registry.name(), "etcd");
    /// ```
    pub fn new(client: EtcdClient) -> Self {
        EtcdRegistry {
            client,
            prefix: DEFAULT_PREFIX.to_string(),
            leases: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Another key prefix (a `/` is added at the end if missing), e.g. to keep the
    /// registries of several environments apart in one etcd.
    ///
    /// ```
    /// use micro::etcd::EtcdClient;
    /// use micro::registry::EtcdRegistry;
    ///
    /// let staging = EtcdRegistry::new(EtcdClient::new(["127.0.0.1:2379"])).prefix("/staging/registry");
    /// assert_eq!(staging.key_prefix(), "/staging/registry/");
    /// ```
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = crate::etcd::key_prefix(prefix.into());
        self
    }

    /// The key prefix records live under.
    ///
    /// ```
    /// # use micro::{etcd::EtcdClient, registry::EtcdRegistry};
    /// assert_eq!(EtcdRegistry::new(EtcdClient::new(["h:2379"])).key_prefix(), "/micro/registry/");
    /// ```
    pub fn key_prefix(&self) -> &str {
        &self.prefix
    }

    /// The etcd client this registry uses.
    ///
    /// ```
    /// # use micro::{etcd::EtcdClient, registry::EtcdRegistry};
    /// let registry = EtcdRegistry::new(EtcdClient::new(["h:2379"]));
    /// assert_eq!(registry.client().endpoints(), ["http://h:2379"]);
    /// ```
    pub fn client(&self) -> &EtcdClient {
        &self.client
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Held>> {
        // Every change is one insert or remove: a poisoned lock is still consistent.
        self.leases
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn service_prefix(&self, name: &str) -> String {
        format!("{}{}/", self.prefix, escape(name))
    }

    fn key(&self, service: &Service, node: &Node) -> String {
        format!(
            "{}{}/{}",
            self.service_prefix(&service.name),
            escape(&service.version),
            escape(&node.id)
        )
    }

    /// A registry error for an etcd failure, saying what to do next.
    fn error(&self, what: &str, e: EtcdError) -> Error {
        let detail = format!("{what}: {e}");
        if e.is_unavailable() && e.message().contains("no leader") {
            Error::service_unavailable(
                ID,
                format!(
                    "{detail}; the etcd members reached have no leader: a majority of the \
                     cluster must run and reach each other (the registry retries)"
                ),
            )
        } else if e.is_unavailable() {
            Error::service_unavailable(
                ID,
                format!(
                    "{detail}; is etcd running and reachable? Check --registry_address / \
                     MICRO_REGISTRY_ADDRESS (now {})",
                    self.client.endpoints().join(",")
                ),
            )
        } else if e.is_auth() {
            Error::unauthorized(
                ID,
                format!(
                    "{detail}; check --registry_username and MICRO_REGISTRY_PASSWORD, and the \
                     user's permissions on {}",
                    self.prefix
                ),
            )
        } else if e.is_invalid() {
            Error::bad_request(ID, detail)
        } else {
            Error::internal_server_error(ID, detail)
        }
    }

    /// Keeps one node registered: renews its lease and writes its record if it
    /// changed or went missing; grants a new lease when the old one is gone.
    async fn register_node(&self, key: String, value: String, ttl: i64) -> Result<(), Error> {
        let held = self.lock().get(&key).cloned();
        if let Some(held) = held.as_ref().filter(|h| h.ttl == ttl) {
            if self.keep_alive(held.lease).await? {
                if let Some(entry) = self.lock().get_mut(&key) {
                    entry.renewed = Instant::now();
                }
                return self.put_if_changed(&key, &value, held.lease).await;
            }
            tracing::info!(%key, lease = held.lease, "the registration's lease is gone (etcd outage or restore?); registering anew");
        }
        let lease = self.grant(ttl).await?;
        if let Err(e) = self.put(&key, &value, lease).await {
            self.revoke(lease).await;
            return Err(e);
        }
        {
            let mut leases = self.lock();
            // Forget the nodes registered through this handle that nobody renewed
            // for two TTLs (a proxy's clients that died): their leases are gone.
            let now = Instant::now();
            leases.retain(|_, h| {
                now.duration_since(h.renewed) < Duration::from_secs(h.ttl.unsigned_abs()) * 2
            });
            leases.insert(
                key,
                Held {
                    lease,
                    ttl,
                    renewed: now,
                },
            );
        }
        if let Some(old) = held.filter(|h| h.lease != lease) {
            // The key is on the new lease now; the old one (a different TTL) goes.
            self.revoke(old.lease).await;
        }
        Ok(())
    }

    async fn grant(&self, ttl: i64) -> Result<i64, Error> {
        let answer = self
            .client
            .call(
                "/v3/lease/grant",
                &json!({"TTL": ttl.to_string()}),
                Leader::Required,
            )
            .await
            .map_err(|e| self.error("granting a lease", e))?;
        if let Some(error) = answer["error"].as_str().filter(|e| !e.is_empty()) {
            return Err(Error::internal_server_error(
                ID,
                format!("granting a lease: {error}"),
            ));
        }
        int(&answer["ID"]).ok_or_else(|| {
            Error::internal_server_error(ID, format!("granting a lease: no lease in {answer}"))
        })
    }

    /// Renews `lease`; false if etcd no longer has it.
    async fn keep_alive(&self, lease: i64) -> Result<bool, Error> {
        let answer = self
            .client
            .call(
                "/v3/lease/keepalive",
                &json!({"ID": lease.to_string()}),
                Leader::Required,
            )
            .await;
        match answer {
            // A streamed answer: `{"result":{"ID":…,"TTL":…}}`; no TTL when the
            // lease is gone.
            Ok(answer) => Ok(int(&answer["result"]["TTL"]).unwrap_or(0) > 0),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(self.error("renewing the registration's lease", e)),
        }
    }

    async fn revoke(&self, lease: i64) {
        let revoked = self
            .client
            .call(
                "/v3/lease/revoke",
                &json!({"ID": lease.to_string()}),
                Leader::Required,
            )
            .await;
        match revoked {
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => {
                tracing::debug!(lease, error = %e, "revoking a lease failed; it expires with its TTL");
            }
        }
    }

    async fn put(&self, key: &str, value: &str, lease: i64) -> Result<(), Error> {
        self.client
            .call(
                "/v3/kv/put",
                &json!({"key": b64(key), "value": b64(value), "lease": lease.to_string()}),
                Leader::Required,
            )
            .await
            .map_err(|e| self.error("writing the registration", e))?;
        Ok(())
    }

    /// Writes the record unless etcd already holds this value on this lease.
    async fn put_if_changed(&self, key: &str, value: &str, lease: i64) -> Result<(), Error> {
        let (key, value, lease) = (b64(key), b64(value), lease.to_string());
        let txn = json!({
            "compare": [
                {"key": key, "target": "VALUE", "result": "EQUAL", "value": value},
                {"key": key, "target": "LEASE", "result": "EQUAL", "lease": lease},
            ],
            "failure": [{"request_put": {"key": key, "value": value, "lease": lease}}],
        });
        self.client
            .call("/v3/kv/txn", &txn, Leader::Required)
            .await
            .map_err(|e| self.error("writing the registration", e))?;
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<(), Error> {
        self.client
            .call(
                "/v3/kv/deleterange",
                &json!({"key": b64(key)}),
                Leader::Required,
            )
            .await
            .map_err(|e| self.error("deleting the registration", e))?;
        Ok(())
    }

    /// Every record under `prefix`, grouped into service versions.
    async fn read(&self, prefix: &str) -> Result<Vec<Service>, Error> {
        let answer = self
            .client
            .call(
                "/v3/kv/range",
                &json!({
                    "key": b64(prefix),
                    "range_end": b64(range_end(prefix)),
                    "serializable": true,
                }),
                Leader::Any,
            )
            .await
            .map_err(|e| self.error("reading the registry", e))?;
        // (name, version) -> (newest revision, service)
        let mut versions: BTreeMap<(String, String), (i64, Service)> = BTreeMap::new();
        for kv in answer["kvs"].as_array().into_iter().flatten() {
            let Some(record) = self.record(kv) else {
                continue;
            };
            let revision = int(&kv["mod_revision"]).unwrap_or(0);
            let entry = versions
                .entry((record.name.clone(), record.version.clone()))
                .or_insert_with(|| {
                    (
                        revision,
                        Service {
                            nodes: Vec::new(),
                            ..record.clone()
                        },
                    )
                });
            if revision >= entry.0 {
                let nodes = std::mem::take(&mut entry.1.nodes);
                *entry = (
                    revision,
                    Service {
                        nodes,
                        ..record.clone()
                    },
                );
            }
            entry.1.nodes.extend(record.nodes);
        }
        Ok(versions.into_values().map(|(_, s)| s).collect())
    }

    /// The record in a key-value pair, if it is one of ours.
    fn record(&self, kv: &Value) -> Option<Service> {
        let key = unb64(kv["key"].as_str()?);
        let text = unb64(kv["value"].as_str().unwrap_or_default());
        match serde_json::from_str::<Service>(&text) {
            Ok(service) => Some(service),
            Err(e) => {
                tracing::debug!(%key, error = %e, "skipping a registry key that holds no record");
                None
            }
        }
    }

    /// The registry event of one etcd watch event, if it changes anything.
    fn event(&self, event: &Value) -> Option<Event> {
        let kv = &event["kv"];
        let previous = event
            .get("prev_kv")
            .filter(|p| p.is_object())
            .and_then(|p| self.record(p));
        if event["type"].as_str() == Some("DELETE") {
            let service = previous.or_else(|| self.record_of_key(&unb64(kv["key"].as_str()?)))?;
            return Some(Event {
                kind: EventKind::Removed,
                service,
            });
        }
        let current = self.record(kv)?;
        let kind = match previous {
            None => EventKind::Added,
            Some(previous) if previous == current => return None,
            Some(_) => EventKind::Updated,
        };
        Some(Event {
            kind,
            service: current,
        })
    }

    /// A record rebuilt from a key alone (name, version, node id), for a deletion
    /// whose previous value etcd no longer has.
    fn record_of_key(&self, key: &str) -> Option<Service> {
        let rest = key.strip_prefix(&self.prefix)?;
        let mut parts = rest.split('/');
        let (name, version, id) = (parts.next()?, parts.next()?, parts.next()?);
        Some(Service {
            name: unescape(name),
            version: unescape(version),
            nodes: vec![Node {
                id: unescape(id),
                ..Default::default()
            }],
            ..Default::default()
        })
    }
}

/// A TTL in whole seconds, rounded up, at least 1.
fn ttl_seconds(ttl: Duration) -> i64 {
    let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    i64::try_from(secs.max(1)).unwrap_or(i64::MAX)
}

/// An int64 of the JSON API (a string, or a number).
fn int(value: &Value) -> Option<i64> {
    value
        .as_str()
        .and_then(|s| s.parse().ok())
        .or_else(|| value.as_i64())
}

/// A name as one key segment: `%` and `/` escaped.
fn escape(name: &str) -> String {
    name.replace('%', "%25").replace('/', "%2F")
}

fn unescape(segment: &str) -> String {
    segment.replace("%2F", "/").replace("%25", "%")
}

impl Registry for EtcdRegistry {
    fn register<'a>(
        &'a self,
        service: &'a Service,
        opts: RegisterOptions,
    ) -> BoxFuture<'a, Result<(), Error>> {
        async move {
            super::validate(service)?;
            let ttl = ttl_seconds(opts.ttl);
            for node in &service.nodes {
                let record = Service {
                    nodes: vec![node.clone()],
                    ..service.clone()
                };
                let value = serde_json::to_string(&record).map_err(|e| {
                    Error::internal_server_error(ID, format!("encoding the record: {e}"))
                })?;
                self.register_node(self.key(service, node), value, ttl)
                    .await?;
            }
            Ok(())
        }
        .boxed()
    }

    fn deregister<'a>(&'a self, service: &'a Service) -> BoxFuture<'a, Result<(), Error>> {
        async move {
            for node in &service.nodes {
                let key = self.key(service, node);
                self.delete(&key).await?;
                let held = self.lock().remove(&key);
                if let Some(held) = held {
                    self.revoke(held.lease).await;
                }
            }
            Ok(())
        }
        .boxed()
    }

    fn get_service<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<Service>, Error>> {
        async move {
            let found = self.read(&self.service_prefix(name)).await?;
            let found = found.into_iter().filter(|s| s.name == name).collect();
            found_or_not_found(name, found)
        }
        .boxed()
    }

    fn list_services(&self) -> BoxFuture<'_, Result<Vec<Service>, Error>> {
        async move { self.read(&self.prefix).await }.boxed()
    }

    fn watch(&self, service: Option<&str>) -> BoxFuture<'_, Result<Watcher, Error>> {
        let prefix = match service {
            Some(name) => self.service_prefix(name),
            None => self.prefix.clone(),
        };
        let name = service.map(str::to_string);
        async move {
            let watch = self
                .client
                .watch(json!({
                    "key": b64(&prefix),
                    "range_end": b64(range_end(&prefix)),
                    "prev_kv": true,
                }))
                .await
                .map_err(|e| self.error("watching the registry", e))?;
            let this = self.clone();
            let events = watch.flat_map(move |message| {
                let items: Vec<Result<Event, Error>> = match message {
                    Ok(result) => result["events"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|e| this.event(e))
                        .filter(|e| name.as_deref().is_none_or(|n| n == e.service.name))
                        .map(Ok)
                        .collect(),
                    Err(e) => vec![Err(this.error("the registry watch ended", e))],
                };
                stream::iter(items)
            });
            Ok(events.boxed())
        }
        .boxed()
    }

    fn name(&self) -> &'static str {
        "etcd"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_registry_keys_and_ttls() {
        let r = EtcdRegistry::new(EtcdClient::new(["127.0.0.1:1"]));
        let s = Service {
            name: "a/b".into(),
            version: "1%".into(),
            ..Default::default()
        };
        let node = Node {
            id: "n/1".into(),
            ..Default::default()
        };
        let key = r.key(&s, &node);
        assert_eq!(key, "/micro/registry/a%2Fb/1%25/n%2F1");
        let back = r.record_of_key(&key).expect("a key of ours");
        assert_eq!((back.name.as_str(), back.version.as_str()), ("a/b", "1%"));
        assert_eq!(back.nodes[0].id, "n/1");
        assert_eq!(ttl_seconds(Duration::from_millis(400)), 1);
        assert_eq!(ttl_seconds(Duration::from_millis(1500)), 2);
        assert_eq!(ttl_seconds(Duration::from_secs(90)), 90);
        assert_eq!(ttl_seconds(Duration::ZERO), 1);
        assert_eq!(int(&json!("12")), Some(12));
        assert_eq!(int(&json!(7)), Some(7));
    }

    #[test]
    fn etcd_registry_events() {
        let r = EtcdRegistry::new(EtcdClient::new(["127.0.0.1:1"]));
        let record = |address: &str| {
            let s = Service {
                name: "greeter".into(),
                version: "v1".into(),
                nodes: vec![Node {
                    id: "g1".into(),
                    address: address.into(),
                    ..Default::default()
                }],
                ..Default::default()
            };
            json!({"key": b64("/micro/registry/greeter/v1/g1"), "value": b64(serde_json::to_string(&s).unwrap_or_default())})
        };
        let added = r.event(&json!({"kv": record("h:1")})).expect("added");
        assert_eq!(added.kind, EventKind::Added);
        assert!(r
            .event(&json!({"kv": record("h:1"), "prev_kv": record("h:1")}))
            .is_none());
        let updated = r
            .event(&json!({"kv": record("h:2"), "prev_kv": record("h:1")}))
            .expect("updated");
        assert_eq!(updated.kind, EventKind::Updated);
        assert_eq!(updated.service.nodes[0].address, "h:2");
        let removed = r
            .event(&json!({"type": "DELETE", "kv": {"key": b64("/micro/registry/greeter/v1/g1")}, "prev_kv": record("h:2")}))
            .expect("removed");
        assert_eq!(removed.kind, EventKind::Removed);
        assert_eq!(removed.service.nodes[0].address, "h:2");
        let bare = r
            .event(&json!({"type": "DELETE", "kv": {"key": b64("/micro/registry/greeter/v1/g1")}}))
            .expect("removed without a previous value");
        assert_eq!(bare.service.nodes[0].id, "g1");
    }
}
