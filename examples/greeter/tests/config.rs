//! The greeting word comes from config and changes live: from the config file, from
//! etcd (a real one, Debian's etcd-server on loopback), and from the environment.

// Test helpers outside #[test] functions unwrap too: a panic is a failed test.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use greeter::proto::HelloRequest;
use greeter::{Greeter, GreeterClient, GreeterServer};
use micro::config::etcd_server::EtcdServer;
use micro::config::{Config, EnvSource, EtcdSource, Store};
use micro::registry::{MemoryRegistry, Registry};
use serde_json::json;

struct Running {
    client: GreeterClient,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), micro::BoxError>>,
}

/// Starts a greeter built from `builder` (name, handler and registry added here)
/// the way main.rs builds it: the greeting read from `service.config()`.
async fn start(builder: micro::ServiceBuilder) -> Running {
    let registry = Arc::new(MemoryRegistry::new());
    let service = builder
        .name("greeter")
        .registry(registry.clone())
        .build()
        .unwrap();
    let greeter = Greeter::default().with_config(service.config());
    let service = service.handler(GreeterServer::new(greeter));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(service.serve(listener, async move {
        let _ = stopped.await;
    }));
    let deadline = Instant::now() + Duration::from_secs(10);
    while registry.get_service("greeter").await.is_err() {
        assert!(!task.is_finished(), "the greeter stopped: {:?}", task.await);
        assert!(Instant::now() < deadline, "the greeter did not register");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Running {
        client: GreeterClient::new("greeter", micro::Client::new(registry)),
        stop,
        task,
    }
}

impl Running {
    async fn hello(&self) -> String {
        self.client
            .hello(HelloRequest {
                name: "John".into(),
            })
            .await
            .unwrap()
            .message
    }

    /// Waits up to `limit` for the answer to become `want`.
    async fn answers_within(&self, want: &str, limit: Duration, after: &str) {
        let deadline = Instant::now() + limit;
        loop {
            let got = self.hello().await;
            if got == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "after {after}: still {got:?} after {limit:?}, expected {want:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(self) {
        self.stop.send(()).unwrap();
        self.task.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn greeting_from_the_config_file_changes_live() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("greeter.yaml");
    std::fs::write(&file, "greeter:\n  greeting: Hi\n").unwrap();
    let path = file.to_str().unwrap().to_string();
    let svc = start(micro::Service::builder().args(["greeter", "--config_file", &path])).await;
    assert_eq!(svc.hello().await, "Hi John");
    // An editor's save: a new file renamed over the old one.
    let new = dir.path().join("greeter.yaml.swp");
    std::fs::write(&new, "micro: {}\ngreeter:\n  greeting: Howdy\n").unwrap();
    std::fs::rename(&new, &file).unwrap();
    svc.answers_within("Howdy John", Duration::from_secs(1), "editing the file")
        .await;
    // A broken file keeps the last good greeting.
    std::fs::write(&file, "greeter: [\n").unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(svc.hello().await, "Howdy John");
    // Removing the key: back to the default.
    std::fs::write(&file, "greeter: {}\n").unwrap();
    svc.answers_within("Hello John", Duration::from_secs(1), "removing the key")
        .await;
    svc.stop().await;
}

#[tokio::test]
async fn greeting_from_etcd_changes_live() {
    let Some(etcd) = EtcdServer::start().await else {
        return;
    };
    let store = EtcdSource::new([etcd.address()]);
    store.write("greeter.greeting", json!("Hej")).await.unwrap();
    let address = etcd.address();
    let svc = start(micro::Service::builder().args([
        "greeter",
        "--config",
        "etcd",
        "--config_address",
        &address,
    ]))
    .await;
    assert_eq!(svc.hello().await, "Hej John");
    store
        .write("greeter.greeting", json!("Hola"))
        .await
        .unwrap();
    svc.answers_within("Hola John", Duration::from_secs(1), "writing etcd")
        .await;
    svc.stop().await;
}

#[tokio::test]
async fn unreachable_config_store_stops_the_start_with_a_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address = format!("127.0.0.1:{port}");
    let service = micro::Service::builder()
        .name("greeter")
        .registry(Arc::new(MemoryRegistry::new()))
        .args(["greeter", "--config", "etcd", "--config_address", &address])
        .build()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = service
        .serve(listener, std::future::pending())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("config source etcd:/micro/config/: cannot connect"),
        "{err}"
    );
    // The config service of `micro server` (nothing listens there): said at start.
    let service = micro::Service::builder()
        .name("greeter")
        .registry(Arc::new(MemoryRegistry::new()))
        .args([
            "greeter",
            "--config",
            "service",
            "--config_address",
            &address,
        ])
        .build()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = service
        .serve(listener, std::future::pending())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(&format!("config source service:{address}: ")),
        "{err}"
    );
    assert!(err.contains("is `micro server`"), "{err}");
}

#[tokio::test]
async fn greeting_from_the_environment_and_a_config_given_in_code() {
    let config = Config::builder()
        .source(EnvSource::service("greeter").vars([("GREETER_GREETING", "Servus")]))
        .build();
    let svc = start(micro::Service::builder().config(config)).await;
    assert_eq!(svc.hello().await, "Servus John");
    svc.stop().await;
}
