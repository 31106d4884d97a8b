//! Publishing typed messages: encode with a codec and fill in the standard headers.

use std::sync::Arc;

use super::{
    Broker, Message, Publication, HEADER_CONTENT_TYPE, HEADER_FROM, HEADER_ID, HEADER_TOPIC,
};
use crate::codec::{Format, Message as Payload};
use crate::wrapper::{layer, PublishService, PublishWrapper};
use crate::{Error, Metadata};

/// The content type of a payload format on a broker.
pub(crate) fn content_type(format: Format) -> &'static str {
    match format {
        Format::Json => "application/json",
        Format::Proto => "application/protobuf",
    }
}

/// Publishes typed messages on one topic.
///
/// Messages are JSON by default (readable by `micro subscribe` and every client
/// library); [`Publisher::format`] switches to protobuf. Each message carries
/// `micro-topic`, a fresh `micro-id`, `content-type`, when known the publishing
/// service as `micro-from-service`, and, when published while handling a request,
/// that request's W3C trace context (`traceparent`, `tracestate`).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), micro::Error> {
/// use std::sync::Arc;
/// use micro::broker::{MemoryBroker, Publisher};
///
/// let publisher = Publisher::new("greeter.hello", Arc::new(MemoryBroker::new()));
/// publisher.publish(&prost_types_free_example()).await?;
/// # Ok(()) }
/// # fn prost_types_free_example() -> micro::proto::debug::v1::HealthResponse {
/// #     micro::proto::debug::v1::HealthResponse { status: "ok".into() }
/// # }
/// ```
#[derive(Clone)]
pub struct Publisher {
    topic: String,
    broker: Arc<dyn Broker>,
    format: Format,
    from_service: Option<String>,
    /// The broker inside the publish wrappers; `None` when there are none.
    wrapped: Option<PublishService>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("topic", &self.topic)
            .field("broker", &self.broker.name())
            .field("format", &self.format)
            .field("wrapped", &self.wrapped.is_some())
            .finish()
    }
}

/// The innermost publish service: the broker itself.
#[derive(Clone)]
struct BrokerPublish(Arc<dyn Broker>);

impl tower::Service<Publication> for BrokerPublish {
    type Response = ();
    type Error = Error;
    type Future = futures_util::future::BoxFuture<'static, Result<(), Error>>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, p: Publication) -> Self::Future {
        let broker = self.0.clone();
        Box::pin(async move { broker.publish(&p.topic, p.message).await })
    }
}

impl Publisher {
    /// A publisher of `topic` on `broker`.
    pub fn new(topic: impl Into<String>, broker: Arc<dyn Broker>) -> Self {
        Publisher {
            topic: topic.into(),
            broker,
            format: Format::Json,
            from_service: None,
            wrapped: None,
        }
    }

    /// Wraps every publish in `wrappers` (the first outermost).
    pub fn wrap(mut self, wrappers: &[PublishWrapper]) -> Self {
        self.wrapped = layer::stack(wrappers, BrokerPublish(self.broker.clone()));
        self
    }

    /// The payload format (default JSON).
    pub fn format(mut self, format: Format) -> Self {
        self.format = format;
        self
    }

    /// The publishing service's name, sent as `micro-from-service`.
    pub fn from_service(mut self, name: impl Into<String>) -> Self {
        self.from_service = Some(name.into());
        self
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Publishes `message`.
    pub async fn publish<M: Payload>(&self, message: &M) -> Result<(), Error> {
        self.publish_with(message, &Metadata::new()).await
    }

    /// Publishes `message` with extra headers (trace context, user metadata).
    pub async fn publish_with<M: Payload>(
        &self,
        message: &M,
        headers: &Metadata,
    ) -> Result<(), Error> {
        let body = self.format.encode(message)?;
        let mut msg = Message::new(body);
        // The trace context of the request being handled, unless given explicitly.
        for (k, v) in crate::request::inherited_trace().iter() {
            msg.headers.insert(k.to_string(), v.to_string());
        }
        for (k, v) in headers.iter() {
            msg.headers.insert(k.to_string(), v.to_string());
        }
        msg.headers.insert(HEADER_TOPIC.into(), self.topic.clone());
        msg.headers.insert(HEADER_ID.into(), crate::id::new_v4());
        msg.headers
            .insert(HEADER_CONTENT_TYPE.into(), content_type(self.format).into());
        if let Some(from) = &self.from_service {
            msg.headers.insert(HEADER_FROM.into(), from.clone());
        }
        match &self.wrapped {
            Some(wrapped) => {
                let publication = Publication {
                    topic: self.topic.clone(),
                    message: msg,
                };
                layer::call_once(wrapped, publication).await
            }
            None => self.broker.publish(&self.topic, msg).await,
        }
    }
}
