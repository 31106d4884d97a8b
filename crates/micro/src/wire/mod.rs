//! What goes over the connection, shared by server and client: gRPC message framing,
//! the `grpc-timeout`/`Timeout` headers, gRPC status trailers and the body type.

pub(crate) mod body;
pub(crate) mod frame;
pub(crate) mod status;
pub(crate) mod timeout;

pub(crate) use body::Body;
