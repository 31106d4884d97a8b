//! The library half of the `micro` binary: the parts that tests and embedders run
//! in-process (the proxy and API gateway of `micro server`).

pub mod api;
pub mod proxy;
