//! The wire of a micro service, end to end over loopback: gRPC (proto and JSON
//! payloads, every streaming kind), JSON over HTTP/1.1 and h2c, errors, limits,
//! deadlines, retries and graceful shutdown.

// Test helpers outside #[test] functions unwrap too: a panic is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use futures_util::StreamExt;
use micro::client::CallOptions;
use micro::Client;

use common::echo::{echo_client::EchoClient, EchoRequest};
use common::{http1, registry_of, start_echo, start_echo_with, TestServer};

fn client_for(server: &TestServer) -> EchoClient {
    EchoClient::new("echo", Client::default())
        .with_options(CallOptions::default().address(server.address.clone()))
}

fn req(message: &str) -> EchoRequest {
    EchoRequest {
        message: message.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn unary_grpc_proto_round_trip() {
    let server = start_echo("a").await;
    let rsp = client_for(&server).unary(req("hi")).await.unwrap();
    assert_eq!(rsp.message, "hi");
    assert_eq!(rsp.served_by, "a");
    server.stop().await;
}

#[tokio::test]
async fn every_streaming_kind() {
    let server = start_echo("a").await;
    let client = client_for(&server);

    let mut s = client
        .server_stream(EchoRequest {
            message: "s".into(),
            count: 5,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut seq = Vec::new();
    while let Some(m) = s.message().await.unwrap() {
        seq.push(m.sequence);
    }
    assert_eq!(seq, vec![1, 2, 3, 4, 5]);

    let requests = futures_util::stream::iter(["a", "b", "c"].map(req));
    let rsp = client.client_stream(requests).await.unwrap();
    assert_eq!(rsp.message, "a,b,c");
    assert_eq!(rsp.sequence, 3);

    // Bidi: each request is answered as it arrives, before the next is sent.
    let (tx, rx) = tokio::sync::mpsc::channel::<EchoRequest>(1);
    let mut answers = client
        .bidi(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap();
    for word in ["x", "y", "z"] {
        tx.send(req(word)).await.unwrap();
        let m = answers.message().await.unwrap().unwrap();
        assert_eq!(m.message, word);
    }
    drop(tx);
    assert!(answers.message().await.unwrap().is_none());
    server.stop().await;
}

#[tokio::test]
async fn json_over_http1_by_path_and_by_header() {
    let server = start_echo("a").await;
    let (status, body) = http1(
        &server.address,
        "POST",
        "/micro.test.v1.Echo/Unary",
        &[("Content-Type", "application/json")],
        br#"{"message":"John","count":"7"}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["message"], "John");
    // proto3 JSON: camelCase names, int64 as strings.
    assert_eq!(v["deadlineMs"], "-1");

    let (status, body) = http1(
        &server.address,
        "POST",
        "/",
        &[
            ("Content-Type", "application/json"),
            ("Micro-Endpoint", "Echo.Unary"),
        ],
        br#"{"message":"by header"}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("by header"));
    server.stop().await;
}

#[tokio::test]
async fn json_server_stream_is_ndjson_and_client_stream_reads_lines() {
    let server = start_echo("a").await;
    let (status, body) = http1(
        &server.address,
        "POST",
        "/micro.test.v1.Echo/ServerStream",
        &[("Content-Type", "application/json")],
        br#"{"message":"n","count":3}"#,
    )
    .await;
    assert_eq!(status, 200);
    let lines: Vec<serde_json::Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[2]["sequence"], "3");

    let (status, body) = http1(
        &server.address,
        "POST",
        "/micro.test.v1.Echo/ClientStream",
        &[("Content-Type", "application/json")],
        b"{\"message\":\"a\"}\n{\"message\":\"b\"}\n",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"a,b\""), "{body}");
    server.stop().await;
}

#[tokio::test]
async fn json_over_h2c_and_grpc_json_payloads() {
    let server = start_echo("a").await;
    let rsp = Client::default()
        .call_json(
            "echo",
            "Echo.Unary",
            &serde_json::json!({"message": "grpc+json"}),
            &CallOptions::default().address(server.address.clone()),
        )
        .await
        .unwrap();
    assert_eq!(rsp["message"], "grpc+json");

    let (status, body) = common::h2c_json(
        &server.address,
        "/micro.test.v1.Echo/Unary",
        br#"{"message":"h2c"}"#,
    )
    .await;
    assert_eq!(status, 200);
    assert!(body.contains("h2c"));
    server.stop().await;
}

#[tokio::test]
async fn metadata_and_deadline_reach_the_handler() {
    let server = start_echo("a").await;
    let client = Client::builder().from_service("caller").build();
    let rsp: common::echo::EchoResponse = client
        .call(
            "echo",
            &common::echo::echo_client::UNARY,
            &req("md"),
            &CallOptions::default()
                .address(server.address.clone())
                .metadata("X-User", "alice")
                .timeout(Duration::from_secs(3)),
        )
        .await
        .unwrap();
    assert_eq!(
        rsp.metadata.get("x-user").map(String::as_str),
        Some("alice")
    );
    assert_eq!(
        rsp.metadata.get("micro-from-service").map(String::as_str),
        Some("caller")
    );
    assert!(
        (2000..=3000).contains(&rsp.deadline_ms),
        "{}",
        rsp.deadline_ms
    );

    let (_, body) = http1(
        &server.address,
        "POST",
        "/micro.test.v1.Echo/Unary",
        &[
            ("Content-Type", "application/json"),
            ("Timeout", "2"),
            ("X-Trace", "t1"),
        ],
        b"{}",
    )
    .await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let left: i64 = v["deadlineMs"].as_str().unwrap().parse().unwrap();
    assert!((1000..=2000).contains(&left), "{left}");
    assert_eq!(v["metadata"]["x-trace"], "t1");
    server.stop().await;
}

#[tokio::test]
async fn slow_handler_times_out_with_408() {
    let server = start_echo("a").await;
    let err = client_for(&server)
        .unary_with(
            EchoRequest {
                delay_ms: 2000,
                ..req("slow")
            },
            &CallOptions::default()
                .address(server.address.clone())
                .timeout(Duration::from_millis(200)),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), 408, "{err}");
    server.stop().await;
}

#[tokio::test]
async fn deadline_propagates_to_downstream_calls() {
    let downstream = start_echo("down").await;
    let upstream = start_echo("up").await;
    let rsp = client_for(&upstream)
        .unary_with(
            EchoRequest {
                forward_to: downstream.address.clone(),
                ..req("fwd")
            },
            &CallOptions::default()
                .address(upstream.address.clone())
                .timeout(Duration::from_millis(1500)),
        )
        .await
        .unwrap();
    // The downstream handler saw (at most) the caller's 1.5 s, not the 5 s default.
    assert_eq!(rsp.served_by, "down");
    assert!(
        rsp.deadline_ms <= 1500 && rsp.deadline_ms > 0,
        "{}",
        rsp.deadline_ms
    );
    downstream.stop().await;
    upstream.stop().await;
}

#[tokio::test]
async fn errors_keep_their_shape_over_grpc_and_http() {
    let server = start_echo("a").await;
    let err = client_for(&server)
        .unary(EchoRequest {
            fail_code: 409,
            ..req("x")
        })
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.id(), err.detail()),
        (409, "echo", "asked to fail")
    );

    let (status, body) = http1(
        &server.address,
        "POST",
        "/micro.test.v1.Echo/Unary",
        &[("Content-Type", "application/json")],
        br#"{"failCode":403}"#,
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap(),
        serde_json::json!({"id":"echo","code":403,"detail":"asked to fail","status":"Forbidden"})
    );
    server.stop().await;
}

#[tokio::test]
async fn bad_requests_get_clear_4xx_errors() {
    let server = start_echo_with("a", |s| s.max_body(1024)).await;
    let json = [("Content-Type", "application/json")];
    type Case<'a> = (
        &'a str,
        &'a str,
        Vec<(&'a str, &'a str)>,
        Vec<u8>,
        u16,
        &'a str,
    );
    // (method, path, headers, body, expected code, what the detail must mention)
    let cases: Vec<Case<'_>> = vec![
        (
            "POST",
            "/micro.test.v1.Echo/Unary",
            json.to_vec(),
            b"{not json".to_vec(),
            400,
            "malformed JSON",
        ),
        (
            "POST",
            "/micro.test.v1.Echo/Unary",
            json.to_vec(),
            br#"{"count":"abc"}"#.to_vec(),
            400,
            "malformed JSON",
        ),
        (
            "POST",
            "/micro.test.v1.Echo/Nope",
            json.to_vec(),
            b"{}".to_vec(),
            404,
            "unknown endpoint",
        ),
        (
            "POST",
            "/",
            vec![
                ("Content-Type", "application/json"),
                ("Micro-Endpoint", "Echo.Nope"),
            ],
            b"{}".to_vec(),
            404,
            "Echo.Nope",
        ),
        (
            "POST",
            "/",
            json.to_vec(),
            b"{}".to_vec(),
            400,
            "Micro-Endpoint",
        ),
        (
            "POST",
            "/micro.test.v1.Echo/Unary",
            vec![("Content-Type", "text/plain")],
            b"hi".to_vec(),
            415,
            "Content-Type",
        ),
        (
            "GET",
            "/micro.test.v1.Echo/Unary",
            json.to_vec(),
            Vec::new(),
            405,
            "POST",
        ),
        (
            "POST",
            "/micro.test.v1.Echo/Unary",
            json.to_vec(),
            vec![b' '; 2048],
            413,
            "limit",
        ),
        (
            "POST",
            "/micro.test.v1.Echo/Unary",
            vec![("Content-Type", "application/json"), ("Timeout", "soon")],
            b"{}".to_vec(),
            400,
            "Timeout",
        ),
        (
            "POST",
            "/micro.test.v1.Echo/Unary",
            vec![("Content-Type", "application/grpc")],
            b"\0\0\0\0\0".to_vec(),
            400,
            "HTTP/2",
        ),
    ];
    for (method, path, headers, body, code, needle) in cases {
        let (status, text) = http1(&server.address, method, path, &headers, &body).await;
        assert_eq!(status, code, "{method} {path}: {text}");
        let err = micro::Error::parse(&text);
        assert_eq!(err.code(), code, "{text}");
        assert!(
            text.contains(needle),
            "{method} {path}: {text} should mention {needle}"
        );
    }

    // Malformed protobuf and oversized messages over gRPC.
    let (status, garbage) = common::grpc_raw(
        &server.address,
        "/micro.test.v1.Echo/Unary",
        &[0xff, 0xff, 0xff],
    )
    .await;
    assert_eq!(
        (status, garbage.code()),
        (3, 400),
        "INVALID_ARGUMENT: {garbage}"
    );
    let (status, big) = common::grpc_raw(
        &server.address,
        "/micro.test.v1.Echo/Unary",
        &vec![0u8; 4096],
    )
    .await;
    // The gRPC status is RESOURCE_EXHAUSTED; micro-error keeps the exact code.
    assert_eq!((status, big.code()), (8, 413), "{big}");
    // The server is still fine.
    assert_eq!(
        client_for(&server).unary(req("ok")).await.unwrap().message,
        "ok"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_panicking_handler_is_a_500_not_a_dead_server() {
    let server = start_echo("a").await;
    let err = client_for(&server)
        .unary(EchoRequest {
            panic: true,
            ..req("x")
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), 500);
    assert_eq!(
        client_for(&server)
            .unary(req("still here"))
            .await
            .unwrap()
            .message,
        "still here"
    );
    server.stop().await;
}

#[tokio::test]
async fn retries_go_to_another_node_only_when_safe() {
    let good = start_echo("good").await;
    let dead = TestServer::dead_address().await;
    let dead_node = TestServer {
        name: "dead".into(),
        address: dead,
        stop: None,
        task: None,
        requests: Default::default(),
    };
    let client = Client::builder()
        .registry(registry_of(&[&good, &dead_node]).await)
        .strategy(micro::selector::Strategy::RoundRobin)
        .build();
    let echo = EchoClient::new("echo", client.clone());
    // Round robin hits the dead node every other call; the retry must go to `good`.
    for i in 0..10 {
        let rsp = echo.unary(req(&format!("r{i}"))).await.unwrap();
        assert_eq!(rsp.served_by, "good");
    }
    // Application errors are not retried: a 400 comes straight back.
    let err = echo
        .unary(EchoRequest {
            fail_code: 400,
            ..req("bad")
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), 400);
    // The dead node failed a call above, so it is skipped during its back-off: even
    // without retries no call fails.
    let no_retry =
        EchoClient::new("echo", client.clone()).with_options(CallOptions::default().retries(0));
    for _ in 0..4 {
        no_retry.unary(req("x")).await.unwrap();
    }
    // A fresh client (no marks yet) without retries: hitting the dead node fails with
    // 503 once, then the node is skipped.
    let fresh = Client::builder()
        .registry(registry_of(&[&good, &dead_node]).await)
        .strategy(micro::selector::Strategy::RoundRobin)
        .build();
    let no_retry = EchoClient::new("echo", fresh).with_options(CallOptions::default().retries(0));
    let mut failures = 0;
    for _ in 0..4 {
        if let Err(e) = no_retry.unary(req("x")).await {
            assert_eq!(e.code(), 503, "{e}");
            failures += 1;
        }
    }
    assert_eq!(failures, 1);
    good.stop().await;
}

#[tokio::test]
async fn idempotent_calls_retry_a_500() {
    let a = start_echo("a").await;
    let b = start_echo("b").await;
    let echo = EchoClient::new(
        "echo",
        Client::builder()
            .registry(registry_of(&[&a, &b]).await)
            .strategy(micro::selector::Strategy::RoundRobin)
            .build(),
    );
    // `fail_code` 500 fails on every node, so the error surfaces either way, but the
    // idempotent call must have tried twice: count requests via Debug.Stats later.
    let err = echo
        .unary_with(
            EchoRequest {
                fail_code: 500,
                ..req("x")
            },
            &CallOptions::default().idempotent(true),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), 500);
    let served = a.requests() + b.requests();
    assert_eq!(served, 2, "an idempotent 500 is retried once");
    let err = echo
        .unary(EchoRequest {
            fail_code: 500,
            ..req("x")
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), 500);
    assert_eq!(a.requests() + b.requests(), 3, "a plain 500 is not retried");
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn graceful_stop_drains_in_flight_requests() {
    let server = start_echo("a").await;
    let client = client_for(&server);
    let slow = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .unary(EchoRequest {
                    delay_ms: 500,
                    ..req("slow")
                })
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let address = server.address.clone();
    server.stop().await; // returns only after the in-flight call finished
    assert_eq!(slow.await.unwrap().unwrap().message, "slow");
    // And the port no longer accepts.
    assert!(tokio::net::TcpStream::connect(&address).await.is_err());
}

#[tokio::test]
async fn debug_endpoints_answer_on_every_server() {
    let server = start_echo("a").await;
    let opts = CallOptions::default().address(server.address.clone());
    let health = Client::default()
        .call_json("echo", "Debug.Health", &serde_json::json!({}), &opts)
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    let stats = Client::default()
        .call_json("echo", "Debug.Stats", &serde_json::json!({}), &opts)
        .await
        .unwrap();
    assert!(
        stats["started"].as_str().unwrap().parse::<u64>().unwrap() > 1_600_000_000,
        "{stats}"
    );
    assert!(
        stats["memory"].as_str().unwrap().parse::<u64>().unwrap() > 0,
        "{stats}"
    );
    // Over HTTP JSON too.
    let (status, body) = http1(
        &server.address,
        "POST",
        "/",
        &[("Micro-Endpoint", "Debug.Health")],
        b"",
    )
    .await;
    assert_eq!((status, body.contains("ok")), (200, true), "{body}");
    server.stop().await;
}

#[tokio::test]
async fn many_concurrent_calls_share_one_connection() {
    let server = start_echo("a").await;
    let client = client_for(&server);
    let calls = (0..200).map(|i| {
        let client = client.clone();
        async move { client.unary(req(&i.to_string())).await.map(|r| r.message) }
    });
    let results = futures_util::future::join_all(calls).await;
    for (i, r) in results.into_iter().enumerate() {
        assert_eq!(r.unwrap(), i.to_string());
    }
    let _ = futures_util::stream::iter(0..1).collect::<Vec<_>>().await;
    server.stop().await;
}

#[tokio::test]
async fn slow_clients_are_timed_out() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = start_echo_with("a", |s| s.read_timeout(Duration::from_millis(300))).await;

    // Headers that never finish: the connection is closed (hyper answers 408 or
    // just hangs up), not held.
    let mut stalled = tokio::net::TcpStream::connect(&server.address)
        .await
        .unwrap();
    stalled
        .write_all(b"POST /micro.test.v1.Echo/Unary HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), stalled.read_to_end(&mut out)).await;
    assert!(
        closed.is_ok(),
        "a client stalling in its headers must be cut off"
    );

    // A body that stops halfway gets a 408 in the shared error shape.
    let mut trickle = tokio::net::TcpStream::connect(&server.address)
        .await
        .unwrap();
    trickle
        .write_all(b"POST /micro.test.v1.Echo/Unary HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"message\":")
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), trickle.read_to_end(&mut out))
        .await
        .expect("answered within the read timeout")
        .unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("\"code\":408"), "{text}");

    // The server still serves everyone else.
    assert_eq!(
        client_for(&server)
            .unary(req("fine"))
            .await
            .unwrap()
            .message,
        "fine"
    );
    server.stop().await;
}

#[tokio::test]
async fn trace_context_propagates_to_downstream_calls() {
    let downstream = start_echo("down").await;
    let upstream = start_echo("up").await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let rsp = client_for(&upstream)
        .unary_with(
            EchoRequest {
                forward_to: downstream.address.clone(),
                ..req("fwd")
            },
            &CallOptions::default()
                .address(upstream.address.clone())
                .metadata("traceparent", traceparent)
                .metadata("tracestate", "vendor=1"),
        )
        .await
        .unwrap();
    // The downstream handler saw the caller's trace context.
    assert_eq!(rsp.served_by, "down");
    assert_eq!(
        rsp.metadata.get("traceparent").map(String::as_str),
        Some(traceparent)
    );
    assert_eq!(
        rsp.metadata.get("tracestate").map(String::as_str),
        Some("vendor=1")
    );
    downstream.stop().await;
    upstream.stop().await;
}
