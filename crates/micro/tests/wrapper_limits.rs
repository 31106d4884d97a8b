//! The `ratelimit`, `concurrency` and `breaker` wrappers over served services:
//! a 429 in the shared error shape over HTTP JSON and as RESOURCE_EXHAUSTED over
//! gRPC, load shedding with 503, and calls that keep succeeding through a healthy
//! node while a failing node's circuit is open.

// Test helpers outside #[test] functions unwrap too: a panic is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use micro::broker::MemoryBroker;
use micro::client::{CallOptions, RetryPolicy};
use micro::selector::{CacheSelector, Strategy};
use micro::server::{RawReply, RawRequest};
use micro::wrapper::breaker::{Breaker, BreakerState};
use micro::wrapper::{HandlerService, HandlerWrapper};
use micro::{Client, Error, Service};

use common::echo::{echo_client::EchoClient, EchoRequest};
use common::{grpc_raw, http1, registry_of, start_echo, start_echo_with, TestServer};

const SERVICE: &str = "echo";

fn req(message: &str) -> EchoRequest {
    EchoRequest {
        message: message.into(),
        ..Default::default()
    }
}

/// Serves Echo as a micro service configured by `flags` (as on a command line).
async fn start(flags: &[&str]) -> TestServer {
    common::start_service(flags).await
}

async fn unary_json(server: &TestServer, body: &str) -> (u16, serde_json::Value) {
    let (status, body) = http1(
        &server.address,
        "POST",
        "/micro.test.v1.Echo/Unary",
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
    .await;
    (status, serde_json::from_str(&body).unwrap())
}

#[tokio::test]
async fn ratelimit_answers_429_over_http_json_and_resource_exhausted_over_grpc() {
    // A burst of 2, refilled far slower than the test runs.
    let server = start(&[
        "--wrappers",
        "ratelimit",
        "--wrapper",
        "ratelimit.rate=0.01",
        "--wrapper",
        "ratelimit.burst=2",
    ])
    .await;
    for _ in 0..2 {
        let (status, body) = unary_json(&server, r#"{"message":"hi"}"#).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["message"], "hi");
    }
    let (status, body) = unary_json(&server, r#"{"message":"hi"}"#).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["id"], SERVICE);
    assert_eq!(body["code"], 429);
    assert_eq!(body["status"], "Too Many Requests");
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("Echo.Unary")
            && detail.contains("0.01 requests per second (burst 2)")
            && detail.contains("retry after")
            && detail.contains("retry-after: 100"),
        "{detail}"
    );

    // gRPC: RESOURCE_EXHAUSTED (8), with the shared error in `micro-error`.
    let (code, err) = grpc_raw(&server.address, "/micro.test.v1.Echo/Unary", b"").await;
    assert_eq!(code, 8);
    assert_eq!((err.code(), err.id()), (429, SERVICE));
    // A micro client sees the 429 and does not retry it.
    let client = EchoClient::new(SERVICE, Client::default())
        .with_options(CallOptions::default().address(server.address.clone()));
    assert_eq!(client.unary(req("x")).await.unwrap_err().code(), 429);
    // Only the two allowed calls reached the handler.
    assert_eq!(server.requests(), 2);
    server.stop().await;
}

#[tokio::test]
async fn ratelimit_endpoint_overrides_come_from_the_flags() {
    let server = start(&[
        "--wrappers",
        "ratelimit",
        "--wrapper",
        "ratelimit.endpoints=Echo.Unary=0.01:1",
    ])
    .await;
    assert_eq!(unary_json(&server, "{}").await.0, 200);
    assert_eq!(unary_json(&server, "{}").await.0, 429);
    // Other endpoints keep the default (100 per second).
    let client = EchoClient::new(SERVICE, Client::default())
        .with_options(CallOptions::default().address(server.address.clone()));
    let mut stream = client.server_stream(req("s")).await.unwrap();
    assert!(stream.message().await.unwrap().is_some());
    server.stop().await;
}

#[tokio::test]
async fn concurrency_sheds_one_more_with_503_and_frees_the_place_after() {
    let server = start(&[
        "--wrappers",
        "concurrency",
        "--wrapper",
        "concurrency.limit=1",
    ])
    .await;
    // One slow request holds the only place...
    let slow = {
        let address = server.address.clone();
        tokio::spawn(async move {
            http1(
                &address,
                "POST",
                "/micro.test.v1.Echo/Unary",
                &[("Content-Type", "application/json")],
                br#"{"message":"slow","delayMs":1500}"#,
            )
            .await
        })
    };
    // ...as soon as the handler has it.
    while server.requests() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (status, body) = unary_json(&server, "{}").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("Echo.Unary has 1 requests in flight"),
        "{body}"
    );
    let (status, body) = slow.await.unwrap();
    assert_eq!(status, 200, "{body}");
    // The place is free again.
    let (status, body) = unary_json(&server, r#"{"message":"next"}"#).await;
    assert_eq!(
        (status, &body["message"]),
        (200, &serde_json::json!("next"))
    );
    server.stop().await;
}

/// A server whose every Echo call fails with 503 before the handler; `hits` counts
/// the calls that reach it.
async fn start_failing(name: &str, hits: Arc<AtomicU64>) -> TestServer {
    start_echo_with(name, move |server| {
        server.wrap(HandlerWrapper::new(
            "down",
            tower::layer::layer_fn(move |_inner: HandlerService| {
                let hits = hits.clone();
                tower::service_fn(move |_req: RawRequest| {
                    hits.fetch_add(1, Ordering::SeqCst);
                    async { Err::<RawReply, _>(Error::service_unavailable("down", "always down")) }
                })
            }),
        ))
    })
    .await
}

#[tokio::test]
async fn breaker_of_a_service_keeps_calls_succeeding_through_the_healthy_node() {
    let hits = Arc::new(AtomicU64::new(0));
    let down = start_failing("down", hits.clone()).await;
    let good = start_echo("good").await;
    let caller = Service::builder()
        .name("caller")
        .registry(registry_of(&[&down, &good]).await)
        .broker(Arc::new(MemoryBroker::new()))
        .args([
            "caller",
            "--selector",
            "roundrobin",
            "--wrappers",
            "breaker",
            "--wrapper",
            "breaker.failures=2",
            "--wrapper",
            "retry.budget=false",
        ])
        .build()
        .unwrap();
    let echo = EchoClient::new(SERVICE, caller.client());
    for i in 0..20 {
        let rsp = echo.unary(req(&format!("r{i}"))).await.unwrap();
        assert_eq!(rsp.served_by, "good");
    }
    // The failing node was tried at most until its circuit opened.
    assert!(hits.load(Ordering::SeqCst) <= 2, "{hits:?}");
    assert_eq!(good.requests(), 20);
    down.stop().await;
    good.stop().await;
}

#[tokio::test]
async fn breaker_opens_per_node_and_fails_fast_without_reaching_it() {
    let hits = Arc::new(AtomicU64::new(0));
    let down = start_failing("down", hits.clone()).await;
    let good = start_echo("good").await;
    let dead = TestServer {
        name: "dead".into(),
        address: TestServer::dead_address().await,
        stop: None,
        task: None,
        requests: Default::default(),
    };
    let breaker = Breaker::new().failures(2);
    // The selector backs failed nodes off only for a moment, so that round robin
    // keeps offering them and the breaker is what keeps calls away.
    let selector = CacheSelector::new(
        registry_of(&[&down, &good, &dead]).await,
        Strategy::RoundRobin,
    )
    .backoff(Duration::from_millis(1), Duration::from_millis(1));
    let client = Client::builder()
        .selector(Arc::new(selector))
        .retry(RetryPolicy::new(2).unbudgeted())
        .wrap(breaker.wrapper())
        .build();
    let echo = EchoClient::new(SERVICE, client);
    for i in 0..30 {
        let rsp = echo.unary(req(&format!("r{i}"))).await.unwrap();
        assert_eq!(rsp.served_by, "good");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        2,
        "the failing node was reached after its circuit opened"
    );
    assert_eq!(
        breaker.state(&down.address, "Echo.Unary"),
        BreakerState::Open
    );
    // Connection errors count too.
    assert_eq!(
        breaker.state(&dead.address, "Echo.Unary"),
        BreakerState::Open
    );
    assert_eq!(
        breaker.state(&good.address, "Echo.Unary"),
        BreakerState::Closed
    );
    assert_eq!(breaker.tripped().len(), 2);
    down.stop().await;
    good.stop().await;
}
