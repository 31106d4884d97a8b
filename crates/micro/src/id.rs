//! Random ids in the form of a UUID v4: request ids, message ids.

/// A random UUID v4 (`8c2f…-…-4…-…`), from the calling thread's generator: no
/// system call per id, so it is cheap enough for every request a gateway serves.
///
/// ```
/// let id = micro::id::new_v4();
/// assert_eq!(id.len(), 36);
/// assert_eq!(&id[14..15], "4");
/// assert_ne!(id, micro::id::new_v4());
/// ```
pub fn new_v4() -> String {
    let uuid = uuid::Builder::from_random_bytes(rand::random()).into_uuid();
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    uuid.hyphenated().encode_lower(&mut buf).to_string()
}
