//! [`ServiceBroker`]: the broker of a `micro server`, reached through the proxy's
//! Broker API (`MICRO_BROKER=service`), and the conversions between the proxy's
//! messages (`micro::proto::v1`) and [`Message`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use futures_util::future::{BoxFuture, FutureExt};
use futures_util::StreamExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{
    validate_topic, Broker, Delivery, Handler, Message, Publication, SubscribeOptions,
    Subscription, HEADER_CONTENT_TYPE, HEADER_ID, HEADER_TOPIC,
};
use crate::client::CallOptions;
use crate::proto::v1 as pb;
use crate::proto::v1::broker_client::BrokerClient;
use crate::registry::service::{
    json_to_value, unreachable_hint, value_to_json, RETRY_MAX, RETRY_MIN, STREAM_TIMEOUT,
};
use crate::{Client, Error};

const ID: &str = "micro.broker";
/// The content type of `body` when a publisher names none.
const DEFAULT_CONTENT_TYPE: &str = "application/protobuf";
const JSON: &str = "application/json";
const ADDRESS_VARIABLE: &str = "MICRO_BROKER_ADDRESS";

/// A broker that lives in a `micro server`: publishing and subscribing go through
/// the proxy's Broker API (`micro.v1.Broker`) at one address, by default
/// `127.0.0.1:8081` (`MICRO_BROKER=service`, `MICRO_BROKER_ADDRESS=host:port`).
/// Behind the proxy is the server's own broker (HTTP or NATS), so these messages
/// meet those of every other micro service on it.
///
/// Each subscription is one long-lived Subscribe stream, re-opened with a back-off
/// when the proxy restarts (messages published meanwhile are missed). Delivery is
/// **at most once**, as with core NATS: a message is acknowledged as soon as the
/// proxy streams it, a handler error is only logged (no redelivery), and manual
/// acks and `durable` subscriptions are accepted but have no effect. A JSON body
/// (content type `application/json`) travels as a JSON value and arrives
/// re-encoded: the same value, possibly with other spacing and key order.
///
/// ```no_run
/// # async fn doc() -> Result<(), micro::Error> {
/// use micro::broker::{handler, Broker, Message, ServiceBroker};
///
/// let broker = ServiceBroker::new("127.0.0.1:8081");
/// let sub = broker
///     .subscribe("greeter.hello", handler(|d| async move {
///         println!("{:?}", d.message.body);
///         Ok(())
///     }), Default::default())
///     .await?;
/// broker.publish("greeter.hello", Message::new(r#"{"name":"John"}"#)
///     .header("content-type", "application/json")).await?;
/// sub.unsubscribe().await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct ServiceBroker {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    address: String,
    client: BrokerClient,
    next_id: AtomicU64,
    /// The live subscriptions, for `disconnect`.
    subscriptions: Mutex<HashMap<u64, Running>>,
}

/// One subscription's task and how to stop it.
#[derive(Debug)]
struct Running {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(true);
        if let Err(e) = self.task.await {
            if e.is_panic() {
                tracing::error!("a service broker subscription task panicked");
            }
        }
    }
}

impl ServiceBroker {
    /// Where `micro server` serves its API unless told otherwise.
    pub const DEFAULT_ADDRESS: &'static str = "127.0.0.1:8081";

    /// A broker reached through the proxy at `address` (`host:port`).
    pub fn new(address: impl Into<String>) -> Self {
        Self::with_client(address, Client::builder().build())
    }

    /// Like [`ServiceBroker::new`], calling through `client` (its timeouts, pool
    /// and wrappers); calls are pinned to `address`.
    pub fn with_client(address: impl Into<String>, client: Client) -> Self {
        let address: String = address.into();
        let client = BrokerClient::new("micro.broker", client)
            .with_options(CallOptions::default().address(address.clone()));
        ServiceBroker {
            inner: Arc::new(Inner {
                address,
                client,
                next_id: AtomicU64::new(0),
                subscriptions: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The proxy's address.
    pub fn address(&self) -> &str {
        &self.inner.address
    }

    fn subscriptions(&self) -> MutexGuard<'_, HashMap<u64, Running>> {
        self.inner
            .subscriptions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    async fn open(
        &self,
        request: &pb::SubscribeRequest,
    ) -> Result<crate::Streaming<pb::Message>, Error> {
        let opts = CallOptions::default()
            .address(self.inner.address.clone())
            .timeout(STREAM_TIMEOUT);
        self.inner
            .client
            .subscribe_with(request.clone(), &opts)
            .await
            .map_err(|e| unreachable_hint(e, &self.inner.address, ADDRESS_VARIABLE))
    }
}

impl Broker for ServiceBroker {
    fn connect(&self) -> BoxFuture<'_, Result<(), Error>> {
        futures_util::future::ready(Ok(())).boxed()
    }

    fn disconnect(&self) -> BoxFuture<'_, Result<(), Error>> {
        async move {
            let running: Vec<Running> = self.subscriptions().drain().map(|(_, r)| r).collect();
            for r in running {
                r.stop().await;
            }
            Ok(())
        }
        .boxed()
    }

    fn publish<'a>(&'a self, topic: &'a str, message: Message) -> BoxFuture<'a, Result<(), Error>> {
        async move {
            validate_topic(topic)?;
            let request = publish_request(topic, message);
            self.inner
                .client
                .publish(request)
                .await
                .map_err(|e| unreachable_hint(e, &self.inner.address, ADDRESS_VARIABLE))?;
            Ok(())
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
            let request = pb::SubscribeRequest {
                topic: topic.to_string(),
                queue: options.queue.clone().unwrap_or_default(),
            };
            // The first stream is opened here: an unreachable proxy is an error of
            // `subscribe`, and once it returns the proxy has subscribed.
            let first = self.open(&request).await?;
            let (stop, stopped) = watch::channel(false);
            let this = self.clone();
            let task =
                tokio::spawn(async move { this.run(first, request, handler, stopped).await });
            let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
            self.subscriptions().insert(id, Running { stop, task });
            let broker = self.clone();
            Ok(Subscription::new(
                topic,
                options.queue,
                move || async move {
                    let running = broker.subscriptions().remove(&id);
                    if let Some(r) = running {
                        r.stop().await;
                    }
                    Ok(())
                },
            ))
        }
        .boxed()
    }

    fn name(&self) -> &'static str {
        "service"
    }
}

impl ServiceBroker {
    /// Hands each message of the stream to `handler`, one at a time, until
    /// `stopped`; re-opens the stream with a back-off when it breaks.
    async fn run(
        &self,
        mut stream: crate::Streaming<pb::Message>,
        request: pb::SubscribeRequest,
        handler: Handler,
        mut stopped: watch::Receiver<bool>,
    ) {
        let topic = request.topic.clone();
        loop {
            let reason = loop {
                let item = tokio::select! {
                    biased;
                    _ = stopped.changed() => return,
                    item = stream.next() => item,
                };
                match item {
                    Some(Ok(message)) => {
                        let message = Message::from(message);
                        let id = message.id().unwrap_or("-").to_string();
                        let delivery = Delivery::new(topic.clone(), message, None);
                        // A panicking handler fails this message, not the subscription.
                        match std::panic::AssertUnwindSafe(handler(delivery))
                            .catch_unwind()
                            .await
                        {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => {
                                tracing::warn!(%topic, message_id = %id, error = %e, "subscriber failed to handle a message (the service broker does not redeliver)");
                            }
                            Err(_) => {
                                tracing::error!(%topic, message_id = %id, "subscriber panicked handling a message");
                            }
                        }
                    }
                    Some(Err(e)) => break e.to_string(),
                    None => break "the proxy ended the stream".to_string(),
                }
            };
            drop(stream);
            tracing::warn!(%topic, address = %self.inner.address, %reason, "subscription interrupted; re-subscribing");
            let mut retry = RETRY_MIN;
            stream = loop {
                let opened = tokio::select! {
                    biased;
                    _ = stopped.changed() => return,
                    opened = self.open(&request) => opened,
                };
                match opened {
                    Ok(s) => break s,
                    Err(e) => {
                        tracing::debug!(%topic, error = %e, retry_in = ?retry, "cannot re-subscribe yet");
                    }
                }
                tokio::select! {
                    biased;
                    _ = stopped.changed() => return,
                    _ = tokio::time::sleep(retry) => {}
                }
                retry = (retry * 2).min(RETRY_MAX);
            };
            tracing::info!(%topic, address = %self.inner.address, "re-subscribed");
        }
    }
}

// ---- Conversions between the proxy's messages and the broker's. ----

/// Whether `content_type` names JSON (`application/json`, `…+json`, parameters
/// allowed).
fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == JSON || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// The Publish request that sends `message` as it is: its body as raw bytes with
/// its content type, and its headers (its `micro-id` is kept).
fn publish_request(topic: &str, message: Message) -> pb::PublishRequest {
    let content_type = message
        .headers
        .get(HEADER_CONTENT_TYPE)
        .cloned()
        .unwrap_or_default();
    pb::PublishRequest {
        topic: topic.to_string(),
        message: None,
        body: message.body.to_vec(),
        content_type,
        headers: message.headers.into_iter().collect(),
    }
}

impl TryFrom<pb::PublishRequest> for Publication {
    type Error = Error;

    /// What a Publish request publishes: a JSON `message` as an
    /// `application/json` body, or `body` with `content_type` (else the
    /// `content-type` header, else `application/protobuf`); headers lower-cased,
    /// with `micro-topic`, `content-type` and `micro-id` set (a `micro-id` the
    /// caller gave is kept). A bad topic, or both `message` and `body`, is a 400.
    fn try_from(request: pb::PublishRequest) -> Result<Self, Error> {
        validate_topic(&request.topic)?;
        if request.message.is_some() && !request.body.is_empty() {
            return Err(Error::bad_request(
                ID,
                "set either message (JSON) or body (bytes), not both",
            ));
        }
        let mut headers: std::collections::BTreeMap<String, String> = request
            .headers
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        let (body, content_type) = match request.message {
            Some(value) => {
                let json = serde_json::to_vec(&value_to_json(value)).map_err(|e| {
                    Error::bad_request(ID, format!("the message is not valid JSON: {e}"))
                })?;
                (Bytes::from(json), JSON.to_string())
            }
            None => {
                let content_type = if !request.content_type.is_empty() {
                    request.content_type
                } else {
                    headers
                        .get(HEADER_CONTENT_TYPE)
                        .filter(|c| !c.is_empty())
                        .cloned()
                        .unwrap_or_else(|| DEFAULT_CONTENT_TYPE.to_string())
                };
                (Bytes::from(request.body), content_type)
            }
        };
        headers.insert(HEADER_TOPIC.to_string(), request.topic.clone());
        headers.insert(HEADER_CONTENT_TYPE.to_string(), content_type);
        if headers.get(HEADER_ID).is_none_or(|id| id.is_empty()) {
            headers.insert(HEADER_ID.to_string(), crate::id::new_v4());
        }
        Ok(Publication {
            topic: request.topic,
            message: Message { headers, body },
        })
    }
}

impl From<Publication> for pb::Message {
    /// A received message as the Subscribe stream sends it: a JSON body in
    /// `message`, any other (or JSON that does not parse) in `body`.
    fn from(p: Publication) -> Self {
        let json_body = p
            .message
            .headers
            .get(HEADER_CONTENT_TYPE)
            .is_some_and(|c| is_json(c))
            .then(|| serde_json::from_slice::<serde_json::Value>(&p.message.body).ok())
            .flatten();
        let (message, body) = match json_body {
            Some(json) => (Some(json_to_value(json)), Vec::new()),
            None => (None, p.message.body.to_vec()),
        };
        pb::Message {
            topic: p.topic,
            id: p.message.id().unwrap_or_default().to_string(),
            headers: p.message.headers.into_iter().collect(),
            message,
            body,
        }
    }
}

impl From<pb::Message> for Message {
    /// A message of the Subscribe stream as the broker's: a JSON `message` encoded
    /// as the body, headers as sent (with `micro-id` from `id` if missing).
    fn from(m: pb::Message) -> Self {
        let body = match m.message {
            Some(value) => {
                Bytes::from(serde_json::to_vec(&value_to_json(value)).unwrap_or_default())
            }
            None => Bytes::from(m.body),
        };
        let mut headers: std::collections::BTreeMap<String, String> =
            m.headers.into_iter().collect();
        if !m.id.is_empty() {
            headers.entry(HEADER_ID.to_string()).or_insert(m.id);
        }
        if !m.topic.is_empty() {
            headers.entry(HEADER_TOPIC.to_string()).or_insert(m.topic);
        }
        Message { headers, body }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(topic: &str) -> pb::PublishRequest {
        pb::PublishRequest {
            topic: topic.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_json_message_is_published_as_application_json() {
        let mut r = request("greeter.hello");
        r.message = Some(json_to_value(serde_json::json!({"name": "John", "n": 2})));
        r.headers.insert("X-Trace".into(), "abc".into());
        let p = Publication::try_from(r).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.topic, "greeter.hello");
        assert_eq!(p.message.body, r#"{"n":2,"name":"John"}"#);
        assert_eq!(p.message.headers[HEADER_CONTENT_TYPE], JSON);
        assert_eq!(p.message.headers[HEADER_TOPIC], "greeter.hello");
        assert_eq!(p.message.headers["x-trace"], "abc", "keys lower-cased");
        assert!(!p.message.headers[HEADER_ID].is_empty(), "an id is given");
    }

    #[test]
    fn a_raw_body_keeps_its_content_type_and_id() {
        let mut r = request("t");
        r.body = vec![0, 1, 2];
        let p = Publication::try_from(r.clone()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.message.headers[HEADER_CONTENT_TYPE], DEFAULT_CONTENT_TYPE);
        r.content_type = "text/plain".into();
        r.headers.insert(HEADER_ID.into(), "mine".into());
        let p = Publication::try_from(r).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.message.headers[HEADER_CONTENT_TYPE], "text/plain");
        assert_eq!(p.message.id(), Some("mine"));
        assert_eq!(p.message.body, vec![0u8, 1, 2]);
    }

    #[test]
    fn bad_publish_requests_are_400() {
        let mut both = request("t");
        both.message = Some(json_to_value(serde_json::json!(1)));
        both.body = vec![1];
        for r in [request(""), request("a b"), request("a.*"), both] {
            let code = Publication::try_from(r).err().map(|e| e.code());
            assert_eq!(code, Some(400));
        }
    }

    #[test]
    fn received_json_travels_as_json_and_the_rest_as_bytes() {
        let json = Publication {
            topic: "t".into(),
            message: Message::new(r#"{"a": [1, 2.5, null]}"#)
                .header(HEADER_CONTENT_TYPE, "application/json; charset=utf-8")
                .header(HEADER_ID, "1"),
        };
        let m = pb::Message::from(json);
        assert!(m.body.is_empty());
        assert_eq!(m.id, "1");
        assert_eq!(
            m.message.clone().map(value_to_json),
            Some(serde_json::json!({"a": [1, 2.5, null]}))
        );
        let back = Message::from(m);
        assert_eq!(back.body, r#"{"a":[1,2.5,null]}"#);
        assert_eq!(back.id(), Some("1"));

        let not_json = Publication {
            topic: "t".into(),
            message: Message::new("{oops").header(HEADER_CONTENT_TYPE, JSON),
        };
        let m = pb::Message::from(not_json);
        assert!(m.message.is_none());
        assert_eq!(m.body, b"{oops");

        let raw = Publication {
            topic: "t".into(),
            message: Message::new(vec![0xffu8, 0]),
        };
        let m = pb::Message::from(raw);
        assert_eq!(Message::from(m).body, vec![0xffu8, 0]);
    }

    #[test]
    fn a_broker_message_is_published_unchanged() {
        let m = Message::new("x")
            .header(HEADER_ID, "id-1")
            .header(HEADER_CONTENT_TYPE, JSON)
            .header("x-a", "b");
        let p = Publication::try_from(publish_request("t", m.clone()))
            .unwrap_or_else(|e| panic!("{e}"));
        for (k, v) in &m.headers {
            assert_eq!(p.message.headers.get(k), Some(v));
        }
        assert_eq!(p.message.body, m.body);
    }
}
