//! The zero-config path resolver on arbitrary paths: it must never panic, and a
//! path it reads must map back (by `path_for`) to a path that reads the same, so
//! that the OpenAPI document and the router always agree.

#![no_main]

use libfuzzer_sys::fuzz_target;
use micro_cli::api::resolve::{parse_path, path_for};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // The first byte chooses a namespace, the rest is the path.
    let (namespace, path) = match text.split_once('\n') {
        Some((ns, path)) if !ns.is_empty() && ns.len() < 32 => (Some(ns), path),
        _ => (None, text.as_ref()),
    };
    let Some(wanted) = parse_path(path, namespace) else {
        return;
    };
    let back = path_for(&wanted.service, &wanted.endpoint, namespace)
        .unwrap_or_else(|| panic!("{path:?} read as {wanted:?}, which has no path"));
    assert_eq!(parse_path(&back, namespace), Some(wanted), "{path:?} -> {back:?}");
});
