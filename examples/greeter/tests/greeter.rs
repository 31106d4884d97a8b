//! The greeter answers typed, JSON and streaming calls, and rejects an empty name.

// Test helpers outside #[test] functions unwrap too: a panic is a failed test.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use futures_util::StreamExt;
use greeter::proto::{HelloRequest, StreamRequest};
use greeter::{Greeter, GreeterClient, GreeterServer};
use micro::client::CallOptions;
use micro::registry::{MemoryRegistry, Registry};
use std::sync::Arc;

struct Running {
    address: String,
    registry: Arc<MemoryRegistry>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), micro::BoxError>>,
}

async fn start(greeter: Greeter) -> Running {
    let registry = Arc::new(MemoryRegistry::new());
    let service = micro::Service::builder()
        .name("greeter")
        .registry(registry.clone())
        .handler(GreeterServer::new(greeter))
        .build()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(service.serve(listener, async move {
        let _ = stopped.await;
    }));
    // Registered once serve has started.
    for _ in 0..100 {
        if registry.get_service("greeter").await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Running {
        address,
        registry,
        stop,
        task,
    }
}

impl Running {
    async fn stop(self) {
        self.stop.send(()).unwrap();
        self.task.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn hello_by_registry_lookup() {
    let svc = start(Greeter::default()).await;
    let client = GreeterClient::new("greeter", micro::Client::new(svc.registry.clone()));
    let rsp = client
        .hello(HelloRequest {
            name: "John".into(),
        })
        .await
        .unwrap();
    assert_eq!(rsp.message, "Hello John");
    svc.stop().await;
}

#[tokio::test]
async fn empty_name_is_a_400() {
    let svc = start(Greeter::default()).await;
    let client = GreeterClient::new("greeter", micro::Client::new(svc.registry.clone()));
    for name in ["", "   "] {
        let err = client
            .hello(HelloRequest { name: name.into() })
            .await
            .unwrap_err();
        assert_eq!(
            (err.code(), err.id(), err.detail()),
            (400, "greeter", "name is required")
        );
    }
    svc.stop().await;
}

#[tokio::test]
async fn custom_greeting_and_json_call() {
    let svc = start(Greeter::new("Hi")).await;
    let rsp = micro::Client::default()
        .call_json(
            "greeter",
            "Greeter.Hello",
            &serde_json::json!({"name": "Jane"}),
            &CallOptions::default().address(svc.address.clone()),
        )
        .await
        .unwrap();
    assert_eq!(rsp, serde_json::json!({"message": "Hi Jane"}));
    svc.stop().await;
}

#[tokio::test]
async fn stream_sends_count_greetings() {
    let svc = start(Greeter::default().with_interval(Duration::from_millis(5))).await;
    let client = GreeterClient::new("greeter", micro::Client::new(svc.registry.clone()));
    let all: Vec<_> = client
        .stream(StreamRequest {
            name: "John".into(),
            count: 4,
        })
        .await
        .unwrap()
        .collect()
        .await;
    let seq: Vec<i32> = all.into_iter().map(|r| r.unwrap().sequence).collect();
    assert_eq!(seq, vec![1, 2, 3, 4]);
    let default: Vec<_> = client
        .stream(StreamRequest {
            name: "John".into(),
            count: 0,
        })
        .await
        .unwrap()
        .collect()
        .await;
    assert_eq!(default.len(), greeter::DEFAULT_STREAM_COUNT as usize);
    let err = client
        .stream(StreamRequest {
            name: "John".into(),
            count: 5000,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), 400);
    svc.stop().await;
}

#[tokio::test]
async fn registry_record_describes_the_endpoints() {
    let svc = start(Greeter::default()).await;
    let record = &svc.registry.get_service("greeter").await.unwrap()[0];
    assert_eq!(record.version, "latest");
    assert_eq!(record.nodes[0].address, svc.address);
    assert_eq!(record.nodes[0].metadata["protocol"], "grpc+json");
    let names: Vec<&str> = record.endpoints.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, vec!["Greeter.Hello", "Greeter.Stream"]);
    let hello = &record.endpoints[0];
    assert_eq!(hello.request.name, "HelloRequest");
    assert_eq!(hello.request.schema["properties"]["name"]["type"], "string");
    assert_eq!(record.endpoints[1].metadata["stream"], "server");
    // A clean stop deregisters at once.
    let registry = svc.registry.clone();
    svc.stop().await;
    assert_eq!(
        registry.get_service("greeter").await.unwrap_err().code(),
        404
    );
}

#[tokio::test]
async fn each_greeting_is_announced_on_greeter_hello() {
    use micro::broker::{Broker, MemoryBroker};
    let broker = Arc::new(MemoryBroker::new());
    let service = micro::Service::builder()
        .name("greeter")
        .registry(Arc::new(MemoryRegistry::new()))
        .broker(broker.clone())
        .build()
        .unwrap();
    let publisher = service.publisher(greeter::HELLO_TOPIC);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let sub = broker
        .subscribe(
            greeter::HELLO_TOPIC,
            micro::broker::handler(move |d| {
                let tx = tx.clone();
                async move {
                    tx.send(d.message).unwrap();
                    Ok(())
                }
            }),
            Default::default(),
        )
        .await
        .unwrap();
    let greeter = Greeter::default().with_publisher(publisher);
    let rsp = greeter::proto::greeter_server::Greeter::hello(
        &greeter,
        micro::Request::new(HelloRequest {
            name: "John".into(),
        }),
    )
    .await
    .unwrap();
    assert_eq!(rsp.message, "Hello John");
    let msg = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    let event: serde_json::Value = serde_json::from_slice(&msg.body).unwrap();
    assert_eq!(
        event,
        serde_json::json!({"name": "John", "message": "Hello John"})
    );
    assert_eq!(msg.headers["micro-topic"], "greeter.hello");
    assert_eq!(msg.headers["micro-from-service"], "greeter");
    assert_eq!(msg.headers["content-type"], "application/json");
    assert!(!msg.headers["micro-id"].is_empty());
    drop(service);
    sub.unsubscribe().await.unwrap();
}

#[tokio::test]
async fn the_announcement_carries_the_callers_trace_context() {
    use micro::broker::{Broker, MemoryBroker};
    let broker = Arc::new(MemoryBroker::new());
    let registry = Arc::new(MemoryRegistry::new());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let sub = broker
        .subscribe(
            greeter::HELLO_TOPIC,
            micro::broker::handler(move |d| {
                let tx = tx.clone();
                async move {
                    tx.send(d.message).unwrap();
                    Ok(())
                }
            }),
            Default::default(),
        )
        .await
        .unwrap();
    let service = micro::Service::builder()
        .name("greeter")
        .registry(registry.clone())
        .broker(broker.clone())
        .build()
        .unwrap();
    let greeter = Greeter::default().with_publisher(service.publisher(greeter::HELLO_TOPIC));
    let service = service.handler(GreeterServer::new(greeter));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(service.serve(listener, async move {
        let _ = stopped.await;
    }));
    let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let client = GreeterClient::new("greeter", micro::Client::default()).with_options(
        CallOptions::default()
            .address(address)
            .metadata("traceparent", traceparent),
    );
    for _ in 0..50 {
        if client
            .hello(HelloRequest {
                name: "Tracy".into(),
            })
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let msg = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(msg.headers["traceparent"], traceparent);
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    sub.unsubscribe().await.unwrap();
}
