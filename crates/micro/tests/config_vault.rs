//! The Vault KV v2 config source against a small HTTP server in this test.
//!
//! No Vault server installs here, so the server below implements the one endpoint
//! the source uses, following Vault's documented request and response shapes
//! (https://developer.hashicorp.com/vault/api-docs/secret/kv/kv-v2#read-secret-version):
//! `GET /v1/<mount>/data/<path>` with the token in `X-Vault-Token`, answering
//! `{"data": {"data": {...}, "metadata": {"version": N, ...}}, "lease_duration": 0,
//! "renewable": false, ...}`, 403 `{"errors":["permission denied"]}` for a bad token
//! and 404 `{"errors":[]}` for a missing path.
#![cfg(feature = "vault")]
#![allow(clippy::unwrap_used)]

use std::convert::Infallible;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use micro::config::{Config, ErrorKind, MemorySource, Source, VaultSource};
use serde_json::{json, Value};

const TOKEN: &str = "s.test-token";
const PASSWORD: &str = "hunter2-first-secret";
const ROTATED: &str = "rotated-second-secret";

/// What the fake Vault answers for `secret/myapp/db`: a secret, or a status.
#[derive(Clone)]
enum Db {
    Secret(Value, u64),
    Broken,
}

async fn fake_vault(state: Arc<Mutex<Db>>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let state = state.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let state = state.clone();
                    async move {
                        let token = req
                            .headers()
                            .get("X-Vault-Token")
                            .and_then(|v| v.to_str().ok());
                        let (status, body) = if req.method() != http::Method::GET {
                            (405, json!({"errors": []}))
                        } else if token != Some(TOKEN) {
                            (403, json!({"errors": ["permission denied"]}))
                        } else if req.uri().path() != "/v1/secret/data/myapp/db" {
                            (404, json!({"errors": []}))
                        } else {
                            match state.lock().unwrap().clone() {
                                Db::Secret(data, version) => (
                                    200,
                                    json!({
                                        "request_id": "e3f0b6d4",
                                        "lease_id": "",
                                        "renewable": false,
                                        "lease_duration": 0,
                                        "data": {
                                            "data": data,
                                            "metadata": {
                                                "created_time": "2018-03-22T02:24:06.945319214Z",
                                                "custom_metadata": null,
                                                "deletion_time": "",
                                                "destroyed": false,
                                                "version": version
                                            }
                                        },
                                        "wrap_info": null,
                                        "warnings": null,
                                        "auth": null
                                    }),
                                ),
                                Db::Broken => (500, json!({"errors": ["internal error"]})),
                            }
                        };
                        let response = http::Response::builder()
                            .status(status)
                            .header("Content-Type", "application/json")
                            .body(Full::new(Bytes::from(body.to_string())))
                            .unwrap();
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    address
}

/// Log lines written while a test runs.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

// One thread: the log subscriber set for this test sees the config's tasks too.
#[tokio::test(flavor = "current_thread")]
async fn vault_secrets_reach_config_and_never_the_logs() {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let state = Arc::new(Mutex::new(Db::Secret(
        json!({"user": "app", "password": PASSWORD}),
        1,
    )));
    let address = fake_vault(state.clone()).await;
    let vault = VaultSource::new(&address, TOKEN, "myapp/db")
        .at("secrets.db")
        .refresh(Duration::from_millis(50));
    assert_eq!(vault.name(), "vault:secret/myapp/db");
    assert!(vault.secret());
    assert!(!format!("{vault:?}").contains(TOKEN));
    let config = Config::builder()
        .source(MemorySource::new("defaults").with(json!({"secrets": {"db": {"user": "default"}}})))
        .source(vault)
        .load()
        .await
        .unwrap();
    assert_eq!(config.get::<String>("secrets.db.user").unwrap(), "app");
    assert_eq!(
        config.get::<String>("secrets.db.password").unwrap(),
        PASSWORD
    );
    // A service given this config reads the secret through it.
    let service = micro::Service::builder()
        .name("vaulted")
        .registry(Arc::new(micro::registry::MemoryRegistry::new()))
        .config(config.clone())
        .build()
        .unwrap();
    assert_eq!(
        service
            .config()
            .get::<String>("secrets.db.password")
            .unwrap(),
        PASSWORD
    );
    assert!(!format!("{service:?} {:?}", service.config()).contains(PASSWORD));

    // A wrong type names the source and path, not the value.
    let err = config.get::<u64>("secrets.db.password").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WrongType);
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains(PASSWORD), "{shown}");
    assert!(
        shown.contains("vault:secret/myapp/db") && shown.contains("secrets.db.password"),
        "{shown}"
    );

    // A rotated secret reaches the running config.
    let mut passwords = config.watch("secrets.db.password");
    *state.lock().unwrap() = Db::Secret(json!({"user": "app", "password": ROTATED}), 2);
    let rotated = tokio::time::timeout(Duration::from_secs(1), passwords.next())
        .await
        .expect("the rotated secret within a second");
    assert_eq!(rotated, Some(json!(ROTATED)));

    // Vault failing keeps the last good secret, and says why in the log.
    *state.lock().unwrap() = Db::Broken;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !logs.text().contains("config update rejected") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no warning logged:\n{}",
            logs.text()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        config.get::<String>("secrets.db.password").unwrap(),
        ROTATED
    );
    let text = logs.text();
    assert!(
        text.contains("vault:secret/myapp/db") && text.contains("500"),
        "{text}"
    );
    assert!(
        !text.contains(PASSWORD) && !text.contains(ROTATED) && !text.contains(TOKEN),
        "{text}"
    );
}

#[tokio::test]
async fn vault_bad_token_missing_path_and_no_server_are_clear_errors() {
    let state = Arc::new(Mutex::new(Db::Secret(json!({"password": PASSWORD}), 1)));
    let address = fake_vault(state).await;
    let err = VaultSource::new(&address, "wrong", "myapp/db")
        .read()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Denied);
    assert!(
        err.to_string().contains("permission denied") && err.to_string().contains("VAULT_TOKEN"),
        "{err}"
    );
    let err = VaultSource::new(&address, TOKEN, "myapp/nope")
        .read()
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "config source vault:secret/myapp/nope: no secret at /v1/secret/data/myapp/nope: write it \
         (vault kv put secret/myapp/nope key=value) or fix the mount and path"
    );
    let err = VaultSource::new("https://vault.example:8200", TOKEN, "x")
        .read()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid);
    assert!(err.to_string().contains("https is not supported"), "{err}");
    // At the root by default.
    let tree = VaultSource::new(&address, TOKEN, "/myapp/db/")
        .read()
        .await
        .unwrap();
    assert_eq!(tree, json!({"password": PASSWORD}));
}
