//! Pooled HTTP/2 (h2c) connections, one per address, shared by the client (calls
//! to nodes) and the HTTP broker (deliveries to subscribers).
//!
//! One connection per address carries every concurrent request to it (multiplexed
//! streams), so a busy caller does not dial per request. Dials to one address are
//! deduplicated: a burst of requests to a new address opens one connection. The pool
//! can be bounded (least recently used closed first) and can close idle connections.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::Error;

/// A pool of h2c connections whose requests have bodies of type `B`.
pub(crate) struct Pool<B> {
    /// The `id` of the errors the pool raises.
    id: &'static str,
    dial_timeout: Duration,
    max_size: usize,
    idle_timeout: Option<Duration>,
    /// HTTP/2 flow-control windows (stream, connection); hyper's defaults if unset.
    windows: Option<(u32, u32)>,
    state: Mutex<State<B>>,
}

struct State<B> {
    conns: HashMap<String, Entry<B>>,
    /// One lock per address being dialled, so concurrent callers wait for one dial.
    dialing: HashMap<String, Arc<tokio::sync::Mutex<()>>>,
}

struct Entry<B> {
    sender: http2::SendRequest<B>,
    last_used: Instant,
}

impl<B> fmt::Debug for Pool<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("id", &self.id)
            .field("max_size", &self.max_size)
            .field(
                "connections",
                &self.state.lock().map(|s| s.conns.len()).unwrap_or(0),
            )
            .finish()
    }
}

impl<B> Pool<B>
where
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// An unbounded pool that keeps idle connections.
    pub(crate) fn new(id: &'static str, dial_timeout: Duration) -> Self {
        Pool {
            id,
            dial_timeout,
            max_size: usize::MAX,
            idle_timeout: None,
            windows: None,
            state: Mutex::new(State {
                conns: HashMap::new(),
                dialing: HashMap::new(),
            }),
        }
    }

    /// Keeps at most `max_size` connections, closing the least recently used.
    pub(crate) fn max_size(mut self, max_size: usize) -> Self {
        self.max_size = max_size.max(1);
        self
    }

    /// Closes connections unused for `idle`.
    pub(crate) fn idle_timeout(mut self, idle: Duration) -> Self {
        self.idle_timeout = Some(idle);
        self
    }

    /// HTTP/2 flow-control windows for large messages.
    pub(crate) fn windows(mut self, stream: u32, connection: u32) -> Self {
        self.windows = Some((stream, connection));
        self
    }

    fn lock(&self) -> MutexGuard<'_, State<B>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cached(&self, address: &str) -> Option<http2::SendRequest<B>> {
        let mut state = self.lock();
        let now = Instant::now();
        if let Some(idle) = self.idle_timeout {
            state
                .conns
                .retain(|_, e| now.duration_since(e.last_used) < idle);
        }
        let entry = state.conns.get_mut(address)?;
        if entry.sender.is_closed() {
            state.conns.remove(address);
            return None;
        }
        entry.last_used = now;
        Some(entry.sender.clone())
    }

    /// A ready connection to `address`, dialling one if needed.
    pub(crate) async fn get(&self, address: &str) -> Result<http2::SendRequest<B>, Error> {
        if let Some(sender) = self.cached(address) {
            return Ok(sender);
        }
        let dial_lock = self
            .lock()
            .dialing
            .entry(address.to_string())
            .or_default()
            .clone();
        let _guard = dial_lock.lock().await;
        // Someone else may have dialled while we waited.
        if let Some(sender) = self.cached(address) {
            return Ok(sender);
        }
        let result = self.dial(address).await;
        let mut state = self.lock();
        state.dialing.remove(address);
        let sender = result?;
        if state.conns.len() >= self.max_size {
            if let Some(oldest) = state
                .conns
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| k.clone())
            {
                // Dropping the last sender lets the connection close once idle.
                state.conns.remove(&oldest);
            }
        }
        state.conns.insert(
            address.to_string(),
            Entry {
                sender: sender.clone(),
                last_used: Instant::now(),
            },
        );
        Ok(sender)
    }

    /// Forgets a connection that failed, so the next request dials afresh.
    pub(crate) fn discard(&self, address: &str) {
        self.lock().conns.remove(address);
    }

    /// Closes every connection (once their requests end).
    pub(crate) fn clear(&self) {
        self.lock().conns.clear();
    }

    async fn dial(&self, address: &str) -> Result<http2::SendRequest<B>, Error> {
        let unavailable = |why: String| {
            Error::service_unavailable(self.id, format!("connecting to {address}: {why}"))
        };
        let stream = tokio::time::timeout(self.dial_timeout, TcpStream::connect(address))
            .await
            .map_err(|_| unavailable(format!("no answer within {:?}", self.dial_timeout)))?
            .map_err(|e| unavailable(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let mut builder = http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10));
        if let Some((stream_window, connection_window)) = self.windows {
            builder
                .initial_stream_window_size(stream_window)
                .initial_connection_window_size(connection_window);
        }
        let (sender, conn) = builder
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| unavailable(format!("HTTP/2 handshake failed: {e}")))?;
        let address = address.to_string();
        let id = self.id;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%address, error = %e, pool = id, "connection closed with an error");
            }
        });
        Ok(sender)
    }
}
