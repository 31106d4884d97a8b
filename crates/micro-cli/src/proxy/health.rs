//! `grpc.health.v1.Health`: the standard gRPC health check of the proxy, so load
//! balancers, Kubernetes probes and `grpc_health_probe` can ask it.
//!
//! The server as a whole (`""`) and each API service it serves
//! (`micro.v1.Registry`, `micro.v1.Broker`, `micro.v1.Config`, `micro.v1.Client`)
//! are `SERVING` while the proxy runs; any other name is unknown: `NOT_FOUND` from
//! `Check`, `SERVICE_UNKNOWN` from `Watch`, as the protocol asks.

use futures_util::stream::{self, StreamExt};
use micro::proto::health::v1::health_check_response::ServingStatus;
use micro::proto::health::v1::health_server::{Health, HealthServer};
use micro::proto::health::v1::{HealthCheckRequest, HealthCheckResponse};
use micro::{Error, Request, ResponseStream};

use super::Parts;

/// The services the proxy reports as `SERVING` (besides `""`, the whole server).
pub const SERVICES: &[&str] = &[
    "micro.v1.Registry",
    "micro.v1.Broker",
    "micro.v1.Config",
    "micro.v1.Client",
];

/// The health handler.
#[derive(Debug, Clone, Default)]
pub struct HealthHandler;

/// The `grpc.health.v1.Health` handler of the proxy.
pub fn handler(_parts: &Parts) -> HealthServer<HealthHandler> {
    HealthServer::new(HealthHandler)
}

fn known(service: &str) -> bool {
    service.is_empty() || SERVICES.contains(&service)
}

fn status(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse {
        status: status as i32,
    }
}

impl Health for HealthHandler {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<HealthCheckResponse, Error> {
        let service = request.get_ref().service.as_str();
        if known(service) {
            Ok(status(ServingStatus::Serving))
        } else {
            Err(Error::not_found(
                "micro.health",
                format!(
                    "unknown service {service:?}: the proxy serves \"\" (the whole server), {}",
                    SERVICES.join(", ")
                ),
            ))
        }
    }

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<ResponseStream<HealthCheckResponse>, Error> {
        let now = if known(&request.get_ref().service) {
            ServingStatus::Serving
        } else {
            ServingStatus::ServiceUnknown
        };
        // The status never changes while the proxy runs: the first answer, then
        // nothing until the caller goes away (or the server stops).
        Ok(stream::once(async move { Ok(status(now)) })
            .chain(stream::pending())
            .boxed())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[tokio::test]
    async fn known_services_serve_and_unknown_ones_are_not_found() {
        let health = HealthHandler;
        for service in ["", "micro.v1.Config", "micro.v1.Client"] {
            let answer = health
                .check(Request::new(HealthCheckRequest {
                    service: service.into(),
                }))
                .await
                .unwrap();
            assert_eq!(answer.status, ServingStatus::Serving as i32);
        }
        let err = health
            .check(Request::new(HealthCheckRequest {
                service: "nope".into(),
            }))
            .await
            .unwrap_err();
        assert_eq!(err.code(), 404);
        let mut watch = health
            .watch(Request::new(HealthCheckRequest {
                service: "nope".into(),
            }))
            .await
            .unwrap();
        assert_eq!(
            watch.next().await.unwrap().unwrap().status,
            ServingStatus::ServiceUnknown as i32
        );
    }
}
