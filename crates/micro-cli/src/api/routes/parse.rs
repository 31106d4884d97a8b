//! From the [document tree](super::doc) to checked [`Routes`]: every key known,
//! every value valid, every rule kept, or a [`RoutesError`] with the line.

use std::sync::Arc;
use std::time::Duration;

use http::Method;
use micro::options::{parse_duration, parse_size};

use super::conditions::{self, HostMatch};
use super::doc::{did_you_mean, Key, Node, Value};
use super::error::{Checked, Problem, RoutesError};
use super::pattern::{Pattern, Template};
use super::split::{self, Split};
use super::{from_toml, from_yaml, Route, RouteId, Routes};
use crate::api::target::{AuthRequirement, Cors, HandlerKind, Policy, RateLimit};

const TOP_KEYS: &[&str] = &[
    "fallback",
    "routes",
    "cors",
    "auth",
    "timeout",
    "retries",
    "rate_limit",
    "body_limit",
];
const ROUTE_KEYS: &[&str] = &[
    "path",
    "method",
    "host",
    "headers",
    "service",
    "endpoint",
    "handler",
    "split",
    "topic",
    "rewrite",
    "timeout",
    "retries",
    "rate_limit",
    "body_limit",
    "cors",
    "auth",
];
const CORS_KEYS: &[&str] = &["origins", "methods", "headers", "credentials", "max_age"];
const AUTH_KEYS: &[&str] = &["required", "scopes"];
const RATE_KEYS: &[&str] = &["rate", "burst"];
const FALLBACKS: &[&str] = &["zero-config", "none"];

/// Parses `text` in the format `file`'s extension names.
pub(crate) fn parse(text: &str, file: &str) -> Result<Routes, RoutesError> {
    let lower = file.to_ascii_lowercase();
    let root = if lower.ends_with(".yaml") || lower.ends_with(".yml") {
        from_yaml::read(text)
    } else if lower.ends_with(".toml") {
        from_toml::read(text)
    } else {
        return Err(RoutesError::whole_file(
            file,
            "a routes file is YAML (.yaml, .yml) or TOML (.toml), told by its extension",
        ));
    };
    root.and_then(|root| build(&root, file))
        .map_err(|p| p.in_file(file))
}

/// The keys of one map, checked against the keys it may have.
struct Entries<'a> {
    entries: &'a [(Key, Node)],
}

impl<'a> Entries<'a> {
    fn new(node: &'a Node, what: &str, allowed: &[&str]) -> Checked<Entries<'a>> {
        let entries = node.map(what)?;
        for (key, _) in entries {
            if !allowed.contains(&key.name.as_str()) {
                let reason = match did_you_mean(&key.name, allowed) {
                    Some(near) => format!(
                        "unknown key {:?} in {what}; did you mean {near:?}?",
                        key.name
                    ),
                    None => format!(
                        "unknown key {:?} in {what} (known keys: {})",
                        key.name,
                        allowed.join(", ")
                    ),
                };
                return Err(Problem::new(key.line, reason));
            }
        }
        Ok(Entries { entries })
    }

    /// A key's value; a null value (`key:` with nothing, `~`) counts as absent.
    fn get(&self, name: &str) -> Option<(&'a Key, &'a Node)> {
        self.entries
            .iter()
            .find(|(k, v)| k.name == name && v.value != Value::Null)
            .map(|(k, v)| (k, v))
    }
}

fn build(root: &Node, file: &str) -> Checked<Routes> {
    if root.value == Value::Null {
        return Ok(Routes {
            file: file.to_string(),
            routes: Vec::new(),
            zero_config: true,
            defaults: Arc::new(Policy::default()),
        });
    }
    let top = Entries::new(root, "the file", TOP_KEYS)?;
    let zero_config = match top.get("fallback") {
        None => true,
        Some((key, node)) => {
            let text = node.string("fallback")?;
            match text {
                "zero-config" => true,
                "none" => false,
                other => {
                    let hint = did_you_mean(other, FALLBACKS)
                        .map(|n| format!("; did you mean {n:?}?"))
                        .unwrap_or_default();
                    return Err(Problem::new(
                        key.line,
                        format!(
                            "fallback must be \"zero-config\" or \"none\", not {other:?}{hint}"
                        ),
                    ));
                }
            }
        }
    };
    let defaults = Arc::new(overrides(&top)?.over(&Policy::default()));
    let mut routes = Vec::new();
    if let Some((key, node)) = top.get("routes") {
        let Value::Seq(items) = &node.value else {
            return Err(Problem::new(
                key.line,
                format!(
                    "routes must be a list of routes (`- path: ...` items in YAML, \
                     [[routes]] tables in TOML), not {}",
                    node.kind()
                ),
            ));
        };
        for (index, item) in items.iter().enumerate() {
            routes.push(route(index, item, &defaults)?);
        }
    }
    Ok(Routes {
        file: file.to_string(),
        routes,
        zero_config,
        defaults,
    })
}

fn route(index: usize, node: &Node, defaults: &Policy) -> Checked<Route> {
    let map = Entries::new(node, "a route", ROUTE_KEYS)?;
    let line = node.line;

    let Some((path_key, path_node)) = map.get("path") else {
        return Err(Problem::new(
            line,
            "a route needs a path (path: /hello/{name})",
        ));
    };
    let pattern =
        Pattern::parse(path_node.string("path")?).map_err(|e| Problem::new(path_key.line, e))?;

    let handler = match map.get("handler") {
        None => HandlerKind::Rpc,
        Some((key, node)) => {
            let name = node.string("handler")?;
            HandlerKind::from_name(name).ok_or_else(|| {
                let names: Vec<&str> = HandlerKind::ALL.iter().map(|(n, _)| *n).collect();
                let hint = did_you_mean(name, &names)
                    .map(|n| format!("; did you mean {n:?}?"))
                    .unwrap_or_default();
                Problem::new(
                    key.line,
                    format!(
                        "unknown handler {name:?}{hint} (handlers: {})",
                        names.join(", ")
                    ),
                )
            })?
        }
    };
    let kind = handler.name();

    let mut methods: Vec<Method> = Vec::new();
    if let Some((key, node)) = map.get("method") {
        for (item_line, text) in node.strings("method")? {
            for part in text.split([',', ' ']).filter(|p| !p.is_empty()) {
                let method =
                    conditions::parse_method(part).map_err(|e| Problem::new(item_line, e))?;
                if !methods.contains(&method) {
                    methods.push(method);
                }
            }
        }
        if methods.is_empty() {
            return Err(Problem::new(
                key.line,
                "method lists no methods; leave it out to allow any",
            ));
        }
    }

    let host = match map.get("host") {
        None => None,
        Some((key, node)) => {
            Some(HostMatch::parse(node.string("host")?).map_err(|e| Problem::new(key.line, e))?)
        }
    };

    let mut headers = Vec::new();
    if let Some((_, node)) = map.get("headers") {
        for (key, value) in node.map("headers")? {
            let text = value.text(&format!("header {}", key.name))?;
            headers.push(
                conditions::parse_header(&key.name, text).map_err(|e| Problem::new(key.line, e))?,
            );
        }
    }

    // Where the request goes.
    let mut service = None;
    let mut version = None;
    if let Some((key, node)) = map.get("service") {
        if handler == HandlerKind::Event {
            return Err(Problem::new(
                key.line,
                "an event route publishes to its topic; it takes no service",
            ));
        }
        let text = node.string("service")?;
        let (name, pinned) =
            split::service_and_version(text).map_err(|e| Problem::new(key.line, e))?;
        check_name_chars(name, "service").map_err(|e| Problem::new(key.line, e))?;
        service = Some(
            Template::parse(name, &pattern)
                .map_err(|e| Problem::new(key.line, format!("service {e}")))?,
        );
        version = pinned.map(str::to_string);
    }
    let split = match map.get("split") {
        None => None,
        Some((key, node)) => {
            if handler == HandlerKind::Event {
                return Err(Problem::new(
                    key.line,
                    "an event route publishes to its topic; it takes no split",
                ));
            }
            if let Some(v) = &version {
                return Err(Problem::new(
                    key.line,
                    format!(
                        "service pins version {v:?} and split chooses versions; use one of them"
                    ),
                ));
            }
            let named = match &service {
                None => None,
                Some(t) => Some(t.literal().ok_or_else(|| {
                    Problem::new(
                        key.line,
                        "a split chooses versions of one service: the service cannot use path params",
                    )
                })?),
            };
            Some(read_split(key, node, named)?)
        }
    };
    if let Some(split) = &split {
        if service.is_none() {
            service =
                Some(Template::parse(&split.service, &pattern).map_err(|e| Problem::new(line, e))?);
        }
    }

    let endpoint = match map.get("endpoint") {
        None => None,
        Some((key, node)) => {
            if !matches!(handler, HandlerKind::Rpc | HandlerKind::Stream) {
                return Err(Problem::new(
                    key.line,
                    format!(
                        "endpoint is for rpc and stream routes; a {kind} route {}",
                        if handler == HandlerKind::Event {
                            "publishes to its topic"
                        } else {
                            "forwards the path (use rewrite to change it)"
                        }
                    ),
                ));
            }
            let text = node.string("endpoint")?;
            check_name_chars(text, "endpoint").map_err(|e| Problem::new(key.line, e))?;
            let template = Template::parse(text, &pattern)
                .map_err(|e| Problem::new(key.line, format!("endpoint {e}")))?;
            let source = template.source();
            match source.split_once('.') {
                Some((svc, method)) if !svc.is_empty() && !method.is_empty() => {}
                _ => {
                    return Err(Problem::new(
                        key.line,
                        format!("endpoint {text:?} must be Service.Method, as Greeter.Hello"),
                    ))
                }
            }
            Some(template)
        }
    };

    let topic = match map.get("topic") {
        None => None,
        Some((key, node)) => {
            if handler != HandlerKind::Event {
                return Err(Problem::new(
                    key.line,
                    format!("topic is for event routes; this is a {kind} route (handler: event publishes the body to the topic)"),
                ));
            }
            let text = node.string("topic")?;
            if text.chars().any(char::is_whitespace) {
                return Err(Problem::new(
                    key.line,
                    format!("topic {text:?} holds spaces"),
                ));
            }
            Some(
                Template::parse(text, &pattern)
                    .map_err(|e| Problem::new(key.line, format!("topic {e}")))?,
            )
        }
    };

    let rewrite = match map.get("rewrite") {
        None => None,
        Some((key, node)) => {
            if !matches!(handler, HandlerKind::Http | HandlerKind::Web) {
                return Err(Problem::new(
                    key.line,
                    format!("rewrite is for http and web routes; this is a {kind} route"),
                ));
            }
            let text = node.string("rewrite")?;
            if !text.starts_with('/') || text.chars().any(char::is_whitespace) {
                return Err(Problem::new(
                    key.line,
                    format!("rewrite {text:?} must be a path starting with /, as /{{rest*}}"),
                ));
            }
            Some(
                Template::parse(text, &pattern)
                    .map_err(|e| Problem::new(key.line, format!("rewrite {e}")))?,
            )
        }
    };

    // What each handler needs.
    match handler {
        HandlerKind::Rpc | HandlerKind::Stream => {
            if service.is_none() {
                return Err(Problem::new(
                    line,
                    format!("a {kind} route needs a service (service: greeter)"),
                ));
            }
            if endpoint.is_none() {
                return Err(Problem::new(
                    line,
                    format!(
                        "a {kind} route needs an endpoint (endpoint: Greeter.Hello, or one \
                         built from path params, as Greeter.{{method}})"
                    ),
                ));
            }
        }
        HandlerKind::Http | HandlerKind::Web => {
            if service.is_none() {
                return Err(Problem::new(
                    line,
                    format!("a {kind} route proxies to a service: it needs service: NAME"),
                ));
            }
        }
        HandlerKind::Event => {
            if topic.is_none() {
                return Err(Problem::new(
                    line,
                    "an event route needs a topic (topic: orders)",
                ));
            }
        }
    }

    let policy = Arc::new(overrides(&map)?.over(defaults));
    Ok(Route {
        id: RouteId {
            index,
            pattern: Arc::from(pattern.as_str()),
        },
        pattern,
        methods,
        host,
        headers,
        handler,
        service,
        version,
        split,
        endpoint,
        topic,
        rewrite,
        policy,
    })
}

/// Names (services, endpoints) hold letters, digits, `.`, `-` and `_` outside
/// their `{param}`s.
fn check_name_chars(text: &str, what: &str) -> Result<(), String> {
    let mut depth = 0usize;
    for c in text.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            _ if depth > 0 => {}
            c if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') => {}
            c => {
                return Err(format!(
                    "{what} {text:?} holds {c:?}; names hold letters, digits, '.', '-' and '_'"
                ))
            }
        }
    }
    Ok(())
}

fn read_split(key: &Key, node: &Node, service: Option<&str>) -> Checked<Split> {
    let entries = node.map("split")?;
    if entries.is_empty() {
        return Err(Problem::new(
            key.line,
            "split lists no versions (split: {greeter@v2: 10%, greeter@v1: 90%})",
        ));
    }
    let mut name: Option<&str> = service;
    let mut shares: Vec<(Option<String>, u32)> = Vec::new();
    let mut total = 0;
    for (k, v) in entries {
        let (svc, version) =
            split::service_and_version(&k.name).map_err(|e| Problem::new(k.line, e))?;
        check_name_chars(svc, "service").map_err(|e| Problem::new(k.line, e))?;
        match name {
            Some(expected) if expected != svc => {
                return Err(Problem::new(
                    k.line,
                    format!(
                        "split names service {svc:?}, but the route's service is {expected:?}; \
                         a split chooses between versions of one service"
                    ),
                ));
            }
            _ => name = Some(svc),
        }
        let version = version.map(str::to_string);
        if shares.iter().any(|(v, _)| *v == version) {
            return Err(Problem::new(
                k.line,
                format!("split names {:?} twice", k.name),
            ));
        }
        let share = split::parse_share(v.text(&format!("the share of {}", k.name))?)
            .map_err(|e| Problem::new(k.line, format!("{}: {e}", k.name)))?;
        total += share;
        shares.push((version, share));
    }
    if total != 100 {
        return Err(Problem::new(
            key.line,
            format!("split shares add up to {total}%, not 100%"),
        ));
    }
    let service = name.unwrap_or_default().to_string();
    Ok(Split::new(service, shares))
}

/// A route's (or the file's) policy settings; unset ones come from the defaults.
#[derive(Default)]
struct Overrides {
    timeout: Option<Duration>,
    retries: Option<u32>,
    rate_limit: Option<RateLimit>,
    body_limit: Option<usize>,
    /// `Some(None)`: `cors: false`, off here even if the file's default is on.
    cors: Option<Option<Cors>>,
    auth: Option<AuthRequirement>,
}

impl Overrides {
    fn over(self, base: &Policy) -> Policy {
        Policy {
            timeout: self.timeout.or(base.timeout),
            retries: self.retries.or(base.retries),
            rate_limit: self.rate_limit.or(base.rate_limit),
            body_limit: self.body_limit.or(base.body_limit),
            cors: match self.cors {
                Some(cors) => cors,
                None => base.cors.clone(),
            },
            auth: self.auth.or_else(|| base.auth.clone()),
        }
    }
}

fn overrides(map: &Entries<'_>) -> Checked<Overrides> {
    let mut o = Overrides::default();
    if let Some((key, node)) = map.get("timeout") {
        let timeout = duration(key, node, "timeout")?;
        if timeout.is_zero() {
            return Err(Problem::new(key.line, "timeout must be more than 0"));
        }
        o.timeout = Some(timeout);
    }
    if let Some((_, node)) = map.get("retries") {
        o.retries = Some(node.unsigned("retries")?);
    }
    if let Some((key, node)) = map.get("body_limit") {
        let text = node.string("body_limit")?;
        o.body_limit = Some(
            parse_size(text)
                .map_err(|e| Problem::new(key.line, format!("body_limit {text:?}: {e}")))?,
        );
    }
    if let Some((key, node)) = map.get("rate_limit") {
        o.rate_limit = Some(rate_limit(key, node)?);
    }
    if let Some((key, node)) = map.get("cors") {
        o.cors = Some(cors(key, node)?);
    }
    if let Some((_, node)) = map.get("auth") {
        o.auth = Some(auth(node)?);
    }
    Ok(o)
}

fn duration(key: &Key, node: &Node, what: &str) -> Checked<Duration> {
    let text = node.string(what)?;
    parse_duration(text).map_err(|e| Problem::new(key.line, format!("{what} {text:?}: {e}")))
}

fn rate_limit(key: &Key, node: &Node) -> Checked<RateLimit> {
    let (rate, burst) = if let Value::Map(_) = node.value {
        let map = Entries::new(node, "rate_limit", RATE_KEYS)?;
        let Some((_, rate)) = map.get("rate") else {
            return Err(Problem::new(
                key.line,
                "rate_limit needs a rate in requests per second (rate_limit: {rate: 100, burst: 20})",
            ));
        };
        let burst = match map.get("burst") {
            None => None,
            Some((k, b)) => {
                let burst = b.unsigned("rate_limit burst")?;
                if burst == 0 {
                    return Err(Problem::new(k.line, "rate_limit burst must be at least 1"));
                }
                Some(burst)
            }
        };
        (rate.number("rate_limit rate")?, burst)
    } else {
        (node.number("rate_limit")?, None)
    };
    if rate <= 0.0 {
        return Err(Problem::new(
            key.line,
            "rate_limit rate must be more than 0 requests per second",
        ));
    }
    let burst = burst.unwrap_or_else(|| (rate.ceil() as u32).max(1));
    Ok(RateLimit { rate, burst })
}

fn cors(key: &Key, node: &Node) -> Checked<Option<Cors>> {
    if let Value::Scalar { .. } = node.value {
        return match node.boolean("cors")? {
            false => Ok(None),
            true => Err(Problem::new(
                key.line,
                "cors: true does not say which origins; write cors: {origins: [\"https://app.example.com\"]}, or [\"*\"] for any",
            )),
        };
    }
    let map = Entries::new(node, "cors", CORS_KEYS)?;
    let Some((origins_key, origins_node)) = map.get("origins") else {
        return Err(Problem::new(
            key.line,
            "cors needs origins (origins: [\"https://app.example.com\"], or [\"*\"] for any)",
        ));
    };
    let mut origins = Vec::new();
    for (line, origin) in origins_node.strings("a cors origin")? {
        if origin != "*" && !valid_origin(origin) {
            return Err(Problem::new(
                line,
                format!("origin {origin:?} must be \"*\" or scheme://host[:port], as \"https://app.example.com\""),
            ));
        }
        origins.push(origin.to_string());
    }
    if origins.is_empty() {
        return Err(Problem::new(
            origins_key.line,
            "cors origins is empty: list the origins allowed, or [\"*\"] for any",
        ));
    }
    let mut cors = Cors {
        origins,
        ..Cors::default()
    };
    if let Some((_, node)) = map.get("methods") {
        for (line, text) in node.strings("a cors method")? {
            let method = conditions::parse_method(text).map_err(|e| Problem::new(line, e))?;
            cors.methods.push(method.to_string());
        }
    }
    if let Some((_, node)) = map.get("headers") {
        for (line, text) in node.strings("a cors header")? {
            let name = http::header::HeaderName::from_bytes(text.as_bytes())
                .map_err(|_| Problem::new(line, format!("{text:?} is not a valid header name")))?;
            cors.headers.push(name.to_string());
        }
    }
    if let Some((_, node)) = map.get("credentials") {
        cors.credentials = node.boolean("cors credentials")?;
    }
    if let Some((key, node)) = map.get("max_age") {
        cors.max_age = Some(duration(key, node, "max_age")?);
    }
    Ok(Some(cors))
}

/// `https://app.example.com`, `http://localhost:3000`: a scheme and a host, no path.
fn valid_origin(origin: &str) -> bool {
    let Some((scheme, rest)) = origin.split_once("://") else {
        return false;
    };
    !scheme.is_empty()
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
        && !rest.is_empty()
        && !rest.contains(['/', '?', '#', ' '])
}

fn auth(node: &Node) -> Checked<AuthRequirement> {
    if let Value::Scalar { .. } = node.value {
        return Ok(AuthRequirement {
            required: node.boolean("auth")?,
            scopes: Vec::new(),
        });
    }
    let map = Entries::new(node, "auth", AUTH_KEYS)?;
    let required = match map.get("required") {
        None => true,
        Some((_, node)) => node.boolean("auth required")?,
    };
    let mut scopes = Vec::new();
    if let Some((scopes_key, node)) = map.get("scopes") {
        for (_, scope) in node.strings("a scope")? {
            scopes.push(scope.to_string());
        }
        if !required && !scopes.is_empty() {
            return Err(Problem::new(
                scopes_key.line,
                "auth scopes need credentials: drop required: false, or the scopes",
            ));
        }
    }
    Ok(AuthRequirement { required, scopes })
}
