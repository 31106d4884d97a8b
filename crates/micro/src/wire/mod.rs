//! What goes over the connection, shared by server and client: gRPC message framing,
//! the `grpc-timeout`/`Timeout` headers, gRPC status trailers and the body type.

pub(crate) mod body;
pub(crate) mod frame;
pub(crate) mod pool;
pub(crate) mod status;
pub(crate) mod timeout;

pub(crate) use body::Body;

#[cfg(test)]
mod fuzz_tests {
    //! Random input into every wire parser: they answer or refuse, never panic.
    use bytes::BytesMut;
    use rand::{Rng, SeedableRng};

    use super::{frame, status, timeout};

    #[test]
    fn parsers_never_panic_on_random_input() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
        for _ in 0..20_000 {
            let len = rng.random_range(0..24);
            let bytes: Vec<u8> = (0..len)
                .map(|_| match rng.random_range(0..3) {
                    0 => rng.random(),
                    1 => b"0123456789HMSmun.%{}\"-"[rng.random_range(0..22)],
                    _ => rng.random_range(0..6),
                })
                .collect();
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = frame::decode_frame(&mut buf, 16) {}
            let _ = frame::single_frame(BytesMut::from(&bytes[..]), 16);
            let text = String::from_utf8_lossy(&bytes);
            let _ = timeout::parse_grpc_timeout(&text);
            let _ = timeout::parse_http_timeout(&text);
            let err = crate::Error::parse(&text);
            assert!((400..=599).contains(&err.code()));
            let mut headers = http::HeaderMap::new();
            if let Ok(v) = http::HeaderValue::from_bytes(&bytes) {
                headers.insert("grpc-status", v.clone());
                headers.insert(status::MICRO_ERROR, v.clone());
                headers.insert("grpc-message", v);
                let _ = status::read_status(&headers, "fuzz");
            }
        }
    }
}
