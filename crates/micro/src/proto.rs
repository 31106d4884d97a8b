//! Protocols every micro service speaks, generated from `proto/micro/`.

/// The built-in debug service (`Debug.Health`, `Debug.Stats`), package `micro.debug`.
pub mod debug {
    /// Version 1 of the debug API.
    pub mod v1 {
        crate::include_proto!("micro.debug.v1");
    }
}

/// The API of `micro server` (the proxy): `Client`, `Broker`, `Registry` and
/// `Config`, package `micro.v1`. Every client library builds on it.
pub mod v1 {
    crate::include_proto!("micro.v1");
}

/// The standard gRPC health checking protocol, package `grpc.health.v1`.
pub mod health {
    /// Version 1.
    pub mod v1 {
        crate::include_proto!("grpc.health.v1");
    }
}
