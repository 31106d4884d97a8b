//! `log`: one structured line per request, call attempt, delivery and publish,
//! through `tracing` under the target `micro::access`.
//!
//! | point | fields |
//! |---|---|
//! | handler | `service`, `endpoint`, `peer`, `status`, `duration_ms`, `error` |
//! | call, per attempt | `service` (the caller), `target`, `endpoint`, `node`, `attempt`, `status`, `duration_ms`, `error` |
//! | subscriber | `service`, `topic`, `id`, `status`, `duration_ms`, `error` |
//! | publish | `service`, `topic`, `id`, `status`, `duration_ms`, `error` |
//!
//! `status` is the HTTP-style code: 200 on success, else the error's code, whose
//! detail is `error`. Lines are written at `level`; a server error (5xx) and
//! anything slower than `slow` at `warn`. With `errors_only`, successes are not
//! logged unless they are slow.
//!
//! Select these lines with the usual filters, e.g. `RUST_LOG=micro::access=info`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use serde::Deserialize;
use tower::Service;

use super::builtin::{settings_of, Builtin, WrapperContext};
use super::metrics::{code_of, Measured, Sink};
use super::settings::{de, Key, Settings};
use super::{CallWrapper, HandlerWrapper, PublishWrapper, SubscriberWrapper, Wrappers};
use crate::broker::{Delivery, Publication};
use crate::client::Attempt;
use crate::registry::Node;
use crate::server::{RawReply, RawRequest};
use crate::Error;

/// The `tracing` target of every line.
pub(crate) const TARGET: &str = "micro::access";

const KEYS: &[Key] = &[
    Key {
        name: "level",
        default: "info",
        about: "level of the lines: info or debug (errors of 5xx and slow requests: warn)",
    },
    Key {
        name: "errors_only",
        default: "false",
        about: "log only failed (and slow) requests",
    },
    Key {
        name: "slow",
        default: "",
        about: "log requests slower than this at warn, e.g. 500ms (default: none)",
    },
];

#[derive(Deserialize)]
struct LogSettings {
    level: String,
    #[serde(deserialize_with = "boolean")]
    errors_only: bool,
    #[serde(default, deserialize_with = "de::opt_duration")]
    slow: Option<Duration>,
}

/// A boolean written as `true`/`false` or as text.
fn boolean<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    de::number(d)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Debug,
    Info,
    Warn,
}

/// What every line of one `log` wrapper shares.
#[derive(Debug, Clone, Copy)]
struct Config {
    level: Level,
    errors_only: bool,
    slow: Option<Duration>,
}

impl Config {
    /// The level to log an outcome at, or `None` to skip it.
    fn level(&self, code: u16, elapsed: Duration) -> Option<Level> {
        let slow = self.slow.is_some_and(|limit| elapsed > limit);
        if slow || code >= 500 {
            Some(Level::Warn)
        } else if self.errors_only && code == 200 {
            None
        } else {
            Some(self.level)
        }
    }
}

pub(super) const BUILTIN: Builtin = Builtin {
    name: "log",
    about:
        "one line per request, call attempt, delivery and publish (tracing target micro::access)",
    keys: KEYS,
    always_on: false,
    build,
};

fn build(settings: &Settings, ctx: &WrapperContext) -> Result<Wrappers, Error> {
    let s: LogSettings = settings_of(settings, "log", KEYS)?;
    let level = match s.level.trim().to_ascii_lowercase().as_str() {
        "info" => Level::Info,
        "debug" => Level::Debug,
        other => {
            return Err(Error::bad_request(
                "micro.wrapper",
                format!("wrapper log: level {other:?} is not info or debug"),
            ))
        }
    };
    let config = Config {
        level,
        errors_only: s.errors_only,
        slow: s.slow,
    };
    let service: Arc<str> = ctx.service.as_str().into();
    let (call, subscriber, publish) = (service.clone(), service.clone(), service);
    Ok(Wrappers::new()
        .handler(HandlerWrapper::new(
            "log",
            tower::layer::layer_fn(move |inner| LogHandler { inner, config }),
        ))
        .call(CallWrapper::new(
            "log",
            tower::layer::layer_fn(move |inner| LogAttempt {
                inner,
                config,
                service: call.clone(),
            }),
        ))
        .subscriber(SubscriberWrapper::new(
            "log",
            tower::layer::layer_fn(move |inner| LogTopic {
                inner,
                config,
                service: subscriber.clone(),
            }),
        ))
        .publish(PublishWrapper::new(
            "log",
            tower::layer::layer_fn(move |inner| LogTopic {
                inner,
                config,
                service: publish.clone(),
            }),
        )))
}

/// Writes one event at a level chosen at runtime.
macro_rules! event_at {
    ($level:expr, $($rest:tt)+) => {
        match $level {
            Level::Debug => tracing::debug!(target: TARGET, $($rest)+),
            Level::Info => tracing::info!(target: TARGET, $($rest)+),
            Level::Warn => tracing::warn!(target: TARGET, $($rest)+),
        }
    };
}

/// Milliseconds, to the microsecond.
fn millis(elapsed: Duration) -> f64 {
    (elapsed.as_secs_f64() * 1e6).round() / 1e3
}

fn detail<T>(result: &Result<T, Error>) -> Option<&str> {
    result.as_ref().err().map(Error::detail)
}

#[derive(Clone)]
struct LogHandler<S> {
    inner: S,
    config: Config,
}

struct HandlerLine {
    config: Config,
    service: Arc<str>,
    endpoint: Arc<str>,
    peer: Option<SocketAddr>,
}

impl Sink for HandlerLine {
    fn done<T>(self, result: &Result<T, Error>, elapsed: Duration) {
        let status = code_of(result);
        let Some(level) = self.config.level(status, elapsed) else {
            return;
        };
        event_at!(
            level,
            service = %self.service,
            endpoint = %self.endpoint,
            peer = self.peer.map(tracing::field::display),
            status,
            duration_ms = millis(elapsed),
            error = detail(result),
            "request"
        );
    }
}

impl<S> Service<RawRequest> for LogHandler<S>
where
    S: Service<RawRequest, Response = RawReply, Error = Error>,
{
    type Response = RawReply;
    type Error = Error;
    type Future = Measured<S::Future, HandlerLine>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: RawRequest) -> Self::Future {
        let line = HandlerLine {
            config: self.config,
            service: req.ctx.service.clone(),
            endpoint: req.ctx.endpoint.clone(),
            peer: req.ctx.remote_addr(),
        };
        Measured::new(self.inner.call(req), line)
    }
}

#[derive(Clone)]
struct LogAttempt<S> {
    inner: S,
    config: Config,
    service: Arc<str>,
}

struct AttemptLine {
    config: Config,
    service: Arc<str>,
    target: Arc<str>,
    endpoint: Arc<str>,
    node: Arc<Node>,
    attempt: u32,
}

impl Sink for AttemptLine {
    fn done<T>(self, result: &Result<T, Error>, elapsed: Duration) {
        let status = code_of(result);
        let Some(level) = self.config.level(status, elapsed) else {
            return;
        };
        event_at!(
            level,
            service = %self.service,
            target = %self.target,
            endpoint = %self.endpoint,
            node = %self.node.address,
            attempt = self.attempt,
            status,
            duration_ms = millis(elapsed),
            error = detail(result),
            "call"
        );
    }
}

impl<S> Service<Attempt> for LogAttempt<S>
where
    S: Service<Attempt, Response = RawReply, Error = Error>,
{
    type Response = RawReply;
    type Error = Error;
    type Future = Measured<S::Future, AttemptLine>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, attempt: Attempt) -> Self::Future {
        let line = AttemptLine {
            config: self.config,
            service: self.service.clone(),
            target: attempt.service.clone(),
            endpoint: attempt.endpoint.clone(),
            node: attempt.node.clone(),
            attempt: attempt.number(),
        };
        Measured::new(self.inner.call(attempt), line)
    }
}

#[derive(Clone)]
struct LogTopic<S> {
    inner: S,
    config: Config,
    service: Arc<str>,
}

struct TopicLine {
    config: Config,
    service: Arc<str>,
    what: &'static str,
    topic: String,
    id: Option<String>,
}

impl Sink for TopicLine {
    fn done<T>(self, result: &Result<T, Error>, elapsed: Duration) {
        let status = code_of(result);
        let Some(level) = self.config.level(status, elapsed) else {
            return;
        };
        event_at!(
            level,
            service = %self.service,
            topic = %self.topic,
            id = self.id.as_deref(),
            status,
            duration_ms = millis(elapsed),
            error = detail(result),
            "{}",
            self.what
        );
    }
}

impl<S> LogTopic<S> {
    fn line(&self, what: &'static str, topic: &str, message: &crate::broker::Message) -> TopicLine {
        TopicLine {
            config: self.config,
            service: self.service.clone(),
            what,
            topic: topic.to_string(),
            id: message.id().map(str::to_string),
        }
    }
}

impl<S> Service<Delivery> for LogTopic<S>
where
    S: Service<Delivery, Response = (), Error = Error>,
{
    type Response = ();
    type Error = Error;
    type Future = Measured<S::Future, TopicLine>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, delivery: Delivery) -> Self::Future {
        let line = self.line("message", &delivery.topic, &delivery.message);
        Measured::new(self.inner.call(delivery), line)
    }
}

impl<S> Service<Publication> for LogTopic<S>
where
    S: Service<Publication, Response = (), Error = Error>,
{
    type Response = ();
    type Error = Error;
    type Future = Measured<S::Future, TopicLine>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, publication: Publication) -> Self::Future {
        let line = self.line("publish", &publication.topic, &publication.message);
        Measured::new(self.inner.call(publication), line)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::Mutex;

    use bytes::Bytes;
    use tower::ServiceExt;

    use super::*;
    use crate::broker::Message;
    use crate::request::CallContext;
    use crate::server::RawBody;

    /// Captures what the fmt subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn lines(&self) -> Vec<String> {
            String::from_utf8(self.0.lock().unwrap().clone())
                .unwrap()
                .lines()
                .map(String::from)
                .collect()
        }
    }

    fn capture() -> (Captured, tracing::subscriber::DefaultGuard) {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::TRACE)
            .finish();
        (captured, tracing::subscriber::set_default(subscriber))
    }

    fn wrappers(flags: &[&str]) -> Wrappers {
        let settings = Settings::from_flags(flags).unwrap();
        build(&settings, &WrapperContext::new("greeter")).unwrap()
    }

    fn request(fail: u16) -> RawRequest {
        let mut ctx = CallContext::new("Greeter.Hello");
        ctx.service = "greeter".into();
        ctx.remote_addr = Some("127.0.0.1:4567".parse().unwrap());
        if fail != 0 {
            ctx.metadata_mut().insert("fail", fail.to_string());
        }
        RawRequest {
            ctx,
            format: crate::codec::Format::Json,
            body: RawBody::One(Bytes::new()),
        }
    }

    async fn handle(w: &Wrappers, req: RawRequest) -> Result<RawReply, Error> {
        let inner = tower::service_fn(|req: RawRequest| async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            match req.ctx.metadata().get("fail") {
                Some(code) => Err(Error::new("greeter", "it broke", code.parse().unwrap())),
                None => Ok(RawReply::One(Bytes::new())),
            }
        });
        let stack = crate::wrapper::layer::stack(&w.handler, inner).unwrap();
        stack.oneshot(req).await
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_line_has_every_field() {
        let (captured, _guard) = capture();
        let w = wrappers(&[]);
        handle(&w, request(0)).await.unwrap();
        handle(&w, request(404)).await.unwrap_err();
        handle(&w, request(503)).await.unwrap_err();
        let lines = captured.lines();
        assert_eq!(lines.len(), 3, "{lines:?}");
        for line in &lines {
            for field in [
                "micro::access:",
                "request",
                "service=greeter",
                "endpoint=Greeter.Hello",
                "peer=127.0.0.1:4567",
                "duration_ms=20",
            ] {
                assert!(line.contains(field), "no {field} in {line}");
            }
        }
        assert!(lines[0].contains(" INFO ") && lines[0].contains("status=200"));
        assert!(!lines[0].contains("error="), "{}", lines[0]);
        assert!(lines[1].contains(" INFO ") && lines[1].contains("status=404"));
        assert!(lines[1].contains("error=\"it broke\""), "{}", lines[1]);
        assert!(lines[2].contains(" WARN ") && lines[2].contains("status=503"));
    }

    #[tokio::test(start_paused = true)]
    async fn errors_only_slow_and_level_choose_the_lines() {
        let (captured, _guard) = capture();
        let w = wrappers(&["log.errors_only=true", "log.level=debug"]);
        handle(&w, request(0)).await.unwrap();
        handle(&w, request(400)).await.unwrap_err();
        let lines = captured.lines();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].contains("DEBUG") && lines[0].contains("status=400"));

        let (captured, _guard) = capture();
        let w = wrappers(&["log.errors_only=true", "log.slow=10ms"]);
        handle(&w, request(0)).await.unwrap();
        let lines = captured.lines();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].contains(" WARN ") && lines[0].contains("status=200"));

        let settings = Settings::from_flags(["log.level=trace"]).unwrap();
        let e = build(&settings, &WrapperContext::new("s")).unwrap_err();
        assert!(e.detail().contains("not info or debug"), "{e}");
    }

    #[tokio::test]
    async fn attempts_deliveries_and_publishes_are_logged() {
        let (captured, _guard) = capture();
        let w = wrappers(&[]);
        let attempt = Attempt {
            service: "store".into(),
            endpoint: "Store.Get".into(),
            node: Arc::new(Node {
                id: "n1".into(),
                address: "127.0.0.1:9000".into(),
                metadata: Default::default(),
            }),
            metadata: Default::default(),
            deadline: tokio::time::Instant::now() + Duration::from_secs(1),
            number: 1,
            path: None,
            format: crate::codec::Format::Proto,
            body: crate::wire::Body::Empty,
            streams: false,
        };
        let call = crate::wrapper::layer::stack(
            &w.call,
            tower::service_fn(|_a: Attempt| async move {
                Err::<RawReply, _>(Error::service_unavailable("store", "no route"))
            }),
        )
        .unwrap();
        call.oneshot(attempt).await.unwrap_err();

        let deliver = crate::wrapper::layer::stack(
            &w.subscriber,
            tower::service_fn(|_d: Delivery| async move { Ok(()) }),
        )
        .unwrap();
        let message = Message::new("x").header(crate::broker::HEADER_ID, "m-1");
        deliver
            .oneshot(Delivery::new("orders", message.clone(), None))
            .await
            .unwrap();
        let publish = crate::wrapper::layer::stack(
            &w.publish,
            tower::service_fn(|_p: Publication| async move { Ok(()) }),
        )
        .unwrap();
        publish
            .oneshot(Publication {
                topic: "orders".into(),
                message,
            })
            .await
            .unwrap();

        let lines = captured.lines();
        assert_eq!(lines.len(), 3, "{lines:?}");
        for field in [
            " WARN ",
            "call",
            "service=greeter",
            "target=store",
            "endpoint=Store.Get",
            "node=127.0.0.1:9000",
            "attempt=1",
            "status=503",
            "duration_ms=",
            "error=\"no route\"",
        ] {
            assert!(lines[0].contains(field), "no {field} in {}", lines[0]);
        }
        for (line, what) in [(&lines[1], "message"), (&lines[2], "publish")] {
            for field in [
                what,
                "service=greeter",
                "topic=orders",
                "id=\"m-1\"",
                "status=200",
                "duration_ms=",
            ] {
                assert!(line.contains(field), "no {field} in {line}");
            }
        }
    }
}
