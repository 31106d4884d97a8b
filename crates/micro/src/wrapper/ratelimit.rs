//! `ratelimit`: a token bucket per endpoint (or per endpoint and caller) at the
//! handler point; a request over the limit is refused at once with a 429 whose
//! detail says the limit and when to retry.
//!
//! Each bucket holds up to `burst` tokens and refills at `rate` tokens a second; a
//! request takes one. Buckets are keyed by endpoint (`by=endpoint`, the default)
//! or by endpoint and caller (`by=caller`: the `Micro-From-Service` header, else the
//! peer's IP address). `endpoints` gives some endpoints their own rate, as a table in
//! the config file (`{ "Greeter.Hello": 10 }`, or `{ "Greeter.Hello": { rate: 10,
//! burst: 20 } }`) or as text (`Greeter.Hello=10,Greeter.Stream=5:10`, `rate:burst`).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::{self, Either, Ready};
use serde::Deserialize;
use serde_json::Value;
use tokio::time::Instant;
use tower::Service;

use super::builtin::{settings_of, Builtin, WrapperContext};
use super::settings::{de, Key, Settings};
use super::{HandlerWrapper, Wrappers};
use crate::request::CallContext;
use crate::server::{RawReply, RawRequest};
use crate::Error;

const KEYS: &[Key] = &[
    Key {
        name: "rate",
        default: "100",
        about: "requests per second each endpoint takes (per caller with by=caller)",
    },
    Key {
        name: "burst",
        default: "",
        about: "requests taken at once after a quiet spell (default: the rate)",
    },
    Key {
        name: "endpoints",
        default: "",
        about: "rates of single endpoints, e.g. Greeter.Hello=10,Greeter.Stream=5:20 (rate:burst)",
    },
    Key {
        name: "by",
        default: "endpoint",
        about: "one bucket per `endpoint`, or per endpoint and `caller` (Micro-From-Service, else peer IP)",
    },
];

/// More buckets than this and the full ones (as good as new) are dropped.
const MAX_BUCKETS: usize = 10_000;

/// Token counts this close to a whole token count as one (float rounding).
const EPSILON: f64 = 1e-9;

#[derive(Deserialize)]
struct RateLimitSettings {
    #[serde(deserialize_with = "de::number")]
    rate: f64,
    #[serde(default, deserialize_with = "opt_number")]
    burst: Option<f64>,
    #[serde(default, deserialize_with = "overrides")]
    endpoints: Vec<(String, Limit)>,
    by: By,
}

fn opt_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        Value::String(s) if s.trim().is_empty() => Ok(None),
        other => de::number(other)
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

/// One endpoint's limit: `10`, `"10"`, `"10:20"` or `{ rate: 10, burst: 20 }`.
fn limit_of(endpoint: &str, value: &Value) -> Result<Limit, String> {
    let bad = || {
        format!("endpoints: {endpoint}: expected a rate (10), rate:burst (10:20) or {{rate, burst}}, found {value}")
    };
    let number = |v: &Value| -> Result<f64, String> {
        match v {
            Value::Number(n) => n.as_f64().ok_or_else(bad),
            Value::String(s) => s.trim().parse().map_err(|_| bad()),
            _ => Err(bad()),
        }
    };
    let (rate, burst) = match value {
        Value::Number(_) => (number(value)?, None),
        Value::String(s) => match s.split_once(':') {
            Some((rate, burst)) => (
                number(&Value::from(rate))?,
                Some(number(&Value::from(burst))?),
            ),
            None => (number(value)?, None),
        },
        Value::Object(o) => {
            let unknown: Vec<_> = o.keys().filter(|k| *k != "rate" && *k != "burst").collect();
            if !unknown.is_empty() {
                return Err(bad());
            }
            let rate = o.get("rate").ok_or_else(bad).and_then(number)?;
            let burst = o.get("burst").map(number).transpose()?;
            (rate, burst)
        }
        _ => return Err(bad()),
    };
    Limit::new(rate, burst).map_err(|e| format!("endpoints: {endpoint}: {e}"))
}

fn overrides<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<(String, Limit)>, D::Error> {
    let pairs: Vec<(String, Value)> = match Value::deserialize(d)? {
        Value::Null => Vec::new(),
        Value::String(text) => text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|pair| match pair.split_once('=') {
                Some((k, v)) => Ok((k.trim().to_string(), Value::from(v.trim()))),
                None => Err(serde::de::Error::custom(format!(
                    "endpoints: expected Endpoint=rate, e.g. Greeter.Hello=10, found {pair:?}"
                ))),
            })
            .collect::<Result<_, _>>()?,
        Value::Object(table) => table.into_iter().collect(),
        other => {
            return Err(serde::de::Error::custom(format!(
                "endpoints: expected a table of endpoint rates or Endpoint=rate,..., found {other}"
            )))
        }
    };
    pairs
        .into_iter()
        .map(|(endpoint, value)| {
            limit_of(&endpoint, &value)
                .map(|limit| (endpoint, limit))
                .map_err(serde::de::Error::custom)
        })
        .collect()
}

/// How buckets are keyed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum By {
    Endpoint,
    Caller,
}

/// A rate (per second) and a burst, both checked. Public so that the API
/// gateway's per-route limits are the same token buckets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limit {
    rate: f64,
    burst: f64,
}

impl Limit {
    /// `rate` requests per second on average, `burst` (default: the rate, at
    /// least 1) at once; an error says which is out of range.
    pub fn new(rate: f64, burst: Option<f64>) -> Result<Limit, String> {
        if !(rate.is_finite() && rate > 0.0) {
            return Err(format!(
                "the rate must be a number of requests per second above 0, not {rate}"
            ));
        }
        let burst = burst.unwrap_or(rate.max(1.0));
        if !(burst.is_finite() && burst >= 1.0) {
            return Err(format!("the burst must be at least 1, not {burst}"));
        }
        Ok(Limit { rate, burst })
    }
}

pub(super) const BUILTIN: Builtin = Builtin {
    name: "ratelimit",
    about: "limit requests per second of each endpoint (token bucket); over the limit is a 429",
    keys: KEYS,
    always_on: false,
    build,
};

fn build(settings: &Settings, ctx: &WrapperContext) -> Result<Wrappers, Error> {
    let s: RateLimitSettings = settings_of(settings, "ratelimit", KEYS)?;
    let invalid =
        |e: String| Error::bad_request("micro.wrapper", format!("wrapper ratelimit: {e}"));
    let default = Limit::new(s.rate, s.burst).map_err(invalid)?;
    let limiter = Arc::new(Limiter {
        id: ctx.service.as_str().into(),
        default,
        overrides: s.endpoints.into_iter().collect(),
        by: s.by,
        buckets: RwLock::new(HashMap::new()),
    });
    Ok(Wrappers::new().handler(HandlerWrapper::new(
        "ratelimit",
        tower::layer::layer_fn(move |inner| RateLimit {
            inner,
            limiter: limiter.clone(),
        }),
    )))
}

/// A token bucket.
#[derive(Debug)]
pub struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    /// A bucket holding a whole burst at `now`.
    pub fn full(limit: &Limit, now: Instant) -> Bucket {
        Bucket {
            tokens: limit.burst,
            last: now,
        }
    }

    fn refill(&mut self, limit: &Limit, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * limit.rate).min(limit.burst);
        self.last = now;
    }

    /// Takes a token, or says how long until there is one.
    pub fn take(&mut self, limit: &Limit, now: Instant) -> Result<(), Duration> {
        self.refill(limit, now);
        if self.tokens >= 1.0 - EPSILON {
            self.tokens = (self.tokens - 1.0).max(0.0);
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / limit.rate))
        }
    }
}

/// The buckets and limits one `ratelimit` wrapper shares across endpoints.
#[derive(Debug)]
struct Limiter {
    /// The `id` of the 429s: the service name.
    id: Arc<str>,
    default: Limit,
    overrides: HashMap<String, Limit>,
    by: By,
    buckets: RwLock<HashMap<String, Arc<Mutex<Bucket>>>>,
}

impl Limiter {
    fn limit(&self, endpoint: &str) -> &Limit {
        self.overrides.get(endpoint).unwrap_or(&self.default)
    }

    /// Who is calling, for `by=caller`.
    fn caller(ctx: &CallContext) -> String {
        match (ctx.from_service(), ctx.remote_addr()) {
            (Some(service), _) if !service.is_empty() => service.to_string(),
            (_, Some(addr)) => addr.ip().to_string(),
            _ => "unknown".to_string(),
        }
    }

    fn bucket(&self, key: &str, limit: &Limit, now: Instant) -> Arc<Mutex<Bucket>> {
        let found = self
            .buckets
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .cloned();
        if let Some(bucket) = found {
            return bucket;
        }
        let mut buckets = self.buckets.write().unwrap_or_else(PoisonError::into_inner);
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(key) {
            // A full bucket is as good as a new one: forget those.
            buckets.retain(|key, bucket| {
                let limit = self.limit(key.split('\n').next().unwrap_or(key));
                let mut b = bucket.lock().unwrap_or_else(PoisonError::into_inner);
                b.refill(limit, now);
                b.tokens < limit.burst - EPSILON
            });
        }
        buckets
            .entry(key.to_string())
            .or_insert_with(|| Arc::new(Mutex::new(Bucket::full(limit, now))))
            .clone()
    }

    /// Takes a token for this request, or the 429 that refuses it.
    fn check(&self, ctx: &CallContext) -> Result<(), Error> {
        let endpoint = ctx.endpoint();
        let limit = self.limit(endpoint);
        let (key, caller) = match self.by {
            By::Endpoint => (Cow::Borrowed(endpoint), None),
            By::Caller => {
                let caller = Self::caller(ctx);
                (Cow::Owned(format!("{endpoint}\n{caller}")), Some(caller))
            }
        };
        let now = Instant::now();
        let bucket = self.bucket(&key, limit, now);
        let taken = bucket
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take(limit, now);
        taken.map_err(|wait| {
            let who = caller.map(|c| format!(" from {c}")).unwrap_or_default();
            let retry_after = wait.as_secs_f64().ceil().max(1.0);
            Error::too_many_requests(
                self.id.as_ref(),
                format!(
                    "rate limit of {endpoint}{who} exceeded: {} requests per second (burst {}); \
                     retry after {}ms (retry-after: {retry_after})",
                    limit.rate,
                    limit.burst,
                    wait.as_millis().max(1),
                ),
            )
        })
    }
}

/// The handler service of the `ratelimit` wrapper.
#[derive(Clone)]
struct RateLimit<S> {
    inner: S,
    limiter: Arc<Limiter>,
}

impl<S> Service<RawRequest> for RateLimit<S>
where
    S: Service<RawRequest, Response = RawReply, Error = Error>,
{
    type Response = RawReply;
    type Error = Error;
    type Future = Either<S::Future, Ready<Result<RawReply, Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: RawRequest) -> Self::Future {
        match self.limiter.check(&req.ctx) {
            Ok(()) => Either::Left(self.inner.call(req)),
            Err(e) => Either::Right(future::ready(Err(e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Format;
    use crate::server::RawBody;
    use crate::wrapper::HandlerService;
    use bytes::Bytes;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tower::ServiceExt;

    fn request(endpoint: &str, from: Option<&str>) -> RawRequest {
        let mut ctx = CallContext::new(endpoint);
        if let Some(from) = from {
            ctx.metadata_mut().insert("micro-from-service", from);
        }
        RawRequest {
            ctx,
            format: Format::Json,
            body: RawBody::One(Bytes::new()),
        }
    }

    /// The wrapped service of `flags`, and how many requests reached the handler.
    fn wrapped(flags: &[&str]) -> (HandlerService, Arc<AtomicUsize>) {
        let settings = Settings::from_flags(flags).unwrap();
        let wrappers = build(&settings, &WrapperContext::new("svc")).unwrap();
        let seen = Arc::new(AtomicUsize::new(0));
        let inner = tower::service_fn({
            let seen = seen.clone();
            move |_req: RawRequest| {
                seen.fetch_add(1, Ordering::SeqCst);
                async { Ok::<_, Error>(RawReply::One(Bytes::from_static(b"ok"))) }
            }
        });
        let service = crate::wrapper::layer::stack(&wrappers.handler, inner).unwrap();
        (service, seen)
    }

    async fn call(
        service: &HandlerService,
        endpoint: &str,
        from: Option<&str>,
    ) -> Result<(), Error> {
        service
            .clone()
            .oneshot(request(endpoint, from))
            .await
            .map(|_| ())
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_passes_then_429_until_the_bucket_refills() {
        let (svc, seen) = wrapped(&["ratelimit.rate=2", "ratelimit.burst=3"]);
        for _ in 0..3 {
            call(&svc, "Greeter.Hello", None).await.unwrap();
        }
        let e = call(&svc, "Greeter.Hello", None).await.unwrap_err();
        assert_eq!(e.code(), 429);
        assert_eq!(e.id(), "svc");
        assert!(
            e.detail().contains("Greeter.Hello")
                && e.detail().contains("2 requests per second (burst 3)")
                && e.detail().contains("retry after 500ms")
                && e.detail().contains("retry-after: 1"),
            "{e}"
        );
        assert_eq!(
            seen.load(Ordering::SeqCst),
            3,
            "the refused call never reached the handler"
        );

        // Half a second later, one token is back (rate 2/s): one call passes.
        tokio::time::advance(Duration::from_millis(500)).await;
        call(&svc, "Greeter.Hello", None).await.unwrap();
        assert_eq!(
            call(&svc, "Greeter.Hello", None).await.unwrap_err().code(),
            429
        );

        // A long quiet spell refills to the burst, never beyond.
        tokio::time::advance(Duration::from_secs(60)).await;
        for _ in 0..3 {
            call(&svc, "Greeter.Hello", None).await.unwrap();
        }
        assert_eq!(
            call(&svc, "Greeter.Hello", None).await.unwrap_err().code(),
            429
        );
        assert_eq!(seen.load(Ordering::SeqCst), 7);
    }

    #[tokio::test(start_paused = true)]
    async fn endpoints_have_their_own_buckets_and_overrides() {
        let (svc, _) = wrapped(&["ratelimit.rate=1", "ratelimit.endpoints=Greeter.Stream=3:5"]);
        call(&svc, "Greeter.Hello", None).await.unwrap();
        assert_eq!(
            call(&svc, "Greeter.Hello", None).await.unwrap_err().code(),
            429
        );
        // Another endpoint's bucket is untouched, and has its own rate and burst.
        for _ in 0..5 {
            call(&svc, "Greeter.Stream", None).await.unwrap();
        }
        let e = call(&svc, "Greeter.Stream", None).await.unwrap_err();
        assert!(
            e.detail().contains("3 requests per second (burst 5)"),
            "{e}"
        );
        assert!(call(&svc, "Other.Method", None).await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn by_caller_keys_buckets_by_the_calling_service() {
        let (svc, _) = wrapped(&["ratelimit.rate=1", "ratelimit.by=caller"]);
        call(&svc, "Greeter.Hello", Some("a")).await.unwrap();
        let e = call(&svc, "Greeter.Hello", Some("a")).await.unwrap_err();
        assert!(e.detail().contains("Greeter.Hello from a"), "{e}");
        call(&svc, "Greeter.Hello", Some("b")).await.unwrap();
        // Without a name or a peer address, callers share one bucket.
        call(&svc, "Greeter.Hello", None).await.unwrap();
        assert_eq!(
            call(&svc, "Greeter.Hello", None).await.unwrap_err().code(),
            429
        );
    }

    #[test]
    fn overrides_read_from_a_file_table_and_bad_settings_are_400s() {
        let file = Settings::from_file_table(&serde_json::json!({"ratelimit": {
            "rate": 50,
            "endpoints": {"Greeter.Hello": 10, "Greeter.Stream": {"rate": 1, "burst": 4}, "X.Y": "2:3"}
        }}))
        .unwrap();
        let s: RateLimitSettings = settings_of(&file, "ratelimit", KEYS).unwrap();
        let map: HashMap<_, _> = s.endpoints.into_iter().collect();
        assert_eq!(
            map["Greeter.Hello"],
            Limit {
                rate: 10.0,
                burst: 10.0
            }
        );
        assert_eq!(
            map["Greeter.Stream"],
            Limit {
                rate: 1.0,
                burst: 4.0
            }
        );
        assert_eq!(
            map["X.Y"],
            Limit {
                rate: 2.0,
                burst: 3.0
            }
        );
        assert_eq!(s.burst, None);

        // A fractional rate still allows one request at a time.
        assert_eq!(
            Limit::new(0.5, None).unwrap(),
            Limit {
                rate: 0.5,
                burst: 1.0
            }
        );

        let ctx = WrapperContext::new("svc");
        for (flag, says) in [
            ("ratelimit.rate=0", "above 0"),
            ("ratelimit.rate=fast", "wrapper ratelimit"),
            ("ratelimit.burst=0.5", "at least 1"),
            ("ratelimit.by=planet", "unknown variant"),
            ("ratelimit.endpoints=Greeter.Hello", "Endpoint=rate"),
            ("ratelimit.endpoints=Greeter.Hello=lots", "Greeter.Hello"),
        ] {
            let e = build(&Settings::from_flags([flag]).unwrap(), &ctx).unwrap_err();
            assert_eq!(e.code(), 400, "{flag}");
            assert!(e.detail().contains(says), "{flag}: {e}");
        }
    }
}
