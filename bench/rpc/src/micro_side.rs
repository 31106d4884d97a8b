//! The micro half: the `greeter` example's own server and generated client.

use std::future::Future;

use greeter::proto::HelloRequest;
use greeter::{Greeter, GreeterClient, GreeterServer};
use tokio::net::TcpListener;

/// A micro client pinned to one address; clones share the client's connection pool
/// (one HTTP/2 connection per address).
pub type Client = GreeterClient;

/// Serves `greeter::Greeter` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    micro::server::Server::new(greeter::SERVICE_NAME)
        .handler(GreeterServer::new(Greeter::default()))
        .serve(listener, shutdown)
        .await?;
    Ok(())
}

/// A micro client calling `address` (`host:port`) directly, with no registry lookup.
pub fn connect(address: &str) -> Client {
    let options = micro::client::CallOptions::default().address(address);
    GreeterClient::new(greeter::SERVICE_NAME, micro::Client::builder().build())
        .with_options(options)
}

/// Calls `Greeter.Hello` once and returns the greeting.
pub async fn hello(client: &mut Client, name: &str) -> Result<String, String> {
    let request = HelloRequest { name: name.into() };
    match client.hello(request).await {
        Ok(response) => Ok(response.message),
        Err(err) => Err(format!("{} {}: {}", err.code(), err.status(), err.detail())),
    }
}
