//! The config service of `micro server`: the `Config` API over JSON/HTTP and gRPC
//! against an in-process proxy, the library's `service` store watching it live,
//! and the `micro server` / `micro proxy` binary (restart keeps config, the
//! non-loopback refusal, the placeholder ports, engine selection).
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream as StdTcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use micro::broker::MemoryBroker;
use micro::client::CallOptions;
use micro::codec::{json_to_value, value_to_json};
use micro::config::{ServiceStore, Source, Store};
use micro::options::ServiceOptions;
use micro::proto::health::v1::health_client::HealthClient;
use micro::proto::health::v1::HealthCheckRequest;
use micro::proto::v1::config_client::ConfigClient;
use micro::proto::v1::{DeleteRequest, ListRequest, ReadRequest, WatchConfigRequest, WriteRequest};
use micro::registry::MemoryRegistry;
use micro_cli::proxy::store::ConfigDb;
use micro_cli::proxy::Proxy;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

const MICRO: &str = env!("CARGO_BIN_EXE_micro");
const WAIT: Duration = Duration::from_secs(10);

/// A proxy over a fresh `ConfigDb`, served on a free loopback port.
struct Served {
    address: String,
    db: ConfigDb,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Served {
    async fn start() -> Served {
        let dir = tempfile::tempdir().unwrap();
        let db = ConfigDb::open(dir.path()).unwrap();
        let proxy = Proxy::new(
            Arc::new(MemoryRegistry::new()),
            Arc::new(MemoryBroker::new()),
            Arc::new(db.clone()),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            proxy
                .serve(listener, async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Served {
            address,
            db,
            stop: Some(stop),
            task,
            _dir: dir,
        }
    }

    fn grpc(&self) -> ConfigClient {
        ConfigClient::new("micro.proxy", micro::Client::builder().build())
            .with_options(CallOptions::default().address(self.address.clone()))
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(WAIT, &mut self.task).await;
    }
}

fn value(v: Value) -> Option<micro::codegen::pbjson_types::Value> {
    Some(serde_json::from_value(v).unwrap())
}

fn json_of(v: Option<micro::codegen::pbjson_types::Value>) -> Value {
    v.map(value_to_json).unwrap_or(Value::Null)
}

/// `POST path` with a JSON body over HTTP/1.1; the status and the body.
fn post(address: &str, path: &str, body: &Value) -> (u16, String) {
    post_with(address, path, body, "")
}

/// [`post`] with extra header lines (each ending in `\r\n`).
fn post_with(address: &str, path: &str, body: &Value, headers: &str) -> (u16, String) {
    let mut stream = StdTcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let body = body.to_string();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nhost: {address}\r\ncontent-type: application/json\r\n\
         {headers}content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// A chunked body's data (the JSON answers of a unary call may be chunked).
fn unchunk(body: &str) -> String {
    if body.trim_start().starts_with(['{', '[']) {
        return body.to_string();
    }
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.push_str(&after[..size]);
        rest = &after[size + 2..];
    }
    out
}

fn post_json(address: &str, path: &str, body: Value) -> (u16, Value) {
    let (status, text) = post(address, path, &body);
    let text = unchunk(&text);
    // google.protobuf.Value numbers are doubles: `2` may come back as `2.0`.
    (
        status,
        // JSON doubles (`5432.0`) back to the integers they were written as.
        value_to_json(json_to_value(
            serde_json::from_str(&text).unwrap_or(Value::Null),
        )),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_api_over_http_json() {
    let served = Served::start().await;
    let a = served.address.clone();
    let results = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        out.push(post_json(
            &a,
            "/micro.v1.Config/Read",
            json!({"path": "greeter.greeting"}),
        ));
        out.push(post_json(
            &a,
            "/micro.v1.Config/Write",
            json!({"path": "greeter", "value": {"greeting": "Hola", "times": 2}}),
        ));
        out.push(post_json(
            &a,
            "/micro.v1.Config/Read",
            json!({"path": "greeter.greeting"}),
        ));
        out.push(post_json(
            &a,
            "/micro.v1.Config/List",
            json!({"path": "greeter"}),
        ));
        out.push(post_json(
            &a,
            "/micro.v1.Config/Delete",
            json!({"path": "greeter.times"}),
        ));
        out.push(post_json(&a, "/micro.v1.Config/Read", json!({"path": ""})));
        out.push(post_json(
            &a,
            "/micro.v1.Config/Write",
            json!({"path": "", "value": 1}),
        ));
        out.push(post_json(
            &a,
            "/grpc.health.v1.Health/Check",
            json!({"service": "micro.v1.Config"}),
        ));
        out.push(post_json(
            &a,
            "/grpc.health.v1.Health/Check",
            json!({"service": "nope"}),
        ));
        out
    })
    .await
    .unwrap();
    let (status, err) = &results[0];
    assert_eq!(*status, 404, "{err}");
    assert_eq!(err["code"], 404);
    assert!(err["detail"].as_str().unwrap().contains("not set"), "{err}");
    assert_eq!(results[1], (200, json!({})));
    assert_eq!(results[2], (200, json!({"value": "Hola"})));
    assert_eq!(
        results[3],
        (
            200,
            json!({"entries": [
                {"path": "greeter.greeting", "value": "Hola"},
                {"path": "greeter.times", "value": 2},
            ]})
        )
    );
    assert_eq!(results[4].0, 200);
    assert_eq!(
        results[5],
        (200, json!({"value": {"greeter": {"greeting": "Hola"}}}))
    );
    assert_eq!(results[6].0, 400, "{:?}", results[6]);
    assert_eq!(results[7], (200, json!({"status": "SERVING"})));
    assert_eq!(results[8].0, 404);
    // What the API wrote is in the database.
    assert_eq!(served.db.get("greeter.greeting"), Some(json!("Hola")));
    assert_eq!(served.db.revision(), 2);
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_api_over_grpc_with_watch() {
    let served = Served::start().await;
    let api = served.grpc();
    let err = api
        .read(ReadRequest { path: "a.b".into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), 404);

    let mut watch = api
        .watch(WatchConfigRequest { path: "a".into() })
        .await
        .unwrap();
    let first = watch.next().await.unwrap().unwrap();
    assert!(first.deleted);
    assert_eq!(first.path, "a");

    for (path, v) in [("a.b", json!(1)), ("a.c", json!("x")), ("zzz", json!(true))] {
        api.write(WriteRequest {
            path: path.into(),
            value: value(v),
        })
        .await
        .unwrap();
    }
    api.write(WriteRequest {
        path: "a.b".into(),
        value: value(json!(2)),
    })
    .await
    .unwrap();
    api.delete(DeleteRequest { path: "a".into() })
        .await
        .unwrap();

    // Every change of "a", in order; the write of "zzz" does not touch it.
    let mut seen = Vec::new();
    for _ in 0..4 {
        let change = tokio::time::timeout(WAIT, watch.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.push((json_of(change.value), change.deleted));
    }
    assert_eq!(
        seen,
        [
            (json!({"b": 1}), false),
            (json!({"b": 1, "c": "x"}), false),
            (json!({"b": 2, "c": "x"}), false),
            (Value::Null, true),
        ]
    );
    let listed = api.list(ListRequest::default()).await.unwrap();
    assert_eq!(listed.entries.len(), 1);
    assert_eq!(listed.entries[0].path, "zzz");
    let read = api.read(ReadRequest { path: "zzz".into() }).await.unwrap();
    assert_eq!(json_of(read.value), json!(true));

    let health = HealthClient::new("micro.proxy", micro::Client::builder().build())
        .with_options(CallOptions::default().address(served.address.clone()));
    let answer = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(answer.status, 1);
    drop(watch);
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_with_micro_config_service_sees_live_changes() {
    let served = Served::start().await;
    served
        .db
        .set("greeter.greeting", json!("Hello"))
        .await
        .unwrap();
    // What a service with MICRO_CONFIG=service MICRO_CONFIG_ADDRESS=<proxy> loads.
    let options = ServiceOptions {
        server_name: "greeter".into(),
        config: Some("service".into()),
        config_address: vec![served.address.clone()],
        ..ServiceOptions::default()
    };
    let config = micro::config::for_service(&options).unwrap();
    config.load().await.unwrap();
    assert_eq!(config.get::<String>("greeter.greeting").unwrap(), "Hello");
    let mut changes = config.watch("greeter.greeting");

    // `micro config set greeter.greeting Hola`, through the library store.
    let store = ServiceStore::new(served.address.clone());
    assert_eq!(store.name(), format!("service:{}", served.address));
    store
        .write("greeter.greeting", json!("Hola"))
        .await
        .unwrap();
    let next = tokio::time::timeout(WAIT, changes.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(next, json!("Hola"));
    assert_eq!(config.get::<String>("greeter.greeting").unwrap(), "Hola");
    assert_eq!(
        store.get("greeter").await.unwrap(),
        Some(json!({"greeting": "Hola"}))
    );
    assert_eq!(store.get("greeter.nothing").await.unwrap(), None);
    store.delete("greeter").await.unwrap();
    let next = tokio::time::timeout(WAIT, changes.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(next, Value::Null);
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_store_reconnects_after_the_proxy_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap().to_string();
    let start = move |address: &str| {
        Running::start(&[
            "proxy",
            "--proxy_address",
            address,
            "--data_dir",
            &data,
            "--registry",
            "memory",
            "--broker",
            "memory",
        ])
    };
    let mut running = start("127.0.0.1:0");
    let address = tokio::task::block_in_place(|| running.address_of("proxy"));
    let store = ServiceStore::new(address.clone());
    store.write("k", json!(1)).await.unwrap();
    let mut trees = store.watch().unwrap();
    let first = tokio::time::timeout(WAIT, trees.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first, json!({"k": 1}));

    // The proxy goes away (at once, though a watch is open: the stop ends it
    // rather than waiting out the 10 s drain) and comes back on the same port: the
    // watch reconnects and its first tree is the current one.
    let stopping = std::time::Instant::now();
    tokio::task::block_in_place(|| assert!(running.terminate().success()));
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "{:?}",
        stopping.elapsed()
    );
    let mut running = start(&address);
    tokio::task::block_in_place(|| running.address_of("proxy"));
    store.write("k", json!(2)).await.unwrap();
    let mut last = Value::Null;
    while last != json!({"k": 2}) {
        last = tokio::time::timeout(WAIT, trees.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
    store.write("k", json!(3)).await.unwrap();
    let next = tokio::time::timeout(WAIT, trees.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(next, json!({"k": 3}));
    drop(trees);
    tokio::task::block_in_place(|| assert!(running.terminate().success()));
}

/// A `micro` process whose stderr lines are collected.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    log: Vec<String>,
}

impl Running {
    fn start(args: &[&str]) -> Running {
        let mut child = Command::new(MICRO)
            .args(args)
            .env("MICRO_LOG", "info")
            .env("MICRO_MDNS_INTERFACES", "none")
            .env_remove("MICRO_CONFIG_FILE")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running {
            child,
            lines,
            log: Vec::new(),
        }
    }

    /// The first line containing `text`.
    fn wait_for(&mut self, text: &str) -> String {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.log.push(line.clone());
                    if line.contains(text) {
                        return line;
                    }
                }
                Err(_) => panic!("no line with {text:?}; the log:\n{}", self.log.join("\n")),
            }
        }
    }

    /// Where `part` listens, from its log line.
    fn address_of(&mut self, part: &str) -> String {
        let line = self.wait_for(&format!("{part} listening on "));
        let after = line.split(&format!("{part} listening on ")).nth(1).unwrap();
        after.split_whitespace().next().unwrap().to_string()
    }

    /// SIGTERM, then the exit status within the wait.
    fn terminate(mut self) -> std::process::ExitStatus {
        let killed = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("micro did not stop on SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn server(data_dir: &str, extra: &[&str]) -> Running {
    let mut args = vec![
        "server",
        "--proxy_address",
        "127.0.0.1:0",
        "--api_address",
        "127.0.0.1:0",
        "--web_address",
        "127.0.0.1:0",
        "--data_dir",
        data_dir,
    ];
    args.extend_from_slice(extra);
    Running::start(&args)
}

/// Runs `micro` to the end: status, stdout, stderr.
fn micro(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(MICRO)
        .args(args)
        .env("MICRO_MDNS_INTERFACES", "none")
        .env_remove("MICRO_CONFIG")
        .env_remove("MICRO_CONFIG_ADDRESS")
        .env_remove("MICRO_CONFIG_FILE")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_micro_server_restart_keeps_config_values() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let engines = ["--registry", "memory", "--broker", "memory"];

    let mut running = server(data, &engines);
    let proxy = running.address_of("proxy");
    let api = running.address_of("api");
    let web = running.address_of("web");
    // `micro config` uses the config service by default.
    let (ok, out, err) = micro(&[
        "config",
        "set",
        "greeter.greeting",
        "Hola",
        "--config_address",
        &proxy,
    ]);
    assert!(ok, "{out}{err}");
    let (ok, out, err) = micro(&[
        "config",
        "set",
        "greeter.times",
        "3",
        "--config_address",
        &proxy,
    ]);
    assert!(ok, "{out}{err}");
    // The gateway serves: a path that names no endpoint is a 404 that says how
    // to name one. The dashboard's port is still a placeholder page.
    let (status, body) = post(&api, "/", &json!({}));
    assert_eq!(status, 404);
    assert!(
        body.contains("no route for /") && body.contains("micro.api"),
        "{body}"
    );
    let (status, body) = post(&web, "/", &json!({}));
    assert_eq!(status, 503);
    assert!(body.contains("<html>"), "{body}");
    let status = running.terminate();
    assert!(status.success(), "{status:?}");

    let mut running = server(data, &engines);
    let proxy = running.address_of("proxy");
    let (ok, out, err) = micro(&[
        "config",
        "get",
        "greeter",
        "--config_address",
        &proxy,
        "-o",
        "json",
    ]);
    assert!(ok, "{out}{err}");
    assert_eq!(
        serde_json::from_str::<Value>(out.trim()).unwrap(),
        json!({"greeting": "Hola", "times": 3})
    );
    let (ok, out, err) = micro(&["config", "del", "greeter.times", "--config_address", &proxy]);
    assert!(ok, "{out}{err}");
    let (ok, _, err) = micro(&["config", "get", "greeter.times", "--config_address", &proxy]);
    assert!(!ok);
    assert!(err.contains("not set"), "{err}");
    assert!(running.terminate().success());
}

#[test]
fn a_non_loopback_bind_is_refused_without_auth_or_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    for command in ["proxy", "server"] {
        let (ok, _, err) = micro(&[
            command,
            "--proxy_address",
            "0.0.0.0:0",
            "--data_dir",
            data,
            "--registry",
            "memory",
        ]);
        assert!(!ok, "{command} started on 0.0.0.0");
        assert!(err.contains("refusing to listen on 0.0.0.0:0"), "{err}");
        assert!(err.contains("--wrappers auth"), "{err}");
        assert!(err.contains("--insecure"), "{err}");
    }
    // The environment variable is read too.
    let out = Command::new(MICRO)
        .args(["proxy", "--data_dir", data])
        .env("MICRO_PROXY_ADDRESS", "0.0.0.0:0")
        .env("MICRO_MDNS_INTERFACES", "none")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing to listen"));
}

#[test]
fn micro_proxy_serves_the_api_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let mut running = Running::start(&[
        "proxy",
        "--proxy_address",
        "127.0.0.1:0",
        "--data_dir",
        data,
        "--registry",
        "memory",
        "--broker",
        "memory",
    ]);
    let proxy = running.address_of("proxy");
    let (status, body) = post_json(
        &proxy,
        "/micro.v1.Config/Write",
        json!({"path": "x", "value": [1, 2]}),
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = post_json(&proxy, "/micro.v1.Config/Read", json!({"path": "x"}));
    assert_eq!((status, body), (200, json!({"value": [1, 2]})));
    assert!(running.terminate().success());
}

#[test]
fn micro_server_selects_the_engines_it_is_told() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    // (micro has no etcd registry yet: `local` stands for "not the default".)
    let registry_dir = dir.path().join("registry");
    let mut running = server(
        data,
        &[
            "--registry",
            "local",
            "--registry_address",
            registry_dir.to_str().unwrap(),
            "--broker",
            "nats",
        ],
    );
    let line = running.wait_for("engines");
    assert!(line.contains("registry=local"), "{line}");
    assert!(line.contains("broker=nats"), "{line}");
    running.address_of("proxy");
}

#[test]
fn help_lists_every_option() {
    let (ok, out, _) = micro(&["server", "--help"]);
    assert!(ok);
    for flag in [
        "--proxy_address",
        "MICRO_PROXY_ADDRESS",
        "--api_address",
        "MICRO_API_ADDRESS",
        "--web_address",
        "MICRO_WEB_ADDRESS",
        "--data_dir",
        "MICRO_DATA_DIR",
        "--insecure",
        "MICRO_INSECURE",
        "--wrappers",
        "--wrapper",
        "--registry",
        "--broker",
    ] {
        assert!(out.contains(flag), "{flag} missing from:\n{out}");
    }
}

#[test]
fn the_auth_wrapper_guards_every_api_call() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let mut running = Running::start(&[
        "proxy",
        "--proxy_address",
        "127.0.0.1:0",
        "--data_dir",
        data,
        "--registry",
        "memory",
        "--broker",
        "memory",
        "--wrappers",
        "auth",
        "--wrapper",
        "auth.api_keys=k1:ops:admin",
    ]);
    let proxy = running.address_of("proxy");
    let read = json!({"path": "x"});
    let (status, body) = post(&proxy, "/micro.v1.Config/Read", &read);
    assert_eq!(status, 401, "{body}");
    let (status, body) = post_with(&proxy, "/micro.v1.Config/Read", &read, "x-api-key: k1\r\n");
    // Through auth to the handler: x is not set.
    assert_eq!(status, 404, "{body}");
    assert!(running.terminate().success());
}
