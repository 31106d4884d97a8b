//! One attempt of a call on one node: the request of the client's wrapper point,
//! and the transport that sends it.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::{BoxFuture, FutureExt};
use futures_util::StreamExt;
use http::{header, HeaderValue, Method, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

use super::{check_head, http_error, read_unary, ID, USER_AGENT};
use crate::codec::Format;
use crate::registry::Node;
use crate::server::RawReply;
use crate::wire::pool::Pool;
use crate::wire::{frame, status, timeout, Body};
use crate::{Error, Metadata};

/// One attempt of a call, on one node: what a client wrapper
/// ([`CallWrapper`](crate::wrapper::CallWrapper)) sees and may change before it is
/// sent. The answer is a [`RawReply`]: one encoded message, or for streaming calls
/// the stream of them once the node has answered the head.
pub struct Attempt {
    pub(crate) service: Arc<str>,
    pub(crate) endpoint: Arc<str>,
    pub(crate) node: Arc<Node>,
    pub(crate) metadata: Metadata,
    pub(crate) deadline: Instant,
    pub(crate) number: u32,
    /// The gRPC path; `/` when only the endpoint name is known.
    pub(crate) path: Arc<str>,
    pub(crate) format: Format,
    pub(crate) body: Body,
    /// Whether the answer is a stream (it is read as one).
    pub(crate) streams: bool,
}

impl fmt::Debug for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Attempt")
            .field("service", &self.service)
            .field("endpoint", &self.endpoint)
            .field("node", &self.node.address)
            .field("number", &self.number)
            .finish()
    }
}

impl Attempt {
    /// The service called (`greeter`).
    pub fn service(&self) -> &str {
        &self.service
    }
    /// The endpoint called (`Greeter.Hello`).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }
    /// The node this attempt goes to (for a pinned address, a node whose id is the
    /// address).
    pub fn node(&self) -> &Node {
        &self.node
    }
    /// The metadata sent as headers: the caller's, plus the trace context of the
    /// request being handled, if any.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }
    /// The metadata, to add headers (a token, a trace context).
    pub fn metadata_mut(&mut self) -> &mut Metadata {
        &mut self.metadata
    }
    /// When this attempt must be answered; sent to the node as `grpc-timeout`.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }
    /// Brings the deadline forward (never later than the call's).
    pub fn shorten_deadline(&mut self, deadline: Instant) {
        self.deadline = self.deadline.min(deadline);
    }
    /// 0 for the first attempt of a call, 1 for the first retry, …
    pub fn number(&self) -> u32 {
        self.number
    }
    /// Whether the node answers with a stream.
    pub fn streams(&self) -> bool {
        self.streams
    }
}

/// What every attempt shares: the connection pool and the headers of this client.
pub(crate) struct TransportInner {
    pub(crate) from_service: Option<HeaderValue>,
    pub(crate) pool: Pool<Body>,
    pub(crate) max_body: usize,
    /// Time to connect to an `http-json` node.
    pub(crate) dial_timeout: std::time::Duration,
    /// Idle HTTP/1.1 connections to `http-json` nodes, by address.
    pub(crate) http1_idle: Http1Idle,
    /// Unary JSON calls to micro services go over HTTP/1.1 too
    /// ([`ClientBuilder::json_over_http1`](super::ClientBuilder::json_over_http1)).
    pub(crate) json_over_http1: bool,
}

/// A connection to an `http-json` node.
pub(crate) type Http1Sender = hyper::client::conn::http1::SendRequest<Full<bytes::Bytes>>;

/// Idle connections kept per `http-json` node (and thread).
const HTTP1_IDLE_PER_NODE: usize = 64;

/// Idle HTTP/1.1 connections by the thread that dialed them, then by address.
///
/// A connection is driven by a task on the runtime thread that dialed it; a
/// call made on that thread reuses it without waking another thread (with a
/// single-threaded runtime per core, as the API gateway runs, a call never
/// leaves its core).
#[derive(Default)]
pub(crate) struct Http1Idle(
    std::sync::Mutex<HashMap<std::thread::ThreadId, HashMap<String, Vec<Http1Sender>>>>,
);

impl Http1Idle {
    fn pop(&self, address: &str) -> Option<Http1Sender> {
        let mut idle = self.0.lock().unwrap_or_else(|p| p.into_inner());
        idle.get_mut(&std::thread::current().id())?
            .get_mut(address)?
            .pop()
    }

    fn push(&self, address: String, sender: Http1Sender) {
        let mut idle = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let senders = idle
            .entry(std::thread::current().id())
            .or_default()
            .entry(address)
            .or_default();
        if senders.len() < HTTP1_IDLE_PER_NODE {
            senders.push(sender);
        }
    }
}

/// Deadlines further away than this are not sent to `http-json` nodes.
const NO_TIMEOUT_BEYOND: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// The node metadata `protocol` of nodes that speak only JSON over HTTP/1.1.
pub const HTTP_JSON: &str = "http-json";

/// The innermost client service: sends an [`Attempt`] over a pooled HTTP/2
/// connection and reads the answer.
#[derive(Clone)]
pub(crate) struct Transport(pub(crate) Arc<TransportInner>);

impl Transport {
    fn request(&self, attempt: Attempt) -> Result<Request<Body>, Error> {
        let address = &attempt.node.address;
        let mut req = Request::new(attempt.body);
        *req.method_mut() = Method::POST;
        *req.uri_mut() = format!("http://{address}{}", attempt.path)
            .parse()
            .map_err(|e| Error::bad_request(ID, format!("bad address {address:?}: {e}")))?;
        let headers = req.headers_mut();
        attempt.metadata.write_headers(headers);
        // A trace context is new on every call: sent "never indexed", it does not
        // churn the HPACK tables of both ends (evicting the headers that repeat).
        if let Some(traceparent) = headers.get_mut("traceparent") {
            traceparent.set_sensitive(true);
        }
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(attempt.format.grpc_content_type()),
        );
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        headers.insert(header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
        if let Ok(v) = HeaderValue::from_str(&attempt.endpoint) {
            headers.insert("micro-endpoint", v);
        }
        let remaining = attempt.deadline.saturating_duration_since(Instant::now());
        if let Ok(v) = HeaderValue::from_str(&timeout::format_grpc_timeout(remaining)) {
            headers.insert("grpc-timeout", v);
        }
        if let Some(from) = &self.0.from_service {
            if !headers.contains_key("micro-from-service") {
                headers.insert("micro-from-service", from.clone());
            }
        }
        Ok(req)
    }

    /// Sends one request to one node and returns the response head.
    async fn send(&self, address: &str, req: Request<Body>) -> Result<Response<Incoming>, Error> {
        let mut sender = self.0.pool.get(address).await?;
        let sent = async {
            sender.ready().await?;
            sender.send_request(req).await
        };
        sent.await.map_err(|e| {
            self.0.pool.discard(address);
            Error::service_unavailable(ID, format!("calling {address}: {e}"))
        })
    }

    pub(crate) async fn attempt(&self, attempt: Attempt) -> Result<RawReply, Error> {
        let protocol = attempt.node.metadata.get("protocol").map(String::as_str);
        // A micro service (`grpc+json`) also takes JSON over HTTP/1.1 on its port.
        let unary_json = attempt.format == Format::Json && !attempt.streams;
        if protocol == Some(HTTP_JSON)
            || (self.0.json_over_http1
                && unary_json
                && protocol == Some(crate::registry::PROTOCOL_GRPC))
        {
            return self.attempt_http_json(attempt).await;
        }
        let node = attempt.node.clone();
        let streams = attempt.streams;
        let req = self.request(attempt)?;
        let rsp = self.send(&node.address, req).await?;
        if streams {
            check_head(&rsp)?;
            let frames = frame::FrameStream::new(rsp.into_body(), self.0.max_body)
                .with_trailers(status::check_trailers);
            Ok(RawReply::Stream(frames.boxed()))
        } else {
            Ok(RawReply::One(read_unary(rsp, self.0.max_body).await?))
        }
    }
}

impl Transport {
    /// Calls a node that speaks only JSON over HTTP/1.1: `POST /` with the
    /// `Micro-Endpoint` header and the JSON body (NDJSON lines for several
    /// messages); the answer is the JSON body, NDJSON lines for a stream, or the
    /// shared error JSON with its status.
    async fn attempt_http_json(&self, attempt: Attempt) -> Result<RawReply, Error> {
        let address = attempt.node.address.clone();
        if attempt.format != Format::Json {
            return Err(Error::not_implemented(
                ID,
                format!(
                    "{} ({address}) speaks only JSON over HTTP (protocol http-json): call {} \
                     with JSON (Client::call_json, `micro call`, or application/json / \
                     application/grpc+json through the proxy)",
                    attempt.service, attempt.endpoint
                ),
            ));
        }
        // The framed request message(s), unframed and joined as lines.
        let framed = attempt
            .body
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let mut buf = bytes::BytesMut::from(framed);
        let mut payload = bytes::BytesMut::new();
        while let Some(message) = frame::decode_frame(&mut buf, self.0.max_body)? {
            if !payload.is_empty() {
                payload.extend_from_slice(b"\n");
            }
            payload.extend_from_slice(&message);
        }
        let payload = payload.freeze();
        let mut headers = http::HeaderMap::new();
        attempt.metadata.write_headers(&mut headers);
        if let Ok(host) = HeaderValue::from_str(&address) {
            headers.insert(header::HOST, host);
        }
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
        if let Ok(v) = HeaderValue::from_str(&attempt.endpoint) {
            headers.insert("micro-endpoint", v);
        }
        let remaining = attempt.deadline.saturating_duration_since(Instant::now());
        // A stream with no deadline of its own runs under a year-long one; telling
        // the node that (31535999999ms) only overflows its timers (JavaScript's
        // are 32-bit): beyond a day, send no timeout at all.
        if remaining <= NO_TIMEOUT_BEYOND {
            if let Ok(v) = HeaderValue::from_str(&format!("{}ms", remaining.as_millis().max(1))) {
                headers.insert("timeout", v);
            }
        }
        if let Some(from) = &self.0.from_service {
            if !headers.contains_key("micro-from-service") {
                headers.insert("micro-from-service", from.clone());
            }
        }
        let make = || {
            let mut req = Request::new(Full::new(payload.clone()));
            *req.method_mut() = Method::POST;
            *req.uri_mut() = http::Uri::from_static("/");
            *req.headers_mut() = headers.clone();
            req
        };
        let unavailable = |e: &dyn fmt::Display| {
            Error::service_unavailable(ID, format!("calling {address}: {e}"))
        };
        // An idle connection first; one the node closed meanwhile is replaced by a
        // fresh one (the request was not processed).
        let (mut sender, rsp) = match self.idle_http1(&address).await {
            Some(mut sender) => match sender.send_request(make()).await {
                Ok(rsp) => (sender, rsp),
                Err(e) if !(e.is_canceled() || e.is_closed()) => return Err(unavailable(&e)),
                Err(_) => {
                    let mut sender = self.dial_http1(&address).await?;
                    let rsp = sender
                        .send_request(make())
                        .await
                        .map_err(|e| unavailable(&e))?;
                    (sender, rsp)
                }
            },
            None => {
                let mut sender = self.dial_http1(&address).await?;
                let rsp = sender
                    .send_request(make())
                    .await
                    .map_err(|e| unavailable(&e))?;
                (sender, rsp)
            }
        };
        let reusable = !rsp
            .headers()
            .get(header::CONNECTION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        if rsp.status() != http::StatusCode::OK {
            let status = rsp.status();
            return Err(http_error(status, rsp.into_body()).await);
        }
        let max = self.0.max_body;
        if attempt.streams {
            return Ok(RawReply::Stream(ndjson_lines(rsp.into_body(), max).boxed()));
        }
        let body = http_body_util::Limited::new(rsp.into_body(), max)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    Error::payload_too_large(
                        ID,
                        format!("response is over the limit of {max} bytes"),
                    )
                } else {
                    unavailable(&e)
                }
            })?;
        if reusable && sender.ready().await.is_ok() {
            self.0.http1_idle.push(address, sender);
        }
        Ok(RawReply::One(body.to_bytes()))
    }

    /// An idle connection to `address` that is still open.
    async fn idle_http1(&self, address: &str) -> Option<Http1Sender> {
        loop {
            let mut sender = self.0.http1_idle.pop(address)?;
            if !sender.is_closed() && sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    /// A new HTTP/1.1 connection to `address`.
    async fn dial_http1(&self, address: &str) -> Result<Http1Sender, Error> {
        let unavailable = |e: &dyn fmt::Display| {
            Error::service_unavailable(ID, format!("calling {address}: {e}"))
        };
        let tcp =
            tokio::time::timeout(self.0.dial_timeout, tokio::net::TcpStream::connect(address))
                .await
                .map_err(|_| unavailable(&"connect timed out"))?
                .map_err(|e| unavailable(&e))?;
        let _ = tcp.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| unavailable(&e))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "http-json connection ended with an error");
            }
        });
        Ok(sender)
    }
}

/// The messages of an NDJSON body as they arrive; a line `{"error":{..}}` ends the
/// stream with that error.
fn ndjson_lines(
    body: Incoming,
    max: usize,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, Error>> + Send + 'static {
    let state = (body, bytes::BytesMut::new(), false);
    futures_util::stream::unfold(state, move |(mut body, mut buf, done)| async move {
        if done {
            return None;
        }
        loop {
            if let Some(at) = buf.iter().position(|b| *b == b'\n') {
                let line = buf.split_to(at + 1).freeze();
                let line = line.slice(..at);
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let failed = line_message(line);
                let end = failed.is_err();
                return Some((failed, (body, buf, end)));
            }
            if buf.len() > max {
                let err = Error::payload_too_large(
                    ID,
                    format!("a streamed message is over the limit of {max} bytes"),
                );
                return Some((Err(err), (body, bytes::BytesMut::new(), true)));
            }
            match body.frame().await {
                // End of body: flush the last line, if any.
                None => {
                    return if buf.iter().all(u8::is_ascii_whitespace) {
                        None
                    } else {
                        let line = buf.split().freeze();
                        Some((line_message(line), (body, buf, true)))
                    };
                }
                Some(Err(e)) => {
                    let err = Error::service_unavailable(ID, format!("reading stream: {e}"));
                    return Some((Err(err), (body, bytes::BytesMut::new(), true)));
                }
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        buf.extend_from_slice(&data);
                    }
                }
            }
        }
    })
}

/// One NDJSON line: a message, or the error of a line `{"error":{..}}`.
fn line_message(line: bytes::Bytes) -> Result<bytes::Bytes, Error> {
    if line.starts_with(b"{\"error\"") {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&line) {
            if let Some(e) = v.get("error").filter(|e| e.is_object()) {
                if v.as_object().is_some_and(|o| o.len() == 1) {
                    return Err(Error::parse(&e.to_string()));
                }
            }
        }
    }
    Ok(line)
}

impl tower::Service<Attempt> for Transport {
    type Response = RawReply;
    type Error = Error;
    type Future = BoxFuture<'static, Result<RawReply, Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, attempt: Attempt) -> Self::Future {
        let transport = self.clone();
        async move { transport.attempt(attempt).await }.boxed()
    }
}
