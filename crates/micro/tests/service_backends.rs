//! The `service` registry and broker (`MICRO_REGISTRY=service`,
//! `MICRO_BROKER=service`) against scripted proxies served by a real micro
//! `Server` on loopback: what they send, how they read the answers, and how they
//! recover when the proxy ends a stream. (The real proxy handlers, and the
//! conformance suites through them, are tested in the micro-cli crate.)
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use micro::broker::{self, handler, Broker, Message, SubscribeOptions};
use micro::proto::v1 as pb;
use micro::proto::v1::broker_server::BrokerServer;
use micro::proto::v1::registry_server::RegistryServer;
use micro::registry::{self, EventKind, Node, Ownership, RegisterOptions, Registry, Service};
use micro::server::Server;
use micro::{Error, Request, ResponseStream};
use tokio::net::TcpListener;

/// Serves `server` on a loopback port until the test ends.
async fn serve(server: Server) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(server.serve(listener, std::future::pending()));
    address
}

fn greeter() -> Service {
    Service {
        name: "greeter".into(),
        version: "latest".into(),
        nodes: vec![Node {
            id: "greeter-1".into(),
            address: "127.0.0.1:9000".into(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// A Registry API that records registrations and whose Watch sends one event and
/// then ends (as a proxy that restarts would).
#[derive(Default)]
struct ScriptedRegistry {
    registered: Mutex<Vec<pb::RegisterRequest>>,
    watches: Mutex<usize>,
}

impl pb::registry_server::Registry for ScriptedRegistry {
    async fn list_services(
        &self,
        _request: Request<pb::ListServicesRequest>,
    ) -> Result<pb::ListServicesResponse, Error> {
        Ok(pb::ListServicesResponse {
            services: vec![greeter().into()],
        })
    }

    async fn get_service(
        &self,
        request: Request<pb::GetServiceRequest>,
    ) -> Result<pb::GetServiceResponse, Error> {
        if request.get_ref().service == "greeter" {
            Ok(pb::GetServiceResponse {
                services: vec![greeter().into()],
            })
        } else {
            Err(Error::not_found(
                "micro.registry",
                "service not found; registered services: greeter",
            ))
        }
    }

    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<pb::RegisterResponse, Error> {
        self.registered.lock().unwrap().push(request.into_inner());
        Ok(pb::RegisterResponse {})
    }

    async fn deregister(
        &self,
        _request: Request<pb::DeregisterRequest>,
    ) -> Result<pb::DeregisterResponse, Error> {
        Ok(pb::DeregisterResponse {})
    }

    async fn watch(
        &self,
        _request: Request<pb::WatchServicesRequest>,
    ) -> Result<ResponseStream<pb::ServiceEvent>, Error> {
        *self.watches.lock().unwrap() += 1;
        let event = pb::ServiceEvent {
            action: "create".into(),
            service: Some(greeter().into()),
        };
        Ok(micro::stream_of(vec![event]))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_registry_speaks_the_registry_api() {
    let scripted = Arc::new(ScriptedRegistry::default());
    let address =
        serve(Server::new("micro.proxy").handler(RegistryServer::from_arc(scripted.clone()))).await;
    let r = registry::from_name(
        "service",
        std::slice::from_ref(&address),
        Ownership::Process,
    )
    .unwrap();
    assert_eq!(r.name(), "service");

    let got = r.get_service("greeter").await.unwrap();
    assert_eq!(got, vec![greeter()]);
    let err = r.get_service("nope").await.unwrap_err();
    assert_eq!(err.code(), 404);
    assert!(err.detail().contains("registered services"), "{err}");
    assert_eq!(r.list_services().await.unwrap(), vec![greeter()]);

    // TTLs go in whole seconds, rounded up; bad records never leave the process.
    r.register(
        &greeter(),
        RegisterOptions {
            ttl: Duration::from_millis(400),
        },
    )
    .await
    .unwrap();
    let sent = scripted.registered.lock().unwrap().clone();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].ttl_seconds, 1);
    assert_eq!(sent[0].service.clone().map(Service::from), Some(greeter()));
    let mut bad = greeter();
    bad.nodes[0].address.clear();
    let err = r
        .register(&bad, RegisterOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), 400);
    assert_eq!(scripted.registered.lock().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_the_proxy_ends_is_reopened_with_a_reset() {
    let scripted = Arc::new(ScriptedRegistry::default());
    let address =
        serve(Server::new("micro.proxy").handler(RegistryServer::from_arc(scripted.clone()))).await;
    let r = registry::ServiceRegistry::new(address);
    let mut w = r.watch(None).await.unwrap();
    async fn next(w: &mut registry::Watcher) -> Result<registry::Event, Error> {
        tokio::time::timeout(Duration::from_secs(5), w.next())
            .await
            .expect("in time")
            .expect("the watcher goes on")
    }
    let first = next(&mut w).await.unwrap();
    assert_eq!(first.kind, EventKind::Added);
    assert_eq!(first.service, greeter());
    // The stream ended: the watcher says "list again", then carries on.
    let reset = next(&mut w).await.unwrap_err();
    assert!(reset.detail().contains("list again"), "{reset}");
    assert_eq!(next(&mut w).await.unwrap().kind, EventKind::Added);
    assert!(*scripted.watches.lock().unwrap() >= 2);
    drop(w);
}

/// A Broker API that records publications and whose Subscribe streams the
/// recorded messages so far, then ends.
#[derive(Default)]
struct ScriptedBroker {
    published: Mutex<Vec<pb::PublishRequest>>,
    subscribes: Mutex<Vec<pb::SubscribeRequest>>,
}

impl pb::broker_server::Broker for ScriptedBroker {
    async fn publish(
        &self,
        request: Request<pb::PublishRequest>,
    ) -> Result<pb::PublishResponse, Error> {
        self.published.lock().unwrap().push(request.into_inner());
        Ok(pb::PublishResponse { id: "id-1".into() })
    }

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<ResponseStream<pb::Message>, Error> {
        let request = request.into_inner();
        let message = pb::Message {
            topic: request.topic.clone(),
            id: format!("m{}", self.subscribes.lock().unwrap().len()),
            headers: [("content-type".to_string(), "application/json".to_string())].into(),
            message: Some(serde_json::from_value(serde_json::json!({"n": 1})).unwrap()),
            body: Vec::new(),
        };
        self.subscribes.lock().unwrap().push(request);
        Ok(micro::stream_of(vec![message]))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_broker_speaks_the_broker_api() {
    let scripted = Arc::new(ScriptedBroker::default());
    let address =
        serve(Server::new("micro.proxy").handler(BrokerServer::from_arc(scripted.clone()))).await;
    let registry: Arc<dyn Registry> = Arc::new(registry::MemoryRegistry::new());
    let b = broker::from_name("service", std::slice::from_ref(&address), registry).unwrap();
    assert_eq!(b.name(), "service");

    // A message goes as it is: raw body, its content type, its headers.
    let m = Message::new(vec![0xffu8, 0])
        .header("content-type", "application/x-thing")
        .header("micro-id", "mine")
        .header("x-a", "b");
    b.publish("t.one", m).await.unwrap();
    let sent = scripted.published.lock().unwrap().clone();
    assert_eq!(sent[0].topic, "t.one");
    assert_eq!(sent[0].body, vec![0xff, 0]);
    assert!(sent[0].message.is_none());
    assert_eq!(sent[0].content_type, "application/x-thing");
    assert_eq!(sent[0].headers["micro-id"], "mine");
    assert_eq!(sent[0].headers["x-a"], "b");
    // Bad topics are refused before any call.
    assert_eq!(
        b.publish("a b", Message::new("x"))
            .await
            .unwrap_err()
            .code(),
        400
    );
    assert_eq!(scripted.published.lock().unwrap().len(), 1);

    // Each time the proxy ends the stream, the subscription re-opens it.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let sub = b
        .subscribe(
            "t.one",
            handler(move |d| {
                tx.send(d).ok();
                async { Ok(()) }
            }),
            SubscribeOptions::default().queue("workers"),
        )
        .await
        .unwrap();
    for expected in ["m0", "m1"] {
        let d = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("a delivery in time")
            .unwrap();
        assert_eq!(d.topic, "t.one");
        assert_eq!(d.message.id(), Some(expected));
        assert_eq!(d.message.body, r#"{"n":1}"#, "JSON arrives re-encoded");
    }
    let subscribes = scripted.subscribes.lock().unwrap().clone();
    assert!(subscribes
        .iter()
        .all(|s| s.queue == "workers" && s.topic == "t.one"));
    sub.unsubscribe().await.unwrap();
    // Nothing is delivered once unsubscribe returned.
    while rx.try_recv().is_ok() {}
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(rx.try_recv().is_err(), "a delivery after unsubscribe");
}

#[tokio::test]
async fn an_unreachable_proxy_says_what_to_do() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    drop(listener);
    let b = broker::ServiceBroker::new(address.clone());
    let err = b.publish("t", Message::new("x")).await.unwrap_err();
    assert!(err.detail().contains("MICRO_BROKER_ADDRESS"), "{err}");
    let err = b
        .subscribe(
            "t",
            handler(|_| async { Ok(()) }),
            SubscribeOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(err.detail().contains(&address), "{err}");
    assert_eq!(
        registry::ServiceRegistry::new("").address(),
        "",
        "the address is taken as given"
    );
    let r = registry::from_name("service", &[], Ownership::Process).unwrap();
    assert_eq!(r.name(), "service");
    assert_eq!(
        registry::ServiceRegistry::DEFAULT_ADDRESS,
        broker::ServiceBroker::DEFAULT_ADDRESS
    );
}
