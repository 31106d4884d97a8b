//! `micro.v1.Client`: Call, Stream and Publish through the proxy, and the
//! transparent sidecar fallback.

use micro::proto::v1::client_server::{Client as ClientApi, ClientServer};
use micro::proto::v1::{CallRequest, CallResponse, PublishRequest, PublishResponse};
use micro::{Error, Request, ResponseStream};

use super::Parts;

/// The `Client` API handler.
#[derive(Debug, Clone)]
pub struct ClientHandler {
    parts: Parts,
}

/// The `micro.v1.Client` handler of the proxy.
pub fn handler(parts: &Parts) -> ClientServer<ClientHandler> {
    ClientServer::new(ClientHandler {
        parts: parts.clone(),
    })
}

impl ClientApi for ClientHandler {
    async fn call(&self, _request: Request<CallRequest>) -> Result<CallResponse, Error> {
        let _ = &self.parts;
        Err(Error::not_implemented("micro.proxy", "Client.Call: not yet"))
    }

    async fn stream(
        &self,
        _request: Request<CallRequest>,
    ) -> Result<ResponseStream<CallResponse>, Error> {
        Err(Error::not_implemented("micro.proxy", "Client.Stream: not yet"))
    }

    async fn publish(&self, _request: Request<PublishRequest>) -> Result<PublishResponse, Error> {
        Err(Error::not_implemented("micro.proxy", "Client.Publish: not yet"))
    }
}
