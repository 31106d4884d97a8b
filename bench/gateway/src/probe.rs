//! Loopback addresses and one checked call: a free port for each server, and a
//! plain HTTP/1.1 `POST` of the bench's request that must answer `200` with the
//! greeting, to know a target is ready (and right) before wrk loads it.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::child::Proc;

/// The request body every call sends.
pub const REQUEST: &str = r#"{"name":"John"}"#;
/// The answer every call must get.
pub const RESPONSE: &str = r#"{"message":"Hello John"}"#;

/// A loopback port free now (bound, read and released; the servers bind it next).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// One `POST path` of [`REQUEST`] to `port` with `Connection: close`: the status
/// and the body.
fn post(port: u16, path: &str) -> anyhow::Result<(u16, String)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{REQUEST}",
        REQUEST.len()
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("not an HTTP answer: {answer:?}"))?;
    let body = answer
        .split_once("\r\n\r\n")
        .map_or("", |(_, body)| body)
        .to_string();
    Ok((status, body))
}

/// Waits until `POST path` on `port` answers `200` with [`RESPONSE`], checking
/// that `proc` is still alive meanwhile; fails after `within` with the last
/// answer and the end of `proc`'s log.
pub fn wait_ready(proc: &mut Proc, port: u16, path: &str, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    let mut last = String::from("no answer yet");
    while Instant::now() < deadline {
        proc.check_running()?;
        match post(port, path) {
            // A body sent with chunked encoding would hold the greeting between
            // chunk sizes: `contains` accepts both.
            Ok((200, body)) if body.contains(RESPONSE) => return Ok(()),
            Ok((status, body)) => last = format!("{status} {body}"),
            Err(e) => last = format!("{e:#}"),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    anyhow::bail!(
        "POST 127.0.0.1:{port}{path} did not answer 200 {RESPONSE} within {within:?} \
         (last: {last}); {}",
        proc.log_tail()
    )
}
