//! Choosing the node that serves a call.
//!
//! A [`Selector`] turns a service name into one node. [`RegistrySelector`] reads the
//! registry on each call and picks at random or round robin; it avoids nodes the
//! caller already tried for this call, so a retry goes elsewhere when it can.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::future::{BoxFuture, FutureExt};
use rand::Rng;

use crate::registry::{Node, Registry};
use crate::Error;

/// Picks a node of a service for each call attempt.
pub trait Selector: Send + Sync + fmt::Debug + 'static {
    /// A node of `service`, preferring ones whose ids are not in `tried`.
    fn select<'a>(
        &'a self,
        service: &'a str,
        tried: &'a [String],
    ) -> BoxFuture<'a, Result<Node, Error>>;
}

/// How a selector spreads calls over nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Any node, uniformly at random.
    #[default]
    Random,
    /// Each node in turn.
    RoundRobin,
}

impl FromStr for Strategy {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "random" => Ok(Strategy::Random),
            "roundrobin" | "round_robin" | "round-robin" => Ok(Strategy::RoundRobin),
            other => Err(Error::bad_request(
                "micro.selector",
                format!("unknown selector {other:?}: use random or roundrobin"),
            )),
        }
    }
}

/// Selects among the nodes the registry lists for a service.
#[derive(Debug, Clone)]
pub struct RegistrySelector {
    registry: Arc<dyn Registry>,
    strategy: Strategy,
    counters: Arc<Mutex<HashMap<String, Arc<AtomicUsize>>>>,
}

impl RegistrySelector {
    /// A selector over `registry` with the given strategy.
    pub fn new(registry: Arc<dyn Registry>, strategy: Strategy) -> Self {
        RegistrySelector {
            registry,
            strategy,
            counters: Arc::default(),
        }
    }

    fn counter(&self, service: &str) -> Arc<AtomicUsize> {
        let mut counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        counters
            .entry(service.to_string())
            .or_insert_with(|| Arc::new(AtomicUsize::new(rand::rng().random::<u32>() as usize)))
            .clone()
    }
}

impl Selector for RegistrySelector {
    fn select<'a>(
        &'a self,
        service: &'a str,
        tried: &'a [String],
    ) -> BoxFuture<'a, Result<Node, Error>> {
        async move {
            let versions = self.registry.get_service(service).await?;
            let all: Vec<&Node> = versions.iter().flat_map(|s| s.nodes.iter()).collect();
            let fresh: Vec<&Node> = all
                .iter()
                .copied()
                .filter(|n| !tried.contains(&n.id))
                .collect();
            let candidates = if fresh.is_empty() { all } else { fresh };
            if candidates.is_empty() {
                return Err(Error::service_unavailable(
                    "micro.selector",
                    format!("service {service:?} has no nodes"),
                ));
            }
            let index = match self.strategy {
                Strategy::Random => rand::rng().random_range(0..candidates.len()),
                Strategy::RoundRobin => {
                    self.counter(service).fetch_add(1, Ordering::Relaxed) % candidates.len()
                }
            };
            Ok(candidates[index].clone())
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{MemoryRegistry, Service};

    async fn registry_with(ids: &[&str]) -> Arc<dyn Registry> {
        let r = MemoryRegistry::new();
        let service = Service {
            name: "s".into(),
            version: "latest".into(),
            nodes: ids
                .iter()
                .map(|id| Node {
                    id: id.to_string(),
                    address: format!("{id}:1"),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        r.register(&service, Default::default()).await.unwrap();
        Arc::new(r)
    }

    #[tokio::test]
    async fn round_robin_visits_every_node_and_retries_avoid_tried() {
        let sel =
            RegistrySelector::new(registry_with(&["a", "b", "c"]).await, Strategy::RoundRobin);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..3 {
            seen.insert(sel.select("s", &[]).await.unwrap().id);
        }
        assert_eq!(seen.len(), 3);
        for _ in 0..10 {
            let n = sel.select("s", &["a".into(), "b".into()]).await.unwrap();
            assert_eq!(n.id, "c");
        }
        // When every node was tried, any node may be picked again.
        assert!(sel
            .select("s", &["a".into(), "b".into(), "c".into()])
            .await
            .is_ok());
        assert_eq!(sel.select("missing", &[]).await.unwrap_err().code(), 404);
    }

    #[test]
    fn strategy_names() {
        assert_eq!("random".parse::<Strategy>().unwrap(), Strategy::Random);
        assert_eq!(
            "roundrobin".parse::<Strategy>().unwrap(),
            Strategy::RoundRobin
        );
        assert_eq!("fastest".parse::<Strategy>().unwrap_err().code(), 400);
    }
}
