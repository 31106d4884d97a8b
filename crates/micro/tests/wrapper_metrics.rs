//! The `metrics` wrapper on a served port: `GET /metrics` counts exactly what
//! happened at each point (handler, call attempt, subscriber, publish), in the
//! Prometheus text format.

// Test helpers outside #[test] functions unwrap too: a panic is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use micro::broker::{Event, MemoryBroker, Publisher};
use micro::client::CallOptions;
use micro::registry::MemoryRegistry;
use micro::wrapper::{Settings, WrapperContext};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::echo::{echo_client::EchoClient, echo_server::EchoServer, EchoRequest};
use common::EchoImpl;

/// A topic whose name needs escaping in a label value.
const TOPIC: &str = "odd\"topic\\x";
const TOPIC_LABEL: &str = "odd\\\"topic\\\\x";

/// A running Echo service with the `metrics` wrapper, its client and a publisher
/// made by the service (so both go through its wrappers).
struct Running {
    address: String,
    client: EchoClient,
    publisher: Publisher,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), micro::BoxError>>,
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }

    async fn metrics(&self) -> String {
        let (status, headers, body) = get(&self.address, "GET", "/metrics").await;
        assert_eq!(status, 200, "{body}");
        assert!(
            headers.contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
            "{headers}"
        );
        body
    }
}

async fn start(flags: &[&str]) -> Running {
    let settings = Settings::from_flags(flags).unwrap();
    let wrappers =
        micro::wrapper::from_names(&["metrics"], &settings, &WrapperContext::new("echo")).unwrap();
    let imp = EchoImpl {
        name: "a".into(),
        requests: Default::default(),
    };
    let service = micro::Service::builder()
        .name("echo")
        .registry(Arc::new(MemoryRegistry::new()))
        .broker(Arc::new(MemoryBroker::new()))
        .handler(EchoServer::new(imp))
        .wrap(wrappers)
        .build()
        .unwrap()
        .subscribe(TOPIC, |event: Event<EchoRequest>| async move {
            match event.message.fail_code {
                0 => Ok(()),
                code => Err(micro::Error::new("echo", "refused", code as u16)),
            }
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let client = EchoClient::new("echo", service.client())
        .with_options(CallOptions::default().address(address.clone()));
    let publisher = service.publisher(TOPIC);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(service.serve(listener, async move {
        let _ = stopped.await;
    }));
    // Serving once the page answers.
    for _ in 0..500 {
        if TcpStream::connect(&address).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Running {
        address,
        client,
        publisher,
        stop,
        task,
    }
}

/// One HTTP/1.1 request; status, the head in lower case, and the body.
async fn get(address: &str, method: &str, path: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(address).await.unwrap();
    let head = format!("{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_ascii_lowercase(), body.to_string())
}

fn req(fail_code: i32) -> EchoRequest {
    EchoRequest {
        message: "hi".into(),
        fail_code,
        ..Default::default()
    }
}

/// The value of the sample `name{labels}`, if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Asserts the histogram `name{labels,...}` is consistent and returns its count.
fn histogram_count(text: &str, name: &str, labels: &str) -> f64 {
    let prefix = format!("{name}_bucket{{{labels},le=\"");
    let buckets: Vec<(String, f64)> = text
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(&prefix)?;
            let (le, value) = rest.split_once("\"} ")?;
            Some((le.to_string(), value.parse().unwrap()))
        })
        .collect();
    assert!(
        buckets.len() > 1,
        "no buckets of {name}{{{labels}}} in\n{text}"
    );
    assert!(
        buckets.windows(2).all(|w| w[0].1 <= w[1].1),
        "buckets not cumulative: {buckets:?}"
    );
    let (le, inf) = buckets.last().unwrap();
    assert_eq!(le, "+Inf");
    let count = sample(text, &format!("{name}_count{{{labels}}}")).unwrap();
    assert_eq!(*inf, count, "+Inf bucket and _count differ");
    let sum = sample(text, &format!("{name}_sum{{{labels}}}")).unwrap();
    assert!(
        sum >= 0.0 && (count == 0.0) == (sum == 0.0),
        "sum {sum} count {count}"
    );
    count
}

#[tokio::test]
async fn metrics_count_exactly_what_happened() {
    let running = start(&[]).await;
    for _ in 0..3 {
        running.client.unary(req(0)).await.unwrap();
    }
    for code in [400u16, 404, 400] {
        let e = running
            .client
            .unary(req(i32::from(code)))
            .await
            .unwrap_err();
        assert_eq!(e.code(), code);
    }
    // A 503 is retried: the client counts each attempt, as does the server.
    running.client.unary(req(503)).await.unwrap_err();
    // An unknown endpoint is the router's 404, counted under no endpoint; the
    // internal Debug endpoints are not wrapped.
    let (status, _, _) = get(&running.address, "GET", "/nothing").await;
    assert_ne!(status, 200);
    let (status, _) = common::http1(
        &running.address,
        "POST",
        "/micro.test.v1.Echo/Nope",
        &[("content-type", "application/json")],
        b"{}",
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = common::http1(
        &running.address,
        "POST",
        "/",
        &[
            ("content-type", "application/json"),
            ("micro-endpoint", "Debug.Health"),
        ],
        b"{}",
    )
    .await;
    assert_eq!(status, 200);

    let text = running.metrics().await;
    let server = "micro_server_requests_total{service=\"echo\",endpoint=\"Echo.Unary\"";
    assert_eq!(
        sample(&text, &format!("{server},code=\"200\"}}")),
        Some(3.0)
    );
    assert_eq!(
        sample(&text, &format!("{server},code=\"400\"}}")),
        Some(2.0)
    );
    assert_eq!(
        sample(&text, &format!("{server},code=\"404\"}}")),
        Some(1.0)
    );
    let server_503 = sample(&text, &format!("{server},code=\"503\"}}")).unwrap();
    assert!(server_503 >= 1.0);
    let server_lines = text
        .lines()
        .filter(|l| l.starts_with("micro_server_requests_total{"))
        .count();
    assert_eq!(server_lines, 4, "{text}");
    assert!(!text.contains("Nope") && !text.contains("Debug."), "{text}");

    let client =
        "micro_client_requests_total{service=\"echo\",target=\"echo\",endpoint=\"Echo.Unary\"";
    assert_eq!(
        sample(&text, &format!("{client},code=\"200\"}}")),
        Some(3.0)
    );
    assert_eq!(
        sample(&text, &format!("{client},code=\"400\"}}")),
        Some(2.0)
    );
    assert_eq!(
        sample(&text, &format!("{client},code=\"404\"}}")),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, &format!("{client},code=\"503\"}}")),
        Some(server_503),
        "every attempt reached the server"
    );

    let labels = "service=\"echo\",endpoint=\"Echo.Unary\"";
    let count = histogram_count(&text, "micro_server_request_duration_seconds", labels);
    assert_eq!(count, 6.0 + server_503);
    let labels = "service=\"echo\",target=\"echo\",endpoint=\"Echo.Unary\"";
    let count = histogram_count(&text, "micro_client_request_duration_seconds", labels);
    assert_eq!(count, 6.0 + server_503);
    assert_eq!(
        sample(
            &text,
            "micro_server_requests_in_flight{service=\"echo\",endpoint=\"Echo.Unary\"}"
        ),
        Some(0.0)
    );
    for kind in ["counter", "histogram", "gauge"] {
        assert!(text.contains(&format!(" {kind}\n")), "no {kind} in\n{text}");
    }
    running.stop().await;
}

#[tokio::test]
async fn in_flight_rises_during_a_request_and_returns_to_zero() {
    let running = start(&[]).await;
    let gauge = "micro_server_requests_in_flight{service=\"echo\",endpoint=\"Echo.Unary\"}";
    let slow = {
        let client = running.client.clone();
        tokio::spawn(async move {
            let mut r = req(0);
            r.delay_ms = 400;
            client.unary(r).await
        })
    };
    let mut seen = false;
    for _ in 0..200 {
        if sample(&running.metrics().await, gauge) == Some(1.0) {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(seen, "the slow request was never in flight");
    slow.await.unwrap().unwrap();
    assert_eq!(sample(&running.metrics().await, gauge), Some(0.0));
    running.stop().await;
}

#[tokio::test]
async fn publishes_and_deliveries_are_counted_with_escaped_topics() {
    let running = start(&[]).await;
    running.publisher.publish(&req(0)).await.unwrap();
    running.publisher.publish(&req(0)).await.unwrap();
    running.publisher.publish(&req(422)).await.unwrap();
    let delivered = format!(
        "micro_subscriber_message_duration_seconds_count{{service=\"echo\",topic=\"{TOPIC_LABEL}\"}}"
    );
    let mut text = String::new();
    for _ in 0..500 {
        text = running.metrics().await;
        if sample(&text, &delivered) == Some(3.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let labels = format!("service=\"echo\",topic=\"{TOPIC_LABEL}\"");
    let series = |name: &str, result: &str| format!("{name}{{{labels},result=\"{result}\"}}");
    assert_eq!(
        sample(&text, &series("micro_publisher_messages_total", "ok")),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, &series("micro_publisher_messages_total", "error")),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, &series("micro_subscriber_messages_total", "ok")),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, &series("micro_subscriber_messages_total", "error")),
        Some(1.0)
    );
    assert_eq!(
        histogram_count(&text, "micro_subscriber_message_duration_seconds", &labels),
        3.0
    );
    running.stop().await;
}

#[tokio::test]
async fn head_answers_no_body_and_the_path_and_buckets_are_settings() {
    let running = start(&["metrics.path=/prom", "metrics.buckets=0.25,1"]).await;
    running.client.unary(req(0)).await.unwrap();
    let (status, headers, body) = get(&running.address, "HEAD", "/prom").await;
    assert_eq!(status, 200);
    assert!(
        headers.contains("content-type: text/plain; version=0.0.4"),
        "{headers}"
    );
    assert!(body.is_empty(), "{body}");
    let (status, _, body) = get(&running.address, "GET", "/prom").await;
    assert_eq!(status, 200);
    let buckets: Vec<&str> = body
        .lines()
        .filter(|l| l.starts_with("micro_server_request_duration_seconds_bucket{"))
        .collect();
    assert_eq!(buckets.len(), 3, "{body}");
    assert!(buckets[0].contains("le=\"0.25\"") && buckets[1].contains("le=\"1\""));
    let (status, _, _) = get(&running.address, "GET", "/metrics").await;
    assert_ne!(status, 200, "the page moved to /prom");
    running.stop().await;
}
