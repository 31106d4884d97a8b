#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;

use super::*;

/// A source whose updates the test sends, good or bad.
#[derive(Debug)]
struct Pushed {
    first: Value,
    updates: std::sync::Mutex<Option<mpsc::UnboundedReceiver<Result<Value, ConfigError>>>>,
}

fn pushed(first: Value) -> (Pushed, mpsc::UnboundedSender<Result<Value, ConfigError>>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (
        Pushed {
            first,
            updates: std::sync::Mutex::new(Some(rx)),
        },
        tx,
    )
}

impl Source for Pushed {
    fn name(&self) -> String {
        "pushed".into()
    }
    fn read(&self) -> BoxFuture<'_, Result<Value, ConfigError>> {
        let first = self.first.clone();
        Box::pin(async move { Ok(first) })
    }
    fn watch(&self) -> Option<BoxStream<'static, Result<Value, ConfigError>>> {
        let rx = self.updates.lock().unwrap().take()?;
        Some(UnboundedReceiverStream::new(rx).boxed())
    }
}

/// A source that always fails to read.
#[derive(Debug)]
struct Broken;

impl Source for Broken {
    fn name(&self) -> String {
        "broken:x".into()
    }
    fn read(&self) -> BoxFuture<'_, Result<Value, ConfigError>> {
        Box::pin(async {
            Err(ConfigError::source_error(
                ErrorKind::Unavailable,
                "broken:x",
                "cannot connect; start it",
            ))
        })
    }
}

/// Waits (bounded) until `check` holds.
async fn eventually(what: &str, check: impl Fn() -> bool) {
    for _ in 0..1000 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("{what} did not happen");
}

#[tokio::test]
async fn config_merges_in_order_later_wins() {
    let config = Config::builder()
        .source(MemorySource::new("a").with(json!({"db": {"host": "a", "port": 1}, "x": 1})))
        .source(MemorySource::new("b").with(json!({"db": {"port": 2}})))
        .source(EnvSource::prefix("APP").vars([("APP_DB_USER", "u")]))
        .load()
        .await
        .unwrap();
    assert_eq!(config.get::<String>("db.host").unwrap(), "a");
    assert_eq!(config.get::<u16>("db.port").unwrap(), 2);
    assert_eq!(config.get::<String>("db.user").unwrap(), "u");
    assert_eq!(
        config.value("db"),
        Some(json!({"host": "a", "port": 2, "user": "u"}))
    );
    assert_eq!(
        config.sources(),
        ["memory:a", "memory:b", "env:APP"].map(String::from)
    );
    #[derive(serde::Deserialize, PartialEq, Debug)]
    struct Db {
        host: String,
        port: u16,
    }
    assert_eq!(
        config.get::<Db>("db").unwrap(),
        Db {
            host: "a".into(),
            port: 2
        }
    );
    assert!(config.is_loaded());
}

#[tokio::test]
async fn config_getters_defaults_and_errors() {
    let config = Config::builder()
        .source(MemorySource::new("m").with(json!({"t": "500ms", "n": "many", "s": 30})))
        .load()
        .await
        .unwrap();
    assert_eq!(
        config.get::<Duration>("t").unwrap(),
        Duration::from_millis(500)
    );
    assert_eq!(
        config.get::<Duration>("s").unwrap(),
        Duration::from_secs(30)
    );
    assert_eq!(config.get_or("missing", 7u8), 7);
    assert_eq!(
        config.get("missing").unwrap_or(Duration::ZERO),
        Duration::ZERO
    );
    let missing = config.get::<u8>("a.b").unwrap_err();
    assert!(missing.is_not_found());
    assert_eq!(missing.kind(), ErrorKind::NotFound);
    assert_eq!(
        missing.to_string(),
        r#"config "a.b" is not set (sources: memory:m); set it in one of them"#
    );
    let wrong = config.get::<u32>("n").unwrap_err();
    assert_eq!(wrong.kind(), ErrorKind::WrongType);
    assert_eq!(
        wrong.to_string(),
        r#"config "n" (from memory:m) = "many": expected u32"#
    );
    // A wrong type falls back to the default too.
    assert_eq!(config.get_or("n", 3u32), 3);
    let empty = Config::default();
    assert!(empty
        .get::<u8>("x")
        .unwrap_err()
        .to_string()
        .contains("no config sources"));
}

#[tokio::test]
async fn config_never_shows_secret_values() {
    let config = Config::builder()
        .source(MemorySource::new("plain").with(json!({"db": {"password": 1}})))
        .source(
            MemorySource::new("vault")
                .with(json!({"db": {"password": "hunter2"}}))
                .secret(),
        )
        .load()
        .await
        .unwrap();
    let err = config.get::<u64>("db.password").unwrap_err();
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(
        shown.contains("memory:vault") && shown.contains("expected u64"),
        "{shown}"
    );
    assert!(!format!("{config:?}").contains("hunter2"));
}

#[tokio::test]
async fn config_load_fails_naming_the_source() {
    let err = Config::builder()
        .source(MemorySource::new("ok"))
        .source(Broken)
        .load()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert_eq!(
        err.to_string(),
        "config source broken:x: cannot connect; start it"
    );
    let (not_table, _tx) = pushed(json!([1, 2]));
    let err = Config::builder()
        .source(not_table)
        .load()
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "config source pushed: expected a table of keys at the top level"
    );
}

#[tokio::test]
async fn config_watch_sends_only_changes_of_its_path() {
    let memory = Arc::new(MemorySource::new("live").with(json!({"a": 1, "b": 1})));
    let config = Config::builder()
        .shared_source(memory.clone())
        .load()
        .await
        .unwrap();
    let mut a = config.watch("a");
    memory.set("b", json!(2)); // another path
    memory.set("a", json!(1)); // same value
    memory.set("a", json!(2));
    assert_eq!(a.next().await, Some(json!(2)));
    memory.remove("a");
    assert_eq!(a.next().await, Some(Value::Null));
    memory.set("a", json!({"deep": true}));
    assert_eq!(a.next().await, Some(json!({"deep": true})));
    // The stream ends with the config.
    drop(config);
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(5), a.next())
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn config_bad_update_keeps_the_last_good_tree() {
    let (source, updates) = pushed(json!({"greeting": "Hello"}));
    let config = Config::builder().source(source).load().await.unwrap();
    let mut greetings = config.watch("greeting");
    updates
        .send(Err(ConfigError::source_error(
            ErrorKind::Parse,
            "pushed",
            "not valid YAML",
        )))
        .unwrap();
    updates.send(Ok(json!("not a table"))).unwrap();
    updates.send(Ok(json!({"greeting": "Hi"}))).unwrap();
    // The two bad updates changed nothing; the good one arrives.
    assert_eq!(greetings.next().await, Some(json!("Hi")));
    assert_eq!(config.get::<String>("greeting").unwrap(), "Hi");
}

#[tokio::test]
async fn config_later_source_still_wins_after_an_update_below() {
    let low = Arc::new(MemorySource::new("low").with(json!({"k": "low", "only": 1})));
    let high = Arc::new(MemorySource::new("high").with(json!({"k": "high"})));
    let config = Config::builder()
        .shared_source(low.clone())
        .shared_source(high.clone())
        .load()
        .await
        .unwrap();
    low.set("k", json!("low2"));
    low.set("only", json!(2));
    eventually("update below", || config.get_or("only", 0) == 2).await;
    assert_eq!(config.get::<String>("k").unwrap(), "high");
    high.remove("k");
    eventually("fall back to the lower source", || {
        config.get_or("k", String::new()) == "low2"
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn file_source_polls_for_changes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.json");
    std::fs::write(&path, r#"{"a": 1}"#).unwrap();
    let source = FileSource::new(&path);
    assert_eq!(source.name(), format!("file:{}", path.display()));
    let mut updates = source.watch().unwrap();
    // First poll: the current content.
    assert_eq!(updates.next().await.unwrap().unwrap(), json!({"a": 1}));
    std::fs::write(&path, "{oops").unwrap();
    let err = updates.next().await.unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Parse);
    assert!(err.to_string().contains("not valid JSON"), "{err}");
    assert!(
        err.to_string()
            .contains(&format!("file:{}", path.display())),
        "{err}"
    );
    std::fs::remove_file(&path).unwrap();
    let err = updates.next().await.unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    std::fs::write(&path, r#"{"a": 2}"#).unwrap();
    assert_eq!(updates.next().await.unwrap().unwrap(), json!({"a": 2}));
}

#[tokio::test]
async fn file_source_formats_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in [
        ("a.json", r#"{"g": {"greeting": "Hi"}}"#),
        ("a.yaml", "g:\n  greeting: Hi\n"),
        ("a.yml", "g: {greeting: Hi}\n"),
        ("a.toml", "[g]\ngreeting = \"Hi\"\n"),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let config = Config::builder()
            .source(FileSource::new(&path))
            .load()
            .await
            .unwrap();
        assert_eq!(config.get::<String>("g.greeting").unwrap(), "Hi", "{name}");
    }
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, "a: [1\n").unwrap();
    let err = Config::builder()
        .source(FileSource::new(&path))
        .load()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Parse);
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "config source file:{}: not valid YAML",
            path.display()
        )),
        "{text}"
    );
    let err = Config::builder()
        .source(FileSource::new(dir.path().join("missing.toml")))
        .load()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(
        err.to_string()
            .contains("--config_file / MICRO_CONFIG_FILE"),
        "{err}"
    );
}

#[tokio::test]
async fn memory_store_checks_paths() {
    let store = MemorySource::new("s");
    store.write("a.b", json!(1)).await.unwrap();
    assert_eq!(store.get("a").await.unwrap(), Some(json!({"b": 1})));
    for bad in ["", "a..b", ".a", "a/b"] {
        let err = store.write(bad, json!(1)).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Invalid, "{bad}");
    }
    Store::delete(&store, "a").await.unwrap();
    assert_eq!(store.get("a.b").await.unwrap(), None);
}
