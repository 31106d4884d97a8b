//! W3C Trace Context: the `traceparent` header (`00-<trace id>-<span id>-<flags>`).
//!
//! Parsing is strict, as the W3C recommendation asks: lower-case hex only, exact
//! field lengths, no all-zero ids, version `ff` refused. A header that fails is
//! ignored (the request starts a new trace, and its `tracestate` is dropped with
//! it). `tracestate` itself is carried as it came.

use std::fmt;

use rand::Rng;

/// The `traceparent` header.
pub const TRACEPARENT: &str = "traceparent";
/// The `tracestate` header.
pub const TRACESTATE: &str = "tracestate";

/// A trace id: 16 bytes, never all zero; shown as 32 lower-case hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TraceId([u8; 16]);

/// A span id: 8 bytes, never all zero; shown as 16 lower-case hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpanId([u8; 8]);

macro_rules! id_impl {
    ($ty:ident, $n:literal) => {
        impl $ty {
            /// A new random id (never all zero).
            pub fn random() -> Self {
                let mut rng = rand::rng();
                loop {
                    let bytes: [u8; $n] = rng.random();
                    if bytes.iter().any(|b| *b != 0) {
                        return $ty(bytes);
                    }
                }
            }

            /// The id of these bytes; `None` when they are all zero (invalid).
            pub fn from_bytes(bytes: [u8; $n]) -> Option<Self> {
                bytes.iter().any(|b| *b != 0).then_some($ty(bytes))
            }

            /// The id written as lower-case hex; `None` if it is not exactly that
            /// many lower-case hex digits, or is all zeros.
            pub fn from_hex(hex: &str) -> Option<Self> {
                let mut bytes = [0u8; $n];
                decode_hex(hex, &mut bytes)?;
                Self::from_bytes(bytes)
            }

            /// The bytes.
            pub fn to_bytes(self) -> [u8; $n] {
                self.0
            }

            fn write_hex(&self, out: &mut String) {
                encode_hex(&self.0, out);
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let mut s = String::with_capacity($n * 2);
                self.write_hex(&mut s);
                f.write_str(&s)
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({self})", stringify!($ty))
            }
        }

        impl std::str::FromStr for $ty {
            type Err = InvalidId;
            fn from_str(s: &str) -> Result<Self, InvalidId> {
                Self::from_hex(s).ok_or(InvalidId)
            }
        }
    };
}

id_impl!(TraceId, 16);
id_impl!(SpanId, 8);

/// Text that is not a valid trace or span id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidId;

impl fmt::Display for InvalidId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a valid id: expected lower-case hex digits, not all zero")
    }
}

impl std::error::Error for InvalidId {}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn encode_hex(bytes: &[u8], out: &mut String) {
    for b in bytes {
        out.push(HEX[(b >> 4) as usize] as char);
        out.push(HEX[(b & 0xf) as usize] as char);
    }
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// Lower-case hex into exactly `out.len()` bytes.
fn decode_hex(hex: &str, out: &mut [u8]) -> Option<()> {
    let hex = hex.as_bytes();
    if hex.len() != out.len() * 2 {
        return None;
    }
    for (i, pair) in hex.chunks_exact(2).enumerate() {
        out[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(())
}

/// The context one span hands to its children: trace id, its own span id, flags.
///
/// ```
/// use micro::wrapper::trace::TraceContext;
///
/// let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
/// let ctx = TraceContext::parse(header).unwrap();
/// assert!(ctx.sampled());
/// assert_eq!(ctx.to_traceparent(), header);
/// assert!(TraceContext::parse("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01").is_none());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    /// The trace.
    pub trace_id: TraceId,
    /// The span (for an incoming header: the caller's span, the parent).
    pub span_id: SpanId,
    /// Trace flags; bit 0 is "sampled".
    pub flags: u8,
}

impl TraceContext {
    /// The "sampled" trace flag.
    pub const SAMPLED: u8 = 0x01;

    /// A context in a new trace.
    pub fn new_root(sampled: bool) -> Self {
        TraceContext {
            trace_id: TraceId::random(),
            span_id: SpanId::random(),
            flags: if sampled { Self::SAMPLED } else { 0 },
        }
    }

    /// A new span in the same trace, with the same flags.
    pub fn child(&self) -> Self {
        TraceContext {
            trace_id: self.trace_id,
            span_id: SpanId::random(),
            flags: self.flags,
        }
    }

    /// Whether the trace is sampled (recorded).
    pub fn sampled(&self) -> bool {
        self.flags & Self::SAMPLED != 0
    }

    /// Parses a `traceparent` header value; `None` when it is not valid.
    ///
    /// Version `00` must be exactly 55 characters. A later version may be longer
    /// (with a `-` after the flags); its first four fields are read as version `00`.
    /// Version `ff`, upper-case hex and all-zero ids are invalid.
    pub fn parse(header: &str) -> Option<Self> {
        let header = header.trim_matches(|c| c == ' ' || c == '\t');
        let bytes = header.as_bytes();
        if bytes.len() < 55 {
            return None;
        }
        let mut version = [0u8; 1];
        decode_hex(header.get(0..2)?, &mut version)?;
        match version[0] {
            0xff => return None,
            0x00 if bytes.len() != 55 => return None,
            0x00 => {}
            _ if bytes.len() > 55 && bytes[55] != b'-' => return None,
            _ => {}
        }
        if bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
            return None;
        }
        let trace_id = TraceId::from_hex(header.get(3..35)?)?;
        let span_id = SpanId::from_hex(header.get(36..52)?)?;
        let mut flags = [0u8; 1];
        decode_hex(header.get(53..55)?, &mut flags)?;
        Some(TraceContext {
            trace_id,
            span_id,
            flags: flags[0],
        })
    }

    /// The `traceparent` header value (version `00`; only the sampled flag is
    /// passed on, the others being unknown to version `00`).
    pub fn to_traceparent(&self) -> String {
        let mut s = String::with_capacity(55);
        s.push_str("00-");
        self.trace_id.write_hex(&mut s);
        s.push('-');
        self.span_id.write_hex(&mut s);
        s.push_str(if self.sampled() { "-01" } else { "-00" });
        s
    }
}

impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_traceparent())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_header_round_trips() {
        let ctx = TraceContext::parse(GOOD).unwrap();
        assert_eq!(ctx.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(ctx.span_id.to_string(), "00f067aa0ba902b7");
        assert!(ctx.sampled());
        assert_eq!(ctx.to_traceparent(), GOOD);
        let unsampled = GOOD.replace("-01", "-00");
        let ctx = TraceContext::parse(&unsampled).unwrap();
        assert!(!ctx.sampled());
        assert_eq!(ctx.to_traceparent(), unsampled);
        // Surrounding blanks are tolerated.
        assert!(TraceContext::parse(&format!(" {GOOD}\t")).is_some());
    }

    #[test]
    fn unknown_flags_are_read_but_only_sampled_is_passed_on() {
        let ctx = TraceContext::parse(&GOOD.replace("-01", "-09")).unwrap();
        assert_eq!(ctx.flags, 0x09);
        assert!(ctx.sampled());
        assert!(ctx.to_traceparent().ends_with("-01"));
    }

    #[test]
    fn a_later_version_is_read_by_its_first_fields() {
        let v = GOOD.replacen("00", "01", 1);
        assert!(TraceContext::parse(&v).is_some());
        assert!(TraceContext::parse(&format!("{v}-what-comes-next")).is_some());
        // A longer version 00, or a later version without the dash, is refused.
        assert!(TraceContext::parse(&format!("{GOOD}-x")).is_none());
        assert!(TraceContext::parse(&format!("{v}x")).is_none());
    }

    #[test]
    fn bad_headers_are_refused() {
        let zeros_trace = "00-00000000000000000000000000000000-00f067aa0ba902b7-01";
        let zeros_span = "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01";
        let mut bad = vec![
            String::new(),
            "00".into(),
            "garbage".into(),
            zeros_trace.into(),
            zeros_span.into(),
            GOOD.replacen("00", "ff", 1),
            GOOD.replacen("00", "0g", 1),
            GOOD.to_uppercase(),
            GOOD.replace("4bf92f", "4BF92F"),
            GOOD.replace("00f067", "00F067"),
            GOOD.replace("-01", "-0A"),
            GOOD.replace("-01", "-1"),
            GOOD.replace("-01", "-001"),
            GOOD.replacen('-', "_", 1),
            GOOD.replace("-00f0", "_00f0"),
            GOOD.replace("b7-01", "b7_01"),
            GOOD.replace("4736", "473"),
            GOOD.replace("4736", "47366"),
            GOOD.replace("b7-", "b-"),
            GOOD.replace("b7-", "b77-"),
            GOOD[..54].to_string(),
            format!("{GOOD}0"),
            GOOD.replace('a', "é"),
            GOOD.replace('-', " "),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0١".into(),
        ];
        // Every single-character change to a non-hex byte at a hex position.
        for i in (0..55).filter(|i| ![2, 35, 52].contains(i)) {
            let mut s = GOOD.as_bytes().to_vec();
            s[i] = b'x';
            bad.push(String::from_utf8(s).unwrap());
        }
        for header in &bad {
            assert_eq!(TraceContext::parse(header), None, "{header:?}");
        }
    }

    #[test]
    fn ids_are_random_and_parse_back() {
        let a = TraceContext::new_root(true);
        let b = a.child();
        assert_eq!(a.trace_id, b.trace_id);
        assert_ne!(a.span_id, b.span_id);
        assert_eq!(TraceContext::parse(&b.to_traceparent()), Some(b));
        assert_eq!(
            a.trace_id.to_string().parse::<TraceId>().unwrap(),
            a.trace_id
        );
        assert!("zz".parse::<SpanId>().is_err());
        assert!(!TraceContext::new_root(false).sampled());
        assert_eq!(SpanId::from_bytes([0; 8]), None);
    }
}
