//! The in-process store of finished spans: a bounded ring (oldest dropped first),
//! read as traces, for `GET /debug/traces` and the web dashboard.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use serde_json::{json, Value};

use super::context::TraceId;
use super::span::SpanData;

/// A bounded store of the most recent finished spans of one tracer.
///
/// ```
/// use micro::wrapper::trace::{Ring, TraceQuery};
///
/// let ring = Ring::new(1000);
/// assert_eq!(ring.capacity(), 1000);
/// assert!(ring.traces(&TraceQuery::default()).is_empty());
/// ```
#[derive(Clone)]
pub struct Ring {
    inner: Arc<RingInner>,
}

struct RingInner {
    capacity: usize,
    spans: Mutex<VecDeque<SpanData>>,
    evicted: AtomicU64,
}

impl fmt::Debug for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("capacity", &self.inner.capacity)
            .field("len", &self.len())
            .finish()
    }
}

/// Every live ring of the process, for [`recent_traces`].
static RINGS: Mutex<Vec<Weak<RingInner>>> = Mutex::new(Vec::new());

impl Ring {
    /// A ring that keeps the last `capacity` spans (0: keeps none).
    pub fn new(capacity: usize) -> Self {
        let inner = Arc::new(RingInner {
            capacity,
            spans: Mutex::new(VecDeque::with_capacity(capacity.min(1024))),
            evicted: AtomicU64::new(0),
        });
        if let Ok(mut rings) = RINGS.lock() {
            rings.retain(|r| r.strong_count() > 0);
            rings.push(Arc::downgrade(&inner));
        }
        Ring { inner }
    }

    /// How many spans it keeps at most.
    pub fn capacity(&self) -> usize {
        self.inner.capacity
    }

    /// How many spans it holds.
    pub fn len(&self) -> usize {
        self.inner.spans.lock().map(|s| s.len()).unwrap_or(0)
    }

    /// Whether it holds no span.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many spans were pushed out to make room.
    pub fn evicted(&self) -> u64 {
        self.inner.evicted.load(Ordering::Relaxed)
    }

    /// Adds a finished span, dropping the oldest when full.
    pub fn push(&self, span: SpanData) {
        if self.inner.capacity == 0 {
            return;
        }
        let Ok(mut spans) = self.inner.spans.lock() else {
            return;
        };
        if spans.len() >= self.inner.capacity {
            spans.pop_front();
            self.inner.evicted.fetch_add(1, Ordering::Relaxed);
        }
        spans.push_back(span);
    }

    /// The spans held, oldest first.
    pub fn spans(&self) -> Vec<SpanData> {
        self.inner
            .spans
            .lock()
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The spans held, grouped into traces, newest first.
    pub fn traces(&self, query: &TraceQuery) -> Vec<Trace> {
        group(self.matching(query), query)
    }

    fn matching(&self, query: &TraceQuery) -> Vec<SpanData> {
        let Ok(spans) = self.inner.spans.lock() else {
            return Vec::new();
        };
        spans
            .iter()
            .filter(|s| query.trace_id.is_none_or(|t| s.trace_id == t))
            .cloned()
            .collect()
    }
}

/// The recent traces of every tracer in this process (every service running in
/// it with the `trace` wrapper), newest first: spans of one trace recorded by
/// different services come together.
pub fn recent_traces(query: &TraceQuery) -> Vec<Trace> {
    let rings: Vec<Ring> = RINGS
        .lock()
        .map(|rings| {
            rings
                .iter()
                .filter_map(Weak::upgrade)
                .map(|inner| Ring { inner })
                .collect()
        })
        .unwrap_or_default();
    let spans = rings.iter().flat_map(|r| r.matching(query)).collect();
    group(spans, query)
}

/// Which traces to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceQuery {
    /// Only this trace.
    pub trace_id: Option<TraceId>,
    /// Only traces with a span of this service.
    pub service: Option<String>,
    /// At most this many traces (the newest).
    pub limit: usize,
}

impl Default for TraceQuery {
    fn default() -> Self {
        TraceQuery {
            trace_id: None,
            service: None,
            limit: 100,
        }
    }
}

impl TraceQuery {
    /// Reads `trace_id=..&service=..&limit=..` (the query of `GET /debug/traces`).
    pub fn from_query_string(query: &str) -> Result<Self, String> {
        let mut q = TraceQuery::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "trace_id" => {
                    q.trace_id = Some(value.parse().map_err(|_| {
                        format!("trace_id={value:?}: expected 32 lower-case hex digits")
                    })?)
                }
                "service" => q.service = Some(value.to_string()).filter(|s| !s.is_empty()),
                "limit" => {
                    q.limit = value
                        .parse()
                        .map_err(|_| format!("limit={value:?}: expected a number"))?
                }
                _ => {}
            }
        }
        Ok(q)
    }
}

/// The spans of one trace, by start time.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    /// The trace id.
    pub trace_id: TraceId,
    /// Its spans, earliest start first.
    pub spans: Vec<SpanData>,
}

impl Trace {
    /// The span with no parent among the spans held (the earliest such, or the
    /// earliest span when the root is not here).
    pub fn root(&self) -> Option<&SpanData> {
        self.spans
            .iter()
            .find(|s| {
                s.parent_span_id
                    .is_none_or(|p| !self.spans.iter().any(|o| o.span_id == p))
            })
            .or(self.spans.first())
    }

    /// Earliest start, nanoseconds since the Unix epoch.
    pub fn start_unix_nanos(&self) -> u64 {
        self.spans
            .iter()
            .map(|s| s.start_unix_nanos)
            .min()
            .unwrap_or(0)
    }

    /// Latest end, nanoseconds since the Unix epoch.
    pub fn end_unix_nanos(&self) -> u64 {
        self.spans
            .iter()
            .map(|s| s.end_unix_nanos)
            .max()
            .unwrap_or(0)
    }

    /// The trace as the JSON of `GET /debug/traces`.
    pub fn to_json(&self) -> Value {
        let mut services: Vec<&str> = self.spans.iter().map(|s| s.service.as_ref()).collect();
        services.sort_unstable();
        services.dedup();
        json!({
            "trace_id": self.trace_id.to_string(),
            "root": self.root().map(|s| s.name.as_ref()),
            "services": services,
            "start_time_unix_nano": self.start_unix_nanos().to_string(),
            "duration_ns": self.end_unix_nanos().saturating_sub(self.start_unix_nanos()),
            "errors": self.spans.iter().filter(|s| s.status.otlp() == 2).count(),
            "spans": self.spans.iter().map(SpanData::to_json).collect::<Vec<_>>(),
        })
    }
}

fn group(spans: Vec<SpanData>, query: &TraceQuery) -> Vec<Trace> {
    let mut by_trace: HashMap<TraceId, Vec<SpanData>> = HashMap::new();
    for span in spans {
        by_trace.entry(span.trace_id).or_default().push(span);
    }
    let mut traces: Vec<Trace> = by_trace
        .into_iter()
        .filter(|(_, spans)| {
            query
                .service
                .as_deref()
                .is_none_or(|svc| spans.iter().any(|s| s.service.as_ref() == svc))
        })
        .map(|(trace_id, mut spans)| {
            spans.sort_by_key(|s| (s.start_unix_nanos, s.end_unix_nanos));
            Trace { trace_id, spans }
        })
        .collect();
    traces.sort_by_key(|t| std::cmp::Reverse(t.end_unix_nanos()));
    traces.truncate(query.limit);
    traces
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wrapper::trace::context::{SpanId, TraceContext};
    use crate::wrapper::trace::span::{SpanKind, SpanStatus};

    fn span(ctx: &TraceContext, parent: Option<SpanId>, at: u64) -> SpanData {
        SpanData {
            trace_id: ctx.trace_id,
            span_id: ctx.span_id,
            parent_span_id: parent,
            name: "Echo.Unary".into(),
            kind: SpanKind::Server,
            service: "echo".into(),
            start_unix_nanos: at,
            end_unix_nanos: at + 10,
            attributes: Vec::new(),
            status: SpanStatus::Ok,
        }
    }

    #[test]
    fn the_ring_keeps_the_newest_spans_within_its_bound() {
        let ring = Ring::new(3);
        let ctx = TraceContext::new_root(true);
        let mut ids = Vec::new();
        for at in 0..10 {
            let c = ctx.child();
            ids.push(c.span_id);
            ring.push(span(&c, None, at));
        }
        assert_eq!(ring.len(), 3);
        assert_eq!(ring.evicted(), 7);
        let kept: Vec<_> = ring.spans().iter().map(|s| s.span_id).collect();
        assert_eq!(kept, ids[7..]);
        let none = Ring::new(0);
        none.push(span(&ctx, None, 1));
        assert!(none.is_empty());
    }

    #[test]
    fn traces_are_grouped_newest_first_and_filtered() {
        let ring = Ring::new(100);
        let old = TraceContext::new_root(true);
        let new = TraceContext::new_root(true);
        ring.push(span(&old.child(), Some(old.span_id), 5));
        ring.push(span(&old, None, 1));
        ring.push(span(&new, None, 100));
        let traces = ring.traces(&TraceQuery::default());
        assert_eq!(traces.len(), 2);
        assert_eq!(traces[0].trace_id, new.trace_id);
        assert_eq!(traces[1].spans.len(), 2);
        assert_eq!(traces[1].root().unwrap().span_id, old.span_id);
        assert_eq!(traces[1].spans[0].start_unix_nanos, 1);
        let q = TraceQuery::from_query_string(&format!("trace_id={}", old.trace_id)).unwrap();
        let only = ring.traces(&q);
        assert_eq!(only.len(), 1);
        assert_eq!(only[0].trace_id, old.trace_id);
        let q = TraceQuery::from_query_string("limit=1").unwrap();
        assert_eq!(ring.traces(&q)[0].trace_id, new.trace_id);
        let q = TraceQuery::from_query_string("service=other").unwrap();
        assert!(ring.traces(&q).is_empty());
        assert!(TraceQuery::from_query_string("trace_id=XYZ").is_err());
        assert!(TraceQuery::from_query_string("limit=many").is_err());
        // Other rings of the process are read too.
        let q = TraceQuery {
            trace_id: Some(new.trace_id),
            ..Default::default()
        };
        assert_eq!(recent_traces(&q).len(), 1);
        let json = traces[1].to_json();
        assert_eq!(json["root"], "Echo.Unary");
        assert_eq!(json["spans"][1]["parent_span_id"], old.span_id.to_string());
    }
}
