//! Filters: which nodes of a service a call may go to.
//!
//! Version and endpoint filters judge a service version as a whole, once per
//! selection ([`version_mask`]); the node metadata filter judges each node
//! ([`metadata_matches`]). When the filters leave no node, the error names the
//! filter that excluded everything.

use crate::registry::Node;
use crate::Error;

use super::cache::Snapshot;
use super::SelectOptions;

const ID: &str = "micro.selector";

/// Endpoints every micro service serves without listing them in the registry.
const BUILTIN_PREFIX: &str = "Debug.";

/// Which service versions of a snapshot pass the version and endpoint filters.
#[derive(Debug)]
pub(super) enum VersionMask {
    /// Every version.
    All,
    /// Versions by bit (snapshots of at most 64 versions).
    Bits(u64),
    /// Versions by index (larger snapshots).
    List(Vec<bool>),
}

impl VersionMask {
    pub(super) fn is_all(&self) -> bool {
        matches!(self, VersionMask::All)
    }

    pub(super) fn allows(&self, version: usize) -> bool {
        match self {
            VersionMask::All => true,
            VersionMask::Bits(bits) => version < 64 && bits & (1 << version) != 0,
            VersionMask::List(list) => list.get(version).copied().unwrap_or(false),
        }
    }
}

/// The endpoint filter that applies: none for the built-in `Debug.*` endpoints.
fn endpoint_filter<'a>(opts: &SelectOptions<'a>) -> Option<&'a str> {
    opts.endpoint.filter(|e| !e.starts_with(BUILTIN_PREFIX))
}

/// Whether a version listing `endpoints` (sorted) serves `endpoint`; a version that
/// lists none passes.
fn serves(endpoints: &[String], endpoint: &str) -> bool {
    endpoints.is_empty()
        || endpoints
            .binary_search_by(|e| e.as_str().cmp(endpoint))
            .is_ok()
}

/// The versions of `snap` that pass the version and endpoint filters; a 404 error
/// saying which filter excluded them all.
pub(super) fn version_mask(
    snap: &Snapshot,
    service: &str,
    opts: &SelectOptions<'_>,
) -> Result<VersionMask, Error> {
    let endpoint = endpoint_filter(opts);
    if opts.version.is_none() && endpoint.is_none() {
        return Ok(VersionMask::All);
    }
    let passes = |i: usize| {
        let v = &snap.versions[i];
        opts.version.is_none_or(|want| v.version == want)
            && endpoint.is_none_or(|e| serves(&v.endpoints, e))
    };
    let n = snap.versions.len();
    let mask = if n <= 64 {
        let mut bits = 0u64;
        for i in 0..n {
            if passes(i) {
                bits |= 1 << i;
            }
        }
        if bits == 0 {
            return Err(versions_excluded(snap, service, opts));
        }
        if bits.count_ones() as usize == n {
            VersionMask::All
        } else {
            VersionMask::Bits(bits)
        }
    } else {
        let list: Vec<bool> = (0..n).map(passes).collect();
        if !list.contains(&true) {
            return Err(versions_excluded(snap, service, opts));
        }
        VersionMask::List(list)
    };
    Ok(mask)
}

/// Whether `node`'s metadata holds every pair.
pub(super) fn metadata_matches(node: &Node, pairs: &[(String, String)]) -> bool {
    pairs
        .iter()
        .all(|(k, v)| node.metadata.get(k).is_some_and(|have| have == v))
}

/// Up to ten distinct items, in first-seen order, comma-separated.
fn list<'a>(items: impl Iterator<Item = &'a str>) -> String {
    const MAX: usize = 10;
    let mut items: Vec<&str> = items.collect();
    let mut seen = std::collections::HashSet::new();
    items.retain(|item| seen.insert(*item));
    let mut out = items[..items.len().min(MAX)].join(", ");
    if items.len() > MAX {
        out.push_str(&format!(", … ({} more)", items.len() - MAX));
    }
    out
}

/// The error when no version passes the version and endpoint filters.
fn versions_excluded(snap: &Snapshot, service: &str, opts: &SelectOptions<'_>) -> Error {
    let running = list(snap.versions.iter().map(|v| v.version.as_str()));
    if let Some(want) = opts.version {
        if !snap.versions.iter().any(|v| v.version == want) {
            return Error::not_found(
                ID,
                format!(
                    "version filter: service {service:?} has no version {want:?} \
                     (running versions: {running})"
                ),
            );
        }
    }
    let endpoint = endpoint_filter(opts).unwrap_or_default();
    let scope = match opts.version {
        Some(v) => format!("version {v:?} of service {service:?}"),
        None => format!("no version of service {service:?} (running versions: {running})"),
    };
    let listed = list(
        snap.versions
            .iter()
            .filter(|v| opts.version.is_none_or(|want| v.version == want))
            .flat_map(|v| v.endpoints.iter().map(String::as_str)),
    );
    match opts.version {
        Some(_) => Error::not_found(
            ID,
            format!(
                "endpoint filter: {scope} does not serve endpoint {endpoint:?} \
                 (it lists: {listed})"
            ),
        ),
        None => Error::not_found(
            ID,
            format!("endpoint filter: {scope} serves endpoint {endpoint:?} (listed: {listed})"),
        ),
    }
}

/// The error when the node metadata filter leaves no node.
pub(super) fn metadata_excluded(service: &str, opts: &SelectOptions<'_>) -> Error {
    let wanted = opts
        .metadata
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut scope = format!("service {service:?}");
    if let Some(v) = opts.version {
        scope.push_str(&format!(" version {v:?}"));
    }
    if let Some(e) = endpoint_filter(opts) {
        scope.push_str(&format!(" serving {e:?}"));
    }
    Error::not_found(
        ID,
        format!("node metadata filter: no node of {scope} has node metadata {wanted}"),
    )
}
