//! micro's own HTTP/1.1 head parser (micro/src/server/http1.rs) on arbitrary bytes: it must
//! never panic, a head it takes must fit in what it was given and make a valid
//! request, and what it says must not change when more bytes follow (the loop
//! parses a buffer that grows).

#![no_main]

use libfuzzer_sys::fuzz_target;
use micro::server::http1::{read_head, MAX_WHOLE_BODY};

fuzz_target!(|data: &[u8]| {
    let Ok(Some((req, body_len))) = read_head(data) else {
        return;
    };
    assert!(body_len <= MAX_WHOLE_BODY);
    assert!(req.uri().to_string().len() <= data.len());
    let mut longer = data.to_vec();
    longer.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
    let (again, again_len) = read_head(&longer)
        .expect("still served here")
        .expect("still complete");
    assert_eq!((again.method(), again.uri(), again_len), (req.method(), req.uri(), body_len));
    assert_eq!(again.headers(), req.headers());
});
