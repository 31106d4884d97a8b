//! Serving one JSON-over-HTTP request (HTTP/1.1 or h2c): the body is the request
//! message in proto3 JSON; the answer is the response in the same form, or the
//! error JSON with the error's status code.
//!
//! Streaming endpoints use newline-delimited JSON (`application/x-ndjson`): a
//! client-streaming request body holds one message per line, a server-streaming
//! answer sends one message per line; an error after the first message ends the
//! stream with a line `{"error":{...}}`.

use bytes::{Bytes, BytesMut};
use futures_util::{stream, StreamExt};
use http::{header, HeaderValue, Response, StatusCode};
use http_body::Frame;
use hyper::body::Incoming;

use super::method::{RawBody, RawReply, RawRequest};
use super::router::Route;
use super::serve::Shared;
use crate::codec::Format;
use crate::request::CallContext;
use crate::wire::Body;
use crate::Error;

pub(crate) const NDJSON: &str = "application/x-ndjson";

pub(crate) async fn handle(
    shared: &Shared,
    route: Route,
    ctx: CallContext,
    content_length: Option<u64>,
    body: Incoming,
) -> Response<Body> {
    let max = shared.max_body;
    if content_length.is_some_and(|n| n > max as u64) {
        return error_response(&Error::payload_too_large(
            shared.name.as_ref(),
            format!("request body is over the limit of {max} bytes"),
        ));
    }
    let data = match super::serve::read_body(body, max, 0, shared.read_timeout).await {
        Ok(d) => d,
        Err(e) => return error_response(&e),
    };
    let raw_body = if route.kind.client_streams() {
        let lines: Vec<Result<Bytes, Error>> = data
            .split(|b| *b == b'\n')
            .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
            .map(|line| Ok(data.slice_ref(line)))
            .collect();
        RawBody::Stream(stream::iter(lines).boxed())
    } else {
        RawBody::One(data)
    };
    let deadline = ctx.deadline;
    let req = RawRequest {
        ctx,
        format: Format::Json,
        body: raw_body,
    };
    match shared.call(&route, req, deadline).await {
        Ok(RawReply::One(bytes)) => {
            let mut rsp = Response::new(Body::full(bytes));
            rsp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            rsp
        }
        Ok(RawReply::Stream(messages)) => {
            let lines = messages.scan(false, |failed, item| {
                if *failed {
                    return futures_util::future::ready(None);
                }
                let line = match item {
                    Ok(msg) => {
                        let mut buf = BytesMut::with_capacity(msg.len() + 1);
                        buf.extend_from_slice(&msg);
                        buf.extend_from_slice(b"\n");
                        buf.freeze()
                    }
                    Err(e) => {
                        *failed = true;
                        Bytes::from(format!("{{\"error\":{}}}\n", e.to_json()))
                    }
                };
                futures_util::future::ready(Some(Frame::data(line)))
            });
            let mut rsp = Response::new(Body::stream(lines.boxed()));
            rsp.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(NDJSON));
            rsp
        }
        Err(e) => error_response(&e),
    }
}

/// The shared error JSON with the error's status code.
pub(crate) fn error_response(err: &Error) -> Response<Body> {
    let mut rsp = Response::new(Body::full(err.to_json()));
    *rsp.status_mut() =
        StatusCode::from_u16(err.code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    rsp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    rsp
}
