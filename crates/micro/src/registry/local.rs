//! The local registry: service discovery on one machine with no multicast and no
//! daemon, through a directory of small JSON files.
//!
//! # How it works
//!
//! Every registered node is one file,
//! `<dir>/<service name>/<node id>@<version>.json`, holding the service record with
//! exactly that node, its expiry (unix milliseconds), and the process id and host
//! name of the process that owns it. Names are escaped into safe file names
//! (`/`, `..`, upper case and non-ASCII become `%XX`; very long names are shortened
//! and given a hash), so any name works on any file system, case-insensitive ones too.
//!
//! - **Register** writes the node's file atomically (a temporary file in the same
//!   directory, then a rename), with expiry *now + TTL*. Registering again refreshes
//!   it. The service's endpoints and metadata are those of the most recently written
//!   node file of that version.
//! - **Deregister** deletes the node's files: other processes stop seeing them at
//!   once.
//! - **Reading** ([`get_service`](Registry::get_service),
//!   [`list_services`](Registry::list_services)) scans the directory. A corrupt or
//!   foreign file is skipped (logged at debug level), never an error. Expired nodes
//!   are dropped, and so are nodes whose owning process has died: when the file was
//!   written on this host (same host name and, on Linux, the same PID namespace), a
//!   missing or zombie `/proc/<pid>` — or a PID reused by a newer process — means the
//!   owner is gone. So a service killed with `kill -9` disappears on the next read,
//!   not after its TTL; elsewhere (macOS, Windows, another container) the TTL alone
//!   removes it. Dead and expired files are deleted as they are found.
//! - **Watch** starts one poller per registry handle (shared by all its watchers),
//!   which rescans every 200 ms ([`LocalRegistry::poll_interval`]) and turns the
//!   differences into [`Added`](EventKind::Added), [`Updated`](EventKind::Updated)
//!   and [`Removed`](EventKind::Removed) events. Changes made by another process are
//!   seen within one poll interval; changes made through the same handle wake the
//!   poller at once. Expiries and dead processes show up as `Removed`. The poller
//!   stops when the last watcher is dropped.
//!
//! Reads are cheap: a directory whose modification time has not changed (and is
//! older than two seconds, so coarse file-system clocks cannot hide a change) is
//! served from memory, so a read costs one `stat` per service plus one small read
//! of `/proc/<pid>/stat` per distinct owner process.
//!
//! # Where the directory is
//!
//! [`LocalRegistry::new`] uses [`LocalRegistry::default_dir`]:
//! `$XDG_RUNTIME_DIR/micro/registry` when `XDG_RUNTIME_DIR` is set, else
//! `<temp dir>/micro-<uid>/registry`. The directories are created with mode `0700`,
//! and the `micro`/`micro-<uid>` directory is refused if it belongs to another user,
//! so other users cannot inject nodes. Processes only find each other when they use
//! the same directory: a process started without `XDG_RUNTIME_DIR` (cron, some
//! `sudo` and container setups) looks in the temp dir instead. Set
//! `MICRO_REGISTRY_ADDRESS` (or `--registry_address`) to a path to choose the
//! directory explicitly ([`LocalRegistry::at`]), for instance a directory
//! bind-mounted into several containers.
//!
//! # Scope
//!
//! The local registry covers one machine (or one shared directory). Discovery
//! across a LAN is the mDNS layer's job, merged on top of it; beyond that, use etcd
//! or Kubernetes.

use std::collections::{BTreeMap, HashMap};
use std::fmt::{self, Write as _};
use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::{BoxFuture, FutureExt};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, Notify};

use super::{
    broadcast_watcher, found_or_not_found, service_not_found, Event, EventKind, Node,
    RegisterOptions, Registry, Service, Watcher,
};
use crate::Error;

const ID: &str = "micro.registry";
/// How often a watcher's poller rescans the directory by default.
const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(200);
/// A directory listing is trusted from memory only when its modification time is
/// at least this much older than the moment it was read (coarse timestamps).
const RACY: Duration = Duration::from_secs(2);
/// Temporary files older than this were left by a crashed writer.
const STALE_TMP: Duration = Duration::from_secs(60);
/// Escaped names longer than this are shortened and given a hash.
const MAX_NAME: usize = 100;
const WHERE_TO: &str = "choose another directory with --registry_address / \
                        MICRO_REGISTRY_ADDRESS";

/// A registry in a directory of small JSON files: zero-dependency discovery for all
/// the services of one machine, robust to `kill -9`. See the [module docs](self)
/// for how it behaves.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), micro::Error> {
/// use micro::registry::{LocalRegistry, Node, Registry, Service};
///
/// let dir = std::env::temp_dir().join(format!("micro-doc-local-{}", std::process::id()));
/// let registry = LocalRegistry::at(&dir);
/// let service = Service {
///     name: "greeter".into(),
///     version: "latest".into(),
///     nodes: vec![Node { id: "greeter-1".into(), address: "127.0.0.1:9000".into(), ..Default::default() }],
///     ..Default::default()
/// };
/// registry.register(&service, Default::default()).await?;
///
/// // Another handle on the same directory — typically another process — sees it.
/// let other = LocalRegistry::at(&dir);
/// assert_eq!(other.get_service("greeter").await?[0].nodes[0].address, "127.0.0.1:9000");
///
/// registry.deregister(&service).await?;
/// assert_eq!(other.get_service("greeter").await.unwrap_err().code(), 404);
/// # std::fs::remove_dir_all(&dir).ok();
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct LocalRegistry {
    store: Arc<Store>,
    owner: Owner,
    poll_interval: Duration,
    poller: Arc<Mutex<Option<Poller>>>,
}

impl fmt::Debug for LocalRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalRegistry")
            .field("dir", &self.store.root)
            .field("owner_pid", &self.owner.pid)
            .field("poll_interval", &self.poll_interval)
            .finish()
    }
}

impl Default for LocalRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl LocalRegistry {
    /// The registry in [`default_dir`](Self::default_dir), shared by every process of
    /// this user on this machine. Nothing is created until the first registration.
    ///
    /// ```
    /// use micro::registry::{LocalRegistry, Registry};
    ///
    /// let registry = LocalRegistry::new();
    /// assert_eq!(registry.name(), "local");
    /// assert_eq!(registry.dir(), LocalRegistry::default_dir());
    /// ```
    pub fn new() -> Self {
        let (root, private) = default_location();
        Self::located(root, private)
    }

    /// The registry in directory `dir` (what `MICRO_REGISTRY_ADDRESS` names for this
    /// registry). Missing directories are created with mode `0700` on first
    /// registration; an existing directory is used as it is, so a directory shared on
    /// purpose (say, bind-mounted into containers) keeps its permissions.
    ///
    /// ```
    /// use micro::registry::LocalRegistry;
    ///
    /// let registry = LocalRegistry::at("/run/my-app/registry");
    /// assert_eq!(registry.dir(), std::path::Path::new("/run/my-app/registry"));
    /// ```
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        Self::located(dir.into(), None)
    }

    fn located(root: PathBuf, private: Option<PathBuf>) -> Self {
        LocalRegistry {
            store: Arc::new(Store {
                root,
                private,
                cache: Mutex::new(HashMap::new()),
            }),
            owner: Owner::of(Some(std::process::id())),
            poll_interval: DEFAULT_POLL_INTERVAL,
            poller: Arc::new(Mutex::new(None)),
        }
    }

    /// The process whose death removes the nodes this handle registers: this process
    /// by default. `None` leaves only the TTL, which is what a command that
    /// registers nodes on behalf of others and then exits (`micro register service`)
    /// needs; `Some(pid)` ties them to another process, for a supervisor that
    /// registers the programs it starts.
    ///
    /// ```
    /// use micro::registry::LocalRegistry;
    ///
    /// // Nodes registered through this handle live for their TTL, whoever exits.
    /// let registry = LocalRegistry::new().owner_pid(None);
    /// # let _ = registry;
    /// ```
    pub fn owner_pid(mut self, pid: Option<u32>) -> Self {
        self.owner = Owner::of(pid);
        self
    }

    /// How often watchers rescan the directory for changes made by other processes
    /// (200 ms by default). Changes made through this handle are seen at once.
    ///
    /// ```
    /// use std::time::Duration;
    /// use micro::registry::LocalRegistry;
    ///
    /// let registry = LocalRegistry::new().poll_interval(Duration::from_millis(100));
    /// # let _ = registry;
    /// ```
    pub fn poll_interval(mut self, every: Duration) -> Self {
        self.poll_interval = every.max(Duration::from_millis(1));
        self
    }

    /// The directory this registry keeps its files in.
    ///
    /// ```
    /// use micro::registry::LocalRegistry;
    ///
    /// println!("services register in {}", LocalRegistry::new().dir().display());
    /// ```
    pub fn dir(&self) -> &Path {
        &self.store.root
    }

    /// The directory [`new`](Self::new) uses: `$XDG_RUNTIME_DIR/micro/registry`, else
    /// `<temp dir>/micro-<uid>/registry`.
    ///
    /// ```
    /// use micro::registry::LocalRegistry;
    ///
    /// assert!(LocalRegistry::default_dir().ends_with("registry"));
    /// ```
    pub fn default_dir() -> PathBuf {
        default_location().0
    }

    fn wake_poller(&self) {
        if let Some(poller) = lock(&self.poller).as_ref() {
            poller.wake.notify_one();
        }
    }

    /// A receiver of this handle's events, starting the poller if none runs.
    fn subscribe(&self) -> Result<broadcast::Receiver<Event>, Error> {
        let mut slot = lock(&self.poller);
        if let Some(poller) = slot.as_ref() {
            return Ok(poller.events.subscribe());
        }
        // The baseline is taken before `watch` returns, so that every change made
        // after it is reported.
        let baseline = self.store.scan(None)?;
        let (events, rx) = broadcast::channel(1024);
        let wake = Arc::new(Notify::new());
        *slot = Some(Poller {
            events: events.clone(),
            wake: wake.clone(),
        });
        tokio::spawn(poll(
            self.store.clone(),
            self.poller.clone(),
            events,
            wake,
            baseline,
            self.poll_interval,
        ));
        Ok(rx)
    }
}

impl Registry for LocalRegistry {
    fn register<'a>(
        &'a self,
        service: &'a Service,
        opts: RegisterOptions,
    ) -> BoxFuture<'a, Result<(), Error>> {
        async move {
            super::validate(service)?;
            if service.nodes.is_empty() {
                return Ok(());
            }
            self.store.check_private()?;
            for node in &service.nodes {
                self.store
                    .write_node(service, node, opts.ttl, &self.owner)?;
            }
            self.wake_poller();
            Ok(())
        }
        .boxed()
    }

    fn deregister<'a>(&'a self, service: &'a Service) -> BoxFuture<'a, Result<(), Error>> {
        async move {
            if service.name.is_empty() || service.nodes.is_empty() {
                return Ok(());
            }
            let dir = self.store.root.join(escape(&service.name));
            for node in &service.nodes {
                let path = dir.join(node_file_name(&node.id, &service.version));
                match fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_error("removing", &path, e)),
                }
            }
            // Succeeds only once the service has no node left.
            let _ = fs::remove_dir(&dir);
            self.wake_poller();
            Ok(())
        }
        .boxed()
    }

    fn get_service<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<Service>, Error>> {
        async move {
            if name.is_empty() {
                return Err(service_not_found(name));
            }
            found_or_not_found(name, services(&self.store.scan(Some(name))?))
        }
        .boxed()
    }

    fn list_services(&self) -> BoxFuture<'_, Result<Vec<Service>, Error>> {
        async move { Ok(services(&self.store.scan(None)?)) }.boxed()
    }

    fn watch(&self, service: Option<&str>) -> BoxFuture<'_, Result<Watcher, Error>> {
        let filter = service.map(str::to_string);
        async move { Ok(broadcast_watcher(self.subscribe()?, filter, ID)) }.boxed()
    }

    fn name(&self) -> &'static str {
        "local"
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section is a single read or replace: a panic cannot leave the
    // data half-written, so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn io_error(what: &str, path: &Path, e: io::Error) -> Error {
    let hint = match e.kind() {
        io::ErrorKind::PermissionDenied => {
            format!("; make it readable and writable by this user (chmod u+rwx on the directory), or {WHERE_TO}")
        }
        io::ErrorKind::ReadOnlyFilesystem | io::ErrorKind::NotADirectory => {
            format!("; {WHERE_TO}")
        }
        _ => String::new(),
    };
    Error::internal_server_error(
        ID,
        format!(
            "local registry: {what} {} failed: {e}{hint}",
            path.display()
        ),
    )
}

// ---------------------------------------------------------------------------
// Files

/// What one node file holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct NodeFile {
    /// The service record with exactly this node.
    service: Service,
    /// Unix milliseconds after which the node is gone.
    expires: u64,
    /// The owning process, when its death should remove the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pid: Option<u32>,
    /// The host name of the machine the owner runs on.
    #[serde(default)]
    host: String,
    /// Linux: the owner's PID namespace (`pid:[4026531836]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pid_ns: Option<String>,
    /// Linux: the owner's start time (clock ticks since boot), to notice PID reuse.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    start: Option<u64>,
    /// Unix milliseconds when the file was written: the newest file's endpoints
    /// and metadata describe the version.
    #[serde(default)]
    written: u64,
}

impl NodeFile {
    fn node(&self) -> &Node {
        // Files with any other number of nodes are rejected when read.
        &self.service.nodes[0]
    }

    /// Same node and same service description (expiry aside).
    fn same(&self, other: &NodeFile) -> bool {
        self.node() == other.node()
            && self.service.metadata == other.service.metadata
            && self.service.endpoints == other.service.endpoints
    }
}

#[derive(Debug, Clone, Copy)]
struct Owner {
    pid: Option<u32>,
    start: Option<u64>,
}

impl Owner {
    fn of(pid: Option<u32>) -> Self {
        let start = pid.and_then(|pid| match proc_status(pid) {
            Proc::Running { start } => start,
            Proc::Gone => None,
        });
        Owner { pid, start }
    }
}

#[derive(Debug)]
struct Store {
    root: PathBuf,
    /// For the default location: the directory that must belong to this user and be
    /// closed to others (`micro-<uid>` in the temp dir, `micro` in the runtime dir).
    private: Option<PathBuf>,
    /// Service directory name -> its parsed files.
    cache: Mutex<HashMap<String, DirCache>>,
}

#[derive(Debug, Clone)]
struct DirCache {
    mtime: SystemTime,
    read_at: SystemTime,
    entries: Arc<Vec<Entry>>,
}

#[derive(Debug, Clone)]
struct Entry {
    file: String,
    rec: Arc<NodeFile>,
}

/// (name, version) -> the live nodes of that version.
type Snapshot = BTreeMap<(String, String), Version>;

#[derive(Debug, Clone, Default)]
struct Version {
    /// The most recently written file: its endpoints and metadata win.
    newest: Option<Arc<NodeFile>>,
    /// node id -> its file.
    nodes: BTreeMap<String, Arc<NodeFile>>,
}

impl Version {
    fn add(&mut self, rec: Arc<NodeFile>) {
        let newer = self
            .newest
            .as_ref()
            .is_none_or(|n| (rec.written, &rec.node().id) > (n.written, &n.node().id));
        if newer {
            self.newest = Some(rec.clone());
        }
        self.nodes.insert(rec.node().id.clone(), rec);
    }

    fn record(&self, nodes: Vec<Node>) -> Service {
        let mut service = self
            .newest
            .as_ref()
            .map(|n| n.service.clone())
            .unwrap_or_default();
        service.nodes = nodes;
        service
    }
}

fn services(snapshot: &Snapshot) -> Vec<Service> {
    snapshot
        .values()
        .map(|v| v.record(v.nodes.values().map(|r| r.node().clone()).collect()))
        .collect()
}

impl Store {
    /// Refuses a default directory that another user owns; closes one left open.
    fn check_private(&self) -> Result<(), Error> {
        #[cfg(unix)]
        if let Some(dir) = &self.private {
            use std::os::unix::fs::{MetadataExt, PermissionsExt};
            let meta = match fs::symlink_metadata(dir) {
                Ok(meta) => meta,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(io_error("checking", dir, e)),
            };
            if !meta.is_dir() {
                return Err(Error::internal_server_error(
                    ID,
                    format!(
                        "local registry: {} is not a directory (a symlink or a file); \
                         remove it, or {WHERE_TO}",
                        dir.display()
                    ),
                ));
            }
            if let Some(uid) = current_uid() {
                if meta.uid() != uid {
                    return Err(Error::internal_server_error(
                        ID,
                        format!(
                            "local registry: {} belongs to uid {}, not to you (uid {uid}), \
                             so another user could inject nodes; remove it, or {WHERE_TO}",
                            dir.display(),
                            meta.uid()
                        ),
                    ));
                }
            }
            if meta.mode() & 0o077 != 0 {
                fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
                    .map_err(|e| io_error("restricting permissions of", dir, e))?;
            }
        }
        Ok(())
    }

    fn create_dirs(&self, dir: &Path) -> Result<(), Error> {
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        if let Some(private) = &self.private {
            builder
                .create(private)
                .map_err(|e| io_error("creating", private, e))?;
            self.check_private()?;
        }
        builder
            .create(dir)
            .map_err(|e| io_error("creating", dir, e))
    }

    fn write_node(
        &self,
        service: &Service,
        node: &Node,
        ttl: Duration,
        owner: &Owner,
    ) -> Result<(), Error> {
        let now = unix_ms(SystemTime::now());
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let me = identity();
        let rec = NodeFile {
            service: Service {
                nodes: vec![node.clone()],
                ..service.clone()
            },
            expires: now.saturating_add(ttl_ms),
            pid: owner.pid,
            host: me.host.clone(),
            pid_ns: me.pid_ns.clone(),
            start: owner.start,
            written: now,
        };
        let body = serde_json::to_vec(&rec).map_err(|e| {
            Error::internal_server_error(ID, format!("local registry: encoding node: {e}"))
        })?;
        let dir = self.root.join(escape(&service.name));
        let file = node_file_name(&node.id, &service.version);
        let mut creations = 0;
        loop {
            match write_atomic(&dir, &file, &body) {
                Ok(()) => return Ok(()),
                // The directory is missing (first registration, or it was cleaned
                // up meanwhile): create it and try again.
                Err(e) if e.kind() == io::ErrorKind::NotFound && creations < 3 => {
                    self.create_dirs(&dir)?;
                    creations += 1;
                }
                Err(e) => return Err(io_error("writing", &dir.join(&file), e)),
            }
        }
    }

    /// The live nodes of every service (or of service `only`), deleting the files of
    /// expired and dead nodes on the way.
    fn scan(&self, only: Option<&str>) -> Result<Snapshot, Error> {
        self.check_private()?;
        let now = SystemTime::now();
        let now_ms = unix_ms(now);
        let dirs: Vec<String> = match only {
            Some(name) => vec![escape(name)],
            None => match fs::read_dir(&self.root) {
                Ok(read) => read
                    .filter_map(Result::ok)
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter(|name| !name.starts_with('.'))
                    .collect(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
                Err(e) => return Err(io_error("reading", &self.root, e)),
            },
        };
        if only.is_none() {
            lock(&self.cache).retain(|dir, _| dirs.contains(dir));
        }
        let mut procs = Procs::default();
        let mut snapshot = Snapshot::new();
        for dir in &dirs {
            let entries = match self.entries(dir, now) {
                Ok(entries) => entries,
                Err(e) if only.is_some() => return Err(e),
                Err(e) => {
                    tracing::debug!(error = %e, "skipping an unreadable service directory");
                    continue;
                }
            };
            let mut gone = Vec::new();
            for entry in entries.iter() {
                if only.is_some_and(|name| name != entry.rec.service.name) {
                    continue;
                }
                if entry.rec.expires <= now_ms || !procs.alive(&entry.rec) {
                    gone.push(entry);
                    continue;
                }
                snapshot
                    .entry((
                        entry.rec.service.name.clone(),
                        entry.rec.service.version.clone(),
                    ))
                    .or_default()
                    .add(entry.rec.clone());
            }
            if !gone.is_empty() {
                self.collect(dir, &gone, now_ms, &mut procs);
            }
        }
        Ok(snapshot)
    }

    /// The parsed files of one service directory, from memory when it is unchanged.
    fn entries(&self, dir: &str, now: SystemTime) -> Result<Arc<Vec<Entry>>, Error> {
        let path = self.root.join(dir);
        let meta = match fs::metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                lock(&self.cache).remove(dir);
                return Ok(Arc::default());
            }
            Err(e) => return Err(io_error("reading", &path, e)),
        };
        let mtime = meta.modified().ok();
        if let Some(mtime) = mtime {
            if let Some(cached) = lock(&self.cache).get(dir) {
                let settled = cached
                    .read_at
                    .duration_since(mtime)
                    .is_ok_and(|age| age > RACY);
                if cached.mtime == mtime && settled {
                    return Ok(cached.entries.clone());
                }
            }
        }
        let read = match fs::read_dir(&path) {
            Ok(read) => read,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                lock(&self.cache).remove(dir);
                return Ok(Arc::default());
            }
            Err(e) => return Err(io_error("reading", &path, e)),
        };
        let mut entries = Vec::new();
        for item in read.filter_map(Result::ok) {
            let Ok(file) = item.file_name().into_string() else {
                continue;
            };
            if file.starts_with('.') {
                if file.ends_with(".tmp") {
                    remove_stale_tmp(&item.path(), now);
                }
                continue;
            }
            if !file.ends_with(".json") || !item.file_type().is_ok_and(|t| t.is_file()) {
                continue;
            }
            if let Some(rec) = read_node_file(&item.path(), dir, &file) {
                entries.push(Entry {
                    file,
                    rec: Arc::new(rec),
                });
            }
        }
        let entries = Arc::new(entries);
        if let Some(mtime) = mtime {
            lock(&self.cache).insert(
                dir.to_string(),
                DirCache {
                    mtime,
                    read_at: now,
                    entries: entries.clone(),
                },
            );
        }
        Ok(entries)
    }

    /// Deletes the files of expired and dead nodes, reading each again first: its
    /// owner may have refreshed it since.
    fn collect(&self, dir: &str, gone: &[&Entry], now_ms: u64, procs: &mut Procs) {
        let dir_path = self.root.join(dir);
        for entry in gone {
            let path = dir_path.join(&entry.file);
            let Some(rec) = read_node_file(&path, dir, &entry.file) else {
                continue;
            };
            if rec.expires > now_ms && procs.alive(&rec) {
                continue;
            }
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => tracing::debug!(path = %path.display(), error = %e,
                    "could not delete an expired registry file"),
            }
        }
        // Succeeds only when no node (and no write in progress) is left.
        let _ = fs::remove_dir(&dir_path);
    }
}

fn write_atomic(dir: &Path, file: &str, body: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!(".{file}.{:016x}.tmp", rand::random::<u64>()));
    let mut out = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)?;
    let written = out.write_all(body);
    drop(out);
    let renamed = written.and_then(|()| fs::rename(&tmp, dir.join(file)));
    if renamed.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    renamed
}

fn remove_stale_tmp(path: &Path, now: SystemTime) {
    let stale = fs::symlink_metadata(path)
        .and_then(|m| m.modified())
        .is_ok_and(|modified| {
            now.duration_since(modified)
                .is_ok_and(|age| age > STALE_TMP)
        });
    if stale {
        let _ = fs::remove_file(path);
    }
}

/// Parses one node file; `None` (logged at debug level) for anything that is not a
/// well-formed node file in its right place.
fn read_node_file(path: &Path, dir: &str, file: &str) -> Option<NodeFile> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::debug!(path = %path.display(), error = %e, "skipping an unreadable registry file");
            return None;
        }
    };
    let rec: NodeFile = match serde_json::from_slice(&bytes) {
        Ok(rec) => rec,
        Err(e) => {
            tracing::debug!(path = %path.display(), error = %e, "skipping a corrupt registry file");
            return None;
        }
    };
    let placed = rec.service.nodes.len() == 1
        && !rec.service.name.is_empty()
        && escape(&rec.service.name) == dir
        && node_file_name(&rec.service.nodes[0].id, &rec.service.version) == file;
    if !placed {
        tracing::debug!(path = %path.display(), "skipping a registry file that does not hold the node its name says");
        return None;
    }
    Some(rec)
}

/// `<node id>@<version>.json`, each part escaped.
fn node_file_name(id: &str, version: &str) -> String {
    format!("{}@{}.json", escape(id), escape(version))
}

/// A name as a safe, case-insensitively unique file name: `a-z 0-9 - _ .` stay
/// (a leading `.` does not), every other byte becomes `%XX`; results longer than
/// [`MAX_NAME`] are cut and end in `~<hash of the whole name>`.
fn escape(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for (i, b) in name.bytes().enumerate() {
        let keep = b.is_ascii_lowercase()
            || b.is_ascii_digit()
            || b == b'-'
            || b == b'_'
            || (b == b'.' && i > 0);
        if keep {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    if out.len() > MAX_NAME {
        out.truncate(MAX_NAME - 20);
        let _ = write!(out, "~{:016x}", fnv1a(name.as_bytes()));
    }
    out
}

/// FNV-1a, 64 bits: stable across builds and platforms, unlike std's hasher.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

// ---------------------------------------------------------------------------
// Where the directory is, who we are, and which processes are alive

fn default_location() -> (PathBuf, Option<PathBuf>) {
    let runtime = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute());
    let private = match runtime {
        Some(runtime) => runtime.join("micro"),
        None => {
            #[cfg(unix)]
            let name = match current_uid() {
                Some(uid) => format!("micro-{uid}"),
                None => "micro".to_string(),
            };
            #[cfg(not(unix))]
            let name = "micro".to_string();
            std::env::temp_dir().join(name)
        }
    };
    (private.join("registry"), Some(private))
}

/// This process's user id, without `libc`: the owner of `/proc/self` on Linux, else
/// of a file it creates.
#[cfg(unix)]
fn current_uid() -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    static UID: OnceLock<Option<u32>> = OnceLock::new();
    *UID.get_or_init(|| {
        if let Ok(meta) = fs::metadata("/proc/self") {
            return Some(meta.uid());
        }
        let probe = std::env::temp_dir().join(format!(".micro-uid-{:016x}", rand::random::<u64>()));
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&probe)
            .ok()?;
        let uid = file.metadata().ok().map(|m| m.uid());
        drop(file);
        let _ = fs::remove_file(&probe);
        uid
    })
}

#[derive(Debug)]
struct Identity {
    host: String,
    /// Linux: this process's PID namespace.
    pid_ns: Option<String>,
    /// Whether `/proc` shows other processes (not so with `hidepid`).
    proc_visible: bool,
}

fn identity() -> &'static Identity {
    static IDENTITY: OnceLock<Identity> = OnceLock::new();
    IDENTITY.get_or_init(|| {
        let host = fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .or_else(|| std::env::var("COMPUTERNAME").ok())
            .map(|h| h.trim().to_string())
            .unwrap_or_default();
        let pid_ns = fs::read_link("/proc/self/ns/pid")
            .ok()
            .map(|p| p.to_string_lossy().into_owned());
        let proc_visible = cfg!(any(target_os = "linux", target_os = "android"))
            && Path::new("/proc/1/stat").exists();
        Identity {
            host,
            pid_ns,
            proc_visible,
        }
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proc {
    Gone,
    Running { start: Option<u64> },
}

/// Linux: whether `pid` runs (a zombie does not), and since when.
fn proc_status(pid: u32) -> Proc {
    if !cfg!(any(target_os = "linux", target_os = "android")) {
        return Proc::Running { start: None };
    }
    const ESRCH: i32 = 3;
    let stat = match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat,
        Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(ESRCH) => {
            return Proc::Gone
        }
        Err(_) => return Proc::Running { start: None },
    };
    // `pid (comm) state ppid …`: comm may hold spaces and parentheses.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return Proc::Running { start: None };
    };
    let mut fields = rest.split_whitespace();
    if matches!(fields.next(), Some("Z" | "X" | "x")) {
        return Proc::Gone;
    }
    // Field 22 of the file; we consumed field 3.
    let start = fields.nth(18).and_then(|v| v.parse().ok());
    Proc::Running { start }
}

/// Liveness of owners, looked up once per process per scan.
#[derive(Debug, Default)]
struct Procs {
    seen: HashMap<u32, Proc>,
}

impl Procs {
    fn alive(&mut self, rec: &NodeFile) -> bool {
        let me = identity();
        let here = me.proc_visible
            && !me.host.is_empty()
            && rec.host == me.host
            && match (&rec.pid_ns, &me.pid_ns) {
                (Some(theirs), Some(ours)) => theirs == ours,
                _ => true,
            };
        let Some(pid) = rec.pid.filter(|_| here) else {
            return true;
        };
        match *self.seen.entry(pid).or_insert_with(|| proc_status(pid)) {
            Proc::Gone => false,
            Proc::Running { start } => match (rec.start, start) {
                (Some(theirs), Some(now)) => theirs == now,
                _ => true,
            },
        }
    }
}

// ---------------------------------------------------------------------------
// Watching

#[derive(Debug)]
struct Poller {
    events: broadcast::Sender<Event>,
    wake: Arc<Notify>,
}

async fn poll(
    store: Arc<Store>,
    slot: Arc<Mutex<Option<Poller>>>,
    events: broadcast::Sender<Event>,
    wake: Arc<Notify>,
    mut previous: Snapshot,
    every: Duration,
) {
    let mut failing = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = wake.notified() => {}
        }
        {
            let mut slot = lock(&slot);
            if events.receiver_count() == 0 {
                *slot = None;
                return;
            }
        }
        let scanning = store.clone();
        let next = match tokio::task::spawn_blocking(move || scanning.scan(None)).await {
            Ok(next) => next,
            Err(e) => Err(Error::internal_server_error(ID, e.to_string())),
        };
        match next {
            Ok(next) => {
                failing = false;
                for event in diff(&previous, &next) {
                    let _ = events.send(event);
                }
                previous = next;
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "local registry: watching failed; retrying");
                }
                failing = true;
            }
        }
    }
}

/// The events that turn `old` into `new`.
fn diff(old: &Snapshot, new: &Snapshot) -> Vec<Event> {
    let mut events = Vec::new();
    let mut emit = |kind, version: &Version, nodes: Vec<Node>| {
        if !nodes.is_empty() {
            events.push(Event {
                kind,
                service: version.record(nodes),
            });
        }
    };
    for (key, now) in new {
        let before = old.get(key);
        let (mut added, mut updated) = (Vec::new(), Vec::new());
        for (id, rec) in &now.nodes {
            match before.and_then(|b| b.nodes.get(id)) {
                None => added.push(rec.node().clone()),
                Some(prev) if !prev.same(rec) => updated.push(rec.node().clone()),
                Some(_) => {}
            }
        }
        emit(EventKind::Added, now, added);
        emit(EventKind::Updated, now, updated);
    }
    for (key, before) in old {
        let now = new.get(key);
        let removed = before
            .nodes
            .iter()
            .filter(|(id, _)| now.is_none_or(|n| !n.nodes.contains_key(*id)))
            .map(|(_, rec)| rec.node().clone())
            .collect();
        emit(EventKind::Removed, before, removed);
    }
    events
}

#[cfg(test)]
pub(crate) mod test_support {
    use std::path::{Path, PathBuf};

    /// A directory under the temp dir, removed when dropped.
    #[derive(Debug)]
    pub(crate) struct TempDir(PathBuf);

    impl TempDir {
        pub(crate) fn new() -> Self {
            let dir = std::env::temp_dir().join(format!("micro-test-{}", uuid::Uuid::new_v4()));
            std::fs::create_dir_all(&dir).expect("creating a temp dir");
            TempDir(dir)
        }

        pub(crate) fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::test_support::TempDir;
    use futures_util::StreamExt;

    use super::*;

    fn svc(name: &str, version: &str, ids: &[&str]) -> Service {
        Service {
            name: name.into(),
            version: version.into(),
            nodes: ids
                .iter()
                .enumerate()
                .map(|(i, id)| Node {
                    id: id.to_string(),
                    address: format!("127.0.0.1:{}", 9000 + i),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    async fn next(w: &mut Watcher) -> Event {
        tokio::time::timeout(Duration::from_secs(3), w.next())
            .await
            .expect("an event within 3 s")
            .unwrap()
            .unwrap()
    }

    fn long() -> RegisterOptions {
        RegisterOptions {
            ttl: Duration::from_secs(60),
        }
    }

    /// Every file under `root`, relative to it.
    fn files(root: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for dir in fs::read_dir(root).into_iter().flatten().flatten() {
            for file in fs::read_dir(dir.path()).into_iter().flatten().flatten() {
                out.push(file.path().strip_prefix(root).unwrap().to_path_buf());
            }
        }
        out.sort();
        out
    }

    #[tokio::test]
    async fn atomic_replacement_never_shows_a_missing_or_partial_node() {
        let tmp = TempDir::new();
        let r = LocalRegistry::at(tmp.path());
        let mut s = svc("greeter", "v1", &["a"]);
        r.register(&s, long()).await.unwrap();

        let reader = {
            let r = LocalRegistry::at(tmp.path());
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .unwrap();
                for _ in 0..300 {
                    let found = rt.block_on(r.get_service("greeter")).unwrap();
                    assert_eq!(found.len(), 1);
                    assert_eq!(found[0].nodes.len(), 1);
                    assert_eq!(found[0].nodes[0].id, "a");
                }
            })
        };
        for i in 0..300 {
            s.nodes[0].metadata.insert("n".into(), i.to_string());
            r.register(&s, long()).await.unwrap();
        }
        reader.join().unwrap();
        let found = r.get_service("greeter").await.unwrap();
        assert_eq!(found[0].nodes[0].metadata["n"], "299");
        // No temporary file is left behind.
        assert_eq!(files(tmp.path()), vec![PathBuf::from("greeter/a@v1.json")]);
    }

    #[tokio::test]
    async fn corrupt_and_foreign_files_are_skipped() {
        let tmp = TempDir::new();
        let r = LocalRegistry::at(tmp.path());
        r.register(&svc("greeter", "v1", &["a"]), long())
            .await
            .unwrap();
        let dir = tmp.path().join("greeter");
        fs::write(dir.join("b@v1.json"), b"{\"service\": {\"name\": \"gree").unwrap();
        fs::write(dir.join("c@v1.json"), b"").unwrap();
        fs::write(dir.join("notes.txt"), b"hello").unwrap();
        // A valid record under the wrong file name is not trusted either.
        let good = fs::read(dir.join("a@v1.json")).unwrap();
        fs::write(dir.join("d@v1.json"), &good).unwrap();

        let found = r.get_service("greeter").await.unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].nodes.len(), 1);
        assert_eq!(found[0].nodes[0].id, "a");
        assert_eq!(r.list_services().await.unwrap().len(), 1);
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_dead_owner_removes_its_nodes_at_once() {
        let tmp = TempDir::new();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let theirs = LocalRegistry::at(tmp.path()).owner_pid(Some(child.id()));
        let ours = LocalRegistry::at(tmp.path());
        theirs
            .register(&svc("greeter", "v1", &["child"]), long())
            .await
            .unwrap();
        ours.register(&svc("greeter", "v1", &["me"]), long())
            .await
            .unwrap();
        assert_eq!(ours.get_service("greeter").await.unwrap()[0].nodes.len(), 2);
        let mut w = ours.watch(Some("greeter")).await.unwrap();

        let pid = child.id();
        child.kill().unwrap();
        // Wait for the signal to land (a zombie, not reaped yet, counts as dead)…
        let deadline = Instant::now() + Duration::from_secs(2);
        while proc_status(pid) != Proc::Gone {
            assert!(Instant::now() < deadline, "sleep did not die");
            std::thread::sleep(Duration::from_millis(1));
        }
        // …then the very next read no longer shows the node.
        let found = ours.get_service("greeter").await.unwrap();
        assert_eq!(found[0].nodes.len(), 1);
        assert_eq!(found[0].nodes[0].id, "me");
        child.wait().unwrap();
        assert_eq!(
            files(tmp.path()),
            vec![PathBuf::from("greeter/me@v1.json")],
            "the dead node's file is deleted"
        );
        let ev = tokio::time::timeout(Duration::from_secs(3), w.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(ev.kind, EventKind::Removed);
        assert_eq!(ev.service.nodes[0].id, "child");
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_reused_pid_does_not_keep_a_node_alive() {
        let tmp = TempDir::new();
        let r = LocalRegistry::at(tmp.path());
        r.register(&svc("greeter", "v1", &["a"]), long())
            .await
            .unwrap();
        // Pretend the file was written by an earlier process with our PID.
        let path = tmp.path().join("greeter/a@v1.json");
        let mut rec: NodeFile = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        rec.start = rec.start.map(|s| s.saturating_sub(1));
        assert!(rec.start.is_some());
        fs::write(&path, serde_json::to_vec(&rec).unwrap()).unwrap();
        assert_eq!(r.get_service("greeter").await.unwrap_err().code(), 404);
    }

    #[tokio::test]
    async fn without_an_owner_only_the_ttl_counts() {
        let tmp = TempDir::new();
        let r = LocalRegistry::at(tmp.path()).owner_pid(None);
        r.register(&svc("greeter", "v1", &["a"]), long())
            .await
            .unwrap();
        let text = fs::read_to_string(tmp.path().join("greeter/a@v1.json")).unwrap();
        assert!(!text.contains("\"pid\""), "{text}");
        assert_eq!(r.get_service("greeter").await.unwrap()[0].nodes.len(), 1);
    }

    #[tokio::test]
    async fn expired_files_are_deleted() {
        let tmp = TempDir::new();
        let r = LocalRegistry::at(tmp.path());
        let short = RegisterOptions {
            ttl: Duration::from_millis(50),
        };
        r.register(&svc("greeter", "v1", &["a"]), short)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert_eq!(r.get_service("greeter").await.unwrap_err().code(), 404);
        assert!(files(tmp.path()).is_empty());
        assert!(
            !tmp.path().join("greeter").exists(),
            "empty service dirs go too"
        );
    }

    #[tokio::test]
    async fn two_handles_on_one_directory_see_each_other() {
        let tmp = TempDir::new();
        let a = LocalRegistry::at(tmp.path());
        let b = LocalRegistry::at(tmp.path()).poll_interval(Duration::from_millis(50));
        let mut w = b.watch(None).await.unwrap();
        let s = svc("greeter", "v1", &["a"]);
        a.register(&s, long()).await.unwrap();
        assert_eq!(b.get_service("greeter").await.unwrap()[0].nodes[0].id, "a");
        let ev = next(&mut w).await;
        assert_eq!(
            (ev.kind, ev.service.nodes[0].id.as_str()),
            (EventKind::Added, "a")
        );

        let mut changed = s.clone();
        changed.nodes[0].address = "127.0.0.1:9999".into();
        a.register(&changed, long()).await.unwrap();
        let ev = next(&mut w).await;
        assert_eq!(ev.kind, EventKind::Updated);
        assert_eq!(ev.service.nodes[0].address, "127.0.0.1:9999");

        a.deregister(&s).await.unwrap();
        assert_eq!(b.get_service("greeter").await.unwrap_err().code(), 404);
        let ev = next(&mut w).await;
        assert_eq!(
            (ev.kind, ev.service.nodes[0].id.as_str()),
            (EventKind::Removed, "a")
        );
    }

    #[tokio::test]
    async fn odd_names_are_escaped_and_kept_apart() {
        let tmp = TempDir::new();
        let r = LocalRegistry::at(tmp.path());
        let long_name = "x".repeat(300);
        let names = [
            "a/b",
            "..",
            ".",
            "../../etc/passwd",
            "ünïcødé 服务",
            "Greeter",
            "greeter",
            "go.micro.srv.greeter",
            "100%",
            "%25",
            "a@b",
            long_name.as_str(),
        ];
        for name in names {
            let mut s = svc(name, "../v1", &["node/../x", "Node", "node"]);
            s.metadata.insert("name".into(), name.into());
            r.register(&s, long()).await.unwrap();
        }
        for name in names {
            let found = r.get_service(name).await.unwrap();
            assert_eq!(found.len(), 1, "{name}");
            assert_eq!(found[0].name, name);
            assert_eq!(found[0].version, "../v1");
            assert_eq!(found[0].metadata["name"], name);
            let ids: Vec<_> = found[0].nodes.iter().map(|n| n.id.as_str()).collect();
            assert_eq!(ids, ["Node", "node", "node/../x"], "{name}");
        }
        assert_eq!(r.list_services().await.unwrap().len(), names.len());
        // Everything stays two levels under the root, in plain file names.
        let all = files(tmp.path());
        assert_eq!(all.len(), names.len() * 3);
        for path in &all {
            assert_eq!(path.components().count(), 2, "{}", path.display());
            assert!(
                path.components()
                    .all(|c| matches!(c, std::path::Component::Normal(_))),
                "{}",
                path.display()
            );
            assert!(path.to_str().unwrap().is_ascii(), "{}", path.display());
            assert!(path.file_name().unwrap().len() < 255);
        }
        assert_eq!(escape(".."), "%2E.");
        assert_eq!(escape("a/b"), "a%2Fb");
        assert_eq!(escape("Greeter"), "%47reeter");
        assert_eq!(escape(&long_name).len(), MAX_NAME - 3);
        assert_ne!(escape(&long_name), escape(&"x".repeat(301)));
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn directories_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = TempDir::new();
        let private = tmp.path().join("micro-test");
        fs::create_dir(&private).unwrap();
        fs::set_permissions(&private, fs::Permissions::from_mode(0o755)).unwrap();
        let r = LocalRegistry::located(private.join("registry"), Some(private.clone()));
        r.register(&svc("greeter", "v1", &["a"]), long())
            .await
            .unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&private), 0o700, "an open private dir is closed");
        assert_eq!(mode(&private.join("registry")), 0o700);
        assert_eq!(mode(&private.join("registry/greeter")), 0o700);

        // A private dir owned by someone else is refused (needs root to set up).
        if std::os::unix::fs::chown(&private, Some(65534), None).is_ok() {
            let err = r.get_service("greeter").await.unwrap_err();
            assert_eq!(err.code(), 500);
            assert!(err.detail().contains(&*private.to_string_lossy()), "{err}");
            assert!(err.detail().contains("another user"), "{err}");
            let err = r
                .register(&svc("greeter", "v1", &["b"]), long())
                .await
                .unwrap_err();
            assert!(err.detail().contains("MICRO_REGISTRY_ADDRESS"), "{err}");
        }
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn permission_errors_name_the_path_and_the_way_out() {
        use std::os::unix::fs::PermissionsExt;
        if current_uid() == Some(0) {
            return; // root reads everything
        }
        let tmp = TempDir::new();
        let root = tmp.path().join("registry");
        let r = LocalRegistry::at(&root);
        r.register(&svc("greeter", "v1", &["a"]), long())
            .await
            .unwrap();
        fs::set_permissions(&root, fs::Permissions::from_mode(0o000)).unwrap();
        let err = r.list_services().await.unwrap_err();
        fs::set_permissions(&root, fs::Permissions::from_mode(0o700)).unwrap();
        assert!(err.detail().contains(&*root.to_string_lossy()), "{err}");
        assert!(err.detail().contains("MICRO_REGISTRY_ADDRESS"), "{err}");
    }

    #[tokio::test]
    async fn a_vanished_directory_is_an_empty_registry() {
        let tmp = TempDir::new();
        let root = tmp.path().join("registry");
        let r = LocalRegistry::at(&root);
        assert!(r.list_services().await.unwrap().is_empty());
        r.register(&svc("greeter", "v1", &["a"]), long())
            .await
            .unwrap();
        fs::remove_dir_all(&root).unwrap();
        assert_eq!(r.get_service("greeter").await.unwrap_err().code(), 404);
        assert!(r.list_services().await.unwrap().is_empty());
        r.register(&svc("greeter", "v1", &["a"]), long())
            .await
            .unwrap();
        assert_eq!(r.get_service("greeter").await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn newest_file_describes_the_version() {
        let tmp = TempDir::new();
        let r = LocalRegistry::at(tmp.path());
        let mut old = svc("greeter", "v1", &["a"]);
        old.metadata.insert("build".into(), "1".into());
        r.register(&old, long()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let mut new = svc("greeter", "v1", &["b"]);
        new.metadata.insert("build".into(), "2".into());
        r.register(&new, long()).await.unwrap();
        let found = r.get_service("greeter").await.unwrap();
        assert_eq!(found[0].nodes.len(), 2);
        assert_eq!(found[0].metadata["build"], "2");
    }

    #[tokio::test]
    async fn stale_temporary_files_are_cleaned_up() {
        let tmp = TempDir::new();
        let r = LocalRegistry::at(tmp.path());
        r.register(&svc("greeter", "v1", &["a"]), long())
            .await
            .unwrap();
        let dir = tmp.path().join("greeter");
        let stale = dir.join(".a@v1.json.0123456789abcdef.tmp");
        let fresh = dir.join(".a@v1.json.fedcba9876543210.tmp");
        fs::write(&stale, b"{").unwrap();
        fs::write(&fresh, b"{").unwrap();
        let old = SystemTime::now() - Duration::from_secs(600);
        fs::File::options()
            .write(true)
            .open(&stale)
            .unwrap()
            .set_modified(old)
            .unwrap();
        assert_eq!(r.get_service("greeter").await.unwrap()[0].nodes.len(), 1);
        assert!(!stale.exists());
        assert!(fresh.exists(), "a write in progress is left alone");
    }

    #[tokio::test]
    async fn the_poller_stops_with_its_last_watcher() {
        let tmp = TempDir::new();
        let r = LocalRegistry::at(tmp.path()).poll_interval(Duration::from_millis(10));
        let w1 = r.watch(None).await.unwrap();
        let w2 = r.watch(Some("greeter")).await.unwrap();
        drop(w1);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(lock(&r.poller).is_some(), "one watcher is left");
        drop(w2);
        let deadline = Instant::now() + Duration::from_secs(2);
        while lock(&r.poller).is_some() {
            assert!(Instant::now() < deadline, "the poller did not stop");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // A new watcher starts a new poller.
        let _w = r.watch(None).await.unwrap();
        assert!(lock(&r.poller).is_some());
    }

    #[tokio::test]
    async fn reading_ten_nodes_is_cheap() {
        let tmp = TempDir::new();
        let r = LocalRegistry::at(tmp.path());
        let ids: Vec<String> = (0..10).map(|i| format!("greeter-{i}")).collect();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        r.register(&svc("greeter", "v1", &ids), long())
            .await
            .unwrap();
        let time = |r: &LocalRegistry| {
            let start = Instant::now();
            for _ in 0..100 {
                r.store.cache.lock().unwrap().clear();
                let found = r.store.scan(Some("greeter")).unwrap();
                assert_eq!(found.values().next().unwrap().nodes.len(), 10);
            }
            start.elapsed() / 100
        };
        let cold = time(&r);
        // Generous bound: tests run unoptimised on a busy machine. Release builds
        // read the 10 files in well under a millisecond.
        assert!(cold < Duration::from_millis(20), "{cold:?}");
        eprintln!("get_service with 10 nodes, files read: {cold:?}");
    }

    #[test]
    fn diff_reports_added_updated_and_removed() {
        let rec = |id: &str, addr: &str| {
            Arc::new(NodeFile {
                service: Service {
                    name: "greeter".into(),
                    version: "v1".into(),
                    nodes: vec![Node {
                        id: id.into(),
                        address: addr.into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                },
                expires: 0,
                pid: None,
                host: String::new(),
                pid_ns: None,
                start: None,
                written: 0,
            })
        };
        let snap = |recs: Vec<Arc<NodeFile>>| {
            let mut s = Snapshot::new();
            for r in recs {
                s.entry(("greeter".into(), "v1".into())).or_default().add(r);
            }
            s
        };
        let old = snap(vec![rec("a", "1"), rec("b", "1")]);
        let new = snap(vec![rec("a", "2"), rec("c", "1")]);
        let kinds: Vec<_> = diff(&old, &new)
            .into_iter()
            .map(|e| (e.kind, e.service.nodes[0].id.clone()))
            .collect();
        assert_eq!(
            kinds,
            [
                (EventKind::Added, "c".to_string()),
                (EventKind::Updated, "a".to_string()),
                (EventKind::Removed, "b".to_string())
            ]
        );
        assert!(diff(&new, &new).is_empty());
    }
}
