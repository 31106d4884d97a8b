//! The routes-file parser on arbitrary bytes, read as YAML and as TOML: it must
//! never panic, hang or overflow the stack, and every error it reports must
//! carry a line inside the input. A file that parses is also matched against a
//! request path made from the input, to fuzz the matcher.

#![no_main]

use http::{HeaderMap, Method};
use libfuzzer_sys::fuzz_target;
use micro_cli::api::routes::{RouteMatch, RouteRequest, Routes};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // YAML also breaks lines at a lone `\r`: count every break either format knows.
    let lines = 1 + text
        .chars()
        .filter(|c| matches!(c, '\n' | '\r' | '\u{85}' | '\u{2028}' | '\u{2029}'))
        .count();
    let path: String = std::iter::once('/')
        .chain(text.chars().filter(|c| c.is_ascii_graphic()).take(64))
        .collect();
    let headers = HeaderMap::new();
    let pick = data.len() as u32;
    for name in ["fuzz.yaml", "fuzz.toml"] {
        match Routes::parse(&text, name) {
            Ok(routes) => {
                for method in [Method::GET, Method::POST] {
                    let req = RouteRequest {
                        method: &method,
                        host: Some("api.example.com"),
                        path: &path,
                        headers: &headers,
                    };
                    if let RouteMatch::Found(m) = routes.find(&req, pick) {
                        assert!(routes.ids().any(|id| *id == m.route));
                    }
                }
                for route in routes.rpc_routes() {
                    assert!(route.pattern.starts_with('/'));
                }
            }
            Err(e) => {
                let line = e.line().unwrap_or_else(|| panic!("no line in {e}"));
                assert!(
                    (1..=lines).contains(&line),
                    "line {line} outside the input's {lines} lines: {e}"
                );
                assert!(
                    e.to_string().starts_with(&format!("{name}:{line}: ")),
                    "{e}"
                );
            }
        }
    }
});
