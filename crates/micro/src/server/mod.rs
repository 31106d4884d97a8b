//! Serving endpoints: gRPC and JSON over HTTP on one port.
//!
//! A [`Server`] routes requests to the handlers generated from `.proto` files. Most
//! programs use it through [`crate::Service`], which adds registration and a
//! lifecycle; tests and embedders can run one directly:
//!
//! ```no_run
//! # async fn run(listener: tokio::net::TcpListener) -> Result<(), micro::Error> {
//! let server = micro::server::Server::new("greeter"); // .handler(GreeterServer::new(..))
//! server.serve(listener, async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```

mod debug;
mod grpc;
mod handler;
pub mod http1;
mod http_route;
mod json;
pub mod method;
mod request_body;
mod router;
mod serve;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

pub use handler::{Handler, HandlerDesc, MethodDesc, TypeDesc};
pub use http_route::HttpRoute;
pub use method::{MethodKind, RawBody, RawReply, RawRequest};
pub use request_body::RequestBody;

use crate::registry::Endpoint;
use crate::wrapper::HandlerWrapper;
use crate::Error;
use router::Router;
use serve::Stats;

/// Default largest request message: 4 MiB.
pub const DEFAULT_MAX_BODY: usize = 4 * 1024 * 1024;
/// Default time a client may take to send request headers or a unary body.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Default time a graceful stop waits for in-flight requests.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves handlers on one port: gRPC over HTTP/2 and JSON over HTTP/1.1 or h2c.
pub struct Server {
    name: Arc<str>,
    version: Arc<str>,
    max_body: usize,
    read_timeout: Duration,
    drain_timeout: Duration,
    handlers: Vec<HandlerDesc>,
    wrappers: Vec<HandlerWrapper>,
    routes: Vec<HttpRoute>,
    fallback: Option<method::BoxMethodHandler>,
    stats: Arc<Stats>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("name", &self.name)
            .field("max_body", &self.max_body)
            .field("drain_timeout", &self.drain_timeout)
            .field("handlers", &self.handlers.len())
            .finish()
    }
}

impl Server {
    /// A server for the service `name` (used as the `id` of transport errors).
    pub fn new(name: impl Into<String>) -> Self {
        let name: String = name.into();
        Server {
            name: name.into(),
            version: "latest".into(),
            max_body: DEFAULT_MAX_BODY,
            read_timeout: DEFAULT_READ_TIMEOUT,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            handlers: Vec::new(),
            wrappers: Vec::new(),
            routes: Vec::new(),
            fallback: None,
            stats: Arc::new(Stats::new()),
        }
    }

    /// The version `Debug.Stats` reports (default `latest`).
    pub fn version(mut self, version: impl Into<String>) -> Self {
        let version: String = version.into();
        self.version = version.into();
        self
    }

    /// Adds a handler (a generated `XxxServer`).
    pub fn handler(mut self, handler: impl Handler) -> Self {
        self.handlers.push(handler.into_desc());
        self
    }

    /// Wraps every handler (but the internal `Debug` ones) in a middleware; the
    /// first added is outermost.
    ///
    /// ```
    /// use micro::wrapper::HandlerWrapper;
    ///
    /// // Any tower layer over raw requests; here one that stamps each request.
    /// let stamp = tower::layer::layer_fn(|inner| {
    ///     tower::util::MapRequest::new(inner, |mut req: micro::server::RawRequest| {
    ///         req.ctx.metadata_mut().insert("x-served-by", "greeter-1");
    ///         req
    ///     })
    /// });
    /// let server = micro::server::Server::new("greeter").wrap(HandlerWrapper::new("stamp", stamp));
    /// # let _ = server;
    /// ```
    pub fn wrap(mut self, wrapper: HandlerWrapper) -> Self {
        self.wrappers.push(wrapper);
        self
    }

    /// Serves a plain HTTP page on `GET` at its path.
    pub fn route(mut self, route: HttpRoute) -> Self {
        self.routes.push(route);
        self
    }

    /// Handles the calls no handler serves, instead of answering 404: what a proxy
    /// uses to forward `/greeter.Greeter/Hello` to the service that serves it.
    ///
    /// The fallback gets the raw request: [`CallContext::path`](crate::CallContext::path)
    /// is the HTTP path, the endpoint is the `Micro-Endpoint` header or the one the
    /// path names (`Greeter.Hello`), `format` the caller's payload format. Over gRPC
    /// the body is [`RawBody::Stream`] with the request messages as they arrive; over
    /// JSON it is [`RawBody::One`] with the whole body (NDJSON lines for a client
    /// stream). The reply is served like any endpoint's: one message, or a stream
    /// (gRPC frames, NDJSON lines or server-sent events). The handler wrappers
    /// ([`Server::wrap`]) wrap it like every endpoint.
    ///
    /// ```
    /// use micro::server::{RawReply, RawRequest, Server};
    ///
    /// // Answers every unknown call with the path it came on.
    /// let server = Server::new("proxy").fallback(|req: RawRequest| async move {
    ///     let path = req.ctx.path().to_string();
    ///     Ok(RawReply::One(serde_json::to_vec(&path).unwrap_or_default().into()))
    /// });
    /// # let _ = server;
    /// ```
    pub fn fallback<F, Fut>(mut self, handler: F) -> Self
    where
        F: Fn(RawRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<RawReply, Error>> + Send + 'static,
    {
        self.fallback = Some(method::raw(handler));
        self
    }

    /// The largest request message accepted, in bytes (default 4 MiB); larger ones
    /// get a 413 (`RESOURCE_EXHAUSTED` over gRPC).
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// How long a client may take to send its request headers (HTTP/1.1) or a whole
    /// unary request body (default 30 s); a slower one gets a 408.
    pub fn read_timeout(mut self, timeout: Duration) -> Self {
        self.read_timeout = timeout;
        self
    }

    /// How long a graceful stop waits for in-flight requests (default 10 s).
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    fn router(&self) -> Result<Router, Error> {
        let mut router = Router::default();
        let debug = debug::handler(self.name.clone(), self.version.clone(), self.stats.clone());
        router.add(&self.name, debug, &[])?;
        for desc in &self.handlers {
            router.add(&self.name, desc.clone(), &self.wrappers)?;
        }
        if let Some(fallback) = &self.fallback {
            router.set_fallback(&self.name, fallback.clone(), &self.wrappers);
        }
        Ok(router)
    }

    /// The endpoints to publish in the registry (internal ones excluded); an error
    /// if two handlers serve the same endpoint.
    pub fn endpoints(&self) -> Result<Vec<Endpoint>, Error> {
        Ok(self.router()?.endpoints().to_vec())
    }

    /// Serves on `listener` until `shutdown` completes, then stops accepting and
    /// waits for in-flight requests up to the drain timeout.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), Error> {
        let router = self.router()?;
        let shared = Arc::new(serve::Shared {
            name: self.name.clone(),
            max_body: self.max_body,
            read_timeout: self.read_timeout,
            router,
            routes: self.routes,
            stats: self.stats.clone(),
        });
        serve::serve(shared, listener, shutdown, self.drain_timeout).await;
        Ok(())
    }
}
