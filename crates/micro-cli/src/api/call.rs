//! The `rpc` and `stream` handlers: a JSON request (body, query and path
//! params) becomes a service call; the answer is the service's JSON, a server
//! stream is sent as server-sent events (or NDJSON when asked for), and an error
//! is the shared error JSON with its HTTP status.

use bytes::Bytes;
use futures_util::StreamExt;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::StreamBody;
use hyper::body::Frame;
use micro::client::CallOptions;
use micro::codec::Format;
use micro::registry::Service;
use micro::server::{MethodKind, RawBody, RawReply};
use micro::{Client, Error};
use serde_json::Value;

use super::reply::{self, Body};
use super::target::Target;

/// What a call needs besides the target: the request JSON and the call options.
#[derive(Debug)]
pub struct Call<'a> {
    /// The service's client.
    pub client: &'a Client,
    /// The request message as JSON.
    pub request: Bytes,
    /// Timeout, retries, version and metadata.
    pub options: CallOptions,
}

/// The JSON Schema of `endpoint`'s request, from the service's records.
pub fn request_schema<'a>(records: &'a [Service], endpoint: &str) -> Option<&'a Value> {
    records
        .iter()
        .flat_map(|s| s.endpoints.iter())
        .find(|e| e.name == endpoint)
        .map(|e| &e.request.schema)
        .filter(|s| !s.is_null())
}

/// Whether `endpoint` streams its answers (registry metadata `stream`).
pub fn streams(records: &[Service], endpoint: &str) -> bool {
    records
        .iter()
        .flat_map(|s| s.endpoints.iter())
        .find(|e| e.name == endpoint)
        .and_then(|e| e.metadata.get("stream"))
        .is_some_and(|s| s == "server" || s == "bidi" || s == "true")
}

/// A unary call: the service's JSON answer as it came.
pub async fn unary(
    target: &Target,
    endpoint: &str,
    call: Call<'_>,
) -> Result<Response<Body>, Error> {
    let answer = call
        .client
        .call_raw(
            &target.service,
            endpoint,
            Format::Json,
            call.request,
            &call.options,
        )
        .await?;
    Ok(reply::json(StatusCode::OK, answer))
}

/// How a stream is sent to the HTTP caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamFormat {
    /// `text/event-stream`: `data: <json>` per message, `event: error` at a failure.
    Sse,
    /// `application/x-ndjson`: one JSON message per line; a failure is a last line
    /// with the shared error JSON under `"error"`.
    Ndjson,
}

impl StreamFormat {
    /// NDJSON when the caller's `Accept` asks for it, else server-sent events.
    pub fn for_accept(accept: Option<&HeaderValue>) -> StreamFormat {
        match accept.and_then(|a| a.to_str().ok()) {
            Some(a) if a.contains("application/x-ndjson") => StreamFormat::Ndjson,
            _ => StreamFormat::Sse,
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            StreamFormat::Sse => "text/event-stream",
            StreamFormat::Ndjson => "application/x-ndjson",
        }
    }

    fn message(self, json: &[u8]) -> Bytes {
        let mut out = Vec::with_capacity(json.len() + 8);
        match self {
            StreamFormat::Sse => {
                out.extend_from_slice(b"data: ");
                out.extend_from_slice(json);
                out.extend_from_slice(b"\n\n");
            }
            StreamFormat::Ndjson => {
                out.extend_from_slice(json);
                out.push(b'\n');
            }
        }
        out.into()
    }

    fn error(self, e: &Error) -> Bytes {
        match self {
            StreamFormat::Sse => format!("event: error\ndata: {}\n\n", e.to_json()).into(),
            StreamFormat::Ndjson => format!("{{\"error\":{}}}\n", e.to_json()).into(),
        }
    }
}

/// A server-streaming call, sent as `format`. Errors before the first message are
/// an ordinary error answer; later ones end the stream with an error event.
pub async fn stream(
    target: &Target,
    endpoint: &str,
    call: Call<'_>,
    format: StreamFormat,
) -> Result<Response<Body>, Error> {
    let reply = call
        .client
        .call_raw_stream(
            &target.service,
            endpoint,
            Format::Json,
            MethodKind::ServerStreaming,
            RawBody::One(call.request),
            &call.options,
        )
        .await?;
    let frames = match reply {
        RawReply::One(bytes) => futures_util::stream::once(async move { Ok(bytes) }).boxed(),
        RawReply::Stream(s) => s,
    };
    let mut failed = false;
    let events = frames
        .take_while(move |item| {
            // Stop after the first error (it is sent, then the stream ends).
            let go = !failed;
            failed |= item.is_err();
            futures_util::future::ready(go)
        })
        .map(move |item| {
            let bytes = match item {
                Ok(json) => format.message(&json),
                Err(e) => format.error(&e),
            };
            Ok::<_, micro::BoxError>(Frame::data(bytes))
        });
    let mut rsp = Response::new(http_body_util::BodyExt::boxed_unsync(StreamBody::new(
        events,
    )));
    let headers = rsp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(rsp)
}
