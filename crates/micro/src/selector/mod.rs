//! Choosing the node that serves a call.
//!
//! A [`Selector`] turns a service name into one node for each call attempt, and
//! hears back how the attempt went ([`Selector::mark`]). The default,
//! [`CacheSelector`], keeps the nodes of every service it was asked about in a cache
//! fed by one registry watch, so a selection costs no registry round trip:
//!
//! - the first selection of a service reads the registry once (`get_service`); from
//!   then on the watch's added / updated / removed events keep the cache current
//!   (a watch error or lag re-reads the cached services);
//! - a [`Strategy`] spreads calls: random, round robin, or least outstanding
//!   requests (power of two choices);
//! - [`SelectOptions`] filter by service version, node metadata and endpoint, and
//!   name the nodes a call already tried, so a retry goes elsewhere when it can;
//! - a node whose attempt failed (it could not be reached, or it answered 503) is
//!   skipped for a short back-off that grows while it keeps failing (1 s doubling to
//!   30 s) and ends at its next success, so one dead node does not fail calls while
//!   the registry catches up. When every candidate is backed off, one is still
//!   picked: the registry may be right and the marks stale.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), micro::Error> {
//! use std::sync::Arc;
//! use micro::registry::{MemoryRegistry, Node, Registry, Service};
//! use micro::selector::{CacheSelector, Outcome, SelectOptions, Selector, Strategy};
//!
//! let registry = Arc::new(MemoryRegistry::new());
//! let node = Node { id: "greeter-1".into(), address: "127.0.0.1:9000".into(), ..Default::default() };
//! let service = Service { name: "greeter".into(), version: "latest".into(), nodes: vec![node], ..Default::default() };
//! registry.register(&service, Default::default()).await?;
//!
//! let selector = CacheSelector::new(registry, Strategy::RoundRobin);
//! let picked = selector.select("greeter", SelectOptions::new()).await?;
//! assert_eq!(picked.node().address, "127.0.0.1:9000");
//! selector.mark("greeter", &picked, Outcome::Success);
//! # Ok(()) }
//! ```

mod cache;
mod filter;
mod mark;
mod strategy;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use futures_util::future::BoxFuture;

pub use cache::CacheSelector;

use cache::Snapshot;

use crate::registry::Node;
use crate::Error;
use mark::NodeStats;

/// Picks a node of a service for each call attempt.
///
/// Implementations should answer a selection of a service they already know
/// without awaiting anything (the returned future is then ready at once).
pub trait Selector: Send + Sync + fmt::Debug + 'static {
    /// A node of `service` that passes `opts`' filters, preferring nodes not in
    /// `opts`' tried list. A 404 error when the service has no node, or when the
    /// filters exclude every node (the error says which filter did).
    fn select<'a>(
        &'a self,
        service: &'a str,
        opts: SelectOptions<'a>,
    ) -> BoxFuture<'a, Result<Selected, Error>>;

    /// The same selection when it needs no waiting (say, the service's nodes are
    /// cached), else `None` and the caller awaits [`select`](Selector::select).
    /// The client asks this first on every call, which saves boxing a future for
    /// the common case. The default always says `None`.
    fn select_now(
        &self,
        service: &str,
        opts: SelectOptions<'_>,
    ) -> Option<Result<Selected, Error>> {
        let _ = (service, opts);
        None
    }

    /// Reports how an attempt on a selected node went. The default ignores it.
    fn mark(&self, service: &str, selected: &Selected, outcome: Outcome) {
        let _ = (service, selected, outcome);
    }
}

/// What a selection must respect: filters, and the nodes this call already tried.
///
/// Cheap to copy; it borrows everything.
///
/// ```
/// use micro::selector::SelectOptions;
///
/// let tried = vec!["greeter-1".to_string()];
/// let metadata = vec![("zone".to_string(), "eu".to_string())];
/// let opts = SelectOptions::new()
///     .tried(&tried)
///     .version("v2")
///     .node_metadata(&metadata)
///     .endpoint("Greeter.Hello");
/// assert_eq!(opts.get_version(), Some("v2"));
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct SelectOptions<'a> {
    tried: &'a [String],
    version: Option<&'a str>,
    metadata: &'a [(String, String)],
    endpoint: Option<&'a str>,
    address: Option<&'a str>,
}

impl<'a> SelectOptions<'a> {
    /// No filter, nothing tried.
    pub fn new() -> Self {
        Self::default()
    }

    /// Node ids this call already tried: others are preferred while any is left.
    pub fn tried(mut self, tried: &'a [String]) -> Self {
        self.tried = tried;
        self
    }

    /// Only nodes of this service version.
    pub fn version(mut self, version: &'a str) -> Self {
        self.version = Some(version);
        self
    }

    /// Only nodes whose metadata holds every one of these `key = value` pairs.
    pub fn node_metadata(mut self, pairs: &'a [(String, String)]) -> Self {
        self.metadata = pairs;
        self
    }

    /// Only service versions that list this endpoint (`Greeter.Hello`). A version
    /// that lists no endpoint at all passes (a node written in another language may
    /// publish none), and so do the built-in `Debug.*` endpoints every micro service
    /// serves without listing them.
    pub fn endpoint(mut self, endpoint: &'a str) -> Self {
        self.endpoint = Some(endpoint);
        self
    }

    /// Only the node at this address (`host:port`): how a call pinned to an
    /// address finds that node's registry record (and so its protocol).
    pub fn address(mut self, address: &'a str) -> Self {
        self.address = Some(address);
        self
    }

    /// The address filter.
    pub fn get_address(&self) -> Option<&'a str> {
        self.address
    }

    /// The node ids already tried.
    pub fn get_tried(&self) -> &'a [String] {
        self.tried
    }

    /// The version filter.
    pub fn get_version(&self) -> Option<&'a str> {
        self.version
    }

    /// The node metadata filter.
    pub fn get_node_metadata(&self) -> &'a [(String, String)] {
        self.metadata
    }

    /// The endpoint filter.
    pub fn get_endpoint(&self) -> Option<&'a str> {
        self.endpoint
    }
}

/// The node picked for one attempt.
///
/// Hold it for as long as the attempt runs: with [`Strategy::LeastOutstanding`] it
/// counts as one request in flight on its node until it is dropped.
///
/// ```
/// use std::sync::Arc;
/// use micro::registry::Node;
/// use micro::selector::Selected;
///
/// // What a custom selector returns.
/// let picked = Selected::new(Arc::new(Node { id: "a".into(), address: "10.0.0.1:9000".into(), ..Default::default() }));
/// assert_eq!(picked.node().id, "a");
/// ```
pub struct Selected {
    inner: Picked,
    in_flight: bool,
}

enum Picked {
    /// A node of a cached snapshot: handing out the snapshot and an index touches
    /// no per-node reference count.
    Cached {
        snapshot: Arc<Snapshot>,
        index: usize,
    },
    /// A node from elsewhere (a custom selector).
    Plain(Arc<Node>),
}

impl Selected {
    /// A selection of `node` with no bookkeeping attached (for custom selectors).
    pub fn new(node: Arc<Node>) -> Self {
        Selected {
            inner: Picked::Plain(node),
            in_flight: false,
        }
    }

    /// Slot `index` of `snapshot`, counted as a request in flight if `in_flight`.
    pub(crate) fn cached(snapshot: Arc<Snapshot>, index: usize, in_flight: bool) -> Self {
        let selected = Selected {
            inner: Picked::Cached { snapshot, index },
            in_flight,
        };
        if in_flight {
            if let Some(stats) = selected.stats() {
                stats.begin();
            }
        }
        selected
    }

    /// The node.
    pub fn node(&self) -> &Arc<Node> {
        match &self.inner {
            Picked::Cached { snapshot, index } => &snapshot.slots[*index].node,
            Picked::Plain(node) => node,
        }
    }

    pub(crate) fn stats(&self) -> Option<&NodeStats> {
        match &self.inner {
            Picked::Cached { snapshot, index } => Some(&snapshot.slots[*index].stats),
            Picked::Plain(_) => None,
        }
    }
}

impl Drop for Selected {
    fn drop(&mut self) {
        if self.in_flight {
            if let Some(stats) = self.stats() {
                stats.end();
            }
        }
    }
}

impl fmt::Debug for Selected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let node = self.node();
        f.debug_struct("Selected")
            .field("node", &node.id)
            .field("address", &node.address)
            .field("in_flight", &self.in_flight)
            .finish()
    }
}

/// How an attempt on a selected node went, as far as the node's health goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The node answered (application errors such as 4xx or 500 included): any
    /// back-off of the node ends.
    Success,
    /// The node could not be reached or answered 503: skip it for a while.
    Failure,
}

impl Outcome {
    /// The outcome of an attempt that ended with `result`; `None` when it says
    /// nothing about the node (a 408: the caller's deadline may simply be short).
    ///
    /// ```
    /// use micro::selector::Outcome;
    /// use micro::Error;
    ///
    /// assert_eq!(Outcome::of(&Ok::<(), Error>(())), Some(Outcome::Success));
    /// assert_eq!(Outcome::of::<()>(&Err(Error::bad_request("x", "bad"))), Some(Outcome::Success));
    /// assert_eq!(Outcome::of::<()>(&Err(Error::service_unavailable("x", "down"))), Some(Outcome::Failure));
    /// assert_eq!(Outcome::of::<()>(&Err(Error::timeout("x", "slow"))), None);
    /// ```
    pub fn of<T>(result: &Result<T, Error>) -> Option<Outcome> {
        match result {
            Ok(_) => Some(Outcome::Success),
            Err(e) if e.code() == 503 => Some(Outcome::Failure),
            Err(e) if e.code() == 408 => None,
            Err(_) => Some(Outcome::Success),
        }
    }
}

/// How a selector spreads calls over nodes; `MICRO_SELECTOR` names one.
///
/// ```
/// use micro::selector::Strategy;
///
/// assert_eq!("p2c".parse::<Strategy>()?, Strategy::LeastOutstanding);
/// assert_eq!(Strategy::LeastOutstanding.to_string(), "leastconn");
/// assert_eq!("fastest".parse::<Strategy>().unwrap_err().code(), 400);
/// # Ok::<(), micro::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Any node, uniformly at random (`random`, the default).
    #[default]
    Random,
    /// Each node in turn (`roundrobin`).
    RoundRobin,
    /// The less loaded of two random nodes, by requests in flight from this client
    /// (`leastconn`, also `least_outstanding` or `p2c`).
    LeastOutstanding,
}

impl Strategy {
    /// The names `MICRO_SELECTOR` accepts (aliases left out).
    pub const NAMES: &'static [&'static str] = &["random", "roundrobin", "leastconn"];

    /// The canonical name.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Random => "random",
            Strategy::RoundRobin => "roundrobin",
            Strategy::LeastOutstanding => "leastconn",
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Strategy {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s.trim().to_ascii_lowercase().as_str() {
            "random" => Ok(Strategy::Random),
            "roundrobin" | "round_robin" | "round-robin" => Ok(Strategy::RoundRobin),
            "leastconn" | "least_outstanding" | "least-outstanding" | "p2c" => {
                Ok(Strategy::LeastOutstanding)
            }
            _ => Err(Error::bad_request(
                "micro.selector",
                format!(
                    "unknown selector {s:?}: choose one of {} (aliases: round_robin, \
                     least_outstanding, p2c)",
                    Strategy::NAMES.join(", ")
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategy_names() {
        assert_eq!("random".parse::<Strategy>().unwrap(), Strategy::Random);
        assert_eq!(
            "roundrobin".parse::<Strategy>().unwrap(),
            Strategy::RoundRobin
        );
        for name in ["leastconn", "least_outstanding", "p2c"] {
            assert_eq!(
                name.parse::<Strategy>().unwrap(),
                Strategy::LeastOutstanding
            );
        }
        for s in [
            Strategy::Random,
            Strategy::RoundRobin,
            Strategy::LeastOutstanding,
        ] {
            assert_eq!(s.name().parse::<Strategy>().unwrap(), s);
        }
        let err = "fastest".parse::<Strategy>().unwrap_err();
        assert_eq!(err.code(), 400);
        assert!(
            err.detail().contains("random, roundrobin, leastconn"),
            "{err}"
        );
    }

    #[test]
    fn outcomes() {
        assert_eq!(
            Outcome::of::<()>(&Err(Error::internal_server_error("x", "boom"))),
            Some(Outcome::Success)
        );
        assert_eq!(
            Outcome::of::<()>(&Err(Error::service_unavailable("x", "down"))),
            Some(Outcome::Failure)
        );
    }
}
