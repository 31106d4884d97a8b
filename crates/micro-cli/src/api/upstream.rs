//! The `http` and `web` handlers: a reverse proxy to a node of a service that is
//! a plain HTTP server. `web` also carries WebSocket upgrades: the upgrade is
//! passed to the node, and once it answers 101 the two connections are joined.

use std::net::SocketAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use micro::registry::Service;
use micro::server::RequestBody;
use micro::Error;

use super::reply::Body;
use super::resolve::ID;
use super::target::Target;

/// The pooled HTTP/1.1 client of `http` and `web` routes.
pub type UpstreamClient = hyper_util::client::legacy::Client<HttpConnector, Body>;

/// A client for upstream HTTP servers.
pub fn client() -> UpstreamClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(std::time::Duration::from_secs(5)));
    hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(connector)
}

/// Headers that belong to one hop only and are never forwarded (RFC 9110 7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The address of a node of `target`'s service (of its version, if it names one).
fn pick_node(records: &[Service], target: &Target) -> Result<String, Error> {
    let nodes: Vec<&str> = records
        .iter()
        .filter(|s| target.version.as_ref().is_none_or(|v| &s.version == v))
        .flat_map(|s| s.nodes.iter().map(|n| n.address.as_str()))
        .collect();
    if nodes.is_empty() {
        return Err(Error::service_unavailable(
            ID,
            format!(
                "service {:?} has no nodes to send the request to",
                target.service
            ),
        ));
    }
    let i = super::random_u32() as usize % nodes.len();
    Ok(nodes[i].to_string())
}

/// The request to the node: path (the route's `rewrite`, else the request's),
/// headers without hop-by-hop ones, plus `X-Forwarded-*`.
fn upstream_request(
    mut req: Request<Body>,
    node: &str,
    target: &Target,
    peer: SocketAddr,
    websocket: bool,
) -> Result<Request<Body>, Error> {
    let original = req.uri().clone();
    let path = match &target.upstream_path {
        Some(p) => match (p.contains('?'), original.query()) {
            (false, Some(q)) => format!("{p}?{q}"),
            _ => p.clone(),
        },
        None => original
            .path_and_query()
            .map(|pq| pq.as_str().to_string())
            .unwrap_or_else(|| "/".into()),
    };
    *req.uri_mut() = Uri::try_from(format!("http://{node}{path}"))
        .map_err(|e| Error::bad_request(ID, format!("bad upstream path {path:?}: {e}")))?;
    let host = req.headers().get(header::HOST).cloned();
    let headers = req.headers_mut();
    strip_hop_by_hop(headers);
    if websocket {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    }
    let forwarded_for = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prior) => format!("{prior}, {}", peer.ip()),
        None => peer.ip().to_string(),
    };
    if let Ok(v) = HeaderValue::from_str(&forwarded_for) {
        headers.insert(HeaderName::from_static("x-forwarded-for"), v);
    }
    if let Some(host) = host {
        headers.insert(HeaderName::from_static("x-forwarded-host"), host);
    }
    headers.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static("http"),
    );
    headers.remove(header::HOST);
    Ok(req)
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Headers the Connection header names are hop-by-hop too.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Whether `req` asks for a WebSocket upgrade.
pub fn is_websocket(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Forwards `req` (its body already limited by the caller) to a node.
pub async fn forward(
    client: &UpstreamClient,
    req: Request<Body>,
    records: &[Service],
    target: &Target,
    peer: SocketAddr,
) -> Result<Response<Body>, Error> {
    let node = pick_node(records, target)?;
    let req = upstream_request(req, &node, target, peer, false)?;
    let rsp = client.request(req).await.map_err(|e| {
        Error::new(
            ID,
            format!("calling {} at {node}: {e}", target.service),
            StatusCode::BAD_GATEWAY.as_u16(),
        )
    })?;
    let (mut parts, body) = rsp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Ok(Response::from_parts(
        parts,
        body.map_err(micro::BoxError::from).boxed_unsync(),
    ))
}

/// Passes a WebSocket upgrade to a node and, once both sides have switched
/// protocols, copies bytes both ways until either closes.
pub async fn websocket(
    mut req: Request<RequestBody>,
    records: &[Service],
    target: &Target,
    peer: SocketAddr,
) -> Result<Response<Body>, Error> {
    let node = pick_node(records, target)?;
    let from_client = hyper::upgrade::on(&mut req);
    let (parts, _) = req.into_parts();
    let mut to_node = Request::from_parts(parts, super::reply::empty());
    // Keep the WebSocket handshake headers (Sec-WebSocket-*), which are end to end.
    to_node = upstream_request(to_node, &node, target, peer, true)?;
    let stream = tokio::net::TcpStream::connect(&node).await.map_err(|e| {
        Error::new(
            ID,
            format!("connecting to {node}: {e}"),
            StatusCode::BAD_GATEWAY.as_u16(),
        )
    })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| Error::new(ID, format!("{node}: {e}"), StatusCode::BAD_GATEWAY.as_u16()))?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    // The origin-form target: this connection is to the node itself.
    let path = to_node
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    *to_node.uri_mut() = Uri::try_from(path).unwrap_or_else(|_| Uri::from_static("/"));
    if let Ok(host) = HeaderValue::from_str(&node) {
        to_node.headers_mut().insert(header::HOST, host);
    }
    let mut answer = sender
        .send_request(to_node)
        .await
        .map_err(|e| Error::new(ID, format!("{node}: {e}"), StatusCode::BAD_GATEWAY.as_u16()))?;
    if answer.status() != StatusCode::SWITCHING_PROTOCOLS {
        let (parts, body) = answer.into_parts();
        return Ok(Response::from_parts(
            parts,
            body.map_err(micro::BoxError::from).boxed_unsync(),
        ));
    }
    let from_node = hyper::upgrade::on(&mut answer);
    tokio::spawn(async move {
        match tokio::try_join!(from_client, from_node) {
            Ok((client, node)) => {
                let (mut a, mut b) = (TokioIo::new(client), TokioIo::new(node));
                let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
            }
            Err(e) => tracing::debug!(error = %e, "a WebSocket upgrade did not complete"),
        }
    });
    let mut rsp = Response::new(super::reply::empty());
    *rsp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    *rsp.headers_mut() = answer.headers().clone();
    Ok(rsp)
}
