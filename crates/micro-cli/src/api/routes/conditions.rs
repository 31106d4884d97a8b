//! The conditions a route may put on a request besides its path: the method, the
//! host (`api.example.com`, `*.example.com`) and header values (`x-canary: "1"`).

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::Method;

/// The methods a route may name (case-insensitive in the file).
pub(crate) const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE",
];

/// A standard HTTP method, from its name in any case.
pub(crate) fn parse_method(text: &str) -> Result<Method, String> {
    let upper = text.trim().to_ascii_uppercase();
    if !METHODS.contains(&upper.as_str()) {
        return Err(format!(
            "{text:?} is not an HTTP method (use {})",
            METHODS.join(", ")
        ));
    }
    Method::from_bytes(upper.as_bytes()).map_err(|e| format!("{text:?}: {e}"))
}

/// Whether `allowed` (empty: any) lets `method` through; GET lets HEAD through.
pub(crate) fn method_allowed(allowed: &[Method], method: &Method) -> bool {
    allowed.is_empty()
        || allowed.contains(method)
        || (*method == Method::HEAD && allowed.contains(&Method::GET))
}

/// A route's `host`: one name, or every subdomain of one (`*.example.com`, which
/// does not match `example.com` itself). Compared without case and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HostMatch {
    Exact(String),
    /// `.example.com`: the name must end with it, after at least one label.
    Subdomains(String),
}

impl HostMatch {
    pub(crate) fn parse(text: &str) -> Result<HostMatch, String> {
        let host = text.trim().trim_end_matches('.').to_ascii_lowercase();
        let (name, wildcard) = match host.strip_prefix("*.") {
            Some(rest) => (rest, true),
            None => (host.as_str(), false),
        };
        let well_formed = !name.is_empty()
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        if name.contains(':') {
            return Err(format!(
                "host {text:?} has a port; a route matches the host name only"
            ));
        }
        if !well_formed {
            return Err(format!(
                "host {text:?} must be a host name (api.example.com) or *.example.com"
            ));
        }
        Ok(if wildcard {
            HostMatch::Subdomains(format!(".{name}"))
        } else {
            HostMatch::Exact(name.to_string())
        })
    }

    /// Whether the request's `Host` (or `:authority`) matches.
    pub(crate) fn matches(&self, host: Option<&str>) -> bool {
        let Some(host) = host else {
            return false;
        };
        let name = strip_port(host.trim()).trim_end_matches('.');
        match self {
            HostMatch::Exact(want) => name.eq_ignore_ascii_case(want),
            HostMatch::Subdomains(suffix) => {
                name.len() > suffix.len()
                    && name.is_char_boundary(name.len() - suffix.len())
                    && name[name.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
            }
        }
    }
}

/// `example.com:8080` -> `example.com`; `[::1]:8080` -> `[::1]`.
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |i| &host[..=i]);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// A header the request must carry with exactly this value.
pub(crate) fn parse_header(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), String> {
    let name = HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|_| format!("{name:?} is not a valid header name"))?;
    let value = HeaderValue::from_str(value)
        .map_err(|_| format!("the value of header {name} is not a valid header value"))?;
    Ok((name, value))
}

/// Whether `headers` carries every one of `wanted` (any of a repeated header may
/// match).
pub(crate) fn headers_match(wanted: &[(HeaderName, HeaderValue)], headers: &HeaderMap) -> bool {
    wanted
        .iter()
        .all(|(name, value)| headers.get_all(name).iter().any(|v| v == value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods() {
        assert_eq!(parse_method("get"), Ok(Method::GET));
        assert_eq!(parse_method("Patch"), Ok(Method::PATCH));
        assert!(parse_method("FETCH")
            .unwrap_err()
            .contains("not an HTTP method"));
        assert!(parse_method("").is_err());
        assert!(method_allowed(&[], &Method::DELETE));
        assert!(method_allowed(&[Method::GET], &Method::HEAD));
        assert!(!method_allowed(&[Method::POST], &Method::HEAD));
        assert!(!method_allowed(&[Method::GET], &Method::POST));
    }

    #[test]
    fn hosts() {
        let exact = HostMatch::parse("API.example.com").unwrap();
        assert!(exact.matches(Some("api.example.com")));
        assert!(exact.matches(Some("Api.Example.com:8080")));
        assert!(exact.matches(Some("api.example.com.")));
        assert!(!exact.matches(Some("x.api.example.com")));
        assert!(!exact.matches(None));
        let wild = HostMatch::parse("*.example.com").unwrap();
        assert!(wild.matches(Some("a.example.com")));
        assert!(wild.matches(Some("a.b.example.com:443")));
        assert!(!wild.matches(Some("example.com")));
        assert!(!wild.matches(Some("badexample.com")));
        assert!(!wild.matches(Some("[::1]:80")));
        assert!(HostMatch::parse("api.example.com:80")
            .unwrap_err()
            .contains("port"));
        assert!(HostMatch::parse("a.*.com").is_err());
        assert!(HostMatch::parse("").is_err());
        assert!(HostMatch::parse("a..b").is_err());
    }

    #[test]
    fn headers() {
        let wanted = vec![parse_header("X-Canary", "1").unwrap()];
        let mut map = HeaderMap::new();
        assert!(!headers_match(&wanted, &map));
        map.append("x-canary", HeaderValue::from_static("0"));
        assert!(!headers_match(&wanted, &map));
        map.append("x-canary", HeaderValue::from_static("1"));
        assert!(headers_match(&wanted, &map));
        assert!(parse_header("bad name", "1").is_err());
        assert!(parse_header("x", "a\nb").is_err());
    }
}
