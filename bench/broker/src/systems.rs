//! The systems under test, each set up with its subscriber on the subscriber
//! runtime and its publisher on the publisher runtime.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use async_nats::jetstream;
use clap::ValueEnum;
use futures_util::future::{BoxFuture, FutureExt};
use futures_util::StreamExt;
use micro::broker::{
    handler, Broker, HttpBroker, MemoryBroker, Message, NatsBroker, SubscribeOptions, Subscription,
    HEADER_ID,
};
use micro::registry::MemoryRegistry;

use crate::harness::{PublishFn, Recorder, Runtimes};

/// A system under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum System {
    /// async-nats publish -> subscribe, no micro code.
    RawNats,
    /// The same, with the one header micro's messages carry here (`micro-id`).
    RawNatsHeader,
    /// micro's `NatsBroker`, core NATS.
    MicroNats,
    /// async-nats JetStream publish (awaiting the ack) -> pull consumer (acking).
    RawJetstream,
    /// micro's `NatsBroker` with `jetstream(true)` and a durable subscription.
    MicroJetstream,
    /// micro's `MemoryBroker` (in process).
    Memory,
    /// micro's default `HttpBroker`, two brokers sharing a memory registry.
    Http,
}

impl System {
    pub fn label(self) -> &'static str {
        match self {
            System::RawNats => "raw async-nats, core",
            System::RawNatsHeader => "raw async-nats, core, + micro-id header",
            System::MicroNats => "micro NatsBroker, core",
            System::RawJetstream => "raw async-nats, JetStream",
            System::MicroJetstream => "micro NatsBroker, JetStream",
            System::Memory => "micro MemoryBroker",
            System::Http => "micro HttpBroker (default)",
        }
    }

    pub fn needs_nats(self) -> bool {
        matches!(
            self,
            System::RawNats
                | System::RawNatsHeader
                | System::MicroNats
                | System::RawJetstream
                | System::MicroJetstream
        )
    }

    /// JetStream publishes wait for the server's ack: several publishers keep
    /// the window full.
    pub fn publishers(self, jetstream_publishers: usize) -> usize {
        match self {
            System::RawJetstream | System::MicroJetstream => jetstream_publishers,
            _ => 1,
        }
    }

    /// Subscribes on `topic` (reporting to `recorder`) and readies a publisher.
    pub fn start(
        self,
        rts: &Runtimes,
        url: &str,
        topic: &str,
        recorder: &Arc<Recorder>,
    ) -> Result<Running> {
        match self {
            System::RawNats => raw_core(rts, url, topic, recorder, false),
            System::RawNatsHeader => raw_core(rts, url, topic, recorder, true),
            System::RawJetstream => raw_jetstream(rts, url, topic, recorder),
            System::MicroNats => {
                let sub = NatsBroker::new(vec![url.to_string()]);
                let publisher = NatsBroker::new(vec![url.to_string()]);
                micro(
                    rts,
                    sub,
                    publisher,
                    topic,
                    recorder,
                    SubscribeOptions::default(),
                )
            }
            System::MicroJetstream => {
                let sub = NatsBroker::new(vec![url.to_string()]).jetstream(true);
                let publisher = NatsBroker::new(vec![url.to_string()]).jetstream(true);
                let options = SubscribeOptions::default().durable("bench");
                micro(rts, sub, publisher, topic, recorder, options)
            }
            System::Memory => {
                let broker = MemoryBroker::new();
                micro(
                    rts,
                    broker.clone(),
                    broker,
                    topic,
                    recorder,
                    SubscribeOptions::default(),
                )
            }
            System::Http => {
                let registry = Arc::new(MemoryRegistry::new());
                let sub = HttpBroker::new(registry.clone());
                let publisher = HttpBroker::new(registry);
                micro(
                    rts,
                    sub,
                    publisher,
                    topic,
                    recorder,
                    SubscribeOptions::default(),
                )
            }
        }
    }
}

/// A system set up for one round.
pub struct Running {
    pub publish: PublishFn,
    stop_subscriber: Option<BoxFuture<'static, ()>>,
    stop_publisher: Option<BoxFuture<'static, ()>>,
}

impl Running {
    /// Stops the subscriber and the publisher, each on its own runtime.
    pub fn stop(mut self, rts: &Runtimes) {
        if let Some(stop) = self.stop_subscriber.take() {
            rts.subscribers.block_on(stop);
        }
        if let Some(stop) = self.stop_publisher.take() {
            rts.publishers.block_on(stop);
        }
    }
}

fn micro<B: Broker + Clone>(
    rts: &Runtimes,
    sub_broker: B,
    pub_broker: B,
    topic: &str,
    recorder: &Arc<Recorder>,
    options: SubscribeOptions,
) -> Result<Running> {
    let rec = recorder.clone();
    let h = handler(move |d| {
        rec.delivered(&d.message.body);
        futures_util::future::ready(Ok(()))
    });
    let sub: Subscription = rts.subscribers.block_on(async {
        sub_broker.connect().await?;
        sub_broker.subscribe(topic, h, options).await
    })?;
    rts.publishers.block_on(pub_broker.connect())?;
    let topic = Arc::new(topic.to_string());
    let publish_broker = pub_broker.clone();
    let publish: PublishFn = Arc::new(move |body, seq| {
        let broker = publish_broker.clone();
        let topic = topic.clone();
        async move {
            let message = Message::new(body).header(HEADER_ID, seq.to_string());
            broker.publish(&topic, message).await?;
            Ok(())
        }
        .boxed()
    });
    Ok(Running {
        publish,
        stop_subscriber: Some(
            async move {
                let _ = sub.unsubscribe().await;
                let _ = sub_broker.disconnect().await;
            }
            .boxed(),
        ),
        stop_publisher: Some(
            async move {
                let _ = pub_broker.disconnect().await;
            }
            .boxed(),
        ),
    })
}

/// Raw async-nats; `with_header` adds the one header micro's messages carry
/// here (`micro-id`), to tell the cost of NATS headers from micro's own.
fn raw_core(
    rts: &Runtimes,
    url: &str,
    topic: &str,
    recorder: &Arc<Recorder>,
    with_header: bool,
) -> Result<Running> {
    let rec = recorder.clone();
    let task = rts.subscribers.block_on(async {
        let client = async_nats::connect(url).await?;
        let mut sub = client.subscribe(topic.to_string()).await?;
        client.flush().await?;
        anyhow::Ok(tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                rec.delivered(&m.payload);
            }
            drop(client);
        }))
    })?;
    let client = rts.publishers.block_on(async_nats::connect(url))?;
    let topic = Arc::new(topic.to_string());
    let publish_client = client.clone();
    let publish: PublishFn = Arc::new(move |body, seq| {
        let client = publish_client.clone();
        let topic = topic.clone();
        async move {
            if with_header {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert(HEADER_ID, seq.to_string());
                client
                    .publish_with_headers(topic.to_string(), headers, body)
                    .await?;
            } else {
                client.publish(topic.to_string(), body).await?;
            }
            Ok(())
        }
        .boxed()
    });
    Ok(Running {
        publish,
        stop_subscriber: Some(async move { task.abort() }.boxed()),
        stop_publisher: Some(
            async move {
                let _ = client.drain().await;
            }
            .boxed(),
        ),
    })
}

fn raw_jetstream(
    rts: &Runtimes,
    url: &str,
    topic: &str,
    recorder: &Arc<Recorder>,
) -> Result<Running> {
    let rec = recorder.clone();
    let stream_name = format!("RAW_{}", topic.replace('.', "_"));
    let task = rts.subscribers.block_on(async {
        let client = async_nats::connect(url).await?;
        let js = jetstream::new(client.clone());
        let stream = js
            .create_stream(jetstream::stream::Config {
                name: stream_name.clone(),
                subjects: vec![topic.to_string()],
                storage: jetstream::stream::StorageType::File,
                ..Default::default()
            })
            .await
            .context("create the raw stream")?;
        let consumer: jetstream::consumer::PullConsumer = stream
            .create_consumer(jetstream::consumer::pull::Config {
                durable_name: Some("bench".into()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ..Default::default()
            })
            .await
            .context("create the raw consumer")?;
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(100)
            .heartbeat(Duration::from_secs(5))
            .messages()
            .await?;
        anyhow::Ok(tokio::spawn(async move {
            while let Some(Ok(m)) = messages.next().await {
                rec.delivered(&m.payload);
                let _ = m.ack().await;
            }
            drop(client);
        }))
    })?;
    let js = rts
        .publishers
        .block_on(async { anyhow::Ok(jetstream::new(async_nats::connect(url).await?)) })?;
    let topic = Arc::new(topic.to_string());
    let publish: PublishFn = Arc::new(move |body, _seq| {
        let js = js.clone();
        let topic = topic.clone();
        async move {
            js.publish(topic.to_string(), body).await?.await?;
            Ok(())
        }
        .boxed()
    });
    Ok(Running {
        publish,
        stop_subscriber: Some(async move { task.abort() }.boxed()),
        stop_publisher: None,
    })
}
