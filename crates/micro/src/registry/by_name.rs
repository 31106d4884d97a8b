//! Choosing a registry by the name users give in `--registry` / `MICRO_REGISTRY`.

use std::sync::Arc;

use super::{MemoryRegistry, Registry};
use crate::Error;

/// The registry names this build knows, for help texts and errors.
pub const NAMES: &[&str] = &["memory"];

/// The registry `name` stands for, reaching it at `addresses` where it has any.
///
/// ```
/// let registry = micro::registry::from_name("memory", &[]).unwrap();
/// assert_eq!(registry.name(), "memory");
/// assert_eq!(micro::registry::from_name("zookeeper", &[]).unwrap_err().code(), 400);
/// ```
pub fn from_name(name: &str, addresses: &[String]) -> Result<Arc<dyn Registry>, Error> {
    let _ = addresses;
    match name {
        "memory" => Ok(Arc::new(MemoryRegistry::new())),
        other => Err(Error::bad_request(
            "micro.registry",
            format!(
                "unknown registry {other:?}: choose one of {}",
                NAMES.join(", ")
            ),
        )),
    }
}
