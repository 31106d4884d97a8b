//! Random ids in the form of a UUID v4: request ids, message ids.

use std::cell::Cell;

/// A random UUID v4 (`8c2f…-…-4…-…`), from the calling thread's generator: no
/// system call and no cryptographic work per id, so it is cheap enough for every
/// request a gateway serves. Ids name things; they are not secrets.
///
/// ```
/// let id = micro::id::new_v4();
/// assert_eq!(id.len(), 36);
/// assert_eq!(&id[14..15], "4");
/// assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"));
/// assert_ne!(id, micro::id::new_v4());
/// ```
pub fn new_v4() -> String {
    let id = new_v4_ascii();
    // Always ASCII, so never the error.
    std::str::from_utf8(&id).unwrap_or_default().to_owned()
}

/// [`new_v4`] as its 36 ASCII bytes, for callers that put it straight into a
/// header (`http::HeaderValue`, `bytes::Bytes::from_owner`) without a `String`
/// in between.
///
/// ```
/// let id = micro::id::new_v4_ascii();
/// let text = std::str::from_utf8(&id).unwrap();
/// assert_eq!(uuid::Uuid::parse_str(text).unwrap().get_version_num(), 4);
/// ```
pub fn new_v4_ascii() -> [u8; 36] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&next_u64().to_le_bytes());
    bytes[8..].copy_from_slice(&next_u64().to_le_bytes());
    bytes[6] = (bytes[6] & 0x0f) | 0x40; // version 4
    bytes[8] = (bytes[8] & 0x3f) | 0x80; // RFC 4122 variant
    let mut out = [b'-'; 36];
    // Where each byte's two hex digits go: 8-4-4-4-12, dashes left in between.
    const AT: [usize; 16] = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];
    for (b, at) in bytes.iter().zip(AT) {
        out[at] = HEX[usize::from(b >> 4)];
        out[at + 1] = HEX[usize::from(b & 0x0f)];
    }
    out
}

/// The calling thread's wyrand generator, seeded from the process's random
/// source once per thread.
fn next_u64() -> u64 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new(rand::random());
    }
    STATE.with(|state| {
        let s = state.get().wrapping_add(0xa076_1d64_78bd_642f);
        state.set(s);
        let t = u128::from(s) * u128::from(s ^ 0xe703_7ed1_a0b4_28db);
        ((t >> 64) as u64) ^ (t as u64)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_uuid_v4_and_differ() {
        let ids: std::collections::HashSet<String> = (0..10_000).map(|_| new_v4()).collect();
        assert_eq!(ids.len(), 10_000);
        for id in ids.iter().take(100) {
            let parsed = uuid::Uuid::parse_str(id).expect("a UUID");
            assert_eq!(parsed.get_version_num(), 4);
            assert_eq!(parsed.get_variant(), uuid::Variant::RFC4122);
        }
    }

    #[test]
    fn threads_get_different_ids() {
        let other = std::thread::spawn(new_v4).join().expect("thread");
        assert_ne!(other, new_v4());
    }
}
