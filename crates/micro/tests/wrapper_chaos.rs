//! The `chaos` wrapper over a served service: injected errors by percentage and per
//! endpoint, injected delays within the caller's deadline, on the server and the
//! client side, and switched at runtime through the settings channel.

// Test helpers outside #[test] functions unwrap too: a panic is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use micro::client::CallOptions;
use micro::wrapper::{Settings, WrapperContext};
use micro::{Client, Error};
use tokio::time::Instant;

use common::echo::{echo_client::EchoClient, EchoRequest};
use common::{http1, TestServer};

const SERVICE: &str = "echo";

fn req(message: &str) -> EchoRequest {
    EchoRequest {
        message: message.into(),
        ..Default::default()
    }
}

use common::{echo_service as builder, serve_service as serve};

async fn start(flags: &[&str]) -> TestServer {
    let (builder, requests) = builder(flags);
    serve(builder.build().unwrap(), requests).await
}

/// A client of `server` that does not retry (an injected 503 would be retried).
fn client_for(server: &TestServer) -> EchoClient {
    EchoClient::new(SERVICE, Client::default()).with_options(
        CallOptions::default()
            .address(server.address.clone())
            .retries(0),
    )
}

async fn unary_json(server: &TestServer) -> (u16, serde_json::Value) {
    let (status, body) = http1(
        &server.address,
        "POST",
        "/micro.test.v1.Echo/Unary",
        &[("Content-Type", "application/json")],
        br#"{"message":"hi"}"#,
    )
    .await;
    (status, serde_json::from_str(&body).unwrap())
}

#[tokio::test]
async fn a_hundred_percent_fails_every_call_and_says_it_is_injected() {
    let server = start(&[
        "--wrappers",
        "chaos",
        "--wrapper",
        "chaos.error_percent=100",
    ])
    .await;
    for _ in 0..20 {
        let (status, body) = unary_json(&server).await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(
            body,
            serde_json::json!({
                "id": SERVICE,
                "code": 503,
                "detail": "chaos: injected error (error_percent=100)",
                "status": "Service Unavailable",
            })
        );
    }
    // gRPC callers get the mapped status (UNAVAILABLE).
    let (code, err) = common::grpc_raw(&server.address, "/micro.test.v1.Echo/Unary", b"").await;
    assert_eq!(code, 14);
    assert_eq!(err.detail(), "chaos: injected error (error_percent=100)");
    let err = client_for(&server).unary(req("x")).await.unwrap_err();
    assert_eq!(err.code(), 503);
    // The handler never ran; health checks are never touched.
    assert_eq!(server.requests(), 0);
    let health = Client::default()
        .call_json(
            SERVICE,
            "Debug.Health",
            &serde_json::json!({}),
            &CallOptions::default().address(server.address.clone()),
        )
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    server.stop().await;
}

#[tokio::test]
async fn zero_percent_never_fails_and_the_code_is_configurable() {
    let server = start(&[
        "--wrappers",
        "chaos",
        "--wrapper",
        "chaos.error_percent=0",
        "--wrapper",
        "chaos.delay_percent=0",
        "--wrapper",
        "chaos.delay=10s",
    ])
    .await;
    let client = client_for(&server);
    for i in 0..50 {
        assert_eq!(
            client.unary(req(&i.to_string())).await.unwrap().message,
            i.to_string()
        );
    }
    assert_eq!(server.requests(), 50);
    server.stop().await;

    let server = start(&[
        "--wrappers",
        "chaos",
        "--wrapper",
        "chaos.error_percent=100",
        "--wrapper",
        "chaos.error_code=429",
    ])
    .await;
    let (status, body) = unary_json(&server).await;
    assert_eq!(
        (status, &body["code"]),
        (429, &serde_json::json!(429)),
        "{body}"
    );
    assert_eq!(body["detail"], "chaos: injected error (error_percent=100)");
    let (code, _) = common::grpc_raw(&server.address, "/micro.test.v1.Echo/Unary", b"").await;
    assert_eq!(code, 8, "RESOURCE_EXHAUSTED");
    server.stop().await;
}

#[tokio::test]
async fn only_the_listed_endpoints_get_faults() {
    let server = start(&[
        "--wrappers",
        "chaos",
        "--wrapper",
        "chaos.error_percent=100",
        "--wrapper",
        "chaos.endpoints=Echo.Server*,Echo.Bidi",
    ])
    .await;
    let client = client_for(&server);
    assert_eq!(client.unary(req("fine")).await.unwrap().message, "fine");
    let err = match client.server_stream(req("s")).await {
        Ok(mut s) => s.message().await.unwrap_err(),
        Err(e) => e,
    };
    assert_eq!(err.code(), 503, "{err}");
    assert!(err.detail().starts_with("chaos: injected error"), "{err}");
    let requests = futures_util::stream::iter([req("a"), req("b")]);
    assert_eq!(client.client_stream(requests).await.unwrap().message, "a,b");
    server.stop().await;
}

#[tokio::test]
async fn fifty_percent_with_a_seed_is_about_half_and_repeats_exactly() {
    let flags = [
        "--wrappers",
        "chaos",
        "--wrapper",
        "chaos.error_percent=50",
        "--wrapper",
        "chaos.seed=1234",
    ];
    let mut runs = Vec::new();
    for _ in 0..2 {
        let server = start(&flags).await;
        let client = client_for(&server);
        let mut outcomes = Vec::new();
        for _ in 0..200 {
            outcomes.push(client.unary(req("x")).await.is_ok());
        }
        let served = outcomes.iter().filter(|ok| **ok).count();
        assert_eq!(server.requests(), served as u64);
        assert!((60..=140).contains(&served), "{served} of 200 got through");
        runs.push(outcomes);
        server.stop().await;
    }
    assert_eq!(runs[0], runs[1], "the same seed makes the same run");
}

#[tokio::test]
async fn a_delay_that_would_pass_the_deadline_ends_at_it_with_408() {
    let server = start(&[
        "--wrappers",
        "chaos",
        "--wrapper",
        "chaos.delay_percent=100",
        "--wrapper",
        "chaos.delay=1h",
    ])
    .await;
    let (status, body) = http1(
        &server.address,
        "POST",
        "/micro.test.v1.Echo/Unary",
        &[("Content-Type", "application/json"), ("Timeout", "200ms")],
        br#"{"message":"hi"}"#,
    )
    .await;
    assert_eq!(status, 408, "{body}");
    let err = Error::parse(&body);
    assert!(
        err.detail().starts_with("chaos: injected delay of 3600s"),
        "{err}"
    );
    assert_eq!(server.requests(), 0);
    server.stop().await;

    // A delay within the deadline: the call succeeds.
    let server = start(&[
        "--wrappers",
        "chaos",
        "--wrapper",
        "chaos.delay_percent=100",
        "--wrapper",
        "chaos.delay=20ms",
    ])
    .await;
    let opts = CallOptions::default()
        .address(server.address.clone())
        .timeout(Duration::from_secs(10));
    let rsp = client_for(&server)
        .unary_with(req("late"), &opts)
        .await
        .unwrap();
    assert_eq!(rsp.message, "late");
    server.stop().await;
}

/// A service whose client injects faults into its calls (`side=client`); not
/// served: only its client is used.
fn chaotic_client(flags: &[&str]) -> Client {
    let mut all = vec!["--wrappers", "chaos", "--wrapper", "chaos.side=client"];
    all.extend_from_slice(flags);
    builder(&all).0.build().unwrap().client()
}

#[tokio::test(start_paused = true)]
async fn client_side_delays_are_exact_and_bounded_by_the_call_deadline() {
    // Every attempt waits 2 s, then fails before it reaches the network.
    let client = chaotic_client(&[
        "--wrapper",
        "chaos.delay=2s",
        "--wrapper",
        "chaos.delay_percent=100",
        "--wrapper",
        "chaos.error_percent=100",
    ]);
    let nowhere = TestServer::dead_address().await;
    let opts = CallOptions::default().address(nowhere).retries(0);
    let start = Instant::now();
    let err = client
        .call_json(
            SERVICE,
            "Echo.Unary",
            &serde_json::json!({}),
            &opts.clone().timeout(Duration::from_secs(5)),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), 503);
    assert_eq!(err.detail(), "chaos: injected error (error_percent=100)");
    assert_eq!(start.elapsed(), Duration::from_secs(2));

    // A call deadline before the end of the delay: 408 at the deadline.
    let start = Instant::now();
    let err = client
        .call_json(
            SERVICE,
            "Echo.Unary",
            &serde_json::json!({}),
            &opts.timeout(Duration::from_millis(500)),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), 408, "{err}");
    assert_eq!(start.elapsed(), Duration::from_millis(500));
}

#[tokio::test]
async fn client_side_errors_fail_attempts_before_they_reach_the_node() {
    let server = start(&[]).await;
    let client = chaotic_client(&[
        "--wrapper",
        "chaos.error_percent=100",
        "--wrapper",
        "chaos.endpoints=Echo.Unary",
    ]);
    let echo = EchoClient::new(SERVICE, client).with_options(
        CallOptions::default()
            .address(server.address.clone())
            .retries(2),
    );
    let err = echo.unary(req("x")).await.unwrap_err();
    assert_eq!((err.code(), err.id()), (503, SERVICE));
    assert_eq!(server.requests(), 0, "the node never saw the call");
    // Other endpoints pass.
    let requests = futures_util::stream::iter([req("a")]);
    assert_eq!(echo.client_stream(requests).await.unwrap().message, "a");
    // The server side is not wrapped: chaos there stays idle.
    assert_eq!(unary_json(&server).await.0, 200);
    server.stop().await;
}

#[tokio::test]
async fn settings_switch_at_runtime_and_a_bad_update_keeps_the_last_good_ones() {
    let (tx, rx) = tokio::sync::watch::channel(Settings::default());
    let mut ctx = WrapperContext::new(SERVICE);
    ctx.updates = Some(rx);
    let off = Settings::from_flags(["chaos.enabled=false"]).unwrap();
    let wrappers = micro::wrapper::from_names(&["chaos"], &off, &ctx).unwrap();
    assert_eq!(wrappers.handler_names(), ["chaos"]);
    let (builder, requests) = builder::<&str>(&[]);
    let server = serve(builder.wrap(wrappers).build().unwrap(), requests).await;
    let client = client_for(&server);

    // Off.
    for _ in 0..5 {
        client.unary(req("off")).await.unwrap();
    }
    // On: every call fails, from the next request on.
    tx.send(Settings::from_flags(["chaos.error_percent=100", "chaos.error_code=500"]).unwrap())
        .unwrap();
    for _ in 0..5 {
        let err = client.unary(req("on")).await.unwrap_err();
        assert_eq!(err.code(), 500);
        assert_eq!(err.detail(), "chaos: injected error (error_percent=100)");
    }
    // Not valid (a percentage over 100, an unknown key): ignored, still on.
    for bad in [
        Settings::from_flags(["chaos.error_percent=250"]).unwrap(),
        Settings::from_flags(["chaos.error_percent=0", "chaos.typo=1"]).unwrap(),
        Settings::from_file_table(&serde_json::json!({"chaos": {"delay": "whenever"}})).unwrap(),
    ] {
        tx.send(bad).unwrap();
        assert_eq!(client.unary(req("bad")).await.unwrap_err().code(), 500);
    }
    // Only some endpoints, from a config-file table.
    tx.send(
        Settings::from_file_table(&serde_json::json!({
            "chaos": {"error_percent": 100, "endpoints": ["Echo.ServerStream"]}
        }))
        .unwrap(),
    )
    .unwrap();
    client.unary(req("spared")).await.unwrap();
    // Off again.
    tx.send(off).unwrap();
    for _ in 0..5 {
        client.unary(req("off again")).await.unwrap();
    }
    assert_eq!(server.requests(), 5 + 1 + 5, "off, spared, off again");
    server.stop().await;
}

#[tokio::test]
async fn bad_settings_fail_the_build_naming_the_key() {
    for (flags, says) in [
        (
            ["chaos.error_percent=101"],
            "error_percent must be between 0 and 100",
        ),
        (
            ["chaos.error_code=302"],
            "error_code must be an HTTP error code",
        ),
        (["chaos.side=sideways"], "wrapper chaos"),
        (["chaos.rate=3"], "wrapper chaos has no setting \"rate\""),
    ] {
        let err = builder(&["--wrappers", "chaos", "--wrapper", flags[0]])
            .0
            .build()
            .unwrap_err();
        assert_eq!(err.code(), 400, "{flags:?}");
        assert!(err.detail().contains(says), "{flags:?}: {err}");
    }
}

#[test]
fn chaos_is_listed_in_help_with_its_settings() {
    let help = micro::wrapper::help();
    for key in [
        "chaos.enabled",
        "chaos.side",
        "chaos.delay",
        "chaos.delay_percent",
        "chaos.error_percent",
        "chaos.error_code",
        "chaos.endpoints",
        "chaos.seed",
    ] {
        assert!(help.contains(key), "{key} missing from:\n{help}");
    }
    let chaos = micro::wrapper::BUILTINS
        .iter()
        .find(|b| b.name == "chaos")
        .unwrap();
    assert!(!chaos.always_on);
}

/// Waits until `unary_json` answers `want`, for at most `within`.
async fn until_status(server: &TestServer, want: u16, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let (status, body) = unary_json(server).await;
        if status == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "still {status} {body} after {within:?}, want {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The whole path a user takes: the service's config file sets
/// `micro.wrapper.chaos`, and editing the file switches chaos on and off in the
/// running service — no restart, no code.
#[tokio::test]
async fn editing_the_config_file_switches_chaos_on_and_off_live() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("service.yaml");
    let write = |percent: u32| {
        let text = format!("micro:\n  wrapper:\n    chaos:\n      error_percent: {percent}\n");
        // Written aside and renamed over, as editors do: never half a file.
        let tmp = dir.path().join("service.yaml.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &file).unwrap();
    };
    write(0);
    let file_arg = file.to_str().unwrap().to_string();
    let server = start(&["--wrappers", "chaos", "--config_file", &file_arg]).await;
    until_status(&server, 200, Duration::from_secs(5)).await;
    write(100);
    until_status(&server, 503, Duration::from_secs(3)).await;
    let (_, body) = unary_json(&server).await;
    assert_eq!(body["detail"], "chaos: injected error (error_percent=100)");
    // A change that is not settings is ignored: chaos stays on.
    std::fs::write(&file, "micro:\n  wrapper: 42\n").unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(unary_json(&server).await.0, 503);
    write(0);
    until_status(&server, 200, Duration::from_secs(3)).await;
    server.stop().await;
}
