//! A small, fast metrics registry and its Prometheus text encoder (exposition format
//! 0.0.4).
//!
//! Every series is a handle of plain atomics, found once per label set and kept: the
//! server resolves its endpoint's handle once per route, the client and the broker
//! points look theirs up in copy-on-write maps (`ArcSwap`, no lock on the read
//! path). Recording is a few relaxed atomic adds; all formatting happens when
//! `/metrics` is scraped.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use arc_swap::ArcSwap;

/// The default latency buckets, in seconds (the `buckets` key's default).
#[cfg(test)]
pub(super) const DEFAULT_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A latency histogram: a count per bucket (not cumulative; summed when encoded),
/// and the sum in nanoseconds.
#[derive(Debug)]
pub(super) struct Histogram {
    /// Upper bounds in nanoseconds, ascending.
    bounds_ns: Arc<[u64]>,
    /// One per bound, then the `+Inf` bucket.
    counts: Box<[AtomicU64]>,
    sum_ns: AtomicU64,
}

impl Histogram {
    fn new(bounds_ns: Arc<[u64]>) -> Self {
        let counts = (0..=bounds_ns.len()).map(|_| AtomicU64::new(0)).collect();
        Histogram {
            bounds_ns,
            counts,
            sum_ns: AtomicU64::new(0),
        }
    }

    /// Records one observation.
    pub(super) fn observe(&self, elapsed: Duration) {
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        // `le` buckets: the first bound >= the value.
        let index = self.bounds_ns.partition_point(|&bound| bound < ns);
        if let Some(count) = self.counts.get(index) {
            count.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Cumulative bucket counts (the last is `+Inf`, which is also the count) and
    /// the sum in seconds.
    fn snapshot(&self) -> (Vec<u64>, f64) {
        let mut total = 0;
        let cumulative = self
            .counts
            .iter()
            .map(|c| {
                total += c.load(Ordering::Relaxed);
                total
            })
            .collect();
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        (cumulative, sum)
    }
}

/// Counters by status code; 200 has its own atomic so that success takes no lock.
#[derive(Debug, Default)]
pub(super) struct Codes {
    ok: AtomicU64,
    others: RwLock<Vec<(u16, Arc<AtomicU64>)>>,
}

impl Codes {
    pub(super) fn inc(&self, code: u16) {
        if code == 200 {
            self.ok.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let found = match self.others.read() {
            Ok(others) => others
                .iter()
                .find(|(c, _)| *c == code)
                .map(|(_, n)| n.clone()),
            Err(_) => return,
        };
        let counter = match found {
            Some(counter) => counter,
            None => {
                let Ok(mut others) = self.others.write() else {
                    return;
                };
                match others.iter().find(|(c, _)| *c == code) {
                    Some((_, n)) => n.clone(),
                    None => {
                        let n = Arc::new(AtomicU64::new(0));
                        others.push((code, n.clone()));
                        n
                    }
                }
            }
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// `(code, count)`, ascending by code, only codes seen.
    fn snapshot(&self) -> Vec<(u16, u64)> {
        let mut out = Vec::new();
        let ok = self.ok.load(Ordering::Relaxed);
        if ok > 0 {
            out.push((200, ok));
        }
        if let Ok(others) = self.others.read() {
            out.extend(others.iter().map(|(c, n)| (*c, n.load(Ordering::Relaxed))));
        }
        out.sort_unstable();
        out
    }
}

/// The series of one endpoint a server serves.
#[derive(Debug)]
pub(super) struct ServerSeries {
    pub(super) endpoint: Box<str>,
    pub(super) in_flight: AtomicI64,
    pub(super) codes: Codes,
    pub(super) duration: Histogram,
}

/// The series of calls to one endpoint of one target service.
#[derive(Debug)]
pub(super) struct ClientSeries {
    pub(super) codes: Codes,
    pub(super) duration: Histogram,
}

/// The series of one topic (subscriber or publisher).
#[derive(Debug)]
pub(super) struct TopicSeries {
    pub(super) ok: AtomicU64,
    pub(super) error: AtomicU64,
    pub(super) duration: Histogram,
}

impl TopicSeries {
    pub(super) fn record(&self, ok: bool, elapsed: Duration) {
        if ok {
            self.ok.fetch_add(1, Ordering::Relaxed);
        } else {
            self.error.fetch_add(1, Ordering::Relaxed);
        }
        self.duration.observe(elapsed);
    }
}

/// A string-keyed map of series, read without a lock; inserts copy the map (they
/// happen once per label set).
struct Table<T> {
    map: ArcSwap<HashMap<Box<str>, Arc<T>>>,
    insert: Mutex<()>,
}

impl<T> std::fmt::Debug for Table<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("len", &self.map.load().len())
            .finish()
    }
}

impl<T> Default for Table<T> {
    fn default() -> Self {
        Table {
            map: ArcSwap::from_pointee(HashMap::new()),
            insert: Mutex::new(()),
        }
    }
}

impl<T> Table<T> {
    fn get_or_insert(&self, key: &str, make: impl FnOnce() -> T) -> Arc<T> {
        if let Some(found) = self.map.load().get(key) {
            return found.clone();
        }
        let _writer = self.insert.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.map.load_full();
        if let Some(found) = current.get(key) {
            return found.clone();
        }
        let value = Arc::new(make());
        let mut next = HashMap::clone(&current);
        next.insert(key.into(), value.clone());
        self.map.store(Arc::new(next));
        value
    }

    /// Entries sorted by key.
    fn sorted(&self) -> Vec<(Box<str>, Arc<T>)> {
        let map = self.map.load_full();
        let mut entries: Vec<_> = map.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        entries
    }
}

/// Every series of one service.
#[derive(Debug)]
pub(super) struct Registry {
    service: Box<str>,
    bounds: Arc<[f64]>,
    bounds_ns: Arc<[u64]>,
    server: Table<ServerSeries>,
    /// target -> endpoint -> series.
    client: Table<Table<ClientSeries>>,
    subscriber: Table<TopicSeries>,
    publisher: Table<TopicSeries>,
}

impl Registry {
    /// A registry for `service` with histogram `buckets` (seconds, ascending).
    pub(super) fn new(service: &str, buckets: &[f64]) -> Self {
        let bounds_ns = buckets
            .iter()
            .map(|&s| {
                Duration::from_secs_f64(s)
                    .as_nanos()
                    .min(u128::from(u64::MAX)) as u64
            })
            .collect();
        Registry {
            service: service.into(),
            bounds: buckets.into(),
            bounds_ns,
            server: Table::default(),
            client: Table::default(),
            subscriber: Table::default(),
            publisher: Table::default(),
        }
    }

    fn histogram(&self) -> Histogram {
        Histogram::new(self.bounds_ns.clone())
    }

    pub(super) fn server(&self, endpoint: &str) -> Arc<ServerSeries> {
        self.server.get_or_insert(endpoint, || ServerSeries {
            endpoint: endpoint.into(),
            in_flight: AtomicI64::new(0),
            codes: Codes::default(),
            duration: self.histogram(),
        })
    }

    pub(super) fn client(&self, target: &str, endpoint: &str) -> Arc<ClientSeries> {
        self.client
            .get_or_insert(target, Table::default)
            .get_or_insert(endpoint, || ClientSeries {
                codes: Codes::default(),
                duration: self.histogram(),
            })
    }

    fn topic(&self) -> TopicSeries {
        TopicSeries {
            ok: AtomicU64::new(0),
            error: AtomicU64::new(0),
            duration: self.histogram(),
        }
    }

    pub(super) fn subscriber(&self, topic: &str) -> Arc<TopicSeries> {
        self.subscriber.get_or_insert(topic, || self.topic())
    }

    pub(super) fn publisher(&self, topic: &str) -> Arc<TopicSeries> {
        self.publisher.get_or_insert(topic, || self.topic())
    }

    /// Every series in the Prometheus text format 0.0.4.
    pub(super) fn encode(&self) -> String {
        let mut out = Text::default();
        let service = escape_label(&self.service);

        let server = self.server.sorted();
        out.family(
            "micro_server_requests_total",
            "counter",
            "Requests handled, by endpoint and status code (200: success).",
            server.iter().flat_map(|(_, s)| {
                let endpoint = escape_label(&s.endpoint);
                let service = &service;
                s.codes.snapshot().into_iter().map(move |(code, n)| {
                    (
                        format!("service=\"{service}\",endpoint=\"{endpoint}\",code=\"{code}\""),
                        n.to_string(),
                    )
                })
            }),
        );
        out.histogram(
            "micro_server_request_duration_seconds",
            "Time handlers took to answer, by endpoint.",
            &self.bounds,
            server.iter().map(|(_, s)| {
                (
                    format!(
                        "service=\"{service}\",endpoint=\"{}\"",
                        escape_label(&s.endpoint)
                    ),
                    &s.duration,
                )
            }),
        );
        out.family(
            "micro_server_requests_in_flight",
            "gauge",
            "Requests being handled now, by endpoint.",
            server.iter().map(|(_, s)| {
                (
                    format!(
                        "service=\"{service}\",endpoint=\"{}\"",
                        escape_label(&s.endpoint)
                    ),
                    s.in_flight.load(Ordering::Relaxed).to_string(),
                )
            }),
        );

        let mut client = Vec::new();
        for (target, endpoints) in self.client.sorted() {
            for (endpoint, series) in endpoints.sorted() {
                let labels = format!(
                    "service=\"{service}\",target=\"{}\",endpoint=\"{}\"",
                    escape_label(&target),
                    escape_label(&endpoint)
                );
                client.push((labels, series));
            }
        }
        out.family(
            "micro_client_requests_total",
            "counter",
            "Call attempts made, by target service, endpoint and status code (200: success).",
            client.iter().flat_map(|(labels, s)| {
                s.codes
                    .snapshot()
                    .into_iter()
                    .map(move |(code, n)| (format!("{labels},code=\"{code}\""), n.to_string()))
            }),
        );
        out.histogram(
            "micro_client_request_duration_seconds",
            "Time call attempts took, by target service and endpoint.",
            &self.bounds,
            client
                .iter()
                .map(|(labels, s)| (labels.clone(), &s.duration)),
        );

        for (table, total, duration, what) in [
            (
                &self.subscriber,
                "micro_subscriber_messages_total",
                "micro_subscriber_message_duration_seconds",
                "Messages handled by subscribers",
            ),
            (
                &self.publisher,
                "micro_publisher_messages_total",
                "micro_publisher_message_duration_seconds",
                "Messages published",
            ),
        ] {
            let topics: Vec<_> = table
                .sorted()
                .into_iter()
                .map(|(topic, s)| {
                    (
                        format!("service=\"{service}\",topic=\"{}\"", escape_label(&topic)),
                        s,
                    )
                })
                .collect();
            out.family(
                total,
                "counter",
                &format!("{what}, by topic and result (ok or error)."),
                topics.iter().flat_map(|(labels, s)| {
                    [("ok", &s.ok), ("error", &s.error)]
                        .into_iter()
                        .map(move |(result, n)| {
                            (
                                format!("{labels},result=\"{result}\""),
                                n.load(Ordering::Relaxed).to_string(),
                            )
                        })
                }),
            );
            out.histogram(
                duration,
                &format!("Time it took: {}, by topic.", what.to_lowercase()),
                &self.bounds,
                topics
                    .iter()
                    .map(|(labels, s)| (labels.clone(), &s.duration)),
            );
        }
        out.0
    }
}

/// The text being written.
#[derive(Default)]
struct Text(String);

impl Text {
    /// A family of plain samples; nothing when there are none.
    fn family(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        samples: impl IntoIterator<Item = (String, String)>,
    ) {
        let mut samples = samples.into_iter().peekable();
        if samples.peek().is_none() {
            return;
        }
        self.header(name, kind, help);
        for (labels, value) in samples {
            let _ = writeln!(self.0, "{name}{{{labels}}} {value}");
        }
    }

    /// A family of histograms; nothing when there are none.
    fn histogram<'a>(
        &mut self,
        name: &str,
        help: &str,
        bounds: &[f64],
        series: impl IntoIterator<Item = (String, &'a Histogram)>,
    ) {
        let mut series = series.into_iter().peekable();
        if series.peek().is_none() {
            return;
        }
        self.header(name, "histogram", help);
        for (labels, histogram) in series {
            let (cumulative, sum) = histogram.snapshot();
            for (i, count) in cumulative.iter().enumerate() {
                match bounds.get(i) {
                    Some(bound) => {
                        let _ = writeln!(
                            self.0,
                            "{name}_bucket{{{labels},le=\"{}\"}} {count}",
                            float(*bound)
                        );
                    }
                    None => {
                        let _ = writeln!(self.0, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
                    }
                }
            }
            let count = cumulative.last().copied().unwrap_or(0);
            let _ = writeln!(self.0, "{name}_sum{{{labels}}} {}", float(sum));
            let _ = writeln!(self.0, "{name}_count{{{labels}}} {count}");
        }
    }

    fn header(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }
}

/// A float as Prometheus reads it (`0.0005`, `10`, `+Inf`).
fn float(value: f64) -> String {
    if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else if value.is_nan() {
        "NaN".to_string()
    } else {
        format!("{value}")
    }
}

/// A label value escaped for the text format: `\` `"` and newline.
pub(super) fn escape_label(value: &str) -> std::borrow::Cow<'_, str> {
    if !value.contains(['\\', '"', '\n']) {
        return value.into();
    }
    let mut out = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.into()
}

/// HELP text escaped for the text format: `\` and newline.
fn escape_help(value: &str) -> String {
    value.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_le_and_cumulative() {
        let r = Registry::new("s", &[0.001, 0.01]);
        let h = r.server("E.M");
        for ms in [0.5, 1.0, 5.0, 10.0, 20.0] {
            h.duration.observe(Duration::from_secs_f64(ms / 1000.0));
        }
        let (cumulative, sum) = h.duration.snapshot();
        assert_eq!(cumulative, [2, 4, 5]);
        assert!((sum - 0.0365).abs() < 1e-9, "{sum}");
    }

    #[test]
    fn escaping_follows_the_exposition_format() {
        assert_eq!(escape_label("plain"), "plain");
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(escape_help("x\\y\nz"), "x\\\\y\\nz");
        assert_eq!(float(0.0005), "0.0005");
        assert_eq!(float(10.0), "10");
        assert_eq!(float(f64::INFINITY), "+Inf");
    }

    #[test]
    fn codes_count_each_code() {
        let codes = Codes::default();
        for code in [200, 200, 404, 500, 404] {
            codes.inc(code);
        }
        assert_eq!(codes.snapshot(), [(200, 2), (404, 2), (500, 1)]);
    }

    #[test]
    fn the_text_lists_each_family_once() {
        let r = Registry::new("s\"1", &[0.1]);
        r.server("A.B").codes.inc(200);
        r.server("A.C").codes.inc(503);
        r.client("t", "T.X").codes.inc(200);
        r.subscriber("topic")
            .record(false, Duration::from_millis(1));
        r.publisher("topic").record(true, Duration::from_millis(1));
        let text = r.encode();
        assert_eq!(
            text.matches("# TYPE micro_server_requests_total counter")
                .count(),
            1
        );
        assert!(text.contains(
            "micro_server_requests_total{service=\"s\\\"1\",endpoint=\"A.C\",code=\"503\"} 1\n"
        ));
        assert!(text.contains(
            "micro_client_requests_total{service=\"s\\\"1\",target=\"t\",endpoint=\"T.X\",code=\"200\"} 1\n"
        ));
        assert!(text.contains(
            "micro_subscriber_messages_total{service=\"s\\\"1\",topic=\"topic\",result=\"error\"} 1\n"
        ));
        assert!(text.contains(
            "micro_publisher_messages_total{service=\"s\\\"1\",topic=\"topic\",result=\"ok\"} 1\n"
        ));
        assert!(text.contains("# TYPE micro_publisher_message_duration_seconds histogram\n"));
    }
}
