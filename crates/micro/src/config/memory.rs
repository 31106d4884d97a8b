//! [`MemorySource`]: a tree held in memory, set at runtime.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use serde_json::Value;
use tokio::sync::watch;
use tokio_stream::wrappers::WatchStream;

use super::error::ConfigError;
use super::{check_path, value, Source, Store};

/// A source held in memory and changed at runtime: defaults set in code, tests, and
/// runtime switches (the chaos wrapper watches `micro.wrapper.chaos`). Also a
/// [`Store`].
///
/// ```
/// use micro::config::{Config, MemorySource};
/// use serde_json::json;
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let switches = std::sync::Arc::new(MemorySource::new("switches").with(json!({"feature": {"on": false}})));
/// let config = Config::builder().shared_source(switches.clone()).load().await?;
/// assert!(!config.get::<bool>("feature.on")?);
/// switches.set("feature.on", json!(true));
/// # tokio::task::yield_now().await;
/// # for _ in 0..100 { if config.get::<bool>("feature.on")? { break } tokio::task::yield_now().await; }
/// assert!(config.get::<bool>("feature.on")?);
/// # Ok::<(), micro::config::ConfigError>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct MemorySource {
    label: String,
    tree: Arc<watch::Sender<Value>>,
    secret: bool,
}

impl MemorySource {
    /// An empty source named `memory:<label>`.
    pub fn new(label: impl Into<String>) -> Self {
        MemorySource {
            label: label.into(),
            tree: Arc::new(watch::channel(Value::Object(serde_json::Map::new())).0),
            secret: false,
        }
    }

    /// Starts with `tree` (a JSON object).
    pub fn with(self, tree: Value) -> Self {
        self.tree.send_replace(tree);
        self
    }

    /// Marks the values as secret: errors and logs never show them.
    pub fn secret(mut self) -> Self {
        self.secret = true;
        self
    }

    /// Sets `path` to `value`; watchers see it at once.
    pub fn set(&self, path: &str, value: Value) {
        self.tree.send_modify(|tree| value::set(tree, path, value));
    }

    /// Removes `path` and what is under it.
    pub fn remove(&self, path: &str) {
        self.tree.send_if_modified(|tree| value::delete(tree, path));
    }

    /// Replaces the whole tree.
    pub fn replace(&self, tree: Value) {
        self.tree.send_replace(tree);
    }

    /// The current tree.
    pub fn tree(&self) -> Value {
        self.tree.borrow().clone()
    }
}

impl Source for MemorySource {
    fn name(&self) -> String {
        format!("memory:{}", self.label)
    }

    fn read(&self) -> BoxFuture<'_, Result<Value, ConfigError>> {
        let tree = self.tree();
        Box::pin(async move { Ok(tree) })
    }

    fn watch(&self) -> Option<BoxStream<'static, Result<Value, ConfigError>>> {
        Some(WatchStream::new(self.tree.subscribe()).map(Ok).boxed())
    }

    fn secret(&self) -> bool {
        self.secret
    }
}

impl Store for MemorySource {
    fn write<'a>(&'a self, path: &'a str, value: Value) -> BoxFuture<'a, Result<(), ConfigError>> {
        Box::pin(async move {
            check_path(path)?;
            self.set(path, value);
            Ok(())
        })
    }

    fn delete<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<(), ConfigError>> {
        Box::pin(async move {
            check_path(path)?;
            self.remove(path);
            Ok(())
        })
    }
}
