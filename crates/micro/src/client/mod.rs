//! Calling services: typed and JSON calls, streaming, pooled connections, deadlines
//! and retries.
//!
//! Every call resolves its service through the [`Selector`] (or goes to a pinned
//! address), sends gRPC over a pooled HTTP/2 connection, and retries on another
//! node only when that is safe: the node could not be reached, it answered 408 or
//! 503, or it answered 500 and the caller marked the call idempotent. After each
//! attempt the client tells the selector how the node did ([`Selector::mark`]), so a
//! node that could not be reached is skipped for a while. A call only goes to nodes
//! of service versions that list its endpoint (versions listing no endpoint pass),
//! and [`CallOptions::version`] / [`CallOptions::node_metadata`] narrow it further.
//!
//! A node whose registry metadata `protocol` is `http-json` (a program in another
//! language that speaks only JSON over HTTP/1.1) is called as `POST /` with the
//! `Micro-Endpoint` header and the JSON body; only JSON calls can reach it. With
//! [`ClientBuilder::proxy`] (`MICRO_PROXY`), every call goes to a micro proxy
//! instead, which finds the service (named in the `micro-service` header).
//!
//! ```no_run
//! # async fn demo() -> Result<(), micro::Error> {
//! use micro::client::{CallOptions, Client};
//!
//! let client = Client::default();
//! let rsp = client
//!     .call_json(
//!         "greeter",
//!         "Greeter.Hello",
//!         &serde_json::json!({"name": "John"}),
//!         &CallOptions::default().address("127.0.0.1:9090"),
//!     )
//!     .await?;
//! assert_eq!(rsp["message"], "Hello John");
//! # Ok(()) }
//! ```

mod attempt;
pub mod http1;
mod options;
mod retry;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use http::{header, HeaderValue, Response, StatusCode};
use http_body::Frame;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::time::Instant;

pub use attempt::Attempt;
pub use options::CallOptions;
pub use retry::{RetryBudget, RetryPolicy};

use crate::codec::{Format, Message};
use crate::registry::{MemoryRegistry, Node, Registry};
use crate::selector::{CacheSelector, Outcome, SelectOptions, Selected, Selector, Strategy};
use crate::server::method::MethodKind;
use crate::server::{RawBody, RawReply};
use crate::streaming::{until_deadline, RawStream};
use crate::wire::pool::Pool;
use crate::wire::{frame, status, Body};
use crate::wrapper::{layer, BoxService, CallWrapper};
use crate::{Error, Streaming};
use attempt::{Transport, TransportInner};

/// Default time a call may take: 5 s.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Default number of retries after a failed attempt.
pub const DEFAULT_RETRIES: u32 = 1;
/// Default number of pooled connections.
pub const DEFAULT_POOL_SIZE: usize = 100;
/// Default time to establish a connection.
pub const DEFAULT_DIAL_TIMEOUT: Duration = Duration::from_secs(5);

const ID: &str = "micro.client";
const USER_AGENT: &str = concat!("micro-rust/", env!("CARGO_PKG_VERSION"));

/// A method as a client names it; generated clients have one constant per method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MethodRef {
    /// `Service.Method` (`Greeter.Hello`).
    pub endpoint: &'static str,
    /// The gRPC path (`/greeter.Greeter/Hello`).
    pub path: &'static str,
    /// How many messages flow each way.
    pub kind: MethodKind,
}

/// Calls services. Cheap to clone; clones share connections.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    selector: Arc<dyn Selector>,
    transport: Transport,
    /// The transport wrapped in the call wrappers; `None` when there are none.
    wrapped: Option<BoxService<Attempt, RawReply>>,
    request_timeout: Duration,
    retry: RetryPolicy,
    /// The micro proxy every call goes to (`MICRO_PROXY`), if any.
    proxy: Option<Arc<Node>>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("selector", &self.inner.selector)
            .field("request_timeout", &self.inner.request_timeout)
            .field("retry", &self.inner.retry)
            .field("wrapped", &self.inner.wrapped.is_some())
            .field("proxy", &self.inner.proxy.as_ref().map(|n| &n.address))
            .finish()
    }
}

impl Default for Client {
    /// A client over an empty in-memory registry: calls need a pinned address.
    fn default() -> Self {
        Client::builder().build()
    }
}

/// Builds a [`Client`].
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use micro::registry::MemoryRegistry;
///
/// let client = micro::Client::builder()
///     .registry(Arc::new(MemoryRegistry::new()))
///     .request_timeout(Duration::from_secs(2))
///     .retries(2)
///     .build();
/// # let _ = client;
/// ```
#[derive(Debug)]
pub struct ClientBuilder {
    from_service: Option<String>,
    registry: Option<Arc<dyn Registry>>,
    selector: Option<Arc<dyn Selector>>,
    strategy: Strategy,
    request_timeout: Duration,
    retry: RetryPolicy,
    pool_size: usize,
    dial_timeout: Duration,
    max_body: usize,
    wrappers: Vec<CallWrapper>,
    proxy: Option<String>,
    json_over_http1: bool,
}

impl ClientBuilder {
    /// The calling service's name, sent as `Micro-From-Service`.
    pub fn from_service(mut self, name: impl Into<String>) -> Self {
        self.from_service = Some(name.into());
        self
    }
    /// Where services are looked up (default: an empty in-memory registry).
    pub fn registry(mut self, registry: Arc<dyn Registry>) -> Self {
        self.registry = Some(registry);
        self
    }
    /// A custom selector; overrides `registry` and `strategy`.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use micro::registry::MemoryRegistry;
    /// use micro::selector::{CacheSelector, Strategy};
    ///
    /// let selector = CacheSelector::new(Arc::new(MemoryRegistry::new()), Strategy::RoundRobin);
    /// let client = micro::Client::builder().selector(Arc::new(selector)).build();
    /// # let _ = client;
    /// ```
    pub fn selector(mut self, selector: Arc<dyn Selector>) -> Self {
        self.selector = Some(selector);
        self
    }
    /// How calls spread over nodes (default random; `MICRO_SELECTOR` names one:
    /// `random`, `roundrobin`, `leastconn`).
    ///
    /// ```
    /// use micro::selector::Strategy;
    ///
    /// let client = micro::Client::builder().strategy(Strategy::LeastOutstanding).build();
    /// # let _ = client;
    /// ```
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }
    /// Time a call may take, retries included (default 5 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }
    /// Retries after a failed attempt (default 1).
    pub fn retries(mut self, retries: u32) -> Self {
        self.retry = self.retry.retries(retries);
        self
    }
    /// How failed attempts are retried: count, back-off and retry budget (default:
    /// 1 retry, budget of 20% of calls plus 10 a second).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }
    /// Wraps every attempt in a middleware; the first added is outermost.
    ///
    /// ```
    /// use micro::wrapper::CallWrapper;
    ///
    /// // Any tower layer over attempts; here one that tags every call.
    /// let tag = tower::layer::layer_fn(|inner| {
    ///     tower::util::MapRequest::new(inner, |mut attempt: micro::client::Attempt| {
    ///         attempt.metadata_mut().insert("x-tag", "demo");
    ///         attempt
    ///     })
    /// });
    /// let client = micro::Client::builder().wrap(CallWrapper::new("tag", tag)).build();
    /// # let _ = client;
    /// ```
    pub fn wrap(mut self, wrapper: CallWrapper) -> Self {
        self.wrappers.push(wrapper);
        self
    }
    /// Most connections kept open (default 100).
    pub fn pool_size(mut self, size: usize) -> Self {
        self.pool_size = size;
        self
    }
    /// Time to establish a connection (default 5 s).
    pub fn dial_timeout(mut self, timeout: Duration) -> Self {
        self.dial_timeout = timeout;
        self
    }
    /// Largest response message accepted (default 4 MiB).
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }
    /// Sends unary JSON calls to micro services as JSON over HTTP/1.1 (`POST /`
    /// with `Micro-Endpoint`, pooled keep-alive connections) instead of gRPC over
    /// one HTTP/2 connection. For a gateway that takes HTTP/1.1 JSON in: no
    /// framing, no hand-off to an HTTP/2 connection task, and the service parses
    /// plain JSON. Streams still go over gRPC.
    pub fn json_over_http1(mut self, on: bool) -> Self {
        self.json_over_http1 = on;
        self
    }
    /// Sends every call to the micro proxy at `address` (`host:port`, what
    /// `MICRO_PROXY` sets) with the header `micro-service: <service>`; the proxy
    /// finds the service and picks its node. Calls with a pinned
    /// [`CallOptions::address`] still go to that address.
    ///
    /// ```
    /// let client = micro::Client::builder().proxy("127.0.0.1:8081").build();
    /// # let _ = client;
    /// ```
    pub fn proxy(mut self, address: impl Into<String>) -> Self {
        self.proxy = Some(address.into());
        self
    }
    /// The client.
    pub fn build(self) -> Client {
        let selector = self.selector.unwrap_or_else(|| {
            let registry = self
                .registry
                .unwrap_or_else(|| Arc::new(MemoryRegistry::new()));
            Arc::new(CacheSelector::new(registry, self.strategy))
        });
        let transport = Transport(Arc::new(TransportInner {
            from_service: self
                .from_service
                .and_then(|n| HeaderValue::from_str(&n).ok()),
            pool: Pool::new(ID, self.dial_timeout).max_size(self.pool_size),
            max_body: self.max_body,
            dial_timeout: self.dial_timeout,
            http1_idle: Default::default(),
            json_over_http1: self.json_over_http1,
        }));
        let proxy = self.proxy.map(|address| {
            Arc::new(Node {
                id: format!("proxy-{address}"),
                address,
                ..Default::default()
            })
        });
        Client {
            inner: Arc::new(Inner {
                selector,
                wrapped: layer::stack(&self.wrappers, transport.clone()),
                transport,
                request_timeout: self.request_timeout,
                retry: self.retry,
                proxy,
            }),
        }
    }
}

/// Where one call goes and in which payload format.
#[derive(Debug, Clone, Copy)]
struct Target<'a> {
    service: &'a str,
    endpoint: &'a str,
    /// The gRPC path; `/` when only the endpoint name is known (the server then
    /// routes by the `Micro-Endpoint` header).
    path: &'a str,
    format: Format,
}

impl Client {
    /// A builder with the defaults (5 s timeout, 1 retry, pool of 100).
    pub fn builder() -> ClientBuilder {
        ClientBuilder {
            from_service: None,
            registry: None,
            selector: None,
            strategy: Strategy::default(),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            retry: RetryPolicy::default(),
            pool_size: DEFAULT_POOL_SIZE,
            dial_timeout: DEFAULT_DIAL_TIMEOUT,
            max_body: crate::server::DEFAULT_MAX_BODY,
            wrappers: Vec::new(),
            proxy: None,
            json_over_http1: false,
        }
    }

    /// A client that finds services in `registry`.
    pub fn new(registry: Arc<dyn Registry>) -> Self {
        Client::builder().registry(registry).build()
    }

    /// A unary call with typed messages (what generated clients use).
    pub async fn call<Req: Message, Rsp: Message>(
        &self,
        service: &str,
        method: &MethodRef,
        request: &Req,
        opts: &CallOptions,
    ) -> Result<Rsp, Error> {
        let target = Target {
            service,
            endpoint: method.endpoint,
            path: method.path,
            format: Format::Proto,
        };
        let framed = frame::encode_message(target.format, request)?;
        let bytes = self.unary(target, framed, opts).await?;
        target.format.decode(&bytes)
    }

    /// A unary call with JSON request and response, naming the endpoint only
    /// (`Greeter.Hello`): what the CLI, gateway and proxies use.
    pub async fn call_json(
        &self,
        service: &str,
        endpoint: &str,
        request: &serde_json::Value,
        opts: &CallOptions,
    ) -> Result<serde_json::Value, Error> {
        let payload = serde_json::to_vec(request)
            .map_err(|e| Error::bad_request(ID, format!("encoding request: {e}")))?;
        let bytes = self
            .call_raw(service, endpoint, Format::Json, payload.into(), opts)
            .await?;
        serde_json::from_slice(&bytes).map_err(|e| {
            Error::internal_server_error(ID, format!("{service} answered malformed JSON: {e}"))
        })
    }

    /// A unary call with an already encoded payload in `format`; returns the encoded
    /// response. For proxies and gateways that pass bytes through.
    pub async fn call_raw(
        &self,
        service: &str,
        endpoint: &str,
        format: Format,
        payload: Bytes,
        opts: &CallOptions,
    ) -> Result<Bytes, Error> {
        let target = Target {
            service,
            endpoint,
            path: "/",
            format,
        };
        let framed = frame::frame_bytes(&payload)?;
        self.unary(target, framed, opts).await
    }

    /// A server-streaming call: one request, a stream of responses.
    pub async fn server_stream<Req: Message, Rsp: Message>(
        &self,
        service: &str,
        method: &MethodRef,
        request: &Req,
        opts: &CallOptions,
    ) -> Result<Streaming<Rsp>, Error> {
        let target = Target {
            service,
            endpoint: method.endpoint,
            path: method.path,
            format: Format::Proto,
        };
        let framed = frame::encode_message(target.format, request)?;
        let raw = self.open_stream(target, Some(framed), None, opts).await?;
        Ok(Streaming::new(raw, target.format))
    }

    /// A server-streaming call with a JSON request, yielding JSON messages.
    pub async fn stream_json(
        &self,
        service: &str,
        endpoint: &str,
        request: &serde_json::Value,
        opts: &CallOptions,
    ) -> Result<impl Stream<Item = Result<serde_json::Value, Error>> + Send + 'static, Error> {
        let target = Target {
            service,
            endpoint,
            path: "/",
            format: Format::Json,
        };
        let payload = serde_json::to_vec(request)
            .map_err(|e| Error::bad_request(ID, format!("encoding request: {e}")))?;
        let raw = self
            .open_stream(target, Some(frame::frame_bytes(&payload)?), None, opts)
            .await?;
        Ok(raw.map(|item| {
            item.and_then(|bytes| {
                serde_json::from_slice(&bytes).map_err(|e| {
                    Error::internal_server_error(ID, format!("malformed JSON in stream: {e}"))
                })
            })
        }))
    }

    /// A call of any kind with already encoded messages in `format`, for proxies
    /// that pass bytes through both ways. `requests` is one message
    /// ([`RawBody::One`], retried like a unary call) or the messages as they come
    /// ([`RawBody::Stream`], one attempt). The answer is [`RawReply::One`] for unary
    /// and client-streaming endpoints, else [`RawReply::Stream`], which ends at the
    /// call's deadline.
    ///
    /// ```no_run
    /// # async fn demo(client: micro::Client) -> Result<(), micro::Error> {
    /// use micro::client::CallOptions;
    /// use micro::codec::Format;
    /// use micro::server::{MethodKind, RawBody, RawReply};
    ///
    /// let request = RawBody::One(br#"{"count":3}"#.as_slice().into());
    /// let opts = CallOptions::default();
    /// let reply = client
    ///     .call_raw_stream("greeter", "Greeter.Stream", Format::Json, MethodKind::ServerStreaming, request, &opts)
    ///     .await?;
    /// assert!(matches!(reply, RawReply::Stream(_)));
    /// # Ok(()) }
    /// ```
    pub async fn call_raw_stream(
        &self,
        service: &str,
        endpoint: &str,
        format: Format,
        kind: MethodKind,
        requests: RawBody,
        opts: &CallOptions,
    ) -> Result<RawReply, Error> {
        let target = Target {
            service,
            endpoint,
            path: "/",
            format,
        };
        if kind == MethodKind::Unary {
            let one = match requests {
                RawBody::One(payload) => payload,
                RawBody::Stream(mut s) => {
                    let first = s.next().await.transpose()?.ok_or_else(|| {
                        Error::bad_request(ID, format!("{endpoint}: the request has no message"))
                    })?;
                    if s.next().await.is_some() {
                        return Err(Error::bad_request(
                            ID,
                            format!("{endpoint} takes exactly one request message"),
                        ));
                    }
                    first
                }
            };
            let framed = frame::frame_bytes(&one)?;
            return self.unary(target, framed, opts).await.map(RawReply::One);
        }
        let (single, body) = match requests {
            RawBody::One(payload) if !kind.client_streams() => {
                (Some(frame::frame_bytes(&payload)?), None)
            }
            RawBody::One(payload) => {
                let framed = frame::frame_bytes(&payload)?;
                (None, Some(Body::full(framed)))
            }
            RawBody::Stream(s) => {
                let frames = s
                    .take_while(|item| futures_util::future::ready(item.is_ok()))
                    .filter_map(|item| {
                        futures_util::future::ready(
                            item.ok()
                                .and_then(|m| frame::frame_bytes(&m).ok())
                                .map(Frame::data),
                        )
                    });
                (None, Some(Body::stream(frames.boxed())))
            }
        };
        let mut raw = self.open_stream(target, single, body, opts).await?;
        if kind.server_streams() {
            return Ok(RawReply::Stream(raw));
        }
        let first = raw.next().await.transpose()?.ok_or_else(|| {
            Error::internal_server_error(ID, format!("{endpoint} answered no message"))
        })?;
        Ok(RawReply::One(first))
    }

    /// A client-streaming call: a stream of requests, one response.
    pub async fn client_stream<Req: Message, Rsp: Message, S>(
        &self,
        service: &str,
        method: &MethodRef,
        requests: S,
        opts: &CallOptions,
    ) -> Result<Rsp, Error>
    where
        S: Stream<Item = Req> + Send + 'static,
    {
        let mut responses = self
            .bidi_stream::<Req, Rsp, S>(service, method, requests, opts)
            .await?;
        let first = responses.message().await?.ok_or_else(|| {
            Error::internal_server_error(ID, format!("{} answered no message", method.endpoint))
        })?;
        Ok(first)
    }

    /// A bidirectional-streaming call: requests and responses flow independently.
    pub async fn bidi_stream<Req: Message, Rsp: Message, S>(
        &self,
        service: &str,
        method: &MethodRef,
        requests: S,
        opts: &CallOptions,
    ) -> Result<Streaming<Rsp>, Error>
    where
        S: Stream<Item = Req> + Send + 'static,
    {
        let target = Target {
            service,
            endpoint: method.endpoint,
            path: method.path,
            format: Format::Proto,
        };
        let format = target.format;
        let frames = requests.filter_map(move |req| {
            let frame = match frame::encode_message(format, &req) {
                Ok(data) => Some(Frame::data(data)),
                Err(e) => {
                    tracing::error!(error = %e, "dropping a request message that failed to encode");
                    None
                }
            };
            futures_util::future::ready(frame)
        });
        let raw = self
            .open_stream(target, None, Some(Body::stream(frames.boxed())), opts)
            .await?;
        Ok(Streaming::new(raw, format))
    }

    /// The deadline of a call: its timeout, or the deadline of the request being
    /// handled on this task if that comes sooner (deadline propagation).
    fn deadline(&self, opts: &CallOptions) -> Instant {
        let own = Instant::now() + opts.timeout.unwrap_or(self.inner.request_timeout);
        match crate::request::inherited_deadline() {
            Some(inherited) if inherited < own => inherited,
            _ => own,
        }
    }

    /// The node of one attempt: the pinned address, or a node the selector picks
    /// (kept in `picked` for [`Client::mark`]) among those not `tried` yet.
    async fn resolve(
        &self,
        target: &Target<'_>,
        opts: &CallOptions,
        tried: &[String],
        picked: &mut Option<Selected>,
        deadline: Instant,
    ) -> Result<Arc<Node>, Error> {
        // Selections that must wait (a registry read) are bounded by the deadline;
        // boxed, being rare, so that every call's future is not that much larger.
        let bounded = |select| {
            Box::pin(async move {
                tokio::time::timeout_at(deadline, select)
                    .await
                    .unwrap_or_else(|_| Err(deadline_passed(target.service, target.endpoint)))
            })
        };
        if let Some(address) = &opts.address {
            // The registry's record of the node at that address, if there is one,
            // says how to speak to it (`protocol: http-json`); else gRPC.
            let select = self
                .inner
                .selector
                .select(target.service, SelectOptions::new().address(address));
            let known = bounded(select)
                .await
                .ok()
                .map(|selected| selected.node().clone())
                .filter(|node| &node.address == address);
            return Ok(known.unwrap_or_else(|| {
                Arc::new(Node {
                    id: address.clone(),
                    address: address.clone(),
                    ..Default::default()
                })
            }));
        }
        if let Some(proxy) = &self.inner.proxy {
            return Ok(proxy.clone());
        }
        let mut select = SelectOptions::new()
            .tried(tried)
            .node_metadata(&opts.node_metadata)
            .endpoint(target.endpoint);
        if let Some(version) = &opts.version {
            select = select.version(version);
        }
        let selected = match self.inner.selector.select_now(target.service, select) {
            Some(done) => done?,
            None => bounded(self.inner.selector.select(target.service, select)).await?,
        };
        let node = selected.node().clone();
        *picked = Some(selected);
        Ok(node)
    }

    /// Tells the selector how an attempt on the node it picked went, and ends the
    /// attempt's in-flight count.
    fn mark<T>(&self, target: &Target<'_>, picked: Option<Selected>, result: &Result<T, Error>) {
        if let (Some(selected), Some(outcome)) = (picked, Outcome::of(result)) {
            self.inner.selector.mark(target.service, &selected, outcome);
        }
    }

    async fn unary(
        &self,
        target: Target<'_>,
        framed: Bytes,
        opts: &CallOptions,
    ) -> Result<Bytes, Error> {
        // Boxed: the attempts' state is large, and a caller's future that held it
        // would copy it at every level it is awaited through.
        match Box::pin(self.dispatch(target, Payload::Replayable(framed), opts, false)).await? {
            RawReply::One(bytes) => Ok(bytes),
            RawReply::Stream(_) => Err(Error::internal_server_error(
                ID,
                "a call wrapper answered a unary call with a stream",
            )),
        }
    }

    /// Opens a streaming call. A single-request call may be retried until a node
    /// answers; a client stream cannot be replayed, so it gets one attempt.
    async fn open_stream(
        &self,
        target: Target<'_>,
        single: Option<Bytes>,
        body: Option<Body>,
        opts: &CallOptions,
    ) -> Result<RawStream, Error> {
        let payload = match single {
            Some(framed) => Payload::Replayable(framed),
            None => Payload::Once(body),
        };
        let deadline = self.deadline(opts);
        match Box::pin(self.dispatch(target, payload, opts, true)).await? {
            RawReply::Stream(s) => Ok(until_deadline(
                s,
                deadline,
                deadline_passed(target.service, target.endpoint),
            )),
            RawReply::One(bytes) => {
                Ok(futures_util::stream::once(async move { Ok(bytes) }).boxed())
            }
        }
    }

    /// Runs the attempts of one call: pick a node, send the attempt through the call
    /// wrappers, tell the selector how the node did, and retry on another node while
    /// the error allows it, the policy and its budget allow it, and the deadline has
    /// not passed.
    async fn dispatch(
        &self,
        target: Target<'_>,
        mut payload: Payload,
        opts: &CallOptions,
        streams: bool,
    ) -> Result<RawReply, Error> {
        let deadline = self.deadline(opts);
        let policy = &self.inner.retry;
        let retries = match payload {
            Payload::Replayable(_) => opts.retries.unwrap_or(policy.retries),
            Payload::Once(_) => 0,
        };
        let service: Arc<str> = target.service.into();
        let endpoint: Arc<str> = target.endpoint.into();
        let path: Option<Arc<str>> = (target.path != "/").then(|| target.path.into());
        // The trace context of the request being handled travels on, unless the
        // caller set its own.
        let mut metadata = crate::request::inherited_trace();
        metadata.merge(&opts.metadata);
        if self.inner.proxy.is_some() && opts.address.is_none() {
            // The proxy finds the service by this header.
            metadata.insert("micro-service", target.service);
        }
        policy.on_call();
        let mut tried = Vec::new();
        let mut number = 0;
        loop {
            let mut picked = None;
            let body = payload.body();
            let once = async {
                let node = self
                    .resolve(&target, opts, &tried, &mut picked, deadline)
                    .await?;
                let attempt = Attempt {
                    service: service.clone(),
                    endpoint: endpoint.clone(),
                    node,
                    metadata: metadata.clone(),
                    deadline,
                    number,
                    path: path.clone(),
                    format: target.format,
                    body,
                    streams,
                };
                match &self.inner.wrapped {
                    Some(wrapped) => layer::call_once(wrapped, attempt).await,
                    None => self.inner.transport.attempt(attempt).await,
                }
            };
            let result = if self.inner.wrapped.is_none() {
                // The transport keeps the attempt's deadline itself (an HTTP/1.1
                // connection with its own timer: no timer per call), and so does a
                // selection that waits.
                once.await
            } else {
                // Wrappers may wait on anything. Boxed, so that the timeout takes
                // the attempt without copying it.
                tokio::time::timeout_at(deadline, Box::pin(once))
                    .await
                    .unwrap_or_else(|_| Err(deadline_passed(target.service, target.endpoint)))
            };
            // A retry goes to another node than this one.
            if let (Err(_), Some(selected)) = (&result, &picked) {
                tried.push(selected.node().id.clone());
            }
            self.mark(&target, picked, &result);
            let err = match result {
                Ok(reply) => return Ok(reply),
                Err(e) => e,
            };
            if number >= retries || !err.is_retryable(opts.idempotent) || Instant::now() >= deadline
            {
                return Err(err);
            }
            if !policy.allow_retry() {
                tracing::debug!(service = target.service, endpoint = target.endpoint, error = %err, "not retrying: the retry budget is spent");
                return Err(err);
            }
            number += 1;
            tracing::debug!(service = target.service, endpoint = target.endpoint, error = %err, "retrying");
            policy.wait(number, deadline).await;
        }
    }
}

/// The request body of a call: replayable for every attempt, or a stream that can
/// be sent once.
enum Payload {
    Replayable(Bytes),
    Once(Option<Body>),
}

impl Payload {
    fn body(&mut self) -> Body {
        match self {
            Payload::Replayable(framed) => Body::full(framed.clone()),
            Payload::Once(body) => body.take().unwrap_or(Body::Empty),
        }
    }
}

/// The error of a call whose deadline passed.
fn deadline_passed(service: &str, endpoint: &str) -> Error {
    Error::timeout(ID, format!("{service} {endpoint} did not answer in time"))
}

/// Errors visible in the response head: a non-200 status or a trailers-only error.
fn check_head(rsp: &Response<Incoming>) -> Result<(), Error> {
    if rsp.status() != StatusCode::OK {
        let ct = rsp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        // Error JSON in the body is read by read_unary; for the head we know the code.
        return Err(Error::new(
            ID,
            format!("HTTP {} ({ct})", rsp.status()),
            rsp.status().as_u16(),
        ));
    }
    if let Some(Err(e)) = status::read_status(rsp.headers(), ID) {
        return Err(e);
    }
    Ok(())
}

/// The error of a non-200 HTTP answer: the shared error JSON in its body, or one
/// made of its status and text.
async fn http_error(status: StatusCode, body: Incoming) -> Error {
    let body = http_body_util::Limited::new(body, 64 * 1024)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    http_error_text(status, &body)
}

/// The error of a non-gRPC answer with `status`: the shared error JSON in `body`,
/// or the status and text when the body is something else.
fn http_error_text(status: StatusCode, body: &[u8]) -> Error {
    let text = String::from_utf8_lossy(body);
    let err = Error::parse(&text);
    if err.code() == 500 && status.as_u16() != 500 {
        return Error::new(
            ID,
            format!("HTTP {}: {}", status, text.trim()),
            status.as_u16(),
        );
    }
    err
}

/// Reads a unary gRPC response: its one message, or the error in its status.
async fn read_unary(rsp: Response<Incoming>, max: usize) -> Result<Bytes, Error> {
    let (parts, body) = rsp.into_parts();
    if parts.status != StatusCode::OK {
        // Not a gRPC answer (a proxy or a non-micro server): the body may still hold
        // the shared error JSON.
        return Err(http_error(parts.status, body).await);
    }
    if let Some(Err(e)) = status::read_status(&parts.headers, ID) {
        return Err(e);
    }
    let collected = http_body_util::Limited::new(body, max + frame::HEADER_LEN)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                Error::payload_too_large(ID, format!("response is over the limit of {max} bytes"))
            } else {
                Error::service_unavailable(ID, format!("reading response: {e}"))
            }
        })?;
    let trailers = collected.trailers().cloned().unwrap_or_default();
    status::check_trailers(&trailers)?;
    let mut data = BytesMut::from(collected.to_bytes());
    let message = frame::decode_frame(&mut data, max)?
        .ok_or_else(|| Error::internal_server_error(ID, "the response has no message"))?;
    if !data.is_empty() {
        return Err(Error::bad_request(
            ID,
            "the endpoint answered more than one message: it streams, so call it as a stream \
             (Client::server_stream or stream_json, `micro stream`)",
        ));
    }
    Ok(message)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use futures_util::future::{BoxFuture, FutureExt};

    use super::*;
    use crate::registry::{Endpoint, Node, Service};

    async fn dead_address() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap().to_string()
    }

    #[tokio::test]
    async fn call_options_and_the_endpoint_filter_choose_nodes() {
        let registry = Arc::new(MemoryRegistry::new());
        let service = Service {
            name: "s".into(),
            version: "v1".into(),
            endpoints: vec![Endpoint {
                name: "S.Call".into(),
                ..Default::default()
            }],
            nodes: vec![Node {
                id: "n".into(),
                address: dead_address().await,
                ..Default::default()
            }],
            ..Default::default()
        };
        registry
            .register(&service, Default::default())
            .await
            .unwrap();
        let client = Client::new(registry);
        let call = |endpoint: &'static str, opts: CallOptions| {
            let client = client.clone();
            async move {
                client
                    .call_json("s", endpoint, &serde_json::json!({}), &opts.retries(0))
                    .await
                    .unwrap_err()
            }
        };
        let e = call("S.Call", CallOptions::default().version("v2")).await;
        assert_eq!(e.code(), 404);
        assert!(e.detail().starts_with("version filter"), "{e}");
        let e = call("S.Other", CallOptions::default()).await;
        assert_eq!(e.code(), 404);
        assert!(e.detail().starts_with("endpoint filter"), "{e}");
        let e = call("S.Call", CallOptions::default().node_metadata("zone", "eu")).await;
        assert_eq!(e.code(), 404);
        assert!(e.detail().starts_with("node metadata filter"), "{e}");
        // Filters that match reach the (dead) node; so do built-in endpoints.
        let e = call("S.Call", CallOptions::default().version("v1")).await;
        assert_eq!(e.code(), 503, "{e}");
        let e = call("Debug.Health", CallOptions::default()).await;
        assert_eq!(e.code(), 503, "{e}");
    }

    /// Picks the one node it was given and records what it is told.
    #[derive(Debug)]
    struct Recording {
        node: Arc<Node>,
        marks: Mutex<Vec<Outcome>>,
    }

    impl Selector for Recording {
        fn select<'a>(
            &'a self,
            _service: &'a str,
            _opts: SelectOptions<'a>,
        ) -> BoxFuture<'a, Result<Selected, Error>> {
            futures_util::future::ready(Ok(Selected::new(self.node.clone()))).boxed()
        }

        fn mark(&self, _service: &str, _selected: &Selected, outcome: Outcome) {
            self.marks.lock().unwrap().push(outcome);
        }
    }

    #[tokio::test]
    async fn every_attempt_is_marked() {
        let selector = Arc::new(Recording {
            node: Arc::new(Node {
                id: "dead".into(),
                address: dead_address().await,
                ..Default::default()
            }),
            marks: Mutex::default(),
        });
        let client = Client::builder().selector(selector.clone()).build();
        let opts = CallOptions::default().retries(2);
        let e = client
            .call_json("s", "S.Call", &serde_json::json!({}), &opts)
            .await
            .unwrap_err();
        assert_eq!(e.code(), 503);
        assert_eq!(*selector.marks.lock().unwrap(), [Outcome::Failure; 3]);
        // A pinned address bypasses the selector.
        let pinned = opts.address(selector.node.address.clone());
        client
            .call_json("s", "S.Call", &serde_json::json!({}), &pinned)
            .await
            .unwrap_err();
        assert_eq!(selector.marks.lock().unwrap().len(), 3);
    }
}
