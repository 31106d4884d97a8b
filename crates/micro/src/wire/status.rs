//! gRPC status in headers and trailers, carrying the micro error.

use http::{HeaderMap, HeaderValue};

use crate::errors::GrpcCode;
use crate::Error;

/// The trailer that carries the full micro error JSON.
pub(crate) const MICRO_ERROR: &str = "micro-error";

/// The headers (or trailers) of a successful gRPC response end.
pub(crate) fn ok_trailers() -> HeaderMap {
    let mut h = HeaderMap::with_capacity(1);
    h.insert("grpc-status", HeaderValue::from_static("0"));
    h
}

/// Writes `err` as `grpc-status`, `grpc-message` and `micro-error`.
pub(crate) fn write_error(err: &Error, headers: &mut HeaderMap) {
    headers.insert("grpc-status", HeaderValue::from(err.grpc_code().as_i32()));
    if let Ok(v) = HeaderValue::from_str(&percent_encode(err.detail())) {
        headers.insert("grpc-message", v);
    }
    // ASCII-only JSON: header values that are not visible ASCII are unreadable to
    // many gRPC libraries.
    if let Ok(v) = HeaderValue::from_str(&ascii_json(&err.to_json())) {
        headers.insert(MICRO_ERROR, v);
    }
}

/// Reads the status from response trailers (or trailers-only headers):
/// `None` if there is no `grpc-status`, `Some(Ok)` for 0, the error otherwise.
pub(crate) fn read_status(headers: &HeaderMap, id: &str) -> Option<Result<(), Error>> {
    let status = headers.get("grpc-status")?;
    let code = status
        .to_str()
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .map(GrpcCode::from_i32)
        .unwrap_or(GrpcCode::Unknown);
    if code == GrpcCode::Ok {
        return Some(Ok(()));
    }
    if let Some(err) = headers
        .get(MICRO_ERROR)
        .map(|v| Error::parse(&String::from_utf8_lossy(v.as_bytes())))
        .filter(|e| e.code() != 500 || code.to_http() == 500)
    {
        return Some(Err(err));
    }
    let message = headers
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .map(percent_decode)
        .unwrap_or_default();
    Some(Err(Error::from_grpc(id, code, &message)))
}

/// Trailer check for client response streams: a missing status is a broken stream.
pub(crate) fn check_trailers(trailers: &HeaderMap) -> Result<(), Error> {
    read_status(trailers, "micro.client").unwrap_or_else(|| {
        Err(Error::service_unavailable(
            "micro.client",
            "response ended without a gRPC status",
        ))
    })
}

/// Escapes every non-ASCII character of a JSON text as `\uXXXX` (UTF-16 units).
/// Such characters only occur inside strings, where the escape means the same.
fn ascii_json(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

/// gRPC's percent-encoding of `grpc-message`: everything outside printable ASCII
/// (and `%` itself) as `%XX`.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn percent_decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_survives_trailers() {
        let err = Error::bad_request("greeter", "name is required: ünïcode 100%");
        let mut h = HeaderMap::new();
        write_error(&err, &mut h);
        assert_eq!(h.get("grpc-status").unwrap(), "3");
        assert_eq!(read_status(&h, "x").unwrap().unwrap_err(), err);
        // Without micro-error, grpc-message and the code still make a good error.
        assert!(
            h[MICRO_ERROR].to_str().is_ok(),
            "micro-error is visible ASCII"
        );
        h.remove(MICRO_ERROR);
        let back = read_status(&h, "x").unwrap().unwrap_err();
        assert_eq!((back.code(), back.detail()), (400, err.detail()));
        let emoji = Error::conflict("a", "😀 and \"quotes\"");
        assert_eq!(Error::parse(&ascii_json(&emoji.to_json())), emoji);
        assert!(read_status(&ok_trailers(), "x").unwrap().is_ok());
        assert!(read_status(&HeaderMap::new(), "x").is_none());
    }

    #[test]
    fn percent_coding_round_trips() {
        for s in ["plain", "100%", "tab\there", "ü", "%zz", "%"] {
            assert_eq!(percent_decode(&percent_encode(s)), s);
        }
    }
}
