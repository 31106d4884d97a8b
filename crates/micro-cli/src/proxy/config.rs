//! `micro.v1.Config`: Read, Write, Delete, List and Watch over the proxy's config
//! store (the [`ConfigDb`](super::store::ConfigDb) of `micro server`, or any
//! [`StoreSource`]).

use std::sync::Arc;

use futures_util::stream::{self, StreamExt};
use micro::codegen::pbjson_types;
use micro::config::StoreSource;
use micro::proto::v1::config_server::{Config as ConfigApi, ConfigServer};
use micro::proto::v1::{
    ConfigChange, DeleteRequest, DeleteResponse, Entry, ListRequest, ListResponse, ReadRequest,
    ReadResponse, WatchConfigRequest, WriteRequest, WriteResponse,
};
use micro::{Error, Request, ResponseStream};
use serde_json::Value;

use super::store::value_at;
use super::{Parts, Stopping};

const ID: &str = "micro.config";

/// The `Config` API handler.
#[derive(Debug, Clone)]
pub struct ConfigHandler {
    store: Arc<dyn StoreSource>,
    stopping: Stopping,
}

/// The `micro.v1.Config` handler of the proxy.
pub fn handler(parts: &Parts) -> ConfigServer<ConfigHandler> {
    ConfigServer::new(ConfigHandler::new(parts.config.clone()).stopping(parts.stopping.clone()))
}

impl ConfigHandler {
    /// The handler over `store`.
    pub fn new(store: Arc<dyn StoreSource>) -> Self {
        ConfigHandler {
            store,
            stopping: Stopping::default(),
        }
    }

    /// Ends this handler's streams when `stopping` says so (the proxy does this
    /// at its stop).
    pub fn stopping(mut self, stopping: Stopping) -> Self {
        self.stopping = stopping;
        self
    }
}

/// A path from a request: trimmed; an empty one is the whole tree.
fn read_path(path: &str) -> Result<&str, Error> {
    let path = path.trim();
    if !path.is_empty() {
        super::store::check_path(path).map_err(Error::from)?;
    }
    Ok(path)
}

/// A path to change: not empty.
fn change_path(path: &str) -> Result<&str, Error> {
    let path = path.trim();
    if path.is_empty() {
        return Err(Error::bad_request(
            ID,
            "path is empty: give the dot-separated path to change, e.g. greeter.greeting",
        ));
    }
    super::store::check_path(path).map_err(Error::from)?;
    Ok(path)
}

/// A JSON value as a `google.protobuf.Value`.
pub(crate) fn to_proto(value: Value) -> Result<pbjson_types::Value, Error> {
    Ok(micro::codec::json_to_value(value))
}

/// A `google.protobuf.Value` as JSON (`null` when absent); whole numbers stay
/// integers.
pub(crate) fn from_proto(value: Option<pbjson_types::Value>) -> Result<Value, Error> {
    Ok(value.map_or(Value::Null, micro::codec::value_to_json))
}

fn change(path: &str, value: Option<Value>) -> Result<ConfigChange, Error> {
    Ok(ConfigChange {
        path: path.to_string(),
        deleted: value.is_none(),
        value: Some(to_proto(value.unwrap_or(Value::Null))?),
    })
}

impl ConfigApi for ConfigHandler {
    async fn read(&self, request: Request<ReadRequest>) -> Result<ReadResponse, Error> {
        let path = read_path(&request.get_ref().path)?;
        let value = if path.is_empty() {
            self.store.read().await?
        } else {
            self.store.get(path).await?.ok_or_else(|| {
                Error::not_found(
                    ID,
                    format!("{path} is not set; set it with `micro config set {path} VALUE`"),
                )
            })?
        };
        Ok(ReadResponse {
            value: Some(to_proto(value)?),
        })
    }

    async fn write(&self, request: Request<WriteRequest>) -> Result<WriteResponse, Error> {
        let message = request.into_inner();
        let path = change_path(&message.path)?;
        let value = from_proto(message.value)?;
        self.store.write(path, value).await?;
        Ok(WriteResponse {})
    }

    async fn delete(&self, request: Request<DeleteRequest>) -> Result<DeleteResponse, Error> {
        let path = change_path(&request.get_ref().path)?;
        self.store.delete(path).await?;
        Ok(DeleteResponse {})
    }

    async fn list(&self, request: Request<ListRequest>) -> Result<ListResponse, Error> {
        let path = read_path(&request.get_ref().path)?;
        let tree = self.store.read().await?;
        let mut leaves = Vec::new();
        if let Some(value) = value_at(&tree, path) {
            leaves_of(path, value, &mut leaves);
        }
        leaves.sort_by(|a, b| a.0.cmp(&b.0));
        let entries = leaves
            .into_iter()
            .map(|(path, value)| {
                Ok(Entry {
                    path,
                    value: Some(to_proto(value)?),
                })
            })
            .collect::<Result<_, Error>>()?;
        Ok(ListResponse { entries })
    }

    async fn watch(
        &self,
        request: Request<WatchConfigRequest>,
    ) -> Result<ResponseStream<ConfigChange>, Error> {
        let path = read_path(&request.get_ref().path)?.to_string();
        // Subscribe before reading, so no change falls between the two.
        let updates = self.store.watch();
        let tree = self.store.read().await?;
        let first = value_at(&tree, &path).cloned();
        let initial = change(&path, first.clone())?;
        let updates = updates.unwrap_or_else(|| stream::pending().boxed());
        let name = self.store.name();
        let changes = updates
            .scan(first, move |last, tree| {
                let item = match tree {
                    Ok(tree) => {
                        let now = value_at(&tree, &path).cloned();
                        if now == *last {
                            None
                        } else {
                            *last = now.clone();
                            Some(change(&path, now))
                        }
                    }
                    Err(e) => {
                        tracing::warn!(source = %name, error = %e, "a bad config update was skipped");
                        None
                    }
                };
                futures_util::future::ready(Some(item))
            })
            .filter_map(futures_util::future::ready);
        Ok(self.stopping.until_stopped(
            stream::once(futures_util::future::ready(Ok(initial)))
                .chain(changes)
                .boxed(),
        ))
    }
}

/// The leaves of `value` at `path`, as `ConfigDb` stores them.
fn leaves_of(path: &str, value: &Value, out: &mut Vec<(String, Value)>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, value) in map {
                let child = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                leaves_of(&child, value, out);
            }
        }
        Value::Object(_) if path.is_empty() => {}
        other => out.push((path.to_string(), other.clone())),
    }
}
