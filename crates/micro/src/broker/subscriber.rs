//! Subscribing with typed messages: decode each delivery by its content type and
//! hand the handler an [`Event`]; a message that cannot be decoded is logged and
//! moved to the dead-letter topic `<topic>.dead` instead of failing again forever.

use std::future::Future;
use std::sync::Arc;

use super::{
    handler, Broker, Delivery, Handler, Message, HEADER_CONTENT_TYPE, HEADER_FROM, HEADER_ID,
};
use crate::codec::{Format, Message as Payload};
use crate::Error;

/// One typed message received on a topic.
#[derive(Debug, Clone)]
pub struct Event<M> {
    /// The topic.
    pub topic: String,
    /// The decoded message.
    pub message: M,
    /// All headers (lower-case keys), `micro-id` and `micro-from-service` included.
    pub headers: std::collections::BTreeMap<String, String>,
}

impl<M> Event<M> {
    /// The message id.
    pub fn id(&self) -> Option<&str> {
        self.headers.get(HEADER_ID).map(String::as_str)
    }
    /// The publishing service, if it said.
    pub fn from_service(&self) -> Option<&str> {
        self.headers.get(HEADER_FROM).map(String::as_str)
    }
}

/// The format a delivery's content type names: protobuf for
/// `application/protobuf` (and `application/x-protobuf`), JSON otherwise.
fn format_of(message: &Message) -> Format {
    match message.headers.get(HEADER_CONTENT_TYPE).map(String::as_str) {
        Some(
            "application/protobuf" | "application/x-protobuf" | "application/octet-stream+proto",
        ) => Format::Proto,
        _ => Format::Json,
    }
}

/// The dead-letter topic of `topic`.
pub fn dead_letter_topic(topic: &str) -> String {
    format!("{topic}.dead")
}

/// A broker handler that decodes `M` and calls `f`; undecodable messages go to
/// `<topic>.dead` on `broker` with a `micro-error` header.
pub fn typed_handler<M, F, Fut>(broker: Arc<dyn Broker>, f: F) -> Handler
where
    M: Payload,
    F: Fn(Event<M>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), Error>> + Send + 'static,
{
    let f = Arc::new(f);
    handler(move |delivery: Delivery| {
        let f = f.clone();
        let broker = broker.clone();
        async move {
            let Delivery { topic, message, .. } = delivery;
            match format_of(&message).decode::<M>(&message.body) {
                Ok(decoded) => {
                    f(Event {
                        topic,
                        message: decoded,
                        headers: message.headers,
                    })
                    .await
                }
                Err(e) => {
                    let id = message.id().unwrap_or("-").to_string();
                    let dead = dead_letter_topic(&topic);
                    tracing::warn!(%topic, message_id = %id, error = %e.detail(), dead_letter = %dead, "undecodable message moved to the dead-letter topic");
                    let mut letter = message;
                    letter.headers.insert("micro-error".into(), e.to_json());
                    if let Err(publish_error) = broker.publish(&dead, letter).await {
                        tracing::error!(%topic, message_id = %id, error = %publish_error, "could not move an undecodable message to the dead-letter topic; dropping it");
                    }
                    // Handled: redelivering it would fail the same way.
                    Ok(())
                }
            }
        }
    })
}
