//! Connections to nodes, reused across calls.
//!
//! One HTTP/2 connection per node address carries every concurrent call to that node
//! (multiplexed streams), so a busy client does not dial per call. The pool holds at
//! most `max_size` connections and closes the least recently used one beyond that.
//! Dials to one address are deduplicated: a burst of calls to a new node opens one
//! connection, not one per call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::wire::Body;
use crate::Error;

pub(crate) type Sender = http2::SendRequest<Body>;

#[derive(Debug)]
pub(crate) struct Pool {
    max_size: usize,
    dial_timeout: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    conns: HashMap<String, Entry>,
    /// One lock per address being dialled, so concurrent callers wait for one dial.
    dialing: HashMap<String, Arc<tokio::sync::Mutex<()>>>,
}

#[derive(Debug)]
struct Entry {
    sender: Sender,
    last_used: Instant,
}

impl Pool {
    pub(crate) fn new(max_size: usize, dial_timeout: Duration) -> Self {
        Pool {
            max_size: max_size.max(1),
            dial_timeout,
            state: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cached(&self, address: &str) -> Option<Sender> {
        let mut state = self.lock();
        let entry = state.conns.get_mut(address)?;
        if entry.sender.is_closed() {
            state.conns.remove(address);
            return None;
        }
        entry.last_used = Instant::now();
        Some(entry.sender.clone())
    }

    /// A ready connection to `address`, dialling one if needed.
    pub(crate) async fn get(&self, address: &str) -> Result<Sender, Error> {
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

    /// Forgets a connection that failed, so the next call dials afresh.
    pub(crate) fn discard(&self, address: &str) {
        self.lock().conns.remove(address);
    }

    async fn dial(&self, address: &str) -> Result<Sender, Error> {
        let unavailable = |why: String| {
            Error::service_unavailable("micro.client", format!("connecting to {address}: {why}"))
        };
        let stream = tokio::time::timeout(self.dial_timeout, TcpStream::connect(address))
            .await
            .map_err(|_| unavailable(format!("no answer within {:?}", self.dial_timeout)))?
            .map_err(|e| unavailable(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10))
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| unavailable(format!("HTTP/2 handshake failed: {e}")))?;
        let address = address.to_string();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%address, error = %e, "connection closed with an error");
            }
        });
        Ok(sender)
    }
}
