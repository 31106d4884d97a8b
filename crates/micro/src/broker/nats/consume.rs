//! The subscriber tasks: core NATS and JetStream consumers, acknowledgements and
//! the dead-letter path.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, message::AckKind};
use futures_util::future::{BoxFuture, FutureExt};
use futures_util::StreamExt;
use tokio::sync::watch;

use super::{ensure_stream, wire, Conn, Options, Shared, ERROR_ID};
use crate::broker::{
    dead_letter_topic, AckMode, Acker, Delivery, Handler, Message, HEADER_ID, HEADER_TOPIC,
};
use crate::Error;

/// The header a dead letter carries its last error in (micro error JSON).
const HEADER_ERROR: &str = "micro-error";
/// The header a dead letter carries its delivery count in.
const HEADER_DELIVERIES: &str = "micro-deliveries";

/// Runs `handler`; a panic becomes an error instead of ending the subscription.
async fn call(handler: &Handler, delivery: Delivery) -> Result<(), Error> {
    let future = match std::panic::catch_unwind(AssertUnwindSafe(|| handler(delivery))) {
        Ok(future) => future,
        Err(_) => return Err(panicked()),
    };
    match AssertUnwindSafe(future).catch_unwind().await {
        Ok(result) => result,
        Err(_) => Err(panicked()),
    }
}

fn panicked() -> Error {
    Error::internal_server_error(ERROR_ID, "the subscriber's handler panicked")
}

/// Resolves once `stop` says so (or its sender is gone). Made once per
/// subscription and polled alongside each receive: registered once, cheap to poll.
async fn stopped(mut stop: watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// A core NATS subscription: every message to the handler, one at a time; an
/// error is logged with the message id.
pub(super) async fn run_core(
    topic: String,
    mut subscriber: async_nats::Subscriber,
    handler: Handler,
    stop: watch::Receiver<bool>,
) {
    let stop = stopped(stop);
    tokio::pin!(stop);
    loop {
        let next = tokio::select! {
            biased;
            _ = &mut stop => break,
            next = subscriber.next() => next,
        };
        let Some(msg) = next else { break };
        // The NATS headers stay here to name the message in a log line, so the
        // common path copies no id.
        let headers = msg.headers;
        let message = wire::from_nats(headers.as_ref(), msg.payload);
        if let Err(e) = call(&handler, Delivery::new(topic.as_str(), message, None)).await {
            let id = headers
                .as_ref()
                .and_then(|h| h.get(HEADER_ID))
                .map_or("-", |v| v.as_str());
            tracing::warn!(%topic, message_id = %id, error = %e, "subscriber failed to handle a message (core NATS: not redelivered)");
        }
    }
    let _ = subscriber.unsubscribe().await;
}

/// A JetStream subscription.
pub(super) struct JetStreamConsumer {
    pub(super) shared: Arc<Shared>,
    pub(super) options: Arc<Options>,
    pub(super) topic: String,
    pub(super) stream: String,
    /// The durable consumer name; `None` for an ephemeral consumer.
    pub(super) durable: Option<String>,
    pub(super) ack: AckMode,
    pub(super) handler: Handler,
}

type PullConsumer = jetstream::consumer::Consumer<pull::Config>;

impl JetStreamConsumer {
    fn config(&self) -> pull::Config {
        pull::Config {
            durable_name: self.durable.clone(),
            name: self.durable.clone(),
            description: Some(format!("micro subscriber of {}", self.topic)),
            deliver_policy: if self.durable.is_some() {
                jetstream::consumer::DeliverPolicy::All
            } else {
                jetstream::consumer::DeliverPolicy::New
            },
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: self.options.ack_wait,
            // micro counts deliveries itself, to move a message to `<topic>.dead`
            // instead of letting the server stop delivering it.
            max_deliver: -1,
            filter_subject: self.topic.clone(),
            inactive_threshold: if self.durable.is_some() {
                Duration::ZERO
            } else {
                Duration::from_secs(60)
            },
            ..Default::default()
        }
    }

    /// Binds to (or creates) the consumer and starts pulling from it.
    pub(super) async fn open(&self, conn: &Conn) -> Result<(PullConsumer, pull::Stream), Error> {
        let unavailable = |what: &str, e: &dyn std::fmt::Display| {
            Error::service_unavailable(
                ERROR_ID,
                format!(
                    "cannot {what} the JetStream consumer of {:?} on stream {}: {e}",
                    self.topic, self.stream
                ),
            )
        };
        let stream = conn
            .js
            .get_stream_no_info(&self.stream)
            .await
            .map_err(|e| unavailable("find", &e))?;
        let consumer: PullConsumer = match &self.durable {
            Some(name) => stream.get_or_create_consumer(name, self.config()).await,
            None => stream.create_consumer(self.config()).await,
        }
        .map_err(|e| unavailable("create", &e))?;
        let filter = &consumer.cached_info().config.filter_subject;
        if filter != &self.topic {
            return Err(Error::conflict(
                ERROR_ID,
                format!(
                    "the JetStream consumer {:?} on stream {} reads {filter:?}, not {:?}: choose another durable name",
                    self.durable.as_deref().unwrap_or("-"),
                    self.stream,
                    self.topic
                ),
            ));
        }
        let messages = consumer
            .stream()
            .max_messages_per_batch(self.options.pull_batch)
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await
            .map_err(|e| unavailable("pull from", &e))?;
        Ok((consumer, messages))
    }

    /// Handles messages until stopped, rebinding after errors the client does
    /// not recover from by itself (consumer deleted, server gone for long).
    pub(super) async fn run(
        self,
        conn: Arc<Conn>,
        first: (PullConsumer, pull::Stream),
        stop: watch::Receiver<bool>,
    ) {
        let stop = stopped(stop);
        tokio::pin!(stop);
        let (mut consumer, mut messages) = first;
        let mut errors = 0u32;
        loop {
            let next = tokio::select! {
                biased;
                _ = &mut stop => break,
                next = messages.next() => next,
            };
            match next {
                Some(Ok(message)) => {
                    errors = 0;
                    self.handle(&conn, message).await;
                    continue;
                }
                Some(Err(e)) => {
                    errors += 1;
                    let fatal = matches!(
                        e.kind(),
                        pull::MessagesErrorKind::ConsumerDeleted
                            | pull::MessagesErrorKind::PushBasedConsumer
                    );
                    tracing::debug!(topic = %self.topic, error = %e, "JetStream pull");
                    if !fatal && errors < 5 {
                        continue;
                    }
                    tracing::warn!(topic = %self.topic, error = %e, "JetStream subscription interrupted; binding again");
                }
                None => {
                    tracing::warn!(topic = %self.topic, "JetStream message stream ended; binding again");
                }
            }
            drop(messages);
            // Bind again, with backoff, until it works or the subscription stops.
            let mut backoff = Duration::from_millis(100);
            let reopened = loop {
                match self.open(&conn).await {
                    Ok(reopened) => break Some(reopened),
                    Err(e) => {
                        tracing::debug!(topic = %self.topic, error = %e, "JetStream rebind failed; retrying");
                        // The stream may be gone too (a server without its store).
                        self.shared
                            .streams
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .remove(&self.topic);
                        let _ =
                            ensure_stream(&self.shared, &self.options, &conn, &self.topic).await;
                    }
                }
                tokio::select! {
                    biased;
                    _ = &mut stop => break None,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
            };
            match reopened {
                Some((c, m)) => {
                    consumer = c;
                    messages = m;
                    errors = 0;
                }
                None => return,
            }
        }
        if self.durable.is_none() {
            let name = consumer.cached_info().name.clone();
            if let Ok(stream) = conn.js.get_stream_no_info(&self.stream).await {
                let _ = stream.delete_consumer(&name).await;
            }
        }
    }

    async fn handle(&self, conn: &Arc<Conn>, message: jetstream::Message) {
        let (delivered, stream_sequence) = match message.info() {
            Ok(info) => (
                u64::try_from(info.delivered).unwrap_or(1).max(1),
                Some(info.stream_sequence),
            ),
            Err(_) => (1, None),
        };
        let (message, acker) = message.split();
        // The NATS headers stay here to name the message in a log line.
        let headers = message.headers;
        let message = wire::from_nats(headers.as_ref(), message.payload);
        let max = self.options.max_deliver;
        let dead_letter = || DeadLetter {
            shared: self.shared.clone(),
            options: self.options.clone(),
            conn: conn.clone(),
            topic: self.topic.clone(),
            origin: stream_sequence.map(|seq| format!("{}.{seq}", self.stream)),
        };
        let delay = self.options.redelivery_delay;
        if delivered > max {
            // Delivered too often without an answer (handlers that hung or
            // crashed): straight to the dead-letter topic.
            let error = Error::new(
                ERROR_ID,
                format!("not acknowledged after {} deliveries", delivered - 1),
                500,
            );
            let last = Some((dead_letter(), message, delivered - 1));
            JsAcker::new(acker, last, delay).fail(&error).await;
            return;
        }
        // The last allowed delivery keeps a copy for the dead-letter topic.
        let last = (delivered >= max).then(|| (dead_letter(), message.clone(), delivered));
        let is_last = last.is_some();
        let acker = Arc::new(JsAcker::new(acker, last, delay));
        let delivery = Delivery::new(self.topic.as_str(), message, Some(acker.clone()));
        match call(&self.handler, delivery).await {
            Ok(()) => {
                if self.ack == AckMode::Auto {
                    if let Err(e) = acker.settle(AckKind::Ack).await {
                        tracing::debug!(topic = %self.topic, error = %e, "JetStream ack not sent; the message will come again");
                    }
                }
            }
            Err(error) => {
                let id = headers
                    .as_ref()
                    .and_then(|h| h.get(HEADER_ID))
                    .map_or("-", |v| v.as_str());
                if is_last {
                    tracing::warn!(topic = %self.topic, message_id = %id, deliveries = delivered, error = %error, "subscriber failed to handle a message for the last time; moving it to the dead-letter topic");
                } else {
                    tracing::warn!(topic = %self.topic, message_id = %id, deliveries = delivered, error = %error, "subscriber failed to handle a message; it will be delivered again");
                }
                acker.fail(&error).await;
            }
        }
    }
}

/// Where a message goes when it has been delivered too often.
struct DeadLetter {
    shared: Arc<Shared>,
    options: Arc<Options>,
    conn: Arc<Conn>,
    topic: String,
    /// `<stream>.<sequence>` of the stored message, when known.
    origin: Option<String>,
}

impl DeadLetter {
    /// Publishes `message` on `<topic>.dead` (stored by JetStream), with the
    /// error and the delivery count as headers.
    async fn send(&self, mut message: Message, error: &Error, delivered: u64) -> Result<(), Error> {
        let topic = dead_letter_topic(&self.topic);
        message
            .headers
            .entry(HEADER_TOPIC.to_string())
            .or_insert_with(|| self.topic.clone());
        message
            .headers
            .insert(HEADER_ERROR.to_string(), error.to_json());
        message
            .headers
            .insert(HEADER_DELIVERIES.to_string(), delivered.to_string());
        ensure_stream(&self.shared, &self.options, &self.conn, &topic).await?;
        let mut publish = jetstream::message::PublishMessage::build()
            .payload(message.body.clone())
            .headers(wire::to_nats_headers(&message.headers));
        if let Some(origin) = &self.origin {
            // The same for every attempt at moving this stored message: a dead
            // letter sent again after a crash is stored once.
            publish = publish.message_id(origin);
        }
        let unavailable = |e: &dyn std::fmt::Display| {
            Error::service_unavailable(
                ERROR_ID,
                format!("cannot publish on the dead-letter topic {topic}: {e}"),
            )
        };
        self.conn
            .js
            .send_publish(topic.clone(), publish)
            .await
            .map_err(|e| unavailable(&e))?
            .await
            .map_err(|e| unavailable(&e))?;
        tracing::warn!(topic = %self.topic, dead_letter = %topic, message_id = message.id().unwrap_or("-"), deliveries = delivered, "message moved to the dead-letter topic");
        Ok(())
    }
}

/// Acknowledges one JetStream delivery, once.
struct JsAcker {
    inner: jetstream::message::Acker,
    done: AtomicBool,
    /// Set on the last allowed delivery: a failure moves the message to
    /// `<topic>.dead` (with the delivery count) instead of asking for redelivery.
    last: Option<(DeadLetter, Message, u64)>,
    redelivery_delay: Duration,
}

impl JsAcker {
    fn new(
        inner: jetstream::message::Acker,
        last: Option<(DeadLetter, Message, u64)>,
        redelivery_delay: Duration,
    ) -> Self {
        JsAcker {
            inner,
            done: AtomicBool::new(false),
            last,
            redelivery_delay,
        }
    }

    /// Sends `kind` unless the delivery was settled already.
    async fn settle(&self, kind: AckKind) -> Result<(), Error> {
        if self.done.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.inner.ack_with(kind).await.map_err(|e| {
            Error::service_unavailable(
                ERROR_ID,
                format!("cannot acknowledge a JetStream message: {e}"),
            )
        })
    }

    /// The delivery failed with `error`: on the last allowed delivery, move the
    /// message to the dead-letter topic and remove it; otherwise (or if that
    /// fails) ask for redelivery after the delay. Nothing if already settled.
    async fn fail(&self, error: &Error) {
        if self.done.load(Ordering::Acquire) {
            return;
        }
        if let Some((dead, message, delivered)) = &self.last {
            match dead.send(message.clone(), error, *delivered).await {
                Ok(()) => {
                    let _ = self.settle(AckKind::Term).await;
                    return;
                }
                Err(e) => {
                    tracing::error!(topic = %dead.topic, error = %e, "could not move a message to the dead-letter topic; it will be delivered again");
                }
            }
        }
        let _ = self.settle(AckKind::Nak(Some(self.redelivery_delay))).await;
    }
}

impl Acker for JsAcker {
    fn ack(&self) -> BoxFuture<'_, Result<(), Error>> {
        self.settle(AckKind::Ack).boxed()
    }

    fn nack(&self) -> BoxFuture<'_, Result<(), Error>> {
        async move {
            let error = Error::new(ERROR_ID, "rejected by the subscriber (nack)", 500);
            self.fail(&error).await;
            Ok(())
        }
        .boxed()
    }
}
