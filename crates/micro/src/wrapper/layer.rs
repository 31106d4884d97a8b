//! The one shape every wrapper point shares: a tower [`Layer`] over a boxed,
//! cloneable service, type-erased so that a list of them can be kept and applied
//! in order.

use std::fmt;
use std::sync::Arc;

use tower::util::BoxCloneSyncService;
use tower::{Layer, Service};

use crate::Error;

/// A type-erased tower service: what a wrapper point passes from layer to layer.
pub type BoxService<Req, Rsp> = BoxCloneSyncService<Req, Rsp, Error>;

type Wrap<Req, Rsp> = dyn Fn(BoxService<Req, Rsp>) -> BoxService<Req, Rsp> + Send + Sync;

/// One middleware at one wrapper point: any tower [`Layer`] whose service takes
/// `Req` and answers `Rsp` or an [`Error`].
///
/// The aliases [`HandlerWrapper`](super::HandlerWrapper),
/// [`CallWrapper`](super::CallWrapper), [`SubscriberWrapper`](super::SubscriberWrapper)
/// and [`PublishWrapper`](super::PublishWrapper) name the four points.
pub struct Wrapper<Req, Rsp> {
    name: Arc<str>,
    wrap: Arc<Wrap<Req, Rsp>>,
}

impl<Req, Rsp> Clone for Wrapper<Req, Rsp> {
    fn clone(&self) -> Self {
        Wrapper {
            name: self.name.clone(),
            wrap: self.wrap.clone(),
        }
    }
}

impl<Req, Rsp> fmt::Debug for Wrapper<Req, Rsp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Wrapper").field(&self.name).finish()
    }
}

impl<Req, Rsp> Wrapper<Req, Rsp>
where
    Req: Send + 'static,
    Rsp: Send + 'static,
{
    /// A wrapper from a tower layer; `name` appears in logs and `Debug`.
    pub fn new<L>(name: impl Into<String>, layer: L) -> Self
    where
        L: Layer<BoxService<Req, Rsp>> + Send + Sync + 'static,
        L::Service: Service<Req, Response = Rsp, Error = Error> + Clone + Send + Sync + 'static,
        <L::Service as Service<Req>>::Future: Send + 'static,
    {
        let name: String = name.into();
        Wrapper {
            name: name.into(),
            wrap: Arc::new(move |inner| BoxCloneSyncService::new(layer.layer(inner))),
        }
    }

    /// The wrapper's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `inner` wrapped in this layer.
    pub fn wrap(&self, inner: BoxService<Req, Rsp>) -> BoxService<Req, Rsp> {
        (self.wrap)(inner)
    }
}

/// `inner` wrapped in `wrappers`, the first of them outermost; `None` when there
/// are none, so the caller can keep its direct (unboxed) path.
pub(crate) fn stack<Req, Rsp, S>(
    wrappers: &[Wrapper<Req, Rsp>],
    inner: S,
) -> Option<BoxService<Req, Rsp>>
where
    Req: Send + 'static,
    Rsp: Send + 'static,
    S: Service<Req, Response = Rsp, Error = Error> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    if wrappers.is_empty() {
        return None;
    }
    let mut service = BoxCloneSyncService::new(inner);
    for wrapper in wrappers.iter().rev() {
        service = wrapper.wrap(service);
    }
    Some(service)
}

/// Calls a shared service once: clones it (tower services take `&mut self`),
/// waits until it is ready, and calls it.
pub(crate) async fn call_once<Req, Rsp>(
    service: &BoxService<Req, Rsp>,
    req: Req,
) -> Result<Rsp, Error>
where
    Req: Send + 'static,
    Rsp: Send + 'static,
{
    use tower::ServiceExt;
    service.clone().oneshot(req).await
}

/// The rest of the stack, as a wrapper made by [`Wrapper::from_fn`] sees it.
pub struct Next<Req, Rsp> {
    inner: BoxService<Req, Rsp>,
}

impl<Req, Rsp> fmt::Debug for Next<Req, Rsp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Next")
    }
}

impl<Req, Rsp> Next<Req, Rsp>
where
    Req: Send + 'static,
    Rsp: Send + 'static,
{
    /// Passes `req` on to the inner wrappers and the handler (or the node).
    pub async fn run(self, req: Req) -> Result<Rsp, Error> {
        use tower::ServiceExt;
        self.inner.oneshot(req).await
    }
}

/// The service of a [`Wrapper::from_fn`] wrapper.
struct FromFn<F, Req, Rsp> {
    f: F,
    inner: BoxService<Req, Rsp>,
}

impl<F: Clone, Req, Rsp> Clone for FromFn<F, Req, Rsp> {
    fn clone(&self) -> Self {
        FromFn {
            f: self.f.clone(),
            inner: self.inner.clone(),
        }
    }
}

impl<F, Fut, Req, Rsp> Service<Req> for FromFn<F, Req, Rsp>
where
    F: Fn(Req, Next<Req, Rsp>) -> Fut,
    Fut: std::future::Future<Output = Result<Rsp, Error>> + Send + 'static,
    Req: Send + 'static,
    Rsp: Send + 'static,
{
    type Response = Rsp;
    type Error = Error;
    type Future = futures_util::future::BoxFuture<'static, Result<Rsp, Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        // The inner service was polled ready: hand that one on, keep a fresh clone.
        let fresh = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, fresh);
        Box::pin((self.f)(req, Next { inner: ready }))
    }
}

impl<Req, Rsp> Wrapper<Req, Rsp>
where
    Req: Send + 'static,
    Rsp: Send + 'static,
{
    /// A wrapper from an async function of the request and the rest of the stack,
    /// for middleware that needs no tower plumbing of its own.
    ///
    /// ```
    /// use micro::server::{RawReply, RawRequest};
    /// use micro::wrapper::{HandlerWrapper, Next};
    /// use micro::Error;
    ///
    /// let tenant = HandlerWrapper::from_fn("tenant", |req: RawRequest, next: Next<RawRequest, RawReply>| async move {
    ///     if req.ctx.metadata().get("x-tenant").is_none() {
    ///         return Err(Error::bad_request(req.ctx.service(), "send an X-Tenant header"));
    ///     }
    ///     next.run(req).await
    /// });
    /// let service = micro::Service::builder()
    ///     .name("greeter")
    ///     .wrap(micro::wrapper::Wrappers::new().handler(tenant));
    /// # let _ = service;
    /// ```
    pub fn from_fn<F, Fut>(name: impl Into<String>, f: F) -> Self
    where
        F: Fn(Req, Next<Req, Rsp>) -> Fut + Clone + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<Rsp, Error>> + Send + 'static,
    {
        Wrapper::new(
            name,
            tower::layer::layer_fn(move |inner| FromFn {
                f: f.clone(),
                inner,
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A wrapper that records `name` on the way in and out.
    fn recording(name: &'static str, log: Arc<Mutex<Vec<String>>>) -> Wrapper<u32, u32> {
        Wrapper::from_fn(name, move |req: u32, next: Next<u32, u32>| {
            let log = log.clone();
            async move {
                log.lock().unwrap().push(format!("{name} in {req}"));
                let rsp = next.run(req + 1).await;
                log.lock().unwrap().push(format!("{name} out {rsp:?}"));
                rsp
            }
        })
    }

    #[tokio::test]
    async fn from_fn_wrappers_compose_first_outermost_and_see_errors() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let wrappers = [recording("a", log.clone()), recording("b", log.clone())];
        let inner = tower::service_fn(|n: u32| async move {
            if n > 10 {
                Err(Error::bad_request("t", "too big"))
            } else {
                Ok(n * 10)
            }
        });
        let service = stack(&wrappers, inner).unwrap();
        assert_eq!(call_once(&service, 1).await.unwrap(), 30);
        assert_eq!(
            *log.lock().unwrap(),
            ["a in 1", "b in 2", "b out Ok(30)", "a out Ok(30)"]
        );
        let err = call_once(&service, 20).await.unwrap_err();
        assert_eq!(err.code(), 400);
        assert!(stack::<u32, u32, _>(&[], inner).is_none());
    }
}
