//! The service: a server, a client and a registration, with a lifecycle.

/// A micro service.
#[derive(Debug)]
pub struct Service {}

/// Builds a [`Service`].
#[derive(Debug)]
pub struct ServiceBuilder {}
