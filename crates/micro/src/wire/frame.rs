//! gRPC length-prefixed message framing: 1 byte compressed flag, 4 bytes big-endian
//! length, then the message.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::Stream;
use http::HeaderMap;
use http_body::Body as HttpBody;

use crate::codec::{Format, Message};
use crate::Error;

/// Size of the frame header.
pub(crate) const HEADER_LEN: usize = 5;

/// Encodes `msg` as one gRPC frame.
pub(crate) fn encode_message<M: Message>(format: Format, msg: &M) -> Result<Bytes, Error> {
    let mut buf = BytesMut::with_capacity(HEADER_LEN + 64);
    buf.put_bytes(0, HEADER_LEN);
    format.encode_into(msg, &mut buf)?;
    finish_frame(buf)
}

/// Frames an already encoded message.
pub(crate) fn frame_bytes(payload: &[u8]) -> Result<Bytes, Error> {
    let mut buf = BytesMut::with_capacity(HEADER_LEN + payload.len());
    buf.put_bytes(0, HEADER_LEN);
    buf.put_slice(payload);
    finish_frame(buf)
}

fn finish_frame(mut buf: BytesMut) -> Result<Bytes, Error> {
    let len = u32::try_from(buf.len() - HEADER_LEN).map_err(|_| {
        Error::internal_server_error("micro", "message larger than 4 GiB cannot be framed")
    })?;
    buf[1..HEADER_LEN].copy_from_slice(&len.to_be_bytes());
    Ok(buf.freeze())
}

/// Takes the next complete frame out of `buf`, if there is one.
///
/// A compressed frame or one longer than `max` is an error: micro does not
/// negotiate compression, and the size limit protects memory.
pub(crate) fn decode_frame(buf: &mut BytesMut, max: usize) -> Result<Option<Bytes>, Error> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let compressed = buf[0];
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if compressed != 0 {
        return Err(Error::not_implemented(
            "micro",
            "compressed gRPC messages are not supported; send with identity encoding",
        ));
    }
    if len > max {
        return Err(Error::payload_too_large(
            "micro",
            format!("message of {len} bytes is over the limit of {max} bytes"),
        ));
    }
    if buf.len() < HEADER_LEN + len {
        buf.reserve(HEADER_LEN + len - buf.len());
        return Ok(None);
    }
    buf.advance(HEADER_LEN);
    Ok(Some(buf.split_to(len).freeze()))
}

/// The length of the one uncompressed message `framed` holds exactly, if it is that.
pub(crate) fn single_frame_len(framed: &[u8]) -> Option<usize> {
    let header: [u8; HEADER_LEN] = framed.get(..HEADER_LEN)?.try_into().ok()?;
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    (header[0] == 0 && framed.len() == HEADER_LEN + len).then_some(len)
}

/// Reads all of `body` (at most `max` payload bytes) and returns the single frame it
/// must hold: the fast path of unary requests and responses.
pub(crate) fn single_frame(mut data: BytesMut, max: usize) -> Result<Option<Bytes>, Error> {
    let frame = decode_frame(&mut data, max)?;
    match frame {
        Some(f) if data.is_empty() => Ok(Some(f)),
        Some(_) => Err(Error::bad_request(
            "micro",
            "expected exactly one gRPC message, got more",
        )),
        None if data.is_empty() => Ok(None),
        None => Err(Error::bad_request("micro", "truncated gRPC message")),
    }
}

/// Checks the trailers that end a body (the client's view of `grpc-status`).
pub(crate) type TrailerCheck = fn(&HeaderMap) -> Result<(), Error>;

/// A stream of gRPC frames read from an HTTP body. At the end it checks the
/// trailers with `on_trailers` (the client's view of `grpc-status`).
pub(crate) struct FrameStream<B> {
    body: B,
    buf: BytesMut,
    max: usize,
    on_trailers: Option<TrailerCheck>,
    done: bool,
}

impl<B> FrameStream<B> {
    pub(crate) fn new(body: B, max: usize) -> Self {
        FrameStream {
            body,
            buf: BytesMut::new(),
            max,
            on_trailers: None,
            done: false,
        }
    }

    /// Checks the trailers at the end of the body (and their absence).
    pub(crate) fn with_trailers(mut self, check: TrailerCheck) -> Self {
        self.on_trailers = Some(check);
        self
    }
}

impl<B> Stream for FrameStream<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    type Item = Result<Bytes, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            match decode_frame(&mut this.buf, this.max) {
                Ok(Some(frame)) => return Poll::Ready(Some(Ok(frame))),
                Ok(None) => {}
                Err(e) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
            }
            match ready!(Pin::new(&mut this.body).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => this.buf.extend_from_slice(&data),
                    Err(frame) => {
                        if let (Some(check), Ok(trailers)) =
                            (this.on_trailers, frame.into_trailers())
                        {
                            this.done = true;
                            if let Err(e) = check(&trailers) {
                                return Poll::Ready(Some(Err(e)));
                            }
                            if !this.buf.is_empty() {
                                return Poll::Ready(Some(Err(truncated())));
                            }
                            return Poll::Ready(None);
                        }
                    }
                },
                Some(Err(e)) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(Error::service_unavailable(
                        "micro",
                        format!("stream broken: {e}"),
                    ))));
                }
                None => {
                    this.done = true;
                    if !this.buf.is_empty() {
                        return Poll::Ready(Some(Err(truncated())));
                    }
                    if this.on_trailers.is_some() {
                        // A response that ends without grpc-status was cut off.
                        return Poll::Ready(Some(Err(Error::service_unavailable(
                            "micro",
                            "stream ended without a gRPC status",
                        ))));
                    }
                    return Poll::Ready(None);
                }
            }
        }
    }
}

fn truncated() -> Error {
    Error::bad_request("micro", "truncated gRPC message at end of stream")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_split_anywhere() {
        let a = frame_bytes(b"hello").unwrap();
        let b = frame_bytes(b"").unwrap();
        let mut all = BytesMut::new();
        all.extend_from_slice(&a);
        all.extend_from_slice(&b);
        // Feed byte by byte: frames come out only when complete.
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for byte in all.iter() {
            buf.put_u8(*byte);
            while let Some(f) = decode_frame(&mut buf, 100).unwrap() {
                out.push(f);
            }
        }
        assert_eq!(out, vec![Bytes::from_static(b"hello"), Bytes::new()]);
    }

    #[test]
    fn rejects_oversized_and_compressed_frames() {
        let mut buf = BytesMut::from(&frame_bytes(&[0u8; 10]).unwrap()[..]);
        assert_eq!(decode_frame(&mut buf, 9).unwrap_err().code(), 413);
        let mut buf = BytesMut::from(&[1u8, 0, 0, 0, 1, 7][..]);
        assert_eq!(decode_frame(&mut buf, 9).unwrap_err().code(), 501);
    }

    #[test]
    fn single_frame_wants_exactly_one() {
        let one = BytesMut::from(&frame_bytes(b"x").unwrap()[..]);
        assert_eq!(
            single_frame(one, 10).unwrap().unwrap(),
            Bytes::from_static(b"x")
        );
        let mut two = BytesMut::from(&frame_bytes(b"x").unwrap()[..]);
        two.extend_from_slice(&frame_bytes(b"y").unwrap());
        assert_eq!(single_frame(two, 10).unwrap_err().code(), 400);
        assert_eq!(
            single_frame(BytesMut::from(&[0u8, 0][..]), 10)
                .unwrap_err()
                .code(),
            400
        );
        assert!(single_frame(BytesMut::new(), 10).unwrap().is_none());
    }
}
