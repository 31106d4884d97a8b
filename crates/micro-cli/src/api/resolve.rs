//! Zero-config routing: a request path names the service and endpoint, with no
//! routes file.
//!
//! | path | service | endpoint |
//! |---|---|---|
//! | `/greeter/hello` | `greeter` | `Greeter.Hello` |
//! | `/greeter/greeter/hello` | `greeter` | `Greeter.Hello` |
//! | `/greeter/say-hello` | `greeter` | `Greeter.SayHello` |
//! | `/v1/greeter/hello` | `v1.greeter` | `Greeter.Hello` |
//!
//! With `--namespace acme`, `/greeter/hello` is service `acme.greeter`. The guess is
//! then checked against the registry, so that a 404 can say what was looked for and
//! what exists; endpoint names compare without case, `-` or `_`, and a single
//! endpoint with the asked method (`Say.Hello` for `/greeter/hello`) is found too.

use micro::registry::Service;
use micro::Error;

/// The `id` of the gateway's own errors.
pub const ID: &str = "micro.api";

/// What a path asks for, before the registry is consulted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    /// The service name, namespace included.
    pub service: String,
    /// The endpoint the path spells (`Greeter.SayHello`).
    pub endpoint: String,
}

/// Reads a request path (without query). `None` when it cannot name an endpoint
/// (`/`, `/greeter`, more than three segments, characters a name cannot hold).
pub fn parse_path(path: &str, namespace: Option<&str>) -> Option<Wanted> {
    // At most four segments: [version] name [handler] method. Called for every
    // request, so it allocates only the two names it returns.
    let mut segments = [""; 4];
    let mut count = 0;
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        *segments.get_mut(count)? = segment;
        count += 1;
    }
    let (version, name, rest) = match &segments[..count] {
        [version, name, rest @ ..] if is_version(version) => (Some(*version), *name, rest),
        [name, rest @ ..] => (None, *name, rest),
        [] => return None,
    };
    if !name.split('.').all(is_name) {
        return None;
    }
    let last = name.rsplit('.').next().unwrap_or(name);
    let (handler, method) = match rest {
        [method] => (last, *method),
        [handler, method] => (*handler, *method),
        _ => return None,
    };
    let mut endpoint = String::with_capacity(handler.len() + method.len() + 1);
    push_camel(&mut endpoint, handler)?;
    endpoint.push('.');
    push_camel(&mut endpoint, method)?;
    let namespace = namespace.filter(|n| !n.is_empty());
    let mut service = String::with_capacity(
        namespace.map_or(0, |n| n.len() + 1) + version.map_or(0, |v| v.len() + 1) + name.len(),
    );
    for part in [namespace, version].into_iter().flatten() {
        service.push_str(part);
        service.push('.');
    }
    service.push_str(name);
    Some(Wanted { service, endpoint })
}

/// The zero-config path of `endpoint` of `service`: the inverse of [`parse_path`].
/// `None` when the service is outside `namespace` or the endpoint is not
/// `Service.Method`.
pub fn path_for(service: &str, endpoint: &str, namespace: Option<&str>) -> Option<String> {
    let name = match namespace.filter(|n| !n.is_empty()) {
        Some(ns) => service.strip_prefix(ns)?.strip_prefix('.')?,
        None => service,
    };
    let (handler, method) = endpoint.split_once('.')?;
    let mut path = String::new();
    match name.split_once('.') {
        // `v1.greeter` reads best as /v1/greeter; other dotted names stay one
        // segment (/go.micro.greeter/hello).
        Some((version, rest)) if is_version(version) && !rest.contains('.') => {
            path.push('/');
            path.push_str(version);
            path.push('/');
            path.push_str(rest);
        }
        _ => {
            path.push('/');
            path.push_str(name);
        }
    }
    let last = name.rsplit('.').next().unwrap_or(name);
    // The short form only when parsing it gives this very handler name back
    // (`Mm.M` of service `mM` needs /mM/mm/m: /mM/m would read as `MM.M`).
    if camel(last).as_deref() != Some(handler) {
        path.push('/');
        path.push_str(&kebab(handler));
    }
    path.push('/');
    path.push_str(&kebab(method));
    Some(path)
}

/// Checks `wanted` against the registry records of its service (`found`, empty
/// when the service is unknown) and the names of every service (`known`, for the
/// error); returns the endpoint's registered name.
pub fn check(wanted: &Wanted, found: &[Service], known: &[String]) -> Result<String, Error> {
    if found.is_empty() {
        let mut detail = format!("service {:?} not found", wanted.service);
        detail.push_str(&match known.len() {
            0 => "; no services are registered".to_string(),
            _ => format!("; registered services: {}", known.join(", ")),
        });
        return Err(Error::not_found(ID, detail));
    }
    let endpoints: Vec<&str> = found
        .iter()
        .flat_map(|s| s.endpoints.iter().map(|e| e.name.as_str()))
        .collect();
    if endpoints.contains(&wanted.endpoint.as_str()) {
        return Ok(wanted.endpoint.clone());
    }
    let loose = |a: &str, b: &str| same_name(a, b);
    if let Some(e) = endpoints.iter().find(|e| loose(e, &wanted.endpoint)) {
        return Ok(e.to_string());
    }
    // `/greeter/hello` when the handler is not named after the service.
    let method = wanted.endpoint.split_once('.').map_or("", |(_, m)| m);
    let mut by_method: Vec<&str> = endpoints
        .iter()
        .copied()
        .filter(|e| e.split_once('.').is_some_and(|(_, m)| loose(m, method)))
        .collect();
    by_method.sort_unstable();
    by_method.dedup();
    if let [one] = by_method.as_slice() {
        return Ok(one.to_string());
    }
    let mut list: Vec<&str> = endpoints.clone();
    list.sort_unstable();
    list.dedup();
    Err(Error::not_found(
        ID,
        format!(
            "service {:?} has no endpoint {:?}; its endpoints: {}",
            wanted.service,
            wanted.endpoint,
            list.join(", ")
        ),
    ))
}

/// `v1`, `v2`, …: a version prefix.
fn is_version(segment: &str) -> bool {
    segment.len() > 1
        && segment.starts_with('v')
        && segment[1..].bytes().all(|b| b.is_ascii_digit())
}

/// A service name part: letters, digits, `-` and `_`.
fn is_name(part: &str) -> bool {
    !part.is_empty()
        && part
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `say-hello`, `say_hello`, `sayHello` → `SayHello`; `None` for non-names.
fn camel(segment: &str) -> Option<String> {
    let mut out = String::with_capacity(segment.len());
    push_camel(&mut out, segment)?;
    Some(out)
}

/// Appends `segment` in CamelCase to `out`; `None` for non-names.
fn push_camel(out: &mut String, segment: &str) -> Option<()> {
    if !is_name(segment) {
        return None;
    }
    let before = out.len();
    let mut upper = true;
    for c in segment.chars() {
        if c == '-' || c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    (out.len() > before).then_some(())
}

/// `SayHello` → `say-hello`.
fn kebab(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_uppercase() {
            if i > 0 {
                out.push('-');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Names equal when case, `-` and `_` are ignored.
fn same_name(a: &str, b: &str) -> bool {
    let strip = |s: &str| {
        s.chars()
            .filter(|c| *c != '-' && *c != '_')
            .flat_map(char::to_lowercase)
            .collect::<String>()
    };
    strip(a) == strip(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use micro::registry::Endpoint;

    fn wanted(path: &str) -> Option<(String, String)> {
        parse_path(path, None).map(|w| (w.service, w.endpoint))
    }

    fn pair(s: &str, e: &str) -> Option<(String, String)> {
        Some((s.into(), e.into()))
    }

    #[test]
    fn paths_name_services_and_endpoints() {
        assert_eq!(wanted("/greeter/hello"), pair("greeter", "Greeter.Hello"));
        assert_eq!(
            wanted("/greeter/greeter/hello"),
            pair("greeter", "Greeter.Hello")
        );
        assert_eq!(
            wanted("/greeter/say-hello"),
            pair("greeter", "Greeter.SayHello")
        );
        assert_eq!(
            wanted("/greeter/say_hello/"),
            pair("greeter", "Greeter.SayHello")
        );
        assert_eq!(
            wanted("/v1/greeter/hello"),
            pair("v1.greeter", "Greeter.Hello")
        );
        assert_eq!(
            wanted("/v2/greeter/say/hello"),
            pair("v2.greeter", "Say.Hello")
        );
        assert_eq!(wanted("/my-svc/do-it"), pair("my-svc", "MySvc.DoIt"));
        assert_eq!(
            parse_path("/greeter/hello", Some("acme")).map(|w| w.service),
            Some("acme.greeter".into())
        );
        for bad in [
            "/",
            "",
            "/greeter",
            "/a/b/c/d",
            "/gr%20eter/hello",
            "/greeter/he.llo",
            "/v1/greeter",
        ] {
            assert_eq!(wanted(bad), None, "{bad}");
        }
    }

    #[test]
    fn paths_are_the_inverse_of_parsing() {
        for (service, endpoint, path) in [
            ("greeter", "Greeter.Hello", "/greeter/hello"),
            ("greeter", "Greeter.SayHello", "/greeter/say-hello"),
            ("greeter", "Say.Hello", "/greeter/say/hello"),
            ("v1.greeter", "Greeter.Hello", "/v1/greeter/hello"),
        ] {
            assert_eq!(path_for(service, endpoint, None).as_deref(), Some(path));
            assert_eq!(wanted(path), pair(service, endpoint));
        }
        assert_eq!(
            path_for("acme.greeter", "Greeter.Hello", Some("acme")).as_deref(),
            Some("/greeter/hello")
        );
        assert_eq!(
            path_for("other.greeter", "Greeter.Hello", Some("acme")),
            None
        );
        // Found by the resolve_path fuzz target: a handler that differs from the
        // service's name only in case keeps its own segment.
        assert_eq!(path_for("mM", "Mm.M", None).as_deref(), Some("/mM/mm/m"));
        assert_eq!(wanted("/mM/mm/m"), pair("mM", "Mm.M"));
        assert_eq!(
            path_for("go.micro.greeter", "Greeter.Hello", None).as_deref(),
            Some("/go.micro.greeter/hello")
        );
        assert_eq!(
            wanted("/go.micro.greeter/hello"),
            pair("go.micro.greeter", "Greeter.Hello")
        );
    }

    fn service(name: &str, endpoints: &[&str]) -> Service {
        Service {
            name: name.into(),
            endpoints: endpoints
                .iter()
                .map(|e| Endpoint {
                    name: e.to_string(),
                    ..Endpoint::default()
                })
                .collect(),
            ..Service::default()
        }
    }

    #[test]
    fn the_registry_confirms_or_explains() {
        let known = vec!["greeter".to_string(), "users".to_string()];
        let greeter = [service(
            "greeter",
            &["Greeter.Hello", "Greeter.SayHello", "Say.Goodbye"],
        )];
        let w = |e: &str| Wanted {
            service: "greeter".into(),
            endpoint: e.into(),
        };
        assert_eq!(
            check(&w("Greeter.Hello"), &greeter, &known).unwrap(),
            "Greeter.Hello"
        );
        assert_eq!(
            check(&w("Greeter.Sayhello"), &greeter, &known).unwrap(),
            "Greeter.SayHello"
        );
        assert_eq!(
            check(&w("Greeter.Goodbye"), &greeter, &known).unwrap(),
            "Say.Goodbye"
        );
        let e = check(&w("Greeter.Nope"), &greeter, &known).unwrap_err();
        assert_eq!(e.code(), 404);
        assert!(
            e.detail().contains("Greeter.Nope") && e.detail().contains("Greeter.SayHello"),
            "{}",
            e.detail()
        );
        let e = check(
            &Wanted {
                service: "nope".into(),
                endpoint: "Nope.Hello".into(),
            },
            &[],
            &known,
        )
        .unwrap_err();
        assert!(
            e.detail().contains("\"nope\"") && e.detail().contains("greeter, users"),
            "{}",
            e.detail()
        );
    }

    /// Random paths (the fuzz target's property, on stable for every test run):
    /// parsing never panics, and whatever parses maps back to a path that parses
    /// to the same service and endpoint.
    #[test]
    fn random_paths_parse_or_are_refused_and_round_trip() {
        const PIECES: [&str; 16] = [
            "/",
            "/",
            "/",
            "greeter",
            "v1",
            "say-hello",
            "_",
            "-",
            ".",
            "Hello",
            "x9",
            "%2F",
            "é",
            "v",
            "..",
            "",
        ];
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut parsed = 0;
        for _ in 0..20_000 {
            let len = (next() % 8) as usize;
            let path: String = (0..len).map(|_| PIECES[(next() % 16) as usize]).collect();
            let ns = if next() % 4 == 0 { Some("acme") } else { None };
            let Some(w) = parse_path(&path, ns) else {
                continue;
            };
            parsed += 1;
            let back = path_for(&w.service, &w.endpoint, ns)
                .unwrap_or_else(|| panic!("{path:?} parsed to {w:?}, which has no path"));
            assert_eq!(
                parse_path(&back, ns),
                Some(w.clone()),
                "{path:?} -> {w:?} -> {back:?}"
            );
        }
        assert!(
            parsed > 300,
            "only {parsed} random paths parsed: the generator is too narrow"
        );
    }
}
