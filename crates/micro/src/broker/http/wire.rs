//! What travels between HTTP brokers: the delivery envelope, the subscriber path,
//! and pooled h2c connections to subscriber brokers.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http_body_util::Full;
use serde::{Deserialize, Serialize};

use crate::broker::Message;
use crate::Error;

pub(super) const ID: &str = "micro.broker";

/// The content type of a delivery.
pub(super) const CONTENT_TYPE: &str = "application/vnd.micro.broker.v1";
/// The path subscriber brokers receive deliveries on.
pub(super) const SUB_PATH: &str = "/_sub";
/// Bytes of the length prefix in front of the envelope head.
pub(super) const PREFIX: usize = 4;
/// Connections unused for this long are closed.
const CONN_IDLE: Duration = Duration::from_secs(5 * 60);

/// The JSON head of a delivery: the topic and the message headers.
#[derive(Serialize, Deserialize)]
struct Head<'a> {
    topic: Cow<'a, str>,
    #[serde(default)]
    headers: Cow<'a, BTreeMap<String, String>>,
}

/// Encodes a delivery body: a 4-byte big-endian length `n`, `n` bytes of JSON
/// `{"topic":..,"headers":{..}}`, then the message body unchanged.
pub(super) fn encode(topic: &str, message: &Message) -> Bytes {
    let head = Head {
        topic: Cow::Borrowed(topic),
        headers: Cow::Borrowed(&message.headers),
    };
    // Room for the JSON as it is without escapes: it is written in place after
    // its length, which is filled in once known.
    let json_guess = 32
        + topic.len()
        + message
            .headers
            .iter()
            .map(|(k, v)| k.len() + v.len() + 6)
            .sum::<usize>();
    let mut out = BytesMut::with_capacity(PREFIX + json_guess + message.body.len());
    out.put_u32(0);
    // A map of strings always serialises.
    let _ = serde_json::to_writer((&mut out).writer(), &head);
    let len = u32::try_from(out.len() - PREFIX).unwrap_or(u32::MAX);
    out[..PREFIX].copy_from_slice(&len.to_be_bytes());
    out.put_slice(&message.body);
    out.freeze()
}

/// Decodes a delivery body made by [`encode`]; a 400 error says what is wrong.
pub(super) fn decode(mut body: Bytes) -> Result<(String, Message), Error> {
    let bad = |why: &str| Error::bad_request(ID, format!("malformed delivery: {why}"));
    if body.len() < PREFIX {
        return Err(bad("shorter than its 4-byte length prefix"));
    }
    let n = body.get_u32() as usize;
    if n > body.len() {
        return Err(bad("the header block is longer than the body"));
    }
    let head = body.split_to(n);
    let head: Head<'_> = serde_json::from_slice(&head)
        .map_err(|e| bad(&format!("the header block is not valid JSON: {e}")))?;
    Ok((
        head.topic.into_owned(),
        Message {
            headers: head.headers.into_owned(),
            body,
        },
    ))
}

/// The path and query a subscriber with this id receives deliveries on.
pub(super) fn sub_path(id: &str) -> String {
    let mut out = format!("{SUB_PATH}?id=");
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:@".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The subscriber id in a delivery's query string (`id=<percent-encoded id>`).
pub(super) fn id_from_query(query: Option<&str>) -> Option<String> {
    let value = query?.split('&').find_map(|p| p.strip_prefix("id="))?;
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok().filter(|id| !id.is_empty())
}
/// One h2c connection per subscriber broker address, shared by every destination at
/// that address (dials deduplicated), closed after five idle minutes.
pub(super) type Conns = crate::wire::pool::Pool<Full<Bytes>>;

/// The connection pool of a publishing broker.
pub(super) fn conns(dial_timeout: std::time::Duration) -> Conns {
    Conns::new(ID, dial_timeout)
        .idle_timeout(CONN_IDLE)
        // Room for 4 MiB messages without waiting on flow control.
        .windows(1 << 20, 4 << 20)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn envelope_round_trips_any_headers_and_bytes() {
        let message = Message::new(vec![0xff, 0x00, 0xfe])
            .header("odd key ✓", "line\r\nbreak\u{0}")
            .header("empty", "");
        let (topic, back) = decode(encode("a.b", &message)).unwrap();
        assert_eq!(topic, "a.b");
        assert_eq!(back, message);
    }

    #[test]
    fn a_head_longer_than_its_guess_keeps_its_length() {
        // Each control character is escaped to six bytes: far beyond the room
        // made for the JSON, so it grows while written in place.
        let message = Message::new(&b"body"[..]).header("k", "\u{1}".repeat(500));
        let (topic, back) = decode(encode("t", &message)).unwrap();
        assert_eq!(topic, "t");
        assert_eq!(back, message);
    }

    #[test]
    fn malformed_envelopes_are_400() {
        for body in [
            &b""[..],
            b"\x00\x00",
            b"\x00\x00\x00\x09{}",
            b"\x00\x00\x00\x02{x",
            b"\x00\x00\x00\x02[]",
            b"\xff\xff\xff\xff",
        ] {
            let err = decode(Bytes::copy_from_slice(body)).unwrap_err();
            assert_eq!(err.code(), 400, "{body:?}");
        }
    }

    #[test]
    fn ids_survive_the_query_string() {
        for id in ["3@127.0.0.1:9000", "0@[::1]:80", "a b/c?d&e=%", "ü"] {
            let path = sub_path(id);
            let (p, q) = path.split_once('?').unwrap();
            assert_eq!(p, SUB_PATH);
            assert!(path.parse::<http::Uri>().is_ok(), "{path}");
            assert_eq!(id_from_query(Some(q)).as_deref(), Some(id));
        }
        assert_eq!(id_from_query(Some("id=%zz")), None);
        assert_eq!(id_from_query(Some("id=%ff")), None);
        assert_eq!(id_from_query(Some("x=1")), None);
        assert_eq!(id_from_query(None), None);
    }
}
