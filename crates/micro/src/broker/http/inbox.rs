//! The subscriber side: an HTTP/1.1 + h2c server that receives deliveries and
//! runs each subscription's handler, one delivery at a time, in arrival order.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinSet;

use super::wire::{self, ID};
use crate::broker::{Delivery, Handler};
use crate::registry::Service;
use crate::Error;

/// One live subscription of this broker.
pub(super) struct LocalSub {
    pub(super) id: String,
    pub(super) topic: String,
    pub(super) handler: Handler,
    /// `true` while subscribed; held while a handler runs, so deliveries run one
    /// at a time (tokio's mutex is fair: in arrival order).
    pub(super) gate: tokio::sync::Mutex<bool>,
    /// What this subscription registers.
    pub(super) service: Service,
}

impl std::fmt::Debug for LocalSub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalSub")
            .field("id", &self.id)
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
pub(super) struct Inbox {
    subs: Mutex<HashMap<String, Arc<LocalSub>>>,
    max_message_size: usize,
    read_timeout: Duration,
}

impl Inbox {
    pub(super) fn new(max_message_size: usize, read_timeout: Duration) -> Self {
        Inbox {
            subs: Mutex::default(),
            max_message_size,
            read_timeout,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<LocalSub>>> {
        self.subs.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn insert(&self, sub: Arc<LocalSub>) {
        self.lock().insert(sub.id.clone(), sub);
    }

    pub(super) fn remove(&self, id: &str) -> Option<Arc<LocalSub>> {
        self.lock().remove(id)
    }

    pub(super) fn all(&self) -> Vec<Arc<LocalSub>> {
        self.lock().values().cloned().collect()
    }

    pub(super) fn contains(&self, id: &str) -> bool {
        self.lock().contains_key(id)
    }

    pub(super) fn len(&self) -> usize {
        self.lock().len()
    }

    pub(super) fn ids(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        match self.receive(req).await {
            Ok(()) => Response::new(Full::new(Bytes::new())),
            Err(e) => error_response(&e),
        }
    }

    async fn receive(&self, req: Request<Incoming>) -> Result<(), Error> {
        let (parts, body) = req.into_parts();
        if parts.uri.path() != wire::SUB_PATH {
            return Err(Error::not_found(
                ID,
                format!(
                    "{} is not a broker endpoint; deliveries go to POST {}?id=<subscriber>",
                    parts.uri.path(),
                    wire::SUB_PATH
                ),
            ));
        }
        if parts.method != Method::POST {
            return Err(Error::method_not_allowed(
                ID,
                format!("{} is not allowed; deliver with POST", parts.method),
            ));
        }
        let id = wire::id_from_query(parts.uri.query()).ok_or_else(|| {
            Error::bad_request(
                ID,
                "missing or malformed subscriber id: use ?id=<subscriber id>",
            )
        })?;
        let content_type = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        if content_type != Some(wire::CONTENT_TYPE) {
            return Err(Error::unsupported_media_type(
                ID,
                format!("deliveries are {}", wire::CONTENT_TYPE),
            ));
        }
        let gone = || {
            Error::not_found(
                ID,
                format!("no subscriber {id} here (it unsubscribed, or has not subscribed yet)"),
            )
        };
        let sub = self.lock().get(&id).cloned().ok_or_else(gone)?;
        let limit = self.max_message_size + wire::PREFIX;
        let body = match tokio::time::timeout(
            self.read_timeout,
            Limited::new(body, limit).collect(),
        )
        .await
        {
            Err(_) => {
                return Err(Error::timeout(
                    ID,
                    format!("the delivery did not arrive within {:?}", self.read_timeout),
                ))
            }
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                return Err(Error::payload_too_large(
                    ID,
                    format!(
                        "the message is over this subscriber's limit of {} bytes",
                        self.max_message_size
                    ),
                ))
            }
            Ok(Err(e)) => return Err(Error::bad_request(ID, format!("reading the delivery: {e}"))),
            Ok(Ok(c)) => c.to_bytes(),
        };
        let (topic, message) = wire::decode(body)?;
        if topic != sub.topic {
            // A subscriber id reused by a restarted process for another topic.
            return Err(Error::not_found(
                ID,
                format!(
                    "subscriber {id} is subscribed to {}, not {topic}",
                    sub.topic
                ),
            ));
        }
        let open = sub.gate.lock().await;
        if !*open {
            return Err(gone());
        }
        let message_id = message.id().unwrap_or("-").to_string();
        let run =
            AssertUnwindSafe((sub.handler)(Delivery::new(topic, message, None))).catch_unwind();
        let result = match run.await {
            Ok(result) => result,
            Err(_panic) => Err(Error::internal_server_error(
                ID,
                format!("the handler of {} panicked", sub.topic),
            )),
        };
        drop(open);
        if let Err(e) = &result {
            tracing::warn!(topic = %sub.topic, message_id = %message_id, subscriber = %id, error = %e, "subscriber failed to handle a message");
            // Always 500: the publisher does not retry a handler's failure.
            return Err(Error::new(e.id(), e.detail(), 500));
        }
        Ok(())
    }
}

fn error_response(e: &Error) -> Response<Full<Bytes>> {
    let mut rsp = Response::new(Full::new(Bytes::from(e.to_json())));
    *rsp.status_mut() = StatusCode::from_u16(e.code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    rsp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if e.code() == 405 {
        rsp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
    }
    rsp
}

/// A running delivery server.
#[derive(Debug)]
pub(super) struct Server {
    /// The address subscribers register (`host:port`).
    pub(super) advertise: String,
    pub(super) local: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Binds `listen` and serves `inbox` there.
    pub(super) async fn start(
        inbox: Arc<Inbox>,
        listen: &str,
        advertise: Option<&str>,
        drain: Duration,
    ) -> Result<Server, Error> {
        let listener = TcpListener::bind(listen).await.map_err(|e| {
            Error::service_unavailable(
                ID,
                format!("the http broker cannot listen on {listen}: {e}"),
            )
        })?;
        let local = listener.local_addr().map_err(|e| {
            Error::internal_server_error(ID, format!("reading the listen address: {e}"))
        })?;
        let advertise = advertise_address(local, advertise)?;
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(serve(inbox, listener, stopped, drain));
        Ok(Server {
            advertise,
            local,
            stop: Some(stop),
            task,
        })
    }

    /// Stops accepting and lets deliveries in progress finish (bounded by the drain
    /// timeout the server was started with).
    pub(super) async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }

    /// Aborting it stops the server at once, dropping every connection.
    pub(super) fn abort_handle(&self) -> tokio::task::AbortHandle {
        self.task.abort_handle()
    }
}

/// The address to register: `advertise` (its port defaults to the one listened
/// on), else the listen address, which must then be a specific host.
fn advertise_address(local: SocketAddr, advertise: Option<&str>) -> Result<String, Error> {
    match advertise.map(str::trim).filter(|a| !a.is_empty()) {
        Some(a) => {
            if let Ok(addr) = a.parse::<SocketAddr>() {
                let port = if addr.port() == 0 {
                    local.port()
                } else {
                    addr.port()
                };
                return Ok(SocketAddr::new(addr.ip(), port).to_string());
            }
            if let Ok(ip) = a.parse::<std::net::IpAddr>() {
                return Ok(SocketAddr::new(ip, local.port()).to_string());
            }
            match a.rsplit_once(':') {
                Some((host, port)) if port.parse::<u16>().is_ok() && !host.contains(':') => {
                    let port = if port == "0" {
                        local.port()
                    } else {
                        port.parse().unwrap_or(0)
                    };
                    Ok(format!("{host}:{port}"))
                }
                _ if !a.contains(':') && !a.contains('/') && !a.contains(' ') => {
                    Ok(format!("{a}:{}", local.port()))
                }
                _ => Err(Error::bad_request(
                    ID,
                    format!("invalid broker advertise address {a:?}: use host or host:port"),
                )),
            }
        }
        None if local.ip().is_unspecified() => Err(Error::bad_request(
            ID,
            format!(
                "the http broker listens on {local}, which other processes cannot dial: \
                 set an advertise address (the host or host:port they should use)"
            ),
        )),
        None => Ok(local.to_string()),
    }
}

async fn serve(
    inbox: Arc<Inbox>,
    listener: TcpListener,
    mut stop: oneshot::Receiver<()>,
    drain: Duration,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(inbox.read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .initial_stream_window_size(1 << 20)
        .initial_connection_window_size(4 << 20)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(10));
    let graceful = GracefulShutdown::new();
    // Dropping the set (when this task is aborted) closes every connection.
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, remote)) => {
                    let _ = stream.set_nodelay(true);
                    let inbox = inbox.clone();
                    let svc = service_fn(move |req| {
                        let inbox = inbox.clone();
                        async move { Ok::<_, Infallible>(inbox.handle(req).await) }
                    });
                    let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), svc).into_owned());
                    conns.spawn(async move {
                        if let Err(e) = conn.await {
                            tracing::debug!(%remote, error = %e, "broker connection ended with an error");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the http broker failed to accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            _ = &mut stop => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            ?drain,
            "deliveries in progress did not finish in time; closing anyway"
        );
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn advertise_addresses() {
        let local: SocketAddr = "0.0.0.0:4000".parse().unwrap();
        assert!(advertise_address(local, None).is_err());
        assert_eq!(
            advertise_address(local, Some("10.0.0.5")).unwrap(),
            "10.0.0.5:4000"
        );
        assert_eq!(
            advertise_address(local, Some("10.0.0.5:0")).unwrap(),
            "10.0.0.5:4000"
        );
        assert_eq!(
            advertise_address(local, Some("10.0.0.5:80")).unwrap(),
            "10.0.0.5:80"
        );
        assert_eq!(
            advertise_address(local, Some("host.lan")).unwrap(),
            "host.lan:4000"
        );
        assert_eq!(
            advertise_address(local, Some("[::1]:0")).unwrap(),
            "[::1]:4000"
        );
        assert_eq!(advertise_address(local, Some("::1")).unwrap(), "[::1]:4000");
        assert!(advertise_address(local, Some("a b")).is_err());
        let local: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        assert_eq!(advertise_address(local, None).unwrap(), "127.0.0.1:4000");
    }
}
