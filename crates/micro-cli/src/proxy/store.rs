//! [`ConfigDb`]: the persistent config store of `micro server`, an embedded
//! [redb](https://www.redb.org) database file under `--data_dir`.
//!
//! The config tree is kept as leaf entries, path → JSON text
//! (`greeter.greeting` → `"Hola"`): writing a table stores its leaves, deleting a
//! path removes everything under it, and reading a path assembles its subtree.
//! Every change is one write transaction, committed durably (fsync) before the
//! call returns, so a crash mid-write loses nothing that was acknowledged. Each
//! change bumps a revision kept in the same transaction, and is broadcast in
//! commit order to the watchers in this process.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use micro_cli::proxy::store::ConfigDb;
//! use serde_json::json;
//!
//! let dir = tempfile::tempdir().unwrap();
//! let db = ConfigDb::open(dir.path())?;
//! db.set("greeter", json!({"greeting": "Hola", "times": 2})).await?;
//! assert_eq!(db.get("greeter.greeting"), Some(json!("Hola")));
//! db.remove("greeter.times").await?;
//! assert_eq!(db.get("greeter"), Some(json!({"greeting": "Hola"})));
//! assert_eq!(db.revision(), 2);
//! # Ok::<(), micro::config::ConfigError>(())
//! # }).unwrap();
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use futures_util::future::BoxFuture;
use futures_util::stream::{self, BoxStream};
use futures_util::StreamExt;
use micro::config::{ConfigError, ErrorKind, Source, Store};
use redb::{Database, ReadableTable, TableDefinition};
use serde_json::{Map, Value};
use tokio::sync::broadcast;

/// The file name of the database inside the data directory.
pub const FILE_NAME: &str = "config.redb";

/// How many changes a slow watcher may fall behind before it is resynchronised
/// with the current tree.
const CHANGES_BUFFER: usize = 1024;

/// Leaf path → JSON text of the value.
const VALUES: TableDefinition<'_, &str, &str> = TableDefinition::new("config");
/// `revision` → the revision of the last change.
const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
const REVISION: &str = "revision";

/// One committed change, as watchers see it.
#[derive(Debug, Clone)]
pub struct Change {
    /// The revision this change made (1 for the first change of a new database).
    pub revision: u64,
    /// The path written or deleted.
    pub path: String,
    /// Whether it was a deletion.
    pub deleted: bool,
    /// The whole tree after the change.
    pub tree: Arc<Value>,
}

/// The persistent config store of `micro server`. Cheap to clone; every clone
/// shares one open database. Also a [`Source`] (watched: one new tree per change,
/// in commit order) and a [`Store`], so the proxy's `Config` API serves it.
#[derive(Clone)]
pub struct ConfigDb {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    file: PathBuf,
    /// Held across a whole change (transaction, commit, broadcast): changes are
    /// applied and announced in one order.
    state: Mutex<State>,
    changes: broadcast::Sender<Change>,
}

struct State {
    revision: u64,
    leaves: BTreeMap<String, Value>,
    tree: Arc<Value>,
}

impl std::fmt::Debug for ConfigDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigDb")
            .field("file", &self.inner.file)
            .field("revision", &self.revision())
            .finish()
    }
}

impl ConfigDb {
    /// Opens (or creates) the database `config.redb` in `dir`, creating `dir` too.
    /// Fails if another process has it open (one `micro server` per data dir).
    pub fn open(dir: impl AsRef<Path>) -> Result<ConfigDb, ConfigError> {
        let dir = dir.as_ref();
        let file = dir.join(FILE_NAME);
        let source = format!("db:{}", file.display());
        std::fs::create_dir_all(dir).map_err(|e| {
            ConfigError::source_error(
                ErrorKind::Unavailable,
                &source,
                format!(
                    "cannot create the data directory {}: {e}; pass --data_dir DIR (MICRO_DATA_DIR) \
                     with a directory this user can write",
                    dir.display()
                ),
            )
        })?;
        let db = Database::create(&file).map_err(|e| {
            let hint = if matches!(e, redb::DatabaseError::DatabaseAlreadyOpen) {
                "another micro server uses this data directory: stop it, or pass another \
                 --data_dir"
            } else {
                "check that the file is a micro config database, or move it away"
            };
            ConfigError::source_error(
                ErrorKind::Unavailable,
                &source,
                format!("cannot open the database: {e}; {hint}"),
            )
        })?;
        let fail = |e: redb::Error| db_error(&source, e);
        // Create the tables on first use, so reads never meet a missing table.
        let tx = db.begin_write().map_err(|e| fail(e.into()))?;
        tx.open_table(VALUES).map_err(|e| fail(e.into()))?;
        tx.open_table(META).map_err(|e| fail(e.into()))?;
        tx.commit().map_err(|e| fail(e.into()))?;

        let tx = db.begin_read().map_err(|e| fail(e.into()))?;
        let meta = tx.open_table(META).map_err(|e| fail(e.into()))?;
        let revision = meta
            .get(REVISION)
            .map_err(|e| fail(e.into()))?
            .map(|v| v.value())
            .unwrap_or(0);
        let values = tx.open_table(VALUES).map_err(|e| fail(e.into()))?;
        let mut leaves = BTreeMap::new();
        for entry in values.iter().map_err(|e| fail(e.into()))? {
            let (key, text) = entry.map_err(|e| fail(e.into()))?;
            let value = serde_json::from_str(text.value()).map_err(|e| {
                ConfigError::source_error(
                    ErrorKind::Parse,
                    &source,
                    format!("the value of {} is not JSON: {e}", key.value()),
                )
            })?;
            leaves.insert(key.value().to_string(), value);
        }
        drop(values);
        drop(meta);
        drop(tx);
        let tree = Arc::new(build_tree(&leaves));
        Ok(ConfigDb {
            inner: Arc::new(Inner {
                db,
                file,
                state: Mutex::new(State {
                    revision,
                    leaves,
                    tree,
                }),
                changes: broadcast::channel(CHANGES_BUFFER).0,
            }),
        })
    }

    /// The database file.
    pub fn file(&self) -> &Path {
        &self.inner.file
    }

    /// The revision of the last change (0 for a database never changed). It only
    /// grows, across restarts too.
    pub fn revision(&self) -> u64 {
        self.inner.lock().revision
    }

    /// The whole tree now.
    pub fn tree(&self) -> Arc<Value> {
        self.inner.lock().tree.clone()
    }

    /// The value at `path` (the whole tree for `""`), `None` if unset.
    pub fn get(&self, path: &str) -> Option<Value> {
        value_at(&self.tree(), path).cloned()
    }

    /// The leaf values under `path` (or at it), with their full paths, in path
    /// order; everything for `""`.
    pub fn list(&self, path: &str) -> Vec<(String, Value)> {
        let state = self.inner.lock();
        state
            .leaves
            .iter()
            .filter(|(key, _)| path.is_empty() || is_under(key, path))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect()
    }

    /// The changes committed from now on, in order. A receiver that falls more
    /// than 1024 changes behind gets `Lagged` and should re-read [`tree`](Self::tree).
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.inner.changes.subscribe()
    }

    /// Sets `path` to `value` (a table is stored as its leaves, replacing what was
    /// under `path`); returns the new revision once the change is durable.
    pub async fn set(&self, path: &str, value: Value) -> Result<u64, ConfigError> {
        check_path(path)?;
        let inner = self.inner.clone();
        let path = path.to_string();
        blocking(move || inner.change(&path, Some(value))).await
    }

    /// Removes `path` and everything under it (nothing to remove is not an error);
    /// returns the new revision once the change is durable.
    pub async fn remove(&self, path: &str) -> Result<u64, ConfigError> {
        check_path(path)?;
        let inner = self.inner.clone();
        let path = path.to_string();
        blocking(move || inner.change(&path, None)).await
    }

    fn source_name(&self) -> String {
        format!("db:{}", self.inner.file.display())
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// One change in one durable transaction, then the in-memory state and the
    /// broadcast; `value` `None` deletes.
    fn change(&self, path: &str, value: Option<Value>) -> Result<u64, ConfigError> {
        let source = format!("db:{}", self.file.display());
        let fail = |e: redb::Error| db_error(&source, e);
        let mut new_leaves = Vec::new();
        if let Some(value) = &value {
            flatten(path, value, &mut new_leaves);
        }
        let mut texts = Vec::with_capacity(new_leaves.len());
        for (key, value) in &new_leaves {
            let text = serde_json::to_string(value).map_err(|e| {
                ConfigError::source_error(ErrorKind::Invalid, &source, format!("{key}: {e}"))
            })?;
            texts.push((key.as_str(), text));
        }

        let mut state = self.lock();
        let revision = state.revision + 1;
        let tx = self.db.begin_write().map_err(|e| fail(e.into()))?;
        {
            let mut table = tx.open_table(VALUES).map_err(|e| fail(e.into()))?;
            for key in doomed(&state.leaves, path, value.is_some()) {
                table.remove(key.as_str()).map_err(|e| fail(e.into()))?;
            }
            for (key, text) in &texts {
                table
                    .insert(*key, text.as_str())
                    .map_err(|e| fail(e.into()))?;
            }
            let mut meta = tx.open_table(META).map_err(|e| fail(e.into()))?;
            meta.insert(REVISION, revision)
                .map_err(|e| fail(e.into()))?;
        }
        // Durability::Immediate (the default): fsync'd before commit returns.
        tx.commit().map_err(|e| fail(e.into()))?;

        for key in doomed(&state.leaves, path, value.is_some()) {
            state.leaves.remove(&key);
        }
        state.leaves.extend(new_leaves);
        state.revision = revision;
        state.tree = Arc::new(build_tree(&state.leaves));
        // No receiver is fine: nobody watches.
        let _ = self.changes.send(Change {
            revision,
            path: path.to_string(),
            deleted: value.is_none(),
            tree: state.tree.clone(),
        });
        Ok(revision)
    }
}

/// The stored leaves a change of `path` removes: the subtree at `path`, and when
/// writing, any leaf above it (a leaf that becomes a table).
fn doomed(leaves: &BTreeMap<String, Value>, path: &str, writing: bool) -> Vec<String> {
    let mut keys: Vec<String> = leaves
        .range(path.to_string()..)
        .take_while(|(key, _)| key.starts_with(path))
        .filter(|(key, _)| is_under(key, path))
        .map(|(key, _)| key.clone())
        .collect();
    if writing {
        let mut end = 0;
        while let Some(dot) = path[end..].find('.') {
            let ancestor = &path[..end + dot];
            if leaves.contains_key(ancestor) {
                keys.push(ancestor.to_string());
            }
            end += dot + 1;
        }
    }
    keys
}

/// Whether `key` is `path` or below it.
fn is_under(key: &str, path: &str) -> bool {
    key == path
        || (key.len() > path.len() && key.starts_with(path) && key.as_bytes()[path.len()] == b'.')
}

/// The leaves of `value` at `path`: a non-empty table is split into its keys;
/// anything else (an empty table included) is one leaf.
fn flatten(path: &str, value: &Value, out: &mut Vec<(String, Value)>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, value) in map {
                flatten(&format!("{path}.{key}"), value, out);
            }
        }
        other => out.push((path.to_string(), other.clone())),
    }
}

/// The tree the leaves make.
fn build_tree(leaves: &BTreeMap<String, Value>) -> Value {
    let mut tree = Value::Object(Map::new());
    for (path, value) in leaves {
        let mut node = &mut tree;
        let mut segments = path.split('.').peekable();
        while let Some(segment) = segments.next() {
            if !node.is_object() {
                *node = Value::Object(Map::new());
            }
            let Value::Object(map) = node else {
                break;
            };
            if segments.peek().is_none() {
                map.insert(segment.to_string(), value.clone());
                break;
            }
            node = map
                .entry(segment.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
        }
    }
    tree
}

/// The value at a dot-separated `path` of `tree` (the tree itself for `""`).
pub fn value_at<'a>(tree: &'a Value, path: &str) -> Option<&'a Value> {
    if path.is_empty() {
        return Some(tree);
    }
    path.split('.').try_fold(tree, |node, key| node.get(key))
}

/// Checks a path to change: dot-separated keys, none empty.
pub fn check_path(path: &str) -> Result<(), ConfigError> {
    if path.is_empty()
        || path
            .split('.')
            .any(|s| s.trim().is_empty() || s.contains('/'))
    {
        return Err(ConfigError::source_error(
            ErrorKind::Invalid,
            "db",
            format!("{path:?} is not a config path: use dot-separated keys like greeter.greeting"),
        ));
    }
    Ok(())
}

fn db_error(source: &str, e: redb::Error) -> ConfigError {
    ConfigError::source_error(
        ErrorKind::Unavailable,
        source,
        format!("the database failed: {e}; check the disk and the data directory"),
    )
}

/// Runs blocking database work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ConfigError> + Send + 'static,
) -> Result<T, ConfigError> {
    tokio::task::spawn_blocking(work).await.map_err(|e| {
        ConfigError::source_error(
            ErrorKind::Unavailable,
            "db",
            format!("the write failed: {e}"),
        )
    })?
}

impl Source for ConfigDb {
    fn name(&self) -> String {
        self.source_name()
    }

    fn read(&self) -> BoxFuture<'_, Result<Value, ConfigError>> {
        let tree = self.tree();
        Box::pin(async move { Ok(Value::clone(&tree)) })
    }

    /// One tree per change, in commit order; a watcher that lags is given the
    /// current tree.
    fn watch(&self) -> Option<BoxStream<'static, Result<Value, ConfigError>>> {
        let receiver = self.subscribe();
        let db = self.clone();
        Some(
            stream::unfold((receiver, db), |(mut receiver, db)| async move {
                let tree = match receiver.recv().await {
                    Ok(change) => Value::clone(&change.tree),
                    Err(broadcast::error::RecvError::Lagged(_)) => Value::clone(&db.tree()),
                    Err(broadcast::error::RecvError::Closed) => return None,
                };
                Some((Ok(tree), (receiver, db)))
            })
            .boxed(),
        )
    }
}

impl Store for ConfigDb {
    fn write<'a>(&'a self, path: &'a str, value: Value) -> BoxFuture<'a, Result<(), ConfigError>> {
        Box::pin(async move { self.set(path, value).await.map(drop) })
    }

    fn delete<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<(), ConfigError>> {
        Box::pin(async move { self.remove(path).await.map(drop) })
    }

    fn get<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<Option<Value>, ConfigError>> {
        let value = ConfigDb::get(self, path);
        Box::pin(async move { Ok(value) })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn values_and_revision_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = ConfigDb::open(dir.path()).unwrap();
            assert_eq!(db.revision(), 0);
            db.set("greeter.greeting", json!("Hola")).await.unwrap();
            db.set("db", json!({"address": "x:1", "pool": {"size": 3}}))
                .await
                .unwrap();
            assert_eq!(db.set("flag", json!(true)).await.unwrap(), 3);
        }
        let db = ConfigDb::open(dir.path()).unwrap();
        assert_eq!(db.revision(), 3);
        assert_eq!(db.get("greeter.greeting"), Some(json!("Hola")));
        assert_eq!(db.get("db.pool"), Some(json!({"size": 3})));
        assert_eq!(db.set("flag", json!(false)).await.unwrap(), 4);
        drop(db);
        assert_eq!(ConfigDb::open(dir.path()).unwrap().revision(), 4);
    }

    #[tokio::test]
    async fn a_second_open_of_the_same_dir_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _db = ConfigDb::open(dir.path()).unwrap();
        let err = ConfigDb::open(dir.path()).unwrap_err();
        assert!(err.to_string().contains("another micro server"), "{err}");
    }

    #[tokio::test]
    async fn tables_are_stored_as_leaves() {
        let dir = tempfile::tempdir().unwrap();
        let db = ConfigDb::open(dir.path()).unwrap();
        db.set("a", json!(1)).await.unwrap();
        // A leaf becomes a table.
        db.set("a.b.c", json!("x")).await.unwrap();
        assert_eq!(db.get("a"), Some(json!({"b": {"c": "x"}})));
        db.set("a.d", json!([1, 2])).await.unwrap();
        db.set("ab", json!({})).await.unwrap();
        let listed: Vec<String> = db.list("a").into_iter().map(|(k, _)| k).collect();
        assert_eq!(listed, ["a.b.c", "a.d"]);
        assert_eq!(db.list("").len(), 3);
        // A table replaces what was under the path.
        db.set("a", json!({"e": null})).await.unwrap();
        assert_eq!(db.get("a"), Some(json!({"e": null})));
        // Delete removes the subtree only.
        db.remove("a").await.unwrap();
        assert_eq!(db.get("a"), None);
        assert_eq!(db.get("ab"), Some(json!({})));
        db.remove("nothing.here").await.unwrap();
        assert!(db.set("", json!(1)).await.is_err());
        assert!(db.set("a..b", json!(1)).await.is_err());
    }

    #[tokio::test]
    async fn watchers_see_every_change_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let db = ConfigDb::open(dir.path()).unwrap();
        let mut changes = db.subscribe();
        let mut trees = db.watch().unwrap();
        for i in 0..50 {
            db.set("n", json!(i)).await.unwrap();
        }
        db.remove("n").await.unwrap();
        for i in 0..50u64 {
            let change = changes.recv().await.unwrap();
            assert_eq!(change.revision, i + 1);
            assert_eq!(change.tree["n"], json!(i));
            assert_eq!(trees.next().await.unwrap().unwrap()["n"], json!(i));
        }
        let last = changes.recv().await.unwrap();
        assert!(last.deleted);
        assert_eq!(last.revision, 51);
        assert_eq!(trees.next().await.unwrap().unwrap(), json!({}));
    }

    #[tokio::test]
    async fn concurrent_writers_are_ordered() {
        let dir = tempfile::tempdir().unwrap();
        let db = ConfigDb::open(dir.path()).unwrap();
        let mut changes = db.subscribe();
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let db = db.clone();
                tokio::spawn(async move { db.set(&format!("k{i}"), json!(i)).await })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        for revision in 1..=8 {
            assert_eq!(changes.recv().await.unwrap().revision, revision);
        }
        assert_eq!(db.list("").len(), 8);
    }
}
