//! One attempt of a call on one node: the request of the client's wrapper point,
//! and the transport that sends it.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::{BoxFuture, Either, FutureExt};
use futures_util::StreamExt;
use http::{header, HeaderValue, Method, Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::time::Instant;

use super::{check_head, http1, http_error_text, read_unary, ID, USER_AGENT};
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
    /// The gRPC path; `None` (sent as `/`) when only the endpoint name is known.
    pub(crate) path: Option<Arc<str>>,
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
    /// Idle HTTP/1.1 connections to `http-json` nodes, by thread and address.
    pub(crate) http1_idle: http1::Pool,
    /// Unary JSON calls to micro services go over HTTP/1.1 too
    /// ([`ClientBuilder::json_over_http1`](super::ClientBuilder::json_over_http1)).
    pub(crate) json_over_http1: bool,
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
        *req.uri_mut() = format!("http://{address}{}", attempt.path.as_deref().unwrap_or("/"))
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

    /// Sends the attempt and reads the answer (for a stream, its head) before the
    /// attempt's deadline.
    ///
    /// Not an `async fn`, which would keep its own copy of the attempt beside the
    /// one the chosen transport's future holds.
    pub(crate) fn attempt(
        &self,
        attempt: Attempt,
    ) -> impl Future<Output = Result<RawReply, Error>> + Send + '_ {
        let protocol = attempt.node.metadata.get("protocol").map(String::as_str);
        // A micro service (`grpc+json`) also takes JSON over HTTP/1.1 on its port.
        let unary_json = attempt.format == Format::Json && !attempt.streams;
        if protocol == Some(HTTP_JSON)
            || (self.0.json_over_http1
                && unary_json
                && protocol == Some(crate::registry::PROTOCOL_GRPC))
        {
            return Either::Left(self.attempt_http_json(attempt));
        }
        let deadline = attempt.deadline;
        let (service, endpoint) = (attempt.service.clone(), attempt.endpoint.clone());
        // Boxed: the HTTP/2 exchange's state is large.
        let exchange = tokio::time::timeout_at(deadline, Box::pin(self.attempt_http2(attempt)));
        Either::Right(async move {
            match exchange.await {
                Ok(answered) => answered,
                Err(_) => Err(super::deadline_passed(&service, &endpoint)),
            }
        })
    }

    async fn attempt_http2(&self, attempt: Attempt) -> Result<RawReply, Error> {
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
    ///
    /// Not an `async fn`: that would keep a second copy of the attempt in its
    /// state. What needs no waiting is worked out first; the rare cases are boxed.
    fn attempt_http_json(
        &self,
        mut attempt: Attempt,
    ) -> impl Future<Output = Result<RawReply, Error>> + Send + '_ {
        if attempt.format != Format::Json {
            let e = Error::not_implemented(
                ID,
                format!(
                    "{} ({}) speaks only JSON over HTTP (protocol http-json): call {} \
                     with JSON (Client::call_json, `micro call`, or application/json / \
                     application/grpc+json through the proxy)",
                    attempt.service, attempt.node.address, attempt.endpoint
                ),
            );
            return Either::Right(futures_util::future::ready(Err(e)).boxed());
        }
        let max = self.0.max_body;
        match std::mem::replace(&mut attempt.body, Body::Empty) {
            // One message, the common case: nothing to wait for.
            Body::Full(Some(framed)) => match json_payload(framed, max) {
                Ok(payload) => Either::Left(self.send_http_json(attempt, payload)),
                Err(e) => Either::Right(futures_util::future::ready(Err(e)).boxed()),
            },
            // Several messages (a client stream), read before the deadline.
            body => Either::Right(
                async move {
                    let collect = tokio::time::timeout_at(attempt.deadline, json_lines(body, max));
                    let payload = match collect.await {
                        Ok(payload) => payload?,
                        Err(_) => {
                            return Err(super::deadline_passed(&attempt.service, &attempt.endpoint))
                        }
                    };
                    self.send_http_json(attempt, payload).await
                }
                .boxed(),
            ),
        }
    }

    /// [`Transport::attempt_http_json`] once the request body is known.
    // Not an `async fn`: its arguments would be kept twice in the future's state
    // (as arguments, and as the locals they are moved into).
    #[allow(clippy::manual_async_fn)]
    fn send_http_json(
        &self,
        attempt: Attempt,
        payload: bytes::Bytes,
    ) -> impl Future<Output = Result<RawReply, Error>> + Send + '_ {
        async move {
            let address = attempt.node.address.as_str();
            let deadline = attempt.deadline;
            let (service, endpoint) = (&*attempt.service, &*attempt.endpoint);
            let passed = || super::deadline_passed(service, endpoint);
            let head = self.http_json_head(&attempt, address, payload.len());
            let unavailable = |e: &dyn fmt::Display| {
                Error::service_unavailable(ID, format!("calling {address}: {e}"))
            };
            // An idle connection first; one the node closed meanwhile (nothing came
            // back) is replaced by a fresh one: the node never saw the request.
            let reused = self.0.http1_idle.take(address);
            let was_reused = reused.is_some();
            let mut conn = match reused {
                Some(conn) => conn,
                // Boxed (here and on a retry below): connecting is rare, and its
                // state would make every attempt's future larger.
                None => Box::pin(self.dial_http1(address, deadline, passed)).await?,
            };
            // Reads and writes end at the deadline (the connection's own timer).
            conn.set_deadline(Some(deadline));
            let failed = |conn: &http1::Connection, e: Error| match conn.deadline_passed() {
                true => passed(),
                false => e,
            };
            let answer_head = match conn.exchange(&head, &payload).await {
                Ok(head) => head,
                Err(http1::Failure::ClosedBeforeAnswer(_)) if was_reused => {
                    conn = Box::pin(self.dial_http1(address, deadline, passed)).await?;
                    conn.set_deadline(Some(deadline));
                    match conn.exchange(&head, &payload).await {
                        Ok(head) => head,
                        Err(http1::Failure::ClosedBeforeAnswer(e)) => return Err(unavailable(&e)),
                        Err(http1::Failure::Error(e)) => return Err(failed(&conn, e)),
                    }
                }
                Err(http1::Failure::ClosedBeforeAnswer(e)) => return Err(unavailable(&e)),
                Err(http1::Failure::Error(e)) => return Err(failed(&conn, e)),
            };
            if answer_head.status != 200 {
                // The shared error JSON (capped: an error is never that long).
                let (answer, reusable) = match conn.read_body(&answer_head, ERROR_BODY_MAX).await {
                    Ok(read) => read,
                    Err(e) => return Err(failed(&conn, e)),
                };
                if reusable {
                    self.0.http1_idle.put(address, conn);
                }
                let status = http::StatusCode::from_u16(answer.status)
                    .unwrap_or(http::StatusCode::BAD_GATEWAY);
                return Err(http_error_text(status, &answer.body));
            }
            let max = self.0.max_body;
            if attempt.streams {
                // The stream's reader bounds it (`until_deadline`), with the call's error.
                conn.set_deadline(None);
                let body = Box::pin(conn.into_body_stream(&answer_head, max)?);
                return Ok(RawReply::Stream(ndjson_lines(body, max).boxed()));
            }
            let (answer, reusable) = match conn.read_body(&answer_head, max).await {
                Ok(read) => read,
                Err(e) => return Err(failed(&conn, e)),
            };
            if reusable {
                self.0.http1_idle.put(address, conn);
            }
            Ok(RawReply::One(answer.body))
        }
    }

    /// The request head of an `http-json` call: the attempt's metadata, then the
    /// transport's own headers. No `User-Agent`: every header costs the node a
    /// parse and a map entry per call (as a reverse proxy, nginx adds none either).
    fn http_json_head(&self, attempt: &Attempt, address: &str, body_len: usize) -> Vec<u8> {
        let remaining = attempt.deadline.saturating_duration_since(Instant::now());
        // A stream with no deadline of its own runs under a year-long one; telling
        // the node that (31535999999ms) only overflows its timers (JavaScript's
        // are 32-bit): beyond a day, send no timeout at all.
        let from_service = self
            .0
            .from_service
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .filter(|_| attempt.metadata.get("micro-from-service").is_none());
        let mut head = http1::RequestHead::post_root();
        for (name, value) in attempt.metadata.iter() {
            if !crate::metadata::is_transport_header(name) {
                head.header(name, value);
            }
        }
        head.header("host", address);
        head.known_good("content-type", "application/json");
        head.header("micro-endpoint", &attempt.endpoint);
        if remaining <= NO_TIMEOUT_BEYOND {
            head.timeout_ms(remaining.as_millis().max(1));
        }
        if let Some(from) = from_service {
            head.header("micro-from-service", from);
        }
        head.finish(body_len)
    }

    /// A new HTTP/1.1 connection to `address`, within the dial timeout and the
    /// call's deadline (`passed`: the error when that comes first).
    async fn dial_http1(
        &self,
        address: &str,
        deadline: Instant,
        passed: impl FnOnce() -> Error,
    ) -> Result<http1::Connection, Error> {
        let unavailable = |e: &dyn fmt::Display| {
            Error::service_unavailable(ID, format!("calling {address}: {e}"))
        };
        let dial_until = Instant::now() + self.0.dial_timeout;
        match tokio::time::timeout_at(
            dial_until.min(deadline),
            http1::Connection::connect(address),
        )
        .await
        {
            Ok(connected) => connected.map_err(|e| unavailable(&e)),
            Err(_) if deadline < dial_until => Err(passed()),
            Err(_) => Err(unavailable(&"connect timed out")),
        }
    }
}

/// The most of an error answer's body that is read.
const ERROR_BODY_MAX: usize = 64 * 1024;

/// The framed request message(s) of an attempt, unframed and joined as lines.
async fn json_lines(body: Body, max: usize) -> Result<bytes::Bytes, Error> {
    let framed = match body {
        Body::Full(Some(framed)) => framed,
        body => body
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default(),
    };
    json_payload(framed, max)
}

/// [`json_lines`] of a body read whole.
fn json_payload(framed: bytes::Bytes, max: usize) -> Result<bytes::Bytes, Error> {
    // The common case, one message: its bytes, without a copy.
    if let Some(len) = frame::single_frame_len(&framed) {
        if len > max {
            return Err(Error::payload_too_large(
                ID,
                format!("the request is over the limit of {max} bytes"),
            ));
        }
        return Ok(framed.slice(frame::HEADER_LEN..));
    }
    let mut buf = bytes::BytesMut::from(framed);
    let mut payload = bytes::BytesMut::new();
    while let Some(message) = frame::decode_frame(&mut buf, max)? {
        if !payload.is_empty() {
            payload.extend_from_slice(b"\n");
        }
        payload.extend_from_slice(&message);
    }
    Ok(payload.freeze())
}

/// The messages of an NDJSON body as they arrive; a line `{"error":{..}}` ends the
/// stream with that error.
fn ndjson_lines(
    body: impl futures_util::Stream<Item = Result<bytes::Bytes, Error>> + Send + Unpin + 'static,
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
            match body.next().await {
                // End of body: flush the last line, if any.
                None => {
                    return if buf.iter().all(u8::is_ascii_whitespace) {
                        None
                    } else {
                        let line = buf.split().freeze();
                        Some((line_message(line), (body, buf, true)))
                    };
                }
                Some(Err(e)) => return Some((Err(e), (body, bytes::BytesMut::new(), true))),
                Some(Ok(data)) => buf.extend_from_slice(&data),
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
