//! Streams of messages, in either direction.

use std::fmt;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::stream::{BoxStream, Stream, StreamExt};
use tokio::time::Instant;

use crate::codec::{Format, Message};
use crate::Error;

/// A stream of messages a handler or client sends: build one from any
/// `Stream<Item = Result<T, Error>>` with [`futures_util::StreamExt::boxed`] or
/// [`stream_of`].
pub type ResponseStream<T> = BoxStream<'static, Result<T, Error>>;

/// A stream of raw encoded messages, before decoding.
pub(crate) type RawStream = BoxStream<'static, Result<Bytes, Error>>;

/// Turns an iterator of messages into a [`ResponseStream`].
///
/// ```
/// let s = micro::stream_of(vec![1, 2, 3]);
/// # let _ = s;
/// ```
pub fn stream_of<T, I>(items: I) -> ResponseStream<T>
where
    T: Send + 'static,
    I: IntoIterator<Item = T>,
    I::IntoIter: Send + 'static,
{
    futures_util::stream::iter(items.into_iter().map(Ok)).boxed()
}

/// A stream of messages received: a client's requests in a client-streaming
/// handler, or a server's responses on the calling side. Each item is decoded as it
/// arrives; a malformed message ends the stream with a 400 error.
pub struct Streaming<T> {
    raw: RawStream,
    format: Format,
    done: bool,
    _message: PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for Streaming<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Streaming")
            .field("format", &self.format)
            .finish()
    }
}

impl<T: Message> Streaming<T> {
    pub(crate) fn new(raw: RawStream, format: Format) -> Self {
        Streaming {
            raw,
            format,
            done: false,
            _message: PhantomData,
        }
    }

    /// The next message, `None` at the end of the stream.
    pub async fn message(&mut self) -> Result<Option<T>, Error> {
        self.next().await.transpose()
    }
}

impl<T: Message> Stream for Streaming<T> {
    type Item = Result<T, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        let item = match self.raw.poll_next_unpin(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => None,
            Poll::Ready(Some(Ok(bytes))) => Some(self.format.decode::<T>(&bytes)),
            Poll::Ready(Some(Err(e))) => Some(Err(e)),
        };
        if matches!(item, None | Some(Err(_))) {
            self.done = true;
        }
        Poll::Ready(item)
    }
}

/// Ends a stream with `err` if it is still going at `at`.
pub(crate) fn until_deadline(s: RawStream, at: Instant, err: Error) -> RawStream {
    let expired = Arc::new(AtomicBool::new(false));
    let flag = expired.clone();
    let limited = s.take_until(async move {
        tokio::time::sleep_until(at).await;
        flag.store(true, Ordering::Release);
    });
    let tail =
        futures_util::stream::once(
            async move { expired.load(Ordering::Acquire).then_some(Err(err)) },
        )
        .filter_map(futures_util::future::ready);
    limited.chain(tail).boxed()
}
