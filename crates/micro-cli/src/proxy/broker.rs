//! `micro.v1.Broker`: the server's broker (the default HTTP one, or NATS) behind
//! the proxy's API, so a program in any language can publish and subscribe, and
//! meet the messages of every micro service on that broker.
//!
//! Messages are converted by the micro crate (`Publication: TryFrom<PublishRequest>`,
//! `proto::v1::Message: From<Publication>`): a JSON `message` is published as an
//! `application/json` body, a raw `body` with its `content_type`; received JSON
//! bodies come back in `message`, others in `body`.

use std::sync::Arc;

use futures_util::StreamExt;
use micro::broker::{
    handler as broker_handler, validate_topic, Broker, Publication, SubscribeOptions, Subscription,
};
use micro::proto::v1 as pb;
use micro::proto::v1::broker_server::{Broker as BrokerApi, BrokerServer};
use micro::{Error, Request, ResponseStream};
use tokio::sync::mpsc;

use super::{Parts, Stopping};

/// Messages buffered per subscriber stream before the broker waits for the
/// caller to read (back-pressure instead of unbounded memory).
const STREAM_BUFFER: usize = 256;

/// The Broker API handler of the proxy, over the server's broker.
pub fn handler(parts: &Parts) -> BrokerServer<BrokerHandler> {
    BrokerServer::new(BrokerHandler::new(parts.broker.clone()).stopping(parts.stopping.clone()))
}

/// Implements `micro.v1.Broker` over a [`Broker`].
///
/// A Subscribe stream holds one subscription on the broker for as long as the
/// caller stays connected; when the caller goes away the stream is dropped and
/// the subscription ended. Delivery is at most once: a message is handed to the
/// stream and acknowledged at once.
///
/// ```
/// use std::sync::Arc;
/// use micro::proto::v1::broker_server::BrokerServer;
/// use micro_cli::proxy::broker::BrokerHandler;
///
/// let broker = Arc::new(micro::broker::MemoryBroker::new());
/// let server = micro::server::Server::new("micro.proxy")
///     .handler(BrokerServer::new(BrokerHandler::new(broker)));
/// # let _ = server;
/// ```
#[derive(Debug, Clone)]
pub struct BrokerHandler {
    broker: Arc<dyn Broker>,
    stopping: Stopping,
}

impl BrokerHandler {
    /// A handler over `broker`.
    pub fn new(broker: Arc<dyn Broker>) -> Self {
        BrokerHandler {
            broker,
            stopping: Stopping::default(),
        }
    }

    /// Ends this handler's streams when `stopping` says so (the proxy does this
    /// at its stop).
    pub fn stopping(mut self, stopping: Stopping) -> Self {
        self.stopping = stopping;
        self
    }
}

/// Ends a broker subscription when the stream that owns it is dropped.
struct Unsubscribe(Option<Subscription>);

impl Drop for Unsubscribe {
    fn drop(&mut self) {
        let Some(subscription) = self.0.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    let topic = subscription.topic().to_string();
                    if let Err(e) = subscription.unsubscribe().await {
                        tracing::warn!(%topic, error = %e, "ending a proxy subscription failed");
                    }
                });
            }
            Err(_) => tracing::warn!(
                topic = subscription.topic(),
                "a proxy subscription outlived its runtime and was not ended"
            ),
        }
    }
}

impl BrokerApi for BrokerHandler {
    async fn publish(
        &self,
        request: Request<pb::PublishRequest>,
    ) -> Result<pb::PublishResponse, Error> {
        let publication = Publication::try_from(request.into_inner())?;
        let id = publication.message.id().unwrap_or_default().to_string();
        self.broker
            .publish(&publication.topic, publication.message)
            .await?;
        Ok(pb::PublishResponse { id })
    }

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<ResponseStream<pb::Message>, Error> {
        let pb::SubscribeRequest { topic, queue } = request.into_inner();
        validate_topic(&topic)?;
        let (tx, rx) = mpsc::channel::<pb::Message>(STREAM_BUFFER);
        let deliver = broker_handler(move |delivery| {
            let tx = tx.clone();
            async move {
                let message = pb::Message::from(Publication {
                    topic: delivery.topic,
                    message: delivery.message,
                });
                // A caller that went away misses it; its subscription is ending.
                let _ = tx.send(message).await;
                Ok(())
            }
        });
        let mut options = SubscribeOptions::default();
        if !queue.is_empty() {
            options = options.queue(queue);
        }
        let subscription = self.broker.subscribe(&topic, deliver, options).await?;
        let guard = Unsubscribe(Some(subscription));
        let stream = futures_util::stream::unfold((rx, guard), |(mut rx, guard)| async move {
            rx.recv().await.map(|m| (Ok(m), (rx, guard)))
        });
        Ok(self.stopping.until_stopped(stream.boxed()))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    use std::time::Duration;

    use futures_util::future::{BoxFuture, FutureExt};
    use micro::broker::{conformance, Handler, MemoryBroker, Message, ServiceBroker};
    use micro::proto::v1::broker_client::BrokerClient;
    use micro::server::Server;
    use tokio::net::TcpListener;

    use super::*;
    use crate::proxy::registry::serve_apart;
    use crate::proxy::registry::test_http::{post, post_lines};

    /// A memory broker that counts its live subscriptions.
    #[derive(Debug, Clone, Default)]
    struct Counting {
        inner: MemoryBroker,
        live: Arc<AtomicUsize>,
    }

    impl Broker for Counting {
        fn connect(&self) -> BoxFuture<'_, Result<(), Error>> {
            self.inner.connect()
        }
        fn disconnect(&self) -> BoxFuture<'_, Result<(), Error>> {
            self.inner.disconnect()
        }
        fn publish<'a>(
            &'a self,
            topic: &'a str,
            message: Message,
        ) -> BoxFuture<'a, Result<(), Error>> {
            self.inner.publish(topic, message)
        }
        fn subscribe<'a>(
            &'a self,
            topic: &'a str,
            handler: Handler,
            options: SubscribeOptions,
        ) -> BoxFuture<'a, Result<Subscription, Error>> {
            async move {
                let sub = self.inner.subscribe(topic, handler, options).await?;
                self.live.fetch_add(1, Ordering::SeqCst);
                let live = self.live.clone();
                let queue = sub.queue().map(str::to_string);
                Ok(Subscription::new(topic, queue, move || async move {
                    let out = sub.unsubscribe().await;
                    live.fetch_sub(1, Ordering::SeqCst);
                    out
                }))
            }
            .boxed()
        }
        fn name(&self) -> &'static str {
            "counting"
        }
    }

    async fn serve(broker: Arc<dyn Broker>) -> (String, tokio::sync::oneshot::Sender<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = Server::new("micro.proxy")
            .drain_timeout(Duration::from_millis(100))
            .handler(BrokerServer::new(BrokerHandler::new(broker)));
        tokio::spawn(server.serve(listener, async {
            let _ = stopped.await;
        }));
        (address, stop)
    }

    fn grpc_client(address: &str) -> BrokerClient {
        BrokerClient::new("micro.broker", micro::Client::builder().build()).with_options(
            micro::client::CallOptions::default()
                .address(address)
                .timeout(Duration::from_secs(60)),
        )
    }

    async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
        for _ in 0..500 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{what}: not within 5 s");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn publish_and_subscribe_over_grpc() {
        let broker = Counting::default();
        let (address, _stop) = serve(Arc::new(broker.clone())).await;
        let client = grpc_client(&address);
        let mut stream = client
            .subscribe(pb::SubscribeRequest {
                topic: "greeter.hello".into(),
                queue: String::new(),
            })
            .await
            .expect("subscribe");
        assert_eq!(
            broker.live.load(Ordering::SeqCst),
            1,
            "subscribed on return"
        );

        // JSON in, JSON out.
        let sent = client
            .publish(pb::PublishRequest {
                topic: "greeter.hello".into(),
                message: Some(
                    serde_json::from_value(serde_json::json!({"name": "John", "n": 3}))
                        .expect("value"),
                ),
                headers: [("X-Trace".to_string(), "t1".to_string())].into(),
                ..Default::default()
            })
            .await
            .expect("publish");
        assert!(!sent.id.is_empty());
        let got = stream.message().await.expect("message").expect("one");
        assert_eq!(got.topic, "greeter.hello");
        assert_eq!(got.id, sent.id);
        assert_eq!(got.headers["content-type"], "application/json");
        assert_eq!(got.headers["micro-topic"], "greeter.hello");
        assert_eq!(got.headers["x-trace"], "t1");
        assert!(got.body.is_empty());
        let json = serde_json::to_value(got.message).expect("json");
        assert_eq!(json["name"], "John");
        assert_eq!(json["n"].as_f64(), Some(3.0));

        // Raw bytes in, raw bytes out, with the default content type.
        client
            .publish(pb::PublishRequest {
                topic: "greeter.hello".into(),
                body: vec![0xff, 0x00, 0x01],
                ..Default::default()
            })
            .await
            .expect("publish bytes");
        let got = stream.message().await.expect("message").expect("one");
        assert_eq!(got.body, vec![0xff, 0x00, 0x01]);
        assert!(got.message.is_none());
        assert_eq!(got.headers["content-type"], "application/protobuf");

        // Bad input is a 400.
        for topic in ["", "a b", "a.*"] {
            let err = client
                .publish(pb::PublishRequest {
                    topic: topic.into(),
                    body: vec![1],
                    ..Default::default()
                })
                .await
                .expect_err("bad topic");
            assert_eq!(err.code(), 400, "{topic:?}");
            let err = client
                .subscribe(pb::SubscribeRequest {
                    topic: topic.into(),
                    queue: String::new(),
                })
                .await
                .err()
                .map(|e| e.code());
            assert_eq!(err, Some(400), "{topic:?}");
        }

        // The caller goes away: the broker subscription ends.
        drop(stream);
        wait_until("unsubscribed after the stream was dropped", || {
            broker.live.load(Ordering::SeqCst) == 0
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queue_groups_share_the_messages() {
        let (address, _stop) = serve(Arc::new(MemoryBroker::new())).await;
        let client = grpc_client(&address);
        let mut members = Vec::new();
        for _ in 0..2 {
            members.push(
                client
                    .subscribe(pb::SubscribeRequest {
                        topic: "jobs".into(),
                        queue: "workers".into(),
                    })
                    .await
                    .expect("subscribe"),
            );
        }
        for i in 0..10 {
            client
                .publish(pb::PublishRequest {
                    topic: "jobs".into(),
                    body: vec![i],
                    ..Default::default()
                })
                .await
                .expect("publish");
        }
        let mut seen = Vec::new();
        for m in &mut members {
            for _ in 0..5 {
                let got = m.message().await.expect("message").expect("one");
                seen.push(got.body[0]);
            }
        }
        seen.sort_unstable();
        assert_eq!(seen, (0..10).collect::<Vec<u8>>(), "each message once");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn publish_and_subscribe_over_http_json() {
        let broker = Counting::default();
        let (address, _stop) = serve(Arc::new(broker.clone())).await;
        let mut lines = post_lines(
            &address,
            "/micro.v1.Broker/Subscribe",
            r#"{"topic":"greeter.hello"}"#,
        )
        .await;
        wait_until("subscribed", || broker.live.load(Ordering::SeqCst) == 1).await;
        let (status, body) = post(
            &address,
            "/micro.v1.Broker/Publish",
            r#"{"topic":"greeter.hello","message":{"name":"John"},"headers":{"x-a":"b"}}"#,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let answer: serde_json::Value = serde_json::from_str(&body).expect("json");
        let id = answer["id"].as_str().expect("an id").to_string();
        let got = lines.next_json().await;
        assert_eq!(got["topic"], "greeter.hello");
        assert_eq!(got["id"], id.as_str());
        assert_eq!(got["message"], serde_json::json!({"name": "John"}));
        assert_eq!(got["headers"]["x-a"], "b");

        // A raw body travels base64-encoded in proto3 JSON.
        let (status, body) = post(
            &address,
            "/micro.v1.Broker/Publish",
            r#"{"topic":"greeter.hello","body":"aGk=","contentType":"text/plain"}"#,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let got = lines.next_json().await;
        assert_eq!(got["body"], "aGk=");
        assert_eq!(got["headers"]["content-type"], "text/plain");

        let (status, body) = post(
            &address,
            "/micro.v1.Broker/Publish",
            r#"{"topic":"has space","message":1}"#,
        )
        .await;
        assert_eq!(status, 400, "{body}");

        // The HTTP caller hangs up: the subscription ends.
        drop(lines);
        wait_until("unsubscribed after the caller hung up", || {
            broker.live.load(Ordering::SeqCst) == 0
        })
        .await;
    }

    /// The library's `service` broker passes the broker conformance suite through
    /// a real proxy (gRPC on loopback) over a memory broker; each participant is
    /// a separate `ServiceBroker`, as separate processes would be.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_service_broker_conforms() {
        let (address, _stop) = serve(Arc::new(MemoryBroker::new())).await;
        conformance::Suite::new(move || {
            Arc::new(ServiceBroker::new(address.clone())) as Arc<dyn Broker>
        })
        .deadline(Duration::from_secs(20))
        .run_all()
        .await;
    }

    /// A `service` broker subscription survives a restart of the proxy (a
    /// runtime of its own, shut down like a process that exits).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_service_broker_subscription_survives_a_proxy_restart() {
        let memory = MemoryBroker::new();
        let proxy = |memory: &MemoryBroker| {
            Server::new("micro.proxy").handler(BrokerServer::new(BrokerHandler::new(Arc::new(
                memory.clone(),
            ))))
        };
        let (address, first) = serve_apart(proxy(&memory), None).await;
        let client = ServiceBroker::new(address.clone());
        let got = Arc::new(Mutex::new(Vec::new()));
        let seen = got.clone();
        let sub = client
            .subscribe(
                "restart.topic",
                broker_handler(move |d| {
                    seen.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(d.message.body);
                    async { Ok(()) }
                }),
                SubscribeOptions::default(),
            )
            .await
            .expect("subscribe");
        let count = || got.lock().unwrap_or_else(|p| p.into_inner()).len();
        memory
            .publish("restart.topic", Message::new("before"))
            .await
            .expect("publish");
        wait_until("the first message", || count() == 1).await;

        first.shutdown_background();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (_, second) = serve_apart(proxy(&memory), Some(&address)).await;
        // Publish until the re-opened stream delivers.
        for _ in 0..100 {
            memory
                .publish("restart.topic", Message::new("after"))
                .await
                .expect("publish");
            if count() >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(count() >= 2, "no message after the restart");
        assert_eq!(got.lock().unwrap_or_else(|p| p.into_inner())[1], "after");
        sub.unsubscribe().await.expect("unsubscribe");
        second.shutdown_background();
    }
}
