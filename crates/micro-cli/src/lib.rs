//! The library half of the `micro` binary: the parts that tests and embedders run
//! in-process (the proxy of `micro server`).

pub mod proxy;
