//! The NATS broker: core NATS for fire-and-forget pub/sub, JetStream for
//! at-least-once delivery.

mod consume;
mod wire;

#[cfg(test)]
mod test_server;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use async_nats::jetstream;
use futures_util::future::{BoxFuture, FutureExt};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{validate_topic, AckMode, Broker, Handler, Message, SubscribeOptions, Subscription};
use crate::Error;

/// The error id of everything this broker reports.
const ERROR_ID: &str = "micro.broker.nats";

/// A broker on [NATS](https://nats.io) (cargo feature `nats`).
///
/// **Core NATS** (the default) is fire-and-forget: `publish` hands the message to
/// the server and subscribers online at that moment receive it; a queue group
/// is a NATS queue group. A handler error is logged with the message id.
///
/// **JetStream** gives at-least-once delivery that survives a subscriber
/// restart and a nats-server restart. It is used
/// - for every publish and subscription when the broker is built with
///   [`NatsBroker::jetstream`]`(true)`: `publish` returns once the server has
///   stored the message (retrying for up to [`NatsBroker::publish_timeout`];
///   each `publish` call sends one unique `Nats-Msg-Id` with all its attempts,
///   so JetStream stores a retried message once);
/// - for a subscription with [`SubscribeOptions::durable`] or manual acks
///   ([`SubscribeOptions::manual_ack`]), whatever the broker mode (a core
///   publish is stored too once the topic's stream exists).
///
/// Layout on the server: topics are NATS subjects as they are (`greeter.hello`),
/// in both modes, so core subscribers also see JetStream-published messages.
/// Each topic gets its own stream, created on first use and named
/// `<prefix>_<topic>` (`MICRO_greeter_hello`, see [`NatsBroker::stream_prefix`]),
/// file storage, messages kept for [`NatsBroker::max_age`] (24 h by default). A
/// topic that an existing stream already captures (say `ORDERS` over
/// `orders.>`) uses that stream instead.
///
/// Consumers are pull consumers with explicit acks, named after
/// `SubscribeOptions::durable`, or else after the queue group (plus the topic
/// in a stream over many subjects), so subscribers sharing the name share one
/// consumer and compete for its messages. A new
/// durable consumer starts with the oldest message the stream holds. A
/// subscription with neither name (JetStream mode only) gets an ephemeral
/// consumer for new messages, deleted on unsubscribe. Durable consumers outlive
/// [`Subscription::unsubscribe`] and restarts: that is what makes them durable;
/// delete one you no longer need with the `nats` CLI or the JetStream API.
///
/// Acknowledgement: with [`AckMode::Auto`](super::AckMode::Auto) a handler's
/// `Ok` acks and an `Err` asks for redelivery after
/// [`NatsBroker::redelivery_delay`]; with `Manual` the handler calls
/// `Delivery::ack`/`nack` (an `Err` without either is a `nack`). A message that
/// is still not handled after [`NatsBroker::max_deliver`] deliveries is
/// published to the dead-letter topic `<topic>.dead` with its headers, plus
/// `micro-error` (the last error as micro error JSON) and `micro-deliveries`,
/// and removed from its consumer.
///
/// The client reconnects on its own (forever, by default) and subscriptions carry
/// on after a server restart.
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), micro::Error> {
/// use std::time::Duration;
/// use micro::broker::{handler, Broker, Message, NatsBroker, SubscribeOptions};
///
/// let broker = NatsBroker::new(vec!["nats://127.0.0.1:4222".into()])
///     .jetstream(true)
///     .ack_wait(Duration::from_secs(30))
///     .max_deliver(5);
/// let sub = broker
///     .subscribe(
///         "orders.created",
///         handler(|d| async move {
///             println!("order {:?}", d.message.id());
///             Ok(())
///         }),
///         SubscribeOptions::default().durable("billing"),
///     )
///     .await?;
/// broker
///     .publish("orders.created", Message::new("{}").header("micro-id", "1"))
///     .await?;
/// sub.unsubscribe().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct NatsBroker {
    options: Arc<Options>,
    shared: Arc<Shared>,
}

/// What the builder sets.
#[derive(Debug, Clone)]
struct Options {
    addresses: Vec<String>,
    jetstream: bool,
    stream_prefix: String,
    max_age: Duration,
    ack_wait: Duration,
    max_deliver: u64,
    redelivery_delay: Duration,
    publish_timeout: Duration,
    pull_batch: usize,
    connection_name: Option<String>,
    max_reconnects: Option<usize>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            addresses: vec![NatsBroker::DEFAULT_ADDRESS.to_string()],
            jetstream: false,
            stream_prefix: "MICRO".to_string(),
            max_age: Duration::from_secs(24 * 60 * 60),
            ack_wait: Duration::from_secs(30),
            max_deliver: 5,
            redelivery_delay: Duration::from_secs(1),
            publish_timeout: Duration::from_secs(10),
            pull_batch: 100,
            connection_name: None,
            max_reconnects: None,
        }
    }
}

/// State shared by every clone of one broker.
struct Shared {
    /// Unique to this broker: with a counter, the `Nats-Msg-Id` of its publishes.
    publisher_id: String,
    next_publish: AtomicU64,
    conn: ArcSwapOption<Conn>,
    connecting: tokio::sync::Mutex<()>,
    /// Topic -> the stream that captures it, once known.
    streams: Mutex<HashMap<String, String>>,
    subs: Mutex<HashMap<u64, Running>>,
    next_sub: AtomicU64,
}

/// One connection to NATS.
struct Conn {
    client: async_nats::Client,
    js: jetstream::Context,
}

/// A running subscription task.
struct Running {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl fmt::Debug for NatsBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsBroker")
            .field("options", &self.options)
            .field("connected", &self.shared.conn.load().is_some())
            .finish()
    }
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            publisher_id: uuid::Uuid::new_v4().simple().to_string(),
            next_publish: AtomicU64::new(0),
            conn: ArcSwapOption::default(),
            connecting: tokio::sync::Mutex::default(),
            streams: Mutex::default(),
            subs: Mutex::default(),
            next_sub: AtomicU64::new(0),
        }
    }
}

impl Default for NatsBroker {
    fn default() -> Self {
        NatsBroker {
            options: Arc::new(Options::default()),
            shared: Arc::new(Shared::default()),
        }
    }
}

impl NatsBroker {
    /// Where the broker connects when given no address.
    pub const DEFAULT_ADDRESS: &'static str = "nats://127.0.0.1:4222";

    /// A broker on the NATS servers at `addresses` (`nats://host:port`,
    /// `host:port`, or several in one string separated by commas); none means
    /// [`NatsBroker::DEFAULT_ADDRESS`]. Nothing connects until the first use or
    /// [`Broker::connect`].
    pub fn new(addresses: Vec<String>) -> Self {
        let addresses: Vec<String> = addresses
            .iter()
            .flat_map(|a| a.split(','))
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(|a| {
                if a.contains("://") {
                    a.to_string()
                } else {
                    format!("nats://{a}")
                }
            })
            .collect();
        let mut broker = NatsBroker::default();
        if !addresses.is_empty() {
            broker.options_mut().addresses = addresses;
        }
        broker
    }

    fn options_mut(&mut self) -> &mut Options {
        Arc::make_mut(&mut self.options)
    }

    /// Uses JetStream for every publish and subscription (default off: core
    /// NATS, with JetStream only for durable subscriptions).
    pub fn jetstream(mut self, on: bool) -> Self {
        self.options_mut().jetstream = on;
        self
    }

    /// The prefix of the streams this broker creates (default `MICRO`).
    pub fn stream_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.options_mut().stream_prefix = wire::js_name(&prefix.into());
        self
    }

    /// How long the streams this broker creates keep a message (default 24 h).
    pub fn max_age(mut self, age: Duration) -> Self {
        self.options_mut().max_age = age;
        self
    }

    /// How long JetStream waits for an ack before it delivers a message again
    /// (default 30 s; set when a consumer is created).
    pub fn ack_wait(mut self, wait: Duration) -> Self {
        self.options_mut().ack_wait = wait;
        self
    }

    /// Deliveries of one message before it goes to `<topic>.dead` (default 5,
    /// at least 1).
    pub fn max_deliver(mut self, deliveries: u64) -> Self {
        self.options_mut().max_deliver = deliveries.max(1);
        self
    }

    /// How long after a handler error the message is delivered again (default 1 s).
    pub fn redelivery_delay(mut self, delay: Duration) -> Self {
        self.options_mut().redelivery_delay = delay;
        self
    }

    /// How long a JetStream publish keeps retrying until the server confirms
    /// it stored the message (default 10 s).
    pub fn publish_timeout(mut self, timeout: Duration) -> Self {
        self.options_mut().publish_timeout = timeout;
        self
    }

    /// Messages a JetStream subscriber asks the server for at a time (default 100).
    pub fn pull_batch(mut self, batch: usize) -> Self {
        self.options_mut().pull_batch = batch.max(1);
        self
    }

    /// The connection name the server shows in its monitoring.
    pub fn connection_name(mut self, name: impl Into<String>) -> Self {
        self.options_mut().connection_name = Some(name.into());
        self
    }

    /// Gives up after this many failed reconnection attempts in a row (default:
    /// never gives up).
    pub fn max_reconnects(mut self, attempts: usize) -> Self {
        self.options_mut().max_reconnects = Some(attempts);
        self
    }

    /// The servers this broker connects to.
    pub fn addresses(&self) -> &[String] {
        &self.options.addresses
    }

    fn subs(&self) -> MutexGuard<'_, HashMap<u64, Running>> {
        self.shared.subs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The connection, made on first use.
    async fn conn(&self) -> Result<Arc<Conn>, Error> {
        if let Some(conn) = self.shared.conn.load_full() {
            return Ok(conn);
        }
        let _one_at_a_time = self.shared.connecting.lock().await;
        if let Some(conn) = self.shared.conn.load_full() {
            return Ok(conn);
        }
        let mut options = async_nats::ConnectOptions::new()
            .max_reconnects(self.options.max_reconnects)
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::Connected => {
                        tracing::info!("NATS connection (re)established")
                    }
                    async_nats::Event::Disconnected => {
                        tracing::warn!("NATS connection lost; reconnecting")
                    }
                    // Closed is what a deliberate disconnect ends with.
                    async_nats::Event::Closed => tracing::debug!("NATS connection closed"),
                    other => tracing::warn!(event = %other, "NATS connection event"),
                }
            });
        if let Some(name) = &self.options.connection_name {
            options = options.name(name);
        }
        let mut addresses = Vec::with_capacity(self.options.addresses.len());
        for address in &self.options.addresses {
            let parsed: async_nats::ServerAddr = address.parse().map_err(|e| {
                Error::bad_request(ERROR_ID, format!("invalid NATS address {address:?}: {e}"))
            })?;
            addresses.push(parsed);
        }
        let client = options.connect(addresses).await.map_err(|e| {
            Error::service_unavailable(
                ERROR_ID,
                format!(
                    "cannot connect to NATS at {}: {e}",
                    self.options.addresses.join(",")
                ),
            )
        })?;
        let js = jetstream::new(client.clone());
        let conn = Arc::new(Conn { client, js });
        self.shared.conn.store(Some(conn.clone()));
        Ok(conn)
    }

    /// The stream that captures `topic`, created if there is none.
    async fn ensure_stream(&self, conn: &Conn, topic: &str) -> Result<String, Error> {
        ensure_stream(&self.shared, &self.options, conn, topic).await
    }

    async fn publish_jetstream(
        &self,
        conn: &Conn,
        topic: &str,
        message: Message,
    ) -> Result<(), Error> {
        let deadline = Instant::now() + self.options.publish_timeout;
        let mut backoff = Duration::from_millis(20);
        let headers = wire::to_nats_headers(&message.headers);
        let publish_id = format!(
            "{}.{}",
            self.shared.publisher_id,
            self.shared.next_publish.fetch_add(1, Ordering::Relaxed)
        );
        loop {
            let attempt = async {
                self.ensure_stream(conn, topic).await?;
                let mut publish = jetstream::message::PublishMessage::build()
                    .payload(message.body.clone())
                    .headers(headers.clone());
                // One id for every attempt: JetStream stores a retried message once.
                publish = publish.message_id(&publish_id);
                let ack = conn
                    .js
                    .send_publish(topic.to_string(), publish)
                    .await
                    .map_err(|e| Error::service_unavailable(ERROR_ID, e.to_string()))?;
                ack.await
                    .map_err(|e| Error::service_unavailable(ERROR_ID, e.to_string()))?;
                Ok::<(), Error>(())
            };
            let error = match attempt.await {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            // The stream may have been deleted meanwhile: look it up again.
            self.shared
                .streams
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(topic);
            if Instant::now() + backoff > deadline || error.code() == 400 {
                return Err(Error::service_unavailable(
                    ERROR_ID,
                    format!(
                        "JetStream did not confirm a message on {topic:?} within {:?}: {}",
                        self.options.publish_timeout,
                        error.detail()
                    ),
                ));
            }
            tracing::debug!(%topic, error = %error, "JetStream publish not confirmed; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }

    /// Ends every subscription task at once, as a crash would, and drops the
    /// connection without draining it.
    #[cfg(test)]
    fn kill(&self) {
        let running: Vec<Running> = self.subs().drain().map(|(_, r)| r).collect();
        for r in running {
            r.task.abort();
        }
        self.shared.conn.store(None);
    }
}

/// The stream that captures `topic`, created if there is none (shared by
/// publishers and the dead-letter path).
async fn ensure_stream(
    shared: &Shared,
    options: &Options,
    conn: &Conn,
    topic: &str,
) -> Result<String, Error> {
    if let Some(name) = shared
        .streams
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(topic)
    {
        return Ok(name.clone());
    }
    let name = match find_stream(conn, topic).await? {
        Some(name) => name,
        None => {
            let name = wire::stream_name(&options.stream_prefix, topic);
            let config = jetstream::stream::Config {
                name: name.clone(),
                subjects: vec![topic.to_string()],
                max_age: options.max_age,
                storage: jetstream::stream::StorageType::File,
                description: Some(format!("micro topic {topic}")),
                ..Default::default()
            };
            match conn.js.create_stream(config).await {
                Ok(_) => {
                    tracing::debug!(%topic, stream = %name, "created JetStream stream");
                    name
                }
                // Another process may have created it (or one over the topic) meanwhile.
                Err(e) => match find_stream(conn, topic).await? {
                    Some(name) => name,
                    None => {
                        return Err(Error::service_unavailable(
                            ERROR_ID,
                            format!("cannot create the JetStream stream {name} for {topic:?}: {e}"),
                        ))
                    }
                },
            }
        }
    };
    shared
        .streams
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(topic.to_string(), name.clone());
    Ok(name)
}

/// The stream whose subjects capture `topic`, if any.
async fn find_stream(conn: &Conn, topic: &str) -> Result<Option<String>, Error> {
    match conn.js.stream_by_subject(topic.to_string()).await {
        Ok(name) => Ok(Some(name)),
        Err(e) if e.kind() == jetstream::context::GetStreamByNameErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::service_unavailable(
            ERROR_ID,
            format!("cannot look up the JetStream stream of {topic:?} (is JetStream enabled on the server, `nats-server -js`?): {e}"),
        )),
    }
}

impl Broker for NatsBroker {
    fn connect(&self) -> BoxFuture<'_, Result<(), Error>> {
        async move { self.conn().await.map(|_| ()) }.boxed()
    }

    fn disconnect(&self) -> BoxFuture<'_, Result<(), Error>> {
        async move {
            let running: Vec<Running> = self.subs().drain().map(|(_, r)| r).collect();
            for r in &running {
                let _ = r.stop.send(true);
            }
            for r in running {
                let abort = r.task.abort_handle();
                if tokio::time::timeout(Duration::from_secs(10), r.task)
                    .await
                    .is_err()
                {
                    abort.abort();
                }
            }
            self.shared
                .streams
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clear();
            if let Some(conn) = self.shared.conn.swap(None) {
                // Send what is still buffered (flush: a short-lived publisher such
                // as `micro publish` exits right after), then close.
                let closing = async {
                    let _ = conn.client.flush().await;
                    let _ = conn.client.drain().await;
                };
                let _ = tokio::time::timeout(Duration::from_secs(5), closing).await;
            }
            Ok(())
        }
        .boxed()
    }

    fn publish<'a>(&'a self, topic: &'a str, message: Message) -> BoxFuture<'a, Result<(), Error>> {
        async move {
            validate_topic(topic)?;
            let conn = self.conn().await?;
            if self.options.jetstream {
                return self.publish_jetstream(&conn, topic, message).await;
            }
            let result = if message.headers.is_empty() {
                conn.client.publish(topic.to_string(), message.body).await
            } else {
                let headers = wire::to_nats_headers(&message.headers);
                conn.client
                    .publish_with_headers(topic.to_string(), headers, message.body)
                    .await
            };
            result.map_err(|e| {
                Error::service_unavailable(ERROR_ID, format!("cannot publish on {topic:?}: {e}"))
            })
        }
        .boxed()
    }

    fn subscribe<'a>(
        &'a self,
        topic: &'a str,
        handler: Handler,
        options: SubscribeOptions,
    ) -> BoxFuture<'a, Result<Subscription, Error>> {
        async move {
            validate_topic(topic)?;
            let conn = self.conn().await?;
            let (stop_tx, stop_rx) = watch::channel(false);
            let durable = options.durable.as_deref().or(options.queue.as_deref());
            let use_jetstream = self.options.jetstream
                || options.durable.is_some()
                || options.ack == AckMode::Manual;
            let task = if use_jetstream {
                let stream = self.ensure_stream(&conn, topic).await?;
                // In a stream of micro's own (one topic) the consumer is named
                // after the durable name alone; in a stream over many subjects
                // the topic is part of the name, so equal names on different
                // topics stay apart.
                let own = stream == wire::stream_name(&self.options.stream_prefix, topic);
                let durable = durable.map(|name| {
                    if own {
                        wire::js_name(name)
                    } else {
                        wire::js_name(&format!("{name}.{topic}"))
                    }
                });
                let consumer = consume::JetStreamConsumer {
                    shared: self.shared.clone(),
                    options: self.options.clone(),
                    topic: topic.to_string(),
                    stream,
                    durable,
                    ack: options.ack,
                    handler,
                };
                let first = consumer.open(&conn).await?;
                tokio::spawn(consumer.run(conn.clone(), first, stop_rx))
            } else {
                let subscriber = match &options.queue {
                    Some(queue) => {
                        conn.client
                            .queue_subscribe(topic.to_string(), queue.clone())
                            .await
                    }
                    None => conn.client.subscribe(topic.to_string()).await,
                }
                .map_err(|e| {
                    Error::service_unavailable(
                        ERROR_ID,
                        format!("cannot subscribe to {topic:?}: {e}"),
                    )
                })?;
                // Once the server answers the flush it has the subscription: a
                // message published after `subscribe` returns reaches it.
                conn.client.flush().await.map_err(|e| {
                    Error::service_unavailable(
                        ERROR_ID,
                        format!("cannot subscribe to {topic:?}: {e}"),
                    )
                })?;
                tokio::spawn(consume::run_core(
                    topic.to_string(),
                    subscriber,
                    handler,
                    stop_rx,
                ))
            };
            let id = self.shared.next_sub.fetch_add(1, Ordering::Relaxed);
            self.subs().insert(
                id,
                Running {
                    stop: stop_tx,
                    task,
                },
            );
            let broker = self.clone();
            Ok(Subscription::new(
                topic,
                options.queue,
                move || async move {
                    let running = broker.subs().remove(&id);
                    if let Some(r) = running {
                        let _ = r.stop.send(true);
                        let _ = r.task.await;
                    }
                    Ok(())
                },
            ))
        }
        .boxed()
    }

    fn name(&self) -> &'static str {
        "nats"
    }
}
