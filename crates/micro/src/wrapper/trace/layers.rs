//! The four tower services of the `trace` wrapper: a SERVER span around each
//! handler, a CLIENT span around each call attempt, a PRODUCER span around each
//! publish and a CONSUMER span around each delivery.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::{BoxFuture, FutureExt};
use futures_util::StreamExt;
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

/// `Greeter.Hello` as `rpc.service` = `Greeter`, `rpc.method` = `Hello`.
fn rpc_attributes(span: &mut ActiveSpan, service: &Arc<str>, endpoint: &Arc<str>) {
    span.set(attr::RPC_SYSTEM, "micro");
    span.set(attr::MICRO_SERVICE, service.clone());
    span.set(attr::MICRO_ENDPOINT, endpoint.clone());
    if let Some((svc, method)) = endpoint.rsplit_once('.') {
        span.set(attr::RPC_SERVICE, svc);
        span.set(attr::RPC_METHOD, method);
    }
}

/// A SERVER span around a handler; the handler (and every call and publish it
/// makes) sees the span as its trace context.
#[derive(Clone)]
pub(super) struct ServerTrace<S> {
    pub(super) inner: S,
    pub(super) sink: Arc<Sink>,
}

impl<S> Service<RawRequest> for ServerTrace<S>
where
    S: Service<RawRequest, Response = RawReply, Error = Error>,
    S::Future: Send + 'static,
{
    type Response = RawReply;
    type Error = Error;
    type Future = BoxFuture<'static, Result<RawReply, Error>>;

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
            rpc_attributes(&mut span, &req.ctx.service, &req.ctx.endpoint);
            if let Some(from) = req.ctx.from_service() {
                span.set(attr::FROM_SERVICE, from);
            }
            if let Some(peer) = req.ctx.remote_addr() {
                span.set(attr::CLIENT_ADDRESS, peer.ip().to_string().as_str());
            }
        }
        let fut = self.inner.call(req);
        async move { finish(span, fut.await, false) }.boxed()
    }
}

/// A CLIENT span around one attempt of a call, a child of the trace context the
/// attempt carries (the handler's, when called from one), sent on as its own.
#[derive(Clone)]
pub(super) struct ClientTrace<S> {
    pub(super) inner: S,
    pub(super) sink: Arc<Sink>,
}

impl<S> Service<Attempt> for ClientTrace<S>
where
    S: Service<Attempt, Response = RawReply, Error = Error>,
    S::Future: Send + 'static,
{
    type Response = RawReply;
    type Error = Error;
    type Future = BoxFuture<'static, Result<RawReply, Error>>;

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
            rpc_attributes(&mut span, &attempt.service, &attempt.endpoint);
            let address = attempt.node.address.as_str();
            match address.rsplit_once(':') {
                Some((host, port)) if port.parse::<u16>().is_ok() => {
                    span.set(attr::SERVER_ADDRESS, host);
                    span.set(attr::SERVER_PORT, port.parse::<i64>().unwrap_or(0));
                }
                _ => span.set(attr::SERVER_ADDRESS, address),
            }
            if attempt.number > 0 {
                span.set(attr::ATTEMPT, i64::from(attempt.number));
            }
        }
        let fut = self.inner.call(attempt);
        async move { finish(span, fut.await, true) }.boxed()
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
