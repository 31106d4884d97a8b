//! Cross-origin requests: off unless a policy (the gateway's `--cors_origins`, or a
//! route's `cors`) allows the request's `Origin`.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};

use super::reply::{empty, Body};
use super::target::Cors;

/// Methods allowed when a policy names none.
const DEFAULT_METHODS: &str = "GET, POST, PUT, PATCH, DELETE";
/// Request headers allowed when a policy names none.
const DEFAULT_HEADERS: &str = "Content-Type, Authorization, X-Request-Id";

/// The origin to allow for `headers`' `Origin` under `policy`, if any.
fn allowed_origin(policy: &Cors, headers: &HeaderMap) -> Option<HeaderValue> {
    let origin = headers.get(header::ORIGIN)?;
    let text = origin.to_str().ok()?;
    if policy.origins.iter().any(|o| o == text) {
        return Some(origin.clone());
    }
    if policy.origins.iter().any(|o| o == "*") {
        // With credentials a browser refuses `*`: echo the origin instead.
        return Some(if policy.credentials {
            origin.clone()
        } else {
            HeaderValue::from_static("*")
        });
    }
    None
}

/// Whether the request is a CORS preflight (`OPTIONS` with
/// `Access-Control-Request-Method`).
pub fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::OPTIONS
        && headers.contains_key(header::ORIGIN)
        && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// The answer to a preflight: 204 with the policy's headers when the origin is
/// allowed, else 403 without them (the browser then blocks the request).
pub fn preflight(policy: Option<&Cors>, headers: &HeaderMap) -> Response<Body> {
    let mut rsp = Response::new(empty());
    let Some(policy) = policy else {
        *rsp.status_mut() = StatusCode::FORBIDDEN;
        return rsp;
    };
    let Some(origin) = allowed_origin(policy, headers) else {
        *rsp.status_mut() = StatusCode::FORBIDDEN;
        return rsp;
    };
    *rsp.status_mut() = StatusCode::NO_CONTENT;
    let out = rsp.headers_mut();
    out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    let join = |list: &[String], default: &'static str| {
        if list.is_empty() {
            HeaderValue::from_static(default)
        } else {
            HeaderValue::from_str(&list.join(", ")).unwrap_or(HeaderValue::from_static(default))
        }
    };
    out.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        join(&policy.methods, DEFAULT_METHODS),
    );
    out.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        join(&policy.headers, DEFAULT_HEADERS),
    );
    if policy.credentials {
        out.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    if let Some(age) = policy.max_age {
        out.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from(age.as_secs()),
        );
    }
    out.insert(header::VARY, HeaderValue::from_static("Origin"));
    rsp
}

/// Adds the CORS headers of an actual (non-preflight) request's answer.
pub fn decorate(policy: Option<&Cors>, request: &HeaderMap, rsp: &mut Response<Body>) {
    let Some(policy) = policy else { return };
    let Some(origin) = allowed_origin(policy, request) else {
        return;
    };
    let out = rsp.headers_mut();
    out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    if policy.credentials {
        out.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    out.append(header::VARY, HeaderValue::from_static("Origin"));
    out.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("X-Request-Id"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(origin: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ORIGIN, HeaderValue::from_str(origin).unwrap());
        h.insert(
            header::ACCESS_CONTROL_REQUEST_METHOD,
            HeaderValue::from_static("POST"),
        );
        h
    }

    #[test]
    fn preflights_allow_listed_origins_only() {
        let policy = Cors {
            origins: vec!["https://app.example.com".into()],
            ..Cors::default()
        };
        let ok = preflight(Some(&policy), &request("https://app.example.com"));
        assert_eq!(ok.status(), StatusCode::NO_CONTENT);
        assert_eq!(
            ok.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://app.example.com"
        );
        assert_eq!(
            ok.headers()[header::ACCESS_CONTROL_ALLOW_METHODS],
            DEFAULT_METHODS
        );
        let no = preflight(Some(&policy), &request("https://evil.example"));
        assert_eq!(no.status(), StatusCode::FORBIDDEN);
        assert!(!no
            .headers()
            .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
        assert_eq!(
            preflight(None, &request("https://app.example.com")).status(),
            StatusCode::FORBIDDEN
        );
    }

    #[test]
    fn wildcards_echo_the_origin_with_credentials() {
        let any = Cors {
            origins: vec!["*".into()],
            ..Cors::default()
        };
        let mut rsp = Response::new(empty());
        decorate(Some(&any), &request("https://x.example"), &mut rsp);
        assert_eq!(rsp.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        let creds = Cors {
            credentials: true,
            ..any
        };
        let mut rsp = Response::new(empty());
        decorate(Some(&creds), &request("https://x.example"), &mut rsp);
        assert_eq!(
            rsp.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://x.example"
        );
        assert_eq!(
            rsp.headers()[header::ACCESS_CONTROL_ALLOW_CREDENTIALS],
            "true"
        );
    }
}
