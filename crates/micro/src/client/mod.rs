//! Calling services: typed and JSON calls, streaming, pooling, timeouts, retries.

mod options;

use futures_util::Stream;

pub use options::CallOptions;

use crate::codec::Message;
use crate::server::method::MethodKind;
use crate::{Error, Streaming};

/// A method as a client names it; generated clients have one constant per method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MethodRef {
    /// `Service.Method` (`Greeter.Hello`).
    pub endpoint: &'static str,
    /// The gRPC path (`/greeter.Greeter/Hello`).
    pub path: &'static str,
    /// How many messages flow each way.
    pub kind: MethodKind,
}

/// Calls services. Cheap to clone; clones share connections.
#[derive(Debug, Clone, Default)]
pub struct Client {}

impl Client {
    /// A unary call.
    pub async fn call<Req: Message, Rsp: Message>(
        &self,
        _service: &str,
        _method: &MethodRef,
        _request: &Req,
        _opts: &CallOptions,
    ) -> Result<Rsp, Error> {
        unimplemented!()
    }

    /// A server-streaming call.
    pub async fn server_stream<Req: Message, Rsp: Message>(
        &self,
        _service: &str,
        _method: &MethodRef,
        _request: &Req,
        _opts: &CallOptions,
    ) -> Result<Streaming<Rsp>, Error> {
        unimplemented!()
    }

    /// A client-streaming call.
    pub async fn client_stream<Req: Message, Rsp: Message, S>(
        &self,
        _service: &str,
        _method: &MethodRef,
        _requests: S,
        _opts: &CallOptions,
    ) -> Result<Rsp, Error>
    where
        S: Stream<Item = Req> + Send + 'static,
    {
        unimplemented!()
    }

    /// A bidirectional-streaming call.
    pub async fn bidi_stream<Req: Message, Rsp: Message, S>(
        &self,
        _service: &str,
        _method: &MethodRef,
        _requests: S,
        _opts: &CallOptions,
    ) -> Result<Streaming<Rsp>, Error>
    where
        S: Stream<Item = Req> + Send + 'static,
    {
        unimplemented!()
    }
}
