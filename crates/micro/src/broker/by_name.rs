//! Choosing a broker by the name users give in `--broker` / `MICRO_BROKER`.

use std::sync::Arc;

use super::{Broker, MemoryBroker};
use crate::registry::Registry;
use crate::Error;

/// The broker names this build knows.
pub fn names() -> Vec<&'static str> {
    let mut names = vec!["http", "memory", "service"];
    if cfg!(feature = "nats") {
        names.push("nats");
    }
    names
}

/// The broker a service uses when none is named: HTTP delivery between
/// processes, found through the registry, with no broker server.
pub const DEFAULT: &str = "http";

/// The broker `name` stands for, at `addresses` where it has a server; the HTTP
/// broker finds subscribers through `registry`.
pub fn from_name(
    name: &str,
    addresses: &[String],
    registry: Arc<dyn Registry>,
) -> Result<Arc<dyn Broker>, Error> {
    match name {
        "memory" => Ok(Arc::new(MemoryBroker::new())),
        "service" => Ok(Arc::new(super::ServiceBroker::new(
            addresses
                .first()
                .filter(|a| !a.is_empty())
                .map_or(super::ServiceBroker::DEFAULT_ADDRESS, String::as_str),
        ))),
        "http" | "" => {
            let broker = super::HttpBroker::new(registry);
            Ok(Arc::new(match addresses.first() {
                Some(listen) if !listen.is_empty() => broker.listen(listen.clone()),
                _ => broker,
            }))
        }
        #[cfg(feature = "nats")]
        "nats" => Ok(Arc::new(super::NatsBroker::new(addresses.to_vec()))),
        other => Err(Error::bad_request(
            "micro.broker",
            format!(
                "unknown broker {other:?}: choose one of {}",
                names().join(", ")
            ),
        )),
    }
}
