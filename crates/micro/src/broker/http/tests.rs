#![allow(clippy::unwrap_used)]

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::*;
use crate::broker::{conformance, handler, Broker, Message, SubscribeOptions, HEADER_ID};
use crate::registry::{LocalRegistry, MemoryRegistry, Registry};

/// A directory under the temp dir, removed when dropped.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("micro-broker-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Brokers that take turns: the suite's participants land on different brokers,
/// as if in different processes.
fn alternating(brokers: Vec<HttpBroker>) -> impl Fn() -> Arc<dyn Broker> + Send + Sync + 'static {
    let next = AtomicUsize::new(0);
    move || {
        let i = next.fetch_add(1, Ordering::Relaxed) % brokers.len();
        Arc::new(brokers[i].clone()) as Arc<dyn Broker>
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_brokers_on_a_memory_registry_conform() {
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let brokers = vec![HttpBroker::new(registry.clone()), HttpBroker::new(registry)];
    conformance::run_all(alternating(brokers.clone())).await;
    for b in &brokers {
        // Only messages on their way to the subscriber that unsubscribed may be lost.
        assert!(b.stats().lost <= 2, "{:?}", b.stats());
        b.flush(Duration::from_secs(5)).await.unwrap();
        b.disconnect().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_on_a_local_registry_conform() {
    let dir = TempDir::new();
    // Two handles on one directory: what two processes on one machine share.
    let brokers = vec![
        HttpBroker::new(Arc::new(LocalRegistry::at(&dir.0))),
        HttpBroker::new(Arc::new(LocalRegistry::at(&dir.0))),
    ];
    conformance::Suite::new(alternating(brokers.clone()))
        .deadline(Duration::from_secs(20))
        .run_all()
        .await;
    for b in &brokers {
        b.disconnect().await.unwrap();
    }
}

fn channel_handler(tx: mpsc::UnboundedSender<Message>) -> crate::broker::Handler {
    handler(move |d| {
        let tx = tx.clone();
        async move {
            tx.send(d.message).ok();
            Ok(())
        }
    })
}

async fn recv(rx: &mut mpsc::UnboundedReceiver<Message>) -> Message {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a delivery within 10 s")
        .unwrap()
}

async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within 10 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn fast(b: HttpBroker) -> HttpBroker {
    b.retry_backoff(Duration::from_millis(10), Duration::from_millis(50))
        .drain_timeout(Duration::from_millis(200))
}

#[tokio::test]
async fn subscriptions_register_and_deregister() {
    let registry = Arc::new(MemoryRegistry::new());
    let broker = HttpBroker::new(registry.clone());
    assert_eq!(broker.name(), "http");
    assert_eq!(broker.address(), None);
    let h = handler(|_| async { Ok(()) });
    let everyone = broker
        .subscribe("greeter.hello", h.clone(), SubscribeOptions::default())
        .await
        .unwrap();
    let worker = broker
        .subscribe(
            "greeter.hello",
            h,
            SubscribeOptions::default().queue("workers"),
        )
        .await
        .unwrap();
    let address = broker.address().unwrap();
    let services = registry.get_service("topic:greeter.hello").await.unwrap();
    let versions: Vec<&str> = services.iter().map(|s| s.version.as_str()).collect();
    assert_eq!(versions, ["broadcast", "workers"]);
    let node = &services[1].nodes[0];
    assert_eq!(node.address, address);
    assert_eq!(node.id, format!("1@{address}"));
    let meta = &node.metadata;
    assert_eq!(meta["broker"], "http");
    assert_eq!(meta["topic"], "greeter.hello");
    assert_eq!(meta["queue"], "workers");
    assert_eq!(meta["path"], wire::sub_path(&node.id));
    assert!(!services[0].nodes[0].metadata.contains_key("queue"));

    everyone.unsubscribe().await.unwrap();
    let services = registry.get_service("topic:greeter.hello").await.unwrap();
    assert_eq!(services.len(), 1);
    broker.disconnect().await.unwrap();
    let gone = registry
        .get_service("topic:greeter.hello")
        .await
        .unwrap_err();
    assert_eq!(gone.code(), 404);
    // Unsubscribing after disconnect is harmless.
    worker.unsubscribe().await.unwrap();
    assert_eq!(broker.address(), None);
}

#[tokio::test]
async fn registrations_are_renewed() {
    let registry = Arc::new(MemoryRegistry::new());
    let broker = HttpBroker::new(registry.clone())
        .register_ttl(Duration::from_millis(300))
        .register_interval(Duration::from_millis(50));
    let _sub = broker
        .subscribe("renewed", handler(|_| async { Ok(()) }), Default::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert!(registry.get_service("topic:renewed").await.is_ok());
    broker.crash();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        registry
            .get_service("topic:renewed")
            .await
            .unwrap_err()
            .code(),
        404
    );
}

#[tokio::test]
async fn bad_options_are_clear_errors() {
    let registry = Arc::new(MemoryRegistry::new());
    let h = handler(|_| async { Ok(()) });
    let broker = HttpBroker::new(registry.clone());
    for queue in ["", "a b"] {
        let err = broker
            .subscribe("t", h.clone(), SubscribeOptions::default().queue(queue))
            .await
            .unwrap_err();
        assert_eq!(err.code(), 400, "{err}");
    }
    let wildcard = HttpBroker::new(registry.clone()).listen("0.0.0.0:0");
    let err = wildcard
        .subscribe("t", h.clone(), Default::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), 400);
    assert!(err.detail().contains("advertise"), "{err}");
    let advertised = HttpBroker::new(registry.clone())
        .listen("127.0.0.1:0")
        .advertise("127.0.0.1");
    let _sub = advertised
        .subscribe("t", h.clone(), Default::default())
        .await
        .unwrap();
    assert!(advertised.address().unwrap().starts_with("127.0.0.1:"));
    let taken = advertised.address().unwrap();
    let clash = HttpBroker::new(registry.clone()).listen(taken);
    assert_eq!(
        clash
            .subscribe("t", h, Default::default())
            .await
            .unwrap_err()
            .code(),
        503
    );

    let small = HttpBroker::new(registry).max_message_size(1000);
    let _sub = small
        .subscribe("big", handler(|_| async { Ok(()) }), Default::default())
        .await
        .unwrap();
    let err = small
        .publish("big", Message::new(vec![0; 1001]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), 413, "{err}");
    small
        .publish("big", Message::new(vec![0; 900]))
        .await
        .unwrap();
    small.flush(Duration::from_secs(5)).await.unwrap();
    advertised.disconnect().await.unwrap();
    small.disconnect().await.unwrap();
}

/// Sends one raw HTTP/1.1 request and returns the response status.
async fn raw(address: &str, head: &str, body: &[u8]) -> u16 {
    let mut s = TcpStream::connect(address).await.unwrap();
    let mut req = format!(
        "{head}\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    s.write_all(&req).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&out);
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn malformed_deliveries_are_4xx_and_break_nothing() {
    let registry = Arc::new(MemoryRegistry::new());
    let subscriber = HttpBroker::new(registry.clone()).max_message_size(1000);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let _sub = subscriber
        .subscribe("bad.input", channel_handler(tx), Default::default())
        .await
        .unwrap();
    let address = subscriber.address().unwrap();
    let id = format!("0@{address}");
    let path = wire::sub_path(&id);
    let ct = format!("Content-Type: {}", wire::CONTENT_TYPE);
    let good = wire::encode("bad.input", &Message::new("ok"));
    let cases: Vec<(String, Vec<u8>, u16)> = vec![
        (format!("GET {path} HTTP/1.1\r\n{ct}"), vec![], 405),
        (
            format!("POST /elsewhere HTTP/1.1\r\n{ct}"),
            good.to_vec(),
            404,
        ),
        (format!("POST /_sub HTTP/1.1\r\n{ct}"), good.to_vec(), 400),
        (
            format!("POST /_sub?id=%zz HTTP/1.1\r\n{ct}"),
            good.to_vec(),
            400,
        ),
        (
            format!("POST /_sub?id=nobody HTTP/1.1\r\n{ct}"),
            good.to_vec(),
            404,
        ),
        (
            format!("POST {path} HTTP/1.1\r\nContent-Type: text/plain"),
            good.to_vec(),
            415,
        ),
        (format!("POST {path} HTTP/1.1"), good.to_vec(), 415),
        (
            format!("POST {path} HTTP/1.1\r\n{ct}"),
            b"\x00\x00".to_vec(),
            400,
        ),
        (
            format!("POST {path} HTTP/1.1\r\n{ct}"),
            b"\x00\x00\x00\x05{}".to_vec(),
            400,
        ),
        (
            format!("POST {path} HTTP/1.1\r\n{ct}"),
            b"\x00\x00\x00\x03{x}".to_vec(),
            400,
        ),
        (format!("POST {path} HTTP/1.1\r\n{ct}"), vec![7; 5000], 413),
        (
            format!("POST {path} HTTP/1.1\r\n{ct}"),
            wire::encode("other.topic", &Message::new("x")).to_vec(),
            404,
        ),
    ];
    for (head, body, want) in cases {
        assert_eq!(raw(&address, &head, &body).await, want, "{head}");
    }
    // A well-formed delivery over plain HTTP/1.1 still works, and nothing else
    // reached the handler.
    assert_eq!(
        raw(&address, &format!("POST {path} HTTP/1.1\r\n{ct}"), &good).await,
        200
    );
    assert_eq!(recv(&mut rx).await.body, "ok");
    let publisher = HttpBroker::new(registry);
    publisher
        .publish("bad.input", Message::new("after"))
        .await
        .unwrap();
    assert_eq!(recv(&mut rx).await.body, "after");
    assert!(rx.try_recv().is_err());
    subscriber.disconnect().await.unwrap();
}

#[tokio::test]
async fn a_panicking_or_failing_handler_is_a_500_and_delivery_goes_on() {
    let registry = Arc::new(MemoryRegistry::new());
    let subscriber = HttpBroker::new(registry.clone());
    let (tx, mut rx) = mpsc::unbounded_channel();
    let _sub = subscriber
        .subscribe(
            "moody",
            handler(move |d| {
                let tx = tx.clone();
                async move {
                    match &d.message.body[..] {
                        b"panic" => panic!("on purpose"),
                        b"fail" => Err(Error::bad_request("test", "no")),
                        _ => {
                            tx.send(d.message).ok();
                            Ok(())
                        }
                    }
                }
            }),
            Default::default(),
        )
        .await
        .unwrap();
    let publisher = HttpBroker::new(registry);
    for body in ["panic", "fail", "fine"] {
        publisher
            .publish("moody", Message::new(body).header(HEADER_ID, body))
            .await
            .unwrap();
    }
    assert_eq!(recv(&mut rx).await.body, "fine");
    publisher.flush(Duration::from_secs(5)).await.unwrap();
    let stats = publisher.stats();
    assert_eq!(
        (stats.handler_errors, stats.delivered, stats.lost),
        (2, 1, 0),
        "{stats:?}"
    );
    subscriber.disconnect().await.unwrap();
}

#[tokio::test]
async fn a_subscriber_that_comes_back_on_its_address_gets_what_was_buffered() {
    let registry = Arc::new(MemoryRegistry::new());
    let first = HttpBroker::new(registry.clone());
    let (tx, mut rx) = mpsc::unbounded_channel();
    let _lost = first
        .subscribe("orders", channel_handler(tx), Default::default())
        .await
        .unwrap();
    let address = first.address().unwrap();
    let publisher = fast(HttpBroker::new(registry.clone()));
    publisher
        .publish("orders", Message::new("before"))
        .await
        .unwrap();
    assert_eq!(recv(&mut rx).await.body, "before");

    first.crash();
    for i in 0..5 {
        publisher
            .publish("orders", Message::new(format!("while down {i}")))
            .await
            .unwrap();
    }
    eventually("the deliveries failing", || {
        let stats = publisher.stats();
        stats.buffered == 5 && stats.lost == 0 && stats.destinations == 1
    })
    .await;
    let err = publisher
        .flush(Duration::from_millis(100))
        .await
        .unwrap_err();
    assert_eq!(err.code(), 408);
    assert!(err.detail().contains("5 messages still buffered"), "{err}");

    // The same process, restarted on the same port, subscribing again.
    let second = HttpBroker::new(registry).listen(address.clone());
    let (tx, mut rx) = mpsc::unbounded_channel();
    let _sub = second
        .subscribe("orders", channel_handler(tx), Default::default())
        .await
        .unwrap();
    assert_eq!(second.address().unwrap(), address);
    for i in 0..5 {
        assert_eq!(recv(&mut rx).await.body, format!("while down {i}"));
    }
    publisher.flush(Duration::from_secs(5)).await.unwrap();
    assert_eq!(publisher.stats().lost, 0);
    second.disconnect().await.unwrap();
}

#[tokio::test]
async fn a_full_buffer_refuses_with_503() {
    let registry = Arc::new(MemoryRegistry::new());
    let subscriber = HttpBroker::new(registry.clone());
    let queue_member = HttpBroker::new(registry.clone());
    let _sub = subscriber
        .subscribe("busy", handler(|_| async { Ok(()) }), Default::default())
        .await
        .unwrap();
    let _member = queue_member
        .subscribe(
            "busy.queue",
            handler(|_| async { Ok(()) }),
            SubscribeOptions::default().queue("q"),
        )
        .await
        .unwrap();
    subscriber.crash();
    queue_member.crash();
    let publisher = fast(HttpBroker::new(registry)).buffer(3, 1 << 20);
    for topic in ["busy", "busy.queue"] {
        for _ in 0..3 {
            publisher.publish(topic, Message::new("x")).await.unwrap();
        }
        let err = publisher
            .publish(topic, Message::new("x"))
            .await
            .unwrap_err();
        assert_eq!(err.code(), 503, "{err}");
        assert!(err.detail().contains("not accepting messages"), "{err}");
    }
    let err = publisher
        .publish("busy", Message::new("x"))
        .await
        .unwrap_err();
    assert!(err.detail().contains("3 buffered"), "{err}");
    // A byte limit counts too.
    let bytes = fast(HttpBroker::new(publisher.handle.core.registry.clone())).buffer(100, 250);
    bytes
        .publish("busy", Message::new(vec![0; 200]))
        .await
        .unwrap();
    let err = bytes
        .publish("busy", Message::new(vec![0; 200]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), 503, "{err}");
    assert_eq!(publisher.stats().buffered, 6);
}

/// A writer into a shared buffer, for capturing logs.
#[derive(Clone, Default)]
struct Logs(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_dead_subscriber_that_left_the_registry_is_dropped_and_its_messages_logged() {
    let logs = Logs::default();
    let writer = logs.clone();
    // A current-thread runtime: every task logs to this thread's subscriber.
    let _guard = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish(),
    );
    let registry = Arc::new(MemoryRegistry::new());
    let subscriber = HttpBroker::new(registry.clone());
    let _sub = subscriber
        .subscribe("gone", handler(|_| async { Ok(()) }), Default::default())
        .await
        .unwrap();
    subscriber.crash();
    let publisher = fast(HttpBroker::new(registry.clone()));
    for id in ["lost-1", "lost-2"] {
        publisher
            .publish("gone", Message::new("x").header(HEADER_ID, id))
            .await
            .unwrap();
    }
    eventually("the delivery failing", || {
        publisher.handle.core.outbox.destinations() == 1
    })
    .await;
    assert_eq!(publisher.stats().lost, 0);
    // Its record expires (or is found dead): the registry forgets it.
    for s in registry.get_service("topic:gone").await.unwrap() {
        registry.deregister(&s).await.unwrap();
    }
    eventually("the messages being dropped", || publisher.stats().lost == 2).await;
    let stats = publisher.stats();
    assert_eq!((stats.buffered, stats.destinations), (0, 0), "{stats:?}");
    publisher.flush(Duration::from_secs(1)).await.unwrap();
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    for id in ["lost-1", "lost-2"] {
        assert!(
            text.lines()
                .any(|l| l.contains("message lost") && l.contains(id)),
            "no log line for {id}:\n{text}"
        );
    }
    assert!(text.contains("left the registry"), "{text}");
    // With nobody subscribed any more, publishing delivers nothing and succeeds.
    publisher.publish("gone", Message::new("x")).await.unwrap();
    assert_eq!(publisher.stats().buffered, 0);
}

#[tokio::test]
async fn a_subscriber_failing_past_the_retry_window_is_given_up_and_queue_groups_avoid_it() {
    let registry = Arc::new(MemoryRegistry::new());
    let dead = HttpBroker::new(registry.clone());
    let alive = HttpBroker::new(registry.clone());
    let _d = dead
        .subscribe(
            "jobs",
            handler(|_| async { Ok(()) }),
            SubscribeOptions::default().queue("w"),
        )
        .await
        .unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let _a = alive
        .subscribe(
            "jobs",
            channel_handler(tx),
            SubscribeOptions::default().queue("w"),
        )
        .await
        .unwrap();
    dead.crash();
    let publisher = fast(HttpBroker::new(registry)).retry_window(Duration::from_millis(200));
    // Round robin puts one of the first two on the dead member.
    for i in 0..2 {
        publisher
            .publish("jobs", Message::new(format!("{i}")))
            .await
            .unwrap();
    }
    recv(&mut rx).await;
    eventually("the dead member being given up", || {
        publisher.stats().lost == 1
    })
    .await;
    // From now on every message goes to the live member.
    for i in 0..10 {
        publisher
            .publish("jobs", Message::new(format!("after {i}")))
            .await
            .unwrap();
    }
    for i in 0..10 {
        assert_eq!(recv(&mut rx).await.body, format!("after {i}"));
    }
    assert_eq!(publisher.stats().lost, 1);
    alive.disconnect().await.unwrap();
}

#[tokio::test]
async fn dropping_the_last_handle_stops_everything() {
    let registry = Arc::new(MemoryRegistry::new());
    let broker = HttpBroker::new(registry.clone());
    let sub = broker
        .subscribe("dropped", handler(|_| async { Ok(()) }), Default::default())
        .await
        .unwrap();
    let address = broker.address().unwrap();
    broker.publish("dropped", Message::new("x")).await.unwrap();
    broker.flush(Duration::from_secs(5)).await.unwrap();
    drop(broker);
    // The subscription holds the broker alive.
    assert!(TcpStream::connect(&address).await.is_ok());
    drop(sub);
    eventually("the server stopping", || {
        std::net::TcpStream::connect(&address).is_err()
    })
    .await;
}
