//! `trace`: OpenTelemetry-style spans, with the W3C trace context
//! (`traceparent`, `tracestate`) carried across calls and published messages.
//!
//! Switched on with `MICRO_WRAPPERS=trace` (or in code with
//! [`Tracer::wrappers`]), a service records:
//!
//! | point | span | its parent |
//! |---|---|---|
//! | handler | SERVER, named after the endpoint (`Greeter.Hello`) | the caller's `traceparent`, or none (a new trace) |
//! | call, per attempt | CLIENT, named after the endpoint | the handler's span when called from a handler |
//! | publish | PRODUCER, `publish <topic>` | the handler's span when published from a handler |
//! | subscriber | CONSUMER, `process <topic>` | the message's `traceparent` |
//!
//! Each span writes its own context on: the handler's into the request metadata
//! (so every call and publish the handler makes is its child), the attempt's into
//! the call's headers, the publish's into the message headers, and the
//! subscriber's becomes the trace context of the subscriber's task. So a trace runs
//! through any number of services and topics.
//!
//! New traces are sampled with `sample_ratio` (head sampling); a request that
//! comes with a `traceparent` keeps its caller's decision (the sampled flag).
//!
//! Finished spans are kept in a bounded in-process [`Ring`] (`ring_size`), served
//! as JSON at `GET /debug/traces` on the service's port and readable in code with
//! [`Tracer::ring`] or [`recent_traces`] — what the web dashboard draws. When an
//! OTLP endpoint is set (the `endpoint` setting, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`
//! or `OTEL_EXPORTER_OTLP_ENDPOINT`) they are also exported by OTLP/HTTP with JSON
//! bodies, in batches from a background task: export never holds up a request,
//! spans that do not fit its queue are dropped and counted, failures are logged at
//! most once a minute. Only plain `http://` endpoints are supported.
//!
//! ## `GET /debug/traces`
//!
//! Query: `trace_id=<32 hex>`, `service=<name>`, `limit=<n>` (default 100). Answer:
//!
//! ```json
//! {"service": "greeter", "traces": [{"trace_id": "…", "root": "Greeter.Hello",
//!   "services": ["greeter"], "start_time_unix_nano": "…", "duration_ns": 1200,
//!   "errors": 0, "spans": [{"trace_id": "…", "span_id": "…", "parent_span_id": null,
//!   "name": "Greeter.Hello", "kind": "server", "service": "greeter",
//!   "start_time_unix_nano": "…", "end_time_unix_nano": "…", "duration_ns": 1200,
//!   "attributes": {"rpc.system": "micro", …}, "status": {"code": "ok"}}]}]}
//! ```
//!
//! Traces come newest first, their spans by start time. Times are decimal
//! strings of nanoseconds since the Unix epoch.

mod context;
mod layers;
mod otlp;
mod ring;
mod span;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rand::Rng;
use serde::{Deserialize, Deserializer};

pub use context::{InvalidId, SpanId, TraceContext, TraceId, TRACEPARENT, TRACESTATE};
pub use ring::{recent_traces, Ring, Trace, TraceQuery};
pub use span::{AttributeValue, SpanData, SpanKind, SpanStatus};

use super::builtin::{settings_of, Builtin, WrapperContext};
use super::settings::{de, Key, Settings};
use super::{CallWrapper, HandlerWrapper, PublishWrapper, SubscriberWrapper, Wrappers};
use crate::server::HttpRoute;
use crate::Error;

/// The path of the traces page.
pub const TRACES_PATH: &str = "/debug/traces";

/// Attribute keys (OpenTelemetry semantic conventions, plus `micro.*`).
pub mod attr {
    /// `micro` for calls between micro services.
    pub const RPC_SYSTEM: &str = "rpc.system";
    /// The proto service (`Greeter`).
    pub const RPC_SERVICE: &str = "rpc.service";
    /// The method (`Hello`).
    pub const RPC_METHOD: &str = "rpc.method";
    /// The micro service called or serving (`greeter`).
    pub const MICRO_SERVICE: &str = "micro.service";
    /// The endpoint (`Greeter.Hello`).
    pub const MICRO_ENDPOINT: &str = "micro.endpoint";
    /// The calling service, as it said (`Micro-From-Service`).
    pub const FROM_SERVICE: &str = "micro.from_service";
    /// The HTTP-style code of a failed call (`503`).
    pub const STATUS_CODE: &str = "micro.status_code";
    /// The retry number of an attempt (1 for the first retry); absent on the first.
    pub const ATTEMPT: &str = "micro.attempt";
    /// The host of the node called.
    pub const SERVER_ADDRESS: &str = "server.address";
    /// The port of the node called.
    pub const SERVER_PORT: &str = "server.port";
    /// The caller's IP address.
    pub const CLIENT_ADDRESS: &str = "client.address";
    /// `micro`.
    pub const MESSAGING_SYSTEM: &str = "messaging.system";
    /// The topic.
    pub const MESSAGING_DESTINATION: &str = "messaging.destination.name";
    /// `publish` or `process`.
    pub const MESSAGING_OPERATION: &str = "messaging.operation.type";
    /// The message id.
    pub const MESSAGING_MESSAGE_ID: &str = "messaging.message.id";
}

const KEYS: &[Key] = &[
    Key {
        name: "sample_ratio",
        default: "1",
        about: "share of new traces recorded, 0 to 1; a request with a traceparent keeps its caller's decision",
    },
    Key {
        name: "ring_size",
        default: "4096",
        about: "finished spans kept in memory for GET /debug/traces and the dashboard (0: none)",
    },
    Key {
        name: "endpoint",
        default: "",
        about: "OTLP/HTTP collector to export to, plain http only (http://host:4318; /v1/traces is added) \
                (default: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT as is, or OTEL_EXPORTER_OTLP_ENDPOINT; unset: no export)",
    },
    Key {
        name: "headers",
        default: "",
        about: "headers of export requests, k=v,... (default: OTEL_EXPORTER_OTLP_TRACES_HEADERS or OTEL_EXPORTER_OTLP_HEADERS)",
    },
    Key {
        name: "service_name",
        default: "",
        about: "service.name of the spans (default: OTEL_SERVICE_NAME, else the service's name)",
    },
    Key {
        name: "export_interval",
        default: "1s",
        about: "longest a finished span waits before it is exported",
    },
    Key {
        name: "export_batch",
        default: "512",
        about: "spans per export request at most (a full batch is sent at once)",
    },
    Key {
        name: "export_queue",
        default: "4096",
        about: "spans waiting for export at most; more are dropped and counted",
    },
];

#[derive(Deserialize)]
struct TraceSettings {
    #[serde(deserialize_with = "de::number")]
    sample_ratio: f64,
    #[serde(deserialize_with = "de::number")]
    ring_size: usize,
    #[serde(default, deserialize_with = "text")]
    endpoint: String,
    #[serde(default, deserialize_with = "text")]
    headers: String,
    #[serde(default, deserialize_with = "text")]
    service_name: String,
    #[serde(deserialize_with = "de::duration")]
    export_interval: Duration,
    #[serde(deserialize_with = "de::number")]
    export_batch: usize,
    #[serde(deserialize_with = "de::number")]
    export_queue: usize,
}

/// Any scalar as text (a service named `123` arrives as a number).
fn text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(s) => s,
        other => other.to_string(),
    })
}

pub(super) const BUILTIN: Builtin = Builtin {
    name: "trace",
    about:
        "spans of handlers, calls, publishes and subscribers, W3C traceparent propagated; kept for \
            GET /debug/traces and exported by OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set",
    keys: KEYS,
    always_on: false,
    build,
};

fn build(settings: &Settings, ctx: &WrapperContext) -> Result<Wrappers, Error> {
    let s: TraceSettings = settings_of(settings, "trace", KEYS)?;
    Ok(tracer_of(s, ctx, &|name| std::env::var(name).ok())?.wrappers())
}

fn tracer_of(
    s: TraceSettings,
    ctx: &WrapperContext,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Tracer, Error> {
    if !(0.0..=1.0).contains(&s.sample_ratio) {
        return Err(Error::bad_request(
            "micro.wrapper",
            format!(
                "wrapper trace: sample_ratio {} must be between 0 and 1",
                s.sample_ratio
            ),
        ));
    }
    let var = |name: &str| {
        env(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let service = Some(s.service_name.trim().to_string())
        .filter(|n| !n.is_empty())
        .or_else(|| var("OTEL_SERVICE_NAME"))
        .unwrap_or_else(|| ctx.service.clone());
    let mut builder = Tracer::builder(service)
        .version(ctx.version.clone())
        .sample_ratio(s.sample_ratio)
        .ring_size(s.ring_size)
        .export_interval(s.export_interval)
        .export_batch(s.export_batch)
        .export_queue(s.export_queue);
    if let Some(url) = otlp::traces_url(&s.endpoint, env) {
        builder = builder.otlp_traces_endpoint(url);
        let headers = Some(s.headers)
            .filter(|h| !h.trim().is_empty())
            .or_else(|| var("OTEL_EXPORTER_OTLP_TRACES_HEADERS"))
            .or_else(|| var("OTEL_EXPORTER_OTLP_HEADERS"));
        if let Some(headers) = headers {
            builder = builder.otlp_headers(headers);
        }
    }
    builder.build()
}

/// What every span of one tracer shares: where finished spans go.
pub(crate) struct Sink {
    pub(crate) service: Arc<str>,
    sample_ratio: f64,
    ring: Ring,
    exporter: Option<otlp::Exporter>,
}

impl Sink {
    /// The context of a new span: a child of `parent`, or the root of a new
    /// trace, sampled by the head sampling ratio.
    pub(crate) fn context(&self, parent: Option<&TraceContext>) -> TraceContext {
        match parent {
            Some(parent) => parent.child(),
            None => TraceContext::new_root(self.sample()),
        }
    }

    fn sample(&self) -> bool {
        if self.sample_ratio >= 1.0 {
            true
        } else if self.sample_ratio <= 0.0 {
            false
        } else {
            rand::rng().random::<f64>() < self.sample_ratio
        }
    }

    /// Keeps a finished span: in the ring, and for export.
    pub(crate) fn record(&self, span: SpanData) {
        match &self.exporter {
            Some(exporter) => {
                if self.ring.capacity() > 0 {
                    self.ring.push(span.clone());
                }
                exporter.export(span);
            }
            None => self.ring.push(span),
        }
    }
}

/// The spans of one service: the wrappers that record them, the ring that keeps
/// them and the exporter that sends them by OTLP. The `trace` built-in makes one
/// from its settings; make one in code to trace a service without
/// `MICRO_WRAPPERS`, or to read its ring.
///
/// ```
/// use micro::wrapper::trace::{Tracer, TraceQuery};
///
/// let tracer = Tracer::builder("greeter").sample_ratio(0.5).ring_size(1000).build()?;
/// let service = micro::Service::builder()
///     .name("greeter")
///     .wrap(tracer.wrappers());
/// # let _ = service;
/// // Later: what the dashboard draws.
/// let traces = tracer.ring().traces(&TraceQuery::default());
/// assert!(traces.is_empty());
/// # Ok::<(), micro::Error>(())
/// ```
#[derive(Clone)]
pub struct Tracer {
    sink: Arc<Sink>,
}

impl fmt::Debug for Tracer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tracer")
            .field("service", &self.sink.service)
            .field("sample_ratio", &self.sink.sample_ratio)
            .field("ring", &self.sink.ring)
            .field(
                "otlp",
                &self.sink.exporter.as_ref().map(|e| e.url().to_string()),
            )
            .finish()
    }
}

impl Tracer {
    /// A builder for the spans of service `service` (their `service.name`).
    pub fn builder(service: impl Into<String>) -> TracerBuilder {
        TracerBuilder {
            service: service.into(),
            version: "latest".into(),
            sample_ratio: 1.0,
            ring_size: 4096,
            otlp: None,
            headers: None,
            interval: Duration::from_secs(1),
            batch: 512,
            queue: 4096,
        }
    }

    /// The service the spans belong to.
    pub fn service(&self) -> &str {
        &self.sink.service
    }

    /// The ring of this tracer's finished spans.
    pub fn ring(&self) -> &Ring {
        &self.sink.ring
    }

    /// The URL spans are exported to, if any.
    pub fn otlp_endpoint(&self) -> Option<String> {
        self.sink.exporter.as_ref().map(|e| e.url().to_string())
    }

    /// Sends the spans waiting for export now, and waits until they are sent or
    /// have failed. Without an OTLP endpoint, returns at once.
    pub async fn flush(&self) {
        if let Some(exporter) = &self.sink.exporter {
            exporter.flush().await;
        }
    }

    /// Spans that were not exported: dropped because the export queue was full,
    /// or in a batch the collector did not take.
    pub fn export_dropped(&self) -> u64 {
        self.sink.exporter.as_ref().map_or(0, |e| e.dropped())
    }

    /// Spans the collector accepted.
    pub fn exported(&self) -> u64 {
        self.sink.exporter.as_ref().map_or(0, |e| e.exported())
    }

    /// The wrappers that record this tracer's spans, at all four points, plus the
    /// `GET /debug/traces` page.
    pub fn wrappers(&self) -> Wrappers {
        let sink = &self.sink;
        let handler = {
            let sink = sink.clone();
            HandlerWrapper::new(
                "trace",
                tower::layer::layer_fn(move |inner| layers::ServerTrace::new(inner, sink.clone())),
            )
        };
        let call = {
            let sink = sink.clone();
            CallWrapper::new(
                "trace",
                tower::layer::layer_fn(move |inner| layers::ClientTrace::new(inner, sink.clone())),
            )
        };
        let publish = {
            let sink = sink.clone();
            PublishWrapper::new(
                "trace",
                tower::layer::layer_fn(move |inner| layers::ProducerTrace {
                    inner,
                    sink: sink.clone(),
                }),
            )
        };
        let subscriber = {
            let sink = sink.clone();
            SubscriberWrapper::new(
                "trace",
                tower::layer::layer_fn(move |inner| layers::ConsumerTrace {
                    inner,
                    sink: sink.clone(),
                }),
            )
        };
        Wrappers::new()
            .handler(handler)
            .call(call)
            .publish(publish)
            .subscriber(subscriber)
            .route(self.route())
    }

    /// The `GET /debug/traces` page of this tracer's ring.
    pub fn route(&self) -> HttpRoute {
        let ring = self.sink.ring.clone();
        let service = self.sink.service.clone();
        HttpRoute::new(TRACES_PATH, move |head: http::request::Parts| {
            let ring = ring.clone();
            let service = service.clone();
            async move { traces_page(&ring, &service, head.uri.query().unwrap_or("")) }
        })
    }
}

fn traces_page(ring: &Ring, service: &str, query: &str) -> http::Response<Bytes> {
    let (status, body) = match TraceQuery::from_query_string(query) {
        Ok(q) => {
            let traces: Vec<_> = ring.traces(&q).iter().map(Trace::to_json).collect();
            let body = serde_json::json!({ "service": service, "traces": traces });
            (http::StatusCode::OK, body.to_string())
        }
        Err(e) => (
            http::StatusCode::BAD_REQUEST,
            Error::bad_request("micro.wrapper.trace", e).to_json(),
        ),
    };
    let mut rsp = http::Response::new(Bytes::from(body));
    *rsp.status_mut() = status;
    rsp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    rsp
}

/// Builds a [`Tracer`]; see there for an example.
#[derive(Debug, Clone)]
pub struct TracerBuilder {
    service: String,
    version: String,
    sample_ratio: f64,
    ring_size: usize,
    otlp: Option<String>,
    headers: Option<String>,
    interval: Duration,
    batch: usize,
    queue: usize,
}

impl TracerBuilder {
    /// The service's version (`service.version` of exported spans).
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = version.into();
        self
    }

    /// The share of new traces recorded, 0 to 1 (clamped; default 1). A request
    /// that arrives with a `traceparent` keeps its caller's decision.
    pub fn sample_ratio(mut self, ratio: f64) -> Self {
        self.sample_ratio = if ratio.is_nan() {
            1.0
        } else {
            ratio.clamp(0.0, 1.0)
        };
        self
    }

    /// Finished spans kept in memory (default 4096; 0 keeps none).
    pub fn ring_size(mut self, spans: usize) -> Self {
        self.ring_size = spans;
        self
    }

    /// Exports spans by OTLP/HTTP (JSON) to this URL, used as it is, like
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (`http://collector:4318/v1/traces`).
    /// Only plain `http://` URLs are supported.
    pub fn otlp_traces_endpoint(mut self, url: impl Into<String>) -> Self {
        self.otlp = Some(url.into());
        self
    }

    /// Headers of export requests, as `OTEL_EXPORTER_OTLP_HEADERS` writes them
    /// (`api-key=secret,x-team=core`, values percent-encoded).
    pub fn otlp_headers(mut self, headers: impl Into<String>) -> Self {
        self.headers = Some(headers.into());
        self
    }

    /// Longest a finished span waits before it is exported (default 1s).
    pub fn export_interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Spans per export request at most (default 512).
    pub fn export_batch(mut self, spans: usize) -> Self {
        self.batch = spans.max(1);
        self
    }

    /// Spans waiting for export at most (default 4096); more are dropped and
    /// counted ([`Tracer::export_dropped`]).
    pub fn export_queue(mut self, spans: usize) -> Self {
        self.queue = spans.max(1);
        self
    }

    /// The tracer; a 400 when the OTLP endpoint or headers are malformed.
    pub fn build(self) -> Result<Tracer, Error> {
        let exporter = match &self.otlp {
            None => None,
            Some(url) => {
                let mut config = otlp::ExportConfig::new(url, &self.service, &self.version)?;
                if let Some(headers) = &self.headers {
                    config.parse_headers(headers)?;
                }
                config.interval = self.interval;
                config.batch = self.batch;
                config.queue = self.queue;
                Some(otlp::Exporter::new(config))
            }
        };
        Ok(Tracer {
            sink: Arc::new(Sink {
                service: self.service.into(),
                sample_ratio: self.sample_ratio,
                ring: Ring::new(self.ring_size),
                exporter,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(flags: &[&str]) -> TraceSettings {
        let s = Settings::from_flags(flags).unwrap();
        settings_of(&s, "trace", KEYS).unwrap()
    }

    #[test]
    fn defaults_keep_spans_in_the_ring_only() {
        let ctx = WrapperContext::new("greeter");
        let tracer = tracer_of(settings(&[]), &ctx, &|_| None).unwrap();
        assert_eq!(tracer.service(), "greeter");
        assert_eq!(tracer.ring().capacity(), 4096);
        assert_eq!(tracer.otlp_endpoint(), None);
        let w = tracer.wrappers();
        assert_eq!(w.handler_names(), ["trace"]);
        assert_eq!(w.call_names(), ["trace"]);
        assert_eq!(w.routes[0].path(), TRACES_PATH);
    }

    #[test]
    fn the_standard_variables_set_the_endpoint_and_service_name() {
        let ctx = WrapperContext::new("greeter");
        let env = |k: &str| match k {
            "OTEL_EXPORTER_OTLP_ENDPOINT" => Some("http://127.0.0.1:4318".to_string()),
            "OTEL_SERVICE_NAME" => Some("greeter-eu".to_string()),
            "OTEL_EXPORTER_OTLP_HEADERS" => Some("api-key=x".to_string()),
            _ => None,
        };
        let tracer = tracer_of(settings(&["trace.ring_size=10"]), &ctx, &env).unwrap();
        assert_eq!(tracer.service(), "greeter-eu");
        assert_eq!(
            tracer.otlp_endpoint().as_deref(),
            Some("http://127.0.0.1:4318/v1/traces")
        );
        assert_eq!(tracer.ring().capacity(), 10);
        let tracer = tracer_of(
            settings(&["trace.service_name=123", "trace.endpoint=http://c:1"]),
            &ctx,
            &env,
        )
        .unwrap();
        assert_eq!(tracer.service(), "123");
        assert_eq!(
            tracer.otlp_endpoint().as_deref(),
            Some("http://c:1/v1/traces")
        );
    }

    #[test]
    fn bad_settings_are_400s() {
        let ctx = WrapperContext::new("s");
        for flags in [
            &["trace.sample_ratio=2"][..],
            &["trace.endpoint=https://c:4318"],
            &["trace.endpoint=http://c:1", "trace.headers=nope"],
        ] {
            let e = tracer_of(settings(flags), &ctx, &|_| None).unwrap_err();
            assert_eq!(e.code(), 400, "{flags:?}");
        }
        let s = Settings::from_flags(["trace.rate=1"]).unwrap();
        assert!(build(&s, &ctx).is_err());
    }

    #[test]
    fn unsampled_new_traces_record_nothing_but_still_propagate() {
        let tracer = Tracer::builder("s").sample_ratio(0.0).build().unwrap();
        let ctx = tracer.sink.context(None);
        assert!(!ctx.sampled());
        drop(span::ActiveSpan::start(
            &tracer.sink,
            &ctx,
            None,
            SpanKind::Server,
            "E.M".into(),
        ));
        assert!(tracer.ring().is_empty());
        // An incoming sampled flag wins over the ratio.
        let parent = TraceContext::new_root(true);
        let child = tracer.sink.context(Some(&parent));
        assert!(child.sampled());
        assert_eq!(child.trace_id, parent.trace_id);
        drop(span::ActiveSpan::start(
            &tracer.sink,
            &child,
            Some(parent.span_id),
            SpanKind::Server,
            "E.M".into(),
        ));
        assert_eq!(tracer.ring().len(), 1);
        let page = traces_page(tracer.ring(), "s", &format!("trace_id={}", parent.trace_id));
        assert_eq!(page.status(), 200);
        let json: serde_json::Value = serde_json::from_slice(page.body()).unwrap();
        assert_eq!(
            json["traces"][0]["spans"][0]["parent_span_id"],
            parent.span_id.to_string()
        );
        assert_eq!(traces_page(tracer.ring(), "s", "trace_id=0").status(), 400);
    }
}
