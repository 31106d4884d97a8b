//! Choosing a registry by the name users give in `--registry` / `MICRO_REGISTRY`.

use std::sync::Arc;

use super::{LocalRegistry, MemoryRegistry, Registry};
use crate::Error;

/// The registry names this build knows, for help texts and errors.
#[cfg(feature = "mdns")]
pub const NAMES: &[&str] = &["mdns", "local", "memory", "service"];
/// The registry names this build knows, for help texts and errors.
#[cfg(not(feature = "mdns"))]
pub const NAMES: &[&str] = &["local", "memory", "service"];

/// The registry a service uses when none is named: this machine's local registry,
/// merged with mDNS for the LAN where multicast works.
pub const DEFAULT: &str = if cfg!(feature = "mdns") {
    "mdns"
} else {
    "local"
};

/// Who owns the registrations made through a registry handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ownership {
    /// This process: its registrations end when it dies (a service registering
    /// itself). On the local registry a `kill -9` removes them at once.
    Process,
    /// Nobody: registrations live until their TTL (`micro register service`, a
    /// proxy registering nodes for other programs).
    Detached,
}

/// The registry `name` stands for, reaching it at `addresses` where it has any
/// (`local` and `mdns`: the directory shared by the processes of this machine).
///
/// ```
/// use micro::registry::{from_name, Ownership};
///
/// let registry = from_name("memory", &[], Ownership::Process).unwrap();
/// assert_eq!(registry.name(), "memory");
/// assert_eq!(from_name("zookeeper", &[], Ownership::Process).unwrap_err().code(), 400);
/// ```
pub fn from_name(
    name: &str,
    addresses: &[String],
    ownership: Ownership,
) -> Result<Arc<dyn Registry>, Error> {
    let local = || {
        let registry = match addresses.first() {
            Some(dir) if !dir.is_empty() => LocalRegistry::at(dir),
            _ => LocalRegistry::new(),
        };
        match ownership {
            Ownership::Process => registry,
            Ownership::Detached => registry.owner_pid(None),
        }
    };
    match name {
        "memory" => Ok(Arc::new(MemoryRegistry::new())),
        "local" => Ok(Arc::new(local())),
        "service" => Ok(Arc::new(super::ServiceRegistry::new(
            addresses
                .first()
                .filter(|a| !a.is_empty())
                .map_or(super::ServiceRegistry::DEFAULT_ADDRESS, String::as_str),
        ))),
        #[cfg(feature = "mdns")]
        "mdns" | "default" => Ok(Arc::new(super::DefaultRegistry::with_local(local()))),
        other => Err(Error::bad_request(
            "micro.registry",
            format!(
                "unknown registry {other:?}: choose one of {}",
                NAMES.join(", ")
            ),
        )),
    }
}
