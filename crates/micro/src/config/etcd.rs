//! [`EtcdSource`]: keys under a prefix in etcd, watched; also a [`Store`].
//!
//! Spoken over etcd's v3 JSON API (the gRPC gateway every etcd since 3.4 serves on
//! its client port: `/v3/kv/range`, `/v3/kv/put`, `/v3/kv/deleterange`,
//! `/v3/watch`), with keys and values base64-encoded as that API wants. This needs
//! no generated gRPC code, and so no `protoc` at build time.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use futures_util::future::BoxFuture;
use futures_util::stream::{self, BoxStream};
use futures_util::StreamExt;
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::{json, Map, Value};

use super::error::{ConfigError, ErrorKind};
use super::http::{authority, call, send};
use super::{check_path, value, Source, Store};

/// The key prefix config lives under unless told otherwise (go-micro's).
pub const DEFAULT_PREFIX: &str = "/micro/config/";
/// The address tried when none is given.
pub const DEFAULT_ADDRESS: &str = "127.0.0.1:2379";
const TIMEOUT: Duration = Duration::from_secs(5);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Config in etcd: every key under a prefix (default `/micro/config/`), named
/// `etcd:<prefix>`. A key's path is what follows the prefix with `/` read as `.`:
/// `/micro/config/greeter/greeting` is `greeter.greeting`. A value is JSON
/// (`"Hi"`, `30`, `{"greeting":"Hi"}`); a value that is not JSON is a string, so
/// `etcdctl put /micro/config/greeter/greeting Hi` works too. Where a key and a key
/// under it both set a path, the deeper key wins.
///
/// Watched with etcd's watch API; when etcd goes away the watch reconnects (backing
/// off from 100 ms to 5 s) and re-reads everything, so no change is missed.
/// Writes store JSON (a written path replaces everything under it).
///
/// ```no_run
/// use micro::config::{Config, EtcdSource, Store};
///
/// # async fn demo() -> Result<(), micro::config::ConfigError> {
/// let etcd = EtcdSource::new(["127.0.0.1:2379"]);
/// etcd.write("greeter.greeting", serde_json::json!("Hi")).await?;
/// let config = Config::builder().source(etcd).load().await?;
/// assert_eq!(config.get::<String>("greeter.greeting")?, "Hi");
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct EtcdSource {
    endpoints: Vec<String>,
    prefix: String,
}

impl EtcdSource {
    /// etcd at these endpoints (`host:port` or `http://host:port`, tried in
    /// order; none means `127.0.0.1:2379`), under `/micro/config/`.
    pub fn new<I, S>(endpoints: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut endpoints: Vec<String> = endpoints
            .into_iter()
            .map(Into::into)
            .filter(|e| !e.trim().is_empty())
            .collect();
        if endpoints.is_empty() {
            endpoints.push(DEFAULT_ADDRESS.to_string());
        }
        EtcdSource {
            endpoints,
            prefix: DEFAULT_PREFIX.to_string(),
        }
    }

    /// Another key prefix (a `/` is added at the end if missing).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        let mut prefix = prefix.into();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        self.prefix = prefix;
        self
    }

    fn error(&self, kind: ErrorKind, message: impl std::fmt::Display) -> ConfigError {
        ConfigError::source_error(kind, &self.name(), message)
    }

    /// POSTs `body` to the first endpoint that answers.
    async fn post(&self, path: &str, body: &Value) -> Result<Value, ConfigError> {
        let mut failures = Vec::new();
        for endpoint in &self.endpoints {
            let authority = authority(endpoint).map_err(|e| self.error(ErrorKind::Invalid, e))?;
            match call(
                &authority,
                Method::POST,
                path,
                &[],
                Some(body.to_string().into_bytes()),
                TIMEOUT,
            )
            .await
            {
                Ok((StatusCode::OK, bytes)) => {
                    return serde_json::from_slice(&bytes).map_err(|e| {
                        self.error(
                            ErrorKind::Parse,
                            format!("a bad answer from {authority}: {e}"),
                        )
                    })
                }
                Ok((status, bytes)) => failures.push(format!(
                    "{authority} answered {status}: {}",
                    String::from_utf8_lossy(&bytes).trim()
                )),
                Err(e) => failures.push(e),
            }
        }
        Err(self.error(
            ErrorKind::Unavailable,
            format!(
                "{}; is etcd running? Start it, or pass its address with --config_address / \
                 MICRO_CONFIG_ADDRESS",
                failures.join("; ")
            ),
        ))
    }

    /// The whole tree under the prefix.
    async fn read_tree(&self) -> Result<Value, ConfigError> {
        let answer = self
            .post(
                "/v3/kv/range",
                &json!({"key": b64(&self.prefix), "range_end": b64(range_end(&self.prefix))}),
            )
            .await?;
        let mut kvs: Vec<(String, Value)> = Vec::new();
        for kv in answer["kvs"].as_array().into_iter().flatten() {
            let key = unb64(kv["key"].as_str().unwrap_or_default());
            let text = unb64(kv["value"].as_str().unwrap_or_default());
            let Some(rest) = key.strip_prefix(&self.prefix) else {
                continue;
            };
            let path: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
            let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
            kvs.push((path.join("."), value));
        }
        // Shallow keys first, so that deeper ones win where both set a path.
        kvs.sort_by_key(|(path, _)| path.matches('.').count() + usize::from(!path.is_empty()));
        let mut tree = Value::Object(Map::new());
        for (path, value) in kvs {
            let mut one = Value::Object(Map::new());
            value::set(&mut one, &path, value);
            value::merge(&mut tree, &one);
        }
        Ok(tree)
    }

    fn key_of(&self, path: &str) -> String {
        format!("{}{}", self.prefix, path.replace('.', "/"))
    }

    async fn delete_keys(&self, key: &str) -> Result<(), ConfigError> {
        self.post("/v3/kv/deleterange", &json!({"key": b64(key)}))
            .await?;
        let under = format!("{key}/");
        self.post(
            "/v3/kv/deleterange",
            &json!({"key": b64(&under), "range_end": b64(range_end(&under))}),
        )
        .await?;
        Ok(())
    }

    /// Opens a watch of the prefix on the first endpoint that accepts it.
    async fn open_watch(&self) -> Result<Incoming, String> {
        let body = json!({"create_request": {
            "key": b64(&self.prefix),
            "range_end": b64(range_end(&self.prefix)),
        }})
        .to_string();
        let mut failures = Vec::new();
        for endpoint in &self.endpoints {
            let authority = authority(endpoint)?;
            match send(
                &authority,
                Method::POST,
                "/v3/watch",
                &[],
                Some(body.clone().into_bytes()),
                TIMEOUT,
            )
            .await
            {
                Ok(response) if response.status() == StatusCode::OK => {
                    return Ok(response.into_body())
                }
                Ok(response) => {
                    failures.push(format!("{authority} answered {}", response.status()))
                }
                Err(e) => failures.push(e),
            }
        }
        Err(failures.join("; "))
    }
}

/// The end of the key range of everything starting with `prefix`.
fn range_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn b64(data: impl AsRef<[u8]>) -> String {
    BASE64.encode(data)
}

fn unb64(text: &str) -> String {
    String::from_utf8_lossy(&BASE64.decode(text).unwrap_or_default()).into_owned()
}

impl Source for EtcdSource {
    fn name(&self) -> String {
        format!("etcd:{}", self.prefix)
    }

    fn read(&self) -> BoxFuture<'_, Result<Value, ConfigError>> {
        Box::pin(self.read_tree())
    }

    fn watch(&self) -> Option<BoxStream<'static, Result<Value, ConfigError>>> {
        struct State {
            source: EtcdSource,
            body: Option<Incoming>,
            buffer: Vec<u8>,
            backoff: Duration,
            /// Whether the last failure was already sent (one log per outage).
            failing: bool,
        }
        let state = State {
            source: self.clone(),
            body: None,
            buffer: Vec::new(),
            backoff: BACKOFF_MIN,
            failing: false,
        };
        let updates = stream::unfold(state, |mut state| async move {
            loop {
                let Some(body) = state.body.as_mut() else {
                    // (Re)connect: watch first, then read, so nothing falls between.
                    let opened = state.source.open_watch().await;
                    let read = match opened {
                        Ok(body) => {
                            state.body = Some(body);
                            state.buffer.clear();
                            state.source.read_tree().await
                        }
                        Err(e) => Err(state.source.error(ErrorKind::Unavailable, e)),
                    };
                    match read {
                        Ok(tree) => {
                            if state.failing {
                                tracing::info!(source = %state.source.name(), "config source is back");
                            }
                            state.failing = false;
                            state.backoff = BACKOFF_MIN;
                            return Some((Ok(tree), state));
                        }
                        Err(e) => {
                            state.body = None;
                            tokio::time::sleep(state.backoff).await;
                            state.backoff = (state.backoff * 2).min(BACKOFF_MAX);
                            if !state.failing {
                                state.failing = true;
                                return Some((Err(e), state));
                            }
                            continue;
                        }
                    }
                };
                match body.frame().await {
                    Some(Ok(frame)) => {
                        let Ok(data) = frame.into_data() else {
                            continue;
                        };
                        state.buffer.extend_from_slice(&data);
                        if !take_events(&mut state.buffer) {
                            continue;
                        }
                        match state.source.read_tree().await {
                            Ok(tree) => return Some((Ok(tree), state)),
                            Err(e) => {
                                state.body = None;
                                return Some((Err(e), state));
                            }
                        }
                    }
                    // The connection ended: etcd went away or restarted.
                    Some(Err(_)) | None => {
                        state.body = None;
                        tokio::time::sleep(state.backoff).await;
                    }
                }
            }
        });
        Some(updates.boxed())
    }
}

/// Takes the complete watch messages off the front of `buffer`; true if one of
/// them reports changes.
fn take_events(buffer: &mut Vec<u8>) -> bool {
    let mut changed = false;
    let mut messages = serde_json::Deserializer::from_slice(buffer).into_iter::<Value>();
    let mut consumed = 0;
    while let Some(Ok(message)) = messages.next() {
        consumed = messages.byte_offset();
        let result = &message["result"];
        if result["events"].as_array().is_some_and(|e| !e.is_empty()) {
            changed = true;
        }
    }
    buffer.drain(..consumed);
    changed
}

impl Store for EtcdSource {
    fn write<'a>(&'a self, path: &'a str, value: Value) -> BoxFuture<'a, Result<(), ConfigError>> {
        Box::pin(async move {
            check_path(path)?;
            let key = self.key_of(path);
            // The written value replaces what was under the path.
            let under = format!("{key}/");
            self.post(
                "/v3/kv/deleterange",
                &json!({"key": b64(&under), "range_end": b64(range_end(&under))}),
            )
            .await?;
            self.post(
                "/v3/kv/put",
                &json!({"key": b64(&key), "value": b64(value.to_string())}),
            )
            .await?;
            Ok(())
        })
    }

    fn delete<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<(), ConfigError>> {
        Box::pin(async move {
            check_path(path)?;
            self.delete_keys(&self.key_of(path)).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_ranges_and_watch_messages() {
        assert_eq!(range_end("/micro/config/"), b"/micro/config0".to_vec());
        let mut buffer =
            br#"{"result":{"created":true}}{"result":{"events":[{"kv":{}}]}}{"result":"#.to_vec();
        assert!(take_events(&mut buffer));
        assert_eq!(buffer, br#"{"result":"#.to_vec());
        buffer.extend_from_slice(br#"{"events":[]}}"#);
        assert!(!take_events(&mut buffer));
        assert!(buffer.is_empty());
        assert_eq!(
            EtcdSource::new(Vec::<String>::new()).prefix("/x").name(),
            "etcd:/x/"
        );
    }
}
