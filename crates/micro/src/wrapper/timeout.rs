//! `timeout`: how long calls, single attempts and handlers may take.
//!
//! Always on: `request` is the client's call timeout. With `attempt` set, a node
//! that does not answer in time is abandoned (503, so the call is retried on
//! another node and the selector backs the slow node off) instead of using up the
//! whole call. With `handler` set, a handler that runs longer is stopped with a 408
//! whatever deadline its caller sent.

use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::{BoxFuture, FutureExt};
use serde::Deserialize;
use tokio::time::Instant;
use tower::Service;

use super::builtin::{settings_of, Builtin, WrapperContext};
use super::settings::{de, Key, Settings};
use super::{CallWrapper, HandlerWrapper, Wrappers};
use crate::client::Attempt;
use crate::server::{RawReply, RawRequest};
use crate::Error;

const KEYS: &[Key] = &[
    Key {
        name: "request",
        default: "",
        about: "time a call may take, retries included (default: --client_request_timeout, 5s)",
    },
    Key {
        name: "attempt",
        default: "",
        about: "time one attempt on one node may take before it is abandoned and retried elsewhere (default: none)",
    },
    Key {
        name: "handler",
        default: "",
        about: "time a handler may run whatever the caller's deadline (default: none)",
    },
];

#[derive(Deserialize)]
struct TimeoutSettings {
    #[serde(default, deserialize_with = "de::opt_duration")]
    request: Option<Duration>,
    #[serde(default, deserialize_with = "de::opt_duration")]
    attempt: Option<Duration>,
    #[serde(default, deserialize_with = "de::opt_duration")]
    handler: Option<Duration>,
}

pub(super) const BUILTIN: Builtin = Builtin {
    name: "timeout",
    about: "time limits of calls, of each attempt on a node, and of handlers (always on)",
    keys: KEYS,
    always_on: true,
    build,
};

fn build(settings: &Settings, _ctx: &WrapperContext) -> Result<Wrappers, Error> {
    let s: TimeoutSettings = settings_of(settings, "timeout", KEYS)?;
    let mut wrappers = Wrappers::new();
    if let Some(request) = s.request {
        wrappers.request_timeout = Some(request);
    }
    if let Some(limit) = s.attempt {
        wrappers = wrappers.call(CallWrapper::new(
            "timeout",
            tower::layer::layer_fn(move |inner| AttemptTimeout { inner, limit }),
        ));
    }
    if let Some(limit) = s.handler {
        wrappers = wrappers.handler(HandlerWrapper::new(
            "timeout",
            tower::layer::layer_fn(move |inner| HandlerTimeout { inner, limit }),
        ));
    }
    Ok(wrappers)
}

/// Abandons an attempt that takes longer than `limit`.
#[derive(Clone)]
struct AttemptTimeout<S> {
    inner: S,
    limit: Duration,
}

impl<S> Service<Attempt> for AttemptTimeout<S>
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
        let call_deadline = attempt.deadline();
        let own = Instant::now() + self.limit;
        attempt.shorten_deadline(own);
        let binding = own < call_deadline;
        let what = format!(
            "{} {} on {}",
            attempt.service(),
            attempt.endpoint(),
            attempt.node().address
        );
        let limit = self.limit;
        let fut = self.inner.call(attempt);
        async move {
            match tokio::time::timeout_at(own.min(call_deadline), fut).await {
                Ok(result) => result,
                // Our own limit: the node is slow, another may not be.
                Err(_) if binding => Err(Error::service_unavailable(
                    "micro.client",
                    format!("{what} did not answer within the attempt timeout of {limit:?}"),
                )),
                Err(_) => Err(Error::timeout(
                    "micro.client",
                    format!("{what} did not answer in time"),
                )),
            }
        }
        .boxed()
    }
}

/// Gives a handler at most `limit`, by bringing the request's deadline forward.
#[derive(Clone)]
struct HandlerTimeout<S> {
    inner: S,
    limit: Duration,
}

impl<S> Service<RawRequest> for HandlerTimeout<S>
where
    S: Service<RawRequest, Response = RawReply, Error = Error>,
{
    type Response = RawReply;
    type Error = Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: RawRequest) -> Self::Future {
        let own = Instant::now() + self.limit;
        let deadline = req.ctx.deadline().map_or(own, |d| d.min(own));
        req.ctx = req.ctx.with_deadline(deadline);
        self.inner.call(req)
    }
}
