//! The etcd config source against a real etcd (Debian's etcd-server) on loopback:
//! read, write, delete, watch, and a watch that survives an etcd restart.
#![cfg(feature = "etcd")]
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use futures_util::StreamExt;
use micro::config::etcd_server::EtcdServer;
use micro::config::{Config, EnvSource, ErrorKind, EtcdSource, FileSource, Source, Store};
use serde_json::{json, Value};

/// The next value of `watch`, within `limit`.
async fn next_within(
    watch: &mut futures_util::stream::BoxStream<'static, Value>,
    limit: Duration,
    what: &str,
) -> Value {
    tokio::time::timeout(limit, watch.next())
        .await
        .unwrap_or_else(|_| panic!("{what}: no change seen within {limit:?}"))
        .unwrap_or_else(|| panic!("{what}: the watch ended"))
}

#[tokio::test]
async fn etcd_store_read_write_delete() {
    let Some(etcd) = EtcdServer::start().await else {
        return;
    };
    let store = EtcdSource::new([format!("http://{}", etcd.address())]);
    assert_eq!(store.name(), "etcd:/micro/config/");
    store.write("greeter.greeting", json!("Hi")).await.unwrap();
    store
        .write("db", json!({"pool": 5, "host": "h"}))
        .await
        .unwrap();
    assert_eq!(
        store.read().await.unwrap(),
        json!({"greeter": {"greeting": "Hi"}, "db": {"pool": 5, "host": "h"}})
    );
    assert_eq!(store.get("db.pool").await.unwrap(), Some(json!(5)));
    // Writing a path replaces what was under it.
    store.write("db.pool", json!(6)).await.unwrap();
    store.write("db", json!({"port": 1})).await.unwrap();
    assert_eq!(store.get("db").await.unwrap(), Some(json!({"port": 1})));
    Store::delete(&store, "db").await.unwrap();
    assert_eq!(store.get("db").await.unwrap(), None);
    let err = store.write("", json!(1)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid);
    // Another prefix sees none of it.
    let other = EtcdSource::new([etcd.address()]).prefix("/other");
    assert_eq!(other.read().await.unwrap(), json!({}));
}

#[tokio::test]
async fn etcd_down_is_a_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = Config::builder()
        .source(EtcdSource::new([format!("127.0.0.1:{port}")]))
        .load()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    let text = err.to_string();
    assert!(
        text.starts_with("config source etcd:/micro/config/: cannot connect to 127.0.0.1:"),
        "{text}"
    );
    assert!(text.contains("--config_address"), "{text}");
}

/// The "done means" of the issue: file, env and etcd merged; editing the file or the
/// etcd key changes the value in a running config within a second.
#[tokio::test]
async fn file_env_and_etcd_merge_and_hot_reload() {
    let Some(mut etcd) = EtcdServer::start().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.yaml");
    std::fs::write(
        &file,
        "app:\n  greeting: file\n  from_file: 1\n  timeout: 1s\n",
    )
    .unwrap();
    let store = EtcdSource::new([etcd.address()]);
    store.write("app.from_etcd", json!(true)).await.unwrap();
    let config = Config::builder()
        .source(FileSource::new(&file))
        .source(EtcdSource::new([etcd.address()]))
        .source(EnvSource::service("app").vars([("APP_ORIGIN", "env")]))
        .load()
        .await
        .unwrap();
    assert_eq!(config.get::<String>("app.greeting").unwrap(), "file");
    assert_eq!(config.get::<u8>("app.from_file").unwrap(), 1);
    assert!(config.get::<bool>("app.from_etcd").unwrap());
    assert_eq!(config.get::<String>("app.origin").unwrap(), "env");
    assert_eq!(
        config.get::<Duration>("app.timeout").unwrap(),
        Duration::from_secs(1)
    );

    let mut greeting = config.watch("app.greeting");
    let second = Duration::from_secs(1);
    // etcd wins over the file.
    store.write("app.greeting", json!("etcd")).await.unwrap();
    assert_eq!(
        next_within(&mut greeting, second, "etcd write").await,
        json!("etcd")
    );
    // Plain text in etcd is a string.
    store.write("app.greeting", json!("etcd2")).await.unwrap();
    assert_eq!(
        next_within(&mut greeting, second, "etcd write 2").await,
        json!("etcd2")
    );
    Store::delete(&store, "app.greeting").await.unwrap();
    assert_eq!(
        next_within(&mut greeting, second, "etcd delete").await,
        json!("file")
    );
    // Editing the file (written elsewhere, then renamed over it, as editors do).
    let new = dir.path().join("app.yaml.new");
    std::fs::write(&new, "app:\n  greeting: edited\n").unwrap();
    std::fs::rename(&new, &file).unwrap();
    assert_eq!(
        next_within(&mut greeting, second, "file edit").await,
        json!("edited")
    );
    // A bad edit keeps the last good config.
    std::fs::write(&file, "app: [unclosed\n").unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(700), greeting.next())
            .await
            .is_err(),
        "a bad file changed the config"
    );
    assert_eq!(config.get::<String>("app.greeting").unwrap(), "edited");

    // etcd goes down and comes back: the watch reconnects and sees what changed.
    etcd.restart().await;
    store
        .write("app.greeting", json!("after restart"))
        .await
        .unwrap();
    assert_eq!(
        next_within(&mut greeting, Duration::from_secs(10), "etcd restart").await,
        json!("after restart")
    );
}
