use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use futures_util::future::{BoxFuture, FutureExt};
use tokio::sync::mpsc;

use super::{validate_topic, Broker, Delivery, Handler, Message, SubscribeOptions, Subscription};
use crate::Error;

/// Messages a subscriber may have waiting before publishers wait for it.
const QUEUE_DEPTH: usize = 1024;

/// An in-process broker: tests and single-process programs.
///
/// Each subscriber handles its messages one at a time in publish order; a queue
/// group hands each message to one member, in turn. A handler error is logged
/// with the message id (there is no redelivery in memory).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), micro::Error> {
/// use micro::broker::{handler, Broker, MemoryBroker, Message};
///
/// let broker = MemoryBroker::new();
/// let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
/// let sub = broker
///     .subscribe("greeter.hello", handler(move |d| {
///         let tx = tx.clone();
///         async move { tx.send(d.message.body).ok(); Ok(()) }
///     }), Default::default())
///     .await?;
/// broker.publish("greeter.hello", Message::new("hi")).await?;
/// assert_eq!(rx.recv().await.unwrap(), "hi");
/// sub.unsubscribe().await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct MemoryBroker {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    topics: Mutex<HashMap<String, Vec<Subscriber>>>,
    next_id: AtomicU64,
    /// Round-robin position per (topic, queue).
    turns: Mutex<HashMap<(String, String), Arc<AtomicUsize>>>,
}

#[derive(Debug, Clone)]
struct Subscriber {
    id: u64,
    queue: Option<String>,
    tx: mpsc::Sender<Delivery>,
}

impl MemoryBroker {
    /// A broker with no subscribers.
    pub fn new() -> Self {
        Self::default()
    }

    fn topics(&self) -> MutexGuard<'_, HashMap<String, Vec<Subscriber>>> {
        self.inner.topics.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn turn(&self, topic: &str, queue: &str) -> usize {
        let counter = self
            .inner
            .turns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((topic.to_string(), queue.to_string()))
            .or_default()
            .clone();
        counter.fetch_add(1, Ordering::Relaxed)
    }

    /// The subscribers a message on `topic` goes to: every one without a queue,
    /// and one member of each queue group.
    fn recipients(&self, topic: &str) -> Vec<Subscriber> {
        let subscribers = self.topics().get(topic).cloned().unwrap_or_default();
        let mut groups: HashMap<&str, Vec<&Subscriber>> = HashMap::new();
        let mut out = Vec::new();
        for s in &subscribers {
            match &s.queue {
                None => out.push(s.clone()),
                Some(q) => groups.entry(q.as_str()).or_default().push(s),
            }
        }
        for (queue, members) in groups {
            let pick = self.turn(topic, queue) % members.len();
            out.push(members[pick].clone());
        }
        out
    }
}

impl Broker for MemoryBroker {
    fn connect(&self) -> BoxFuture<'_, Result<(), Error>> {
        futures_util::future::ready(Ok(())).boxed()
    }

    fn disconnect(&self) -> BoxFuture<'_, Result<(), Error>> {
        // Dropping the senders ends every subscriber task after its queued messages.
        self.topics().clear();
        futures_util::future::ready(Ok(())).boxed()
    }

    fn publish<'a>(&'a self, topic: &'a str, message: Message) -> BoxFuture<'a, Result<(), Error>> {
        async move {
            validate_topic(topic)?;
            for subscriber in self.recipients(topic) {
                let delivery = Delivery::new(topic, message.clone(), None);
                // A subscriber that unsubscribed meanwhile just misses it.
                let _ = subscriber.tx.send(delivery).await;
            }
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
            let (tx, mut rx) = mpsc::channel::<Delivery>(QUEUE_DEPTH);
            let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
            let task = tokio::spawn(async move {
                while let Some(delivery) = rx.recv().await {
                    let id = delivery.message.id().unwrap_or("-").to_string();
                    let topic = delivery.topic.clone();
                    // A panicking handler fails this message, not the subscription.
                    let outcome = std::panic::AssertUnwindSafe(handler(delivery)).catch_unwind().await;
                    match outcome {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => {
                            tracing::warn!(%topic, message_id = %id, error = %e, "subscriber failed to handle a message");
                        }
                        Err(_) => {
                            tracing::error!(%topic, message_id = %id, "subscriber panicked handling a message");
                        }
                    }
                }
            });
            self.topics()
                .entry(topic.to_string())
                .or_default()
                .push(Subscriber {
                    id,
                    queue: options.queue.clone(),
                    tx,
                });
            let broker = self.clone();
            let name = topic.to_string();
            Ok(Subscription::new(topic, options.queue, move || async move {
                if let Some(subs) = broker.topics().get_mut(&name) {
                    subs.retain(|s| s.id != id);
                }
                // The task ends once the messages already queued are handled.
                let _ = task.await;
                Ok(())
            }))
        }
        .boxed()
    }

    fn name(&self) -> &'static str {
        "memory"
    }
}
