//! [`ServiceRegistry`]: the registry of a `micro server`, reached through the
//! proxy's Registry API (`MICRO_REGISTRY=service`), and the conversions between
//! the proxy's records (`micro::proto::v1`) and [`Service`] & co.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::{BoxFuture, FutureExt};
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::{Endpoint, Event, EventKind, Node, RegisterOptions, Registry, Service, Type, Watcher};
use crate::client::CallOptions;
use crate::proto::v1 as pb;
use crate::proto::v1::registry_client::RegistryClient;
use crate::{Client, Error};

const ID: &str = "micro.registry";

/// How long a watch or subscription stream may stay open before it is re-opened.
pub(crate) const STREAM_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 60 * 60);
/// Shortest and longest wait before re-opening a stream the proxy ended.
pub(crate) const RETRY_MIN: Duration = Duration::from_millis(100);
pub(crate) const RETRY_MAX: Duration = Duration::from_secs(5);

/// A registry that lives in a `micro server`: every call goes to the proxy's
/// Registry API (`micro.v1.Registry`) at one address, by default
/// `127.0.0.1:8081` (`MICRO_REGISTRY=service`, `MICRO_REGISTRY_ADDRESS=host:port`).
///
/// Registrations live on the server for their TTL (rounded up to whole seconds),
/// so a service that stops without deregistering disappears after its TTL. A
/// [`watch`](Registry::watch) follows the proxy's Watch stream: it starts with the
/// proxy's current state as `Added` events, then the changes. When the stream
/// breaks (the proxy restarts, or the watcher fell behind) it is re-opened with a
/// back-off, and the watcher yields one error ("list again") so that caches such
/// as the selector's re-read what they hold, then the state and changes again.
///
/// ```no_run
/// # async fn doc() -> Result<(), micro::Error> {
/// use micro::registry::{Registry, ServiceRegistry};
///
/// let registry = ServiceRegistry::new("127.0.0.1:8081");
/// for service in registry.list_services().await? {
///     println!("{} {}", service.name, service.version);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct ServiceRegistry {
    address: Arc<str>,
    client: RegistryClient,
}

impl ServiceRegistry {
    /// Where `micro server` serves its API unless told otherwise.
    pub const DEFAULT_ADDRESS: &'static str = "127.0.0.1:8081";

    /// A registry reached through the proxy at `address` (`host:port`).
    pub fn new(address: impl Into<String>) -> Self {
        let address: String = address.into();
        let client = Client::builder().build();
        Self::with_client(address, client)
    }

    /// Like [`ServiceRegistry::new`], calling through `client` (its timeouts, pool
    /// and wrappers); calls are pinned to `address`.
    pub fn with_client(address: impl Into<String>, client: Client) -> Self {
        let address: String = address.into();
        let client = RegistryClient::new("micro.registry", client)
            .with_options(CallOptions::default().address(address.clone()));
        ServiceRegistry {
            address: address.into(),
            client,
        }
    }

    /// The proxy's address.
    pub fn address(&self) -> &str {
        &self.address
    }

    fn stream_options(&self) -> CallOptions {
        CallOptions::default()
            .address(self.address.to_string())
            .timeout(STREAM_TIMEOUT)
    }

    async fn open_watch(&self, service: &str) -> Result<crate::Streaming<pb::ServiceEvent>, Error> {
        let request = pb::WatchServicesRequest {
            service: service.to_string(),
        };
        self.client
            .watch_with(request, &self.stream_options())
            .await
            .map_err(|e| unreachable_hint(e, &self.address, "MICRO_REGISTRY_ADDRESS"))
    }
}

/// Adds what to do to the errors of a proxy that cannot be reached (errors the
/// proxy itself answered are passed on as they are).
pub(crate) fn unreachable_hint(e: Error, address: &str, variable: &str) -> Error {
    if e.id() == "micro.client" && matches!(e.code(), 408 | 500 | 502 | 503 | 504) {
        Error::new(
            e.id(),
            format!(
                "{} (is `micro server` running at {address}? start it, or set {variable} to its host:port)",
                e.detail()
            ),
            e.code(),
        )
    } else {
        e
    }
}

/// Whole seconds, rounded up, at least one.
fn ttl_seconds(ttl: Duration) -> u32 {
    let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    u32::try_from(secs.max(1)).unwrap_or(u32::MAX)
}

impl Registry for ServiceRegistry {
    fn register<'a>(
        &'a self,
        service: &'a Service,
        opts: RegisterOptions,
    ) -> BoxFuture<'a, Result<(), Error>> {
        async move {
            super::validate(service)?;
            let request = pb::RegisterRequest {
                service: Some(service.clone().into()),
                ttl_seconds: ttl_seconds(opts.ttl),
            };
            self.client
                .register(request)
                .await
                .map_err(|e| unreachable_hint(e, &self.address, "MICRO_REGISTRY_ADDRESS"))?;
            Ok(())
        }
        .boxed()
    }

    fn deregister<'a>(&'a self, service: &'a Service) -> BoxFuture<'a, Result<(), Error>> {
        async move {
            let request = pb::DeregisterRequest {
                service: Some(service.clone().into()),
            };
            self.client
                .deregister(request)
                .await
                .map_err(|e| unreachable_hint(e, &self.address, "MICRO_REGISTRY_ADDRESS"))?;
            Ok(())
        }
        .boxed()
    }

    fn get_service<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<Service>, Error>> {
        async move {
            let request = pb::GetServiceRequest {
                service: name.to_string(),
                version: String::new(),
            };
            let found = self
                .client
                .get_service(request)
                .await
                .map_err(|e| unreachable_hint(e, &self.address, "MICRO_REGISTRY_ADDRESS"))?;
            let found: Vec<Service> = found.services.into_iter().map(Service::from).collect();
            super::found_or_not_found(name, found)
        }
        .boxed()
    }

    fn list_services(&self) -> BoxFuture<'_, Result<Vec<Service>, Error>> {
        async move {
            let listed = self
                .client
                .list_services(pb::ListServicesRequest {})
                .await
                .map_err(|e| unreachable_hint(e, &self.address, "MICRO_REGISTRY_ADDRESS"))?;
            Ok(listed.services.into_iter().map(Service::from).collect())
        }
        .boxed()
    }

    fn watch(&self, service: Option<&str>) -> BoxFuture<'_, Result<Watcher, Error>> {
        let filter = service.unwrap_or_default().to_string();
        async move {
            // The first stream is opened here, so that a proxy that cannot be reached
            // is an error of `watch` and events from now on are not missed.
            let first = self.open_watch(&filter).await?;
            let (tx, rx) = mpsc::channel::<Result<Event, Error>>(256);
            let this = self.clone();
            tokio::spawn(async move { this.follow(first, filter, tx).await });
            Ok(tokio_stream::wrappers::ReceiverStream::new(rx).boxed())
        }
        .boxed()
    }

    fn name(&self) -> &'static str {
        "service"
    }
}

impl ServiceRegistry {
    /// Forwards the events of the proxy's Watch stream to `tx` until the watcher
    /// is dropped, re-opening the stream with a back-off when it breaks.
    async fn follow(
        &self,
        mut stream: crate::Streaming<pb::ServiceEvent>,
        filter: String,
        tx: mpsc::Sender<Result<Event, Error>>,
    ) {
        loop {
            // Forward until the stream ends or fails.
            let reason = loop {
                let item = tokio::select! {
                    _ = tx.closed() => return,
                    item = stream.next() => item,
                };
                match item {
                    Some(Ok(event)) => match Event::try_from(event) {
                        Ok(event) => {
                            if tx.send(Ok(event)).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => tracing::debug!(error = %e, "skipping a registry event"),
                    },
                    Some(Err(e)) => break e.to_string(),
                    None => break "the proxy ended the stream".to_string(),
                }
            };
            drop(stream);
            tracing::debug!(address = %self.address, %reason, "registry watch interrupted; re-opening it");
            // Re-open with a back-off, for as long as somebody watches.
            let mut retry = RETRY_MIN;
            stream = loop {
                let opened = tokio::select! {
                    _ = tx.closed() => return,
                    opened = self.open_watch(&filter) => opened,
                };
                match opened {
                    Ok(s) => break s,
                    Err(e) => {
                        tracing::debug!(address = %self.address, error = %e, retry_in = ?retry, "cannot re-open the registry watch");
                    }
                }
                tokio::select! {
                    _ = tx.closed() => return,
                    _ = tokio::time::sleep(retry) => {}
                }
                retry = (retry * 2).min(RETRY_MAX);
            };
            // Whatever changed meanwhile is unknown: tell the watcher to list again.
            let reset = Error::service_unavailable(
                ID,
                format!(
                    "the registry watch at {} was interrupted ({reason}) and resumed; list again",
                    self.address
                ),
            );
            if tx.send(Err(reset)).await.is_err() {
                return;
            }
        }
    }
}

// ---- Conversions between the proxy's records and the registry's. ----

pub(crate) use crate::codec::{json_to_value, value_to_json};

fn to_hash(map: BTreeMap<String, String>) -> HashMap<String, String> {
    map.into_iter().collect()
}

fn to_btree(map: HashMap<String, String>) -> BTreeMap<String, String> {
    map.into_iter().collect()
}

impl From<Type> for pb::Type {
    fn from(t: Type) -> Self {
        pb::Type {
            name: t.name,
            schema: (!t.schema.is_null()).then(|| json_to_value(t.schema)),
        }
    }
}

impl From<pb::Type> for Type {
    fn from(t: pb::Type) -> Self {
        Type {
            name: t.name,
            schema: t.schema.map(value_to_json).unwrap_or_default(),
        }
    }
}

impl From<Endpoint> for pb::Endpoint {
    fn from(e: Endpoint) -> Self {
        pb::Endpoint {
            name: e.name,
            request: Some(e.request.into()),
            response: Some(e.response.into()),
            metadata: to_hash(e.metadata),
        }
    }
}

impl From<pb::Endpoint> for Endpoint {
    fn from(e: pb::Endpoint) -> Self {
        Endpoint {
            name: e.name,
            request: e.request.map(Type::from).unwrap_or_default(),
            response: e.response.map(Type::from).unwrap_or_default(),
            metadata: to_btree(e.metadata),
        }
    }
}

impl From<Node> for pb::Node {
    fn from(n: Node) -> Self {
        pb::Node {
            id: n.id,
            address: n.address,
            metadata: to_hash(n.metadata),
        }
    }
}

impl From<pb::Node> for Node {
    fn from(n: pb::Node) -> Self {
        Node {
            id: n.id,
            address: n.address,
            metadata: to_btree(n.metadata),
        }
    }
}

impl From<Service> for pb::Service {
    fn from(s: Service) -> Self {
        pb::Service {
            name: s.name,
            version: s.version,
            metadata: to_hash(s.metadata),
            endpoints: s.endpoints.into_iter().map(Into::into).collect(),
            nodes: s.nodes.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<pb::Service> for Service {
    fn from(s: pb::Service) -> Self {
        Service {
            name: s.name,
            version: s.version,
            metadata: to_btree(s.metadata),
            endpoints: s.endpoints.into_iter().map(Into::into).collect(),
            nodes: s.nodes.into_iter().map(Into::into).collect(),
        }
    }
}

impl EventKind {
    /// The action of the proxy's `ServiceEvent`: `create`, `update` or `delete`.
    pub fn action(self) -> &'static str {
        match self {
            EventKind::Added => "create",
            EventKind::Updated => "update",
            EventKind::Removed => "delete",
        }
    }

    /// The kind an action of the proxy's `ServiceEvent` names; a 400 for others.
    pub fn from_action(action: &str) -> Result<Self, Error> {
        match action {
            "create" => Ok(EventKind::Added),
            "update" => Ok(EventKind::Updated),
            "delete" => Ok(EventKind::Removed),
            other => Err(Error::bad_request(
                ID,
                format!(
                    "unknown registry event action {other:?}: expected create, update or delete"
                ),
            )),
        }
    }
}

impl From<Event> for pb::ServiceEvent {
    fn from(e: Event) -> Self {
        pb::ServiceEvent {
            action: e.kind.action().to_string(),
            service: Some(e.service.into()),
        }
    }
}

impl TryFrom<pb::ServiceEvent> for Event {
    type Error = Error;

    fn try_from(e: pb::ServiceEvent) -> Result<Self, Error> {
        Ok(Event {
            kind: EventKind::from_action(&e.action)?,
            service: e.service.map(Service::from).unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Service {
        Service {
            name: "greeter".into(),
            version: "1.0.0".into(),
            metadata: [("team".to_string(), "core".to_string())].into(),
            endpoints: vec![Endpoint {
                name: "Greeter.Hello".into(),
                request: Type {
                    name: "HelloRequest".into(),
                    schema: serde_json::json!({
                        "type": "object",
                        "properties": {"name": {"type": "string", "maxLength": 64}},
                        "required": ["name"],
                        "x-ratio": 0.5,
                        "x-null": null,
                        "x-flag": true,
                        "x-neg": -3
                    }),
                },
                response: Type {
                    name: "HelloResponse".into(),
                    schema: serde_json::Value::Null,
                },
                metadata: [("stream".to_string(), "false".to_string())].into(),
            }],
            nodes: vec![Node {
                id: "greeter-1".into(),
                address: "127.0.0.1:9000".into(),
                metadata: [("protocol".to_string(), "grpc+json".to_string())].into(),
            }],
        }
    }

    #[test]
    fn records_round_trip_through_the_proto() {
        let s = record();
        let proto: pb::Service = s.clone().into();
        assert!(
            proto.endpoints[0]
                .response
                .as_ref()
                .is_some_and(|t| t.schema.is_none()),
            "a null schema is an absent Value"
        );
        assert_eq!(Service::from(proto), s);
    }

    #[test]
    fn the_json_form_of_the_proto_record_is_the_registry_record() {
        // proto3 JSON of the proto record is the JSON of DESIGN.md's record.
        let s = record();
        let proto: pb::Service = s.clone().into();
        let json = serde_json::to_value(&proto).unwrap_or_default();
        // pbjson writes every number as a float (`64.0`); it reads back as 64.
        assert_eq!(
            json["endpoints"][0]["request"]["schema"]["properties"]["name"]["maxLength"].as_f64(),
            Some(64.0)
        );
        let back: pb::Service = serde_json::from_value(json).unwrap_or_default();
        assert_eq!(Service::from(back), s);
    }

    #[test]
    fn events_map_to_actions_and_back() {
        for kind in [EventKind::Added, EventKind::Updated, EventKind::Removed] {
            let event = Event {
                kind,
                service: record(),
            };
            let proto: pb::ServiceEvent = event.clone().into();
            assert_eq!(Event::try_from(proto).ok(), Some(event));
        }
        let bad = pb::ServiceEvent {
            action: "explode".into(),
            service: None,
        };
        assert_eq!(Event::try_from(bad).map_err(|e| e.code()).err(), Some(400));
    }

    #[test]
    fn ttls_round_up_to_whole_seconds() {
        assert_eq!(ttl_seconds(Duration::from_millis(400)), 1);
        assert_eq!(ttl_seconds(Duration::ZERO), 1);
        assert_eq!(ttl_seconds(Duration::from_secs(90)), 90);
        assert_eq!(ttl_seconds(Duration::from_millis(1500)), 2);
    }

    #[tokio::test]
    async fn an_unreachable_proxy_is_an_error_that_says_what_to_do() {
        // A port nothing listens on: bind one, then close it.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let address = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        drop(listener);
        let registry = ServiceRegistry::new(address.clone());
        let err = registry.list_services().await.expect_err("nothing listens");
        assert!(err.detail().contains("micro server"), "{err}");
        assert!(err.detail().contains(&address), "{err}");
        let err = registry
            .watch(None)
            .await
            .err()
            .map(|e| e.detail().to_string());
        assert!(err.is_some_and(|d| d.contains("MICRO_REGISTRY_ADDRESS")));
    }
}
