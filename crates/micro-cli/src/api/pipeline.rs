//! One request through the gateway, in order: request id → limits on the request
//! head → built-in paths (`/health`, `/metrics`, `/rpc`) → CORS preflight →
//! routing (zero-config) → auth → rate limit → the handler → CORS, gzip and the
//! request id on the answer → metrics and the access log.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::future::BoxFuture;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use micro::broker::Broker;
use micro::client::CallOptions;
use micro::registry::Registry;
use micro::wrapper::auth::{self, Auth};
use micro::{Client, Error, Metadata};
use serde::Deserialize;
use tokio::time::Instant;

use super::call::{self, Call, StreamFormat};
use super::catalog::Catalog;
use super::limits::RouteLimits;
use super::metrics::Metrics;
use super::openapi::{self, RoutedEndpoint};
use super::reply::{self, Body};
use super::resolve::{self, ID};
use super::resolved::{ByPath, Resolved};
use super::routes::{RouteMatch, RouteRequest, Routes, RoutesWatcher};
use super::target::{HandlerKind, Policy, Target};
use super::{compress, cors, event, upstream, websocket, GatewayOptions};
use micro::server::RequestBody;

/// The header that carries a request's id, end to end.
pub const REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

/// What every request works with.
pub struct Shared {
    pub(super) options: GatewayOptions,
    pub(super) client: Client,
    pub(super) broker: Arc<dyn Broker>,
    pub(super) catalog: Catalog,
    pub(super) auth: Option<Arc<Auth>>,
    pub(super) routes: Option<RoutesWatcher>,
    metrics: Metrics,
    limits: RouteLimits,
    upstream: upstream::UpstreamClient,
    /// The policy of requests no route names: the gateway's options.
    default_policy: Arc<Policy>,
    /// Zero-config routing results, by path.
    zero_config_paths: ByPath,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("options", &self.options)
            .field("auth", &self.auth.is_some())
            .finish_non_exhaustive()
    }
}

/// What [`Shared::dispatch`] answers.
type DispatchResult = Result<(Response<Body>, Option<Routed>), (Error, Option<Routed>)>;

/// The paths the gateway answers itself (`Shared::dispatch`), before any route.
const OWN_PATHS: [&str; 4] = ["/health", "/metrics", "/rpc", "/openapi.json"];

/// Where a request goes, and the policy on the way.
type RoutedTo = (Arc<Resolved>, Arc<Policy>);

/// How a request is being answered: served on a route known at once, or
/// dispatched through the whole routing.
enum Answer<'a> {
    Served(BoxFuture<'a, Result<Response<Body>, Error>>, Option<Routed>),
    Dispatched(BoxFuture<'a, DispatchResult>),
}

/// What the routes file says about a request.
enum ByFile {
    /// A route takes it.
    To(RoutedTo),
    /// No route does, and the file falls back to zero-config routing.
    ZeroConfig,
    /// The answer is known already (405 with `Allow`, or a route's preflight).
    Answered(Response<Body>, Option<Routed>),
    /// An error answer (404 without fallback, or the registry failed).
    Failed(Error),
}

/// Where a request was routed, for the answer's decoration, metrics and the log.
struct Routed {
    /// The metrics label: the route, or the zero-config service and endpoint.
    label: Arc<str>,
    handler: &'static str,
    policy: Arc<Policy>,
}

impl micro::server::http1::Respond for Shared {
    type Body = Body;

    /// The request id.
    const ADDED_HEADERS: usize = 1;

    fn respond(
        &self,
        req: Request<RequestBody>,
        peer: SocketAddr,
    ) -> impl Future<Output = Response<Body>> + Send {
        self.handle(req, peer)
    }
}

impl Shared {
    pub(super) fn new(
        client: Client,
        registry: Arc<dyn Registry>,
        broker: Arc<dyn Broker>,
        options: GatewayOptions,
    ) -> Self {
        let default_policy = Arc::new(Policy {
            cors: options.cors.clone(),
            ..Policy::default()
        });
        Shared {
            client,
            broker,
            catalog: Catalog::new(registry),
            auth: None,
            routes: None,
            metrics: Metrics::default(),
            limits: RouteLimits::default(),
            upstream: upstream::client(),
            default_policy,
            zero_config_paths: ByPath::default(),
            options,
        }
    }

    /// Answers one request; never fails (errors are answers).
    ///
    /// Not an `async fn`, which would hold the whole request in its state until
    /// the answer: what happens before routing is done here, and the future keeps
    /// only what the answer's decoration, the metrics and the access log need.
    pub(super) fn handle(
        &self,
        mut req: Request<RequestBody>,
        peer: SocketAddr,
    ) -> impl Future<Output = Response<Body>> + Send + '_ {
        let started = Instant::now();
        let request_id = request_id(req.headers());
        req.headers_mut().insert(REQUEST_ID, request_id.clone());
        let method = req.method().clone();
        // The path outlives the request only for the access log.
        let access_log = tracing::enabled!(target: "micro::api::access", tracing::Level::INFO);
        let path = access_log.then(|| req.uri().path().to_string());
        // Only what the answer's decoration needs, not a copy of every header.
        let mut origin = http::HeaderMap::new();
        if let Some(o) = req.headers().get(header::ORIGIN) {
            origin.insert(header::ORIGIN, o.clone());
        }
        let wants_gzip = compress::accepts_gzip(req.headers());
        let answer = match self.route_now(&req) {
            Some((resolved, policy)) => {
                let routed = Routed {
                    label: resolved.label.clone(),
                    handler: resolved.target.handler.name(),
                    policy: policy.clone(),
                };
                Answer::Served(self.serve(req, peer, resolved, policy), Some(routed))
            }
            // Boxed: routing that may wait is rare, and its state is large.
            None => Answer::Dispatched(Box::pin(self.dispatch(req, peer))),
        };
        async move {
            let (mut rsp, routed) = match answer {
                Answer::Served(serving, routed) => match serving.await {
                    Ok(rsp) => (rsp, routed),
                    Err(e) => (reply::error(&e), routed),
                },
                Answer::Dispatched(dispatching) => match dispatching.await {
                    Ok(answer) => answer,
                    Err((e, routed)) => (reply::error(&e), routed),
                },
            };
            let policy = routed.as_ref().map_or(&self.default_policy, |r| &r.policy);
            cors::decorate(policy.cors.as_ref(), &origin, &mut rsp);
            if wants_gzip {
                rsp = Box::pin(gzip_whole(rsp)).await;
            }
            rsp.headers_mut().insert(REQUEST_ID, request_id.clone());
            let took = started.elapsed();
            let (label, handler) = routed
                .as_ref()
                .map_or(("unrouted", "none"), |r| (&*r.label, r.handler));
            self.metrics
                .record(label, handler, rsp.status().as_u16(), took);
            tracing::info!(
                target: "micro::api::access",
                %peer,
                %method,
                path = path.as_deref().unwrap_or(""),
                status = rsp.status().as_u16(),
                micros = took.as_micros() as u64,
                route = label,
                request_id = request_id.to_str().unwrap_or(""),
                "request"
            );
            rsp
        }
    }

    /// Where a request goes when that is known without waiting: a zero-config
    /// path worked out before ([`ByPath`]) whose service's records are cached and
    /// the same ones. Exactly the requests [`Shared::dispatch`] would route that
    /// way; `None` sends the rest (and every error) through it.
    fn route_now(&self, req: &Request<RequestBody>) -> Option<RoutedTo> {
        let path = req.uri().path();
        let answered_here = OWN_PATHS.contains(&path);
        if self.routes.is_some()
            || answered_here
            || check_head(req, &self.options).is_err()
            || cors::is_preflight(req.method(), req.headers())
        {
            return None;
        }
        let kept = self.zero_config_paths.get(path)?;
        let records = self.catalog.service_now(&kept.target.service)?;
        let current =
            kept.is_from(&records) && check_zero_config_method(req.method(), path).is_ok();
        current.then(|| (kept, self.fallback_policy()))
    }

    /// Routes and serves a request; an error carries where it was routed, if it got
    /// that far.
    async fn dispatch(&self, req: Request<RequestBody>, peer: SocketAddr) -> DispatchResult {
        let unrouted = |e: Error| (e, None);
        check_head(&req, &self.options).map_err(unrouted)?;
        // The gateway's own paths (`OWN_PATHS`, which `route_now` leaves to this).
        let path = req.uri().path();
        match (req.method(), path) {
            (&Method::GET, "/health") => {
                return Ok((reply::json(StatusCode::OK, r#"{"status":"ok"}"#), None))
            }
            (&Method::GET, "/metrics") => {
                let mut rsp = Response::new(reply::full(self.metrics.render()));
                rsp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4"),
                );
                return Ok((rsp, None));
            }
            (_, "/rpc") if self.options.enable_rpc => {
                let routed = Routed {
                    label: Arc::from("/rpc"),
                    handler: "rpc",
                    policy: self.default_policy.clone(),
                };
                // Rare paths are boxed so that every request's future stays small
                // (hyper moves it into place per request).
                return match Box::pin(self.rpc_endpoint(req)).await {
                    Ok(rsp) => Ok((rsp, Some(routed))),
                    Err(e) => Err((e, Some(routed))),
                };
            }
            _ => {}
        }
        if let (&Method::GET, "/openapi.json") = (req.method(), path) {
            return Ok((Box::pin(self.openapi()).await.map_err(unrouted)?, None));
        }
        let preflight = cors::is_preflight(req.method(), req.headers());
        let by_file = match &self.routes {
            Some(watcher) => Box::pin(self.route_by_file(&watcher.current(), &req)).await,
            None => ByFile::ZeroConfig,
        };
        let (resolved, policy) = match by_file {
            ByFile::Answered(rsp, routed) => return Ok((rsp, routed)),
            ByFile::Failed(e) => return Err((e, None)),
            ByFile::To(routed) => routed,
            ByFile::ZeroConfig if preflight => {
                let policy = self.fallback_policy();
                return Ok((cors::preflight(policy.cors.as_ref(), req.headers()), None));
            }
            ByFile::ZeroConfig => {
                let resolved = self.zero_config(&req).await.map_err(unrouted)?;
                (resolved, self.fallback_policy())
            }
        };
        let routed = Routed {
            label: resolved.label.clone(),
            handler: resolved.target.handler.name(),
            policy: policy.clone(),
        };
        if preflight {
            let rsp = cors::preflight(policy.cors.as_ref(), req.headers());
            return Ok((rsp, Some(routed)));
        }
        // Boxed (`serve` returns it so): hyper moves every request's future into
        // place, and so does each level that awaits another.
        match self
            .serve(req, peer, resolved.clone(), policy.clone())
            .await
        {
            Ok(rsp) => Ok((rsp, Some(routed))),
            Err(e) => Err((e, Some(routed))),
        }
    }

    /// Routing by the routes file.
    async fn route_by_file(&self, routes: &Routes, req: &Request<RequestBody>) -> ByFile {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri().authority().map(|a| a.as_str()));
        let request = RouteRequest {
            method: req.method(),
            host,
            path: req.uri().path(),
            headers: req.headers(),
        };
        match routes.find(&request, super::random_u32()) {
            RouteMatch::Found(matched) => {
                let mut target = matched.target;
                let records = if target.service.is_empty() {
                    Arc::new(Vec::new())
                } else {
                    match self.catalog.service(&target.service).await {
                        Ok(records) => records,
                        Err(e) => return ByFile::Failed(e),
                    }
                };
                // An rpc route to an endpoint that streams is served as a stream.
                if target.handler == HandlerKind::Rpc
                    && target
                        .endpoint
                        .as_deref()
                        .is_some_and(|e| call::streams(&records, e))
                {
                    target.handler = HandlerKind::Stream;
                }
                let resolved = Resolved {
                    target,
                    records,
                    label: matched.route.to_string().into(),
                };
                ByFile::To((Arc::new(resolved), matched.policy))
            }
            RouteMatch::MethodNotAllowed {
                allow,
                route,
                policy,
            } => {
                let routed = Routed {
                    label: route.to_string().into(),
                    handler: "none",
                    policy: policy.clone(),
                };
                if cors::is_preflight(req.method(), req.headers()) {
                    let rsp = cors::preflight(policy.cors.as_ref(), req.headers());
                    return ByFile::Answered(rsp, Some(routed));
                }
                let allowed: Vec<&str> = allow.iter().map(Method::as_str).collect();
                let e = Error::method_not_allowed(
                    ID,
                    format!(
                        "{} {}: the route {route} takes {}",
                        req.method(),
                        req.uri().path(),
                        allowed.join(", ")
                    ),
                );
                let mut rsp = reply::error(&e);
                if let Ok(v) = HeaderValue::from_str(&allowed.join(", ")) {
                    rsp.headers_mut().insert(header::ALLOW, v);
                }
                ByFile::Answered(rsp, Some(routed))
            }
            RouteMatch::Unrouted if routes.fallback_zero_config() => ByFile::ZeroConfig,
            RouteMatch::Unrouted => ByFile::Failed(Error::not_found(
                ID,
                format!(
                    "no route of {} matches {} {} (and its fallback is none)",
                    routes.file(),
                    req.method(),
                    req.uri().path()
                ),
            )),
        }
    }

    /// The policy of requests no route takes: the routes file's defaults, with the
    /// gateway's own CORS setting where the file sets none.
    fn fallback_policy(&self) -> Arc<Policy> {
        let Some(watcher) = &self.routes else {
            return self.default_policy.clone();
        };
        let defaults = watcher.current().defaults().clone();
        if defaults.cors.is_some() || self.default_policy.cors.is_none() {
            return defaults;
        }
        Arc::new(Policy {
            cors: self.default_policy.cors.clone(),
            ..Policy::clone(&defaults)
        })
    }

    /// `GET /openapi.json`: every routed endpoint, from the registry as it is now.
    async fn openapi(&self) -> Result<Response<Body>, Error> {
        let services = self.catalog.all().await?;
        let routed: Vec<RoutedEndpoint> = match &self.routes {
            Some(watcher) => watcher
                .current()
                .rpc_routes()
                .map(|r| RoutedEndpoint {
                    path: r.pattern.to_string(),
                    methods: r.methods.to_vec(),
                    service: r.service,
                    endpoint: r.endpoint,
                })
                .collect(),
            None => Vec::new(),
        };
        let doc = openapi::document(&services, self.options.namespace.as_deref(), &routed);
        Ok(reply::json(StatusCode::OK, doc.to_string()))
    }

    /// Zero-config routing: the path names the service and endpoint. What a path
    /// resolved to is kept while its service's records stay the same.
    async fn zero_config(&self, req: &Request<RequestBody>) -> Result<Arc<Resolved>, Error> {
        let path = req.uri().path();
        if let Some(kept) = self.zero_config_paths.get(path) {
            let records = self.catalog.service(&kept.target.service).await?;
            if kept.is_from(&records) {
                check_zero_config_method(req.method(), path)?;
                return Ok(kept);
            }
        }
        let namespace = self.options.namespace.as_deref();
        let wanted = resolve::parse_path(path, namespace).ok_or_else(|| {
            Error::not_found(
                ID,
                format!(
                    "no route for {path}: call an endpoint as /SERVICE/METHOD (POST /greeter/hello \
                     calls Greeter.Hello of service greeter), or add a route to the routes file"
                ),
            )
        })?;
        let records = self.catalog.service(&wanted.service).await?;
        let known = if records.is_empty() {
            self.catalog.names().await
        } else {
            Vec::new()
        };
        let endpoint = resolve::check(&wanted, &records, &known)?;
        check_zero_config_method(req.method(), path)?;
        let handler = if call::streams(&records, &endpoint) {
            HandlerKind::Stream
        } else {
            HandlerKind::Rpc
        };
        let label = format!("{} {endpoint}", wanted.service).into();
        let target = Target {
            handler,
            service: wanted.service,
            endpoint: Some(endpoint),
            ..Target::default()
        };
        let resolved = Arc::new(Resolved {
            target,
            records,
            label,
        });
        self.zero_config_paths.put(path, resolved.clone());
        Ok(resolved)
    }

    /// Auth, rate limit, then the target's handler.
    ///
    /// Not an `async fn`: one would hold the whole request (and its locals) in its
    /// state until the call returns. The common request, a unary call whose body
    /// came with the head, is prepared here and only the call is boxed; everything
    /// else goes to [`Shared::serve_other`].
    fn serve(
        &self,
        mut req: Request<RequestBody>,
        peer: SocketAddr,
        resolved: Arc<Resolved>,
        policy: Arc<Policy>,
    ) -> BoxFuture<'_, Result<Response<Body>, Error>> {
        let target = &resolved.target;
        let mut metadata = Metadata::from_headers(req.headers());
        if let Err(e) = self.authorize(target, &policy, &mut metadata) {
            return Box::pin(std::future::ready(Err(e)));
        }
        if let Some(limit) = &policy.rate_limit {
            if let Err(e) = self.limits.check(&resolved.label, limit) {
                return Box::pin(std::future::ready(Err(e)));
            }
        }
        let max_body = policy.body_limit.unwrap_or(self.options.max_body);
        if target.handler != HandlerKind::Rpc {
            return Box::pin(self.serve_other(req, peer, resolved, policy, metadata, max_body));
        }
        let body = match req.body_mut().take_whole() {
            Some(whole) if whole.len() > max_body => {
                return Box::pin(std::future::ready(Err(too_large(max_body))))
            }
            Some(whole) => whole,
            None => {
                return Box::pin(self.serve_other(req, peer, resolved, policy, metadata, max_body))
            }
        };
        let endpoint = target.endpoint.as_deref().unwrap_or_default();
        let query = req.uri().query();
        match self.call(&resolved, endpoint, &policy, &metadata, &body, query) {
            Ok(call) => Box::pin(async move {
                let target = &resolved.target;
                let endpoint = target.endpoint.as_deref().unwrap_or_default();
                call::unary(target, endpoint, call).await
            }),
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }

    /// What [`Shared::serve`] does not prepare itself: streams, WebSockets, events,
    /// reverse proxying, and bodies still to be read.
    async fn serve_other(
        &self,
        req: Request<RequestBody>,
        peer: SocketAddr,
        resolved: Arc<Resolved>,
        policy: Arc<Policy>,
        metadata: Metadata,
        max_body: usize,
    ) -> Result<Response<Body>, Error> {
        let (resolved, policy) = (&*resolved, &*policy);
        let (target, records) = (&resolved.target, resolved.records.as_slice());
        match target.handler {
            HandlerKind::Rpc | HandlerKind::Stream => {
                let endpoint = target.endpoint.as_deref().unwrap_or_default();
                if target.handler == HandlerKind::Stream && upstream::is_websocket(req.headers()) {
                    // A WebSocket upgrade has no body: its request is the query.
                    let query = req.uri().query();
                    let call =
                        self.call(resolved, endpoint, policy, &metadata, &Bytes::new(), query)?;
                    return websocket::stream(req, target, endpoint, call);
                }
                let format = StreamFormat::for_accept(req.headers().get(header::ACCEPT));
                let query = req.uri().query().map(str::to_string);
                let body = self.body(req, max_body).await?;
                let call = self.call(
                    resolved,
                    endpoint,
                    policy,
                    &metadata,
                    &body,
                    query.as_deref(),
                )?;
                if target.handler == HandlerKind::Stream {
                    Box::pin(call::stream(target, endpoint, call, format)).await
                } else {
                    call::unary(target, endpoint, call).await
                }
            }
            HandlerKind::Event => {
                let headers = req.headers().clone();
                let body = self.body(req, max_body).await?;
                Box::pin(event::publish(
                    self.broker.as_ref(),
                    target.topic.as_deref().unwrap_or(""),
                    &headers,
                    body,
                ))
                .await
            }
            // The reverse proxy's futures are large: boxed, they do not make
            // every request's future (rpc ones too) that large.
            HandlerKind::Web if upstream::is_websocket(req.headers()) => {
                Box::pin(upstream::websocket(req, records, target, peer)).await
            }
            HandlerKind::Http | HandlerKind::Web => {
                let (parts, body) = req.into_parts();
                let body = Limited::new(body, max_body).boxed_unsync();
                Box::pin(upstream::forward(
                    &self.upstream,
                    Request::from_parts(parts, body),
                    records,
                    target,
                    peer,
                ))
                .await
            }
        }
    }

    /// The service call of an `rpc` or `stream` route: the request JSON from the
    /// body, query and path params (checked against the endpoint's schema), and the
    /// call options from the route's policy.
    fn call(
        &self,
        resolved: &Resolved,
        endpoint: &str,
        policy: &Policy,
        metadata: &Metadata,
        body: &Bytes,
        query: Option<&str>,
    ) -> Result<Call<'_>, Error> {
        let target = &resolved.target;
        let request = super::request_json::build(
            body,
            query,
            &target.params,
            call::request_schema(&resolved.records, endpoint),
        )?;
        let mut options = CallOptions::default()
            .timeout(policy.timeout.unwrap_or(match target.handler {
                // A stream lasts as long as the service sends.
                HandlerKind::Stream => Duration::from_secs(24 * 3600),
                _ => self.options.call_timeout,
            }))
            .with_metadata(metadata);
        if let Some(retries) = policy.retries {
            options = options.retries(retries);
        }
        if let Some(version) = &target.version {
            options = options.version(version.clone());
        }
        Ok(Call {
            client: &self.client,
            request,
            options,
        })
    }

    /// Applies the `auth` settings and the route's requirement; on success the
    /// caller's account is in `metadata` (and forged `micro-auth-*` keys are gone).
    fn authorize(
        &self,
        target: &Target,
        policy: &Policy,
        metadata: &mut Metadata,
    ) -> Result<(), Error> {
        auth::strip_metadata(metadata);
        let endpoint = target
            .endpoint
            .as_deref()
            .or(target.topic.as_deref())
            .unwrap_or("");
        let account = match &self.auth {
            Some(auth) => auth.check(&target.service, endpoint, metadata)?,
            None => None,
        };
        if let Some(need) = policy.auth.as_ref().filter(|a| a.required) {
            let Some(account) = &account else {
                return Err(Error::unauthorized(
                    ID,
                    "this route needs credentials: send Authorization: Bearer <token> (or an API key)",
                ));
            };
            if let Some(missing) = need.scopes.iter().find(|s| !account.has_scope(s)) {
                return Err(Error::forbidden(
                    ID,
                    format!(
                        "this route needs scope {missing:?}, which {:?} does not hold",
                        account.subject
                    ),
                ));
            }
        }
        if let Some(account) = &account {
            auth::write_metadata(account, metadata);
        }
        Ok(())
    }

    /// The whole body, up to `limit` bytes (413) and within the body timeout (408).
    /// One that came whole with the head (nearly every request the gateway's own
    /// HTTP/1.1 loop reads) is taken at once: no future to allocate, no timer.
    async fn body(&self, mut req: Request<RequestBody>, limit: usize) -> Result<Bytes, Error> {
        match req.body_mut().take_whole() {
            Some(whole) if whole.len() > limit => Err(too_large(limit)),
            Some(whole) => Ok(whole),
            // Boxed: reading a streamed body is rare and its future is large.
            None => Box::pin(self.read_body(req, limit)).await,
        }
    }

    /// [`Shared::body`] when the body is still to be read.
    async fn read_body(&self, req: Request<RequestBody>, limit: usize) -> Result<Bytes, Error> {
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(too_large(limit));
        }
        let timeout = self.options.body_timeout;
        let mut collect = std::pin::pin!(whole_body(req.into_body(), limit));
        // A body that came with the head needs no timer.
        let first = std::future::poll_fn(|cx| {
            std::task::Poll::Ready(std::future::Future::poll(collect.as_mut(), cx))
        });
        let collected = match first.await {
            std::task::Poll::Ready(collected) => collected,
            std::task::Poll::Pending => match tokio::time::timeout(timeout, collect).await {
                Ok(collected) => collected,
                Err(_) => {
                    return Err(Error::timeout(
                        ID,
                        format!("the request body did not arrive within {timeout:?}"),
                    ))
                }
            },
        };
        collected.map_err(|failure| match failure {
            BodyFailure::TooLarge => too_large(limit),
            BodyFailure::Answer(e) => e,
            BodyFailure::Read(e) => {
                Error::bad_request(ID, format!("reading the request body: {e}"))
            }
        })
    }

    /// `POST /rpc` with `{service, endpoint, request, address}`.
    async fn rpc_endpoint(&self, req: Request<RequestBody>) -> Result<Response<Body>, Error> {
        if req.method() != Method::POST {
            return Err(Error::method_not_allowed(
                ID,
                "POST /rpc with {\"service\", \"endpoint\", \"request\"}",
            ));
        }
        #[derive(Deserialize)]
        struct RpcRequest {
            service: String,
            endpoint: String,
            #[serde(default)]
            request: serde_json::Value,
            #[serde(default)]
            address: Option<String>,
        }
        let mut metadata = Metadata::from_headers(req.headers());
        let body = self.read_body(req, self.options.max_body).await?;
        let rpc: RpcRequest = serde_json::from_slice(&body).map_err(|e| {
            Error::bad_request(
                ID,
                format!("malformed /rpc body: {e}; send {{\"service\":\"greeter\",\"endpoint\":\"Greeter.Hello\",\"request\":{{...}}}}"),
            )
        })?;
        let target = Target {
            service: rpc.service,
            endpoint: Some(rpc.endpoint.clone()),
            ..Target::default()
        };
        self.authorize(&target, &self.default_policy, &mut metadata)?;
        let request = match rpc.request {
            serde_json::Value::Null => Bytes::from_static(b"{}"),
            other => Bytes::from(other.to_string()),
        };
        let mut options = CallOptions::default()
            .timeout(self.options.call_timeout)
            .with_metadata(&metadata);
        if let Some(address) = rpc.address.filter(|a| !a.is_empty()) {
            options = options.address(address);
        }
        call::unary(
            &target,
            &rpc.endpoint,
            Call {
                client: &self.client,
                request,
                options,
            },
        )
        .await
    }
}

/// Why a request body could not be read whole.
enum BodyFailure {
    TooLarge,
    /// The server that read the body answers with this (a 408).
    Answer(Error),
    Read(micro::BoxError),
}

/// The data of `body`, up to `limit` bytes. A body that comes as one frame (most
/// do) is passed on as it is; several are joined.
async fn whole_body(mut body: RequestBody, limit: usize) -> Result<Bytes, BodyFailure> {
    if let Some(whole) = body.take_whole() {
        return match whole.len() > limit {
            true => Err(BodyFailure::TooLarge),
            false => Ok(whole),
        };
    }
    let mut body = std::pin::pin!(body);
    let mut whole = Bytes::new();
    let mut joined: Option<BytesMut> = None;
    let mut len = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| match e.downcast::<Error>() {
            Ok(answer) => BodyFailure::Answer(*answer),
            Err(e) => BodyFailure::Read(e),
        })?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers: not part of the request
        };
        len += data.len();
        if len > limit {
            return Err(BodyFailure::TooLarge);
        }
        if let Some(joined) = joined.as_mut() {
            joined.extend_from_slice(&data);
        } else if whole.is_empty() {
            whole = data;
        } else {
            let mut both = BytesMut::with_capacity(len);
            both.extend_from_slice(&whole);
            both.extend_from_slice(&data);
            joined = Some(both);
        }
    }
    Ok(joined.map_or(whole, BytesMut::freeze))
}

/// Zero-config routes are called with POST (a JSON body) or GET (the query).
fn check_zero_config_method(method: &Method, path: &str) -> Result<(), Error> {
    if matches!(*method, Method::GET | Method::POST) {
        return Ok(());
    }
    Err(Error::method_not_allowed(
        ID,
        format!(
            "{method} {path}: call endpoints with POST (a JSON body) or GET (query parameters)"
        ),
    ))
}

fn too_large(limit: usize) -> Error {
    Error::payload_too_large(ID, format!("the request body is larger than {limit} bytes"))
}

/// Limits on the request head that hyper does not apply itself.
fn check_head<B>(req: &Request<B>, options: &GatewayOptions) -> Result<(), Error> {
    let target_len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if target_len > options.max_uri {
        return Err(Error::new(
            ID,
            format!(
                "the request target is {target_len} bytes; the limit is {}",
                options.max_uri
            ),
            StatusCode::URI_TOO_LONG.as_u16(),
        ));
    }
    Ok(())
}

/// The caller's request id when it is a sane one, else a new one.
fn request_id(headers: &http::HeaderMap) -> HeaderValue {
    let sane = |v: &&HeaderValue| {
        let v = v.as_bytes();
        !v.is_empty() && v.len() <= 128 && v.iter().all(u8::is_ascii_graphic)
    };
    match headers.get(&REQUEST_ID).filter(sane) {
        Some(given) => given.clone(),
        // An id is ASCII: always a valid header value. Bytes that own the id
        // from the start: the request's and the answer's copies of the header
        // are then a reference count, with no `String` made first.
        None => HeaderValue::from_maybe_shared(Bytes::from_owner(micro::id::new_v4_ascii()))
            .unwrap_or_else(|_| HeaderValue::from_static("-")),
    }
}

/// A whole (not streamed) answer gzipped; streams pass untouched.
async fn gzip_whole(rsp: Response<Body>) -> Response<Body> {
    use hyper::body::Body as _;
    let whole = rsp
        .body()
        .size_hint()
        .exact()
        .is_some_and(|n| n as usize >= compress::MIN_SIZE);
    if !whole {
        return rsp;
    }
    let (mut parts, body) = rsp.into_parts();
    let Ok(collected) = body.collect().await else {
        return Response::from_parts(parts, reply::empty());
    };
    let bytes = collected.to_bytes();
    match compress::gzip(&mut parts.headers, &bytes) {
        Some(zipped) => Response::from_parts(parts, reply::full(zipped)),
        None => Response::from_parts(parts, reply::full(bytes)),
    }
}
