//! Request metadata: the string key/value pairs that travel with a call as headers.
//!
//! Keys are case-insensitive, as HTTP headers are; they are stored and listed in
//! lower case, which is also how HTTP/2 and gRPC carry them.

use std::borrow::Cow;
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

/// Entries sorted by key. A call carries a handful (a request id, trace
/// context): a sorted list finds them as fast as a tree, in one allocation
/// instead of a tree node of over 500 bytes.
type Entries = Vec<(Key, String)>;

/// A key in lower case: the names that travel with most calls are static
/// strings, which cost no allocation per call.
type Key = Cow<'static, str>;

/// `key` (lower case) as a [`Key`]: static when it is a name that most calls
/// carry.
fn key_of(key: &str) -> Key {
    match key {
        "x-request-id" => Cow::Borrowed("x-request-id"),
        "traceparent" => Cow::Borrowed("traceparent"),
        "tracestate" => Cow::Borrowed("tracestate"),
        "micro-from-service" => Cow::Borrowed("micro-from-service"),
        "micro-service" => Cow::Borrowed("micro-service"),
        "authorization" => Cow::Borrowed("authorization"),
        "user-agent" => Cow::Borrowed("user-agent"),
        _ => Cow::Owned(key.to_string()),
    }
}

/// What empty metadata reads.
static NO_ENTRIES: Entries = Vec::new();

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

    /// Where `key` (lower case) is, or would go.
    fn position(entries: &Entries, key: &str) -> Result<usize, usize> {
        entries.binary_search_by(|(k, _)| k.as_ref().cmp(key))
    }

    /// Sets `key` to `value`, replacing an earlier value.
    pub fn insert(&mut self, key: impl AsRef<str>, value: impl Into<String>) -> &mut Self {
        let key = key.as_ref().to_ascii_lowercase();
        let entries = self.entries_mut();
        match Self::position(entries, &key) {
            Ok(at) => entries[at].1 = value.into(),
            Err(at) => entries.insert(at, (Cow::Owned(key), value.into())),
        }
        self
    }

    /// Sets `key` only if it has no value yet.
    pub fn insert_if_absent(&mut self, key: impl AsRef<str>, value: impl Into<String>) {
        let key = key.as_ref().to_ascii_lowercase();
        if let Err(at) = Self::position(self.entries(), &key) {
            self.entries_mut()
                .insert(at, (Cow::Owned(key), value.into()));
        }
    }

    /// The value of `key`, whatever its case.
    pub fn get(&self, key: &str) -> Option<&str> {
        let entries = self.entries();
        let found = if key.bytes().any(|b| b.is_ascii_uppercase()) {
            Self::position(entries, &key.to_ascii_lowercase())
        } else {
            Self::position(entries, key)
        };
        found.ok().map(|at| entries[at].1.as_str())
    }

    /// Removes `key` and returns its value.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        let key = key.to_ascii_lowercase();
        // Found first: no copy of a shared map for nothing.
        let at = Self::position(self.entries(), &key).ok()?;
        Some(self.entries_mut().remove(at).1)
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
        self.entries().iter().map(|(k, v)| (k.as_ref(), v.as_str()))
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
        for (k, v) in other.iter() {
            self.insert(k, v);
        }
    }

    /// The caller's metadata carried by request headers: every header except the
    /// transport's own (content type, timeouts, HTTP/2 pseudo-headers, …). Values that
    /// are not valid UTF-8 are skipped; repeated headers are joined with `,`.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let mut entries = Entries::new();
        // A header map lists a name's values one after another: they are joined
        // as they come, and the names sorted once at the end (not kept sorted
        // entry by entry, which a request with many headers would make slow).
        let mut last: Option<&HeaderName> = None;
        for (name, value) in headers {
            // Header names are lower case already.
            let key = name.as_str();
            if is_transport_header(key) {
                continue;
            }
            let Ok(value) = value.to_str() else { continue };
            match entries.last_mut() {
                Some((_, existing)) if last == Some(name) => {
                    existing.push(',');
                    existing.push_str(value);
                }
                _ => entries.push((key_of(key), value.to_string())),
            }
            last = Some(name);
        }
        entries.sort_unstable_by(|(a, _), (b, _)| a.cmp(b));
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
    fn entries_stay_sorted_and_unique_by_lower_case_key() {
        let mut md = Metadata::new();
        md.insert("X-Zeta", "1")
            .insert("alpha", "2")
            .insert("Mid", "3");
        md.insert("ALPHA", "4");
        md.insert_if_absent("alpha", "5");
        md.insert_if_absent("beta", "6");
        let all: Vec<_> = md.iter().collect();
        assert_eq!(
            all,
            [("alpha", "4"), ("beta", "6"), ("mid", "3"), ("x-zeta", "1")]
        );
        assert_eq!(md.get("MID"), Some("3"));
        assert_eq!(md.get("missing"), None);

        let shared = md.clone();
        assert_eq!(md.remove("Beta").as_deref(), Some("6"));
        assert_eq!(md.remove("beta"), None);
        assert_eq!(md.len(), 3);
        // A copy is unaffected by changes to the original.
        assert_eq!(shared.len(), 4);
        assert_eq!(shared.get("beta"), Some("6"));

        let mut merged: Metadata = [("mid", "old"), ("a", "x")].into_iter().collect();
        merged.merge(&md);
        let all: Vec<_> = merged.iter().collect();
        assert_eq!(
            all,
            [("a", "x"), ("alpha", "4"), ("mid", "3"), ("x-zeta", "1")]
        );
    }

    #[test]
    fn many_headers_come_out_sorted_with_repeats_joined() {
        let mut h = HeaderMap::new();
        for i in (0..300).rev() {
            let name = HeaderName::try_from(format!("x-h{i:03}")).unwrap();
            h.append(name.clone(), HeaderValue::from_static("a"));
            h.append(name, HeaderValue::from_static("b"));
        }
        h.append("x-bytes", HeaderValue::from_bytes(b"\xff").unwrap());
        let md = Metadata::from_headers(&h);
        assert_eq!(md.len(), 300, "the value that is not UTF-8 is skipped");
        let keys: Vec<&str> = md.iter().map(|(k, _)| k).collect();
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        assert_eq!(keys, sorted);
        assert!(md.iter().all(|(_, v)| v == "a,b"));
        assert_eq!(md.get("X-H007"), Some("a,b"));
    }

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
