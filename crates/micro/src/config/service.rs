//! The config of a service: the sources a [`Service`](crate::Service) loads unless
//! given its own [`Config`], and the remote stores `--config` names.

use std::sync::Arc;

use super::error::{ConfigError, ErrorKind};
use super::{Config, EnvSource, FileSource, Store};
use crate::options::ServiceOptions;

/// The config a service loads by default, lowest precedence first:
///
/// 1. the file of `--config_file` / `MICRO_CONFIG_FILE`, if any (watched);
/// 2. the store of `--config` / `MICRO_CONFIG` at `--config_address` /
///    `MICRO_CONFIG_ADDRESS`, if any (watched);
/// 3. environment variables named after the service: `GREETER_GREETING=Hi` sets
///    `greeter.greeting` (see [`EnvSource::service`]).
///
/// ```
/// use micro::options::ServiceOptions;
///
/// let options = ServiceOptions { server_name: "greeter".into(), ..Default::default() };
/// let config = micro::config::for_service(&options).unwrap();
/// assert_eq!(config.sources(), ["env:GREETER"]);
/// ```
pub fn for_service(options: &ServiceOptions) -> Result<Config, ConfigError> {
    let mut builder = Config::builder();
    if let Some(path) = &options.config_file {
        builder = builder.source(FileSource::new(path));
    }
    if let Some(name) = &options.config {
        builder = builder.shared_source(store(name, &options.config_address)?.as_source());
    }
    if !options.server_name.is_empty() {
        builder = builder.source(EnvSource::service(&options.server_name));
    }
    Ok(builder.build())
}

/// The remote store `name` (`--config`) at `addresses` (`--config_address`):
/// `etcd` (feature `etcd`), or `service`, the config service of `micro server`
/// (its proxy at the first address, default 127.0.0.1:8081).
pub fn store(name: &str, addresses: &[String]) -> Result<Arc<dyn StoreSource>, ConfigError> {
    match name {
        #[cfg(feature = "etcd")]
        "etcd" => Ok(Arc::new(super::EtcdSource::new(addresses.iter().cloned()))),
        #[cfg(not(feature = "etcd"))]
        "etcd" => {
            let _ = addresses;
            Err(ConfigError::new(
                ErrorKind::Invalid,
                "--config etcd / MICRO_CONFIG=etcd needs micro built with its `etcd` feature: \
                 add features = [\"etcd\"] to the micro dependency",
            ))
        }
        "service" => Ok(Arc::new(super::ServiceStore::new(
            addresses.first().map(String::as_str).unwrap_or(""),
        ))),
        other => Err(ConfigError::new(
            ErrorKind::Invalid,
            format!(
                "{other:?} is not a config store: expected {}",
                super::STORES.join(" or ")
            ),
        )),
    }
}

/// A [`Store`] that is also a [`Source`](super::Source), as one trait object.
pub trait StoreSource: Store {
    /// This store as a source.
    fn as_source(self: Arc<Self>) -> Arc<dyn super::Source>;
}

impl<T: Store> StoreSource for T {
    fn as_source(self: Arc<Self>) -> Arc<dyn super::Source> {
        self
    }
}
