//! [`FileSource`]: a JSON, YAML or TOML file, polled for changes.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::stream::{self, BoxStream};
use futures_util::StreamExt;
use serde_json::Value;

use super::error::{ConfigError, ErrorKind};
use super::Source;

/// How often a watched file is read again.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(250);

/// A JSON, YAML or TOML file (format from the extension: `.json`, `.yaml`/`.yml`,
/// `.toml`), named `file:<path>`.
///
/// Watched by reading it every 250 ms and comparing a hash of its content, not by
/// inotify: that survives editors that write a new file and rename it over the old
/// one, and Kubernetes ConfigMap volumes that swap a symlink. A change is seen
/// within a poll interval. While the file is missing or does not parse, the last
/// good content stays in effect (and the reason is logged once).
///
/// ```
/// use micro::config::{Config, FileSource};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let dir = std::env::temp_dir().join(format!("micro-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let path = dir.join("app.yaml");
/// std::fs::write(&path, "greeter:\n  greeting: Hi\n").unwrap();
/// let config = Config::builder().source(FileSource::new(&path)).load().await?;
/// assert_eq!(config.get::<String>("greeter.greeting")?, "Hi");
/// # std::fs::remove_dir_all(&dir).unwrap();
/// # Ok::<(), micro::config::ConfigError>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct FileSource {
    path: PathBuf,
    interval: Duration,
}

impl FileSource {
    /// The file at `path`, polled every 250 ms.
    pub fn new(path: impl AsRef<Path>) -> Self {
        FileSource {
            path: path.as_ref().to_path_buf(),
            interval: DEFAULT_POLL_INTERVAL,
        }
    }

    /// How often to read the file for changes (default 250 ms).
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.interval = interval.max(Duration::from_millis(1));
        self
    }
}

/// Reads and parses the file; the hash of its bytes comes along.
async fn load(path: &Path, name: &str) -> Result<(u64, Result<Value, ConfigError>), ConfigError> {
    let bytes = tokio::fs::read(path).await.map_err(|e| {
        ConfigError::source_error(
            ErrorKind::Unavailable,
            name,
            format!(
                "cannot read the file: {e}; create it, or name another with \
                 --config_file / MICRO_CONFIG_FILE"
            ),
        )
    })?;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut hasher);
    let hash = hasher.finish();
    let parsed = match String::from_utf8(bytes) {
        Err(_) => Err(ConfigError::source_error(
            ErrorKind::Parse,
            name,
            "not UTF-8 text",
        )),
        Ok(text) if text.trim().is_empty() => Ok(Value::Object(serde_json::Map::new())),
        Ok(text) => crate::options::file::document(path, &text)
            .map_err(|e| ConfigError::source_error(ErrorKind::Parse, name, e)),
    };
    Ok((hash, parsed))
}

impl Source for FileSource {
    fn name(&self) -> String {
        format!("file:{}", self.path.display())
    }

    fn read(&self) -> BoxFuture<'_, Result<Value, ConfigError>> {
        Box::pin(async move {
            let name = self.name();
            load(&self.path, &name).await?.1
        })
    }

    fn watch(&self) -> Option<BoxStream<'static, Result<Value, ConfigError>>> {
        struct State {
            path: PathBuf,
            name: String,
            interval: Duration,
            /// The hash of the content last sent (good or bad).
            last: Option<u64>,
            /// The last read error sent, not to repeat it every poll.
            last_error: Option<String>,
        }
        let state = State {
            path: self.path.clone(),
            name: self.name(),
            interval: self.interval,
            last: None,
            last_error: None,
        };
        let updates = stream::unfold(state, |mut state| async move {
            loop {
                tokio::time::sleep(state.interval).await;
                match load(&state.path, &state.name).await {
                    Ok((hash, parsed)) => {
                        state.last_error = None;
                        if state.last == Some(hash) {
                            continue;
                        }
                        state.last = Some(hash);
                        return Some((parsed, state));
                    }
                    Err(e) => {
                        // Gone (maybe being replaced): when it is back, send it again.
                        state.last = None;
                        let text = e.to_string();
                        if state.last_error.as_deref() == Some(&text) {
                            continue;
                        }
                        state.last_error = Some(text);
                        return Some((Err(e), state));
                    }
                }
            }
        });
        Some(updates.boxed())
    }
}
