//! The type-erased shape of one endpoint, and the adapters that turn typed async
//! functions into it. Generated servers call [`unary`], [`server_streaming`],
//! [`client_streaming`] and [`bidi_streaming`]; the transport only sees
//! [`MethodHandler`].

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::{BoxFuture, FutureExt};
use futures_util::stream::{self, StreamExt};

use crate::codec::{Format, Message};
use crate::request::{CallContext, Request};
use crate::streaming::{RawStream, ResponseStream, Streaming};
use crate::Error;

/// How many messages flow each way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MethodKind {
    /// One request, one response.
    Unary,
    /// One request, a stream of responses.
    ServerStreaming,
    /// A stream of requests, one response.
    ClientStreaming,
    /// Streams both ways.
    BidiStreaming,
}

impl MethodKind {
    /// Whether the client sends a stream.
    pub fn client_streams(self) -> bool {
        matches!(
            self,
            MethodKind::ClientStreaming | MethodKind::BidiStreaming
        )
    }
    /// Whether the server answers with a stream.
    pub fn server_streams(self) -> bool {
        matches!(
            self,
            MethodKind::ServerStreaming | MethodKind::BidiStreaming
        )
    }
    /// The value of the registry's endpoint metadata `stream`.
    pub fn stream_metadata(self) -> &'static str {
        match self {
            MethodKind::Unary => "false",
            MethodKind::ServerStreaming => "server",
            MethodKind::ClientStreaming => "client",
            MethodKind::BidiStreaming => "bidi",
        }
    }
}

/// The request body as the transport hands it to an endpoint.
pub enum RawBody {
    /// Exactly one encoded message (unary and server-streaming calls).
    One(Bytes),
    /// Encoded messages as they arrive (client- and bidi-streaming calls).
    Stream(RawStream),
}

impl fmt::Debug for RawBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RawBody::One(b) => write!(f, "One({} bytes)", b.len()),
            RawBody::Stream(_) => f.write_str("Stream"),
        }
    }
}

/// A request before decoding: context, payload format and body.
#[derive(Debug)]
pub struct RawRequest {
    /// The call's context.
    pub ctx: CallContext,
    /// The payload format the caller used; the reply uses the same.
    pub format: Format,
    /// The encoded request message(s).
    pub body: RawBody,
}

/// The answer of an endpoint, encoded.
pub enum RawReply {
    /// One encoded message.
    One(Bytes),
    /// Encoded messages as they are produced; an `Err` item ends the stream with it.
    Stream(RawStream),
}

impl fmt::Debug for RawReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RawReply::One(b) => write!(f, "One({} bytes)", b.len()),
            RawReply::Stream(_) => f.write_str("Stream"),
        }
    }
}

/// One endpoint, type-erased: decode, call the user's function, encode.
pub trait MethodHandler: Send + Sync + 'static {
    /// Handles one call.
    fn call(&self, req: RawRequest) -> BoxFuture<'static, Result<RawReply, Error>>;
}

/// A shared, type-erased endpoint.
pub type BoxMethodHandler = Arc<dyn MethodHandler>;

struct FnHandler<F>(F);

impl<F> MethodHandler for FnHandler<F>
where
    F: Fn(RawRequest) -> BoxFuture<'static, Result<RawReply, Error>> + Send + Sync + 'static,
{
    fn call(&self, req: RawRequest) -> BoxFuture<'static, Result<RawReply, Error>> {
        (self.0)(req)
    }
}

/// Adapts `async fn(RawRequest) -> Result<RawReply, Error>` into an endpoint (a
/// server's fallback, a proxy).
pub fn raw<F, Fut>(f: F) -> BoxMethodHandler
where
    F: Fn(RawRequest) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<RawReply, Error>> + Send + 'static,
{
    Arc::new(FnHandler(move |req: RawRequest| f(req).boxed()))
}

/// How a handler's input is made from the raw body.
type Decode<In> = fn(Format, RawBody) -> BoxFuture<'static, Result<In, Error>>;
/// How a handler's output becomes the raw reply.
type Encode<Out> = fn(Format, Out) -> Result<RawReply, Error>;

/// The one adapter behind the four method kinds: decode the request as `decode`
/// says, call `f`, encode its answer as `encode` says.
fn adapter<In, Out, F, Fut>(f: F, decode: Decode<In>, encode: Encode<Out>) -> BoxMethodHandler
where
    In: Send + 'static,
    Out: Send + 'static,
    F: Fn(Request<In>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Out, Error>> + Send + 'static,
{
    let f = Arc::new(f);
    Arc::new(FnHandler(move |raw: RawRequest| {
        let f = f.clone();
        let RawRequest { ctx, format, body } = raw;
        async move {
            let input = decode(format, body).await?;
            let output = f(Request::from_parts(ctx, input)).await?;
            encode(format, output)
        }
        .boxed()
    }))
}

/// The single message of a unary or server-streaming request.
fn decode_one<Req: Message>(
    format: Format,
    body: RawBody,
) -> BoxFuture<'static, Result<Req, Error>> {
    match body {
        RawBody::One(bytes) => futures_util::future::ready(format.decode(&bytes)).boxed(),
        // A transport may deliver a one-message request as a stream; take exactly one.
        RawBody::Stream(mut s) => async move {
            let first =
                s.next().await.transpose()?.ok_or_else(|| {
                    Error::bad_request("micro.server", "the request has no message")
                })?;
            if s.next().await.is_some() {
                return Err(Error::bad_request(
                    "micro.server",
                    "this endpoint takes exactly one request message",
                ));
            }
            format.decode(&first)
        }
        .boxed(),
    }
}

/// The request messages of a client- or bidi-streaming request, decoded lazily.
fn decode_stream<Req: Message>(
    format: Format,
    body: RawBody,
) -> BoxFuture<'static, Result<Streaming<Req>, Error>> {
    let raw = match body {
        RawBody::One(bytes) => stream::once(async move { Ok(bytes) }).boxed(),
        RawBody::Stream(s) => s,
    };
    futures_util::future::ready(Ok(Streaming::new(raw, format))).boxed()
}

fn encode_one<Rsp: Message>(format: Format, rsp: Rsp) -> Result<RawReply, Error> {
    Ok(RawReply::One(format.encode(&rsp)?))
}

fn encode_stream<Rsp: Message>(format: Format, s: ResponseStream<Rsp>) -> Result<RawReply, Error> {
    Ok(RawReply::Stream(
        s.map(move |item| item.and_then(|msg| format.encode(&msg)))
            .boxed(),
    ))
}

/// Adapts `async fn(Request<Req>) -> Result<Rsp, Error>` into an endpoint.
pub fn unary<Req, Rsp, F, Fut>(f: F) -> BoxMethodHandler
where
    Req: Message,
    Rsp: Message,
    F: Fn(Request<Req>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Rsp, Error>> + Send + 'static,
{
    adapter(f, decode_one::<Req>, encode_one::<Rsp>)
}

/// Adapts `async fn(Request<Req>) -> Result<ResponseStream<Rsp>, Error>`.
pub fn server_streaming<Req, Rsp, F, Fut>(f: F) -> BoxMethodHandler
where
    Req: Message,
    Rsp: Message,
    F: Fn(Request<Req>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<ResponseStream<Rsp>, Error>> + Send + 'static,
{
    adapter(f, decode_one::<Req>, encode_stream::<Rsp>)
}

/// Adapts `async fn(Request<Streaming<Req>>) -> Result<Rsp, Error>`.
pub fn client_streaming<Req, Rsp, F, Fut>(f: F) -> BoxMethodHandler
where
    Req: Message,
    Rsp: Message,
    F: Fn(Request<Streaming<Req>>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Rsp, Error>> + Send + 'static,
{
    adapter(f, decode_stream::<Req>, encode_one::<Rsp>)
}

/// Adapts `async fn(Request<Streaming<Req>>) -> Result<ResponseStream<Rsp>, Error>`.
pub fn bidi_streaming<Req, Rsp, F, Fut>(f: F) -> BoxMethodHandler
where
    Req: Message,
    Rsp: Message,
    F: Fn(Request<Streaming<Req>>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<ResponseStream<Rsp>, Error>> + Send + 'static,
{
    adapter(f, decode_stream::<Req>, encode_stream::<Rsp>)
}
