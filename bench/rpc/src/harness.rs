//! What the load calls: either stack's client behind one type, and the checked
//! `Greeter.Hello` call the load loop (`bench_common::run`) repeats.

use std::fmt;

use anyhow::bail;
use bench_common::CallFuture;

use crate::{micro_side, tonic_side};

/// The name every call sends, and the greeting every call must get back.
pub const NAME: &str = "John";
/// The expected answer to [`NAME`].
pub const GREETING: &str = "Hello John";

/// Which stack a run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum System {
    Micro,
    Tonic,
}

impl fmt::Display for System {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            System::Micro => "micro",
            System::Tonic => "tonic",
        })
    }
}

/// A client of either stack; clones share one connection.
#[derive(Debug, Clone)]
pub enum Caller {
    Micro(micro_side::Client),
    Tonic(tonic_side::Client),
}

impl Caller {
    /// One `Greeter.Hello` round trip.
    pub async fn hello(&mut self, name: &str) -> Result<String, String> {
        match self {
            Caller::Micro(client) => micro_side::hello(client, name).await,
            Caller::Tonic(client) => tonic_side::hello(client, name).await,
        }
    }
}

/// One checked `Greeter.Hello` call, the unit of [`bench_common::run`]'s load:
/// fails on a failed call or any answer but [`GREETING`].
pub fn hello(caller: &mut Caller) -> CallFuture<'_> {
    Box::pin(async move {
        match caller.hello(NAME).await {
            Ok(message) if message == GREETING => Ok(()),
            Ok(message) => bail!("wrong answer {message:?}, want {GREETING:?}"),
            Err(err) => bail!("call failed: {err}"),
        }
    })
}
