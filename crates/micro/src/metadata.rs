//! Request metadata: the string key/value pairs that travel with a call as headers.
//!
//! Keys are case-insensitive, as HTTP headers are; they are stored and listed in
//! lower case, which is also how HTTP/2 and gRPC carry them.

use std::collections::BTreeMap;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue};

/// Metadata of a call: `Micro-From-Service`, trace context, user headers, …
///
/// ```
/// use micro::Metadata;
///
/// let mut md = Metadata::new();
/// md.insert("X-User", "alice");
/// assert_eq!(md.get("x-user"), Some("alice"));
/// assert_eq!(md.get("X-USER"), Some("alice"));
/// ```
#[derive(Debug, Clone, Default)]
pub struct Metadata {
    /// Shared until changed: a call copies its metadata into every attempt, and a
    /// gateway into every call, so a copy is a reference count, not a map. `None`
    /// while empty: most calls carry none, and an empty map would still be an
    /// allocation per call.
    entries: Option<Arc<Entries>>,
}

type Entries = BTreeMap<String, String>;

/// What empty metadata reads.
static NO_ENTRIES: Entries = BTreeMap::new();

impl PartialEq for Metadata {
    fn eq(&self, other: &Self) -> bool {
        self.entries() == other.entries()
    }
}

impl Eq for Metadata {}

/// Whether `name` (lower case) is a header of the transport rather than metadata.
pub(crate) fn is_transport_header(name: &str) -> bool {
    // A match, not a list search: it runs for every header of every call.
    matches!(
        name,
        "accept"
            | "accept-encoding"
            | "connection"
            | "content-encoding"
            | "content-length"
            | "content-type"
            | "grpc-accept-encoding"
            | "grpc-encoding"
            | "grpc-timeout"
            | "host"
            | "keep-alive"
            | "micro-endpoint"
            | "te"
            | "timeout"
            | "transfer-encoding"
            | "upgrade"
    ) || name.starts_with(':')
}

impl Metadata {
    /// Empty metadata.
    pub fn new() -> Self {
        Self::default()
    }

    fn entries(&self) -> &Entries {
        self.entries.as_deref().unwrap_or(&NO_ENTRIES)
    }

    /// The entries to change: this metadata's own copy from now on.
    fn entries_mut(&mut self) -> &mut Entries {
        Arc::make_mut(self.entries.get_or_insert_with(Arc::default))
    }

    /// Sets `key` to `value`, replacing an earlier value.
    pub fn insert(&mut self, key: impl AsRef<str>, value: impl Into<String>) -> &mut Self {
        self.entries_mut()
            .insert(key.as_ref().to_ascii_lowercase(), value.into());
        self
    }

    /// Sets `key` only if it has no value yet.
    pub fn insert_if_absent(&mut self, key: impl AsRef<str>, value: impl Into<String>) {
        self.entries_mut()
            .entry(key.as_ref().to_ascii_lowercase())
            .or_insert_with(|| value.into());
    }

    /// The value of `key`, whatever its case.
    pub fn get(&self, key: &str) -> Option<&str> {
        if key.bytes().any(|b| b.is_ascii_uppercase()) {
            self.entries()
                .get(&key.to_ascii_lowercase())
                .map(String::as_str)
        } else {
            self.entries().get(key).map(String::as_str)
        }
    }

    /// Removes `key` and returns its value.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        let key = key.to_ascii_lowercase();
        if !self.entries().contains_key(&key) {
            return None; // no copy of a shared map for nothing
        }
        self.entries_mut().remove(&key)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries().len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries().is_empty()
    }

    /// All entries, keys in lower case, sorted.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries().iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Adds every entry of `other`, replacing values of the same key.
    pub fn merge(&mut self, other: &Metadata) {
        if self.is_empty() {
            self.entries = other.entries.clone();
            return;
        }
        if other.is_empty() {
            return;
        }
        let entries = self.entries_mut();
        for (k, v) in other.iter() {
            entries.insert(k.to_string(), v.to_string());
        }
    }

    /// The caller's metadata carried by request headers: every header except the
    /// transport's own (content type, timeouts, HTTP/2 pseudo-headers, …). Values that
    /// are not valid UTF-8 are skipped; repeated headers are joined with `,`.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let mut entries = Entries::new();
        for (name, value) in headers {
            let key = name.as_str();
            if is_transport_header(key) {
                continue;
            }
            let Ok(value) = value.to_str() else { continue };
            match entries.get_mut(key) {
                Some(existing) => {
                    existing.push(',');
                    existing.push_str(value);
                }
                None => {
                    entries.insert(key.to_string(), value.to_string());
                }
            }
        }
        Metadata {
            entries: (!entries.is_empty()).then(|| Arc::new(entries)),
        }
    }

    /// Writes the entries into `headers`, skipping keys or values that cannot be
    /// HTTP headers and keys reserved for the transport.
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        for (k, v) in self.iter() {
            if is_transport_header(k) {
                continue;
            }
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(v),
            ) {
                headers.insert(name, value);
            }
        }
    }
}

impl<K: AsRef<str>, V: Into<String>> FromIterator<(K, V)> for Metadata {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut md = Metadata::new();
        for (k, v) in iter {
            md.insert(k, v);
        }
        md
    }
}

/// Parses `k=v,k2=v2` (the form of `MICRO_SERVER_METADATA` and `--metadata`).
///
/// ```
/// let md = micro::metadata::parse_pairs("region=eu,tier=gold").unwrap();
/// assert_eq!(md.get("region"), Some("eu"));
/// assert!(micro::metadata::parse_pairs("novalue").is_err());
/// ```
pub fn parse_pairs(text: &str) -> Result<Metadata, String> {
    let mut md = Metadata::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| format!("metadata entry {pair:?} is not of the form key=value"))?;
        let k = k.trim();
        if k.is_empty() {
            return Err(format!("metadata entry {pair:?} has an empty key"));
        }
        md.insert(k, v.trim());
    }
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_without_transport_headers() {
        let mut h = HeaderMap::new();
        h.insert("content-type", HeaderValue::from_static("application/grpc"));
        h.insert("grpc-timeout", HeaderValue::from_static("1S"));
        h.insert("x-user", HeaderValue::from_static("alice"));
        h.append("x-multi", HeaderValue::from_static("a"));
        h.append("x-multi", HeaderValue::from_static("b"));
        h.insert("micro-from-service", HeaderValue::from_static("caller"));
        let md = Metadata::from_headers(&h);
        assert_eq!(md.len(), 3);
        assert_eq!(md.get("X-User"), Some("alice"));
        assert_eq!(md.get("x-multi"), Some("a,b"));
        assert_eq!(md.get("Micro-From-Service"), Some("caller"));

        let mut out = HeaderMap::new();
        let mut md = md;
        md.insert("content-type", "text/evil");
        md.insert("bad key", "x");
        md.insert("x-bad-value", "a\nb");
        md.write_headers(&mut out);
        assert!(out.get("content-type").is_none());
        assert_eq!(out.get("x-user").unwrap(), "alice");
        assert!(out.get("x-bad-value").is_none());
    }
}
