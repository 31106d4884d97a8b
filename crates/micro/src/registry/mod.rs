//! Service discovery: where services register their nodes and find each other.
//!
//! The [`Registry`] trait is what every backend implements; [`MemoryRegistry`] is the
//! in-process one (tests, a single process, or a static list of nodes). Records have
//! the shape fixed by DESIGN.md: `Service {name, version, metadata, endpoints, nodes}`.
//!
//! | backend | name (`MICRO_REGISTRY`) | reach |
//! |---|---|---|
//! | [`DefaultRegistry`] (feature `mdns`) | `mdns` (the default) | this machine, and the LAN by mDNS |
//! | [`LocalRegistry`] | `local` | this machine |
//! | [`MemoryRegistry`] | `memory` | this process |
//! | [`ServiceRegistry`] | `service` | the registry of a `micro server` |
//! | `EtcdRegistry` (feature `etcd`) | `etcd` | every machine that reaches the etcd cluster |

mod by_name;
#[doc(hidden)]
pub mod conformance;
mod default;
#[cfg(feature = "etcd")]
mod etcd;
mod local;
#[cfg(feature = "mdns")]
mod mdns;
mod memory;
pub(crate) mod service;
mod watch;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use serde::{Deserialize, Serialize};

pub use by_name::{from_name, from_options, Ownership, DEFAULT, NAMES};
pub use default::DefaultRegistry;
#[cfg(feature = "etcd")]
pub use etcd::EtcdRegistry;
pub use local::LocalRegistry;
#[cfg(feature = "mdns")]
pub use mdns::{MdnsBuilder, MdnsRegistry};
pub use memory::MemoryRegistry;
pub use service::ServiceRegistry;

use crate::Error;

/// One version of a service and the nodes that run it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Service {
    /// The service name (`greeter`).
    pub name: String,
    /// The version (`latest` unless set).
    #[serde(default)]
    pub version: String,
    /// Free-form service metadata.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// The endpoints the service serves.
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
    /// The running instances.
    #[serde(default)]
    pub nodes: Vec<Node>,
}

/// One running instance of a service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// Unique id (`greeter-<uuid>`).
    pub id: String,
    /// `host:port` where it listens.
    pub address: String,
    /// Node metadata; `protocol` names the wire (`grpc+json`, or `http-json`).
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// One endpoint (`Greeter.Hello`) and its request and response types.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Endpoint {
    /// `Service.Method` as in the proto.
    pub name: String,
    /// The request message type.
    #[serde(default)]
    pub request: Type,
    /// The response message type.
    #[serde(default)]
    pub response: Type,
    /// Endpoint metadata; `stream` is `false`, `server`, `client` or `bidi`.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// A message type: its name and the JSON Schema of its JSON form.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Type {
    /// The message name (`HelloRequest`).
    pub name: String,
    /// JSON Schema of the message's proto3 JSON form.
    #[serde(default)]
    pub schema: serde_json::Value,
}

/// The node metadata key naming the protocol a node speaks.
pub const PROTOCOL_KEY: &str = "protocol";
/// Nodes written with micro: gRPC (proto or JSON payloads) and JSON over HTTP.
pub const PROTOCOL_GRPC: &str = "grpc+json";
/// Nodes in other languages that only speak JSON over HTTP.
pub const PROTOCOL_HTTP_JSON: &str = "http-json";

/// Options of one registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegisterOptions {
    /// How long the record lives unless it is registered again.
    pub ttl: Duration,
}

impl Default for RegisterOptions {
    fn default() -> Self {
        RegisterOptions {
            ttl: Duration::from_secs(90),
        }
    }
}

/// What changed in a registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// A node (or a new version) appeared; `service.nodes` holds the new nodes.
    Added,
    /// A registered node changed or re-registered with new data.
    Updated,
    /// Nodes left; `service.nodes` holds the nodes that left.
    Removed,
}

/// A change in the registry, as a watcher sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// What happened.
    pub kind: EventKind,
    /// The service version concerned; `nodes` are the nodes this event is about.
    pub service: Service,
}

/// A stream of registry events.
pub type Watcher = BoxStream<'static, Result<Event, Error>>;

/// A service registry.
///
/// Implementations keep records alive for their TTL; a service registers again
/// before the TTL runs out (every `MICRO_REGISTER_INTERVAL`) and deregisters on a
/// clean stop. Registering merges nodes into the service version's record.
pub trait Registry: Send + Sync + fmt::Debug + 'static {
    /// Adds or refreshes the nodes of `service` for `opts.ttl`.
    fn register<'a>(
        &'a self,
        service: &'a Service,
        opts: RegisterOptions,
    ) -> BoxFuture<'a, Result<(), Error>>;

    /// Removes the nodes of `service`; the version disappears with its last node.
    fn deregister<'a>(&'a self, service: &'a Service) -> BoxFuture<'a, Result<(), Error>>;

    /// Every version of the named service with its live nodes; a 404 error if none.
    fn get_service<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<Service>, Error>>;

    /// Every service version that has live nodes.
    fn list_services(&self) -> BoxFuture<'_, Result<Vec<Service>, Error>>;

    /// Events from now on, optionally only for one service.
    fn watch(&self, service: Option<&str>) -> BoxFuture<'_, Result<Watcher, Error>>;

    /// The backend's name (`memory`, `local`, `mdns`, `etcd`, …).
    fn name(&self) -> &'static str;
}

pub(crate) use watch::broadcast_watcher;

/// `found`, or the 404 every registry returns when a service has no live nodes.
pub(crate) fn found_or_not_found(name: &str, found: Vec<Service>) -> Result<Vec<Service>, Error> {
    if found.is_empty() {
        Err(service_not_found(name))
    } else {
        Ok(found)
    }
}

/// Checks a record before registering it: it needs a name, and every node an id
/// and an address. The same 400 from every registry.
pub fn validate(service: &Service) -> Result<(), Error> {
    if service.name.is_empty() {
        return Err(Error::bad_request(
            "micro.registry",
            "service name is empty",
        ));
    }
    if let Some(node) = service
        .nodes
        .iter()
        .find(|n| n.id.is_empty() || n.address.is_empty())
    {
        return Err(Error::bad_request(
            "micro.registry",
            format!("node {node:?} needs both an id and an address"),
        ));
    }
    Ok(())
}

/// The error every registry returns for an unknown service.
pub fn service_not_found(name: &str) -> Error {
    Error::not_found("micro.registry", format!("service {name:?} not found"))
}
