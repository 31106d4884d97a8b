//! # micro
//!
//! The simplest way to build microservices in Rust: typed RPC from `.proto` files,
//! service discovery, load balancing, pub/sub, codecs, dynamic config and pluggable
//! middleware. Every service speaks gRPC (any stock gRPC client can call it) and
//! JSON over HTTP on one port.
//!
//! ```no_run
//! # mod greeter {
//! #   #[derive(Clone, PartialEq, ::prost::Message, serde::Serialize, serde::Deserialize)]
//! #   pub struct HelloRequest { #[prost(string, tag = "1")] pub name: String }
//! # }
//! // build.rs: micro_build::compile_protos(&["proto/greeter.proto"], &["proto"])?;
//! // lib.rs:   micro::include_proto!("greeter");
//! #[tokio::main]
//! async fn main() -> Result<(), micro::BoxError> {
//!     micro::Service::builder()
//!         .name("greeter")
//!         // .handler(GreeterServer::new(MyGreeter))
//!         .parse_args()
//!         .build()?
//!         .run()
//!         .await
//! }
//! ```

pub mod broker;
pub mod client;
pub mod codec;
pub mod config;
pub mod errors;
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod id;
pub mod metadata;
pub mod options;
pub mod proto;
pub mod registry;
mod request;
pub mod selector;
pub mod server;
mod service;
mod streaming;
mod wire;
pub mod wrapper;

pub use client::Client;
pub use codec::Message;
pub use errors::{Error, Result};
pub use metadata::Metadata;
pub use request::{CallContext, Request};
pub use service::{shutdown_signal, Service, ServiceBuilder};
pub use streaming::{stream_of, ResponseStream, Streaming};
/// The tower crate micro's wrappers are built on, for writing custom ones.
pub use tower;

/// A boxed error for `main` functions and hooks.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Includes the code `micro-build` generated for a proto package.
///
/// ```ignore
/// pub mod greeter {
///     micro::include_proto!("greeter");
/// }
/// ```
#[macro_export]
macro_rules! include_proto {
    ($package:literal) => {
        include!(concat!(env!("OUT_DIR"), "/", $package, ".rs"));
    };
}

/// Re-exports that generated code refers to, so a crate using micro needs no direct
/// dependency on prost, pbjson or serde. Not part of the stable API.
#[doc(hidden)]
pub mod codegen {
    pub use futures_util;
    pub use pbjson;
    pub use pbjson_types;
    pub use prost;
    pub use serde;
}
