//! Choosing a broker by the name users give in `--broker` / `MICRO_BROKER`.

use std::sync::Arc;

use super::{Broker, MemoryBroker};
use crate::registry::Registry;
use crate::Error;

/// The broker names this build knows.
pub fn names() -> Vec<&'static str> {
    let mut names = vec!["http", "memory", "service"];
    if cfg!(feature = "nats") {
        names.extend(["nats", "jetstream"]);
    }
    names
}

/// The broker a service uses when none is named: HTTP delivery between
/// processes, found through the registry, with no broker server.
pub const DEFAULT: &str = "http";

/// The broker `name` stands for, at `addresses` where it has a server; the HTTP
/// broker finds subscribers through `registry`. `jetstream` is the NATS broker
/// in JetStream mode ([`NatsBroker::jetstream`](super::NatsBroker::jetstream)):
/// a publish returns once the server has stored the message.
///
/// ```
/// use std::sync::Arc;
/// use micro::broker::from_name;
/// use micro::registry::MemoryRegistry;
///
/// let registry = Arc::new(MemoryRegistry::new());
/// assert_eq!(from_name("memory", &[], registry.clone()).unwrap().name(), "memory");
/// let err = from_name("kafka", &[], registry).unwrap_err();
/// assert_eq!(err.code(), 400);
/// assert!(err.detail().contains("choose one of"), "{err}");
/// ```
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
        #[cfg(feature = "nats")]
        "jetstream" => Ok(Arc::new(
            super::NatsBroker::new(addresses.to_vec()).jetstream(true),
        )),
        other => Err(Error::bad_request(
            "micro.broker",
            format!(
                "unknown broker {other:?}: choose one of {}",
                names().join(", ")
            ),
        )),
    }
}
