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
///
/// // Only nodes of version v2 in zone eu.
/// let opts = CallOptions::default().version("v2").node_metadata("zone", "eu");
/// assert_eq!(opts.get_version(), Some("v2"));
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallOptions {
    pub(crate) timeout: Option<Duration>,
    pub(crate) retries: Option<u32>,
    pub(crate) address: Option<String>,
    pub(crate) metadata: Metadata,
    pub(crate) idempotent: bool,
    pub(crate) version: Option<String>,
    pub(crate) node_metadata: Vec<(String, String)>,
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

    /// Calls only nodes of this service version (default: any version).
    ///
    /// ```
    /// use micro::client::CallOptions;
    ///
    /// let opts = CallOptions::default().version("v2");
    /// assert_eq!(opts.get_version(), Some("v2"));
    /// ```
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = Some(version.into());
        self
    }

    /// Calls only nodes whose registry metadata has `key` = `value`; each call of
    /// this adds one more condition.
    ///
    /// ```
    /// use micro::client::CallOptions;
    ///
    /// let opts = CallOptions::default().node_metadata("zone", "eu").node_metadata("gpu", "yes");
    /// assert_eq!(opts.get_node_metadata().len(), 2);
    /// ```
    pub fn node_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        let key = key.into();
        let value = value.into();
        match self.node_metadata.iter_mut().find(|(k, _)| *k == key) {
            Some(pair) => pair.1 = value,
            None => self.node_metadata.push((key, value)),
        }
        self
    }

    /// The version filter, if any.
    pub fn get_version(&self) -> Option<&str> {
        self.version.as_deref()
    }

    /// The node metadata filter.
    pub fn get_node_metadata(&self) -> &[(String, String)] {
        &self.node_metadata
    }

    /// The pinned address, if any.
    pub fn get_address(&self) -> Option<&str> {
        self.address.as_deref()
    }
}
