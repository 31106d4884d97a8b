//! The one HTTP body type micro sends, for requests and responses alike.

use std::convert::Infallible;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use http::HeaderMap;
use http_body::{Frame, SizeHint};

/// A body that is empty, one buffer (JSON, a unary gRPC message with its trailers), or
/// a stream of frames (streaming calls).
pub(crate) enum Body {
    Empty,
    Full(Option<Bytes>),
    /// One data frame then trailers: a unary gRPC message.
    Unary {
        data: Option<Bytes>,
        trailers: Option<HeaderMap>,
    },
    Stream(BoxStream<'static, Frame<Bytes>>),
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Body::Empty => f.write_str("Body::Empty"),
            Body::Full(b) => write!(f, "Body::Full({:?} bytes)", b.as_ref().map(Bytes::len)),
            Body::Unary { data, .. } => {
                write!(f, "Body::Unary({:?} bytes)", data.as_ref().map(Bytes::len))
            }
            Body::Stream(_) => f.write_str("Body::Stream"),
        }
    }
}

impl Body {
    pub(crate) fn full(data: impl Into<Bytes>) -> Self {
        Body::Full(Some(data.into()))
    }

    pub(crate) fn unary(data: Bytes, trailers: HeaderMap) -> Self {
        Body::Unary {
            data: Some(data),
            trailers: Some(trailers),
        }
    }

    /// Data frames from `stream`; the final `HeaderMap` it yields becomes trailers.
    pub(crate) fn stream(stream: BoxStream<'static, Frame<Bytes>>) -> Self {
        Body::Stream(stream)
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match &mut *self {
            Body::Empty => Poll::Ready(None),
            Body::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            Body::Unary { data, trailers } => {
                if let Some(d) = data.take() {
                    return Poll::Ready(Some(Ok(Frame::data(d))));
                }
                Poll::Ready(trailers.take().map(|t| Ok(Frame::trailers(t))))
            }
            Body::Stream(s) => s.poll_next_unpin(cx).map(|f| f.map(Ok)),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Empty => true,
            Body::Full(d) => d.is_none(),
            Body::Unary { data, trailers } => data.is_none() && trailers.is_none(),
            Body::Stream(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Empty => SizeHint::with_exact(0),
            Body::Full(d) => SizeHint::with_exact(d.as_ref().map_or(0, |d| d.len() as u64)),
            _ => SizeHint::default(),
        }
    }
}
