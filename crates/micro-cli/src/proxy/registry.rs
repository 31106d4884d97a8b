//! `micro.v1.Registry`: the server's registry (the default local/mDNS one, or
//! etcd) behind the proxy's API, so a program in any language can discover
//! services and register its own nodes.
//!
//! The records travel as `micro::proto::v1::Service` and are converted to and from
//! [`micro::registry::Service`] by the `From` impls of the micro crate.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use micro::proto::v1 as pb;
use micro::proto::v1::registry_server::{Registry as RegistryApi, RegistryServer};
use micro::registry::{Event, EventKind, RegisterOptions, Registry, Service};
use micro::{Error, Request, ResponseStream};

use super::{Parts, Stopping};

const ID: &str = "micro.registry";
/// How long a registration lives when `ttl_seconds` is 0.
pub const DEFAULT_TTL: Duration = Duration::from_secs(90);

/// The Registry API handler of the proxy, over the server's registry.
pub fn handler(parts: &Parts) -> RegistryServer<RegistryHandler> {
    RegistryServer::new(
        RegistryHandler::new(parts.registry.clone()).stopping(parts.stopping.clone()),
    )
}

/// Implements `micro.v1.Registry` over a [`Registry`].
///
/// ```
/// use std::sync::Arc;
/// use micro::proto::v1::registry_server::RegistryServer;
/// use micro_cli::proxy::registry::RegistryHandler;
///
/// let registry = Arc::new(micro::registry::MemoryRegistry::new());
/// let server = micro::server::Server::new("micro.proxy")
///     .handler(RegistryServer::new(RegistryHandler::new(registry)));
/// # let _ = server;
/// ```
#[derive(Debug, Clone)]
pub struct RegistryHandler {
    registry: Arc<dyn Registry>,
    stopping: Stopping,
}

impl RegistryHandler {
    /// A handler over `registry`.
    pub fn new(registry: Arc<dyn Registry>) -> Self {
        RegistryHandler {
            registry,
            stopping: Stopping::default(),
        }
    }

    /// Ends this handler's streams when `stopping` says so (the proxy does this
    /// at its stop).
    pub fn stopping(mut self, stopping: Stopping) -> Self {
        self.stopping = stopping;
        self
    }

    /// The 404 of an unknown service (or version), naming what exists.
    async fn not_found(&self, name: &str, version: Option<&str>) -> Error {
        let what = match version {
            Some(v) => format!("version {v:?} of service {name:?}"),
            None => format!("service {name:?}"),
        };
        let known = match (version, self.registry.get_service(name).await) {
            (Some(_), Ok(found)) => {
                let mut versions: Vec<String> = found.into_iter().map(|s| s.version).collect();
                versions.sort();
                format!("its versions are: {}", versions.join(", "))
            }
            _ => match self.registry.list_services().await {
                Ok(all) => {
                    let mut names: Vec<String> = all.into_iter().map(|s| s.name).collect();
                    names.sort();
                    names.dedup();
                    if names.is_empty() {
                        "no service is registered".to_string()
                    } else {
                        format!("registered services: {}", names.join(", "))
                    }
                }
                Err(e) => format!("listing the services failed too: {e}"),
            },
        };
        Error::not_found(ID, format!("{what} not found; {known}"))
    }
}

fn record(service: Option<pb::Service>, method: &str) -> Result<Service, Error> {
    service.map(Service::from).ok_or_else(|| {
        Error::bad_request(
            ID,
            format!(
                "{method} needs a service record: {{\"service\":{{\"name\":\"greeter\",\"version\":\"latest\",\"nodes\":[{{\"id\":\"greeter-1\",\"address\":\"127.0.0.1:9090\"}}]}}}}"
            ),
        )
    })
}

fn to_proto(services: Vec<Service>) -> Vec<pb::Service> {
    services.into_iter().map(pb::Service::from).collect()
}

impl RegistryApi for RegistryHandler {
    async fn list_services(
        &self,
        _request: Request<pb::ListServicesRequest>,
    ) -> Result<pb::ListServicesResponse, Error> {
        let services = self.registry.list_services().await?;
        Ok(pb::ListServicesResponse {
            services: to_proto(services),
        })
    }

    async fn get_service(
        &self,
        request: Request<pb::GetServiceRequest>,
    ) -> Result<pb::GetServiceResponse, Error> {
        let pb::GetServiceRequest { service, version } = request.into_inner();
        if service.is_empty() {
            return Err(Error::bad_request(
                ID,
                "name the service: {\"service\":\"greeter\"} (ListServices lists them all)",
            ));
        }
        let found = match self.registry.get_service(&service).await {
            Ok(found) => found,
            Err(e) if e.code() == 404 => return Err(self.not_found(&service, None).await),
            Err(e) => return Err(e),
        };
        let found: Vec<Service> = found
            .into_iter()
            .filter(|s| version.is_empty() || s.version == version)
            .collect();
        if found.is_empty() {
            return Err(self.not_found(&service, Some(&version)).await);
        }
        Ok(pb::GetServiceResponse {
            services: to_proto(found),
        })
    }

    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<pb::RegisterResponse, Error> {
        let pb::RegisterRequest {
            service,
            ttl_seconds,
        } = request.into_inner();
        let service = record(service, "Register")?;
        micro::registry::validate(&service)?;
        let ttl = match ttl_seconds {
            0 => DEFAULT_TTL,
            secs => Duration::from_secs(u64::from(secs)),
        };
        self.registry
            .register(&service, RegisterOptions { ttl })
            .await?;
        Ok(pb::RegisterResponse {})
    }

    async fn deregister(
        &self,
        request: Request<pb::DeregisterRequest>,
    ) -> Result<pb::DeregisterResponse, Error> {
        let service = record(request.into_inner().service, "Deregister")?;
        if service.name.is_empty() {
            return Err(Error::bad_request(ID, "service name is empty"));
        }
        self.registry.deregister(&service).await?;
        Ok(pb::DeregisterResponse {})
    }

    /// The current state as `create` events, then every change. The registry's
    /// watch is opened before the state is read, so no change falls in between
    /// (one may be sent twice, which is harmless: each event sets the state of the
    /// nodes it names). A watcher that falls behind gets an error and the stream
    /// ends: open it again to resynchronise.
    async fn watch(
        &self,
        request: Request<pb::WatchServicesRequest>,
    ) -> Result<ResponseStream<pb::ServiceEvent>, Error> {
        let filter = request.into_inner().service;
        let filter = (!filter.is_empty()).then_some(filter);
        let changes = self.registry.watch(filter.as_deref()).await?;
        let current = match &filter {
            Some(name) => match self.registry.get_service(name).await {
                Ok(found) => found,
                Err(e) if e.code() == 404 => Vec::new(),
                Err(e) => return Err(e),
            },
            None => self.registry.list_services().await?,
        };
        let snapshot = current.into_iter().map(|service| {
            Ok(pb::ServiceEvent::from(Event {
                kind: EventKind::Added,
                service,
            }))
        });
        let changes = changes.map(|item| item.map(pb::ServiceEvent::from));
        Ok(self
            .stopping
            .until_stopped(futures_util::stream::iter(snapshot).chain(changes).boxed()))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use micro::proto::v1::registry_client::RegistryClient;
    use micro::registry::{conformance, MemoryRegistry, Node, ServiceRegistry};
    use micro::server::Server;
    use tokio::net::TcpListener;

    use super::test_http::{post, post_lines};
    use super::*;

    /// A proxy serving only the Registry API over `registry`, on a loopback port;
    /// stops when the returned sender is dropped.
    async fn serve(registry: Arc<dyn Registry>) -> (String, tokio::sync::oneshot::Sender<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = Server::new("micro.proxy")
            .drain_timeout(Duration::from_millis(100))
            .handler(RegistryServer::new(RegistryHandler::new(registry)));
        tokio::spawn(server.serve(listener, async {
            let _ = stopped.await;
        }));
        (address, stop)
    }

    fn greeter(ids: &[&str]) -> Service {
        Service {
            name: "greeter".into(),
            version: "1.0.0".into(),
            nodes: ids
                .iter()
                .map(|id| Node {
                    id: (*id).into(),
                    address: "127.0.0.1:9090".into(),
                    metadata: [("protocol".to_string(), "http-json".to_string())].into(),
                })
                .collect(),
            ..Default::default()
        }
    }

    fn grpc_client(address: &str) -> RegistryClient {
        RegistryClient::new("micro.registry", micro::Client::builder().build())
            .with_options(micro::client::CallOptions::default().address(address))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_method_over_grpc() {
        let registry = Arc::new(MemoryRegistry::new());
        let (address, _stop) = serve(registry.clone()).await;
        let client = grpc_client(&address);

        let err = client
            .get_service(pb::GetServiceRequest {
                service: "greeter".into(),
                version: String::new(),
            })
            .await
            .expect_err("nothing registered");
        assert_eq!(err.code(), 404);
        assert!(err.detail().contains("no service is registered"), "{err}");

        let mut watch = client
            .watch(pb::WatchServicesRequest {
                service: "greeter".into(),
            })
            .await
            .expect("watch");
        client
            .register(pb::RegisterRequest {
                service: Some(greeter(&["g1"]).into()),
                ttl_seconds: 0,
            })
            .await
            .expect("register");
        let event = watch.message().await.expect("event").expect("one");
        assert_eq!(event.action, "create");
        assert_eq!(event.service.as_ref().map(|s| s.nodes.len()), Some(1));

        let listed = client
            .list_services(pb::ListServicesRequest {})
            .await
            .expect("list");
        assert_eq!(listed.services.len(), 1);
        assert_eq!(
            listed.services[0].nodes[0].metadata["protocol"],
            "http-json"
        );
        let got = client
            .get_service(pb::GetServiceRequest {
                service: "greeter".into(),
                version: "1.0.0".into(),
            })
            .await
            .expect("get");
        assert_eq!(got.services[0].version, "1.0.0");
        let err = client
            .get_service(pb::GetServiceRequest {
                service: "greeter".into(),
                version: "9".into(),
            })
            .await
            .expect_err("no such version");
        assert_eq!(err.code(), 404);
        assert!(err.detail().contains("1.0.0"), "{err}");
        let err = client
            .get_service(pb::GetServiceRequest {
                service: "nope".into(),
                version: String::new(),
            })
            .await
            .expect_err("unknown");
        assert!(
            err.detail().contains("registered services: greeter"),
            "{err}"
        );

        // Validation: a node without address is a 400; a missing record too.
        let mut bad = greeter(&["g2"]);
        bad.nodes[0].address.clear();
        let err = client
            .register(pb::RegisterRequest {
                service: Some(bad.into()),
                ttl_seconds: 5,
            })
            .await
            .expect_err("bad node");
        assert_eq!(err.code(), 400);
        let err = client
            .register(pb::RegisterRequest::default())
            .await
            .expect_err("no record");
        assert_eq!(err.code(), 400);

        client
            .deregister(pb::DeregisterRequest {
                service: Some(greeter(&["g1"]).into()),
            })
            .await
            .expect("deregister");
        let event = watch.message().await.expect("event").expect("one");
        assert_eq!(event.action, "delete");
        assert!(registry.get_service("greeter").await.is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_method_over_http_json() {
        let registry = Arc::new(MemoryRegistry::new());
        registry
            .register(&greeter(&["already"]), RegisterOptions::default())
            .await
            .expect("register");
        let (address, _stop) = serve(registry.clone()).await;

        // Watch first: it starts with the current state as `create` events.
        let mut events = post_lines(&address, "/micro.v1.Registry/Watch", "{}").await;
        let first = events.next_json().await;
        assert_eq!(first["action"], "create");
        assert_eq!(first["service"]["nodes"][0]["id"], "already");

        // A program in another language registers a node, speaking JSON only.
        let (status, body) = post(
            &address,
            "/micro.v1.Registry/Register",
            r#"{"service":{"name":"pyworker","version":"latest","nodes":[{"id":"py-1","address":"127.0.0.1:7000","metadata":{"protocol":"http-json"}}],"endpoints":[{"name":"Worker.Run","request":{"name":"RunRequest","schema":{"type":"object","properties":{"n":{"type":"integer","minimum":1}}}}}]},"ttlSeconds":30}"#,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let event = events.next_json().await;
        assert_eq!(event["action"], "create");
        assert_eq!(event["service"]["name"], "pyworker");

        let got = registry.get_service("pyworker").await.expect("registered");
        assert_eq!(got[0].nodes[0].metadata["protocol"], "http-json");
        assert_eq!(
            got[0].endpoints[0].request.schema["properties"]["n"]["minimum"],
            serde_json::json!(1),
            "schemas arrive as plain JSON, integers kept"
        );

        let (status, body) = post(&address, "/micro.v1.Registry/ListServices", "{}").await;
        assert_eq!(status, 200, "{body}");
        let listed: serde_json::Value = serde_json::from_str(&body).expect("json");
        let names: BTreeSet<&str> = listed["services"]
            .as_array()
            .expect("services")
            .iter()
            .filter_map(|s| s["name"].as_str())
            .collect();
        assert_eq!(names, BTreeSet::from(["greeter", "pyworker"]));

        let (status, body) = post(
            &address,
            "/micro.v1.Registry/GetService",
            r#"{"service":"pyworker"}"#,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let got: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(
            got["services"][0]["endpoints"][0]["request"]["schema"]["type"],
            "object"
        );

        let (status, body) = post(
            &address,
            "/micro.v1.Registry/GetService",
            r#"{"service":"missing"}"#,
        )
        .await;
        assert_eq!(status, 404, "{body}");
        let err: serde_json::Value = serde_json::from_str(&body).expect("error json");
        assert_eq!(err["code"], 404);
        assert!(
            err["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("greeter, pyworker"),
            "{body}"
        );

        let (status, body) = post(
            &address,
            "/micro.v1.Registry/Register",
            r#"{"service":{"name":"","nodes":[]}}"#,
        )
        .await;
        assert_eq!(status, 400, "{body}");

        let (status, body) = post(
            &address,
            "/micro.v1.Registry/Deregister",
            r#"{"service":{"name":"pyworker","version":"latest","nodes":[{"id":"py-1"}]}}"#,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let event = events.next_json().await;
        assert_eq!(event["action"], "delete");
        assert_eq!(event["service"]["nodes"][0]["id"], "py-1");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_registration_expires_after_its_ttl() {
        let registry = Arc::new(MemoryRegistry::new());
        let (address, _stop) = serve(registry.clone()).await;
        grpc_client(&address)
            .register(pb::RegisterRequest {
                service: Some(greeter(&["g1"]).into()),
                ttl_seconds: 1,
            })
            .await
            .expect("register");
        assert!(registry.get_service("greeter").await.is_ok());
        tokio::time::sleep(Duration::from_millis(1600)).await;
        assert_eq!(
            registry
                .get_service("greeter")
                .await
                .err()
                .map(|e| e.code()),
            Some(404)
        );
    }

    /// The library's `service` registry passes the registry conformance suite
    /// through a real proxy (gRPC on loopback) over a memory registry. TTLs go in
    /// whole seconds over the API, so the suite runs with a 1 s TTL.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_service_registry_conforms() {
        let (address, _stop) = serve(Arc::new(MemoryRegistry::new())).await;
        conformance::Suite::new(move || {
            Arc::new(ServiceRegistry::new(address.clone())) as Arc<dyn Registry>
        })
        .ttl(Duration::from_secs(1))
        .deadline(Duration::from_secs(5))
        .run_all()
        .await;
    }

    /// A client that finds services through the `service` registry: its selector
    /// follows the proxy's Watch, so a node registered or removed on the proxy is
    /// picked up or dropped without a restart. The service called is the proxy
    /// itself, registered under a name of its own.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_finds_services_through_the_service_registry() {
        let registry = Arc::new(MemoryRegistry::new());
        let (address, _stop) = serve(registry.clone()).await;
        let mut record = greeter(&["proxy-1"]);
        record.name = "registry-api".into();
        record.nodes[0].address = address.clone();
        record.nodes[0]
            .metadata
            .insert("protocol".into(), "grpc+json".into());
        registry
            .register(&record, RegisterOptions::default())
            .await
            .expect("register");

        let client = micro::Client::builder()
            .registry(Arc::new(ServiceRegistry::new(address.clone())))
            .build();
        let api = RegistryClient::new("registry-api", client);
        let listed = api
            .list_services(pb::ListServicesRequest {})
            .await
            .expect("a call routed by the service registry");
        assert_eq!(listed.services[0].name, "registry-api");

        // Gone on the proxy: the selector's cache follows the watch.
        registry.deregister(&record).await.expect("deregister");
        let mut gone = false;
        for _ in 0..100 {
            if api.list_services(pb::ListServicesRequest {}).await.is_err() {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(gone, "the removed node is still selected");
        registry
            .register(&record, RegisterOptions::default())
            .await
            .expect("register again");
        let mut back = false;
        for _ in 0..100 {
            if api.list_services(pb::ListServicesRequest {}).await.is_ok() {
                back = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(back, "the node registered again is not selected");
    }

    /// A watch of the `service` registry survives a restart of the proxy (a
    /// runtime of its own, shut down like a process that exits): it yields one
    /// "list again" error, then the proxy's state and its changes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_service_registry_watch_survives_a_proxy_restart() {
        let registry = Arc::new(MemoryRegistry::new());
        let proxy = |registry: Arc<MemoryRegistry>| {
            Server::new("micro.proxy").handler(RegistryServer::new(RegistryHandler::new(registry)))
        };
        let (address, first) = serve_apart(proxy(registry.clone()), None).await;
        let client = ServiceRegistry::new(address.clone());
        let mut watch = client.watch(Some("greeter")).await.expect("watch");

        first.shutdown_background();
        // Changed while the proxy is away.
        registry
            .register(&greeter(&["g1"]), RegisterOptions::default())
            .await
            .expect("register");
        let (_, second) = serve_apart(proxy(registry.clone()), Some(&address)).await;

        async fn next(w: &mut micro::registry::Watcher) -> Result<Event, Error> {
            tokio::time::timeout(Duration::from_secs(10), w.next())
                .await
                .expect("an event in time")
                .expect("the watcher goes on")
        }
        let reset = next(&mut watch).await.expect_err("a reset first");
        assert!(reset.detail().contains("list again"), "{reset}");
        let event = next(&mut watch).await.expect("the state");
        assert_eq!(event.kind, EventKind::Added);
        assert_eq!(event.service.nodes[0].id, "g1");
        registry
            .deregister(&greeter(&["g1"]))
            .await
            .expect("deregister");
        let event = next(&mut watch).await.expect("the change");
        assert_eq!(event.kind, EventKind::Removed);
        drop(watch);
        second.shutdown_background();
    }
}

/// Serves `server` in a runtime of its own, on `address` (retrying while the
/// port is still held) or a fresh loopback port. Shutting that runtime down ends
/// every connection at once, as the exit of a proxy process would.
#[cfg(test)]
pub(crate) async fn serve_apart(
    server: micro::server::Server,
    address: Option<&str>,
) -> (String, tokio::runtime::Runtime) {
    let mut tries = 0;
    let listener = loop {
        match std::net::TcpListener::bind(address.unwrap_or("127.0.0.1:0")) {
            Ok(l) => break l,
            Err(e) => {
                tries += 1;
                assert!(tries < 100, "cannot bind {address:?}: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    listener.set_nonblocking(true).expect("non-blocking");
    let address = listener.local_addr().expect("address").to_string();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
        server.serve(listener, std::future::pending()).await
    });
    (address, runtime)
}

/// A bare HTTP/1.1 client for the tests: what a program with nothing but a socket
/// and JSON sends (no micro, no gRPC).
#[cfg(test)]
pub(crate) mod test_http {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpStream;

    async fn send(address: &str, path: &str, body: &str) -> BufReader<TcpStream> {
        let mut stream = TcpStream::connect(address).await.expect("connect");
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.expect("send");
        BufReader::new(stream)
    }

    /// Reads the status line and headers; the status and whether the body is
    /// chunked.
    async fn head(reader: &mut BufReader<TcpStream>) -> (u16, bool) {
        let mut line = String::new();
        reader.read_line(&mut line).await.expect("status line");
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("a status");
        let mut chunked = false;
        loop {
            line.clear();
            reader.read_line(&mut line).await.expect("header");
            if line.trim().is_empty() {
                return (status, chunked);
            }
            let lower = line.to_ascii_lowercase();
            if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
                chunked = true;
            }
        }
    }

    /// The next chunk of a chunked body (`None` at its end).
    async fn chunk(reader: &mut BufReader<TcpStream>) -> Option<Vec<u8>> {
        let mut line = String::new();
        if reader.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        let size = usize::from_str_radix(line.trim().split(';').next()?, 16).ok()?;
        if size == 0 {
            return None;
        }
        let mut data = vec![0; size + 2];
        reader.read_exact(&mut data).await.ok()?;
        data.truncate(size);
        Some(data)
    }

    /// POSTs `body` to `path`; the status and the whole response body.
    pub(crate) async fn post(address: &str, path: &str, body: &str) -> (u16, String) {
        let mut reader = send(address, path, body).await;
        let (status, chunked) = head(&mut reader).await;
        let mut out = Vec::new();
        if chunked {
            while let Some(data) = chunk(&mut reader).await {
                out.extend(data);
            }
        } else {
            reader.read_to_end(&mut out).await.expect("body");
        }
        (status, String::from_utf8_lossy(&out).into_owned())
    }

    /// A streaming response read as newline-delimited JSON.
    pub(crate) struct Lines {
        reader: BufReader<TcpStream>,
        chunked: bool,
        buffer: Vec<u8>,
    }

    impl Lines {
        /// The next JSON line; panics after 10 s or at the end of the stream.
        pub(crate) async fn next_json(&mut self) -> serde_json::Value {
            let read = async {
                loop {
                    if let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = self.buffer.drain(..=end).collect();
                        if line.iter().all(u8::is_ascii_whitespace) {
                            continue;
                        }
                        return serde_json::from_slice(&line).expect("a JSON line");
                    }
                    let more = if self.chunked {
                        chunk(&mut self.reader).await
                    } else {
                        let mut data = vec![0; 8192];
                        match self.reader.read(&mut data).await {
                            Ok(0) | Err(_) => None,
                            Ok(n) => {
                                data.truncate(n);
                                Some(data)
                            }
                        }
                    };
                    self.buffer
                        .extend(more.expect("the stream ended before the next line"));
                }
            };
            tokio::time::timeout(std::time::Duration::from_secs(10), read)
                .await
                .expect("a line within 10 s")
        }
    }

    /// POSTs `body` to a server-streaming `path`; its messages line by line.
    pub(crate) async fn post_lines(address: &str, path: &str, body: &str) -> Lines {
        let mut reader = send(address, path, body).await;
        let (status, chunked) = head(&mut reader).await;
        assert_eq!(status, 200, "{path} answered {status}");
        Lines {
            reader,
            chunked,
            buffer: Vec::new(),
        }
    }
}
