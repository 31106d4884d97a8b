//! Finding the endpoint a request names: by gRPC path (`/greeter.Greeter/Hello`) or
//! by the `Micro-Endpoint` header (`Greeter.Hello`), which wins when both are given.

use std::collections::HashMap;
use std::sync::Arc;

use super::handler::HandlerDesc;
use super::method::{BoxMethodHandler, MethodKind};
use super::serve::EndpointService;
use crate::registry::Endpoint;
use crate::wrapper::{HandlerService, HandlerWrapper};
use crate::Error;

/// One routable endpoint.
#[derive(Clone)]
pub(crate) struct Route {
    pub(crate) endpoint: Arc<str>,
    pub(crate) kind: MethodKind,
    pub(crate) handler: BoxMethodHandler,
    /// The service name, the `id` of errors raised around the handler.
    pub(crate) service: Arc<str>,
    /// The handler inside the handler wrappers; `None` when there are none (or the
    /// handler is internal, such as `Debug.Health`).
    pub(crate) wrapped: Option<HandlerService>,
    /// Whether this is the server's fallback for a path no handler serves: the
    /// transport then hands it the body unsplit (gRPC frames as they come, a JSON
    /// body whole) and the endpoint derived from the path.
    pub(crate) fallback: bool,
}

impl Route {
    /// The handler as the innermost service of the wrapper stack.
    pub(crate) fn endpoint(&self) -> EndpointService {
        EndpointService {
            service: self.service.clone(),
            endpoint: self.endpoint.clone(),
            handler: self.handler.clone(),
        }
    }
}

/// All endpoints a server serves.
#[derive(Clone, Default)]
pub(crate) struct Router {
    by_path: HashMap<String, Route>,
    by_endpoint: HashMap<String, Route>,
    /// Endpoints listed in the registry record (internal handlers excluded).
    public: Vec<Endpoint>,
    /// Called for requests no handler serves (a proxy forwarding them), and the
    /// same inside the handler wrappers.
    fallback: Option<(BoxMethodHandler, Option<HandlerService>)>,
}

impl Router {
    /// Adds a handler, its methods wrapped in `wrappers` unless it is internal; an
    /// endpoint served twice is an error.
    pub(crate) fn add(
        &mut self,
        service: &Arc<str>,
        desc: HandlerDesc,
        wrappers: &[HandlerWrapper],
    ) -> Result<(), Error> {
        for method in &desc.methods {
            let endpoint = desc.endpoint_name(method);
            let path = desc.grpc_path(method);
            if self.by_endpoint.contains_key(&endpoint) || self.by_path.contains_key(&path) {
                return Err(Error::conflict(
                    "micro.server",
                    format!("endpoint {endpoint} ({path}) is registered twice"),
                ));
            }
            let mut route = Route {
                endpoint: endpoint.as_str().into(),
                kind: method.kind,
                handler: method.handler.clone(),
                service: service.clone(),
                wrapped: None,
                fallback: false,
            };
            if !desc.internal {
                route.wrapped = crate::wrapper::layer::stack(wrappers, route.endpoint());
            }
            self.by_path.insert(path, route.clone());
            self.by_endpoint.insert(endpoint, route);
        }
        if !desc.internal {
            self.public.extend(desc.endpoints());
        }
        Ok(())
    }

    /// The endpoints to publish in the registry.
    pub(crate) fn endpoints(&self) -> &[Endpoint] {
        &self.public
    }

    /// Sets the handler for requests no route serves, wrapped in `wrappers` like
    /// every endpoint (an auth wrapper guards forwarded calls too).
    pub(crate) fn set_fallback(
        &mut self,
        service: &Arc<str>,
        handler: BoxMethodHandler,
        wrappers: &[HandlerWrapper],
    ) {
        let inner = EndpointService {
            service: service.clone(),
            endpoint: "the forwarded call".into(),
            handler: handler.clone(),
        };
        let wrapped = crate::wrapper::layer::stack(wrappers, inner);
        self.fallback = Some((handler, wrapped));
    }

    /// The route for a request, or a 404 that says what was asked for; with a
    /// fallback, an unknown endpoint goes to the fallback instead, and so does a
    /// request whose `micro-service` header (`for_service`) names another service
    /// than this server's.
    pub(crate) fn route(
        &self,
        service: &Arc<str>,
        path: &str,
        endpoint_header: Option<&str>,
        for_service: Option<&str>,
    ) -> Result<Route, Error> {
        let elsewhere = for_service.is_some_and(|s| !s.is_empty() && s != service.as_ref());
        let found = if elsewhere && self.fallback.is_some() {
            Err(Error::not_found("micro.server", "served elsewhere"))
        } else {
            self.find(path, endpoint_header)
        };
        match (found, &self.fallback) {
            (Ok(route), _) => Ok(route.clone()),
            (Err(e), Some((handler, wrapped))) if e.code() == 404 => {
                let endpoint = match endpoint_header {
                    Some(endpoint) => endpoint.to_string(),
                    None => endpoint_of_path(path).ok_or(e)?,
                };
                Ok(Route {
                    endpoint: endpoint.into(),
                    // Frames flow as they come both ways; the fallback decides.
                    kind: MethodKind::BidiStreaming,
                    handler: handler.clone(),
                    service: service.clone(),
                    wrapped: wrapped.clone(),
                    fallback: true,
                })
            }
            (Err(e), _) => Err(e),
        }
    }

    fn find(&self, path: &str, endpoint_header: Option<&str>) -> Result<&Route, Error> {
        if let Some(endpoint) = endpoint_header {
            return self.by_endpoint.get(endpoint).ok_or_else(|| {
                Error::not_found("micro.server", format!("unknown endpoint {endpoint}"))
            });
        }
        if path == "/" || path.is_empty() {
            return Err(Error::bad_request(
                "micro.server",
                "no endpoint named: POST to /<package>.<Service>/<Method> or send a Micro-Endpoint header",
            ));
        }
        self.by_path
            .get(path)
            .ok_or_else(|| Error::not_found("micro.server", format!("unknown endpoint {path}")))
    }
}

/// The endpoint a gRPC path names: `/greeter.Greeter/Hello` → `Greeter.Hello`.
pub(crate) fn endpoint_of_path(path: &str) -> Option<String> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    let service = service.rsplit('.').next()?;
    if service.is_empty() || method.is_empty() || method.contains('/') {
        return None;
    }
    Some(format!("{service}.{method}"))
}

#[cfg(test)]
mod tests {
    use super::endpoint_of_path;

    #[test]
    fn endpoint_of_a_grpc_path() {
        assert_eq!(
            endpoint_of_path("/greeter.Greeter/Hello").as_deref(),
            Some("Greeter.Hello")
        );
        assert_eq!(
            endpoint_of_path("/a.b.v1.Echo/Call").as_deref(),
            Some("Echo.Call")
        );
        assert_eq!(endpoint_of_path("/Echo/Call").as_deref(), Some("Echo.Call"));
        assert_eq!(endpoint_of_path("/"), None);
        assert_eq!(endpoint_of_path("/x/y/z"), None);
        assert_eq!(endpoint_of_path("/x."), None);
    }
}
