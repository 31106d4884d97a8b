//! The `trace` wrapper end to end: real services in one process, calling each
//! other over loopback and publishing on a memory broker. One trace spans two
//! services and a publish (and a call the subscriber makes), parent/child links are
//! right, an incoming `traceparent` keeps its trace id, the spans are served at
//! `GET /debug/traces`, and they are exported by OTLP/HTTP JSON to a collector.

// Test helpers outside #[test] functions unwrap too: a panic is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::convert::Infallible;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use micro::broker::{Event, MemoryBroker, Publisher};
use micro::client::CallOptions;
use micro::registry::{MemoryRegistry, Registry};
use micro::wrapper::trace::{recent_traces, SpanData, SpanKind, SpanStatus, TraceId, TraceQuery};
use micro::{Client, Error, Request, ResponseStream, Streaming};

use common::echo::echo_client::EchoClient;
use common::echo::echo_server::{Echo, EchoServer};
use common::echo::{EchoRequest, EchoResponse};
use common::{http1, EchoImpl};

const TOPIC: &str = "trace.events";

/// Service A's Echo: `Unary` calls service B's `Unary`, publishes the request on
/// [`TOPIC`], and answers what B answered.
#[derive(Clone)]
struct Forwarder {
    b: EchoClient,
    events: Publisher,
    plain: EchoImpl,
}

impl Echo for Forwarder {
    async fn unary(&self, req: Request<EchoRequest>) -> Result<EchoResponse, Error> {
        let message = req.into_inner();
        let answer = self
            .b
            .unary(EchoRequest {
                message: message.message.clone(),
                fail_code: message.fail_code,
                ..Default::default()
            })
            .await?;
        self.events.publish(&message).await?;
        Ok(answer)
    }

    async fn server_stream(
        &self,
        req: Request<EchoRequest>,
    ) -> Result<ResponseStream<EchoResponse>, Error> {
        self.plain.server_stream(req).await
    }

    async fn client_stream(
        &self,
        req: Request<Streaming<EchoRequest>>,
    ) -> Result<EchoResponse, Error> {
        self.plain.client_stream(req).await
    }

    async fn bidi(
        &self,
        req: Request<Streaming<EchoRequest>>,
    ) -> Result<ResponseStream<EchoResponse>, Error> {
        self.plain.bidi(req).await
    }
}

fn echo_impl(name: &str) -> EchoImpl {
    EchoImpl {
        name: name.into(),
        requests: Arc::new(AtomicU64::new(0)),
    }
}

/// A service switched on by flags, as a user would: `--wrappers trace`.
fn builder(
    name: &str,
    registry: &Arc<MemoryRegistry>,
    broker: &Arc<MemoryBroker>,
    extra: &[&str],
) -> micro::ServiceBuilder {
    let mut args = vec![name, "--wrappers", "trace"];
    args.extend_from_slice(extra);
    micro::Service::builder()
        .name(name)
        .args(args)
        .registry(registry.clone())
        .broker(broker.clone())
}

struct Running {
    address: String,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap();
    }
}

async fn run(service: micro::Service, registry: &Arc<MemoryRegistry>) -> Running {
    let name = service.name().to_string();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        service
            .serve(listener, async move {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    // Registered (and so subscribed) once the record appears.
    for _ in 0..500 {
        if registry.get_service(&name).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Running {
        address,
        stop,
        task,
    }
}

/// Three services: A (calls B, publishes), B (echoes), C (subscribes to the
/// topic and calls B for each message).
struct Mesh {
    prefix: String,
    registry: Arc<MemoryRegistry>,
    a: Running,
    b: Running,
    c: Running,
    received: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl Mesh {
    async fn start(prefix: &str) -> Mesh {
        let registry = Arc::new(MemoryRegistry::new());
        let broker = Arc::new(MemoryBroker::new());
        let (a_name, b_name, c_name) = (
            format!("{prefix}-a"),
            format!("{prefix}-b"),
            format!("{prefix}-c"),
        );

        let b = builder(&b_name, &registry, &broker, &[])
            .handler(EchoServer::new(echo_impl(&b_name)))
            .build()
            .unwrap();
        let b = run(b, &registry).await;

        let a = builder(&a_name, &registry, &broker, &[]).build().unwrap();
        let forwarder = Forwarder {
            b: EchoClient::new(b_name.clone(), a.client()),
            events: a.publisher(TOPIC),
            plain: echo_impl(&a_name),
        };
        let a = a.handler(EchoServer::new(forwarder));
        let a = run(a, &registry).await;

        let (tx, received) = tokio::sync::mpsc::unbounded_channel();
        let c = builder(&c_name, &registry, &broker, &[]).build().unwrap();
        let to_b = EchoClient::new(b_name.clone(), c.client());
        let c = c.subscribe(TOPIC, move |event: Event<EchoRequest>| {
            let to_b = to_b.clone();
            let tx = tx.clone();
            async move {
                // The subscriber's own call continues the message's trace.
                to_b.unary(event.message.clone()).await?;
                tx.send(event.message.message).unwrap();
                Ok(())
            }
        });
        let c = run(c, &registry).await;
        Mesh {
            prefix: prefix.to_string(),
            registry,
            a,
            b,
            c,
            received,
        }
    }

    /// A plain client of A, with no tracing of its own.
    fn client_of_a(&self) -> EchoClient {
        let client = Client::builder().registry(self.registry.clone()).build();
        EchoClient::new(format!("{}-a", self.prefix), client)
    }

    async fn stop(self) {
        self.a.stop().await;
        self.c.stop().await;
        self.b.stop().await;
    }
}

/// The spans of `trace_id` recorded in this process, once there are `count`.
async fn spans_of(trace_id: TraceId, count: usize) -> Vec<SpanData> {
    let query = TraceQuery {
        trace_id: Some(trace_id),
        ..Default::default()
    };
    let mut spans = Vec::new();
    for _ in 0..500 {
        spans = recent_traces(&query)
            .into_iter()
            .flat_map(|t| t.spans)
            .collect();
        if spans.len() >= count {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(spans.len(), count, "{spans:#?}");
    spans
}

/// The one span of `kind` recorded by `service` among `spans` (or the nth).
fn find<'a>(spans: &'a [SpanData], service: &str, kind: SpanKind) -> Vec<&'a SpanData> {
    spans
        .iter()
        .filter(|s| s.service.as_ref() == service && s.kind == kind)
        .collect()
}

/// The trace id of the `traceparent` B's handler saw (echoed back in metadata).
fn trace_id_seen(answer: &EchoResponse) -> TraceId {
    let header = &answer.metadata["traceparent"];
    micro::wrapper::trace::TraceContext::parse(header)
        .unwrap()
        .trace_id
}

#[tokio::test]
async fn a_trace_spans_two_services_and_a_publish() {
    let mut mesh = Mesh::start("tr1").await;
    let answer = mesh
        .client_of_a()
        .unary(EchoRequest {
            message: "hi".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(answer.message, "hi");
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(5), mesh.received.recv())
            .await
            .unwrap()
            .unwrap(),
        "hi"
    );
    let trace_id = trace_id_seen(&answer);
    // A: server, client, producer; B: server twice; C: consumer, client.
    let spans = spans_of(trace_id, 7).await;
    assert!(spans.iter().all(|s| s.trace_id == trace_id));

    let a_server = find(&spans, "tr1-a", SpanKind::Server);
    let a_client = find(&spans, "tr1-a", SpanKind::Client);
    let a_producer = find(&spans, "tr1-a", SpanKind::Producer);
    let b_servers = find(&spans, "tr1-b", SpanKind::Server);
    let c_consumer = find(&spans, "tr1-c", SpanKind::Consumer);
    let c_client = find(&spans, "tr1-c", SpanKind::Client);
    assert_eq!(
        [
            a_server.len(),
            a_client.len(),
            a_producer.len(),
            b_servers.len(),
            c_consumer.len(),
            c_client.len()
        ],
        [1, 1, 1, 2, 1, 1],
        "{spans:#?}"
    );
    let (a_server, a_client, a_producer) = (a_server[0], a_client[0], a_producer[0]);
    let (c_consumer, c_client) = (c_consumer[0], c_client[0]);

    // The plain caller sent no traceparent: A's handler started the trace.
    assert_eq!(a_server.parent_span_id, None);
    assert_eq!(a_server.name.as_ref(), "Echo.Unary");
    assert_eq!(a_server.attribute_str("rpc.system"), Some("micro"));
    assert_eq!(a_server.attribute_str("rpc.service"), Some("Echo"));
    assert_eq!(a_server.attribute_str("rpc.method"), Some("Unary"));
    assert_eq!(a_server.status, SpanStatus::Ok);
    // A's call to B: a child of A's handler span, and the parent of B's.
    assert_eq!(a_client.parent_span_id, Some(a_server.span_id));
    assert_eq!(a_client.attribute_str("micro.service"), Some("tr1-b"));
    assert_eq!(a_client.attribute_str("server.address"), Some("127.0.0.1"));
    let b_from_a = b_servers
        .iter()
        .find(|s| s.parent_span_id == Some(a_client.span_id))
        .expect("B's handler span is a child of A's client span");
    assert_eq!(b_from_a.attribute_str("micro.from_service"), Some("tr1-a"));
    // A's publish: a child of A's handler span, the parent of C's delivery.
    assert_eq!(a_producer.parent_span_id, Some(a_server.span_id));
    assert_eq!(a_producer.name.as_ref(), format!("publish {TOPIC}"));
    assert_eq!(
        a_producer.attribute_str("messaging.destination.name"),
        Some(TOPIC)
    );
    assert_eq!(c_consumer.parent_span_id, Some(a_producer.span_id));
    assert_eq!(c_consumer.name.as_ref(), format!("process {TOPIC}"));
    assert_eq!(
        c_consumer.attribute_str("messaging.message.id"),
        a_producer.attribute_str("messaging.message.id")
    );
    // The subscriber's call continues the trace: consumer -> client -> B.
    assert_eq!(c_client.parent_span_id, Some(c_consumer.span_id));
    assert!(b_servers
        .iter()
        .any(|s| s.parent_span_id == Some(c_client.span_id)));
    // Spans nest in time on one side of a call.
    assert!(a_server.start_unix_nanos <= a_client.start_unix_nanos);
    assert!(a_client.end_unix_nanos <= a_server.end_unix_nanos);

    // A's page shows A's spans of the trace.
    let (status, body) = http1(
        &mesh.a.address,
        "GET",
        &format!("/debug/traces?trace_id={trace_id}"),
        &[],
        b"",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let page: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(page["service"], "tr1-a");
    let traces = page["traces"].as_array().unwrap();
    assert_eq!(traces.len(), 1);
    assert_eq!(traces[0]["trace_id"], trace_id.to_string());
    assert_eq!(traces[0]["root"], "Echo.Unary");
    let kinds: Vec<&str> = traces[0]["spans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.len(), 3, "{kinds:?}");
    for kind in ["server", "client", "producer"] {
        assert!(kinds.contains(&kind), "{kinds:?}");
    }
    let (status, _) = http1(
        &mesh.a.address,
        "GET",
        "/debug/traces?trace_id=nope",
        &[],
        b"",
    )
    .await;
    assert_eq!(status, 400);
    mesh.stop().await;
}

#[tokio::test]
async fn a_two_hop_call_shows_one_trace_id_on_both_sides() {
    let mut mesh = Mesh::start("tr2").await;
    // The caller is traced elsewhere: it sends its own traceparent and tracestate.
    let incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let caller_trace: TraceId = "0af7651916cd43dd8448eb211c80319c".parse().unwrap();
    let answer = mesh
        .client_of_a()
        .unary_with(
            EchoRequest {
                message: "two hops".into(),
                ..Default::default()
            },
            &CallOptions::default()
                .metadata("traceparent", incoming)
                .metadata("tracestate", "vendor=abc"),
        )
        .await
        .unwrap();
    // B, two hops away, saw the caller's trace, a new parent, and its tracestate.
    assert_eq!(trace_id_seen(&answer), caller_trace);
    assert_ne!(answer.metadata["traceparent"], incoming);
    assert_eq!(answer.metadata["tracestate"], "vendor=abc");
    mesh.received.recv().await.unwrap();
    let spans = spans_of(caller_trace, 7).await;
    let a_server = find(&spans, "tr2-a", SpanKind::Server)[0];
    assert_eq!(a_server.trace_id, caller_trace);
    assert_eq!(
        a_server.parent_span_id,
        Some("b7ad6b7169203331".parse().unwrap())
    );
    let b_servers = find(&spans, "tr2-b", SpanKind::Server);
    assert!(b_servers.iter().all(|s| s.trace_id == caller_trace));

    // A failure on B (a 500, not retried) is an error on both sides of both hops.
    let e = mesh
        .client_of_a()
        .unary_with(
            EchoRequest {
                message: "fail".into(),
                fail_code: 500,
                ..Default::default()
            },
            &CallOptions::default().retries(0).metadata(
                "traceparent",
                "00-1af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), 500);
    let failed: TraceId = "1af7651916cd43dd8448eb211c80319c".parse().unwrap();
    let spans = spans_of(failed, 3).await;
    for span in &spans {
        assert!(
            matches!(&span.status, SpanStatus::Error(m) if m.contains("asked to fail")),
            "{span:#?}"
        );
    }
    // An unsampled caller's decision is kept: nothing is recorded, the flag
    // travels on.
    let unsampled = "00-2af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";
    let answer = mesh
        .client_of_a()
        .unary_with(
            EchoRequest {
                message: "quiet".into(),
                ..Default::default()
            },
            &CallOptions::default().metadata("traceparent", unsampled),
        )
        .await
        .unwrap();
    assert!(answer.metadata["traceparent"].ends_with("-00"));
    mesh.received.recv().await.unwrap();
    let quiet: TraceId = "2af7651916cd43dd8448eb211c80319c".parse().unwrap();
    let query = TraceQuery {
        trace_id: Some(quiet),
        ..Default::default()
    };
    assert!(recent_traces(&query).is_empty());
    mesh.stop().await;
}

/// A fake OTLP collector: answers 200 to every request and hands over what it got.
async fn collector() -> (
    String,
    tokio::sync::mpsc::UnboundedReceiver<(String, http::HeaderMap, serde_json::Value)>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let tx = tx.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await.unwrap().to_bytes();
                            let json = serde_json::from_slice(&body).unwrap();
                            let _ = tx.send((parts.uri.to_string(), parts.headers, json));
                            Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(
                                b"{}",
                            ))))
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (address, rx)
}

#[tokio::test]
async fn spans_are_exported_by_otlp_json_to_the_collector() {
    let (collector, mut received) = collector().await;
    let registry = Arc::new(MemoryRegistry::new());
    let broker = Arc::new(MemoryBroker::new());
    let endpoint = format!("trace.endpoint=http://{collector}");
    let service = builder(
        "otlp-svc",
        &registry,
        &broker,
        &[
            "--wrapper",
            &endpoint,
            "--wrapper",
            "trace.export_interval=20ms",
            "--wrapper",
            "trace.headers=x-api-key=s%3Dcret",
        ],
    )
    .handler(EchoServer::new(echo_impl("otlp-svc")))
    .build()
    .unwrap();
    let running = run(service, &registry).await;
    let client = Client::builder().registry(registry.clone()).build();
    EchoClient::new("otlp-svc", client)
        .unary(EchoRequest {
            message: "export me".into(),
            ..Default::default()
        })
        .await
        .unwrap();

    let (path, headers, body) = tokio::time::timeout(Duration::from_secs(10), received.recv())
        .await
        .unwrap()
        .unwrap();
    // The request target is in origin form, as a server (not a proxy) expects.
    assert_eq!(path, "/v1/traces");
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(headers["x-api-key"], "s=cret");
    let resource_spans = &body["resourceSpans"][0];
    let service_name = resource_spans["resource"]["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["key"] == "service.name")
        .unwrap();
    assert_eq!(service_name["value"]["stringValue"], "otlp-svc");
    let scope_spans = &resource_spans["scopeSpans"][0];
    assert_eq!(scope_spans["scope"]["name"], "micro");
    let span = &scope_spans["spans"][0];
    let hex = |v: &serde_json::Value, len: usize| {
        let s = v.as_str().unwrap();
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    assert!(hex(&span["traceId"], 32), "{span}");
    assert!(hex(&span["spanId"], 16), "{span}");
    assert!(span.get("parentSpanId").is_none(), "{span}");
    assert_eq!(span["name"], "Echo.Unary");
    assert_eq!(span["kind"], 2);
    let start: u64 = span["startTimeUnixNano"].as_str().unwrap().parse().unwrap();
    let end: u64 = span["endTimeUnixNano"].as_str().unwrap().parse().unwrap();
    assert!(start > 1_600_000_000_000_000_000 && end >= start, "{span}");
    assert_eq!(span["status"]["code"], 1);
    let attributes = span["attributes"].as_array().unwrap();
    assert!(attributes
        .iter()
        .any(|a| a["key"] == "rpc.system" && a["value"]["stringValue"] == "micro"));
    running.stop().await;
}
