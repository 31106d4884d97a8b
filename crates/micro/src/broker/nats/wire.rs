//! Translation between micro and NATS: headers, and the names of JetStream
//! streams and consumers.

use std::collections::BTreeMap;

use async_nats::HeaderMap;

use crate::broker::Message;

/// The name prefix of a header whose name and value travel percent-encoded.
const ENCODED: &str = "micro-enc-";

/// Whether NATS carries `name: value` unchanged: a name of visible ASCII
/// without `:`, a value without control characters and without leading or
/// trailing white space (NATS readers trim it).
fn plain(name: &str, value: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| (33..=126).contains(&b) && b != b':')
        && !name.starts_with(ENCODED)
        && !value.chars().any(char::is_control)
        && !value.starts_with(char::is_whitespace)
        && !value.ends_with(char::is_whitespace)
}

/// NATS headers carrying `headers`. A header NATS cannot carry as it is (a name
/// with spaces, `:` or non-ASCII; a value with line breaks or edge white space)
/// travels as `micro-enc-<name>: <value>`, both percent-encoded, and
/// [`from_nats`] restores it: any header survives, and none can break the
/// protocol's framing.
pub(super) fn to_nats_headers(headers: &BTreeMap<String, String>) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        if plain(name, value) {
            map.insert(name.as_str(), value.as_str());
        } else {
            map.insert(
                format!("{ENCODED}{}", percent_encode(name)),
                percent_encode(value),
            );
        }
    }
    map
}

/// The micro message a NATS message carries: header names lower-cased,
/// encoded headers restored, the protocol's own `Nats-*` headers (message ids
/// for de-duplication, …) left out.
pub(super) fn from_nats(headers: Option<&HeaderMap>, payload: bytes::Bytes) -> Message {
    let mut out = BTreeMap::new();
    if let Some(headers) = headers {
        for (name, values) in headers.iter() {
            let name: &str = name.as_ref();
            let Some(value) = values.last() else { continue };
            let lower = name.to_ascii_lowercase();
            if lower.starts_with("nats-") {
                continue;
            }
            if let Some(encoded) = lower.strip_prefix(ENCODED) {
                if let (Some(name), Some(value)) =
                    (percent_decode(encoded), percent_decode(value.as_str()))
                {
                    out.insert(name, value);
                    continue;
                }
            }
            out.insert(lower, value.as_str().to_string());
        }
    }
    Message {
        headers: out,
        body: payload,
    }
}

fn percent_encode(s: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 15)]));
        }
    }
    out
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A JetStream stream or consumer name for `raw` (a topic or a durable name).
///
/// Names may not hold `.`, wildcards or spaces: `.` becomes `_` and every other
/// character outside `[A-Za-z0-9-]` becomes `_` too. Where that could make two
/// inputs meet (the input already held `_` or another replaced character) or the
/// name is long, a hash of the input is appended, so distinct inputs keep
/// distinct names: `greeter.hello` -> `greeter_hello`, `my_topic` ->
/// `my_topic_1a2b3c4d`.
pub(super) fn js_name(raw: &str) -> String {
    const MAX: usize = 64;
    let mut ambiguous = false;
    let mut name = String::with_capacity(raw.len() + 9);
    for c in raw.chars() {
        match c {
            'A'..='Z' | 'a'..='z' | '0'..='9' | '-' => name.push(c),
            '.' => name.push('_'),
            _ => {
                ambiguous = true;
                name.push('_');
            }
        }
    }
    if ambiguous || name.len() > MAX || name.is_empty() {
        name.truncate(MAX);
        name.push('_');
        name.push_str(&format!("{:08x}", fnv1a(raw.as_bytes())));
    }
    name
}

/// The name of the stream micro creates for `topic`: `<prefix>_<topic as a name>`.
pub(super) fn stream_name(prefix: &str, topic: &str) -> String {
    format!("{prefix}_{}", js_name(topic))
}

fn fnv1a(bytes: &[u8]) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for b in bytes {
        hash ^= u32::from(*b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_valid_and_distinct() {
        assert_eq!(js_name("greeter.hello"), "greeter_hello");
        assert_eq!(stream_name("MICRO", "greeter.hello"), "MICRO_greeter_hello");
        let a = js_name("a.b");
        let b = js_name("a_b");
        assert_ne!(a, b);
        assert!(b.starts_with("a_b_"));
        let long = js_name(&"x".repeat(300));
        assert!(long.len() <= 64 + 9);
        assert_ne!(js_name(&"x".repeat(300)), js_name(&"x".repeat(301)));
        for name in [a, b, long, js_name("ünï cödé/*>")] {
            assert!(name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'));
        }
    }

    #[test]
    fn headers_round_trip() {
        let mut headers = BTreeMap::new();
        for (k, v) in [
            ("micro-id", "1"),
            ("content-type", "application/json"),
            ("bad name", "x"),
            ("ключ", "значение"),
            ("a:b=c", "x"),
            ("micro-enc-looks-encoded", "%41"),
            ("multi", "a\r\nb"),
            ("x-tab", "a\tb"),
            ("x-edges", " padded "),
            ("x-empty", ""),
            ("x-unicode", "grüße, 世界 ✓"),
        ] {
            headers.insert(k.to_string(), v.to_string());
        }
        let mut nats = to_nats_headers(&headers);
        for (name, _) in nats.iter() {
            let name: &str = name.as_ref();
            assert!(
                name.bytes().all(|b| (33..=126).contains(&b) && b != b':'),
                "{name}"
            );
        }
        nats.insert("Nats-Msg-Id", "1");
        nats.insert("X-Upper", "U");
        let back = from_nats(Some(&nats), bytes::Bytes::from_static(b"hi"));
        for (k, v) in &headers {
            assert_eq!(back.headers.get(k), Some(v), "{k}");
        }
        assert_eq!(back.headers.get("x-upper").map(String::as_str), Some("U"));
        assert!(!back.headers.contains_key("nats-msg-id"));
        assert_eq!(back.headers.len(), headers.len() + 1);
        assert_eq!(back.body, "hi");
    }
}
