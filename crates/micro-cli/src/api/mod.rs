//! The API gateway of `micro api` / `micro server` (port 8080): HTTP requests
//! become service calls, with no configuration (`POST /greeter/hello` calls
//! `Greeter.Hello` of `greeter`) or by a routes file.
//!
//! One module per concern: [`resolve`] (zero-config paths), [`target`] (what a
//! request becomes), [`pipeline`] (the order things happen in for one request),
//! [`call`] (`rpc` and `stream`), [`event`], [`upstream`] (`http` and `web`),
//! [`cors`], [`compress`], [`limits`], [`metrics`], [`catalog`] (cached registry
//! reads), [`request_json`] and [`reply`].
//!
//! ```no_run
//! # async fn run(listener: tokio::net::TcpListener) -> Result<(), micro::Error> {
//! use std::sync::Arc;
//! use micro_cli::api::{Gateway, GatewayOptions};
//!
//! let registry = Arc::new(micro::registry::MemoryRegistry::new());
//! let broker = Arc::new(micro::broker::MemoryBroker::new());
//! let client = micro::Client::builder().registry(registry.clone()).build();
//! Gateway::new(client, registry, broker, GatewayOptions::default())
//!     .serve(listener, async { let _ = tokio::signal::ctrl_c().await; })
//!     .await
//! # }
//! ```

pub mod call;
pub mod catalog;
pub mod compress;
pub mod cors;
pub mod event;
pub mod limits;
pub mod metrics;
pub mod openapi;
pub mod pipeline;
pub mod reply;
pub mod request_json;
pub mod resolve;
pub mod resolved;
pub mod routes;
pub mod target;
pub mod tls;
pub mod upstream;
pub mod websocket;
mod workers;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use micro::broker::Broker;
use micro::registry::Registry;
use micro::server::{http1, RequestBody};
use micro::wrapper::auth::Auth;
use micro::{Client, Error};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use self::target::Cors;

/// Options of a [`Gateway`]; every one is a flag of `micro api`.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    /// Services are `<namespace>.<name>`, reached as `/<name>/...`.
    pub namespace: Option<String>,
    /// Serve `POST /rpc` (`{service, endpoint, request, address}`): lets any caller
    /// call any endpoint, so off by default.
    pub enable_rpc: bool,
    /// Time a call may take, retries included, unless a route says otherwise.
    pub call_timeout: Duration,
    /// Largest request body, in bytes (413 beyond).
    pub max_body: usize,
    /// Time a request's body may take to arrive (408 beyond).
    pub body_timeout: Duration,
    /// Time a client may take to send its request head.
    pub header_timeout: Duration,
    /// Longest request target (path and query), in bytes (414 beyond).
    pub max_uri: usize,
    /// Largest request head (all headers), in bytes (431 beyond).
    pub max_header_bytes: usize,
    /// Cross-origin requests allowed everywhere (off when `None`).
    pub cors: Option<Cors>,
    /// How long a graceful stop waits for requests in flight.
    pub drain_timeout: Duration,
    /// Worker threads serving connections (one per core by default); each runs
    /// its connections and their calls on one thread, like nginx's workers.
    pub workers: usize,
}

impl Default for GatewayOptions {
    fn default() -> Self {
        GatewayOptions {
            namespace: None,
            enable_rpc: false,
            call_timeout: Duration::from_secs(5),
            max_body: micro::server::DEFAULT_MAX_BODY,
            body_timeout: Duration::from_secs(30),
            header_timeout: Duration::from_secs(10),
            max_uri: 8 * 1024,
            max_header_bytes: 64 * 1024,
            cors: None,
            drain_timeout: micro::server::DEFAULT_DRAIN_TIMEOUT,
            workers: workers::default_count(),
        }
    }
}

/// The API gateway. Cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    shared: Arc<pipeline::Shared>,
    tls: Option<TlsAcceptor>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("options", &self.shared.options)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// A gateway that calls services with `client`, finds them in `registry` and
    /// publishes `event` routes on `broker`.
    pub fn new(
        client: Client,
        registry: Arc<dyn Registry>,
        broker: Arc<dyn Broker>,
        options: GatewayOptions,
    ) -> Self {
        Gateway {
            shared: Arc::new(pipeline::Shared::new(client, registry, broker, options)),
            tls: None,
        }
    }

    /// Routes by a routes file (hot-reloaded by `watcher`) before zero-config.
    pub fn routes(mut self, watcher: routes::RoutesWatcher) -> Self {
        Arc::get_mut(&mut self.shared)
            .expect("routes are set before the gateway is shared")
            .routes = Some(watcher);
        self
    }

    /// Serves HTTPS (HTTP/2 and HTTP/1.1 by ALPN) with `acceptor`, made by
    /// [`tls::acceptor`] from certificate files.
    pub fn tls(mut self, acceptor: TlsAcceptor) -> Self {
        self.tls = Some(acceptor);
        self
    }

    /// Checks credentials and rules (the `auth` wrapper's) on every request.
    pub fn auth(mut self, auth: Arc<Auth>) -> Self {
        Arc::get_mut(&mut self.shared)
            .expect("auth is set before the gateway is shared")
            .auth = Some(auth);
        self
    }

    /// Serves on `listener` until `shutdown` completes, then stops accepting and
    /// lets requests in flight finish (up to the drain timeout).
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), Error> {
        let options = &self.shared.options;
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            // A client that trickles its head must not hold a connection forever.
            .header_read_timeout(options.header_timeout)
            .max_buf_size(options.max_header_bytes.max(8192));
        builder.http2().timer(TokioTimer::new());
        let graceful = GracefulShutdown::new();
        // Plain HTTP/1.1 requests are served by micro's own loop (http1), the
        // rest by hyper; both finish what is in flight when the gateway stops.
        let stop = Arc::new(http1::Stop::default());
        let limits = Arc::new(http1::Limits {
            error_id: resolve::ID.into(),
            header_timeout: options.header_timeout,
            body_timeout: options.body_timeout,
            max_header_bytes: options.max_header_bytes.max(8192),
        });
        let (lane_open, mut lanes_closed) = tokio::sync::mpsc::channel::<()>(1);
        let mut workers = workers::Workers::start(options.workers).map_err(|e| {
            Error::internal_server_error(
                resolve::ID,
                format!("cannot start the gateway's workers: {e}"),
            )
        })?;
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let _ = stream.set_nodelay(true);
                        // Moved to the worker's own reactor, so that its readiness
                        // wakes the worker directly rather than through this thread.
                        let stream = match stream.into_std() {
                            Ok(stream) => stream,
                            Err(e) => {
                                tracing::debug!(%peer, error = %e, "cannot hand a connection to a worker");
                                continue;
                            }
                        };
                        let shared = self.shared.clone();
                        let lane = (shared.clone(), limits.clone(), stop.clone(), lane_open.clone());
                        let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                            let shared = shared.clone();
                            let req = req.map(RequestBody::Streamed);
                            async move { Ok::<_, Infallible>(shared.handle(req, peer).await) }
                        });
                        let builder = builder.clone();
                        let watcher = graceful.watcher();
                        let tls = self.tls.clone();
                        let handshake_timeout = options.header_timeout;
                        workers.spawn(async move {
                            let stream = match tokio::net::TcpStream::from_std(stream) {
                                Ok(stream) => stream,
                                Err(e) => {
                                    tracing::debug!(%peer, error = %e, "a worker cannot take a connection");
                                    return;
                                }
                            };
                            let served = match tls {
                                None => {
                                    let (shared, limits, stop, _open) = lane;
                                    match http1::serve(stream, peer, &*shared, &limits, &stop).await {
                                        Ok(()) => Ok(()),
                                        Err(handover) => {
                                            let io = TokioIo::new(handover.into_io());
                                            let conn = builder.serve_connection_with_upgrades(io, svc);
                                            watcher.watch(conn.into_owned()).await
                                        }
                                    }
                                }
                                Some(tls) => {
                                    // A client that never finishes its handshake is dropped.
                                    let stream = match tokio::time::timeout(handshake_timeout, tls.accept(stream)).await {
                                        Ok(Ok(stream)) => stream,
                                        Ok(Err(e)) => {
                                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                            return;
                                        }
                                        Err(_) => {
                                            tracing::debug!(%peer, "TLS handshake timed out");
                                            return;
                                        }
                                    };
                                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
                                    watcher.watch(conn.into_owned()).await
                                }
                            };
                            if let Err(e) = served {
                                tracing::debug!(%peer, error = %e, "connection ended with an error");
                            }
                        });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                _ = &mut shutdown => break,
            }
        }
        drop(listener);
        stop.stop();
        drop(lane_open);
        let drained = async {
            tokio::join!(graceful.shutdown(), lanes_closed.recv());
        };
        if tokio::time::timeout(self.shared.options.drain_timeout, drained)
            .await
            .is_err()
        {
            tracing::warn!("requests in flight did not finish within the drain timeout");
        }
        workers.stop().await;
        Ok(())
    }
}

/// A uniformly random number: for a route's weighted (canary) choice and the
/// node of an `http`/`web` route. Each `RandomState` hashes with keys of its own.
fn random_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u8(0);
    h.finish() as u32
}
