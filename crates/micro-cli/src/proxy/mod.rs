//! The proxy of `micro server` / `micro proxy`: the API of `proto/micro/v1/`
//! (`Client`, `Broker`, `Registry`, `Config`, and `grpc.health.v1`) served by one
//! micro [`Server`], as gRPC and as JSON over HTTP on one port; plus the
//! transparent sidecar: a call for a path the proxy does not serve itself
//! (`/greeter.Greeter/Hello`) is forwarded to the registered service.
//!
//! One file per API service (`registry.rs`, `broker.rs`, `config.rs`, `client.rs`,
//! `health.rs`); each exposes `handler(&Parts) -> impl Handler`, and
//! [`Proxy::server`] adds them with one line each.
//!
//! ```no_run
//! # async fn run(listener: tokio::net::TcpListener) -> Result<(), micro::Error> {
//! use std::sync::Arc;
//! use micro_cli::proxy::Proxy;
//!
//! let registry = Arc::new(micro::registry::MemoryRegistry::new());
//! let broker = Arc::new(micro::broker::MemoryBroker::new());
//! let config = Arc::new(micro::config::MemorySource::new("store"));
//! Proxy::new(registry, broker, config)
//!     .serve(listener, async { let _ = tokio::signal::ctrl_c().await; })
//!     .await
//! # }
//! ```

pub mod broker;
pub mod client;
pub mod config;
pub mod health;
pub mod registry;
pub mod store;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{Stream, StreamExt};

use micro::broker::Broker;
use micro::config::StoreSource;
use micro::registry::Registry;
use micro::server::Server;
use micro::{Client, Error, ResponseStream};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The name the proxy's server uses (the `id` of its own transport errors).
pub const DEFAULT_NAME: &str = "micro.proxy";
/// Default time a call through the proxy may take, retries included.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Options of a [`Proxy`].
#[derive(Debug, Clone)]
pub struct ProxyOptions {
    /// The server's name (default `micro.proxy`).
    pub name: String,
    /// Time a forwarded call may take when the caller sets none (default 5 s).
    pub call_timeout: Duration,
    /// Largest request message accepted, in bytes (default 4 MiB).
    pub max_body: usize,
    /// How long a graceful stop waits for in-flight requests (default 10 s).
    pub drain_timeout: Duration,
}

impl Default for ProxyOptions {
    fn default() -> Self {
        ProxyOptions {
            name: DEFAULT_NAME.into(),
            call_timeout: DEFAULT_CALL_TIMEOUT,
            max_body: micro::server::DEFAULT_MAX_BODY,
            drain_timeout: micro::server::DEFAULT_DRAIN_TIMEOUT,
        }
    }
}

/// What every API handler of the proxy works with. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Parts {
    /// Where services are registered and looked up.
    pub registry: Arc<dyn Registry>,
    /// Where `Broker.Publish` / `Client.Publish` go and `Subscribe` reads.
    pub broker: Arc<dyn Broker>,
    /// The config store `Config.*` reads and writes.
    pub config: Arc<dyn StoreSource>,
    /// The client forwarded calls go through (selector, retries, deadlines).
    pub client: Client,
    /// The proxy's options.
    pub options: ProxyOptions,
    /// Ends the API's endless streams when the proxy stops.
    pub stopping: Stopping,
}

/// Tells the proxy's endless streams (registry and config watches, broker
/// subscriptions) that the proxy is stopping. They never finish by themselves, so
/// without it they would hold a graceful stop for its whole drain timeout; they
/// end with a 503 that tells the caller to reconnect.
#[derive(Debug, Clone, Default)]
pub struct Stopping(Arc<watch::Sender<bool>>);

impl Stopping {
    /// Ends every stream given to [`Stopping::until_stopped`], now and later.
    pub fn stop(&self) {
        self.0.send_replace(true);
    }

    /// `stream` until the proxy stops; then a last 503 error, and the end.
    pub fn until_stopped<T: Send + 'static>(&self, stream: ResponseStream<T>) -> ResponseStream<T> {
        let mut receiver = self.0.subscribe();
        UntilStopped {
            stream,
            stopped: Some(Box::pin(async move {
                let _ = receiver.wait_for(|stopping| *stopping).await;
            })),
        }
        .boxed()
    }
}

/// The stream of [`Stopping::until_stopped`].
struct UntilStopped<T> {
    stream: ResponseStream<T>,
    /// Completes when the proxy stops; `None` once the stream has ended.
    stopped: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl<T> Stream for UntilStopped<T> {
    type Item = Result<T, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let Some(stopped) = self.stopped.as_mut() else {
            return Poll::Ready(None);
        };
        if stopped.as_mut().poll(cx).is_ready() {
            self.stopped = None;
            return Poll::Ready(Some(Err(Error::service_unavailable(
                DEFAULT_NAME,
                "the proxy is stopping: open the stream again (on this proxy once it is back, or another)",
            ))));
        }
        let next = self.stream.poll_next_unpin(cx);
        if let Poll::Ready(None) = next {
            self.stopped = None;
        }
        next
    }
}

/// The proxy: builds the micro [`Server`] that serves the API of `micro server`.
#[derive(Debug, Clone)]
pub struct Proxy {
    parts: Parts,
}

impl Proxy {
    /// A proxy over these engines, with a client that looks services up in
    /// `registry` and the default options.
    pub fn new(
        registry: Arc<dyn Registry>,
        broker: Arc<dyn Broker>,
        config: Arc<dyn StoreSource>,
    ) -> Self {
        let options = ProxyOptions::default();
        let client = Client::builder()
            .registry(registry.clone())
            .request_timeout(options.call_timeout)
            .max_body(options.max_body)
            .build();
        Proxy {
            parts: Parts {
                registry,
                broker,
                config,
                client,
                options,
                stopping: Stopping::default(),
            },
        }
    }

    /// The client forwarded calls go through (default: over the registry given to
    /// [`Proxy::new`]).
    pub fn client(mut self, client: Client) -> Self {
        self.parts.client = client;
        self
    }

    /// The options (name, call timeout, body limit, drain timeout).
    pub fn options(mut self, options: ProxyOptions) -> Self {
        self.parts.options = options;
        self
    }

    /// What the handlers work with.
    pub fn parts(&self) -> &Parts {
        &self.parts
    }

    /// The micro server with every API handler of the proxy and the sidecar
    /// fallback.
    pub fn server(&self) -> Server {
        let parts = &self.parts;
        let server = Server::new(parts.options.name.clone())
            .max_body(parts.options.max_body)
            .drain_timeout(parts.options.drain_timeout);
        // One line per API service; keep this list in the order of proto/micro/v1.
        server
            .handler(client::handler(parts))
            .handler(registry::handler(parts))
            .handler(broker::handler(parts))
            .handler(config::handler(parts))
            .handler(health::handler(parts))
            .fallback(client::fallback(parts))
    }

    /// Serves the proxy on `listener` until `shutdown` completes; then ends the
    /// open watch and subscribe streams and drains the calls in flight.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), Error> {
        let stopping = self.parts.stopping.clone();
        let shutdown = async move {
            shutdown.await;
            stopping.stop();
        };
        self.server().serve(listener, shutdown).await
    }
}
