//! [`EtcdSource`]: keys under a prefix in etcd, watched; also a [`Store`].
//!
//! Spoken over etcd's v3 JSON API (the gRPC gateway every etcd since 3.4 serves on
//! its client port: `/v3/kv/range`, `/v3/kv/put`, `/v3/kv/deleterange`,
//! `/v3/watch`), with keys and values base64-encoded as that API wants. This needs
//! no generated gRPC code, and so no `protoc` at build time.

use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::stream::{self, BoxStream};
use futures_util::StreamExt;
use serde_json::{json, Map, Value};

use super::error::{ConfigError, ErrorKind};
use super::{check_path, value, Source, Store};
use crate::etcd::{b64, range_end, unb64, EtcdClient, EtcdError, EtcdWatch};

/// The key prefix config lives under unless told otherwise (go-micro's).
pub const DEFAULT_PREFIX: &str = "/micro/config/";
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
/// It talks to etcd through an [`EtcdClient`]: several endpoints with failover,
/// and, built with [`EtcdSource::with_client`], TLS and username/password.
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
    client: EtcdClient,
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
        Self::with_client(EtcdClient::new(endpoints))
    }

    /// etcd through `client` (TLS, credentials, …), under `/micro/config/`.
    ///
    /// ```no_run
    /// use micro::config::EtcdSource;
    /// use micro::etcd::EtcdClient;
    ///
    /// let client = EtcdClient::builder(["10.0.0.1:2379"]).tls_ca("ca.pem").user("app", "pw").build()?;
    /// let source = EtcdSource::with_client(client).prefix("/app/config");
    /// # Ok::<(), micro::etcd::EtcdError>(())
    /// ```
    pub fn with_client(client: EtcdClient) -> Self {
        EtcdSource {
            client,
            prefix: DEFAULT_PREFIX.to_string(),
        }
    }

    /// Another key prefix (a `/` is added at the end if missing).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = crate::etcd::key_prefix(prefix.into());
        self
    }

    fn error(&self, kind: ErrorKind, message: impl std::fmt::Display) -> ConfigError {
        ConfigError::source_error(kind, &self.name(), message)
    }

    /// POSTs `body` to the first endpoint that answers.
    async fn post(&self, path: &str, body: &Value) -> Result<Value, ConfigError> {
        self.client
            .post(path, body)
            .await
            .map_err(|e| self.etcd_error(e))
    }

    fn etcd_error(&self, e: EtcdError) -> ConfigError {
        if e.is_unavailable() {
            self.error(
                ErrorKind::Unavailable,
                format!(
                    "{e}; is etcd running? Start it, or pass its address with --config_address / \
                     MICRO_CONFIG_ADDRESS"
                ),
            )
        } else if e.is_invalid() {
            self.error(ErrorKind::Invalid, e)
        } else {
            self.error(ErrorKind::Unavailable, e)
        }
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

    /// Opens a watch of the prefix.
    async fn open_watch(&self) -> Result<EtcdWatch, ConfigError> {
        self.client
            .watch(json!({
                "key": b64(&self.prefix),
                "range_end": b64(range_end(&self.prefix)),
            }))
            .await
            .map_err(|e| self.etcd_error(e))
    }
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
            watch: Option<EtcdWatch>,
            backoff: Duration,
            /// Whether the last failure was already sent (one log per outage).
            failing: bool,
        }
        let state = State {
            source: self.clone(),
            watch: None,
            backoff: BACKOFF_MIN,
            failing: false,
        };
        let updates = stream::unfold(state, |mut state| async move {
            loop {
                let Some(watch) = state.watch.as_mut() else {
                    // (Re)connect: watch first, then read, so nothing falls between.
                    let opened = state.source.open_watch().await;
                    let read = match opened {
                        Ok(watch) => {
                            state.watch = Some(watch);
                            state.source.read_tree().await
                        }
                        Err(e) => Err(e),
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
                            state.watch = None;
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
                match watch.next().await {
                    // Only responses with events come through.
                    Some(Ok(_)) => match state.source.read_tree().await {
                        Ok(tree) => return Some((Ok(tree), state)),
                        Err(e) => {
                            state.watch = None;
                            return Some((Err(e), state));
                        }
                    },
                    // The watch failed: etcd went away, restarted or lost its leader.
                    Some(Err(e)) => {
                        tracing::debug!(source = %state.source.name(), error = %e, "config watch ended; reconnecting");
                        state.watch = None;
                        tokio::time::sleep(state.backoff).await;
                    }
                    None => {
                        state.watch = None;
                        tokio::time::sleep(state.backoff).await;
                    }
                }
            }
        });
        Some(updates.boxed())
    }
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
    fn etcd_source_names() {
        assert_eq!(range_end("/micro/config/"), b"/micro/config0".to_vec());
        assert_eq!(
            EtcdSource::new(Vec::<String>::new()).prefix("/x").name(),
            "etcd:/x/"
        );
    }
}
