//! Measuring: 1 KiB messages carrying their send time, a window of messages in
//! flight, and an HDR histogram of publish-to-delivery latency.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use bytes::{BufMut, Bytes, BytesMut};
use hdrhistogram::Histogram;
use tokio::runtime::Runtime;
use tokio::sync::Semaphore;

/// The size of every message body.
pub const SIZE: usize = 1024;

/// The two sides of a run: publishers on one runtime, subscribers on the other,
/// one worker thread each.
#[derive(Debug)]
pub struct Runtimes {
    pub publishers: Runtime,
    pub subscribers: Runtime,
}

impl Runtimes {
    pub fn new() -> Result<Self> {
        Ok(Runtimes {
            publishers: bench_common::runtime("publishers")?,
            subscribers: bench_common::runtime("subscribers")?,
        })
    }
}

/// What subscribers report to: latency, count, and the window of messages in
/// flight the publishers wait on.
#[derive(Debug)]
pub struct Recorder {
    base: Instant,
    window: Arc<Semaphore>,
    received: AtomicU64,
    last_ns: AtomicU64,
    malformed: AtomicU64,
    /// Sequence numbers (message ids) are unique over the whole run: JetStream
    /// drops a message whose id it stored in the last two minutes.
    next_seq: AtomicU64,
    histogram: Mutex<Histogram<u64>>,
}

impl Recorder {
    pub fn new() -> Result<Arc<Self>> {
        Ok(Arc::new(Recorder {
            base: Instant::now(),
            window: Arc::new(Semaphore::new(0)),
            received: AtomicU64::new(0),
            last_ns: AtomicU64::new(0),
            malformed: AtomicU64::new(0),
            next_seq: AtomicU64::new(0),
            histogram: Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3)?),
        }))
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// A message body: send time and sequence number, padded to [`SIZE`].
    pub fn body(&self, seq: u64) -> Bytes {
        let mut body = BytesMut::with_capacity(SIZE);
        body.put_u64_le(self.now_ns());
        body.put_u64_le(seq);
        body.resize(SIZE, b'x');
        body.freeze()
    }

    /// A subscriber got `body`.
    pub fn delivered(&self, body: &[u8]) {
        let now = self.now_ns();
        if body.len() != SIZE {
            self.malformed.fetch_add(1, Ordering::Relaxed);
        } else {
            let mut sent = [0u8; 8];
            sent.copy_from_slice(&body[..8]);
            let micros = now.saturating_sub(u64::from_le_bytes(sent)) / 1000;
            let mut h = self.histogram.lock().unwrap_or_else(|p| p.into_inner());
            h.saturating_record(micros.max(1));
        }
        self.last_ns.store(now, Ordering::Relaxed);
        self.received.fetch_add(1, Ordering::Release);
        self.window.add_permits(1);
    }

    /// Starts a phase with `window` messages allowed in flight; call only when
    /// every message of the previous phase has been delivered.
    fn reset(&self, window: usize) {
        // Every message of the last phase was delivered, so all its permits are
        // back (and redeliveries may have added strays): set the count to `window`.
        let available = self.window.available_permits();
        if available > window {
            let extra = u32::try_from(available - window).unwrap_or(u32::MAX);
            if let Ok(p) = self.window.try_acquire_many(extra) {
                p.forget();
            }
        } else {
            self.window.add_permits(window - available);
        }
        self.received.store(0, Ordering::Release);
        self.malformed.store(0, Ordering::Relaxed);
        self.histogram
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .reset();
    }
}

/// Publishes one body (with its sequence number) through the system under test.
pub type PublishFn =
    Arc<dyn Fn(Bytes, u64) -> futures_util::future::BoxFuture<'static, Result<()>> + Send + Sync>;

/// The outcome of one phase.
#[derive(Debug, Clone)]
pub struct Phase {
    pub published: u64,
    pub elapsed: Duration,
    pub histogram: Histogram<u64>,
    pub publish_errors: u64,
    /// CPU time (user + system) the bench process and the nats-server spent.
    pub cpu: Duration,
}

/// CPU time (user + system) of process `pid` (`self` for this one) so far, from
/// `/proc` (Linux; zero elsewhere).
pub fn cpu_time(pid: &str) -> Duration {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Duration::ZERO;
    };
    // Fields after the command name, which is in parentheses and may hold spaces.
    let Some(rest) = stat.rsplit_once(')').map(|(_, rest)| rest) else {
        return Duration::ZERO;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let total = ticks(11) + ticks(12);
    // USER_HZ is 100 on every Linux this runs on.
    Duration::from_millis(total * 10)
}

/// Publishes for `duration` from `publishers` tasks with at most `window`
/// messages in flight, then waits until all are delivered.
pub fn run_phase(
    rts: &Runtimes,
    server_pid: Option<u32>,
    recorder: &Arc<Recorder>,
    publish: &PublishFn,
    publishers: usize,
    window: usize,
    duration: Duration,
) -> Result<Phase> {
    recorder.reset(window);
    let server = server_pid.map(|p| p.to_string());
    let cpu = || cpu_time("self") + server.as_deref().map_or(Duration::ZERO, cpu_time);
    let cpu_before = cpu();
    let start = recorder.now_ns();
    let deadline = Instant::now() + duration;
    let published = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..publishers)
        .map(|_| {
            let recorder = recorder.clone();
            let publish = publish.clone();
            let published = published.clone();
            let errors = errors.clone();
            rts.publishers.spawn(async move {
                while Instant::now() < deadline {
                    let permit = recorder.window.clone().acquire_owned().await?;
                    permit.forget();
                    let n = recorder.next_seq.fetch_add(1, Ordering::Relaxed);
                    published.fetch_add(1, Ordering::Relaxed);
                    let body = recorder.body(n);
                    let give_up = Instant::now() + Duration::from_secs(10);
                    while let Err(e) = publish(body.clone(), n).await {
                        errors.fetch_add(1, Ordering::Relaxed);
                        if Instant::now() > give_up {
                            return Err(e.context(format!("publish {n}")));
                        }
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
                anyhow::Ok(())
            })
        })
        .collect();
    rts.publishers.block_on(async {
        for t in tasks {
            t.await??;
        }
        anyhow::Ok(())
    })?;
    let published = published.load(Ordering::Relaxed);
    let wait_until = Instant::now() + Duration::from_secs(30);
    while recorder.received.load(Ordering::Acquire) < published {
        if Instant::now() > wait_until {
            bail!(
                "only {} of {published} messages delivered",
                recorder.received.load(Ordering::Acquire)
            );
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let cpu_used = cpu().saturating_sub(cpu_before);
    let malformed = recorder.malformed.load(Ordering::Relaxed);
    if malformed > 0 {
        bail!("{malformed} deliveries were not the {SIZE}-byte message published");
    }
    let last = recorder.last_ns.load(Ordering::Relaxed);
    Ok(Phase {
        published,
        elapsed: Duration::from_nanos(last.saturating_sub(start).max(1)),
        histogram: recorder
            .histogram
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone(),
        publish_errors: errors.load(Ordering::Relaxed),
        cpu: cpu_used,
    })
}
