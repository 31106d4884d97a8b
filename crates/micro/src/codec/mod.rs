//! Codecs: how a message becomes bytes on the wire and back.
//!
//! Every generated message is a [`Message`]: a prost message that also has a proto3
//! JSON form through serde. A [`Codec`] turns messages into bytes in one [`Format`];
//! the server and client pick the format from the content type of each request.

mod json;
mod proto;
mod value;

use bytes::{Bytes, BytesMut};
use serde::{de::DeserializeOwned, Serialize};

pub use json::JsonCodec;
pub use proto::ProtoCodec;
pub use value::{json_to_value, value_to_json};

use crate::Error;

/// A message micro can carry: protobuf encoding (prost) plus proto3 JSON (serde).
///
/// `micro-build` generates both for every message of a `.proto`; any type with the
/// same impls works too.
pub trait Message:
    prost::Message + Serialize + DeserializeOwned + Default + Send + Sync + 'static
{
}

impl<T> Message for T where
    T: prost::Message + Serialize + DeserializeOwned + Default + Send + Sync + 'static
{
}

/// Encodes and decodes messages in one wire format.
pub trait Codec: Send + Sync + 'static {
    /// The format this codec speaks.
    fn format(&self) -> Format;
    /// Appends the encoding of `msg` to `buf`.
    fn encode<M: Message>(&self, msg: &M, buf: &mut BytesMut) -> Result<(), Error>;
    /// Decodes one message; a malformed input is a 400 error that says why.
    fn decode<M: Message>(&self, buf: &[u8]) -> Result<M, Error>;
}

/// The payload formats micro speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// Protocol buffers binary encoding.
    Proto,
    /// Proto3 JSON mapping.
    Json,
}

impl Format {
    /// The gRPC content type of this format.
    pub fn grpc_content_type(self) -> &'static str {
        match self {
            Format::Proto => "application/grpc",
            Format::Json => "application/grpc+json",
        }
    }

    /// Encodes `msg` into a fresh buffer.
    pub fn encode<M: Message>(self, msg: &M) -> Result<Bytes, Error> {
        let mut buf = BytesMut::new();
        self.encode_into(msg, &mut buf)?;
        Ok(buf.freeze())
    }

    /// Appends the encoding of `msg` to `buf`.
    pub fn encode_into<M: Message>(self, msg: &M, buf: &mut BytesMut) -> Result<(), Error> {
        match self {
            Format::Proto => ProtoCodec.encode(msg, buf),
            Format::Json => JsonCodec.encode(msg, buf),
        }
    }

    /// Decodes one message.
    pub fn decode<M: Message>(self, buf: &[u8]) -> Result<M, Error> {
        match self {
            Format::Proto => ProtoCodec.decode(buf),
            Format::Json => JsonCodec.decode(buf),
        }
    }
}

/// What a request's `Content-Type` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentType {
    /// gRPC framing with the given payload format.
    Grpc(Format),
    /// One JSON document per request and response (HTTP/1.1 or h2c).
    Json,
}

impl ContentType {
    /// Parses a `Content-Type` header value; parameters (`; charset=utf-8`) are ignored.
    ///
    /// ```
    /// use micro::codec::{ContentType, Format};
    /// assert_eq!(ContentType::parse("application/grpc"), Some(ContentType::Grpc(Format::Proto)));
    /// assert_eq!(ContentType::parse("application/grpc+json"), Some(ContentType::Grpc(Format::Json)));
    /// assert_eq!(ContentType::parse("Application/JSON; charset=utf-8"), Some(ContentType::Json));
    /// assert_eq!(ContentType::parse("application/x-ndjson"), Some(ContentType::Json));
    /// assert_eq!(ContentType::parse("text/plain"), None);
    /// ```
    pub fn parse(value: &str) -> Option<Self> {
        let essence = value.split(';').next().unwrap_or("").trim();
        let lower = essence.to_ascii_lowercase();
        match lower.as_str() {
            "application/grpc" | "application/grpc+proto" => Some(ContentType::Grpc(Format::Proto)),
            "application/grpc+json" => Some(ContentType::Grpc(Format::Json)),
            // NDJSON carries the messages of streaming calls; a form content type is
            // what `curl -d` sends when no header is given, and its body is read as
            // JSON too (a real form body is then a clear 400).
            "application/json" | "application/x-ndjson" | "application/x-www-form-urlencoded" => {
                Some(ContentType::Json)
            }
            _ => None,
        }
    }
}
