//! micro's own HTTP/1.1 connection loop (`micro::server::http1`), driven byte by
//! byte over loopback with a small `Respond` of the test's own: kept-alive and
//! pipelined requests, `Connection: close`, the hand-over to hyper with every
//! byte read, a body that stops arriving, streamed answers (and a client that
//! hangs up on one), and stopping.

// Test helpers outside #[test] functions unwrap too: a panic is a failed test.
#![allow(clippy::unwrap_used)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use micro::server::http1::{self, Handover, Limits, Respond, Stop};
use micro::server::RequestBody;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Answers by path: `/echo` with the request's method, body and `micro-endpoint`;
/// `/chunks` with two chunks 200 ms apart; `/quiet` with one chunk and then
/// nothing, until the client goes (which sets `quiet_dropped`); `/slow` after
/// 2 s (`slow_dropped` is set when its work is dropped).
#[derive(Default)]
struct Answers {
    quiet_dropped: Arc<AtomicBool>,
    slow_dropped: Arc<AtomicBool>,
}

/// Sets its flag when dropped: the quiet stream's end.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn full(status: StatusCode, text: String) -> Response<Body> {
    let mut rsp = Response::new(Full::new(Bytes::from(text)).boxed_unsync());
    *rsp.status_mut() = status;
    rsp
}

impl Respond for Answers {
    type Body = Body;

    fn respond(
        &self,
        req: Request<RequestBody>,
        _peer: SocketAddr,
    ) -> impl Future<Output = Response<Body>> + Send {
        let quiet_dropped = self.quiet_dropped.clone();
        let slow_dropped = self.slow_dropped.clone();
        async move {
            let (parts, body) = req.into_parts();
            match parts.uri.path() {
                "/slow" => {
                    let _flag = DropFlag(slow_dropped);
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    std::mem::forget(_flag);
                    full(StatusCode::OK, "slow".into())
                }
                "/chunks" => {
                    let chunks = futures_util::stream::iter(["one", "two"]).then(|c| async move {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        Ok(Frame::data(Bytes::from(c)))
                    });
                    Response::new(StreamBody::new(chunks).boxed_unsync())
                }
                "/quiet" => {
                    let flag = DropFlag(quiet_dropped);
                    let first =
                        futures_util::stream::once(async { Ok(Frame::data("first".into())) });
                    let never = futures_util::stream::pending().map(move |()| {
                        let _held = &flag;
                        Ok(Frame::data(Bytes::new()))
                    });
                    Response::new(StreamBody::new(first.chain(never)).boxed_unsync())
                }
                _ => match body.collect().await {
                    Ok(body) => {
                        let endpoint = parts
                            .headers
                            .get("micro-endpoint")
                            .map_or("", |v| v.to_str().unwrap_or("?"));
                        let body = String::from_utf8_lossy(&body.to_bytes()).into_owned();
                        full(
                            StatusCode::OK,
                            format!("{} {body} {endpoint}", parts.method),
                        )
                    }
                    // A body that stopped arriving: the error the loop made.
                    Err(e) => full(StatusCode::REQUEST_TIMEOUT, e.to_string()),
                },
            }
        }
    }
}

/// The loop on a loopback port. Connections it hands over are sent on `handed`.
struct Loop {
    address: SocketAddr,
    answers: Arc<Answers>,
    stop: Arc<Stop>,
    handed: mpsc::UnboundedReceiver<Handover>,
    ended: mpsc::UnboundedReceiver<()>,
}

async fn start() -> Loop {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let answers = Arc::new(Answers::default());
    let stop = Arc::new(Stop::default());
    let limits = Arc::new(Limits {
        error_id: "test".into(),
        header_timeout: Duration::from_secs(5),
        body_timeout: Duration::from_millis(300),
        max_header_bytes: 8 * 1024,
    });
    let (hand, handed) = mpsc::unbounded_channel();
    let (end, ended) = mpsc::unbounded_channel();
    tokio::spawn({
        let (answers, stop) = (answers.clone(), stop.clone());
        async move {
            loop {
                let (stream, peer) = listener.accept().await.unwrap();
                let (answers, stop, limits) = (answers.clone(), stop.clone(), limits.clone());
                let (hand, end) = (hand.clone(), end.clone());
                tokio::spawn(async move {
                    match http1::serve(stream, peer, &*answers, &limits, &stop).await {
                        Ok(()) => drop(end.send(())),
                        Err(handover) => drop(hand.send(handover)),
                    }
                });
            }
        }
    });
    Loop {
        address,
        answers,
        stop,
        handed,
        ended,
    }
}

/// A connection to `address` that has sent `bytes`.
async fn send(address: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut conn = TcpStream::connect(address).await.unwrap();
    conn.write_all(bytes).await.unwrap();
    conn
}

/// Reads until `text` has come (or fails after 5 s); returns all read so far.
async fn read_until(stream: &mut TcpStream, read: &mut String, text: &str) {
    let mut buf = [0u8; 4096];
    while !read.contains(text) {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("{text:?} did not come; got {read:?}"))
            .unwrap();
        assert!(n > 0, "closed before {text:?} came; got {read:?}");
        read.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
}

/// Reads until the connection closes (within 5 s).
async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out))
        .await
        .expect("the connection closes")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// Waits until `flag` is set, failing with `otherwise` after `within`.
async fn set_within(flag: &AtomicBool, within: Duration, otherwise: &str) {
    let start = tokio::time::Instant::now();
    while !flag.load(Ordering::SeqCst) {
        assert!(start.elapsed() < within, "{otherwise}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn post(path: &str, body: &str, extra: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[tokio::test]
async fn pipelined_requests_on_a_kept_alive_connection_are_answered_in_order() {
    let server = start().await;
    let mut conn = TcpStream::connect(server.address).await.unwrap();
    let two =
        post("/echo", "first", "Micro-Endpoint: Greeter.Hello\r\n") + &post("/echo", "second", "");
    conn.write_all(two.as_bytes()).await.unwrap();
    let mut read = String::new();
    read_until(&mut conn, &mut read, "POST second ").await;
    let first = read
        .find("POST first Greeter.Hello")
        .expect("the first answer");
    assert!(first < read.find("POST second").unwrap(), "{read}");
    assert_eq!(read.matches("HTTP/1.1 200 OK\r\n").count(), 2, "{read}");
    assert_eq!(read.matches("content-length: ").count(), 2, "{read}");
    assert!(!read.contains("connection: close"), "{read}");
    // The same connection serves a later request too, a GET without a body.
    conn.write_all(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    read_until(&mut conn, &mut read, "GET  ").await;
}

#[tokio::test]
async fn connection_close_ends_the_connection_after_its_answer() {
    let server = start().await;
    let mut conn = send(
        server.address,
        post("/echo", "bye", "Connection: close\r\n").as_bytes(),
    )
    .await;
    let answer = read_to_close(&mut conn).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.contains("connection: close\r\n"), "{answer}");
    assert!(answer.ends_with("POST bye "), "{answer}");
}

#[tokio::test]
async fn a_request_it_does_not_take_is_handed_over_with_every_byte_read() {
    let mut server = start().await;
    let mut conn = TcpStream::connect(server.address).await.unwrap();
    let chunked =
        "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
    let sent = post("/echo", "plain", "") + chunked;
    conn.write_all(sent.as_bytes()).await.unwrap();
    // The plain request is answered here ...
    let mut read = String::new();
    read_until(&mut conn, &mut read, "POST plain ").await;
    // ... and the chunked one, all of it, goes on to hyper.
    let handover = tokio::time::timeout(Duration::from_secs(5), server.handed.recv())
        .await
        .expect("handed over")
        .unwrap();
    let mut io = handover.into_io();
    let mut taken = vec![0u8; chunked.len()];
    io.read_exact(&mut taken).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&taken), chunked);
    // What the client sends later reaches the new owner too.
    conn.write_all(b"more").await.unwrap();
    let mut more = [0u8; 4];
    io.read_exact(&mut more).await.unwrap();
    assert_eq!(&more, b"more");
}

#[tokio::test]
async fn http_1_0_and_expect_are_handed_over() {
    for head in [
        "GET /echo HTTP/1.0\r\n\r\n",
        "POST /echo HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
        "HEAD /echo HTTP/1.1\r\n\r\n",
    ] {
        let mut server = start().await;
        let mut conn = TcpStream::connect(server.address).await.unwrap();
        conn.write_all(head.as_bytes()).await.unwrap();
        let handover = tokio::time::timeout(Duration::from_secs(5), server.handed.recv())
            .await
            .expect("handed over")
            .unwrap();
        let mut taken = vec![0u8; head.len()];
        handover.into_io().read_exact(&mut taken).await.unwrap();
        assert_eq!(String::from_utf8_lossy(&taken), head);
    }
}

#[tokio::test]
async fn a_body_that_stops_arriving_is_answered_with_a_timeout_and_the_connection_closes() {
    let server = start().await;
    let mut conn = send(
        server.address,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc",
    )
    .await;
    let answer = read_to_close(&mut conn).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("connection: close\r\n"), "{answer}");
    assert!(answer.contains("did not arrive within"), "{answer}");
}

#[tokio::test]
async fn a_streamed_answer_is_chunked_and_what_comes_meanwhile_is_the_next_request() {
    let server = start().await;
    let mut conn = send(server.address, post("/chunks", "", "").as_bytes()).await;
    let mut read = String::new();
    read_until(&mut conn, &mut read, "\r\none\r\n").await;
    assert!(read.contains("transfer-encoding: chunked\r\n"), "{read}");
    // Sent while the stream is still going: answered once it has ended.
    conn.write_all(post("/echo", "next", "").as_bytes())
        .await
        .unwrap();
    read_until(&mut conn, &mut read, "POST next ").await;
    let ended = read
        .find("3\r\ntwo\r\n0\r\n\r\n")
        .expect("the stream's last chunks");
    assert!(ended < read.find("POST next").unwrap(), "{read}");
}

#[tokio::test]
async fn a_client_that_hangs_up_ends_a_quiet_stream() {
    let server = start().await;
    let mut conn = send(server.address, post("/quiet", "", "").as_bytes()).await;
    let mut read = String::new();
    read_until(&mut conn, &mut read, "first\r\n").await;
    assert!(!server.answers.quiet_dropped.load(Ordering::SeqCst));
    drop(conn);
    // No frame comes after "first": only watching the socket notices.
    let within = Duration::from_secs(5);
    set_within(
        &server.answers.quiet_dropped,
        within,
        "the stream outlived its client",
    )
    .await;
}

#[tokio::test]
async fn a_client_that_hangs_up_cancels_its_answer() {
    let server = start().await;
    let conn = send(server.address, post("/slow", "", "").as_bytes()).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(conn);
    // Well before the answer's 2 s are up.
    let within = Duration::from_millis(1500);
    let went_on = "the answer's work went on after its client left";
    set_within(&server.answers.slow_dropped, within, went_on).await;
}

#[tokio::test]
async fn a_request_sent_while_the_previous_is_answered_waits_its_turn() {
    let server = start().await;
    let mut conn = send(server.address, post("/slow", "", "").as_bytes()).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    conn.write_all(post("/echo", "after", "").as_bytes())
        .await
        .unwrap();
    let mut read = String::new();
    read_until(&mut conn, &mut read, "POST after ").await;
    assert!(
        read.find("slow").unwrap() < read.find("POST after").unwrap(),
        "{read}"
    );
    assert!(!server.answers.slow_dropped.load(Ordering::SeqCst));
}

#[tokio::test]
async fn stopping_closes_idle_connections_and_finishes_answers_in_flight() {
    let mut server = start().await;
    let mut idle = TcpStream::connect(server.address).await.unwrap();
    let mut busy = TcpStream::connect(server.address).await.unwrap();
    // The idle connection has been served once and now waits for a request.
    idle.write_all(post("/echo", "once", "").as_bytes())
        .await
        .unwrap();
    let mut read = String::new();
    read_until(&mut idle, &mut read, "POST once ").await;
    busy.write_all(post("/chunks", "", "").as_bytes())
        .await
        .unwrap();
    let mut streamed = String::new();
    read_until(&mut busy, &mut streamed, "\r\none\r\n").await;

    server.stop.stop();
    assert_eq!(
        read_to_close(&mut idle).await,
        "",
        "nothing more on the idle one"
    );
    let rest = read_to_close(&mut busy).await;
    assert!(rest.ends_with("3\r\ntwo\r\n0\r\n\r\n"), "{rest}");
    for _ in 0..2 {
        tokio::time::timeout(Duration::from_secs(5), server.ended.recv())
            .await
            .expect("both connections end")
            .unwrap();
    }
}
