//! Tests of the NATS broker against a real `nats-server` each test starts on a
//! loopback port (skipped with a message when the binary is missing outside CI).

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::test_server::NatsServer;
use super::NatsBroker;
use crate::broker::{
    conformance, handler, AckMode, Broker, Delivery, Message, SubscribeOptions, HEADER_ID,
    HEADER_TOPIC,
};
use crate::Error;

const WAIT: Duration = Duration::from_secs(30);

fn msg(id: usize) -> Message {
    Message::new(format!("message {id}")).header(HEADER_ID, id.to_string())
}

/// A handler that forwards every delivery to a channel.
fn forward() -> (crate::broker::Handler, mpsc::UnboundedReceiver<Delivery>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let h = handler(move |d| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(d);
            Ok(())
        }
    });
    (h, rx)
}

async fn recv(rx: &mut mpsc::UnboundedReceiver<Delivery>) -> Delivery {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("a delivery in time")
        .expect("subscription alive")
}

/// Nothing more arrives within a short while.
async fn quiet(rx: &mut mpsc::UnboundedReceiver<Delivery>) {
    if let Ok(Some(d)) = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await {
        panic!("unexpected delivery {:?}", d.message);
    }
}

/// A set of unique message ids that handlers fill in.
#[derive(Clone, Default)]
struct Seen {
    ids: Arc<Mutex<HashSet<String>>>,
    deliveries: Arc<AtomicUsize>,
}

impl Seen {
    fn handler(&self) -> crate::broker::Handler {
        let seen = self.clone();
        handler(move |d| {
            let seen = seen.clone();
            async move {
                tokio::task::yield_now().await;
                seen.deliveries.fetch_add(1, Ordering::Relaxed);
                if let Some(id) = d.message.id() {
                    seen.ids
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(id.to_string());
                }
                Ok(())
            }
        })
    }

    fn unique(&self) -> usize {
        self.ids.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    async fn wait_for(&self, n: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while self.unique() < n {
            assert!(
                Instant::now() < deadline,
                "only {} of {n} messages delivered ({} deliveries)",
                self.unique(),
                self.deliveries.load(Ordering::Relaxed)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Publishes ids `0..n` in the background, a little at a time, retrying a
/// publish the broker could not confirm (same id: stored once).
fn publish_paced(broker: NatsBroker, topic: &'static str, n: usize) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        for id in 0..n {
            let deadline = Instant::now() + Duration::from_secs(60);
            while let Err(e) = broker.publish(topic, msg(id)).await {
                assert!(
                    Instant::now() < deadline,
                    "publish {id} never confirmed: {e}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if id % 10 == 9 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    })
}

macro_rules! server {
    ($jetstream:expr) => {
        match NatsServer::start($jetstream).await {
            Some(server) => server,
            None => return,
        }
    };
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn core_nats_conforms() {
    let server = server!(false);
    let url = server.url();
    // Each participant its own broker (own connection): separate processes.
    conformance::run_all(move || Arc::new(NatsBroker::new(vec![url.clone()])) as Arc<dyn Broker>)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jetstream_conforms() {
    let server = server!(true);
    let url = server.url();
    conformance::Suite::new(move || {
        Arc::new(
            NatsBroker::new(vec![url.clone()])
                .jetstream(true)
                .redelivery_delay(Duration::from_millis(50)),
        ) as Arc<dyn Broker>
    })
    .deadline(Duration::from_secs(20))
    .run_all()
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_publish_subscribe_with_headers() {
    let server = server!(false);
    let broker = NatsBroker::new(vec![server.url()]);
    assert_eq!(broker.name(), "nats");
    broker.connect().await.expect("connect");
    let (h, mut rx) = forward();
    let sub = broker
        .subscribe("greeter.hello", h, SubscribeOptions::default())
        .await
        .expect("subscribe");
    assert_eq!(sub.topic(), "greeter.hello");
    broker
        .publish(
            "greeter.hello",
            msg(1)
                .header(HEADER_TOPIC, "greeter.hello")
                .header("Content-Type", "application/json"),
        )
        .await
        .expect("publish");
    broker
        .publish("greeter.hello", Message::new("no headers"))
        .await
        .expect("publish");
    let d = recv(&mut rx).await;
    assert_eq!(d.topic, "greeter.hello");
    assert_eq!(d.message.body, "message 1");
    assert_eq!(d.message.id(), Some("1"));
    assert_eq!(
        d.message.headers.get("content-type").map(String::as_str),
        Some("application/json")
    );
    let d = recv(&mut rx).await;
    assert_eq!(d.message.body, "no headers");
    assert!(d.message.headers.is_empty());
    // Core deliveries have nothing to acknowledge.
    d.ack().await.expect("ack is a no-op");
    d.nack().await.expect("nack is a no-op");
    sub.unsubscribe().await.expect("unsubscribe");
    broker
        .publish("greeter.hello", msg(2))
        .await
        .expect("publish");
    quiet(&mut rx).await;
    // Bad topics are a 400, never a panic.
    let err = broker.publish("a b", msg(3)).await.expect_err("bad topic");
    assert_eq!(err.code(), 400);
    let err = broker
        .subscribe("a.*", forward().0, SubscribeOptions::default())
        .await
        .expect_err("wildcard topic");
    assert_eq!(err.code(), 400);
    broker.disconnect().await.expect("disconnect");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_queue_groups_share_and_plain_subscribers_get_all() {
    let server = server!(false);
    let broker = NatsBroker::new(vec![server.url()]);
    let (a, b, all) = (Seen::default(), Seen::default(), Seen::default());
    let queue = SubscribeOptions::default().queue("workers");
    let sa = broker
        .subscribe("jobs", a.handler(), queue.clone())
        .await
        .expect("a");
    let sb = broker
        .subscribe("jobs", b.handler(), queue)
        .await
        .expect("b");
    let sall = broker
        .subscribe("jobs", all.handler(), SubscribeOptions::default())
        .await
        .expect("all");
    assert_eq!(sa.queue(), Some("workers"));
    for id in 0..200 {
        broker.publish("jobs", msg(id)).await.expect("publish");
    }
    all.wait_for(200, WAIT).await;
    let deadline = Instant::now() + WAIT;
    while a.unique() + b.unique() < 200 {
        assert!(
            Instant::now() < deadline,
            "queue group got {} + {}",
            a.unique(),
            b.unique()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        a.deliveries.load(Ordering::Relaxed) + b.deliveries.load(Ordering::Relaxed),
        200
    );
    assert!(
        a.unique() > 0 && b.unique() > 0,
        "both members work: {} / {}",
        a.unique(),
        b.unique()
    );
    for s in [sa, sb, sall] {
        s.unsubscribe().await.expect("unsubscribe");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_handler_errors_and_panics_do_not_end_the_subscription() {
    let server = server!(false);
    let broker = NatsBroker::new(vec![server.url()]);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let h = handler(move |d: Delivery| {
        let tx = tx.clone();
        async move {
            match d.message.id() {
                Some("1") => Err(Error::internal_server_error("test", "boom")),
                Some("2") => panic!("handler panic (expected by the test)"),
                _ => {
                    let _ = tx.send(d);
                    Ok(())
                }
            }
        }
    });
    let _sub = broker
        .subscribe("errors", h, SubscribeOptions::default())
        .await
        .expect("subscribe");
    for id in 1..=3 {
        broker.publish("errors", msg(id)).await.expect("publish");
    }
    assert_eq!(recv(&mut rx).await.message.id(), Some("3"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_subscription_survives_a_server_restart() {
    let mut server = server!(false);
    let broker = NatsBroker::new(vec![server.url()]);
    let (h, mut rx) = forward();
    let _sub = broker
        .subscribe("restart.core", h, SubscribeOptions::default())
        .await
        .expect("subscribe");
    broker
        .publish("restart.core", msg(1))
        .await
        .expect("publish");
    assert_eq!(recv(&mut rx).await.message.id(), Some("1"));
    server.restart().await;
    // Fire-and-forget: publish until the reconnected subscription gets one.
    let deadline = Instant::now() + WAIT;
    loop {
        let _ = broker.publish("restart.core", msg(2)).await;
        if let Ok(Some(d)) = tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
            assert_eq!(d.message.id(), Some("2"));
            break;
        }
        assert!(Instant::now() < deadline, "no delivery after the restart");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_to_nothing_is_a_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let broker = NatsBroker::new(vec![format!("127.0.0.1:{port}")]);
    assert_eq!(broker.addresses(), [format!("nats://127.0.0.1:{port}")]);
    let err = broker.connect().await.expect_err("no server");
    assert_eq!(err.code(), 503);
    assert!(
        err.detail().contains("cannot connect to NATS"),
        "{}",
        err.detail()
    );
    let split = NatsBroker::new(vec!["a:1, nats://b:2".into()]);
    assert_eq!(split.addresses(), ["nats://a:1", "nats://b:2"]);
    assert_eq!(
        NatsBroker::new(vec![]).addresses(),
        [NatsBroker::DEFAULT_ADDRESS]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_durable_keeps_messages_while_away() {
    let server = server!(true);
    // A core broker: the durable option alone switches the subscription to JetStream.
    let broker = NatsBroker::new(vec![server.url()]);
    let (h, mut rx) = forward();
    let durable = SubscribeOptions::default().durable("keeper");
    let sub = broker
        .subscribe("orders.created", h, durable.clone())
        .await
        .expect("subscribe");
    broker
        .publish("orders.created", msg(1))
        .await
        .expect("publish");
    let d = recv(&mut rx).await;
    assert_eq!(d.message.id(), Some("1"));
    assert!(d.acker().is_some(), "JetStream deliveries carry an acker");
    drop(d);
    sub.unsubscribe().await.expect("unsubscribe");
    // Published while the subscriber is away, with JetStream acks this time
    // (`--broker jetstream`: the NATS broker in JetStream mode).
    let publisher = crate::broker::from_name(
        "jetstream",
        &[server.url()],
        Arc::new(crate::registry::MemoryRegistry::new()),
    )
    .expect("the jetstream broker");
    for id in 2..=4 {
        publisher
            .publish("orders.created", msg(id))
            .await
            .expect("publish");
    }
    let (h, mut rx) = forward();
    let _sub = broker
        .subscribe("orders.created", h, durable)
        .await
        .expect("subscribe again");
    for id in 2..=4 {
        assert_eq!(
            recv(&mut rx).await.message.id(),
            Some(id.to_string().as_str())
        );
    }
    quiet(&mut rx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_every_message_survives_a_subscriber_kill() {
    let server = server!(true);
    let make = || {
        NatsBroker::new(vec![server.url()])
            .jetstream(true)
            .ack_wait(Duration::from_secs(1))
    };
    let options = SubscribeOptions::default().durable("workers");
    let first = make();
    let seen = Seen::default();
    let _sub = first
        .subscribe("stream.kill", seen.handler(), options.clone())
        .await
        .expect("subscribe");
    let publishing = publish_paced(make(), "stream.kill", 1000);
    seen.wait_for(300, WAIT).await;
    first.kill();
    let at_kill = seen.unique();
    assert!(at_kill < 1000, "the kill came mid-stream ({at_kill})");
    publishing.await.expect("publisher");
    let second = make();
    let _sub = second
        .subscribe("stream.kill", seen.handler(), options)
        .await
        .expect("subscribe again");
    seen.wait_for(1000, Duration::from_secs(60)).await;
    eprintln!(
        "subscriber killed at {at_kill} unique messages; 1000 unique in {} deliveries",
        seen.deliveries.load(Ordering::Relaxed)
    );
    let ids = seen.ids.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert!((0..1000).all(|id| ids.contains(&id.to_string())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_every_message_survives_a_server_restart() {
    let mut server = server!(true);
    let make = || {
        NatsBroker::new(vec![server.url()])
            .jetstream(true)
            .ack_wait(Duration::from_secs(2))
            .publish_timeout(Duration::from_secs(30))
    };
    let subscriber = make();
    let seen = Seen::default();
    let _sub = subscriber
        .subscribe(
            "stream.restart",
            seen.handler(),
            SubscribeOptions::default().durable("restart"),
        )
        .await
        .expect("subscribe");
    let publishing = publish_paced(make(), "stream.restart", 1000);
    seen.wait_for(300, WAIT).await;
    server.kill();
    let at_kill = seen.unique();
    assert!(at_kill < 1000, "the restart came mid-stream ({at_kill})");
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.restart().await;
    publishing.await.expect("publisher");
    seen.wait_for(1000, Duration::from_secs(60)).await;
    eprintln!(
        "server killed at {at_kill} unique messages; 1000 unique in {} deliveries",
        seen.deliveries.load(Ordering::Relaxed)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_handler_error_is_redelivered() {
    let server = server!(true);
    let broker = NatsBroker::new(vec![server.url()])
        .jetstream(true)
        .redelivery_delay(Duration::from_millis(50));
    let calls = Arc::new(AtomicUsize::new(0));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let h = {
        let calls = calls.clone();
        handler(move |d: Delivery| {
            let calls = calls.clone();
            let tx = tx.clone();
            async move {
                if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                    return Err(Error::internal_server_error("test", "not yet"));
                }
                let _ = tx.send(d);
                Ok(())
            }
        })
    };
    let _sub = broker
        .subscribe("retry.me", h, SubscribeOptions::default().durable("retry"))
        .await
        .expect("subscribe");
    broker.publish("retry.me", msg(7)).await.expect("publish");
    assert_eq!(recv(&mut rx).await.message.id(), Some("7"));
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    quiet(&mut rx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_message_beyond_max_deliver_goes_to_dead_letter_topic() {
    let server = server!(true);
    let broker = NatsBroker::new(vec![server.url()])
        .jetstream(true)
        .max_deliver(3)
        .redelivery_delay(Duration::from_millis(20));
    let (dead_h, mut dead) = forward();
    let _dead_sub = broker
        .subscribe(
            "poison.dead",
            dead_h,
            SubscribeOptions::default().durable("inspect"),
        )
        .await
        .expect("subscribe dead letters");
    let calls = Arc::new(AtomicUsize::new(0));
    let h = {
        let calls = calls.clone();
        handler(move |_d: Delivery| {
            let calls = calls.clone();
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(Error::bad_request("orders", "cannot handle this"))
            }
        })
    };
    let _sub = broker
        .subscribe("poison", h, SubscribeOptions::default().durable("victim"))
        .await
        .expect("subscribe");
    broker
        .publish("poison", msg(9).header("x-custom", "kept"))
        .await
        .expect("publish");
    let d = recv(&mut dead).await;
    assert_eq!(d.topic, "poison.dead");
    assert_eq!(d.message.body, "message 9");
    assert_eq!(d.message.id(), Some("9"));
    let h = &d.message.headers;
    assert_eq!(h.get("x-custom").map(String::as_str), Some("kept"));
    assert_eq!(h.get("micro-topic").map(String::as_str), Some("poison"));
    assert_eq!(h.get("micro-deliveries").map(String::as_str), Some("3"));
    let error = Error::parse(h.get("micro-error").expect("error header"));
    assert_eq!(error.detail(), "cannot handle this");
    assert_eq!(error.code(), 400);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        3,
        "no delivery after the dead letter"
    );
    quiet(&mut dead).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_message_never_acknowledged_goes_to_dead_letter_topic() {
    let server = server!(true);
    let broker = NatsBroker::new(vec![server.url()])
        .jetstream(true)
        .max_deliver(2)
        .ack_wait(Duration::from_millis(300));
    let (dead_h, mut dead) = forward();
    let _dead_sub = broker
        .subscribe(
            "silent.dead",
            dead_h,
            SubscribeOptions::default().durable("inspect"),
        )
        .await
        .expect("subscribe dead letters");
    let calls = Arc::new(AtomicUsize::new(0));
    let h = {
        let calls = calls.clone();
        // Manual acks, and the handler never acks: as if it hung or crashed.
        handler(move |_d: Delivery| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Ok(()) }
        })
    };
    let _sub = broker
        .subscribe(
            "silent",
            h,
            SubscribeOptions::default()
                .durable("forgetful")
                .manual_ack(),
        )
        .await
        .expect("subscribe");
    broker.publish("silent", msg(5)).await.expect("publish");
    let d = recv(&mut dead).await;
    assert_eq!(d.message.id(), Some("5"));
    let h = &d.message.headers;
    assert_eq!(h.get("micro-deliveries").map(String::as_str), Some("2"));
    let error = Error::parse(h.get("micro-error").expect("error header"));
    assert!(
        error.detail().contains("not acknowledged"),
        "{}",
        error.detail()
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_manual_ack_and_nack() {
    let server = server!(true);
    let broker = NatsBroker::new(vec![server.url()])
        .jetstream(true)
        .redelivery_delay(Duration::from_millis(20));
    let nacked = Arc::new(AtomicUsize::new(0));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let h = {
        let nacked = nacked.clone();
        handler(move |d: Delivery| {
            let nacked = nacked.clone();
            let tx = tx.clone();
            async move {
                if nacked.fetch_add(1, Ordering::SeqCst) == 0 {
                    d.nack().await?;
                } else {
                    d.ack().await?;
                    let _ = tx.send(d);
                }
                Ok(())
            }
        })
    };
    let options = SubscribeOptions::default().durable("manual").manual_ack();
    assert_eq!(options.ack, AckMode::Manual);
    let _sub = broker
        .subscribe("manual.ack", h, options)
        .await
        .expect("subscribe");
    broker.publish("manual.ack", msg(1)).await.expect("publish");
    assert_eq!(recv(&mut rx).await.message.id(), Some("1"));
    quiet(&mut rx).await;
    assert_eq!(nacked.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_queue_group_members_compete() {
    let server = server!(true);
    let broker = NatsBroker::new(vec![server.url()])
        .jetstream(true)
        .pull_batch(5);
    let (a, b) = (Seen::default(), Seen::default());
    let queue = SubscribeOptions::default().queue("billing");
    let _sa = broker
        .subscribe("invoices", a.handler(), queue.clone())
        .await
        .expect("a");
    let _sb = broker
        .subscribe("invoices", b.handler(), queue)
        .await
        .expect("b");
    for id in 0..100 {
        broker.publish("invoices", msg(id)).await.expect("publish");
    }
    let deadline = Instant::now() + WAIT;
    loop {
        let union: HashSet<String> = a
            .ids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .union(&b.ids.lock().unwrap_or_else(|p| p.into_inner()))
            .cloned()
            .collect();
        if union.len() == 100 {
            break;
        }
        assert!(Instant::now() < deadline, "only {} delivered", union.len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let total = a.deliveries.load(Ordering::Relaxed) + b.deliveries.load(Ordering::Relaxed);
    assert_eq!(total, 100, "each message handled by one member");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_ephemeral_subscription_gets_new_messages() {
    let server = server!(true);
    let broker = NatsBroker::new(vec![server.url()]).jetstream(true);
    broker
        .publish("news", msg(0))
        .await
        .expect("publish before");
    let (h, mut rx) = forward();
    let sub = broker
        .subscribe("news", h, SubscribeOptions::default())
        .await
        .expect("subscribe");
    broker.publish("news", msg(1)).await.expect("publish");
    assert_eq!(recv(&mut rx).await.message.id(), Some("1"));
    sub.unsubscribe().await.expect("unsubscribe");
    quiet(&mut rx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_topics_in_an_existing_stream_keep_apart() {
    let server = server!(true);
    // A stream someone else made over many subjects: micro uses it as it is.
    let client = async_nats::connect(server.url()).await.expect("connect");
    async_nats::jetstream::new(client)
        .create_stream(async_nats::jetstream::stream::Config {
            name: "ORDERS".into(),
            subjects: vec!["orders.>".into()],
            ..Default::default()
        })
        .await
        .expect("stream");
    let broker = NatsBroker::new(vec![server.url()]).jetstream(true);
    let (ha, mut a) = forward();
    let (hb, mut b) = forward();
    let same_name = SubscribeOptions::default().durable("billing");
    let _sa = broker
        .subscribe("orders.created", ha, same_name.clone())
        .await
        .expect("a");
    let _sb = broker
        .subscribe("orders.paid", hb, same_name)
        .await
        .expect("b");
    broker
        .publish("orders.created", msg(1))
        .await
        .expect("publish");
    broker
        .publish("orders.paid", msg(2))
        .await
        .expect("publish");
    assert_eq!(recv(&mut a).await.message.id(), Some("1"));
    assert_eq!(recv(&mut b).await.message.id(), Some("2"));
    quiet(&mut a).await;
    quiet(&mut b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_ack_on_a_core_broker_uses_jetstream() {
    let server = server!(true);
    let broker = NatsBroker::new(vec![server.url()]);
    let (h, mut rx) = forward();
    let _sub = broker
        .subscribe("acked", h, SubscribeOptions::default().manual_ack())
        .await
        .expect("subscribe");
    broker.publish("acked", msg(1)).await.expect("publish");
    let d = recv(&mut rx).await;
    assert!(d.acker().is_some(), "a JetStream delivery");
    d.ack().await.expect("ack");
}
