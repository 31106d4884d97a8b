//! gzip for whole answers: when the caller accepts it, a JSON (or text) answer of
//! at least [`MIN_SIZE`] bytes is compressed. Streams are left alone (they must
//! reach the caller message by message).

use bytes::Bytes;
use flate2::write::GzEncoder;
use http::header::{self, HeaderMap, HeaderValue};

/// Smaller answers are not worth compressing.
pub const MIN_SIZE: usize = 1024;

/// Whether `accept_encoding` allows gzip (`gzip`, not `gzip;q=0`).
pub fn accepts_gzip(request: &HeaderMap) -> bool {
    request
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';').map(str::trim);
            let name = parts.next().unwrap_or("");
            let refused =
                parts.any(|p| p.replace(' ', "") == "q=0" || p.replace(' ', "") == "q=0.0");
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
}

/// `body` gzipped, with the answer headers set for it; `None` when it is not
/// worth it or the content type is not text.
pub fn gzip(headers: &mut HeaderMap, body: &[u8]) -> Option<Bytes> {
    if body.len() < MIN_SIZE || headers.contains_key(header::CONTENT_ENCODING) {
        return None;
    }
    let textual = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json") || ct.starts_with("text/"));
    if !textual {
        return None;
    }
    use std::io::Write as _;
    let mut encoder = GzEncoder::new(
        Vec::with_capacity(body.len() / 4),
        flate2::Compression::fast(),
    );
    encoder.write_all(body).ok()?;
    let compressed = encoder.finish().ok()?;
    headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    headers.append(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    headers.remove(header::CONTENT_LENGTH);
    Some(compressed.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;

    #[test]
    fn large_json_is_gzipped_small_is_not() {
        let mut accept = HeaderMap::new();
        accept.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("br, gzip;q=0.8"),
        );
        assert!(accepts_gzip(&accept));
        accept.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("gzip;q=0"),
        );
        assert!(!accepts_gzip(&accept));

        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        assert!(gzip(&mut headers, b"{}").is_none());
        let big = format!("[{}1]", "1,".repeat(2000));
        let zipped = gzip(&mut headers, big.as_bytes()).unwrap();
        assert_eq!(headers[header::CONTENT_ENCODING], "gzip");
        let mut back = String::new();
        flate2::read::GzDecoder::new(&zipped[..])
            .read_to_string(&mut back)
            .unwrap();
        assert_eq!(back, big);
    }
}
