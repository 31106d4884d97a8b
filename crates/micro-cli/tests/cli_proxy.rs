//! Every `micro` verb through a micro proxy (`--proxy host:port` or
//! `MICRO_PROXY`): the registry verbs use the proxy's registry, publish and
//! subscribe its broker, call and stream go through it, health and stats reach
//! the service through its sidecar, the config verbs use its config store. An
//! in-process proxy over a memory registry, broker and config store, a greeter
//! on a loopback port registered in that registry, and the real `micro` binary.
#![allow(clippy::unwrap_used)]

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use micro::broker::{handler, Broker, MemoryBroker, Message};
use micro::codegen::pbjson_types::Struct;
use micro::config::{MemorySource, Source};
use micro::registry::{MemoryRegistry, Node, Registry, Service};
use micro::server::method::{server_streaming, unary};
use micro::server::{HandlerDesc, MethodDesc, MethodKind, Server, TypeDesc};
use micro::{Error, Request, ResponseStream};
use micro_cli::proxy::Proxy;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

const MICRO: &str = env!("CARGO_BIN_EXE_micro");
const WAIT: Duration = Duration::from_secs(10);
const ANY: TypeDesc = TypeDesc {
    name: "Struct",
    schema: "{}",
};

fn to_struct(v: Value) -> Struct {
    serde_json::from_value(v).unwrap()
}

/// `Greeter.Hello` (`{"name"}` → `{"message"}`) and the server-streaming
/// `Greeter.Stream` (`count` greetings).
fn greeter() -> HandlerDesc {
    let hello = unary(|req: Request<Struct>| async move {
        let body = serde_json::to_value(req.get_ref()).unwrap();
        let name = body["name"].as_str().unwrap_or_default().to_string();
        if name.is_empty() {
            return Err(Error::bad_request("greeter", "name is empty"));
        }
        Ok(to_struct(json!({"message": format!("Hello {name}")})))
    });
    let stream = server_streaming(|req: Request<Struct>| async move {
        let body = serde_json::to_value(req.get_ref()).unwrap();
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

async fn serve(server: Server) -> (String, oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(server.serve(listener, async {
        let _ = stopped.await;
    }));
    (address, stop)
}

/// A greeter registered as `greeter` in the registry of an in-process proxy.
struct World {
    proxy: String,
    greeter: String,
    registry: Arc<MemoryRegistry>,
    broker: Arc<MemoryBroker>,
    config: Arc<MemorySource>,
    _stops: Vec<oneshot::Sender<()>>,
}

impl World {
    async fn start() -> World {
        let registry = Arc::new(MemoryRegistry::new());
        let broker = Arc::new(MemoryBroker::new());
        let config = Arc::new(MemorySource::new("store"));
        let server = Server::new("greeter").handler(greeter());
        let endpoints = server.endpoints().unwrap();
        let (greeter, stop_greeter) = serve(server).await;
        let record = Service {
            name: "greeter".into(),
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
        let proxy = Proxy::new(registry.clone(), broker.clone(), config.clone());
        let (proxy, stop_proxy) = serve(proxy.server()).await;
        World {
            proxy,
            greeter,
            registry,
            broker,
            config,
            _stops: vec![stop_greeter, stop_proxy],
        }
    }
}

/// The `micro` binary with no MICRO_* settings from the caller's environment.
fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(MICRO);
    cmd.args(args).env("MICRO_MDNS_INTERFACES", "none");
    for (key, _) in std::env::vars() {
        if key.starts_with("MICRO_") && key != "MICRO_MDNS_INTERFACES" {
            cmd.env_remove(key);
        }
    }
    // Nothing on this machine's local registry may answer for the proxy's.
    cmd.env("MICRO_REGISTRY", "memory");
    cmd
}

/// Runs `micro ARGS`: success, stdout, stderr.
async fn micro(args: &[&str]) -> (bool, String, String) {
    micro_env(args, &[]).await
}

async fn micro_env(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = command(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(WAIT, tokio::task::spawn_blocking(move || cmd.output()))
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_verbs_use_the_proxys_registry() {
    let w = World::start().await;
    let p = w.proxy.as_str();

    let (ok, out, err) = micro(&["list", "services", "--proxy", p]).await;
    assert!(ok, "{err}");
    assert!(out.contains("greeter"), "{out}");
    // Without the proxy the (memory) registry of the command is empty.
    let (ok, out, _) = micro(&["list", "services"]).await;
    assert!(ok);
    assert!(!out.contains("greeter"), "{out}");
    // MICRO_PROXY does the same as --proxy.
    let (ok, out, err) =
        micro_env(&["list", "services", "-o", "json"], &[("MICRO_PROXY", p)]).await;
    assert!(ok, "{err}");
    assert!(out.contains("greeter"), "{out}");

    let (ok, out, err) = micro(&["get", "service", "greeter", "--proxy", p]).await;
    assert!(ok, "{err}");
    assert!(out.contains(&w.greeter), "{out}");
    assert!(out.contains("Greeter.Hello"), "{out}");

    let record =
        r#"{"name":"other","version":"1.0","nodes":[{"id":"other-1","address":"127.0.0.1:1"}]}"#;
    let (ok, _, err) = micro(&["register", "service", record, "--proxy", p]).await;
    assert!(ok, "{err}");
    let versions = w.registry.get_service("other").await.unwrap();
    assert_eq!(versions[0].nodes[0].address, "127.0.0.1:1");
    let (ok, _, err) = micro(&["deregister", "service", record, "--proxy", p]).await;
    assert!(ok, "{err}");
    assert!(w.registry.get_service("other").await.is_err());

    let (ok, _, err) = micro(&["get", "service", "nobody", "--proxy", p]).await;
    assert!(!ok);
    assert!(err.contains("nobody"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_and_stream_go_through_the_proxy() {
    let w = World::start().await;
    let p = w.proxy.as_str();
    let (ok, out, err) = micro(&[
        "call",
        "greeter",
        "Greeter.Hello",
        r#"{"name":"John"}"#,
        "--proxy",
        p,
    ])
    .await;
    assert!(ok, "{err}");
    assert!(out.contains("Hello John"), "{out}");
    let (ok, out, err) = micro_env(
        &["stream", "greeter", "Greeter.Stream", r#"{"count":2}"#],
        &[("MICRO_PROXY", p)],
    )
    .await;
    assert!(ok, "{err}");
    assert!(out.contains("Hello 1") && out.contains("Hello 2"), "{out}");
    // The greeter's error comes back through the proxy with its code.
    let (ok, _, err) = micro(&["call", "greeter", "Greeter.Hello", "{}", "--proxy", p]).await;
    assert!(!ok);
    assert!(err.contains("name is empty"), "{err}");
    // A proxy that is not there: a failure, not a hang.
    let (ok, _, _) = micro(&["call", "greeter", "Greeter.Hello", "--proxy", "127.0.0.1:1"]).await;
    assert!(!ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_stats_reach_the_service_through_the_proxy() {
    let w = World::start().await;
    let p = w.proxy.as_str();
    let (ok, out, err) = micro(&["health", "greeter", "--proxy", p]).await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("via-proxy") && out.contains("ok"), "{out}");
    let (ok, out, err) = micro(&["stats", "greeter", "-o", "json", "--proxy", p]).await;
    assert!(ok, "{out}{err}");
    let stats: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(stats[0]["id"], "via-proxy");
    assert!(stats[0]["stats"].is_object(), "{out}");
    // --address still asks that node directly.
    let (ok, out, err) = micro(&["health", "greeter", "--address", &w.greeter, "--proxy", p]).await;
    assert!(ok, "{err}");
    assert!(out.contains(&w.greeter), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_and_subscribe_use_the_proxys_broker() {
    let w = World::start().await;
    let p = w.proxy.as_str();

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let _sub = w
        .broker
        .subscribe(
            "greeter.hello",
            handler(move |d| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send(d.message.body.clone());
                    Ok(())
                }
            }),
            Default::default(),
        )
        .await
        .unwrap();
    let (ok, _, err) = micro(&[
        "publish",
        "greeter.hello",
        r#"{"name":"Ann"}"#,
        "--proxy",
        p,
    ])
    .await;
    assert!(ok, "{err}");
    let body = tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap()
        .unwrap();
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body, json!({"name": "Ann"}));

    let mut child = command(&["subscribe", "greeter.news", "-o", "json", "--proxy", p])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (line_tx, mut line_rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let _ = line_tx.send(line.unwrap());
        }
    });
    // Publish until the subscription is in place and the message printed.
    let printed = tokio::time::timeout(WAIT, async {
        loop {
            w.broker
                .publish("greeter.news", Message::new(br#"{"n":1}"#.to_vec()))
                .await
                .unwrap();
            tokio::select! {
                line = line_rx.recv() => return line.unwrap(),
                () = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    })
    .await;
    child.kill().unwrap();
    let _ = child.wait();
    let printed = printed.unwrap();
    assert!(printed.contains("\"n\":1"), "{printed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_verbs_use_the_proxys_config_store() {
    let w = World::start().await;
    let p = w.proxy.as_str();
    let (ok, _, err) = micro(&["config", "set", "greeter.greeting", "Hi", "--proxy", p]).await;
    assert!(ok, "{err}");
    let (ok, out, err) = micro_env(
        &["config", "get", "greeter.greeting"],
        &[("MICRO_PROXY", p)],
    )
    .await;
    assert!(ok, "{err}");
    assert!(out.contains("Hi"), "{out}");
    let stored = w.config.read().await.unwrap();
    assert_eq!(stored["greeter"]["greeting"], "Hi");
    let (ok, _, err) = micro(&["config", "del", "greeter", "--proxy", p]).await;
    assert!(ok, "{err}");
    let stored = w.config.read().await.unwrap();
    assert!(stored.get("greeter").is_none_or(Value::is_null), "{stored}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_verb_has_the_proxy_flag() {
    for verb in [
        &["list", "services"][..],
        &["get", "service"],
        &["register", "service"],
        &["deregister", "service"],
        &["call"],
        &["stream"],
        &["health"],
        &["stats"],
        &["publish"],
        &["subscribe"],
        &["config", "get"],
        &["config", "set"],
        &["config", "del"],
        &["config", "watch"],
    ] {
        let mut args = verb.to_vec();
        args.push("--help");
        let (ok, out, err) = micro(&args).await;
        assert!(ok, "{verb:?}: {err}");
        assert!(out.contains("--proxy"), "{verb:?} has no --proxy:\n{out}");
    }
}
