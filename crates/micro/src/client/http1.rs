//! HTTP/1.1 connections to `http-json` nodes, driven by the task that makes the
//! call.
//!
//! hyper's client runs every connection as a task of its own and hands it each
//! request over a channel: per call, two extra task wake-ups, and header maps built,
//! cloned and encoded. A JSON call needs none of that. The calling task writes the
//! request head and body with one `writev`, reads the answer into the connection's
//! buffer, and puts the connection back in the pool of its thread, as nginx does
//! with its upstream connections. Under load this halved the gateway's own CPU time
//! per request (`bench/gateway/README.md`).
//!
//! The decoding is sans-IO ([`parse_head`], [`BodyDecoder`]) so that it can be
//! tested and fuzzed on bytes alone ([`decode_answer`]).

use std::collections::HashMap;
use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::thread::{self, ThreadId};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use futures_util::Stream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Sleep;

use super::ID;
use crate::Error;

/// Largest answer head (status line and headers) taken from a node.
const MAX_HEAD: usize = 64 * 1024;
/// Most headers taken in an answer head.
const MAX_HEADERS: usize = 100;
/// Idle connections kept per node and thread.
const IDLE_PER_NODE: usize = 64;
/// What one read asks the kernel for, at least.
const READ_CHUNK: usize = 8 * 1024;
/// Bodies up to this size are copied out of the read buffer, which is then reused;
/// larger ones are split off it without a copy.
const COPY_BODY_UP_TO: usize = 16 * 1024;

/// The head of an answer: its status and how its body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// The status code.
    pub status: u16,
    /// How the body ends.
    pub framing: Framing,
    /// The node keeps the connection open after this answer.
    pub keep_alive: bool,
    /// Length of the head in the buffer it was parsed from.
    pub len: usize,
}

/// How the body of an answer is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the node closes the connection.
    UntilClose,
}

/// Parses an answer head at the start of `buf`: `None` while it is incomplete.
/// Informational (1xx) answers are skipped over.
pub fn parse_head(buf: &[u8]) -> Result<Option<Head>, Error> {
    let mut skipped = 0;
    loop {
        let rest = &buf[skipped..];
        // Left uninitialised: httparse writes the ones it parses (a cleared array
        // of 100 would cost more than parsing a small answer).
        let mut headers = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
        let mut rsp = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut rsp,
            rest,
            &mut headers,
        );
        let len = match parsed {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
                return Err(bad_answer(format!(
                    "its head is over the limit of {MAX_HEAD} bytes"
                )))
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(bad_answer(format!("malformed head ({e})"))),
        };
        let status = rsp.code.unwrap_or_default();
        if (100..200).contains(&status) && status != 101 {
            skipped += len;
            continue;
        }
        let version_1_1 = rsp.version == Some(1);
        let mut keep_alive = version_1_1;
        let mut length = None;
        let mut chunked = false;
        for h in rsp.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                let n = std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .ok_or_else(|| bad_answer("its Content-Length is not a number"))?;
                if length.is_some_and(|l| l != n) {
                    return Err(bad_answer("it has two different Content-Lengths"));
                }
                length = Some(n);
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                // Chunked must be the last coding; anything else is not ours to undo.
                let last = h.value.rsplit(|b| *b == b',').next().unwrap_or_default();
                if !last.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                    return Err(bad_answer("its Transfer-Encoding is not chunked"));
                }
                chunked = true;
            } else if h.name.eq_ignore_ascii_case("connection") {
                for token in h.value.split(|b| *b == b',') {
                    let token = token.trim_ascii();
                    if token.eq_ignore_ascii_case(b"close") {
                        keep_alive = false;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        keep_alive = true;
                    }
                }
            }
        }
        let framing = if status == 204 || status == 304 {
            Framing::Length(0)
        } else if chunked {
            // A length beside chunked is ignored (RFC 9112 6.3), and so is the
            // connection afterwards: one of the two was wrong.
            keep_alive &= length.is_none();
            Framing::Chunked
        } else if let Some(n) = length {
            Framing::Length(n)
        } else {
            keep_alive = false;
            Framing::UntilClose
        };
        return Ok(Some(Head {
            status,
            framing,
            keep_alive,
            len: skipped + len,
        }));
    }
}

/// Takes the body of an answer off the front of a buffer, as it arrives.
#[derive(Debug, Clone)]
pub struct BodyDecoder {
    state: Decoding,
    max: usize,
    taken: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decoding {
    /// This many bytes of body are still to come.
    Length(u64),
    /// A chunk-size line is next.
    ChunkSize,
    /// This many bytes of the current chunk are still to come.
    ChunkData(u64),
    /// The CRLF after a chunk's data is next.
    ChunkEnd,
    /// Trailer lines, up to an empty one.
    Trailers,
    /// Everything until the connection closes.
    UntilClose,
    Done,
}

impl BodyDecoder {
    /// A decoder for a body framed as `framing`, refusing more than `max` bytes.
    pub fn new(framing: Framing, max: usize) -> Result<Self, Error> {
        let state = match framing {
            Framing::Length(n) if n > max as u64 => return Err(too_large(max)),
            Framing::Length(0) => Decoding::Done,
            Framing::Length(n) => Decoding::Length(n),
            Framing::Chunked => Decoding::ChunkSize,
            Framing::UntilClose => Decoding::UntilClose,
        };
        Ok(BodyDecoder {
            state,
            max,
            taken: 0,
        })
    }

    /// Whether the whole body has been taken.
    pub fn is_done(&self) -> bool {
        self.state == Decoding::Done
    }

    /// Takes body bytes off the front of `buf`, handing each piece to `data`;
    /// framing (chunk sizes, trailers) is consumed and dropped. Returns once `buf`
    /// holds nothing more it can use, or the body is complete.
    pub fn decode(
        &mut self,
        buf: &mut BytesMut,
        data: &mut impl FnMut(Bytes),
    ) -> Result<(), Error> {
        loop {
            match self.state {
                Decoding::Done => return Ok(()),
                Decoding::Length(remaining) | Decoding::ChunkData(remaining) => {
                    if buf.is_empty() {
                        return Ok(());
                    }
                    let n = remaining.min(buf.len() as u64) as usize;
                    self.take(buf, n, data)?;
                    let left = remaining - n as u64;
                    self.state = match (self.state, left) {
                        (Decoding::Length(_), 0) => Decoding::Done,
                        (Decoding::Length(_), left) => Decoding::Length(left),
                        (_, 0) => Decoding::ChunkEnd,
                        (_, left) => Decoding::ChunkData(left),
                    };
                }
                Decoding::UntilClose => {
                    if !buf.is_empty() {
                        let n = buf.len();
                        self.take(buf, n, data)?;
                    }
                    return Ok(());
                }
                Decoding::ChunkSize => match httparse::parse_chunk_size(buf) {
                    Ok(httparse::Status::Complete((used, 0))) => {
                        buf.advance(used);
                        self.state = Decoding::Trailers;
                    }
                    Ok(httparse::Status::Complete((used, size))) => {
                        buf.advance(used);
                        self.state = Decoding::ChunkData(size);
                    }
                    Ok(httparse::Status::Partial) => return self.incomplete_line(buf),
                    Err(_) => return Err(bad_answer("malformed chunk size")),
                },
                Decoding::ChunkEnd => {
                    if buf.len() < 2 {
                        return Ok(());
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(bad_answer("a chunk does not end with CRLF"));
                    }
                    buf.advance(2);
                    self.state = Decoding::ChunkSize;
                }
                Decoding::Trailers => match buf.iter().position(|b| *b == b'\n') {
                    // An empty line (CRLF or a bare LF) ends the trailers.
                    Some(at) => {
                        let empty = buf[..at].iter().all(|b| *b == b'\r');
                        buf.advance(at + 1);
                        if empty {
                            self.state = Decoding::Done;
                        }
                    }
                    None => return self.incomplete_line(buf),
                },
            }
        }
    }

    /// The connection closed: fine only for a body that runs until then.
    pub fn at_eof(&mut self) -> Result<(), Error> {
        match self.state {
            Decoding::UntilClose | Decoding::Done => {
                self.state = Decoding::Done;
                Ok(())
            }
            _ => Err(bad_answer("the connection closed before the body ended")),
        }
    }

    fn take(
        &mut self,
        buf: &mut BytesMut,
        n: usize,
        data: &mut impl FnMut(Bytes),
    ) -> Result<(), Error> {
        self.taken += n;
        if self.taken > self.max {
            return Err(too_large(self.max));
        }
        data(buf.split_to(n).freeze());
        Ok(())
    }

    /// A line (chunk size, trailer) has not fully arrived; a long one never will.
    fn incomplete_line(&self, buf: &BytesMut) -> Result<(), Error> {
        if buf.len() > MAX_HEAD {
            return Err(bad_answer("a chunk-size or trailer line is too long"));
        }
        Ok(())
    }
}

/// Decodes a whole answer held in `bytes` (what a closed connection delivered):
/// its status and body. For tests and the fuzz target.
///
/// ```
/// use micro::client::http1::decode_answer;
///
/// let answer = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n";
/// let (status, body) = decode_answer(answer, 1024)?;
/// assert_eq!((status, &body[..]), (200, &b"{}"[..]));
/// # Ok::<(), micro::Error>(())
/// ```
pub fn decode_answer(bytes: &[u8], max: usize) -> Result<(u16, Bytes), Error> {
    let head = parse_head(bytes)?.ok_or_else(|| bad_answer("its head is incomplete"))?;
    let mut buf = BytesMut::from(&bytes[head.len..]);
    let mut decoder = BodyDecoder::new(head.framing, max)?;
    let mut body = BytesMut::new();
    decoder.decode(&mut buf, &mut |piece| body.extend_from_slice(&piece))?;
    if !decoder.is_done() {
        decoder.at_eof()?;
    }
    Ok((head.status, body.freeze()))
}

/// An answer read whole.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) body: Bytes,
}

/// Why an exchange failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The connection was found closed before any byte of an answer came back:
    /// on a reused connection, the node closed it while idle and never saw the
    /// request, which may go again on a new one.
    ClosedBeforeAnswer(io::Error),
    /// Anything else: the request may have been handled.
    Error(Error),
}

/// A kept-alive HTTP/1.1 connection to one node, with its read buffer and the
/// deadline of the call it carries.
#[derive(Debug)]
pub(crate) struct Connection {
    stream: TcpStream,
    buf: BytesMut,
    deadline: Deadline,
}

/// The deadline of a connection's current call, and the timer that enforces it.
///
/// The timer is the connection's for its whole life: a call's deadline is later
/// than the previous call's, and moving a tokio timer later is one atomic store
/// (the wheel re-files it if it comes due early), where a timer per call is filed
/// in the wheel and taken out again on every call.
#[derive(Debug, Default)]
struct Deadline {
    at: Option<tokio::time::Instant>,
    timer: Option<Pin<Box<Sleep>>>,
    passed: bool,
}

impl Deadline {
    /// `io`, unless the deadline passes first (`TimedOut`).
    async fn bound<T>(&mut self, io: impl Future<Output = io::Result<T>>) -> io::Result<T> {
        let Some(at) = self.at else {
            return io.await;
        };
        let mut io = std::pin::pin!(io);
        let mut armed = false;
        std::future::poll_fn(|cx| {
            if let Poll::Ready(done) = io.as_mut().poll(cx) {
                return Poll::Ready(done);
            }
            let timer = self
                .timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
            if !armed {
                if timer.deadline() != at {
                    timer.as_mut().reset(at);
                }
                armed = true;
            }
            // Polled on every wait: the connection moves from call to call, and
            // the timer must wake the task waiting now.
            match timer.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    self.passed = true;
                    Poll::Ready(Err(io::ErrorKind::TimedOut.into()))
                }
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    }
}

impl Connection {
    /// Connects to `address`.
    pub(crate) async fn connect(address: &str) -> io::Result<Self> {
        let stream = TcpStream::connect(address).await?;
        let _ = stream.set_nodelay(true);
        Ok(Connection {
            stream,
            buf: BytesMut::new(),
            deadline: Deadline::default(),
        })
    }

    /// The deadline of the call this connection carries now: every read and write
    /// after it fails with `TimedOut`, and [`Connection::deadline_passed`] says so.
    /// `None`: no deadline (a stream's body, which its reader bounds).
    pub(crate) fn set_deadline(&mut self, at: Option<tokio::time::Instant>) {
        self.deadline.at = at;
        self.deadline.passed = false;
    }

    /// Whether an exchange or read failed because the deadline passed (the
    /// connection is then unusable: its answer may still come).
    pub(crate) fn deadline_passed(&self) -> bool {
        self.deadline.passed
    }

    /// Whether an idle connection can still carry a request: the node has not
    /// closed it nor sent anything since. Costs no system call while the reactor
    /// has seen nothing happen on it.
    fn is_reusable(&self) -> bool {
        let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
        match self.stream.poll_read_ready(&mut cx) {
            // Nothing to read: still open.
            Poll::Pending => true,
            // Readable: the node closed it (or sent what nobody asked for), unless
            // the readiness is stale, which a read tells.
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
            // Its runtime is gone.
            Poll::Ready(Err(_)) => false,
        }
    }

    /// Sends `head` then `body`, and reads the answer's head.
    pub(crate) async fn exchange(&mut self, head: &[u8], body: &[u8]) -> Result<Head, Failure> {
        self.buf.clear();
        if let Err(e) = self.write_both(head, body).await {
            if self.deadline.passed {
                return Err(Failure::Error(io_failed(&e)));
            }
            return Err(Failure::ClosedBeforeAnswer(e));
        }
        loop {
            if let Some(head) = parse_head(&self.buf).map_err(Failure::Error)? {
                self.buf.advance(head.len);
                return Ok(head);
            }
            match self.read_more().await {
                Ok(0) if self.buf.is_empty() => {
                    let closed = io::Error::from(io::ErrorKind::UnexpectedEof);
                    return Err(Failure::ClosedBeforeAnswer(closed));
                }
                Ok(0) => {
                    return Err(Failure::Error(bad_answer(
                        "the connection closed in the middle of the answer's head",
                    )))
                }
                Ok(_) => {}
                Err(e) if self.buf.is_empty() && !self.deadline.passed => {
                    return Err(Failure::ClosedBeforeAnswer(e))
                }
                Err(e) => return Err(Failure::Error(io_failed(&e))),
            }
        }
    }

    /// Reads the whole body; the connection may then carry another request when
    /// the node keeps it and sent nothing beyond the body.
    pub(crate) async fn read_body(
        &mut self,
        head: &Head,
        max: usize,
    ) -> Result<(Answer, bool), Error> {
        let mut decoder = BodyDecoder::new(head.framing, max)?;
        // The common case: one piece, already in the buffer.
        if let Framing::Length(n) = head.framing {
            if self.buf.len() as u64 >= n {
                let n = n as usize;
                let body = if n <= COPY_BODY_UP_TO {
                    let body = Bytes::copy_from_slice(&self.buf[..n]);
                    self.buf.advance(n);
                    body
                } else {
                    self.buf.split_to(n).freeze()
                };
                let reusable = head.keep_alive && self.buf.is_empty();
                let answer = Answer {
                    status: head.status,
                    body,
                };
                return Ok((answer, reusable));
            }
        }
        let mut body = BytesMut::new();
        loop {
            decoder.decode(&mut self.buf, &mut |piece| body.extend_from_slice(&piece))?;
            if decoder.is_done() {
                break;
            }
            if self.read_more().await.map_err(|e| io_failed(&e))? == 0 {
                decoder.at_eof()?;
                break;
            }
        }
        let reusable =
            head.keep_alive && self.buf.is_empty() && head.framing != Framing::UntilClose;
        let answer = Answer {
            status: head.status,
            body: body.freeze(),
        };
        Ok((answer, reusable))
    }

    /// The body as it arrives, piece by piece; the connection is used up.
    pub(crate) fn into_body_stream(
        self,
        head: &Head,
        max: usize,
    ) -> Result<impl Stream<Item = Result<Bytes, Error>> + Send + 'static, Error> {
        let decoder = BodyDecoder::new(head.framing, max)?;
        let state = (self, decoder, std::collections::VecDeque::new());
        Ok(futures_util::stream::unfold(
            state,
            |(mut conn, mut decoder, mut ready)| async move {
                loop {
                    if let Some(piece) = ready.pop_front() {
                        return Some((Ok(piece), (conn, decoder, ready)));
                    }
                    if decoder.is_done() {
                        return None;
                    }
                    if let Err(e) =
                        decoder.decode(&mut conn.buf, &mut |piece| ready.push_back(piece))
                    {
                        decoder.state = Decoding::Done;
                        return Some((Err(e), (conn, decoder, ready)));
                    }
                    if !ready.is_empty() || decoder.is_done() {
                        continue;
                    }
                    let read = conn.read_more().await;
                    let failed = match read {
                        Ok(0) => decoder.at_eof().err(),
                        Ok(_) => None,
                        Err(e) => Some(io_failed(&e)),
                    };
                    if let Some(e) = failed {
                        decoder.state = Decoding::Done;
                        return Some((Err(e), (conn, decoder, ready)));
                    }
                }
            },
        ))
    }

    async fn read_more(&mut self) -> io::Result<usize> {
        self.buf.reserve(READ_CHUNK);
        let Connection {
            stream,
            buf,
            deadline,
        } = self;
        deadline.bound(stream.read_buf(buf)).await
    }

    async fn write_both(&mut self, head: &[u8], body: &[u8]) -> io::Result<()> {
        let (mut head, mut body) = (head, body);
        while !head.is_empty() || !body.is_empty() {
            let Connection {
                stream, deadline, ..
            } = self;
            let n = deadline
                .bound(stream.write_vectored(&[IoSlice::new(head), IoSlice::new(body)]))
                .await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            let from_head = n.min(head.len());
            head = &head[from_head..];
            body = &body[n - from_head..];
        }
        Ok(())
    }
}

/// Idle connections are closed after this long unused, so that a node that went
/// away does not keep sockets open in the pool.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the pool drops its expired connections (on a `put`).
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// Idle connections by the thread that made them, then by node address.
///
/// A connection belongs to the reactor of the runtime that dialed it; the API
/// gateway runs one single-threaded runtime per worker thread, so a connection is
/// reused only on its own thread, where a call never leaves its core.
#[derive(Debug, Default)]
pub(crate) struct Pool(Mutex<PoolState>);

#[derive(Debug, Default)]
struct PoolState {
    by_thread: FastMap<ThreadId, FastMap<String, Vec<Idle>>>,
    swept_at: Option<Instant>,
}

#[derive(Debug)]
struct Idle {
    conn: Connection,
    since: Instant,
}

/// A map with a fast hash: its keys (thread ids, node addresses) are not chosen
/// by callers, so SipHash's guard against crafted collisions buys nothing here,
/// and a call hashes twice to take a connection and twice to put it back.
type FastMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<WordHasher>>;

/// Multiply-rotate over 8-byte words (the scheme of Firefox's and rustc's FxHash).
#[derive(Debug, Default)]
struct WordHasher(u64);

impl WordHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl std::hash::Hasher for WordHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            let mut w = [0u8; 8];
            w.copy_from_slice(word);
            self.add(u64::from_le_bytes(w));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// The calling thread's id, without `thread::current()`'s reference count.
fn this_thread() -> ThreadId {
    thread_local! {
        static ID: ThreadId = thread::current().id();
    }
    ID.with(|id| *id)
}

impl Pool {
    /// An idle connection to `address` that is still open.
    pub(crate) fn take(&self, address: &str) -> Option<Connection> {
        let mut pool = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let idle = pool.by_thread.get_mut(&this_thread())?.get_mut(address)?;
        while let Some(Idle { conn, since }) = idle.pop() {
            if since.elapsed() < IDLE_TIMEOUT && conn.is_reusable() {
                return Some(conn);
            }
        }
        None
    }

    /// Keeps `conn` for the next call to `address` from this thread.
    pub(crate) fn put(&self, address: &str, conn: Connection) {
        let now = Instant::now();
        let mut pool = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if pool
            .swept_at
            .is_none_or(|at| now.duration_since(at) >= SWEEP_EVERY)
        {
            pool.sweep(now);
        }
        let by_address = pool.by_thread.entry(this_thread()).or_default();
        let idle = match by_address.get_mut(address) {
            Some(idle) => idle,
            None => by_address.entry(address.to_string()).or_default(),
        };
        if idle.len() < IDLE_PER_NODE {
            idle.push(Idle { conn, since: now });
        }
    }

    /// The number of idle connections kept, on every thread.
    #[cfg(test)]
    fn len(&self) -> usize {
        let pool = self.0.lock().unwrap_or_else(|p| p.into_inner());
        pool.by_thread
            .values()
            .flat_map(|a| a.values())
            .map(Vec::len)
            .sum()
    }
}

impl PoolState {
    /// Drops expired connections (of every thread: a thread that ended leaves its
    /// connections behind) and the entries left empty.
    fn sweep(&mut self, now: Instant) {
        self.by_thread.retain(|_, by_address| {
            by_address.retain(|_, idle| {
                idle.retain(|i| now.duration_since(i.since) < IDLE_TIMEOUT);
                !idle.is_empty()
            });
            !by_address.is_empty()
        });
        self.swept_at = Some(now);
    }
}

/// The bytes of an HTTP token (a header name): letters, digits and
/// ``!#$%&'*+-.^_`|~``.
const TOKEN: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        b += 1;
    }
    table
};

/// The head of a `POST /` request, written line by line.
#[derive(Debug)]
pub(crate) struct RequestHead(Vec<u8>);

impl RequestHead {
    pub(crate) fn post_root() -> Self {
        let mut head = Vec::with_capacity(256);
        head.extend_from_slice(b"POST / HTTP/1.1\r\n");
        RequestHead(head)
    }

    /// Adds `name: value` if it can be a header line: the name an HTTP token, the
    /// value without control characters (no CR or LF to split the head with).
    pub(crate) fn header(&mut self, name: &str, value: &str) {
        let fits = !name.is_empty()
            && name.bytes().all(|b| TOKEN[usize::from(b)])
            && is_header_value(value.as_bytes());
        if fits {
            self.known_good(name, value);
        }
    }

    /// Adds a line the caller knows is well formed (a constant).
    pub(crate) fn known_good(&mut self, name: &str, value: &str) {
        let head = &mut self.0;
        head.extend_from_slice(name.as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }

    /// Adds `timeout: <ms>ms`.
    pub(crate) fn timeout_ms(&mut self, ms: u128) {
        self.0.extend_from_slice(b"timeout: ");
        let ms = u64::try_from(ms).unwrap_or(u64::MAX);
        self.0
            .extend_from_slice(itoa::Buffer::new().format(ms).as_bytes());
        self.0.extend_from_slice(b"ms\r\n");
    }

    /// The head, ended by the body's length.
    pub(crate) fn finish(mut self, body_len: usize) -> Vec<u8> {
        self.0.extend_from_slice(b"content-length: ");
        self.0
            .extend_from_slice(itoa::Buffer::new().format(body_len).as_bytes());
        self.0.extend_from_slice(b"\r\n\r\n");
        self.0
    }
}

/// Whether `value` can be a header value: visible ASCII, spaces and tabs (no
/// control character, so no CR or LF to split the head with). Eight bytes at a
/// time: every call checks its request id, host and endpoint this way.
fn is_header_value(value: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    let printable = |b: &u8| b == &b'\t' || (b' '..=b'~').contains(b);
    let mut chunks = value.chunks_exact(8);
    for chunk in chunks.by_ref() {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let w = u64::from_ne_bytes(word);
        // A byte below 0x20, or above 0x7e (0x7f and non-ASCII): its high bit
        // ends up set in one of these.
        let below_space = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
        let above_tilde = (w.wrapping_add(ONES) | w) & HIGH;
        if (below_space | above_tilde) != 0 && !chunk.iter().all(printable) {
            return false;
        }
    }
    chunks.remainder().iter().all(printable)
}

fn bad_answer(why: impl std::fmt::Display) -> Error {
    Error::service_unavailable(ID, format!("the node's HTTP/1.1 answer is unusable: {why}"))
}

fn too_large(max: usize) -> Error {
    Error::payload_too_large(ID, format!("response is over the limit of {max} bytes"))
}

fn io_failed(e: &io::Error) -> Error {
    Error::service_unavailable(ID, format!("reading the answer: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(bytes: &[u8]) -> (u16, Bytes) {
        decode_answer(bytes, 1024).unwrap()
    }

    #[test]
    fn header_values_are_printable_ascii_spaces_and_tabs() {
        let printable = |v: &[u8]| v.iter().all(|b| *b == b'\t' || (b' '..=b'~').contains(b));
        // Every byte, at every position of a word and of the remainder.
        for len in [1, 7, 8, 9, 16, 36] {
            for at in 0..len {
                for bad in 0..=255u8 {
                    let mut value = vec![b'a'; len];
                    value[at] = bad;
                    assert_eq!(
                        is_header_value(&value),
                        printable(&value),
                        "{bad:#x} at {at} of {len}"
                    );
                }
            }
        }
        assert!(is_header_value(b"3f2504e0-4f89-41d3-9a0c-0305e82c3301"));
        assert!(is_header_value(b""));
        assert!(!is_header_value(b"ok\r\nx-injected: 1"));
    }

    #[test]
    fn content_length() {
        let (status, body) = ok(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello");
        assert_eq!((status, &body[..]), (200, &b"hello"[..]));
    }

    #[test]
    fn chunked_with_extensions_and_trailers() {
        let answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
            3;ext=1\r\nhel\r\n2\r\nlo\r\n0\r\nx-trailer: 1\r\n\r\n";
        assert_eq!(&ok(answer).1[..], b"hello");
    }

    #[test]
    fn until_close_and_informational_answers() {
        let answer = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 503 No\r\n\r\n{\"x\":1}";
        let head = parse_head(answer).unwrap().unwrap();
        assert_eq!(head.status, 503);
        assert_eq!(head.framing, Framing::UntilClose);
        assert!(!head.keep_alive);
        assert_eq!(&ok(answer).1[..], b"{\"x\":1}");
    }

    #[test]
    fn keep_alive_by_version_and_connection_header() {
        let head = |h: &[u8]| parse_head(h).unwrap().unwrap();
        assert!(head(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").keep_alive);
        assert!(
            !head(b"HTTP/1.1 200 OK\r\nConnection: close\r\ncontent-length: 0\r\n\r\n").keep_alive
        );
        assert!(!head(b"HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n").keep_alive);
        assert!(
            head(b"HTTP/1.0 200 OK\r\nconnection: Keep-Alive\r\ncontent-length: 0\r\n\r\n")
                .keep_alive
        );
        // Both framings: chunked wins, and the connection is not trusted after.
        let both =
            head(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n");
        assert_eq!((both.framing, both.keep_alive), (Framing::Chunked, false));
    }

    #[test]
    fn incomplete_and_malformed_answers() {
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\ncontent-le").unwrap(), None);
        for bad in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhel"[..],
            b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nab",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nabXX0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nab\r\n",
            b"NOT HTTP\r\n\r\n",
        ] {
            let e = decode_answer(bad, 1024).unwrap_err();
            assert_eq!(e.code(), 503, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn bodies_over_the_limit_are_refused() {
        let e =
            decode_answer(b"HTTP/1.1 200 OK\r\ncontent-length: 2000\r\n\r\n", 1024).unwrap_err();
        assert_eq!(e.code(), 413);
        let mut chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
        for _ in 0..3 {
            chunked.extend_from_slice(b"200\r\n");
            chunked.extend_from_slice(&[b'x'; 0x200]);
            chunked.extend_from_slice(b"\r\n");
        }
        chunked.extend_from_slice(b"0\r\n\r\n");
        assert_eq!(decode_answer(&chunked, 1024).unwrap_err().code(), 413);
    }

    /// Byte by byte, the decoder gives the same body as all at once.
    #[test]
    fn decoding_does_not_depend_on_how_bytes_arrive() {
        let answer = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
            5\r\nhello\r\n1;a=b\r\n \r\n5\r\nworld\r\n0\r\n\r\n";
        let head = parse_head(answer).unwrap().unwrap();
        let mut decoder = BodyDecoder::new(head.framing, 1024).unwrap();
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        for b in &answer[head.len..] {
            buf.extend_from_slice(&[*b]);
            decoder
                .decode(&mut buf, &mut |piece| body.extend_from_slice(&piece))
                .unwrap();
        }
        assert!(decoder.is_done());
        assert_eq!(body, b"hello world");
    }

    /// Connections unused for longer than the idle timeout are dropped, those of
    /// nodes no call goes to any more included.
    #[tokio::test]
    async fn expired_idle_connections_are_dropped() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let accepting = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                open.push(stream);
            }
        });
        let pool = Pool::default();
        pool.put(&address, Connection::connect(&address).await.unwrap());
        pool.put("gone:1", Connection::connect(&address).await.unwrap());
        assert_eq!(pool.len(), 2);
        // Back-date both, then let the next put sweep.
        {
            let mut state = pool.0.lock().unwrap();
            let long_ago = Instant::now() - IDLE_TIMEOUT - SWEEP_EVERY;
            for idle in state.by_thread.values_mut().flat_map(|a| a.values_mut()) {
                idle.iter_mut().for_each(|i| i.since = long_ago);
            }
            state.swept_at = Some(long_ago);
        }
        assert!(
            pool.take(&address).is_none(),
            "an expired connection was reused"
        );
        pool.put(&address, Connection::connect(&address).await.unwrap());
        assert_eq!(pool.len(), 1, "the gone node's connection was kept");
        assert!(pool.take(&address).is_some());
        accepting.abort();
    }

    #[test]
    fn header_lines_that_could_split_the_head_are_left_out() {
        let mut head = RequestHead::post_root();
        head.header("host", "h:1");
        head.header("x id", "a");
        head.header("x-id", "a\r\nx-evil: 1");
        head.header("", "a");
        head.header("x-request-id", "abc-123");
        assert_eq!(
            head.finish(2),
            b"POST / HTTP/1.1\r\nhost: h:1\r\nx-request-id: abc-123\r\ncontent-length: 2\r\n\r\n"
        );
    }
}
