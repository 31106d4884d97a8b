//! One attempt of a call on one node: the request of the client's wrapper point,
//! and the transport that sends it.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::{BoxFuture, FutureExt};
use futures_util::StreamExt;
use http::{header, HeaderValue, Method, Request, Response};
use hyper::body::Incoming;
use tokio::time::Instant;

use super::{check_head, read_unary, ID, USER_AGENT};
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
}

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
