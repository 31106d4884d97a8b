//! The `auth` wrapper over a served service: bearer tokens (shared secret and
//! JWKS) and API keys, per-endpoint rules, 401/403 in the shared error shape over
//! HTTP JSON and as UNAUTHENTICATED/PERMISSION_DENIED over gRPC, the subject
//! reaching the handler, and a client that sends its own token.

// Test helpers outside #[test] functions unwrap too: a panic is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use micro::broker::MemoryBroker;
use micro::client::CallOptions;
use micro::registry::MemoryRegistry;
use micro::{Client, Error, Service};
use serde_json::{json, Value};

use common::echo::{echo_client::EchoClient, EchoRequest};
use common::{http1, TestServer};

const SECRET: &str = "integration-secret-0123456789abcdef";
const RSA1: &str = include_str!("fixtures/auth/rsa1.pem");
const RSA2: &str = include_str!("fixtures/auth/rsa2.pem");
const UNARY: &str = "/micro.test.v1.Echo/Unary";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn sign(alg: Algorithm, kid: Option<&str>, claims: Value, key: &EncodingKey) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(String::from);
    jsonwebtoken::encode(&header, &claims, key).unwrap()
}

/// An HS256 token for `sub` with `scope`.
fn token(sub: &str, scope: &str) -> String {
    sign(
        Algorithm::HS256,
        None,
        json!({"sub": sub, "scope": scope, "exp": now() + 600}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
}

fn rsa(pem: &str) -> EncodingKey {
    EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap()
}

/// Secret, JWKS (rsa-1, rsa-2), rules and API key files in `dir`; the flags
/// that switch `auth` on with them.
fn files(dir: &Path) -> Vec<String> {
    std::fs::write(dir.join("secret"), format!("{SECRET}\n")).unwrap();
    let keys: Vec<Value> = [("rsa-1", RSA1), ("rsa-2", RSA2)]
        .into_iter()
        .map(|(kid, pem)| {
            let mut jwk = Jwk::from_encoding_key(&rsa(pem), Algorithm::RS256).unwrap();
            jwk.common.key_id = Some(kid.into());
            serde_json::to_value(jwk).unwrap()
        })
        .collect();
    std::fs::write(dir.join("jwks.json"), json!({ "keys": keys }).to_string()).unwrap();
    // Unary needs the echo scope; ServerStream is public; the rest is for any
    // authenticated caller (the default).
    std::fs::write(
        dir.join("rules.yaml"),
        "rules:\n\
         - endpoint: Echo.ServerStream\n  public: true\n\
         - endpoint: Echo.Unary\n  scopes: [echo]\n\
         - endpoint: Echo.Unary\n  subjects: [ops]\n\
         - endpoint: Echo.Unary\n  action: deny\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("keys.txt"),
        "# test keys\nkey-ops-1:ops:\nkey-bob-1:bob:read\n",
    )
    .unwrap();
    let at = |name: &str| dir.join(name).display().to_string();
    vec![
        "--wrappers".into(),
        "auth".into(),
        "--wrapper".into(),
        format!("auth.secret_file={}", at("secret")),
        "--wrapper".into(),
        format!("auth.jwks_file={}", at("jwks.json")),
        "--wrapper".into(),
        format!("auth.rules_file={}", at("rules.yaml")),
        "--wrapper".into(),
        format!("auth.api_keys_file={}", at("keys.txt")),
    ]
}

fn service(flags: &[String]) -> (Service, Arc<AtomicU64>) {
    let (builder, requests) = common::echo_service(flags);
    (builder.build().unwrap(), requests)
}

use common::serve_service as serve;

/// A JSON call of Echo.Unary over HTTP/1.1 with `headers`.
async fn json_call(server: &TestServer, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut all = vec![("Content-Type", "application/json")];
    all.extend_from_slice(headers);
    let (status, body) = http1(&server.address, "POST", UNARY, &all, br#"{"message":"hi"}"#).await;
    (
        status,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}

/// A gRPC call of `path` with an empty message and `headers`; the grpc-status
/// and, on failure, the micro error.
async fn grpc_call(
    server: &TestServer,
    path: &str,
    headers: &[(&str, &str)],
) -> (i32, Option<Error>) {
    let stream = tokio::net::TcpStream::connect(&server.address)
        .await
        .unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut req = http::Request::post(format!("http://{}{path}", server.address))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let rsp = sender
        .send_request(
            req.body(Full::new(Bytes::from_static(&[0, 0, 0, 0, 0])))
                .unwrap(),
        )
        .await
        .unwrap();
    let head = rsp.headers().clone();
    let collected = rsp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let source = if head.contains_key("grpc-status") {
        head
    } else {
        trailers
    };
    let code: i32 = source["grpc-status"].to_str().unwrap().parse().unwrap();
    let error = source
        .get("micro-error")
        .map(|v| Error::parse(v.to_str().unwrap()));
    (code, error)
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test]
async fn http_json_gets_401_and_403_in_the_shared_error_shape() {
    let dir = tempfile::tempdir().unwrap();
    let (svc, requests) = service(&files(dir.path()));
    let server = serve(svc, requests).await;

    // No credentials.
    let (status, body) = json_call(&server, &[]).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["code"], 401);
    assert_eq!(body["id"], "micro.auth");
    assert_eq!(body["status"], "Unauthorized");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("needs credentials"),
        "{body}"
    );

    // auth rejects a forged token: alice's token with its payload swapped for
    // an ops one.
    let good = token("alice", "echo");
    let parts: Vec<&str> = good.split('.').collect();
    let ops = token("ops", "");
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        ops.split('.').nth(1).unwrap(),
        parts[2]
    );
    let (status, body) = json_call(&server, &[("Authorization", &bearer(&forged))]).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["detail"], "invalid token signature");
    assert!(!body.to_string().contains(&forged));

    // Expired.
    let expired = sign(
        Algorithm::HS256,
        None,
        json!({"sub": "alice", "scope": "echo", "exp": now() - 3600}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    );
    let (status, body) = json_call(&server, &[("Authorization", &bearer(&expired))]).await;
    assert_eq!(
        (status, body["detail"].as_str()),
        (401, Some("token expired"))
    );

    // Valid, but without the echo scope: 403.
    let (status, body) = json_call(
        &server,
        &[("Authorization", &bearer(&token("bob", "read")))],
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["code"], 403);
    assert_eq!(body["status"], "Forbidden");
    assert_eq!(body["detail"], "bob may not call Echo.Unary");

    // With the scope: through, and the handler sees who called, not who the
    // caller claimed to be.
    let (status, body) = json_call(
        &server,
        &[
            ("Authorization", &bearer(&good)),
            ("Micro-Auth-Subject", "root"),
            ("Micro-Auth-Scopes", "admin"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["metadata"]["micro-auth-subject"], "alice");
    assert_eq!(body["metadata"]["micro-auth-scopes"], "echo");
    assert_eq!(body["metadata"]["micro-auth-kind"], "jwt");

    // A JWKS key chosen by kid, and a key id the service does not know.
    let rs = sign(
        Algorithm::RS256,
        Some("rsa-2"),
        json!({"sub": "carol", "scp": ["echo"], "exp": now() + 600}),
        &rsa(RSA2),
    );
    let (status, body) = json_call(&server, &[("Authorization", &bearer(&rs))]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["metadata"]["micro-auth-subject"], "carol");
    let unknown = sign(
        Algorithm::RS256,
        Some("rsa-7"),
        json!({"sub": "carol", "exp": now() + 600}),
        &rsa(RSA1),
    );
    let (status, body) = json_call(&server, &[("Authorization", &bearer(&unknown))]).await;
    assert_eq!(
        (status, body["detail"].as_str()),
        (401, Some("unknown key id \"rsa-7\""))
    );

    // API keys: by subject (ops is allowed), by header, and an unknown one.
    let (status, body) = json_call(&server, &[("X-Api-Key", "key-ops-1")]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["metadata"]["micro-auth-kind"], "api_key");
    let (status, _) = json_call(&server, &[("Authorization", "Bearer key-bob-1")]).await;
    assert_eq!(status, 403);
    let (status, body) = json_call(&server, &[("X-Api-Key", "key-ops-2")]).await;
    assert_eq!(
        (status, body["detail"].as_str()),
        (401, Some("unknown API key"))
    );

    // Health checks stay open.
    let (status, body) = http1(
        &server.address,
        "POST",
        "/micro.debug.v1.Debug/Health",
        &[("Content-Type", "application/json")],
        b"{}",
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // Three calls reached the handler.
    assert_eq!(server.requests(), 3);
    server.stop().await;
}

#[tokio::test]
async fn grpc_gets_unauthenticated_and_permission_denied() {
    let dir = tempfile::tempdir().unwrap();
    let (svc, requests) = service(&files(dir.path()));
    let server = serve(svc, requests).await;

    let (code, error) = grpc_call(&server, UNARY, &[]).await;
    assert_eq!(code, 16, "UNAUTHENTICATED");
    assert_eq!(error.unwrap().code(), 401);

    let alg_none = format!(
        "eyJhbGciOiJub25lIn0.{}.",
        base64_url(&json!({"sub": "ops", "exp": now() + 600}).to_string())
    );
    let (code, error) = grpc_call(&server, UNARY, &[("authorization", &bearer(&alg_none))]).await;
    assert_eq!(code, 16);
    assert!(error.unwrap().detail().contains("alg none"));

    let bob = bearer(&token("bob", "read"));
    let (code, error) = grpc_call(&server, UNARY, &[("authorization", &bob)]).await;
    assert_eq!(code, 7, "PERMISSION_DENIED");
    assert_eq!(error.unwrap().code(), 403);

    let (code, _) = grpc_call(
        &server,
        UNARY,
        &[("authorization", &bearer(&token("x", "echo")))],
    )
    .await;
    assert_eq!(code, 0);
    // The public stream needs no token, and a bad one does not matter there.
    let (code, _) = grpc_call(&server, "/micro.test.v1.Echo/ServerStream", &[]).await;
    assert_eq!(code, 0);
    let (code, _) = grpc_call(
        &server,
        "/micro.test.v1.Echo/ServerStream",
        &[("authorization", "Bearer garbage")],
    )
    .await;
    assert_eq!(code, 0);

    // The typed client sees the same errors.
    let client = EchoClient::new("echo", Client::default()).with_options(
        CallOptions::default()
            .address(server.address.clone())
            .retries(0),
    );
    let req = EchoRequest {
        message: "hi".into(),
        ..Default::default()
    };
    assert_eq!(client.unary(req.clone()).await.unwrap_err().code(), 401);
    let with_token = client.clone().with_options(
        CallOptions::default()
            .address(server.address.clone())
            .metadata("authorization", bearer(&token("dave", "echo"))),
    );
    let rsp = with_token.unary(req).await.unwrap();
    assert_eq!(rsp.metadata["micro-auth-subject"], "dave");
    server.stop().await;
}

#[tokio::test]
async fn a_service_client_sends_its_token() {
    let dir = tempfile::tempdir().unwrap();
    let flags = files(dir.path());
    let (svc, requests) = service(&flags);
    let server = serve(svc, requests).await;

    // A caller service whose auth settings carry a token of its own.
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{}\n", token("caller-svc", "echo"))).unwrap();
    let mut caller_flags = flags.clone();
    caller_flags.extend([
        "--wrapper".to_string(),
        format!("auth.token_file={}", token_file.display()),
    ]);
    let (caller, _) = service(&caller_flags);
    let client = EchoClient::new("echo", caller.client()).with_options(
        CallOptions::default()
            .address(server.address.clone())
            .retries(0),
    );
    let req = EchoRequest {
        message: "hi".into(),
        ..Default::default()
    };
    let rsp = client.unary(req.clone()).await.unwrap();
    assert_eq!(rsp.metadata["micro-auth-subject"], "caller-svc");
    // A token the caller sets itself wins.
    let rsp = client
        .clone()
        .with_options(
            CallOptions::default()
                .address(server.address.clone())
                .retries(0)
                .metadata("authorization", bearer(&token("end-user", "echo"))),
        )
        .unary(req)
        .await
        .unwrap();
    assert_eq!(rsp.metadata["micro-auth-subject"], "end-user");
    server.stop().await;
}

#[tokio::test]
async fn bad_settings_stop_the_service_from_building() {
    let e = Service::builder()
        .name("echo")
        .registry(Arc::new(MemoryRegistry::new()))
        .broker(Arc::new(MemoryBroker::new()))
        .args([
            "echo",
            "--wrappers",
            "auth",
            "--wrapper",
            "auth.jwks_file=/nonexistent/jwks.json",
        ])
        .build()
        .unwrap_err();
    assert_eq!(e.code(), 400);
    assert!(e.detail().contains("auth.jwks_file"), "{e}");
}

fn base64_url(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}
