use bytes::BytesMut;

use super::{Codec, Format, Message};
use crate::Error;

/// Protocol buffers binary encoding (prost).
#[derive(Debug, Clone, Copy, Default)]
pub struct ProtoCodec;

impl Codec for ProtoCodec {
    fn format(&self) -> Format {
        Format::Proto
    }

    fn encode<M: Message>(&self, msg: &M, buf: &mut BytesMut) -> Result<(), Error> {
        buf.reserve(msg.encoded_len());
        msg.encode(buf).map_err(|e| {
            Error::internal_server_error("micro.codec", format!("encoding protobuf: {e}"))
        })
    }

    fn decode<M: Message>(&self, buf: &[u8]) -> Result<M, Error> {
        M::decode(buf).map_err(|e| {
            Error::bad_request("micro.codec", format!("malformed protobuf request: {e}"))
        })
    }
}
