//! Pub/sub: publish a message on a topic; every subscriber receives it, or one
//! subscriber per queue group (competing consumers).
//!
//! A [`Broker`] moves [`Message`]s (headers + body); the typed layer on top
//! (`Service::subscribe`, `Publisher`) encodes them with a codec and fills in the
//! standard headers ([`HEADER_TOPIC`], [`HEADER_ID`], `content-type`,
//! [`HEADER_FROM`]). [`MemoryBroker`] is the in-process implementation.

mod by_name;
#[doc(hidden)]
pub mod conformance;
mod http;
mod memory;
#[cfg(feature = "nats")]
mod nats;
mod publisher;
mod service;
mod subscriber;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::BoxFuture;

pub use by_name::{from_name, names, DEFAULT};
pub use http::{HttpBroker, HttpBrokerStats};
pub use memory::MemoryBroker;
#[cfg(feature = "nats")]
pub use nats::NatsBroker;
pub use publisher::Publisher;
pub use service::ServiceBroker;
pub use subscriber::{dead_letter_topic, typed_handler, Event};

use crate::Error;

/// The topic a message was published on.
pub const HEADER_TOPIC: &str = "micro-topic";
/// A unique id of the message, for logs and de-duplication.
pub const HEADER_ID: &str = "micro-id";
/// The name of the publishing service.
pub const HEADER_FROM: &str = "micro-from-service";
/// The content type of the body (`application/json`, `application/protobuf`).
pub const HEADER_CONTENT_TYPE: &str = "content-type";

/// A message: headers and an opaque body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    /// Headers; keys in lower case.
    pub headers: BTreeMap<String, String>,
    /// The payload.
    pub body: Bytes,
}

impl Message {
    /// A message with this body and no headers.
    pub fn new(body: impl Into<Bytes>) -> Self {
        Message {
            headers: BTreeMap::new(),
            body: body.into(),
        }
    }

    /// Adds a header (the key is lower-cased).
    pub fn header(mut self, key: impl AsRef<str>, value: impl Into<String>) -> Self {
        self.headers
            .insert(key.as_ref().to_ascii_lowercase(), value.into());
        self
    }

    /// The message id header, if any.
    pub fn id(&self) -> Option<&str> {
        self.headers.get(HEADER_ID).map(String::as_str)
    }
}

/// A message on its way to the broker: what a publish wrapper
/// ([`PublishWrapper`](crate::wrapper::PublishWrapper)) sees.
#[derive(Debug, Clone)]
pub struct Publication {
    /// The topic.
    pub topic: String,
    /// The message, its standard headers filled in.
    pub message: Message,
}

/// How deliveries are acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AckMode {
    /// Acknowledged when the handler returns `Ok`; an `Err` asks for redelivery
    /// where the broker can redeliver.
    #[default]
    Auto,
    /// The handler calls [`Delivery::ack`] itself.
    Manual,
}

/// Options of one subscription.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscribeOptions {
    /// Competing consumers: each message goes to one subscriber of the group.
    pub queue: Option<String>,
    /// How deliveries are acknowledged.
    pub ack: AckMode,
    /// A durable subscription name: where the broker supports it (JetStream),
    /// messages published while the subscriber is away are kept for it.
    pub durable: Option<String>,
}

impl SubscribeOptions {
    /// Joins queue group `queue`.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }
    /// Acknowledges by hand.
    pub fn manual_ack(mut self) -> Self {
        self.ack = AckMode::Manual;
        self
    }
    /// Makes the subscription durable under `name`.
    pub fn durable(mut self, name: impl Into<String>) -> Self {
        self.durable = Some(name.into());
        self
    }
}

/// Acknowledges one delivery to the broker that made it.
pub trait Acker: Send + Sync + 'static {
    /// The message was handled: do not deliver it again.
    fn ack(&self) -> BoxFuture<'_, Result<(), Error>>;
    /// The message was not handled: deliver it again (where supported).
    fn nack(&self) -> BoxFuture<'_, Result<(), Error>>;
}

/// One message delivered to a subscriber.
pub struct Delivery {
    /// The topic it came on.
    pub topic: String,
    /// The message.
    pub message: Message,
    acker: Option<Arc<dyn Acker>>,
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("topic", &self.topic)
            .field("message", &self.message)
            .finish()
    }
}

impl Delivery {
    /// A delivery; `acker` is how the broker learns of acknowledgements (none for
    /// brokers without them).
    pub fn new(topic: impl Into<String>, message: Message, acker: Option<Arc<dyn Acker>>) -> Self {
        Delivery {
            topic: topic.into(),
            message,
            acker,
        }
    }

    /// Acknowledges the delivery (for [`AckMode::Manual`]).
    pub async fn ack(&self) -> Result<(), Error> {
        match &self.acker {
            Some(a) => a.ack().await,
            None => Ok(()),
        }
    }

    /// Asks for redelivery, where the broker supports it.
    pub async fn nack(&self) -> Result<(), Error> {
        match &self.acker {
            Some(a) => a.nack().await,
            None => Ok(()),
        }
    }

    /// The broker's acknowledger, for brokers that apply [`AckMode::Auto`].
    pub fn acker(&self) -> Option<&Arc<dyn Acker>> {
        self.acker.as_ref()
    }
}

/// What a subscriber runs for each delivery. An `Err` is logged with the message
/// id and, where the broker can, the message is delivered again.
pub type Handler = Arc<dyn Fn(Delivery) -> BoxFuture<'static, Result<(), Error>> + Send + Sync>;

/// Makes a [`Handler`] from an async closure.
///
/// ```
/// let handler = micro::broker::handler(|delivery| async move {
///     println!("{} bytes on {}", delivery.message.body.len(), delivery.topic);
///     Ok(())
/// });
/// # let _ = handler;
/// ```
pub fn handler<F, Fut>(f: F) -> Handler
where
    F: Fn(Delivery) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), Error>> + Send + 'static,
{
    Arc::new(move |d| Box::pin(f(d)))
}

/// How a subscription is ended.
type Stop = Box<dyn FnOnce() -> BoxFuture<'static, Result<(), Error>> + Send>;

/// A live subscription; [`Subscription::unsubscribe`] ends it (dropping it does not).
pub struct Subscription {
    topic: String,
    queue: Option<String>,
    stop: Option<Stop>,
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("topic", &self.topic)
            .field("queue", &self.queue)
            .finish()
    }
}

impl Subscription {
    /// A subscription that `stop` ends.
    pub fn new<F, Fut>(topic: impl Into<String>, queue: Option<String>, stop: F) -> Self
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<(), Error>> + Send + 'static,
    {
        Subscription {
            topic: topic.into(),
            queue,
            stop: Some(Box::new(move || Box::pin(stop()))),
        }
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The queue group, if any.
    pub fn queue(&self) -> Option<&str> {
        self.queue.as_deref()
    }

    /// Stops receiving; returns once no further delivery will start.
    pub async fn unsubscribe(mut self) -> Result<(), Error> {
        match self.stop.take() {
            Some(stop) => stop().await,
            None => Ok(()),
        }
    }
}

/// A message broker.
pub trait Broker: Send + Sync + fmt::Debug + 'static {
    /// Connects (idempotent); publish and subscribe connect on first use too.
    fn connect(&self) -> BoxFuture<'_, Result<(), Error>>;

    /// Disconnects, ending every subscription.
    fn disconnect(&self) -> BoxFuture<'_, Result<(), Error>>;

    /// Publishes `message` on `topic`.
    fn publish<'a>(&'a self, topic: &'a str, message: Message) -> BoxFuture<'a, Result<(), Error>>;

    /// Subscribes `handler` to `topic`.
    fn subscribe<'a>(
        &'a self,
        topic: &'a str,
        handler: Handler,
        options: SubscribeOptions,
    ) -> BoxFuture<'a, Result<Subscription, Error>>;

    /// The backend's name (`memory`, `http`, `nats`).
    fn name(&self) -> &'static str;
}

/// Checks a topic name: non-empty, no whitespace or wildcards.
pub fn validate_topic(topic: &str) -> Result<(), Error> {
    if topic.is_empty()
        || topic
            .chars()
            .any(|c| c.is_whitespace() || c == '*' || c == '>' || c.is_control())
    {
        return Err(Error::bad_request(
            "micro.broker",
            format!("invalid topic {topic:?}: use a non-empty name without spaces or wildcards, e.g. greeter.hello"),
        ));
    }
    Ok(())
}
