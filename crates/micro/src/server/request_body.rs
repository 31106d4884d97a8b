//! The body of a request as a server reads it: hyper's stream, or the whole body
//! that the own HTTP/1.1 loop ([`super::http1`]) read with the head.

use std::pin::Pin;
use std::task::{Context, Poll};

use crate::BoxError;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::body::{Body, Frame, SizeHint};

/// A request body, as a server reads it.
#[derive(Debug)]
pub enum RequestBody {
    /// Read from the connection as the handler asks (hyper's).
    Streamed(Incoming),
    /// All of it, read already; `None` once taken.
    Whole(Option<Bytes>),
    /// The body could not be read (it stopped arriving): the error it is answered
    /// with.
    Failed(Option<crate::Error>),
}

impl RequestBody {
    /// A body read whole.
    pub fn whole(bytes: Bytes) -> Self {
        RequestBody::Whole(Some(bytes))
    }

    /// The whole body, when it was read with the head and not taken yet.
    pub fn take_whole(&mut self) -> Option<Bytes> {
        match self {
            RequestBody::Whole(bytes) => bytes.take(),
            _ => None,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            RequestBody::Streamed(incoming) => {
                Pin::new(incoming).poll_frame(cx).map_err(BoxError::from)
            }
            RequestBody::Whole(bytes) => Poll::Ready(
                bytes
                    .take()
                    .filter(|b| !b.is_empty())
                    .map(|b| Ok(Frame::data(b))),
            ),
            RequestBody::Failed(e) => Poll::Ready(e.take().map(|e| Err(BoxError::from(e)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Streamed(incoming) => incoming.is_end_stream(),
            RequestBody::Whole(bytes) => bytes.as_ref().is_none_or(Bytes::is_empty),
            RequestBody::Failed(e) => e.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Streamed(incoming) => incoming.size_hint(),
            RequestBody::Whole(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            RequestBody::Failed(_) => SizeHint::default(),
        }
    }
}
