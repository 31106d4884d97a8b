//! `concurrency`: at most `limit` requests of an endpoint (or of the whole service,
//! `per=service`) in flight; one more is shed at once with a 503, which a micro
//! client retries on another node. With `queue` set, that many requests may wait
//! up to `queue_timeout` (or their deadline, if sooner) for a place instead.
//!
//! A request counts until its answer is complete: for a streamed answer, until
//! the stream ends or is dropped. A request whose caller goes away (its future
//! dropped) stops counting at once.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::{BoxFuture, FutureExt};
use futures_util::Stream;
use serde::Deserialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tower::Service;

use super::builtin::{settings_of, Builtin, WrapperContext};
use super::settings::{de, Key, Settings};
use super::{HandlerWrapper, Wrappers};
use crate::server::{RawReply, RawRequest};
use crate::streaming::RawStream;
use crate::Error;

const KEYS: &[Key] = &[
    Key {
        name: "limit",
        default: "100",
        about: "requests in flight at most, per endpoint (or per service with per=service); more are refused with 503",
    },
    Key {
        name: "per",
        default: "endpoint",
        about: "what the limit counts: each `endpoint` apart, or the whole `service`",
    },
    Key {
        name: "queue",
        default: "0",
        about: "requests that may wait for a place when the limit is reached (0: refuse at once)",
    },
    Key {
        name: "queue_timeout",
        default: "1s",
        about: "longest a queued request waits for a place before it is refused with 503",
    },
];

#[derive(Deserialize)]
struct ConcurrencySettings {
    #[serde(deserialize_with = "de::number")]
    limit: usize,
    per: Per,
    #[serde(deserialize_with = "de::number")]
    queue: usize,
    #[serde(deserialize_with = "de::duration")]
    queue_timeout: Duration,
}

/// What the limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Per {
    Endpoint,
    Service,
}

pub(super) const BUILTIN: Builtin = Builtin {
    name: "concurrency",
    about: "limit requests in flight per endpoint or service; more are shed with 503 (optionally queued)",
    keys: KEYS,
    always_on: false,
    build,
};

fn build(settings: &Settings, ctx: &WrapperContext) -> Result<Wrappers, Error> {
    let s: ConcurrencySettings = settings_of(settings, "concurrency", KEYS)?;
    if s.limit == 0 || s.limit > Semaphore::MAX_PERMITS {
        return Err(Error::bad_request(
            "micro.wrapper",
            format!(
                "wrapper concurrency: limit must be at least 1 (and at most {}), not {}",
                Semaphore::MAX_PERMITS,
                s.limit
            ),
        ));
    }
    let limiter = Arc::new(Limiter {
        id: ctx.service.as_str().into(),
        limit: s.limit,
        per: s.per,
        queue: s.queue,
        queue_timeout: s.queue_timeout,
        gates: RwLock::new(HashMap::new()),
    });
    Ok(Wrappers::new().handler(HandlerWrapper::new(
        "concurrency",
        tower::layer::layer_fn(move |inner| ConcurrencyLimit {
            inner,
            limiter: limiter.clone(),
        }),
    )))
}

/// The places of one endpoint (or of the service) and the requests waiting.
#[derive(Debug)]
struct Gate {
    places: Arc<Semaphore>,
    waiting: AtomicUsize,
}

/// A place in the queue; given back when dropped.
struct Waiting<'a>(&'a Gate);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What one `concurrency` wrapper shares across endpoints.
#[derive(Debug)]
struct Limiter {
    /// The `id` of the 503s: the service name.
    id: Arc<str>,
    limit: usize,
    per: Per,
    queue: usize,
    queue_timeout: Duration,
    gates: RwLock<HashMap<String, Arc<Gate>>>,
}

impl Limiter {
    fn gate(&self, endpoint: &str) -> Arc<Gate> {
        let key = match self.per {
            Per::Endpoint => endpoint,
            Per::Service => "",
        };
        let found = self
            .gates
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .cloned();
        if let Some(gate) = found {
            return gate;
        }
        self.gates
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key.to_string())
            .or_insert_with(|| {
                Arc::new(Gate {
                    places: Arc::new(Semaphore::new(self.limit)),
                    waiting: AtomicUsize::new(0),
                })
            })
            .clone()
    }

    /// Requests of `endpoint`'s gate in flight now.
    #[cfg(test)]
    fn in_flight(&self, endpoint: &str) -> usize {
        self.limit - self.gate(endpoint).places.available_permits()
    }

    fn shed(&self, endpoint: &str, queued: bool) -> Error {
        let what = match self.per {
            Per::Endpoint => endpoint.to_string(),
            Per::Service => format!("the service (calling {endpoint})"),
        };
        let queue = if queued {
            format!(", and no place freed within {:?}", self.queue_timeout)
        } else if self.queue > 0 {
            format!(" and {} waiting", self.queue)
        } else {
            String::new()
        };
        Error::service_unavailable(
            self.id.as_ref(),
            format!(
                "too busy: {what} has {} requests in flight, its limit{queue}; try again later or another node",
                self.limit
            ),
        )
    }

    /// A place for a request of `endpoint` due by `deadline`: at once, or after
    /// waiting in the queue; else the 503 that sheds it.
    async fn enter(
        &self,
        endpoint: &str,
        deadline: Option<Instant>,
    ) -> Result<OwnedSemaphorePermit, Error> {
        let gate = self.gate(endpoint);
        if let Ok(permit) = gate.places.clone().try_acquire_owned() {
            return Ok(permit);
        }
        if self.queue == 0 {
            return Err(self.shed(endpoint, false));
        }
        if gate.waiting.fetch_add(1, Ordering::AcqRel) >= self.queue {
            gate.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(self.shed(endpoint, false));
        }
        let _waiting = Waiting(&gate);
        let own = Instant::now() + self.queue_timeout;
        let until = deadline.map_or(own, |d| d.min(own));
        match tokio::time::timeout_at(until, gate.places.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            // The semaphore is never closed; treat it as full if it were.
            Ok(Err(_)) | Err(_) => Err(self.shed(endpoint, true)),
        }
    }
}

/// A streamed answer that holds its request's place until it ends or is dropped.
struct Holding {
    stream: RawStream,
    permit: Option<OwnedSemaphorePermit>,
}

impl Stream for Holding {
    type Item = Result<Bytes, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let next = this.stream.as_mut().poll_next(cx);
        if let Poll::Ready(None) = next {
            this.permit = None;
        }
        next
    }
}

/// The handler service of the `concurrency` wrapper.
#[derive(Clone)]
struct ConcurrencyLimit<S> {
    inner: S,
    limiter: Arc<Limiter>,
}

impl<S> Service<RawRequest> for ConcurrencyLimit<S>
where
    S: Service<RawRequest, Response = RawReply, Error = Error> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = RawReply;
    type Error = Error;
    type Future = BoxFuture<'static, Result<RawReply, Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: RawRequest) -> Self::Future {
        // The ready service goes with the request; a clone takes its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let limiter = self.limiter.clone();
        async move {
            let permit = limiter
                .enter(req.ctx.endpoint(), req.ctx.deadline())
                .await?;
            match inner.call(req).await? {
                RawReply::Stream(stream) => Ok(RawReply::Stream(Box::pin(Holding {
                    stream,
                    permit: Some(permit),
                }))),
                one => Ok(one),
            }
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Format;
    use crate::request::CallContext;
    use crate::server::RawBody;
    use crate::wrapper::HandlerService;
    use futures_util::StreamExt;
    use tokio::sync::oneshot;
    use tower::ServiceExt;

    fn request(endpoint: &str) -> RawRequest {
        RawRequest {
            ctx: CallContext::new(endpoint),
            format: Format::Json,
            body: RawBody::One(Bytes::new()),
        }
    }

    /// The answers the fake handler waits for, one per request, in order.
    type Gates = Arc<std::sync::Mutex<Vec<oneshot::Sender<Result<RawReply, Error>>>>>;

    /// A wrapped handler whose answers the test gives by hand: each request parks
    /// a sender in `gates`.
    fn wrapped(flags: &[&str]) -> (HandlerService, Arc<Limiter>, Gates) {
        let settings = Settings::from_flags(flags).unwrap();
        let s: ConcurrencySettings = settings_of(&settings, "concurrency", KEYS).unwrap();
        let limiter = Arc::new(Limiter {
            id: "svc".into(),
            limit: s.limit,
            per: s.per,
            queue: s.queue,
            queue_timeout: s.queue_timeout,
            gates: RwLock::new(HashMap::new()),
        });
        let gates: Gates = Arc::default();
        let inner = tower::service_fn({
            let gates = gates.clone();
            move |_req: RawRequest| {
                let (tx, rx) = oneshot::channel();
                gates.lock().unwrap().push(tx);
                async move {
                    rx.await
                        .unwrap_or_else(|_| Err(Error::internal_server_error("t", "gone")))
                }
            }
        });
        let service = tower::util::BoxCloneSyncService::new(ConcurrencyLimit {
            inner: tower::util::BoxCloneSyncService::new(inner),
            limiter: limiter.clone(),
        });
        (service, limiter, gates)
    }

    fn start(
        svc: &HandlerService,
        endpoint: &str,
    ) -> tokio::task::JoinHandle<Result<RawReply, Error>> {
        tokio::spawn(svc.clone().oneshot(request(endpoint)))
    }

    /// Lets spawned calls run until they park.
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    fn answer(gates: &Gates, reply: Result<RawReply, Error>) {
        let tx = gates.lock().unwrap().remove(0);
        let _ = tx.send(reply);
    }

    #[tokio::test(start_paused = true)]
    async fn one_over_the_limit_is_shed_and_places_come_back() {
        let (svc, limiter, gates) = wrapped(&["concurrency.limit=2"]);
        let a = start(&svc, "E.A");
        let b = start(&svc, "E.A");
        settle().await;
        assert_eq!(limiter.in_flight("E.A"), 2);
        let e = svc.clone().oneshot(request("E.A")).await.unwrap_err();
        assert_eq!(e.code(), 503);
        assert!(e.detail().contains("E.A has 2 requests in flight"), "{e}");
        assert_eq!(
            gates.lock().unwrap().len(),
            2,
            "the shed request never reached the handler"
        );
        // Another endpoint has its own places.
        let other = start(&svc, "E.B");
        settle().await;
        assert_eq!(limiter.in_flight("E.B"), 1);

        // A success and an error each give their place back.
        answer(&gates, Ok(RawReply::One(Bytes::from_static(b"x"))));
        a.await.unwrap().unwrap();
        assert_eq!(limiter.in_flight("E.A"), 1);
        answer(&gates, Err(Error::internal_server_error("t", "boom")));
        assert_eq!(b.await.unwrap().unwrap_err().code(), 500);
        assert_eq!(limiter.in_flight("E.A"), 0);
        answer(&gates, Ok(RawReply::One(Bytes::new())));
        other.await.unwrap().unwrap();
        assert_eq!(limiter.in_flight("E.B"), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_call_gives_its_place_back() {
        let (svc, limiter, _gates) = wrapped(&["concurrency.limit=1"]);
        let a = start(&svc, "E.A");
        settle().await;
        assert_eq!(limiter.in_flight("E.A"), 1);
        a.abort();
        assert!(a.await.unwrap_err().is_cancelled());
        assert_eq!(limiter.in_flight("E.A"), 0);
        let again = start(&svc, "E.A");
        settle().await;
        assert_eq!(limiter.in_flight("E.A"), 1);
        again.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_holds_its_place_until_it_ends_or_is_dropped() {
        let (svc, limiter, gates) = wrapped(&["concurrency.limit=1"]);
        let stream = || -> RawStream {
            futures_util::stream::iter([Ok(Bytes::from_static(b"1")), Ok(Bytes::from_static(b"2"))])
                .boxed()
        };

        // Read to the end: the place is free once the stream says it is over.
        let call = start(&svc, "E.S");
        settle().await;
        answer(&gates, Ok(RawReply::Stream(stream())));
        let Ok(RawReply::Stream(mut s)) = call.await.unwrap() else {
            panic!("expected a stream")
        };
        assert_eq!(
            limiter.in_flight("E.S"),
            1,
            "the head is out, the stream is not"
        );
        assert_eq!(
            svc.clone()
                .oneshot(request("E.S"))
                .await
                .unwrap_err()
                .code(),
            503
        );
        assert!(s.next().await.is_some());
        assert!(s.next().await.is_some());
        assert_eq!(limiter.in_flight("E.S"), 1);
        assert!(s.next().await.is_none());
        assert_eq!(limiter.in_flight("E.S"), 0);

        // Dropped half-way: the place is free as well.
        let call = start(&svc, "E.S");
        settle().await;
        answer(&gates, Ok(RawReply::Stream(stream())));
        let Ok(RawReply::Stream(mut s)) = call.await.unwrap() else {
            panic!("expected a stream")
        };
        assert!(s.next().await.is_some());
        assert_eq!(limiter.in_flight("E.S"), 1);
        drop(s);
        assert_eq!(limiter.in_flight("E.S"), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn per_service_counts_every_endpoint() {
        let (svc, limiter, gates) = wrapped(&["concurrency.limit=1", "concurrency.per=service"]);
        let a = start(&svc, "E.A");
        settle().await;
        let e = svc.clone().oneshot(request("E.B")).await.unwrap_err();
        assert_eq!(e.code(), 503);
        assert!(e.detail().contains("the service (calling E.B)"), "{e}");
        answer(&gates, Ok(RawReply::One(Bytes::new())));
        a.await.unwrap().unwrap();
        assert_eq!(limiter.in_flight("E.B"), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_queue_waits_for_a_place_until_its_timeout() {
        let (svc, limiter, gates) = wrapped(&[
            "concurrency.limit=1",
            "concurrency.queue=1",
            "concurrency.queue_timeout=2s",
        ]);
        let a = start(&svc, "E.A");
        settle().await;
        let queued = start(&svc, "E.A");
        settle().await;
        // The queue is full: a third is refused at once.
        let e = svc.clone().oneshot(request("E.A")).await.unwrap_err();
        assert!(e.detail().contains("and 1 waiting"), "{e}");
        // The first answers; the queued one takes its place.
        answer(&gates, Ok(RawReply::One(Bytes::new())));
        a.await.unwrap().unwrap();
        settle().await;
        assert_eq!(
            gates.lock().unwrap().len(),
            1,
            "the queued request reached the handler"
        );
        assert_eq!(limiter.in_flight("E.A"), 1);

        // One more waits, and gives up after the queue timeout.
        let late = start(&svc, "E.A");
        settle().await;
        tokio::time::advance(Duration::from_millis(2100)).await;
        let e = late.await.unwrap().unwrap_err();
        assert_eq!(e.code(), 503);
        assert!(e.detail().contains("no place freed within 2s"), "{e}");
        answer(&gates, Ok(RawReply::One(Bytes::new())));
        queued.await.unwrap().unwrap();
        assert_eq!(limiter.in_flight("E.A"), 0);
        assert_eq!(limiter.gate("E.A").waiting.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_zero_limit_is_a_400() {
        let s = Settings::from_flags(["concurrency.limit=0"]).unwrap();
        let e = build(&s, &WrapperContext::new("svc")).unwrap_err();
        assert_eq!(e.code(), 400);
        assert!(e.detail().contains("at least 1"), "{e}");
        let s = Settings::from_flags(["concurrency.per=node"]).unwrap();
        assert_eq!(
            build(&s, &WrapperContext::new("svc")).unwrap_err().code(),
            400
        );
    }
}
