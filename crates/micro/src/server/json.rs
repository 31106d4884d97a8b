//! Serving one JSON-over-HTTP request (HTTP/1.1 or h2c): the body is the request
//! message in proto3 JSON; the answer is the response in the same form, or the
//! error JSON with the error's status code.
//!
//! Streaming endpoints use newline-delimited JSON (`application/x-ndjson`): a
//! client-streaming request body holds one message per line, a server-streaming
//! answer sends one message per line; an error after the first message ends the
//! stream with a line `{"error":{...}}`. A caller that sends
//! `Accept: text/event-stream` gets a server-streaming answer as server-sent events
//! instead: `data: <json>` per message, and an error as `event: error` with the
//! error JSON as its data, which ends the stream.

use bytes::{Bytes, BytesMut};
use futures_util::{stream, StreamExt};
use http::{header, HeaderValue, Response, StatusCode};
use http_body::Frame;

use super::method::{RawBody, RawReply, RawRequest};
use super::router::Route;
use super::serve::Shared;
use super::RequestBody;
use crate::codec::Format;
use crate::request::CallContext;
use crate::wire::Body;
use crate::Error;

pub(crate) const NDJSON: &str = "application/x-ndjson";
pub(crate) const EVENT_STREAM: &str = "text/event-stream";

/// Whether the caller asked for server-sent events (`Accept: text/event-stream`).
pub(crate) fn wants_sse(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| {
            v.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case(EVENT_STREAM))
        })
}

/// One server-sent event: `event: <name>` if named, `data:` lines, a blank line.
fn sse_event(event: Option<&str>, data: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(data.len() + 32);
    if let Some(event) = event {
        buf.extend_from_slice(b"event: ");
        buf.extend_from_slice(event.as_bytes());
        buf.extend_from_slice(b"\n");
    }
    // JSON has no raw newlines outside whitespace, but a pretty-printed message
    // still must not end the event early: one `data:` line per line.
    for line in data.split(|b| *b == b'\n') {
        buf.extend_from_slice(b"data: ");
        buf.extend_from_slice(line.strip_suffix(b"\r").unwrap_or(line));
        buf.extend_from_slice(b"\n");
    }
    buf.extend_from_slice(b"\n");
    buf.freeze()
}

pub(crate) async fn handle(
    shared: &Shared,
    route: Route,
    ctx: CallContext,
    content_length: Option<u64>,
    sse: bool,
    body: RequestBody,
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
    let raw_body = if route.fallback {
        // A fallback (a proxy) forwards the body as it came.
        RawBody::One(data)
    } else if route.kind.client_streams() {
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
            let lines = messages.scan(false, move |failed, item| {
                if *failed {
                    return futures_util::future::ready(None);
                }
                let line = match item {
                    Ok(msg) if sse => sse_event(None, &msg),
                    Err(e) if sse => {
                        *failed = true;
                        sse_event(Some("error"), e.to_json().as_bytes())
                    }
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
            let content_type = if sse { EVENT_STREAM } else { NDJSON };
            rsp.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            if sse {
                rsp.headers_mut()
                    .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            }
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

#[cfg(test)]
mod tests {
    use super::{sse_event, wants_sse};

    #[test]
    fn server_sent_events() {
        assert_eq!(&sse_event(None, br#"{"a":1}"#)[..], b"data: {\"a\":1}\n\n");
        assert_eq!(
            &sse_event(Some("error"), b"{\n}")[..],
            b"event: error\ndata: {\ndata: }\n\n"
        );
        let mut headers = http::HeaderMap::new();
        assert!(!wants_sse(&headers));
        headers.insert(
            "accept",
            "application/json, text/event-stream;q=0.9".parse().unwrap(),
        );
        assert!(wants_sse(&headers));
    }
}
