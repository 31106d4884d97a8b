//! The wrapper core end to end: custom wrappers at the four points (handler, call
//! attempt, subscriber, publish) see what they should and compose in order; their
//! errors reach callers in the shared shape; internal endpoints are not wrapped;
//! the always-on `timeout` and `retry` built-ins; and wrapper options that are
//! wrong fail the build clearly.

// Test helpers outside #[test] functions unwrap too: a panic is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use micro::broker::{Delivery, Event, MemoryBroker, Publication, Publisher};
use micro::client::{Attempt, CallOptions};
use micro::proto::debug::v1::HealthResponse;
use micro::registry::{MemoryRegistry, Registry};
use micro::server::{RawReply, RawRequest};
use micro::tower::ServiceExt;
use micro::wrapper::{BoxService, HandlerWrapper, Wrapper, Wrappers};
use micro::{Client, Error, Service, ServiceBuilder};
use tokio::time::Instant;

use common::echo::{echo_client::EchoClient, echo_server::EchoServer, EchoRequest};
use common::{http1, start_echo, start_echo_with, EchoImpl, TestServer};

type Log = Arc<Mutex<Vec<String>>>;

fn log() -> Log {
    Arc::default()
}

fn entries(log: &Log) -> Vec<String> {
    log.lock().unwrap().clone()
}

fn req(message: &str) -> EchoRequest {
    EchoRequest {
        message: message.into(),
        ..Default::default()
    }
}

/// Seconds left until `deadline`, rounded up.
fn secs_left(deadline: Instant) -> u64 {
    deadline
        .saturating_duration_since(Instant::now())
        .as_secs_f64()
        .ceil() as u64
}

fn outcome<T>(result: &Result<T, Error>) -> String {
    match result {
        Ok(_) => "ok".into(),
        Err(e) => format!("err {}", e.code()),
    }
}

/// A wrapper that logs `name> <what it sees>` on the way in and `<name <outcome>`
/// on the way out.
fn recorder<Req, Rsp>(name: &'static str, log: &Log, see: fn(&Req) -> String) -> Wrapper<Req, Rsp>
where
    Req: Send + 'static,
    Rsp: Send + 'static,
{
    let log = log.clone();
    Wrapper::new(
        name,
        micro::tower::layer::layer_fn(move |inner: BoxService<Req, Rsp>| {
            let log = log.clone();
            micro::tower::service_fn(move |req: Req| {
                let inner = inner.clone();
                let log = log.clone();
                async move {
                    let seen = see(&req);
                    log.lock()
                        .unwrap()
                        .push(format!("{name}> {seen}").trim().to_string());
                    let result = inner.oneshot(req).await;
                    log.lock()
                        .unwrap()
                        .push(format!("<{name} {}", outcome(&result)));
                    result
                }
            })
        }),
    )
}

fn nothing<T>(_: &T) -> String {
    String::new()
}

/// A wrapper that answers every request with `error` instead of calling inside.
fn refusing<Req, Rsp>(error: Error) -> Wrapper<Req, Rsp>
where
    Req: Send + 'static,
    Rsp: Send + 'static,
{
    Wrapper::new(
        "refuse",
        micro::tower::layer::layer_fn(move |_inner: BoxService<Req, Rsp>| {
            let error = error.clone();
            micro::tower::service_fn(move |_req: Req| std::future::ready(Err(error.clone())))
        }),
    )
}

fn see_request(r: &RawRequest) -> String {
    format!(
        "service={} endpoint={} x-user={} deadline={} remote={}",
        r.ctx.service(),
        r.ctx.endpoint(),
        r.ctx.metadata().get("x-user").unwrap_or("-"),
        r.ctx
            .deadline()
            .map_or("none".into(), |d| secs_left(d).to_string()),
        r.ctx
            .remote_addr()
            .map_or("none", |a| if a.ip().is_loopback() {
                "loopback"
            } else {
                "other"
            }),
    )
}

fn see_attempt(a: &Attempt) -> String {
    format!(
        "service={} endpoint={} node={} address={} number={} x-user={} deadline={}",
        a.service(),
        a.endpoint(),
        a.node().id,
        a.node().address,
        a.number(),
        a.metadata().get("x-user").unwrap_or("-"),
        secs_left(a.deadline()),
    )
}

fn see_delivery(d: &Delivery) -> String {
    format!(
        "topic={} from={} id={}",
        d.topic,
        d.message
            .headers
            .get("micro-from-service")
            .map_or("-", String::as_str),
        d.message.id().is_some(),
    )
}

fn see_publication(p: &Publication) -> String {
    format!(
        "topic={} from={} type={}",
        p.topic,
        p.message
            .headers
            .get("micro-from-service")
            .map_or("-", String::as_str),
        p.message
            .headers
            .get("content-type")
            .map_or("-", String::as_str),
    )
}

fn client_for(server: &TestServer) -> EchoClient {
    EchoClient::new("echo", Client::default())
        .with_options(CallOptions::default().address(server.address.clone()))
}

/// A service named `echo` with memory registry and broker, options from `flags`.
fn service(flags: &[&str]) -> ServiceBuilder {
    let mut args = vec!["echo"];
    args.extend_from_slice(flags);
    Service::builder()
        .name("echo")
        .registry(Arc::new(MemoryRegistry::new()))
        .broker(Arc::new(MemoryBroker::new()))
        .args(args)
}

#[tokio::test]
async fn handler_wrappers_see_the_call_and_its_outcome() {
    let log = log();
    let server = start_echo_with("a", |s| s.wrap(recorder("rec", &log, see_request))).await;
    let opts = CallOptions::default()
        .address(server.address.clone())
        .metadata("x-user", "alice")
        .timeout(Duration::from_secs(3));
    let echo = EchoClient::new("echo", Client::default());
    echo.unary_with(req("hi"), &opts).await.unwrap();
    let err = echo
        .unary_with(
            EchoRequest {
                fail_code: 409,
                ..req("no")
            },
            &opts,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), 409);
    let (status, _) = http1(
        &server.address,
        "POST",
        "/micro.test.v1.Echo/Unary",
        &[("Content-Type", "application/json")],
        b"{}",
    )
    .await;
    assert_eq!(status, 200);
    let seen = "rec> service=echo endpoint=Echo.Unary x-user=alice deadline=3 remote=loopback";
    assert_eq!(
        entries(&log),
        [
            seen,
            "<rec ok",
            seen,
            "<rec err 409",
            "rec> service=echo endpoint=Echo.Unary x-user=- deadline=none remote=loopback",
            "<rec ok",
        ]
    );
    server.stop().await;
}

#[tokio::test]
async fn call_wrappers_see_each_attempt_and_can_add_metadata() {
    let good = start_echo("good").await;
    let dead = TestServer::dead_address().await;
    let log = log();
    let stamp = micro::wrapper::CallWrapper::new(
        "stamp",
        micro::tower::layer::layer_fn(|inner| {
            micro::tower::util::MapRequest::new(inner, |mut attempt: Attempt| {
                attempt.metadata_mut().insert("x-added", "by-wrapper");
                attempt
            })
        }),
    );
    let client = Client::builder()
        .registry(common::registry_of_nodes(&[("good", &good.address), ("dead", &dead)]).await)
        .strategy(micro::selector::Strategy::RoundRobin)
        .wrap(recorder("call", &log, see_attempt))
        .wrap(stamp)
        .build();
    let echo = EchoClient::new("echo", client).with_options(
        CallOptions::default()
            .metadata("x-user", "bob")
            .timeout(Duration::from_secs(3)),
    );
    // Round robin: one of two calls tries the dead node first, then retries.
    for _ in 0..2 {
        let rsp = echo.unary(req("x")).await.unwrap();
        assert_eq!(rsp.served_by, "good");
        assert_eq!(rsp.metadata["x-added"], "by-wrapper");
        assert_eq!(rsp.metadata["x-user"], "bob");
    }
    let entries = entries(&log);
    let on = |node: &str, address: &str, number: u32| {
        format!(
            "call> service=echo endpoint=Echo.Unary node={node} address={address} number={number} x-user=bob deadline=3"
        )
    };
    let dead_at = entries
        .iter()
        .position(|e| *e == on("dead", &dead, 0))
        .unwrap();
    assert_eq!(entries[dead_at + 1], "<call err 503", "{entries:#?}");
    assert_eq!(
        entries[dead_at + 2],
        on("good", &good.address, 1),
        "{entries:#?}"
    );
    assert_eq!(entries[dead_at + 3], "<call ok");
    assert!(
        entries.contains(&on("good", &good.address, 0)),
        "{entries:#?}"
    );
    assert_eq!(entries.len(), 6, "{entries:#?}");
    good.stop().await;
}

#[tokio::test]
async fn wrappers_compose_first_added_outermost() {
    // Handler point, through the service builder: two `wrap` calls in order.
    let log = log();
    let requests = Arc::new(AtomicU64::new(0));
    let imp = EchoImpl {
        name: "a".into(),
        requests,
    };
    let svc = service(&[])
        .handler(EchoServer::new(imp))
        .wrap(
            Wrappers::new()
                .handler(recorder("a", &log, nothing))
                .handler(recorder("b", &log, nothing)),
        )
        .wrap(Wrappers::new().handler(recorder("c", &log, nothing)))
        .build()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(svc.serve(listener, async move {
        let _ = stopped.await;
    }));
    let echo = EchoClient::new("echo", Client::default())
        .with_options(CallOptions::default().address(address));
    echo.unary(req("x")).await.unwrap();
    assert_eq!(entries(&log), ["a>", "b>", "c>", "<c ok", "<b ok", "<a ok"]);
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();

    // Call point.
    let server = start_echo("a").await;
    let log = self::log();
    let client = Client::builder()
        .wrap(recorder("x", &log, nothing))
        .wrap(recorder("y", &log, nothing))
        .build();
    EchoClient::new("echo", client)
        .with_options(CallOptions::default().address(server.address.clone()))
        .unary(req("x"))
        .await
        .unwrap();
    assert_eq!(entries(&log), ["x>", "y>", "<y ok", "<x ok"]);
    server.stop().await;

    // Publish point.
    let log = self::log();
    let publisher = Publisher::new("order.test", Arc::new(MemoryBroker::new()))
        .wrap(&[recorder("p", &log, nothing), recorder("q", &log, nothing)]);
    publisher
        .publish(&HealthResponse { status: "x".into() })
        .await
        .unwrap();
    assert_eq!(entries(&log), ["p>", "q>", "<q ok", "<p ok"]);
}

#[tokio::test]
async fn named_builtins_sit_outside_wrappers_given_in_code() {
    // chaos refuses every call: a code wrapper inside it never sees one.
    let log = log();
    let requests = Arc::new(AtomicU64::new(0));
    let svc = service(&[
        "--wrappers",
        "chaos",
        "--wrapper",
        "chaos.error_percent=100",
    ])
    .handler(EchoServer::new(EchoImpl {
        name: "a".into(),
        requests: requests.clone(),
    }))
    .wrap(Wrappers::new().handler(recorder("code", &log, nothing)))
    .build()
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(svc.serve(listener, async move {
        let _ = stopped.await;
    }));
    let err = EchoClient::new("echo", Client::default())
        .with_options(CallOptions::default().address(address).retries(0))
        .unary(req("x"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), 503);
    assert!(entries(&log).is_empty(), "{:?}", entries(&log));
    assert_eq!(requests.load(Ordering::SeqCst), 0);
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn subscriber_and_publish_wrappers_of_a_service() {
    let broker = Arc::new(MemoryBroker::new());
    let registry = Arc::new(MemoryRegistry::new());
    let log = log();
    let (tx, mut received) = tokio::sync::mpsc::unbounded_channel();
    let svc = Service::builder()
        .name("points")
        .registry(registry.clone())
        .broker(broker.clone())
        .wrap(
            Wrappers::new()
                .subscriber(recorder("sub", &log, see_delivery))
                .publish(recorder("pub", &log, see_publication)),
        )
        .build()
        .unwrap();
    let publisher = svc.publisher("points.events");
    let svc = svc.subscribe("points.events", move |event: Event<HealthResponse>| {
        let tx = tx.clone();
        async move {
            let status = event.message.status.clone();
            tx.send(status.clone()).unwrap();
            if status == "fail" {
                return Err(Error::bad_request("points", "asked to fail"));
            }
            Ok(())
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(svc.serve(listener, async move {
        let _ = stopped.await;
    }));
    // Subscribed once registered.
    while registry.get_service("points").await.is_err() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    publisher
        .publish(&HealthResponse {
            status: "ok".into(),
        })
        .await
        .unwrap();
    assert_eq!(recv(&mut received).await, "ok");
    publisher
        .publish(&HealthResponse {
            status: "fail".into(),
        })
        .await
        .unwrap();
    assert_eq!(recv(&mut received).await, "fail");
    // The subscriber wrapper's exit is logged after the handler returns.
    let want_len = 8;
    for _ in 0..500 {
        if entries(&log).len() >= want_len {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let entries = entries(&log);
    let published = "pub> topic=points.events from=points type=application/json";
    let delivered = "sub> topic=points.events from=points id=true";
    assert_eq!(
        entries.iter().filter(|e| *e == published).count(),
        2,
        "{entries:#?}"
    );
    assert_eq!(
        entries.iter().filter(|e| *e == delivered).count(),
        2,
        "{entries:#?}"
    );
    assert_eq!(
        entries.iter().filter(|e| *e == "<pub ok").count(),
        2,
        "{entries:#?}"
    );
    assert!(entries.contains(&"<sub ok".to_string()), "{entries:#?}");
    assert!(
        entries.contains(&"<sub err 400".to_string()),
        "{entries:#?}"
    );
    assert_eq!(entries.len(), want_len, "{entries:#?}");

    // A publish wrapper's error stops the publish and reaches the publisher.
    let refused = Publisher::new("points.events", broker.clone())
        .wrap(&[refusing(Error::forbidden("policy", "not on this topic"))]);
    let err = refused
        .publish(&HealthResponse {
            status: "refused".into(),
        })
        .await
        .unwrap_err();
    assert_eq!((err.code(), err.detail()), (403, "not on this topic"));
    assert!(
        tokio::time::timeout(Duration::from_millis(100), received.recv())
            .await
            .is_err(),
        "a refused message is not delivered"
    );
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_handler_wrapper_error_reaches_every_caller_in_the_shared_shape() {
    let server = start_echo_with("a", |s| {
        s.wrap(refusing(Error::too_many_requests("limiter", "slow down")))
    })
    .await;
    let want = serde_json::json!({
        "id": "limiter", "code": 429, "detail": "slow down", "status": "Too Many Requests"
    });
    let (status, body) = http1(
        &server.address,
        "POST",
        "/micro.test.v1.Echo/Unary",
        &[("Content-Type", "application/json")],
        b"{}",
    )
    .await;
    assert_eq!(status, 429);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap(),
        want
    );
    let (status, body) =
        common::h2c_json(&server.address, "/micro.test.v1.Echo/Unary", b"{}").await;
    assert_eq!(status, 429);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap(),
        want
    );
    let (code, err) = common::grpc_raw(&server.address, "/micro.test.v1.Echo/Unary", b"").await;
    assert_eq!(code, 8, "RESOURCE_EXHAUSTED");
    assert_eq!(
        (err.id(), err.code(), err.detail()),
        ("limiter", 429, "slow down")
    );
    let err = client_for(&server).unary(req("x")).await.unwrap_err();
    assert_eq!(
        (err.id(), err.code(), err.detail()),
        ("limiter", 429, "slow down")
    );
    assert_eq!(server.requests(), 0);
    server.stop().await;
}

#[tokio::test]
async fn internal_debug_endpoints_are_not_wrapped() {
    let server = start_echo_with("a", |s| {
        s.wrap(refusing(Error::forbidden("auth", "no token")))
    })
    .await;
    let opts = CallOptions::default().address(server.address.clone());
    for endpoint in ["Debug.Health", "Debug.Stats"] {
        Client::default()
            .call_json("echo", endpoint, &serde_json::json!({}), &opts)
            .await
            .unwrap_or_else(|e| panic!("{endpoint}: {e}"));
    }
    let (status, body) = http1(
        &server.address,
        "POST",
        "/",
        &[("Micro-Endpoint", "Debug.Health")],
        b"",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let err = client_for(&server).unary(req("x")).await.unwrap_err();
    assert_eq!(err.code(), 403);
    server.stop().await;
}

async fn recv(rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap()
}

/// A node that accepts calls and never answers them.
async fn stuck_node(seen: Arc<AtomicU64>) -> TestServer {
    let stuck = HandlerWrapper::new(
        "stuck",
        micro::tower::layer::layer_fn(move |_inner: BoxService<RawRequest, RawReply>| {
            let seen = seen.clone();
            micro::tower::service_fn(move |_req: RawRequest| {
                seen.fetch_add(1, Ordering::SeqCst);
                std::future::pending::<Result<RawReply, Error>>()
            })
        }),
    );
    start_echo_with("stuck", |s| {
        s.wrap(stuck).drain_timeout(Duration::from_millis(100))
    })
    .await
}

#[tokio::test]
async fn the_attempt_timeout_abandons_a_node_that_never_answers() {
    let seen = Arc::new(AtomicU64::new(0));
    let stuck = stuck_node(seen.clone()).await;
    let good = start_echo("good").await;
    let nodes = [
        ("stuck", stuck.address.as_str()),
        ("good", good.address.as_str()),
    ];

    let client = service(&[
        "--selector",
        "roundrobin",
        "--wrapper",
        "timeout.attempt=200ms",
    ])
    .registry(common::registry_of_nodes(&nodes).await)
    .build()
    .unwrap()
    .client();
    let echo = EchoClient::new("echo", client)
        .with_options(CallOptions::default().timeout(Duration::from_secs(3)));
    for i in 0..4 {
        let rsp = echo.unary(req(&i.to_string())).await.unwrap();
        assert_eq!(rsp.served_by, "good");
    }
    assert!(seen.load(Ordering::SeqCst) >= 1, "the stuck node was tried");

    // Without an attempt timeout the stuck node uses up the whole call deadline.
    let before = seen.load(Ordering::SeqCst);
    let client = service(&["--selector", "roundrobin"])
        .registry(common::registry_of_nodes(&nodes).await)
        .build()
        .unwrap()
        .client();
    let echo = EchoClient::new("echo", client)
        .with_options(CallOptions::default().timeout(Duration::from_millis(300)));
    let mut timed_out = 0;
    for _ in 0..2 {
        if let Err(e) = echo.unary(req("x")).await {
            assert_eq!(e.code(), 408, "{e}");
            timed_out += 1;
        }
    }
    assert_eq!(timed_out, 1);
    assert_eq!(seen.load(Ordering::SeqCst), before + 1);
    good.stop().await;
    stuck.stop().await;
}

#[tokio::test]
async fn the_retry_budget_bounds_retries_to_a_failing_node() {
    let down = start_echo("down").await;
    let failing = EchoRequest {
        fail_code: 503,
        ..req("x")
    };
    let run = |flags: Vec<&'static str>| {
        let address = down.address.clone();
        let failing = failing.clone();
        async move {
            let mut all = vec![
                "--wrapper",
                "retry.retries=3",
                "--wrapper",
                "retry.backoff=0",
            ];
            all.extend(flags);
            let client = service(&all).build().unwrap().client();
            let echo = EchoClient::new("echo", client)
                .with_options(CallOptions::default().address(address));
            for _ in 0..100 {
                let err = echo.unary(failing.clone()).await.unwrap_err();
                assert_eq!(err.code(), 503);
            }
        }
    };
    run(vec![
        "--wrapper",
        "retry.budget_ratio=0.1",
        "--wrapper",
        "retry.budget_min_per_sec=0",
    ])
    .await;
    let budgeted = down.requests();
    assert!(
        (105..=111).contains(&budgeted),
        "100 calls with a 10% budget made {budgeted} attempts"
    );
    run(vec!["--wrapper", "retry.budget=false"]).await;
    assert_eq!(down.requests() - budgeted, 400);
    down.stop().await;
}

#[tokio::test]
async fn unknown_wrapper_names_and_bad_settings_fail_the_build() {
    let err = service(&["--wrappers", "retry,nope"]).build().unwrap_err();
    assert_eq!(err.code(), 400);
    for says in ["unknown wrapper \"nope\"", "timeout", "retry", "chaos"] {
        assert!(err.detail().contains(says), "{says}: {err}");
    }

    let err = service(&["--wrapper", "timeout.atempt=1s"])
        .build()
        .unwrap_err();
    assert_eq!(err.code(), 400);
    assert!(
        err.detail()
            .contains("wrapper timeout has no setting \"atempt\""),
        "{err}"
    );
}

/// Fails today: `Settings::typed` (src/wrapper/settings.rs) reports serde's message
/// without the key, e.g. "wrapper timeout: expected a duration like 30, 30s, 500ms
/// or 1m"; with several keys set the user cannot tell which one is wrong.
#[tokio::test]
async fn a_bad_setting_names_the_wrapper_and_the_key() {
    let err = service(&["--wrapper", "timeout.attempt=soon"])
        .build()
        .unwrap_err();
    assert_eq!(err.code(), 400);
    for says in ["timeout", "attempt"] {
        assert!(err.detail().contains(says), "{says}: {err}");
    }
}

/// `MICRO_WRAPPERS` is read from the process environment, which tests in this
/// process share: the check runs in a child process of this test binary.
#[test]
fn micro_wrappers_with_an_unknown_name_fails_the_build() {
    const CHILD: &str = "WRAPPER_POINTS_CHILD";
    const NAME: &str = "micro_wrappers_with_an_unknown_name_fails_the_build";
    if std::env::var_os(CHILD).is_some() {
        let err = service(&[]).build().unwrap_err();
        assert_eq!(err.code(), 400, "{err}");
        for says in [
            "unknown wrapper \"nope\"",
            "the wrappers are:",
            "timeout",
            "retry",
        ] {
            assert!(err.detail().contains(says), "{says}: {err}");
        }
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", NAME, "--test-threads", "1"])
        .env(CHILD, "1")
        .env("MICRO_WRAPPERS", "chaos,nope")
        .env("MICRO_MDNS_INTERFACES", "none")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
