//! `chaos`: injected latency and errors, by percentage and per endpoint, for
//! resilience testing.
//!
//! On the server side (the default) it wraps handlers: a share of requests
//! (`delay_percent`) waits `delay` before the handler runs, and a share
//! (`error_percent`) fails with `error_code` (503) and the detail
//! `chaos: injected error (error_percent=…)` instead of running it. With
//! `side=client` it wraps each attempt of the service's outgoing calls instead (an
//! injected 503 there is retried on another node, as a real one would be);
//! `side=both` does both. `endpoints` limits it to some endpoints (`Greeter.*`).
//!
//! An injected delay never outlasts the request: if it would pass the deadline,
//! chaos waits until the deadline and answers 408.
//!
//! The settings can change while the service runs: when the service's config
//! changes, the new settings (fed through [`WrapperContext::updates`]) apply from
//! the next request on, so chaos can be switched on and off without a restart.
//! Settings that do not parse are logged and ignored; the last good ones stay. The
//! wrapper must be named in `MICRO_WRAPPERS` for this (with `enabled=false` to
//! keep it idle until switched on).

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use futures_util::future::{BoxFuture, FutureExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::watch;
use tokio::time::Instant;
use tower::Service;

use super::builtin::{settings_of, Builtin, WrapperContext};
use super::settings::{de, Key, Settings};
use super::{CallWrapper, HandlerWrapper, Wrappers};
use crate::client::Attempt;
use crate::server::{RawReply, RawRequest};
use crate::Error;

const NAME: &str = "chaos";

const KEYS: &[Key] = &[
    Key {
        name: "enabled",
        default: "true",
        about: "inject faults (switch it off and on at runtime through the config file)",
    },
    Key {
        name: "side",
        default: "server",
        about: "where to inject: server (handlers), client (each attempt of outgoing calls) or both",
    },
    Key {
        name: "delay",
        default: "",
        about: "latency to add to the requests picked by delay_percent (default: none)",
    },
    Key {
        name: "delay_percent",
        default: "0",
        about: "percentage of requests (0-100) that are delayed",
    },
    Key {
        name: "error_percent",
        default: "0",
        about: "percentage of requests (0-100) that fail with error_code instead of running",
    },
    Key {
        name: "error_code",
        default: "503",
        about: "the HTTP-style code of injected errors (400-599)",
    },
    Key {
        name: "endpoints",
        default: "",
        about: "endpoints to inject faults into, with * as a wildcard (Greeter.*,Other.Call); default: all",
    },
    Key {
        name: "seed",
        default: "",
        about: "seed of the random choices, to repeat a run exactly (default: random)",
    },
];

/// Where faults are injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Side {
    Server,
    Client,
    Both,
}

impl Side {
    fn server(self) -> bool {
        matches!(self, Side::Server | Side::Both)
    }
    fn client(self) -> bool {
        matches!(self, Side::Client | Side::Both)
    }
}

/// The settings of `chaos`, checked.
#[derive(Debug, Clone, PartialEq, Deserialize)]
struct ChaosSettings {
    enabled: bool,
    side: Side,
    #[serde(default, deserialize_with = "de::opt_duration")]
    delay: Option<Duration>,
    #[serde(deserialize_with = "de::number")]
    delay_percent: f64,
    #[serde(deserialize_with = "de::number")]
    error_percent: f64,
    #[serde(deserialize_with = "de::number")]
    error_code: u16,
    #[serde(default, deserialize_with = "de::list")]
    endpoints: Vec<String>,
    #[serde(default, deserialize_with = "opt_seed")]
    seed: Option<u64>,
}

fn opt_seed<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        Value::String(s) if s.trim().is_empty() => Ok(None),
        other => de::number(other)
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

impl ChaosSettings {
    /// The `chaos` settings of `settings`, or a 400 naming the key that is wrong.
    fn parse(settings: &Settings) -> Result<ChaosSettings, Error> {
        let s: ChaosSettings = settings_of(settings, NAME, KEYS)?;
        let bad = |key: &str, why: String| {
            Error::bad_request("micro.wrapper", format!("wrapper chaos: {key} {why}"))
        };
        for (key, value) in [
            ("delay_percent", s.delay_percent),
            ("error_percent", s.error_percent),
        ] {
            if !(0.0..=100.0).contains(&value) {
                return Err(bad(key, format!("must be between 0 and 100, not {value}")));
            }
        }
        if !(400..=599).contains(&s.error_code) {
            return Err(bad(
                "error_code",
                format!(
                    "must be an HTTP error code between 400 and 599, not {}",
                    s.error_code
                ),
            ));
        }
        if let Some(empty) = s.endpoints.iter().find(|e| e.trim().is_empty()) {
            return Err(bad("endpoints", format!("has an empty name {empty:?}")));
        }
        Ok(s)
    }

    /// Whether requests to `endpoint` may get faults at all.
    fn applies_to(&self, endpoint: &str) -> bool {
        self.enabled
            && ((self.delay_percent > 0.0 && self.delay.is_some()) || self.error_percent > 0.0)
            && (self.endpoints.is_empty() || self.endpoints.iter().any(|p| glob(p, endpoint)))
    }
}

/// Whether `name` matches `pattern`, where `*` stands for any text (also none).
fn glob(pattern: &str, name: &str) -> bool {
    let pattern = pattern.trim();
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let mut parts: Vec<&str> = parts.collect();
    let Some(last) = parts.pop() else {
        // No `*`: the whole name.
        return rest.is_empty();
    };
    for part in parts {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// What chaos does to one request.
#[derive(Debug, Clone, PartialEq)]
struct Decision {
    delay: Option<Duration>,
    error: Option<Error>,
}

impl Decision {
    fn none() -> Self {
        Decision {
            delay: None,
            error: None,
        }
    }
    fn is_none(&self) -> bool {
        self.delay.is_none() && self.error.is_none()
    }
}

/// Whether one request to `endpoint` of `service` is delayed and whether it fails,
/// by the dice of `rng`: two throws when chaos applies to the endpoint, none
/// otherwise.
fn decide<R: Rng + ?Sized>(
    s: &ChaosSettings,
    service: &str,
    endpoint: &str,
    rng: &mut R,
) -> Decision {
    if !s.applies_to(endpoint) {
        return Decision::none();
    }
    let delayed = rng.random::<f64>() * 100.0 < s.delay_percent;
    let failed = rng.random::<f64>() * 100.0 < s.error_percent;
    Decision {
        delay: s.delay.filter(|_| delayed),
        error: failed.then(|| {
            Error::new(
                service,
                format!("chaos: injected error (error_percent={})", s.error_percent),
                s.error_code,
            )
        }),
    }
}

/// The settings in force, updated from the service's config as it changes; shared
/// by the handler and call wrappers of one service.
struct Live {
    current: ArcSwap<ChaosSettings>,
    updates: Option<Mutex<watch::Receiver<Settings>>>,
    /// The random numbers of a seeded run; `None`: the thread's generator.
    seeded: Mutex<Option<StdRng>>,
}

impl Live {
    fn new(settings: ChaosSettings, updates: Option<watch::Receiver<Settings>>) -> Self {
        let seeded = settings.seed.map(StdRng::seed_from_u64);
        Live {
            current: ArcSwap::from_pointee(settings),
            updates: updates.map(Mutex::new),
            seeded: Mutex::new(seeded),
        }
    }

    /// The settings in force: the last good ones, after taking in a change of the
    /// config if there is one. Cheap when nothing changed: an atomic version check.
    fn settings(&self) -> Arc<ChaosSettings> {
        if let Some(updates) = &self.updates {
            // Another request is taking in the change: use what is in force.
            if let Ok(mut rx) = updates.try_lock() {
                if rx.has_changed().unwrap_or(false) {
                    let new = rx.borrow_and_update().clone();
                    drop(rx);
                    self.apply(&new);
                }
            }
        }
        self.current.load_full()
    }

    fn apply(&self, settings: &Settings) {
        match ChaosSettings::parse(settings) {
            Ok(new) => {
                let old = self.current.load();
                if **old == new {
                    return;
                }
                tracing::info!(
                    enabled = new.enabled,
                    side = ?new.side,
                    delay = ?new.delay,
                    delay_percent = new.delay_percent,
                    error_percent = new.error_percent,
                    error_code = new.error_code,
                    endpoints = ?new.endpoints,
                    "chaos: new settings"
                );
                if old.seed != new.seed {
                    *self.seeded.lock().unwrap_or_else(|e| e.into_inner()) =
                        new.seed.map(StdRng::seed_from_u64);
                }
                self.current.store(Arc::new(new));
            }
            Err(e) => tracing::warn!(
                error = %e.detail(),
                "chaos: ignoring new settings that are not valid; the last good ones stay in force"
            ),
        }
    }

    /// What to do with one request to `endpoint`, when chaos acts on `side`.
    fn decide(&self, server: bool, service: &str, endpoint: &str) -> Decision {
        let s = self.settings();
        let on_side = if server {
            s.side.server()
        } else {
            s.side.client()
        };
        if !on_side {
            return Decision::none();
        }
        let mut seeded = self.seeded.lock().unwrap_or_else(|e| e.into_inner());
        match seeded.as_mut() {
            Some(rng) => decide(&s, service, endpoint, rng),
            None => {
                drop(seeded);
                decide(&s, service, endpoint, &mut rand::rng())
            }
        }
    }
}

pub(super) const BUILTIN: Builtin = Builtin {
    name: NAME,
    about: "inject latency and errors by percentage, per endpoint, switchable at runtime (resilience testing)",
    keys: KEYS,
    always_on: false,
    build,
};

fn build(settings: &Settings, ctx: &WrapperContext) -> Result<Wrappers, Error> {
    let initial = ChaosSettings::parse(settings)?;
    let live = Arc::new(Live::new(initial, ctx.updates.clone()));
    let handler_live = live.clone();
    Ok(Wrappers::new()
        .handler(HandlerWrapper::new(
            NAME,
            tower::layer::layer_fn(move |inner| Chaos {
                inner,
                live: handler_live.clone(),
            }),
        ))
        .call(CallWrapper::new(
            NAME,
            tower::layer::layer_fn(move |inner| Chaos {
                inner,
                live: live.clone(),
            }),
        )))
}

/// Delays or fails requests as the settings in force say.
#[derive(Clone)]
struct Chaos<S> {
    inner: S,
    live: Arc<Live>,
}

/// Runs `decision`, then `call` unless the decision is an error. A delay that
/// would pass `deadline` ends at the deadline with a 408.
async fn inject<F, T>(
    decision: Decision,
    deadline: Option<Instant>,
    id: String,
    call: F,
) -> Result<T, Error>
where
    F: std::future::Future<Output = Result<T, Error>>,
{
    if let Some(delay) = decision.delay {
        let until = Instant::now() + delay;
        match deadline {
            Some(deadline) if deadline < until => {
                tokio::time::sleep_until(deadline).await;
                return Err(Error::timeout(
                    id,
                    format!("chaos: injected delay of {delay:?} passed the deadline"),
                ));
            }
            _ => tokio::time::sleep_until(until).await,
        }
    }
    match decision.error {
        Some(error) => Err(error),
        None => call.await,
    }
}

impl<S> Service<RawRequest> for Chaos<S>
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
        let decision = self
            .live
            .decide(true, req.ctx.service(), req.ctx.endpoint());
        if decision.is_none() {
            return self.inner.call(req).boxed();
        }
        // The ready service goes into the future; a clone stays for the next call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let deadline = req.ctx.deadline();
        let id = req.ctx.service().to_string();
        inject(decision, deadline, id, async move { inner.call(req).await }).boxed()
    }
}

impl<S> Service<Attempt> for Chaos<S>
where
    S: Service<Attempt, Response = RawReply, Error = Error> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = RawReply;
    type Error = Error;
    type Future = BoxFuture<'static, Result<RawReply, Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, attempt: Attempt) -> Self::Future {
        let decision = self
            .live
            .decide(false, attempt.service(), attempt.endpoint());
        if decision.is_none() {
            return self.inner.call(attempt).boxed();
        }
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let deadline = Some(attempt.deadline());
        let id = attempt.service().to_string();
        inject(
            decision,
            deadline,
            id,
            async move { inner.call(attempt).await },
        )
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A generator whose every number is the same.
    struct Fixed(u64);

    impl rand::RngCore for Fixed {
        fn next_u32(&mut self) -> u32 {
            (self.0 >> 32) as u32
        }
        fn next_u64(&mut self) -> u64 {
            self.0
        }
        fn fill_bytes(&mut self, dst: &mut [u8]) {
            dst.fill(0);
        }
    }

    fn parse(flags: &[&str]) -> Result<ChaosSettings, Error> {
        ChaosSettings::parse(&Settings::from_flags(flags).unwrap())
    }

    #[test]
    fn defaults_are_on_and_harmless() {
        let s = parse(&[]).unwrap();
        assert!(s.enabled);
        assert_eq!(s.side, Side::Server);
        assert_eq!(
            (s.delay, s.delay_percent, s.error_percent),
            (None, 0.0, 0.0)
        );
        assert_eq!(s.error_code, 503);
        assert!(s.endpoints.is_empty() && s.seed.is_none());
        assert!(!s.applies_to("Greeter.Hello"));
        let mut rng = StdRng::seed_from_u64(1);
        assert!(decide(&s, "g", "Greeter.Hello", &mut rng).is_none());
    }

    #[test]
    fn settings_parse_and_bad_ones_name_the_key() {
        let s = parse(&[
            "chaos.delay=250ms",
            "chaos.delay_percent=12.5",
            "chaos.error_percent=\"40\"",
            "chaos.error_code=429",
            "chaos.endpoints=Greeter.*, Other.Call",
            "chaos.side=both",
            "chaos.seed=7",
        ])
        .unwrap();
        assert_eq!(s.delay, Some(Duration::from_millis(250)));
        assert_eq!((s.delay_percent, s.error_percent), (12.5, 40.0));
        assert_eq!(s.error_code, 429);
        assert_eq!(s.endpoints, ["Greeter.*", "Other.Call"]);
        assert_eq!((s.side, s.seed), (Side::Both, Some(7)));
        let s = parse(&["chaos.endpoints=[\"A.*\"]", "chaos.seed=\"\""]).unwrap();
        assert_eq!((s.endpoints, s.seed), (vec!["A.*".to_string()], None));

        for (flag, says) in [
            (
                "chaos.error_percent=101",
                "error_percent must be between 0 and 100",
            ),
            (
                "chaos.delay_percent=-1",
                "delay_percent must be between 0 and 100",
            ),
            (
                "chaos.error_code=200",
                "error_code must be an HTTP error code",
            ),
            ("chaos.delay=soon", "wrapper chaos:"),
            ("chaos.side=middle", "unknown variant"),
            ("chaos.enabled=maybe", "wrapper chaos:"),
            ("chaos.percent=5", "has no setting \"percent\""),
        ] {
            let e = parse(&[flag]).unwrap_err();
            assert_eq!(e.code(), 400, "{flag}");
            assert!(e.detail().contains(says), "{flag}: {e}");
        }
    }

    #[test]
    fn globs_match_endpoints() {
        for (pattern, name, matches) in [
            ("Greeter.*", "Greeter.Hello", true),
            ("Greeter.*", "Greeter.", true),
            ("Greeter.*", "Greeting.Hello", false),
            ("*.Hello", "Greeter.Hello", true),
            ("*.Hello", "Greeter.HelloAgain", false),
            ("Greeter.Hello", "Greeter.Hello", true),
            ("Greeter.Hello", "Greeter.Hello2", false),
            ("*", "anything", true),
            ("G*r*.H*o", "Greeter.Hello", true),
            ("G*r*.H*o", "Greeter.Hell", false),
            ("a*a", "a", false),
            ("a*a", "aa", true),
        ] {
            assert_eq!(glob(pattern, name), matches, "{pattern} ~ {name}");
        }
    }

    fn with(flags: &[&str]) -> ChaosSettings {
        parse(flags).unwrap()
    }

    #[test]
    fn zero_percent_never_and_hundred_percent_always() {
        let mut rng = StdRng::seed_from_u64(42);
        let never = with(&[
            "chaos.error_percent=0",
            "chaos.delay_percent=0",
            "chaos.delay=1s",
        ]);
        let always = with(&[
            "chaos.error_percent=100",
            "chaos.delay_percent=100",
            "chaos.delay=1s",
        ]);
        for _ in 0..10_000 {
            assert!(decide(&never, "s", "E.M", &mut rng).is_none());
            let d = decide(&always, "s", "E.M", &mut rng);
            assert_eq!(d.delay, Some(Duration::from_secs(1)));
            let e = d.error.unwrap();
            assert_eq!((e.code(), e.id()), (503, "s"));
            assert_eq!(e.detail(), "chaos: injected error (error_percent=100)");
        }
    }

    #[test]
    fn fifty_percent_with_a_seeded_rng_is_exact_and_about_half() {
        let s = with(&["chaos.error_percent=50"]);
        let count = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (0..1000)
                .filter(|_| decide(&s, "s", "E.M", &mut rng).error.is_some())
                .count()
        };
        let first = count(3);
        assert_eq!(first, count(3), "the same seed, the same run");
        assert!((400..=600).contains(&first), "{first}");

        // A stubbed generator: every throw lands on the same number.
        assert!(decide(&s, "s", "E.M", &mut Fixed(0)).error.is_some());
        assert!(decide(&s, "s", "E.M", &mut Fixed(u64::MAX / 2 - 4096))
            .error
            .is_some());
        assert!(decide(&s, "s", "E.M", &mut Fixed(u64::MAX / 2 + 4096))
            .error
            .is_none());
        assert!(decide(&s, "s", "E.M", &mut Fixed(u64::MAX)).error.is_none());
    }

    #[test]
    fn only_the_listed_endpoints_and_only_when_enabled() {
        let mut rng = StdRng::seed_from_u64(0);
        let s = with(&[
            "chaos.error_percent=100",
            "chaos.endpoints=Greeter.*,Other.Call",
        ]);
        assert!(decide(&s, "s", "Greeter.Hello", &mut rng).error.is_some());
        assert!(decide(&s, "s", "Other.Call", &mut rng).error.is_some());
        assert!(decide(&s, "s", "Other.Stream", &mut rng).is_none());
        let off = with(&["chaos.error_percent=100", "chaos.enabled=false"]);
        assert!(decide(&off, "s", "Greeter.Hello", &mut rng).is_none());
        // A delay percentage without a delay does nothing.
        let s = with(&["chaos.delay_percent=100"]);
        assert!(decide(&s, "s", "Greeter.Hello", &mut rng).is_none());
    }

    #[test]
    fn live_settings_follow_updates_and_keep_the_last_good_ones() {
        let (tx, rx) = watch::channel(Settings::default());
        let live = Live::new(with(&[]), Some(rx));
        let fails = |live: &Live| live.decide(true, "s", "E.M").error.is_some();
        assert!(!fails(&live));
        tx.send(Settings::from_flags(["chaos.error_percent=100"]).unwrap())
            .unwrap();
        assert!(fails(&live));
        // Not valid: ignored.
        tx.send(Settings::from_flags(["chaos.error_percent=500"]).unwrap())
            .unwrap();
        assert!(fails(&live));
        assert_eq!(live.settings().error_percent, 100.0);
        // Client side only: the server side is left alone.
        tx.send(Settings::from_flags(["chaos.error_percent=100", "chaos.side=client"]).unwrap())
            .unwrap();
        assert!(!fails(&live));
        assert!(live.decide(false, "s", "E.M").error.is_some());
        tx.send(Settings::from_flags(["chaos.enabled=false"]).unwrap())
            .unwrap();
        assert!(!fails(&live));
        // The sender gone: the last settings stay.
        drop(tx);
        assert!(!live.settings().enabled);
    }

    #[test]
    fn a_seed_in_an_update_restarts_the_sequence() {
        let (tx, rx) = watch::channel(Settings::default());
        let flags = ["chaos.error_percent=50", "chaos.seed=9"];
        let live = Live::new(with(&flags), Some(rx));
        let run = |live: &Live| -> Vec<bool> {
            (0..64)
                .map(|_| live.decide(true, "s", "E.M").error.is_some())
                .collect()
        };
        let first = run(&live);
        tx.send(Settings::from_flags(["chaos.error_percent=50", "chaos.seed=10"]).unwrap())
            .unwrap();
        let other = run(&live);
        tx.send(Settings::from_flags(flags).unwrap()).unwrap();
        assert_eq!(run(&live), first);
        assert_ne!(other, first);
    }

    #[tokio::test(start_paused = true)]
    async fn a_delay_never_outlasts_the_deadline() {
        let decision = Decision {
            delay: Some(Duration::from_secs(2)),
            error: None,
        };
        let start = Instant::now();
        let ok = inject(decision.clone(), None, "s".into(), async { Ok(1) }).await;
        assert_eq!(ok.unwrap(), 1);
        assert_eq!(start.elapsed(), Duration::from_secs(2));

        let start = Instant::now();
        let deadline = start + Duration::from_millis(500);
        let called = std::sync::atomic::AtomicBool::new(false);
        let e = inject(decision, Some(deadline), "s".into(), async {
            called.store(true, std::sync::atomic::Ordering::SeqCst);
            Ok(1)
        })
        .await
        .unwrap_err();
        assert_eq!(e.code(), 408);
        assert!(e.detail().starts_with("chaos: injected delay"), "{e}");
        assert_eq!(start.elapsed(), Duration::from_millis(500));
        assert!(!called.load(std::sync::atomic::Ordering::SeqCst));
    }
}
