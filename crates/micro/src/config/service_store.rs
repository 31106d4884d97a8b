//! [`ServiceStore`]: the config service of `micro server`, reached through the
//! proxy's `micro.v1.Config` API (`--config service` / `MICRO_CONFIG=service`).

use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::stream::{self, BoxStream};
use futures_util::StreamExt;
use serde_json::Value;

use super::error::{ConfigError, ErrorKind};
use super::{check_path, Source, Store};
use crate::client::CallOptions;
use crate::proto::v1::config_client::ConfigClient;
use crate::proto::v1::{
    ConfigChange, DeleteRequest, ReadRequest, WatchConfigRequest, WriteRequest,
};
use crate::{Client, Error, Streaming};

/// Where the config service is when `--config_address` / `MICRO_CONFIG_ADDRESS`
/// does not say: the proxy of a `micro server` on this machine.
pub const DEFAULT_ADDRESS: &str = "127.0.0.1:8081";

/// The name the proxy serves its API under (used in errors only: calls go to the
/// pinned address).
const PROXY: &str = "micro.proxy";

/// How long a Watch stream may run before it is opened anew.
const WATCH_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);
/// First and longest wait before reconnecting a broken Watch stream.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The config store of `micro server`: a [`Source`] and [`Store`] over the
/// proxy's `Config` API (Read, Write, Delete, Watch) at one address.
///
/// It is watched over `Config.Watch`: every change made through the API
/// (`micro config set greeter.greeting Hola`) reaches a service at once. A
/// broken stream is reopened with back-off (100 ms doubling to 5 s), and the
/// first value after it reopens is the whole tree, so nothing is missed for long.
///
/// ```no_run
/// use micro::config::{Config, ServiceStore, Store};
/// use serde_json::json;
///
/// # async fn run() -> Result<(), micro::config::ConfigError> {
/// // `micro server` runs on this machine.
/// let store = std::sync::Arc::new(ServiceStore::new("127.0.0.1:8081"));
/// store.write("greeter.greeting", json!("Hola")).await?;
/// let config = Config::builder().shared_source(store).load().await?;
/// assert_eq!(config.get::<String>("greeter.greeting")?, "Hola");
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct ServiceStore {
    address: String,
    api: ConfigClient,
    options: CallOptions,
}

impl ServiceStore {
    /// The config service of the proxy at `address` (`host:port`; `:8081` means
    /// `127.0.0.1:8081`).
    pub fn new(address: impl Into<String>) -> Self {
        let address = address.into();
        let address = match address.trim() {
            "" => DEFAULT_ADDRESS.to_string(),
            a if a.starts_with(':') => format!("127.0.0.1{a}"),
            a => a.to_string(),
        };
        let client = Client::builder().build();
        ServiceStore {
            api: ConfigClient::new(PROXY, client),
            options: CallOptions::default().address(address.clone()),
            address,
        }
    }

    /// Uses `client` for the calls (its timeouts, wrappers and pool).
    pub fn client(mut self, client: Client) -> Self {
        self.api = ConfigClient::new(PROXY, client);
        self
    }

    /// The address of the proxy.
    pub fn address(&self) -> &str {
        &self.address
    }

    fn error(&self, e: Error) -> ConfigError {
        let kind = match e.code() {
            400 => ErrorKind::Invalid,
            401 | 403 => ErrorKind::Denied,
            404 => ErrorKind::NotFound,
            _ => ErrorKind::Unavailable,
        };
        let hint = if kind == ErrorKind::Unavailable {
            "; is `micro server` (or `micro proxy`) running there? Start it, or point \
             --config_address / MICRO_CONFIG_ADDRESS at it"
        } else {
            ""
        };
        ConfigError::source_error(kind, &self.name(), format!("{}{hint}", e.detail()))
    }

    fn json(
        &self,
        value: Option<crate::codegen::pbjson_types::Value>,
    ) -> Result<Value, ConfigError> {
        match value {
            None => Ok(Value::Null),
            Some(value) => Ok(crate::codec::value_to_json(value)),
        }
    }

    /// The tree a change of the whole tree carries.
    fn tree_of(&self, change: ConfigChange) -> Result<Value, ConfigError> {
        if change.deleted {
            return Ok(Value::Object(serde_json::Map::new()));
        }
        self.json(change.value)
    }

    async fn open_watch(&self) -> Result<Streaming<ConfigChange>, Error> {
        let options = self.options.clone().timeout(WATCH_TIMEOUT).retries(0);
        self.api
            .watch_with(
                WatchConfigRequest {
                    path: String::new(),
                },
                &options,
            )
            .await
    }
}

/// The state of a watch: the store, the open stream, the next back-off.
struct Watching {
    store: ServiceStore,
    stream: Option<Streaming<ConfigChange>>,
    backoff: Duration,
    failing: bool,
}

impl Watching {
    async fn next(mut self) -> Option<(Result<Value, ConfigError>, Watching)> {
        loop {
            let stream = match self.stream.as_mut() {
                Some(stream) => stream,
                None => match self.store.open_watch().await {
                    Ok(stream) => self.stream.insert(stream),
                    Err(e) => {
                        self.broken(&e.to_string()).await;
                        continue;
                    }
                },
            };
            match stream.next().await {
                Some(Ok(change)) => {
                    if self.failing {
                        tracing::info!(source = %self.store.name(), "config watch reconnected");
                    }
                    self.failing = false;
                    self.backoff = BACKOFF_MIN;
                    let tree = self.store.tree_of(change);
                    return Some((tree, self));
                }
                Some(Err(e)) => {
                    self.stream = None;
                    self.broken(&e.to_string()).await;
                }
                None => {
                    self.stream = None;
                    self.broken("the stream ended").await;
                }
            }
        }
    }

    async fn broken(&mut self, why: &str) {
        if !self.failing {
            tracing::warn!(
                source = %self.store.name(),
                error = why,
                "config watch broken; reconnecting with back-off"
            );
        }
        self.failing = true;
        tokio::time::sleep(self.backoff).await;
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }
}

impl Source for ServiceStore {
    fn name(&self) -> String {
        format!("service:{}", self.address)
    }

    fn read(&self) -> BoxFuture<'_, Result<Value, ConfigError>> {
        Box::pin(async move {
            let answer = self
                .api
                .read_with(
                    ReadRequest {
                        path: String::new(),
                    },
                    &self.options,
                )
                .await
                .map_err(|e| self.error(e))?;
            self.json(answer.value)
        })
    }

    fn watch(&self) -> Option<BoxStream<'static, Result<Value, ConfigError>>> {
        let state = Watching {
            store: self.clone(),
            stream: None,
            backoff: BACKOFF_MIN,
            failing: false,
        };
        Some(stream::unfold(state, Watching::next).boxed())
    }
}

impl Store for ServiceStore {
    fn write<'a>(&'a self, path: &'a str, value: Value) -> BoxFuture<'a, Result<(), ConfigError>> {
        Box::pin(async move {
            check_path(path)?;
            let value = serde_json::from_value(value)
                .map_err(|e| ConfigError::new(ErrorKind::Invalid, format!("{path}: {e}")))?;
            self.api
                .write_with(
                    WriteRequest {
                        path: path.to_string(),
                        value: Some(value),
                    },
                    &self.options,
                )
                .await
                .map_err(|e| self.error(e))?;
            Ok(())
        })
    }

    fn delete<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<(), ConfigError>> {
        Box::pin(async move {
            check_path(path)?;
            self.api
                .delete_with(
                    DeleteRequest {
                        path: path.to_string(),
                    },
                    &self.options,
                )
                .await
                .map_err(|e| self.error(e))?;
            Ok(())
        })
    }

    fn get<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<Option<Value>, ConfigError>> {
        Box::pin(async move {
            if !path.is_empty() {
                check_path(path)?;
            }
            match self
                .api
                .read_with(
                    ReadRequest {
                        path: path.to_string(),
                    },
                    &self.options,
                )
                .await
            {
                Ok(answer) => Ok(Some(self.json(answer.value)?)),
                Err(e) if e.code() == 404 => Ok(None),
                Err(e) => Err(self.error(e)),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[tokio::test]
    async fn an_absent_proxy_is_a_clear_unavailable_error() {
        // A port nothing listens on: bind, then drop.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let store = ServiceStore::new(format!(":{port}"));
        assert_eq!(store.name(), format!("service:127.0.0.1:{port}"));
        let err = store.read().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
        assert!(err.to_string().contains("micro server"), "{err}");
        assert_eq!(
            store.write("", Value::Null).await.unwrap_err().kind(),
            ErrorKind::Invalid
        );
    }
}
