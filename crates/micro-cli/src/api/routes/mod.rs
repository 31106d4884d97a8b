//! The routes file of `micro api --config routes.yaml`: requests routed by path
//! pattern, method, host and headers to a service and endpoint (or topic), with
//! canary splits and per-route policy; hot-reloaded by [`RoutesWatcher`].
//!
//! YAML (`.yaml`, `.yml`) or TOML (`.toml`), the same structure:
//!
//! ```yaml
//! # Routes are tried in file order; the first that matches wins. A request no route
//! # matches falls back to zero-config routing (/greeter/hello) unless `fallback: none`.
//! fallback: zero-config          # or none (-> 404 for unrouted paths)
//! cors:                          # defaults for every route (optional): cors, auth,
//!   origins: ["https://app.example.com"]   # timeout, retries, rate_limit, body_limit
//! auth: {required: false}
//! routes:
//!   - path: /hello/{name}        # {param}: one segment; {rest*}: the rest of the path
//!     method: [GET, POST]        # optional (any); a string or a list; GET allows HEAD
//!     host: api.example.com      # optional; exact, or *.example.com
//!     headers: {x-canary: "1"}   # optional: only requests with these header values
//!     service: greeter           # or greeter@v2 to pin a version
//!     endpoint: Greeter.Hello    # rpc / stream routes; may use params: Greeter.{method}
//!     handler: rpc               # rpc (default) | http | web | event | stream
//!     split:                     # optional weighted version routing (canary)
//!       greeter@v2: 10%
//!       greeter@v1: 90%          # shares are 1..100 and sum to 100
//!     timeout: 2s                # 30 (seconds), 500ms, 1m30s
//!     retries: 2
//!     rate_limit: {rate: 100, burst: 20}   # per route, requests/s (burst: rate)
//!     body_limit: 1MiB           # bytes, or KiB/MiB/GiB, KB/MB/GB
//!     cors: {origins: ["*"], methods: [GET], headers: [Content-Type], credentials: false, max_age: 10m}
//!     auth: {required: true, scopes: [greeter.read]}
//!   - path: /events/orders
//!     handler: event
//!     topic: orders
//!   - path: /legacy/{rest*}
//!     handler: http
//!     service: legacy
//!     rewrite: /{rest*}          # upstream path for http/web (params substituted)
//! ```
//!
//! The same in TOML: top-level keys, then one `[[routes]]` table per route
//! (`split = { "greeter@v2" = "10%", "greeter@v1" = "90%" }`).
//!
//! A route's policy is its own settings over the file's defaults, setting by
//! setting (a route's `cors` replaces the default `cors` whole; `cors: false` turns
//! a default off for one route). `auth: {scopes: [...]}` implies `required: true`;
//! `auth: false` / `auth: true` are short forms; so is `rate_limit: 100`.
//!
//! Every rule broken is reported with the line of the offending key (or of the
//! route, for a missing key): `routes.yaml:12: unknown key "metod" in a route;
//! did you mean "method"?`.
//!
//! ```
//! use http::{HeaderMap, Method};
//! use micro_cli::api::routes::{RouteMatch, RouteRequest, Routes};
//!
//! let routes = Routes::parse(
//!     "routes:\n  - path: /hello/{name}\n    method: GET\n    service: greeter\n    endpoint: Greeter.Hello\n",
//!     "routes.yaml",
//! )?;
//! let headers = HeaderMap::new();
//! let req = RouteRequest { method: &Method::GET, host: None, path: "/hello/John", headers: &headers };
//! let RouteMatch::Found(found) = routes.find(&req, 0) else { panic!("no route") };
//! assert_eq!(found.target.service, "greeter");
//! assert_eq!(found.target.endpoint.as_deref(), Some("Greeter.Hello"));
//! assert_eq!(found.target.params["name"], "John");
//!
//! let post = RouteRequest { method: &Method::POST, ..req };
//! assert!(matches!(routes.find(&post, 0), RouteMatch::MethodNotAllowed { .. }));
//! # Ok::<(), micro_cli::api::routes::RoutesError>(())
//! ```

mod conditions;
mod doc;
mod error;
mod from_toml;
mod from_yaml;
mod parse;
mod pattern;
mod reload;
mod split;

#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::Method;

use self::conditions::HostMatch;
use self::pattern::{decode, Pattern, Template};
use self::split::Split;
use super::target::{HandlerKind, Policy, Target};

pub use self::error::RoutesError;
pub use self::reload::{ReloadState, RoutesWatcher};

/// A parsed, checked routes file.
///
/// ```
/// use micro_cli::api::routes::Routes;
///
/// let routes = Routes::parse("fallback = \"none\"\n\n[[routes]]\npath = \"/events/orders\"\nhandler = \"event\"\ntopic = \"orders\"\n", "routes.toml")?;
/// assert_eq!(routes.len(), 1);
/// assert!(!routes.fallback_zero_config());
/// # Ok::<(), micro_cli::api::routes::RoutesError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Routes {
    file: String,
    routes: Vec<Route>,
    zero_config: bool,
    defaults: Arc<Policy>,
}

/// One compiled route.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    id: RouteId,
    pattern: Pattern,
    /// Empty: any method.
    methods: Vec<Method>,
    host: Option<HostMatch>,
    headers: Vec<(HeaderName, HeaderValue)>,
    handler: HandlerKind,
    /// `None` for `event` routes.
    service: Option<Template>,
    /// A pinned version (`greeter@v2`).
    version: Option<String>,
    split: Option<Split>,
    endpoint: Option<Template>,
    topic: Option<Template>,
    rewrite: Option<Template>,
    policy: Arc<Policy>,
}

/// A route's identity, for per-route state (rate-limit buckets) and metrics labels:
/// its index in the file and its path pattern. The same route at the same place
/// keeps its id across reloads.
///
/// ```
/// # use micro_cli::api::routes::Routes;
/// let routes = Routes::parse("routes:\n  - {path: /a, service: s, endpoint: S.A}\n", "r.yaml")?;
/// let id = routes.ids().next().unwrap();
/// assert_eq!((id.index(), id.pattern()), (0, "/a"));
/// assert_eq!(id.to_string(), "#0 /a");
/// # Ok::<(), micro_cli::api::routes::RoutesError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteId {
    index: usize,
    pattern: Arc<str>,
}

impl RouteId {
    /// The route's position in the file, from 0.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The route's path pattern as written (`/hello/{name}`): a metrics label.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }
}

impl fmt::Display for RouteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{} {}", self.index, self.pattern)
    }
}

/// What [`Routes::find`] looks at in a request.
///
/// ```
/// use http::{HeaderMap, Method};
/// use micro_cli::api::routes::RouteRequest;
///
/// let headers = HeaderMap::new();
/// let req = RouteRequest { method: &Method::GET, host: Some("api.example.com:8080"), path: "/hello/John", headers: &headers };
/// # let _ = req;
/// ```
#[derive(Debug, Clone, Copy)]
pub struct RouteRequest<'a> {
    /// The request method.
    pub method: &'a Method,
    /// The `Host` header (or HTTP/2 `:authority`), port allowed.
    pub host: Option<&'a str>,
    /// The path, percent-encoded as received, without the query.
    pub path: &'a str,
    /// The request headers.
    pub headers: &'a HeaderMap,
}

/// A request a route takes.
#[derive(Debug, Clone, PartialEq)]
pub struct Matched {
    /// Where the request goes; `params` holds the path parameters, percent-decoded.
    pub target: Target,
    /// The route's settings over the file's defaults.
    pub policy: Arc<Policy>,
    /// Which route took it.
    pub route: RouteId,
}

/// The answer of [`Routes::find`].
#[derive(Debug, Clone, PartialEq)]
pub enum RouteMatch {
    /// A route takes the request.
    Found(Matched),
    /// Routes match the path (and host and headers) but none the method: answer
    /// 405 with `Allow: allow`. `route` and `policy` are the first such route's
    /// (its CORS policy answers a preflight).
    MethodNotAllowed {
        /// The methods those routes accept (HEAD when they accept GET).
        allow: Vec<Method>,
        /// The first route whose path matched.
        route: RouteId,
        /// That route's policy.
        policy: Arc<Policy>,
    },
    /// No route matches: fall back to zero-config routing when
    /// [`Routes::fallback_zero_config`], else 404.
    Unrouted,
}

impl RouteMatch {
    /// The match, if a route takes the request.
    pub fn found(self) -> Option<Matched> {
        match self {
            RouteMatch::Found(m) => Some(m),
            _ => None,
        }
    }
}

/// An `rpc` or `stream` route, for the OpenAPI document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcRoute<'a> {
    /// The path pattern (`/hello/{name}`).
    pub pattern: &'a str,
    /// The methods it accepts; empty: any.
    pub methods: &'a [Method],
    /// The service, as written (may hold `{param}`s; without `@version`).
    pub service: String,
    /// `Service.Method`, as written (may hold `{param}`s).
    pub endpoint: String,
    /// [`HandlerKind::Rpc`] or [`HandlerKind::Stream`].
    pub handler: HandlerKind,
}

impl Routes {
    /// Parses and checks a routes file's text; `file_name` picks the format by its
    /// extension (`.yaml`, `.yml`, `.toml`) and names the file in errors.
    ///
    /// ```
    /// use micro_cli::api::routes::Routes;
    ///
    /// let err = Routes::parse("routes:\n  - path: /a\n    metod: GET\n", "routes.yaml").unwrap_err();
    /// assert_eq!(err.to_string(), "routes.yaml:3: unknown key \"metod\" in a route; did you mean \"method\"?");
    /// ```
    pub fn parse(text: &str, file_name: &str) -> Result<Routes, RoutesError> {
        parse::parse(text, file_name)
    }

    /// Reads and parses the file at `path`.
    ///
    /// ```no_run
    /// let routes = micro_cli::api::routes::Routes::load("routes.yaml")?;
    /// # Ok::<(), micro_cli::api::routes::RoutesError>(())
    /// ```
    pub fn load(path: impl AsRef<Path>) -> Result<Routes, RoutesError> {
        let path = path.as_ref();
        let name = path.display().to_string();
        let bytes = std::fs::read(path)
            .map_err(|e| RoutesError::whole_file(&name, format!("cannot read the file: {e}")))?;
        let text = String::from_utf8(bytes)
            .map_err(|_| RoutesError::whole_file(&name, "the file is not UTF-8 text"))?;
        Routes::parse(&text, &name)
    }

    /// The file the routes came from, as named to [`parse`](Self::parse).
    pub fn file(&self) -> &str {
        &self.file
    }

    /// How many routes there are.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Whether there are no routes (every request falls back, or is a 404).
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Whether a request no route matches goes to zero-config routing
    /// (`fallback: zero-config`, the default) rather than a 404 (`fallback: none`).
    pub fn fallback_zero_config(&self) -> bool {
        self.zero_config
    }

    /// The file's default policy: for requests that fall back to zero-config routing.
    pub fn defaults(&self) -> &Arc<Policy> {
        &self.defaults
    }

    /// Every route's id, in file order.
    pub fn ids(&self) -> impl Iterator<Item = &RouteId> + '_ {
        self.routes.iter().map(|r| &r.id)
    }

    /// Finds the route of a request: the first, in file order, whose path pattern,
    /// host, headers and method all match. `pick` is a uniformly random number the
    /// caller draws per request: `pick % 100` chooses a share of a canary `split`.
    ///
    /// For a CORS preflight (`OPTIONS` with `Access-Control-Request-Method`), look up
    /// the method it announces.
    ///
    /// ```
    /// use http::{HeaderMap, Method};
    /// use micro_cli::api::routes::{RouteRequest, Routes};
    ///
    /// let routes = Routes::parse(
    ///     "routes:\n  - path: /hello\n    service: greeter\n    endpoint: Greeter.Hello\n    split: {greeter@v2: 10%, greeter@v1: 90%}\n",
    ///     "routes.yaml",
    /// )?;
    /// let headers = HeaderMap::new();
    /// let req = RouteRequest { method: &Method::POST, host: None, path: "/hello", headers: &headers };
    /// let version = |pick| routes.find(&req, pick).found().unwrap().target.version;
    /// assert_eq!(version(3).as_deref(), Some("v2"));
    /// assert_eq!(version(42).as_deref(), Some("v1"));
    /// # Ok::<(), micro_cli::api::routes::RoutesError>(())
    /// ```
    pub fn find(&self, req: &RouteRequest<'_>, pick: u32) -> RouteMatch {
        let mut refused: Option<(&Route, Vec<Method>)> = None;
        for route in &self.routes {
            if let Some(host) = &route.host {
                if !host.matches(req.host) {
                    continue;
                }
            }
            if !conditions::headers_match(&route.headers, req.headers) {
                continue;
            }
            let Some(captures) = route.pattern.matches(req.path) else {
                continue;
            };
            if conditions::method_allowed(&route.methods, req.method) {
                return RouteMatch::Found(route.matched(&captures, pick));
            }
            let (_, allow) = refused.get_or_insert_with(|| (route, Vec::new()));
            for m in &route.methods {
                if !allow.contains(m) {
                    allow.push(m.clone());
                }
            }
        }
        match refused {
            Some((route, mut allow)) => {
                if allow.contains(&Method::GET) && !allow.contains(&Method::HEAD) {
                    allow.push(Method::HEAD);
                }
                RouteMatch::MethodNotAllowed {
                    allow,
                    route: route.id.clone(),
                    policy: route.policy.clone(),
                }
            }
            None => RouteMatch::Unrouted,
        }
    }

    /// The `rpc` and `stream` routes, in file order: what the OpenAPI document
    /// describes besides zero-config paths.
    ///
    /// ```
    /// # use micro_cli::api::routes::Routes;
    /// let routes = Routes::parse("routes:\n  - {path: /hi, method: POST, service: greeter, endpoint: Greeter.Hello}\n", "r.yaml")?;
    /// let rpc: Vec<_> = routes.rpc_routes().collect();
    /// assert_eq!((rpc[0].pattern, rpc[0].service.as_str(), rpc[0].endpoint.as_str()), ("/hi", "greeter", "Greeter.Hello"));
    /// assert_eq!(rpc[0].methods, [http::Method::POST]);
    /// # Ok::<(), micro_cli::api::routes::RoutesError>(())
    /// ```
    pub fn rpc_routes(&self) -> impl Iterator<Item = RpcRoute<'_>> + '_ {
        self.routes.iter().filter_map(|route| {
            if !matches!(route.handler, HandlerKind::Rpc | HandlerKind::Stream) {
                return None;
            }
            Some(RpcRoute {
                pattern: route.pattern.as_str(),
                methods: &route.methods,
                service: route.service.as_ref()?.source(),
                endpoint: route.endpoint.as_ref()?.source(),
                handler: route.handler,
            })
        })
    }
}

impl Route {
    /// The target of a request whose path gave `captures`.
    fn matched(&self, captures: &[(&str, &str)], pick: u32) -> Matched {
        let params: BTreeMap<String, String> = captures
            .iter()
            .map(|(name, raw)| (name.to_string(), decode(raw).into_owned()))
            .collect();
        let value = |name: &str| Cow::Borrowed(params.get(name).map_or("", String::as_str));
        let raw = |name: &str| {
            Cow::Borrowed(
                captures
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map_or("", |(_, v)| *v),
            )
        };
        let (service, version) = match &self.split {
            Some(split) => (
                split.service.clone(),
                split.choose(pick).map(str::to_string),
            ),
            None => (
                self.service
                    .as_ref()
                    .map(|s| s.render(value))
                    .unwrap_or_default(),
                self.version.clone(),
            ),
        };
        let endpoint = self.endpoint.as_ref().map(|t| t.render(value));
        let topic = self.topic.as_ref().map(|t| t.render(value));
        let upstream_path = self.rewrite.as_ref().map(|t| t.render(raw));
        let target = Target {
            handler: self.handler,
            service,
            endpoint,
            topic,
            version,
            upstream_path,
            params,
        };
        Matched {
            target,
            policy: self.policy.clone(),
            route: self.id.clone(),
        }
    }
}
