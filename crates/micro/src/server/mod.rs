//! Serving endpoints: gRPC and JSON over HTTP on one port.

mod handler;
pub mod method;

pub use handler::{Handler, HandlerDesc, MethodDesc, TypeDesc};
pub use method::{MethodKind, RawBody, RawReply, RawRequest};
