//! The conformance suite every [`Broker`] passes: written once, run against the
//! memory, HTTP and NATS brokers (and any future backend).
//!
//! Each check is an `async fn` on [`Suite`] that panics with a clear message when
//! the broker misbehaves. A check calls the suite's factory once per participant
//! (the publisher, each subscriber), so the factory may hand out one shared broker
//! (memory), or separate brokers that reach each other (HTTP brokers on one
//! registry, NATS clients of one server) to play separate processes. Every check
//! uses topics of its own, so brokers may be shared between checks.
//!
//! Subscriptions may take a while to reach publishers (a registry watch, a NATS
//! server). Before publishing, a check therefore sends probe messages until every
//! subscriber has received one (bounded by [`Suite::deadline`]), then waits
//! [`Suite::settle`] (zero by default); probes are not counted. Waits poll for a
//! condition with a bound instead of sleeping a fixed time. A publish refused with
//! 503 (a full buffer) is retried, as a well-behaved publisher would. Run the
//! checks on a multi-threaded runtime with real (not paused) time.
//!
//! ```no_run
//! # async fn doc() {
//! use std::sync::Arc;
//! use micro::broker::{conformance, Broker, MemoryBroker};
//!
//! let broker = MemoryBroker::new();
//! conformance::run_all(move || Arc::new(broker.clone()) as Arc<dyn Broker>).await;
//! # }
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::{handler, Broker, Message, SubscribeOptions, Subscription, HEADER_ID};
use crate::Error;

type Factory = Box<dyn Fn() -> Arc<dyn Broker> + Send + Sync>;

/// The header that marks the suite's probe messages.
const PROBE: &str = "conformance-probe";
/// The header carrying a message's sequence number.
const SEQ: &str = "conformance-seq";
/// The header naming the publisher of a message.
const PUBLISHER: &str = "conformance-publisher";

/// Runs every check of the suite against brokers made by `make`.
///
/// ```no_run
/// # async fn doc() {
/// use std::sync::Arc;
/// use micro::broker::{conformance, Broker, HttpBroker};
/// use micro::registry::{MemoryRegistry, Registry};
///
/// // Separate brokers on one registry: separate processes, as far as they know.
/// let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
/// conformance::run_all(move || Arc::new(HttpBroker::new(registry.clone())) as Arc<dyn Broker>).await;
/// # }
/// ```
pub async fn run_all(make: impl Fn() -> Arc<dyn Broker> + Send + Sync + 'static) {
    Suite::new(make).run_all().await;
}

/// The conformance checks, with the timing they use.
///
/// ```no_run
/// # async fn doc() {
/// use std::{sync::Arc, time::Duration};
/// use micro::broker::{conformance::Suite, Broker, MemoryBroker};
///
/// let broker = MemoryBroker::new();
/// let suite = Suite::new(move || Arc::new(broker.clone()) as Arc<dyn Broker>)
///     .settle(Duration::from_millis(100)) // subscriptions propagate asynchronously
///     .deadline(Duration::from_secs(20));
/// suite.ordering().await;
/// suite.run_all().await;
/// # }
/// ```
pub struct Suite {
    make: Factory,
    settle: Duration,
    deadline: Duration,
    large: usize,
}

impl fmt::Debug for Suite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Suite")
            .field("settle", &self.settle)
            .field("deadline", &self.deadline)
            .field("large", &self.large)
            .finish_non_exhaustive()
    }
}

/// What one test subscriber received.
#[derive(Clone, Default)]
struct Recorder {
    inner: Arc<Mutex<Received>>,
}

#[derive(Default)]
struct Received {
    messages: Vec<Message>,
    topics: BTreeSet<String>,
    /// The tokens of the probes received.
    probes: BTreeSet<String>,
}

impl Recorder {
    fn lock(&self) -> MutexGuard<'_, Received> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn record(&self, topic: &str, message: Message) {
        let mut r = self.lock();
        r.topics.insert(topic.to_string());
        if let Some(token) = message.headers.get(PROBE) {
            r.probes.insert(token.clone());
        } else {
            r.messages.push(message);
        }
    }

    fn handler(&self) -> super::Handler {
        let me = self.clone();
        handler(move |d| {
            me.record(&d.topic, d.message);
            async { Ok(()) }
        })
    }

    fn count(&self) -> usize {
        self.lock().messages.len()
    }

    fn got_probe(&self, token: &str) -> bool {
        self.lock().probes.contains(token)
    }

    fn messages(&self) -> Vec<Message> {
        self.lock().messages.clone()
    }

    /// Sequence numbers in arrival order.
    fn seqs(&self) -> Vec<u64> {
        self.messages().iter().map(seq).collect()
    }
}

fn seq(m: &Message) -> u64 {
    m.headers
        .get(SEQ)
        .and_then(|s| s.parse().ok())
        .unwrap_or(u64::MAX)
}

fn numbered(i: u64) -> Message {
    Message::new(format!("message {i}"))
        .header(SEQ, i.to_string())
        .header(HEADER_ID, format!("conformance-{i}"))
}

fn topic(check: &str) -> String {
    format!("conformance.{check}.{}", uuid::Uuid::new_v4().simple())
}

impl Suite {
    /// A suite over brokers made by `make`: no settle time, 10 s deadlines, 1 MiB
    /// large messages.
    pub fn new(make: impl Fn() -> Arc<dyn Broker> + Send + Sync + 'static) -> Self {
        Suite {
            make: Box::new(make),
            settle: Duration::ZERO,
            deadline: Duration::from_secs(10),
            large: 1 << 20,
        }
    }

    /// Extra time to wait after subscribing and unsubscribing, once probes show
    /// the subscriptions are live, for brokers that propagate them asynchronously.
    pub fn settle(mut self, settle: Duration) -> Self {
        self.settle = settle;
        self
    }

    /// How long to wait for something that must happen (a delivery, a probe).
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// The body size of [`Suite::large_messages`] (default 1 MiB; NATS' default
    /// `max_payload` is 1 MiB *including* headers, so run it with a larger one or
    /// lower this).
    pub fn large_message_size(mut self, bytes: usize) -> Self {
        self.large = bytes;
        self
    }

    /// Every check, one after the other.
    pub async fn run_all(&self) {
        self.no_subscribers().await;
        self.broadcast().await;
        self.queue_group().await;
        self.broadcast_and_queue().await;
        self.ordering().await;
        self.unsubscribe().await;
        self.large_messages().await;
        self.headers_round_trip().await;
        self.bad_input().await;
    }

    async fn wait_for(&self, what: impl fmt::Display, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + self.deadline;
        while !done() {
            if Instant::now() >= deadline {
                panic!("{what}: not done within {:?}", self.deadline);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Publishes, retrying while the broker pushes back with 503.
    async fn publish(&self, broker: &dyn Broker, topic: &str, message: Message) {
        let deadline = Instant::now() + self.deadline;
        loop {
            match broker.publish(topic, message.clone()).await {
                Ok(()) => return,
                Err(e) if e.code() == 503 && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err(e) => panic!("{}: publishing on {topic} failed: {e}", broker.name()),
            }
        }
    }

    async fn subscribe(
        &self,
        broker: &dyn Broker,
        topic: &str,
        recorder: &Recorder,
        queue: Option<&str>,
    ) -> Subscription {
        let mut opts = SubscribeOptions::default();
        if let Some(q) = queue {
            opts = opts.queue(q);
        }
        broker
            .subscribe(topic, recorder.handler(), opts)
            .await
            .unwrap_or_else(|e| panic!("{}: subscribing to {topic} failed: {e}", broker.name()))
    }

    /// Sends probes on `topic` until each of `recorders` has received one, then
    /// waits the settle time.
    async fn until_live(&self, publisher: &dyn Broker, topic: &str, recorders: &[&Recorder]) {
        let deadline = Instant::now() + self.deadline;
        let token = uuid::Uuid::new_v4().simple().to_string();
        let mut last: Option<Instant> = None;
        while recorders.iter().any(|r| !r.got_probe(&token)) {
            if Instant::now() >= deadline {
                panic!(
                    "{}: subscribers of {topic} got no probe message within {:?}: the \
                     subscriptions never reached the publisher",
                    publisher.name(),
                    self.deadline
                );
            }
            if last.is_none_or(|l| l.elapsed() >= Duration::from_millis(20)) {
                last = Some(Instant::now());
                let probe = Message::new("probe").header(PROBE, token.clone());
                self.publish(publisher, topic, probe).await;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        tokio::time::sleep(self.settle).await;
    }

    /// Lets deliveries that should not happen show up before checking they did not.
    async fn grace(&self) {
        tokio::time::sleep(Duration::from_millis(100).max(self.settle)).await;
    }

    async fn end(&self, subs: Vec<Subscription>) {
        for s in subs {
            let name = s.topic().to_string();
            s.unsubscribe()
                .await
                .unwrap_or_else(|e| panic!("unsubscribing from {name} failed: {e}"));
        }
    }

    /// Publishing on a topic nobody subscribes to succeeds.
    pub async fn no_subscribers(&self) {
        let b = (self.make)();
        let t = topic("nobody");
        b.publish(&t, Message::new("into the void"))
            .await
            .unwrap_or_else(|e| panic!("{}: publishing with no subscriber failed: {e}", b.name()));
    }

    /// Every subscriber without a queue group gets every message, once.
    pub async fn broadcast(&self) {
        let t = topic("broadcast");
        let recorders: Vec<Recorder> = (0..3).map(|_| Recorder::default()).collect();
        let mut subs = Vec::new();
        for r in &recorders {
            subs.push(self.subscribe(&*(self.make)(), &t, r, None).await);
        }
        let publisher = (self.make)();
        self.until_live(&*publisher, &t, &recorders.iter().collect::<Vec<_>>())
            .await;
        for i in 0..20 {
            self.publish(&*publisher, &t, numbered(i)).await;
        }
        for (n, r) in recorders.iter().enumerate() {
            self.wait_for(
                format!(
                    "broadcast: subscriber {n} receiving 20 messages (has {})",
                    r.count()
                ),
                || r.count() >= 20,
            )
            .await;
        }
        self.grace().await;
        for (n, r) in recorders.iter().enumerate() {
            let mut seqs = r.seqs();
            seqs.sort_unstable();
            assert_eq!(
                seqs,
                (0..20).collect::<Vec<_>>(),
                "broadcast: subscriber {n} got each message once"
            );
            assert_eq!(
                r.lock().topics.iter().collect::<Vec<_>>(),
                vec![&t],
                "broadcast: the delivery names its topic"
            );
        }
        self.end(subs).await;
    }

    /// A queue group gets each message exactly once, spread over its members.
    pub async fn queue_group(&self) {
        let t = topic("queue");
        let members: Vec<Recorder> = (0..3).map(|_| Recorder::default()).collect();
        let mut subs = Vec::new();
        for r in &members {
            subs.push(
                self.subscribe(&*(self.make)(), &t, r, Some("workers"))
                    .await,
            );
        }
        let publisher = (self.make)();
        self.until_live(&*publisher, &t, &members.iter().collect::<Vec<_>>())
            .await;
        const N: u64 = 300;
        for i in 0..N {
            self.publish(&*publisher, &t, numbered(i)).await;
        }
        let total = || members.iter().map(Recorder::count).sum::<usize>();
        self.wait_for(format!("queue group: receiving {N} messages"), || {
            total() >= N as usize
        })
        .await;
        self.grace().await;
        let mut all: Vec<u64> = members.iter().flat_map(Recorder::seqs).collect();
        all.sort_unstable();
        assert_eq!(
            all,
            (0..N).collect::<Vec<_>>(),
            "queue group: each message to exactly one member"
        );
        for (n, r) in members.iter().enumerate() {
            assert!(
                r.count() > 0,
                "queue group: member {n} got none of {N} messages"
            );
        }
        self.end(subs).await;
    }

    /// Broadcast subscribers and several queue groups on one topic, together.
    pub async fn broadcast_and_queue(&self) {
        let t = topic("mixed");
        let everyone: Vec<Recorder> = (0..2).map(|_| Recorder::default()).collect();
        let group_a: Vec<Recorder> = (0..2).map(|_| Recorder::default()).collect();
        let group_b = Recorder::default();
        let mut subs = Vec::new();
        for r in &everyone {
            subs.push(self.subscribe(&*(self.make)(), &t, r, None).await);
        }
        for r in &group_a {
            subs.push(self.subscribe(&*(self.make)(), &t, r, Some("a")).await);
        }
        subs.push(
            self.subscribe(&*(self.make)(), &t, &group_b, Some("b"))
                .await,
        );
        let publisher = (self.make)();
        let all: Vec<&Recorder> = everyone.iter().chain(&group_a).chain([&group_b]).collect();
        self.until_live(&*publisher, &t, &all).await;
        const N: u64 = 40;
        for i in 0..N {
            self.publish(&*publisher, &t, numbered(i)).await;
        }
        let a_total = || group_a.iter().map(Recorder::count).sum::<usize>();
        self.wait_for("mixed: every subscriber receiving its share", || {
            everyone.iter().all(|r| r.count() >= N as usize)
                && a_total() >= N as usize
                && group_b.count() >= N as usize
        })
        .await;
        self.grace().await;
        let expected: Vec<u64> = (0..N).collect();
        for (n, r) in everyone.iter().enumerate() {
            let mut s = r.seqs();
            s.sort_unstable();
            assert_eq!(
                s, expected,
                "mixed: broadcast subscriber {n} got each message once"
            );
        }
        let mut a: Vec<u64> = group_a.iter().flat_map(Recorder::seqs).collect();
        a.sort_unstable();
        assert_eq!(a, expected, "mixed: queue group a got each message once");
        let mut b = group_b.seqs();
        b.sort_unstable();
        assert_eq!(
            b, expected,
            "mixed: queue group b (one member) got each message once"
        );
        self.end(subs).await;
    }

    /// Messages from one publisher reach each subscriber in publish order, also
    /// while another publisher publishes on the same topic.
    pub async fn ordering(&self) {
        let t = topic("order");
        let recorders: Vec<Recorder> = (0..2).map(|_| Recorder::default()).collect();
        let lone = Recorder::default();
        let mut subs = Vec::new();
        for r in &recorders {
            subs.push(self.subscribe(&*(self.make)(), &t, r, None).await);
        }
        subs.push(
            self.subscribe(&*(self.make)(), &t, &lone, Some("lone"))
                .await,
        );
        let publishers: Vec<Arc<dyn Broker>> = (0..2).map(|_| (self.make)()).collect();
        let all: Vec<&Recorder> = recorders.iter().chain([&lone]).collect();
        for p in &publishers {
            self.until_live(&**p, &t, &all).await;
        }
        const N: u64 = 1000;
        let runs = publishers.iter().enumerate().map(|(p, publisher)| {
            let t = &t;
            async move {
                for i in 0..N {
                    self.publish(
                        &**publisher,
                        t,
                        numbered(i).header(PUBLISHER, p.to_string()),
                    )
                    .await;
                }
            }
        });
        futures_util::future::join_all(runs).await;
        for (n, r) in all.iter().enumerate() {
            self.wait_for(
                format!(
                    "ordering: subscriber {n} receiving {} messages (has {})",
                    2 * N,
                    r.count()
                ),
                || r.count() >= 2 * N as usize,
            )
            .await;
        }
        for (n, r) in all.iter().enumerate() {
            let mut per_publisher: BTreeMap<String, Vec<u64>> = BTreeMap::new();
            for m in r.messages() {
                let p = m.headers.get(PUBLISHER).cloned().unwrap_or_default();
                per_publisher.entry(p).or_default().push(seq(&m));
            }
            for (p, seqs) in per_publisher {
                assert!(
                    seqs.iter().copied().eq(0..N),
                    "ordering: subscriber {n} got publisher {p}'s messages out of order or \
                     incomplete (first differences: {:?})",
                    seqs.iter()
                        .enumerate()
                        .filter(|(i, s)| *i as u64 != **s)
                        .take(5)
                        .collect::<Vec<_>>()
                );
            }
        }
        self.end(subs).await;
    }

    /// Once `unsubscribe` returns, the handler is not called again; other
    /// subscribers keep receiving.
    pub async fn unsubscribe(&self) {
        let t = topic("unsub");
        let leaving = Recorder::default();
        let staying = Recorder::default();
        let stopped = Arc::new(AtomicBool::new(false));
        let late = Arc::new(AtomicUsize::new(0));
        let handler = {
            let (leaving, stopped, late) = (leaving.clone(), stopped.clone(), late.clone());
            handler(move |d| {
                if stopped.load(Ordering::SeqCst) {
                    late.fetch_add(1, Ordering::SeqCst);
                }
                leaving.record(&d.topic, d.message);
                async { Ok(()) }
            })
        };
        let leaving_broker = (self.make)();
        let sub = leaving_broker
            .subscribe(&t, handler, SubscribeOptions::default())
            .await
            .unwrap_or_else(|e| panic!("unsubscribe: subscribing failed: {e}"));
        let kept = self.subscribe(&*(self.make)(), &t, &staying, None).await;
        let publisher = (self.make)();
        self.until_live(&*publisher, &t, &[&leaving, &staying])
            .await;

        // Publish steadily while the subscriber leaves.
        let running = Arc::new(AtomicBool::new(true));
        let published = Arc::new(AtomicUsize::new(0));
        let background = {
            let (publisher, t, running, published) = (
                publisher.clone(),
                t.clone(),
                running.clone(),
                published.clone(),
            );
            let deadline = self.deadline;
            tokio::spawn(async move {
                let mut i = 0;
                while running.load(Ordering::SeqCst) {
                    let until = Instant::now() + deadline;
                    loop {
                        match publisher.publish(&t, numbered(i)).await {
                            Ok(()) => break,
                            Err(e) if e.code() == 503 && Instant::now() < until => {
                                tokio::time::sleep(Duration::from_millis(5)).await;
                            }
                            Err(e) => panic!("unsubscribe: publishing failed: {e}"),
                        }
                    }
                    i += 1;
                    published.store(i as usize, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
        };
        self.wait_for("unsubscribe: receiving before leaving", || {
            leaving.count() >= 10
        })
        .await;
        sub.unsubscribe()
            .await
            .unwrap_or_else(|e| panic!("unsubscribe failed: {e}"));
        stopped.store(true, Ordering::SeqCst);
        let count_at_stop = leaving.count();
        let after = published.load(Ordering::SeqCst);
        self.wait_for("unsubscribe: publishing 20 more messages", || {
            published.load(Ordering::SeqCst) >= after + 20
        })
        .await;
        self.grace().await;
        running.store(false, Ordering::SeqCst);
        background
            .await
            .unwrap_or_else(|e| panic!("unsubscribe: the publisher task failed: {e}"));
        let total = published.load(Ordering::SeqCst);
        self.wait_for(
            format!("unsubscribe: the remaining subscriber receiving all {total} messages"),
            || staying.count() >= total,
        )
        .await;
        assert_eq!(
            late.load(Ordering::SeqCst),
            0,
            "unsubscribe: the handler ran after unsubscribe returned"
        );
        assert_eq!(
            leaving.count(),
            count_at_stop,
            "unsubscribe: deliveries continued after unsubscribe returned"
        );
        self.end(vec![kept]).await;
    }

    /// A large message with a binary body arrives whole, to broadcast subscribers
    /// and queue groups alike.
    pub async fn large_messages(&self) {
        let t = topic("large");
        let everyone = Recorder::default();
        let member = Recorder::default();
        let subs = vec![
            self.subscribe(&*(self.make)(), &t, &everyone, None).await,
            self.subscribe(&*(self.make)(), &t, &member, Some("big"))
                .await,
        ];
        let publisher = (self.make)();
        self.until_live(&*publisher, &t, &[&everyone, &member])
            .await;
        let mut state: u32 = 0x9e37_79b9;
        let bodies: Vec<Bytes> = (0..3u8)
            .map(|k| {
                (0..self.large)
                    .map(|_| {
                        state ^= state << 13;
                        state ^= state >> 17;
                        state ^= state << 5;
                        (state as u8) ^ k
                    })
                    .collect::<Vec<u8>>()
                    .into()
            })
            .collect();
        for (i, body) in bodies.iter().enumerate() {
            let mut m = Message::new(body.clone()).header(SEQ, i.to_string());
            m = m.header(HEADER_ID, format!("large-{i}"));
            self.publish(&*publisher, &t, m).await;
        }
        for (name, r) in [("broadcast", &everyone), ("queue", &member)] {
            self.wait_for(
                format!("large messages: {name} subscriber receiving 3"),
                || r.count() >= 3,
            )
            .await;
            let mut got = r.messages();
            got.sort_by_key(seq);
            for (i, m) in got.iter().enumerate() {
                assert!(
                    m.body == bodies[i],
                    "large messages: {name} subscriber got message {i} altered ({} bytes, sent {})",
                    m.body.len(),
                    bodies[i].len()
                );
            }
        }
        self.end(subs).await;
    }

    /// Headers arrive as published (the broker may add its own).
    pub async fn headers_round_trip(&self) {
        let t = topic("headers");
        let r = Recorder::default();
        let subs = vec![self.subscribe(&*(self.make)(), &t, &r, None).await];
        let publisher = (self.make)();
        self.until_live(&*publisher, &t, &[&r]).await;
        let sent = Message::new(r#"{"name":"John"}"#)
            .header(HEADER_ID, "headers-1")
            .header(super::HEADER_CONTENT_TYPE, "application/json")
            .header(super::HEADER_FROM, "greeter")
            .header("x-trace-id", "4bf92f3577b34da6a3ce929d0e0e4736")
            .header("x-unicode", "grüße, 世界 ✓")
            .header("x-empty", "")
            .header("x-long", "v".repeat(4096));
        self.publish(&*publisher, &t, sent.clone()).await;
        self.wait_for("headers: receiving the message", || r.count() >= 1)
            .await;
        let got = &r.messages()[0];
        assert_eq!(got.body, sent.body, "headers: the body changed");
        for (k, v) in &sent.headers {
            assert_eq!(
                got.headers.get(k),
                Some(v),
                "headers: header {k:?} did not survive"
            );
        }
        self.end(subs).await;
    }

    /// Bad input gets a clear 400 and breaks nothing: invalid topic names, a handler
    /// that fails, bodies that are not UTF-8 and headers with odd characters.
    pub async fn bad_input(&self) {
        let broker = (self.make)();
        for bad in [
            "",
            "has space",
            "wild.*",
            "wild.>",
            "tab\there",
            "new\nline",
        ] {
            let code = |r: Result<(), Error>| r.err().map(|e| e.code());
            let published = code(broker.publish(bad, Message::new("x")).await);
            assert_eq!(
                published,
                Some(400),
                "bad input: publishing on {bad:?} must be a 400 error"
            );
            let subscribed = broker
                .subscribe(
                    bad,
                    handler(|_| async { Ok(()) }),
                    SubscribeOptions::default(),
                )
                .await
                .map(|_| ());
            assert_eq!(
                code(subscribed),
                Some(400),
                "bad input: subscribing to {bad:?} must be a 400 error"
            );
        }

        // A handler that fails does not stop later deliveries.
        let t = topic("failing");
        let seen = Recorder::default();
        let failing = {
            let seen = seen.clone();
            handler(move |d| {
                let fail =
                    !d.message.headers.contains_key(PROBE) && seq(&d.message).is_multiple_of(2);
                seen.record(&d.topic, d.message);
                async move {
                    if fail {
                        Err(Error::internal_server_error(
                            "conformance",
                            "failing on purpose",
                        ))
                    } else {
                        Ok(())
                    }
                }
            })
        };
        let sub = (self.make)()
            .subscribe(&t, failing, SubscribeOptions::default())
            .await
            .unwrap_or_else(|e| panic!("bad input: subscribing failed: {e}"));
        let publisher = (self.make)();
        self.until_live(&*publisher, &t, &[&seen]).await;
        for i in 0..10 {
            self.publish(&*publisher, &t, numbered(i)).await;
        }
        self.wait_for(
            format!(
                "bad input: a failing handler getting all 10 messages (has {})",
                seen.count()
            ),
            || seen.count() >= 10,
        )
        .await;
        self.end(vec![sub]).await;

        // Bodies that are not UTF-8 and odd headers survive.
        let t = topic("odd");
        let r = Recorder::default();
        let subs = vec![self.subscribe(&*(self.make)(), &t, &r, None).await];
        self.until_live(&*publisher, &t, &[&r]).await;
        let odd = Message::new(vec![0xff, 0xfe, 0x00, 0x80, 0xc3, 0x28])
            .header(HEADER_ID, "odd-1")
            .header("odd key with spaces", "value")
            .header("ключ", "значение")
            .header("a:b=c", "x")
            .header("x-newline", "line 1\nline 2\r\n")
            .header("x-tab", "a\tb")
            .header("x-quotes", "\"'\\");
        self.publish(&*publisher, &t, odd.clone()).await;
        let empty = Message::new(Bytes::new()).header(HEADER_ID, "odd-2");
        self.publish(&*publisher, &t, empty.clone()).await;
        self.wait_for("bad input: receiving odd messages", || r.count() >= 2)
            .await;
        let got = r.messages();
        let first = got
            .iter()
            .find(|m| m.id() == Some("odd-1"))
            .unwrap_or_else(|| panic!("bad input: the non-UTF-8 message was lost"));
        assert_eq!(first.body, odd.body, "bad input: a non-UTF-8 body changed");
        for (k, v) in &odd.headers {
            assert_eq!(
                first.headers.get(k),
                Some(v),
                "bad input: odd header {k:?} did not survive"
            );
        }
        let second = got
            .iter()
            .find(|m| m.id() == Some("odd-2"))
            .unwrap_or_else(|| panic!("bad input: the empty message was lost"));
        assert!(second.body.is_empty(), "bad input: an empty body changed");
        self.end(subs).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::MemoryBroker;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn memory_broker_conforms() {
        let broker = MemoryBroker::new();
        run_all(move || Arc::new(broker.clone()) as Arc<dyn Broker>).await;
    }
}
