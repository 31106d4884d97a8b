//! An HTTP/1.1 connection loop for the requests that are nearly all of a
//! service's (and the API gateway's) traffic: a head, a body of known length, an
//! answer, on a kept-alive connection. It reads into one buffer per connection,
//! parses the head in place and writes each answer with one call: per request,
//! about a third of the work hyper's general server does
//! (bench/gateway/README.md).
//!
//! Everything else is hyper's: at the first request this loop does not take
//! (HTTP/2, HTTP/1.0, an upgrade, `Expect`, a chunked or large body, `HEAD`, or a
//! head that does not parse or is too large), the connection, with what was read
//! of it, goes to hyper for the rest of its life ([`Handover`]). hyper then also
//! gives the malformed ones their 400 or 431.
//!
//! The micro server uses it for every plain connection; so does `micro api`.
//!
//! ```no_run
//! use std::future::Future;
//! use std::net::SocketAddr;
//! use std::time::Duration;
//!
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::Full;
//! use micro::server::http1::{self, Limits, Respond, Stop};
//! use micro::server::RequestBody;
//!
//! struct Hello;
//!
//! impl Respond for Hello {
//!     type Body = Full<Bytes>;
//!
//!     fn respond(
//!         &self,
//!         _req: Request<RequestBody>,
//!         _peer: SocketAddr,
//!     ) -> impl Future<Output = Response<Full<Bytes>>> + Send {
//!         async { Response::new(Full::new(Bytes::from("hello"))) }
//!     }
//! }
//!
//! # async fn run(listener: tokio::net::TcpListener) {
//! let limits = Limits {
//!     error_id: "hello".into(),
//!     header_timeout: Duration::from_secs(30),
//!     body_timeout: Duration::from_secs(30),
//!     max_header_bytes: 64 * 1024,
//! };
//! let stop = Stop::default();
//! let (stream, peer) = listener.accept().await.unwrap();
//! if let Err(handover) = http1::serve(stream, peer, &Hello, &limits, &stop).await {
//!     // HTTP/2, an upgrade, a chunked body, ...: hyper serves the rest of the
//!     // connection, `handover.into_io()`.
//! }
//! # }
//! ```

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Body as HttpBody;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

use super::request_body::RequestBody;
use crate::{BoxError, Error};

/// Request bodies up to this size are read with the head; larger ones are
/// streamed by hyper.
pub const MAX_WHOLE_BODY: usize = 64 * 1024;

/// Headers a request may have here (hyper's limit too).
const MAX_HEADERS: usize = 100;

/// Answers up to this size are copied behind their head and sent with it.
const COPY_BODY_UP_TO: usize = 16 * 1024;

/// What answers the requests of a connection.
pub trait Respond: Sync {
    /// The body of answers: a known length is sent as such, any other chunked.
    type Body: HttpBody<Data = Bytes, Error: Into<BoxError>> + Send + Unpin;

    /// How many headers `respond` adds to a request (a request id, say): the
    /// request's header map is made with room for them.
    const ADDED_HEADERS: usize = 0;

    /// The answer to `req`, from `peer`; errors are answers too.
    fn respond(
        &self,
        req: Request<RequestBody>,
        peer: SocketAddr,
    ) -> impl Future<Output = Response<Self::Body>> + Send;
}

/// What a connection's loop needs besides the request handler.
#[derive(Debug, Clone)]
pub struct Limits {
    /// The `id` of the errors the loop answers with itself (a body that stopped
    /// arriving): the service's name, or `micro.api`.
    pub error_id: std::sync::Arc<str>,
    /// Time for a whole head, from when the connection waits for one.
    pub header_timeout: Duration,
    /// Time for the rest of a body, and for each write of an answer.
    pub body_timeout: Duration,
    /// A head larger than this goes to hyper (which answers 431).
    pub max_header_bytes: usize,
}

/// Tells connections to finish: each ends after the answer it is writing, or at
/// once when it is waiting for a request.
#[derive(Debug, Default)]
pub struct Stop {
    stopping: std::sync::atomic::AtomicBool,
    notify: Notify,
}

impl Stop {
    /// Stops every connection (those that start later, too).
    pub fn stop(&self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    fn is_stopping(&self) -> bool {
        self.stopping.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A connection that hyper serves from here on: what was read of it first, then
/// the socket.
#[derive(Debug)]
pub struct Handover {
    read: Bytes,
    stream: TcpStream,
}

/// What parsing the start of the buffer found.
#[derive(Debug, PartialEq)]
enum Parsed {
    /// A head this server takes: `len` bytes, then a body of `body_len`.
    Plain(Head),
    /// Not all of the head yet.
    Partial,
    /// A request (or something) for hyper.
    Other,
}

/// A head this server takes: where its parts are in the buffer.
#[derive(Debug, PartialEq)]
struct Head {
    len: usize,
    body_len: usize,
    keep_alive: bool,
    method: Method,
    target: Span,
    headers: Vec<(Span, Span)>,
}

/// Where a part of the head is: `start..end` of its bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Span(usize, usize);

impl Span {
    fn of(part: &[u8], within: &[u8]) -> Span {
        let start = part.as_ptr() as usize - within.as_ptr() as usize;
        Span(start, start + part.len())
    }
}

/// Whether the buffer starts with a head this server takes. `spans` is the
/// connection's own list, reused from request to request.
fn parse(buf: &[u8], mut spans: Vec<(Span, Span)>) -> Parsed {
    let mut headers = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut req,
        buf,
        &mut headers,
    ) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Other,
    };
    let method = match req.method {
        Some("GET") => Method::GET,
        Some("POST") => Method::POST,
        Some("PUT") => Method::PUT,
        Some("PATCH") => Method::PATCH,
        Some("DELETE") => Method::DELETE,
        Some("OPTIONS") => Method::OPTIONS,
        _ => return Parsed::Other,
    };
    let (Some(1), Some(target)) = (req.version, req.path) else {
        return Parsed::Other;
    };
    spans.clear();
    let mut body_len = None;
    let mut keep_alive = true;
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        spans.push((Span::of(name, buf), Span::of(h.value, buf)));
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = match std::str::from_utf8(h.value).ok().map(str::parse::<usize>) {
                Some(Ok(n)) if body_len.is_none() && h.value.iter().all(u8::is_ascii_digit) => n,
                _ => return Parsed::Other, // two lengths, or not a number
            };
            body_len = Some(n);
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in h.value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
                if token.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case(b"upgrade") {
                    return Parsed::Other;
                }
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding")
            || name.eq_ignore_ascii_case(b"upgrade")
            || name.eq_ignore_ascii_case(b"expect")
        {
            return Parsed::Other;
        }
    }
    match body_len.unwrap_or(0) {
        n if n > MAX_WHOLE_BODY => Parsed::Other,
        n => Parsed::Plain(Head {
            len,
            body_len: n,
            keep_alive,
            method,
            target: Span::of(target.as_bytes(), buf),
            headers: spans,
        }),
    }
}

/// The request of `head` (whose bytes are `bytes`), with `body`. `None` when a
/// part does not make an `http` type (hyper answers those).
/// `added` is how many headers the responder adds ([`Respond::ADDED_HEADERS`]).
fn request(
    head: &Head,
    bytes: &Bytes,
    body: RequestBody,
    added: usize,
) -> Option<Request<RequestBody>> {
    let at = |Span(start, end): Span| bytes.slice(start..end);
    let mut built = Request::new(body);
    *built.method_mut() = head.method.clone();
    *built.uri_mut() = Uri::from_maybe_shared(at(head.target)).ok()?;
    *built.version_mut() = Version::HTTP_11;
    let map = built.headers_mut();
    // Room for what the responder adds: no growing (and rehashing). No more
    // than that: past six headers the map takes over 1 KiB, which some
    // allocators (glibc's) serve on a slower path.
    map.reserve(head.headers.len() + added);
    for &(name, value) in &head.headers {
        let name = header_name(&bytes[name.0..name.1])?;
        let value = HeaderValue::from_maybe_shared(at(value)).ok()?;
        map.append(name, value);
    }
    Some(built)
}

/// Names that micro's callers send with every call. Made from a static string,
/// such a name costs no allocation; any other name that is not a standard one
/// is copied into one of its own. Their lengths differ: [`header_name`] tells
/// them apart by length first.
static CALL_HEADERS: [HeaderName; 6] = [
    HeaderName::from_static("timeout"),
    HeaderName::from_static("traceparent"),
    HeaderName::from_static("x-request-id"),
    HeaderName::from_static("micro-service"),
    HeaderName::from_static("micro-endpoint"),
    HeaderName::from_static("micro-from-service"),
];

fn header_name(name: &[u8]) -> Option<HeaderName> {
    let candidate = match name.len() {
        7 => &CALL_HEADERS[0],
        11 => &CALL_HEADERS[1],
        12 => &CALL_HEADERS[2],
        13 => &CALL_HEADERS[3],
        14 => &CALL_HEADERS[4],
        18 => &CALL_HEADERS[5],
        _ => return HeaderName::from_bytes(name).ok(),
    };
    let known = candidate.as_str().as_bytes();
    // micro's callers send these names in lower case: one comparison of the
    // bytes, before the one that ignores case byte by byte.
    if name == known || name.eq_ignore_ascii_case(known) {
        Some(candidate.clone())
    } else {
        HeaderName::from_bytes(name).ok()
    }
}

/// What the loop makes of a buffer that starts with a request: `Ok(Some((request,
/// body length)))` for a complete head it serves itself (the request's body is
/// empty here), `Ok(None)` while the head is incomplete, `Err(())` when hyper
/// takes the connection. For tests and the fuzz target; the loop reuses its
/// buffers instead.
///
/// ```
/// use micro::server::http1::read_head;
///
/// let (req, body_len) = read_head(b"POST /greeter/hello HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}")
///     .unwrap()
///     .unwrap();
/// assert_eq!((req.uri().path(), body_len), ("/greeter/hello", 2));
/// assert!(matches!(read_head(b"POST /greeter/hello HTTP/1.1\r\n"), Ok(None)));
/// assert!(read_head(b"GET / HTTP/1.0\r\n\r\n").is_err());
/// ```
#[allow(clippy::result_unit_err)]
pub fn read_head(buf: &[u8]) -> Result<Option<(Request<RequestBody>, usize)>, ()> {
    let head = match parse(buf, Vec::new()) {
        Parsed::Plain(head) => head,
        Parsed::Partial => return Ok(None),
        Parsed::Other => return Err(()),
    };
    let bytes = Bytes::copy_from_slice(&buf[..head.len]);
    let req = request(&head, &bytes, RequestBody::whole(Bytes::new()), 0).ok_or(())?;
    Ok(Some((req, head.body_len)))
}

/// Serves `stream` until the client closes it, it times out, or the server
/// stops; hands it to hyper (`Err`) at the first request that is not plain.
pub async fn serve<R: Respond>(
    mut stream: TcpStream,
    peer: SocketAddr,
    respond: &R,
    limits: &Limits,
    stop: &Stop,
) -> Result<(), Handover> {
    let handover = |buf: BytesMut, stream| {
        Err(Handover {
            read: buf.freeze(),
            stream,
        })
    };
    let stopped = stop.notify.notified();
    let mut stopped = std::pin::pin!(stopped);
    stopped.as_mut().enable();
    let mut buf = BytesMut::with_capacity(8 * 1024);
    let mut out = Vec::with_capacity(1024);
    // One timer for the connection's life, moved only when it fires early: a
    // deadline per request costs no timer of its own.
    let mut deadlines = Deadlines::new(limits.header_timeout);
    let mut notice_polled = false;
    let mut spans = Vec::new();
    loop {
        // A head.
        let deadline = Instant::now() + limits.header_timeout;
        let head = loop {
            match parse(&buf, std::mem::take(&mut spans)) {
                Parsed::Plain(head) => break head,
                Parsed::Other => return handover(buf, stream),
                Parsed::Partial if buf.len() >= limits.max_header_bytes => {
                    return handover(buf, stream)
                }
                Parsed::Partial => {}
            }
            if buf.is_empty() && stop.is_stopping() {
                return Ok(());
            }
            let interruptible = buf.is_empty().then_some(StopNotice {
                stop,
                notified: stopped.as_mut(),
                polled: &mut notice_polled,
            });
            match read(
                &mut stream,
                &mut buf,
                deadline,
                &mut deadlines,
                interruptible,
            )
            .await
            {
                Read::More => {}
                Read::Closed | Read::TimedOut | Read::Stopped => return Ok(()),
            }
        };
        // Its body.
        let wanted = head.len + head.body_len;
        let mut body_failed = None;
        if buf.len() < wanted {
            let deadline = Instant::now() + limits.body_timeout;
            buf.reserve(wanted - buf.len());
            while buf.len() < wanted {
                match read(&mut stream, &mut buf, deadline, &mut deadlines, None).await {
                    Read::More => {}
                    Read::Closed | Read::Stopped => return Ok(()),
                    Read::TimedOut => {
                        body_failed = Some(Error::timeout(
                            limits.error_id.as_ref(),
                            format!(
                                "the request body did not arrive within {:?}",
                                limits.body_timeout
                            ),
                        ));
                        break;
                    }
                }
            }
        }
        let head_bytes = buf.split_to(head.len).freeze();
        let body = buf.split_to(head.body_len.min(buf.len())).freeze();
        let Some(mut req) = request(
            &head,
            &head_bytes,
            RequestBody::Whole(None),
            R::ADDED_HEADERS,
        ) else {
            // A header value or target that `http` refuses: hyper answers it,
            // from the request's first byte.
            let mut read = BytesMut::with_capacity(head_bytes.len() + body.len() + buf.len());
            for part in [&head_bytes[..], &body[..], &buf[..]] {
                read.extend_from_slice(part);
            }
            return handover(read, stream);
        };
        let keep_alive = head.keep_alive && body_failed.is_none();
        *req.body_mut() = match body_failed {
            None => RequestBody::whole(body),
            Some(e) => RequestBody::Failed(Some(e)),
        };
        spans = head.headers;
        // The answer. A client that hangs up meanwhile cancels it (the
        // responder's future is dropped), as with hyper; what it sends meanwhile
        // is its next request.
        let responding = respond.respond(req, peer);
        let mut responding = std::pin::pin!(responding);
        let answered = std::future::poll_fn(|cx| match responding.as_mut().poll(cx) {
            Poll::Ready(rsp) => Poll::Ready(Some(rsp)),
            Poll::Pending if hung_up(&mut stream, &mut buf, cx) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        });
        let Some(rsp) = answered.await else {
            return Ok(());
        };
        let keep_alive = keep_alive && !stop.is_stopping();
        let write_deadline = Instant::now() + limits.body_timeout;
        let written = write_answer(
            &mut stream,
            &mut out,
            &mut buf,
            rsp,
            keep_alive,
            (write_deadline, limits.body_timeout),
            &mut deadlines,
        )
        .await;
        if written.is_err() || !keep_alive {
            return Ok(());
        }
    }
}

impl Handover {
    /// The connection for hyper: what was read, then the socket.
    pub fn into_io(self) -> Prefixed {
        Prefixed {
            read: self.read,
            stream: self.stream,
        }
    }
}

/// How waiting for bytes ended.
enum Read {
    More,
    Closed,
    TimedOut,
    Stopped,
}

/// The connection's one timer. It is polled (and so holds the task's waker) only
/// when armed anew; later waits see that it fired with `is_elapsed`, which costs
/// nothing, since the task it wakes is this connection's.
struct Deadlines {
    timer: Pin<Box<Sleep>>,
    /// When the timer fires.
    armed: Instant,
    holds_waker: bool,
}

impl Deadlines {
    fn new(first: Duration) -> Self {
        let armed = Instant::now() + first;
        Deadlines {
            timer: Box::pin(tokio::time::sleep_until(armed)),
            armed,
            holds_waker: false,
        }
    }

    fn rearm(&mut self, at: Instant) {
        self.timer.as_mut().reset(at);
        self.armed = at;
        // A moved timer holds no waker until it is polled again.
        self.holds_waker = false;
    }

    /// Ready once `deadline` has passed. A timer that fired earlier (it was set
    /// for an earlier wait) is moved to `deadline`; so is one set for later
    /// (a body's timeout may be shorter than a head's).
    fn poll_passed(&mut self, cx: &mut Context<'_>, deadline: Instant) -> Poll<()> {
        if deadline < self.armed {
            self.rearm(deadline);
        }
        if self.holds_waker && !self.timer.is_elapsed() {
            return Poll::Pending;
        }
        loop {
            if self.timer.is_elapsed() {
                if Instant::now() >= deadline {
                    return Poll::Ready(());
                }
                self.rearm(deadline);
            }
            match self.timer.as_mut().poll(cx) {
                Poll::Ready(()) => continue,
                Poll::Pending => {
                    self.holds_waker = true;
                    return Poll::Pending;
                }
            }
        }
    }
}

/// The server's stop, as a connection waiting for a request watches it. Polled
/// once, the notice keeps the task's waker; after that the flag of [`Stop`]
/// says whether it came.
struct StopNotice<'a, 'n> {
    stop: &'a Stop,
    notified: Pin<&'a mut tokio::sync::futures::Notified<'n>>,
    polled: &'a mut bool,
}

/// Reads what the client sent next into `buf`, until `deadline`; `stopped`
/// (when waiting between requests) ends the wait when the server stops.
async fn read(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    deadline: Instant,
    deadlines: &mut Deadlines,
    stopped: Option<StopNotice<'_, '_>>,
) -> Read {
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(4 * 1024);
    }
    let mut stopped = stopped;
    std::future::poll_fn(|cx| {
        match poll_read_some(stream, buf, cx) {
            Poll::Ready(Ok(0) | Err(_)) => return Poll::Ready(Read::Closed),
            Poll::Ready(Ok(_)) => return Poll::Ready(Read::More),
            Poll::Pending => {}
        }
        if deadlines.poll_passed(cx, deadline).is_ready() {
            return Poll::Ready(Read::TimedOut);
        }
        if let Some(StopNotice {
            stop,
            notified,
            polled,
        }) = stopped.as_mut()
        {
            if stop.is_stopping() {
                return Poll::Ready(Read::Stopped);
            }
            if !**polled {
                **polled = true;
                if notified.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Read::Stopped);
                }
            }
        }
        Poll::Pending
    })
    .await
}

/// Writes `rsp`: its head, then its body with a known length (copied behind
/// the head when small) or chunked as its frames come (a stream). What the
/// client sends meanwhile goes into `read`.
async fn write_answer<B: HttpBody<Data = Bytes, Error: Into<BoxError>> + Unpin>(
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
    read: &mut BytesMut,
    rsp: Response<B>,
    keep_alive: bool,
    (deadline, write_timeout): (Instant, Duration),
    deadlines: &mut Deadlines,
) -> io::Result<()> {
    let (parts, mut body) = rsp.into_parts();
    let status = parts.status;
    let bodiless = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let length = body.size_hint().exact();
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut has_date = false;
    for (name, value) in &parts.headers {
        // The framing and the connection's fate are this server's to say.
        if matches!(
            name.as_str(),
            "content-length" | "transfer-encoding" | "connection" | "keep-alive"
        ) {
            continue;
        }
        has_date |= name == http::header::DATE;
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    // The framing, then the date: the order hyper writes them in.
    match length {
        _ if bodiless => {}
        Some(length) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa::Buffer::new().format(length).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        None => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    if !has_date {
        out.extend_from_slice(b"date: ");
        date::now(out);
        out.extend_from_slice(b"\r\n");
    }
    if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    let length = match length {
        _ if bodiless => return write_all(stream, out, deadline, deadlines).await,
        Some(length) => length,
        None => {
            write_all(stream, out, deadline, deadlines).await?;
            return write_chunks(stream, out, read, body, write_timeout, deadlines).await;
        }
    };
    let mut sent = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| io::Error::other(e.into()))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        sent += data.len() as u64;
        if sent > length {
            return Err(io::Error::other("the body is longer than its length"));
        }
        if out.len() + data.len() <= COPY_BODY_UP_TO {
            out.extend_from_slice(&data);
        } else {
            write_all(stream, out, deadline, deadlines).await?;
            out.clear();
            write_all(stream, &data, deadline, deadlines).await?;
        }
    }
    if sent != length {
        // The client would wait for the rest: end the connection instead.
        return Err(io::Error::other("the body is shorter than its length"));
    }
    if !out.is_empty() {
        write_all(stream, out, deadline, deadlines).await?;
    }
    Ok(())
}

/// A streamed body, one chunk per frame as it comes (each has its own deadline).
///
/// While the stream is quiet, the client's side is watched: a client that hangs
/// up ends the stream at once, and with it whatever feeds it (a subscription,
/// say), rather than at a next frame that may never come. What the client sends
/// meanwhile (its next request) is kept in `read`, up to [`MAX_WHOLE_BODY`].
async fn write_chunks<B: HttpBody<Data = Bytes, Error: Into<BoxError>> + Unpin>(
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
    read: &mut BytesMut,
    mut body: B,
    write_timeout: Duration,
    deadlines: &mut Deadlines,
) -> io::Result<()> {
    loop {
        let next = std::future::poll_fn(|cx| match Pin::new(&mut body).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(Ok(frame)),
            Poll::Pending if hung_up(stream, read, cx) => {
                Poll::Ready(Err(io::Error::from(io::ErrorKind::ConnectionAborted)))
            }
            Poll::Pending => Poll::Pending,
        });
        let Some(frame) = next.await? else {
            break;
        };
        // A failed stream ends without its last chunk: the client sees it cut.
        let frame = frame.map_err(|e| io::Error::other(e.into()))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if data.is_empty() {
            continue;
        }
        out.clear();
        push_hex(out, data.len());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&data);
        out.extend_from_slice(b"\r\n");
        write_all(stream, out, Instant::now() + write_timeout, deadlines).await?;
    }
    write_all(
        stream,
        b"0\r\n\r\n",
        Instant::now() + write_timeout,
        deadlines,
    )
    .await
}

/// Whether the client has closed the connection (or it failed), found without
/// waiting; whatever it sent is appended to `read`. Once `read` holds
/// [`MAX_WHOLE_BODY`] bytes, nothing more is read (nor watched) until the
/// answer is done.
fn hung_up(stream: &mut TcpStream, read: &mut BytesMut, cx: &mut Context<'_>) -> bool {
    loop {
        if read.len() >= MAX_WHOLE_BODY {
            return false;
        }
        if read.capacity() - read.len() < 1024 {
            read.reserve(4 * 1024);
        }
        match poll_read_some(stream, read, cx) {
            Poll::Ready(Ok(0) | Err(_)) => return true,
            Poll::Ready(Ok(_)) => continue,
            Poll::Pending => return false,
        }
    }
}

/// Reads what the socket has into `buf`'s spare room, or waits for it.
///
/// Through `AsyncRead`, which takes a short read as the socket drained (epoll
/// is edge-triggered): the next wait goes straight to epoll. `try_read_buf`
/// would first make one more `recv` per request, only to be told "nothing yet".
fn poll_read_some(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    std::pin::pin!(tokio::io::AsyncReadExt::read_buf(stream, buf)).poll(cx)
}

/// Writes all of `bytes` by `deadline` (a client that stops reading is cut off).
async fn write_all(
    stream: &mut TcpStream,
    mut bytes: &[u8],
    deadline: Instant,
    deadlines: &mut Deadlines,
) -> io::Result<()> {
    std::future::poll_fn(|cx| {
        while !bytes.is_empty() {
            match Pin::new(&mut *stream).poll_write(cx, bytes) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => bytes = &bytes[n..],
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    return match deadlines.poll_passed(cx, deadline) {
                        Poll::Ready(()) => Poll::Ready(Err(io::ErrorKind::TimedOut.into())),
                        Poll::Pending => Poll::Pending,
                    }
                }
            }
        }
        Poll::Ready(Ok(()))
    })
    .await
}

fn push_hex(out: &mut Vec<u8>, mut n: usize) {
    let mut digits = [0u8; 16];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b"0123456789abcdef"[n % 16];
        n /= 16;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// The `Date` of answers, formatted once a second per thread.
mod date {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};

    thread_local! {
        static NOW: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
    }

    /// Appends the current date (`Tue, 24 Nov 2026 19:24:07 GMT`).
    pub fn now(out: &mut Vec<u8>) {
        let now = SystemTime::now();
        let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        NOW.with(|cached| {
            let mut cached = cached.borrow_mut();
            if cached.0 != secs || cached.1.is_empty() {
                *cached = (secs, httpdate::fmt_http_date(now));
            }
            out.extend_from_slice(cached.1.as_bytes());
        });
    }
}

/// A connection handed to hyper: the bytes read before, then the socket's.
#[derive(Debug)]
pub struct Prefixed {
    read: Bytes,
    stream: TcpStream,
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.read.is_empty() {
            let n = self.read.len().min(buf.remaining());
            buf.put_slice(&self.read[..n]);
            self.read.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(buf: &[u8]) -> Head {
        match parse(buf, Vec::new()) {
            Parsed::Plain(head) => head,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn plain_requests_are_taken() {
        let post = b"POST /greeter/hello HTTP/1.1\r\nHost: x\r\nContent-Length: 15\r\n\r\n{\"name\":\"John\"}";
        let h = head(post);
        assert_eq!(
            (h.len, h.body_len, h.keep_alive),
            (post.len() - 15, 15, true)
        );
        assert_eq!(
            (h.method, &post[h.target.0..h.target.1]),
            (Method::POST, &b"/greeter/hello"[..])
        );
        assert_eq!(h.headers.len(), 2);
        let get = b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n";
        let h = head(get);
        assert_eq!((h.len, h.body_len, h.keep_alive), (get.len(), 0, false));
        assert_eq!(
            parse(b"GET /health HTTP/1.1\r\nHost:", Vec::new()),
            Parsed::Partial
        );
        assert_eq!(parse(b"", Vec::new()), Parsed::Partial);
    }

    #[test]
    fn everything_else_goes_to_hyper() {
        for head in [
            &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..],
            b"GET / HTTP/1.0\r\n\r\n",
            b"HEAD / HTTP/1.1\r\n\r\n",
            b"CONNECT x:1 HTTP/1.1\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
            b"GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 70000\r\n\r\n",
            b"GET /\x01 HTTP/1.1\r\n\r\n",
            b"\x16\x03\x01\x00", // a TLS hello
        ] {
            assert_eq!(
                parse(head, Vec::new()),
                Parsed::Other,
                "{}",
                String::from_utf8_lossy(head)
            );
        }
    }

    #[test]
    fn a_request_is_built_from_the_head_in_place() {
        let bytes = Bytes::from_static(
            b"POST /greeter/hello?x=1 HTTP/1.1\r\nHost: example\r\nX-Request-Id: abc\r\nx-two: 1\r\nx-two: 2\r\n\r\n",
        );
        let body = RequestBody::whole(Bytes::from_static(b"{}"));
        let req = request(&head(&bytes), &bytes, body, 0).expect("builds");
        assert_eq!(req.method(), Method::POST);
        assert_eq!(req.uri().path(), "/greeter/hello");
        assert_eq!(req.uri().query(), Some("x=1"));
        assert_eq!(req.headers()["host"], "example");
        assert_eq!(req.headers()["x-request-id"], "abc");
        assert_eq!(req.headers().get_all("x-two").iter().count(), 2);
        assert_eq!(req.body().size_hint().exact(), Some(2));
    }

    #[test]
    fn heads_that_http_refuses_go_to_hyper() {
        // httparse takes `<`, `>` and a backquote in a target; `http` does not.
        for refused in [
            &b"POST /a<b HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}"[..],
            b"GET /a`b HTTP/1.1\r\n\r\n",
        ] {
            assert!(matches!(parse(refused, Vec::new()), Parsed::Plain(_)));
            assert!(read_head(refused).is_err());
        }
    }

    #[test]
    fn call_header_names_are_told_apart_by_length() {
        for known in &CALL_HEADERS {
            let same_length = CALL_HEADERS
                .iter()
                .filter(|other| other.as_str().len() == known.as_str().len());
            assert_eq!(same_length.count(), 1, "{known}");
            assert_eq!(header_name(known.as_str().as_bytes()).as_ref(), Some(known));
        }
    }

    #[test]
    fn call_header_names_are_found_whatever_their_case() {
        for name in ["Micro-Endpoint", "TIMEOUT", "x-request-id", "TraceParent"] {
            let found = header_name(name.as_bytes()).expect("a valid name");
            assert_eq!(found.as_str(), name.to_ascii_lowercase());
        }
        assert_eq!(
            header_name(b"Content-Type"),
            Some(http::header::CONTENT_TYPE)
        );
        assert_eq!(header_name(b"x-other").expect("valid").as_str(), "x-other");
        assert!(header_name(b"bad name").is_none());
    }

    #[test]
    fn numbers() {
        let mut out = Vec::new();
        push_hex(&mut out, 0);
        out.push(b' ');
        push_hex(&mut out, 0x1f2e);
        assert_eq!(out, b"0 1f2e");
    }
}
