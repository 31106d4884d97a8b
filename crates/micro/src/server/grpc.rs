//! Serving one gRPC request: HTTP/2, `application/grpc[+proto|+json]`, framed messages,
//! status in trailers.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{stream, StreamExt};
use http::{header, HeaderMap, HeaderValue, Response};
use http_body::Frame;

use super::method::{RawBody, RawReply, RawRequest};
use super::router::Route;
use super::serve::Shared;
use super::RequestBody;
use crate::codec::Format;
use crate::request::CallContext;
use crate::wire::{frame, status, Body};
use crate::Error;

pub(crate) async fn handle(
    shared: &Shared,
    route: Route,
    format: Format,
    ctx: CallContext,
    headers: &HeaderMap,
    body: RequestBody,
) -> Response<Body> {
    if let Some(enc) = headers.get("grpc-encoding").and_then(|v| v.to_str().ok()) {
        if enc != "identity" {
            let err = Error::not_implemented(
                shared.name.as_ref(),
                format!("grpc-encoding {enc:?} is not supported; use identity"),
            );
            return error_response(format, &err);
        }
    }
    let max = shared.max_body;
    let raw_body = if route.kind.client_streams() {
        RawBody::Stream(frame::FrameStream::new(body, max).boxed())
    } else {
        match read_one(body, max, shared.read_timeout).await {
            Ok(b) => RawBody::One(b),
            Err(e) => return error_response(format, &e),
        }
    };
    let deadline = ctx.deadline;
    let req = RawRequest {
        ctx,
        format,
        body: raw_body,
    };
    match shared.call(&route, req, deadline).await {
        Ok(RawReply::One(bytes)) => match frame::frame_bytes(&bytes) {
            Ok(framed) => {
                let mut rsp = Response::new(Body::unary(framed, status::ok_trailers()));
                set_content_type(rsp.headers_mut(), format);
                rsp
            }
            Err(e) => error_response(format, &e),
        },
        Ok(RawReply::Stream(messages)) => {
            let frames = messages
                .map(|item| item.and_then(|bytes| frame::frame_bytes(&bytes)))
                // End the body at the first error, with that error as the status.
                .scan(false, |failed, item| {
                    if *failed {
                        return futures_util::future::ready(None);
                    }
                    *failed = item.is_err();
                    futures_util::future::ready(Some(match item {
                        Ok(data) => Frame::data(data),
                        Err(e) => {
                            let mut trailers = HeaderMap::new();
                            status::write_error(&e, &mut trailers);
                            Frame::trailers(trailers)
                        }
                    }))
                });
            let ended_ok = stream::once(async { Frame::trailers(status::ok_trailers()) });
            let body = frames.chain(ended_ok).scan(false, |ended, f| {
                // After an error trailer, the success trailer must not follow.
                let out = if *ended { None } else { Some(f) };
                if out.as_ref().is_some_and(Frame::is_trailers) {
                    *ended = true;
                }
                futures_util::future::ready(out)
            });
            let mut rsp = Response::new(Body::stream(body.boxed()));
            set_content_type(rsp.headers_mut(), format);
            rsp
        }
        Err(e) => error_response(format, &e),
    }
}

/// Reads a whole unary request body and takes its one message.
async fn read_one(body: RequestBody, max: usize, read_timeout: Duration) -> Result<Bytes, Error> {
    let data = super::serve::read_body(body, max, frame::HEADER_LEN, read_timeout).await?;
    frame::single_frame(bytes::BytesMut::from(data), max)?
        .ok_or_else(|| Error::bad_request("micro.server", "the request has no message"))
}

fn set_content_type(headers: &mut HeaderMap, format: Format) {
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.grpc_content_type()),
    );
}

/// A trailers-only gRPC response carrying `err`.
pub(crate) fn error_response(format: Format, err: &Error) -> Response<Body> {
    let mut rsp = Response::new(Body::Empty);
    set_content_type(rsp.headers_mut(), format);
    status::write_error(err, rsp.headers_mut());
    rsp
}
