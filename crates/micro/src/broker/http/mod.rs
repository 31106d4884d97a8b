//! The HTTP broker: pub/sub between processes with no broker server. The model,
//! limits and failure behaviour are documented on [`HttpBroker`].

mod inbox;
mod outbox;
mod topics;
mod wire;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::{BoxFuture, FutureExt};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::{validate_topic, Broker, Handler, Message, SubscribeOptions, Subscription};
use crate::registry::{Event, EventKind, Node, RegisterOptions, Registry, Service};
use crate::Error;
use inbox::{Inbox, LocalSub, Server};
use outbox::{Item, Outbox};
use topics::{service_name, Topics, BROADCAST};
use wire::{Conns, ID};

/// Pub/sub between processes with no broker server, found through the registry:
/// the zero-dependency default (go-micro's HTTP broker model). Cheap to clone;
/// clones share one broker.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), micro::Error> {
/// use std::sync::Arc;
/// use std::time::Duration;
/// use micro::broker::{handler, Broker, HttpBroker, Message, SubscribeOptions};
/// use micro::registry::MemoryRegistry;
///
/// // Two brokers on one registry: in real life, two processes.
/// let registry = Arc::new(MemoryRegistry::new());
/// let subscriber = HttpBroker::new(registry.clone());
/// let publisher = HttpBroker::new(registry);
///
/// let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
/// let sub = subscriber
///     .subscribe("orders.created", handler(move |d| {
///         let tx = tx.clone();
///         async move { tx.send(d.message.body).ok(); Ok(()) }
///     }), SubscribeOptions::default().queue("billing"))
///     .await?;
///
/// publisher.publish("orders.created", Message::new("order 42")).await?;
/// publisher.flush(Duration::from_secs(5)).await?; // delivered
/// assert_eq!(rx.recv().await.unwrap(), "order 42");
///
/// sub.unsubscribe().await?;
/// subscriber.disconnect().await?;
/// # Ok(()) }
/// ```
///
/// # How it works
///
/// - **Subscribing** starts (once per broker, on the first subscription) a small
///   HTTP/1.1 + h2c server on the listen address (`127.0.0.1:0` by default), and
///   registers the subscription in the registry as a node of the service
///   `topic:<topic>`, version `<queue>` (or `broadcast` without a queue group):
///   node id `<n>@<address>` (the n-th subscription of this broker), address the
///   broker's advertised `host:port`, metadata
///   `{"broker":"http","topic":..,"queue":..,"path":"/_sub?id=<percent-encoded id>"}`.
///   The record is registered again every 30 s with a 90 s TTL
///   ([`HttpBroker::register_interval`], [`HttpBroker::register_ttl`]) and removed on
///   unsubscribe and disconnect. Because ids derive from the address, a process that
///   restarts on the same fixed port and subscribes in the same order takes its old
///   subscriptions' ids back, and messages buffered for them reach it.
/// - **Publishing** looks the topic up in a cache fed by a registry watch (the first
///   publish on a topic reads the registry; later ones cost no round trip) and hands
///   the message to every broadcast subscriber and to one member of each queue group
///   (round robin, skipping members whose deliveries are failing). `publish` returns
///   once the message is in every destination's queue, **not** after delivery; use
///   [`HttpBroker::flush`] to wait for delivery. With no subscriber, publishing
///   succeeds and delivers nothing (as NATS does).
/// - **Delivering**: each destination (subscriber) has one queue, drained by one task
///   that sends one message at a time as `POST /_sub?id=<id>` over a pooled h2c
///   connection (one per subscriber broker), so messages from one publisher reach a
///   subscriber in publish order, retries included. The subscriber broker runs the
///   handler (one delivery at a time per subscription, in arrival order) and answers
///   200 when it returned `Ok`, 500 with the error JSON when it returned an error
///   (logged there with the message id; **not retried**), 4xx for a malformed
///   delivery (dropped, logged by the publisher), 404 for an unknown subscriber id.
///
/// # The delivery body
///
/// `Content-Type: application/vnd.micro.broker.v1`; the body is a 4-byte big-endian
/// length `n`, then `n` bytes of JSON `{"topic":"..","headers":{..}}` (the message
/// headers exactly as published: any key, any value), then the message body
/// unchanged (any bytes). The `micro-topic` and `micro-id` HTTP headers repeat the
/// topic and message id for logs and proxies.
///
/// # Limits and failure behaviour
///
/// | what | default | set with |
/// |---|---|---|
/// | message size (body + encoded headers) | 4 MiB; larger publishes fail with 413 | [`HttpBroker::max_message_size`] |
/// | buffer per destination | 1,000 messages or 16 MiB | [`HttpBroker::buffer`] |
/// | retry back-off | 100 ms doubling to 5 s | [`HttpBroker::retry_backoff`] |
/// | retry window | 60 s of failing in a row | [`HttpBroker::retry_window`] |
/// | one delivery attempt (incl. the handler) | 30 s | [`HttpBroker::delivery_timeout`] |
/// | draining on disconnect | 5 s | [`HttpBroker::drain_timeout`] |
///
/// - A delivery that fails in transport (connection refused or reset, timeout, or the
///   subscriber answering 404, 408, 429, 502, 503 or 504) stays at the head of its
///   queue and is retried with back-off; later messages to that subscriber wait
///   behind it (order is kept).
/// - While a subscriber's buffer is full, `publish` fails with **503** (`subscriber X
///   of topic T at A is not accepting messages; N buffered, …`) and queues the
///   message nowhere, rather than growing without bound. A queue group fails only
///   when every member's buffer is full.
/// - A destination is given up when its subscriber has left the registry (its record
///   expired or was deregistered) and an attempt fails, or when it has failed for the
///   whole retry window: its buffered messages are dropped and each is logged
///   (`warn`, "message lost") with its topic and message id. A queue-group member
///   given up on is avoided for one retry window.
/// - A subscriber that comes back on the same address within the retry window
///   receives what was buffered for it. Delivery is at most once for messages given
///   up on, and may be twice when an attempt timed out after the handler ran: use
///   NATS JetStream when every message must be processed.
/// - A handler that panics answers 500 like one that returns an error; a malformed
///   delivery is a 4xx, never a crash.
/// - Acknowledgement is the handler's return value ([`Delivery::ack`] and `nack` are
///   no-ops) and `durable` subscriptions are not supported (ignored): subscribers
///   only get messages published while they are subscribed.
/// - Dropping the last handle of a broker stops it without deregistering (the records
///   expire by TTL); call [`Broker::disconnect`] for a clean stop.
///
/// [`Delivery::ack`]: crate::broker::Delivery::ack
#[derive(Clone)]
pub struct HttpBroker {
    handle: Arc<Handle>,
}

impl fmt::Debug for HttpBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let core = &self.handle.core;
        f.debug_struct("HttpBroker")
            .field("registry", &core.registry.name())
            .field("listen", &core.config.listen)
            .field("address", &self.address())
            .finish_non_exhaustive()
    }
}

/// Counters of one [`HttpBroker`], for monitoring and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HttpBrokerStats {
    /// Live subscriptions of this broker.
    pub subscriptions: usize,
    /// Subscribers this broker currently has a delivery queue for.
    pub destinations: usize,
    /// Messages waiting in delivery queues.
    pub buffered: usize,
    /// Deliveries whose handler returned `Ok`.
    pub delivered: u64,
    /// Deliveries whose handler returned an error (not retried).
    pub handler_errors: u64,
    /// Messages dropped undelivered (given up on, or refused by the subscriber).
    pub lost: u64,
}

#[derive(Debug, Clone)]
struct Config {
    listen: String,
    advertise: Option<String>,
    register_interval: Duration,
    register_ttl: Duration,
    max_message_size: usize,
    buffer_messages: usize,
    buffer_bytes: usize,
    retry_initial: Duration,
    retry_max: Duration,
    retry_window: Duration,
    delivery_timeout: Duration,
    dial_timeout: Duration,
    drain_timeout: Duration,
    read_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:0".into(),
            advertise: None,
            register_interval: Duration::from_secs(30),
            register_ttl: Duration::from_secs(90),
            max_message_size: 4 << 20,
            buffer_messages: 1000,
            buffer_bytes: 16 << 20,
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_secs(5),
            retry_window: Duration::from_secs(60),
            delivery_timeout: Duration::from_secs(30),
            dial_timeout: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(30),
        }
    }
}

/// The last handle: stops every task when dropped.
#[derive(Debug)]
struct Handle {
    core: Arc<Core>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.core.abort();
    }
}

#[derive(Debug)]
struct Core {
    config: Config,
    registry: Arc<dyn Registry>,
    inbox: Arc<Inbox>,
    server: tokio::sync::Mutex<Option<Running>>,
    /// The server and refresher tasks, to abort without awaiting.
    tasks: Mutex<Vec<AbortHandle>>,
    /// The advertised address while serving.
    address: Mutex<Option<String>>,
    next_sub: AtomicU64,
    topics: Arc<Topics>,
    outbox: Outbox,
    conns: Conns,
}

#[derive(Debug)]
struct Running {
    server: Server,
    refresher: AbortHandle,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl HttpBroker {
    /// A broker that finds subscribers through `registry`. Nothing starts until the
    /// first subscription (the delivery server) or publish (the registry watch).
    pub fn new(registry: Arc<dyn Registry>) -> Self {
        Self::with_config(registry, Config::default())
    }

    fn with_config(registry: Arc<dyn Registry>, config: Config) -> Self {
        let core = Core {
            inbox: Arc::new(Inbox::new(config.max_message_size, config.read_timeout)),
            conns: wire::conns(config.dial_timeout),
            topics: Arc::new(Topics::new(registry.clone())),
            registry,
            config,
            server: tokio::sync::Mutex::new(None),
            tasks: Mutex::default(),
            address: Mutex::default(),
            next_sub: AtomicU64::new(0),
            outbox: Outbox::default(),
        };
        HttpBroker {
            handle: Arc::new(Handle {
                core: Arc::new(core),
            }),
        }
    }

    fn configure(self, f: impl FnOnce(&mut Config)) -> Self {
        let mut config = self.handle.core.config.clone();
        f(&mut config);
        Self::with_config(self.handle.core.registry.clone(), config)
    }

    /// Where the delivery server listens (default `127.0.0.1:0`, a free port). A
    /// wildcard address such as `0.0.0.0:0` needs an [advertise](Self::advertise)
    /// address. Set options before first use: each returns a fresh broker.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// use micro::broker::HttpBroker;
    /// use micro::registry::MemoryRegistry;
    ///
    /// let broker = HttpBroker::new(Arc::new(MemoryRegistry::new()))
    ///     .listen("0.0.0.0:7070")
    ///     .advertise("10.0.0.5"); // registered as 10.0.0.5:7070
    /// # let _ = broker;
    /// ```
    pub fn listen(self, address: impl Into<String>) -> Self {
        let address = address.into();
        self.configure(|c| c.listen = address)
    }

    /// The `host` or `host:port` other processes reach this broker at (the port
    /// defaults to the one listened on).
    pub fn advertise(self, address: impl Into<String>) -> Self {
        let address = address.into();
        self.configure(|c| c.advertise = Some(address))
    }

    /// How often subscriptions are registered again (default 30 s).
    pub fn register_interval(self, interval: Duration) -> Self {
        self.configure(|c| c.register_interval = interval.max(Duration::from_millis(10)))
    }

    /// How long a subscription's registration lives unless renewed (default 90 s).
    pub fn register_ttl(self, ttl: Duration) -> Self {
        self.configure(|c| c.register_ttl = ttl)
    }

    /// The largest message (body plus encoded headers) published or accepted
    /// (default 4 MiB).
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use micro::{broker::HttpBroker, registry::MemoryRegistry};
    /// let broker = HttpBroker::new(Arc::new(MemoryRegistry::new())).max_message_size(16 << 20);
    /// # let _ = broker;
    /// ```
    pub fn max_message_size(self, bytes: usize) -> Self {
        self.configure(|c| c.max_message_size = bytes)
    }

    /// How much may wait for one subscriber: `messages` or `bytes`, whichever is
    /// reached first (default 1,000 messages or 16 MiB). Beyond it, publishing to
    /// that subscriber fails with 503.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use micro::{broker::HttpBroker, registry::MemoryRegistry};
    /// let broker = HttpBroker::new(Arc::new(MemoryRegistry::new())).buffer(10_000, 64 << 20);
    /// # let _ = broker;
    /// ```
    pub fn buffer(self, messages: usize, bytes: usize) -> Self {
        self.configure(|c| {
            c.buffer_messages = messages.max(1);
            c.buffer_bytes = bytes.max(1);
        })
    }

    /// The wait before retrying a failed delivery: `initial`, doubling up to `max`
    /// (default 100 ms to 5 s).
    ///
    /// ```
    /// # use std::{sync::Arc, time::Duration};
    /// # use micro::{broker::HttpBroker, registry::MemoryRegistry};
    /// let broker = HttpBroker::new(Arc::new(MemoryRegistry::new()))
    ///     .retry_backoff(Duration::from_millis(50), Duration::from_secs(2))
    ///     .retry_window(Duration::from_secs(300));
    /// # let _ = broker;
    /// ```
    pub fn retry_backoff(self, initial: Duration, max: Duration) -> Self {
        self.configure(|c| {
            c.retry_initial = initial.max(Duration::from_millis(1));
            c.retry_max = max.max(c.retry_initial);
        })
    }

    /// How long a subscriber may keep failing before what is buffered for it is
    /// dropped (default 60 s).
    pub fn retry_window(self, window: Duration) -> Self {
        self.configure(|c| c.retry_window = window)
    }

    /// The longest one delivery attempt may take, the subscriber's handler included
    /// (default 30 s); a delivery that takes longer is retried.
    pub fn delivery_timeout(self, timeout: Duration) -> Self {
        self.configure(|c| c.delivery_timeout = timeout)
    }

    /// How long [`Broker::disconnect`] waits for buffered messages to be delivered
    /// and for deliveries in progress to finish (default 5 s).
    pub fn drain_timeout(self, timeout: Duration) -> Self {
        self.configure(|c| c.drain_timeout = timeout)
    }

    /// The address subscriptions are registered with, once the delivery server runs.
    pub fn address(&self) -> Option<String> {
        lock(&self.handle.core.address).clone()
    }

    /// Waits until every buffered message was delivered or given up on, for at most
    /// `timeout`; a 408 error says how many are left.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), micro::Error> {
    /// # use std::{sync::Arc, time::Duration};
    /// # use micro::{broker::HttpBroker, registry::MemoryRegistry};
    /// let broker = HttpBroker::new(Arc::new(MemoryRegistry::new()));
    /// broker.flush(Duration::from_secs(5)).await?; // nothing buffered
    /// # Ok(()) }
    /// ```
    pub async fn flush(&self, timeout: Duration) -> Result<(), Error> {
        let outbox = &self.handle.core.outbox;
        if outbox.drain(Instant::now() + timeout).await {
            return Ok(());
        }
        Err(Error::timeout(
            ID,
            format!(
                "{} messages still buffered after {timeout:?}",
                outbox.buffered()
            ),
        ))
    }

    /// The broker's counters.
    pub fn stats(&self) -> HttpBrokerStats {
        let core = &self.handle.core;
        let c = &core.outbox.counters;
        HttpBrokerStats {
            subscriptions: core.inbox.len(),
            destinations: core.outbox.destinations(),
            buffered: core.outbox.buffered(),
            delivered: c.delivered.load(Ordering::Relaxed),
            handler_errors: c.handler_errors.load(Ordering::Relaxed),
            lost: c.lost.load(Ordering::Relaxed),
        }
    }

    /// Simulates a crash: every task stops at once, nothing is deregistered.
    #[cfg(test)]
    fn crash(&self) {
        self.handle.core.abort();
    }
}

fn validate_queue(queue: &str) -> Result<(), Error> {
    if queue.is_empty() || queue.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Error::bad_request(
            ID,
            format!("invalid queue group {queue:?}: use a non-empty name without spaces"),
        ));
    }
    Ok(())
}

impl Core {
    /// Stops every task without awaiting or deregistering.
    fn abort(&self) {
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
        self.topics.stop();
        self.outbox.abort_all();
    }

    /// Starts the delivery server unless it runs; its advertised address.
    async fn ensure_server(&self) -> Result<String, Error> {
        let mut running = self.server.lock().await;
        if let Some(r) = &*running {
            return Ok(r.server.advertise.clone());
        }
        let server = Server::start(
            self.inbox.clone(),
            &self.config.listen,
            self.config.advertise.as_deref(),
            self.config.drain_timeout,
        )
        .await?;
        let refresher = tokio::spawn(refresh(
            self.inbox.clone(),
            self.registry.clone(),
            self.config.register_interval,
            self.config.register_ttl,
        ))
        .abort_handle();
        let address = server.advertise.clone();
        tracing::debug!(listen = %server.local, %address, "http broker receiving deliveries");
        let mut tasks = lock(&self.tasks);
        tasks.push(refresher.clone());
        tasks.push(server.abort_handle());
        drop(tasks);
        *lock(&self.address) = Some(address.clone());
        *running = Some(Running { server, refresher });
        Ok(address)
    }

    async fn subscribe(
        &self,
        topic: &str,
        handler: Handler,
        options: &SubscribeOptions,
    ) -> Result<String, Error> {
        validate_topic(topic)?;
        if let Some(q) = &options.queue {
            validate_queue(q)?;
        }
        if let Some(name) = &options.durable {
            tracing::debug!(%topic, durable = %name, "the http broker keeps no messages for absent subscribers; durable is ignored");
        }
        let address = self.ensure_server().await?;
        let n = self.next_sub.fetch_add(1, Ordering::Relaxed);
        let id = format!("{n}@{address}");
        let path = wire::sub_path(&id);
        let mut metadata = BTreeMap::from([
            ("broker".to_string(), "http".to_string()),
            ("topic".to_string(), topic.to_string()),
            ("path".to_string(), path),
        ]);
        if let Some(q) = &options.queue {
            metadata.insert("queue".into(), q.clone());
        }
        let service = Service {
            name: service_name(topic),
            version: options.queue.clone().unwrap_or_else(|| BROADCAST.into()),
            nodes: vec![Node {
                id: id.clone(),
                address,
                metadata,
            }],
            ..Default::default()
        };
        let sub = Arc::new(LocalSub {
            id: id.clone(),
            topic: topic.to_string(),
            handler,
            gate: tokio::sync::Mutex::new(true),
            service,
        });
        self.inbox.insert(sub.clone());
        let opts = RegisterOptions {
            ttl: self.config.register_ttl,
        };
        if let Err(e) = self.registry.register(&sub.service, opts).await {
            self.inbox.remove(&id);
            return Err(e);
        }
        self.topics.apply(&Event {
            kind: EventKind::Added,
            service: sub.service.clone(),
        });
        Ok(id)
    }

    /// Ends subscription `id`: no delivery starts once this returns.
    async fn unsubscribe(&self, id: &str) -> Result<(), Error> {
        let Some(sub) = self.inbox.remove(id) else {
            return Ok(());
        };
        // Waits for a handler in progress; deliveries queued behind it find it closed.
        *sub.gate.lock().await = false;
        self.topics.apply(&Event {
            kind: EventKind::Removed,
            service: sub.service.clone(),
        });
        self.registry.deregister(&sub.service).await
    }

    async fn disconnect(&self) -> Result<(), Error> {
        let running = self.server.lock().await.take();
        *lock(&self.address) = None;
        let mut result = Ok(());
        for id in self.inbox.ids() {
            if let Err(e) = self.unsubscribe(&id).await {
                tracing::warn!(subscriber = %id, error = %e, "deregistering a subscription failed");
                result = Err(e);
            }
        }
        let deadline = Instant::now() + self.config.drain_timeout;
        if let Some(running) = running {
            running.refresher.abort();
            running.server.stop().await;
        }
        lock(&self.tasks).clear();
        self.outbox.drain(deadline).await;
        self.outbox
            .clear("the broker disconnected before delivering it");
        self.conns.clear();
        self.topics.stop();
        result
    }

    async fn publish(self: &Arc<Self>, topic: &str, message: Message) -> Result<(), Error> {
        validate_topic(topic)?;
        let payload = wire::encode(topic, &message);
        let size = payload.len() - wire::PREFIX;
        if size > self.config.max_message_size {
            return Err(Error::payload_too_large(
                ID,
                format!(
                    "the message is {size} bytes with its headers, over the http broker's \
                     limit of {} bytes",
                    self.config.max_message_size
                ),
            ));
        }
        let targets = self.topics.lookup(topic).await?;
        if targets.is_empty() {
            return Ok(());
        }
        let item = Item {
            payload,
            id: message.id().unwrap_or("-").into(),
            topic: topic.into(),
        };
        self.outbox.enqueue(self, &targets, item).map(|_| ())
    }
}

/// Registers every live subscription again each `interval`.
async fn refresh(
    inbox: Arc<Inbox>,
    registry: Arc<dyn Registry>,
    interval: Duration,
    ttl: Duration,
) {
    let mut tick = tokio::time::interval_at(Instant::now() + interval, interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for sub in inbox.all() {
            if let Err(e) = registry
                .register(&sub.service, RegisterOptions { ttl })
                .await
            {
                tracing::warn!(topic = %sub.topic, subscriber = %sub.id, error = %e, "renewing a subscription's registration failed");
            }
            // Unsubscribed meanwhile: undo a renewal that followed its deregistration.
            if !inbox.contains(&sub.id) {
                let _ = registry.deregister(&sub.service).await;
            }
        }
    }
}

impl Broker for HttpBroker {
    fn connect(&self) -> BoxFuture<'_, Result<(), Error>> {
        // The server starts with the first subscription, the watch with the first
        // publish: a process that only publishes opens no port.
        futures_util::future::ready(Ok(())).boxed()
    }

    fn disconnect(&self) -> BoxFuture<'_, Result<(), Error>> {
        async move { self.handle.core.disconnect().await }.boxed()
    }

    fn publish<'a>(&'a self, topic: &'a str, message: Message) -> BoxFuture<'a, Result<(), Error>> {
        async move { self.handle.core.publish(topic, message).await }.boxed()
    }

    fn subscribe<'a>(
        &'a self,
        topic: &'a str,
        handler: Handler,
        options: SubscribeOptions,
    ) -> BoxFuture<'a, Result<Subscription, Error>> {
        async move {
            let id = self.handle.core.subscribe(topic, handler, &options).await?;
            let broker = self.clone();
            Ok(Subscription::new(
                topic,
                options.queue,
                move || async move { broker.handle.core.unsubscribe(&id).await },
            ))
        }
        .boxed()
    }

    fn name(&self) -> &'static str {
        "http"
    }
}
