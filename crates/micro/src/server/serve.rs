//! Accepting connections and dispatching requests: one port, HTTP/1.1 and HTTP/2
//! (h2c) told apart per connection, gRPC and JSON told apart per request by content
//! type. Plain HTTP/1.1 requests are served by micro's own loop ([`super::http1`]),
//! everything else by hyper. Stopping is graceful: stop accepting, let in-flight
//! requests finish (bounded by the drain timeout), then return.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::FutureExt;
use http::{header, HeaderMap, HeaderName, Method, Request, Response, Version};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::time::Instant;

use super::method::{BoxMethodHandler, RawReply, RawRequest};
use super::router::{Route, Router};
use super::{grpc, http1, json, RequestBody};
use crate::codec::ContentType;
use crate::request::CallContext;
use crate::streaming::until_deadline;
use crate::wire::{timeout, Body};
use crate::{Error, Metadata};

/// Counters every server keeps; `Debug.Stats` reports them.
#[derive(Debug)]
pub(crate) struct Stats {
    pub(crate) started: SystemTime,
    pub(crate) started_at: Instant,
    pub(crate) requests: AtomicU64,
    pub(crate) errors: AtomicU64,
}

impl Stats {
    pub(crate) fn new() -> Self {
        Stats {
            started: SystemTime::now(),
            started_at: Instant::now(),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        }
    }
}

/// What every request of one server shares.
pub(crate) struct Shared {
    /// The service name: the `id` of errors the transport raises.
    pub(crate) name: Arc<str>,
    pub(crate) max_body: usize,
    /// Longest a client may take to send request headers or a unary body.
    pub(crate) read_timeout: Duration,
    pub(crate) router: Router,
    /// Plain HTTP pages served on GET (`/metrics`).
    pub(crate) routes: Vec<super::HttpRoute>,
    pub(crate) stats: Arc<Stats>,
}

impl Shared {
    /// Calls the endpoint through its wrappers, counting requests and errors; a
    /// streamed answer ends at the deadline.
    pub(crate) async fn call(
        &self,
        route: &Route,
        req: RawRequest,
        deadline: Option<Instant>,
    ) -> Result<RawReply, Error> {
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let result = match &route.wrapped {
            Some(wrapped) => crate::wrapper::layer::call_once(wrapped, req).await,
            None => route.endpoint().call_guarded(req).await,
        };
        let result = match (result, deadline) {
            (Ok(RawReply::Stream(s)), Some(at)) => Ok(RawReply::Stream(until_deadline(
                s,
                at,
                deadline_error(&self.name, &route.endpoint),
            ))),
            (other, _) => other,
        };
        if result.is_err() {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    async fn handle(&self, req: Request<RequestBody>, remote: SocketAddr) -> Response<Body> {
        let (parts, body) = req.into_parts();
        if parts.method == Method::GET || parts.method == Method::HEAD {
            if let Some(route) = self.routes.iter().find(|r| r.path() == parts.uri.path()) {
                let head_only = parts.method == Method::HEAD;
                let (rsp_parts, bytes) = route.serve(parts).await.into_parts();
                let body = if head_only {
                    Body::Empty
                } else {
                    Body::full(bytes)
                };
                return Response::from_parts(rsp_parts, body);
            }
        }
        let content_type = match parts.headers.get(header::CONTENT_TYPE) {
            // A client that sends no content type at all means JSON.
            None => Some(ContentType::Json),
            Some(v) => v.to_str().ok().and_then(ContentType::parse),
        };
        let endpoint = parts
            .headers
            .get(&MICRO_ENDPOINT)
            .and_then(|v| v.to_str().ok());
        // A proxy's client names the service it means (`micro-service`).
        let for_service = parts
            .headers
            .get(&MICRO_SERVICE)
            .and_then(|v| v.to_str().ok());
        let route = |path: &str| self.router.route(&self.name, path, endpoint, for_service);
        match content_type {
            Some(ContentType::Grpc(format)) => {
                if parts.version != Version::HTTP_2 {
                    return json::error_response(&Error::bad_request(
                        self.name.as_ref(),
                        "gRPC needs HTTP/2; use Content-Type: application/json over HTTP/1.1",
                    ));
                }
                let route = match route(parts.uri.path()) {
                    Ok(r) => r,
                    Err(e) => return grpc::error_response(format, &e),
                };
                let deadline = match header_deadline(&parts.headers, GRPC_TIMEOUT) {
                    Ok(d) => d,
                    Err(e) => return grpc::error_response(format, &e),
                };
                let ctx = self.context(&route, &parts, deadline, remote);
                grpc::handle(self, route, format, ctx, &parts.headers, body).await
            }
            Some(ContentType::Json) => {
                if parts.method != Method::POST {
                    let mut rsp = json::error_response(&Error::method_not_allowed(
                        self.name.as_ref(),
                        format!("{} is not allowed; call endpoints with POST", parts.method),
                    ));
                    rsp.headers_mut()
                        .insert(header::ALLOW, http::HeaderValue::from_static("POST"));
                    return rsp;
                }
                let route = match route(parts.uri.path()) {
                    Ok(r) => r,
                    Err(e) => return json::error_response(&e),
                };
                let deadline = match header_deadline(&parts.headers, HTTP_TIMEOUT) {
                    Ok(d) => d,
                    Err(e) => return json::error_response(&e),
                };
                let ctx = self.context(&route, &parts, deadline, remote);
                let sse = json::wants_sse(&parts.headers);
                let length = parts
                    .headers
                    .get(header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok());
                json::handle(self, route, ctx, length, sse, body).await
            }
            None => json::error_response(&Error::unsupported_media_type(
                self.name.as_ref(),
                "unsupported Content-Type: send application/json, application/grpc, \
                 application/grpc+proto or application/grpc+json",
            )),
        }
    }

    fn context(
        &self,
        route: &Route,
        parts: &http::request::Parts,
        deadline: Option<Instant>,
        remote: SocketAddr,
    ) -> CallContext {
        CallContext {
            service: self.name.clone(),
            endpoint: route.endpoint.clone(),
            metadata: Metadata::from_headers(&parts.headers),
            deadline,
            remote_addr: Some(remote),
            path: parts.uri.path().into(),
        }
    }
}

fn deadline_error(service: &str, endpoint: &str) -> Error {
    Error::timeout(
        service,
        format!("{endpoint} did not finish before the caller's deadline"),
    )
}

/// The innermost handler service: runs one endpoint's handler with the request's
/// deadline and trace context inherited by the calls it makes, stops it at the
/// deadline, and turns a panic into a 500 instead of a dropped connection.
#[derive(Clone)]
pub(crate) struct EndpointService {
    pub(crate) service: Arc<str>,
    pub(crate) endpoint: Arc<str>,
    pub(crate) handler: BoxMethodHandler,
}

impl EndpointService {
    pub(crate) async fn call_guarded(&self, req: RawRequest) -> Result<RawReply, Error> {
        let deadline = req.ctx.deadline;
        let inherited = crate::request::Inherited::of(&req.ctx);
        let call = AssertUnwindSafe(crate::request::with_inherited(
            inherited,
            self.handler.call(req),
        ))
        .catch_unwind();
        let outcome = match deadline {
            Some(at) => tokio::time::timeout_at(at, call).await.ok(),
            None => Some(call.await),
        };
        match outcome {
            None => Err(deadline_error(&self.service, &self.endpoint)),
            Some(Err(_panic)) => {
                tracing::error!(endpoint = %self.endpoint, "handler panicked");
                Err(Error::internal_server_error(
                    self.service.as_ref(),
                    format!("{} failed unexpectedly", self.endpoint),
                ))
            }
            Some(Ok(result)) => result,
        }
    }
}

impl tower::Service<RawRequest> for EndpointService {
    type Response = RawReply;
    type Error = Error;
    type Future = futures_util::future::BoxFuture<'static, Result<RawReply, Error>>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: RawRequest) -> Self::Future {
        let endpoint = self.clone();
        async move { endpoint.call_guarded(req).await }.boxed()
    }
}

// Header names looked up on every call, made once: a lookup by `&str` parses and
// lower-cases the name each time before it can hash it.
const MICRO_ENDPOINT: HeaderName = HeaderName::from_static("micro-endpoint");
const MICRO_SERVICE: HeaderName = HeaderName::from_static("micro-service");

/// A header that carries a deadline, how to parse it, and what a valid value is.
struct DeadlineHeader {
    /// As the error message names it.
    name: &'static str,
    key: HeaderName,
    parse: fn(&str) -> Option<Duration>,
    expected: &'static str,
}

const GRPC_TIMEOUT: DeadlineHeader = DeadlineHeader {
    name: "grpc-timeout",
    key: HeaderName::from_static("grpc-timeout"),
    parse: timeout::parse_grpc_timeout,
    expected: "up to 8 digits and a unit H, M, S, m, u or n (e.g. 500m)",
};

const HTTP_TIMEOUT: DeadlineHeader = DeadlineHeader {
    name: "Timeout",
    key: HeaderName::from_static("timeout"),
    parse: timeout::parse_http_timeout,
    expected: "seconds (30) or a duration such as 500ms, 2s or 1m",
};

/// Reads a whole request body within the read timeout: a client that trickles its
/// body cannot hold a request open forever.
/// `framing` is how many bytes of the body are framing rather than message (the
/// 5-byte gRPC prefix), allowed on top of the `max` message size.
pub(crate) async fn read_body(
    mut body: RequestBody,
    max: usize,
    framing: usize,
    read_timeout: Duration,
) -> Result<bytes::Bytes, Error> {
    use http_body_util::BodyExt;
    let too_large = || {
        Error::payload_too_large(
            "micro.server",
            format!("request body is over the limit of {max} bytes"),
        )
    };
    let body = match body {
        // Read with the head already (within the read timeout, by http1).
        RequestBody::Whole(_) => {
            let whole = body.take_whole().unwrap_or_default();
            if whole.len() > max + framing {
                return Err(too_large());
            }
            return Ok(whole);
        }
        RequestBody::Failed(e) => {
            return Err(e.unwrap_or_else(|| Error::bad_request("micro.server", "no request body")))
        }
        RequestBody::Streamed(incoming) => incoming,
    };
    let collect = http_body_util::Limited::new(body, max + framing).collect();
    match tokio::time::timeout(read_timeout, collect).await {
        Err(_) => Err(Error::timeout(
            "micro.server",
            format!("the request body did not arrive within {read_timeout:?}"),
        )),
        Ok(Ok(c)) => Ok(c.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Ok(Err(e)) => Err(Error::bad_request(
            "micro.server",
            format!("reading the request body: {e}"),
        )),
    }
}

fn header_deadline(headers: &HeaderMap, header: DeadlineHeader) -> Result<Option<Instant>, Error> {
    let Some(value) = headers.get(&header.key) else {
        return Ok(None);
    };
    let d = value.to_str().ok().and_then(header.parse).ok_or_else(|| {
        Error::bad_request(
            "micro.server",
            format!(
                "malformed {} header {value:?}: expected {}",
                header.name, header.expected
            ),
        )
    })?;
    Ok(Some(Instant::now() + d))
}

/// The largest request head micro's own HTTP/1.1 loop reads; a larger one goes
/// to hyper with the connection, which answers it by its own limits.
const MAX_HEADER_BYTES: usize = 64 * 1024;

impl http1::Respond for Shared {
    type Body = Body;

    fn respond(
        &self,
        req: Request<RequestBody>,
        peer: SocketAddr,
    ) -> impl Future<Output = Response<Body>> + Send {
        self.handle(req, peer)
    }
}

/// Serves `shared` on `listener` until `shutdown` completes, then drains.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    drain_timeout: Duration,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // A client that trickles its headers must not hold a connection forever.
        .header_read_timeout(shared.read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(10));
    let graceful = GracefulShutdown::new();
    // Plain HTTP/1.1 connections are micro's own loop's (http1) until their first
    // request it does not take; then hyper's. Both finish what is in flight.
    let stop = Arc::new(http1::Stop::default());
    let limits = Arc::new(http1::Limits {
        error_id: "micro.server".into(),
        header_timeout: shared.read_timeout,
        body_timeout: shared.read_timeout,
        max_header_bytes: MAX_HEADER_BYTES,
    });
    // Every connection holds a sender; `all_closed` ends once the last is gone.
    let (open, mut all_closed) = tokio::sync::mpsc::channel::<()>(1);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, remote)) => {
                    let _ = stream.set_nodelay(true);
                    let shared = shared.clone();
                    let (limits, stop, open) = (limits.clone(), stop.clone(), open.clone());
                    let builder = builder.clone();
                    let watcher = graceful.watcher();
                    tokio::spawn(async move {
                        let _open = open;
                        let handover = match http1::serve(stream, remote, &*shared, &limits, &stop).await {
                            Ok(()) => return,
                            Err(handover) => handover,
                        };
                        let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                            let shared = shared.clone();
                            let req = req.map(RequestBody::Streamed);
                            async move { Ok::<_, Infallible>(shared.handle(req, remote).await) }
                        });
                        let conn = builder.serve_connection(TokioIo::new(handover.into_io()), svc);
                        if let Err(e) = watcher.watch(conn.into_owned()).await {
                            tracing::debug!(%remote, error = %e, "connection ended with an error");
                        }
                    });
                }
                Err(e) => {
                    // Out of file descriptors or similar: back off instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    stop.stop();
    drop(open);
    let drained = async {
        tokio::join!(graceful.shutdown(), all_closed.recv());
    };
    if tokio::time::timeout(drain_timeout, drained).await.is_err() {
        tracing::warn!(
            ?drain_timeout,
            "in-flight requests did not finish within the drain timeout; closing anyway"
        );
    }
}
