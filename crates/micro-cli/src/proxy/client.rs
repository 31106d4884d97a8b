//! `micro.v1.Client`: Call, Stream and Publish through the proxy, and the
//! transparent sidecar: the server's fallback that forwards a call the proxy does
//! not serve itself (`/greeter.Greeter/Hello`) to the registered service.
//!
//! Both go through the proxy's [`micro::Client`], so callers in any language get
//! micro's selection, retries and deadlines; errors of the service called come back
//! unchanged (code, id, detail).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use micro::broker::{self, Message};
use micro::client::CallOptions;
use micro::codec::Format;
use micro::codegen::pbjson_types;
use micro::proto::v1::client_server::{Client as ClientApi, ClientServer};
use micro::proto::v1::{CallRequest, CallResponse, PublishRequest, PublishResponse};
use micro::server::{MethodKind, RawBody, RawReply, RawRequest};
use micro::{CallContext, Error, Request, ResponseStream};
use tokio::time::Instant;

use super::Parts;

/// The `id` of errors the proxy raises itself.
const ID: &str = "micro.proxy";
/// The header that names the service a call is for (sent by clients in proxy mode).
pub const SERVICE_HEADER: &str = "micro-service";
/// How long a stream through the proxy may last when the caller sets no deadline.
const STREAM_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);

/// The `micro.v1.Client` handler of the proxy.
#[derive(Debug, Clone)]
pub struct ClientHandler {
    parts: Parts,
}

/// The `micro.v1.Client` handler of the proxy.
pub fn handler(parts: &Parts) -> ClientServer<ClientHandler> {
    ClientServer::new(ClientHandler {
        parts: parts.clone(),
    })
}

impl ClientHandler {
    /// The call options of a `CallRequest`; a stream without a timeout is not cut.
    fn options(&self, req: &CallRequest, streams: bool) -> Result<CallOptions, Error> {
        if req.service.is_empty() && req.address.is_empty() {
            return Err(Error::bad_request(
                ID,
                "no service named: set \"service\" (e.g. \"greeter\") or \"address\"",
            ));
        }
        if req
            .endpoint
            .split_once('.')
            .is_none_or(|(s, m)| s.is_empty() || m.is_empty())
        {
            return Err(Error::bad_request(
                ID,
                format!(
                    "endpoint {:?} is not Service.Method: set \"endpoint\" (e.g. \"Greeter.Hello\")",
                    req.endpoint
                ),
            ));
        }
        let timeout = match req.timeout_ms {
            0 if streams => STREAM_TIMEOUT,
            0 => self.parts.options.call_timeout,
            ms => Duration::from_millis(ms),
        };
        let mut opts = CallOptions::default().timeout(timeout);
        for (k, v) in &req.metadata {
            opts = opts.metadata(k, v.clone());
        }
        if !req.version.is_empty() {
            opts = opts.version(req.version.clone());
        }
        if !req.address.is_empty() {
            opts = opts.address(req.address.clone());
        }
        Ok(opts)
    }

    /// The request payload and its format: `body` as protobuf, else `request` as
    /// JSON (`{}` when neither is set).
    fn payload(req: &CallRequest) -> Result<(Format, Bytes), Error> {
        if !req.body.is_empty() {
            if req.request.is_some() {
                return Err(Error::bad_request(
                    ID,
                    "both \"request\" and \"body\" are set: send JSON in \"request\" or protobuf in \"body\"",
                ));
            }
            return Ok((Format::Proto, Bytes::from(req.body.clone())));
        }
        // Through value_to_json, not the Value's own serde: its numbers are
        // doubles, and `3.0` is refused by an integer field of the service.
        let json = match &req.request {
            Some(value) => serde_json::to_vec(&micro::codec::value_to_json(value.clone())),
            None => Ok(b"{}".to_vec()),
        }
        .map_err(|e| Error::bad_request(ID, format!("encoding \"request\": {e}")))?;
        Ok((Format::Json, json.into()))
    }
}

/// A `CallResponse` carrying one encoded answer in `format`.
fn call_response(format: Format, bytes: &[u8]) -> Result<CallResponse, Error> {
    match format {
        Format::Proto => Ok(CallResponse {
            response: None,
            body: bytes.to_vec(),
        }),
        Format::Json => {
            let value: pbjson_types::Value = serde_json::from_slice(bytes).map_err(|e| {
                Error::internal_server_error(
                    ID,
                    format!("the service answered malformed JSON: {e}"),
                )
            })?;
            Ok(CallResponse {
                response: Some(value),
                body: Vec::new(),
            })
        }
    }
}

impl ClientApi for ClientHandler {
    async fn call(&self, request: Request<CallRequest>) -> Result<CallResponse, Error> {
        let req = request.into_inner();
        let opts = self.options(&req, false)?;
        let (format, payload) = Self::payload(&req)?;
        let bytes = self
            .parts
            .client
            .call_raw(&req.service, &req.endpoint, format, payload, &opts)
            .await?;
        call_response(format, &bytes)
    }

    async fn stream(
        &self,
        request: Request<CallRequest>,
    ) -> Result<ResponseStream<CallResponse>, Error> {
        let req = request.into_inner();
        let opts = self.options(&req, true)?;
        let (format, payload) = Self::payload(&req)?;
        let reply = self
            .parts
            .client
            .call_raw_stream(
                &req.service,
                &req.endpoint,
                format,
                MethodKind::ServerStreaming,
                RawBody::One(payload),
                &opts,
            )
            .await?;
        Ok(match reply {
            RawReply::One(bytes) => {
                futures_util::stream::once(async move { call_response(format, &bytes) }).boxed()
            }
            RawReply::Stream(s) => s
                .map(move |item| item.and_then(|bytes| call_response(format, &bytes)))
                .boxed(),
        })
    }

    async fn publish(&self, request: Request<PublishRequest>) -> Result<PublishResponse, Error> {
        let from = request.context().from_service().map(str::to_string);
        publish(&self.parts, request.into_inner(), from.as_deref()).await
    }
}

/// Publishes a `PublishRequest` on the proxy's broker, as `Client.Publish` and
/// `Broker.Publish` do: the JSON `message` (content type `application/json`) or
/// the raw `body` (its `content_type`, default `application/protobuf`), with the
/// extra headers; `micro-topic`, `micro-id` and `content-type` are set here.
/// Returns the message id.
pub async fn publish(
    parts: &Parts,
    req: PublishRequest,
    from_service: Option<&str>,
) -> Result<PublishResponse, Error> {
    broker::validate_topic(&req.topic)?;
    let (content_type, body) = match (&req.message, req.body.is_empty()) {
        (Some(_), false) => return Err(Error::bad_request(
            ID,
            "both \"message\" and \"body\" are set: send JSON in \"message\" or bytes in \"body\"",
        )),
        (Some(value), true) => {
            let json = serde_json::to_vec(value)
                .map_err(|e| Error::bad_request(ID, format!("encoding \"message\": {e}")))?;
            ("application/json".to_string(), Bytes::from(json))
        }
        (None, _) => {
            let content_type = if req.content_type.is_empty() {
                "application/protobuf".to_string()
            } else {
                req.content_type.clone()
            };
            (content_type, Bytes::from(req.body))
        }
    };
    let id = publish_message(
        parts.broker.as_ref(),
        &req.topic,
        content_type,
        body,
        req.headers,
        from_service,
    )
    .await?;
    Ok(PublishResponse { id })
}

/// Publishes `body` on `topic` of `broker` with the extra `headers` (names
/// lowercased); sets `micro-topic`, a new `micro-id`, `content-type` and, if given,
/// `micro-from-service`. Returns the message id. The proxy's Publish methods and
/// the API gateway's `event` handler publish through this.
pub async fn publish_message(
    broker: &dyn broker::Broker,
    topic: &str,
    content_type: String,
    body: Bytes,
    headers: impl IntoIterator<Item = (String, String)>,
    from_service: Option<&str>,
) -> Result<String, Error> {
    let id = new_id();
    let mut headers: BTreeMap<String, String> = headers
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect();
    if let Some(from) = from_service {
        headers
            .entry(broker::HEADER_FROM.to_string())
            .or_insert_with(|| from.to_string());
    }
    headers.insert(broker::HEADER_TOPIC.into(), topic.to_string());
    headers.insert(broker::HEADER_ID.into(), id.clone());
    headers.insert(broker::HEADER_CONTENT_TYPE.into(), content_type);
    broker.publish(topic, Message { headers, body }).await?;
    Ok(id)
}

/// A random id in the form of a UUID v4.
pub fn new_id() -> String {
    micro::id::new_v4()
}

/// The future of the sidecar fallback.
pub type FallbackFuture = Pin<Box<dyn Future<Output = Result<RawReply, Error>> + Send>>;

/// The transparent sidecar: forwards a call the proxy does not serve itself to the
/// registered service, raw frames both ways. For [`micro::server::Server::fallback`].
///
/// The service is the `micro-service` header if present, else the one registered
/// service that lists the endpoint, else the proto package of the path
/// (`/greeter.Greeter/Hello` → `greeter`). The method kind comes from the
/// endpoint's registry metadata `stream` (unary when unknown).
pub fn fallback(parts: &Parts) -> impl Fn(RawRequest) -> FallbackFuture + Send + Sync + 'static {
    let parts = parts.clone();
    let resolved = Arc::new(Resolved::default());
    move |req: RawRequest| {
        let parts = parts.clone();
        let resolved = resolved.clone();
        Box::pin(async move { forward(&parts, &resolved, req).await })
    }
}

/// How long the sidecar remembers which service serves an endpoint, and how.
const RESOLVED_TTL: Duration = Duration::from_secs(5);

/// Recent answers of [`resolve`], so that a busy sidecar does not read the
/// registry on every call: (service header, path, endpoint) → (service, kind).
#[derive(Debug, Default)]
struct Resolved {
    entries: Mutex<HashMap<ResolveKey, (String, MethodKind, Instant)>>,
}

/// The `micro-service` header, the path and the endpoint of a forwarded call.
type ResolveKey = (Option<String>, String, String);

impl Resolved {
    async fn get(
        &self,
        parts: &Parts,
        ctx: &CallContext,
        endpoint: &str,
    ) -> Result<(String, MethodKind), Error> {
        let key = (
            ctx.metadata().get(SERVICE_HEADER).map(str::to_string),
            ctx.path().to_string(),
            endpoint.to_string(),
        );
        let now = Instant::now();
        {
            let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((service, kind, at)) = entries.get(&key) {
                if now.duration_since(*at) < RESOLVED_TTL {
                    return Ok((service.clone(), *kind));
                }
            }
        }
        let (service, kind) = resolve(parts, ctx, endpoint).await?;
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.retain(|_, (_, _, at)| now.duration_since(*at) < RESOLVED_TTL);
        entries.insert(key, (service.clone(), kind, now));
        Ok((service, kind))
    }
}

async fn forward(parts: &Parts, resolved: &Resolved, req: RawRequest) -> Result<RawReply, Error> {
    let RawRequest { ctx, format, body } = req;
    let endpoint = ctx.endpoint().to_string();
    let (service, kind) = resolved.get(parts, &ctx, &endpoint).await?;
    let mut metadata = ctx.metadata().clone();
    metadata.remove(SERVICE_HEADER);
    let timeout = match ctx.deadline() {
        Some(at) => at.saturating_duration_since(Instant::now()),
        None if kind.server_streams() || kind.client_streams() => STREAM_TIMEOUT,
        None => parts.options.call_timeout,
    };
    let opts = CallOptions::default()
        .timeout(timeout)
        .with_metadata(&metadata);
    let body = match body {
        // A JSON client stream arrives as NDJSON lines in one body.
        RawBody::One(data) if kind.client_streams() && format == Format::Json => {
            let lines: Vec<Result<Bytes, Error>> = data
                .split(|b| *b == b'\n')
                .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
                .map(|line| Ok(data.slice_ref(line)))
                .collect();
            RawBody::Stream(futures_util::stream::iter(lines).boxed())
        }
        other => other,
    };
    parts
        .client
        .call_raw_stream(&service, &endpoint, format, kind, body, &opts)
        .await
}

/// The service a forwarded call is for, and the kind of its endpoint.
async fn resolve(
    parts: &Parts,
    ctx: &CallContext,
    endpoint: &str,
) -> Result<(String, MethodKind), Error> {
    let named = ctx
        .metadata()
        .get(SERVICE_HEADER)
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let services = match &named {
        Some(name) => parts.registry.get_service(name).await.unwrap_or_default(),
        None => parts.registry.list_services().await.unwrap_or_default(),
    };
    let listing: Vec<&micro::registry::Service> = services
        .iter()
        .filter(|s| s.endpoints.iter().any(|e| e.name == endpoint))
        .collect();
    let kind = listing
        .iter()
        .flat_map(|s| s.endpoints.iter())
        .find(|e| e.name == endpoint)
        .and_then(|e| e.metadata.get("stream"))
        .map(|s| kind_of(s))
        .unwrap_or(MethodKind::Unary);
    if let Some(name) = named {
        return Ok((name, kind));
    }
    let mut names: Vec<&str> = listing.iter().map(|s| s.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    match names.as_slice() {
        [one] => return Ok((one.to_string(), kind)),
        [] => {}
        many => {
            return Err(Error::conflict(
                ID,
                format!(
                    "{endpoint} is served by several services ({}): name one in the micro-service header",
                    many.join(", ")
                ),
            ))
        }
    }
    match package_of(ctx.path()) {
        Some(package) => {
            // The package names the service; its registry record tells the kind.
            let kind = parts
                .registry
                .get_service(&package)
                .await
                .unwrap_or_default()
                .iter()
                .flat_map(|s| s.endpoints.iter())
                .find(|e| e.name == endpoint)
                .and_then(|e| e.metadata.get("stream"))
                .map(|s| kind_of(s))
                .unwrap_or(kind);
            Ok((package, kind))
        }
        None => Err(Error::not_found(
            ID,
            format!(
                "no registered service serves {endpoint}: register it, or name the service in the \
                 micro-service header"
            ),
        )),
    }
}

/// The method kind of the registry endpoint metadata `stream`.
fn kind_of(stream: &str) -> MethodKind {
    match stream {
        "server" => MethodKind::ServerStreaming,
        "client" => MethodKind::ClientStreaming,
        "bidi" | "true" => MethodKind::BidiStreaming,
        _ => MethodKind::Unary,
    }
}

/// The proto package of a gRPC path: `/greeter.Greeter/Hello` → `greeter`,
/// `/a.b.Svc/M` → `a.b`; `None` without a package.
fn package_of(path: &str) -> Option<String> {
    let (service, _) = path.strip_prefix('/')?.split_once('/')?;
    let (package, _) = service.rsplit_once('.')?;
    (!package.is_empty()).then(|| package.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packages_and_kinds() {
        assert_eq!(
            package_of("/greeter.Greeter/Hello").as_deref(),
            Some("greeter")
        );
        assert_eq!(package_of("/a.b.Svc/M").as_deref(), Some("a.b"));
        assert_eq!(package_of("/Svc/M"), None);
        assert_eq!(package_of("/"), None);
        assert_eq!(kind_of("server"), MethodKind::ServerStreaming);
        assert_eq!(kind_of("false"), MethodKind::Unary);
        assert_eq!(kind_of("bidi"), MethodKind::BidiStreaming);
    }

    #[test]
    fn ids_look_like_uuids() {
        let (a, b) = (new_id(), new_id());
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
    }
}
