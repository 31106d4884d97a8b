//! Building the gateway's responses: JSON answers, the shared error JSON, and the
//! one body type every handler returns.

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use micro::Error;

/// The body of every gateway response: whole, streamed (SSE) or proxied.
pub type Body = UnsyncBoxBody<Bytes, micro::BoxError>;

/// A whole body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// An empty body.
pub fn empty() -> Body {
    full(Bytes::new())
}

/// `200` with a JSON body.
pub fn json(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut rsp = Response::new(full(body));
    *rsp.status_mut() = status;
    // The type, and room for what the pipeline adds (request id, CORS) without
    // growing the map.
    let headers = rsp.headers_mut();
    headers.reserve(4);
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    rsp
}

/// The shared error JSON `{id, code, detail, status}` with the error's status.
pub fn error(e: &Error) -> Response<Body> {
    let status = StatusCode::from_u16(e.code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json(status, e.to_json())
}
