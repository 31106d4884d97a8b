//! What a handler receives: the message plus the call's context.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::time::Instant;

use crate::Metadata;

/// The context of one call: who called, with which metadata, until when.
#[derive(Debug, Clone, Default)]
pub struct CallContext {
    pub(crate) service: Arc<str>,
    pub(crate) endpoint: Arc<str>,
    pub(crate) metadata: Metadata,
    pub(crate) deadline: Option<Instant>,
    pub(crate) remote_addr: Option<SocketAddr>,
    /// The HTTP path of the request (`/greeter.Greeter/Hello`, or `/`).
    pub(crate) path: Arc<str>,
}

impl CallContext {
    /// A context for calling a handler directly (tests, in-process calls).
    pub fn new(endpoint: &str) -> Self {
        CallContext {
            endpoint: endpoint.into(),
            ..Default::default()
        }
    }

    /// Sets the metadata.
    pub fn with_metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = metadata;
        self
    }

    /// The caller's metadata, to change it (a wrapper replacing the trace context).
    pub fn metadata_mut(&mut self) -> &mut Metadata {
        &mut self.metadata
    }

    /// Sets the deadline.
    pub fn with_deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// The service serving the call (`greeter`).
    pub fn service(&self) -> &str {
        &self.service
    }
    /// The endpoint called (`Greeter.Hello`).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }
    /// The caller's metadata (headers), including `micro-from-service`.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }
    /// When the caller stops waiting, from `grpc-timeout` or `Timeout`.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }
    /// The peer's address, when the call came over the network.
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.remote_addr
    }
    /// The HTTP path the request came on (`/greeter.Greeter/Hello`, or `/` for a
    /// call named by the `Micro-Endpoint` header); empty for in-process calls. A
    /// server's fallback uses it to forward calls it does not serve itself.
    pub fn path(&self) -> &str {
        &self.path
    }
    /// The name of the calling service, if it said (`Micro-From-Service`).
    pub fn from_service(&self) -> Option<&str> {
        self.metadata.get("micro-from-service")
    }
}

/// A request as a handler sees it: the message plus its [`CallContext`].
///
/// ```
/// use micro::Request;
///
/// let req = Request::new("John".to_string());
/// assert_eq!(req.get_ref(), "John");
/// assert!(req.deadline().is_none());
/// ```
#[derive(Debug, Clone)]
pub struct Request<T> {
    ctx: CallContext,
    message: T,
}

impl<T> Request<T> {
    /// A request with an empty context, for calling handlers directly in tests.
    pub fn new(message: T) -> Self {
        Request {
            ctx: CallContext::default(),
            message,
        }
    }

    /// A request with the given context.
    pub fn from_parts(ctx: CallContext, message: T) -> Self {
        Request { ctx, message }
    }

    /// The message.
    pub fn get_ref(&self) -> &T {
        &self.message
    }
    /// The message, mutably.
    pub fn get_mut(&mut self) -> &mut T {
        &mut self.message
    }
    /// The message, taking the request apart.
    pub fn into_inner(self) -> T {
        self.message
    }
    /// Context and message.
    pub fn into_parts(self) -> (CallContext, T) {
        (self.ctx, self.message)
    }
    /// The call's context.
    pub fn context(&self) -> &CallContext {
        &self.ctx
    }
    /// The caller's metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.ctx.metadata
    }
    /// When the caller stops waiting.
    pub fn deadline(&self) -> Option<Instant> {
        self.ctx.deadline
    }
    /// The endpoint called (`Greeter.Hello`).
    pub fn endpoint(&self) -> &str {
        &self.ctx.endpoint
    }
    /// The peer's address.
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.ctx.remote_addr
    }
}

/// W3C trace-context headers: carried from a request being handled to the calls
/// it makes and the messages it publishes.
pub(crate) const TRACE_HEADERS: [&str; 2] = ["traceparent", "tracestate"];

/// What a handler's task inherits from the request it serves.
#[derive(Debug, Clone, Default)]
pub(crate) struct Inherited {
    pub(crate) deadline: Option<Instant>,
    /// The request's trace-context headers, if it had any.
    pub(crate) trace: Metadata,
}

impl Inherited {
    pub(crate) fn of(ctx: &CallContext) -> Self {
        let mut trace = Metadata::new();
        for key in TRACE_HEADERS {
            if let Some(v) = ctx.metadata.get(key) {
                trace.insert(key, v);
            }
        }
        Inherited {
            deadline: ctx.deadline,
            trace,
        }
    }
}

tokio::task_local! {
    /// The deadline and trace context of the request a handler is serving, so that
    /// calls it makes and messages it publishes inherit them without threading them
    /// through by hand.
    static INHERITED: Inherited;
}

/// Runs a handler future with its request's deadline and trace context visible to
/// the client and publishers.
pub(crate) async fn with_inherited<F: std::future::Future>(
    inherited: Inherited,
    fut: F,
) -> F::Output {
    INHERITED.scope(inherited, fut).await
}

/// The deadline of the request being handled on this task, if any.
pub(crate) fn inherited_deadline() -> Option<Instant> {
    INHERITED.try_with(|i| i.deadline).ok().flatten()
}

/// The trace-context headers of the request being handled on this task.
pub(crate) fn inherited_trace() -> Metadata {
    INHERITED.try_with(|i| i.trace.clone()).unwrap_or_default()
}
