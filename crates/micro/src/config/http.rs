//! A small HTTP/1.1 client for the Vault source (plain `http://` only; etcd has its
//! own client in `crate::etcd`).

use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

/// `http://host:port[/...]` or `host:port` -> `host:port`; `https` is refused.
pub(crate) fn authority(endpoint: &str) -> Result<String, String> {
    let endpoint = endpoint.trim().trim_end_matches('/');
    if endpoint.starts_with("https://") {
        return Err(format!(
            "{endpoint}: https is not supported by this client yet; use http:// on a trusted \
             network or a local TLS-terminating proxy (an agent on 127.0.0.1)"
        ));
    }
    let rest = endpoint.strip_prefix("http://").unwrap_or(endpoint);
    let host = rest.split('/').next().unwrap_or(rest);
    if host.is_empty() || !host.contains(':') {
        return Err(format!(
            "{endpoint:?} is not an address: expected host:port or http://host:port"
        ));
    }
    Ok(host.to_string())
}

/// Sends one request on a new connection; the response with its body stream.
pub(crate) async fn send(
    authority: &str,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
    timeout: Duration,
) -> Result<http::Response<Incoming>, String> {
    let attempt = async {
        let stream = tokio::net::TcpStream::connect(authority)
            .await
            .map_err(|e| format!("cannot connect to {authority}: {e}"))?;
        let _ = stream.set_nodelay(true);
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("{authority}: {e}"))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let mut request = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, authority);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if body.is_some() {
            request = request.header(http::header::CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| e.to_string())?;
        sender
            .send_request(request)
            .await
            .map_err(|e| format!("{authority}: {e}"))
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| format!("{authority} did not answer within {timeout:?}"))?
}

/// Sends one request and reads the whole answer.
pub(crate) async fn call(
    authority: &str,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
    timeout: Duration,
) -> Result<(StatusCode, Bytes), String> {
    let read = async {
        let response = send(authority, method, path, headers, body, timeout).await?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("{authority}: {e}"))?
            .to_bytes();
        Ok::<_, String>((status, body))
    };
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| format!("{authority} did not answer within {timeout:?}"))?
}
