//! The span model: a small subset of the OpenTelemetry data model, enough to draw
//! a trace and to export it by OTLP.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

use super::context::{SpanId, TraceContext, TraceId};
use super::Sink;

/// What a span stands for (the OpenTelemetry span kinds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpanKind {
    /// Work inside a service.
    Internal,
    /// A handler serving a call.
    Server,
    /// One attempt of a call, on the caller's side.
    Client,
    /// A publish.
    Producer,
    /// A subscriber handling a message.
    Consumer,
}

impl SpanKind {
    /// The OTLP enum value (`SPAN_KIND_SERVER` = 2, …).
    pub fn otlp(self) -> i64 {
        match self {
            SpanKind::Internal => 1,
            SpanKind::Server => 2,
            SpanKind::Client => 3,
            SpanKind::Producer => 4,
            SpanKind::Consumer => 5,
        }
    }

    /// The lower-case name (`server`).
    pub fn as_str(self) -> &'static str {
        match self {
            SpanKind::Internal => "internal",
            SpanKind::Server => "server",
            SpanKind::Client => "client",
            SpanKind::Producer => "producer",
            SpanKind::Consumer => "consumer",
        }
    }
}

/// How a span ended.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SpanStatus {
    /// Not said (a handler's 4xx answer: the caller's fault, not the server's).
    #[default]
    Unset,
    /// Succeeded.
    Ok,
    /// Failed, with the error's detail.
    Error(String),
}

impl SpanStatus {
    /// The OTLP status code (unset 0, ok 1, error 2).
    pub fn otlp(&self) -> i64 {
        match self {
            SpanStatus::Unset => 0,
            SpanStatus::Ok => 1,
            SpanStatus::Error(_) => 2,
        }
    }

    /// `unset`, `ok` or `error`.
    pub fn as_str(&self) -> &'static str {
        match self {
            SpanStatus::Unset => "unset",
            SpanStatus::Ok => "ok",
            SpanStatus::Error(_) => "error",
        }
    }
}

/// The value of a span attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttributeValue {
    /// Text.
    Str(Arc<str>),
    /// A whole number.
    Int(i64),
}

impl AttributeValue {
    fn to_json(&self) -> Value {
        match self {
            AttributeValue::Str(s) => Value::from(s.as_ref()),
            AttributeValue::Int(i) => Value::from(*i),
        }
    }

    /// The OTLP `AnyValue` JSON form (`{"stringValue": ..}` / `{"intValue": ".."}`).
    pub(crate) fn to_otlp(&self) -> Value {
        match self {
            AttributeValue::Str(s) => json!({ "stringValue": s.as_ref() }),
            AttributeValue::Int(i) => json!({ "intValue": i.to_string() }),
        }
    }
}

impl From<&str> for AttributeValue {
    fn from(s: &str) -> Self {
        AttributeValue::Str(s.into())
    }
}
impl From<Arc<str>> for AttributeValue {
    fn from(s: Arc<str>) -> Self {
        AttributeValue::Str(s)
    }
}
impl From<i64> for AttributeValue {
    fn from(i: i64) -> Self {
        AttributeValue::Int(i)
    }
}

/// One finished span.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanData {
    /// The trace it belongs to.
    pub trace_id: TraceId,
    /// Its id.
    pub span_id: SpanId,
    /// The span it is a child of; `None` for the root of a trace.
    pub parent_span_id: Option<SpanId>,
    /// The name: the endpoint (`Greeter.Hello`), or `publish <topic>` /
    /// `process <topic>`.
    pub name: Arc<str>,
    /// What it stands for.
    pub kind: SpanKind,
    /// The service that recorded it.
    pub service: Arc<str>,
    /// Start, nanoseconds since the Unix epoch.
    pub start_unix_nanos: u64,
    /// End, nanoseconds since the Unix epoch.
    pub end_unix_nanos: u64,
    /// Attributes (`rpc.method`, `messaging.destination.name`, …).
    pub attributes: Vec<(&'static str, AttributeValue)>,
    /// How it ended.
    pub status: SpanStatus,
}

impl SpanData {
    /// The value of attribute `key`.
    pub fn attribute(&self, key: &str) -> Option<&AttributeValue> {
        self.attributes
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v)
    }

    /// The text of attribute `key`.
    pub fn attribute_str(&self, key: &str) -> Option<&str> {
        match self.attribute(key)? {
            AttributeValue::Str(s) => Some(s),
            AttributeValue::Int(_) => None,
        }
    }

    /// How long it took, in nanoseconds.
    pub fn duration_nanos(&self) -> u64 {
        self.end_unix_nanos.saturating_sub(self.start_unix_nanos)
    }

    /// The span as the JSON of `GET /debug/traces`. Times are decimal strings
    /// (they do not fit a JavaScript number); the duration is a number.
    pub fn to_json(&self) -> Value {
        let attributes: Map<String, Value> = self
            .attributes
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_json()))
            .collect();
        let mut status = json!({ "code": self.status.as_str() });
        if let SpanStatus::Error(message) = &self.status {
            status["message"] = Value::from(message.as_str());
        }
        json!({
            "trace_id": self.trace_id.to_string(),
            "span_id": self.span_id.to_string(),
            "parent_span_id": self.parent_span_id.map(|p| p.to_string()),
            "name": self.name.as_ref(),
            "kind": self.kind.as_str(),
            "service": self.service.as_ref(),
            "start_time_unix_nano": self.start_unix_nanos.to_string(),
            "end_time_unix_nano": self.end_unix_nanos.to_string(),
            "duration_ns": self.duration_nanos(),
            "attributes": attributes,
            "status": status,
        })
    }
}

/// Nanoseconds since the Unix epoch, now.
pub(crate) fn now_unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A span being recorded: recorded when dropped (so a cancelled call still shows,
/// and a streamed answer's span lasts until the stream is done). Unsampled spans
/// record nothing.
pub(crate) struct ActiveSpan {
    data: Option<Box<SpanData>>,
    sink: Arc<Sink>,
}

impl ActiveSpan {
    /// Starts span `ctx` (child of `parent`, if any).
    pub(crate) fn start(
        sink: &Arc<Sink>,
        ctx: &TraceContext,
        parent: Option<SpanId>,
        kind: SpanKind,
        name: Arc<str>,
    ) -> Self {
        let data = ctx.sampled().then(|| {
            Box::new(SpanData {
                trace_id: ctx.trace_id,
                span_id: ctx.span_id,
                parent_span_id: parent,
                name,
                kind,
                service: sink.service.clone(),
                start_unix_nanos: now_unix_nanos(),
                end_unix_nanos: 0,
                attributes: Vec::with_capacity(6),
                status: SpanStatus::Unset,
            })
        });
        ActiveSpan {
            data,
            sink: sink.clone(),
        }
    }

    /// Whether the span is recorded.
    pub(crate) fn recording(&self) -> bool {
        self.data.is_some()
    }

    /// Sets an attribute.
    pub(crate) fn set(&mut self, key: &'static str, value: impl Into<AttributeValue>) {
        if let Some(data) = &mut self.data {
            data.attributes.push((key, value.into()));
        }
    }

    /// Sets how it ended.
    pub(crate) fn status(&mut self, status: SpanStatus) {
        if let Some(data) = &mut self.data {
            data.status = status;
        }
    }

    /// Notes a failure: its code as `micro.status_code`, and an error status when
    /// `is_error` (the server's fault, or any failure on the caller's side).
    pub(crate) fn fail(&mut self, err: &crate::Error, is_error: bool) {
        if self.data.is_none() {
            return;
        }
        self.set(super::attr::STATUS_CODE, i64::from(err.code()));
        self.status(if is_error {
            SpanStatus::Error(err.detail().to_string())
        } else {
            SpanStatus::Unset
        });
    }
}

impl Drop for ActiveSpan {
    fn drop(&mut self) {
        if let Some(mut data) = self.data.take() {
            data.end_unix_nanos = now_unix_nanos().max(data.start_unix_nanos);
            self.sink.record(*data);
        }
    }
}
