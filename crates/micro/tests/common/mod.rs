//! Shared test fixtures: the Echo service, a server on a loopback port, and raw
//! HTTP/1.1, h2c and gRPC requests for poking at the wire directly.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use micro::client::CallOptions;
use micro::server::Server;
use micro::{Error, Request, ResponseStream, Streaming};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub mod echo {
    micro::include_proto!("micro.test.v1");
}

use echo::{echo_server, EchoRequest, EchoResponse};

/// The Echo implementation; `served_by` tells which server answered.
#[derive(Debug, Clone)]
pub struct EchoImpl {
    pub name: String,
    pub requests: Arc<AtomicU64>,
}

fn response(req: &Request<EchoRequest>, name: &str) -> EchoResponse {
    let deadline_ms = req
        .deadline()
        .map(|d| {
            d.saturating_duration_since(tokio::time::Instant::now())
                .as_millis() as i64
        })
        .unwrap_or(-1);
    EchoResponse {
        message: req.get_ref().message.clone(),
        sequence: 1,
        metadata: req
            .metadata()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        deadline_ms,
        payload_len: req.get_ref().payload.len() as i64,
        served_by: name.to_string(),
    }
}

impl echo_server::Echo for EchoImpl {
    async fn unary(&self, req: Request<EchoRequest>) -> Result<EchoResponse, Error> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        let r = req.get_ref();
        if r.panic {
            panic!("asked to panic");
        }
        if r.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(r.delay_ms as u64)).await;
        }
        if r.fail_code != 0 {
            return Err(Error::new("echo", "asked to fail", r.fail_code as u16));
        }
        if !r.forward_to.is_empty() {
            // No timeout given: the call must inherit this request's deadline.
            let client = echo::echo_client::EchoClient::new("echo", micro::Client::default());
            let inner = EchoRequest {
                message: r.message.clone(),
                ..Default::default()
            };
            return client
                .unary_with(inner, &CallOptions::default().address(r.forward_to.clone()))
                .await;
        }
        Ok(response(&req, &self.name))
    }

    async fn server_stream(
        &self,
        req: Request<EchoRequest>,
    ) -> Result<ResponseStream<EchoResponse>, Error> {
        let base = response(&req, &self.name);
        let count = req.get_ref().count.max(1);
        let fail = req.get_ref().fail_code;
        Ok(futures_util::stream::iter(1..=count)
            .map(move |sequence| {
                if fail != 0 && sequence == count {
                    return Err(Error::new("echo", "failed mid-stream", fail as u16));
                }
                Ok(EchoResponse {
                    sequence,
                    ..base.clone()
                })
            })
            .boxed())
    }

    async fn client_stream(
        &self,
        req: Request<Streaming<EchoRequest>>,
    ) -> Result<EchoResponse, Error> {
        let name = self.name.clone();
        let mut words = Vec::new();
        let mut stream = req.into_inner();
        while let Some(m) = stream.message().await? {
            words.push(m.message);
        }
        Ok(EchoResponse {
            message: words.join(","),
            sequence: words.len() as i64,
            served_by: name,
            ..Default::default()
        })
    }

    async fn bidi(
        &self,
        req: Request<Streaming<EchoRequest>>,
    ) -> Result<ResponseStream<EchoResponse>, Error> {
        let name = self.name.clone();
        let mut seq = 0;
        Ok(req
            .into_inner()
            .map(move |m| {
                seq += 1;
                m.map(|m| EchoResponse {
                    message: m.message,
                    sequence: seq,
                    served_by: name.clone(),
                    ..Default::default()
                })
            })
            .boxed())
    }
}

/// A server on a loopback port, stopped (gracefully) by `stop`.
pub struct TestServer {
    pub name: String,
    pub address: String,
    pub stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub task: Option<tokio::task::JoinHandle<Result<(), Error>>>,
    pub requests: Arc<AtomicU64>,
}

impl TestServer {
    /// Requests the Echo handler of this server has seen.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }

    /// An address where nothing listens (bound, then closed).
    pub async fn dead_address() -> String {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = l.local_addr().unwrap().to_string();
        drop(l);
        a
    }
}

pub async fn start_echo(name: &str) -> TestServer {
    start_echo_with(name, |s| s).await
}

pub async fn start_echo_with(name: &str, configure: impl FnOnce(Server) -> Server) -> TestServer {
    let requests = Arc::new(AtomicU64::new(0));
    let imp = EchoImpl {
        name: name.to_string(),
        requests: requests.clone(),
    };
    let server = configure(Server::new("echo").handler(echo_server::EchoServer::new(imp)));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(listener, async move {
        let _ = rx.await;
    }));
    TestServer {
        name: name.to_string(),
        address,
        stop: Some(tx),
        task: Some(task),
        requests,
    }
}

/// One HTTP/1.1 request on a fresh connection; returns status and body.
pub async fn http1(
    address: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    let mut stream = TcpStream::connect(address).await.unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status: u16 = text.split(' ').nth(1).unwrap().parse().unwrap();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    (status, body)
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

async fn h2_sender(address: &str) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    let stream = TcpStream::connect(address).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    sender
}

/// A JSON request over HTTP/2 with prior knowledge (h2c).
pub async fn h2c_json(address: &str, path: &str, body: &[u8]) -> (u16, String) {
    let mut sender = h2_sender(address).await;
    let req = http::Request::post(format!("http://{address}{path}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::copy_from_slice(body)))
        .unwrap();
    let rsp = sender.send_request(req).await.unwrap();
    let status = rsp.status().as_u16();
    let body = rsp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// A gRPC call with a raw (possibly malformed) payload; returns the `grpc-status`
/// and the micro error it gets.
pub async fn grpc_raw(address: &str, path: &str, payload: &[u8]) -> (i32, Error) {
    let mut sender = h2_sender(address).await;
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
    let source = if headers.contains_key("grpc-status") {
        headers
    } else {
        trailers
    };
    let code: i32 = source["grpc-status"].to_str().unwrap().parse().unwrap();
    assert_ne!(code, 0, "expected an error status");
    (code, Error::parse(source["micro-error"].to_str().unwrap()))
}

/// A micro service named `echo` serving Echo (as node "a") over an in-memory
/// registry and broker, configured by `flags` as on a command line; the returned
/// counter is the handler's requests.
pub fn echo_service<S: AsRef<str>>(flags: &[S]) -> (micro::ServiceBuilder, Arc<AtomicU64>) {
    let requests = Arc::new(AtomicU64::new(0));
    let imp = EchoImpl {
        name: "a".into(),
        requests: requests.clone(),
    };
    let mut args = vec!["echo".to_string()];
    args.extend(flags.iter().map(|f| f.as_ref().to_string()));
    let builder = micro::Service::builder()
        .name("echo")
        .registry(Arc::new(micro::registry::MemoryRegistry::new()))
        .broker(Arc::new(micro::broker::MemoryBroker::new()))
        .handler(echo_server::EchoServer::new(imp))
        .args(args);
    (builder, requests)
}

/// Serves `service` on a loopback port until the returned server is stopped.
pub async fn serve_service(service: micro::Service, requests: Arc<AtomicU64>) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        service
            .serve(listener, async move {
                let _ = rx.await;
            })
            .await
            .map_err(|e| Error::internal_server_error("test", e.to_string()))
    });
    TestServer {
        name: "a".into(),
        address,
        stop: Some(tx),
        task: Some(task),
        requests,
    }
}

/// [`echo_service`] with `flags`, built and served.
pub async fn start_service<S: AsRef<str>>(flags: &[S]) -> TestServer {
    let (builder, requests) = echo_service(flags);
    serve_service(builder.build().unwrap(), requests).await
}

/// An in-memory registry holding the service `echo` with one node per
/// `(id, address)`.
pub async fn registry_of_nodes(nodes: &[(&str, &str)]) -> Arc<dyn micro::registry::Registry> {
    use micro::registry::Registry as _;
    let registry = micro::registry::MemoryRegistry::new();
    let service = micro::registry::Service {
        name: "echo".into(),
        version: "latest".into(),
        nodes: nodes
            .iter()
            .map(|(id, address)| micro::registry::Node {
                id: id.to_string(),
                address: address.to_string(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    registry
        .register(&service, Default::default())
        .await
        .unwrap();
    Arc::new(registry)
}

/// An in-memory registry holding the service `echo` with these servers as nodes.
pub async fn registry_of(servers: &[&TestServer]) -> Arc<dyn micro::registry::Registry> {
    let nodes: Vec<(&str, &str)> = servers
        .iter()
        .map(|s| (s.name.as_str(), s.address.as_str()))
        .collect();
    registry_of_nodes(&nodes).await
}
