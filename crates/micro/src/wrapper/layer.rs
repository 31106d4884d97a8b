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
