//! The four tower services of the `trace` wrapper: a SERVER span around each
//! handler, a CLIENT span around each call attempt, a PRODUCER span around each
//! publish and a CONSUMER span around each delivery.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock, RwLock};
use std::task::{ready, Context, Poll};

use futures_util::future::{BoxFuture, FutureExt};
use futures_util::StreamExt;
use pin_project_lite::pin_project;
use tower::Service;

use super::attr;
use super::context::{TraceContext, TRACEPARENT, TRACESTATE};
use super::span::{ActiveSpan, SpanKind, SpanStatus};
use super::Sink;
use crate::broker::{Delivery, Publication, HEADER_ID};
use crate::client::Attempt;
use crate::request::{with_inherited, Inherited};
use crate::server::{RawReply, RawRequest};
use crate::{Error, Metadata};

/// The valid parent context in a `traceparent` value, if any.
fn parent_of(traceparent: Option<&str>) -> Option<TraceContext> {
    traceparent.and_then(TraceContext::parse)
}

/// Sets the span's end state from a call's result; a streamed answer keeps the
/// span open until the stream ends. `callers_side`: every failure is an error
/// (on the serving side a 4xx is the caller's fault and leaves the status unset).
fn finish(
    mut span: ActiveSpan,
    result: Result<RawReply, Error>,
    callers_side: bool,
) -> Result<RawReply, Error> {
    match result {
        Ok(RawReply::One(bytes)) => {
            span.status(SpanStatus::Ok);
            Ok(RawReply::One(bytes))
        }
        Ok(RawReply::Stream(stream)) if span.recording() => {
            span.status(SpanStatus::Ok);
            Ok(RawReply::Stream(
                stream
                    .map(move |item| {
                        if let Err(e) = &item {
                            span.fail(e, callers_side || e.code() >= 500);
                        }
                        item
                    })
                    .boxed(),
            ))
        }
        Ok(stream) => Ok(stream),
        Err(e) => {
            span.fail(&e, callers_side || e.code() >= 500);
            Err(e)
        }
    }
}

/// `micro`, shared by every span instead of allocated per span.
fn micro() -> Arc<str> {
    static MICRO: OnceLock<Arc<str>> = OnceLock::new();
    MICRO.get_or_init(|| "micro".into()).clone()
}

/// The names an endpoint's spans carry, split once: `Greeter.Hello` as
/// `rpc.service` = `Greeter`, `rpc.method` = `Hello`.
pub(super) struct EndpointNames {
    endpoint: Arc<str>,
    split: Option<(Arc<str>, Arc<str>)>,
}

impl EndpointNames {
    fn new(endpoint: &Arc<str>) -> Self {
        EndpointNames {
            endpoint: endpoint.clone(),
            split: endpoint
                .rsplit_once('.')
                .map(|(svc, method)| (svc.into(), method.into())),
        }
    }
}

/// Most entries a [`Memo`] keeps; past that, values are made per span.
const MEMO_SIZE: usize = 64;

/// A small memo of values derived from span inputs that repeat (endpoints, peer
/// addresses, node addresses), so that a span does not allocate them again.
/// Shared by the clones of one layer's service; bounded, never evicts.
pub(super) struct Memo<K, V> {
    entries: RwLock<Vec<(K, V)>>,
}

impl<K, V> Default for Memo<K, V> {
    fn default() -> Self {
        Memo {
            entries: RwLock::new(Vec::new()),
        }
    }
}

impl<K, V: Clone> Memo<K, V> {
    fn get<Q>(
        &self,
        key: &Q,
        matches: impl Fn(&K, &Q) -> bool,
        make: impl FnOnce(&Q) -> (K, V),
    ) -> V
    where
        Q: ?Sized,
    {
        if let Ok(entries) = self.entries.read() {
            if let Some((_, v)) = entries.iter().find(|(k, _)| matches(k, key)) {
                return v.clone();
            }
        }
        let (k, v) = make(key);
        if let Ok(mut entries) = self.entries.write() {
            if entries.len() < MEMO_SIZE && !entries.iter().any(|(e, _)| matches(e, key)) {
                entries.push((k, v.clone()));
            }
        }
        v
    }
}

/// The `rpc.*` and `micro.*` attributes of a call of `endpoint`.
fn rpc_attributes(span: &mut ActiveSpan, service: &Arc<str>, names: &EndpointNames) {
    span.set(attr::RPC_SYSTEM, micro());
    span.set(attr::MICRO_SERVICE, service.clone());
    span.set(attr::MICRO_ENDPOINT, names.endpoint.clone());
    if let Some((svc, method)) = &names.split {
        span.set(attr::RPC_SERVICE, svc.clone());
        span.set(attr::RPC_METHOD, method.clone());
    }
}

pin_project! {
    /// A call's future with its span, which ends with the call's result (or when
    /// the call is dropped unfinished); no allocation of its own.
    pub(super) struct Traced<F> {
        #[pin]
        inner: F,
        span: Option<ActiveSpan>,
        callers_side: bool,
    }
}

impl<F> Future for Traced<F>
where
    F: Future<Output = Result<RawReply, Error>>,
{
    type Output = Result<RawReply, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        Poll::Ready(match this.span.take() {
            Some(span) => finish(span, result, *this.callers_side),
            None => result,
        })
    }
}

/// A SERVER span around a handler; the handler (and every call and publish it
/// makes) sees the span as its trace context.
#[derive(Clone)]
pub(super) struct ServerTrace<S> {
    pub(super) inner: S,
    pub(super) sink: Arc<Sink>,
    /// Each route has its own stack of wrappers: its endpoint's names, found once.
    pub(super) route: Arc<OnceLock<Arc<EndpointNames>>>,
    /// `client.address` of the peers seen.
    pub(super) peers: Arc<Memo<IpAddr, Arc<str>>>,
}

impl<S> ServerTrace<S> {
    /// A SERVER span layer around `inner`.
    pub(super) fn new(inner: S, sink: Arc<Sink>) -> Self {
        ServerTrace {
            inner,
            sink,
            route: Arc::default(),
            peers: Arc::default(),
        }
    }

    fn names(&self, endpoint: &Arc<str>) -> Arc<EndpointNames> {
        let names = self
            .route
            .get_or_init(|| Arc::new(EndpointNames::new(endpoint)))
            .clone();
        if names.endpoint == *endpoint {
            names
        } else {
            // A stack shared by several endpoints.
            Arc::new(EndpointNames::new(endpoint))
        }
    }
}

impl<S> Service<RawRequest> for ServerTrace<S>
where
    S: Service<RawRequest, Response = RawReply, Error = Error>,
    S::Future: Send + 'static,
{
    type Response = RawReply;
    type Error = Error;
    type Future = Traced<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: RawRequest) -> Self::Future {
        let parent = parent_of(req.ctx.metadata().get(TRACEPARENT));
        let ctx = self.sink.context(parent.as_ref());
        let metadata = req.ctx.metadata_mut();
        metadata.insert(TRACEPARENT, ctx.to_traceparent());
        if parent.is_none() {
            metadata.remove(TRACESTATE);
        }
        let mut span = ActiveSpan::start(
            &self.sink,
            &ctx,
            parent.map(|p| p.span_id),
            SpanKind::Server,
            req.ctx.endpoint.clone(),
        );
        if span.recording() {
            let names = self.names(&req.ctx.endpoint);
            rpc_attributes(&mut span, &req.ctx.service, &names);
            if let Some(from) = req.ctx.from_service() {
                span.set(attr::FROM_SERVICE, from);
            }
            if let Some(peer) = req.ctx.remote_addr() {
                let ip = self.peers.get(
                    &peer.ip(),
                    |k, ip| k == ip,
                    |ip| (*ip, ip.to_string().into()),
                );
                span.set(attr::CLIENT_ADDRESS, ip);
            }
        }
        Traced {
            inner: self.inner.call(req),
            span: Some(span),
            callers_side: false,
        }
    }
}

/// A CLIENT span around one attempt of a call, a child of the trace context the
/// attempt carries (the handler's, when called from one), sent on as its own.
#[derive(Clone)]
pub(super) struct ClientTrace<S> {
    pub(super) inner: S,
    pub(super) sink: Arc<Sink>,
    /// The names of the endpoints called.
    pub(super) endpoints: Arc<Memo<Arc<str>, Arc<EndpointNames>>>,
    /// `server.address` and `server.port` of the node addresses called.
    pub(super) nodes: Arc<Memo<String, NodeAddress>>,
}

/// A node's address as span attributes: the host, and the port when it has one.
#[derive(Clone)]
pub(super) struct NodeAddress {
    host: Arc<str>,
    port: Option<i64>,
}

impl NodeAddress {
    fn parse(address: &str) -> Self {
        match address.rsplit_once(':') {
            Some((host, port)) if port.parse::<u16>().is_ok() => NodeAddress {
                host: host.into(),
                port: Some(port.parse::<i64>().unwrap_or(0)),
            },
            _ => NodeAddress {
                host: address.into(),
                port: None,
            },
        }
    }
}

impl<S> ClientTrace<S> {
    /// A CLIENT span layer around `inner`.
    pub(super) fn new(inner: S, sink: Arc<Sink>) -> Self {
        ClientTrace {
            inner,
            sink,
            endpoints: Arc::default(),
            nodes: Arc::default(),
        }
    }
}

impl<S> Service<Attempt> for ClientTrace<S>
where
    S: Service<Attempt, Response = RawReply, Error = Error>,
    S::Future: Send + 'static,
{
    type Response = RawReply;
    type Error = Error;
    type Future = Traced<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut attempt: Attempt) -> Self::Future {
        let parent = parent_of(attempt.metadata.get(TRACEPARENT));
        let ctx = self.sink.context(parent.as_ref());
        attempt.metadata.insert(TRACEPARENT, ctx.to_traceparent());
        if parent.is_none() {
            attempt.metadata.remove(TRACESTATE);
        }
        let mut span = ActiveSpan::start(
            &self.sink,
            &ctx,
            parent.map(|p| p.span_id),
            SpanKind::Client,
            attempt.endpoint.clone(),
        );
        if span.recording() {
            let names = self.endpoints.get(
                &attempt.endpoint,
                |k, e| k == e,
                |e| (e.clone(), Arc::new(EndpointNames::new(e))),
            );
            rpc_attributes(&mut span, &attempt.service, &names);
            let node = self.nodes.get(
                attempt.node.address.as_str(),
                |k, a| k == a,
                |a| (a.to_string(), NodeAddress::parse(a)),
            );
            span.set(attr::SERVER_ADDRESS, node.host);
            if let Some(port) = node.port {
                span.set(attr::SERVER_PORT, port);
            }
            if attempt.number > 0 {
                span.set(attr::ATTEMPT, i64::from(attempt.number));
            }
        }
        Traced {
            inner: self.inner.call(attempt),
            span: Some(span),
            callers_side: true,
        }
    }
}

/// A PRODUCER span around a publish; the message carries it as its trace context.
#[derive(Clone)]
pub(super) struct ProducerTrace<S> {
    pub(super) inner: S,
    pub(super) sink: Arc<Sink>,
}

impl<S> Service<Publication> for ProducerTrace<S>
where
    S: Service<Publication, Response = (), Error = Error>,
    S::Future: Send + 'static,
{
    type Response = ();
    type Error = Error;
    type Future = BoxFuture<'static, Result<(), Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut publication: Publication) -> Self::Future {
        let headers = &mut publication.message.headers;
        let parent = parent_of(headers.get(TRACEPARENT).map(String::as_str));
        let ctx = self.sink.context(parent.as_ref());
        headers.insert(TRACEPARENT.to_string(), ctx.to_traceparent());
        if parent.is_none() {
            headers.remove(TRACESTATE);
        }
        let mut span = ActiveSpan::start(
            &self.sink,
            &ctx,
            parent.map(|p| p.span_id),
            SpanKind::Producer,
            format!("publish {}", publication.topic).into(),
        );
        if span.recording() {
            messaging_attributes(&mut span, &publication.topic, headers, "publish");
        }
        let fut = self.inner.call(publication);
        async move {
            let result = fut.await;
            match &result {
                Ok(()) => span.status(SpanStatus::Ok),
                Err(e) => span.fail(e, true),
            }
            result
        }
        .boxed()
    }
}

fn messaging_attributes(
    span: &mut ActiveSpan,
    topic: &str,
    headers: &std::collections::BTreeMap<String, String>,
    operation: &'static str,
) {
    span.set(attr::MESSAGING_SYSTEM, "micro");
    span.set(attr::MESSAGING_DESTINATION, topic);
    span.set(attr::MESSAGING_OPERATION, operation);
    if let Some(id) = headers.get(HEADER_ID) {
        span.set(attr::MESSAGING_MESSAGE_ID, id.as_str());
    }
}

/// A CONSUMER span around a delivery, a child of the message's trace context;
/// the subscriber runs with the span as its inherited trace context, so the calls
/// and publishes it makes continue the trace.
#[derive(Clone)]
pub(super) struct ConsumerTrace<S> {
    pub(super) inner: S,
    pub(super) sink: Arc<Sink>,
}

impl<S> Service<Delivery> for ConsumerTrace<S>
where
    S: Service<Delivery, Response = (), Error = Error> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = ();
    type Error = Error;
    type Future = BoxFuture<'static, Result<(), Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut delivery: Delivery) -> Self::Future {
        let headers = &mut delivery.message.headers;
        let parent = parent_of(headers.get(TRACEPARENT).map(String::as_str));
        let ctx = self.sink.context(parent.as_ref());
        let traceparent = ctx.to_traceparent();
        let mut trace = Metadata::new();
        trace.insert(TRACEPARENT, traceparent.as_str());
        headers.insert(TRACEPARENT.to_string(), traceparent);
        match (parent.is_some(), headers.get(TRACESTATE)) {
            (true, Some(state)) => {
                trace.insert(TRACESTATE, state.as_str());
            }
            (false, Some(_)) => {
                headers.remove(TRACESTATE);
            }
            _ => {}
        }
        let mut span = ActiveSpan::start(
            &self.sink,
            &ctx,
            parent.map(|p| p.span_id),
            SpanKind::Consumer,
            format!("process {}", delivery.topic).into(),
        );
        if span.recording() {
            messaging_attributes(&mut span, &delivery.topic, headers, "process");
        }
        // The ready service handles this delivery; a clone takes its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let inherited = Inherited {
            deadline: None,
            trace,
        };
        async move {
            let result = with_inherited(inherited, async move { inner.call(delivery).await }).await;
            match &result {
                Ok(()) => span.status(SpanStatus::Ok),
                Err(e) => span.fail(e, true),
            }
            result
        }
        .boxed()
    }
}
