//! The publisher side: one bounded queue per destination (subscriber), drained in
//! order by one task that delivers, retries with back-off, and gives up.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use tokio::sync::Notify;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::topics::{Target, Targets};
use super::wire::{self, ID};
use super::Core;
use crate::Error;

/// Where a subscriber receives deliveries.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct DestKey {
    /// `host:port` of the subscriber's broker.
    pub(super) address: String,
    /// Path and query (`/_sub?id=..`).
    pub(super) path: String,
}

/// One message waiting for one destination.
#[derive(Debug, Clone)]
pub(super) struct Item {
    pub(super) payload: Bytes,
    /// The message id, for logs (`-` when it has none).
    pub(super) id: Arc<str>,
    pub(super) topic: Arc<str>,
}

/// Counters of the publisher side.
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) delivered: AtomicU64,
    pub(super) handler_errors: AtomicU64,
    pub(super) lost: AtomicU64,
}

#[derive(Debug, Default)]
pub(super) struct Outbox {
    dests: Mutex<HashMap<DestKey, Arc<Dest>>>,
    /// Round-robin position per (topic, queue).
    turns: Mutex<HashMap<(String, String), usize>>,
    /// Destinations given up on while still registered: queue groups avoid them
    /// until the instant stored.
    shunned: Mutex<HashMap<DestKey, Instant>>,
    /// Messages in every destination queue.
    pub(super) pending: AtomicUsize,
    /// Woken whenever `pending` goes down.
    pub(super) drained: Notify,
    pub(super) counters: Counters,
}

#[derive(Debug)]
pub(super) struct Dest {
    key: DestKey,
    node_id: String,
    state: Mutex<DestState>,
    wake: Notify,
    task: Mutex<Option<AbortHandle>>,
}

#[derive(Debug, Default)]
struct DestState {
    items: VecDeque<Item>,
    bytes: usize,
    /// When the current run of failed attempts began.
    failing_since: Option<Instant>,
    last_error: Option<String>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// How one delivery attempt went.
enum Attempt {
    /// The subscriber's handler ran and returned `Ok`.
    Delivered,
    /// The handler returned an error (logged by the subscriber): not retried.
    HandlerFailed(Error),
    /// The subscriber refused the message (4xx): not retried.
    Rejected(Error),
    /// The subscriber could not be reached or was unavailable: retried.
    Failed(Error),
}

impl Dest {
    fn new(target: &Target) -> Self {
        Dest {
            key: target.key.clone(),
            node_id: target.node_id.clone(),
            state: Mutex::default(),
            wake: Notify::new(),
            task: Mutex::new(None),
        }
    }

    fn lock(&self) -> MutexGuard<'_, DestState> {
        lock(&self.state)
    }

    fn is_failing(&self) -> bool {
        self.lock().failing_since.is_some()
    }

    /// `None` if a message of `size` bytes fits, else the 503 error to return.
    fn full(&self, core: &Core, topic: &str, size: usize) -> Option<Error> {
        let cfg = &core.config;
        let st = self.lock();
        let full = st.items.len() >= cfg.buffer_messages
            || (!st.items.is_empty() && st.bytes + size > cfg.buffer_bytes);
        full.then(|| {
            let why = st
                .last_error
                .as_deref()
                .map(|e| format!(" (last attempt: {e})"))
                .unwrap_or_default();
            Error::service_unavailable(
                ID,
                format!(
                    "subscriber {} of topic {topic} at {} is not accepting messages; {} buffered, \
                     the limit is {} messages or {} bytes{why}",
                    self.node_id,
                    self.key.address,
                    st.items.len(),
                    cfg.buffer_messages,
                    cfg.buffer_bytes,
                ),
            )
        })
    }

    fn push(&self, item: Item) {
        let mut st = self.lock();
        st.bytes += item.payload.len();
        st.items.push_back(item);
        drop(st);
        self.wake.notify_one();
    }

    pub(super) fn abort(&self) {
        if let Some(t) = lock(&self.task).take() {
            t.abort();
        }
    }
}

impl Outbox {
    fn turn(&self, topic: &str, queue: &str) -> usize {
        let mut turns = lock(&self.turns);
        let t = turns
            .entry((topic.to_string(), queue.to_string()))
            .or_default();
        *t = t.wrapping_add(1);
        *t
    }

    fn is_shunned(&self, key: &DestKey) -> bool {
        let mut shunned = lock(&self.shunned);
        let now = Instant::now();
        shunned.retain(|_, until| *until > now);
        shunned.contains_key(key)
    }

    /// Hands `item` to every broadcast subscriber in `targets` and to one member of
    /// each queue group; a 503 error (and nothing queued) when a broadcast
    /// subscriber's buffer, or every member's of a group, is full.
    pub(super) fn enqueue(
        &self,
        core: &Arc<Core>,
        targets: &Targets,
        item: Item,
    ) -> Result<usize, Error> {
        let topic = &*item.topic;
        let size = item.payload.len();
        let mut broadcast: Vec<&Arc<Target>> = Vec::new();
        let mut groups: BTreeMap<&str, Vec<&Arc<Target>>> = BTreeMap::new();
        for t in targets.iter() {
            match &t.queue {
                None => broadcast.push(t),
                Some(q) => groups.entry(q.as_str()).or_default().push(t),
            }
        }
        let mut dests = lock(&self.dests);
        let mut chosen: Vec<&Arc<Target>> = Vec::with_capacity(broadcast.len() + groups.len());
        for t in broadcast {
            if let Some(err) = dests.get(&t.key).and_then(|d| d.full(core, topic, size)) {
                return Err(err);
            }
            chosen.push(t);
        }
        for (queue, members) in groups {
            let start = self.turn(topic, queue);
            let n = members.len();
            let rotated = || (0..n).map(|i| members[(start + i) % n]);
            let fits = |t: &Target| {
                dests
                    .get(&t.key)
                    .is_none_or(|d| d.full(core, topic, size).is_none())
            };
            let healthy = |t: &Target| {
                dests.get(&t.key).is_none_or(|d| !d.is_failing()) && !self.is_shunned(&t.key)
            };
            let pick = rotated()
                .find(|t| healthy(t) && fits(t))
                .or_else(|| rotated().find(|t| fits(t)));
            match pick {
                Some(t) => chosen.push(t),
                None => {
                    return Err(Error::service_unavailable(
                        ID,
                        format!(
                            "queue group {queue} of topic {topic} is not accepting messages; \
                             each of its {n} members has a full buffer (the limit is {} \
                             messages or {} bytes)",
                            core.config.buffer_messages, core.config.buffer_bytes
                        ),
                    ))
                }
            }
        }
        let mut queued = 0;
        let mut seen = std::collections::HashSet::with_capacity(chosen.len());
        for t in chosen {
            if !seen.insert(&t.key) {
                continue;
            }
            let dest = dests.entry(t.key.clone()).or_insert_with(|| {
                let dest = Arc::new(Dest::new(t));
                let task = tokio::spawn(run(core.clone(), dest.clone()));
                *lock(&dest.task) = Some(task.abort_handle());
                dest
            });
            // Counted before the worker can see (and finish) it.
            self.pending.fetch_add(1, Ordering::AcqRel);
            dest.push(item.clone());
            queued += 1;
        }
        Ok(queued)
    }

    /// Removes `dest` (if still current) and drops its messages, logging each as lost.
    fn drop_dest(&self, dest: &Arc<Dest>, reason: &str, quiet: bool) {
        let mut dests = lock(&self.dests);
        if dests.get(&dest.key).is_some_and(|d| Arc::ptr_eq(d, dest)) {
            dests.remove(&dest.key);
        }
        let mut st = dest.lock();
        let items: Vec<Item> = st.items.drain(..).collect();
        st.bytes = 0;
        drop(st);
        drop(dests);
        self.lose(&dest.node_id, &dest.key.address, &items, reason, quiet);
    }

    /// Counts `items` as lost and logs each with its id: at `warn`, or at `debug`
    /// when `quiet` (the subscriber unsubscribed: nobody expects them any more).
    fn lose(&self, node: &str, address: &str, items: &[Item], reason: &str, quiet: bool) {
        if items.is_empty() {
            return;
        }
        if quiet {
            for item in items {
                tracing::debug!(topic = %item.topic, message_id = %item.id, subscriber = %node, %reason, "message not delivered");
            }
            self.counters
                .lost
                .fetch_add(items.len() as u64, Ordering::Relaxed);
            self.done(items.len());
            return;
        }
        tracing::warn!(
            subscriber = %node,
            %address,
            count = items.len(),
            %reason,
            "dropping undelivered messages"
        );
        for item in items {
            tracing::warn!(
                topic = %item.topic,
                message_id = %item.id,
                subscriber = %node,
                %reason,
                "message lost"
            );
        }
        self.counters
            .lost
            .fetch_add(items.len() as u64, Ordering::Relaxed);
        self.done(items.len());
    }

    fn done(&self, n: usize) {
        self.pending.fetch_sub(n, Ordering::AcqRel);
        self.drained.notify_waiters();
    }

    /// Stops every destination task and drops what they still hold (logged lost).
    pub(super) fn clear(&self, reason: &str) {
        let dests: Vec<Arc<Dest>> = lock(&self.dests).drain().map(|(_, d)| d).collect();
        for dest in dests {
            dest.abort();
            let items: Vec<Item> = {
                let mut st = dest.lock();
                st.bytes = 0;
                st.items.drain(..).collect()
            };
            self.lose(&dest.node_id, &dest.key.address, &items, reason, false);
        }
    }

    /// Aborts every destination task (the broker is gone).
    pub(super) fn abort_all(&self) {
        for dest in lock(&self.dests).values() {
            dest.abort();
        }
    }

    /// Messages buffered right now.
    pub(super) fn buffered(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }

    /// Destinations with a queue right now.
    pub(super) fn destinations(&self) -> usize {
        lock(&self.dests).len()
    }

    /// Waits until every queue is empty, or `deadline`; `false` on timeout.
    pub(super) async fn drain(&self, deadline: Instant) -> bool {
        loop {
            let notified = self.drained.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.buffered() == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.buffered() == 0;
            }
        }
    }
}

/// How long an idle destination task lingers before it ends.
const LINGER: Duration = Duration::from_secs(30);

/// The task that drains one destination's queue, one message at a time.
async fn run(core: Arc<Core>, dest: Arc<Dest>) {
    let cfg = core.config.clone();
    let outbox = &core.outbox;
    let mut backoff = cfg.retry_initial;
    loop {
        let next = dest.lock().items.front().cloned();
        let Some(item) = next else {
            let notified = dest.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if !dest.lock().items.is_empty() {
                continue;
            }
            if tokio::time::timeout(LINGER, notified).await.is_ok() {
                continue;
            }
            let mut dests = lock(&outbox.dests);
            if !dest.lock().items.is_empty() {
                continue;
            }
            if dests.get(&dest.key).is_some_and(|d| Arc::ptr_eq(d, &dest)) {
                dests.remove(&dest.key);
            }
            return;
        };
        let attempt = deliver(&core, &dest, &item).await;
        let finished = |outcome: Option<&AtomicU64>| {
            let mut st = dest.lock();
            if let Some(done) = st.items.pop_front() {
                st.bytes -= done.payload.len();
            }
            st.failing_since = None;
            st.last_error = None;
            drop(st);
            if let Some(counter) = outcome {
                counter.fetch_add(1, Ordering::Relaxed);
            }
            outbox.done(1);
        };
        match attempt {
            Attempt::Delivered => {
                backoff = cfg.retry_initial;
                finished(Some(&outbox.counters.delivered));
            }
            Attempt::HandlerFailed(e) => {
                backoff = cfg.retry_initial;
                tracing::debug!(topic = %item.topic, message_id = %item.id, subscriber = %dest.node_id, error = %e, "subscriber's handler failed (not retried)");
                finished(Some(&outbox.counters.handler_errors));
            }
            Attempt::Rejected(e) => {
                backoff = cfg.retry_initial;
                tracing::warn!(topic = %item.topic, message_id = %item.id, subscriber = %dest.node_id, error = %e, "subscriber refused a message (not retried)");
                finished(Some(&outbox.counters.lost));
            }
            Attempt::Failed(e) => {
                let since = {
                    let mut st = dest.lock();
                    st.last_error = Some(e.detail().to_string());
                    *st.failing_since.get_or_insert_with(Instant::now)
                };
                let registered = core.topics.is_registered(&item.topic, &dest.key);
                // Gone from the registry and answering "no such subscriber": it
                // unsubscribed while these were on their way.
                let quiet = registered == Some(false) && e.code() == 404;
                let reason = if quiet {
                    Some("the subscriber unsubscribed".to_string())
                } else if registered == Some(false) {
                    Some(format!(
                        "the subscriber left the registry; last attempt: {}",
                        e.detail()
                    ))
                } else if since.elapsed() >= cfg.retry_window {
                    lock(&outbox.shunned)
                        .insert(dest.key.clone(), Instant::now() + cfg.retry_window);
                    Some(format!(
                        "no delivery succeeded for {:?}; last attempt: {}",
                        cfg.retry_window,
                        e.detail()
                    ))
                } else {
                    None
                };
                if let Some(reason) = reason {
                    outbox.drop_dest(&dest, &reason, quiet);
                    return;
                }
                tracing::debug!(subscriber = %dest.node_id, address = %dest.key.address, error = %e, retry_in = ?backoff, "delivery failed; will retry");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(cfg.retry_max);
            }
        }
    }
}

/// Sends one message to one destination and classifies the answer.
async fn deliver(core: &Core, dest: &Dest, item: &Item) -> Attempt {
    let address = &dest.key.address;
    let request = (|| {
        let mut req = Request::new(Full::new(item.payload.clone()));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = format!("http://{address}{}", dest.key.path).parse().ok()?;
        let headers = req.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(wire::CONTENT_TYPE),
        );
        headers.insert(header::USER_AGENT, HeaderValue::from_static("micro-broker"));
        if let Ok(v) = HeaderValue::from_str(&item.topic) {
            headers.insert(crate::broker::HEADER_TOPIC, v);
        }
        if let Ok(v) = HeaderValue::from_str(&item.id) {
            headers.insert(crate::broker::HEADER_ID, v);
        }
        Some(req)
    })();
    let Some(request) = request else {
        return Attempt::Rejected(Error::bad_request(
            ID,
            format!("unusable subscriber address {address}{}", dest.key.path),
        ));
    };
    let send = async {
        let mut sender = core.conns.get(address).await?;
        let sent = async {
            sender.ready().await?;
            sender.send_request(request).await
        };
        let response = sent.await.map_err(|e| {
            core.conns.discard(address);
            Error::service_unavailable(ID, format!("delivering to {address}: {e}"))
        })?;
        let status = response.status();
        // The answer is a short error JSON at most; read it to free the stream.
        let body = Limited::new(response.into_body(), 64 << 10)
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        Ok::<_, Error>((status, body))
    };
    let timeout = core.config.delivery_timeout;
    let (status, body) = match tokio::time::timeout(timeout, send).await {
        Err(_) => {
            return Attempt::Failed(Error::timeout(
                ID,
                format!("{address} did not answer within {timeout:?}"),
            ))
        }
        Ok(Err(e)) => return Attempt::Failed(e),
        Ok(Ok(answer)) => answer,
    };
    let error = || {
        let text = String::from_utf8_lossy(&body);
        let mut e = Error::parse(&text);
        if e.code() != status.as_u16() && text.trim().is_empty() {
            e = Error::new(ID, status.to_string(), status.as_u16());
        }
        e
    };
    match status {
        s if s.is_success() => Attempt::Delivered,
        StatusCode::INTERNAL_SERVER_ERROR => Attempt::HandlerFailed(error()),
        StatusCode::NOT_FOUND
        | StatusCode::REQUEST_TIMEOUT
        | StatusCode::TOO_MANY_REQUESTS
        | StatusCode::BAD_GATEWAY
        | StatusCode::SERVICE_UNAVAILABLE
        | StatusCode::GATEWAY_TIMEOUT => Attempt::Failed(error()),
        _ => Attempt::Rejected(error()),
    }
}
