//! [`RoutesWatcher`]: the live routes of a file, swapped atomically when the file
//! changes to a valid one.
//!
//! The file is read every 250 ms and its content hash compared, as the config
//! file source does (`micro::config::FileSource`): no inotify, so editors that
//! write a new file and rename it over the old one, and Kubernetes ConfigMap volumes
//! that swap a symlink, are both seen. A bad file is logged with its line and
//! reason and the last good routes stay live; so does a deleted file (with a
//! warning) until it is back.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{Routes, RoutesError};

/// How often the file is read for changes.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(250);

/// What the watcher has done so far: seen by [`RoutesWatcher::watch`].
#[derive(Debug, Clone)]
pub struct ReloadState {
    /// The routes in effect.
    pub routes: Arc<Routes>,
    /// How many times a changed file replaced the routes.
    pub reloads: u64,
    /// Why the file's current content is not in effect (it is invalid, or it
    /// cannot be read); `None` once a good version is live.
    pub error: Option<RoutesError>,
}

/// The routes of a file, reloaded when it changes. Cheap to clone; the polling
/// stops when the last clone is dropped. Needs a Tokio runtime.
///
/// ```
/// use micro_cli::api::routes::RoutesWatcher;
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let dir = std::env::temp_dir().join(format!("micro-routes-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let path = dir.join("routes.yaml");
/// std::fs::write(&path, "routes:\n  - {path: /a, service: s, endpoint: S.A}\n").unwrap();
///
/// let watcher = RoutesWatcher::start(&path)?;
/// assert_eq!(watcher.current().len(), 1);
///
/// let mut state = watcher.watch();
/// std::fs::write(&path, "routes: []\n").unwrap();
/// state.wait_for(|s| s.reloads == 1).await.unwrap();
/// assert_eq!(watcher.current().len(), 0);
/// # std::fs::remove_dir_all(&dir).unwrap();
/// # Ok::<(), micro_cli::api::routes::RoutesError>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct RoutesWatcher {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    current: Arc<ArcSwap<Routes>>,
    state: watch::Receiver<ReloadState>,
    task: JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RoutesWatcher {
    /// Loads the file at `path` (an error if it cannot be read or is invalid) and
    /// polls it every 250 ms.
    pub fn start(path: impl AsRef<Path>) -> Result<RoutesWatcher, RoutesError> {
        Self::start_with_interval(path, DEFAULT_POLL_INTERVAL)
    }

    /// Like [`start`](Self::start), polling every `interval` (at least 1 ms).
    pub fn start_with_interval(
        path: impl AsRef<Path>,
        interval: Duration,
    ) -> Result<RoutesWatcher, RoutesError> {
        let path = path.as_ref().to_path_buf();
        let name = path.display().to_string();
        let bytes = std::fs::read(&path)
            .map_err(|e| RoutesError::whole_file(&name, format!("cannot read the file: {e}")))?;
        let hash = hash(&bytes);
        let routes = Arc::new(parse_bytes(bytes, &name)?);
        let current = Arc::new(ArcSwap::new(routes.clone()));
        let (tx, rx) = watch::channel(ReloadState {
            routes,
            reloads: 0,
            error: None,
        });
        let poller = Poller {
            path: path.clone(),
            name,
            interval: interval.max(Duration::from_millis(1)),
            current: current.clone(),
            state: tx,
            last: Some(hash),
            unreadable: false,
        };
        let task = tokio::spawn(poller.run());
        Ok(RoutesWatcher {
            inner: Arc::new(Inner {
                path,
                current,
                state: rx,
                task,
            }),
        })
    }

    /// The routes in effect now: one atomic load, for every request.
    pub fn current(&self) -> Arc<Routes> {
        self.inner.current.load_full()
    }

    /// Follows reloads and rejected versions (`changed().await`,
    /// `wait_for(|s| s.reloads > n).await`).
    pub fn watch(&self) -> watch::Receiver<ReloadState> {
        self.inner.state.clone()
    }

    /// The file watched.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }
}

fn hash(bytes: &[u8]) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut hasher);
    hasher.finish()
}

fn parse_bytes(bytes: Vec<u8>, name: &str) -> Result<Routes, RoutesError> {
    let text = String::from_utf8(bytes)
        .map_err(|_| RoutesError::whole_file(name, "the file is not UTF-8 text"))?;
    Routes::parse(&text, name)
}

struct Poller {
    path: PathBuf,
    name: String,
    interval: Duration,
    current: Arc<ArcSwap<Routes>>,
    state: watch::Sender<ReloadState>,
    /// The hash of the content last read (good or bad).
    last: Option<u64>,
    /// Whether the file could not be read last time (warned once).
    unreadable: bool,
}

impl Poller {
    async fn run(mut self) {
        loop {
            tokio::time::sleep(self.interval).await;
            let path = self.path.clone();
            let Ok(read) = tokio::task::spawn_blocking(move || std::fs::read(path)).await else {
                continue;
            };
            match read {
                Ok(bytes) => self.check(bytes),
                Err(e) => self.unreadable(e),
            }
        }
    }

    fn check(&mut self, bytes: Vec<u8>) {
        self.unreadable = false;
        let hash = hash(&bytes);
        if self.last == Some(hash) {
            return;
        }
        self.last = Some(hash);
        match parse_bytes(bytes, &self.name) {
            Ok(routes) => {
                let routes = Arc::new(routes);
                self.current.store(routes.clone());
                tracing::info!(file = %self.name, "routes reloaded ({} routes)", routes.len());
                self.state.send_modify(|s| {
                    s.routes = routes;
                    s.reloads += 1;
                    s.error = None;
                });
            }
            Err(e) => {
                tracing::error!(
                    file = %self.name,
                    line = e.line(),
                    "{e}; keeping the last good routes"
                );
                self.state.send_modify(|s| s.error = Some(e));
            }
        }
    }

    fn unreadable(&mut self, e: std::io::Error) {
        // When it is back, read it again even if unchanged.
        self.last = None;
        if self.unreadable {
            return;
        }
        self.unreadable = true;
        let error = RoutesError::whole_file(&self.name, format!("cannot read the file: {e}"));
        tracing::warn!(file = %self.name, "{error}; keeping the last good routes");
        self.state.send_modify(|s| s.error = Some(error));
    }
}
