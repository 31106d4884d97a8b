//! Turning a broadcast of registry events into a [`Watcher`], as the in-process,
//! local and mDNS registries all do.

use futures_util::StreamExt;
use tokio::sync::broadcast;
use tokio_stream::wrappers::{errors::BroadcastStreamRecvError, BroadcastStream};

use super::{Event, Watcher};
use crate::Error;

/// A watcher of the events on `rx`, only those of `service` when given. A watcher
/// that falls behind gets an error telling it to list again (and then continues).
pub(crate) fn broadcast_watcher(
    rx: broadcast::Receiver<Event>,
    service: Option<String>,
    id: &'static str,
) -> Watcher {
    BroadcastStream::new(rx)
        .filter_map(move |item| {
            let out = match item {
                Ok(event) => service
                    .as_deref()
                    .is_none_or(|name| name == event.service.name)
                    .then_some(Ok(event)),
                Err(BroadcastStreamRecvError::Lagged(n)) => {
                    Some(Err(Error::internal_server_error(
                        id,
                        format!("watcher fell behind and missed {n} events; list again"),
                    )))
                }
            };
            futures_util::future::ready(out)
        })
        .boxed()
}
