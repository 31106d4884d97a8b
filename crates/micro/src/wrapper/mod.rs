//! Wrappers: middleware around calls, handlers, subscribers and publishes.
//!
//! A wrapper is a tower [`Layer`](tower::Layer) at one of the wrapper points of a
//! service:
//!
//! | point | request | answer | built from |
//! |---|---|---|---|
//! | handler | [`RawRequest`] (context: service, endpoint, metadata, deadline, peer) | [`RawReply`] | [`HandlerWrapper`] |
//! | call, per node attempt | [`Attempt`] (service, endpoint, node, metadata, deadline) | [`RawReply`] | [`CallWrapper`] |
//! | subscriber | [`Delivery`] (topic, headers, body) | `()` | [`SubscriberWrapper`] |
//! | publish | [`Publication`] (topic, headers, body) | `()` | [`PublishWrapper`] |
//!
//! Every point answers `Result<_, Error>`, so a wrapper sees the error or the answer
//! and may return its own error (`429`, `503`, `401`, …), which travels to the
//! caller in the shared error shape. Wrappers compose in the order they are added:
//! the first is outermost. Internal endpoints (`Debug.Health`, `Debug.Stats`) are
//! not wrapped, so health checks never hit a rate limit or an auth rule.
//!
//! The built-in wrappers (`log`, `trace`, `metrics`, `timeout`, `retry`,
//! `ratelimit`, `concurrency`, `breaker`, `auth`, `chaos`) are switched on by name
//! with `MICRO_WRAPPERS` / `--wrappers` / `micro.wrappers` in the config file, and
//! configured through [`Settings`]; see [`BUILTINS`].
//!
//! # A custom wrapper
//!
//! The shortest is an async function ([`Wrapper::from_fn`]). Any tower layer will do
//! too; this one, written as a tower `Service`, refuses calls that carry no
//! `x-tenant` header; `Service::builder().wrap(...)` (or `Server::wrap`) puts it in
//! place:
//!
//! ```
//! use std::task::{Context, Poll};
//! use futures_util::future::{BoxFuture, FutureExt};
//! use micro::server::{RawReply, RawRequest};
//! use micro::wrapper::{HandlerWrapper, Wrappers};
//! use micro::Error;
//!
//! #[derive(Clone)]
//! struct RequireTenant<S>(S);
//!
//! impl<S> tower::Service<RawRequest> for RequireTenant<S>
//! where
//!     S: tower::Service<RawRequest, Response = RawReply, Error = Error>,
//!     S::Future: Send + 'static,
//! {
//!     type Response = RawReply;
//!     type Error = Error;
//!     type Future = BoxFuture<'static, Result<RawReply, Error>>;
//!
//!     fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
//!         self.0.poll_ready(cx)
//!     }
//!
//!     fn call(&mut self, req: RawRequest) -> Self::Future {
//!         if req.ctx.metadata().get("x-tenant").is_none() {
//!             let err = Error::bad_request(req.ctx.service(), "send an X-Tenant header");
//!             return futures_util::future::ready(Err(err)).boxed();
//!         }
//!         self.0.call(req).boxed()
//!     }
//! }
//!
//! let wrappers = Wrappers::new().handler(HandlerWrapper::new(
//!     "tenant",
//!     tower::layer::layer_fn(RequireTenant),
//! ));
//! let service = micro::Service::builder().name("greeter").wrap(wrappers);
//! # let _ = service;
//! ```

mod builtin;
pub(crate) mod layer;
mod settings;

pub mod auth;
pub mod breaker;
mod chaos;
mod concurrency;
mod log;
mod metrics;
mod ratelimit;
mod retry;
mod timeout;
pub mod trace;

use std::sync::Arc;

pub use builtin::{from_names, Builtin, WrapperContext, BUILTINS};
pub use layer::{BoxService, Next, Wrapper};
pub use ratelimit::{Bucket as TokenBucket, Limit as RateLimit};
pub use settings::{env_var, Key, Settings, SettingsError};

use crate::broker::{Delivery, Publication};
use crate::client::{Attempt, RetryPolicy};
use crate::server::{HttpRoute, RawReply, RawRequest};

/// A middleware around handlers.
pub type HandlerWrapper = Wrapper<RawRequest, RawReply>;
/// A middleware around each node attempt of a call.
pub type CallWrapper = Wrapper<Attempt, RawReply>;
/// A middleware around each delivery to a subscriber.
pub type SubscriberWrapper = Wrapper<Delivery, ()>;
/// A middleware around each publish.
pub type PublishWrapper = Wrapper<Publication, ()>;

/// The handler service a [`HandlerWrapper`] wraps.
pub type HandlerService = BoxService<RawRequest, RawReply>;
/// The attempt service a [`CallWrapper`] wraps.
pub type CallService = BoxService<Attempt, RawReply>;
/// The delivery service a [`SubscriberWrapper`] wraps.
pub type SubscriberService = BoxService<Delivery, ()>;
/// The publish service a [`PublishWrapper`] wraps.
pub type PublishService = BoxService<Publication, ()>;

/// A set of wrappers for every point of a service, plus the pages (such as
/// `/metrics`) and client retry policy some of them bring.
///
/// ```
/// use micro::wrapper::{Settings, WrapperContext, Wrappers};
///
/// let ctx = WrapperContext::new("greeter");
/// let settings = Settings::from_flags(["timeout.handler=2s", "timeout.attempt=500ms"]).unwrap();
/// let wrappers = micro::wrapper::from_names(&["timeout"], &settings, &ctx)?;
/// assert_eq!(wrappers.handler_names(), ["timeout"]);
/// assert_eq!(wrappers.call_names(), ["timeout"]);
/// # Ok::<(), micro::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct Wrappers {
    pub(crate) handler: Vec<HandlerWrapper>,
    pub(crate) call: Vec<CallWrapper>,
    pub(crate) subscriber: Vec<SubscriberWrapper>,
    pub(crate) publish: Vec<PublishWrapper>,
    pub(crate) routes: Vec<HttpRoute>,
    pub(crate) retry: Option<RetryPolicy>,
    pub(crate) request_timeout: Option<std::time::Duration>,
}

impl Wrappers {
    /// No wrappers.
    pub fn new() -> Self {
        Wrappers::default()
    }
    /// Adds a handler wrapper.
    pub fn handler(mut self, wrapper: HandlerWrapper) -> Self {
        self.handler.push(wrapper);
        self
    }
    /// Adds a call (per attempt) wrapper.
    pub fn call(mut self, wrapper: CallWrapper) -> Self {
        self.call.push(wrapper);
        self
    }
    /// Adds a subscriber wrapper.
    pub fn subscriber(mut self, wrapper: SubscriberWrapper) -> Self {
        self.subscriber.push(wrapper);
        self
    }
    /// Adds a publish wrapper.
    pub fn publish(mut self, wrapper: PublishWrapper) -> Self {
        self.publish.push(wrapper);
        self
    }
    /// Serves a plain HTTP page on the service's port.
    pub fn route(mut self, route: HttpRoute) -> Self {
        self.routes.push(route);
        self
    }
    /// Sets how the client retries (the `retry` wrapper).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }
    /// Adds `other` after (inside) these; its retry policy, if any, wins.
    pub fn and(mut self, other: Wrappers) -> Self {
        self.handler.extend(other.handler);
        self.call.extend(other.call);
        self.subscriber.extend(other.subscriber);
        self.publish.extend(other.publish);
        self.routes.extend(other.routes);
        if other.retry.is_some() {
            self.retry = other.retry;
        }
        if other.request_timeout.is_some() {
            self.request_timeout = other.request_timeout;
        }
        self
    }
    /// The names of the handler wrappers, outermost first.
    pub fn handler_names(&self) -> Vec<&str> {
        self.handler.iter().map(|w| w.name()).collect()
    }
    /// The handler wrappers, outermost first: for a server built by hand (the
    /// proxy of `micro server` applies them with `Server::wrap`).
    pub fn handler_wrappers(&self) -> &[HandlerWrapper] {
        &self.handler
    }
    /// The names of the call wrappers, outermost first.
    pub fn call_names(&self) -> Vec<&str> {
        self.call.iter().map(|w| w.name()).collect()
    }
    /// Whether nothing is wrapped.
    pub fn is_empty(&self) -> bool {
        self.handler.is_empty()
            && self.call.is_empty()
            && self.subscriber.is_empty()
            && self.publish.is_empty()
            && self.routes.is_empty()
            && self.retry.is_none()
            && self.request_timeout.is_none()
    }
}

/// The built-in wrappers and their settings, for the end of `--help`.
pub fn help() -> String {
    let mut text = String::from(
        "Wrappers (--wrappers NAME,... / MICRO_WRAPPERS), each set with \
         --wrapper NAME.KEY=VALUE, MICRO_WRAPPER_<NAME>_<KEY> or micro.wrapper.NAME.KEY in the config file:\n",
    );
    for builtin in BUILTINS {
        text.push_str(&format!("\n  {}: {}\n", builtin.name, builtin.about));
        for key in builtin.keys {
            let default = match key.default {
                "" => String::new(),
                d => format!(" [default: {d}]"),
            };
            text.push_str(&format!(
                "      {}.{}  {}{default}\n",
                builtin.name, key.name, key.about
            ));
        }
    }
    text
}

/// A subscriber handler wrapped in `wrappers`.
pub(crate) fn wrap_subscriber(
    handler: crate::broker::Handler,
    wrappers: &[SubscriberWrapper],
) -> crate::broker::Handler {
    let inner = tower::service_fn({
        let handler = handler.clone();
        move |delivery: Delivery| handler(delivery)
    });
    match layer::stack(wrappers, inner) {
        None => handler,
        Some(service) => Arc::new(move |delivery| {
            let service = service.clone();
            Box::pin(async move { layer::call_once(&service, delivery).await })
        }),
    }
}
