//! The one error type of config: what went wrong, where (source, path), and what was
//! expected — never the value itself when a secret source supplied it.

use std::fmt;

/// What kind of problem a [`ConfigError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// No source sets the path. `get(..).unwrap_or(default)` treats it as "use the
    /// default"; see [`ConfigError::is_not_found`].
    NotFound,
    /// The value at the path is not of the type asked for.
    WrongType,
    /// A source's content cannot be parsed (bad JSON, YAML or TOML, ...).
    Parse,
    /// A source cannot be reached or read (missing file, server down, ...).
    Unavailable,
    /// A source refused access (bad token).
    Denied,
    /// The request itself is wrong (an empty path, a store that cannot write, ...).
    Invalid,
}

/// A config error. Its text names the source(s), the path and what was expected,
/// and says what to do next:
///
/// ```
/// use micro::config::{Config, MemorySource};
///
/// # tokio_test_block(async {
/// let config = Config::builder()
///     .source(MemorySource::new("defaults").with(serde_json::json!({"db": {"timeout": "soon"}})))
///     .load()
///     .await
///     .unwrap();
/// let err = config.get::<std::time::Duration>("db.timeout").unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     r#"config "db.timeout" (from memory:defaults) = "soon": expected a duration like 30, 30s, 500ms or 1m"#
/// );
/// assert!(config.get::<u32>("db.port").unwrap_err().is_not_found());
/// # });
/// # fn tokio_test_block(f: impl std::future::Future<Output = ()>) {
/// #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
/// # }
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct ConfigError {
    kind: ErrorKind,
    message: String,
}

impl ConfigError {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ConfigError {
            kind,
            message: message.into(),
        }
    }

    /// The kind of problem.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether the path is simply not set (so a default applies).
    pub fn is_not_found(&self) -> bool {
        self.kind == ErrorKind::NotFound
    }

    /// A problem of source `source`: for a [`Source`](super::Source) implementation
    /// to report that its content cannot be parsed, it cannot be reached, or access
    /// was refused. `message` must not contain secret values.
    pub fn source_error(kind: ErrorKind, source: &str, message: impl fmt::Display) -> Self {
        ConfigError::new(kind, format!("config source {source}: {message}"))
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigError")
            .field("kind", &self.kind)
            .field("message", &self.message)
            .finish()
    }
}

impl std::error::Error for ConfigError {}

impl From<ConfigError> for crate::Error {
    fn from(e: ConfigError) -> Self {
        let id = "micro.config";
        match e.kind {
            ErrorKind::NotFound => crate::Error::not_found(id, e.message),
            ErrorKind::Denied => crate::Error::forbidden(id, e.message),
            ErrorKind::Unavailable => crate::Error::service_unavailable(id, e.message),
            ErrorKind::Parse | ErrorKind::WrongType | ErrorKind::Invalid => {
                crate::Error::bad_request(id, e.message)
            }
        }
    }
}
