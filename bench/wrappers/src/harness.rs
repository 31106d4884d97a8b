//! What the load calls: the greeter's client, and the checked `Greeter.Hello`
//! call the load loop (`bench_common::run`) repeats.

use anyhow::{bail, ensure};
use bench_common::CallFuture;
use greeter::proto::HelloRequest;

/// A greeter client pinned to one service's address; clones share its connection.
pub type Client = greeter::GreeterClient;

/// The name every call sends, and the greeting every call must get back.
const NAME: &str = "John";
/// The expected answer to [`NAME`].
const GREETING: &str = "Hello John";

/// The greeter turns an empty name away, wrapped or not.
pub async fn check_rejects_empty_name(client: &Client) -> anyhow::Result<()> {
    let answer = client
        .hello(HelloRequest {
            name: String::new(),
        })
        .await;
    ensure!(answer.is_err(), "an empty name was answered: {answer:?}");
    Ok(())
}

/// One checked `Greeter.Hello` call, the unit of [`bench_common::run`]'s load:
/// fails on a failed call or any answer but [`GREETING`].
pub fn hello(client: &mut Client) -> CallFuture<'_> {
    Box::pin(async move {
        let answer = client.hello(HelloRequest { name: NAME.into() }).await;
        match answer {
            Ok(rsp) if rsp.message == GREETING => Ok(()),
            Ok(rsp) => bail!("wrong answer {:?}, want {GREETING:?}", rsp.message),
            Err(err) => bail!("call failed: {} {}", err.code(), err.detail()),
        }
    })
}
