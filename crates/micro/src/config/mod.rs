//! Dynamic config: typed values merged from layered sources, watched for changes.
//!
//! A [`Config`] loads its [`Source`]s in order and deep-merges them into one JSON
//! tree — a later source wins over an earlier one, key by key. Values are read by
//! dot-separated path (`greeter.greeting`) as any serde type, durations included
//! (`30`, `30s`, `500ms`, `1m`), or as a whole subtree into a struct. Each source
//! is watched; when one changes, the tree is re-merged and swapped in atomically
//! (readers never block), and [`Config::watch`] streams the new value of a path.
//!
//! Sources:
//!
//! | source | name | watched |
//! |---|---|---|
//! | [`MemorySource`] | `memory:<label>` | on every `set` / `delete` |
//! | [`FileSource`] (JSON, YAML, TOML) | `file:<path>` | polled every 250 ms (content hash) |
//! | [`EnvSource`] | `env:<PREFIX>` | no (the environment of a process does not change) |
//! | [`FlagSource`] | `flags` | no |
//! | `EtcdSource` (feature `etcd`) | `etcd:<prefix>` | etcd watch, reconnecting |
//! | `VaultSource` (feature `vault`) | `vault:<mount>/<path>` | re-read on an interval / lease; secret |
//!
//! A source that can also be written (etcd, or [`ServiceStore`], the config
//! service of `micro server`) implements [`Store`]; `micro config get|set|del|watch`
//! works through it.
//!
//! ```
//! use std::time::Duration;
//! use micro::config::{Config, EnvSource, MemorySource};
//! use serde_json::json;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let defaults = MemorySource::new("defaults").with(json!({
//!     "database": {"address": "localhost:5432", "timeout": "5s"}
//! }));
//! let env = EnvSource::prefix("MYAPP").vars([("MYAPP_DATABASE_ADDRESS", "db:5432")]);
//! let config = Config::builder().source(defaults).source(env).load().await?;
//!
//! assert_eq!(config.get::<String>("database.address")?, "db:5432");
//! assert_eq!(config.get::<Duration>("database.timeout")?, Duration::from_secs(5));
//! let retries: u32 = config.get("database.retries").unwrap_or(3);
//! assert_eq!(retries, 3);
//! assert_eq!(config.get_or("database.pool", 10u32), 10);
//!
//! #[derive(serde::Deserialize)]
//! struct Database { address: String }
//! assert_eq!(config.get::<Database>("database")?.address, "db:5432");
//! # Ok::<(), micro::config::ConfigError>(())
//! # }).unwrap();
//! ```

mod env;
mod error;
#[cfg(feature = "etcd")]
mod etcd;
/// The test etcd servers, where they used to live (now `micro::etcd::server`).
#[cfg(feature = "etcd")]
#[doc(hidden)]
pub use crate::etcd::server as etcd_server;
mod file;
mod flag;
#[cfg(feature = "vault")]
mod http;
mod layered;
mod memory;
mod service;
mod service_store;
mod value;
#[cfg(feature = "vault")]
mod vault;

use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use serde_json::Value;

pub use env::EnvSource;
pub use error::{ConfigError, ErrorKind};
#[cfg(feature = "etcd")]
pub use etcd::EtcdSource;
pub use file::FileSource;
pub use flag::FlagSource;
pub use layered::{Config, ConfigBuilder};
pub use memory::MemorySource;
pub use service::{for_service, store, StoreSource};
pub use service_store::ServiceStore;
pub use value::duration;
#[cfg(feature = "vault")]
pub use vault::VaultSource;

/// The names `--config` / `MICRO_CONFIG` accepts for the remote config store.
pub const STORES: &[&str] = &["etcd", "service"];

/// One source of config: a JSON tree, read whole, and possibly watched.
///
/// Object safe: a [`Config`] holds `Arc<dyn Source>`. The config service of
/// `micro server` implements it over `Config.Read` / `Config.Watch`.
///
/// ```
/// use futures_util::future::BoxFuture;
/// use micro::config::{ConfigError, Source};
/// use serde_json::{json, Value};
///
/// /// A source with one fixed value.
/// #[derive(Debug)]
/// struct Fixed;
///
/// impl Source for Fixed {
///     fn name(&self) -> String {
///         "fixed".into()
///     }
///     fn read(&self) -> BoxFuture<'_, Result<Value, ConfigError>> {
///         Box::pin(async { Ok(json!({"greeter": {"greeting": "Hi"}})) })
///     }
/// }
/// ```
pub trait Source: Send + Sync + std::fmt::Debug + 'static {
    /// What errors and logs call this source: `file:/etc/app.yaml`, `env:MYAPP`,
    /// `etcd:/micro/config/`.
    fn name(&self) -> String;

    /// The whole tree of this source (a JSON object; `null` for nothing).
    fn read(&self) -> BoxFuture<'_, Result<Value, ConfigError>>;

    /// New whole trees of this source as it changes, or `None` if it never changes.
    /// An `Err` item is a bad update: the [`Config`] keeps the last good tree and
    /// logs it. The stream may end (the source stopped changing).
    fn watch(&self) -> Option<BoxStream<'static, Result<Value, ConfigError>>> {
        None
    }

    /// Whether its values are secrets: errors and logs then never show them.
    fn secret(&self) -> bool {
        false
    }
}

/// A source that can also be written: a store like etcd or the config service.
///
/// ```
/// use micro::config::{MemorySource, Source, Store};
/// use serde_json::json;
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let store = MemorySource::new("store");
/// store.write("greeter.greeting", json!("Hi")).await?;
/// assert_eq!(store.get("greeter").await?, Some(json!({"greeting": "Hi"})));
/// store.delete("greeter.greeting").await?;
/// assert_eq!(store.get("greeter.greeting").await?, None);
/// # Ok::<(), micro::config::ConfigError>(())
/// # }).unwrap();
/// ```
pub trait Store: Source {
    /// Sets `path` (dot-separated) to `value`.
    fn write<'a>(&'a self, path: &'a str, value: Value) -> BoxFuture<'a, Result<(), ConfigError>>;

    /// Removes `path` and everything under it.
    fn delete<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<(), ConfigError>>;

    /// The value at `path`, `None` if unset. The default reads the whole tree.
    fn get<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<Option<Value>, ConfigError>> {
        Box::pin(async move {
            let tree = self.read().await?;
            Ok(value::get(&tree, path).cloned())
        })
    }
}

/// Checks a path given to a store: dot-separated segments, none empty.
pub(crate) fn check_path(path: &str) -> Result<(), ConfigError> {
    if path.is_empty()
        || path
            .split('.')
            .any(|s| s.trim().is_empty() || s.contains('/'))
    {
        return Err(ConfigError::new(
            ErrorKind::Invalid,
            format!("{path:?} is not a config path: use dot-separated keys like greeter.greeting"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
