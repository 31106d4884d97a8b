//! What a proxy needs from micro's core, end to end over loopback: a server's
//! fallback for calls it does not serve, raw streaming calls in the client, proxy
//! mode (`MICRO_PROXY`), `http-json` nodes, and server-sent events.

// Test helpers outside #[test] functions unwrap too: a panic is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use micro::client::CallOptions;
use micro::codec::Format;
use micro::registry::{MemoryRegistry, Node, Registry, Service};
use micro::server::{MethodKind, RawReply, RawRequest, Server};
use micro::Client;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};

use common::echo::{echo_client::EchoClient, EchoRequest};
use common::{http1, start_echo, TestServer};

/// Serves `server` on a loopback port.
async fn serve(server: Server) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(listener, async move {
        let _ = rx.await;
    }));
    TestServer {
        name: "proxy".into(),
        address,
        stop: Some(tx),
        task: Some(task),
        requests: Default::default(),
    }
}

fn echo_kind(endpoint: &str) -> MethodKind {
    match endpoint {
        "Echo.ServerStream" => MethodKind::ServerStreaming,
        "Echo.ClientStream" => MethodKind::ClientStreaming,
        "Echo.Bidi" => MethodKind::BidiStreaming,
        _ => MethodKind::Unary,
    }
}

/// A server that serves nothing itself and forwards every call to `target` with
/// `Client::call_raw_stream`; `seen` records the `micro-service` header of each.
async fn forwarder(target: String, seen: Arc<Mutex<Vec<String>>>) -> TestServer {
    let client = Client::default();
    serve(Server::new("proxy").fallback(move |req: RawRequest| {
        let client = client.clone();
        let target = target.clone();
        let seen = seen.clone();
        async move {
            let RawRequest { ctx, format, body } = req;
            seen.lock().unwrap().push(
                ctx.metadata()
                    .get("micro-service")
                    .unwrap_or_default()
                    .to_string(),
            );
            let opts = CallOptions::default()
                .address(target)
                .with_metadata(ctx.metadata());
            client
                .call_raw_stream(
                    "echo",
                    ctx.endpoint(),
                    format,
                    echo_kind(ctx.endpoint()),
                    body,
                    &opts,
                )
                .await
        }
    }))
    .await
}

/// A stock gRPC call (no micro headers) with one message; the answer's message or
/// its `grpc-status`.
async fn grpc_call(address: &str, path: &str, payload: &[u8]) -> Result<Bytes, i32> {
    let stream = TcpStream::connect(address).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    framed.extend_from_slice(payload);
    let req = http::Request::post(format!("http://{address}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from(framed)))
        .unwrap();
    let rsp = sender.send_request(req).await.unwrap();
    let headers = rsp.headers().clone();
    let collected = rsp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let status = headers
        .get("grpc-status")
        .or(trailers.get("grpc-status"))
        .unwrap()
        .to_str()
        .unwrap()
        .parse::<i32>()
        .unwrap();
    if status != 0 {
        return Err(status);
    }
    let data = collected.to_bytes();
    Ok(data.slice(5..))
}

fn encode(req: &EchoRequest) -> Vec<u8> {
    prost::Message::encode_to_vec(req)
}

#[tokio::test]
async fn the_fallback_gets_calls_no_handler_serves() {
    let server = serve(Server::new("proxy").fallback(|req: RawRequest| async move {
        let answer = json!({
            "path": req.ctx.path(),
            "endpoint": req.ctx.endpoint(),
            "json": req.format == Format::Json,
        });
        Ok(RawReply::One(serde_json::to_vec(&answer).unwrap().into()))
    }))
    .await;
    let a = &server.address;
    let (status, body) = http1(a, "POST", "/greeter.Greeter/Hello", &[], b"{}").await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v,
        json!({"path": "/greeter.Greeter/Hello", "endpoint": "Greeter.Hello", "json": true})
    );
    // By the Micro-Endpoint header.
    let (_, body) = http1(
        a,
        "POST",
        "/",
        &[("Micro-Endpoint", "Greeter.Hello")],
        b"{}",
    )
    .await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["endpoint"], "Greeter.Hello");
    assert_eq!(v["path"], "/");
    // Its own endpoints are still its own...
    let (status, body) = http1(a, "POST", "/micro.debug.v1.Debug/Health", &[], b"{}").await;
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ok"}"#));
    // ...unless the call names another service.
    let headers = [
        ("Micro-Endpoint", "Debug.Health"),
        ("micro-service", "greeter"),
    ];
    let (_, body) = http1(a, "POST", "/", &headers, b"{}").await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["endpoint"], "Debug.Health");
    // A path that names no endpoint is still a 400.
    let (status, _) = http1(a, "POST", "/", &[], b"{}").await;
    assert_eq!(status, 400);
    server.stop().await;
}

#[tokio::test]
async fn a_forwarding_fallback_passes_frames_both_ways() {
    let echo = start_echo("e1").await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let fwd = forwarder(echo.address.clone(), seen).await;

    // A stock gRPC client (no micro headers) through the forwarder.
    let req = EchoRequest {
        message: "hi".into(),
        ..Default::default()
    };
    let rsp = grpc_call(&fwd.address, "/micro.test.v1.Echo/Unary", &encode(&req))
        .await
        .unwrap();
    let rsp: common::echo::EchoResponse = prost::Message::decode(rsp).unwrap();
    assert_eq!((rsp.message.as_str(), rsp.served_by.as_str()), ("hi", "e1"));
    // The service's error comes back unchanged.
    let failing = EchoRequest {
        fail_code: 409,
        ..Default::default()
    };
    let (code, err) =
        common::grpc_raw(&fwd.address, "/micro.test.v1.Echo/Unary", &encode(&failing)).await;
    assert_eq!(code, 6, "ALREADY_EXISTS");
    assert_eq!(
        (err.id(), err.code(), err.detail()),
        ("echo", 409, "asked to fail")
    );

    // micro's typed client: every streaming kind, metadata passed on.
    let client = EchoClient::new("echo", Client::default());
    let opts = CallOptions::default()
        .address(fwd.address.clone())
        .metadata("x-user", "alice");
    let rsp = client.unary_with(req.clone(), &opts).await.unwrap();
    assert_eq!(
        rsp.metadata.get("x-user").map(String::as_str),
        Some("alice")
    );
    let streamed = EchoRequest {
        count: 3,
        ..req.clone()
    };
    let mut stream = client.server_stream_with(streamed, &opts).await.unwrap();
    let mut sequences = Vec::new();
    while let Some(m) = stream.message().await.unwrap() {
        sequences.push(m.sequence);
    }
    assert_eq!(sequences, [1, 2, 3]);
    let words = ["a", "b", "c"].map(|w| EchoRequest {
        message: w.into(),
        ..Default::default()
    });
    let rsp = client
        .client_stream_with(futures_util::stream::iter(words.clone()), &opts)
        .await
        .unwrap();
    assert_eq!((rsp.message.as_str(), rsp.sequence), ("a,b,c", 3));
    let mut bidi = client
        .bidi_with(futures_util::stream::iter(words), &opts)
        .await
        .unwrap();
    let mut got = Vec::new();
    while let Some(m) = bidi.message().await.unwrap() {
        got.push(m.message);
    }
    assert_eq!(got, ["a", "b", "c"]);

    // JSON over HTTP/1.1 through the forwarder, unary and streamed (NDJSON, SSE).
    let (status, body) = http1(
        &fwd.address,
        "POST",
        "/micro.test.v1.Echo/Unary",
        &[],
        br#"{"message":"json"}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["message"],
        "json"
    );
    let (_, body) = http1(
        &fwd.address,
        "POST",
        "/micro.test.v1.Echo/ServerStream",
        &[],
        br#"{"message":"s","count":2}"#,
    )
    .await;
    assert_eq!(body.lines().count(), 2, "{body}");
    let (_, body) = http1(
        &fwd.address,
        "POST",
        "/micro.test.v1.Echo/ServerStream",
        &[("Accept", "text/event-stream")],
        br#"{"message":"s","count":2}"#,
    )
    .await;
    assert_eq!(body.matches("data: {").count(), 2, "{body}");
    fwd.stop().await;
    echo.stop().await;
}

#[tokio::test]
async fn call_raw_stream_passes_encoded_messages() {
    let echo = start_echo("e1").await;
    let client = Client::default();
    let opts = CallOptions::default().address(echo.address.clone());
    let one = |s: &str| micro::server::RawBody::One(Bytes::copy_from_slice(s.as_bytes()));
    let reply = client
        .call_raw_stream(
            "echo",
            "Echo.ServerStream",
            Format::Json,
            MethodKind::ServerStreaming,
            one(r#"{"message":"m","count":2}"#),
            &opts,
        )
        .await
        .unwrap();
    let RawReply::Stream(stream) = reply else {
        panic!("expected a stream")
    };
    let messages: Vec<Value> = stream
        .map(|m| serde_json::from_slice(&m.unwrap()).unwrap())
        .collect()
        .await;
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[1]["sequence"], "2");
    let reply = client
        .call_raw_stream(
            "echo",
            "Echo.Unary",
            Format::Json,
            MethodKind::Unary,
            one(r#"{"message":"u"}"#),
            &opts,
        )
        .await
        .unwrap();
    let RawReply::One(bytes) = reply else {
        panic!("expected one message")
    };
    assert_eq!(
        serde_json::from_slice::<Value>(&bytes).unwrap()["message"],
        "u"
    );
    echo.stop().await;
}

#[tokio::test]
async fn proxy_mode_sends_every_call_to_the_proxy() {
    let echo = start_echo("e1").await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let fwd = forwarder(echo.address.clone(), seen.clone()).await;
    // The registry knows no "echo": the proxy finds it.
    let client = Client::builder()
        .registry(Arc::new(MemoryRegistry::new()))
        .proxy(fwd.address.clone())
        .build();
    let rsp = EchoClient::new("echo", client.clone())
        .unary(EchoRequest {
            message: "via proxy".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        (rsp.message.as_str(), rsp.served_by.as_str()),
        ("via proxy", "e1")
    );
    let rsp = client
        .call_json(
            "echo",
            "Echo.Unary",
            &json!({"message": "json"}),
            &CallOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(rsp["message"], "json");
    assert_eq!(*seen.lock().unwrap(), ["echo", "echo"]);

    // A service with --proxy (MICRO_PROXY) builds, and its client uses the proxy.
    let (builder, _) = common::echo_service(&["--proxy", fwd.address.as_str()]);
    let service = builder.build().unwrap();
    let rsp = EchoClient::new("echo", service.client())
        .unary(EchoRequest {
            message: "from a service".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(rsp.message, "from a service");
    assert_eq!(seen.lock().unwrap().len(), 3);
    fwd.stop().await;
    echo.stop().await;
}

#[tokio::test]
async fn server_streams_as_server_sent_events() {
    let echo = start_echo("e1").await;
    let path = "/micro.test.v1.Echo/ServerStream";
    let sse = [("Accept", "text/event-stream")];
    let (status, body) = http1(
        &echo.address,
        "POST",
        path,
        &sse,
        br#"{"message":"m","count":2}"#,
    )
    .await;
    assert_eq!(status, 200);
    let events: Vec<&str> = body.split_terminator("\n\n").collect();
    assert_eq!(events.len(), 2, "{body}");
    for (i, event) in events.iter().enumerate() {
        let data = event.strip_prefix("data: ").unwrap();
        let v: Value = serde_json::from_str(data).unwrap();
        assert_eq!(v["sequence"], (i + 1).to_string());
    }
    // An error ends the stream as an `error` event.
    let (_, body) = http1(
        &echo.address,
        "POST",
        path,
        &sse,
        br#"{"message":"m","count":2,"failCode":503}"#,
    )
    .await;
    let events: Vec<&str> = body.split_terminator("\n\n").collect();
    assert_eq!(events.len(), 2, "{body}");
    let data = events[1].strip_prefix("event: error\ndata: ").unwrap();
    let err = micro::Error::parse(data);
    assert_eq!((err.code(), err.detail()), (503, "failed mid-stream"));
    // NDJSON stays the default.
    let (_, body) = http1(
        &echo.address,
        "POST",
        path,
        &[],
        br#"{"message":"m","count":2}"#,
    )
    .await;
    assert_eq!(body.lines().count(), 2);
    assert!(body.starts_with('{'), "{body}");
    echo.stop().await;
}

/// What the http-json node saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    headers: http::HeaderMap,
    body: Value,
}

/// A tiny JSON-over-HTTP/1.1 greeter, as a program in another language would be.
/// It counts the connections it accepts.
async fn http_json_node_counting(
    seen: Arc<Mutex<Vec<Seen>>>,
    connections: Arc<std::sync::atomic::AtomicUsize>,
) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            connections.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let seen = seen.clone();
            let svc = hyper::service::service_fn(
                move |req: http::Request<hyper::body::Incoming>| {
                    let seen = seen.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body: Value =
                            serde_json::from_slice(&body.collect().await.unwrap().to_bytes())
                                .unwrap_or(Value::Null);
                        let endpoint = parts.headers["micro-endpoint"]
                            .to_str()
                            .unwrap()
                            .to_string();
                        seen.lock().unwrap().push(Seen {
                            method: parts.method.to_string(),
                            path: parts.uri.path().to_string(),
                            headers: parts.headers.clone(),
                            body: body.clone(),
                        });
                        let name = body["name"].as_str().unwrap_or_default().to_string();
                        let (status, text) = match endpoint.as_str() {
                        _ if name.is_empty() => (
                            400,
                            r#"{"id":"greeter","code":400,"detail":"name is empty","status":"Bad Request"}"#
                                .to_string(),
                        ),
                        "Greeter.Hello" => (200, json!({"message": format!("Hello {name}")}).to_string()),
                        "Greeter.Stream" => (
                            200,
                            format!(
                                "{}\n{}\n{{\"error\":{{\"id\":\"greeter\",\"code\":503,\"detail\":\"tired\",\"status\":\"Service Unavailable\"}}}}\n",
                                json!({"message": format!("Hello {name}")}),
                                json!({"message": format!("Bye {name}")}),
                            ),
                        ),
                        _ => (404, r#"{"id":"greeter","code":404,"detail":"unknown","status":"Not Found"}"#.to_string()),
                    };
                        let rsp = http::Response::builder()
                            .status(status)
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from(text)))
                            .unwrap();
                        Ok::<_, Infallible>(rsp)
                    }
                },
            );
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc),
            );
        }
    });
    address
}

#[tokio::test]
async fn http_json_nodes_are_called_with_json_over_http() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let address = http_json_node_counting(seen.clone(), connections.clone()).await;
    let registry = Arc::new(MemoryRegistry::new());
    let record = Service {
        name: "greeter".into(),
        version: "latest".into(),
        nodes: vec![Node {
            id: "greeter-py-1".into(),
            address,
            metadata: [("protocol".to_string(), "http-json".to_string())].into(),
        }],
        ..Default::default()
    };
    registry
        .register(&record, Default::default())
        .await
        .unwrap();
    let client = Client::builder()
        .registry(registry)
        .from_service("tester")
        .build();
    let opts = CallOptions::default().metadata("x-user", "alice");
    let rsp = client
        .call_json("greeter", "Greeter.Hello", &json!({"name": "John"}), &opts)
        .await
        .unwrap();
    assert_eq!(rsp, json!({"message": "Hello John"}));
    let request = seen.lock().unwrap()[0].clone();
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("POST", "/")
    );
    assert_eq!(request.headers["micro-endpoint"], "Greeter.Hello");
    assert_eq!(request.headers["content-type"], "application/json");
    assert_eq!(request.headers["x-user"], "alice");
    assert_eq!(request.headers["micro-from-service"], "tester");
    assert!(request.headers["timeout"].to_str().unwrap().ends_with("ms"));
    assert_eq!(request.body, json!({"name": "John"}));
    // The connection is kept for the next call.
    client
        .call_json("greeter", "Greeter.Hello", &json!({"name": "Again"}), &opts)
        .await
        .unwrap();
    assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 1);

    // Pinned to its address (`micro call --address`, `micro health`): the registry
    // record of that address says it speaks JSON over HTTP.
    let pinned = opts.clone().address(record.nodes[0].address.clone());
    let rsp = client
        .call_json(
            "greeter",
            "Greeter.Hello",
            &json!({"name": "Pinned"}),
            &pinned,
        )
        .await
        .unwrap();
    assert_eq!(rsp, json!({"message": "Hello Pinned"}));

    // Its error JSON comes back as the error.
    let err = client
        .call_json("greeter", "Greeter.Hello", &json!({"name": ""}), &opts)
        .await
        .unwrap_err();
    assert_eq!(
        (err.id(), err.code(), err.detail()),
        ("greeter", 400, "name is empty")
    );

    // A protobuf call cannot reach it, and says how to call it.
    let err = client
        .call_raw(
            "greeter",
            "Greeter.Hello",
            Format::Proto,
            Bytes::new(),
            &opts,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), 501, "{err}");
    assert!(err.detail().contains("JSON"), "{err}");

    // A server stream arrives as NDJSON lines; an error line ends it.
    let mut stream = client
        .stream_json("greeter", "Greeter.Stream", &json!({"name": "Ann"}), &opts)
        .await
        .unwrap();
    assert_eq!(
        stream.next().await.unwrap().unwrap()["message"],
        "Hello Ann"
    );
    assert_eq!(stream.next().await.unwrap().unwrap()["message"], "Bye Ann");
    let err = stream.next().await.unwrap().unwrap_err();
    assert_eq!((err.code(), err.detail()), (503, "tired"));
    assert!(stream.next().await.is_none());
}

#[tokio::test]
async fn handler_wrappers_guard_the_fallback_too() {
    use micro::wrapper::{HandlerWrapper, Next};
    let guard = HandlerWrapper::from_fn(
        "guard",
        |req: RawRequest, next: Next<RawRequest, RawReply>| async move {
            if req.ctx.metadata().get("x-token") != Some("secret") {
                return Err(micro::Error::unauthorized("proxy", "send X-Token"));
            }
            next.run(req).await
        },
    );
    let server = serve(
        Server::new("proxy")
            .wrap(guard)
            .fallback(|req: RawRequest| async move {
                let endpoint = serde_json::to_vec(req.ctx.endpoint()).unwrap();
                Ok(RawReply::One(endpoint.into()))
            }),
    )
    .await;
    let path = "/greeter.Greeter/Hello";
    let (status, body) = http1(&server.address, "POST", path, &[], b"{}").await;
    assert_eq!(status, 401, "{body}");
    let token = [("X-Token", "secret")];
    let (status, body) = http1(&server.address, "POST", path, &token, b"{}").await;
    assert_eq!((status, body.as_str()), (200, r#""Greeter.Hello""#));
    server.stop().await;
}

/// `ClientBuilder::json_over_http1`: a unary JSON call to a micro service node
/// (`protocol: grpc+json`) goes as JSON over HTTP/1.1; without the option, and for
/// protobuf, it is gRPC (which this HTTP/1.1-only node cannot answer).
#[tokio::test]
async fn json_over_http1_sends_unary_json_calls_as_http1() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let address = http_json_node_counting(seen.clone(), connections).await;
    let registry = Arc::new(MemoryRegistry::new());
    let record = Service {
        name: "greeter".into(),
        version: "latest".into(),
        nodes: vec![Node {
            id: "greeter-1".into(),
            address,
            metadata: [("protocol".to_string(), "grpc+json".to_string())].into(),
        }],
        ..Default::default()
    };
    registry
        .register(&record, Default::default())
        .await
        .unwrap();
    let opts = CallOptions::default()
        .timeout(std::time::Duration::from_secs(2))
        .retries(0);
    let http1 = Client::builder()
        .registry(registry.clone())
        .json_over_http1(true)
        .build();
    let rsp = http1
        .call_json("greeter", "Greeter.Hello", &json!({"name": "H1"}), &opts)
        .await
        .unwrap();
    assert_eq!(rsp, json!({"message": "Hello H1"}));
    let request = seen.lock().unwrap()[0].clone();
    assert_eq!(request.headers["micro-endpoint"], "Greeter.Hello");
    assert_eq!(request.body, json!({"name": "H1"}));

    // The default client speaks gRPC to it: the HTTP/1.1-only node cannot answer.
    let grpc = Client::builder().registry(registry).build();
    let err = grpc
        .call_json("greeter", "Greeter.Hello", &json!({"name": "H2"}), &opts)
        .await
        .unwrap_err();
    assert_eq!(err.code(), 503, "{err}");
    assert_eq!(seen.lock().unwrap().len(), 1);
}
