//! The client's HTTP/1.1 connections to `http-json` nodes (`client::http1`),
//! against a node scripted byte by byte: connections are kept and reused, a node
//! that closes them is survived without an error, and answers in every framing
//! (or broken ones) come back as the right value or the right error.

// Test helpers outside #[test] functions unwrap too: a panic is a failed test.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use micro::client::CallOptions;
use micro::registry::{MemoryRegistry, Node, Registry, Service};
use micro::Client;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What the scripted node does after writing an answer (or before, for `Late`).
#[derive(Clone, Copy, PartialEq)]
enum After {
    KeepOpen,
    Close,
    /// Answers this long after the request came, then keeps the connection open.
    Late(Duration),
}

/// A node that answers the n-th request (over all connections) with
/// `answers[n % len]`; counts connections and keeps every request head.
struct Scripted {
    address: String,
    connections: Arc<AtomicUsize>,
    heads: Arc<Mutex<Vec<String>>>,
}

async fn scripted(answers: Vec<(&'static [u8], After)>) -> Scripted {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let connections = Arc::new(AtomicUsize::new(0));
    let heads = Arc::new(Mutex::new(Vec::new()));
    let served = Arc::new(AtomicUsize::new(0));
    let (count, seen) = (connections.clone(), heads.clone());
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            count.fetch_add(1, Ordering::SeqCst);
            let (answers, seen, served) = (answers.clone(), seen.clone(), served.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    // One request: its head, then Content-Length bytes of body.
                    let (head_len, body_len) = loop {
                        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..at]).to_string();
                            let len = head
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length: "))
                                .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                            seen.lock().unwrap().push(head);
                            break (at + 4, len);
                        }
                        let mut chunk = [0u8; 4096];
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    while buf.len() < head_len + body_len {
                        let mut chunk = [0u8; 4096];
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.drain(..head_len + body_len);
                    let n = served.fetch_add(1, Ordering::SeqCst);
                    let (answer, after) = answers[n % answers.len()];
                    if let After::Late(wait) = after {
                        tokio::time::sleep(wait).await;
                    }
                    if stream.write_all(answer).await.is_err() || after == After::Close {
                        return;
                    }
                }
            });
        }
    });
    Scripted {
        address,
        connections,
        heads,
    }
}

async fn client_for(address: &str, max_body: usize) -> Client {
    let registry = Arc::new(MemoryRegistry::new());
    let record = Service {
        name: "node".into(),
        version: "latest".into(),
        nodes: vec![Node {
            id: "node-1".into(),
            address: address.to_string(),
            metadata: [("protocol".to_string(), "http-json".to_string())].into(),
        }],
        ..Default::default()
    };
    registry
        .register(&record, Default::default())
        .await
        .unwrap();
    Client::builder()
        .registry(registry)
        .max_body(max_body)
        .build()
}

fn once() -> CallOptions {
    CallOptions::default()
        .timeout(Duration::from_secs(2))
        .retries(0)
}

async fn call(client: &Client) -> Result<serde_json::Value, micro::Error> {
    client
        .call_json("node", "Node.Do", &json!({"n": 1}), &once())
        .await
}

const OK: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 8\r\n\r\n{\"ok\":1}";

#[tokio::test]
async fn one_kept_alive_connection_carries_call_after_call() {
    let node = scripted(vec![(OK, After::KeepOpen)]).await;
    let client = client_for(&node.address, 1024).await;
    for _ in 0..5 {
        assert_eq!(call(&client).await.unwrap(), json!({"ok": 1}));
    }
    assert_eq!(node.connections.load(Ordering::SeqCst), 1);
    // What the node was sent: the endpoint, a timeout, the JSON body's length.
    let head = node.heads.lock().unwrap()[0].clone();
    assert!(head.starts_with("POST / HTTP/1.1\r\n"), "{head}");
    assert!(head.contains("\r\nmicro-endpoint: Node.Do"), "{head}");
    assert!(
        head.contains("\r\ncontent-type: application/json"),
        "{head}"
    );
    assert!(head.contains("\r\ntimeout: "), "{head}");
    assert!(head.contains("\r\ncontent-length: 7"), "{head}");
}

/// A node that closes its idle connections (a keep-alive timeout) costs the
/// caller nothing: the closed connection is noticed, and the call goes out on a
/// new one, even with retries off.
#[tokio::test]
async fn a_node_closing_idle_connections_costs_no_call() {
    let node = scripted(vec![(OK, After::Close)]).await;
    let client = client_for(&node.address, 1024).await;
    for _ in 0..4 {
        assert_eq!(call(&client).await.unwrap(), json!({"ok": 1}));
        // Give the node's FIN time to arrive, or not: both must work.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(node.connections.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn connection_close_and_http_1_0_answers_are_not_reused() {
    let close: &[u8] =
        b"HTTP/1.1 200 OK\r\nConnection: close\r\ncontent-length: 8\r\n\r\n{\"ok\":1}";
    let old: &[u8] = b"HTTP/1.0 200 OK\r\ncontent-length: 8\r\n\r\n{\"ok\":1}";
    for answer in [close, old] {
        let node = scripted(vec![(answer, After::KeepOpen)]).await;
        let client = client_for(&node.address, 1024).await;
        call(&client).await.unwrap();
        call(&client).await.unwrap();
        assert_eq!(node.connections.load(Ordering::SeqCst), 2);
    }
}

#[tokio::test]
async fn chunked_answers_after_an_informational_one() {
    let chunked: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\n{\"o\r\n5;x=y\r\nk\":2}\r\n0\r\n\r\n";
    let node = scripted(vec![(chunked, After::KeepOpen)]).await;
    let client = client_for(&node.address, 1024).await;
    assert_eq!(call(&client).await.unwrap(), json!({"ok": 2}));
    assert_eq!(call(&client).await.unwrap(), json!({"ok": 2}));
    assert_eq!(node.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_answer_delimited_by_closing_the_connection() {
    let until_close: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n{\"ok\":3}";
    let node = scripted(vec![(until_close, After::Close)]).await;
    let client = client_for(&node.address, 1024).await;
    assert_eq!(call(&client).await.unwrap(), json!({"ok": 3}));
}

#[tokio::test]
async fn error_answers_carry_the_nodes_error() {
    let body = r#"{"id":"node","code":404,"detail":"no such thing","status":"Not Found"}"#;
    let not_found = format!(
        "HTTP/1.1 404 Not Found\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let not_found: &'static [u8] = Box::leak(not_found.into_bytes().into_boxed_slice());
    let plain: &[u8] = b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 7\r\n\r\nupstrea";
    let node = scripted(vec![(not_found, After::KeepOpen), (plain, After::KeepOpen)]).await;
    let client = client_for(&node.address, 1024).await;
    let e = call(&client).await.unwrap_err();
    assert_eq!((e.code(), e.detail()), (404, "no such thing"), "{e}");
    let e = call(&client).await.unwrap_err();
    assert_eq!(e.code(), 502, "{e}");
    assert!(e.detail().contains("upstrea"), "{e}");
    // Both answers were read whole: the connection stayed usable.
    assert_eq!(node.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn broken_and_oversized_answers_are_clear_errors() {
    let cases: [(&[u8], u16, &str); 4] = [
        (b"NOT HTTP AT ALL\r\n\r\n", 503, "malformed head"),
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
            503,
            "chunk size",
        ),
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 50\r\n\r\n{\"short\":",
            503,
            "before the body ended",
        ),
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 5000\r\n\r\n",
            413,
            "over the limit of 1024 bytes",
        ),
    ];
    for (answer, code, says) in cases {
        let node = scripted(vec![(answer, After::Close)]).await;
        let client = client_for(&node.address, 1024).await;
        let e = call(&client).await.unwrap_err();
        assert_eq!(e.code(), code, "{e}");
        assert!(e.detail().contains(says), "{e}");
    }
}

/// Metadata that could split the request head (CR, LF) is left out, not sent.
#[tokio::test]
async fn metadata_cannot_inject_header_lines() {
    let node = scripted(vec![(OK, After::KeepOpen)]).await;
    let client = client_for(&node.address, 1024).await;
    let opts = once()
        .metadata("x-fine", "yes")
        .metadata("x-evil", "a\r\nx-injected: 1");
    client
        .call_json("node", "Node.Do", &json!({}), &opts)
        .await
        .unwrap();
    let head = node.heads.lock().unwrap()[0].clone();
    assert!(head.contains("\r\nx-fine: yes"), "{head}");
    assert!(!head.contains("x-injected"), "{head}");
    assert!(!head.contains("x-evil"), "{head}");
}

/// A call's deadline holds on a kept-alive connection, also when it is sooner
/// than the deadline of the connection's previous call; the connection of a call
/// that timed out is not used again (its late answer would be taken for the next
/// call's).
#[tokio::test]
async fn deadlines_hold_on_kept_alive_connections() {
    let late = After::Late(Duration::from_millis(1500));
    let node = scripted(vec![
        (OK, After::KeepOpen),
        (OK, late),
        (OK, After::KeepOpen),
    ])
    .await;
    let client = client_for(&node.address, 1024).await;
    assert_eq!(call(&client).await.unwrap(), json!({"ok": 1}));

    let short = CallOptions::default()
        .timeout(Duration::from_millis(200))
        .retries(0);
    let started = std::time::Instant::now();
    let e = client
        .call_json("node", "Node.Do", &json!({"n": 2}), &short)
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert_eq!(e.code(), 408, "{e}");
    assert!(e.detail().contains("did not answer in time"), "{e}");
    assert!(
        took < Duration::from_millis(1200),
        "timed out after {took:?}"
    );

    assert_eq!(call(&client).await.unwrap(), json!({"ok": 1}));
    assert_eq!(node.connections.load(Ordering::SeqCst), 2);
}
