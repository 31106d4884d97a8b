//! `metrics`: Prometheus counters and latency histograms of every wrapper point,
//! served as text at `GET /metrics` on the service's own port.
//!
//! | series | labels |
//! |---|---|
//! | `micro_server_requests_total` (counter) | `service`, `endpoint`, `code` |
//! | `micro_server_request_duration_seconds` (histogram) | `service`, `endpoint` |
//! | `micro_server_requests_in_flight` (gauge) | `service`, `endpoint` |
//! | `micro_client_requests_total` (counter, per attempt) | `service` (the caller), `target`, `endpoint`, `code` |
//! | `micro_client_request_duration_seconds` (histogram) | `service`, `target`, `endpoint` |
//! | `micro_subscriber_messages_total` (counter) | `service`, `topic`, `result` (`ok`, `error`) |
//! | `micro_subscriber_message_duration_seconds` (histogram) | `service`, `topic` |
//! | `micro_publisher_messages_total` (counter) | `service`, `topic`, `result` |
//! | `micro_publisher_message_duration_seconds` (histogram) | `service`, `topic` |
//!
//! `code` is the HTTP-style status: `200` for a success, else the error's code
//! (`micro::Error::code`). Only requests routed to an endpoint are counted: a call
//! of an unknown endpoint (404 from the router) has no endpoint to count it under.
//! For a streamed answer the time is that of the head (the handler returning its
//! stream), not of the whole stream.

mod registry;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use pin_project_lite::pin_project;
use serde::Deserialize;
use tokio::time::Instant;
use tower::Service;

use super::builtin::{settings_of, Builtin, WrapperContext};
use super::settings::{Key, Settings};
use super::{CallWrapper, HandlerWrapper, PublishWrapper, SubscriberWrapper, Wrappers};
use crate::broker::{Delivery, Publication};
use crate::client::Attempt;
use crate::server::{HttpRoute, RawReply, RawRequest};
use crate::Error;

use registry::{ClientSeries, Registry, ServerSeries, TopicSeries};

/// The content type of the text exposition format 0.0.4.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

const KEYS: &[Key] = &[
    Key {
        name: "path",
        default: "/metrics",
        about: "the path of the Prometheus page on the service's port",
    },
    Key {
        name: "buckets",
        default: "0.0005,0.001,0.0025,0.005,0.01,0.025,0.05,0.1,0.25,0.5,1,2.5,5,10",
        about: "upper bounds of the latency histogram buckets, in seconds",
    },
];

#[derive(Deserialize)]
struct MetricsSettings {
    path: String,
    #[serde(deserialize_with = "buckets")]
    buckets: Vec<f64>,
}

/// Bucket bounds: a list of positive numbers, as a JSON list or comma-separated
/// text; sorted, duplicates dropped.
fn buckets<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
    use serde::de::Error as _;
    let items: Vec<String> = super::settings::de::list(d)?;
    let mut bounds = Vec::with_capacity(items.len());
    for item in items {
        let bound: f64 =
            item.trim().trim_matches('"').parse().map_err(|_| {
                D::Error::custom(format!("bucket {item:?} is not a number of seconds"))
            })?;
        if !bound.is_finite() || bound <= 0.0 {
            return Err(D::Error::custom(format!(
                "bucket {item} must be a positive number of seconds"
            )));
        }
        bounds.push(bound);
    }
    if bounds.is_empty() {
        return Err(D::Error::custom("buckets must list at least one bound"));
    }
    bounds.sort_by(f64::total_cmp);
    bounds.dedup();
    Ok(bounds)
}

pub(super) const BUILTIN: Builtin = Builtin {
    name: "metrics",
    about: "Prometheus counters and latency histograms of handlers, calls, subscribers and publishes, at GET /metrics",
    keys: KEYS,
    always_on: false,
    build,
};

fn build(settings: &Settings, ctx: &WrapperContext) -> Result<Wrappers, Error> {
    let s: MetricsSettings = settings_of(settings, "metrics", KEYS)?;
    if !s.path.starts_with('/') {
        return Err(Error::bad_request(
            "micro.wrapper",
            format!("wrapper metrics: path {:?} must start with /", s.path),
        ));
    }
    let registry = Arc::new(Registry::new(&ctx.service, &s.buckets));
    Ok(wrappers(registry, &s.path))
}

fn wrappers(registry: Arc<Registry>, path: &str) -> Wrappers {
    let page = registry.clone();
    let route = HttpRoute::new(path, move |_head| {
        let text = page.encode();
        async move {
            let mut rsp = http::Response::new(Bytes::from(text));
            rsp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static(CONTENT_TYPE),
            );
            rsp
        }
    });
    let handler = registry.clone();
    let call = registry.clone();
    let subscriber = registry.clone();
    Wrappers::new()
        .handler(HandlerWrapper::new(
            "metrics",
            tower::layer::layer_fn(move |inner| ServerMetrics {
                inner,
                registry: handler.clone(),
                route: Arc::new(OnceLock::new()),
            }),
        ))
        .call(CallWrapper::new(
            "metrics",
            tower::layer::layer_fn(move |inner| ClientMetrics {
                inner,
                registry: call.clone(),
            }),
        ))
        .subscriber(SubscriberWrapper::new(
            "metrics",
            tower::layer::layer_fn(move |inner| TopicMetrics {
                inner,
                registry: subscriber.clone(),
            }),
        ))
        .publish(PublishWrapper::new(
            "metrics",
            tower::layer::layer_fn(move |inner| TopicMetrics {
                inner,
                registry: registry.clone(),
            }),
        ))
        .route(route)
}

/// What a [`Measured`] future reports to when its inner future is done.
pub(super) trait Sink {
    /// The inner future answered: `code` is 200 for `Ok`, else the error's code.
    fn done<T>(self, result: &Result<T, Error>, elapsed: Duration);
}

pin_project! {
    /// A future that times its inner future and reports the outcome to a [`Sink`];
    /// no allocation of its own, so it costs a clock read and the sink's work.
    pub(super) struct Measured<F, K> {
        #[pin]
        inner: F,
        sink: Option<K>,
        start: Instant,
    }
}

impl<F, K> Measured<F, K> {
    pub(super) fn new(inner: F, sink: K) -> Self {
        Measured {
            inner,
            sink: Some(sink),
            start: Instant::now(),
        }
    }
}

impl<F, T, K> Future for Measured<F, K>
where
    F: Future<Output = Result<T, Error>>,
    K: Sink,
{
    type Output = Result<T, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        if let Some(sink) = this.sink.take() {
            sink.done(&result, this.start.elapsed());
        }
        Poll::Ready(result)
    }
}

/// The status code of a result: 200, or the error's.
pub(super) fn code_of<T>(result: &Result<T, Error>) -> u16 {
    match result {
        Ok(_) => 200,
        Err(e) => e.code(),
    }
}

/// Counts a server request; dropping it (done or cancelled) ends its time in flight.
struct ServerSink(Arc<ServerSeries>);

impl Sink for ServerSink {
    fn done<T>(self, result: &Result<T, Error>, elapsed: Duration) {
        self.0.codes.inc(code_of(result));
        self.0.duration.observe(elapsed);
    }
}

impl Drop for ServerSink {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The handler point: one route's series, resolved on its first request.
#[derive(Clone)]
struct ServerMetrics<S> {
    inner: S,
    registry: Arc<Registry>,
    /// Each route has its own stack of wrappers, so its own series, found once.
    route: Arc<OnceLock<Arc<ServerSeries>>>,
}

impl<S> ServerMetrics<S> {
    fn series(&self, endpoint: &str) -> Arc<ServerSeries> {
        let series = self
            .route
            .get_or_init(|| self.registry.server(endpoint))
            .clone();
        if &*series.endpoint == endpoint {
            series
        } else {
            // A stack shared by several endpoints: look each one up.
            self.registry.server(endpoint)
        }
    }
}

impl<S> Service<RawRequest> for ServerMetrics<S>
where
    S: Service<RawRequest, Response = RawReply, Error = Error>,
{
    type Response = RawReply;
    type Error = Error;
    type Future = Measured<S::Future, ServerSink>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: RawRequest) -> Self::Future {
        let series = self.series(req.ctx.endpoint());
        series.in_flight.fetch_add(1, Ordering::Relaxed);
        let sink = ServerSink(series);
        Measured::new(self.inner.call(req), sink)
    }
}

struct ClientSink(Arc<ClientSeries>);

impl Sink for ClientSink {
    fn done<T>(self, result: &Result<T, Error>, elapsed: Duration) {
        self.0.codes.inc(code_of(result));
        self.0.duration.observe(elapsed);
    }
}

/// The call point: every attempt, by target service and endpoint.
#[derive(Clone)]
struct ClientMetrics<S> {
    inner: S,
    registry: Arc<Registry>,
}

impl<S> Service<Attempt> for ClientMetrics<S>
where
    S: Service<Attempt, Response = RawReply, Error = Error>,
{
    type Response = RawReply;
    type Error = Error;
    type Future = Measured<S::Future, ClientSink>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, attempt: Attempt) -> Self::Future {
        let sink = ClientSink(self.registry.client(attempt.service(), attempt.endpoint()));
        Measured::new(self.inner.call(attempt), sink)
    }
}

struct TopicSink(Arc<TopicSeries>);

impl Sink for TopicSink {
    fn done<T>(self, result: &Result<T, Error>, elapsed: Duration) {
        self.0.record(result.is_ok(), elapsed);
    }
}

/// The subscriber and publish points, by topic.
#[derive(Clone)]
struct TopicMetrics<S> {
    inner: S,
    registry: Arc<Registry>,
}

impl<S> Service<Delivery> for TopicMetrics<S>
where
    S: Service<Delivery, Response = (), Error = Error>,
{
    type Response = ();
    type Error = Error;
    type Future = Measured<S::Future, TopicSink>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, delivery: Delivery) -> Self::Future {
        let sink = TopicSink(self.registry.subscriber(&delivery.topic));
        Measured::new(self.inner.call(delivery), sink)
    }
}

impl<S> Service<Publication> for TopicMetrics<S>
where
    S: Service<Publication, Response = (), Error = Error>,
{
    type Response = ();
    type Error = Error;
    type Future = Measured<S::Future, TopicSink>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, publication: Publication) -> Self::Future {
        let sink = TopicSink(self.registry.publisher(&publication.topic));
        Measured::new(self.inner.call(publication), sink)
    }
}

#[cfg(test)]
mod tests {
    use super::registry::DEFAULT_BUCKETS;
    use super::*;
    use crate::broker::Message;
    use crate::request::CallContext;
    use crate::server::RawBody;
    use tower::ServiceExt;

    fn raw(endpoint: &str) -> RawRequest {
        RawRequest {
            ctx: CallContext::new(endpoint),
            format: crate::codec::Format::Json,
            body: RawBody::One(Bytes::new()),
        }
    }

    fn settings(flags: &[&str]) -> Settings {
        Settings::from_flags(flags).unwrap()
    }

    #[test]
    fn settings_are_checked() {
        let ctx = WrapperContext::new("s");
        let w = build(&Settings::default(), &ctx).unwrap();
        assert_eq!(w.routes[0].path(), "/metrics");
        assert_eq!(w.handler_names(), ["metrics"]);
        assert_eq!(w.call_names(), ["metrics"]);
        let w = build(
            &settings(&["metrics.path=/m", "metrics.buckets=[1, 0.5]"]),
            &ctx,
        )
        .unwrap();
        assert_eq!(w.routes[0].path(), "/m");
        for bad in [
            "metrics.path=metrics",
            "metrics.buckets=fast",
            "metrics.buckets=-1",
            "metrics.buckets=[]",
        ] {
            let e = build(&settings(&[bad]), &ctx).unwrap_err();
            assert_eq!(e.code(), 400, "{bad}: {e}");
        }
        let s: MetricsSettings = settings_of(
            &settings(&["metrics.buckets=0.2, 0.1,0.2"]),
            "metrics",
            KEYS,
        )
        .unwrap();
        assert_eq!(s.buckets, [0.1, 0.2]);
        let s: MetricsSettings = settings_of(&Settings::default(), "metrics", KEYS).unwrap();
        assert_eq!(s.buckets, DEFAULT_BUCKETS);
    }

    #[tokio::test(start_paused = true)]
    async fn a_handler_is_counted_timed_and_leaves_flight() {
        let registry = Arc::new(Registry::new("svc", &[0.01, 0.1]));
        let w = wrappers(registry.clone(), "/metrics");
        let inner = tower::service_fn(|req: RawRequest| async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            match req.ctx.metadata().get("fail") {
                Some(_) => Err(Error::too_many_requests("svc", "slow down")),
                None => Ok(RawReply::One(Bytes::new())),
            }
        });
        let stack = crate::wrapper::layer::stack(&w.handler, inner).unwrap();
        let pending = tokio::spawn(stack.clone().oneshot(raw("S.Slow")));
        tokio::task::yield_now().await;
        assert_eq!(
            registry.server("S.Slow").in_flight.load(Ordering::Relaxed),
            1
        );
        pending.await.unwrap().unwrap();
        let mut failing = raw("S.Slow");
        failing.ctx.metadata_mut().insert("fail", "1");
        assert_eq!(
            stack.clone().oneshot(failing).await.unwrap_err().code(),
            429
        );
        // A cancelled request leaves flight too, and is not counted.
        let cancelled = tokio::spawn(stack.clone().oneshot(raw("S.Slow")));
        tokio::task::yield_now().await;
        cancelled.abort();
        let _ = cancelled.await;

        let series = registry.server("S.Slow");
        assert_eq!(series.in_flight.load(Ordering::Relaxed), 0);
        let text = registry.encode();
        for line in [
            "micro_server_requests_total{service=\"svc\",endpoint=\"S.Slow\",code=\"200\"} 1\n",
            "micro_server_requests_total{service=\"svc\",endpoint=\"S.Slow\",code=\"429\"} 1\n",
            "micro_server_request_duration_seconds_bucket{service=\"svc\",endpoint=\"S.Slow\",le=\"0.01\"} 0\n",
            "micro_server_request_duration_seconds_bucket{service=\"svc\",endpoint=\"S.Slow\",le=\"0.1\"} 2\n",
            "micro_server_request_duration_seconds_bucket{service=\"svc\",endpoint=\"S.Slow\",le=\"+Inf\"} 2\n",
            "micro_server_request_duration_seconds_sum{service=\"svc\",endpoint=\"S.Slow\"} 0.1\n",
            "micro_server_request_duration_seconds_count{service=\"svc\",endpoint=\"S.Slow\"} 2\n",
            "micro_server_requests_in_flight{service=\"svc\",endpoint=\"S.Slow\"} 0\n",
        ] {
            assert!(text.contains(line), "missing {line}in\n{text}");
        }
    }

    #[tokio::test]
    async fn publishes_and_deliveries_are_counted_by_topic() {
        let registry = Arc::new(Registry::new("svc", &[1.0]));
        let w = wrappers(registry.clone(), "/metrics");
        let publish = crate::wrapper::layer::stack(
            &w.publish,
            tower::service_fn(|p: Publication| async move {
                match p.topic.as_str() {
                    "bad" => Err(Error::service_unavailable("b", "down")),
                    _ => Ok(()),
                }
            }),
        )
        .unwrap();
        for topic in ["a", "a", "bad"] {
            let _ = publish
                .clone()
                .oneshot(Publication {
                    topic: topic.into(),
                    message: Message::new("x"),
                })
                .await;
        }
        let deliver = crate::wrapper::layer::stack(
            &w.subscriber,
            tower::service_fn(|_d: Delivery| async move { Err(Error::bad_request("s", "no")) }),
        )
        .unwrap();
        let _ = deliver
            .oneshot(Delivery::new("a", Message::new("x"), None))
            .await;
        let text = registry.encode();
        for line in [
            "micro_publisher_messages_total{service=\"svc\",topic=\"a\",result=\"ok\"} 2\n",
            "micro_publisher_messages_total{service=\"svc\",topic=\"bad\",result=\"error\"} 1\n",
            "micro_subscriber_messages_total{service=\"svc\",topic=\"a\",result=\"error\"} 1\n",
            "micro_subscriber_messages_total{service=\"svc\",topic=\"a\",result=\"ok\"} 0\n",
            "micro_subscriber_message_duration_seconds_count{service=\"svc\",topic=\"a\"} 1\n",
        ] {
            assert!(text.contains(line), "missing {line}in\n{text}");
        }
    }
}
