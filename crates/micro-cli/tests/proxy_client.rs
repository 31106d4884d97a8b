//! The `Client` API of the proxy (`Call`, `Stream`, `Publish`), the transparent
//! sidecar (a stock gRPC or JSON caller of `/greeter.Greeter/Hello` on the proxy)
//! and proxy mode (`ClientBuilder::proxy`), against an in-process proxy and a
//! greeter served by micro on loopback ports.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use micro::broker::{Broker, Delivery, MemoryBroker, Message};
use micro::client::CallOptions;
use micro::codegen::pbjson_types::Struct;
use micro::config::MemorySource;
use micro::proto::v1::client_client::ClientClient;
use micro::proto::v1::CallRequest;
use micro::registry::{MemoryRegistry, Node, Registry, Service};
use micro::server::method::{server_streaming, unary};
use micro::server::{HandlerDesc, MethodDesc, MethodKind, Server, TypeDesc};
use micro::{Client, Error, Request, ResponseStream};
use micro_cli::proxy::Proxy;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

const ANY: TypeDesc = TypeDesc {
    name: "Struct",
    schema: "{}",
};

fn to_json(s: &Struct) -> Value {
    serde_json::to_value(s).unwrap()
}

fn to_struct(v: Value) -> Struct {
    serde_json::from_value(v).unwrap()
}

/// `Greeter.Hello` (`{"name"}` → `{"message","user"}`, 400 on an empty name, sleeps
/// `delayMs`) and the server-streaming `Greeter.Stream` (`count` greetings).
fn greeter() -> HandlerDesc {
    let hello = unary(|req: Request<Struct>| async move {
        let body = to_json(req.get_ref());
        let name = body["name"].as_str().unwrap_or_default().to_string();
        if let Some(ms) = body["delayMs"].as_f64().map(|f| f as u64) {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if name.is_empty() {
            return Err(Error::bad_request("greeter", "name is empty"));
        }
        let user = req.metadata().get("x-user").unwrap_or_default().to_string();
        let mut answer = json!({"message": format!("Hello {name}"), "user": user});
        if body["showDeadline"].as_bool() == Some(true) {
            let left = req
                .deadline()
                .map(|d| d.saturating_duration_since(tokio::time::Instant::now()));
            answer["deadlineMs"] = json!(left.map_or(-1.0, |d| d.as_millis() as f64));
        }
        Ok(to_struct(answer))
    });
    let stream = server_streaming(|req: Request<Struct>| async move {
        let body = to_json(req.get_ref());
        let count = body["count"].as_f64().map_or(1, |f| f as u64);
        let items: Vec<Result<Struct, Error>> = (1..=count)
            .map(|i| Ok(to_struct(json!({"message": format!("Hello {i}")}))))
            .collect();
        let stream: ResponseStream<Struct> = futures_util::stream::iter(items).boxed();
        Ok(stream)
    });
    let method = |name, kind, handler| MethodDesc {
        name,
        kind,
        request: ANY,
        response: ANY,
        handler,
    };
    HandlerDesc {
        package: "greeter",
        service: "Greeter",
        methods: vec![
            method("Hello", MethodKind::Unary, hello),
            method("Stream", MethodKind::ServerStreaming, stream),
        ],
        internal: false,
    }
}

/// A greeter and a proxy on loopback ports, the greeter registered as `greeter`
/// (with its endpoints unless `bare`).
struct World {
    proxy: String,
    greeter: String,
    broker: Arc<MemoryBroker>,
    stops: Vec<oneshot::Sender<()>>,
}

async fn serve(server: Server) -> (String, oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(server.serve(listener, async {
        let _ = stopped.await;
    }));
    (address, stop)
}

impl World {
    async fn start(bare: bool) -> World {
        World::start_as("greeter", bare).await
    }

    async fn start_as(name: &str, bare: bool) -> World {
        let registry = Arc::new(MemoryRegistry::new());
        let broker = Arc::new(MemoryBroker::new());
        let server = Server::new("greeter").handler(greeter());
        let endpoints = if bare {
            Vec::new()
        } else {
            server.endpoints().unwrap()
        };
        let (greeter, stop_greeter) = serve(server).await;
        let record = Service {
            name: name.into(),
            version: "latest".into(),
            endpoints,
            nodes: vec![Node {
                id: "greeter-1".into(),
                address: greeter.clone(),
                metadata: [("protocol".to_string(), "grpc+json".to_string())].into(),
            }],
            ..Default::default()
        };
        registry
            .register(&record, Default::default())
            .await
            .unwrap();
        let proxy = Proxy::new(
            registry,
            broker.clone(),
            Arc::new(MemorySource::new("store")),
        );
        let (proxy, stop_proxy) = serve(proxy.server()).await;
        World {
            proxy,
            greeter,
            broker,
            stops: vec![stop_greeter, stop_proxy],
        }
    }

    fn stop(self) {
        for stop in self.stops {
            let _ = stop.send(());
        }
    }
}

/// One HTTP/1.1 request on a fresh connection: status, headers and body.
async fn http1(
    address: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    let mut stream = TcpStream::connect(address).await.unwrap();
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status: u16 = text.split(' ').nth(1).unwrap().parse().unwrap();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap();
    let head = head.to_ascii_lowercase();
    let body = if head.contains("transfer-encoding: chunked") {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    (status, head, body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

/// A stock gRPC call (no micro headers): the messages of the answer, or the
/// `grpc-status` and the `micro-error` JSON.
async fn grpc(
    address: &str,
    path: &str,
    content_type: &str,
    payload: &[u8],
) -> Result<Vec<Bytes>, (i32, Error)> {
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
        .header("content-type", content_type)
        .header("te", "trailers")
        .body(Full::new(Bytes::from(framed)))
        .unwrap();
    let rsp = sender.send_request(req).await.unwrap();
    let headers = rsp.headers().clone();
    let collected = rsp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let source = if headers.contains_key("grpc-status") {
        headers
    } else {
        trailers
    };
    let code: i32 = source["grpc-status"].to_str().unwrap().parse().unwrap();
    if code != 0 {
        return Err((code, Error::parse(source["micro-error"].to_str().unwrap())));
    }
    let mut data = collected.to_bytes();
    let mut messages = Vec::new();
    while data.len() >= 5 {
        let len = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
        messages.push(data.slice(5..5 + len));
        data = data.slice(5 + len..);
    }
    Ok(messages)
}

#[tokio::test]
async fn call_forwards_json_and_protobuf_and_passes_errors_on() {
    let world = World::start(false).await;
    let p = &world.proxy;
    let call = r#"{"service":"greeter","endpoint":"Greeter.Hello","request":{"name":"John"},"metadata":{"x-user":"alice"}}"#;
    let (status, _, body) = http1(p, "/micro.v1.Client/Call", &[], call).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"response": {"message": "Hello John", "user": "alice"}})
    );
    // The greeter's error, unchanged.
    let bad = r#"{"service":"greeter","endpoint":"Greeter.Hello","request":{"name":""}}"#;
    let (status, _, body) = http1(p, "/micro.v1.Client/Call", &[], bad).await;
    assert_eq!(status, 400);
    let err = Error::parse(&body);
    assert_eq!((err.id(), err.detail()), ("greeter", "name is empty"));
    // An unknown service is a 404; a bad endpoint a 400 that says what to send.
    let unknown = r#"{"service":"nobody","endpoint":"X.Y"}"#;
    let (status, _, _) = http1(p, "/micro.v1.Client/Call", &[], unknown).await;
    assert_eq!(status, 404);
    let (status, _, body) =
        http1(p, "/micro.v1.Client/Call", &[], r#"{"service":"greeter"}"#).await;
    assert_eq!(status, 400);
    assert!(body.contains("Service.Method"), "{body}");
    // timeout_ms bounds the call.
    let slow = r#"{"service":"greeter","endpoint":"Greeter.Hello","request":{"name":"a","delayMs":2000},"timeoutMs":"100"}"#;
    let (status, _, body) = http1(p, "/micro.v1.Client/Call", &[], slow).await;
    assert_eq!(status, 408, "{body}");
    // `address` pins the node.
    let pinned = json!({"service": "greeter", "endpoint": "Greeter.Hello", "request": {"name": "Pin"}, "address": world.greeter});
    let (status, _, body) = http1(p, "/micro.v1.Client/Call", &[], &pinned.to_string()).await;
    assert_eq!(status, 200, "{body}");

    // gRPC with the request as protobuf bytes: the answer in `body`.
    let client = ClientClient::new("micro.proxy", Client::default());
    let opts = CallOptions::default().address(p.clone());
    let request =
        micro::codegen::prost::Message::encode_to_vec(&to_struct(json!({"name": "Proto"})));
    let rsp = client
        .call_with(
            CallRequest {
                service: "greeter".into(),
                endpoint: "Greeter.Hello".into(),
                body: request,
                ..Default::default()
            },
            &opts,
        )
        .await
        .unwrap();
    assert!(rsp.response.is_none());
    let answer: Struct = micro::codegen::prost::Message::decode(rsp.body.as_slice()).unwrap();
    assert_eq!(to_json(&answer)["message"], "Hello Proto");
    // The deadline of the incoming call bounds the forwarded one.
    let rsp = client
        .call_with(
            CallRequest {
                service: "greeter".into(),
                endpoint: "Greeter.Hello".into(),
                request: Some(
                    serde_json::from_value(json!({"name": "D", "showDeadline": true})).unwrap(),
                ),
                ..Default::default()
            },
            &opts.clone().timeout(Duration::from_millis(800)),
        )
        .await
        .unwrap();
    let left = serde_json::to_value(rsp.response.unwrap()).unwrap()["deadlineMs"]
        .as_f64()
        .unwrap();
    assert!((0.0..=800.0).contains(&left), "{left}");
    // So does timeout_ms.
    let call = r#"{"service":"greeter","endpoint":"Greeter.Hello","request":{"name":"T","showDeadline":true},"timeoutMs":300}"#;
    let (_, _, body) = http1(p, "/micro.v1.Client/Call", &[], call).await;
    let left = serde_json::from_str::<Value>(&body).unwrap()["response"]["deadlineMs"]
        .as_f64()
        .unwrap();
    assert!((0.0..=300.0).contains(&left), "{left}");
    // The greeter's error over gRPC too.
    let err = client
        .call_with(
            CallRequest {
                service: "greeter".into(),
                endpoint: "Greeter.Hello".into(),
                request: Some(serde_json::from_value(json!({"name": ""})).unwrap()),
                ..Default::default()
            },
            &opts,
        )
        .await
        .unwrap_err();
    assert_eq!(
        (err.id(), err.code(), err.detail()),
        ("greeter", 400, "name is empty")
    );
    world.stop();
}

#[tokio::test]
async fn stream_answers_ndjson_or_server_sent_events() {
    let world = World::start(false).await;
    let call = r#"{"service":"greeter","endpoint":"Greeter.Stream","request":{"count":3}}"#;
    let (status, head, body) = http1(&world.proxy, "/micro.v1.Client/Stream", &[], call).await;
    assert_eq!(status, 200, "{body}");
    assert!(head.contains("application/x-ndjson"), "{head}");
    let lines: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{body}");
    assert_eq!(lines[2], json!({"response": {"message": "Hello 3"}}));
    let sse = [("Accept", "text/event-stream")];
    let (status, head, body) = http1(&world.proxy, "/micro.v1.Client/Stream", &sse, call).await;
    assert_eq!(status, 200);
    assert!(head.contains("text/event-stream"), "{head}");
    let events: Vec<&str> = body.split_terminator("\n\n").collect();
    assert_eq!(events.len(), 3, "{body}");
    assert_eq!(events[0], r#"data: {"response":{"message":"Hello 1"}}"#);
    world.stop();
}

#[tokio::test]
async fn publish_goes_to_the_broker() {
    let world = World::start(false).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Message>();
    let _sub = world
        .broker
        .subscribe(
            "greetings",
            micro::broker::handler(move |d: Delivery| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send(d.message);
                    Ok(())
                }
            }),
            Default::default(),
        )
        .await
        .unwrap();
    let publish = r#"{"topic":"greetings","message":{"hello":"world"},"headers":{"X-Trace":"t1"}}"#;
    let (status, _, body) = http1(&world.proxy, "/micro.v1.Client/Publish", &[], publish).await;
    assert_eq!(status, 200, "{body}");
    let id = serde_json::from_str::<Value>(&body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let msg = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&msg.body).unwrap(),
        json!({"hello": "world"})
    );
    assert_eq!(msg.id(), Some(id.as_str()));
    assert_eq!(msg.headers["content-type"], "application/json");
    assert_eq!(msg.headers["micro-topic"], "greetings");
    assert_eq!(msg.headers["x-trace"], "t1");
    let (status, _, _) = http1(
        &world.proxy,
        "/micro.v1.Client/Publish",
        &[],
        r#"{"topic":"bad topic"}"#,
    )
    .await;
    assert_eq!(status, 400);
    world.stop();
}

#[tokio::test]
async fn the_sidecar_forwards_stock_grpc_and_json_callers() {
    for (name, bare) in [("hello-svc", false), ("greeter", true)] {
        // With the endpoints registered the service is found by its endpoint
        // (whatever its name); without, by the proto package of the path.
        let world = World::start_as(name, bare).await;
        let p = &world.proxy;
        let hello =
            micro::codegen::prost::Message::encode_to_vec(&to_struct(json!({"name": "Stock"})));
        let messages = grpc(p, "/greeter.Greeter/Hello", "application/grpc", &hello)
            .await
            .unwrap();
        let answer: Struct = micro::codegen::prost::Message::decode(messages[0].clone()).unwrap();
        assert_eq!(to_json(&answer)["message"], "Hello Stock", "bare: {bare}");
        // gRPC with JSON payloads.
        let messages = grpc(
            p,
            "/greeter.Greeter/Hello",
            "application/grpc+json",
            br#"{"name":"J"}"#,
        )
        .await
        .unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&messages[0]).unwrap()["message"],
            "Hello J"
        );
        // The greeter's error, as a gRPC status with the micro-error trailer.
        let empty = micro::codegen::prost::Message::encode_to_vec(&to_struct(json!({"name": ""})));
        let (code, err) = grpc(p, "/greeter.Greeter/Hello", "application/grpc", &empty)
            .await
            .unwrap_err();
        assert_eq!(code, 3, "INVALID_ARGUMENT");
        assert_eq!((err.id(), err.detail()), ("greeter", "name is empty"));
        // JSON over HTTP/1.1, by path and by Micro-Endpoint.
        let (status, _, body) = http1(p, "/greeter.Greeter/Hello", &[], r#"{"name":"Http"}"#).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap()["message"],
            "Hello Http"
        );
        let named = [("Micro-Endpoint", "Greeter.Hello"), ("micro-service", name)];
        let (status, _, body) = http1(p, "/", &named, r#"{"name":"Hdr"}"#).await;
        assert_eq!(status, 200, "{body}");
        if !bare {
            // The registry says Greeter.Stream streams: the stream is passed through.
            let messages = grpc(
                p,
                "/greeter.Greeter/Stream",
                "application/grpc+json",
                br#"{"count":2}"#,
            )
            .await
            .unwrap();
            assert_eq!(messages.len(), 2);
            let (_, head, body) = http1(p, "/greeter.Greeter/Stream", &[], r#"{"count":2}"#).await;
            assert!(head.contains("application/x-ndjson"), "{head}");
            assert_eq!(body.lines().count(), 2, "{body}");
        }
        // A path naming an unknown package and endpoint: a 404 that says so.
        let (status, _, body) = http1(p, "/nobody.Nobody/Call", &[], "{}").await;
        assert_eq!(status, 404, "{body}");
        world.stop();
    }
}

#[tokio::test]
async fn a_client_in_proxy_mode_calls_through_the_proxy() {
    let world = World::start(false).await;
    // Its own registry knows nothing: the proxy's does.
    let client = Client::builder()
        .registry(Arc::new(MemoryRegistry::new()))
        .proxy(world.proxy.clone())
        .build();
    let opts = CallOptions::default().metadata("x-user", "bob");
    let rsp = client
        .call_json(
            "greeter",
            "Greeter.Hello",
            &json!({"name": "Proxied"}),
            &opts,
        )
        .await
        .unwrap();
    assert_eq!(rsp, json!({"message": "Hello Proxied", "user": "bob"}));
    let messages: Vec<Value> = client
        .stream_json("greeter", "Greeter.Stream", &json!({"count": 2}), &opts)
        .await
        .unwrap()
        .map(|m| m.unwrap())
        .collect()
        .await;
    assert_eq!(messages.len(), 2);
    let err = client
        .call_json("greeter", "Greeter.Hello", &json!({"name": ""}), &opts)
        .await
        .unwrap_err();
    assert_eq!((err.id(), err.code()), ("greeter", 400));
    world.stop();
}

/// A greeter in "another language": JSON over HTTP/1.1 only, `POST /` with the
/// `Micro-Endpoint` header.
async fn http_json_greeter() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let svc = hyper::service::service_fn(
                |req: http::Request<hyper::body::Incoming>| async move {
                    let endpoint = req.headers()["micro-endpoint"]
                        .to_str()
                        .unwrap()
                        .to_string();
                    let body = req.into_body().collect().await.unwrap().to_bytes();
                    let body: Value = serde_json::from_slice(&body).unwrap();
                    let text = match endpoint.as_str() {
                        "Greeter.Hello" => {
                            json!({"message": format!("Hello {}", body["name"].as_str().unwrap())})
                        }
                        _ => {
                            json!({"id": "pygreeter", "code": 404, "detail": "no such endpoint", "status": "Not Found"})
                        }
                    };
                    let status = if endpoint == "Greeter.Hello" {
                        200
                    } else {
                        404
                    };
                    let rsp = http::Response::builder()
                        .status(status)
                        .header("content-type", "application/json")
                        .body(Full::new(Bytes::from(text.to_string())))
                        .unwrap();
                    Ok::<_, std::convert::Infallible>(rsp)
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
async fn a_node_in_another_language_registered_through_the_api_is_called_with_json() {
    let world = World::start(false).await;
    let p = &world.proxy;
    let node = http_json_greeter().await;
    let register = json!({"service": {"name": "pygreeter", "version": "1", "nodes": [
        {"id": "py-1", "address": node, "metadata": {"protocol": "http-json"}}
    ]}});
    let (status, _, body) =
        http1(p, "/micro.v1.Registry/Register", &[], &register.to_string()).await;
    assert_eq!(status, 200, "{body}");
    let call = r#"{"service":"pygreeter","endpoint":"Greeter.Hello","request":{"name":"Py"}}"#;
    let (status, _, body) = http1(p, "/micro.v1.Client/Call", &[], call).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"response": {"message": "Hello Py"}})
    );
    // Its errors pass through; a protobuf body cannot reach it, and says so.
    let other = r#"{"service":"pygreeter","endpoint":"Greeter.Other","request":{}}"#;
    let (status, _, body) = http1(p, "/micro.v1.Client/Call", &[], other).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(Error::parse(&body).id(), "pygreeter");
    let proto = r#"{"service":"pygreeter","endpoint":"Greeter.Hello","body":"CgA="}"#;
    let (status, _, body) = http1(p, "/micro.v1.Client/Call", &[], proto).await;
    assert_eq!(status, 501, "{body}");
    assert!(body.contains("JSON"), "{body}");
    world.stop();
}
