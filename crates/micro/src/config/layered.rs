//! [`Config`]: the merged tree of layered sources, swapped atomically on change.

use std::fmt;
use std::sync::{Arc, Mutex, Weak};

use arc_swap::ArcSwap;
use futures_util::stream::{self, BoxStream};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::AbortHandle;

use super::error::{ConfigError, ErrorKind};
use super::{value, Source};

/// Typed config merged from layered sources, hot-reloaded as they change; cheap to
/// clone (clones share everything). See the [module docs](super) for an example.
///
/// A `Config` starts empty; [`load`](Config::load) reads every source and starts
/// watching them. The watch tasks stop when the last clone is dropped.
#[derive(Clone)]
pub struct Config {
    inner: Arc<Inner>,
}

struct Inner {
    sources: Vec<Arc<dyn Source>>,
    /// The last good tree of each source, in order.
    layers: Mutex<Vec<Layer>>,
    /// What readers see.
    snapshot: ArcSwap<Snapshot>,
    /// Tells watchers a new snapshot is in place.
    changes: watch::Sender<Arc<Snapshot>>,
    /// Serializes loads; true once the watch tasks run.
    loaded: tokio::sync::Mutex<bool>,
    tasks: Mutex<Vec<AbortHandle>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Ok(tasks) = self.tasks.get_mut() {
            for task in tasks.drain(..) {
                task.abort();
            }
        }
    }
}

#[derive(Clone)]
struct Layer {
    name: String,
    secret: bool,
    tree: Value,
}

#[derive(Default)]
struct Snapshot {
    merged: Value,
    layers: Vec<Layer>,
}

impl Snapshot {
    fn new(layers: Vec<Layer>) -> Snapshot {
        let mut merged = Value::Object(serde_json::Map::new());
        for layer in &layers {
            value::merge(&mut merged, &layer.tree);
        }
        Snapshot { merged, layers }
    }

    /// The sources that set `path`, and whether any of them is secret.
    fn suppliers(&self, path: &str) -> (String, bool) {
        let setting: Vec<&Layer> = self
            .layers
            .iter()
            .filter(|l| value::get(&l.tree, path).is_some())
            .collect();
        let names: Vec<&str> = setting.iter().map(|l| l.name.as_str()).collect();
        (names.join(", "), setting.iter().any(|l| l.secret))
    }
}

impl fmt::Debug for Config {
    /// Names the sources only: values may be secrets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("sources", &self.sources())
            .finish()
    }
}

impl Default for Config {
    /// A config with no sources: every path is unset.
    fn default() -> Self {
        Config::builder().build()
    }
}

/// Builds a [`Config`] from sources, lowest precedence first.
///
/// ```
/// use micro::config::{Config, MemorySource};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let config = Config::builder()
///     .source(MemorySource::new("defaults").with(serde_json::json!({"a": 1, "b": 1})))
///     .source(MemorySource::new("overrides").with(serde_json::json!({"b": 2})))
///     .load()
///     .await?;
/// assert_eq!((config.get::<i32>("a")?, config.get::<i32>("b")?), (1, 2));
/// # Ok::<(), micro::config::ConfigError>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Default)]
pub struct ConfigBuilder {
    sources: Vec<Arc<dyn Source>>,
}

impl ConfigBuilder {
    /// Adds a source; it wins over the ones added before it.
    pub fn source(self, source: impl Source) -> Self {
        self.shared_source(Arc::new(source))
    }

    /// Adds a source the caller keeps a handle to (e.g. a [`MemorySource`] it sets
    /// values on, or a store it also writes).
    ///
    /// [`MemorySource`]: super::MemorySource
    pub fn shared_source(mut self, source: Arc<dyn Source>) -> Self {
        self.sources.push(source);
        self
    }

    /// The config, not loaded yet: every path reads as unset until
    /// [`Config::load`].
    pub fn build(self) -> Config {
        let snapshot = Arc::new(Snapshot::default());
        let (changes, _) = watch::channel(snapshot.clone());
        Config {
            inner: Arc::new(Inner {
                sources: self.sources,
                layers: Mutex::new(Vec::new()),
                snapshot: ArcSwap::new(snapshot),
                changes,
                loaded: tokio::sync::Mutex::new(false),
                tasks: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Builds and [loads](Config::load) the config.
    pub async fn load(self) -> Result<Config, ConfigError> {
        let config = self.build();
        config.load().await?;
        Ok(config)
    }
}

impl Config {
    /// A builder with no sources.
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder::default()
    }

    /// The names of the sources, lowest precedence first.
    pub fn sources(&self) -> Vec<String> {
        self.inner.sources.iter().map(|s| s.name()).collect()
    }

    /// Whether [`load`](Self::load) succeeded once.
    pub fn is_loaded(&self) -> bool {
        self.inner.loaded.try_lock().is_ok_and(|loaded| *loaded)
    }

    /// Reads every source, merges them, and (the first time) starts watching them.
    /// Calling it again re-reads every source. Must run inside a tokio runtime.
    ///
    /// A source that cannot be read fails the load, with an error naming it; a
    /// later bad update of a watched source is logged and the last good tree kept.
    pub async fn load(&self) -> Result<(), ConfigError> {
        let mut loaded = self.inner.loaded.lock().await;
        let mut layers = Vec::with_capacity(self.inner.sources.len());
        for source in &self.inner.sources {
            let name = source.name();
            let tree = check_tree(&name, source.read().await?)?;
            layers.push(Layer {
                name,
                secret: source.secret(),
                tree,
            });
        }
        {
            let mut current = self.inner.lock_layers();
            *current = layers.clone();
        }
        self.inner.publish(layers);
        if !*loaded {
            self.start_watching();
            *loaded = true;
        }
        Ok(())
    }

    fn start_watching(&self) {
        let mut tasks = Vec::new();
        for (index, source) in self.inner.sources.iter().enumerate() {
            let Some(mut updates) = source.watch() else {
                continue;
            };
            let name = source.name();
            let inner: Weak<Inner> = Arc::downgrade(&self.inner);
            let task = tokio::spawn(async move {
                while let Some(update) = updates.next().await {
                    let Some(inner) = inner.upgrade() else {
                        break;
                    };
                    match update.and_then(|tree| check_tree(&name, tree)) {
                        Ok(tree) => inner.update(index, tree),
                        Err(e) => tracing::warn!(
                            source = %name,
                            error = %e,
                            "config update rejected; keeping the last good config"
                        ),
                    }
                }
            });
            tasks.push(task.abort_handle());
        }
        match self.inner.tasks.lock() {
            Ok(mut all) => all.extend(tasks),
            Err(_) => tasks.iter().for_each(AbortHandle::abort),
        }
    }

    /// The value at `path` (dot-separated; `""` for the whole tree) as a `T`: any
    /// serde type, a struct for a subtree, or a [`Duration`](std::time::Duration)
    /// from `30`, `30s`, `500ms` or `1m`.
    ///
    /// An unset path is an error of kind [`ErrorKind::NotFound`], so
    /// `config.get(path).unwrap_or(default)` gives a default. A value of the wrong
    /// type is an error naming the sources that set it, the path and the type
    /// expected (and the value, unless a secret source set it).
    pub fn get<T: DeserializeOwned + 'static>(&self, path: &str) -> Result<T, ConfigError> {
        let snapshot = self.inner.snapshot.load();
        let Some(found) = value::get(&snapshot.merged, path) else {
            let sources = self.sources();
            let sources = if sources.is_empty() {
                "there are no config sources".to_string()
            } else {
                format!("sources: {}", sources.join(", "))
            };
            return Err(ConfigError::new(
                ErrorKind::NotFound,
                format!("config {path:?} is not set ({sources}); set it in one of them"),
            ));
        };
        value::decode::<T>(found).map_err(|expected| {
            let (from, secret) = snapshot.suppliers(path);
            let message = if secret {
                format!(
                    "config {path:?} (from {from}): {expected} (the value is secret: not shown)"
                )
            } else {
                format!(
                    "config {path:?} (from {from}) = {}: {expected}",
                    shown(found)
                )
            };
            ConfigError::new(ErrorKind::WrongType, message)
        })
    }

    /// The value at `path` as a `T`, or `default` when it is unset or not a `T`
    /// ([`get`](Self::get) says why).
    pub fn get_or<T: DeserializeOwned + 'static>(&self, path: &str, default: T) -> T {
        self.get(path).unwrap_or(default)
    }

    /// The raw JSON value at `path`, if set.
    pub fn value(&self, path: &str) -> Option<Value> {
        value::get(&self.inner.snapshot.load().merged, path).cloned()
    }

    /// New values of `path` as they change (`null` once it is unset). The current
    /// value is not sent: read it with [`get`](Self::get) first. Equal updates are
    /// not sent. The stream ends when the last clone of this `Config` is dropped.
    ///
    /// ```
    /// use futures_util::StreamExt;
    /// use micro::config::{Config, MemorySource};
    /// use serde_json::json;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let memory = std::sync::Arc::new(MemorySource::new("live"));
    /// let config = Config::builder().shared_source(memory.clone()).load().await?;
    /// let mut greetings = config.watch("greeter.greeting");
    /// memory.set("greeter.other", json!(1));        // not the watched path: nothing sent
    /// memory.set("greeter.greeting", json!("Hi"));
    /// assert_eq!(greetings.next().await, Some(json!("Hi")));
    /// # Ok::<(), micro::config::ConfigError>(())
    /// # }).unwrap();
    /// ```
    pub fn watch(&self, path: &str) -> BoxStream<'static, Value> {
        let mut changes = self.inner.changes.subscribe();
        let path = path.to_string();
        let last = value::get(&changes.borrow_and_update().merged, &path).cloned();
        stream::unfold(
            (changes, last, path),
            |(mut changes, mut last, path)| async move {
                loop {
                    changes.changed().await.ok()?;
                    let now = value::get(&changes.borrow_and_update().merged, &path).cloned();
                    if now != last {
                        last = now.clone();
                        return Some((now.unwrap_or(Value::Null), (changes, last, path)));
                    }
                }
            },
        )
        .boxed()
    }
}

impl Inner {
    fn lock_layers(&self) -> std::sync::MutexGuard<'_, Vec<Layer>> {
        // A panic while holding the lock leaves whole layers behind: still usable.
        self.layers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A watched source sent a new tree.
    fn update(&self, index: usize, tree: Value) {
        let layers = {
            let mut layers = self.lock_layers();
            let Some(layer) = layers.get_mut(index) else {
                return;
            };
            if layer.tree == tree {
                return;
            }
            layer.tree = tree;
            tracing::debug!(source = %layer.name, "config source changed");
            layers.clone()
        };
        self.publish(layers);
    }

    fn publish(&self, layers: Vec<Layer>) {
        let snapshot = Arc::new(Snapshot::new(layers));
        self.snapshot.store(snapshot.clone());
        self.changes.send_replace(snapshot);
    }
}

/// A source's tree must be a table (or nothing).
fn check_tree(name: &str, tree: Value) -> Result<Value, ConfigError> {
    match tree {
        Value::Null => Ok(Value::Object(serde_json::Map::new())),
        tree @ Value::Object(_) => Ok(tree),
        _ => Err(ConfigError::source_error(
            ErrorKind::Parse,
            name,
            "expected a table of keys at the top level",
        )),
    }
}

/// A value for an error message, cut short if long.
fn shown(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 80 {
        format!("{}…", text.chars().take(80).collect::<String>())
    } else {
        text
    }
}
