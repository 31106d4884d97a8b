//! Per-call options.

use std::time::Duration;

use crate::Metadata;

/// Options of one call; every field has a sensible default, so
/// `CallOptions::default()` is a normal call.
///
/// ```
/// use std::time::Duration;
/// use micro::client::CallOptions;
///
/// let opts = CallOptions::default()
///     .timeout(Duration::from_secs(1))
///     .metadata("x-user", "alice")
///     .address("127.0.0.1:9090")
///     .idempotent(true);
/// assert_eq!(opts.get_address(), Some("127.0.0.1:9090"));
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallOptions {
    pub(crate) timeout: Option<Duration>,
    pub(crate) retries: Option<u32>,
    pub(crate) address: Option<String>,
    pub(crate) metadata: Metadata,
    pub(crate) idempotent: bool,
}

impl CallOptions {
    /// The time the whole call may take, retries included (default: the client's
    /// request timeout, 5 s). A tighter deadline of an incoming request wins.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// How many times to retry a failed attempt (default: the client's, 1).
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = Some(retries);
        self
    }

    /// Calls this `host:port` instead of looking the service up.
    pub fn address(mut self, address: impl Into<String>) -> Self {
        self.address = Some(address.into());
        self
    }

    /// Adds a metadata entry sent as a header.
    pub fn metadata(mut self, key: impl AsRef<str>, value: impl Into<String>) -> Self {
        self.metadata.insert(key, value);
        self
    }

    /// Adds all entries of `metadata`.
    pub fn with_metadata(mut self, metadata: &Metadata) -> Self {
        self.metadata.merge(metadata);
        self
    }

    /// Marks the call safe to repeat, so a 500 may be retried too.
    pub fn idempotent(mut self, idempotent: bool) -> Self {
        self.idempotent = idempotent;
        self
    }

    /// The pinned address, if any.
    pub fn get_address(&self) -> Option<&str> {
        self.address.as_deref()
    }
}
