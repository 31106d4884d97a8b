//! What a gateway request is turned into: the handler that serves it, the service
//! (and endpoint or topic) it reaches, and the policy that applies on the way.
//! Both the zero-config resolver ([`super::resolve`]) and the routes file
//! ([`super::routes`]) produce a [`Target`].

use std::collections::BTreeMap;
use std::time::Duration;

/// How a request reaches its service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum HandlerKind {
    /// JSON request body (or GET query) -> service call -> JSON answer.
    #[default]
    Rpc,
    /// Reverse proxy to a service that is a plain HTTP server.
    Http,
    /// Reverse proxy that also carries WebSocket upgrades.
    Web,
    /// The body is published to a topic.
    Event,
    /// A server-streaming endpoint as server-sent events or a WebSocket.
    Stream,
}

impl HandlerKind {
    /// Every handler, by its name in routes files and flags.
    pub const ALL: [(&'static str, HandlerKind); 5] = [
        ("rpc", HandlerKind::Rpc),
        ("http", HandlerKind::Http),
        ("web", HandlerKind::Web),
        ("event", HandlerKind::Event),
        ("stream", HandlerKind::Stream),
    ];

    /// The handler called `name` (`rpc`, `http`, `web`, `event`, `stream`).
    pub fn from_name(name: &str) -> Option<HandlerKind> {
        Self::ALL
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, k)| *k)
    }

    /// The handler's name.
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, k)| *k == self)
            .map(|(n, _)| *n)
            .unwrap_or("rpc")
    }
}

/// Where one request goes.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Target {
    /// How the request is served.
    pub handler: HandlerKind,
    /// The registered service (`greeter`, `v1.greeter`); for `event`, empty.
    pub service: String,
    /// `Service.Method` for `rpc` and `stream`.
    pub endpoint: Option<String>,
    /// The topic an `event` route publishes to.
    pub topic: Option<String>,
    /// The service version to call (a canary split or header rule chose it);
    /// `None` is any version.
    pub version: Option<String>,
    /// For `http` / `web`: the path sent upstream (the request's own when `None`).
    pub upstream_path: Option<String>,
    /// `{param}` values taken from the path: they fill request fields.
    pub params: BTreeMap<String, String>,
}

/// What applies to the requests of one route, on top of the gateway's defaults.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Policy {
    /// Time the call may take, retries included.
    pub timeout: Option<Duration>,
    /// Retries of a failed call on another node.
    pub retries: Option<u32>,
    /// Requests per second allowed on this route, with a burst.
    pub rate_limit: Option<RateLimit>,
    /// Largest request body accepted, in bytes (413 beyond).
    pub body_limit: Option<usize>,
    /// Cross-origin requests allowed on this route.
    pub cors: Option<Cors>,
    /// Whether callers need credentials, and which scopes.
    pub auth: Option<AuthRequirement>,
}

/// A token bucket: `rate` requests per second on average, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Requests per second, on average.
    pub rate: f64,
    /// Requests allowed at once before the rate applies.
    pub burst: u32,
}

/// A CORS policy.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Cors {
    /// Allowed origins (`https://app.example.com`), or `*` for any.
    pub origins: Vec<String>,
    /// Allowed methods (default: the route's, or GET, POST, PUT, PATCH, DELETE).
    pub methods: Vec<String>,
    /// Request headers the browser may send (default: Content-Type, Authorization).
    pub headers: Vec<String>,
    /// Whether credentials (cookies, Authorization) may be sent.
    pub credentials: bool,
    /// How long a browser may cache the preflight answer.
    pub max_age: Option<Duration>,
}

/// Credentials a route asks for.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AuthRequirement {
    /// Whether a valid token or API key is required at all (`false`: public).
    pub required: bool,
    /// Scopes the caller must all hold.
    pub scopes: Vec<String>,
}
