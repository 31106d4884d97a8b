//! Protocols every micro service speaks, generated from `proto/micro/`.

/// The built-in debug service (`Debug.Health`, `Debug.Stats`), package `micro.debug`.
pub mod debug {
    /// Version 1 of the debug API.
    pub mod v1 {
        crate::include_proto!("micro.debug.v1");
    }
}
