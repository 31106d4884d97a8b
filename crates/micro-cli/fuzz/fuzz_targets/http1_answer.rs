//! The HTTP/1.1 answer decoder of the client (`micro::client::http1`), which reads
//! what services send back to the gateway, on arbitrary bytes: it must never
//! panic, never give more body than it was given, and give the same answer
//! however the bytes are split across reads.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use micro::client::http1::{decode_answer, parse_head, BodyDecoder};

const MAX: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the read size, the rest is the answer.
    let Some((&split, answer)) = data.split_first() else {
        return;
    };
    let whole = decode_answer(answer, MAX);
    if let Ok((_, body)) = &whole {
        assert!(body.len() <= answer.len());
    }
    let Ok(Some(head)) = parse_head(answer) else {
        return;
    };
    let Ok(mut decoder) = BodyDecoder::new(head.framing, MAX) else {
        return;
    };
    let mut buf = BytesMut::new();
    let mut body = Vec::new();
    let mut failed = false;
    for piece in answer[head.len..].chunks(usize::from(split % 16) + 1) {
        buf.extend_from_slice(piece);
        if decoder
            .decode(&mut buf, &mut |data| body.extend_from_slice(&data))
            .is_err()
        {
            failed = true;
            break;
        }
    }
    if !failed && !decoder.is_done() {
        failed = decoder.at_eof().is_err();
    }
    match whole {
        Ok((_, whole_body)) => {
            assert!(!failed, "decoded whole but not in pieces");
            assert_eq!(whole_body, body, "in pieces the body differs");
        }
        Err(_) => assert!(failed, "decoded in pieces but not whole"),
    }
});
