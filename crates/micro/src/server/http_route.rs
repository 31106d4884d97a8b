//! Plain HTTP `GET` pages a server serves beside its endpoints, such as the
//! `metrics` wrapper's `/metrics` for Prometheus.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::{BoxFuture, FutureExt};

type Page = dyn Fn(http::request::Parts) -> BoxFuture<'static, http::Response<Bytes>> + Send + Sync;

/// A page served on `GET <path>` (and `HEAD`) on the service's port.
///
/// ```
/// use micro::server::HttpRoute;
///
/// let route = HttpRoute::new("/ready", |_head| async {
///     http::Response::new(bytes::Bytes::from_static(b"ok"))
/// });
/// assert_eq!(route.path(), "/ready");
/// ```
#[derive(Clone)]
pub struct HttpRoute {
    path: Arc<str>,
    page: Arc<Page>,
}

impl fmt::Debug for HttpRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("HttpRoute").field(&self.path).finish()
    }
}

impl HttpRoute {
    /// Serves `page` at `path` (which starts with `/`).
    pub fn new<F, Fut>(path: impl Into<String>, page: F) -> Self
    where
        F: Fn(http::request::Parts) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = http::Response<Bytes>> + Send + 'static,
    {
        let path: String = path.into();
        HttpRoute {
            path: path.into(),
            page: Arc::new(move |head| page(head).boxed()),
        }
    }

    /// The path.
    pub fn path(&self) -> &str {
        &self.path
    }

    pub(crate) fn serve(
        &self,
        head: http::request::Parts,
    ) -> BoxFuture<'static, http::Response<Bytes>> {
        (self.page)(head)
    }
}
