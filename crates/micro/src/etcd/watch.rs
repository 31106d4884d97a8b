//! [`EtcdWatch`]: one etcd watch over the JSON API, which ends with an error
//! rather than hang when its member goes away.
//!
//! The gateway streams the watch's responses as concatenated JSON objects
//! (`{"result":{...}}`) on one long HTTP/1.1 response. A task reads them and hands
//! those with events to the stream; it also asks the member for its status every
//! few seconds while the watch is quiet, so a connection that died without a word
//! (a cut network, a frozen host) is noticed within seconds, and the watch carries
//! etcd's require-leader flag, so a member that lost its leader ends it.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, Stream};
use http::StatusCode;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use super::{error_answer, grpc_error, EtcdClient, EtcdError, Leader};

/// How long a watch may stay quiet before its member is asked whether it is alive.
const PROBE_EVERY: Duration = Duration::from_secs(5);
/// How long that question may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// The responses of one etcd watch that carry events: each item is the `result`
/// object of a watch response (`{"header":…, "events":[…]}`). After an error the
/// stream ends; open a new watch (and read again what may have changed meanwhile).
///
/// ```no_run
/// # async fn demo(etcd: micro::etcd::EtcdClient) -> Result<(), micro::etcd::EtcdError> {
/// use futures_util::StreamExt;
///
/// let key = micro::etcd::b64("/app/greeting");
/// let mut watch = etcd.watch(serde_json::json!({"key": key, "prev_kv": true})).await?;
/// while let Some(result) = watch.next().await {
///     let result = result?; // the member went away or lost its leader: watch again
///     println!("{} events", result["events"].as_array().map_or(0, Vec::len));
/// }
/// # Ok(()) }
/// ```
pub struct EtcdWatch {
    rx: mpsc::Receiver<Result<Value, EtcdError>>,
    task: AbortHandle,
    endpoint: String,
}

impl std::fmt::Debug for EtcdWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdWatch")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl EtcdWatch {
    /// The member the watch runs on (`http://host:port`).
    ///
    /// ```no_run
    /// # async fn demo(etcd: micro::etcd::EtcdClient) -> Result<(), micro::etcd::EtcdError> {
    /// let watch = etcd.watch(serde_json::json!({"key": micro::etcd::b64("/a")})).await?;
    /// println!("watching on {}", watch.endpoint());
    /// # Ok(()) }
    /// ```
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }
}

impl Drop for EtcdWatch {
    fn drop(&mut self) {
        // Closes the connection at once rather than at the next message.
        self.task.abort();
    }
}

impl Stream for EtcdWatch {
    type Item = Result<Value, EtcdError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

/// A watch confirmed by a member: the rest of its response.
struct Opened {
    index: usize,
    body: Incoming,
    /// What was read past the confirmation.
    buffer: Vec<u8>,
}

pub(super) async fn open(
    client: EtcdClient,
    create_request: Value,
) -> Result<EtcdWatch, EtcdError> {
    let body = Bytes::from(json!({ "create_request": create_request }).to_string());
    let n = client.endpoint_count();
    let start = client.preferred();
    let mut failures = Vec::new();
    for i in 0..n {
        let index = (start + i) % n;
        match open_on(&client, index, body.clone()).await {
            Ok(opened) => {
                client.set_preferred(index);
                return Ok(spawn(client, opened));
            }
            Err(e) if e.try_next() => failures.push(e),
            Err(e) => return Err(e),
        }
    }
    Err(EtcdError::all_failed(failures))
}

/// Opens the watch on endpoint `index`, renewing the token once if it is refused.
async fn open_on(client: &EtcdClient, index: usize, body: Bytes) -> Result<Opened, EtcdError> {
    let endpoint = client.endpoint(index)?;
    let token = client.token(endpoint).await?;
    match try_open(client, index, body.clone(), token.as_deref()).await {
        Err(e) if e.unauthenticated() && client.inner.credentials.is_some() => {
            client.forget_token(token.as_deref());
            let token = client.token(endpoint).await?;
            try_open(client, index, body, token.as_deref()).await
        }
        other => other,
    }
}

async fn try_open(
    client: &EtcdClient,
    index: usize,
    body: Bytes,
    token: Option<&str>,
) -> Result<Opened, EtcdError> {
    let endpoint = client.endpoint(index)?;
    let base = endpoint.base.clone();
    let timeout = client.timeout();
    let confirm = async {
        let response = client
            .send(endpoint, "/v3/watch", body, Leader::Required, token)
            .await?;
        let status = response.status();
        let mut body = response.into_body();
        if status != StatusCode::OK {
            let bytes = body
                .collect()
                .await
                .map_err(|e| EtcdError::transport(&base, &e))?
                .to_bytes();
            return Err(error_answer(&base, status, &bytes));
        }
        let mut buffer = Vec::new();
        loop {
            if let Some((first, used)) = first_message(&buffer) {
                buffer.drain(..used);
                check(&base, &first)?;
                if first["result"]["created"].as_bool() != Some(true) {
                    return Err(EtcdError::protocol(format!(
                        "{base}: the watch was not confirmed: {first}"
                    )));
                }
                return Ok(Opened {
                    index,
                    body,
                    buffer,
                });
            }
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        buffer.extend_from_slice(&data);
                    }
                }
                Some(Err(e)) => return Err(EtcdError::transport(&base, &e)),
                None => {
                    return Err(EtcdError::unavailable(format!(
                        "{base} closed the watch before confirming it"
                    )))
                }
            }
        }
    };
    match tokio::time::timeout(timeout, confirm).await {
        Ok(result) => result,
        Err(_) => Err(EtcdError::unavailable(format!(
            "{base} did not confirm the watch within {timeout:?}"
        ))),
    }
}

/// The first complete JSON message in `buffer` and the bytes it used.
fn first_message(buffer: &[u8]) -> Option<(Value, usize)> {
    let mut messages = serde_json::Deserializer::from_slice(buffer).into_iter::<Value>();
    match messages.next() {
        Some(Ok(message)) => Some((message, messages.byte_offset())),
        _ => None,
    }
}

/// An error in a watch message: a stream error of the gateway, or a cancellation.
fn check(base: &str, message: &Value) -> Result<(), EtcdError> {
    if let Some(error) = message.get("error") {
        return Err(super::stream_error(base, error));
    }
    let result = &message["result"];
    if result["canceled"].as_bool() == Some(true) {
        let reason = result["cancel_reason"].as_str().unwrap_or_default();
        let compacted = result["compact_revision"]
            .as_str()
            .and_then(|r| r.parse::<i64>().ok())
            .unwrap_or(0);
        if compacted > 0 {
            return Err(grpc_error(
                base,
                11,
                &format!("the watch was canceled: revision {compacted} is compacted"),
            ));
        }
        let code = [
            ("code = Unauthenticated", 16),
            ("code = PermissionDenied", 7),
            ("code = Unavailable", 14),
            ("code = Canceled", 1),
        ]
        .iter()
        .find(|(name, _)| reason.contains(name))
        .map_or(14, |(_, code)| *code);
        let reason = if reason.is_empty() {
            "etcd canceled the watch"
        } else {
            reason
        };
        return Err(grpc_error(base, code, reason));
    }
    Ok(())
}

fn spawn(client: EtcdClient, opened: Opened) -> EtcdWatch {
    let (tx, rx) = mpsc::channel(64);
    let endpoint = client.endpoint_name(opened.index);
    let task = tokio::spawn(read(client, opened, tx)).abort_handle();
    EtcdWatch { rx, task, endpoint }
}

/// Reads the watch until it fails or nobody listens.
async fn read(client: EtcdClient, opened: Opened, tx: mpsc::Sender<Result<Value, EtcdError>>) {
    let Opened {
        index,
        mut body,
        mut buffer,
    } = opened;
    let base = client.endpoint_name(index);
    let seen = Arc::new(AtomicBool::new(false));
    let mut probe_tick = tokio::time::interval(PROBE_EVERY);
    probe_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    probe_tick.tick().await;
    let mut probing: Option<BoxFuture<'static, Result<(), EtcdError>>> = None;
    loop {
        // Hand over every complete message.
        while let Some((message, used)) = first_message(&buffer) {
            buffer.drain(..used);
            if let Err(e) = check(&base, &message) {
                let _ = tx.send(Err(e)).await;
                return;
            }
            let result = &message["result"];
            if result["events"].as_array().is_some_and(|e| !e.is_empty())
                && tx.send(Ok(result.clone())).await.is_err()
            {
                return;
            }
        }
        let idle = probing.is_none();
        let probe = async {
            match probing.as_mut() {
                Some(probe) => probe.await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tx.closed() => return,
            frame = body.frame() => match frame {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        buffer.extend_from_slice(&data);
                        seen.store(true, Ordering::Relaxed);
                    }
                }
                Some(Err(e)) => {
                    let e = EtcdError::transport(&base, &e);
                    let message = format!("the watch connection broke: {e}");
                    let _ = tx.send(Err(e.with_message(message))).await;
                    return;
                }
                None => {
                    let _ = tx
                        .send(Err(EtcdError::unavailable(format!("{base} ended the watch"))))
                        .await;
                    return;
                }
            },
            _ = probe_tick.tick(), if idle => {
                if !seen.swap(false, Ordering::Relaxed) {
                    let client = client.clone();
                    probing = Some(
                        async move {
                            match tokio::time::timeout(
                                PROBE_TIMEOUT,
                                client.call_on(index, "/v3/maintenance/status", &json!({}), Leader::Any),
                            )
                            .await
                            {
                                Ok(Ok(_)) => Ok(()),
                                Ok(Err(e)) => Err(e),
                                Err(_) => Err(EtcdError::unavailable(format!(
                                    "no answer within {PROBE_TIMEOUT:?}"
                                ))),
                            }
                        }
                        .boxed(),
                    );
                }
            }
            result = probe => {
                probing = None;
                if let Err(e) = result {
                    let _ = tx
                        .send(Err(EtcdError::unavailable(format!(
                            "{base} stopped answering while watching ({e}); the watch is closed \
                             so that it can be opened again"
                        ))))
                        .await;
                    return;
                }
            }
        }
    }
}
